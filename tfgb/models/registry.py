"""The model registry: one :class:`Entry` per model (docs/design.md, "Adding a model").

An entry gives the model's name, its settings dataclass (the recipe section ``[model.<section>]``),
the class that implements it (imported on first use: this module never imports TensorFlow), its
variants, its tunable hyper-parameters (``python -m tfgb.tune`` reads them from here), the side
inputs it needs (:mod:`tfgb.contract`) and whether it can run its block over chunks of a batch.

Variants are configuration: ``mgbr-m`` is MGBR with ``model.mgbr.shared_experts = false``. The
variant's settings are applied by :func:`resolve`, so the resolved ``config.toml`` of a run states
exactly what was trained. A recipe picks a model with ``model.name`` and sets its hyper-parameters
in its section, e.g.::

    [model]
    name = "mgbr-g"
    [model.mgbr]
    embedding_dim = 64
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tfgb.contract import ITEM_CATEGORIES, USER_RELATIONS, SideInputKind
from tfgb.errors import ConfigError
from tfgb.models.settings import (
    EmbeddingSettings,
    GBMFSettings,
    GPRecSettings,
    GraphSettings,
    MAMGBRSettings,
    MGBRSettings,
    NGCFSettings,
    NMTRSettings,
    NoSettings,
    ScenarioGraphSettings,
    TreeMSSettings,
)

if TYPE_CHECKING:
    from tfgb.config import Config
    from tfgb.models.context import ModelContext


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered model.

    Attributes:
      name: the registry name (``model.name``).
      settings: the dataclass of its recipe section; ``section`` is its name in ``[model.<section>]``.
      implementation: ``"module:Class"``; the class is built as ``Class(context, settings, train)``.
      variants: variant name -> ``{recipe key: forced value}`` (keys relative to the section, or
        ``train.<key>``).
      tunable: ``[tune]`` field -> the recipe key it searches (relative to the section, or ``train.<key>``).
      needs: side inputs the model reads; :meth:`tfgb.contract.SideInputs.require` checks them.
      chunkable: the model may run its multi-task block over chunks of a batch (``train.block_chunk``);
        models without a block ignore that setting.
      expert_block: the model has MGBR's multi-task expert block and trains its auxiliary losses
        (Eq. 21, 24) when ``train.aux_losses`` is on; for the others :func:`resolve` switches them off.
      behaviors: the model trains on the stream's behaviour rows (:mod:`tfgb.data.behavior_rows`).
      summary: one line for listings.
    """

    name: str
    settings: type
    implementation: str
    summary: str
    variants: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    tunable: Mapping[str, str] = dataclasses.field(default_factory=dict)
    needs: tuple[SideInputKind, ...] = ()
    chunkable: bool = False
    expert_block: bool = False
    behaviors: bool = False

    @property
    def section(self) -> str:
        return self.name.replace("-", "_")

    def key(self, relative: str) -> str:
        """A full recipe key: ``train.x`` stays, ``x`` becomes ``model.<section>.x``."""
        return relative if relative.startswith(("train.", "data.", "eval.")) else f"model.{self.section}.{relative}"

    def load(self) -> type:
        module, cls = self.implementation.split(":")
        return getattr(importlib.import_module(module), cls)


# -- settings of each model ([model.<section>] of a recipe) -----------------------------------------

# Plug-ins: [model] key -> (its values, the section of its settings, the settings dataclass).
PLUGINS = {"user_modeling": (("none", "gprec"), "gprec", GPRecSettings),
           "user_graph": (("none", "attention"), "scenario_graph", ScenarioGraphSettings)}
GPREC_BACKBONES = ("mgbr", "mamgbr", "mf-bpr", "lightgcn")


_EXPERT_TUNABLE = {"embedding_dim": "embedding_dim", "num_experts": "num_experts", "mtl_layers": "mtl_layers",
                   "alpha": "alpha", "beta": "train.beta", "beta_a": "train.beta_a", "beta_b": "train.beta_b",
                   "learning_rate": "train.learning_rate"}
_DOT_TUNABLE = {"embedding_dim": "embedding_dim", "beta": "train.beta", "learning_rate": "train.learning_rate"}

