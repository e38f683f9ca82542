"""Tests for the baselines (LightGCN, NGCF, GBMF, popularity) and MAMGBR as models, on hand-made groups."""
from __future__ import annotations

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from support import tiny_model_config

from tfgb import models
from tfgb.config import Config
from tfgb.data.graphs import build_graphs
from tfgb.data.groups import DealGroups
from tfgb.models.context import ModelContext
from tfgb.models.dot import user_item_graph
from tfgb.models.gbmf import friend_mean_graph

U, I = 5, 3
# (initiator, item, participants): u0 buys i1 with u2, u3; u1 buys i0 with u2; u0 buys i2 with u4; u3 buys i1 with u0.
GROUPS = [(0, 1, [2, 3]), (1, 0, [2]), (0, 2, [4]), (3, 1, [0])]


def groups() -> DealGroups:
    sizes = [len(p) for _, _, p in GROUPS]
    return DealGroups(np.array([g[0] for g in GROUPS]), np.array([g[1] for g in GROUPS]),
                      np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                      np.array([p for g in GROUPS for p in g[2]]), U, I)


@pytest.fixture(scope="module")
def graphs() -> dict[str, tf.sparse.SparseTensor]:
    return build_graphs(groups(), U, I)


def config(name: str) -> Config:
    return tiny_model_config(name, mtl_layers=2)


def user_item_dense() -> np.ndarray:
    """D^-1/2 A D^-1/2 of the user-item pairs of every role, no self-loops."""
    a = np.zeros((U + I, U + I))
    for u, i, ps in GROUPS:
        for user in [u, *ps]:
            a[user, U + i] = a[U + i, user] = 1.0
    d = a.sum(1)
    scale = np.where(d > 0, d ** -0.5, 0.0)
    return scale[:, None] * a * scale[None, :]


def batch(rows: int = 4) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(0)
    out = {key: tf.constant(rng.integers(0, n, rows), tf.int32) for key, n in
           (("initiator", U), ("item", I), ("participant", U), ("neg_item", I), ("neg_participant", U))}
    out["aux_items"] = tf.constant(rng.integers(0, I, (rows, 2)), tf.int32)
    out["aux_participants"] = tf.constant(rng.integers(0, U, (rows, 2)), tf.int32)
    return out


def test_user_item_graph_is_the_normalized_bipartite_graph(graphs) -> None:
    adj = user_item_graph(graphs, U)
    np.testing.assert_allclose(tf.sparse.to_dense(adj).numpy(), user_item_dense(), atol=1e-6)
    idx = adj.indices.numpy()
    assert (np.diff(idx[:, 0] * (U + I) + idx[:, 1]) > 0).all()  # row-major order kept


def test_lightgcn_is_the_mean_of_linear_propagations(graphs) -> None:
    model = models.build(config("lightgcn"), ModelContext(U, I, graphs))
    emb = model.propagate()
    a, e0 = user_item_dense(), model.embeddings.numpy().astype(np.float64)
    expected = (e0 + a @ e0 + a @ a @ e0) / 3  # Eq. 7-8 of LightGCN, K = 2
    np.testing.assert_allclose(emb["users_i"].numpy(), expected[:U], atol=1e-5)
    np.testing.assert_allclose(emb["items"].numpy(), expected[U:], atol=1e-5)
    scores = model.score_participants(emb, tf.constant([1]), tf.constant([0]), tf.constant([[2, 3]])).numpy()
    np.testing.assert_allclose(scores[0], expected[[2, 3]] @ expected[1], atol=1e-5)


def test_ngcf_propagation_matches_the_matrix_form(graphs) -> None:
    model = models.build(config("ngcf"), ModelContext(U, I, graphs))
    emb = model.propagate(training=False)
    a = user_item_dense()
    x = model.embeddings.numpy().astype(np.float64)
    layers = [x]
    for gc, bi in zip(model.gc, model.bi):
        (w1, b1), (w2, b2) = gc.get_weights(), bi.get_weights()
        side = a @ x
        h = (side + x) @ w1 + b1 + (side * x) @ w2 + b2  # Eq. 7 of NGCF
        x = np.where(h > 0, h, 0.2 * h)
        layers.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6))
    expected = np.concatenate(layers, 1)
    assert emb["items"].shape == (I, 3 * 4)
    np.testing.assert_allclose(emb["users_p"].numpy(), expected[:U], atol=1e-5)
    np.testing.assert_allclose(emb["items"].numpy(), expected[U:], atol=1e-5)


