import math

import numpy as np
import pytest

from tfgb import metrics


def test_ranks_without_ties():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    assert metrics.positive_ranks(scores, np.array([0, 0])).tolist() == [1, 2]


def test_ties_rank_pessimistically():
    # positive tied with two negatives -> rank 3, not 1
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    assert metrics.positive_ranks(scores, np.array([1])).tolist() == [3]
    # all equal: worst rank
    assert metrics.positive_ranks(np.zeros((1, 10)), np.array([4])).tolist() == [10]


def test_nan_positive_ranks_last_and_nan_negative_counts_above():
    scores = np.array([[np.nan, 1.0, 2.0], [0.5, np.nan, 0.1]])
    assert metrics.positive_ranks(scores, np.array([0, 0])).tolist() == [3, 2]


def test_hand_computed_metrics():
    # ranks 1, 3 (tie), 11 (outside @10)
    scores = np.array([
        [5.0] + [0.0] * 10,
        [1.0, 1.0, 2.0] + [0.0] * 8,
        [0.0] + [1.0] * 10,
    ])
    labels = np.array([0, 0, 0])
    got = metrics.ranking_metrics(scores, labels, ks=[10])
    assert got["mrr@10"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 0) / 3)
    assert got["hr@10"] == pytest.approx(2 / 3)


def test_random_scores_give_expected_mrr():
    rng = np.random.default_rng(0)
    scores = rng.random((20000, 10))
    labels = rng.integers(0, 10, 20000)
    mrr = metrics.ranking_metrics(scores, labels, [10])["mrr@10"]
    assert mrr == pytest.approx(sum(1 / r for r in range(1, 11)) / 10, abs=0.01)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        metrics.positive_ranks(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError):
        metrics.positive_ranks(np.zeros((1, 3)), np.array([3]))
