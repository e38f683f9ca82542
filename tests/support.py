"""Helpers shared by several test modules (pytest puts this folder on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfgb import config as cfg
from tfgb import models
from tfgb.config import Config

SMALL = {"embedding_dim": 4, "gcn_layers": 1, "num_experts": 2, "mtl_layers": 1, "heads": 2, "mlp_hidden": [4],
         "mlp_layers": 1}


def small_recipe(name: str, cache_dir: Path, **train) -> Config:
    """Model ``name`` at :data:`SMALL` sizes on 300 synthetic groups (120 users, 40 items), resolved; ``train``
    sets ``[train]`` keys."""
    config = cfg.Config()
    config.model.name = name
    config.data.synth = cfg.SynthConfig(users=120, items=40, groups=300, seed=3)
    config.data.negatives = 9
    config.data.cache_dir = str(cache_dir)
    config.train.aux_size = 2
    for key, value in train.items():
        setattr(config.train, key, value)
    config = models.resolve(config)
    section = models.settings(config)
    for key, value in SMALL.items():
        if hasattr(section, key):
            setattr(section, key, value)
    return config


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


def mean_rows(emb: dict, kinds: dict[str, str], own: dict | None = None) -> dict:
    """``emb`` with the mean row appended to its user and item tables, as tensors: the out-of-vocabulary
    rows an export adds, by the tests' own reading of the export contract; ``own`` = the model's own
    rows (``oov_rows``) where it has them."""
    import tensorflow as tf

    out = {}
    for key, value in emb.items():
        value = np.asarray(value)
        if kinds[key] in ("user", "item"):
            row = value.astype(np.float64).mean(0, keepdims=True) if key not in (own or {}) else \
                np.asarray(own[key]).reshape((1, *value.shape[1:]))
            value = np.concatenate([value, row.astype(value.dtype)], 0)
        out[key] = tf.constant(value)
    return out


def hand_prepared(train, valid=(), test=(), failed=(), num_users: int = 10, num_items: int = 4):
    """A :class:`tfgb.data.prepare.Prepared` over hand-written splits, for the side-input tests.

    ``train`` / ``valid`` / ``test``: ``(initiator, item, [participants])`` rows of user / item indices;
    ``failed``: ``(user, item, split)`` failed launches (split 0 = train, 1 = valid, 2 = test). Raw ids are
    ``"u00"``, ``"u01"``... and ``"i00"``..., so index n is the n-th id; there are no candidate lists.
    """
    from tfgb.data.groups import DealGroups
    from tfgb.data.prepare import Prepared
    from tfgb.data.vocab import Vocabulary

    def table(rows) -> DealGroups:
        rows = list(rows)
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r[2]) for r in rows], out=offsets[1:])
        return DealGroups(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                          offsets, np.array([p for r in rows for p in r[2]], np.int64), num_users, num_items)

    failed = np.array(list(failed), np.int64).reshape(-1, 3)
    return Prepared(table(train), table(valid), table(test), Vocabulary([f"u{n:02d}" for n in range(num_users)]),
                    Vocabulary([f"i{n:02d}" for n in range(num_items)]), failed[:, 0], failed[:, 1],
                    np.zeros(len(failed), np.int8), failed[:, 2].astype(np.int8), ("launch", "deal"),
                    None, None, cache_path="")
