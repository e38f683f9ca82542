"""Pointwise log loss as a TFRS task: the per-behaviour terms of NMTR's Eq. 12 and the launch losses."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


def bce_task(name: str) -> tfrs.tasks.Ranking:
    """A TFRS ranking task whose loss is the binary log loss of logits, summed with the sample weights.

    Callers pass labels and logits as [N, 1] and weights that sum to the normalisation they want
    (e.g. 1 / positives on every row of a behaviour), so the loss is ``sum_n w_n * bce(y_n, z_n)``.
    """
    return tfrs.tasks.Ranking(
        loss=tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
        loss_metrics=[tf.keras.metrics.Mean(name=name)],
        name=f"{name}_task",
    )
