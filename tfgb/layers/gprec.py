"""GPRec's bi-level user modeling (paper 002): learnable groups with dual embeddings, individual preference.

For a user u with feature embeddings E_u = [E_p, E_o] (E_p: the personal, id-like features; E_o: the
others, e.g. bucketised activity counts):

* **Group division** (Eq. 2): a classifier g gives per group i the scores S = (s_i^1, s_i^0), s^1 for
  "u is in group i", s^0 for "u is not". g is one MLP per group (the paper: [64, 32, 2] each); a softmax
  over each pair makes s positive, so Eq. 3's log s is defined (it is then a log-softmax).
* **Masks** (Eq. 3-4): m_i^1 = softmax(((log s_i^1 + gn^1) / tau, (log s_i^0 + gn^0) / tau))_1, gn Gumbel
  noise in training only; m_i^0 = 1 - m_i^1. At inference the masks are deterministic and, as tau -> 0,
  one-hot: m_i^1 -> [s_i^1 > s_i^0]. A user may belong to several groups.
* **Dual group embeddings** (Eq. 5-6): per group a positive p_i and a negative n_i; r_G is the
  concatenation over groups of m_i^1 p_i + m_i^0 n_i ([G * d]; ``pool="sum"`` sums them instead, [d], the
  paper's alternative for large G). The contrast r_G^Con (Eq. 9) swaps the masks: (1 - M) . E_G.
* **Individual preference** (Eq. 12): r_P = f2(E_p), an MLP. Eq. 13's cosine needs r_P as wide as r_G,
  so f2 ends at r_G's width (the paper does not give r_P's width; this is the reading that makes Eq. 13
  defined).
* **Losses**: L_G (Eq. 7-8) and L_G^Con (Eq. 10-11) score items from r_G and r_G^Con with one MLP f1
  (:class:`PreferenceMLP`); in Eq. 10 f1's parameters are fixed (``frozen=True`` stops their gradient)
  and Eq. 20 maximises L_G^Con. L_O (Eq. 13, :func:`orthogonal_loss`) decorrelates r_G and r_P: Eq. 13
  as printed minimises the *signed* cosine, which drives it to -1 (anti-correlation), not to the
  independence the text asks for; the default reads it as |cos| (``"abs"``), with ``"square"`` and the
  literal ``"signed"`` as options.

Every function here maps each user row on its own: no statistic crosses the rows of a batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

__all__ = [
    "ORTHOGONAL",
    "POOLS",
    "DualGroupEmbedding",
    "GroupClassifier",
    "PreferenceMLP",
    "masks",
    "orthogonal_loss",
]

ORTHOGONAL = ("abs", "square", "signed")
POOLS = ("concat", "sum")


@tf.keras.utils.register_keras_serializable(package="tfgb")
class GroupClassifier(tf.keras.layers.Layer):
    """g of Eq. 2: one ReLU MLP per group, all groups evaluated at once.

    Args:
      groups: G.
      hidden_units: widths of each group's hidden layers (the paper: (64, 32)); each MLP ends in 2 scores.
    Call:
      inputs [N, F] user feature embeddings E_u -> log S [N, G, 2]: log-softmax over (in, out), so
      exp(log S) are the positive scores s_i^1, s_i^0 of Eq. 2 summing to one per group.
    """

    def __init__(self, groups: int, hidden_units: Sequence[int] = (64, 32), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.hidden_units = [int(u) for u in hidden_units]

    def build(self, input_shape: tf.TensorShape) -> None:
        width = int(input_shape[-1])
        self.kernels, self.biases = [], []
        for index, units in enumerate([*self.hidden_units, 2]):
            self.kernels.append(self.add_weight(name=f"kernel_{index}", shape=(self.groups, width, units),
                                                initializer="glorot_uniform"))
            self.biases.append(self.add_weight(name=f"bias_{index}", shape=(self.groups, units), initializer="zeros"))
            width = units
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.einsum("nf,gfh->ngh", inputs, self.kernels[0]) + self.biases[0]
        for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
            x = tf.einsum("ngf,gfh->ngh", tf.nn.relu(x), kernel) + bias
        return tf.nn.log_softmax(x, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups, "hidden_units": list(self.hidden_units)}


def masks(log_scores: tf.Tensor, tau: float, training: bool = False, seed: Any = None) -> tf.Tensor:
    """m^1 of Eq. 3: ``log_scores`` [N, G, 2] (log s^1, log s^0) -> [N, G] in (0, 1); m^0 = 1 - m^1 (Eq. 4).

    Gumbel noise gn = -log(-log u), u ~ U(0, 1), is added only when ``training``; at inference the masks
    are a deterministic function of the scores.
    """
    x = log_scores
    if training:
        u = tf.random.uniform(tf.shape(x), minval=1e-9, maxval=1.0, seed=seed)
        x = x - tf.math.log(-tf.math.log(u))
    return tf.nn.softmax(x / tau, axis=-1)[..., 0]


@tf.keras.utils.register_keras_serializable(package="tfgb")
class DualGroupEmbedding(tf.keras.layers.Layer):
    """E_G = [p_1..p_G; n_1..n_G] (Eq. 5) and r_G = M . E_G (Eq. 6).

    Args:
      groups: G.
      dim: d, the width of each group embedding (the paper: 16).
      pool: ``"concat"`` (Eq. 6: [G * d]) or ``"sum"`` (the sum of the G patterns: [d]).
    Call:
      m1 [N, G] -> r [N, G * d] or [N, d]; pass ``1 - m1`` for r_G^Con (Eq. 9).
    """

    def __init__(self, groups: int, dim: int, pool: str = "concat", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r} (known: {', '.join(POOLS)})")
        self.groups, self.dim, self.pool = int(groups), int(dim), pool
        # one initializer each: a shared unseeded instance gives both the same values (p_i = n_i, and the
        # masks would get no gradient at the start)
        self.positive = self.add_weight(name="positive", shape=(self.groups, self.dim),
                                        initializer=tf.keras.initializers.RandomNormal(stddev=0.1))
        self.negative = self.add_weight(name="negative", shape=(self.groups, self.dim),
                                        initializer=tf.keras.initializers.RandomNormal(stddev=0.1))

    @property
    def width(self) -> int:
        return self.groups * self.dim if self.pool == "concat" else self.dim

    def call(self, m1: tf.Tensor) -> tf.Tensor:
        patterns = m1[..., None] * self.positive + (1.0 - m1)[..., None] * self.negative  # [N, G, d]
        if self.pool == "sum":
            return tf.reduce_sum(patterns, axis=-2)
        return tf.reshape(patterns, tf.concat([tf.shape(m1)[:-1], [self.groups * self.dim]], 0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups, "dim": self.dim, "pool": self.pool}


@tf.keras.utils.register_keras_serializable(package="tfgb")
class PreferenceMLP(tf.keras.layers.Layer):
    """An MLP from a representation to one logit (f1 of Eq. 7 and 10; f_G, f_P of Eq. 17; f2 with ``logit=False``).

    Args:
      hidden_units: ReLU hidden widths (the paper: (64, 32, 16) before the logit).
      output_units: width of the last, linear layer (1 for a logit).
    Call:
      inputs [..., F], ``frozen``: use the weights without letting a gradient reach them (Eq. 10: f1 "with
      theta_1 fixed") -> [..., output_units] (the last axis dropped when it is 1).
    """

    def __init__(self, hidden_units: Sequence[int] = (64, 32, 16), output_units: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_units = [int(u) for u in hidden_units]
        self.output_units = int(output_units)

    def build(self, input_shape: tf.TensorShape) -> None:
        width = int(input_shape[-1])
        self.kernels, self.biases = [], []
        for index, units in enumerate([*self.hidden_units, self.output_units]):
            self.kernels.append(self.add_weight(name=f"kernel_{index}", shape=(width, units),
                                                initializer="glorot_uniform"))
            self.biases.append(self.add_weight(name=f"bias_{index}", shape=(units,), initializer="zeros"))
            width = units
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, frozen: bool = False) -> tf.Tensor:
        x = inputs
        last = len(self.kernels) - 1
        for index, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            if frozen:
                kernel, bias = tf.stop_gradient(kernel), tf.stop_gradient(bias)
            x = tf.tensordot(x, kernel, axes=1) + bias
            if index < last:
                x = tf.nn.relu(x)
        return tf.squeeze(x, -1) if self.output_units == 1 else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "output_units": self.output_units}


def orthogonal_loss(r_g: tf.Tensor, r_p: tf.Tensor, mode: str = "abs") -> tf.Tensor:
    """L_O of Eq. 13, the mean over rows of the cosine of r_G and r_P [N, W]: ``|cos|`` (``"abs"``),
    ``cos^2`` (``"square"``) or the signed cosine as printed (``"signed"``)."""
    if mode not in ORTHOGONAL:
        raise ValueError(f"unknown orthogonal loss {mode!r} (known: {', '.join(ORTHOGONAL)})")
    cos = tf.reduce_sum(tf.math.l2_normalize(r_g, -1) * tf.math.l2_normalize(r_p, -1), -1)
    value = {"abs": tf.abs(cos), "square": tf.square(cos), "signed": cos}[mode]
    return tf.reduce_mean(value)
