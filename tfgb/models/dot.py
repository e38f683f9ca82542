"""Shared parts of the dot-product baselines: the user-item graph, scoring and BPR training.

MGBR Sec. III-B adapts general recommenders to both tasks by changing only their prediction
layer: task A scores s(i|u) = <e_u, e_i>, task B scores s(p|u,i) = <e_u, e_p>, the inner
product of the initiator's and the participant's embeddings (the item is ignored). The
baselines built on :class:`DotProductModel` (LightGCN, NGCF) learn one embedding per user and
one per item and are trained with the same BPR tasks (Eq. 19 of MGBR) on the same stream:
``L = L_A + beta * L_B``, no auxiliary losses.

The graph of these collaborative-filtering baselines is the **user-item graph of every role**
(:func:`user_item_graph`): an edge between a user and an item when the user initiated (or
failed to launch) or joined a group of the item in training, i.e. the union of GUI and GPI. It
has no user-user edges: LightGCN and NGCF are user-item models, and the social links of GUP
would make them social recommenders (that is what the "hetero" graph of MGBR-D adds).
"""
from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.models.base import GroupBuyingModel
from tfgb.models.context import ModelContext
from tfgb.tasks import bpr_task


def user_item_graph(graphs: Mapping[str, tf.sparse.SparseTensor], num_users: int) -> tf.sparse.SparseTensor:
    """The symmetric normalized user-item graph ``D^-1/2 A D^-1/2`` (no self-loops).

    Built from the "hetero" graph of :func:`tfgb.data.graphs.build_graphs` by keeping its
    user-item entries (the union of GUI and GPI edges) and dropping its user-user edges and
    self-loops; nodes are users ``[0, U)`` then items ``[U, U + I)``. Isolated nodes keep an
    empty row. This is the Laplacian of LightGCN (Eq. 7 of LightGCN) and NGCF (Eq. 8 of NGCF).

    Args:
      graphs: training graphs with a "hetero" entry [U + I, U + I] in row-major order.
      num_users: U.

    Returns:
      float32 SparseTensor [U + I, U + I], symmetric, in row-major order.
    """
    if "hetero" not in graphs:
        raise ValueError("the user-item graph is built from the 'hetero' training graph, which is missing")
    hetero = graphs["hetero"]
    rows, cols = hetero.indices[:, 0], hetero.indices[:, 1]
    keep = tf.not_equal(rows < num_users, cols < num_users)  # exactly one end is a user
    indices = tf.boolean_mask(hetero.indices, keep)  # a mask keeps the row-major order
    nodes = tf.cast(hetero.dense_shape[0], tf.int32)
    degree = tf.math.bincount(tf.cast(indices[:, 0], tf.int32), minlength=nodes, maxlength=nodes, dtype=tf.float32)
    scale = tf.where(degree > 0, tf.math.rsqrt(tf.maximum(degree, 1.0)), 0.0)
    values = tf.gather(scale, indices[:, 0]) * tf.gather(scale, indices[:, 1])
    return tf.sparse.SparseTensor(indices, values, hetero.dense_shape)


class DotProductModel(GroupBuyingModel):
    """Base of MF-BPR, LightGCN and NGCF: dot-product scores for both tasks and BPR training.

    Subclasses implement ``propagate`` returning ``users_i`` = ``users_p`` [U, D] and
    ``items`` [I, D].

    Args:
      context: vocabulary sizes and training graphs (:class:`~tfgb.models.context.ModelContext`).
      train: ``beta``, the weight of task B's loss.
    """

    def __init__(self, context: ModelContext, train: TrainConfig, **kwargs):
        super().__init__(context, **kwargs)
        self.beta = train.beta
        self.task_a = bpr_task("loss_a")
        self.task_b = bpr_task("loss_b")

    def score_items(self, emb, initiator, candidates, training=False):
        """s(i|u) = <e_u, e_i>: [B] initiators, [B, C] items -> [B, C]."""
        logits = tf.einsum("bd,bcd->bc", tf.gather(emb["users_i"], initiator), tf.gather(emb["items"], candidates))
        return self.combine_item_logits(emb, initiator[:, None], candidates, logits, training)

    def score_participants(self, emb, initiator, item, candidates, training=False):
        """s(p|u,i) = <e_u, e_p> (MGBR Sec. III-B; the item is ignored, but by a plug-in): [B], [B], [B, C] -> [B, C]."""
        logits = tf.einsum("bd,bcd->bc", tf.gather(emb["users_i"], initiator), tf.gather(emb["users_p"], candidates))
        return self.combine_participant_logits(emb, initiator[:, None], item[:, None], candidates, logits, training)

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """``L_A + beta * L_B`` (BPR, Eq. 19 of MGBR) on one batch of the training stream."""
        return self.bpr_loss(inputs, training)


class UserItemGraphModel(DotProductModel):
    """Base of LightGCN and NGCF: propagates over the symmetric user-item graph of :func:`user_item_graph`,
    derived from the training graphs (and from each fold's graphs under ``train.graph_folds``)."""

    uses_graph_folds = True

    def derive_graphs(self, graphs):
        """Adds the user-item graph (an untracked constant) made from the "hetero" graph."""
        return {**graphs, "user_item": user_item_graph(graphs, self.num_users)} if graphs else graphs
