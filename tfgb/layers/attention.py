"""MAMGBR's attention experts, two-layer softmax gates and multi-task block (paper 001, Sec. 3.4-3.5).

MAMGBR keeps MGBR's multi-task framework (task A, shared S and task B, each with K experts and
a gate per layer) and changes what an expert and a gate are:

    Q = X W_Q,  K = X W_K,  V = X W_V                                        (Eq. 7)
    alpha_{ij} = softmax_j(Q_i K_j^T / sqrt(d_head))                          (Eq. 8-9)
    O_i = sum_j alpha_{ij} V_j;  MultiHead = Concat(head_1..head_h) W_O       (Eq. 10-11)
    E(x) = Dropout(BatchNorm(ReLU(W_2 ReLU(W_1 MultiHead(Q, K, V) + b_1) + b_2)))  (Sec. 3.5)
    gate(x) = softmax(W_g2 ReLU(W_g1 x + b_g1) + b_g2)                        (Eq. 15)

Readings of the paper made here (it is silent or ambiguous on these points):

* Tokens. Attention needs a sequence; an expert's input is one vector per row, and attention
  over a sequence of length one is a linear map. X is therefore read as the *parts* of the
  expert input, one token each: at layer 1 the three tokens (e_u, e_i, e_p), each w = 2d wide
  (MGBR's g^0 = e_u || e_i || e_p, Eq. 15 of MGBR); at later layers the gate outputs that
  MGBR concatenates, (g_A, g_S) for A, (g_B, g_S) for B and (g_A, g_S, g_B) for S, each d wide
  (without S: the single token g_A or g_B). Attention runs across the tokens of one row only.
* Heads. h heads of d_head = max(1, d // h) (d the expert width): h x d_head = d, so the head
  count splits the expert width and does not multiply the cost. W_O maps back to the token
  width ("restore the input dimensions", Eq. 11). Q, K, V and W_O have no bias (Eq. 7, 11).
* Pooling. MultiHead(X) has the shape of X; its tokens are concatenated (which keeps the role
  of each token) and the FFN maps that d_input = T x width vector to d_hidden and then to the
  expert width d: W_1 [d_input, d_hidden], W_2 [d_hidden, d] as in Eq. 12-13. d_hidden
  defaults to 2d (the paper gives no value).
* Activation after W_2. Eq. 13 has none; the final expression E(x) has ReLU before the
  BatchNorm. E(x) is followed.
* Residuals. The paper's E(x) has no residual connection and no layer normalisation; none is
  added.
* BatchNorm normalises every expert's output feature on its own (statistics per expert and
  feature over the rows of the batch) in training, and uses the moving averages in inference,
  so that a row's score depends only on that row at inference. The momentum is 0.9 (Keras
  uses 0.99): the moving statistics must follow the embeddings within a few hundred steps.
* Gates. Every gate is two dense layers (ReLU between, d_gate = d hidden units by default)
  and a softmax over all the experts it mixes (Eq. 15); a gate's input is its experts'
  input, flattened. MAMGBR's Sec. 3.5 keeps MGBR's argument that the pairs (u, i), (u, p),
  (i, p) carry different information, so MGBR's adjusted gates (Eq. 11-13 of MGBR, weight
  alpha) are kept, each now a two-layer softmax gate; alpha = 0 leaves the generic gates only.
* The wiring (which gate mixes which expert group, layer-1 inputs, no gate S at the last layer,
  the meaning of shared=False) is MGBR's: :class:`MultiHeadTaskBlock` is a
  :class:`~tfgb.layers.mtl.TaskBlock` whose factories make these experts and gates.

No operation mixes rows except BatchNorm in training mode: in inference mode every output row
depends only on the same input row.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from tfgb.layers.layout import project
from tfgb.layers.mtl import TaskBlock

__all__ = ["AttentionExperts", "MultiHeadTaskBlock", "SoftmaxGate"]


@tf.keras.utils.register_keras_serializable(package="tfgb")
class AttentionExperts(tf.keras.layers.Layer):
    """K MAMGBR experts over one token sequence, computed together (Sec. 3.4-3.5 of MAMGBR).

    Expert k maps the tokens X [T, width] of a row to

        E_k(X) = Dropout(BatchNorm(ReLU(W2_k ReLU(W1_k flat(MultiHead_k(X)) + b1_k) + b2_k)))

    where MultiHead_k is Eq. 7-11 with its own W_Q, W_K, W_V [width, h, d_head] and W_O
    [h, d_head, width], and flat() concatenates the T tokens. With `attention=False`
    (MAMGBR-MH) MultiHead_k is the identity: the expert is the FFN of the flattened input.

    ``call`` computes this as written; ``from_inputs`` / ``from_tokens`` (the fused path) compute the
    same from per-token products, with W_O folded into W_1.

    Weights, in `get_weights()` order: `query`, `key`, `value` [K, width, h, d_head] and
    `output` [K, h, d_head, width] (only with attention), `ffn_1` [K, T*width, hidden],
    `ffn_1_bias` [K, hidden], `ffn_2` [K, hidden, dim], `ffn_2_bias` [K, dim], then the
    BatchNorm's gamma, beta (trainable) and moving mean and variance, each [K*dim].

    Args:
        num_experts: Experts K.
        dim: Output width d of every expert.
        num_heads: Attention heads h (Sec. 4.7 of MAMGBR: 8 is best); d_head = max(1, d // h).
        hidden: FFN hidden width d_hidden (default 2d).
        dropout: Dropout rate on the expert output (training only).
        attention: Whether the experts have multi-head attention (False: MAMGBR-MH).
        momentum: BatchNorm momentum of the moving statistics.
        **kwargs: Base `Layer` arguments.
    """

    def __init__(
        self,
        num_experts: int,
        dim: int,
        num_heads: int = 8,
        hidden: int | None = None,
        dropout: float = 0.1,
        attention: bool = True,
        momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_experts < 1 or dim < 1 or num_heads < 1:
            raise ValueError(
                f"AttentionExperts needs num_experts, dim and num_heads >= 1, got "
                f"num_experts={num_experts}, dim={dim}, num_heads={num_heads}."
            )
        self.num_experts = int(num_experts)
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.hidden = int(hidden) if hidden else 2 * self.dim
        self.dropout = float(dropout)
        self.attention = bool(attention)
        self.momentum = float(momentum)
        self.head_dim = max(1, self.dim // self.num_heads)
        # Statistics per expert and feature: the outputs are flattened to [N, K*d] around it.
        self.norm = tf.keras.layers.BatchNormalization(momentum=self.momentum, name="batch_norm")
        self.drop = tf.keras.layers.Dropout(self.dropout, name="dropout")

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the attention, FFN and BatchNorm weights for inputs [N, T, width]."""
        shape = tf.TensorShape(input_shape)
        if shape.rank != 3 or shape[1] is None or shape[2] is None:
            raise ValueError(f"AttentionExperts expects inputs [N, T, width] with known T and width, got {shape}.")
        self.num_tokens, self.width = int(shape[1]), int(shape[2])
        k, h, c = self.num_experts, self.num_heads, self.head_dim
        if self.attention:
            self.query = self.add_weight(name="query", shape=(k, self.width, h, c), initializer="glorot_uniform")
            self.key = self.add_weight(name="key", shape=(k, self.width, h, c), initializer="glorot_uniform")
            self.value = self.add_weight(name="value", shape=(k, self.width, h, c), initializer="glorot_uniform")
            self.output_kernel = self.add_weight(name="output", shape=(k, h, c, self.width),
                                                 initializer="glorot_uniform")
        flat = self.num_tokens * self.width
        self.ffn_1 = self.add_weight(name="ffn_1", shape=(k, flat, self.hidden), initializer="glorot_uniform")
        self.ffn_1_bias = self.add_weight(name="ffn_1_bias", shape=(k, self.hidden), initializer="zeros")
        self.ffn_2 = self.add_weight(name="ffn_2", shape=(k, self.hidden, self.dim), initializer="glorot_uniform")
        self.ffn_2_bias = self.add_weight(name="ffn_2_bias", shape=(k, self.dim), initializer="zeros")
        with tf.name_scope(self.norm.name):
            self.norm.build(tf.TensorShape([None, k * self.dim]))
        super().build(input_shape)

    def multi_head(self, x: tf.Tensor) -> tf.Tensor:
        """Eq. 7-11 for every expert: tokens [N, T, width] -> MultiHead(X) [K, N, T, width]."""
        q = tf.einsum("ntw,kwhc->knhtc", x, self.query)  # Eq. 7
        key = tf.einsum("ntw,kwhc->knhtc", x, self.key)
        v = tf.einsum("ntw,kwhc->knhtc", x, self.value)
        weights = tf.nn.softmax(tf.einsum("knhtc,knhsc->knhts", q, key) / float(self.head_dim) ** 0.5)  # Eq. 8-9
        heads = tf.einsum("knhts,knhsc->knhtc", weights, v)  # Eq. 10
        return tf.einsum("knhtc,khcw->kntw", heads, self.output_kernel)  # Eq. 11: Concat(heads) W_O

    def _ffn_and_norm(self, pre: tf.Tensor, training: bool | None) -> tf.Tensor:
        """From W_1 x [K, N, hidden] to the expert outputs [N, K, dim] (Eq. 12-14, ReLU of E(x), dropout)."""
        hidden = tf.nn.relu(pre + self.ffn_1_bias[:, None, :])  # Eq. 12
        out = tf.nn.relu(tf.matmul(hidden, self.ffn_2) + self.ffn_2_bias[:, None, :])  # Eq. 13 + ReLU of E(x)
        k = self.num_experts
        out = tf.reshape(tf.transpose(out, [1, 0, 2]), [-1, k * self.dim])  # [N, K*d]
        out = self.norm(out, training=training)  # Eq. 14
        out = self.drop(out, training=training)
        return tf.reshape(out, [-1, k, self.dim])

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Runs the K experts on token sequences.

        Args:
            inputs: Tokens [N, T, width].
            training: Training mode (batch statistics and dropout) or inference mode.

        Returns:
            Expert outputs [N, K, dim].
        """
        flat = self.num_tokens * self.width
        if self.attention:
            x = tf.reshape(self.multi_head(inputs), [self.num_experts, -1, flat])  # flat(MultiHead(X))
            pre = tf.matmul(x, self.ffn_1)
        else:
            pre = tf.einsum("nf,kfh->knh", tf.reshape(inputs, [-1, flat]), self.ffn_1)
        return self._ffn_and_norm(pre, training)

    # -- the fused path -------------------------------------------------------------------------
    def _projection(self, kernel: tf.Tensor) -> tf.Tensor:
        """[K, width, h, d_head] -> [width, K*h*d_head], all experts' heads in one matrix."""
        return tf.reshape(tf.transpose(kernel, [1, 0, 2, 3]), [self.width, -1])

    def input_kernels(self, token: int, width: int | None = None) -> list[tuple[Any, tf.Tensor]]:
        """The kernels [width, columns] the experts apply to token ``token`` on its own.

        W_Q, W_K, W_V of all experts and heads (Eq. 7), named per token; without attention, token t's
        rows of W_1 (Eq. 12), whose products are added over the tokens.
        """
        if self.attention:
            return [((name, token), self._projection(kernel))
                    for name, kernel in (("query", self.query), ("key", self.key), ("value", self.value))]
        rows = self.ffn_1[:, token * self.width:(token + 1) * self.width, :]  # [K, width, hidden]
        return [("ffn_1", tf.reshape(tf.transpose(rows, [1, 0, 2]), [self.width, -1]))]

    def attend(self, q: Sequence[tf.Tensor], key: Sequence[tf.Tensor], v: Sequence[tf.Tensor]) -> tf.Tensor:
        """Eq. 8-10 for every expert and head from per-token projections.

        The T x T attention of a row is unrolled over the (query, key) token pairs: T is 2 or 3,
        and a few element-wise products per pair are much faster on CPU than N*K*h tiny matrix
        products or one broadcast over [N, T, T, K, h, d_head].

        Args:
            q, key, v: One [N, K*h*d_head] projection per token (Eq. 7).

        Returns:
            Heads [K, N, T*h*d_head] (token-major within each expert).
        """
        k, h, c = self.num_experts, self.num_heads, self.head_dim
        q, key, v = ([tf.reshape(x, [-1, k * h, c]) for x in xs] for xs in (q, key, v))
        scale = 1.0 / float(c) ** 0.5
        heads = []
        for q_t in q:
            scores = tf.stack([tf.reduce_sum(q_t * k_s, axis=-1) for k_s in key], axis=-1) * scale  # Eq. 8, [N,Kh,S]
            weights = tf.nn.softmax(scores, axis=-1)  # Eq. 9, over the keys of the same row
            heads.append(tf.add_n([weights[..., s:s + 1] * v_s for s, v_s in enumerate(v)]))  # Eq. 10, [N,Kh,c]
        heads = tf.stack([tf.reshape(x, [-1, k, h * c]) for x in heads], axis=2)  # [N, K, T, h*c]
        return tf.reshape(tf.transpose(heads, [1, 0, 2, 3]), [k, -1, len(q) * h * c])

    def from_inputs(self, products: Mapping[Any, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """The experts' outputs [N, K, dim] from the products of :meth:`input_kernels` ([N, columns] each)."""
        k, h, c = self.num_experts, self.num_heads, self.head_dim
        if self.attention:
            # W_1 flat(MultiHead(X)) = sum_t head_t W_O W_1[t] (Eq. 11-12): W_O is folded into W_1
            # per token, so the T x width intermediate is never built (fewer flops, same values).
            w_o = tf.reshape(self.output_kernel, [k, h * c, self.width])
            w_1 = tf.reshape(self.ffn_1, [k, self.num_tokens, self.width, self.hidden])
            fused = tf.reshape(tf.einsum("kcw,ktwh->ktch", w_o, w_1), [k, self.num_tokens * h * c, self.hidden])
            heads = self.attend(*([products[(name, t)] for t in range(self.num_tokens)]
                                  for name in ("query", "key", "value")))  # [K, N, T*h*c]
            pre = tf.matmul(heads, fused)  # Eq. 12, [K, N, hidden]
        else:
            pre = tf.transpose(tf.reshape(products["ffn_1"], [-1, k, self.hidden]), [1, 0, 2])
        return self._ffn_and_norm(pre, training)

    def from_tokens(self, tokens: Sequence[tf.Tensor], training: bool | None = None,
                    out_kernel: tf.Tensor | None = None) -> tf.Tensor:
        """:meth:`from_inputs` on the tokens [N, width] each (no ``out_kernel``: these experts are not linear)."""
        if out_kernel is not None:
            raise ValueError("AttentionExperts are not linear: an output kernel cannot be folded into them")
        products: dict[Any, tf.Tensor] = {}
        for t, token in enumerate(tokens):
            kernels = self.input_kernels(t)
            for (name, _), out in zip(kernels, project(token, [kernel for _, kernel in kernels])):
                products[name] = products[name] + out if name in products else out
        return self.from_inputs(products, training)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_experts=self.num_experts,
            dim=self.dim,
            num_heads=self.num_heads,
            hidden=self.hidden,
            dropout=self.dropout,
            attention=self.attention,
            momentum=self.momentum,
        )
        return config


@tf.keras.utils.register_keras_serializable(package="tfgb")
class SoftmaxGate(tf.keras.layers.Layer):
    """A MAMGBR gate: two dense layers and a softmax over the experts it mixes (Eq. 15).

    weights = softmax(ReLU(x W_1 + b_1) W_2 + b_2), one weight per expert and row.

    Args:
        num_outputs: Number of experts mixed (e.g. 2K for gate A over [E_A; E_S]).
        hidden: Units of the first dense layer.
        **kwargs: Base `Layer` arguments.
    """

    def __init__(self, num_outputs: int, hidden: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_outputs < 1 or hidden < 1:
            raise ValueError(f"SoftmaxGate needs num_outputs and hidden >= 1, got {num_outputs}, {hidden}.")
        self.num_outputs = int(num_outputs)
        self.hidden = int(hidden)
        self.dense_1 = tf.keras.layers.Dense(self.hidden, activation="relu", name="dense_1")
        self.dense_2 = tf.keras.layers.Dense(self.num_outputs, name="dense_2")

    def build(self, input_shape: tf.TensorShape) -> None:
        """Builds both dense layers for inputs [N, width]."""
        shape = tf.TensorShape(input_shape)
        with tf.name_scope(self.dense_1.name):
            self.dense_1.build(shape)
        with tf.name_scope(self.dense_2.name):
            self.dense_2.build(self.dense_1.compute_output_shape(shape))
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """Mixing weights [N, num_outputs] (each row sums to 1) for gate inputs [N, width]."""
        return tf.nn.softmax(self.dense_2(self.dense_1(inputs)), axis=-1)

    def input_kernels(self, token: int, width: int) -> list[tuple[str, tf.Tensor]]:
        """Rows of W_1 [width, hidden] applied to part ``token`` of an input made of width-wide parts."""
        return [("dense_1", self.dense_1.kernel[token * width:(token + 1) * width])]

    def from_inputs(self, products: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Mixing weights [N, num_outputs] from x W_1 [N, hidden] (Eq. 15)."""
        hidden = tf.nn.relu(products["dense_1"] + self.dense_1.bias)
        return tf.nn.softmax(self.dense_2(hidden), axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_outputs=self.num_outputs, hidden=self.hidden)
        return config


@tf.keras.utils.register_keras_serializable(package="tfgb")
class MultiHeadTaskBlock(TaskBlock):
    """MAMGBR's multi-task block: MGBR's wiring with attention experts and softmax gates.

    A :class:`~tfgb.layers.mtl.TaskBlock` (Eq. 7-15 of MGBR) whose experts are
    :class:`AttentionExperts` and whose gates (generic and adjusted) are :class:`SoftmaxGate`
    (Sec. 3.4-3.5, Eq. 15 of MAMGBR; see the module docstring). Sub-layers of layer l (1-based):
    ``l{l}_expert_a``, ``_b``, ``_s`` over the tokens (e_u, e_i, e_p) at layer 1, then (g_A, g_S),
    (g_B, g_S), (g_A, g_S, g_B) (shared=False: (g_A), (g_B), no S); ``l{l}_gate_a`` [2K],
    ``l{l}_gate_b`` [2K], ``l{l}_gate_s`` [3K] (not at the last layer), shared=False: [K]; and when
    alpha != 0 ``l{l}_gate_a_ui``, ... ``l{l}_gate_b_up`` [K] on the pairs (e_u||e_i), (e_i||e_p),
    (e_u||e_p). Outputs g^L_A and g^L_B.

    Args:
        dim: Expert and gate output width d.
        num_experts: Experts K per group (A, B and S).
        num_layers: Layers L (>= 1).
        num_heads: Attention heads h per expert.
        alpha: Weight of the adjusted gate terms (0: generic gates only).
        shared: Whether the shared experts S and gate S exist (False: the A and B paths share
            nothing, used by MAMGBR-M).
        attention: Whether the experts have multi-head attention (False: MAMGBR-MH).
        dropout: Dropout rate of the expert outputs.
        ffn_hidden: FFN hidden width of the experts (default 2d).
        gate_hidden: Hidden width of the gates (default d).
        momentum: BatchNorm momentum of the experts.
        **kwargs: Base `Layer` arguments.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        num_layers: int,
        num_heads: int = 8,
        alpha: float = 0.1,
        shared: bool = True,
        attention: bool = True,
        dropout: float = 0.1,
        ffn_hidden: int | None = None,
        gate_hidden: int | None = None,
        momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        if num_heads < 1:
            raise ValueError(f"MultiHeadTaskBlock needs num_heads >= 1, got num_heads={num_heads}.")
        super().__init__(dim, num_experts, num_layers, alpha=alpha, shared=shared, **kwargs)
        self.num_heads = int(num_heads)
        self.attention = bool(attention)
        self.dropout = float(dropout)
        self.ffn_hidden = int(ffn_hidden) if ffn_hidden else 2 * self.dim
        self.gate_hidden = int(gate_hidden) if gate_hidden else self.dim
        self.momentum = float(momentum)

    def make_experts(self, name: str) -> AttentionExperts:
        return AttentionExperts(self.num_experts, self.dim, self.num_heads, hidden=self.ffn_hidden,
                                dropout=self.dropout, attention=self.attention, momentum=self.momentum, name=name)

    def make_gate(self, name: str, num_outputs: int) -> SoftmaxGate:
        return SoftmaxGate(num_outputs, self.gate_hidden, name=name)

    def rows_independent(self, training: bool | None) -> bool:
        """Only in inference mode: in training the experts' BatchNorm uses the batch's statistics."""
        return not training

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            attention=self.attention,
            dropout=self.dropout,
            ffn_hidden=self.ffn_hidden,
            gate_hidden=self.gate_hidden,
            momentum=self.momentum,
        )
        return config
