"""The in-memory deal-group table every other data module works on.

A deal group is (initiator u, item i, participants G). Raw ids are strings; after encoding,
users (initiators and participants share one id space) and items are dense ``int64`` indices.
Participants are stored ragged as CSR-style ``offsets``/``values`` arrays so that a table of a
few hundred thousand groups costs a few megabytes and every operation on it is vectorized.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class RawGroups:
    """Deal groups as read from files, with raw string ids (before vocabularies).

    Attributes:
      initiator: ``object`` array [G] of raw initiator ids (str).
      item: ``object`` array [G] of raw item ids (str).
      offsets: ``int64`` [G + 1]; participants of group g are ``participants[offsets[g]:offsets[g+1]]``.
      participants: ``object`` array [sum of group sizes] of raw user ids (str).
      failed_initiator / failed_item: ``object`` arrays [F] of interactions that did not become a deal group
        (for group buying: failed launches), may be empty.
      failed_behavior: ``int8`` [F], each row's behaviour as an index into ``data.behaviors`` (never the
        last, the deal); empty = every row is behaviour 0 (``launch``).
    """

    initiator: np.ndarray
    item: np.ndarray
    offsets: np.ndarray
    participants: np.ndarray
    failed_initiator: np.ndarray = dataclasses.field(default_factory=lambda: np.array([], dtype=object))
    failed_item: np.ndarray = dataclasses.field(default_factory=lambda: np.array([], dtype=object))
    failed_behavior: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int8))

    def behavior_codes(self) -> np.ndarray:
        """``failed_behavior``, or zeros (``launch``) when it is empty: ``int8`` [F]."""
        if len(self.failed_behavior) == 0:
            return np.zeros(len(self.failed_initiator), np.int8)
        if len(self.failed_behavior) != len(self.failed_initiator):
            raise ValueError("failed_behavior must have one code per failed launch")
        return np.asarray(self.failed_behavior, np.int8)

    def __len__(self) -> int:
        return int(self.initiator.shape[0])


@dataclasses.dataclass(frozen=True)
class DealGroups:
    """Encoded deal groups: dense indices into the user and item vocabularies.

    Attributes:
      initiator: ``int64`` [G] user index of each group's initiator.
      item: ``int64`` [G] item index.
      offsets: ``int64`` [G + 1] CSR offsets into ``participants``.
      participants: ``int64`` [P] user indices.
      num_users / num_items: sizes of the vocabularies (indices are in ``[0, num_users)`` etc.).
    """

    initiator: np.ndarray
    item: np.ndarray
    offsets: np.ndarray
    participants: np.ndarray
    num_users: int
    num_items: int

    def __len__(self) -> int:
        return int(self.initiator.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        """Participants per group, ``int64`` [G]."""
        return np.diff(self.offsets)

    def group_of_participant(self) -> np.ndarray:
        """Group index of every entry of ``participants``, ``int64`` [P]."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.sizes)

    def take(self, index: np.ndarray) -> DealGroups:
        """The groups at ``index`` (in that order), as a new table."""
        index = np.asarray(index, dtype=np.int64)
        sizes = self.sizes[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        starts = self.offsets[:-1][index]
        # Gather every participant slice at once: position within group + start of group.
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], sizes)
        values = self.participants[np.repeat(starts, sizes) + within]
        return DealGroups(self.initiator[index], self.item[index], offsets, values,
                          self.num_users, self.num_items)

    def triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One (u, i, p) row per participant: ``(initiator, item, participant, group)`` each [P]."""
        group = self.group_of_participant()
        return self.initiator[group], self.item[group], self.participants, group
