"""tfgb.evaluation on real Candidates with table scorers: the keys per list length and the values.

The fake models score a candidate by looking it up in a fixed [users, entities] table, so each
candidate is scored independently, as the evaluation contract requires.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tfgb.data.candidates import Candidates
from tfgb.evaluation import evaluate
from tfgb.evaluation.metrics import ranking_metrics

N, USERS, ITEMS = 30, 200, 150
KEYS_10 = {"mrr@10", "ndcg@10", "hr@1/10", "hr@5/10"}
KEYS_100 = {"mrr@100", "ndcg@100", "hr@10/100", "hr@50/100"}


class TableModel:
    """s(i | u) = items[u, i]; s(p | u, i) = participants[u, p]."""

    def __init__(self, items: np.ndarray, participants: np.ndarray):
        self.tables = (tf.constant(items, tf.float32), tf.constant(participants, tf.float32))

    def propagate(self, training=False):
        return self.tables

    def score_items(self, emb, u, c, training=False):
        return tf.gather(tf.gather(emb[0], u), c, batch_dims=1)

    def score_participants(self, emb, u, i, c, training=False):
        return tf.gather(tf.gather(emb[1], u), c, batch_dims=1)


def lists(negatives: int, seed: int = 0) -> Candidates:
    """N rows, initiator n of row n; negatives distinct and never the positive (or, for B, the initiator)."""
    rng = np.random.default_rng(seed)
    initiator = np.arange(N, dtype=np.int64)
    item = rng.integers(0, ITEMS, N)
    participant = rng.integers(N, USERS, N)  # never an initiator

    def others(positive: int, size: int, excluded: set[int]) -> np.ndarray:
        pool = np.array([x for x in range(size) if x != positive and x not in excluded])
        return rng.permutation(pool)[:negatives]

    return Candidates(
        initiator=initiator, item=item, participant=participant,
        item_negatives=np.stack([others(int(item[n]), ITEMS, set()) for n in range(N)]),
        participant_negatives=np.stack([others(int(participant[n]), USERS, {n}) for n in range(N)]),
        item_slot=rng.random(N), participant_slot=rng.random(N))


def oracle_tables(c: Candidates) -> tuple[np.ndarray, np.ndarray]:
    items, parts = np.zeros((USERS, ITEMS)), np.zeros((USERS, USERS))
    items[c.initiator, c.item] = 1.0
    parts[c.initiator, c.participant] = 1.0
    return items, parts


def test_keys_per_list_length_and_values_equal_direct_ranking():
    c = lists(99)
    rng = np.random.default_rng(1)
    items, parts = rng.random((USERS, ITEMS)), rng.random((USERS, USERS))
    got = evaluate(TableModel(items, parts), c, ks=[10, 100], batch_size=8)
    assert got["groups"] == N
    for task in ("a", "b"):
        assert set(got[task]) == KEYS_10 | KEYS_100  # no hr@10 over 10 candidates, no hr@100 over 100
    for k, cutoffs in ((10, [1, 5]), (100, [10, 50])):
        cand, label = c.task_a(k)
        table = items.astype(np.float32)  # the model scores in float32
        want = ranking_metrics(table[c.initiator[:, None], cand], label, cutoffs)
        assert {key: got["a"][key] for key in want} == pytest.approx(want, abs=1e-12)
        cand, label = c.task_b(k)
        want = ranking_metrics(parts.astype(np.float32)[c.initiator[:, None], cand], label, cutoffs)
        assert {key: got["b"][key] for key in want} == pytest.approx(want, abs=1e-12)
    # The tables are random: some hits, not all, at the smallest cut-off of each list.
    assert 0 < got["a"]["hr@5/10"] < 1 and 0 < got["b"]["hr@50/100"] < 1


def test_constant_model_never_hits_and_oracle_always_does():
    c = lists(99)
    zeros = evaluate(TableModel(np.zeros((USERS, ITEMS)), np.zeros((USERS, USERS))), c, ks=[10, 100])
    oracle = evaluate(TableModel(*oracle_tables(c)), c, ks=[10, 100], batch_size=7)
    for task in ("a", "b"):
        assert zeros[task]["hr@1/10"] == 0.0 and zeros[task]["hr@50/100"] == 0.0
        assert zeros[task]["mrr@10"] == pytest.approx(0.1) and zeros[task]["mrr@100"] == pytest.approx(0.01)
        assert zeros[task]["ndcg@10"] == pytest.approx(1 / math.log2(11))
        assert oracle[task] == {key: 1.0 for key in KEYS_10 | KEYS_100}


def test_lists_of_one_to_nine_only_and_recipe_cutoffs():
    c = lists(9)  # 1:99 cannot be built from 9 negatives: that list length is skipped
    got = evaluate(TableModel(*oracle_tables(c)), c, ks=[10, 100], hr_cutoffs={10: [2], 100: [10]})
    assert set(got["a"]) == set(got["b"]) == {"mrr@10", "ndcg@10", "hr@2/10"}
    got = evaluate(TableModel(*oracle_tables(c)), c, ks=[10], hr_cutoffs={})
    assert set(got["a"]) == {"mrr@10", "ndcg@10"}
    with pytest.raises(ValueError, match="cut-off"):
        evaluate(TableModel(*oracle_tables(c)), c, ks=[10], hr_cutoffs={10: [10]})
