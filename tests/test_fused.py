"""The fused path (tfgb.layers.fused) equals the readable block, on the block and through the models.

Block level: dense rows, Rows and Tiled, task row ranges, head kernels folded or multiplied, gradients.
Model level: MGBR's and MAMGBR's loss and its gradient with respect to every trainable variable on a
real batch, and their candidate scores, by both paths of one model (same weights).
"""
from __future__ import annotations

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb import models
from tfgb.config import load
from tfgb.data.prepare import prepare
from tfgb.layers import fused
from tfgb.layers.attention import MultiHeadTaskBlock
from tfgb.layers.batch_rows import TrainingRows
from tfgb.layers.layout import Tiled, materialize, to_rows
from tfgb.layers.mtl import MultiTaskBlock

D, K, W = 4, 3, 8
# Tiled blocks: 3 plain rows; 2 lists x 4 rows with u and i repeated; 2 lists x 4 with u repeated; 2 plain rows.
PLAN = [((3, 1), (3, 1), (3, 1)), ((2, 4), (2, 4), (8, 1)), ((2, 4), (8, 1), (8, 1)), ((2, 1), (2, 1), (2, 1))]
N = 21


def make_block(kind: str, shared: bool, alpha: float, layers: int):
    if kind == "mgbr":
        return MultiTaskBlock(D, K, layers, alpha=alpha, shared=shared)
    return MultiHeadTaskBlock(D, K, layers, num_heads=2, alpha=alpha, shared=shared, dropout=0.0)


def tiled_parts(seed: int, dtype: tf.DType = tf.float32) -> list[Tiled]:
    rng = np.random.default_rng(seed)
    tables = [tf.constant(rng.normal(size=(m, W)), dtype) for m in (4, 6, 5)]
    return [Tiled(t, tuple((tf.constant(rng.integers(0, t.shape[0], n), tf.int32), r) for n, r in (b[j] for b in PLAN)))
            for j, t in enumerate(tables)]


def layouts(parts: list[Tiled]) -> dict[str, list]:
    rows = [to_rows(x) for x in parts]
    return {"dense": [materialize(x) for x in rows], "rows": rows, "tiled": parts}


CASES = [("mgbr", True, 0.2, 2), ("mgbr", False, 0.2, 2), ("mgbr", True, 0.0, 1), ("mgbr", True, 0.1, 3),
         ("mamgbr", True, 0.2, 2), ("mamgbr", False, 0.0, 2)]
RANGES = [("a", "b", None, None), ("a", "b", 15, 6), ("a", "b", tf.constant(12), tf.constant(12)),
          ("a", None, 10, None), ("b", None, None, 4)]


