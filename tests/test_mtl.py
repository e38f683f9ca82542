"""Tests for tfgb.layers.mtl: MultiTaskBlock (Eq. 7-15) and PredictionHead (Eq. 16-17)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb.layers.mtl import (
    MultiTaskBlock,
    PredictionHead,
    Rows,
    Segments,
    mixture,
    mixtures,
)

LayerWeights = dict[str, np.ndarray]


def block_weights(layer: MultiTaskBlock) -> list[LayerWeights]:
    """The block's weights by layer and name: [{"expert_a": ..., ...}, ...]."""
    out: list[LayerWeights] = [{} for _ in range(layer.num_layers)]
    for variable in layer.weights:
        match = re.search(r"l(\d+)_(\w+):0$", variable.name)
        assert match, variable.name
        out[int(match.group(1)) - 1][match.group(2)] = variable.numpy()
    return out


def reference(
    e_u: np.ndarray,
    e_i: np.ndarray,
    e_p: np.ndarray,
    weights: list[LayerWeights],
    k: int,
    d: int,
    alpha: float,
    shared: bool,
    softmax: bool = True,
) -> dict[str, np.ndarray]:
    """Eq. 7-15 written out expert by expert and gate by gate, in float64."""
    e_u, e_i, e_p = (x.astype(np.float64) for x in (e_u, e_i, e_p))
    g0 = np.hstack([e_u, e_i, e_p])
    ui, ip, up = np.hstack([e_u, e_i]), np.hstack([e_i, e_p]), np.hstack([e_u, e_p])
    g_a = g_b = g_s = g0

    def experts(inputs: np.ndarray, kernel: np.ndarray) -> list[np.ndarray]:
        return [inputs @ kernel[:, j * d:(j + 1) * d] for j in range(k)]  # Eq. 7-9

    def mix(gate: np.ndarray, stacked: list[np.ndarray]) -> np.ndarray:
        if softmax:  # attention weights over the experts the gate mixes
            gate = np.exp(gate - gate.max(axis=1, keepdims=True))
            gate = gate / gate.sum(axis=1, keepdims=True)
        return sum(gate[:, [j]] * e for j, e in enumerate(stacked))

    for layer, w in enumerate(weights):
        if layer == 0:
            in_a = in_b = in_s = g0
        elif shared:
            in_a, in_b = np.hstack([g_a, g_s]), np.hstack([g_b, g_s])
            in_s = np.hstack([g_a, g_s, g_b])
        else:
            in_a, in_b = g_a, g_b
        big_a, big_b = experts(in_a, w["expert_a"]), experts(in_b, w["expert_b"])
        if shared:
            big_s = experts(in_s, w["expert_s"])
            g_a1 = mix(in_a @ w["gate_a"], big_a + big_s)  # Eq. 10
            g_b1 = mix(in_b @ w["gate_b"], big_b + big_s)
            # Eq. 14; the last layer has no gate S (g^L_S is no output).
            g_s_new = mix(in_s @ w["gate_s"], big_a + big_s + big_b) if "gate_s" in w else None
            other_a, other_b = big_s, big_s
        else:
            g_a1 = mix(in_a @ w["gate_a"], big_a)
            g_b1 = mix(in_b @ w["gate_b"], big_b)
            g_s_new = None
            other_a, other_b = big_a, big_b
        if alpha:
            g_a2 = (
                mix(ui @ w["gate_a_ui"], big_a)
                + mix(ip @ w["gate_a_ip"], other_a)
                + mix(up @ w["gate_a_up"], other_a)
            )  # Eq. 11
            g_b2 = (
                mix(ui @ w["gate_b_ui"], other_b)
                + mix(ip @ w["gate_b_ip"], big_b)
                + mix(up @ w["gate_b_up"], big_b)
            )  # Eq. 13
        else:
            g_a2 = g_b2 = 0.0
        g_a, g_b, g_s = g_a1 + alpha * g_a2, g_b1 + alpha * g_b2, g_s_new  # Eq. 12-13
    return {"a": g_a, "b": g_b}


