"""NMTR (paper 004): the NCF units (Eq. 6-8), the cascade (Eq. 9), the loss (Eq. 12) row by row, and
MGBR's launch -> deal plug-in (``launch_task``), on hand-made inputs."""
from __future__ import annotations

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from support import tiny_model_config

from tfgb import models
from tfgb.contract import Interactions, SideInputs
from tfgb.data.graphs import build_graphs
from tfgb.data.groups import DealGroups
from tfgb.errors import ConfigError
from tfgb.layers.ncf import NCFUnit, cascade
from tfgb.models.context import ModelContext

U, I, E = 6, 5, 4
GROUPS = [(0, 1, [2, 3]), (1, 0, [2]), (0, 2, [4]), (3, 1, [0]), (5, 4, [1])]


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0)


def context(failed: bool = True) -> ModelContext:
    sizes = [len(p) for _, _, p in GROUPS]
    table = DealGroups(np.array([g[0] for g in GROUPS]), np.array([g[1] for g in GROUPS]),
                       np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                       np.array([p for g in GROUPS for p in g[2]]), U, I)
    side = SideInputs()
    if failed:
        side = SideInputs(interactions=Interactions(np.array([0, 1, 4], np.int32), np.array([3, 2, 0], np.int32),
                                                    np.array([0, 0, 0], np.int8), ("launch", "deal")))
    return ModelContext(U, I, build_graphs(table, U, I), side=side)


def behavior_batch(seed: int = 0, b: int = 3, m: int = 2, n: int = 2) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(seed)
    out = {key: tf.constant(rng.integers(0, size, b), tf.int32) for key, size in
           (("initiator", U), ("item", I), ("participant", U), ("neg_item", I), ("neg_participant", U))}
    out["aux_items"] = tf.constant(rng.integers(0, I, (b, 2)), tf.int32)
    out["aux_participants"] = tf.constant(rng.integers(0, U, (b, 2)), tf.int32)
    out["behavior_user"] = tf.constant(rng.integers(0, U, (b, m)), tf.int32)
    out["behavior_item"] = tf.constant(rng.integers(0, I, (b, m)), tf.int32)
    out["behavior_stage"] = tf.constant([[0, 1], [1, 1], [0, 0]][:b], tf.int32)
    out["behavior_neg"] = tf.constant(rng.integers(0, I, (b, m, 2, n)), tf.int32)
    return out


def unit_numpy(unit: NCFUnit, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Eq. 6-8 written out for one (p, q) pair per row, with the unit's own weights."""
    h = unit.h.kernel.numpy()[:, 0]
    out = []
    for pu, qi in zip(p, q):
        parts = []
        if unit.kind in ("gmf", "neumf"):
            parts.append(pu * qi)
        if unit.kind in ("mlp", "neumf"):
            z = np.concatenate([pu, qi])
            for layer in unit.tower:
                z = relu(z @ layer.kernel.numpy() + layer.bias.numpy())
            parts.append(z)
        out.append(np.concatenate(parts) @ h)
    return np.array(out)


@pytest.mark.parametrize("kind", ["gmf", "mlp", "neumf"])
def test_units_compute_eq_6_to_8_and_score_each_row_on_its_own(kind):
    unit = NCFUnit(kind, E, mlp_layers=2)
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=(7, E)).astype(np.float32), rng.normal(size=(7, E)).astype(np.float32)
    got = unit(tf.constant(p), tf.constant(q)).numpy()
    np.testing.assert_allclose(got, unit_numpy(unit, p, q), rtol=1e-5, atol=1e-5)
    if kind != "gmf":
        assert [layer.units for layer in unit.tower] == [2 * E, E]  # the tower halves down to E
    perm = rng.permutation(7)  # permutation invariance: a row's score does not depend on the others
    np.testing.assert_allclose(unit(tf.constant(p[perm]), tf.constant(q[perm])).numpy(), got[perm], rtol=1e-6)
    grid = unit(tf.constant(p[:6].reshape(2, 3, E)), tf.constant(q[:6].reshape(2, 3, E))).numpy()
    np.testing.assert_allclose(grid.reshape(-1), got[:6], rtol=1e-6)  # any leading shape


