"""Pipeline recipes: nested dataclasses, loaded from TOML, overridden with ``--set a.b=c``.

A recipe names the data, the model, training, evaluation, export and tuning settings. Every
run writes its resolved recipe (``config.toml``) next to its results. Unknown keys and values of
the wrong type are :class:`~tfgb.errors.ConfigError` s that name the key (and the closest valid
key for a typo).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from typing import Any

import tomli_w

from tfgb.errors import ConfigError
from tfgb.recipe_checks import validate


@dataclasses.dataclass
class SynthConfig:
    """The built-in synthetic generator (``data.source = "synthetic"``)."""

    users: int = 2000
    items: int = 400
    groups: int = 6000
    seed: int = 7
    # Plant a category tree (tfgb.data.synth_tree): the item's top branch decides who joins its groups.
    # false = the data of the generator without a tree, bit for bit.
    tree: bool = False
    # Items per leaf of the planted tree. 8: a few big leaves and many of one to three items; 1: every item
    # its own leaf, so a leaf's groups follow its item's Zipf popularity (a sparse tail of scenarios).
    leaf_items: int = 8


@dataclasses.dataclass
class DataConfig:
    """Where the deal groups come from and how they are split into train/valid/test."""

    source: str = "synthetic"  # "synthetic" or "files"
    files: list[str] = dataclasses.field(default_factory=list)  # relative to --data-dir
    failed_launches: str = ""  # optional file of (initiator, item) rows: launches that did not reach their size
    # Behaviours in cascade order; the last is the deal (a row with participants). The failed launches
    # are the first. With behavior_column (csv / tsv / parquet) every row of data.files names its
    # behaviour: rows of the last behaviour are deal groups, the others interactions that stopped there.
    behaviors: list[str] = dataclasses.field(default_factory=lambda: ["launch", "deal"])
    behavior_column: str = ""
    format: str = "auto"  # auto | beibei | csv | tsv | parquet
    initiator_column: str = "initiator"
    item_column: str = "item"
    participants_column: str = "participants"
    participant_separator: str = ";"
    split: list[float] = dataclasses.field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 2023
    negatives: int = 99  # candidates per list = 1 positive + negatives
    cache_dir: str = "runs/cache"
    # User features (GPRec): a CSV / TSV / Parquet table relative to --data-dir, or "synthetic" (the synthetic
    # generator's planted table); empty = derived from the training split when a model uses them.
    user_features: str = ""
    user_feature_id_column: str = "user"
    # Item categories (TreeMS's scenario tree, tfgb.data.scenarios): a CSV / TSV / Parquet table of (item id,
    # category path) relative to --data-dir, or "synthetic" (the planted tree of data.synth.tree); empty =
    # a proxy tree derived from the training split (items clustered by their training users) when a model
    # needs one: category_depth levels of category_branching clusters each.
    item_categories: str = ""
    item_category_id_column: str = "item"
    item_category_path_column: str = "path"  # e.g. "baby/feeding/bottles"
    category_separator: str = "/"  # between the components of a path
    category_depth: int = 3
    category_branching: int = 6
    # User relations (TreeMS's multi-view graph, tfgb.data.relations): views derived from the training split,
    # plus a CSV / TSV / Parquet table relative to --data-dir with the columns (source user, destination
    # user, relation name) of user_relation_columns: every relation name is one more view.
    user_relations: str = ""
    user_relation_columns: list[str] = dataclasses.field(default_factory=lambda: ["src", "dst", "relation"])
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)


def _model_config_class() -> type:
    """``[model]``: ``name`` (a registry name) and one section per registered model, ``[model.<section>]``.

    Each section is the model's own settings dataclass (:mod:`tfgb.models.registry`); only the
    section of the chosen model matters, and the resolved ``config.toml`` of a run holds only it.
    """
    from tfgb.models import registry

    fields: list[tuple[str, Any, Any]] = [("name", str, dataclasses.field(default="mgbr"))]
    for entry in registry.ENTRIES.values():
        fields.append((entry.section, entry.settings, dataclasses.field(default_factory=entry.settings)))
    for key, (values, section, settings) in registry.PLUGINS.items():  # e.g. user_modeling = "gprec", [model.gprec]
        fields += [(key, str, dataclasses.field(default=values[0])),
                   (section, settings, dataclasses.field(default_factory=settings))]
    return dataclasses.make_dataclass("ModelConfig", fields, namespace={"__doc__": _model_config_class.__doc__})


ModelConfig = _model_config_class()


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, the loss weights of Eq. 25, and how long to train (:mod:`tfgb.train`).

    How long: the run validates every ``eval_every_steps`` optimizer steps (counted across epochs)
    when that is > 0, else ``evals_per_epoch`` times per epoch, and once more where the budget
    ends. It stops at the first of: ``patience`` validations in a row without a better objective
    (0 = never); the step budget, max(``epochs`` x steps per epoch, ``budget_steps``); ``max_minutes``
    of training and validation (0 = no limit). So ``epochs`` bounds a run on large data and
    ``budget_steps`` keeps a recipe training as many steps on data smaller than it was written for.
    """

    epochs: int = 8  # epochs of the budget (a run on small data may train more: budget_steps)
    budget_steps: int = 0  # optimizer steps of the budget when more than `epochs` epochs; 0 = epochs alone
    patience: int = 0  # stop after this many validations without improvement; 0 = train the whole budget
    max_minutes: float = 0.0  # stop once training + validation took this long (summed over resumes); 0 = no limit
    eval_every_steps: int = 0  # validate every this many steps (across epochs); 0 = `evals_per_epoch` per epoch
    batch_size: int = 256
    learning_rate: float = 0.005
    weight_decay: float = 0.0  # decoupled weight decay (AdamW); 0 = plain Adam
    aux_size: int = 9  # |T|, Eq. 21 and 24
    aux_losses: bool = True  # False = MGBR-R
    beta: float = 1.0
    beta_a: float = 0.3
    beta_b: float = 0.3
    seed: int = 1
    deterministic: bool = True  # op determinism + one inter-op thread: bit-identical reruns and resumes
    valid_max_groups: int = 1000  # seeded subsample for per-epoch validation; 0 = all
    evals_per_epoch: int = 1  # with eval_every_steps = 0: validate (keep best / last checkpoint) this often per epoch
    # k > 1: split the training groups into k folds; a batch of fold f is scored over graphs built from
    # the other folds, so no training triple is an edge of its own graph (as no valid/test group is).
    # 1 = the papers' way: every training triple is an edge of the graphs it is trained against.
    graph_folds: int = 1
    # MGBR / MAMGBR: run the multi-task block over chunks of this many triples of a batch, one chunk's
    # activations alive at a time (propagation still once per batch; the gradient is the batch's).
    # 0 = the whole batch at once. Bounds the memory of large batches and aux sets (|T| = 99).
    block_chunk: int = 0
    # Behaviour rows (tfgb.data.behavior_rows; NMTR, launch_task): negatives per positive and behaviour (NMTR's
    # paper: 4); the chance that a deal negative is one of the user's own failed launches (when it has one).
    behavior_negatives: int = 4
    hard_negatives: float = 0.5


