import math

import numpy as np
import pytest
import tensorflow as tf

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfgb.tasks import BPRLoss, ListwiseLoss, bpr_task, listwise_task


def _softplus(x):
    return math.log1p(math.exp(x))


def test_bpr_loss_hand_computed():
    logits = np.array([[2.0, 1.0, 3.0], [0.0, -1.0, 0.0]], dtype=np.float32)
    want = np.mean([_softplus(-1.0), _softplus(1.0), _softplus(-1.0), _softplus(0.0)])
    got = BPRLoss()(np.zeros(2), logits).numpy()
    assert got == pytest.approx(want, rel=1e-6)


def test_bpr_is_stable_for_large_margins():
    logits = tf.constant([[100.0, -100.0], [-100.0, 100.0]])
    got = BPRLoss()(tf.zeros(2), logits).numpy()
    assert np.isfinite(got) and got == pytest.approx(100.0, rel=1e-4)


def test_listwise_loss_hand_computed():
    logits = np.array([[1.0, 2.0, 0.0, 0.5]], dtype=np.float32)
    labels = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    log_z = math.log(sum(math.exp(v) for v in logits[0]))
    want = -((0.0 - log_z) + (0.5 - log_z)) / 4
    assert ListwiseLoss()(labels, logits).numpy() == pytest.approx(want, rel=1e-6)


def test_tasks_log_their_loss_under_their_name():
    task = bpr_task("loss_a")
    loss = task(tf.zeros(1), tf.constant([[1.0, 0.0]]))
    assert [m.name for m in task.metrics] == ["loss_a"]
    assert task.metrics[0].result().numpy() == pytest.approx(loss.numpy())
    aux = listwise_task("aux_a")
    aux(tf.constant([[0.0, 1.0]]), tf.constant([[1.0, 0.0]]))
    assert [m.name for m in aux.metrics] == ["aux_a"]


def test_losses_serialize():
    for cls in (BPRLoss, ListwiseLoss):
        loss = cls()
        again = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
        assert isinstance(again, cls)
