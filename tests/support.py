"""Helpers shared by several test modules (pytest puts this folder on sys.path)."""
from __future__ import annotations

from tfgb import models
from tfgb.config import Config


def tiny_model_config(name: str, mtl_layers: int = 2) -> Config:
    """The default recipe with model ``name`` and tiny sizes (d = 4, 2 experts, 2 heads), resolved.

    Each size is set only where the model's own section has it (``[model.<section>]``).
    """
    c = Config()
    c.model.name = name
    section = getattr(c.model, models.entry(name).section)
    sizes = {"embedding_dim": 4, "gcn_layers": 2, "num_experts": 2, "mtl_layers": mtl_layers, "heads": 2,
             "mlp_hidden": [4]}
    for key, value in sizes.items():
        if hasattr(section, key):
            setattr(section, key, value)
    return models.resolve(c)
