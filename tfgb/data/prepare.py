"""``prepare``: the one entry point from a recipe to split, encoded, evaluation-ready data.

Steps: read the raw deal groups (the synthetic generator, or the recipe's files), encode them
(vocabularies), split them (:mod:`tfgb.data.split`), build the valid and test candidate lists
(:mod:`tfgb.data.candidates`), and cache all of it in ``data.cache_dir/<key>/`` (the layout is
:mod:`tfgb.data.cache`'s). Failed launches get a split of their own under the same protocol
(:func:`tfgb.data.split.split_launches`): only the training ones become graph edges, training
interactions or labels.

``key`` is a SHA-256 over :func:`key_inputs`: the input files' names, sizes and content hashes
(or the synthetic generator's settings), the ``data`` settings that shape the arrays (all but
``cache_dir`` and the settings of the side tables read beside the cache: user features, item
categories, user relations; ``synth.tree`` only when it is on) and
:data:`tfgb.data.cache.FORMAT_VERSION`. Model, train and eval settings and code edits leave it unchanged. A hit loads the arrays without parsing the inputs again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from tfgb.config import Config, TrainConfig
from tfgb.contract import Interactions
from tfgb.data import cache, negatives, split, synth, synth_tree
from tfgb.data.cache import FORMAT_VERSION, save_vocabularies
from tfgb.data.candidates import Candidates, build_candidates
from tfgb.data.groups import DealGroups
from tfgb.data.negatives import PairSet
from tfgb.data.readers import read_groups
from tfgb.data.vocab import Vocabulary, encode
from tfgb.errors import ConfigError, DataError

if TYPE_CHECKING:  # these import TensorFlow; loaded only when graphs or a stream are asked for
    import tensorflow as tf

    from tfgb.data.stream import FoldedStream, TrainingStream

logger = logging.getLogger(__name__)

# data.* settings that cannot change the prepared arrays, per data.source; every other field of the
# data section is keyed (so is a new field, by default: at worst a needless re-prepare).
# Side tables (tfgb.data.features, scenarios, relations): read beside the cache, never into it.
_FEATURES = ("user_features", "user_feature_id_column", "item_categories", "item_category_id_column",
             "item_category_path_column", "category_separator", "category_depth", "category_branching",
             "user_relations", "user_relation_columns")
_NOT_SHAPING = {"files": ("cache_dir", "synth", *_FEATURES),
                "synthetic": ("cache_dir", "files", "failed_launches", "format", "initiator_column", "item_column",
                              "participants_column", "participant_separator", "behavior_column", *_FEATURES)}

T = TypeVar("T")


@dataclasses.dataclass
class Prepared:
    """Split, encoded data with its saved candidate lists (see :func:`prepare`).

    Attributes:
      train / valid / test: the three splits as encoded tables over the same vocabularies.
      user_vocab / item_vocab: raw id <-> index.
      failed_users / failed_items: ``int64`` [F] every failed launch (all splits).
      failed_behavior: ``int8`` [F] each one's behaviour, an index into ``behaviors`` (0 = launch).
      failed_split: ``int8`` [F] 0 = train, 1 = valid, 2 = test (:func:`tfgb.data.split.split_launches`).
      behaviors: behaviour names in cascade order; the last is the deal.
      valid_candidates / test_candidates: the saved evaluation lists.
      cache_path: the cache directory these arrays live in.
      from_cache: True when loaded from an existing cache (nothing was read or computed).
      moved_to_train: ``{"valid": n, "test": n}`` groups moved back to training (cold start).
      timings: seconds per step (``read``, ``encode``, ``split``, ``candidates``, ``write``; or
        ``load``), plus ``hash`` (computing the key).
    """

    train: DealGroups
    valid: DealGroups
    test: DealGroups
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    failed_users: np.ndarray
    failed_items: np.ndarray
    failed_behavior: np.ndarray
    failed_split: np.ndarray
    behaviors: tuple[str, ...]
    valid_candidates: Candidates
    test_candidates: Candidates
    cache_path: str
    from_cache: bool = False
    moved_to_train: dict[str, int] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    _memo: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def num_users(self) -> int:
        return len(self.user_vocab)

    @property
    def num_items(self) -> int:
        return len(self.item_vocab)

    def save_vocabularies(self, directory: str | os.PathLike) -> None:
        """Write ``users.txt`` and ``items.txt`` (one raw id per line) into ``directory`` (created)."""
        save_vocabularies(directory, self.user_vocab, self.item_vocab)

    def launches(self, split_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(users, items, behaviour codes)`` of the failed launches of ``"train"``, ``"valid"`` or ``"test"``."""
        keep = self.failed_split == ("train", "valid", "test").index(split_name)
        return self.failed_users[keep], self.failed_items[keep], self.failed_behavior[keep]

    def train_interactions(self) -> PairSet:
        """(user, item) pairs of the training groups (every role) and training failed launches; built once."""
        users, items, _ = self.launches("train")
        return self._cached("train_interactions", lambda: negatives.interactions(
            self.train, failed_users=users, failed_items=items))

    def behavior_interactions(self, groups: DealGroups | None = None,
                              launches: np.ndarray | None = None) -> Interactions:
        """Training interactions with their furthest behaviour: every training deal group's (initiator,
        item) as the last behaviour (the deal), then every training failed launch with its own.

        Args:
          groups: the deal groups to take (default: all training groups).
          launches: ``bool`` mask over the training failed launches to take (default: all).
        """
        groups = self.train if groups is None else groups
        users, items, codes = self.launches("train")
        if launches is not None:
            users, items, codes = users[launches], items[launches], codes[launches]
        deal = len(self.behaviors) - 1
        return Interactions(np.concatenate([groups.initiator, users]).astype(np.int32),
                            np.concatenate([groups.item, items]).astype(np.int32),
                            np.concatenate([np.full(len(groups), deal, np.int8), codes]).astype(np.int8),
                            tuple(self.behaviors))

    def graphs(self, failed_launches: bool = True) -> dict[str, tf.sparse.SparseTensor]:
        """The training graphs of :func:`tfgb.data.graphs.build_graphs`; built once per flag.

        Args:
          failed_launches: add the failed launches as extra initiator-item edges.
        """
        from tfgb.data.graphs import build_graphs  # imports TensorFlow

        def build() -> dict[str, tf.sparse.SparseTensor]:
            failed = self.launches("train")[:2] if failed_launches else (None, None)
            return build_graphs(self.train, self.num_users, self.num_items, *failed)

        return self._cached(("graphs", failed_launches), build)

    def training_stream(self, train: TrainConfig, behaviors: bool = False) -> TrainingStream | FoldedStream:
        """The training batches for ``train.batch_size/aux_size/seed/graph_folds``; built once.

        ``graph_folds`` = 1: a :class:`tfgb.data.stream.TrainingStream` over every training group.
        k > 1: a :class:`tfgb.data.stream.FoldedStream` whose fold ``f`` holds the groups of
        :meth:`fold_of_groups` == f (pair it with :meth:`fold_graphs`). Negatives avoid every
        training interaction in both cases. With ``behaviors`` every batch also carries behaviour
        rows (:mod:`tfgb.data.behavior_rows`) drawn from :meth:`behavior_interactions`; under folds,
        fold f's rows are its own groups and the training failed launches of :meth:`fold_of_launches`
        == f (pair them with ``fold_graphs(..., fold_launches=True)``).
        """
        from tfgb.data.behavior_rows import BehaviorRows, rows_per_triple
        from tfgb.data.stream import FoldedStream, TrainingStream  # imports TensorFlow

        def build() -> TrainingStream | FoldedStream:
            per_triple = rows_per_triple(len(self.behavior_interactions().user), int(self.train.sizes.sum()))

            def stream(groups: DealGroups, seed: int, launches: np.ndarray | None) -> TrainingStream:
                rows = None
                if behaviors:
                    rows = BehaviorRows(self.behavior_interactions(groups, launches), self.train_interactions(),
                                        per_triple, train.behavior_negatives, train.hard_negatives, seed)
                return TrainingStream(groups, self.train_interactions(), self.num_users, self.num_items,
                                      train.batch_size, train.aux_size, seed, rows)

            k = train.graph_folds
            if k == 1:
                return stream(self.train, train.seed, None)
            fold, launch_fold = self.fold_of_groups(k, train.seed), self.fold_of_launches(k, train.seed)
            return FoldedStream([stream(self.train.take(np.flatnonzero(fold == f)),
                                        int(np.random.SeedSequence([train.seed, k, f]).generate_state(1)[0]),
                                        launch_fold == f)
                                 for f in range(k)], train.seed)

        key = ("stream", train.batch_size, train.aux_size, train.seed, train.graph_folds, behaviors,
               train.behavior_negatives if behaviors else 0, train.hard_negatives if behaviors else 0)
        return self._cached(key, build)

    def fold_of_groups(self, folds: int, seed: int) -> np.ndarray:
        """The fold of every training group for ``train.graph_folds`` = ``folds``, ``int64`` [G]."""
        from tfgb.data.stream import fold_of_groups

        return self._cached(("fold_of_groups", folds, seed), lambda: fold_of_groups(len(self.train), folds, seed))

    def fold_of_launches(self, folds: int, seed: int) -> np.ndarray:
        """The fold of every training failed launch (order of :meth:`launches`), ``int64`` [F_train]."""
        from tfgb.data.stream import fold_of_groups

        count = len(self.launches("train")[0])
        return self._cached(("fold_of_launches", folds, seed),
                            lambda: fold_of_groups(count, folds, seed + 1_000_003))

    def fold_graphs(self, folds: int, seed: int, failed_launches: bool = True,
                    fold_launches: bool = False) -> list[dict[str, tf.sparse.SparseTensor]]:
        """Per fold ``f``: the graphs of :meth:`graphs` built from the training groups NOT in fold ``f``.

        The training failed launches stay in every fold's graphs when they are only edges; with
        ``fold_launches`` (a model trained on behaviour rows, where they are labels) fold f's graphs
        also lack the launches of :meth:`fold_of_launches` == f.
        """
        from tfgb.data.graphs import build_graphs  # imports TensorFlow

        def build() -> list[dict[str, tf.sparse.SparseTensor]]:
            fold = self.fold_of_groups(folds, seed)
            users, items, _ = self.launches("train")
            launch_fold = self.fold_of_launches(folds, seed) if fold_launches else np.full(len(users), -1)
            out = []
            for f in range(folds):
                keep = launch_fold != f
                failed = (users[keep], items[keep]) if failed_launches else (None, None)
                out.append(build_graphs(self.train.take(np.flatnonzero(fold != f)), self.num_users, self.num_items,
                                        *failed))
            return out

        return self._cached(("fold_graphs", folds, seed, failed_launches, fold_launches), build)

    def training_dataset(self, train: TrainConfig, epoch: int, start_batch: int = 0) -> tf.data.Dataset:
        """One epoch of training batches as a ``tf.data.Dataset`` (see :mod:`tfgb.data.stream`)."""
        return self.training_stream(train).dataset(epoch, start_batch=start_batch)

    def _cached(self, key: Any, build: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]


