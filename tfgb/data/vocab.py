"""Vocabularies (raw string id <-> dense index) and encoding raw deal groups into indices.

Users (initiators and participants) share one vocabulary, items have their own: user ``"5"`` and
item ``"5"`` are different objects. Index order is the sorted order of the raw ids, so the same
data always gives the same indices. :func:`encode` also cleans the groups: repeated participants
are collapsed, a participant equal to the initiator is dropped (and a group left with no
participant with it), and exact duplicate groups and duplicate failed launches are dropped,
keeping the first.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable

import numpy as np
import pandas as pd

from tfgb.data.groups import DealGroups, RawGroups
from tfgb.errors import DataError

logger = logging.getLogger(__name__)


class Vocabulary:
    """A fixed mapping between raw string ids and indices ``0 .. len - 1``.

    Args:
      ids: raw ids, any order, repeats allowed; integers are turned into their decimal strings.
        The vocabulary holds the sorted unique ids.
    """

    def __init__(self, ids: Iterable[str] | np.ndarray):
        values = _as_strings(ids)
        unique = pd.unique(values) if len(values) else values
        # Sorting as fixed-width unicode is several times faster than sorting Python objects.
        self._set_ids(np.sort(unique.astype(str)).astype(object) if len(unique) else unique)

    @classmethod
    def _from_unique(cls, ids: np.ndarray) -> Vocabulary:
        """A vocabulary over ``ids`` in the given order (they must be unique strings)."""
        vocab = cls.__new__(cls)
        vocab._set_ids(np.array(ids, dtype=object))  # a copy: it is made read-only
        return vocab

    def _set_ids(self, ids: np.ndarray) -> None:
        self._ids = ids
        self._ids.flags.writeable = False
        self._index = pd.Index(ids, dtype=object)

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self._ids[:3].tolist())) + (", ..." if len(self) > 3 else "")
        return f"Vocabulary({len(self)} ids: {head})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self._ids, other._ids)

    @property
    def ids(self) -> np.ndarray:
        """``object`` array [V] of raw ids; ``ids[k]`` is the id of index ``k`` (read-only)."""
        return self._ids

    def lookup(self, ids: Iterable[str] | np.ndarray) -> np.ndarray:
        """Indices of raw ids, ``int64`` of the same shape as ``ids``; unknown ids give -1."""
        values = np.asarray(ids)
        shape = values.shape
        flat = _as_strings(values.reshape(-1))
        if flat.size == 0:
            return np.zeros(shape, dtype=np.int64)
        # Hash the (usually much fewer) distinct query ids once, then gather.
        codes, unique = pd.factorize(flat)
        found = self._index.get_indexer(unique).astype(np.int64)
        out = np.where(codes >= 0, found[codes], -1)
        return out.reshape(shape)

    def save(self, path: str | os.PathLike) -> None:
        """Write one id per line (index order), atomically: a temp file renamed into place.

        Raises:
          ValueError: an id contains a line break and could not be read back.
        """
        if len(self) and pd.Series(self._ids, dtype=object).str.contains("[\r\n]", regex=True).any():
            raise ValueError("a vocabulary id contains a line break; it cannot be saved one per line")
        path = os.fspath(path)
        # A unique sibling name (not mkstemp, whose 0600 mode would stick to the final file).
        tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
                fh.write("\n".join(self._ids.tolist()) + ("\n" if len(self) else ""))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save` (index = line number - 1).

        Raises:
          DataError: the file is missing or lists an id twice.
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise DataError(path, "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(path, f"cannot read the vocabulary ({exc})") from None
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        ids = np.array(lines, dtype=object)
        duplicated = pd.Index(ids, dtype=object).duplicated()
        if duplicated.any():
            line = int(np.flatnonzero(duplicated)[0])
            raise DataError(path, f"id {ids[line]!r} is listed twice", line=line + 1)
        return cls._from_unique(ids)


def encode(raw: RawGroups) -> tuple[DealGroups, Vocabulary, Vocabulary, np.ndarray, np.ndarray, np.ndarray]:
    """Build the vocabularies and encode (and clean) raw deal groups.

    Args:
      raw: deal groups and failed launches with raw string ids.

    Returns:
      ``(groups, users, items, failed_initiator, failed_item, failed_behavior)``: the cleaned, encoded
      groups; the user vocabulary (initiators, participants and failed-launch initiators of the kept
      rows); the item vocabulary (items and failed-launch items); ``int64`` [F] indices of the
      distinct failed launches, in file order; and their ``int8`` [F] behaviour codes (a pair listed
      with several behaviours keeps its furthest; a pair that is a deal group's is no failed launch).
    """
    n_groups, n_part = len(raw), len(raw.participants)
    user_codes, user_ids = _factorize_sorted(
        np.concatenate([raw.initiator, raw.participants, raw.failed_initiator]))
    item_codes, item_ids = _factorize_sorted(np.concatenate([raw.item, raw.failed_item]))
    groups = _clean_groups(user_codes[:n_groups], item_codes[:n_groups], np.asarray(raw.offsets, np.int64),
                           user_codes[n_groups:n_groups + n_part], len(user_ids), len(item_ids))
    failed_user, failed_item, failed_behavior = _dedupe_launches(
        user_codes[n_groups + n_part:], item_codes[n_groups:], raw.behavior_codes(), len(item_ids))
    # A pair that is also a deal group's (initiator, item) reached the deal: its furthest behaviour.
    dealt = np.isin(failed_user * max(len(item_ids), 1) + failed_item,
                    groups.initiator * max(len(item_ids), 1) + groups.item)
    if dealt.any():
        logger.info("encode: dropped %d failed launches whose (initiator, item) is a deal group's", int(dealt.sum()))
        failed_user, failed_item, failed_behavior = failed_user[~dealt], failed_item[~dealt], failed_behavior[~dealt]
    # Ids whose every row was dropped leave the vocabularies (subsets of sorted ids stay sorted).
    user_map, users = _compact(user_ids, [groups.initiator, groups.participants, failed_user])
    item_map, items = _compact(item_ids, [groups.item, failed_item])
    encoded = DealGroups(user_map[groups.initiator], item_map[groups.item], groups.offsets,
                         user_map[groups.participants], len(users), len(items))
    return encoded, users, items, user_map[failed_user], item_map[failed_item], failed_behavior


def _as_strings(ids: Iterable[str] | np.ndarray) -> np.ndarray:
    """``ids`` as a 1-d ``object`` array of str (integers become decimal strings)."""
    values = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
    if values.dtype.kind in "iuU":
        return values.astype(str).astype(object)
    if values.dtype.kind == "O" and len(values) and pd.api.types.infer_dtype(values, skipna=False) != "string":
        return pd.Series(values, dtype=object).map(str).to_numpy(dtype=object)
    return values.astype(object)


def _factorize_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted unique values: ``(codes int64 [N], unique object [U])``."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), np.array([], dtype=object)
    codes, unique = pd.factorize(values)
    order = np.argsort(unique.astype(str), kind="stable")
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique), dtype=np.int64)
    return rank[codes], unique[order].astype(object)


def _clean_groups(initiator: np.ndarray, item: np.ndarray, offsets: np.ndarray, participants: np.ndarray,
                  num_users: int, num_items: int) -> DealGroups:
    """Drop self-participation, repeated participants, emptied groups and duplicate groups."""
    n = len(initiator)
    sizes = np.diff(offsets)
    group = np.repeat(np.arange(n, dtype=np.int64), sizes)
    not_self = participants != initiator[group]
    # First occurrence of every (group, participant) pair among the non-self entries, in file order.
    candidates = np.flatnonzero(not_self)
    _, first = np.unique(group[candidates] * max(num_users, 1) + participants[candidates], return_index=True)
    keep = np.zeros(len(participants), dtype=bool)
    keep[candidates[first]] = True
    group, participants = group[keep], participants[keep]
    sizes = np.bincount(group, minlength=n).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])

    duplicate = _duplicate_groups(initiator, item, offsets, participants[np.lexsort((participants, group))])
    kept = np.flatnonzero((sizes > 0) & ~duplicate)
    logger.info("encode: %d groups read; dropped %d participants equal to their initiator, %d repeated "
                "participants, %d groups left without participants, %d duplicate groups; %d groups kept",
                n, int((~not_self).sum()), int(not_self.sum() - keep.sum()), int((sizes == 0).sum()),
                int(duplicate.sum()), len(kept))
    table = DealGroups(initiator, item, offsets, participants, num_users, num_items)
    return table.take(kept)


def _duplicate_groups(initiator: np.ndarray, item: np.ndarray, offsets: np.ndarray,
                      sorted_participants: np.ndarray) -> np.ndarray:
    """``bool`` [G]: the group repeats an earlier one (same initiator, item and participant set).

    Groups can only be equal when their sizes are, so each size is compared as one dense
    ``[groups of that size, 2 + size]`` matrix (a loop over distinct sizes, not over rows).
    """
    sizes = np.diff(offsets)
    duplicate = np.zeros(len(initiator), dtype=bool)
    for size in np.unique(sizes[sizes > 0]):
        rows = np.flatnonzero(sizes == size)
        members = sorted_participants[offsets[rows][:, None] + np.arange(size)]
        matrix = np.column_stack([initiator[rows], item[rows], members])
        duplicate[rows] = pd.DataFrame(matrix).duplicated(keep="first").to_numpy()
    return duplicate


def _dedupe_launches(user: np.ndarray, item: np.ndarray, behavior: np.ndarray,
                     num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (initiator, item) failed launches, first occurrences in file order, each with the
    furthest behaviour any of its rows reached."""
    if len(user) == 0:
        return user.astype(np.int64), item.astype(np.int64), behavior.astype(np.int8)
    key = user * max(num_items, 1) + item
    unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    furthest = np.zeros(len(unique), np.int8)
    np.maximum.at(furthest, inverse.reshape(-1), behavior)
    order = np.argsort(first, kind="stable")
    if len(first) < len(user):
        logger.info("encode: dropped %d duplicate failed launches; %d kept", len(user) - len(first), len(first))
    return user[first[order]], item[first[order]], furthest[order]


def _compact(ids: np.ndarray, used: list[np.ndarray]) -> tuple[np.ndarray, Vocabulary]:
    """Old index -> new index (-1 for unused ids) and the vocabulary of the used ids."""
    mask = np.zeros(len(ids), dtype=bool)
    for part in used:
        mask[part] = True
    mapping = np.full(len(ids), -1, dtype=np.int64)
    mapping[mask] = np.arange(int(mask.sum()), dtype=np.int64)
    return mapping, Vocabulary._from_unique(ids[mask])
