"""The normalized adjacency matrices MGBR propagates over, built from training groups only.

Node layouts:

* ``"ui"`` (GUI) and ``"pi"`` (GPI) and ``"hetero"``: ``[U + I]`` nodes, users ``[0, U)`` then
  items ``[U, U + I)`` (item j is node ``U + j``).
* ``"up"`` (GUP): ``[U]`` user nodes.

Edges (undirected, binary: a pair seen many times is one edge; a user paired with themself
adds nothing beyond the self-loop):

* ``"ui"``: initiator - item of every training group (+ failed launches when given).
* ``"pi"``: participant - item of every training group.
* ``"up"``: initiator - participant of every training group; never participant - participant.
* ``"hetero"``: the union of the three (for MGBR-D): user-item edges from ``"ui"`` and ``"pi"``,
  user-user edges from ``"up"``.

Each matrix is ``D^-1/2 (A + I) D^-1/2`` with ``D`` the row sums of ``A + I``: a float32
``tf.sparse.SparseTensor`` with int64 ``dense_shape``, symmetric, indices already in the canonical
row-major order of ``tf.sparse.reorder``.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfgb.data.groups import DealGroups
from tfgb.data.negatives import sorted_unique

GRAPH_NAMES = ("ui", "pi", "up", "hetero")


def normalized_adjacency(rows: np.ndarray, cols: np.ndarray, num_nodes: int) -> tf.sparse.SparseTensor:
    """``D^-1/2 (A + I) D^-1/2`` of the undirected binary graph with edges ``(rows[e], cols[e])``.

    Args:
      rows / cols: ``int`` [E] node ids in ``[0, num_nodes)``; each edge is used in both
        directions, repeated edges and self-pairs collapse into the binary ``A + I``.
      num_nodes: N.

    Returns:
      float32 SparseTensor [N, N] in canonical order.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    off_diagonal = rows != cols
    rows, cols = rows[off_diagonal], cols[off_diagonal]
    loops = np.arange(num_nodes, dtype=np.int64)
    keys = sorted_unique(np.concatenate([rows * num_nodes + cols, cols * num_nodes + rows, loops * num_nodes + loops]))
    src, dst = np.divmod(keys, num_nodes)
    degree = np.bincount(src, minlength=num_nodes).astype(np.float64)
    scale = 1.0 / np.sqrt(degree)
    values = (scale[src] * scale[dst]).astype(np.float32)
    return tf.sparse.SparseTensor(
        indices=np.stack([src, dst], axis=1), values=values, dense_shape=np.array([num_nodes, num_nodes], np.int64)
    )


def build_graphs(
    train: DealGroups,
    num_users: int,
    num_items: int,
    failed_users: np.ndarray | None = None,
    failed_items: np.ndarray | None = None,
) -> dict[str, tf.sparse.SparseTensor]:
    """The GUI, GPI, GUP and heterogeneous adjacencies of the training groups.

    Args:
      train: the TRAINING groups only (never valid/test: their edges would leak the answers).
      num_users / num_items: U and I, the vocabulary sizes.
      failed_users / failed_items: ``int`` [F] failed launches to add as extra initiator-item
        edges (to ``"ui"`` and ``"hetero"``), or None.

    Returns:
      ``{"ui": [U+I, U+I], "pi": [U+I, U+I], "up": [U, U], "hetero": [U+I, U+I]}`` float32
      SparseTensors (see the module docstring).
    """
    initiator, item, participant, _ = train.triples()
    ui_users, ui_items = train.initiator, train.item
    if failed_users is not None and failed_items is not None:
        ui_users = np.concatenate([ui_users, np.asarray(failed_users, dtype=np.int64)])
        ui_items = np.concatenate([ui_items, np.asarray(failed_items, dtype=np.int64)])
    nodes = num_users + num_items
    return {
        "ui": normalized_adjacency(ui_users, ui_items + num_users, nodes),
        "pi": normalized_adjacency(participant, item + num_users, nodes),
        "up": normalized_adjacency(initiator, participant, num_users),
        "hetero": normalized_adjacency(
            np.concatenate([ui_users, participant, initiator]),
            np.concatenate([ui_items + num_users, item + num_users, participant]),
            nodes,
        ),
    }