def test_gbmf_mixes_the_initiator_with_the_friends_mean(graphs) -> None:
    friends = tf.sparse.to_dense(friend_mean_graph(graphs)).numpy()
    # u0's co-members: u2, u3, u4 (its groups) and u3 (whose group u0 joined).
    np.testing.assert_allclose(friends[0], [0, 0, 1 / 3, 1 / 3, 1 / 3], atol=1e-6)
    model = models.build(config("gbmf"), ModelContext(U, I, graphs))
    emb = model.propagate()
    p_i, p_p, q = model.initiators.numpy(), model.participants.numpy(), model.items.numpy()
    mix = 0.5 * p_i[0] + 0.5 * friends[0] @ p_p
    np.testing.assert_allclose(model.score_items(emb, tf.constant([0]), tf.constant([[0, 2]])).numpy()[0],
                               q[[0, 2]] @ mix, atol=1e-5)
    np.testing.assert_allclose(
        model.score_participants(emb, tf.constant([0]), tf.constant([1]), tf.constant([[1, 4]])).numpy()[0],
        p_p[[1, 4]] @ p_i[0], atol=1e-5)


def test_popularity_ranks_popular_items_and_co_members_first(graphs) -> None:
    model = models.build(config("popularity"), ModelContext(U, I, graphs))
    assert model.trainable_variables == []
    emb = model.propagate()
    items = model.score_items(emb, tf.constant([4]), tf.constant([[0, 1, 2]])).numpy()[0]
    np.testing.assert_allclose(items, np.log1p([2, 3, 2]), atol=1e-6)  # distinct users per item, any role
    # For initiator u1: u2 is a co-member; u0 joined 1 item, u3 1, u4 1, u2 2 items.
    parts = model.score_participants(emb, tf.constant([1, 0]), tf.constant([0, 1]),
                                     tf.constant([[0, 2, 3], [1, 3, 4]])).numpy()
    assert parts[0].argmax() == 1 and parts[0][0] == parts[0][2]
    assert parts[1][1] > parts[1][0] and parts[1][2] > parts[1][0]  # u3, u4 are u0's co-members, u1 is not
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    history = model.fit(tf.data.Dataset.from_tensors(batch()), epochs=1, verbose=0).history
    assert np.isfinite(history["loss_a"][0]) and np.isfinite(history["loss_b"][0])


@pytest.mark.parametrize("name", ["lightgcn", "ngcf", "gbmf", "popularity", "mf-bpr", "mamgbr", "mamgbr-m",
                                  "mamgbr-mh"])
def test_every_candidate_is_scored_on_its_own(name: str, graphs) -> None:
    model = models.build(config(name), ModelContext(U, I, graphs))
    model.compute_loss(batch(), training=True)  # build, and move BatchNorm statistics
    emb = model.propagate(training=False)
    u, i = tf.constant([0, 3, 1]), tf.constant([1, 0, 2])
    items = tf.constant([[0, 1, 2], [2, 0, 1], [1, 1, 0]])
    users = tf.constant([[4, 2, 3], [1, 0, 4], [3, 2, 2]])
    full_a = model.score_items(emb, u, items).numpy()
    full_b = model.score_participants(emb, u, i, users).numpy()
    assert np.isfinite(full_a).all() and np.isfinite(full_b).all()
    for c in range(3):
        np.testing.assert_allclose(model.score_items(emb, u, items[:, c:c + 1]).numpy()[:, 0], full_a[:, c],
                                   atol=1e-5)
        np.testing.assert_allclose(model.score_participants(emb, u, i, users[:, c:c + 1]).numpy()[:, 0],
                                   full_b[:, c], atol=1e-5)
    np.testing.assert_allclose(model.score_items(emb, u[1:2], items[1:2]).numpy()[0], full_a[1], atol=1e-5)


def test_mamgbr_m_tasks_share_no_parameter(graphs) -> None:
    model = models.build(config("mamgbr-m"), ModelContext(U, I, graphs))
    model.compute_loss(batch(), training=False)
    u, i = tf.constant([0, 3]), tf.constant([1, 0])
    with tf.GradientTape(persistent=True) as tape:
        emb = model.propagate(training=True)
        score_a = tf.reduce_sum(model.score_items(emb, u, tf.constant([[0, 2], [1, 2]]), training=True))
        score_b = tf.reduce_sum(model.score_participants(emb, u, i, tf.constant([[4, 2], [1, 0]]), training=True))
    variables = model.trainable_variables

    def used(score: tf.Tensor) -> set:
        return {v.ref() for v, g in zip(variables, tape.gradient(score, variables))
                if g is not None and float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) > 0}

    used_a, used_b = used(score_a), used(score_b)
    assert used_a and used_b and not used_a & used_b
    gcn_b = {v.ref() for v in model.gcn_b.trainable_variables}
    assert gcn_b <= used_b and not gcn_b & used_a


def test_mamgbr_variants_are_configuration() -> None:
    assert not config("mamgbr-m").model.mamgbr.shared_experts
    assert not config("mamgbr-l").train.aux_losses
    assert not config("mamgbr-mh").model.mamgbr.attention
    mh = models.build(config("mamgbr-mh"), ModelContext(U, I, {}))
    assert not mh.mtl.attention and models.build(config("mamgbr"), ModelContext(U, I, {})).mtl.attention
    assert mh.mtl.num_heads == 2
