"""Tests for tfgb.layers.attention: MAMGBR's attention experts, softmax gates and multi-task block."""
from __future__ import annotations

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb.layers.attention import AttentionExperts, MultiHeadTaskBlock, SoftmaxGate

N, W, D = 6, 8, 4


def inputs(n: int = N, width: int = W, seed: int = 0) -> list[tf.Tensor]:
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=(n, width)), tf.float32) for _ in range(3)]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def experts_reference(x: np.ndarray, layer: AttentionExperts) -> np.ndarray:
    """Sec. 3.4-3.5 of MAMGBR expert by expert and head by head, inference mode, float64."""
    w = {v.name.split("/")[-1].split(":")[0]: v.numpy().astype(np.float64) for v in layer.weights}
    n = x.shape[0]
    outputs = []
    for k in range(layer.num_experts):
        if layer.attention:
            heads = []
            for h in range(layer.num_heads):
                q = x @ w["query"][k, :, h]  # [N, T, c], Eq. 7
                key = x @ w["key"][k, :, h]
                v = x @ w["value"][k, :, h]
                att = softmax(q @ key.transpose(0, 2, 1) / np.sqrt(layer.head_dim))  # Eq. 8-9
                heads.append(att @ v)  # Eq. 10
            multi = np.concatenate(heads, -1) @ w["output"][k].reshape(-1, layer.width)  # Eq. 11
        else:
            multi = x
        hidden = np.maximum(multi.reshape(n, -1) @ w["ffn_1"][k] + w["ffn_1_bias"][k], 0)  # Eq. 12
        out = np.maximum(hidden @ w["ffn_2"][k] + w["ffn_2_bias"][k], 0)  # Eq. 13 + ReLU
        cols = slice(k * layer.dim, (k + 1) * layer.dim)
        out = (out - w["moving_mean"][cols]) / np.sqrt(w["moving_variance"][cols] + 1e-3)  # Eq. 14
        outputs.append(out * w["gamma"][cols] + w["beta"][cols])
    return np.stack(outputs, 1)


def gate_reference(x: np.ndarray, gate: SoftmaxGate) -> np.ndarray:
    """Eq. 15 of MAMGBR in float64: softmax(ReLU(x W_1 + b_1) W_2 + b_2)."""
    w1, b1, w2, b2 = (v.numpy().astype(np.float64) for v in gate.weights)
    return softmax(np.maximum(x @ w1 + b1, 0) @ w2 + b2)


def block_reference(e_u: np.ndarray, e_i: np.ndarray, e_p: np.ndarray, block: MultiHeadTaskBlock) -> dict:
    """MGBR's wiring (Eq. 7-15 of MGBR) with MAMGBR's experts and gates, written out, inference mode, float64."""
    e_u, e_i, e_p = (x.astype(np.float64) for x in (e_u, e_i, e_p))
    ui, ip, up = np.hstack([e_u, e_i]), np.hstack([e_i, e_p]), np.hstack([e_u, e_p])
    shared, alpha = block.shared, block.alpha

    def mix(weights: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
        return np.einsum("nj,njd->nd", weights, np.concatenate(groups, axis=1))

    g_a = g_b = g_s = None
    for layer, stage in enumerate(block.stages):
        if layer == 0:  # every expert and gate of layer 1 reads the tokens (e_u, e_i, e_p)
            tokens = {x: [e_u, e_i, e_p] for x in ("a", "b", "s")}
        else:
            tokens = {"a": [g_a, g_s], "b": [g_b, g_s], "s": [g_a, g_s, g_b]} if shared else {"a": [g_a], "b": [g_b]}
        big = {x: experts_reference(np.stack(tokens[x], 1), stage[f"expert_{x}"]) for x in (("a", "b", "s") if shared
                                                                                          else ("a", "b"))}
        other_a, other_b = (big["s"], big["s"]) if shared else (big["a"], big["b"])
        new_a = mix(gate_reference(np.hstack(tokens["a"]), stage["gate_a"]), [big["a"]] + ([big["s"]] if shared else []))
        new_b = mix(gate_reference(np.hstack(tokens["b"]), stage["gate_b"]), [big["b"]] + ([big["s"]] if shared else []))
        if alpha:
            new_a = new_a + alpha * (mix(gate_reference(ui, stage["gate_a_ui"]), [big["a"]])
                                     + mix(gate_reference(ip, stage["gate_a_ip"]), [other_a])
                                     + mix(gate_reference(up, stage["gate_a_up"]), [other_a]))
            new_b = new_b + alpha * (mix(gate_reference(ui, stage["gate_b_ui"]), [other_b])
                                     + mix(gate_reference(ip, stage["gate_b_ip"]), [big["b"]])
                                     + mix(gate_reference(up, stage["gate_b_up"]), [big["b"]]))
        if "gate_s" in stage:
            g_s = mix(gate_reference(np.hstack(tokens["s"]), stage["gate_s"]), [big["a"], big["s"], big["b"]])
        g_a, g_b = new_a, new_b
    return {"a": g_a, "b": g_b}


def randomize_batch_norm(layer: tf.keras.layers.Layer, seed: int = 1) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        name = variable.name.split("/")[-1]
        if name.startswith(("moving_mean", "beta", "gamma")):
            variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.3 + (name[0] == "g"))
        elif name.startswith("moving_variance"):
            variable.assign(rng.uniform(0.5, 2.0, size=variable.shape).astype(np.float32))