@dataclasses.dataclass
class EvalConfig:
    """Evaluation on the saved candidate lists."""

    ks: list[int] = dataclasses.field(default_factory=lambda: [10, 100])
    # Hit-rate cut-offs per list length: each entry is a list length k followed by its cut-offs c
    # (1 <= c < k), reported as "hr@c/k" (tfgb.evaluation.metrics). An entry for a length not in `ks` is unused;
    # a length in `ks` without an entry reports MRR and NDCG only.
    hr_cutoffs: list[list[int]] = dataclasses.field(default_factory=lambda: [[10, 1, 5], [100, 10, 50]])
    batch_size: int = 256
    max_groups: int = 0  # test lists evaluated at the end; 0 = all
    valid_max_groups: int = 0  # valid lists evaluated at the end; 0 = all
    # The all-item protocol (NMTR paper): task A's held-out item ranked against every item the initiator
    # never interacted with in training, HR@K / NDCG@K at these K, on a seeded subsample of this many
    # test initiators (one held-out group each); 0 = not in the final metrics.
    full_ks: list[int] = dataclasses.field(default_factory=lambda: [50, 80, 100, 200])
    full_max_initiators: int = 1000

    def cutoffs(self) -> dict[int, list[int]]:
        """``hr_cutoffs`` as ``{list length: [cut-off, ...]}``."""
        return {entry[0]: list(entry[1:]) for entry in self.hr_cutoffs}


@dataclasses.dataclass
class ExportConfig:
    base: str = "saved_models/tfgb"


@dataclasses.dataclass
class TuneConfig:
    """Search space for ``python -m tfgb.tune``: lists of choices per hyper-parameter."""

    embedding_dim: list[int] = dataclasses.field(default_factory=lambda: [16, 32, 64])
    num_experts: list[int] = dataclasses.field(default_factory=lambda: [2, 4, 6])
    mtl_layers: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    heads: list[int] = dataclasses.field(default_factory=lambda: [2, 4, 8])
    alpha: list[float] = dataclasses.field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3])
    beta: list[float] = dataclasses.field(default_factory=lambda: [0.5, 1.0])
    beta_a: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.3, 0.5])
    beta_b: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.3, 0.5])
    learning_rate: list[float] = dataclasses.field(default_factory=lambda: [0.001, 0.003, 0.01])
    dropout: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.1, 0.2])


