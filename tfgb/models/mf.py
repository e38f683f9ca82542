"""MF-BPR baseline: dot products of free embeddings, adapted to both tasks as in MGBR Sec. III-B.

Task A scores s(i|u) = <e_u, e_i>; task B scores s(p|u,i) = <e_u, e_p> (the inner product of the
initiator's and the participant's embeddings; the item is ignored). Trained with the same BPR
tasks (Eq. 19) on the same stream; no auxiliary losses.
"""
from __future__ import annotations

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.models.context import ModelContext
from tfgb.models.dot import DotProductModel
from tfgb.models.registry import EmbeddingSettings


class MFBPR(DotProductModel):
    """Matrix factorisation with BPR for both tasks: free user and item tables, no graph."""

    def __init__(self, context: ModelContext, model: EmbeddingSettings, train: TrainConfig, **kwargs):
        super().__init__(context, train, **kwargs)
        num_users, num_items = self.num_users, self.num_items
        # One initializer per table: a shared unseeded instance would give both tables the same values.
        self.users = tf.keras.layers.Embedding(num_users, model.embedding_dim, name="users",
                                               embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.1))
        self.items = tf.keras.layers.Embedding(num_items, model.embedding_dim, name="items",
                                               embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.1))

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        users = self.users(tf.range(self.num_users))
        return {"users_i": users, "users_p": users, "items": self.items(tf.range(self.num_items))}
