"""Tests for tfgb.layers.mtl (MultiTaskBlock, Eq. 7-15, its readable path) and tfgb.layers.heads (Eq. 16-17)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb.layers.heads import PredictionHead
from tfgb.layers.mtl import MultiTaskBlock

LayerWeights = dict[str, np.ndarray]


def block_weights(layer: MultiTaskBlock) -> list[LayerWeights]:
    """The block's weights by layer and sub-layer name: [{"expert_a": ..., ...}, ...]."""
    out: list[LayerWeights] = [{} for _ in range(layer.num_layers)]
    for variable in layer.weights:
        match = re.search(r"l(\d+)_(\w+)/kernel:0$", variable.name)
        assert match, variable.name
        out[int(match.group(1)) - 1][match.group(2)] = variable.numpy()
    return out


def set_block_weights(layer: MultiTaskBlock, weights: list[LayerWeights]) -> None:
    for index, stage in enumerate(layer.stages):
        assert set(stage) == set(weights[index]), (sorted(stage), sorted(weights[index]))
        for name, value in weights[index].items():
            stage[name].kernel.assign(np.asarray(value, np.float32))


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
    """K = 1, d = 1, input width 1, L = 2, alpha = 0.5, no softmax; numbers worked out by hand."""
    layer = MultiTaskBlock(dim=1, num_experts=1, num_layers=2, alpha=0.5, gate_softmax=False)
    e_u, e_i, e_p = (tf.constant([[v]]) for v in (1.0, 2.0, 3.0))  # g0 = [1, 2, 3]
    layer(e_u, e_i, e_p)
    col = np.array
    first = {
        # Layer 1, inputs g0 = [1, 2, 3] for every expert and gate.
        "expert_a": col([[1.0], [0.0], [0.0]]),  # E_A = 1
        "expert_b": col([[0.0], [1.0], [0.0]]),  # E_B = 2
        "expert_s": col([[0.0], [0.0], [1.0]]),  # E_S = 3
        "gate_a": col([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]),  # [1, 3] -> g_A1 = 1*1 + 3*3 = 10
        "gate_b": col([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),  # [2, 0] -> g_B1 = 2*2 = 4
        "gate_s": np.ones((3, 3)),  # [6, 6, 6] over [E_A, E_S, E_B] -> g_S = 6 * 6 = 36
        "gate_a_ui": col([[1.0], [0.0]]),  # (1, 2) -> 1, times E_A = 1
        "gate_a_ip": col([[0.0], [1.0]]),  # (2, 3) -> 3, times E_S = 9
        "gate_a_up": col([[1.0], [1.0]]),  # (1, 3) -> 4, times E_S = 12; g_A2 = 22
        "gate_b_ui": col([[0.0], [1.0]]),  # (1, 2) -> 2, times E_S = 6
        "gate_b_ip": col([[1.0], [0.0]]),  # (2, 3) -> 2, times E_B = 4
        "gate_b_up": col([[0.0], [0.0]]),  # 0; g_B2 = 10
        # => g_A = 10 + 0.5 * 22 = 21, g_B = 4 + 0.5 * 10 = 9, g_S = 36.
    }
    second = {
        # Layer 2: in_A = [g_A, g_S] = [21, 36], in_B = [9, 36], in_S = [21, 36, 9].
        "expert_a": col([[1.0], [0.0]]),  # E_A = 21
        "expert_b": col([[0.0], [1.0]]),  # E_B = 36
        "expert_s": col([[0.0], [0.0], [1.0]]),  # E_S = 9
        "gate_a": col([[0.1, 0.0], [0.0, 0.0]]),  # [2.1, 0] -> g_A1 = 2.1 * 21 = 44.1
        "gate_b": col([[0.0, 0.0], [0.0, 0.5]]),  # [0, 18] -> g_B1 = 18 * 9 = 162
        **{f"gate_{task}_{pair}": np.zeros((2, 1)) for task in "ab" for pair in ("ui", "ip", "up")},
    }
    set_block_weights(layer, [first, second])
    out = layer(e_u, e_i, e_p)
    np.testing.assert_allclose(out["a"].numpy(), [[44.1]], rtol=1e-6)
    np.testing.assert_allclose(out["b"].numpy(), [[162.0]], rtol=1e-6)
    single = MultiTaskBlock(dim=1, num_experts=1, num_layers=1, alpha=0.5, gate_softmax=False)
    single(e_u, e_i, e_p)
    set_block_weights(single, [{name: w for name, w in first.items() if name != "gate_s"}])  # no gate S at layer L
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


@pytest.mark.parametrize("shared", [True, False])
def test_one_task_is_that_task_of_both(shared: bool) -> None:
    layer = MultiTaskBlock(dim=4, num_experts=3, num_layers=2, alpha=0.1, shared=shared)
    inputs = random_inputs(5, 8, seed=9)
    both = layer(*inputs)
    for task in ("a", "b"):
        alone = layer(*inputs, tasks=(task,))
        assert set(alone) == {task}
        np.testing.assert_allclose(alone[task].numpy(), both[task].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="subset"):
        layer(*inputs, tasks=("c",))


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
    layer = MultiTaskBlock(dim=4, num_experts=2, num_layers=2, alpha=0.3, shared=False, gate_softmax=False, name="mtl")
    inputs = random_inputs(5, 8, seed=5)
    out = layer(*inputs)
    clone = MultiTaskBlock.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and not clone.gate_softmax
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


@pytest.mark.parametrize("hidden", [[5], [5, 3], []])
def test_head_from_first_product_equals_the_head(hidden: list[int]) -> None:
    head = PredictionHead(hidden)
    x = tf.constant(np.random.default_rng(11).normal(size=(6, 4)), tf.float32)
    want = head(x).numpy()
    np.testing.assert_allclose(head.from_first_product(x @ head.first_kernel).numpy(), want, rtol=1e-5, atol=1e-6)
