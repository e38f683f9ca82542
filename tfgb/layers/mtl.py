"""MGBR's multi-task block: experts A/B/S, generic and adjusted gates, L layers (Eq. 7-15).

Section II-D of MGBR. Every layer l = 1..L has K experts for each of task A (initiator -> item),
task B (participant | initiator, item) and the shared information S, and one gate each that mixes
expert outputs with per-row weights:

    e^l_{Ai} = e^l_{A,in} W^l_{Ai},  e^l_{A,in} = g^{l-1}_A || g^{l-1}_S          (Eq. 7)
    e^l_{Bi} = e^l_{B,in} W^l_{Bi},  e^l_{B,in} = g^{l-1}_B || g^{l-1}_S          (Eq. 8)
    e^l_{Si} = e^l_{S,in} W^l_{Si},  e^l_{S,in} = g^{l-1}_A || g^{l-1}_S || g^{l-1}_B (Eq. 9)
    g^l_{A1} = (e^l_{A,in} W_A) [E_A; E_S]                                         (Eq. 10)
    g^l_{A2} = (e_u||e_i) W_{A,ui} E_A + (e_i||e_p) W_{A,ip} E_S + (e_u||e_p) W_{A,up} E_S
                                                                                   (Eq. 11)
    g^l_A = g^l_{A1} + alpha g^l_{A2}                                              (Eq. 12)
    g^l_B = (e^l_{B,in} W_B) [E_B; E_S] + alpha ((e_u||e_i) W_{B,ui} E_S
            + (e_i||e_p) W_{B,ip} E_B + (e_u||e_p) W_{B,up} E_B)                   (Eq. 13)
    g^l_S = (e^l_{S,in} W_S) [E_A; E_S; E_B]                                       (Eq. 14)
    g^0_A = g^0_B = g^0_S = e_u || e_i || e_p                                      (Eq. 15)

:class:`TaskBlock` is this wiring, with the experts and gates made by factories; MGBR's
:class:`MultiTaskBlock` makes linear experts and linear gates, MAMGBR's block
(:mod:`tfgb.layers.attention`) attention experts and two-layer softmax gates. Its ``call`` is the
reference: dense rows, every equation as written. :mod:`tfgb.layers.fused` computes the same outputs
from the same weights faster; the models train and score through it.

Readings of the paper made here (it is ambiguous or silent on these points):

* Layer 1. Eq. 7-9 with Eq. 15 would feed g^0_A || g^0_S = 2 x 6d to expert A, but the paper
  states W^1_{Ai} has 6d rows; so at layer 1 every expert and every gate reads g^0 (6d),
  unconcatenated. (The paper's W^1_{Si} in R^{9d x d} fits no reading of Eq. 9 with 2d-wide
  e_u, e_i, e_p; it is taken to be 6d x d as well.)
* Gate weights per layer. W_A, W_B, W_S and W_{A,ui}, ... carry no layer index in the paper;
  W_A must differ between layer 1 (6d rows) and later layers (2d rows), so every gate matrix is
  per layer here.
* Gate softmax (``model.gate_softmax``, default true). Eq. 10-14 write the mixing weights as
  e_in W, unnormalised; the text calls the gates an attentive aggregation "following the principle
  of self-attention". With gate_softmax every gate's weights are softmax(e_in W) over the experts
  that gate mixes (each adjusted gate on its own); with gate_softmax = false they are e_in W as in
  the equations.
* alpha. One coefficient serves as both alpha_A (Eq. 12) and alpha_B (Eq. 13); the paper's tuned
  values are equal (0.1). alpha = 0 is MGBR-G and creates no adjusted-gate weights.
* shared=False (MGBR-M, "expert network S and gate S are both removed"): A's experts read
  g^{l-1}_A alone (g^0 at layer 1), gate A mixes E_A only, and the adjusted terms that used E_S
  use E_A for gate A and E_B for gate B. B likewise.
* Gate S of the last layer. g^L_S feeds nothing (only g^L_A and g^L_B reach the heads), so the
  last layer has no gate S; the outputs are unchanged.

With linear experts the block has no nonlinearity but the gates' softmax, and no operation mixes
rows: each output row depends only on the same input row.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

__all__ = ["LinearExperts", "LinearGate", "MultiTaskBlock", "TaskBlock", "Wiring", "mix", "wiring"]

TASKS = ("a", "b")
PAIRS = ("ui", "ip", "up")


@dataclasses.dataclass(frozen=True)
class Wiring:
    """Which gate outputs each expert group reads and which expert groups each gate mixes.

    Attributes:
        groups: The expert groups, each with one generic gate: ("a", "b", "s"), or ("a", "b").
        reads: group X -> the gates whose layer-(l-1) outputs, concatenated, are e^l_{X,in} (Eq. 7-9).
        mixes: gate X -> the expert groups its generic weights cover, in column order (Eq. 10, 13, 14).
        adjusted: task -> (pair, group): the adjusted gate on e_pair mixes that group (Eq. 11, 13).
    """

    groups: tuple[str, ...]
    reads: Mapping[str, tuple[str, ...]]
    mixes: Mapping[str, tuple[str, ...]]
    adjusted: Mapping[str, tuple[tuple[str, str], ...]]


def wiring(shared: bool) -> Wiring:
    """MGBR's wiring (Eq. 7-14); ``shared=False`` is MGBR-M (no experts S and no gate S)."""
    if shared:
        reads = {"a": ("a", "s"), "b": ("b", "s"), "s": ("a", "s", "b")}
        return Wiring(("a", "b", "s"), reads, mixes=reads,
                      adjusted={"a": (("ui", "a"), ("ip", "s"), ("up", "s")),
                                "b": (("ui", "s"), ("ip", "b"), ("up", "b"))})
    own = {"a": ("a",), "b": ("b",)}
    return Wiring(("a", "b"), own, mixes=own, adjusted={task: tuple((pair, task) for pair in PAIRS) for task in TASKS})