@pytest.mark.parametrize("kind, shared, alpha, layers", CASES)
@pytest.mark.parametrize("training", [False, True])
def test_fused_outputs_equal_the_readable_block(kind, shared, alpha, layers, training) -> None:
    block = make_block(kind, shared, alpha, layers)
    inputs = layouts(tiled_parts(seed=1))
    full = block(*inputs["dense"], training=training)
    kernels = {h: {task: tf.constant(np.random.default_rng(h).normal(size=(D, h)), tf.float32) for task in "ab"}
               for h in (2, 6)}  # h < d: folded into the last experts (linear experts, L > 1); h > d: after
    for task_a, task_b, a_until, b_from in RANGES:
        tasks = tuple(t for t in (task_a, task_b) if t)
        want = {"a": full["a"][:a_until], "b": full["b"][b_from:]}
        for name, parts in inputs.items():
            got = fused.run(block, *parts, training=training, tasks=tasks, a_until=a_until, b_from=b_from)
            assert set(got) == set(tasks)
            for task in tasks:
                np.testing.assert_allclose(got[task].numpy(), want[task].numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
        for h, out_kernels in kernels.items():
            got = fused.run(block, *inputs["tiled"], training=training, tasks=tasks, a_until=a_until, b_from=b_from,
                            out_kernels=out_kernels)
            for task in tasks:
                np.testing.assert_allclose(got[task].numpy(), (want[task] @ out_kernels[task]).numpy(), rtol=1e-5,
                                           atol=1e-5, err_msg=f"h={h}")


@pytest.fixture
def float64():
    """Layers built inside take float64 weights: the two paths sum in different orders, and gradient entries
    that cancel to ~1e-5 from terms of ~20 differ by float32 rounding alone (seen on CI). In float64 the paths
    must agree to 1e-10, which a wrong gradient cannot."""
    before = tf.keras.backend.floatx()
    tf.keras.backend.set_floatx("float64")
    yield tf.float64
    tf.keras.backend.set_floatx(before)


@pytest.mark.parametrize("kind, shared, alpha, layers", [("mgbr", True, 0.1, 2), ("mgbr", False, 0.1, 2),
                                                         ("mamgbr", True, 0.1, 2)])
def test_fused_gradients_equal_the_readable_block(kind, shared, alpha, layers, float64) -> None:
    """With task rows, head kernels folded (h < d) and Tiled inputs: the same gradients, tables included."""
    block = make_block(kind, shared, alpha, layers)
    parts = tiled_parts(seed=2, dtype=float64)
    tables = [x.table for x in parts]
    block(*[materialize(to_rows(x)) for x in parts])
    assert all(v.dtype == tf.float64 for v in block.trainable_variables)
    rng = np.random.default_rng(3)
    kernels = {task: tf.Variable(rng.normal(size=(D, 2))) for task in "ab"}
    variables = block.trainable_variables + list(kernels.values())
    grads = []
    for path in ("readable", "fused"):
        with tf.GradientTape() as tape:
            tape.watch(tables)
            if path == "fused":
                out = fused.run(block, *parts, training=True, a_until=15, b_from=6, out_kernels=kernels)
            else:
                g = block(*[materialize(to_rows(x)) for x in parts], training=True)
                out = {"a": g["a"][:15] @ kernels["a"], "b": g["b"][6:] @ kernels["b"]}
            loss = tf.reduce_sum(tf.sin(out["a"])) + tf.reduce_sum(tf.cos(out["b"]))
        grads.append([tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables + tables)])
    for readable, fast in zip(*grads):
        np.testing.assert_allclose(fast, readable, rtol=1e-10, atol=1e-10)


def test_bad_inputs_are_reported() -> None:
    block = make_block("mgbr", True, 0.1, 2)
    parts = tiled_parts(seed=4)
    with pytest.raises(ValueError, match="b_from"):
        fused.run(block, *parts, a_until=2, b_from=4)
    with pytest.raises(ValueError, match="Tiled"):
        fused.run(block, parts[0], to_rows(parts[1]), parts[2])
    with pytest.raises(ValueError, match="e_p has width"):
        fused.run(block, *[materialize(to_rows(x)) for x in parts[:2]], tf.ones([N, W + 1]))


