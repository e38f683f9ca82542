"""The scenario-aware user-graph attention plug-in (``model.user_graph = "attention"``) on MGBR and MAMGBR:
it starts as the backbone, adds one term per (initiator, item, candidate) that depends on the scenario, its
neighbours and histories come from the batch's fold in training, it trains, and its export serves the
in-process scores with unknown ids reported."""
from __future__ import annotations

import types

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from support import small_recipe

from tfgb import config as cfg
from tfgb import models
from tfgb.data.prepare import prepare
from tfgb.errors import ConfigError
from tfgb.evaluation import Scorer
from tfgb.serving import export


def recipe(name, cache, folds=2):
    config = small_recipe(name, cache)
    config.model.user_graph, config.train.graph_folds = "attention", folds
    config.model.scenario_graph.embedding_dim = 8
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("user_graph")
    config = recipe("mgbr", tmp / "cache")
    data = prepare(config)
    tf.keras.utils.set_random_seed(0)
    model = models.build_for(config, data)
    batch = next(iter(data.training_stream(config.train).dataset(0).take(1)))
    model.compute_loss({k: v[:2] for k, v in batch.items()}, training=False)  # builds every weight
    return {"model": model, "data": data, "config": config, "batch": batch, "tmp": tmp}


def lists(data, n=6):
    taken = data.test_candidates.take(np.arange(n))
    return taken, tuple(tf.constant(x) for x in (taken.initiator, taken.item, taken.participants))


def perturb_head(model, seed=3):
    rng = np.random.default_rng(seed)
    for layer in (model.user_graph.head, *model.user_graph.mlp):
        for v in layer.weights:
            v.assign(rng.normal(0.0, 0.5, v.shape.as_list()).astype(np.float32))


def test_it_starts_as_the_backbone_and_adds_a_per_candidate_term(built):
    model, data = built["model"], built["data"]
    emb = model.propagate()
    _, (u, i, c) = lists(data)
    term = model.user_graph(emb, u[:, None], i[:, None], c).numpy()
    assert term.shape == tuple(c.shape) and np.all(term == 0.0)  # the zero-started head
    base = model.score_participants(emb, u, i, c).numpy()
    perturb_head(model)
    try:
        term = model.user_graph(emb, u[:, None], i[:, None], c).numpy()
        scores = model.score_participants(emb, u, i, c).numpy()
        np.testing.assert_allclose(scores, base + term, rtol=1e-5, atol=1e-5)
        assert np.abs(term).max() > 1e-3
        # every candidate is scored on its own: a permutation of the candidates permutes the scores
        order = np.random.default_rng(0).permutation(c.shape[1])
        again = model.score_participants(emb, u, i, tf.gather(c, order, axis=1)).numpy()
        np.testing.assert_allclose(again, scores[:, order], rtol=1e-5, atol=1e-5)
        # and as a single candidate
        one = model.score_participants(emb, u[:2], i[:2], c[:2, :1]).numpy()
        np.testing.assert_allclose(one, scores[:2, :1], rtol=1e-5, atol=1e-5)
        # the scenario matters: the same lists under the root-only path score otherwise
        root = dict(emb, ug_paths=tf.ones_like(emb["ug_paths"]))
        assert np.abs(model.user_graph(root, u[:, None], i[:, None], c).numpy() - term).max() > 1e-4
    finally:
        for layer in (model.user_graph.head,):
            for v in layer.weights:
                v.assign(tf.zeros_like(v))


def test_a_training_batch_reads_its_folds_neighbours(built):
    model, batch = built["model"], built["batch"]
    assert model.relation_tables.slots == 3  # every group, and without each of the 2 folds
    emb = model.propagate_batch(batch, training=True)
    fold = int(batch["fold"][0])
    np.testing.assert_array_equal(emb["ug_neighbours"].numpy(), model.relation_tables.neighbours[fold + 1].numpy())
    np.testing.assert_array_equal(model.propagate()["ug_neighbours"].numpy(), model.relation_tables.neighbours[0].numpy())
    # a triple's own (initiator, participant) edge is not in its fold's history: the pair's weight there is
    # at least one group below its weight over every training group (view 0: initiator-participant)
    full = model.propagate()

    def weight(tables, u, p):
        keys, weights = tables["ug_history_keys"].numpy(), tables["ug_history_weights"].numpy()
        n = model.num_users + 1
        key = u.astype(np.int64) * n + p
        at = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return np.where(keys[at] == key, weights[at], 0.0)

    u, p = batch["initiator"].numpy(), batch["participant"].numpy()
    assert np.all(weight(full, u, p) - weight(emb, u, p) >= 1.0)


