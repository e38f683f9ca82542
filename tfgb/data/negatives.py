"""Sets of id pairs and uniform negative sampling against them.

Every negative tfgb samples is "a column id that does not form a known pair with this row":
an item the initiator never interacted with (pairs ``(user, item)``), or a user who is not a
member of the group (pairs ``(group, user)``). :class:`PairSet` stores such pairs as sorted,
unique ``int64`` keys ``row * num_cols + col``. Membership of many queries at once is decided by
a blocked Bloom filter (one 64-bit word per query, 3 bits set per key, 16 bits per key: about
2 MB for 10^6 pairs, so it stays in cache) and an exact ``np.searchsorted`` on the keys for the
~0.5% of queries the filter cannot rule out. :func:`sample_absent` draws uniform columns and
redraws only the rejected entries until none is left.
"""
from __future__ import annotations

import functools

import numpy as np

from tfgb.data.groups import DealGroups
from tfgb.errors import ConfigError

_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio (Fibonacci hashing)
_BITS_PER_KEY = 16  # filter size; 3 bits per key give ~0.5% false positives
_MASK_INDEX_BITS = 12


def _bloom_masks(bits_set: int = 3) -> np.ndarray:
    """``uint64`` [4096] fixed masks with ``bits_set`` distinct bits each (seeded, the same everywhere)."""
    rng = np.random.default_rng(0x7F6B)
    positions = np.argsort(rng.random((1 << _MASK_INDEX_BITS, 64)), axis=1)[:, :bits_set].astype(np.uint64)
    return np.bitwise_or.reduce(np.left_shift(np.uint64(1), positions), axis=1)


