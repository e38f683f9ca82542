"""The popularity ranker: the floor every learned model must clear (docs/design.md).

No trainable weight; every statistic comes from the training graphs (binary edges, so
popularity counts distinct partners, not repeated groups):

* Task A: s(i|u) = log(1 + n_i), n_i = the number of distinct users linked to item i in
  training in any role (initiator, failed launch or participant): the item's degree in the
  user-item part of the "hetero" graph. The initiator is ignored.
* Task B: s(p|u,i) = c(u, p) * (1 + max_q log(1 + m_q)) + log(1 + m_p), where m_p is the number
  of distinct items p joined as a participant in training (p's degree in GPI) and
  c(u, p) = 1 when u and p were in a training group together as initiator and participant
  (an edge of GUP, either direction), else 0. Co-members of the initiator rank first, each
  block by participant popularity. The item is ignored. In an export, an unknown initiator or
  candidate (the out-of-vocabulary row, index U) is nobody's co-member: c = 0.

On Beibei (pipelines/beibei_mgbr.toml's data and protocol; test split, 1:9) this gives MRR@10
0.613 for task A and 0.330 for task B, the reference values of docs/design.md (0.61; 0.30-0.34).

It goes through the same train / evaluate path as every model: ``compute_loss`` returns the
BPR losses of these fixed scores (logged as ``loss_a`` / ``loss_b``, nothing to minimise), and
Keras ``fit`` runs with an empty list of trainable variables (it applies no update), so no
dummy variable is needed. "Training" therefore changes nothing and every epoch gives the same
validation metrics.
"""
from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.models.base import Graphs, GroupBuyingModel
from tfgb.models.context import ModelContext
from tfgb.models.registry import NoSettings
from tfgb.tasks import bpr_task


def _degree(adjacency: tf.sparse.SparseTensor, keep: tf.Tensor) -> tf.Tensor:
    """Number of entries per row of ``adjacency`` among those where ``keep`` is true: float32 [N]."""
    rows = tf.cast(tf.boolean_mask(adjacency.indices[:, 0], keep), tf.int32)
    nodes = tf.cast(adjacency.dense_shape[0], tf.int32)
    return tf.math.bincount(rows, minlength=nodes, maxlength=nodes, dtype=tf.float32)


def pair_keys(initiator: tf.Tensor, participant: tf.Tensor, num_users: int) -> tf.Tensor:
    """The int64 key ``u * (U + 1) + p`` of (initiator, participant) index pairs, u and p in [0, U].

    The radix is U + 1, not U, so that index U, the out-of-vocabulary row of an export, gets keys
    of its own: a pair with u = U or p = U equals no key of two in-vocabulary users (with radix U,
    (u, U) would be the key of (u + 1, 0)). Keys of in-vocabulary pairs keep their row-major order.
    """
    radix = tf.cast(num_users, tf.int64) + 1
    return tf.cast(initiator, tf.int64) * radix + tf.cast(participant, tf.int64)


def popularity_statistics(graphs: Mapping[str, tf.sparse.SparseTensor], num_users: int) -> dict[str, tf.Tensor]:
    """The popularity ranker's fixed tables.

    Args:
      graphs: training graphs with "hetero" and "pi" [U + I, U + I] and "up" [U, U].
      num_users: U.

    Returns:
      ``{"items": log(1 + n_i) [I, 1], "users_p": log(1 + m_p) [U, 1], "users_i": zeros [U, 1],
      "social": sorted int64 keys`` :func:`pair_keys` ``(u, p) of the GUP edges without self-loops [E]}``.
    """
    hetero, pi, up = graphs["hetero"], graphs["pi"], graphs["up"]
    user_item = tf.not_equal(hetero.indices[:, 0] < num_users, hetero.indices[:, 1] < num_users)
    item_users = _degree(hetero, user_item)[num_users:]
    joined = _degree(pi, tf.not_equal(pi.indices[:, 0], pi.indices[:, 1]))[:num_users]
    social = tf.boolean_mask(up.indices, tf.not_equal(up.indices[:, 0], up.indices[:, 1]))
    keys = pair_keys(social[:, 0], social[:, 1], num_users)  # row-major order: already sorted
    return {"items": tf.math.log1p(item_users)[:, None], "users_p": tf.math.log1p(joined)[:, None],
            "users_i": tf.zeros([num_users, 1]), "social": keys}


class Popularity(GroupBuyingModel):
    """Item popularity for task A; co-membership with the initiator, then popularity, for task B.

    Args:
      context: vocabulary sizes and training graphs ("hetero", "pi", "up").
      settings: ``[model.popularity]`` (no settings).
      train: ``beta`` (weight of the logged task B loss).
    """

    def __init__(self, context: ModelContext, settings: NoSettings, train: TrainConfig, **kwargs):
        del settings
        super().__init__(context, **kwargs)
        self.beta = train.beta
        self._tables = Graphs(popularity_statistics(self._graphs.graphs, self.num_users))  # untracked constants
        self.task_a = bpr_task("loss_a")
        self.task_b = bpr_task("loss_b")

    def table_kinds(self) -> dict[str, str]:
        return {**super().table_kinds(), "social": "constant"}

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        """The fixed tables of :func:`popularity_statistics` (nothing is learned)."""
        return dict(self._tables.graphs)

    def score_items(self, emb, initiator, candidates, training=False):
        """s(i|u) = log(1 + n_i): [B], [B, C] -> [B, C] (the initiator is ignored)."""
        del initiator
        return tf.gather(emb["items"][:, 0], candidates)

    def score_participants(self, emb, initiator, item, candidates, training=False):
        """s(p|u,i) = c(u, p) * (1 + max log(1 + m)) + log(1 + m_p): [B], [B], [B, C] -> [B, C]."""
        del item
        # c(u, p): the pair's key among the GUP edges' keys. An out-of-vocabulary initiator or candidate
        # (index U) has a key no edge has (pair_keys), so it is never a co-member.
        query = pair_keys(initiator[:, None], candidates, self.num_users)  # [B, C]
        flat = tf.reshape(query, [-1])
        keys = tf.concat([emb["social"], tf.constant([-1], tf.int64)], 0)  # sentinel: never a query
        position = tf.searchsorted(emb["social"], flat)  # in [0, E], a valid index of keys
        social = tf.reshape(tf.cast(tf.equal(tf.gather(keys, position), flat), tf.float32), tf.shape(query))
        return social * (1.0 + tf.reduce_max(emb["users_p"])) + tf.gather(emb["users_p"][:, 0], candidates)

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """BPR losses of the fixed scores (logged; there is nothing to train)."""
        return self.bpr_loss(inputs, training)
