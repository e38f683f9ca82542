"""Cross-field checks of a recipe (:func:`validate`), run by :func:`tfgb.config.load` after the types are
checked and by every command that changes a recipe; each failure is one :class:`ConfigError` sentence
naming the key."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tfgb.errors import ConfigError

if TYPE_CHECKING:
    from tfgb.config import Config

__all__ = ["validate"]


def validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    d = config.data
    if d.source not in ("synthetic", "files"):
        raise ConfigError(f"config key 'data.source' must be 'synthetic' or 'files', got {d.source!r}")
    if d.format not in ("auto", "beibei", "csv", "tsv", "parquet"):
        raise ConfigError(f"config key 'data.format' must be auto, beibei, csv, tsv or parquet, got {d.format!r}")
    if len(d.split) != 3 or min(d.split) < 0 or sum(d.split) <= 0:
        raise ConfigError("config key 'data.split' must be three non-negative ratios (train, valid, test)")
    if d.negatives < 1:
        raise ConfigError("config key 'data.negatives' must be at least 1")
    if len(d.behaviors) < 2 or len(set(d.behaviors)) != len(d.behaviors):
        raise ConfigError(f"config key 'data.behaviors' must list 2+ distinct behaviours, deal last, got {d.behaviors}")
    if d.category_depth < 1:
        raise ConfigError("config key 'data.category_depth' must be at least 1 (levels of the derived category tree)")
    if d.category_branching < 2:
        raise ConfigError("config key 'data.category_branching' must be at least 2 (clusters per derived category)")
    if not d.category_separator:
        raise ConfigError("config key 'data.category_separator' must not be empty")
    if len(d.user_relation_columns) != 3 or len(set(d.user_relation_columns)) != 3 or not all(d.user_relation_columns):
        raise ConfigError("config key 'data.user_relation_columns' must name three distinct columns (source user, "
                          f"destination user, relation), got {d.user_relation_columns}")
    if not 0.0 <= config.train.hard_negatives <= 1.0:
        raise ConfigError("config key 'train.hard_negatives' must be a probability in [0, 1]")
    from tfgb.models import registry

    registry.entry(config.model.name)  # an unknown name is an error naming the closest one
    for section in [e.section for e in registry.ENTRIES.values()] + [p[1] for p in registry.PLUGINS.values()]:
        registry.validate_settings(f"model.{section}", getattr(config.model, section))
    for key, (values, _, _) in registry.PLUGINS.items():
        if getattr(config.model, key) not in values:
            raise ConfigError(f"config key 'model.{key}' must be one of {', '.join(values)}, got {getattr(config.model, key)!r}")
    for key in ("epochs", "batch_size", "aux_size", "evals_per_epoch", "graph_folds", "behavior_negatives"):
        if getattr(config.train, key) < 1:
            raise ConfigError(f"config key 'train.{key}' must be at least 1")
    if config.model.user_graph != "none" and config.train.graph_folds < 2:
        raise ConfigError("model.user_graph = 'attention' needs train.graph_folds of at least 2 (e.g. --set "
                          "train.graph_folds=4): each training triple is scored with the edges and neighbour "
                          "samples of the other folds, never with its own group's edge")
    if registry.entry(config.model.name).name == "treems" and config.train.graph_folds < 2:
        # TreeMS reads each pair's training edges (t of Eq. 3) and sampled neighbours: over every training
        # group, a training triple's own edge is among its features, and the model learns to find it (measured
        # on the synthetic tree data: training loss_b 0.02 by epoch 3 while validation MRR@10 of task B falls
        # below item popularity's).
        raise ConfigError("model treems needs train.graph_folds of at least 2 (e.g. --set train.graph_folds=4): "
                          "each training triple is scored with the edges and neighbour samples of the other folds, "
                          "never with its own group's edge")
    for key in ("budget_steps", "patience", "eval_every_steps", "weight_decay"):
        if getattr(config.train, key) < 0:
            raise ConfigError(f"config key 'train.{key}' must be 0 (off) or positive")
    if config.train.max_minutes < 0:
        raise ConfigError("config key 'train.max_minutes' must be 0 (no limit) or a positive number of minutes")
    if config.train.block_chunk < 0:
        raise ConfigError("config key 'train.block_chunk' must be 0 (whole batch) or a positive number of triples")
    if config.train.learning_rate <= 0:
        raise ConfigError("config key 'train.learning_rate' must be positive")
    lengths = set()
    for n, entry in enumerate(config.eval.hr_cutoffs):
        key = f"config key 'eval.hr_cutoffs[{n}]'"
        if not entry or entry[0] < 2 or entry[0] in lengths:
            raise ConfigError(f"{key} must start with a list length of at least 2, once per length, got {entry}")
        lengths.add(entry[0])
        length, cutoffs = entry[0], entry[1:]
        bad = [c for c in cutoffs if not 1 <= c < length]
        if bad or len(set(cutoffs)) != len(cutoffs):
            raise ConfigError(f"{key} = {entry}: the HR cut-offs of lists of length {length} must be distinct and "
                              f"in [1, {length - 1}] (a hit in the top {length} of {length} candidates cannot fail)")
