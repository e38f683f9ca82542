"""MGBR's prediction heads MLP_A and MLP_B (Eq. 16-17), returning logits."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

__all__ = ["PredictionHead"]


@tf.keras.utils.register_keras_serializable(package="tfgb")
class PredictionHead(tf.keras.layers.Layer):
    """MLP_A or MLP_B of Eq. 16-17: hidden ReLU layers, then one logit.

    Returns the logit, not s = sigmoid(logit): the sigmoid is monotone, so ranking uses
    logits, and the losses apply log-sigmoid themselves.

    Args:
        hidden_units: Widths of the hidden Dense layers (may be empty: a linear score).
        activation: Activation of the hidden layers.
        zero_init: Start the logit layer's kernel at zero, so that the head scores every row the
            same until training gives it a consistent direction (with ``model.bias`` the model
            then starts as its bias alone).
        **kwargs: Base `Layer` arguments.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (),
        activation: str = "relu",
        zero_init: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_units = [int(units) for units in hidden_units]
        self.activation = activation
        self.zero_init = bool(zero_init)
        self.hidden = [
            tf.keras.layers.Dense(units, activation=activation, name=f"hidden_{index}")
            for index, units in enumerate(self.hidden_units)
        ]
        self.logit = tf.keras.layers.Dense(1, name="logit",
                                           kernel_initializer="zeros" if self.zero_init else "glorot_uniform")

    def build(self, input_shape: tf.TensorShape) -> None:
        """Builds the Dense layers for inputs [..., width]."""
        shape = tf.TensorShape(input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.logit.build(shape)
        super().build(input_shape)

    @property
    def first_kernel(self) -> tf.Tensor:
        """Kernel [width, h] of the head's first Dense layer (its first hidden layer, or the logit)."""
        return (self.hidden[0] if self.hidden else self.logit).kernel

    def from_first_product(self, z: tf.Tensor) -> tf.Tensor:
        """The logits from ``z = inputs @ first_kernel`` (e.g. computed inside the block, see
        :func:`tfgb.layers.fused.run` with ``out_kernels``): the same as ``call(inputs)`` up to rounding."""
        first = self.hidden[0] if self.hidden else self.logit
        x = z + first.bias if first.use_bias else z
        x = first.activation(x)
        for layer in self.hidden[1:]:
            x = layer(x)
        if self.hidden:
            x = self.logit(x)
        return tf.squeeze(x, axis=-1)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """Scores gate outputs.

        Args:
            inputs: g^L_A or g^L_B, [..., width] (e.g. [N, d] or [B, C, d]).

        Returns:
            Logits [...] (the last axis removed).
        """
        x = inputs
        for layer in self.hidden:
            x = layer(x)
        return tf.squeeze(self.logit(x), axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(hidden_units=list(self.hidden_units), activation=self.activation, zero_init=self.zero_init)
        return config
