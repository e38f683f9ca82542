"""Model registry: a recipe chooses a model by name (``model.name``), never by editing code.

Variants are configuration: ``mgbr-m`` is MGBR with the shared experts removed, and so on. The
variant's settings are applied to the recipe by :func:`resolve`, so the resolved ``config.toml``
of a run states exactly what was trained.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from tfgb.config import Config
from tfgb.errors import ConfigError

Builder = Callable[[Config, int, int, dict], Any]

# name -> (base model, {"section.key": forced value})
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mgbr": ("mgbr", {}),
    "mgbr-m": ("mgbr", {"model.shared_experts": False}),
    "mgbr-r": ("mgbr", {"train.aux_losses": False}),
    "mgbr-m-r": ("mgbr", {"model.shared_experts": False, "train.aux_losses": False}),
    "mgbr-g": ("mgbr", {"model.alpha": 0.0}),
    "mgbr-d": ("mgbr", {"model.graph": "hetero"}),
    "mf-bpr": ("mf-bpr", {"train.aux_losses": False}),
    # MAMGBR (paper 001) and its ablations, Sec. 4.6: -M = tasks share no parameter (no shared
    # experts, one GCN per task; see tfgb.models.mamgbr), -MH = experts without attention, -L = no
    # auxiliary losses.
    "mamgbr": ("mamgbr", {}),
    "mamgbr-m": ("mamgbr", {"model.shared_experts": False}),
    "mamgbr-mh": ("mamgbr-mh", {}),
    "mamgbr-l": ("mamgbr", {"train.aux_losses": False}),
    # Baselines (MGBR Sec. III-B adaptation: task B = <e_u, e_p>), BPR on both tasks.
    "lightgcn": ("lightgcn", {"train.aux_losses": False}),
    "ngcf": ("ngcf", {"train.aux_losses": False}),
    "gbmf": ("gbmf", {"train.aux_losses": False}),
    "popularity": ("popularity", {"train.aux_losses": False}),
}

_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register a builder ``f(config, num_users, num_items, graphs) -> model`` under ``name``."""

    def deco(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        return fn

    return deco


def names() -> list[str]:
    return sorted(VARIANTS)


def resolve(config: Config) -> Config:
    """Return a copy of ``config`` with the named variant's settings applied."""
    name = config.model.name.lower()
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown model '{config.model.name}'{hint} (known: {', '.join(names())})")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, name=name),
                                 train=dataclasses.replace(config.train))
    for key, value in VARIANTS[name][1].items():
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    return config


def build(config: Config, num_users: int, num_items: int, graphs: dict) -> Any:
    """Build the model named by ``config.model.name`` (after :func:`resolve`)."""
    config = resolve(config)
    base = VARIANTS[config.model.name][0]
    _load_builtin()
    return _BUILDERS[base](config, num_users, num_items, graphs)


# Built-in builders: name -> (module, class, extra constructor arguments), imported on first use.
_BUILTIN: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mgbr": ("tfgb.models.mgbr", "MGBR", {}),
    "mf-bpr": ("tfgb.models.mf", "MFBPR", {}),
    "mamgbr": ("tfgb.models.mamgbr", "MAMGBR", {}),
    "mamgbr-mh": ("tfgb.models.mamgbr", "MAMGBR", {"attention": False}),
    "lightgcn": ("tfgb.models.lightgcn", "LightGCN", {}),
    "ngcf": ("tfgb.models.ngcf", "NGCF", {}),
    "gbmf": ("tfgb.models.gbmf", "GBMF", {}),
    "popularity": ("tfgb.models.popularity", "Popularity", {}),
}


def _load_builtin() -> None:
    import importlib

    for name, (module, cls_name, extra) in _BUILTIN.items():
        if name in _BUILDERS:
            continue
        cls = getattr(importlib.import_module(module), cls_name)
        model_name = name.replace("-", "_")
        if cls_name == "Popularity":  # no model hyper-parameters
            _BUILDERS[name] = lambda c, u, i, g, cls=cls, n=model_name: cls(u, i, g, c.train, name=n)
        else:
            _BUILDERS[name] = (lambda c, u, i, g, cls=cls, n=model_name, extra=extra:
                               cls(u, i, g, c.model, c.train, name=n, **extra))