def random_inputs(n: int, width: int, seed: int) -> list[tf.Tensor]:
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=(n, width)) * 0.5, tf.float32) for _ in range(3)]


def test_hand_checked_rows() -> None:
    """K = 1, d = 1, input width 1, L = 2, alpha = 0.5; numbers worked out by hand."""
    layer = MultiTaskBlock(dim=1, num_experts=1, num_layers=2, alpha=0.5, gate_softmax=False)
    e_u, e_i, e_p = (tf.constant([[v]]) for v in (1.0, 2.0, 3.0))  # g0 = [1, 2, 3]
    layer(e_u, e_i, e_p)
    col = np.array
    layer.set_weights([
        # Layer 1, inputs g0 = [1, 2, 3] for every expert and gate.
        col([[1.0], [0.0], [0.0]]),  # expert_a: E_A = 1
        col([[0.0], [1.0], [0.0]]),  # expert_b: E_B = 2
        col([[0.0], [0.0], [1.0]]),  # expert_s: E_S = 3
        col([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]),  # gate_a: [1, 3] -> g_A1 = 1*1 + 3*3 = 10
        col([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),  # gate_b: [2, 0] -> g_B1 = 2*2 = 4
        np.ones((3, 3)),  # gate_s: [6, 6, 6] over [E_A, E_S, E_B] -> g_S = 6 * 6 = 36
        col([[1.0], [0.0]]),  # gate_a_ui: (1, 2) -> 1, times E_A = 1
        col([[0.0], [1.0]]),  # gate_a_ip: (2, 3) -> 3, times E_S = 9
        col([[1.0], [1.0]]),  # gate_a_up: (1, 3) -> 4, times E_S = 12; g_A2 = 22
        col([[0.0], [1.0]]),  # gate_b_ui: (1, 2) -> 2, times E_S = 6
        col([[1.0], [0.0]]),  # gate_b_ip: (2, 3) -> 2, times E_B = 4
        col([[0.0], [0.0]]),  # gate_b_up: 0; g_B2 = 10
        # => g_A = 10 + 0.5 * 22 = 21, g_B = 4 + 0.5 * 10 = 9, g_S = 36.
        # Layer 2: in_A = [g_A, g_S] = [21, 36], in_B = [9, 36], in_S = [21, 36, 9].
        col([[1.0], [0.0]]),  # expert_a: E_A = 21
        col([[0.0], [1.0]]),  # expert_b: E_B = 36
        col([[0.0], [0.0], [1.0]]),  # expert_s: E_S = 9
        col([[0.1, 0.0], [0.0, 0.0]]),  # gate_a: [2.1, 0] -> g_A1 = 2.1 * 21 = 44.1
        col([[0.0, 0.0], [0.0, 0.5]]),  # gate_b: [0, 18] -> g_B1 = 18 * 9 = 162
        *[np.zeros((2, 1))] * 6,  # no adjusted terms at layer 2
    ])
    out = layer(e_u, e_i, e_p)
    np.testing.assert_allclose(out["a"].numpy(), [[44.1]], rtol=1e-6)
    np.testing.assert_allclose(out["b"].numpy(), [[162.0]], rtol=1e-6)
    single = MultiTaskBlock(dim=1, num_experts=1, num_layers=1, alpha=0.5, gate_softmax=False)
    single(e_u, e_i, e_p)
    first = layer.get_weights()[:12]
    single.set_weights(first[:5] + first[6:])  # no gate S at the last layer
    out = single(e_u, e_i, e_p)
    np.testing.assert_allclose(out["a"].numpy(), [[21.0]], rtol=1e-6)
    np.testing.assert_allclose(out["b"].numpy(), [[9.0]], rtol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("alpha", [0.1, 0.0])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("softmax", [True, False])
def test_matches_expert_by_expert_reference(shared: bool, alpha: float, num_layers: int, softmax: bool) -> None:
    k, d = 3, 4
    layer = MultiTaskBlock(dim=d, num_experts=k, num_layers=num_layers, alpha=alpha, shared=shared,
                           gate_softmax=softmax)
    inputs = random_inputs(7, 2 * d, seed=0)
    out = layer(*inputs)
    assert set(out) == {"a", "b"}
    assert out["a"].shape == (7, d) and out["b"].shape == (7, d)
    expected = reference(*(x.numpy() for x in inputs), block_weights(layer), k, d, alpha, shared, softmax)
    for key in ("a", "b"):
        np.testing.assert_allclose(out[key].numpy(), expected[key], rtol=1e-4, atol=1e-5)


def test_weight_shapes_per_variant() -> None:
    d, k, w = 4, 3, 8
    inputs = random_inputs(2, w, seed=1)
    full = MultiTaskBlock(dim=d, num_experts=k, num_layers=2, alpha=0.1)
    full(*inputs)
    shapes = block_weights(full)
    assert shapes[0]["expert_a"].shape == (3 * w, k * d)
    assert shapes[0]["expert_s"].shape == (3 * w, k * d)
    assert shapes[0]["gate_s"].shape == (3 * w, 3 * k)
    assert "gate_s" not in shapes[1]
    assert shapes[1]["expert_a"].shape == (2 * d, k * d)
    assert shapes[1]["expert_s"].shape == (3 * d, k * d)
    assert shapes[1]["gate_a"].shape == (2 * d, 2 * k)
    assert shapes[1]["gate_a_ui"].shape == (2 * w, k)
    assert len(full.weights) == 12 + 11
    generic = MultiTaskBlock(dim=d, num_experts=k, num_layers=2, alpha=0.0)
    generic(*inputs)
    assert len(generic.weights) == 6 + 5
    unshared = MultiTaskBlock(dim=d, num_experts=k, num_layers=2, alpha=0.1, shared=False)
    unshared(*inputs)
    names = set(block_weights(unshared)[1])
    assert not any(name.endswith("_s") for name in names)
    assert block_weights(unshared)[1]["gate_a"].shape == (d, k)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("alpha", [0.1, 0.0])
def test_every_weight_gets_a_gradient(shared: bool, alpha: float) -> None:
    layer = MultiTaskBlock(dim=3, num_experts=2, num_layers=2, alpha=alpha, shared=shared)
    inputs = random_inputs(4, 6, seed=8)
    with tf.GradientTape() as tape:
        out = layer(*inputs)
        loss = tf.reduce_sum(out["a"]) + tf.reduce_sum(out["b"])
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None for g in grads)


def test_rows_are_independent() -> None:
    layer = MultiTaskBlock(dim=4, num_experts=3, num_layers=2, alpha=0.1)
    inputs = random_inputs(9, 8, seed=2)
    out = layer(*inputs)
    perm = np.random.default_rng(3).permutation(9)
    permuted = layer(*(tf.gather(x, perm) for x in inputs))
    for key in ("a", "b"):
        np.testing.assert_allclose(permuted[key].numpy(), out[key].numpy()[perm], atol=1e-6)
    changed = [tf.concat([x[:1], y[1:]], axis=0) for x, y in zip(inputs, random_inputs(9, 8, 4))]
    out_changed = layer(*changed)
    for key in ("a", "b"):
        np.testing.assert_allclose(out_changed[key].numpy()[0], out[key].numpy()[0], atol=1e-6)


def test_width_mismatch_is_reported() -> None:
    layer = MultiTaskBlock(dim=2, num_experts=2, num_layers=1)
    with pytest.raises(ValueError, match="e_p"):
        layer(tf.ones([3, 4]), tf.ones([3, 4]), tf.ones([3, 5]))


def test_block_config_round_trip() -> None:
    layer = MultiTaskBlock(dim=4, num_experts=2, num_layers=2, alpha=0.3, shared=False, name="mtl")
    inputs = random_inputs(5, 8, seed=5)
    out = layer(*inputs)
    clone = MultiTaskBlock.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    out_clone = tf.function(clone)(*inputs)
    for key in ("a", "b"):
        np.testing.assert_allclose(out_clone[key].numpy(), out[key].numpy(), atol=1e-6)


def test_prediction_head_matches_numpy_mlp() -> None:
    head = PredictionHead(hidden_units=[5, 3])
    x = random_inputs(6, 4, seed=6)[0]
    logits = head(x)
    assert logits.shape == (6,)
    w1, b1, w2, b2, w3, b3 = head.get_weights()
    h = np.maximum(x.numpy() @ w1 + b1, 0.0)
    h = np.maximum(h @ w2 + b2, 0.0)
    np.testing.assert_allclose(logits.numpy(), (h @ w3 + b3)[:, 0], atol=1e-5)
    # Candidate lists [B, C, d] give logits [B, C].
    assert head(tf.reshape(tf.tile(x, [2, 1]), [3, 4, 4])).shape == (3, 4)


def test_prediction_head_config_round_trip() -> None:
    head = PredictionHead(hidden_units=[4], name="head_a")
    x = random_inputs(3, 6, seed=7)[0]
    out = head(x)
    clone = PredictionHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    clone(x)
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), out.numpy(), atol=1e-6)
    linear = PredictionHead()
    assert linear(x).shape == (3,)
    assert len(linear.get_weights()) == 2


