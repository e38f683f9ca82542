"""Tests for tfgb.layers.propagation: CSR sparse-dense multiply with a custom gradient."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from tfgb.layers.propagation import sparse_matmul


def normalized_graph(n: int, edges: int, seed: int) -> np.ndarray:
    """Dense D^-1/2 (A + I) D^-1/2 of a random undirected graph [n, n]."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, n))
    rows, cols = rng.integers(0, n, edges), rng.integers(0, n, edges)
    a[rows, cols] = 1.0
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 1.0)
    inv_sqrt = 1.0 / np.sqrt(a.sum(axis=1))
    return (a * inv_sqrt[:, None] * inv_sqrt[None, :]).astype(np.float32)


def to_sparse(dense: np.ndarray) -> tf.sparse.SparseTensor:
    return tf.sparse.from_dense(tf.constant(dense))


def value_and_grad(
    matmul: Callable[[tf.sparse.SparseTensor, tf.Tensor], tf.Tensor],
    adj: tf.sparse.SparseTensor,
    x: tf.Tensor,
    upstream: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = matmul(adj, x)
        loss = tf.reduce_sum(y * upstream)
    return y, tape.gradient(loss, x)


@pytest.mark.parametrize("use_function", [False, True])
def test_forward_and_gradient_match_dense(use_function: bool) -> None:
    dense = normalized_graph(40, 120, seed=0)
    np.testing.assert_allclose(dense, dense.T)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(40, 8)), tf.float32)
    upstream = tf.constant(rng.normal(size=(40, 8)), tf.float32)
    fn = tf.function(value_and_grad, autograph=False) if use_function else value_and_grad
    y, grad = fn(sparse_matmul, to_sparse(dense), x, upstream)
    np.testing.assert_allclose(y.numpy(), dense @ x.numpy(), atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), dense.T @ upstream.numpy(), atol=1e-5)
    assert y.shape == (40, 8)


def test_static_shape_inside_function() -> None:
    adj = to_sparse(normalized_graph(10, 20, seed=2))

    @tf.function
    def run(adj: tf.sparse.SparseTensor, x: tf.Tensor) -> tf.Tensor:
        y = sparse_matmul(adj, x)
        assert y.shape.as_list() == [10, 3]
        return y

    y = run(adj, tf.ones([10, 3]))
    np.testing.assert_allclose(y.numpy(), tf.sparse.sparse_dense_matmul(adj, tf.ones([10, 3])))


def test_non_symmetric_uses_transpose_in_backward() -> None:
    rng = np.random.default_rng(3)
    dense = (rng.random((6, 9)) < 0.4) * rng.normal(size=(6, 9))
    dense = dense.astype(np.float32)
    x = tf.constant(rng.normal(size=(9, 4)), tf.float32)
    upstream = tf.constant(rng.normal(size=(6, 4)), tf.float32)

    def matmul(adj: tf.sparse.SparseTensor, x: tf.Tensor) -> tf.Tensor:
        return sparse_matmul(adj, x, symmetric=False)

    y, grad = value_and_grad(matmul, to_sparse(dense), x, upstream)
    np.testing.assert_allclose(y.numpy(), dense @ x.numpy(), atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), dense.T @ upstream.numpy(), atol=1e-5)


def test_float64_and_no_gradient_to_adjacency() -> None:
    dense = normalized_graph(12, 30, seed=4)
    adj = to_sparse(dense)
    x = tf.constant(np.random.default_rng(5).normal(size=(12, 3)), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(adj.values)
        y = sparse_matmul(adj, x)
    assert y.dtype == tf.float64
    np.testing.assert_allclose(y.numpy(), dense.astype(np.float64) @ x.numpy(), atol=1e-6)
    assert tape.gradient(y, adj.values) is None


def test_unordered_indices_are_rejected() -> None:
    adj = tf.sparse.SparseTensor([[1, 0], [0, 1], [0, 0]], [1.0, 2.0, 3.0], [2, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="row-major"):
        sparse_matmul(adj, tf.ones([2, 1]))
    y = sparse_matmul(tf.sparse.reorder(adj), tf.constant([[1.0], [10.0]]))
    np.testing.assert_allclose(y.numpy(), [[23.0], [1.0]])


@pytest.fixture
def op_determinism() -> Iterator[None]:
    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            tf_config.disable_op_determinism()


@pytest.mark.usefixtures("op_determinism")
def test_gradient_is_deterministic() -> None:
    n, d = 3000, 32
    rng = np.random.default_rng(6)
    rows = rng.integers(0, n, 30_000)
    cols = rng.integers(0, n, 30_000)
    key = np.unique(np.concatenate([rows * n + cols, cols * n + rows, np.arange(n) * (n + 1)]))
    values = rng.random(key.size).astype(np.float32)
    # Symmetrise the values too: value of (r, c) = value of (c, r).
    pair = np.minimum(key // n, key % n) * n + np.maximum(key // n, key % n)
    values = values[np.searchsorted(key, pair)]
    adj = tf.sparse.SparseTensor(np.stack([key // n, key % n], 1), values, [n, n])
    x = tf.Variable(rng.normal(size=(n, d)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(n, d)), tf.float32)

    @tf.function
    def grad() -> tf.Tensor:
        with tf.GradientTape() as tape:
            h = tf.sigmoid(sparse_matmul(adj, x))
            loss = tf.reduce_sum(sparse_matmul(adj, h) * upstream)
        return tape.gradient(loss, x)

    runs = [grad().numpy() for _ in range(3)]
    for run in runs[1:]:
        np.testing.assert_array_equal(run, runs[0])
