"""MAMGBR: MGBR with multi-head attention experts and two-layer softmax gates (paper 001).

Everything but the multi-task block is MGBR's (:mod:`tfgb.models.mgbr`): the multi-view GCN
(Eq. 1-6, standardized per column over all nodes), the heads MLP_I / MLP_II (Eq. 16-17, logits),
task A scored with e_p = the mean participant embedding, and the loss of Eq. 25,
``L = L_I + beta L_II + beta_I L'_I + beta_II L'_II`` (Eq. 18-19, 21, 24). The block is
:class:`tfgb.layers.attention.MultiHeadTaskBlock`: experts of multi-head attention + FFN +
BatchNorm + Dropout (Sec. 3.4-3.5), gates of two dense layers + softmax (Eq. 15).

Ablations (Sec. 4.6; registry names in :mod:`tfgb.models.registry`):

* ``mamgbr-m`` ("the multi-task learning framework was removed, with each task being
  independently trained"): ``model.shared_experts = false``. In MAMGBR this removes every
  parameter the two tasks share: no shared experts S and no gate S, and each task gets its
  own multi-view GCN (own embedding tables and GCN weights), its own experts, gates and head.
  Task A's rows go through GCN_A and the A path only, task B's through GCN_B and the B path
  only; L'_I reaches only task A's parameters and L'_II only task B's. The two tasks are
  trained in one run on the sum of the losses, which, with disjoint parameters, gives each
  task exactly the gradients of its own loss terms (scaled by beta for task B; Adam is
  insensitive to that scale): two single-task models trained side by side.
* ``mamgbr-mh``: experts without multi-head attention (FFN + BatchNorm + Dropout of the
  flattened input): ``model.mamgbr.attention = false``.
* ``mamgbr-l``: ``train.aux_losses = false`` (L = L_I + beta L_II).

Training mode reaches the block (``compute_loss(training=True)`` -> BatchNorm batch
statistics and dropout); evaluation and export score in inference mode, where every
candidate's score depends only on its own (u, i, p) row.
"""
from __future__ import annotations

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.layers.attention import MultiHeadTaskBlock
from tfgb.layers.gcn import MultiViewGCN
from tfgb.layers.layout import columns, width
from tfgb.models.context import ModelContext
from tfgb.models.mgbr import MGBR, standardize
from tfgb.models.registry import MAMGBRSettings


class MAMGBR(MGBR):
    """MAMGBR and its ablations -M, -MH, -L.

    Args:
      context: as MGBR's (:class:`~tfgb.models.context.ModelContext`).
      settings: ``[model.mamgbr]`` (:class:`~tfgb.models.registry.MAMGBRSettings`): MGBR's settings plus
        heads, dropout and ``attention`` (False: MAMGBR-MH, experts without multi-head attention);
        ``shared_experts = false`` is MAMGBR-M (the tasks share no parameter).
      train: loss weights (beta, beta_I, beta_II) and whether the auxiliary losses are on.
    """

    def __init__(self, context: ModelContext, settings: MAMGBRSettings, train: TrainConfig, **kwargs):
        super().__init__(context, settings, train, **kwargs)
        self.separate_tasks = not settings.shared_experts
        if self.separate_tasks:
            self.gcn_b = MultiViewGCN(self.num_users, self.num_items, settings.embedding_dim, settings.gcn_layers,
                                      mode=settings.graph, init_std=settings.init_std,
                                      recompute=settings.recompute_gcn, name="gcn_b")

    def _make_block(self, model: MAMGBRSettings) -> tf.keras.layers.Layer:
        return MultiHeadTaskBlock(model.embedding_dim, model.num_experts, model.mtl_layers, num_heads=model.heads,
                                  alpha=model.alpha, shared=model.shared_experts, attention=model.attention,
                                  dropout=model.dropout, name="mtl")

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        """Eq. 1-6; with separate tasks (MAMGBR-M) the tables are [GCN_A || GCN_B], each half
        standardized on its own (standardize is per column), and ``mean_p`` likewise."""
        if not self.separate_tasks:
            return super().propagate(training, graphs)
        parts = [dict(gcn((graphs or self._graphs).graphs, training=training)) for gcn in (self.gcn, self.gcn_b)]
        emb = {}
        for key in parts[0]:
            values = [p[key] for p in parts]
            if self.model_config.standardize:
                values = [standardize(v) for v in values]
            emb[key] = tf.concat(values, axis=-1)
        emb["mean_p"] = tf.reduce_mean(emb["users_p"], axis=0)
        return self._with_biases(emb)

    def _block_calls(self, e_u, e_i, e_p, tasks: tuple[str, ...]) -> list[tuple[tuple, tuple[str, ...]]]:
        """One block call for all tasks; with separate tasks (MAMGBR-M) one per task, task A on GCN_A's
        half of every embedding and task B on GCN_B's."""
        if not self.separate_tasks:
            return super()._block_calls(e_u, e_i, e_p, tasks)
        half = width(e_u) // 2
        cols = {"a": slice(None, half), "b": slice(half, None)}
        return [(tuple(columns(x, cols[task]) for x in (e_u, e_i, e_p)), (task,)) for task in tasks]
