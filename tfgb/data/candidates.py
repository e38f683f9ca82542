"""Saved candidate lists for evaluation (the evaluation protocol, docs/design.md).

For every group of an evaluation split (valid or test), one row holds:

* task A: the true item + M negative items the initiator never interacted with (in any split,
  in any role, including failed launches);
* task B: one true participant of the group (drawn at random) + M negative users who are
  neither the initiator nor a participant of the group.

M = ``data.negatives`` (99). Negatives of one row are distinct and stored in **sampling order**.
A list of length k (2 <= k <= M + 1) is the positive plus the **first k - 1 negatives**, with the
positive at position ``floor(slot * k)``, where ``slot`` is a uniform number in [0, 1) drawn once
per row and task. So the 1:9 list ("@10") is a subset of the 1:99 list ("@100") and in both the
positive sits at a uniformly random position. :meth:`Candidates.task_a` /
:meth:`Candidates.task_b` assemble the ``[N, k]`` matrices; positions never influence scores.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import numpy as np

from tfgb.data.groups import DealGroups
from tfgb.data.negatives import PairSet, group_members, sample_absent
from tfgb.errors import ConfigError

_FIELDS = ("initiator", "item", "participant", "item_negatives", "participant_negatives",
           "item_slot", "participant_slot")


@dataclasses.dataclass(frozen=True)
class Candidates:
    """Candidate lists of one evaluation split, N rows (one per group), M negatives per task.

    Attributes:
      initiator: ``int64`` [N] user index of the group's initiator.
      item: ``int64`` [N] the true item (task A positive; task B context).
      participant: ``int64`` [N] the true participant drawn for task B.
      item_negatives: ``int64`` [N, M] distinct negative items, in sampling order.
      participant_negatives: ``int64`` [N, M] distinct negative users, in sampling order.
      item_slot / participant_slot: ``float64`` [N] uniform in [0, 1); the positive of a list of
        length k sits at ``floor(slot * k)``.
    """

    initiator: np.ndarray
    item: np.ndarray
    participant: np.ndarray
    item_negatives: np.ndarray
    participant_negatives: np.ndarray
    item_slot: np.ndarray
    participant_slot: np.ndarray

    def __len__(self) -> int:
        return int(self.initiator.shape[0])

    @property
    def negatives(self) -> int:
        """M, negatives per row and task."""
        return int(self.item_negatives.shape[1])

    def task_a(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Task A lists of length k (default M + 1): ``(candidates int64 [N, k], label int64 [N])``."""
        return _assemble(self.item, self.item_negatives, self.item_slot, k)

    def task_b(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Task B lists of length k (default M + 1): ``(candidates int64 [N, k], label int64 [N])``."""
        return _assemble(self.participant, self.participant_negatives, self.participant_slot, k)

    # The full lists below are assembled on first use and kept (cached_property works on frozen
    # dataclasses: it writes the instance __dict__ directly).
    @functools.cached_property
    def items(self) -> np.ndarray:
        """Full task A lists, ``int64`` [N, M + 1]."""
        return self.task_a()[0]

    @functools.cached_property
    def item_label(self) -> np.ndarray:
        """Position of the true item in :attr:`items`, ``int64`` [N]."""
        return self.task_a()[1]

    @functools.cached_property
    def participants(self) -> np.ndarray:
        """Full task B lists, ``int64`` [N, M + 1]."""
        return self.task_b()[0]

    @functools.cached_property
    def participant_label(self) -> np.ndarray:
        """Position of the true participant in :attr:`participants`, ``int64`` [N]."""
        return self.task_b()[1]

    def take(self, index: np.ndarray) -> Candidates:
        """The rows at ``index`` (e.g. a seeded subsample for per-epoch validation)."""
        index = np.asarray(index, dtype=np.int64)
        return Candidates(**{name: getattr(self, name)[index] for name in _FIELDS})

    def save(self, path: str | os.PathLike) -> None:
        """Write all arrays to one ``.npz`` file at ``path``."""
        with open(path, "wb") as fh:
            np.savez(fh, **{name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Candidates:
        """Read lists written by :meth:`save`."""
        with np.load(path) as data:
            return cls(**{name: data[name] for name in _FIELDS})


def _assemble(positive: np.ndarray, negatives: np.ndarray, slot: np.ndarray, k: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Insert ``positive`` [N] at ``floor(slot * k)`` among the first k - 1 ``negatives`` [N, M]."""
    m = negatives.shape[1]
    k = m + 1 if k is None else int(k)
    if not 2 <= k <= m + 1:
        raise ValueError(f"list length k must be in [2, {m + 1}] for {m} negatives, got {k}")
    label = np.minimum(np.floor(slot * k).astype(np.int64), k - 1)
    column = np.arange(k, dtype=np.int64)[None, :]
    source = np.minimum(column - (column > label[:, None]), k - 2)  # negative j fills slot j or j + 1
    lists = np.take_along_axis(negatives[:, : k - 1], source, axis=1)
    lists[column == label[:, None]] = positive
    return lists, label


def _require(available: np.ndarray, negatives: int, what: str) -> None:
    if available.size and available.min() < negatives:
        row = int(np.argmin(available))
        raise ConfigError(
            f"data.negatives = {negatives} is too large for this data: evaluation group {row} has only "
            f"{int(available[row])} possible negative {what}"
        )


def build_candidates(
    eval_groups: DealGroups,
    interacted: PairSet,
    num_users: int,
    num_items: int,
    negatives: int = 99,
    seed: int | Sequence[int] = 0,
) -> Candidates:
    """Build the candidate lists of one evaluation split.

    Args:
      eval_groups: the N groups of the split (each with at least one participant).
      interacted: every (user, item) interaction in ALL data (every split, every role, failed
        launches), over ``[num_users, num_items]``; see :func:`tfgb.data.negatives.interactions`.
      num_users / num_items: vocabulary sizes.
      negatives: M, negatives per list.
      seed: seed of every random choice (negatives, true participant, positions); an int or a
        sequence of ints (``np.random.default_rng`` entropy).

    Returns:
      The :class:`Candidates`; identical for identical inputs and seed.

    Raises:
      ConfigError: some row has fewer than M possible negatives (``data.negatives`` too large).
      ValueError: a group has no participant, or ``interacted`` has other id spaces.
    """
    if (interacted.num_rows, interacted.num_cols) != (num_users, num_items):
        raise ValueError("interacted must be a PairSet over [num_users, num_items]")
    sizes = eval_groups.sizes
    if sizes.size and sizes.min() < 1:
        raise ValueError("every evaluation group needs at least one participant for task B")
    members = group_members(eval_groups)
    _require(num_items - interacted.row_counts[eval_groups.initiator], negatives, "items")
    _require(num_users - members.row_counts, negatives, "participants")

    rng = np.random.default_rng(seed)
    n = len(eval_groups)
    item_negatives = sample_absent(rng, interacted, eval_groups.initiator, negatives, distinct=True)
    chosen = np.minimum(np.floor(rng.random(n) * sizes).astype(np.int64), sizes - 1)
    participant = eval_groups.participants[eval_groups.offsets[:-1] + chosen]
    participant_negatives = sample_absent(rng, members, np.arange(n), negatives, distinct=True)
    return Candidates(
        initiator=eval_groups.initiator.astype(np.int64),
        item=eval_groups.item.astype(np.int64),
        participant=participant.astype(np.int64),
        item_negatives=item_negatives,
        participant_negatives=participant_negatives,
        item_slot=rng.random(n),
        participant_slot=rng.random(n),
    )