_MASKS = _bloom_masks()
_MAX_ROUNDS = 64  # rejection rounds before the few remaining rows are sampled exactly


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (a sort; ``np.unique`` in numpy 2.3+ hashes, ~15x slower here)."""
    ordered = np.sort(values)
    if ordered.size == 0:
        return ordered
    keep = np.empty(ordered.shape, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


class PairSet:
    """An immutable set of ``(row, col)`` integer pairs with vectorized membership tests.

    Args:
      rows: ``int`` [E] row ids in ``[0, num_rows)`` (e.g. users, or groups).
      cols: ``int`` [E] column ids in ``[0, num_cols)`` (e.g. items, or users).
      num_rows: size of the row id space.
      num_cols: size of the column id space.

    Attributes:
      keys: ``int64`` [K] sorted unique keys ``row * num_cols + col`` (repeated pairs count once).
      num_rows / num_cols: the id space sizes.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, num_rows: int, num_cols: int):
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        if rows.shape != cols.shape:
            raise ValueError(f"rows and cols differ in length: {rows.shape[0]} vs {cols.shape[0]}")
        if rows.size and (rows.min() < 0 or rows.max() >= num_rows or cols.min() < 0 or cols.max() >= num_cols):
            raise ValueError("pair ids out of range")
        self.num_rows = int(num_rows)
        self.num_cols = int(num_cols)
        self.keys = sorted_unique(rows * self.num_cols + cols)
        log2_words = max(4, int(np.ceil(np.log2(max(self.keys.size, 1) * _BITS_PER_KEY / 64))))
        self._word_shift = np.uint64(64 - log2_words)
        self._mask_shift = np.uint64(64 - log2_words - _MASK_INDEX_BITS)
        self._filter = np.zeros(1 << log2_words, dtype=np.uint64)
        word, mask = self._hash(self.keys)
        np.bitwise_or.at(self._filter, word, mask)

    def _hash(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter word (``int64``) and bit mask (``uint64``, 3 bits set) of each ``int64`` key.

        Both come from the product ``key * 2^64/phi``: its top bits pick the word, the next
        12 bits pick one of 4096 precomputed 3-bit masks (a table in L1 cache; far fewer passes
        over the data than computing three bit positions).
        """
        product = keys.view(np.uint64) * _HASH_MULTIPLIER
        word = (product >> self._word_shift).view(np.int64)
        product >>= self._mask_shift
        product &= np.uint64((1 << _MASK_INDEX_BITS) - 1)
        return word, np.take(_MASKS, product.view(np.int64))

    def __len__(self) -> int:
        return int(self.keys.size)

    def contains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether each ``(rows[n], cols[n])`` is in the set.

        Args:
          rows: ``int`` array of any shape S (broadcast against ``cols``).
          cols: ``int`` array of shape S.

        Returns:
          ``bool`` array of shape S.
        """
        query = np.asarray(rows, dtype=np.int64) * self.num_cols + np.asarray(cols, dtype=np.int64)
        flat = np.ascontiguousarray(query).ravel()
        word, mask = self._hash(flat)
        bits = np.take(self._filter, word)
        bits &= mask
        result = np.zeros(flat.shape, dtype=bool)
        check = np.flatnonzero(bits == mask)
        if check.size:
            candidates = flat[check]
            where = np.minimum(np.searchsorted(self.keys, candidates), self.keys.size - 1)
            result[check] = self.keys[where] == candidates
        return result.reshape(query.shape)

    @functools.cached_property
    def row_counts(self) -> np.ndarray:
        """Number of distinct pairs per row, ``int64`` [num_rows] (computed once)."""
        return np.bincount(self.keys // self.num_cols, minlength=self.num_rows).astype(np.int64)

    def cols_of(self, row: int) -> np.ndarray:
        """The sorted columns paired with one ``row``, ``int64`` [n]."""
        lo, hi = np.searchsorted(self.keys, [row * self.num_cols, (row + 1) * self.num_cols])
        return self.keys[lo:hi] - row * self.num_cols


def _duplicates(values: np.ndarray) -> np.ndarray:
    """Mask [N, C] of entries equal to an earlier entry (smaller column) of the same row."""
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    repeated = np.zeros(values.shape, dtype=bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    mask = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(mask, order, repeated, axis=1)
    return mask


def sample_absent(
    rng: np.random.Generator,
    pairs: PairSet,
    rows: np.ndarray,
    count: int,
    distinct: bool = False,
) -> np.ndarray:
    """Uniform columns that form no pair with their row.

    Rejection sampling: draw every entry uniformly from ``[0, pairs.num_cols)``, then redraw
    only the entries that are a known pair (or, with ``distinct``, repeat an earlier entry of
    the same row) until none is left. Rows still unfinished after a few dozen rounds (almost
    every column taken: only on tiny data) are completed exactly from their explicit
    complement, so the call always terminates. Deterministic for the state of ``rng``.

    Args:
      rng: the random generator (advanced in place).
      pairs: the forbidden pairs.
      rows: ``int`` [N] the row of each output row.
      count: columns per row, C.
      distinct: sample without replacement within each row.

    Returns:
      ``int64`` [N, C]; column order is sampling order.

    Raises:
      ConfigError: a row has fewer than C allowed columns (``distinct``) or none at all.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = rows.shape[0]
    out = np.empty((n, count), dtype=np.int64)
    if n == 0 or count == 0:
        return out
    available = pairs.num_cols - pairs.row_counts[rows]
    need = count if distinct else 1
    if available.min() < need:
        raise ConfigError(
            f"only {int(available.min())} candidate negatives exist for some row but {need} are needed: "
            f"data.negatives (or train.aux_size) is too large for this data"
        )
    out[:] = rng.integers(0, pairs.num_cols, size=(n, count))
    bad = pairs.contains(rows[:, None], out)
    if distinct:
        bad |= _duplicates(out)
    for _ in range(_MAX_ROUNDS):
        redo_rows, redo_cols = np.divmod(np.flatnonzero(bad), count)
        if redo_rows.size == 0:
            return out
        fresh = rng.integers(0, pairs.num_cols, size=redo_rows.size)
        out[redo_rows, redo_cols] = fresh
        bad[redo_rows, redo_cols] = pairs.contains(rows[redo_rows], fresh)
        if distinct:
            touched = sorted_unique(redo_rows)
            bad[touched] |= _duplicates(out[touched])
    for r in sorted_unique(np.nonzero(bad)[0]):  # stragglers: only when nearly every column is taken
        _complete_row(rng, pairs, int(rows[r]), out[r], bad[r], distinct)
    return out


def _complete_row(
    rng: np.random.Generator, pairs: PairSet, row: int, values: np.ndarray, bad: np.ndarray, distinct: bool
) -> None:
    """Replace ``values[bad]`` (in place) by draws from the row's explicit allowed columns."""
    allowed = np.setdiff1d(np.arange(pairs.num_cols, dtype=np.int64), pairs.cols_of(row), assume_unique=True)
    if distinct:
        allowed = np.setdiff1d(allowed, values[~bad], assume_unique=False)
        values[bad] = rng.choice(allowed, size=int(bad.sum()), replace=False)
    else:
        values[bad] = rng.choice(allowed, size=int(bad.sum()), replace=True)


def interactions(
    *tables: DealGroups, failed_users: np.ndarray | None = None, failed_items: np.ndarray | None = None
) -> PairSet:
    """Every (user, item) a user interacted with: the positives that item negatives avoid.

    A user interacted with an item when they initiated a group for it, joined a group for it
    (as a participant), or launched it without reaching the group size (a failed launch).

    Args:
      *tables: one or more encoded tables over the same vocabularies (e.g. train, or
        train + valid + test).
      failed_users / failed_items: ``int`` [F] failed launches, or None.

    Returns:
      A :class:`PairSet` over ``[num_users, num_items]``.
    """
    if not tables:
        raise ValueError("interactions() needs at least one table")
    users, items = [], []
    for table in tables:
        users += [table.initiator, table.participants]
        items += [table.item, table.item[table.group_of_participant()]]
    if failed_users is not None and failed_items is not None:
        users.append(np.asarray(failed_users, dtype=np.int64))
        items.append(np.asarray(failed_items, dtype=np.int64))
    return PairSet(np.concatenate(users), np.concatenate(items), tables[0].num_users, tables[0].num_items)


def group_members(groups: DealGroups) -> PairSet:
    """(group, user) for the initiator and every participant: what participant negatives avoid.

    Args:
      groups: G encoded groups.

    Returns:
      A :class:`PairSet` over ``[G, num_users]``.
    """
    rows = np.concatenate([np.arange(len(groups), dtype=np.int64), groups.group_of_participant()])
    cols = np.concatenate([groups.initiator, groups.participants])
    return PairSet(rows, cols, len(groups), groups.num_users)