def test_training_lowers_the_loss_on_mgbr_and_mamgbr(tmp_path):
    for name in ("mgbr", "mamgbr"):
        config = recipe(name, tmp_path / "cache")
        data = prepare(config)
        tf.keras.utils.set_random_seed(0)
        model = models.build_for(config, data)
        stream = data.training_stream(config.train)
        first = next(iter(stream.dataset(0).take(1)))
        model.compute_loss({k: v[:2] for k, v in first.items()}, training=False)
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
        before = [v.numpy().copy() for v in model.user_graph.trainable_variables]
        losses = []
        for epoch in range(4):
            for batch in stream.dataset(epoch):
                losses.append(float(model.train_step(batch)["loss"]))
        assert np.mean(losses[-2:]) < np.mean(losses[:2]), (name, losses)
        moved = [np.abs(v.numpy() - b).max() for v, b in zip(model.user_graph.trainable_variables, before)]
        assert min(moved) > 0.0  # every weight of the plug-in is trained (the head's gradient reaches all)


def test_recipe_checks(tmp_path):
    config = recipe("mgbr", tmp_path / "cache", folds=1)
    with pytest.raises(ConfigError, match="train.graph_folds"):
        cfg.validate(config)
    config.train.graph_folds = 2
    cfg.validate(config)
    config = recipe("lightgcn", tmp_path / "cache")
    data = prepare(config)
    with pytest.raises(ConfigError, match="plugs into mgbr, mamgbr"):
        models.build_for(config, data)
    loaded = cfg.load(None, ["model.user_graph=attention", "train.graph_folds=4", "model.scenario_graph.neighbours=5"])
    assert loaded.model.scenario_graph.neighbours == 5


def test_export_serves_in_process_scores_and_reports_unknown_ids(built):
    model, data, tmp = built["model"], built["data"], built["tmp"]
    perturb_head(model, 5)
    module = export.build_module(types.SimpleNamespace(model=model, data=data))
    path = export.save_version(module, tmp / "saved_models" / "ug")
    loaded = tf.saved_model.load(str(path))
    scorer = Scorer(model)
    taken, _ = lists(data, 12)
    users, items = data.user_vocab.ids.astype(str), data.item_vocab.ids.astype(str)
    initiator, item, cands = users[taken.initiator].copy(), items[taken.item].copy(), users[taken.participants].copy()
    initiator[::4], item[1::4], cands[2::4, 0] = "stranger", "new-item", "nobody"
    out = loaded.signatures["rank_participants"](initiator=tf.constant(initiator), item=tf.constant(item),
                                                 candidates=tf.constant(cands))
    want = scorer.participants(taken.initiator, taken.item, taken.participants)
    known = (np.arange(12) % 4) == 3
    np.testing.assert_allclose(out["scores"].numpy()[known], want[known], rtol=1e-4, atol=1e-4)
    # unknown ids: the out-of-vocabulary rows (root-only path, no neighbours, the backbone's mean rows)
    emb = export.with_oov_rows(scorer.emb, model.table_kinds(), model.oov_rows(scorer.emb))
    u = np.where(np.arange(12) % 4 == 0, data.num_users, taken.initiator)
    i = np.where(np.arange(12) % 4 == 1, data.num_items, taken.item)
    c = taken.participants.copy()
    c[2::4, 0] = data.num_users
    expected = model.score_participants(emb, tf.constant(u), tf.constant(i), tf.constant(c)).numpy()
    np.testing.assert_allclose(out["scores"].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert out["unknown_ids"].numpy().sum() == 9