def test_mixtures_add_the_weights_of_each_group_and_read_shared_groups_once() -> None:
    rng = np.random.default_rng(10)
    groups = {key: tf.constant(rng.normal(size=(5, 3, 4)), tf.float32) for key in ("e1", "e2")}
    w12, w1, w2 = (tf.constant(rng.normal(size=(5, c)), tf.float32) for c in (6, 3, 3))
    got = fused.mixtures({"x": [(1.0, w12, ["e1", "e2"]), (0.5, w1, ["e1"])], "y": [(0.25, w2, ["e2"])]}, groups)

    def mixed(w, key):
        return np.einsum("nk,nkd->nd", w.numpy(), groups[key].numpy())

    np.testing.assert_allclose(got["x"].numpy(), mixed(w12[:, :3], "e1") + mixed(w12[:, 3:], "e2")
                               + 0.5 * mixed(w1, "e1"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["y"].numpy(), 0.25 * mixed(w2, "e2"), rtol=1e-5, atol=1e-6)


def test_training_rows_lay_out_every_segment() -> None:
    """Each segment's rows refer to the (u, i, p) the loss needs, and each task's rows are contiguous."""
    rng = np.random.default_rng(5)
    b, t, users, items = 3, 2, 7, 6
    batch = {key: tf.constant(rng.integers(0, n, b), tf.int32) for key, n in
             (("initiator", users), ("item", items), ("participant", users), ("neg_item", items),
              ("neg_participant", users))}
    batch["aux_items"] = tf.constant(rng.integers(0, items, (b, t)), tf.int32)
    batch["aux_participants"] = tf.constant(rng.integers(0, users, (b, t)), tf.int32)
    rows = TrainingRows(batch, aux=True)
    assert int(rows.a_until) == b * (2 + 2 * t) and int(rows.b_from) == b * (2 + t)
    # Embeddings that spell their id: user u -> [u, 0], item i -> [0, i], the mean participant -> [-1, -1].
    e_u = tf.stack([tf.cast(batch["initiator"], tf.float32), tf.zeros([b])], 1)
    e_i = tf.stack([tf.zeros_like(rows.item_ids, tf.float32), tf.cast(rows.item_ids, tf.float32)], 1)
    e_p = tf.stack([tf.cast(rows.participant_ids, tf.float32), tf.zeros_like(rows.participant_ids, tf.float32)], 1)
    e_p = tf.concat([[[-1.0, -1.0]], e_p[1:]], 0)
    got = [materialize(x).numpy() for x in rows.parts(e_u, e_i, e_p)]
    u, i, p, neg_i, neg_p = (batch[k].numpy() for k in ("initiator", "item", "participant", "neg_item",
                                                           "neg_participant"))
    aux_i, aux_p = batch["aux_items"].numpy().reshape(-1), batch["aux_participants"].numpy().reshape(-1)
    rep = np.repeat(np.arange(b), t)
    mean = np.full(b, -1)
    want_u = np.concatenate([u, u, u[rep], u[rep], u, u])
    want_i = np.concatenate([i, neg_i, i[rep], aux_i, i, i])
    want_p = np.concatenate([mean, mean, aux_p, p[rep], p, neg_p])
    np.testing.assert_array_equal(got[0][:, 0], want_u)
    np.testing.assert_array_equal(got[1][:, 1], want_i)
    np.testing.assert_array_equal(got[2][:, 0], want_p)
    split = rows.split(tf.range(int(rows.a_until)), "a")
    assert [split[s].shape for s in ("a_pos", "a_neg", "tp", "ti")] == [(b,), (b,), (b, t), (b, t)]
    np.testing.assert_array_equal(split["ti"].numpy().reshape(-1), np.arange(2 * b + b * t, 2 * b + 2 * b * t))
    plain = TrainingRows(batch, aux=False)
    assert int(plain.a_until) == int(plain.b_from) == 2 * b


# -- through the models ----------------------------------------------------------------------------------
SMALL = ["data.synth.groups=1500", "data.synth.users=600", "data.synth.items=150", "train.batch_size=64",
         "train.aux_size=5", "model.mgbr.embedding_dim=8", "model.mgbr.num_experts=3",
         "model.mamgbr.embedding_dim=8", "model.mamgbr.num_experts=2", "model.mamgbr.heads=2",
         "model.mamgbr.mlp_hidden=[4]", "model.mamgbr.dropout=0.0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = load(None, SMALL + [f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])
    prepared = prepare(config)
    return prepared, next(iter(prepared.training_dataset(config.train, epoch=0)))


def build(data, name: str, *sets: str):
    prepared, batch = data
    config = models.resolve(load(None, SMALL + [f"model.name={name}", f"data.cache_dir={prepared.cache_path}", *sets]))
    tf.keras.utils.set_random_seed(3)
    model = models.build_for(config, prepared)
    model.compute_loss(batch, training=False)  # builds every variable
    if model.use_bias:  # zeros at the start: make them matter
        rng = np.random.default_rng(4)
        for var in (model.item_bias, model.participant_bias):
            var.assign(rng.normal(size=var.shape).astype(np.float32))
    return model


def loss_and_gradients(model, batch, training: bool) -> tuple[float, list]:
    if training:  # the training step's own function (block chunks included); traced when the model chunks
        step = tf.function(model.loss_and_gradients) if model.block_chunk else model.loss_and_gradients
        loss, _, grads = step(batch)
    else:
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=False)
        grads = tape.gradient(loss, model.trainable_variables)
    return float(loss), [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]


def assert_paths_agree(model, batch, training: bool) -> None:
    loss, grads = loss_and_gradients(model, batch, training)
    with model.readable_block():
        want_loss, want = loss_and_gradients(model, batch, training)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    scale = max(np.abs(w).max() for w in want if w is not None)
    assert len(grads) == len(want) == len(model.trainable_variables)
    trained = 0
    for var, got, w in zip(model.trainable_variables, grads, want):
        assert (got is None) == (w is None), var.name
        if w is not None:
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5 * scale, err_msg=var.name)
            trained += var.name.startswith("mtl") and np.abs(w).max() > 1e-3 * scale
    assert trained >= 4  # the block's weights are trained by this batch


