"""MF-BPR baseline: dot products of free embeddings, adapted to both tasks as in MGBR Sec. III-B.

Task A scores s(i|u) = <e_u, e_i>; task B scores s(p|u,i) = <e_u, e_p> (the inner product of the
initiator's and the participant's embeddings; the item is ignored). Trained with the same BPR
tasks (Eq. 19) on the same stream; no auxiliary losses.
"""
from __future__ import annotations

import tensorflow as tf

from tfgb.config import ModelConfig, TrainConfig
from tfgb.models.base import GroupBuyingModel
from tfgb.tasks import bpr_task


class MFBPR(GroupBuyingModel):
    """Matrix factorisation with BPR for both tasks."""

    def __init__(self, num_users: int, num_items: int, graphs, model: ModelConfig, train: TrainConfig, **kwargs):
        super().__init__(num_users, num_items, graphs, **kwargs)
        # One initializer per table: a shared unseeded instance would give both tables the same values.
        self.users = tf.keras.layers.Embedding(num_users, model.embedding_dim, name="users",
                                               embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.1))
        self.items = tf.keras.layers.Embedding(num_items, model.embedding_dim, name="items",
                                               embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.1))
        self.beta = train.beta
        self.task_a = bpr_task("loss_a")
        self.task_b = bpr_task("loss_b")

    def propagate(self, training: bool = False) -> dict[str, tf.Tensor]:
        users = self.users(tf.range(self.num_users))
        return {"users_i": users, "users_p": users, "items": self.items(tf.range(self.num_items))}

    def score_items(self, emb, initiator, candidates, training=False):
        return tf.einsum("bd,bcd->bc", tf.gather(emb["users_i"], initiator), tf.gather(emb["items"], candidates))

    def score_participants(self, emb, initiator, item, candidates, training=False):
        del item
        return tf.einsum("bd,bcd->bc", tf.gather(emb["users_i"], initiator), tf.gather(emb["users_p"], candidates))

    def compute_loss(self, inputs, training=False):
        emb = self.propagate(training)
        u = inputs["initiator"]
        items = tf.stack([inputs["item"], inputs["neg_item"]], 1)
        users = tf.stack([inputs["participant"], inputs["neg_participant"]], 1)
        dummy = tf.zeros_like(u, tf.float32)
        loss = self.task_a(dummy, self.score_items(emb, u, items, training), training=training)
        return loss + self.beta * self.task_b(dummy, self.score_participants(emb, u, None, users, training),
                                              training=training)
