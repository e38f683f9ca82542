"""``train.weight_decay``: 0 gives Adam, > 0 AdamW, whose decoupled decay shrinks the weights.

AdamW's step on weight w with gradient g is Adam's step on g plus w <- w (1 - lr * wd): the decay
does not enter Adam's moments, so on the same gradients the two runs differ exactly by that shrinkage.
"""
from __future__ import annotations

import numpy as np

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb import config as cfg
from tfgb.session import make_optimizer


def test_weight_decay_selects_adamw():
    adam = make_optimizer(cfg.load(None, ["train.learning_rate=0.01"]).train)
    adamw = make_optimizer(cfg.load(None, ["train.learning_rate=0.01", "train.weight_decay=0.2"]).train)
    assert type(adam) is tf.keras.optimizers.Adam and not isinstance(adam, tf.keras.optimizers.AdamW)
    assert isinstance(adamw, tf.keras.optimizers.AdamW)
    assert float(adamw.weight_decay) == 0.2
    assert float(adamw.learning_rate) == float(adam.learning_rate) == np.float32(0.01)  # a float32 variable


def test_adamw_shrinks_the_weights_adam_moves_on_the_same_gradients():
    lr, wd, steps = 0.01, 0.2, 5
    adam = make_optimizer(cfg.load(None, [f"train.learning_rate={lr}"]).train)
    adamw = make_optimizer(cfg.load(None, [f"train.learning_rate={lr}", f"train.weight_decay={wd}"]).train)
    start = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    w_adam, w_adamw = tf.Variable(start), tf.Variable(start)
    rng = np.random.default_rng(0)
    expected = start.astype(np.float64)
    before = start.astype(np.float64)
    for _ in range(steps):
        grad = tf.constant(rng.normal(size=start.shape).astype(np.float32))
        adam.apply_gradients([(grad, w_adam)])
        adamw.apply_gradients([(grad, w_adamw)])
        adam_step = w_adam.numpy() - before  # the step Adam's moments give for this gradient
        before = w_adam.numpy().astype(np.float64)
        expected = expected * (1 - lr * wd) + adam_step
    np.testing.assert_allclose(w_adamw.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Every weight ends closer to 0 than under Adam, by about lr * wd * |w| per step.
    assert (np.abs(w_adamw.numpy()) < np.abs(w_adam.numpy())).all()
    shrink = np.abs(w_adam.numpy()) - np.abs(w_adamw.numpy())
    np.testing.assert_allclose(shrink, steps * lr * wd * np.abs(start), rtol=0.05)