@pytest.mark.parametrize("name, sets", [
    ("mgbr", ()), ("mgbr", ("model.mgbr.mlp_hidden=[4]",)), ("mgbr-m", ("model.mgbr.mlp_hidden=[4]",)),
    ("mgbr-g", ()), ("mgbr-r", ()), ("mgbr", ("model.mgbr.bias=true",)), ("mgbr", ("model.mgbr.mtl_layers=1",)),
    ("mgbr", ("model.mgbr.gate_softmax=false", "model.mgbr.mlp_hidden=[4]")),
    ("mgbr", ("train.block_chunk=20", "model.mgbr.mlp_hidden=[4]", "model.mgbr.bias=true"))])
def test_mgbr_loss_and_gradients_by_both_paths(data, name, sets) -> None:
    assert_paths_agree(build(data, name, *sets), data[1], training=True)


@pytest.mark.parametrize("name", ["mamgbr", "mamgbr-m", "mamgbr-mh"])
@pytest.mark.parametrize("training", [False, True])
def test_mamgbr_loss_and_gradients_by_both_paths(data, name, training) -> None:
    """Inference mode (moving statistics), and training mode on the same batch (batch statistics, no dropout)."""
    assert_paths_agree(build(data, name), data[1], training=training)


@pytest.mark.parametrize("name, sets", [("mgbr", ("model.mgbr.bias=true",)), ("mgbr-m", ("model.mgbr.mlp_hidden=[4]",)),
                                        ("mamgbr", ()), ("mamgbr-m", ())])
def test_candidate_scores_by_both_paths(data, name, sets) -> None:
    model = build(data, name, *sets)
    emb = model.propagate(training=False)
    rng = np.random.default_rng(6)
    u, i = (tf.constant(rng.integers(0, n, 6), tf.int32) for n in (model.num_users, model.num_items))
    items = tf.constant(rng.integers(0, model.num_items, (6, 9)), tf.int32)
    users = tf.constant(rng.integers(0, model.num_users, (6, 9)), tf.int32)
    spec = tf.TensorSpec([None, None], tf.int32)  # a dynamic list length: Rows instead of Tiled

    def scores():
        dynamic_a = tf.function(lambda c: model.score_items(emb, u, c), input_signature=[spec])
        dynamic_b = tf.function(lambda c: model.score_participants(emb, u, i, c), input_signature=[spec])
        return [model.score_items(emb, u, items), model.score_participants(emb, u, i, users),
                dynamic_a(items), dynamic_b(users)]

    got = scores()
    with model.readable_block():
        want = scores()
    for g, w in zip(got, want):
        assert np.unique(w.numpy().round(5)).size > 20  # not a constant scorer
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5 * np.abs(w.numpy()).max())