def test_cascade_is_eq_9_and_the_mean_option_averages():
    f = [tf.constant(x, tf.float64) for x in ([1.0, -2.0], [0.5, 3.0], [-1.0, 1.0])]
    b = [tf.constant(x, tf.float64) for x in ([0.1, 0.2], [0.0, -0.5], [2.0, 0.0])]
    out = [x.numpy() for x in cascade(f, b)]
    np.testing.assert_allclose(out[0], [1.1, -1.8])
    np.testing.assert_allclose(out[1], [1.1 + 0.5 + 0.0, -1.8 + 3.0 - 0.5])
    np.testing.assert_allclose(out[2], [1.6 - 1.0 + 2.0, 0.7 + 1.0 + 0.0])
    mean = [x.numpy() for x in cascade(f, b, "mean")]
    np.testing.assert_allclose(mean[1], [(1.1 + 0.5) / 2 + 0.0, (-1.8 + 3.0) / 2 - 0.5])
    np.testing.assert_allclose(mean[2], [(mean[1][0] - 1.0) / 2 + 2.0, (mean[1][1] + 1.0) / 2])
    with pytest.raises(ValueError, match="sum"):
        cascade(f, b, "max")


def nmtr(name: str = "nmtr", **overrides):
    config = tiny_model_config(name)
    for key, value in overrides.items():
        setattr(config.model.nmtr, key, value)
    config.model.nmtr.mlp_layers = 2
    model = models.build(config, context())
    model.compute_loss(behavior_batch(), training=False)  # builds the variables
    rng = np.random.default_rng(5)  # non-zero item biases, so the test sees them
    model.item_bias.assign(rng.normal(size=model.item_bias.shape).astype(np.float32))
    return model, config


def cascade_numpy(model, user, item) -> list[np.ndarray]:
    emb = {k: v.numpy() for k, v in model.propagate().items()}
    p, q = emb["users_i"][user], emb["items"][item]
    out, previous = [], None
    for r, unit in enumerate(model.units):
        f = unit_numpy(unit, p, q) + emb["item_bias"][item, r]
        previous = f if previous is None else previous + f
        out.append(previous)
    return out


