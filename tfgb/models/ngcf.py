"""NGCF baseline (Wang et al., SIGIR 2019), adapted to both group-buying tasks.

Embedding propagation over the user-item graph of every role (:func:`tfgb.models.dot.user_item_graph`,
L = D^-1/2 A D^-1/2, the union of GUI and GPI, no social edges), in matrix form:

    E^l = LeakyReLU((L + I) E^{l-1} W_1^l + b_1^l + (L E^{l-1} ⊙ E^{l-1}) W_2^l + b_2^l)   (Eq. 7 of NGCF)
    e* = E^0 || E^1 || ... || E^H                                                      (Eq. 9)

The first term is the self message plus the neighbours' messages W_1 e_j, the second the
bi-interaction messages W_2 (e_j ⊙ e_i) (Eq. 3). As in the authors' code: LeakyReLU slope 0.2,
message dropout (``model.dropout``, training only) on every E^l, and each E^l (l >= 1)
L2-normalised before the concatenation. H = ``model.gcn_layers``, every layer d =
``model.embedding_dim`` wide, so e* is (H + 1) d wide. Task A: s(i|u) = <e*_u, e*_i>; task B:
s(p|u,i) = <e*_u, e*_p> (MGBR Sec. III-B). Trained with BPR on both tasks, ``L_A + beta * L_B``;
no L2 term, no node dropout.
"""
from __future__ import annotations

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.layers.propagation import sparse_matmul
from tfgb.models.context import ModelContext
from tfgb.models.dot import UserItemGraphModel
from tfgb.models.registry import NGCFSettings


class NGCF(UserItemGraphModel):
    """NGCF: H embedding-propagation layers with bi-interaction messages, layers concatenated.

    Args:
      context: vocabulary sizes and training graphs; the "hetero" graph gives the user-item graph.
      model: ``[model.ngcf]``: ``embedding_dim`` (d), ``gcn_layers`` (H) and ``dropout`` (message dropout).
      train: ``beta``.
    """

    def __init__(self, context: ModelContext, model: NGCFSettings, train: TrainConfig, **kwargs):
        super().__init__(context, train, **kwargs)
        num_users, num_items = self.num_users, self.num_items
        d = model.embedding_dim
        self.num_layers = model.gcn_layers
        self.embeddings = self.add_weight(name="embeddings", shape=(num_users + num_items, d),
                                          initializer="glorot_uniform")
        self.gc = [tf.keras.layers.Dense(d, name=f"gc_{layer}") for layer in range(self.num_layers)]  # W_1, b_1
        self.bi = [tf.keras.layers.Dense(d, name=f"bi_{layer}") for layer in range(self.num_layers)]  # W_2, b_2
        self.message_dropout = tf.keras.layers.Dropout(model.dropout, name="message_dropout")

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        """Eq. 7-9: ``users_i`` = ``users_p`` [U, (H+1)d] and ``items`` [I, (H+1)d]."""
        x = tf.convert_to_tensor(self.embeddings)
        layers = [x]
        for gc, bi in zip(self.gc, self.bi):
            side = sparse_matmul((graphs or self._graphs)["user_item"], x)  # L E
            x = tf.nn.leaky_relu(gc(side + x) + bi(side * x), alpha=0.2)  # Eq. 7
            x = self.message_dropout(x, training=training)
            layers.append(tf.math.l2_normalize(x, axis=-1))
        out = tf.concat(layers, axis=-1)  # Eq. 9
        users = out[: self.num_users]
        return {"users_i": users, "users_p": users, "items": out[self.num_users:]}