def _input_files(config: Config, data_dir: str | None) -> list[tuple[str, str]]:
    """(name in the recipe, path) of every input file of the ``files`` source."""
    data = config.data
    if data_dir is None:
        raise ConfigError("data.source = 'files' needs a data directory (--data-dir)")
    if not data.files:
        raise ConfigError("data.source = 'files' needs at least one file in data.files")
    names = [*data.files, *([data.failed_launches] if data.failed_launches else [])]
    return [(name, os.path.join(data_dir, name)) for name in names]


def key_inputs(config: Config, data_dir: str | None) -> dict[str, Any]:
    """What :func:`cache_key` hashes: :data:`FORMAT_VERSION`, the ``data`` settings that shape the
    arrays, and each input file's name, size and SHA-256 (identity by content, not by path or mtime:
    the same bytes under another ``--data-dir`` hit the same cache, a changed byte misses it).

    Raises:
      ConfigError: ``files`` source without a data directory or files.
      DataError: an input file is missing or unreadable.
    """
    data = config.data
    settings = {k: v for k, v in dataclasses.asdict(data).items() if k not in _NOT_SHAPING.get(data.source, ())}
    if "synth" in settings:  # data of the defaults is the data of before these keys existed: same key
        if not settings["synth"]["tree"]:
            del settings["synth"]["tree"]
            del settings["synth"]["leaf_items"]
        elif settings["synth"]["leaf_items"] == synth_tree.ITEMS_PER_LEAF:
            del settings["synth"]["leaf_items"]
    settings["split"] = [float(r) for r in data.split]  # [8, 1, 1] and [8.0, 1.0, 1.0] split alike
    parts: dict[str, Any] = {"format": FORMAT_VERSION, "data": settings}
    if data.source != "synthetic":
        parts["files"] = [[name, *_file_digest(path)] for name, path in _input_files(config, data_dir)]
    return parts


