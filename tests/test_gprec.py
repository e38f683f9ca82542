"""GPRec (paper 002): its layers on hand-made inputs (Eq. 2-13), the user features, and the plug-in on the
four backbones (every strategy trains; scores are per row; export and REST with unknown users)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from support import small_recipe

from tfgb import models
from tfgb.data import features as user_features
from tfgb.data.prepare import prepare
from tfgb.errors import ConfigError, DataError
from tfgb.layers.gprec import (
    DualGroupEmbedding,
    GroupClassifier,
    PreferenceMLP,
    masks,
    orthogonal_loss,
)


def cosine(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


# -- layers ---------------------------------------------------------------------------------------

def test_masks_are_deterministic_at_inference_noisy_in_training_and_one_hot_at_small_tau():
    log_s = tf.math.log(tf.constant([[[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]]))  # [1, G=3, 2]
    first, again = masks(log_s, 0.5), masks(log_s, 0.5)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    # Eq. 3 without noise: s1^(1/tau) / (s1^(1/tau) + s0^(1/tau))
    want = np.array([0.7 ** 2 / (0.7 ** 2 + 0.3 ** 2), 0.2 ** 2 / (0.2 ** 2 + 0.8 ** 2), 0.5])
    np.testing.assert_allclose(first.numpy()[0], want, rtol=1e-5)
    sharp = masks(log_s[:, :2], 0.01).numpy()[0]
    np.testing.assert_allclose(sharp, [1.0, 0.0], atol=1e-6)
    tf.random.set_seed(0)
    draws = np.stack([masks(log_s, 0.5, training=True).numpy() for _ in range(20)])
    assert draws.std(0).min() > 0.01  # noise in training: every mask varies between draws
    assert 0.0 < draws.min() and draws.max() < 1.0


def test_classifier_scores_are_a_distribution_per_group_and_independent_per_row():
    layer = GroupClassifier(4, [5, 3])
    x = tf.random.stateless_normal([6, 7], seed=[1, 2])
    log_s = layer(x)
    assert log_s.shape == (6, 4, 2)
    np.testing.assert_allclose(tf.reduce_sum(tf.exp(log_s), -1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(layer(x[::-1]).numpy()[::-1], log_s.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer(x[2:3]).numpy()[0], log_s.numpy()[2], rtol=1e-6, atol=1e-7)
    round_trip = GroupClassifier.from_config(layer.get_config())
    assert (round_trip.groups, round_trip.hidden_units) == (4, [5, 3])


def test_group_representation_and_its_contrast_by_hand():
    layer = DualGroupEmbedding(2, 3)
    layer.positive.assign([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    layer.negative.assign([[0.0, 0.0, 3.0], [-1.0, -1.0, -1.0]])
    m1 = tf.constant([[1.0, 0.25]])
    # Eq. 6: [m1 p1 + m0 n1, m2 p2 + m0 n2]
    np.testing.assert_allclose(layer(m1).numpy()[0], [1, 0, 0, -0.75, -0.25, -0.75])
    # Eq. 9: the masks swapped
    np.testing.assert_allclose(layer(1.0 - m1).numpy()[0], [0, 0, 3, -0.25, 1.25, -0.25])
    summed = DualGroupEmbedding(2, 3, pool="sum")
    summed.positive.assign(layer.positive)
    summed.negative.assign(layer.negative)
    np.testing.assert_allclose(summed(m1).numpy()[0], [0.25, -0.25, -0.75])
    assert (layer.width, summed.width) == (6, 3)


def test_orthogonal_loss_by_hand():
    r_g = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    r_p = tf.constant([[1.0, 1.0], [-2.0, 0.0]])
    c = cosine([1, 0], [1, 1])
    assert float(orthogonal_loss(r_g, r_p, "abs")) == pytest.approx((c + 1.0) / 2)
    assert float(orthogonal_loss(r_g, r_p, "square")) == pytest.approx((c * c + 1.0) / 2)
    assert float(orthogonal_loss(r_g, r_p, "signed")) == pytest.approx((c - 1.0) / 2)
    with pytest.raises(ValueError, match="orthogonal"):
        orthogonal_loss(r_g, r_p, "cos")


def test_preference_mlp_by_hand_and_frozen_weights_get_no_gradient():
    f1 = PreferenceMLP([2])
    x = tf.constant([[1.0, -1.0, 2.0]])
    f1(x)
    f1.kernels[0].assign([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    f1.kernels[1].assign([[2.0], [-1.0]])
    f1.biases[1].assign([0.5])
    # relu([1 + 2, -1 + 2]) = [3, 1]; 2 * 3 - 1 + 0.5
    assert float(f1(x)[0]) == pytest.approx(5.5)
    r = tf.Variable(x)
    with tf.GradientTape(persistent=True) as tape:
        free, frozen = f1(r), f1(r, frozen=True)
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in tape.gradient(free, f1.trainable_variables)[:2])
    assert all(g is None for g in tape.gradient(frozen, f1.trainable_variables))
    assert np.abs(tape.gradient(frozen, r).numpy()).sum() > 0  # the representation still learns (Eq. 11)


# -- the plug-in ----------------------------------------------------------------------------------

def gprec_config(name: str, tmp_path, strategy: str = "input", **train):
    config = small_recipe(name, tmp_path / "cache", **train)
    config.model.user_modeling = "gprec"
    config.model.gprec.strategy = strategy
    config.model.gprec.groups = 4
    config.model.gprec.dim = 4
    config.model.gprec.classifier_hidden = [8]
    config.model.gprec.mlp_hidden = [8]
    return config


def build(config, file_features: bool = False):
    data = prepare(config)
    if file_features:
        config.data.user_features = "synthetic"
    found = user_features.for_recipe(config, data, None)
    return models.build_for(config, data, found[1]), data


def batch(data, config, b: int = 16):
    return {k: tf.constant(v[:b]) for k, v in data.training_stream(config.train).batch(0, 0).items()}


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory):
    return tmp_path_factory.mktemp("gprec")


def test_the_aux_loss_is_eq_20_of_its_logged_terms(tmp_module):
    config = gprec_config("mf-bpr", tmp_module)
    config.model.gprec.lambda1, config.model.gprec.lambda2, config.model.gprec.lambda3 = 0.7, 0.3, 0.2
    model, data = build(config)
    inputs = batch(data, config)
    emb = model.propagate_batch(inputs, training=False)
    terms = {name: float(m.result()) for name, m in model.gprec.terms.items()}
    want = 0.7 * terms["loss_gprec_g"] - 0.3 * terms["loss_gprec_con"] + 0.2 * terms["loss_gprec_o"]
    assert float(emb["plugin_loss"]) == pytest.approx(want, rel=1e-5)
    # L_G by hand: BPR of f1([r_G(u); e_i]) against f1([r_G(u); e_i-]), initiators then participants
    users = np.concatenate([inputs["initiator"].numpy(), inputs["participant"].numpy()])
    rep = model.gprec.represent(tf.constant(users))
    items = emb["items"].numpy()
    pos, neg = (np.tile(inputs[k].numpy(), 2) for k in ("item", "neg_item"))
    diff = (model.gprec.f1(tf.concat([rep["r_g"], items[pos]], -1))
            - model.gprec.f1(tf.concat([rep["r_g"], items[neg]], -1))).numpy()
    assert terms["loss_gprec_g"] == pytest.approx(float(np.mean(np.log1p(np.exp(-diff)))), rel=1e-5)


def test_the_contrastive_term_leaves_f1_untouched(tmp_module):
    config = gprec_config("mf-bpr", tmp_module)
    model, data = build(config)
    inputs = batch(data, config)
    model.propagate_batch(inputs, training=True)  # builds every layer
    users = tf.constant(np.concatenate([inputs["initiator"].numpy(), inputs["participant"].numpy()]))
    items = model.propagate()["items"]
    pos, neg = (tf.gather(items, tf.tile(inputs[k], [2])) for k in ("item", "neg_item"))
    g = model.gprec
    with tf.GradientTape(persistent=True) as tape:
        rep = g.represent(users, training=True)
        con = (g.f1(tf.concat([rep["r_con"], pos], -1), frozen=True)
               - g.f1(tf.concat([rep["r_con"], neg], -1), frozen=True))
        l_con = tf.reduce_mean(tf.nn.softplus(-con))
    assert all(x is None for x in tape.gradient(l_con, g.f1.trainable_variables))
    grads = tape.gradient(l_con, g.group_embedding.trainable_variables + g.classifier.trainable_variables)
    assert all(x is not None and np.abs(x.numpy()).sum() > 0 for x in grads)


@pytest.mark.parametrize("name, strategy, personal", [
    ("mf-bpr", "input", "own"), ("mf-bpr", "dynamic", "own"), ("mf-bpr", "ensemble", "backbone"),
    ("lightgcn", "input", "backbone"), ("mgbr", "input", "own"),
    pytest.param("mgbr", "ensemble", "own", marks=pytest.mark.slow),
    pytest.param("mamgbr", "dynamic", "backbone", marks=pytest.mark.slow)])
def test_every_strategy_trains_and_scores_each_candidate_on_its_own(name, strategy, personal, tmp_module):
    config = gprec_config(name, tmp_module, strategy)
    config.model.gprec.personal = personal
    model, data = build(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    inputs = batch(data, config, 64)
    first = float(model.compute_loss(inputs, training=False))
    step = tf.function(model.train_step)
    for _ in range(12):
        step(inputs)
    assert float(model.compute_loss(inputs, training=False)) < first - 0.02
    emb = model.propagate()
    u = tf.constant([0, 1, 2, 3])
    c = tf.constant([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
    full = model.score_items(emb, u, c).numpy()
    swapped = model.score_items(emb, u[::-1], c[::-1, ::-1]).numpy()
    np.testing.assert_allclose(swapped[::-1, ::-1], full, rtol=1e-5, atol=1e-6)
    alone = model.score_items(emb, u[2:3], c[2:3, 1:2]).numpy()
    np.testing.assert_allclose(alone[0, 0], full[2, 1], rtol=1e-5, atol=1e-6)
    i = tf.constant([0, 1, 2, 3])
    parts = model.score_participants(emb, u, i, c).numpy()
    np.testing.assert_allclose(model.score_participants(emb, u[::-1], i[::-1], c[::-1, ::-1]).numpy()[::-1, ::-1],
                               parts, rtol=1e-5, atol=1e-6)


def test_evaluation_masks_are_the_training_representation_without_noise(tmp_module):
    config = gprec_config("mf-bpr", tmp_module)
    model, _ = build(config)
    emb = model.propagate()
    users = tf.constant([0, 5, 7])
    rep = model.gprec.represent(users)
    want = model.gprec.transform("users_i", model.users(users), rep)  # MF's own rows, transformed
    np.testing.assert_allclose(tf.gather(emb["users_i"], users).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("personal", ["own", "backbone"])
def test_group_diagnostics_read_the_inference_masks(personal, tmp_module):
    from tfgb.evaluation import groups

    config = gprec_config("mf-bpr", tmp_module)
    config.model.gprec.personal = personal
    model, data = build(config)
    m = groups.assignments(model)
    assert m.shape == (data.num_users, 4)
    found = groups.report(model)
    assert found["occupancy"] == [round(float(x), 4) for x in (m > 0.5).mean(0)]
    assert found["undecided_share"] == round(float(((m > 0.05) & (m < 0.95)).mean()), 4)
    assert 0 <= found["mask_entropy_bits"] <= 1 and found["occupancy_entropy_bits"] <= found["max_entropy_bits"]
    path = groups.heatmap(model, tmp_module / f"cos-{personal}.png")
    assert pathlib.Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_recipe_is_checked(tmp_module):
    config = gprec_config("ngcf", tmp_module)
    with pytest.raises(ConfigError, match="plugs into mgbr, mamgbr, mf-bpr, lightgcn"):
        build(config)
    from tfgb import config as cfg

    for key, value, match in (("model.user_modeling", "grouprec", "model.user_modeling"),
                              ("model.gprec.strategy", "stack", "model.gprec.strategy"),
                              ("model.gprec.tau", "0", "model.gprec.tau"),
                              ("model.gprec.lambda2", "-1", "model.gprec.lambda2")):
        with pytest.raises(ConfigError, match=match):
            cfg.load(None, [f"{key}={value}"])


# -- user features --------------------------------------------------------------------------------

def test_derived_features_come_from_the_training_split_only(tmp_module):
    config = gprec_config("mf-bpr", tmp_module)
    data = prepare(config)
    spec, found = user_features.derive(data)
    assert set(found.columns) == set(user_features.DERIVED)
    deals = np.bincount(data.train.initiator, minlength=data.num_users)
    f_users, _, _ = data.launches("train")
    failed = np.bincount(f_users, minlength=data.num_users)
    # the codes of "deals" order users as their training deal counts do, and bucket 1 is exactly "none"
    codes = found.columns["deals"]
    for a, b in [(a, b) for a in range(0, data.num_users, 7) for b in range(3, data.num_users, 11)]:
        if deals[a] < deals[b]:
            assert codes[a] <= codes[b]
    rate = found.columns["success_rate"]
    assert (rate[(deals + failed) == 0] == 0).all() and (rate[(deals + failed) > 0] > 0).all()
    # held-out groups change nothing: the same training split gives the same codes
    again = user_features.derive(data)[1]
    for c in found.columns:
        np.testing.assert_array_equal(again.columns[c], found.columns[c])
    assert spec.sizes()["deals"] == len(spec.boundaries["deals"]) + 2


def test_a_feature_file_is_read_validated_and_saved(tmp_path):
    config = gprec_config("mf-bpr", tmp_path)
    data = prepare(config)
    ids = data.user_vocab.ids
    rows = [f"{ids[k]},{'ab'[k // 2 % 2]},{k * 1.5}" for k in range(0, len(ids), 2)] + ["stranger,a,3.0"]
    path = tmp_path / "features.csv"
    path.write_text("user,kind,score\n" + "\n".join(rows) + "\n")
    spec, found, report = user_features.read(path, "user", data)
    assert report["unknown_users"] == 1 and report["extra"]["ids"] == ["stranger"]
    assert report["users_found"] == (len(ids) + 1) // 2
    assert "score" in spec.boundaries and spec.values["kind"] == ["a", "b"]
    assert found.columns["kind"][0] == 1 and found.columns["kind"][1] == 0  # user 1 has no row: unknown
    user_features.save(tmp_path / "run", spec, found, report["extra"])
    loaded = user_features.load(tmp_path / "run")
    assert loaded[0] == spec
    for c in found.columns:
        np.testing.assert_array_equal(loaded[1].columns[c], found.columns[c])
    path.write_text("uid,kind\nx,a\n")
    with pytest.raises(DataError, match="no user id column 'user'"):
        user_features.read(path, "user", data)
    path.write_text("user,kind\nx,a\nx,b\n")
    with pytest.raises(DataError, match="more than one row"):
        user_features.read(path, "user", data)