@pytest.mark.parametrize("shared", [True, False])
def test_rows_by_reference_equal_dense_rows(shared: bool) -> None:
    """Rows(table, index) inputs (each entity projected once) give the dense result."""
    rng = np.random.default_rng(5)
    tables = [tf.constant(rng.normal(size=(m, 8)), tf.float32) for m in (3, 5, 4)]
    index = [tf.constant(rng.integers(0, t.shape[0], 11)) for t in tables]
    by_ref = MultiTaskBlock(dim=4, num_experts=3, num_layers=2, alpha=0.2, shared=shared)
    out_ref = by_ref(*(Rows(t, i) for t, i in zip(tables, index)))
    dense = by_ref(*(tf.gather(t, i) for t, i in zip(tables, index)))
    for key in ("a", "b"):
        np.testing.assert_allclose(out_ref[key].numpy(), dense[key].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared, alpha, num_layers, as_rows", [
    (True, 0.2, 2, True), (True, 0.2, 1, True), (False, 0.2, 2, True), (True, 0.0, 2, False), (False, 0.0, 1, False)])
def test_row_ranges_give_the_same_rows_as_a_full_call(shared: bool, alpha: float, num_layers: int,
                                                      as_rows: bool) -> None:
    """a_until / b_from skip task A's last layer beyond a_until and task B's before b_from, nothing else."""
    rng = np.random.default_rng(6)
    tables = [tf.constant(rng.normal(size=(m, 8)), tf.float32) for m in (3, 5, 4)]
    index = [tf.constant(rng.integers(0, t.shape[0], 13)) for t in tables]
    inputs = [Rows(t, i) if as_rows else tf.gather(t, i) for t, i in zip(tables, index)]
    block = MultiTaskBlock(dim=4, num_experts=3, num_layers=num_layers, alpha=alpha, shared=shared)
    full = block(*inputs)
    part = block(*inputs, a_until=9, b_from=tf.constant(5))
    assert part["a"].shape == (9, 4) and part["b"].shape == (8, 4)
    np.testing.assert_allclose(part["a"].numpy(), full["a"].numpy()[:9], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part["b"].numpy(), full["b"].numpy()[5:], rtol=1e-5, atol=1e-6)


