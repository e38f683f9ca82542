import math

import numpy as np
import pytest

from tfgb import config as cfg
from tfgb.errors import ConfigError
from tfgb.evaluation import metrics


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


def test_hand_computed_metrics_with_ties():
    # Lists of 10; the positive is column 0. Ranks: 1; 3 (tied with two negatives at the top);
    # 6 (four negatives above, one tied); 10 (below all).
    scores = np.array([
        [5.0] + [0.0] * 9,
        [2.0, 2.0, 2.0] + [0.0] * 7,
        [1.0, 3.0, 3.0, 3.0, 3.0, 1.0] + [0.0] * 4,
        [-1.0] + [0.0] * 9,
    ])
    got = metrics.ranking_metrics(scores, np.zeros(4, np.int64), hr_cutoffs=[1, 2, 3, 5])
    assert set(got) == {"mrr@10", "ndcg@10", "hr@1/10", "hr@2/10", "hr@3/10", "hr@5/10"}
    assert got["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 6 + 1 / 10) / 4)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(7) + 1 / math.log2(11)) / 4)
    assert got["hr@1/10"] == pytest.approx(1 / 4)
    assert got["hr@2/10"] == pytest.approx(1 / 4)  # the tie at the top counts against the positive
    assert got["hr@3/10"] == pytest.approx(2 / 4)
    assert got["hr@5/10"] == pytest.approx(2 / 4)


def test_constant_scorer_never_hits_and_perfect_scorer_always_does():
    labels = np.array([0, 3, 9, 4, 7])
    constant = metrics.ranking_metrics(np.full((5, 10), 0.25), labels, hr_cutoffs=[1, 5])
    assert constant == pytest.approx({"mrr@10": 0.1, "ndcg@10": 1 / math.log2(11), "hr@1/10": 0.0, "hr@5/10": 0.0})
    perfect = np.zeros((5, 100))
    perfect[np.arange(5), labels] = 1.0
    got = metrics.ranking_metrics(perfect, labels, hr_cutoffs=[1, 10, 50])
    assert got == {"mrr@100": 1.0, "ndcg@100": 1.0, "hr@1/100": 1.0, "hr@10/100": 1.0, "hr@50/100": 1.0}


def test_nan_scorer_never_hits():
    got = metrics.ranking_metrics(np.full((3, 10), np.nan), np.array([0, 1, 2]), hr_cutoffs=[9])
    assert got["hr@9/10"] == 0.0 and got["mrr@10"] == pytest.approx(0.1)


@pytest.mark.parametrize("cutoff", [0, 10, 11])
def test_hr_cutoff_must_be_below_the_list_length(cutoff):
    with pytest.raises(ValueError, match="cut-off"):
        metrics.ranking_metrics(np.zeros((2, 10)), np.array([0, 1]), hr_cutoffs=[cutoff])


def test_no_lists_give_nan_with_every_key():
    got = metrics.ranking_metrics(np.zeros((0, 10)), np.zeros(0, np.int64), hr_cutoffs=[1, 5])
    assert set(got) == {"mrr@10", "ndcg@10", "hr@1/10", "hr@5/10"} and all(math.isnan(v) for v in got.values())


def test_keys_parse_and_sort_by_list_length():
    assert metrics.hr_key(5, 10) == "hr@5/10"
    assert metrics.parse_key("hr@5/10") == ("hr", 5, 10)
    assert metrics.parse_key("ndcg@100") == ("ndcg", 100, 100)
    assert metrics.parse_key("hr@10") is None and metrics.parse_key("groups") is None
    keys = ["hr@50/100", "mrr@100", "hr@5/10", "ndcg@10", "hr@10/100", "mrr@10", "hr@1/10", "ndcg@100", "x"]
    assert sorted(keys, key=metrics.key_order) == ["mrr@10", "ndcg@10", "hr@1/10", "hr@5/10", "mrr@100",
                                                    "ndcg@100", "hr@10/100", "hr@50/100", "x"]


def test_random_scores_give_expected_mrr_and_hit_rate():
    rng = np.random.default_rng(0)
    scores = rng.random((20000, 10))
    labels = rng.integers(0, 10, 20000)
    got = metrics.ranking_metrics(scores, labels, [1, 5])
    assert got["mrr@10"] == pytest.approx(sum(1 / r for r in range(1, 11)) / 10, abs=0.01)
    assert got["hr@1/10"] == pytest.approx(0.1, abs=0.01) and got["hr@5/10"] == pytest.approx(0.5, abs=0.015)


def test_hr_cutoffs_setting_defaults_and_checks():
    c = cfg.load()
    assert c.eval.cutoffs() == {10: [1, 5], 100: [10, 50]}
    assert cfg.load(overrides=["eval.ks=[10]"]).eval.cutoffs() == {10: [1, 5], 100: [10, 50]}  # 100 unused
    assert cfg.load(overrides=["eval.hr_cutoffs=[[10, 3], [100]]"]).eval.cutoffs() == {10: [3], 100: []}


@pytest.mark.parametrize("value, words", [
    ("[[10, 10]]", ["eval.hr_cutoffs[0]", "[1, 9]"]),
    ("[[10, 1], [100, 100]]", ["eval.hr_cutoffs[1]", "[1, 99]"]),
    ("[[10, 0]]", ["eval.hr_cutoffs[0]"]),
    ("[[10, 5, 5]]", ["eval.hr_cutoffs[0]", "distinct"]),
    ("[[10, 1], [10, 5]]", ["eval.hr_cutoffs[1]", "once per length"]),
    ("[[]]", ["eval.hr_cutoffs[0]"]),
    ("[[1]]", ["eval.hr_cutoffs[0]", "at least 2"]),
    ("[10, 1]", ["eval.hr_cutoffs[0]", "list"]),
])
def test_bad_hr_cutoffs_name_the_key(value, words):
    with pytest.raises(ConfigError) as err:
        cfg.load(overrides=[f"eval.hr_cutoffs={value}"])
    for word in words:
        assert word in str(err.value)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        metrics.positive_ranks(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError):
        metrics.positive_ranks(np.zeros((1, 3)), np.array([3]))