def mix(weights: tf.Tensor, groups: Sequence[tf.Tensor]) -> tf.Tensor:
    """``sum_j weights[n, j] * E[n, j, :]`` over the experts of ``groups`` stacked in order.

    Args:
        weights: [N, G*K] mixing weights.
        groups: G expert outputs [N, K, d].

    Returns:
        [N, d].
    """
    return tf.einsum("nj,njd->nd", weights, tf.concat(list(groups), axis=1))


class TaskBlock(tf.keras.layers.Layer):
    """The multi-task block of Eq. 7-15 with experts and gates made by :meth:`make_experts` / :meth:`make_gate`.

    Sub-layers of layer l (1-based): ``l{l}_expert_{x}`` for x in the wiring's groups (a, b, s),
    ``l{l}_gate_{x}`` (no gate S at the last layer) and, when alpha != 0, ``l{l}_gate_{task}_{pair}``
    for task a, b and pair ui, ip, up. Experts take tokens [N, T, width] (layer 1: e_u, e_i, e_p;
    later layers: the gate outputs of ``wiring.reads``) and return [N, K, dim]; a generic gate takes
    the tokens concatenated and returns [N, G*K] weights over the groups of ``wiring.mixes``; an
    adjusted gate takes e_pair [N, 2w] and returns [N, K].

    Besides ``call``, experts and gates offer the fused path (:mod:`tfgb.layers.fused`) their first,
    linear stage on each token of their input: ``input_kernels(token, width)`` -> ``[(name, kernel
    [width, c])]`` (the products of equal names are added over the tokens) and ``from_inputs(products,
    ...)``, the outputs from those products. Experts also offer ``from_tokens(tokens, training,
    out_kernel=None)``: their outputs from the list of tokens, in their fastest form.

    Args:
        dim: Width d of experts and gate outputs.
        num_experts: Experts K per group.
        num_layers: Layers L (>= 1).
        alpha: Weight of the adjusted gate terms (alpha_A = alpha_B, Eq. 12-13); 0: generic gates only.
        shared: Whether the shared experts and gate S exist.
        **kwargs: Base `Layer` arguments.
    """

    linear_experts = False  # True when an expert is x W: the fused path may fold a head's kernel into W

    def __init__(self, dim: int, num_experts: int, num_layers: int, alpha: float = 0.1, shared: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dim < 1 or num_experts < 1 or num_layers < 1:
            raise ValueError(f"{type(self).__name__} needs dim, num_experts and num_layers >= 1, got dim={dim}, "
                             f"num_experts={num_experts}, num_layers={num_layers}.")
        self.dim = int(dim)
        self.num_experts = int(num_experts)
        self.num_layers = int(num_layers)
        self.alpha = float(alpha)
        self.shared = bool(shared)
        self.wiring = wiring(self.shared)

    def make_experts(self, name: str) -> tf.keras.layers.Layer:
        """K experts of one group and layer."""
        raise NotImplementedError

    def make_gate(self, name: str, num_outputs: int) -> tf.keras.layers.Layer:
        """A gate giving ``num_outputs`` mixing weights per row."""
        raise NotImplementedError

    def rows_independent(self, training: bool | None) -> bool:
        """Whether every output row depends only on its own input row in this mode."""
        return True

    def gates_at(self, layer: int, tasks: Sequence[str]) -> tuple[str, ...]:
        """The gates computed at ``layer`` (0-based) for outputs ``tasks``: the last layer's are the tasks'."""
        if layer == self.num_layers - 1:
            return tuple(tasks)
        return self.wiring.groups if self.shared else tuple(tasks)  # without S the tasks share nothing

    def experts_at(self, layer: int, tasks: Sequence[str]) -> tuple[str, ...]:
        """The expert groups the gates of ``layer`` mix (the adjusted gates mix some of the same)."""
        used = {x for gate in self.gates_at(layer, tasks) for x in self.wiring.mixes[gate]}
        return tuple(x for x in self.wiring.groups if x in used)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates every expert and gate of the L layers.

        Args:
            input_shape: Shape of e_u, [N, w]; e_i and e_p must have the same width w.
        """
        width = tf.TensorShape(input_shape)[-1]
        if width is None:
            raise ValueError(f"{type(self).__name__} needs a known embedding width (last axis).")
        self.input_width = w = int(width)
        k, d, groups = self.num_experts, self.dim, self.wiring.groups
        self.stages: list[dict[str, tf.keras.layers.Layer]] = []
        for layer in range(1, self.num_layers + 1):
            tokens = {x: (3, w) if layer == 1 else (len(self.wiring.reads[x]), d) for x in groups}  # Eq. 15, 7-9
            parts: dict[str, tuple[tf.keras.layers.Layer, list]] = {}
            for x in groups:
                parts[f"expert_{x}"] = (self.make_experts(f"l{layer}_expert_{x}"), [None, *tokens[x]])
            for x in groups:
                if x != "s" or layer < self.num_layers:
                    gate = self.make_gate(f"l{layer}_gate_{x}", k * len(self.wiring.mixes[x]))
                    parts[f"gate_{x}"] = (gate, [None, tokens[x][0] * tokens[x][1]])
            if self.alpha != 0.0:
                for name in (f"gate_{task}_{pair}" for task in TASKS for pair in PAIRS):
                    parts[name] = (self.make_gate(f"l{layer}_{name}", k), [None, 2 * w])
            for part, shape in parts.values():
                with tf.name_scope(part.name):
                    part.build(tf.TensorShape(shape))
            self.stages.append({name: part for name, (part, _) in parts.items()})
        super().build(input_shape)

    def call(self, e_u: tf.Tensor, e_i: tf.Tensor, e_p: tf.Tensor, training: bool | None = None,
             tasks: Sequence[str] = TASKS) -> dict[str, tf.Tensor]:
        """Runs the L expert/gate layers on dense rows of (initiator, item, participant).

        Args:
            e_u: Initiator embeddings [N, w] (w = 2d in MGBR, Eq. 4).
            e_i: Item embeddings [N, w] (Eq. 5).
            e_p: Participant embeddings [N, w] (Eq. 6).
            training: Training mode (matters to experts with batch statistics or dropout).
            tasks: Outputs to compute, a non-empty subset of ("a", "b").

        Returns:
            Dict with "a": g^L_A [N, dim] and/or "b": g^L_B [N, dim].
        """
        tasks = check_tasks(self, tasks)
        for name, x in (("e_i", e_i), ("e_p", e_p)):
            if x.shape[-1] is not None and x.shape[-1] != self.input_width:
                raise ValueError(f"{type(self).__name__}: {name} has width {x.shape[-1]}, expected "
                                 f"{self.input_width} like e_u.")
        pairs = {"ui": tf.concat([e_u, e_i], -1), "ip": tf.concat([e_i, e_p], -1), "up": tf.concat([e_u, e_p], -1)}
        g: dict[str, tf.Tensor] = {}  # g^{l-1} of every gate
        for layer, stage in enumerate(self.stages):
            # e^l_{X,in}: g^0 = e_u || e_i || e_p for every expert and gate of layer 1 (Eq. 15), else Eq. 7-9.
            tokens = {x: [e_u, e_i, e_p] if layer == 0 else [g[y] for y in self.wiring.reads[x]]
                      for x in self.experts_at(layer, tasks)}
            experts = {x: stage[f"expert_{x}"](tf.stack(tokens[x], axis=1), training=training)  # [N, K, d]
                       for x in tokens}
            new = {}
            for gate in self.gates_at(layer, tasks):
                weights = stage[f"gate_{gate}"](tf.concat(tokens[gate], axis=-1))
                out = mix(weights, [experts[x] for x in self.wiring.mixes[gate]])  # Eq. 10, 13 (first term), 14
                if self.alpha != 0.0 and gate in TASKS:
                    for pair, x in self.wiring.adjusted[gate]:  # Eq. 11, 13
                        out += self.alpha * mix(stage[f"gate_{gate}_{pair}"](pairs[pair]), [experts[x]])
                new[gate] = out  # Eq. 12
            g = new
        return {task: g[task] for task in tasks}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(dim=self.dim, num_experts=self.num_experts, num_layers=self.num_layers, alpha=self.alpha,
                      shared=self.shared)
        return config


def check_tasks(block: TaskBlock, tasks: Sequence[str]) -> tuple[str, ...]:
    """``tasks`` as a tuple in ("a", "b") order, or ValueError."""
    if not tasks or any(task not in TASKS for task in tasks):
        raise ValueError(f"{type(block).__name__} tasks must be a non-empty subset of {TASKS}, got {tuple(tasks)}.")
    return tuple(task for task in TASKS if task in tasks)


@tf.keras.utils.register_keras_serializable(package="tfgb")
class LinearExperts(tf.keras.layers.Layer):
    """K linear experts over T tokens: E_k = (x_1 || ... || x_T) W_k (Eq. 7-9).

    Weight ``kernel`` [T*width, K*dim], Glorot uniform; expert k is columns k*dim..(k+1)*dim-1.
    """

    def __init__(self, num_experts: int, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.dim = int(dim)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the kernel for inputs [N, T, width]."""
        shape = tf.TensorShape(input_shape)
        self.num_tokens, self.width = int(shape[1]), int(shape[2])
        self.kernel = self.add_weight(name="kernel", shape=(self.num_tokens * self.width, self.num_experts * self.dim),
                                      initializer="glorot_uniform")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Tokens [N, T, width] -> expert outputs [N, K, dim]."""
        x = tf.reshape(inputs, [-1, self.num_tokens * self.width])
        return tf.reshape(tf.matmul(x, self.kernel), [-1, self.num_experts, self.dim])

    def input_kernels(self, token: int, width: int | None = None) -> list[tuple[str, tf.Tensor]]:
        """The rows of W applied to token ``token``."""
        return [("kernel", self.kernel[token * self.width:(token + 1) * self.width])]

    def from_inputs(self, products: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Outputs [N, K, dim] from the sum over tokens of token_t @ W_t."""
        return tf.reshape(products["kernel"], [-1, self.num_experts, self.dim])

    def folded(self, out_kernel: tf.Tensor) -> tf.Tensor:
        """W_k H for every expert k: [T*width, K*h] for ``out_kernel`` H [dim, h]."""
        composed = tf.einsum("ikd,dh->ikh", tf.reshape(self.kernel, [-1, self.num_experts, self.dim]), out_kernel)
        return tf.reshape(composed, [-1, self.num_experts * int(out_kernel.shape[-1])])

    def from_tokens(self, tokens: Sequence[tf.Tensor], training: bool | None = None,
                    out_kernel: tf.Tensor | None = None) -> tf.Tensor:
        """Outputs [N, K, dim] from the tokens as a list, or E_k H [N, K, h] with ``out_kernel`` H [dim, h]."""
        kernel = self.kernel if out_kernel is None else self.folded(out_kernel)
        out = tf.matmul(tf.concat(list(tokens), axis=-1) if len(tokens) > 1 else tokens[0], kernel)
        return tf.reshape(out, [-1, self.num_experts, int(kernel.shape[-1]) // self.num_experts])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_experts=self.num_experts, dim=self.dim)
        return config


@tf.keras.utils.register_keras_serializable(package="tfgb")
class LinearGate(tf.keras.layers.Layer):
    """A gate of MGBR: weights = softmax(x W) (``softmax=True``) or x W (Eq. 10-14). Weight ``kernel`` [in, outputs]."""

    def __init__(self, num_outputs: int, softmax: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_outputs = int(num_outputs)
        self.softmax = bool(softmax)

    def build(self, input_shape: tf.TensorShape) -> None:
        self.kernel = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.num_outputs),
                                      initializer="glorot_uniform")
        super().build(input_shape)

    def _normalize(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(logits, axis=-1) if self.softmax else logits

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """Mixing weights [N, outputs] of gate inputs [N, in]."""
        return self._normalize(tf.matmul(inputs, self.kernel))

    def input_kernels(self, token: int, width: int) -> list[tuple[str, tf.Tensor]]:
        """Rows of W applied to part ``token`` of an input made of ``width``-wide parts."""
        return [("kernel", self.kernel[token * width:(token + 1) * width])]

    def from_inputs(self, products: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Mixing weights from x W (summed over the input's parts)."""
        return self._normalize(products["kernel"])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_outputs=self.num_outputs, softmax=self.softmax)
        return config


@tf.keras.utils.register_keras_serializable(package="tfgb")
class MultiTaskBlock(TaskBlock):
    """MGBR's multi-task learning module (Eq. 7-15): :class:`LinearExperts` and :class:`LinearGate`.

    Weights of layer l (1-based) for shared=True and alpha != 0 (layer 1: in_A = in_B = in_S = 3w for
    input width w, i.e. 6d; later layers: in_A = in_B = 2*dim, in_S = 3*dim):

        l{l}_expert_a/kernel [in_A, K*dim], l{l}_expert_b/kernel [in_B, K*dim], l{l}_expert_s/kernel
            [in_S, K*dim] (Eq. 7-9),
        l{l}_gate_a/kernel [in_A, 2K] (Eq. 10, over [E_A; E_S]), l{l}_gate_b/kernel [in_B, 2K] (over
            [E_B; E_S]), l{l}_gate_s/kernel [in_S, 3K] (Eq. 14, over [E_A; E_S; E_B]; not at the last
            layer),
        l{l}_gate_a_ui, _a_ip, _a_up, _b_ui, _b_ip, _b_up /kernel [2w, K] (Eq. 11 and 13).

    shared=False drops the S weights and makes gate A/B [in, K] (in_A = dim after layer 1); alpha = 0
    drops the adjusted gates. All weights are Glorot uniform.

    Args:
        gate_softmax: softmax over each gate's experts (``model.gate_softmax``), or raw e_in W.
        dim, num_experts, num_layers, alpha, shared, **kwargs: see :class:`TaskBlock`.
    """

    linear_experts = True

    def __init__(self, dim: int, num_experts: int, num_layers: int, alpha: float = 0.1, shared: bool = True,
                 gate_softmax: bool = True, **kwargs: Any) -> None:
        super().__init__(dim, num_experts, num_layers, alpha=alpha, shared=shared, **kwargs)
        self.gate_softmax = bool(gate_softmax)

    def make_experts(self, name: str) -> LinearExperts:
        return LinearExperts(self.num_experts, self.dim, name=name)

    def make_gate(self, name: str, num_outputs: int) -> LinearGate:
        return LinearGate(num_outputs, softmax=self.gate_softmax, name=name)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(gate_softmax=self.gate_softmax)
        return config
