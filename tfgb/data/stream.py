"""tf.data pipelines of training triples with sampled negatives.

Training (:class:`TrainingStream`): one example per (initiator u, item i, participant p) triple,
i.e. one per participant of every training group. Batch ``b`` of epoch ``e`` is a pure function
of the training table, ``batch_size``, ``seed``, ``e`` and ``b``: the epoch's order is
``default_rng([seed, e]).permutation(P)`` and the negatives of batch ``b`` come from
``default_rng([seed, e, b])``. A run resumed at epoch ``e`` (or at batch ``b`` of it,
``dataset(e, start_batch=b)``) therefore sees exactly the batches an uninterrupted run would, and
batches can be built in parallel (several tf.data threads) without changing them.

Every training batch is a dict of ``int32`` tensors (ids are vocabulary indices; int32 halves
the bytes of int64 and is what embedding lookups take):

* ``initiator [B]``, ``item [B]``, ``participant [B]``: the triple.
* ``neg_item [B]``: an item the initiator never interacted with in training (BPR negative, task A).
* ``neg_participant [B]``: a user who is neither the initiator nor a participant of the group
  (BPR negative, task B).
* ``aux_items [B, T]``: T^I, items the initiator never interacted with in training (so never the
  true item); Eq. 21 of MGBR.
* ``aux_participants [B, T]``: T^P, users outside the group (Eq. 24 of MGBR).
* with ``behaviors`` (:mod:`tfgb.data.behavior_rows`): ``behavior_user/item/stage [B, M]`` and
  ``behavior_neg [B, M, R, N]``, the sampled interactions of a multi-behaviour model's loss.

B is ``batch_size`` except in the last batch (``drop_remainder=False``); T is ``aux_size``.
Negatives are drawn uniformly with replacement (the aux sets of a row may repeat an id, with
probability about T^2 / (2 * num_items)); none is ever a positive.

:class:`FoldedStream` interleaves the batches of k streams (``train.graph_folds``). Callers get a
stream from :meth:`tfgb.data.prepare.Prepared.training_stream`. Evaluation reads the saved lists of
:mod:`tfgb.data.candidates` as numpy arrays, not through tf.data.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfgb import contract
from tfgb.data.behavior_rows import BehaviorRows
from tfgb.data.groups import DealGroups
from tfgb.data.negatives import PairSet, group_members, sample_absent
from tfgb.errors import ConfigError

BATCHES_PER_CALL = 8  # batches built per tf.numpy_function call (amortises its overhead)
TRAINING_KEYS = tuple(field.name for field in contract.TRAINING_BATCH)


def _batch_dict(make, arg: tf.Tensor, folds: bool, aux_size: int,
                behaviors: BehaviorRows | None) -> dict[str, tf.Tensor]:
    """``make(arg)`` (numpy, one array per field of :func:`tfgb.contract.batch_fields`) as a dict of
    tensors with the contract's dtypes and shapes."""
    fields = contract.batch_fields(folds, behaviors is not None)
    sizes = behavior_sizes(behaviors)
    values = tf.numpy_function(make, [arg], Tout=[tf.as_dtype(f.dtype) for f in fields], stateful=False)
    return {f.name: tf.ensure_shape(value, f.concrete_shape(aux_size, sizes)) for f, value in zip(fields, values)}


def behavior_sizes(behaviors: BehaviorRows | None) -> dict[str, int] | None:
    """``{"M", "R", "N"}`` of the behaviour fields (None without behaviour rows)."""
    if behaviors is None:
        return None
    return {"M": behaviors.per_triple, "R": behaviors.num_behaviors, "N": behaviors.negatives}


