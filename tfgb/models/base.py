"""The interface every tfgb model implements, and the scoring helpers they share.

A model propagates its embeddings once (``propagate``), then scores candidate matrices for the two
tasks from those embeddings. Training calls ``compute_loss`` (the TFRS contract) on the batches of
:mod:`tfgb.data.stream`; evaluation and export call ``propagate`` once and the scorers many times.
Every candidate's score depends only on its own (u, i, p) row, never on its column or on other
rows of the batch.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


class Graphs:
    """A plain (untracked) holder of the training graphs: constants, never checkpointed or exported."""

    def __init__(self, graphs: dict[str, tf.sparse.SparseTensor]):
        self.graphs = dict(graphs)

    def __getitem__(self, key: str) -> tf.sparse.SparseTensor:
        return self.graphs[key]


class GroupBuyingModel(tfrs.Model):
    """Base class: subclasses implement ``propagate``, ``score_items``, ``score_participants``
    and ``compute_loss``.

    Embedding dict conventions (``propagate`` output): ``users_i`` [U, D] initiator embeddings,
    ``items`` [I, D], ``users_p`` [U, D] participant embeddings.
    """

    def __init__(self, num_users: int, num_items: int, graphs: dict[str, tf.sparse.SparseTensor] | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self._graphs = Graphs(graphs or {})

    def propagate(self, training: bool = False) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def score_items(self, emb: dict[str, tf.Tensor], initiator: tf.Tensor, candidates: tf.Tensor,
                    training: bool = False) -> tf.Tensor:
        """Task A logits s(i|u): ``initiator`` [B], ``candidates`` [B, C] item indices -> [B, C]."""
        raise NotImplementedError

    def score_participants(self, emb: dict[str, tf.Tensor], initiator: tf.Tensor, item: tf.Tensor,
                           candidates: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Task B logits s(p|u,i): ``initiator`` [B], ``item`` [B], ``candidates`` [B, C] users -> [B, C]."""
        raise NotImplementedError

    def bpr_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """``L_A + beta * L_B`` (BPR, Eq. 19 of MGBR) on one stream batch, through ``score_*``.

        For models with ``task_a``, ``task_b`` (BPR tasks) and ``beta``: the baselines.
        """
        emb = self.propagate(training)
        u = inputs["initiator"]
        items = tf.stack([inputs["item"], inputs["neg_item"]], 1)
        users = tf.stack([inputs["participant"], inputs["neg_participant"]], 1)
        dummy = tf.zeros_like(u, tf.float32)
        loss = self.task_a(dummy, self.score_items(emb, u, items, training), training=training)
        return loss + self.beta * self.task_b(dummy, self.score_participants(emb, u, None, users, training),
                                              training=training)
