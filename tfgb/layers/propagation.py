"""Sparse-dense propagation, the kernel behind every GCN layer (Eq. 1-3 of MGBR).

`sparse_matmul(adj, x)` computes `adj @ x` for a sparse adjacency `adj` [n, m] and a dense
`x` [m, d]. It converts `adj` to a CSR matrix and multiplies with
`tf.raw_ops.SparseMatrixMatMul`, which on CPU is several times faster than
`tf.sparse.sparse_dense_matmul` (see docs/design.md). The built-in gradient of the CSR
multiply is not deterministic under `tf.config.experimental.enable_op_determinism()`, so the
gradient is defined here by hand: d(adj @ x)/dx applied to `g` is `adj^T @ g`, which for the
symmetric normalized adjacencies of a GCN is `adj @ g`, the same (deterministic) forward
multiply. No gradient flows to the adjacency values: the graphs are constants.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["sparse_matmul", "to_csr"]


_ORDER_MESSAGE = (
    "sparse_matmul needs the adjacency's indices in row-major order; "
    "call tf.sparse.reorder on the graph once when it is built."
)


def to_csr(adj: tf.sparse.SparseTensor, check_order: bool = True) -> tf.Tensor:
    """Converts a SparseTensor to a CSR sparse-matrix handle.

    Call this inside the traced function that uses the result: the handle carries the
    matrix shape only within the graph that created it.

    Args:
        adj: Sparse matrix [n, m]. Its indices must be in canonical (row-major) order, as
            produced by `tf.sparse.reorder`: the CSR conversion silently builds a wrong
            matrix from unordered indices. Duplicate indices are summed.
        check_order: Whether to assert the index order (an O(nnz) check, ~1 ms at 1.3M
            nonzeros, small next to the multiply). Raises `tf.errors.InvalidArgumentError`
            when the order is wrong.

    Returns:
        A scalar `variant` tensor holding the CSR matrix [n, m].
    """
    checks = []
    if check_order:
        rows, cols = adj.indices[:, 0], adj.indices[:, 1]
        linear = rows * adj.dense_shape[1] + cols
        ordered = tf.reduce_all(linear[1:] >= linear[:-1])
        checks.append(tf.debugging.Assert(ordered, [_ORDER_MESSAGE]))
    with tf.control_dependencies(checks):
        return tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=adj.indices, values=adj.values, dense_shape=adj.dense_shape
        )


def sparse_matmul(
    adj: tf.sparse.SparseTensor,
    x: tf.Tensor,
    symmetric: bool = True,
    check_order: bool = True,
) -> tf.Tensor:
    """Multiplies a sparse matrix by a dense one with a fast, deterministic gradient.

    This is the `Â X` product of the GCN layers (Eq. 1-3 of MGBR). The forward pass is a CSR
    sparse-dense multiply; the gradient with respect to `x` is `adj^T @ g`, computed with
    the same kernel (`adj @ g` when `symmetric`, the transposed multiply otherwise). Both
    directions are deterministic under op determinism. The adjacency gets no gradient.

    Args:
        adj: Sparse matrix [n, m] in canonical (row-major) index order, e.g. a normalized
            adjacency with self-loops. Its values are cast to `x.dtype` (float32 or float64).
        x: Dense matrix [m, d].
        symmetric: Whether `adj` is symmetric, so that `adj^T == adj` and the backward pass
            is the forward multiply. Must be False for a non-symmetric (or non-square) `adj`,
            whose backward then multiplies by the transpose; False is also correct, and as
            fast, for a symmetric one.
        check_order: Whether to assert that `adj` is in row-major index order (see `to_csr`).

    Returns:
        Dense matrix [n, d], equal to `tf.sparse.sparse_dense_matmul(adj, x)`.
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank != 2:
        raise ValueError(f"sparse_matmul expects a rank-2 dense matrix, got shape {x.shape}.")
    out_shape = tf.TensorShape([adj.shape[0], x.shape[1]])
    # The graph is a constant: no gradient reaches its values by any path.
    values = tf.stop_gradient(tf.cast(adj.values, x.dtype))
    adj = tf.sparse.SparseTensor(adj.indices, values, adj.dense_shape)
    csr = to_csr(adj, check_order=check_order)

    @tf.custom_gradient
    def _matmul(dense: tf.Tensor) -> tuple[tf.Tensor, object]:
        out = tf.raw_ops.SparseMatrixMatMul(a=csr, b=dense)
        out.set_shape(out_shape)

        def grad(upstream: tf.Tensor) -> tf.Tensor:
            dx = tf.raw_ops.SparseMatrixMatMul(a=csr, b=upstream, transpose_a=not symmetric)
            dx.set_shape(dense.shape)
            return dx

        return out, grad

    return _matmul(x)
