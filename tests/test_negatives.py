"""Tests for tfgb.data.negatives: pair sets and negative sampling."""
import numpy as np
import pytest

from tfgb.data.groups import DealGroups
from tfgb.data.negatives import (
    PairSet,
    group_members,
    interactions,
    sample_absent,
    sorted_unique,
)
from tfgb.errors import ConfigError


def test_contains_matches_a_python_set():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 300, 5000), rng.integers(0, 200, 5000)
    pairs = PairSet(rows, cols, 300, 200)
    truth = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert len(pairs) == len(truth)
    q_rows, q_cols = rng.integers(0, 300, (400, 50)), rng.integers(0, 200, (400, 50))
    q_rows[:100, 0], q_cols[:100, 0] = rows[:100], cols[:100]  # certainly present
    expected = np.array([(r, c) in truth for r, c in zip(q_rows.ravel().tolist(), q_cols.ravel().tolist(),
                                                         strict=True)]).reshape(q_rows.shape)
    assert np.array_equal(pairs.contains(q_rows, q_cols), expected)
    assert expected.sum() > 100 and (~expected).sum() > 1000


def test_empty_set_and_row_helpers():
    empty = PairSet([], [], 4, 5)
    assert len(empty) == 0 and not empty.contains(np.arange(4), np.arange(4)).any()
    pairs = PairSet([2, 2, 0, 2], [3, 1, 4, 3], 4, 5)
    assert np.array_equal(pairs.row_counts, [1, 0, 2, 0])
    assert np.array_equal(pairs.cols_of(2), [1, 3])
    with pytest.raises(ValueError):
        PairSet([5], [0], 4, 5)


def test_sample_absent_never_returns_a_pair_and_is_seeded():
    rng = np.random.default_rng(1)
    pairs = PairSet(rng.integers(0, 50, 2000), rng.integers(0, 40, 2000), 50, 40)  # ~63% of cells
    rows = np.repeat(np.arange(50), 20)
    out = sample_absent(np.random.default_rng(2), pairs, rows, 30)
    assert out.shape == (1000, 30) and out.dtype == np.int64
    assert not pairs.contains(rows[:, None], out).any()
    again = sample_absent(np.random.default_rng(2), pairs, rows, 30)
    assert np.array_equal(out, again)


def test_distinct_sampling_including_nearly_full_rows():
    # Row 0 allows exactly 5 columns of 20: rejection alone would take long, the exact fallback finishes.
    pairs = PairSet(np.zeros(15, dtype=np.int64), np.arange(15), 3, 20)
    out = sample_absent(np.random.default_rng(0), pairs, np.array([0, 1, 2, 0]), 5, distinct=True)
    assert sorted(out[0].tolist()) == [15, 16, 17, 18, 19] == sorted(out[3].tolist())
    for row in out:
        assert len(set(row.tolist())) == 5
    with pytest.raises(ConfigError, match="too large"):
        sample_absent(np.random.default_rng(0), pairs, np.array([0]), 6, distinct=True)
    full = PairSet(np.zeros(20, dtype=np.int64), np.arange(20), 1, 20)
    with pytest.raises(ConfigError):
        sample_absent(np.random.default_rng(0), full, np.array([0]), 1)


def test_interactions_and_group_members():
    table = DealGroups(np.array([0, 1]), np.array([2, 0]), np.array([0, 2, 3]), np.array([3, 4, 0]), 5, 3)
    pairs = interactions(table, failed_users=np.array([4]), failed_items=np.array([1]))
    expected = {(0, 2), (3, 2), (4, 2), (1, 0), (0, 0), (4, 1)}
    assert set(zip(*np.divmod(pairs.keys, 3), strict=True)) == {(np.int64(u), np.int64(i)) for u, i in expected}
    members = group_members(table)
    assert members.contains([0, 0, 0, 1, 1, 1], [0, 3, 4, 1, 0, 3]).tolist() == [True] * 5 + [False]


def test_sorted_unique():
    values = np.random.default_rng(0).integers(0, 50, 500)
    assert np.array_equal(sorted_unique(values), np.unique(values))
    assert sorted_unique(np.array([], dtype=np.int64)).size == 0
