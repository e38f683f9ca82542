"""TreeMS (paper 003) as a tfgb model: per-row scores, the tree's fall-back, the history t, graph folds, training."""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from support import small_recipe

from tfgb import models
from tfgb.contract import SideInputs
from tfgb.data import relations as relations_lib
from tfgb.data import scenarios
from tfgb.data.prepare import prepare
from tfgb.errors import ConfigError
from tfgb.models.context import ModelContext


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare(small_recipe("treems", tmp_path_factory.mktemp("treems") / "cache"))


def recipe(data, **settings):
    config = small_recipe("treems", pathlib.Path(data.cache_path).parent)
    for key, value in settings.items():
        setattr(config.model.treems, key, value)
    return config


def build(data, folds: int = 1, **settings):
    config = recipe(data, **settings)
    config.train.graph_folds = folds
    tf.keras.utils.set_random_seed(0)
    return models.build_for(config, data), config


def train_some(model, data, config, steps: int = 3) -> list[float]:
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    stream = data.training_stream(config.train)
    losses, epoch = [], 0
    while len(losses) < steps:  # the tiny data is one or two batches an epoch
        for batch in stream.dataset(epoch).take(steps - len(losses)):
            losses.append(float(model.train_step(batch)["loss"]))
        epoch += 1
    return losses


def test_every_candidate_is_scored_on_its_own(data):
    model, _ = build(data, levels=2, graph_attention="product")
    emb = model.propagate()
    lists = data.test_candidates.take(np.arange(6))
    u, i, c = (tf.constant(x) for x in (lists.initiator, lists.item, lists.participants))
    scores = model.score_participants(emb, u, i, c).numpy()
    assert scores.shape == c.shape and np.ptp(scores, 1).min() > 0
    perm = np.random.default_rng(0).permutation(c.shape[1])
    np.testing.assert_allclose(model.score_participants(emb, u, i, tf.gather(c, perm, axis=1)).numpy(),
                               scores[:, perm], rtol=1e-5, atol=1e-6)
    one = model.score_participants(emb, u[2:3], i[2:3], c[2:3, 3:5]).numpy()
    np.testing.assert_allclose(one, scores[2:3, 3:5], rtol=1e-5, atol=1e-6)
    items = model.score_items(emb, u, tf.constant(lists.items)).numpy()
    np.testing.assert_allclose(model.score_items(emb, u[::-1], tf.constant(lists.items[::-1])).numpy(), items[::-1],
                               rtol=1e-6)


def test_an_unseen_leaf_falls_back_to_its_deepest_known_ancestor(data):
    config = recipe(data)
    counts = np.bincount(data.train.item, minlength=data.num_items)
    unseen = int(np.flatnonzero(counts > 0)[0])  # made unseen below
    sibling = int(np.flatnonzero(counts > 0)[1])
    counts[unseen] = 0
    paths = {unseen: "a/b/only", sibling: "a/b/c"}
    others = [n for n in range(data.num_items) if n not in paths]
    index = np.array([unseen, sibling, *others])
    categories = scenarios.from_paths(index, [paths[unseen], paths[sibling]] + ["z/y"] * len(others),
                                      data.num_items)
    relations = relations_lib.for_recipe(config, data, None)[0]
    context = ModelContext(data.num_users, data.num_items, data.graphs(), item_counts=counts,
                           participant_counts=np.bincount(data.train.participants, minlength=data.num_users),
                           side=SideInputs(item_categories=categories, user_relations=relations))
    model = models.build(config, context)
    path = model._paths.numpy()
    name = {n: i for i, n in enumerate(categories.names)}
    assert path[unseen].tolist() == [1, name["a"], name["a/b"], name["a/b"]]  # "only" is unknown: a/b repeated
    assert path[sibling].tolist() == [1, name["a"], name["a/b"], name["a/b/c"]]
    emb = model.propagate()
    gates, _ = model.scenario(emb, tf.constant([unseen, sibling]))
    np.testing.assert_allclose(gates[0, :3], gates[1, :3], rtol=1e-6)  # the shared ancestors' gates
    assert np.abs(gates[0, 3] - gates[1, 3]).max() > 1e-5


def test_the_history_counts_the_training_groups_of_a_pair(data):
    model, _ = build(data)
    emb = model.propagate()
    train = data.train
    pairs = {}
    for g in range(len(train)):
        for p in train.participants[train.offsets[g]:train.offsets[g + 1]]:
            pairs[(int(train.initiator[g]), int(p))] = pairs.get((int(train.initiator[g]), int(p)), 0) + 1
    (u, v), n = max(pairs.items(), key=lambda kv: kv[1])
    view = list(model.view_names).index("initiator_participant")
    t = model.pair_history(emb, tf.constant([u, v]), tf.constant([[v, u], [u, v]])).numpy()
    assert np.isclose(t[0, 0, view], np.log1p(n))  # u -> v: u launched n groups v joined
    assert np.isclose(t[1, 0, view], np.log1p(n))  # the view is symmetric
    stranger = next(w for w in range(data.num_users) if (u, w) not in pairs and (w, u) not in pairs and w != u)
    assert model.pair_history(emb, tf.constant([u]), tf.constant([[stranger]])).numpy()[0, 0, view] == 0.0


