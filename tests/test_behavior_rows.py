"""Behaviour rows (tfgb.data.behavior_rows) and the failed-launch split: what the cascade models learn
from, and that held-out launches never reach training."""
from __future__ import annotations

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
from tfgb import contract
from tfgb.config import load
from tfgb.contract import Interactions
from tfgb.data.behavior_rows import BehaviorRows, rows_per_triple
from tfgb.data.negatives import PairSet
from tfgb.data.negatives import interactions as interactions_of
from tfgb.data.prepare import prepare
from tfgb.data.stream import behavior_sizes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = load(None, ["data.synth.users=300", "data.synth.items=80", "data.synth.groups=1500", "data.negatives=9",
                         f"data.cache_dir={tmp_path_factory.mktemp('cache')}", "train.batch_size=64",
                         "train.behavior_negatives=3", "train.hard_negatives=1.0"])
    return config, prepare(config)


def test_held_out_failed_launches_never_reach_training(data):
    config, prepared = data
    split = prepared.failed_split
    assert set(np.unique(split)) == {0, 1, 2}
    held = split > 0
    # under the same protocol: their initiator and item occur in training groups
    train_users = set(prepared.train.initiator.tolist()) | set(prepared.train.participants.tolist())
    assert set(prepared.failed_users[held].tolist()) <= train_users
    assert set(prepared.failed_items[held].tolist()) <= set(prepared.train.item.tolist())
    # the share held out is about the recipe's (cold start moves a few back)
    assert 0.1 < held.mean() <= 0.2 + 1e-9
    # the training pairs that negatives avoid: training groups (every role) and training launches only
    users_t, items_t, _ = prepared.launches("train")
    pairs = prepared.train_interactions()
    want = interactions_of(prepared.train, failed_users=users_t, failed_items=items_t)
    assert np.array_equal(pairs.keys, want.keys)
    assert np.array_equal(pairs.contains(prepared.failed_users[held], prepared.failed_items[held]),
                          interactions_of(prepared.train).contains(prepared.failed_users[held],
                                                                   prepared.failed_items[held]))
    interactions = prepared.behavior_interactions()
    seen = set(zip(interactions.user.tolist(), interactions.item.tolist()))
    assert not seen & set(zip(prepared.failed_users[held].tolist(), prepared.failed_items[held].tolist()))
    ui = prepared.graphs()["ui"].indices.numpy()
    edges = {(int(r), int(c) - prepared.num_users) for r, c in ui if r < prepared.num_users <= c}
    assert not edges & set(zip(prepared.failed_users[held].tolist(), prepared.failed_items[held].tolist()))
    assert set(zip(*(a.tolist() for a in prepared.launches("train")[:2]))) <= edges
    stream = prepared.training_stream(config.train, behaviors=True)
    rows = set()
    for index in range(stream.num_batches):
        batch = stream.batch(0, index)
        rows |= set(zip(batch["behavior_user"].reshape(-1).tolist(), batch["behavior_item"].reshape(-1).tolist()))
    assert rows == seen  # every training interaction once an epoch, and nothing else


def test_rows_cover_every_interaction_with_valid_negatives_and_are_deterministic(data):
    config, prepared = data
    stream = prepared.training_stream(config.train, behaviors=True)
    interactions = prepared.behavior_interactions()
    per_triple = rows_per_triple(len(interactions.user), stream.num_triples)
    assert stream.behaviors.per_triple == per_triple >= 1
    batch = stream.batch(1, 2)
    contract.check_batch(batch, config.train.aux_size, folds=False, behavior_sizes=behavior_sizes(stream.behaviors))
    again = stream.batch(1, 2)
    assert all(np.array_equal(batch[k], again[k]) for k in batch)
    # the triple fields are those of the stream without behaviour rows
    plain = prepared.training_stream(config.train).batch(1, 2)
    assert all(np.array_equal(batch[k], plain[k]) for k in plain)
    stage = {(u, i): s for u, i, s in zip(interactions.user.tolist(), interactions.item.tolist(),
                                          interactions.behavior.tolist())}
    user, item = batch["behavior_user"].reshape(-1), batch["behavior_item"].reshape(-1)
    assert [stage[(u, i)] for u, i in zip(user.tolist(), item.tolist())] == batch["behavior_stage"].reshape(-1).tolist()
    neg = batch["behavior_neg"].reshape(len(user), 2, -1)
    pairs = prepared.train_interactions()
    assert not pairs.contains(np.repeat(user, neg.shape[2]), neg[:, 0].reshape(-1)).any()  # launch: never interacted
    failed = {}
    for u, i, s in zip(interactions.user.tolist(), interactions.item.tolist(), interactions.behavior.tolist()):
        if s == 0:
            failed.setdefault(u, set()).add(i)
    for u, js in zip(user.tolist(), neg[:, 1].tolist()):  # deal, hard = 1: the user's own failed launches
        for j in js:
            assert j in failed[u] if u in failed else not pairs.contains(np.array([u]), np.array([j]))[0]


def test_hard_negatives_are_drawn_at_the_recipe_rate():
    users = np.array([0, 0, 0, 1], np.int32)
    items = np.array([1, 2, 3, 4], np.int32)
    interactions = Interactions(users, items, np.array([1, 0, 0, 1], np.int8), ("launch", "deal"))
    pairs = PairSet(users, items, 2, 50)
    rows = BehaviorRows(interactions, pairs, per_triple=1, negatives=4, hard=0.25, seed=3)
    out = rows.rows(np.random.default_rng(0), epoch=0, first_triple=0, count=4000)
    deal_negs = out["behavior_neg"][:, 0, 1][out["behavior_user"][:, 0] == 0]
    share = np.isin(deal_negs, [2, 3]).mean()
    assert 0.2 < share < 0.3  # 0.25, plus the never-interacted draws that are never 2 or 3
    assert not np.isin(out["behavior_neg"][:, 0, 1][out["behavior_user"][:, 0] == 1], [4]).any()
    with pytest.raises(ValueError, match="hard"):
        BehaviorRows(interactions, pairs, 1, 4, 1.5, 0)


def test_fold_streams_draw_each_folds_rows_from_its_own_groups_and_launches(data, tmp_path):
    config, prepared = data
    config.train.graph_folds = 2
    stream = prepared.training_stream(config.train, behaviors=True)
    fold_of_group = prepared.fold_of_groups(2, config.train.seed)
    launch_fold = prepared.fold_of_launches(2, config.train.seed)
    users, items, _ = prepared.launches("train")
    graphs = prepared.fold_graphs(2, config.train.seed, fold_launches=True)
    for f in range(2):
        own = prepared.train.take(np.flatnonzero(fold_of_group == f))
        allowed = set(zip(own.initiator.tolist(), own.item.tolist())) | set(
            zip(users[launch_fold == f].tolist(), items[launch_fold == f].tolist()))
        seen = set()
        for index, (fold, _) in enumerate(stream.schedule(0)):
            if fold == f:
                b = stream.batch(0, index)
                seen |= set(zip(b["behavior_user"].reshape(-1).tolist(), b["behavior_item"].reshape(-1).tolist()))
        assert seen == allowed
        ui = graphs[f]["ui"].indices.numpy()
        edges = {(int(r), int(c) - prepared.num_users) for r, c in ui if r < prepared.num_users <= c}
        assert not edges & set(zip(users[launch_fold == f].tolist(), items[launch_fold == f].tolist()))
        assert set(zip(users[launch_fold != f].tolist(), items[launch_fold != f].tolist())) <= edges