ENTRIES: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Add ``entry`` (a model and its variants) to the registry; names must be new."""
    for name in (entry.name, *entry.variants):
        if name in ENTRIES or name in _VARIANT_OF:
            raise ValueError(f"model name '{name}' is already registered")
    ENTRIES[entry.name] = entry
    for variant in entry.variants:
        _VARIANT_OF[variant] = entry.name
    return entry


_VARIANT_OF: dict[str, str] = {}

register(Entry(
    "mgbr", MGBRSettings, "tfgb.models.mgbr:MGBR", "MGBR: multi-view GCN + multi-task experts (paper 000)",
    variants={"mgbr-m": {"shared_experts": False}, "mgbr-r": {"train.aux_losses": False},
              "mgbr-m-r": {"shared_experts": False, "train.aux_losses": False}, "mgbr-g": {"alpha": 0.0},
              "mgbr-d": {"graph": "hetero"}, "mgbr-launch": {"launch_task": True}},
    tunable=_EXPERT_TUNABLE, chunkable=True, expert_block=True))
# MAMGBR's ablations, Sec. 4.6: -M = tasks share no parameter (no shared experts, one GCN per task;
# see tfgb.models.mamgbr), -MH = experts without attention, -L = no auxiliary losses.
register(Entry(
    "mamgbr", MAMGBRSettings, "tfgb.models.mamgbr:MAMGBR", "MAMGBR: MGBR with attention experts (paper 001)",
    variants={"mamgbr-m": {"shared_experts": False}, "mamgbr-mh": {"attention": False},
              "mamgbr-l": {"train.aux_losses": False}, "mamgbr-launch": {"launch_task": True}},
    tunable={**_EXPERT_TUNABLE, "heads": "heads", "dropout": "dropout"}, expert_block=True))
# Baselines (MGBR Sec. III-B adaptation: task B = <e_u, e_p>), BPR on both tasks.
register(Entry("lightgcn", GraphSettings, "tfgb.models.lightgcn:LightGCN", "LightGCN over the user-item graph",
               tunable=_DOT_TUNABLE))
register(Entry("ngcf", NGCFSettings, "tfgb.models.ngcf:NGCF", "NGCF over the user-item graph",
               tunable={**_DOT_TUNABLE, "dropout": "dropout"}))
register(Entry("gbmf", GBMFSettings, "tfgb.models.gbmf:GBMF", "GBMF: initiator and participant roles, friends",
               tunable=_DOT_TUNABLE))
register(Entry("mf-bpr", EmbeddingSettings, "tfgb.models.mf:MFBPR", "matrix factorisation with BPR",
               tunable=_DOT_TUNABLE))
register(Entry("nmtr", NMTRSettings, "tfgb.models.nmtr:NMTR",
               "NMTR: launch -> deal cascade of NCF units (paper 004)", variants={"nmtr-single": {"launch": False}},
               tunable={**_DOT_TUNABLE, "mlp_layers": "mlp_layers"}, behaviors=True))
register(Entry("treems", TreeMSSettings, "tfgb.models.treems:TreeMS",
               "TreeMS: tree-guided experts + scenario-aware user-graph attention for task B (paper 003)",
               variants={"treems-flat": {"gate": "leaf"}, "treems-nog": {"levels": 0}, "treems-noaux": {"gamma": 0.0}},
               tunable={**_DOT_TUNABLE, "num_experts": "num_experts", "gamma": "gamma", "neighbours": "neighbours"},
               needs=(ITEM_CATEGORIES, USER_RELATIONS)))
register(Entry("popularity", NoSettings, "tfgb.models.popularity:Popularity",
               "item popularity (task A); co-membership, then popularity (task B): the floor"))


def names() -> list[str]:
    """Every model and variant name, sorted."""
    return sorted([*ENTRIES, *_VARIANT_OF])


def entry(name: str) -> Entry:
    """The entry of a model or variant name; ConfigError with the closest name otherwise."""
    key = name.lower()
    if key in ENTRIES:
        return ENTRIES[key]
    if key in _VARIANT_OF:
        return ENTRIES[_VARIANT_OF[key]]
    close = difflib.get_close_matches(key, names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown model '{name}'{hint} (known: {', '.join(names())})")


def forced(name: str) -> dict[str, Any]:
    """The full recipe keys a variant forces (empty for a base model)."""
    e = entry(name)
    return {e.key(k): v for k, v in e.variants.get(name.lower(), {}).items()}


def settings(config: Config) -> Any:
    """The settings dataclass of the recipe's model (its ``[model.<section>]``)."""
    return getattr(config.model, entry(config.model.name).section)


def resolve(config: Config) -> Config:
    """A copy of ``config`` with the named variant's settings applied (and the name lower-cased)."""
    import copy

    from tfgb import config as cfg

    e = entry(config.model.name)
    config = copy.deepcopy(config)
    config.model.name = config.model.name.lower()
    if not e.expert_block:
        config.train.aux_losses = False  # only MGBR-style models train the auxiliary losses
    for key, value in forced(config.model.name).items():
        cfg.set_key(config, key, value)
    return config


def learns_behaviors(config: Config) -> bool:
    """The recipe's model trains on behaviour rows (:mod:`tfgb.data.behavior_rows`): it needs the
    interactions side input, or its section switches ``launch_task`` on (MGBR, MAMGBR)."""
    e = entry(config.model.name)
    return e.behaviors or bool(getattr(settings(resolve(config)), "launch_task", False))


