"""LightGCN baseline (He et al., SIGIR 2020), adapted to both group-buying tasks.

Light graph convolution over the user-item graph of every role (:func:`tfgb.models.dot.user_item_graph`,
the union of GUI and GPI, no social edges): no feature transformation, no nonlinearity,

    E^{k+1} = D^-1/2 A D^-1/2 E^k                   (Eq. 7 of LightGCN)
    E = 1/(K+1) * sum_{k=0..K} E^k                  (Eq. 8, alpha_k = 1/(K+1))

with K = ``model.gcn_layers`` and E^0 an N(0, 0.1) table [U + I, d], d = ``model.embedding_dim``.
Task A: s(i|u) = <e_u, e_i>; task B: s(p|u,i) = <e_u, e_p> (MGBR Sec. III-B). Trained with BPR on
both tasks, ``L_A + beta * L_B``; no L2 term (like tfgb's MF-BPR).
"""
from __future__ import annotations

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.layers.propagation import sparse_matmul
from tfgb.models.context import ModelContext
from tfgb.models.dot import UserItemGraphModel
from tfgb.models.registry import GraphSettings


class LightGCN(UserItemGraphModel):
    """LightGCN: layer-mean of linear propagations of one embedding table.

    Args:
      context: vocabulary sizes and training graphs; the "hetero" graph gives the user-item graph.
      model: ``[model.lightgcn]``: ``embedding_dim`` (d) and ``gcn_layers`` (K).
      train: ``beta``.
    """

    def __init__(self, context: ModelContext, model: GraphSettings, train: TrainConfig, **kwargs):
        super().__init__(context, train, **kwargs)
        num_users, num_items = self.num_users, self.num_items
        self.num_layers = model.gcn_layers
        self.embeddings = self.add_weight(
            name="embeddings", shape=(num_users + num_items, model.embedding_dim),
            initializer=tf.keras.initializers.RandomNormal(stddev=0.1))

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        """Eq. 7-8: ``users_i`` = ``users_p`` [U, d] and ``items`` [I, d]."""
        x = tf.convert_to_tensor(self.embeddings)
        total = x
        for _ in range(self.num_layers):
            x = sparse_matmul((graphs or self._graphs)["user_item"], x)
            total += x
        out = total / float(self.num_layers + 1)
        users = out[: self.num_users]
        return {"users_i": users, "users_p": users, "items": out[self.num_users:]}
