"""The neural collaborative filtering units of NMTR (paper 004, Eq. 6-8) and the cascade of Eq. 9.

Each unit maps a user embedding p_u and an item embedding q_i (shared by every behaviour, Eq. 4)
to one score f(p_u, q_i):

* GMF (Eq. 6): ``h^T (p_u * q_i)``.
* MLP (Eq. 7): ``z_1 = ReLU(W_1 [p_u; q_i] + b_1)``, ..., ``z_L = ReLU(W_L z_{L-1} + b_L)``, ``h^T z_L``.
  Tower widths halve layer by layer and end at E: ``E * 2^(L-1), ..., 2E, E``.
* NeuMF (Eq. 8): ``h^T [p_u * q_i; z_L]``, h in R^{2E}, on the same shared embeddings (the paper's
  tweak of NeuMF: one embedding layer for GMF and MLP).

Units act on the last axis only, so a score depends on its own (u, i) row alone: any leading shape
(``[N]``, ``[B, C]``) and any order of rows give the same per-row scores.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

UNITS = ("gmf", "mlp", "neumf")


@tf.keras.utils.register_keras_serializable(package="tfgb")
class NCFUnit(tf.keras.layers.Layer):
    """One behaviour's interaction function f^r (Eq. 6, 7 or 8).

    Args:
      kind: ``"gmf"``, ``"mlp"`` or ``"neumf"``.
      dim: E, the embedding width.
      mlp_layers: L, hidden layers of the MLP part (MLP and NeuMF).
    """

    def __init__(self, kind: str, dim: int, mlp_layers: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in UNITS:
            raise ValueError(f"unknown NCF unit {kind!r} (known: {', '.join(UNITS)})")
        self.kind, self.dim, self.mlp_layers = kind, int(dim), int(mlp_layers)
        self.tower = []
        if kind != "gmf":
            widths = [self.dim * 2 ** (self.mlp_layers - 1 - n) for n in range(self.mlp_layers)]
            self.tower = [tf.keras.layers.Dense(w, activation="relu", name=f"mlp_{n}") for n, w in enumerate(widths)]
        self.h = tf.keras.layers.Dense(1, use_bias=False, name="h")

    def call(self, p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
        """Scores ``[..., E]`` user and item rows (same leading shape) -> ``[...]``."""
        parts = []
        if self.kind in ("gmf", "neumf"):
            parts.append(p * q)
        if self.tower:
            z = tf.concat([p, q], -1)
            for layer in self.tower:
                z = layer(z)
            parts.append(z)
        return tf.squeeze(self.h(tf.concat(parts, -1) if len(parts) > 1 else parts[0]), -1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind, "dim": self.dim, "mlp_layers": self.mlp_layers}


def cascade(scores: Sequence[tf.Tensor], biases: Sequence[tf.Tensor], mode: str = "sum") -> list[tf.Tensor]:
    """The cascaded logits of Eq. 9: ``out^1 = f^1 + b^1``, ``out^r = out^{r-1} + f^r + b^r``.

    Args:
      scores: f^r(p_u, q_i) per behaviour r, in cascade order, each of the same shape.
      biases: b_i^r per behaviour, shaped like the scores.
      mode: ``"sum"`` (Eq. 9) or ``"mean"``: ``out^r = (out^{r-1} + f^r) / 2 + b^r``, the averaged
        cascade of the authors' public code (documented option, not the paper).

    Returns:
      out^r for every r (logits; y^r = sigmoid(out^r)).
    """
    if mode not in ("sum", "mean"):
        raise ValueError(f"cascade mode must be 'sum' or 'mean', got {mode!r}")
    out: list[tf.Tensor] = []
    for f, b in zip(scores, biases):
        if not out:
            out.append(f + b)
        elif mode == "sum":
            out.append(out[-1] + f + b)
        else:
            out.append((out[-1] + f) / 2.0 + b)
    return out