def _file_digest(path: str) -> tuple[int, str]:
    """(size in bytes, hex SHA-256) of a file."""
    try:
        with open(path, "rb") as fh:
            return os.fstat(fh.fileno()).st_size, hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as exc:
        raise DataError(path, f"cannot read the file ({exc.strerror})") from None


def cache_key(config: Config, data_dir: str | None = None, inputs: dict[str, Any] | None = None) -> str:
    """The cache key (hex SHA-256) of the prepared data: the hash of ``inputs`` (default: :func:`key_inputs`)."""
    inputs = key_inputs(config, data_dir) if inputs is None else inputs
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def prepare(config: Config, data_dir: str | None = None) -> Prepared:
    """Read, encode, split and build candidate lists for ``config.data``, through the cache.

    Args:
      config: the recipe; ``config.data`` says what to read and how to split.
      data_dir: directory ``data.files`` are relative to (required when ``data.source = "files"``).

    Returns:
      The :class:`Prepared` data; ``from_cache`` tells whether the cache was hit.

    Raises:
      ConfigError: bad data settings (no data dir, ``data.negatives`` too large for the data...).
      DataError: a bad input file.
    """
    start = time.perf_counter()
    inputs = key_inputs(config, data_dir)
    key = cache_key(config, inputs=inputs)
    cache_dir = config.data.cache_dir
    final = os.path.join(cache_dir, key[:24])
    hashed = time.perf_counter() - start
    damaged = False
    if cache.valid_cache(final, key):
        try:
            prepared = cache.load(final, tuple(config.data.behaviors))
        except (OSError, KeyError, ValueError, DataError) as exc:  # e.g. a file deleted by hand
            logger.warning("prepare: rebuilding the unreadable cache %s (%s)", final, exc)
            damaged = True
        else:
            prepared.timings.update(hash=round(hashed, 4), load=round(time.perf_counter() - start - hashed, 4))
            logger.info("prepare: loaded %s in %.2f s (train/valid/test %d/%d/%d groups)", final,
                        time.perf_counter() - start, len(prepared.train), len(prepared.valid), len(prepared.test))
            return prepared
    prepared = _compute(config, data_dir)
    prepared.timings["hash"] = round(hashed, 4)
    tick = time.perf_counter()
    cache.write(prepared, cache_dir, final, key, config, replace=damaged, inputs=inputs)
    prepared.timings["write"] = round(time.perf_counter() - tick, 4)
    prepared.cache_path = final
    logger.info("prepare: %s in %.2f s (%s)", final, time.perf_counter() - start,
                ", ".join(f"{k} {v:.2f} s" for k, v in prepared.timings.items()))
    return prepared