def test_zero_init_head_scores_every_row_alike_then_learns() -> None:
    head = PredictionHead([8], zero_init=True)
    x = tf.constant(np.random.default_rng(7).normal(size=(5, 4)), tf.float32)
    out = head(x)
    np.testing.assert_array_equal(out.numpy(), np.zeros(5, np.float32))
    assert PredictionHead.from_config(head.get_config()).zero_init
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(head(x) * tf.range(5, dtype=tf.float32))
    grads = tape.gradient(loss, head.logit.trainable_variables)
    assert float(tf.reduce_sum(tf.abs(grads[0]))) > 0  # the kernel leaves zero at the first step


@pytest.mark.parametrize("shared, alpha, num_layers, hidden", [
    (True, 0.2, 2, 3), (True, 0.2, 2, 6), (False, 0.2, 3, 2), (True, 0.0, 1, 2), (False, 0.0, 2, 1)])
def test_out_kernels_equal_the_product_of_the_outputs(shared: bool, alpha: float, num_layers: int, hidden: int) -> None:
    """out_kernels H gives g^L H, folded into the last experts (h < d) or multiplied after (h >= d, L = 1)."""
    rng = np.random.default_rng(8)
    tables = [tf.constant(rng.normal(size=(m, 8)), tf.float32) for m in (3, 5, 4)]
    index = [tf.constant(rng.integers(0, t.shape[0], 13)) for t in tables]
    inputs = [Rows(t, i) for t, i in zip(tables, index)]
    block = MultiTaskBlock(dim=4, num_experts=3, num_layers=num_layers, alpha=alpha, shared=shared)
    kernels = {task: tf.constant(rng.normal(size=(4, hidden)), tf.float32) for task in "ab"}
    for ranges in ({}, {"a_until": 9, "b_from": 5}, {"a_until": tf.constant(7), "b_from": tf.constant(7)}):
        plain = block(*inputs, **ranges)
        fused = block(*inputs, **ranges, out_kernels=kernels)
        for task in "ab":
            assert fused[task].shape == (plain[task].shape[0], hidden)
            np.testing.assert_allclose(fused[task].numpy(), (plain[task] @ kernels[task]).numpy(), rtol=1e-5, atol=1e-5)