@dataclasses.dataclass
class Config:
    """A whole pipeline recipe."""

    name: str = "default"
    version: int = 1
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # type: ignore[valid-type]
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is list:
        (elem,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_check_value(f"{key}[{n}]", v, elem) for n, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' has a value of the wrong type: {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    raise ConfigError(f"config key '{key}' has an unsupported type")  # pragma: no cover


def _unknown(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown config key '{key}'{hint}")


def _moved(key: str, model_name: Any) -> ConfigError | None:
    """The error for a model setting given in ``[model]`` itself (before each model had its section)."""
    from tfgb.models import registry

    field = key.split(".", 1)[1] if key.startswith("model.") else key
    try:
        entry = registry.entry(str(model_name))
    except ConfigError:
        entry = registry.ENTRIES["mgbr"]
    if field in {f.name for f in dataclasses.fields(entry.settings)}:
        return ConfigError(f"config key 'model.{field}' moved to 'model.{entry.section}.{field}' (each model has "
                           f"its own section; for a recipe file: [model.{entry.section}] {field} = ...)")
    owners = [e.section for e in registry.ENTRIES.values() if field in {f.name for f in dataclasses.fields(e.settings)}]
    if owners:
        return ConfigError(f"config key 'model.{field}' is not a setting of model '{entry.name}'; it belongs to "
                           f"the section(s) {', '.join(f'model.{o}' for o in owners)}")
    return None


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.')}' must be a table")
    hints = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        full = prefix + key
        if key not in hints:
            moved = _moved(full, data.get("name", "mgbr")) if cls is ModelConfig else None
            raise moved or _unknown(full, list(hints))
        tp = hints[key]
        kwargs[key] = from_dict(tp, value, full + ".") if _is_dataclass_type(tp) else _check_value(full, value, tp)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A recipe as nested dicts; ``[model]`` keeps only the chosen model's section."""
    out = dataclasses.asdict(config)
    if isinstance(config, Config):
        from tfgb.models import registry

        try:
            keep = registry.entry(config.model.name).section
        except ConfigError:
            keep = None
        on = {section for key, (_, section, _) in registry.PLUGINS.items() if getattr(config.model, key) == section}
        out["model"] = {k: v for k, v in out["model"].items()
                        if k in ("name", keep, *registry.PLUGINS, *on)}
    return out


def set_key(config: Config, key: str, value: Any) -> None:
    """Set the dotted recipe ``key`` (any depth) to ``value``, type-checked; no cross-field validation."""
    parts = key.split(".")
    node: Any = config
    for depth, part in enumerate(parts[:-1]):
        if part not in _field_types(type(node)):
            raise _unknown(".".join(parts[: depth + 1]), list(_field_types(type(node))))
        node = getattr(node, part)
    hints = _field_types(type(node))
    if parts[-1] not in hints:
        raise _unknown(key, list(hints))
    setattr(node, parts[-1], _check_value(key, value, hints[parts[-1]]))


def _parse_literal(text: str) -> Any:
    """Parse an override value as a TOML literal; fall back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(config: Config, assignment: str, check: bool = True) -> Config:
    """Apply one ``a.b=c`` override (type-checked) and return the new config; with ``check`` the recipe's
    cross-field checks run after it (:func:`load` runs them once, after every override: their order
    does not matter)."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like key=value")
    key, text = (s.strip() for s in assignment.split("=", 1))
    parts = key.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        hints = _field_types(type(node))
        path = ".".join(parts[: depth + 1])
        if part not in hints:
            moved = _moved(path, config.model.name) if depth == 1 and parts[0] == "model" else None
            raise moved or _unknown(path, list(hints))
        if depth == len(parts) - 1:
            tp = hints[part]
            if _is_dataclass_type(tp):
                raise ConfigError(f"config key '{path}' is a section; set one of its keys")
            value = _parse_literal(text)
            if tp is str and not isinstance(value, str):
                value = text  # e.g. --set model.name=123 stays a string
            setattr(node, part, _check_value(path, value, tp))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"config key '{path}' is not a section")
    if check:
        validate(config)
    return config


def load(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a recipe (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    if path is None:
        config = Config()
    else:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: recipe file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        try:
            config = from_dict(Config, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for assignment in overrides:
        config = apply_override(config, assignment, check=False)
    validate(config)
    return config


def dumps(config: Config) -> str:
    return tomli_w.dumps(to_dict(config))


def save(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved recipe atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(dumps(config))
    os.replace(tmp, path)
