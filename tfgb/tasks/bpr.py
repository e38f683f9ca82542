"""Bayesian personalised ranking (BPR) as a TFRS task: Eq. 19 and Eq. 24 of MGBR."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


@tf.keras.utils.register_keras_serializable(package="tfgb")
class BPRLoss(tf.keras.losses.Loss):
    """Mean of -log sigmoid(s_pos - s_neg) over every (positive, negative) pair.

    ``y_pred`` is [N, 1 + M]: column 0 holds the positive's logit, columns 1..M the logits of
    its M negatives. ``y_true`` is ignored (the layout carries the labels). The mean over all
    N*M pairs is the 1/|N+ u N-| normalisation of Eq. 19 (and 1/(|N+| |T|) of Eq. 24).
    """

    def __init__(self, name: str = "bpr", **kwargs):
        kwargs["reduction"] = tf.keras.losses.Reduction.NONE  # call() already returns the mean
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        del y_true
        y_pred = tf.convert_to_tensor(y_pred)
        diff = y_pred[:, :1] - y_pred[:, 1:]  # [N, M]
        # -log sigmoid(x) == softplus(-x), stable for large |x|.
        return tf.reduce_mean(tf.nn.softplus(-diff))


def bpr_task(name: str) -> tfrs.tasks.Ranking:
    """A TFRS ranking task whose loss is BPR and whose logged metric is ``name``."""
    return tfrs.tasks.Ranking(
        loss=BPRLoss(),
        loss_metrics=[tf.keras.metrics.Mean(name=name)],
        name=f"{name}_task",
    )