@pytest.mark.parametrize("attention", [True, False])
def test_attention_experts_match_reference(attention: bool) -> None:
    x = tf.stack(inputs(), axis=1)  # [N, 3, W]
    layer = AttentionExperts(num_experts=3, dim=D, num_heads=2, hidden=5, attention=attention)
    layer(x)
    randomize_batch_norm(layer)
    out = layer(x, training=False).numpy()
    assert out.shape == (N, 3, D)
    np.testing.assert_allclose(out, experts_reference(x.numpy().astype(np.float64), layer), atol=1e-5)
    names = {v.name.split("/")[-1].split(":")[0] for v in layer.trainable_weights}
    assert ("query" in names) == attention


def test_attention_with_one_token_is_the_value_path() -> None:
    """Softmax over a single key is 1: MultiHead(x) = x W_V W_O (Eq. 9-11)."""
    x = tf.constant(np.random.default_rng(2).normal(size=(N, 1, W)), tf.float32)
    layer = AttentionExperts(num_experts=2, dim=D, num_heads=2)
    layer(x)
    k, h, c = 2, 2, layer.head_dim
    value = layer.value.numpy().reshape(k, W, h * c)
    output = layer.output_kernel.numpy().reshape(k, h * c, W)
    expected = np.stack([x.numpy()[:, 0] @ value[j] @ output[j] for j in range(k)], 0)
    np.testing.assert_allclose(layer.multi_head(x).numpy()[:, :, 0], expected, atol=1e-5)


def test_softmax_gate_is_two_dense_layers_and_softmax() -> None:
    x = inputs()[0]
    gate = SoftmaxGate(num_outputs=5, hidden=3)
    out = gate(x).numpy()
    w1, b1, w2, b2 = gate.get_weights()
    np.testing.assert_allclose(out, softmax(np.maximum(x.numpy() @ w1 + b1, 0) @ w2 + b2), atol=1e-6)  # Eq. 15
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("layer_fn", [
    lambda: AttentionExperts(3, D, num_heads=2, hidden=6, dropout=0.2, attention=False, momentum=0.8),
    lambda: SoftmaxGate(4, 7),
    lambda: MultiHeadTaskBlock(D, 2, 2, num_heads=2, alpha=0.2, shared=False, attention=False, dropout=0.3,
                               ffn_hidden=5, gate_hidden=3, momentum=0.7),
])
def test_config_round_trip(layer_fn) -> None:
    layer = layer_fn()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


@pytest.mark.parametrize("shared, attention, alpha", [(True, True, 0.1), (False, True, 0.0), (True, False, 0.3)])
def test_block_round_trip_gives_the_same_outputs(shared: bool, attention: bool, alpha: float) -> None:
    e = inputs()
    block = MultiHeadTaskBlock(D, 2, 2, num_heads=2, alpha=alpha, shared=shared, attention=attention)
    out = block(*e)
    clone = MultiHeadTaskBlock.from_config(block.get_config())
    clone(*e)
    clone.set_weights(block.get_weights())
    again = clone(*e)
    assert set(out) == {"a", "b"} and out["a"].shape == (N, D) and out["b"].shape == (N, D)
    for task in ("a", "b"):
        np.testing.assert_allclose(again[task].numpy(), out[task].numpy(), atol=1e-6)