class TrainingStream:
    """Deterministic, reshuffled-per-epoch training batches with negatives and aux sets.

    Args:
      train: the training groups.
      interacted: the (user, item) pairs of training interactions (every role, failed launches
        included), over ``[num_users, num_items]``; see :func:`tfgb.data.negatives.interactions`.
      num_users / num_items: vocabulary sizes.
      batch_size: B.
      aux_size: T, size of the auxiliary sets T^I and T^P.
      seed: the stream's seed (e.g. ``train.seed``).
      behaviors: behaviour rows to add to every batch (None: the triple fields only).

    Raises:
      ConfigError: some initiator interacted with every item, or some group holds every user
        (no negative exists).
    """

    def __init__(
        self,
        train: DealGroups,
        interacted: PairSet,
        num_users: int,
        num_items: int,
        batch_size: int,
        aux_size: int,
        seed: int,
        behaviors: BehaviorRows | None = None,
    ):
        if (interacted.num_rows, interacted.num_cols) != (num_users, num_items):
            raise ValueError("interacted must be a PairSet over [num_users, num_items]")
        if batch_size < 1 or aux_size < 0:
            raise ValueError(f"batch_size must be >= 1 and aux_size >= 0, got {batch_size} and {aux_size}")
        self.initiator, self.item, self.participant, self.group = train.triples()
        self.interacted = interacted
        self.members = group_members(train)
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.batch_size, self.aux_size, self.seed = int(batch_size), int(aux_size), int(seed)
        self.behaviors = behaviors
        if self.num_triples and interacted.row_counts[self.initiator].max() >= num_items:
            raise ConfigError("the training data has an initiator who interacted with every item: no negative item exists")
        if self.num_triples and self.members.row_counts.max() >= num_users:
            raise ConfigError("the training data has a group containing every user: no negative participant exists")

    @property
    def num_triples(self) -> int:
        """P, examples per epoch."""
        return int(self.participant.shape[0])

    @property
    def num_batches(self) -> int:
        """Batches per epoch, the last one possibly smaller."""
        return -(-self.num_triples // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of triple indices, ``int64`` [P]."""
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_triples)

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None,
              behavior_order: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Batch ``index`` of ``epoch`` as numpy ``int32`` arrays (see the module docstring).

        Args:
          epoch: epoch number (any non-negative int).
          index: batch number in ``[0, num_batches)``.
          order / behavior_order: ``self.order(epoch)`` and ``self.behaviors.order(epoch)`` when
            already computed (saves recomputing them).
        """
        order = self.order(epoch) if order is None else order
        rows = order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        initiator, group = self.initiator[rows], self.group[rows]
        items = sample_absent(rng, self.interacted, initiator, 1 + self.aux_size)
        users = sample_absent(rng, self.members, group, 1 + self.aux_size)
        out = {
            "initiator": initiator.astype(np.int32),
            "item": self.item[rows].astype(np.int32),
            "participant": self.participant[rows].astype(np.int32),
            "neg_item": items[:, 0].astype(np.int32),
            "neg_participant": users[:, 0].astype(np.int32),
            "aux_items": items[:, 1:].astype(np.int32),
            "aux_participants": users[:, 1:].astype(np.int32),
        }
        if self.behaviors is not None:
            out.update(self.behaviors.rows(rng, epoch, index * self.batch_size, len(rows), behavior_order))
        return out

    def dataset(self, epoch: int, start_batch: int = 0, parallel_calls: int | None = None) -> tf.data.Dataset:
        """The batches of one epoch as a ``tf.data.Dataset`` of dicts, from ``start_batch`` on.

        numpy builds :data:`BATCHES_PER_CALL` consecutive batches per ``tf.numpy_function`` call
        (fewer, larger calls: less per-call overhead), ``parallel_calls`` calls at a time (default:
        tf.data's autotune), and ``rebatch`` cuts them back into the batches of :meth:`batch`, in
        order. The content of every batch is that of :meth:`batch`, whatever the parallelism.
        """
        order = self.order(epoch)
        behavior_order = None if self.behaviors is None else self.behaviors.order(epoch)
        keys = [f.name for f in contract.batch_fields(folds=False, behaviors=self.behaviors is not None)]
        start_batch = int(start_batch)

        def make(chunk: np.ndarray) -> list[np.ndarray]:
            first = max(int(chunk) * BATCHES_PER_CALL, start_batch)
            last = min((int(chunk) + 1) * BATCHES_PER_CALL, self.num_batches)
            parts = [self.batch(epoch, index, order, behavior_order) for index in range(first, last)]
            return [np.concatenate([part[key] for part in parts]) for key in keys]

        def to_dict(chunk: tf.Tensor) -> dict[str, tf.Tensor]:
            return _batch_dict(make, chunk, False, self.aux_size, self.behaviors)

        calls = tf.data.AUTOTUNE if parallel_calls is None else parallel_calls
        chunks = -(-self.num_batches // BATCHES_PER_CALL)
        return (
            tf.data.Dataset.range(start_batch // BATCHES_PER_CALL, chunks)
            .map(to_dict, num_parallel_calls=calls, deterministic=True)
            .rebatch(self.batch_size, drop_remainder=False)
            .prefetch(tf.data.AUTOTUNE)
        )


def fold_of_groups(num_groups: int, folds: int, seed: int) -> np.ndarray:
    """A seeded, balanced assignment of ``num_groups`` groups to ``folds`` folds, ``int64`` [G]."""
    fold = np.empty(num_groups, dtype=np.int64)
    fold[np.random.default_rng([int(seed), int(folds)]).permutation(num_groups)] = np.arange(num_groups) % folds
    return fold


class FoldedStream:
    """Training batches of k disjoint folds of the training groups (``train.graph_folds``).

    Each batch holds the triples of ONE fold and carries it as ``fold`` [B] (``int32``, the same
    value in every row); the model propagates that batch over graphs built from the OTHER folds'
    groups, so a training triple is never an edge of the graph it is scored on, just as a
    validation or test group is not. Fold ``f``'s batches are those of a
    :class:`TrainingStream` over its groups; an epoch visits every batch of every fold once, in an
    order that interleaves the folds: ``default_rng([seed, epoch, folds]).permutation`` of the
    (fold, batch) pairs. Like :class:`TrainingStream`, batch ``b`` of epoch ``e`` is a pure
    function of the data, the seed, ``e`` and ``b``.

    Args:
      streams: one :class:`TrainingStream` per fold (same batch and aux sizes).
      seed: seed of the fold interleaving (e.g. ``train.seed``).
    """

    def __init__(self, streams: list[TrainingStream], seed: int):
        if len(streams) < 2:
            raise ValueError("a FoldedStream needs at least two folds")
        self.streams = list(streams)
        self.batch_size, self.aux_size, self.seed = streams[0].batch_size, streams[0].aux_size, int(seed)

    @property
    def num_triples(self) -> int:
        return sum(s.num_triples for s in self.streams)

    @property
    def num_batches(self) -> int:
        return sum(s.num_batches for s in self.streams)

    def schedule(self, epoch: int) -> np.ndarray:
        """``int64`` [num_batches, 2]: (fold, batch of that fold's stream) of every batch of ``epoch``."""
        pairs = np.concatenate([np.stack([np.full(s.num_batches, f), np.arange(s.num_batches)], 1)
                                for f, s in enumerate(self.streams)])
        order = np.random.default_rng([self.seed, int(epoch), len(self.streams)]).permutation(len(pairs))
        return pairs[order]

    def batch(self, epoch: int, index: int, schedule: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Batch ``index`` of ``epoch``: :meth:`TrainingStream.batch` of its fold, plus ``fold`` [B]."""
        schedule = self.schedule(epoch) if schedule is None else schedule
        fold, local = (int(x) for x in schedule[index])
        out = self.streams[fold].batch(epoch, local)
        out["fold"] = np.full(out["initiator"].shape, fold, dtype=np.int32)
        return out

    def dataset(self, epoch: int, start_batch: int = 0, parallel_calls: int | None = None) -> tf.data.Dataset:
        """The batches of one epoch from ``start_batch`` on, one ``tf.numpy_function`` call per batch
        (batches of different folds must never be merged, so no rebatching)."""
        schedule = self.schedule(epoch)
        behaviors = self.streams[0].behaviors
        keys = [f.name for f in contract.batch_fields(folds=True, behaviors=behaviors is not None)]

        def make(index: np.ndarray) -> list[np.ndarray]:
            batch = self.batch(epoch, int(index), schedule)
            return [batch[key] for key in keys]

        def to_dict(index: tf.Tensor) -> dict[str, tf.Tensor]:
            return _batch_dict(make, index, True, self.aux_size, behaviors)

        calls = tf.data.AUTOTUNE if parallel_calls is None else parallel_calls
        return (tf.data.Dataset.range(int(start_batch), self.num_batches)
                .map(to_dict, num_parallel_calls=calls, deterministic=True)
                .prefetch(tf.data.AUTOTUNE))
