"""Tests for tfgb.layers.gcn: GCNView (Eq. 1-3) and MultiViewGCN (Eq. 4-6)."""
from __future__ import annotations

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb.layers.gcn import GCNView, MultiViewGCN

U, I, D, H = 5, 4, 3, 2


def normalized(n: int, seed: int) -> np.ndarray:
    """Dense D^-1/2 (A + I) D^-1/2 of a random undirected graph [n, n]."""
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < 0.3).astype(np.float64)
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 1.0)
    inv_sqrt = 1.0 / np.sqrt(a.sum(axis=1))
    return (a * inv_sqrt[:, None] * inv_sqrt[None, :]).astype(np.float32)


def sparse(dense: np.ndarray) -> tf.sparse.SparseTensor:
    return tf.sparse.from_dense(tf.constant(dense))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def gcn_reference(adj: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """X^H of Eq. 1-3 from [X^0, W^0, ..., W^{H-1}]."""
    x = weights[0]
    for kernel in weights[1:]:
        x = sigmoid(adj @ x @ kernel)
    return x


def test_gcn_view_matches_dense_reference() -> None:
    adj = normalized(7, seed=0)
    layer = GCNView(num_nodes=7, dim=D, num_layers=H)
    out = layer(sparse(adj))
    weights = layer.get_weights()
    assert [w.shape for w in weights] == [(7, D), (D, D), (D, D)]
    assert out.shape == (7, D)
    np.testing.assert_allclose(out.numpy(), gcn_reference(adj, weights), atol=1e-5)
    # Inside tf.function too.
    out_fn = tf.function(layer)(sparse(adj))
    np.testing.assert_allclose(out_fn.numpy(), out.numpy(), atol=1e-6)


def test_gcn_view_zero_layers_is_the_table() -> None:
    layer = GCNView(num_nodes=4, dim=2, num_layers=0)
    out = layer(sparse(normalized(4, seed=1)))
    np.testing.assert_array_equal(out.numpy(), layer.get_weights()[0])


@pytest.mark.parametrize("init_std", [1.0, 0.1])
def test_gcn_view_table_is_normal_with_the_given_std(init_std: float) -> None:
    tf.keras.utils.set_random_seed(0)
    layer = GCNView(num_nodes=2000, dim=16, num_layers=1, init_std=init_std)
    layer.build(None)
    table = layer.get_weights()[0]
    assert abs(table.mean()) < 0.02 * init_std
    assert abs(table.std() - init_std) < 0.02 * init_std


def test_gcn_view_config_round_trip() -> None:
    adj = sparse(normalized(6, seed=2))
    layer = GCNView(num_nodes=6, dim=D, num_layers=H, name="view")
    out = layer(adj)
    clone = GCNView.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(None)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(adj).numpy(), out.numpy(), atol=1e-6)


def multi_graphs() -> tuple[dict[str, np.ndarray], dict[str, tf.sparse.SparseTensor]]:
    dense = {"ui": normalized(U + I, 3), "pi": normalized(U + I, 4), "up": normalized(U, 5)}
    return dense, {key: sparse(value) for key, value in dense.items()}


def test_multi_view_outputs_follow_eq_4_to_6() -> None:
    dense, graphs = multi_graphs()
    layer = MultiViewGCN(num_users=U, num_items=I, dim=D, num_layers=H)
    out = layer(graphs)
    assert set(out) == {"users_i", "items", "users_p"}
    assert out["users_i"].shape == (U, 2 * D)
    assert out["items"].shape == (I, 2 * D)
    assert out["users_p"].shape == (U, 2 * D)
    weights = layer.get_weights()
    assert len(weights) == 3 * (1 + H)
    x_ui, x_pi, x_up = (
        gcn_reference(dense[key], weights[v * (1 + H):(v + 1) * (1 + H)])
        for v, key in enumerate(["ui", "pi", "up"])
    )
    np.testing.assert_allclose(out["users_i"], np.hstack([x_ui[:U], x_up]), atol=1e-5)
    np.testing.assert_allclose(out["items"], np.hstack([x_ui[U:], x_pi[U:]]), atol=1e-5)
    np.testing.assert_allclose(out["users_p"], np.hstack([x_pi[:U], x_up]), atol=1e-5)


def test_multi_view_tables_are_separate_and_trained() -> None:
    _, graphs = multi_graphs()
    layer = MultiViewGCN(num_users=U, num_items=I, dim=D, num_layers=H)
    with tf.GradientTape() as tape:
        out = layer(graphs)
        loss = sum(tf.reduce_sum(value) for value in out.values())
    grads = tape.gradient(loss, layer.trainable_variables)
    assert len(layer.trainable_variables) == 3 * (1 + H)
    assert all(g is not None for g in grads)
    tables = [v for v in layer.trainable_variables if "embeddings" in v.name]
    assert [tuple(t.shape) for t in tables] == [(U + I, D), (U + I, D), (U, D)]


def test_hetero_mode_is_one_graph_of_width_2d() -> None:
    adj = normalized(U + I, 6)
    layer = MultiViewGCN(num_users=U, num_items=I, dim=D, num_layers=H, mode="hetero")
    out = layer({"hetero": sparse(adj)})
    reference = gcn_reference(adj, layer.get_weights())
    assert reference.shape == (U + I, 2 * D)
    np.testing.assert_allclose(out["users_i"], reference[:U], atol=1e-5)
    np.testing.assert_allclose(out["users_p"], reference[:U], atol=1e-5)
    np.testing.assert_allclose(out["items"], reference[U:], atol=1e-5)


def test_multi_view_config_round_trip_and_function() -> None:
    _, graphs = multi_graphs()
    layer = MultiViewGCN(num_users=U, num_items=I, dim=D, num_layers=H, name="gcn")
    out = layer(graphs)
    clone = MultiViewGCN.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(None)
    clone.set_weights(layer.get_weights())
    out_clone = tf.function(clone)(graphs)
    for key in out:
        np.testing.assert_allclose(out_clone[key].numpy(), out[key].numpy(), atol=1e-6)


def test_bad_mode_and_missing_graph() -> None:
    with pytest.raises(ValueError, match="mode"):
        MultiViewGCN(num_users=U, num_items=I, dim=D, num_layers=H, mode="single")
    _, graphs = multi_graphs()
    del graphs["up"]
    layer = MultiViewGCN(num_users=U, num_items=I, dim=D, num_layers=H)
    with pytest.raises(ValueError, match="up"):
        layer(graphs)


def test_recompute_gives_the_same_outputs_and_gradients() -> None:
    adj = sparse(normalized(U + I, seed=3))
    plain = GCNView(U + I, D, H, name="plain")
    again = GCNView(U + I, D, H, recompute=True, name="again")
    plain.build(None)
    again.build(None)
    again.set_weights(plain.get_weights())

    @tf.function
    def grads(view):
        with tf.GradientTape() as tape:
            out = view(adj)
            loss = tf.reduce_sum(tf.square(out - 0.3))
        return out, tape.gradient(loss, view.trainable_variables)

    out_a, grad_a = grads(plain)
    out_b, grad_b = grads(again)
    np.testing.assert_array_equal(out_a.numpy(), out_b.numpy())
    assert len(grad_a) == len(grad_b) == H + 1
    for a, b in zip(grad_a, grad_b, strict=True):
        assert np.abs(a.numpy()).sum() > 0
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert GCNView.from_config(again.get_config()).recompute
