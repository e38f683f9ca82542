"""Beyond the sampled lists: the full-catalog protocol, launch-success AUC and the sparsity breakdown.

Hand-made data (5 users, 8 items) and a table "model" (s(i | u) = table[u, i], each candidate scored on
its own) make every rank below computable by hand. Every (user, item) pair of the data, per user
(T = training group, V = valid, S = test, F = failed launch with its split):

    u0: i0 (T initiator), i7 (T participant), i3 (F train), i4 (V), i5 and i1 (S), i7 (F test)
        -> ranked negatives {2, 6}
    u1: i0 (T and S participant), i1, i6 (T), i7, i0 (F train), i2 (S), i4 (F test) -> {3, 5}
    u3: i2 (T participant), i4 (V participant), i1 (S participant), i0 (S)      -> {3, 5, 6, 7}
    u4: i1 (T participant), i7 (T, twice), i3 (S), i6 (F test)                  -> {0, 2, 4, 5}

Training counts (deals launched, failed launches): u0 (1, 1), u1 (3, 2), u2 (1, 0), u3 (0, 0), u4 (2, 0).
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfgb.config import EvalConfig
from tfgb.data.candidates import build_candidates
from tfgb.data.groups import DealGroups
from tfgb.data.prepare import Prepared
from tfgb.data.vocab import Vocabulary
from tfgb.errors import ConfigError
from tfgb.evaluation import breakdown, evaluate, full, launch
from tfgb.evaluation.metrics import positive_ranks

USERS, ITEMS = 5, 8
NAN = float("nan")


def groups(rows: list[tuple[int, int, list[int]]]) -> DealGroups:
    sizes = [len(p) for _, _, p in rows]
    return DealGroups(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                      np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                      np.array([p for _, _, ps in rows for p in ps], np.int64), USERS, ITEMS)


TRAIN = [(0, 0, [1]), (1, 1, [2]), (1, 1, [4]), (1, 6, [2]), (2, 2, [3]), (4, 7, [0]), (4, 7, [2])]
VALID = [(0, 4, [3])]
TEST = [(0, 5, [2]), (0, 1, [3]), (1, 2, [2]), (3, 0, [1]), (4, 3, [2])]
FAILED = [(0, 3, 0), (1, 7, 0), (1, 0, 0), (2, 6, 1), (1, 4, 2), (4, 6, 2), (0, 7, 2)]  # (user, item, split)


def tiny_data(failed: list[tuple[int, int, int]] = FAILED, lists: bool = False) -> Prepared:
    f = np.array(failed, np.int64).reshape(-1, 3)
    data = Prepared(groups(TRAIN), groups(VALID), groups(TEST), Vocabulary([f"u{n}" for n in range(USERS)]),
                    Vocabulary([f"i{n}" for n in range(ITEMS)]), f[:, 0], f[:, 1], np.zeros(len(f), np.int8),
                    f[:, 2].astype(np.int8), ("launch", "deal"), None, None, cache_path="")
    if lists:  # 1:2 lists (u0 and u1 have exactly two negatives)
        data.test_candidates = build_candidates(data.test, full.known_interactions(data), USERS, ITEMS, 2, seed=3)
    return data


SCORES = np.array([
    # item: 0    1    2    3    4    5    6    7
    [5.0, 3.0, 0.9, 4.0, 2.0, 0.5, 0.5, 6.0],  # u0
    [9.0, 9.0, 0.3, 0.3, 0.3, NAN, 9.0, 9.0],  # u1
    [0.0] * 8,                                 # u2 (no test group)
    [NAN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # u3
    [0.6, 2.0, 0.5, 0.5, 0.4, 0.1, 3.0, 2.0],  # u4
], np.float32)
# (rank, items ranked) of each test initiator's held-out item, by hand:
#   u0, item 5 (0.5): item 2 (0.9) above, item 6 (0.5) tied -> 3 of 3 (items 0, 1, 3, 4, 7 score higher but
#       are known); item 1 (3.0): above 2 and 6 -> 1 of 3
#   u1, item 2 (0.3): item 3 tied, item 5 NaN counts above -> 3 of 3
#   u3, item 0 NaN -> last, 5 of 5
#   u4, item 3 (0.5): item 0 (0.6) above, item 2 (0.5) tied, 4 and 5 below -> 3 of 5
HAND = {(0, 5): (3, 3), (0, 1): (1, 3), (1, 2): (3, 3), (3, 0): (5, 5), (4, 3): (3, 5)}


class TableModel:
    """s(i | u) = table[u, i]; task B scores 0."""

    def __init__(self, table: np.ndarray):
        self.table = tf.constant(table, tf.float32)

    def propagate(self, training=False):
        return self.table

    def score_items(self, emb, u, c, training=False):
        return tf.gather(tf.gather(emb, u), c, batch_dims=1)

    def score_participants(self, emb, u, i, c, training=False):
        return tf.zeros(tf.shape(c), tf.float32)


@pytest.mark.parametrize("batch_size, per_call", [(256, None), (2, 3), (1, 1), (3, 8)])
def test_full_catalog_ranks_by_hand_in_any_chunking(batch_size, per_call):
    data = tiny_data()
    got = full.rank_full_catalog(TableModel(SCORES), data, "test", 0, seed=0, batch_size=batch_size,
                                 candidates_per_call=per_call)
    assert got.initiator.tolist() == [0, 1, 3, 4]
    assert [(int(u), int(i)) in HAND for u, i in zip(got.initiator, got.item)] == [True] * 4
    want = [HAND[int(u), int(i)] for u, i in zip(got.initiator, got.item)]
    assert list(zip(got.rank.tolist(), got.candidates.tolist())) == want


def test_full_catalog_metrics_by_hand():
    data = tiny_data()
    metrics, ranks = full.full_catalog(TableModel(SCORES), data, ks=[1, 3, 4], max_initiators=0, seed=0,
                                       return_ranks=True)
    if int(ranks.item[0]) == 5:  # u0's held-out group: item 5, ranks 3, 3, 5, 3
        want = {"hr@1": 0.0, "ndcg@1": 0.0, "hr@3": 0.75, "ndcg@3": 0.375, "hr@4": 0.75, "ndcg@4": 0.375}
    else:  # item 1: ranks 1, 3, 5, 3
        want = {"hr@1": 0.25, "ndcg@1": 0.25, "hr@3": 0.75, "ndcg@3": 0.5, "hr@4": 0.75, "ndcg@4": 0.5}
    assert list(metrics) == ["hr@1", "ndcg@1", "hr@3", "ndcg@3", "hr@4", "ndcg@4", "initiators", "mean_candidates"]
    assert {k: metrics[k] for k in want} == pytest.approx(want, abs=1e-12)
    assert metrics["initiators"] == 4 and metrics["mean_candidates"] == pytest.approx((3 + 3 + 5 + 5) / 4)


def test_initiators_and_groups_are_seeded_choices():
    data = tiny_data()
    firsts = {int(full.choose(data, "test", 0, seed)[1][0]) for seed in range(30)}
    assert firsts == {5, 1}  # u0's two test groups are both chosen, by seed
    for seed in range(10):
        users, items = full.choose(data, "test", 0, seed)
        assert (users.tolist(), items.tolist()) == tuple(x.tolist() for x in full.choose(data, "test", 0, seed))
        two, _ = full.choose(data, "test", 2, seed)
        three, _ = full.choose(data, "test", 3, seed)
        assert len(two) == 2 and set(two) <= set(three) <= {0, 1, 3, 4}  # a smaller subsample is nested
    assert {tuple(full.choose(data, "test", 2, seed)[0]) for seed in range(30)} != {(0, 1)}


def test_full_pool_holds_the_saved_lists_negatives_and_brute_force_ranks():
    data = tiny_data(lists=True)
    known = full.known_interactions(data)
    lists = data.test_candidates
    for row in range(len(lists)):
        u = int(lists.initiator[row])
        pool = set(np.flatnonzero(full.unknown_mask(known, np.array([u]))[0]).tolist())
        assert set(lists.item_negatives[row].tolist()) <= pool
    rng = np.random.default_rng(4)
    for _ in range(5):  # integer scores: many ties; ranks equal positive_ranks over the explicit pool
        table = rng.integers(0, 3, (USERS, ITEMS)).astype(np.float32)
        got = full.rank_full_catalog(TableModel(table), data, "test", 0, seed=1, batch_size=2, candidates_per_call=3)
        for u, i, r in zip(got.initiator, got.item, got.rank):
            pool = [j for j in np.flatnonzero(full.unknown_mask(known, np.array([u]))[0]) if j != i]
            row = table[u, [i, *pool]][None, :]
            assert r == positive_ranks(row, np.array([0]))[0]


def test_bad_full_settings_name_the_key():
    with pytest.raises(ConfigError, match="eval.full_ks"):
        full.metrics_from_ranks(np.array([1]), [0, 50])
    with pytest.raises(ConfigError, match="eval.full_max_initiators"):
        full.choose(tiny_data(), "test", -1, 0)


def test_auc_by_hand_with_ties_and_nan():
    # 0.9 beats 0.5 and 0.1 (2); each 0.5 ties 0.5 and beats 0.1 (1.5 + 1.5); NaN positive 0; NaN negative
    # is above every positive: 5 of 4 x 3 pairs.
    assert launch.auc([0.9, 0.5, 0.5, NAN], [0.5, 0.1, NAN]) == pytest.approx(5 / 12)
    assert launch.auc([1.0, 1.0], [1.0]) == 0.5 and launch.auc([2.0], [1.0, 0.0]) == 1.0
    assert math.isnan(launch.auc([], [1.0]))
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 4, 30).astype(float), rng.integers(0, 4, 20).astype(float)
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert launch.auc(pos, neg) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)


def test_floor_is_the_training_success_rate_of_the_item():
    # Training deals per item: 0: 1, 1: 2, 2: 1, 6: 1, 7: 2; training failed launches: 3, 7, 0 (the valid
    # launch of item 6 and the test ones do not count); unseen items 4 and 5 get 7 / (7 + 3).
    want = [1 / 2, 1.0, 1.0, 0.0, 0.7, 0.7, 1.0, 2 / 3]
    assert launch.success_rate(tiny_data()).tolist() == pytest.approx(want, abs=1e-12)


def test_launch_success_by_hand():
    # Positives (test groups): u0-i5 0.5, u0-i1 3.0, u1-i2 0.3, u3-i0 NaN, u4-i3 0.5;
    # negatives (test failed launches): u1-i4 0.3, u4-i6 3.0, u0-i7 6.0.
    # Model: 0.5 -> 1 (twice), 3.0 -> 1 + 0.5, 0.3 -> 0.5, NaN -> 0: 4 / 15.
    # Floor: positives 0.7, 1, 1, 1/2, 0 against 0.7, 1, 2/3: 1.5 + 2.5 + 2.5 + 0 + 0 = 6.5 / 15.
    got = launch.launch_success(TableModel(SCORES), tiny_data())
    assert got == pytest.approx({"auc": 4 / 15, "floor_auc": 6.5 / 15, "positives": 5, "negatives": 3}, abs=1e-12)
    assert launch.launch_success(TableModel(SCORES), tiny_data([f for f in FAILED if f[2] != 2])) is None


def test_cells_follow_training_counts():
    data = tiny_data()
    names = breakdown.cell_names()
    assert len(names) == 12 and names[0] == "deals=0,failed=0" and names[-1] == "deals=3+,failed=2+"
    got = [names[c] for c in breakdown.cells(data, np.array([0, 1, 2, 3, 4]))]
    assert got == ["deals=1,failed=1", "deals=3+,failed=2+", "deals=1,failed=0", "deals=0,failed=0",
                   "deals=2,failed=0"]


def test_breakdown_by_hand():
    data = tiny_data()
    model = TableModel(SCORES)
    _, ranks = full.full_catalog(model, data, ks=[1, 3], max_initiators=0, seed=0, return_ranks=True)
    _, scores = launch.launch_success(model, data, return_scores=True)
    sampled = {"initiator": np.array([0, 1, 3, 4, 0]), "a": {4: np.array([1, 2, 4, 3, 2])}}
    got = breakdown.breakdown(data, sampled, {4: [1, 2]}, ranks, [1, 3], scores)
    u0 = got["deals=1,failed=1"]
    assert u0["sampled"] == pytest.approx({"rows": 2, "mrr@4": 0.75, "ndcg@4": (1 + 1 / math.log2(3)) / 2,
                                           "hr@1/4": 0.5, "hr@2/4": 1.0})
    first = {5: 3, 1: 1}[int(ranks.item[0])]  # u0's full-catalog rank (its group is a seeded choice)
    assert u0["full"] == pytest.approx({"rows": 1, **full.metrics_from_ranks(np.array([first]), [1, 3])})
    # u0's launches: positives 0.5, 3.0 against 6.0 -> 0; floor 0.7, 1 against 2/3 -> 1.
    assert u0["launch_success"] == {"positives": 2, "negatives": 1, "auc": 0.0, "floor_auc": 1.0}
    assert got["deals=3+,failed=2+"]["launch_success"]["auc"] == 0.5  # u1: 0.3 against 0.3
    assert got["deals=0,failed=0"]["launch_success"] == {"positives": 1, "negatives": 0, "auc": None,
                                                         "floor_auc": None}
    assert got["deals=0,failed=0"]["full"] == {"rows": 1, "hr@1": 0.0, "ndcg@1": 0.0, "hr@3": 0.0, "ndcg@3": 0.0}
    assert got["deals=2,failed=1"] == {"sampled": {"rows": 0}, "full": {"rows": 0},
                                       "launch_success": {"positives": 0, "negatives": 0, "auc": None,
                                                          "floor_auc": None}}
    assert sum(cell["sampled"]["rows"] for cell in got.values()) == 5


def test_split_report_combines_the_families():
    from tfgb.train import format_metrics

    data = tiny_data(lists=True)
    model = TableModel(SCORES)
    config = EvalConfig(ks=[3], hr_cutoffs=[[3, 1]], full_ks=[1, 3])
    got = breakdown.split_report(model, data, "test", config, seed=0, protocol="all", full_initiators=0)
    assert set(got) == {"a", "b", "groups", "full", "launch_success", "sparsity"}
    assert {k: got[k] for k in ("a", "b", "groups")} == evaluate(model, data.test_candidates, ks=[3],
                                                                 hr_cutoffs={3: [1]})
    assert got["full"] == full.full_catalog(model, data, [1, 3], 0, 0)
    assert got["launch_success"] == launch.launch_success(model, data)
    assert sum(cell["sampled"]["rows"] for cell in got["sparsity"].values()) == got["groups"] == 5
    assert set(breakdown.split_report(model, data, "test", config, 0, "full", None)) == {"launch_success"}
    assert set(breakdown.split_report(model, data, "test", config, 0, "sampled", 0)) == {"a", "b", "groups"}
    text = format_metrics({"test": got})
    assert "task A full catalog" in text and "launch success" in text and "deals=1,failed=1" in text
    assert "deals=2,failed=1" not in text  # an empty cell is not printed


def test_final_metrics_and_evaluate_cli_on_a_trained_run(tiny_run, tmp_path):
    from tfgb.evaluate import evaluate_run

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    test = metrics["test"]
    assert {"a", "b", "groups", "full", "launch_success", "sparsity"} <= set(test)
    hr = [test["full"][f"hr@{k}"] for k in (50, 80, 100, 200)]
    assert hr == sorted(hr) and hr[-1] == 1.0  # 150 items: every rank is within 200
    assert test["launch_success"]["positives"] == test["groups"]  # every test group is a held-out deal
    assert sum(cell["full"]["rows"] for cell in test["sparsity"].values()) == test["full"]["initiators"]
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    got = evaluate_run(str(run), "test", progress=False, protocol="full", max_initiators=test["full"]["initiators"])
    assert got["full"] == pytest.approx(test["full"]) and got["launch_success"] == pytest.approx(test["launch_success"])
    saved = json.loads((run / "metrics.json").read_text())["evaluate"]["test"]
    assert set(saved) == {"full", "launch_success"}