def test_scores_are_the_deal_logit_of_the_cascade():
    model, _ = nmtr(weights=[0.4, 0.6])
    emb = model.propagate()
    u, c = np.array([0, 3]), np.array([[1, 2, 4], [0, 0, 3]])
    got = model.score_items(emb, tf.constant(u), tf.constant(c)).numpy()
    want = cascade_numpy(model, np.repeat(u, 3), c.reshape(-1))[-1].reshape(2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    parts = model.score_participants(emb, tf.constant(u), None, tf.constant([[1, 2], [4, 5]])).numpy()
    users = emb["users_i"].numpy()
    np.testing.assert_allclose(parts, [[users[0] @ users[1], users[0] @ users[2]],
                                       [users[3] @ users[4], users[3] @ users[5]]], rtol=1e-5)
    assert model.learns_launches and model.loss_weights == pytest.approx([0.4, 0.6])
    # P(deal | launch) = y^deal / y^launch of the cascade, at most 1
    pairs_u, pairs_i = np.array([0, 1, 3, 5]), np.array([1, 2, 4, 0])
    launch, deal = cascade_numpy(model, pairs_u, pairs_i)
    want = np.minimum(sigmoid(deal) / sigmoid(launch), 1.0)
    got = model.launch_success(emb, tf.constant(pairs_u), tf.constant(pairs_i)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("name", ["nmtr", "nmtr-single"])
def test_the_loss_is_eq_12_recomputed_row_by_row(name):
    model, config = nmtr(name, weights=[1.0, 3.0] if name == "nmtr" else [])
    batch = behavior_batch()
    got = float(model.compute_loss(batch, training=False))
    user = batch["behavior_user"].numpy().reshape(-1)
    item = batch["behavior_item"].numpy().reshape(-1)
    stage = batch["behavior_stage"].numpy().reshape(-1)
    neg = batch["behavior_neg"].numpy().reshape(-1, 2, 2)
    stages = [0, 1] if name == "nmtr" else [1]
    weights = [0.25, 0.75] if name == "nmtr" else [1.0]
    want = 0.0
    for k, (r, w) in enumerate(zip(stages, weights)):
        total, positives = 0.0, 0
        for row in range(len(user)):
            if stage[row] < r:
                continue  # the row never reached behaviour r: no positive, no negative of r
            positives += 1
            negatives = neg[row, r] if name == "nmtr" else neg[row, 0]  # single: never-interacted only
            pos = cascade_numpy(model, np.array([user[row]]), np.array([item[row]]))[k][0]
            negs = cascade_numpy(model, np.full(2, user[row]), negatives)[k]
            total += softplus(-pos) + softplus(negs).sum()  # -log s(z) = softplus(-z); -log(1 - s(z)) = softplus(z)
        want += w * total / positives
    emb = model.propagate()
    users = emb["users_i"].numpy()
    u, p, pn = (batch[k].numpy() for k in ("initiator", "participant", "neg_participant"))
    diff = (users[u] * users[p]).sum(1) - (users[u] * users[pn]).sum(1)
    want += config.train.beta * softplus(-diff).mean()  # task B's BPR term
    assert got == pytest.approx(want, rel=1e-5)


def test_the_loss_trains_the_launch_unit_only_with_the_launch_behaviour():
    for name, trained in (("nmtr", True), ("nmtr-single", False)):
        model, _ = nmtr(name)
        with tf.GradientTape() as tape:
            loss = model.compute_loss(behavior_batch(), training=True)
        grads = dict(zip([v.name for v in model.trainable_variables],
                         tape.gradient(loss, model.trainable_variables)))
        launch = [g for key, g in grads.items() if "unit_launch" in key]
        assert bool(launch) == trained
        assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in launch)


def test_nmtr_needs_failed_launches_but_the_single_behaviour_variant_does_not():
    with pytest.raises(ConfigError, match="data.failed_launches"):
        models.build(tiny_model_config("nmtr"), context(failed=False))
    assert not models.build(tiny_model_config("nmtr-single"), context(failed=False)).learns_launches


def mgbr(launch: bool, name: str = "mgbr"):
    config = tiny_model_config(name)
    section = getattr(config.model, name)
    section.launch_task = launch
    section.launch_weight = 0.7
    model = models.build(config, context())
    model.compute_loss(behavior_batch(), training=False)
    return model, config


@pytest.mark.parametrize("name", ["mgbr", "mamgbr"])
def test_launch_task_cascades_a_launch_head_into_task_a(name):
    model, _ = mgbr(True, name)
    rng = np.random.default_rng(2)
    model.launch.bias.assign(rng.normal(size=(I, 1)).astype(np.float32))
    emb = model.propagate()
    u, c = tf.constant([0, 3]), tf.constant([[1, 2, 4], [0, 0, 3]])
    cascaded = model.score_items(emb, u, c).numpy()
    launch = model.launch.logits(emb, u[:, None], c).numpy()
    e = {k: v.numpy() for k, v in emb.items()}
    h = model.launch.unit.h.kernel.numpy()[:, 0]
    by_hand = np.array([[(e["users_i"][a] * e["items"][i]) @ h + e["launch_bias"][i, 0] for i in row]
                        for a, row in zip(u.numpy(), c.numpy())])
    np.testing.assert_allclose(launch, by_hand, rtol=1e-5, atol=1e-5)  # Eq. 6 + b_i^launch
    model.learns_launches = False  # the same weights without the launch head
    np.testing.assert_allclose(cascaded - model.score_items(emb, u, c).numpy(), launch, rtol=1e-4, atol=1e-5)


def test_launch_task_adds_its_two_log_losses():
    model, _ = mgbr(True)
    batch = behavior_batch()
    emb = model.propagate()
    got = float(model.launch.loss(emb, batch, lambda u, i: model.score_items(emb, u, i, launch=False)))
    user = batch["behavior_user"].numpy().reshape(-1)
    item = batch["behavior_item"].numpy().reshape(-1)
    deal = (batch["behavior_stage"].numpy().reshape(-1) == 1).astype(float)
    neg = batch["behavior_neg"].numpy().reshape(-1, 2, 2)[:, 0]  # the launch negatives
    e = {k: v.numpy() for k, v in emb.items()}
    h = model.launch.unit.h.kernel.numpy()[:, 0]

    def launch(a, i):
        return (e["users_i"][a] * e["items"][i]) @ h + e["launch_bias"][i, 0]

    l_launch = np.mean([softplus(-launch(a, i)) + sum(softplus(launch(a, j)) for j in js)
                        for a, i, js in zip(user, item, neg)])
    # L_success is on the deal increment r = s_A - out^launch
    s = model.score_items(emb, tf.constant(user), tf.constant(item[:, None])).numpy()[:, 0] - launch(user, item)
    l_success = np.mean(deal * softplus(-s) + (1 - deal) * softplus(s))
    np.testing.assert_allclose(model.launch_success(emb, tf.constant(user), tf.constant(item)).numpy(), sigmoid(s),
                               rtol=1e-4, atol=1e-6)
    total = float(model.compute_loss(batch))
    model.launch.weight = 0.0
    assert total - float(model.compute_loss(batch)) == pytest.approx(got, rel=1e-4)  # the term is in the loss
    assert got == pytest.approx(0.7 * (l_launch + l_success), rel=1e-5)
    plain, _ = mgbr(False)
    assert not plain.learns_launches and "launch_bias" not in plain.propagate()