def test_out_kernels_fold_into_the_last_experts_and_keep_gradients() -> None:
    """With h < d the block's gradients equal those of the unfused product (same loss, same weights)."""
    rng = np.random.default_rng(9)
    inputs = random_inputs(11, 8, seed=3)
    block = MultiTaskBlock(dim=4, num_experts=3, num_layers=2, alpha=0.1)
    block(*inputs)
    kernels = {task: tf.Variable(rng.normal(size=(4, 2)).astype(np.float32)) for task in "ab"}
    grads = []
    for fused in (False, True):
        with tf.GradientTape() as tape:
            if fused:
                out = block(*inputs, a_until=8, b_from=3, out_kernels=kernels)
            else:
                g = block(*inputs, a_until=8, b_from=3)
                out = {task: g[task] @ kernels[task] for task in "ab"}
            loss = tf.reduce_sum(tf.sin(out["a"])) + tf.reduce_sum(tf.cos(out["b"]))
        grads.append(tape.gradient(loss, block.trainable_variables + list(kernels.values())))
    for plain, fused in zip(*grads):
        np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-4, atol=1e-5)


def test_task_b_rows_must_not_start_after_task_a_rows_end() -> None:
    block = MultiTaskBlock(dim=4, num_experts=3, num_layers=2)
    with pytest.raises(ValueError, match="b_from"):
        block(*random_inputs(6, 8, seed=4), a_until=2, b_from=4)


