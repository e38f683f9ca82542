"""Tests for tfgb.data.graphs: the normalized training adjacencies."""
import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb.data.graphs import build_graphs, normalized_adjacency
from tfgb.data.groups import DealGroups
from tfgb.data.split import split_groups
from tfgb.data.synth import generate
from tfgb.data.vocab import encode


def dense_normalized(edges, n):
    a = np.zeros((n, n))
    for r, c in edges:
        if r != c:
            a[r, c] = a[c, r] = 1.0
    a += np.eye(n)
    d = a.sum(1) ** -0.5
    return d[:, None] * a * d[None, :]


def off_diagonal_pairs(matrix: tf.sparse.SparseTensor) -> set[tuple[int, int]]:
    idx = matrix.indices.numpy()
    return {(r, c) for r, c in idx.tolist() if r != c}


def test_normalization_matches_dense_formula_on_a_tiny_graph():
    edges = [(0, 1), (1, 0), (1, 2), (3, 3), (0, 1)]  # a repeated edge counts once; a self-pair adds nothing
    m = normalized_adjacency(np.array([e[0] for e in edges]), np.array([e[1] for e in edges]), 5)
    assert m.dtype == tf.float32 and m.dense_shape.dtype == tf.int64
    np.testing.assert_allclose(tf.sparse.to_dense(m).numpy(), dense_normalized(edges, 5), rtol=1e-6)


def test_build_graphs_hand_made():
    # users 0..3, items 0..1; group 0: u0 buys i1 with p2, p3; group 1: u1 buys i0 with p2.
    table = DealGroups(np.array([0, 1]), np.array([1, 0]), np.array([0, 2, 3]), np.array([2, 3, 2]), 4, 2)
    g = build_graphs(table, 4, 2, failed_users=np.array([3]), failed_items=np.array([0]))
    item = 4  # item j is node 4 + j
    np.testing.assert_allclose(tf.sparse.to_dense(g["ui"]).numpy(),
                               dense_normalized([(0, item + 1), (1, item), (3, item)], 6), rtol=1e-6)
    np.testing.assert_allclose(tf.sparse.to_dense(g["pi"]).numpy(),
                               dense_normalized([(2, item + 1), (3, item + 1), (2, item)], 6), rtol=1e-6)
    np.testing.assert_allclose(tf.sparse.to_dense(g["up"]).numpy(),
                               dense_normalized([(0, 2), (0, 3), (1, 2)], 4), rtol=1e-6)  # no 2-3 edge
    hetero = [(0, item + 1), (1, item), (3, item), (2, item + 1), (3, item + 1), (2, item), (0, 2), (0, 3), (1, 2)]
    np.testing.assert_allclose(tf.sparse.to_dense(g["hetero"]).numpy(), dense_normalized(hetero, 6), rtol=1e-6)


def test_graphs_hold_training_edges_only_symmetric_canonical_with_self_loops():
    groups, users, items, failed_u, failed_i, _ = encode(generate(users=300, items=60, groups=1500, seed=4))
    train_idx, valid_idx, test_idx = split_groups(groups, seed=1)
    train = groups.take(train_idx)
    u, i, p, _ = train.triples()
    U = len(users)
    expected = {
        "ui": {(a, b + U) for a, b in zip(train.initiator.tolist(), train.item.tolist(), strict=True)},
        "pi": {(a, b + U) for a, b in zip(p.tolist(), i.tolist(), strict=True)},
        "up": {(a, b) for a, b in zip(u.tolist(), p.tolist(), strict=True)},
    }
    expected = {k: v | {(b, a) for a, b in v} for k, v in expected.items()}
    expected["hetero"] = expected["ui"] | expected["pi"] | expected["up"]
    graphs = build_graphs(train, U, len(items))
    for name, matrix in graphs.items():
        assert off_diagonal_pairs(matrix) == expected[name], name
        n = int(matrix.dense_shape[0])
        assert n == (U if name == "up" else U + len(items))
        idx = matrix.indices.numpy()
        diagonal = idx[:, 0] == idx[:, 1]
        assert np.array_equal(idx[diagonal, 0], np.arange(n))  # every node has its self-loop
        assert np.array_equal(tf.sparse.reorder(matrix).indices.numpy(), idx)  # canonical order
        dense = tf.sparse.to_dense(matrix).numpy()
        np.testing.assert_array_equal(dense, dense.T)

    # Edges that only valid/test groups have are absent.
    held = groups.take(np.concatenate([valid_idx, test_idx]))
    held_ui = {(a, b + U) for a, b in zip(held.initiator.tolist(), held.item.tolist(), strict=True)}
    assert held_ui - expected["ui"]  # the split does hold such edges ...
    assert not (held_ui - expected["ui"]) & off_diagonal_pairs(graphs["ui"])  # ... and the graph omits them

    with_failed = build_graphs(train, U, len(items), failed_u, failed_i)
    failed_edges = {(a, b + U) for a, b in zip(failed_u.tolist(), failed_i.tolist(), strict=True)}
    assert failed_edges <= off_diagonal_pairs(with_failed["ui"]) and failed_edges <= off_diagonal_pairs(
        with_failed["hetero"])
    assert off_diagonal_pairs(with_failed["pi"]) == expected["pi"]


@pytest.mark.parametrize("n", [1, 7])
def test_edgeless_graph_is_the_identity(n):
    m = normalized_adjacency(np.array([], dtype=np.int64), np.array([], dtype=np.int64), n)
    np.testing.assert_array_equal(tf.sparse.to_dense(m).numpy(), np.eye(n, dtype=np.float32))
