"""The launch -> deal cascade as a plug-in for MGBR and MAMGBR (``launch_task`` in their section).

NMTR's Eq. 9 with two behaviours, on the model's own embeddings: a launch head
``out^launch(u, i) = h^T (e_u * e_i) + b_i^launch`` (a GMF unit, Eq. 6, over the propagated initiator
and item embeddings) whose logit is added to task A's: ``s_A(i|u) = out^launch(u, i) + MLP_A(...) (+ the
item bias)``, so task A's score is the deal logit of the cascade. Trained on the stream's behaviour
rows (:mod:`tfgb.data.behavior_rows`), weighted by ``launch_weight``:

* ``L_launch``: Eq. 12's launch term on the launch head alone: every row (a deal or a failed launch)
  is a positive of ``launch``, its N never-interacted items are negatives.
* ``L_success``: the log loss of sigmoid(r(u, i)) on the launched pairs of the rows, label 1 for a
  deal, 0 for a failed launch, where ``r = s_A - out^launch`` is the cascade's deal increment (MGBR's
  own task-A logit, MLP_A + the item bias): failed launches reach the model as labels, not only as
  graph edges.

So ``launch_success`` = P(deal | launch) = sigmoid(r), and task A ranks by out^launch + r, the launch
log-odds plus the success log-odds (log P(deal) = log P(launch) + log P(deal | launch) where both are
small). Training sigmoid(s_A) itself on launched pairs was measured worse on Beibei (launch AUC 0.750,
task A MRR@10 0.601): s_A must also rank launched items above never-launched ones, where popularity
helps, while among launches the often-launched items fail more often (popularity's launch AUC is 0.39).
The BPR and auxiliary losses of Eq. 25 are unchanged (they rank with the cascaded score).
"""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfgb.layers.ncf import NCFUnit
from tfgb.tasks import bce_task


class LaunchCascade(tf.keras.layers.Layer):
    """The launch head and its two losses (see the module docstring).

    Args:
      num_items: I (one launch bias per item).
      dim: d, the width of the propagated embeddings.
      weight: ``launch_weight``, the weight of ``L_launch + L_success`` in the model's loss.
    """

    def __init__(self, num_items: int, dim: int, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.unit = NCFUnit("gmf", dim, name="launch_unit")
        self.bias = self.add_weight(name="launch_bias", shape=(num_items, 1), initializer="zeros")
        self.weight = float(weight)
        self.launch_task = bce_task("loss_launch")
        self.success_task = bce_task("loss_success")

    def logits(self, emb: dict[str, tf.Tensor], user: tf.Tensor, item: tf.Tensor) -> tf.Tensor:
        """out^launch(u, i) for ``user`` and ``item`` of one shape (or ``user`` broadcastable to it)."""
        user = tf.broadcast_to(user, tf.shape(item))
        e_u, e_i = tf.gather(emb["users_i"], user), tf.gather(emb["items"], item)
        return self.unit(e_u, e_i) + tf.gather(emb["launch_bias"][:, 0], item)

    def loss(self, emb: dict[str, tf.Tensor], inputs: dict[str, tf.Tensor],
             residual: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], training: bool = False) -> tf.Tensor:
        """``weight * (L_launch + L_success)`` on the batch's behaviour rows.

        Args:
          residual: the model's deal increment r (task A's logit without the launch head) for
            ``(initiator [L], items [L, 1]) -> [L, 1]``.
        """
        user = tf.reshape(inputs["behavior_user"], [-1])
        item = tf.reshape(inputs["behavior_item"], [-1])
        stage = tf.reshape(inputs["behavior_stage"], [-1])
        neg = inputs["behavior_neg"]
        negatives = tf.reshape(neg[:, :, 0, :], [-1, neg.shape[3]])  # launch negatives [L, N]
        launch = tf.concat([self.logits(emb, user, item)[:, None], self.logits(emb, user[:, None], negatives)], 1)
        labels = tf.concat([tf.ones_like(launch[:, :1]), tf.zeros_like(launch[:, 1:])], 1)
        rows = tf.cast(tf.shape(user)[0], tf.float32)
        weight = tf.fill(tf.shape(launch), 1.0 / rows)  # mean over positives of pos + N negatives (Eq. 12)
        l_launch = self.launch_task(tf.reshape(labels, [-1, 1]), tf.reshape(launch, [-1, 1]),
                                    sample_weight=tf.reshape(weight, [-1, 1]), training=training)
        deal = tf.cast(stage == neg.shape[2] - 1, tf.float32)[:, None]
        success = residual(user, item[:, None])  # [L, 1]
        l_success = self.success_task(deal, success, sample_weight=tf.fill(tf.shape(deal), 1.0 / rows),
                                      training=training)
        return self.weight * (l_launch + l_success)