def test_mixture_adds_the_weights_of_each_group_once() -> None:
    """mixture() over gates that share groups equals the sum of every gate mixed on its own."""
    rng = np.random.default_rng(10)
    e1, e2 = (tf.constant(rng.normal(size=(5, 3, 4)), tf.float32) for _ in range(2))
    w12, w1, w2 = (tf.constant(rng.normal(size=(5, c)), tf.float32) for c in (6, 3, 3))
    got = mixture([(1.0, w12, [e1, e2]), (0.5, w1, [e1]), (0.25, w2, [e2])])

    def mixed(w, e):
        return np.einsum("nk,nkd->nd", w.numpy(), e.numpy())

    want = mixed(w12[:, :3], e1) + mixed(w12[:, 3:], e2) + 0.5 * mixed(w1, e1) + 0.25 * mixed(w2, e2)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # Groups given as row segments mix to the same rows.
    seg = [Segments((e[:2], e[2:])) for e in (e1, e2)]
    got_seg = mixture([(1.0, w12, seg), (0.5, w1, [seg[0]]), (0.25, w2, [seg[1]])])
    np.testing.assert_allclose(got_seg.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", [[5], [5, 3], []])
def test_head_from_first_product_equals_the_head(hidden: list[int]) -> None:
    head = PredictionHead(hidden)
    x = tf.constant(np.random.default_rng(11).normal(size=(6, 4)), tf.float32)
    want = head(x).numpy()
    np.testing.assert_allclose(head.from_first_product(x @ head.first_kernel).numpy(), want, rtol=1e-5, atol=1e-6)


def test_mixtures_read_a_shared_group_once_and_equal_separate_mixtures() -> None:
    rng = np.random.default_rng(12)
    e1, e2 = (tf.constant(rng.normal(size=(7, 3, 4)), tf.float32) for _ in range(2))
    wa, wb, ws = (tf.constant(rng.normal(size=(7, c)), tf.float32) for c in (6, 6, 3))
    outputs = {"a": [(1.0, wa, [e1, e2]), (0.1, ws, [e2])], "b": [(1.0, wb, [e2, e1])], "s": [(1.0, ws, [e1])]}
    together = mixtures(outputs)
    assert set(together) == {"a", "b", "s"}
    for name, terms in outputs.items():
        np.testing.assert_allclose(together[name].numpy(), mixture(terms).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared, alpha, num_layers", [(True, 0.2, 2), (False, 0.2, 1), (True, 0.0, 3)])
def test_tiled_parts_equal_their_rows(shared: bool, alpha: float, num_layers: int) -> None:
    """Tiled blocks (parts repeated over a list's rows, others per row) give the rows' result."""
    from tfgb.layers.mtl import Tiled, to_rows

    rng = np.random.default_rng(13)
    tables = [tf.constant(rng.normal(size=(m, 8)), tf.float32) for m in (4, 6, 5)]

    def idx(table, n):
        return tf.constant(rng.integers(0, table.shape[0], n), tf.int32)

    # Block 0: 3 plain rows; block 1: 2 lists x 4 rows, u and i repeated, p per row;
    # block 2: 2 lists x 4, only u repeated; block 3: 2 rows all repeated x1 (plain).
    plan = [((3, 1), (3, 1), (3, 1)), ((2, 4), (2, 4), (8, 1)), ((2, 4), (8, 1), (8, 1)), ((2, 1), (2, 1), (2, 1))]
    parts = [Tiled(t, tuple((idx(t, n), r) for n, r in (block[j] for block in plan))) for j, t in enumerate(tables)]
    block = MultiTaskBlock(dim=4, num_experts=3, num_layers=num_layers, alpha=alpha, shared=shared)
    got = block(*parts, a_until=15, b_from=6)
    want = block(*(to_rows(x) for x in parts), a_until=15, b_from=6)
    dense = block(*(tf.gather(r.table, r.index) for r in (to_rows(x) for x in parts)), a_until=15, b_from=6)
    for key in ("a", "b"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[key].numpy(), dense[key].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Tiled"):
        block(parts[0], to_rows(parts[1]), parts[2])