def test_block_every_weight_gets_a_gradient() -> None:
    e = inputs()
    block = MultiHeadTaskBlock(D, 2, 2, num_heads=2, alpha=0.1)
    with tf.GradientTape() as tape:
        out = block(*e, training=True)
        loss = tf.reduce_sum(out["a"] ** 2) + tf.reduce_sum(out["b"] ** 2)
    grads = tape.gradient(loss, block.trainable_weights)
    missing = [v.name for v, g in zip(block.trainable_weights, grads) if g is None]
    assert not missing, missing
    names = " ".join(v.name for v in block.weights)
    assert "l1_expert_s" in names and "l1_gate_s" in names and "l2_gate_s" not in names  # no gate S at layer L


def test_unshared_block_computes_only_the_tasks_asked_for() -> None:
    e = inputs()
    block = MultiHeadTaskBlock(D, 2, 2, num_heads=2, alpha=0.1, shared=False)
    both = block(*e)
    only_a = block(*e, tasks=("a",))
    assert set(only_a) == {"a"}
    np.testing.assert_allclose(only_a["a"].numpy(), both["a"].numpy(), atol=1e-6)
    assert "expert_s" not in " ".join(v.name for v in block.weights)
    with pytest.raises(ValueError, match="subset"):
        block(*e, tasks=("c",))


def test_training_mode_uses_dropout_and_batch_statistics() -> None:
    e = inputs(n=32)
    block = MultiHeadTaskBlock(D, 2, 1, num_heads=2, dropout=0.5)
    inference = block(*e, training=False)["a"].numpy()
    np.testing.assert_allclose(block(*e, training=False)["a"].numpy(), inference, atol=1e-6)  # deterministic
    training = block(*e, training=True)["a"].numpy()
    assert not np.allclose(inference, training)
    assert not np.allclose(block(*e, training=False)["a"].numpy(), inference)  # moving statistics were updated


@pytest.mark.parametrize("shared, attention", [(True, True), (False, True), (True, False)])
def test_rows_are_independent_in_inference_mode(shared: bool, attention: bool) -> None:
    """Permuting the rows permutes the outputs; a row scored alone gets the same output."""
    e = inputs(n=16, seed=3)
    block = MultiHeadTaskBlock(D, 3, 2, num_heads=2, alpha=0.1, shared=shared, attention=attention, dropout=0.2)
    for _ in range(3):  # move the BatchNorm statistics away from their initial values
        block(*e, training=True)
    out = block(*e, training=False)
    perm = np.random.default_rng(4).permutation(16)
    shuffled = block(*[tf.gather(x, perm) for x in e], training=False)
    alone = block(*[x[5:6] for x in e], training=False)
    for task in ("a", "b"):
        np.testing.assert_allclose(shuffled[task].numpy(), out[task].numpy()[perm], atol=1e-6)
        np.testing.assert_allclose(alone[task].numpy(), out[task].numpy()[5:6], atol=1e-6)


@pytest.mark.parametrize("shared, attention, alpha, num_layers", [
    (True, True, 0.2, 2), (False, True, 0.2, 2), (True, False, 0.0, 1), (True, True, 0.1, 3)])
def test_block_wiring_matches_reference(shared: bool, attention: bool, alpha: float, num_layers: int) -> None:
    """The whole block, inference mode, against MGBR's wiring with these experts and gates in float64."""
    e = inputs(n=5, seed=7)
    block = MultiHeadTaskBlock(D, 2, num_layers, num_heads=2, alpha=alpha, shared=shared, attention=attention)
    block(*e)
    randomize_batch_norm(block, seed=2)
    out = block(*e, training=False)
    want = block_reference(*(x.numpy() for x in e), block)
    for task in ("a", "b"):
        np.testing.assert_allclose(out[task].numpy(), want[task], rtol=1e-4, atol=1e-5)


def test_bad_widths_are_rejected() -> None:
    e_u, e_i, e_p = inputs()
    block = MultiHeadTaskBlock(D, 2, 1, num_heads=2)
    block(e_u, e_i, e_p)
    with pytest.raises(ValueError, match="e_p has width"):
        block(e_u, e_i, e_p[:, :3])
    with pytest.raises(ValueError, match=">= 1"):
        MultiHeadTaskBlock(D, 2, 1, num_heads=0)