def test_a_fold_batch_sees_neither_its_own_edges_nor_their_history(data):
    model, config = build(data, folds=2)
    fold = data.fold_of_groups(2, config.train.seed)
    train = data.train
    view = list(model.view_names).index("initiator_participant")
    pair_folds = {}  # the view is symmetric: a pair is an edge whoever launched
    for g in range(len(train)):
        for p in train.participants[train.offsets[g]:train.offsets[g + 1]]:
            pair = (int(min(train.initiator[g], p)), int(max(train.initiator[g], p)))
            pair_folds.setdefault(pair, set()).add(int(fold[g]))
    only = [(pair, next(iter(f))) for pair, f in pair_folds.items() if len(f) == 1]
    assert len(only) > 20
    checked = 0
    for (u, v), f in only[:40]:
        emb = model.propagate_batch({"initiator": tf.constant([u]), "fold": tf.constant([f])})
        t = model.pair_history(emb, tf.constant([u]), tf.constant([[v]])).numpy()[0, 0, view]
        assert t == 0.0, (u, v, f)
        other = model.propagate_batch({"initiator": tf.constant([u]), "fold": tf.constant([1 - f])})
        assert model.pair_history(other, tf.constant([u]), tf.constant([[v]])).numpy()[0, 0, view] > 0
        k = model.k
        near = emb["neighbours"].numpy()[u, view * k:(view + 1) * k]
        assert v not in near.tolist()
        checked += 1
    assert checked == 40


def test_training_lowers_the_loss_and_logs_every_term(data):
    model, config = build(data)
    losses = train_some(model, data, config, steps=12)
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    names = {m.name for m in model.metrics}
    assert {"loss_a", "loss_b", "loss_treems_aux"} <= names


def test_inconsistency_loss_spreads_the_gates(data):
    spread = {}
    for gamma in (0.0, 5.0):
        model, config = build(data, gamma=gamma)
        train_some(model, data, config, steps=15)
        use = model.utilisation(model.propagate(), np.asarray(data.test.item))
        spread[gamma] = float(-(use * np.log(use)).sum(1).mean())  # entropy of the mean gate per layer
    assert spread[5.0] > spread[0.0]


def test_the_aux_term_reads_eq_15_per_row_or_on_the_batch_mean_gate(data):
    from tfgb.layers.treems import inconsistency_loss

    for over in ("row", "batch"):
        model, config = build(data, aux_over=over)
        batch = next(iter(data.training_stream(config.train).dataset(0).take(1)))
        model.aux_metric.reset_state()
        model.compute_loss(batch, training=False)
        parts = tf.stack([batch["participant"], batch["neg_participant"]], 1)
        _, gates = model.participant_logits(model.propagate(), batch["initiator"], batch["item"], parts)
        per_row = inconsistency_loss(gates).numpy()
        expected = per_row.mean() if over == "row" else inconsistency_loss(tf.reduce_mean(gates, 0, keepdims=True))[0]
        np.testing.assert_allclose(float(model.aux_metric.result()), float(expected), rtol=1e-5)
    # the mean gate is at least as balanced as the mean row (Eq. 15 is concave in the gate)
    assert float(expected) <= per_row.mean() + 1e-6


def test_settings_are_checked(data):
    config = recipe(data, gate="flat")
    from tfgb import config as cfg

    with pytest.raises(ConfigError, match="model.treems.gate"):
        cfg.validate(config)
    config = recipe(data)
    config.train.graph_folds = 1  # a training triple's own edge would be among its features
    with pytest.raises(ConfigError, match="train.graph_folds"):
        cfg.validate(config)
    config.train.graph_folds = 2
    cfg.validate(config)
    depth = build(data)[0].depth  # 1 + the derived tree's depth
    assert build(data, expert_widths=[8] * depth)[0].depth == depth
    with pytest.raises(ValueError, match="expert_widths"):
        build(data, expert_widths=[8] * (depth + 1))


def test_variants(data):
    flat, _ = build(data, gate="leaf")
    emb = flat.propagate()
    assert flat.gates.mode == "leaf"
    nog, _ = build(data, levels=0)
    assert not nog.attention
    lists = data.test_candidates.take(np.arange(3))
    for model in (flat, nog):
        emb = model.propagate()
        s = model.score_participants(emb, tf.constant(lists.initiator), tf.constant(lists.item),
                                     tf.constant(lists.participants)).numpy()
        assert np.isfinite(s).all()
    assert dataclasses.asdict(models.settings(models.resolve(recipe(data))))["gate"] == "tree"