def _compute(config: Config, data_dir: str | None) -> Prepared:
    """Every step of :func:`prepare` without the cache."""
    data, timings = config.data, {}
    tick = time.perf_counter()
    if data.source == "synthetic":
        raw = synth.generate(**dataclasses.asdict(data.synth))
    else:  # prepare computed the key first: the data directory and files exist
        raw = read_groups(data, data_dir)
    timings["read"] = time.perf_counter() - tick

    tick = time.perf_counter()
    groups, users, items, failed_users, failed_items, failed_behavior = encode(raw)
    if len(failed_behavior) and failed_behavior.max() >= len(data.behaviors) - 1:
        raise ConfigError(f"data.behaviors = {data.behaviors} has no behaviour before the deal for code "
                          f"{int(failed_behavior.max())}")
    timings["encode"] = time.perf_counter() - tick

    tick = time.perf_counter()
    planned = split.planned_sizes(len(groups), data.split)
    train_idx, valid_idx, test_idx = split.split_groups(groups, data.split, data.seed)
    train, valid, test = groups.take(train_idx), groups.take(valid_idx), groups.take(test_idx)
    failed_split = split.split_launches(groups, train_idx, failed_users, failed_items, data.split, data.seed)
    moved = {"valid": planned[1] - len(valid), "test": planned[2] - len(test)}
    timings["split"] = time.perf_counter() - tick
    logger.info("prepare: split %d groups into train/valid/test %d/%d/%d; cold start moved %d valid and %d "
                "test groups (initiator or item absent from training) back to training",
                len(groups), len(train), len(valid), len(test), moved["valid"], moved["test"])

    tick = time.perf_counter()
    everything = negatives.interactions(train, valid, test, failed_users=failed_users, failed_items=failed_items)
    lists = [build_candidates(table, everything, len(users), len(items), data.negatives, seed=(data.seed, n))
             for n, table in ((1, valid), (2, test))]
    timings["candidates"] = time.perf_counter() - tick
    return Prepared(train, valid, test, users, items, failed_users.astype(np.int64), failed_items.astype(np.int64),
                    failed_behavior.astype(np.int8), failed_split, tuple(data.behaviors),
                    lists[0], lists[1], cache_path="", from_cache=False, moved_to_train=moved,
                    timings={k: round(v, 4) for k, v in timings.items()})


def prepare_split_sizes(config: Config, data_dir: str | None = None) -> dict[str, int]:
    """Group counts per split after cold-start moves (for ``python -m tfgb.data stats``).

    Returns:
      ``{"train": n, "valid": n, "test": n, "moved_to_train": n}``.
    """
    prepared = prepare(config, data_dir)
    return {"train": len(prepared.train), "valid": len(prepared.valid), "test": len(prepared.test),
            "moved_to_train": int(sum(prepared.moved_to_train.values()))}
