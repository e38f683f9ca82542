"""The auxiliary list-wise loss of task A (Eq. 21 of MGBR) as a TFRS task.

Eq. 21 is a ListNet-style loss over the 2|T| corrupted triples of a positive t = (u, i, p):
T^I_t (the item replaced, i') and T^P_t (the participant replaced, p'), with y = 1 for triples
in T^P. Read with Eq. 20 (s(u, i, p') > s(u, i', p)), it pushes the model to keep replacing the
participant cheaper than replacing the item. tfgb normalises the scores of each list with a
softmax (ListNet) and takes L'A = -1/(N * 2|T|) * sum y * log softmax(s).
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


@tf.keras.utils.register_keras_serializable(package="tfgb")
class ListwiseLoss(tf.keras.losses.Loss):
    """-sum(y * log_softmax(logits)) / list_length, averaged over lists.

    ``y_true`` and ``y_pred`` are [N, C]; ``y_true`` holds 0/1 relevance labels.
    """

    def __init__(self, name: str = "listwise", **kwargs):
        kwargs["reduction"] = tf.keras.losses.Reduction.NONE  # call() already returns the mean
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.cast(y_true, y_pred.dtype)
        log_p = tf.nn.log_softmax(y_pred, axis=-1)
        per_list = -tf.reduce_sum(y_true * log_p, axis=-1) / tf.cast(tf.shape(y_pred)[-1], y_pred.dtype)
        return tf.reduce_mean(per_list)


def listwise_task(name: str) -> tfrs.tasks.Ranking:
    """A TFRS ranking task with :class:`ListwiseLoss`, logged as metric ``name``."""
    return tfrs.tasks.Ranking(
        loss=ListwiseLoss(),
        loss_metrics=[tf.keras.metrics.Mean(name=name)],
        name=f"{name}_task",
    )