def needs(config: Config) -> tuple[SideInputKind, ...]:
    """The side inputs the recipe's model reads: its entry's, plus the interactions with their behaviour
    when it learns a launch behaviour (``launch_task``, or NMTR's ``launch``)."""
    from tfgb.contract import INTERACTIONS, USER_FEATURES

    chosen = settings(resolve(config))
    learns_launch = getattr(chosen, "launch_task", False) or getattr(chosen, "launch", False)
    gprec = config.model.user_modeling == "gprec"
    graph = config.model.user_graph == "attention"
    own = entry(config.model.name).needs
    extra = tuple(k for k in (ITEM_CATEGORIES, USER_RELATIONS) if graph and k not in own)
    return (*own, *((INTERACTIONS,) if learns_launch else ()), *((USER_FEATURES,) if gprec else ()), *extra)


def build(config: Config, context: ModelContext) -> Any:
    """Build the recipe's model from ``context`` (after :func:`resolve`); checks its side inputs."""
    config = resolve(config)
    e = entry(config.model.name)
    context.side.require(needs(config), config.model.name)
    if config.train.block_chunk and e.expert_block and not e.chunkable:
        raise ConfigError(f"train.block_chunk is not supported by model '{config.model.name}': its block mixes the "
                          "rows of a batch in training (batch normalisation), so chunks would change the loss")
    cls, extra = e.load(), {}
    if config.model.user_modeling == "gprec":
        from tfgb.models.gprec import with_gprec

        if e.name not in GPREC_BACKBONES:
            raise ConfigError(f"model.user_modeling = 'gprec' plugs into {', '.join(GPREC_BACKBONES)}, not "
                              f"'{config.model.name}'")
        if config.model.gprec.strategy == "ensemble" and config.train.block_chunk:
            raise ConfigError("model.gprec.strategy = 'ensemble' scores its towers inside the block's chunks: set "
                              "train.block_chunk = 0, or use the input or dynamic strategy")
        cls, extra = with_gprec(cls), {"gprec": config.model.gprec}
    if config.model.user_graph == "attention":
        from tfgb.models.user_graph import BACKBONES, with_user_graph

        if e.name not in BACKBONES:
            raise ConfigError(f"model.user_graph = 'attention' plugs into {', '.join(BACKBONES)} (treems has it "
                              f"built in), not '{config.model.name}'")
        cls, extra = with_user_graph(cls), {**extra, "user_graph": config.model.scenario_graph}
    return cls(context, settings(config), config.train, name=config.model.name.replace("-", "_"), **extra)

_AT_LEAST_ONE = ("embedding_dim", "num_experts", "mtl_layers", "heads", "gcn_layers", "groups", "dim", "node_dim",
                 "lstm_units", "neighbours")
_CHOICES = {"graph": ("multi", "hetero"), "bias_init": ("zeros", "log_count"), "unit": ("gmf", "mlp", "neumf"),
            "cascade": ("sum", "mean"), "strategy": ("input", "dynamic", "ensemble"), "pool": ("concat", "sum"),
            "orthogonal": ("abs", "square", "signed"), "personal": ("own", "backbone"), "gate": ("tree", "leaf"),
            "graph_attention": ("paper", "product"), "task_b_loss": ("bce", "bpr"),
            "aux_over": ("row", "batch")}


def validate_settings(prefix: str, settings: Any) -> None:
    """Checks shared by every model section, by field name (types are checked when a recipe loads);
    :func:`tfgb.config.validate` runs them on every section."""
    for field in dataclasses.fields(settings):
        key, value = f"{prefix}.{field.name}", getattr(settings, field.name)
        if field.name in _AT_LEAST_ONE and value < 1:
            raise ConfigError(f"config key '{key}' must be at least 1")
        if field.name in _CHOICES and value not in _CHOICES[field.name]:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(_CHOICES[field.name])}, got {value!r}")
        if field.name.endswith("dropout") and not 0 <= value < 1:
            raise ConfigError(f"config key '{key}' must be in [0, 1)")
        if field.name in ("init_std", "tau") and value <= 0:
            raise ConfigError(f"config key '{key}' must be positive")
        if field.name == "units" and any(u not in _CHOICES["unit"] for u in value):
            raise ConfigError(f"config key '{key}' must list units among {', '.join(_CHOICES['unit'])}, got {value}")
        if field.name == "weights" and value and (min(value) < 0 or sum(value) <= 0):
            raise ConfigError(f"config key '{key}' must be non-negative weights with a positive sum, got {value}")
        if field.name in ("launch_weight", "lambda1", "lambda2", "lambda3", "gamma", "l2", "levels") and value < 0:
            raise ConfigError(f"config key '{key}' must be 0 or positive")
        if field.name == "mlp_layers" and value < 1:
            raise ConfigError(f"config key '{key}' must be at least 1")
        if field.name == "friend_weight" and not 0 <= value <= 1:
            raise ConfigError(f"config key '{key}' must be in [0, 1]")
