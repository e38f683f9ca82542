"""GBMF baseline: the matrix-factorisation variant of GBGCN (Zhang et al., ICDE 2021), both tasks.

GBGCN gives every user an initiator-role and a participant-role representation and scores an
item for an initiator by mixing the initiator's own preference with their friends' preference
as participants; GBMF is that model without graph propagation, "a dot-based similarity
function" over free embeddings (MGBR Sec. III-B). tfgb's reading:

* Parameters: initiator-role user embeddings P^I [U, d], participant-role user embeddings
  P^P [U, d], item embeddings Q [I, d] (N(0, 0.1), d = ``model.embedding_dim``).
* Friends F_u: u's neighbours in the training social graph GUP (users who joined u's groups or
  whose groups u joined). f_u = mean_{f in F_u} P^P_f (zero when u has none), one sparse
  multiply with the row-normalised GUP without self-loops.
* Task A: s(i|u) = (1 - a) <P^I_u, Q_i> + a <f_u, Q_i>, a = ``friend_weight`` (0.5): the
  initiator's preference mixed with the friends' mean preference, as GBGCN/GBMF predict.
* Task B: s(p|u,i) = <P^I_u, P^P_p>, the inner product of the initiator's and the
  participant's embeddings (MGBR Sec. III-B; the item is ignored).
* Training, as the GBMF code does: BPR on the initiator term <P^I_u, Q_i> vs. a negative item
  (``loss_a``), BPR on each participant's own term <P^P_p, Q_i> vs. the same negative item
  (``loss_p``, GBMF's participant loss), and beta x BPR of task B (``loss_b``); the friends'
  mixture is used only for scoring. No L2 term.
"""
from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.layers.propagation import sparse_matmul
from tfgb.models.base import GroupBuyingModel
from tfgb.models.context import ModelContext
from tfgb.models.registry import GBMFSettings
from tfgb.tasks import bpr_task


def friend_mean_graph(graphs: Mapping[str, tf.sparse.SparseTensor]) -> tf.sparse.SparseTensor:
    """Row-normalised GUP without self-loops: row u averages over u's training co-members.

    Args:
      graphs: training graphs with an "up" entry [U, U] in row-major order.

    Returns:
      float32 SparseTensor [U, U] in row-major order (not symmetric); rows of users without
      co-members are empty.
    """
    up = graphs["up"]
    indices = tf.boolean_mask(up.indices, tf.not_equal(up.indices[:, 0], up.indices[:, 1]))
    nodes = tf.cast(up.dense_shape[0], tf.int32)
    degree = tf.math.bincount(tf.cast(indices[:, 0], tf.int32), minlength=nodes, maxlength=nodes, dtype=tf.float32)
    values = 1.0 / tf.gather(degree, indices[:, 0])
    return tf.sparse.SparseTensor(indices, values, up.dense_shape)


class GBMF(GroupBuyingModel):
    """GBMF-style dot-product model with initiator and participant roles (see the module docstring).

    Args:
      context: vocabulary sizes and training graphs; "up" gives the friends.
      model: ``[model.gbmf]``: ``embedding_dim`` and ``friend_weight`` (a, the weight of the friends'
        term in task A).
      train: ``beta``.
    """

    def __init__(self, context: ModelContext, model: GBMFSettings, train: TrainConfig, **kwargs):
        super().__init__(context, **kwargs)
        num_users, num_items = self.num_users, self.num_items
        d = model.embedding_dim

        def table(name: str, rows: int) -> tf.Variable:
            # A new initializer per table: one unseeded instance called twice repeats its values.
            init = tf.keras.initializers.RandomNormal(stddev=0.1)
            return self.add_weight(name=name, shape=(rows, d), initializer=init)

        self.initiators = table("initiators", num_users)
        self.participants = table("participants", num_users)
        self.items = table("items", num_items)
        self.friend_weight = float(model.friend_weight)
        self.beta = train.beta
        self.task_a = bpr_task("loss_a")
        self.task_p = bpr_task("loss_p")
        self.task_b = bpr_task("loss_b")

    uses_graph_folds = True

    def table_kinds(self) -> dict[str, str]:
        return {**super().table_kinds(), "friends": "user"}

    def derive_graphs(self, graphs):
        """Adds the friend-mean graph (untracked constant) made from the training graphs."""
        return {**graphs, "friends": friend_mean_graph(graphs)} if graphs else graphs

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        """``users_i`` = P^I, ``users_p`` = P^P, ``items`` = Q, ``friends`` = f_u [U, d]."""
        participants = tf.convert_to_tensor(self.participants)
        return {"users_i": tf.convert_to_tensor(self.initiators), "users_p": participants,
                "items": tf.convert_to_tensor(self.items),
                "friends": sparse_matmul((graphs or self._graphs)["friends"], participants, symmetric=False)}

    def score_items(self, emb, initiator, candidates, training=False):
        """s(i|u) = (1 - a) <P^I_u, Q_i> + a <f_u, Q_i>: [B], [B, C] -> [B, C]."""
        user = ((1.0 - self.friend_weight) * tf.gather(emb["users_i"], initiator)
                + self.friend_weight * tf.gather(emb["friends"], initiator))
        return tf.einsum("bd,bcd->bc", user, tf.gather(emb["items"], candidates))

    def score_participants(self, emb, initiator, item, candidates, training=False):
        """s(p|u,i) = <P^I_u, P^P_p>: [B], [B], [B, C] -> [B, C]."""
        del item
        return tf.einsum("bd,bcd->bc", tf.gather(emb["users_i"], initiator), tf.gather(emb["users_p"], candidates))

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """``L_A + L_P + beta * L_B`` (BPR) on one batch of the training stream."""
        emb = self.propagate_batch(inputs, training)
        items = tf.gather(emb["items"], tf.stack([inputs["item"], inputs["neg_item"]], 1))  # [B, 2, d]
        initiator = tf.gather(emb["users_i"], inputs["initiator"])
        participant = tf.gather(emb["users_p"], inputs["participant"])
        dummy = tf.zeros_like(inputs["initiator"], tf.float32)
        loss = self.task_a(dummy, tf.einsum("bd,bcd->bc", initiator, items), training=training)
        loss += self.task_p(dummy, tf.einsum("bd,bcd->bc", participant, items), training=training)
        users = tf.stack([inputs["participant"], inputs["neg_participant"]], 1)
        return loss + self.beta * self.task_b(
            dummy, self.score_participants(emb, inputs["initiator"], None, users, training), training=training)
