"""MGBR's multi-task block with expert networks and gated units, and its prediction heads.

Section II-D and II-E of MGBR (Eq. 7-17). Every layer l = 1..L has K linear experts for
each of task A (initiator -> item), task B (participant | initiator, item) and the shared
information S, and one gate each that mixes expert outputs with per-row weights:

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

Readings of the paper made here (it is ambiguous or silent on these points):

* Layer 1. Eq. 7-9 with Eq. 15 would feed g^0_A || g^0_S = 2 x 6d to expert A, but the paper
  states W^1_{Ai} has 6d rows; so at layer 1 every expert and every gate takes g^0 (6d) as
  its input, unconcatenated. (The paper's W^1_{Si} in R^{9d x d} fits no reading of Eq. 9
  with 2d-wide e_u, e_i, e_p; it is taken to be 6d x d as well.)
* Gate weights. The mixing weights `e_in W` are used as they are (no softmax), as in
  Eq. 10-14. W_A, W_B, W_S and the adjusted-gate matrices W_{A,ui}, ... carry no layer
  index in the paper; W_A must differ between layer 1 (6d rows) and later layers (2d rows),
  so all gate matrices are per layer here.
* alpha. One coefficient serves as both alpha_A (Eq. 12) and alpha_B (Eq. 13); the paper's
  tuned values are equal (0.1). alpha = 0 is the MGBR-G variant and creates no
  adjusted-gate weights.
* shared=False (MGBR-M, "expert network S and gate S are both removed"): A's experts take
  g^{l-1}_A alone (d wide; g^0 at layer 1), gate A mixes E_A only (W_A [in, K]), and the
  adjusted terms that used E_S use E_A for gate A and E_B for gate B. B likewise.
* Gate S of the last layer. g^L_S feeds nothing (only g^L_A and g^L_B reach the heads),
  so the last layer has no gate S weights; outputs are unchanged.

The block has no nonlinearity (experts are linear, gates multiply), no normalization and no
cross-row operation: each output row depends only on the same input row.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import tensorflow as tf

__all__ = ["MultiTaskBlock", "PredictionHead", "Rows", "Tiled"]


class Rows(NamedTuple):
    """Rows given by reference: row n is ``table[index[n]]``.

    Passing e_u, e_i or e_p this way lets :class:`MultiTaskBlock` project each distinct
    entity once instead of once per row (the block's first layer and its adjusted gates are
    linear in e_u, e_i and e_p). The result is the same as passing ``tf.gather(table, index)``.

    Attributes:
        table: [M, w] distinct embeddings.
        index: [N] int row of ``table`` for each of the N rows scored.
    """

    table: tf.Tensor
    index: tf.Tensor


class Tiled(NamedTuple):
    """Rows given by reference, in blocks of repeated references.

    Block j holds ``len(index_j) * repeat_j`` rows; row r of block j is
    ``table[index_j[r // repeat_j]]``, and the blocks' rows follow one another. A training batch
    is laid out so: the 2|T| auxiliary rows of a triple share its initiator and its item (T^P) or
    participant (T^I), i.e. those parts repeat |T| times. :class:`MultiTaskBlock` then adds the
    projections of the repeated parts once per triple and broadcasts the sum over the |T| rows,
    instead of gathering every part for every row (and scattering every gradient back). The
    result is the same as passing :func:`to_rows` of each part.

    e_u, e_i and e_p given as ``Tiled`` must have the same number of blocks and the same number
    of rows in each; within a block every repeat is 1 or one common value.

    Attributes:
        table: [M, w] distinct embeddings.
        blocks: ``((index_j [n_j] int, repeat_j), ...)``.
    """

    table: tf.Tensor
    blocks: tuple[tuple[tf.Tensor, int], ...]


def to_rows(x: Tiled) -> Rows:
    """The :class:`Rows` of a :class:`Tiled` part (one index per row)."""
    return Rows(x.table, tf.concat([tf.repeat(index, repeat) for index, repeat in x.blocks], 0))


def materialize(x: tf.Tensor | Rows | Tiled) -> tf.Tensor:
    """The dense [N, w] rows of a tensor, :class:`Rows` or :class:`Tiled`."""
    if isinstance(x, Tiled):
        x = to_rows(x)
    return tf.gather(x.table, x.index) if isinstance(x, Rows) else x


def project(x: tf.Tensor | Rows, kernels: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """``[x @ kernel for kernel in kernels]`` with one matmul.

    Args:
        x: Rows [N, width], dense or as :class:`Rows` (distinct entities [M, width]
            and an index [N]: each entity is projected once, then gathered).
        kernels: Matrices [width, c_j].

    Returns:
        One [N, c_j] projection per kernel.
    """
    table = x.table if isinstance(x, Rows) else x
    out = tf.matmul(table, kernels[0] if len(kernels) == 1 else tf.concat(list(kernels), axis=1))
    pieces = [out] if len(kernels) == 1 else tf.split(out, [int(k.shape[1]) for k in kernels], axis=1)
    if isinstance(x, Rows):
        # Split the [M, sum c_j] projection of the distinct entities, then gather each piece: the
        # per-row [N, sum c_j] gather followed by a split would hold every row's projection twice.
        pieces = [tf.gather(piece, x.index) for piece in pieces]
    return pieces


def _weighted_sum(weights: tf.Tensor, group: tf.Tensor) -> tf.Tensor:
    """``sum_k weights[n, k] * group[n, k, :]``: [N, K] x [N, K, d] -> [N, d].

    A batched [1, K] x [K, d] matmul per row: on CPU its gradient is several times faster than the
    same contraction written as an einsum (measured in ``tfgb.bench``'s breakdown).
    """
    return tf.squeeze(tf.matmul(weights[:, None, :], group), axis=1)


class Segments(NamedTuple):
    """Per-row values [N, ...] given as consecutive row segments (their row concatenation).

    The last layer of :class:`MultiTaskBlock` computes task A on rows ``[0, a_until)`` and task B
    on ``[b_from, N)``; it keeps each task's rows as segments of one split (A-only, both, B-only)
    and mixes segment by segment, concatenating only the [n, d] results: slicing the [N, K, d]
    expert outputs would give every slice a zero-padded [N, K, d] gradient.
    """

    parts: tuple[tf.Tensor, ...]


def _map(fn, x):
    """``fn`` on a tensor, or on each part of :class:`Segments`."""
    return Segments(tuple(fn(part) for part in x.parts)) if isinstance(x, Segments) else fn(x)


def _zip(fn, x, y):
    """``fn(x, y)`` part by part; a plain tensor meeting :class:`Segments` is split like them."""
    if not isinstance(x, Segments) and not isinstance(y, Segments):
        return fn(x, y)
    like = x if isinstance(x, Segments) else y
    sizes = tf.stack([tf.shape(part)[0] for part in like.parts])

    def parts(v):
        return v.parts if isinstance(v, Segments) else tuple(tf.split(v, sizes, axis=0, num=len(like.parts)))

    return Segments(tuple(fn(a, b) for a, b in zip(parts(x), parts(y))))


def _rows(x) -> tf.Tensor:
    """The rows of a tensor or of :class:`Segments` (concatenated)."""
    return tf.concat(list(x.parts), axis=0) if isinstance(x, Segments) else x


def mixtures(outputs: dict[str, Sequence[tuple[float, tf.Tensor | Segments, Sequence[tf.Tensor | Segments]]]]
             ) -> dict[str, tf.Tensor]:
    """Several gate outputs, each ``sum_terms coef * mix_experts(weights, groups)``.

    Mixing is linear in the weights, so per output the weights of each distinct group are added
    first (task A's generic and adjusted (u, i) gates both mix E_A: one weighted sum). A group
    mixed by several outputs (E_S by gates A, B and S at a layer below the last) is read once:
    its M weight vectors are stacked and one [M, K] x [K, d] product per row gives all M
    mixtures, and the backward pass builds one [N, K, d] gradient for it, not M to be added.

    Args:
        outputs: name -> terms ``(coef, weights [N, G*K], groups)``; the K weights of
            ``groups[g]`` are columns g*K..(g+1)*K-1 of ``weights``. Groups are matched by
            identity. Weights and groups may be :class:`Segments` (the same row segments).

    Returns:
        name -> the mixed rows [N, d].
    """
    groups_seen: dict[int, tf.Tensor | Segments] = {}
    summed: dict[int, dict[str, tf.Tensor | Segments]] = {}  # id(group) -> output -> its summed weights
    for name, terms in outputs.items():
        for coef, weights, groups in terms:
            count = len(groups)
            for j, group in enumerate(groups):
                w = weights if count == 1 else _map(lambda x, j=j, n=count: tf.split(x, n, axis=1)[j], weights)
                w = w if coef == 1.0 else _map(lambda x, c=coef: c * x, w)
                key = id(group)
                per_output = summed.setdefault(key, {})
                per_output[name] = _zip(tf.add, per_output[name], w) if name in per_output else w
                groups_seen[key] = group
    out: dict[str, tf.Tensor] = {}

    def add(name: str, term: tf.Tensor) -> None:
        out[name] = out[name] + term if name in out else term

    for key, per_output in summed.items():
        group = groups_seen[key]
        dense = not isinstance(group, Segments) and not any(isinstance(w, Segments) for w in per_output.values())
        if len(per_output) > 1 and dense:
            names = list(per_output)
            stacked = tf.matmul(tf.stack([per_output[n] for n in names], axis=1), group)  # [N, M, d]
            for name, term in zip(names, tf.unstack(stacked, axis=1)):
                add(name, term)
        else:
            for name, w in per_output.items():
                add(name, _rows(_zip(_weighted_sum, w, group)))
    return out


def mixture(terms: Sequence[tuple[float, tf.Tensor | Segments, Sequence[tf.Tensor | Segments]]]) -> tf.Tensor:
    """One gate output, ``sum_terms coef * mix_experts(weights, groups)`` (see :func:`mixtures`)."""
    return mixtures({"out": terms})["out"]


def mix_experts(weights: tf.Tensor, groups: Sequence[tf.Tensor]) -> tf.Tensor:
    """Weighted sum of stacked expert groups, one weight vector per row.

    Each group is mixed by its own slice of the weights and the results are added, so the groups
    are never concatenated: a concatenation would copy every expert output of the batch
    ([N, G*K, d]) and keep the copy alive for the backward pass.

    Args:
        weights: Mixing weights [N, G*K], the K weights of group g in columns g*K..(g+1)*K-1.
        groups: G expert outputs, each [N, K, d], with the same K.

    Returns:
        sum_g sum_k weights[n, g*K + k] * groups[g][n, k, :], shape [N, d].
    """
    return mixture([(1.0, weights, groups)])


@tf.keras.utils.register_keras_serializable(package="tfgb")
class MultiTaskBlock(tf.keras.layers.Layer):
    """MGBR's multi-task learning module: experts and (adjusted) gates, Eq. 7-15.

    Weights of layer l (1-based), in `get_weights()` order, for `shared=True` and alpha != 0
    (layer 1: in_A = in_B = in_S = 3w for input width w, i.e. 6d; later layers:
    in_A = in_B = 2*dim, in_S = 3*dim):

        l{l}_expert_a [in_A, K*dim], l{l}_expert_b [in_B, K*dim], l{l}_expert_s [in_S, K*dim]
            (Eq. 7-9; expert k is columns k*dim..(k+1)*dim-1),
        l{l}_gate_a [in_A, 2K] (Eq. 10, over [E_A; E_S]), l{l}_gate_b [in_B, 2K] (over
            [E_B; E_S]), l{l}_gate_s [in_S, 3K] (Eq. 14, over [E_A; E_S; E_B]; not at the
            last layer, where g^L_S feeds nothing),
        l{l}_gate_a_ui, l{l}_gate_a_ip, l{l}_gate_a_up, l{l}_gate_b_ui, l{l}_gate_b_ip,
            l{l}_gate_b_up, each [2w, K] (Eq. 11 and 13).

    `shared=False` drops the `_s` weights and makes gate A/B [in, K]; alpha = 0 drops the
    adjusted-gate weights. All weights are Glorot uniform.

    Args:
        dim: Width d of experts and gate outputs.
        num_experts: Experts K per group (A, B and S).
        num_layers: Layers L (>= 1).
        alpha: Weight of the adjusted gate terms (alpha_A = alpha_B, Eq. 12-13); 0 gives
            MGBR-G.
        shared: Whether the shared experts and gate S exist; False gives MGBR-M.
        **kwargs: Base `Layer` arguments.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        num_layers: int,
        alpha: float = 0.1,
        shared: bool = True,
        gate_softmax: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dim < 1 or num_experts < 1 or num_layers < 1:
            raise ValueError(
                f"MultiTaskBlock needs dim, num_experts and num_layers >= 1, got dim={dim}, "
                f"num_experts={num_experts}, num_layers={num_layers}."
            )
        self.dim = int(dim)
        self.num_experts = int(num_experts)
        self.num_layers = int(num_layers)
        self.alpha = float(alpha)
        self.shared = bool(shared)
        self.gate_softmax = bool(gate_softmax)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the expert and gate weights of all layers.

        Args:
            input_shape: Shape of e_u, [N, w]; e_i and e_p must have the same width w.
        """
        if isinstance(input_shape, (Rows, tuple, list)) and input_shape and not isinstance(input_shape[0], int) \
                and input_shape[0] is not None:
            input_shape = input_shape[0]  # Rows(table, index): the table's shape
        width = tf.TensorShape(input_shape)[-1]
        if width is None:
            raise ValueError("MultiTaskBlock needs a known embedding width (last axis).")
        self.input_width = int(width)
        k, d = self.num_experts, self.dim
        groups = 2 if self.shared else 1
        self._mtl_weights: list[dict[str, tf.Variable]] = []
        for layer in range(1, self.num_layers + 1):
            if layer == 1:
                in_ab = in_s = 3 * self.input_width
            else:
                in_ab, in_s = (2 * d if self.shared else d), 3 * d
            shapes = {
                "expert_a": (in_ab, k * d),
                "expert_b": (in_ab, k * d),
            }
            if self.shared:
                shapes["expert_s"] = (in_s, k * d)
            shapes["gate_a"] = (in_ab, groups * k)
            shapes["gate_b"] = (in_ab, groups * k)
            if self.shared and layer < self.num_layers:
                # g^L_S is no output: the last layer has no gate S (its weights would get
                # no gradient).
                shapes["gate_s"] = (in_s, 3 * k)
            if self.alpha != 0.0:
                for name in ("a_ui", "a_ip", "a_up", "b_ui", "b_ip", "b_up"):
                    shapes[f"gate_{name}"] = (2 * self.input_width, k)
            self._mtl_weights.append(
                {
                    name: self.add_weight(
                        name=f"l{layer}_{name}", shape=shape, initializer="glorot_uniform"
                    )
                    for name, shape in shapes.items()
                }
            )
        super().build(input_shape)

    def _weights(self, logits: tf.Tensor) -> tf.Tensor:
        """A gate's mixing weights: softmax-normalised (attention) or the raw logits (Eq. 10-14)."""
        return tf.nn.softmax(logits, axis=-1) if self.gate_softmax else logits

    supports_rows = True  # call() accepts Rows for e_u, e_i, e_p
    supports_tiles = True  # ... and Tiled

    def _input_projections(self, parts: dict[str, tf.Tensor | Rows]) -> dict[tuple[int, str], tf.Tensor]:
        """Everything linear in e_u, e_i, e_p, one matmul per part.

        The layer-1 experts and gates take g^0 = e_u || e_i || e_p (Eq. 15) and the adjusted gates
        of every layer take pairs of them (Eq. 11, 13), so ``concat(parts) @ W`` is the sum over
        parts of ``part @ W[rows of that part]``. Each part is multiplied once by all of its
        kernel slices side by side; a :class:`Rows` part is projected per distinct entity and
        then gathered.

        Returns:
            {(layer, weight name): [N, columns]} pre-activations.
        """
        w = self.input_width
        plan: dict[str, list[tuple[tuple[int, str], tf.Tensor]]] = {"u": [], "i": [], "p": []}
        first = self._mtl_weights[0]
        for name in ("expert_a", "expert_b", "expert_s", "gate_a", "gate_b", "gate_s"):
            if name in first:
                for j, part in enumerate("uip"):
                    plan[part].append(((0, name), first[name][j * w:(j + 1) * w]))
        if self.alpha != 0.0:
            for layer, weights in enumerate(self._mtl_weights):
                for task in "ab":
                    for pair in ("ui", "ip", "up"):
                        name = f"gate_{task}_{pair}"
                        for j, part in enumerate(pair):
                            plan[part].append(((layer, name), weights[name][j * w:(j + 1) * w]))
        tiled = [isinstance(x, Tiled) for x in parts.values()]
        if any(tiled) and not all(tiled):
            raise ValueError("MultiTaskBlock: give e_u, e_i and e_p all as Tiled, or none of them.")
        if all(tiled):
            return self._tiled_projections(parts, plan)
        out: dict[tuple[int, str], tf.Tensor] = {}
        for part, entries in plan.items():
            pieces = project(parts[part], [k for _, k in entries])
            for (key, _), piece in zip(entries, pieces):
                out[key] = out[key] + piece if key in out else piece
        return out

    @staticmethod
    def _tiled_projections(parts: dict[str, Tiled], plan: dict[str, list[tuple[tuple[int, str], tf.Tensor]]]
                           ) -> dict[tuple[int, str], tf.Tensor]:
        """:meth:`_input_projections` for :class:`Tiled` parts.

        In each block the repeated parts' projections are gathered once per list and added there,
        the per-row parts' are gathered per row, and the two sums meet in one broadcast add.
        """
        counts = {len(x.blocks) for x in parts.values()}
        if len(counts) != 1:
            raise ValueError(f"MultiTaskBlock: Tiled parts have different numbers of blocks: {sorted(counts)}.")
        tables: dict[str, dict[tuple[int, str], tf.Tensor]] = {}  # part -> key -> [M, c] projection
        for part, entries in plan.items():
            pieces = project(parts[part].table, [k for _, k in entries])
            tables[part] = {key: piece for (key, _), piece in zip(entries, pieces)}
        keys = list(dict.fromkeys(key for entries in plan.values() for key, _ in entries))
        blocks: dict[tuple[int, str], list[tf.Tensor]] = {key: [] for key in keys}
        for j in range(counts.pop()):
            # Repeats must be static; Keras may hand python ints in the inputs over as constant tensors.
            refs = {part: (x.blocks[j][0], int(tf.get_static_value(x.blocks[j][1]))) for part, x in parts.items()}
            repeats = {r for _, r in refs.values()} - {1}
            if len(repeats) > 1:
                raise ValueError(f"MultiTaskBlock: block {j} repeats parts by different counts {sorted(repeats)}.")
            repeat = repeats.pop() if repeats else 1
            for key in keys:
                coarse = fine = None
                for part, (index, r) in refs.items():
                    if key not in tables[part]:
                        continue
                    rows = tf.gather(tables[part][key], index)
                    if r == 1:
                        fine = rows if fine is None else fine + rows
                    else:
                        coarse = rows if coarse is None else coarse + rows
                if coarse is None:
                    blocks[key].append(fine)
                elif fine is None:
                    blocks[key].append(tf.repeat(coarse, repeat, axis=0))
                else:
                    width = tf.shape(fine)[-1]
                    blocks[key].append(tf.reshape(tf.reshape(fine, [-1, repeat, width]) + coarse[:, None, :],
                                                  [-1, width]))
        return {key: tf.concat(pieces, 0) if len(pieces) > 1 else pieces[0] for key, pieces in blocks.items()}

    supports_row_ranges = True  # call() accepts a_until / b_from
    supports_out_kernels = True  # call() accepts out_kernels

    def _experts(self, x: tf.Tensor | Segments) -> tf.Tensor | Segments:
        """All K experts of one group from one matmul's output: [n, K*c] -> [n, K, c] (Eq. 7-9)."""
        return _map(lambda part: tf.reshape(part, [-1, self.num_experts, int(part.shape[-1]) // self.num_experts]), x)

    def _compose(self, kernel: tf.Tensor, out: tf.Tensor) -> tf.Tensor:
        """Expert kernel [in, K*dim] times ``out`` [dim, h] expert by expert: [in, K*h]."""
        k, d = self.num_experts, self.dim
        composed = tf.einsum("ikd,dh->ikh", tf.reshape(kernel, [-1, k, d]), out)
        return tf.reshape(composed, [-1, k * int(out.shape[-1])])

    def call(self, e_u: tf.Tensor | Rows, e_i: tf.Tensor | Rows, e_p: tf.Tensor | Rows,
             a_until: int | tf.Tensor | None = None, b_from: int | tf.Tensor | None = None,
             out_kernels: dict[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
        """Runs the L expert/gate layers on rows of (initiator, item, participant).

        A training batch needs g^L_A only for the rows a task-A score is taken from and g^L_B only
        for the task-B ones. With ``a_until`` / ``b_from`` the last layer computes task A's experts
        and gate for rows ``[0, a_until)`` only and task B's for rows ``[b_from, N)`` only (the
        shared experts for both); the rows computed are identical to a full call's.

        ``out_kernels`` = {"a": H_A, "b": H_B} ([dim, h] each, e.g. the first Dense kernels of the
        prediction heads) returns g^L_A H_A and g^L_B H_B. Mixing is linear in the expert outputs,
        so for h < dim the product is folded into the last layer's expert kernels (W H has h
        columns per expert instead of dim): fewer FLOPs, the same values up to rounding.

        Args:
            e_u: Initiator embeddings [N, w] (w = 2d in MGBR, Eq. 4), or :class:`Rows`.
            e_i: Item embeddings [N, w] (Eq. 5), or :class:`Rows`.
            e_p: Participant embeddings [N, w] (Eq. 6), or :class:`Rows`.
            a_until: Rows [0, a_until) get g^L_A (default: all).
            b_from: Rows [b_from, N) get g^L_B (default: all); with both given, b_from <= a_until
                (every row is some task's).
            out_kernels: Optional {"a": [dim, h_a], "b": [dim, h_b]} output products.

        Returns:
            Dict with "a": g^L_A [a_until, dim] and "b": g^L_B [N - b_from, dim] (times the
            out_kernels when given).
        """
        parts = {"u": e_u, "i": e_i, "p": e_p}
        for name, x in parts.items():
            width = (x.table if isinstance(x, Rows | Tiled) else x).shape[-1]
            if width is not None and width != self.input_width:
                raise ValueError(
                    f"MultiTaskBlock: e_{name} has width {width}, expected {self.input_width}."
                )
        if out_kernels is not None and set(out_kernels) != {"a", "b"}:
            raise ValueError(f"MultiTaskBlock: out_kernels needs keys 'a' and 'b', got {sorted(out_kernels)}.")
        proj = self._input_projections(parts)
        trimmed = a_until is not None and b_from is not None
        if trimmed and isinstance(a_until, int) and isinstance(b_from, int):
            if b_from > a_until:
                raise ValueError(f"MultiTaskBlock: b_from ({b_from}) must not exceed a_until ({a_until}).")
        elif trimmed:
            tf.debugging.assert_less_equal(tf.cast(b_from, tf.int64), tf.cast(a_until, tf.int64),
                                           message="MultiTaskBlock: b_from must not exceed a_until")
        # Fold out_kernels into the last layer's experts when that saves columns (not at layer 1,
        # whose experts come from the per-entity projections).
        fold = (out_kernels is not None and self.num_layers > 1
                and all(int(k.shape[-1]) < self.dim for k in out_kernels.values()))
        g_a = g_b = g_s = None
        for layer, w in enumerate(self._mtl_weights):
            last = layer == self.num_layers - 1
            cache: dict[int, tuple[tf.Tensor, list[tf.Tensor]]] = {}  # id(x) -> (x, its three segments)

            def rows(x: tf.Tensor, task: str, last: bool = last, cache: dict = cache) -> tf.Tensor | Segments:
                """Rows [N, c] of this layer restricted to ``task``'s ("s": all rows)."""
                if task == "s" or not last:
                    return x
                if trimmed:  # the last layer: A-only, both, B-only segments of one split
                    if id(x) not in cache:
                        n = tf.shape(x)[0]
                        cache[id(x)] = (x, tf.split(x, tf.stack([b_from, a_until - b_from, n - a_until]), num=3))
                    head, both, tail = cache[id(x)][1]
                    return Segments((head, both)) if task == "a" else Segments((both, tail))
                bound = a_until if task == "a" else b_from
                if bound is None:
                    return x
                return x[:bound] if task == "a" else x[bound:]

            ins = None  # Eq. 15: every expert and gate of layer 1 reads g^0 (its projections are in proj)
            if layer > 0:
                ins = ({"a": tf.concat([g_a, g_s], axis=-1),  # [N, 2d]
                        "b": tf.concat([g_b, g_s], axis=-1),
                        "s": tf.concat([g_a, g_s, g_b], axis=-1)}  # [N, 3d]
                       if self.shared else {"a": g_a, "b": g_b})  # [N, d]

            def linear(name: str, task: str, kernel: tf.Tensor | None = None, layer: int = layer, w: dict = w,
                       ins: dict | None = ins, rows=rows) -> tf.Tensor | Segments:
                """Expert or gate ``name`` on ``task``'s rows of this layer (layer 1: from the projections)."""
                if ins is None:
                    return rows(proj[(0, name)], task)
                kernel = w[name] if kernel is None else kernel
                return _map(lambda part: tf.matmul(part, kernel), rows(ins[name[-1]], task))

            folding = fold and last
            h = out_kernels if folding else {}
            e_a = self._experts(linear("expert_a", "a", self._compose(w["expert_a"], h["a"]) if folding else None))  # Eq. 7
            e_b = self._experts(linear("expert_b", "b", self._compose(w["expert_b"], h["b"]) if folding else None))  # Eq. 8
            groups_a, groups_b = [e_a], [e_b]
            if self.shared:  # E_S, Eq. 9: on task A's and task B's rows (all rows but at the last layer)
                if folding:
                    s_a = self._experts(linear("expert_s", "a", self._compose(w["expert_s"], h["a"])))
                    s_b = self._experts(linear("expert_s", "b", self._compose(w["expert_s"], h["b"])))
                    e_s = None  # the last layer has no gate S
                elif last and trimmed:  # one split, each segment multiplied once
                    src, kernel = (proj[(0, "expert_s")], None) if ins is None else (ins["s"], w["expert_s"])
                    head, both = rows(src, "a").parts
                    tail = rows(src, "b").parts[1]
                    head, both, tail = (self._experts(v if kernel is None else tf.matmul(v, kernel)) for v in (head, both, tail))
                    s_a, s_b, e_s = Segments((head, both)), Segments((both, tail)), None
                else:
                    e_s = self._experts(linear("expert_s", "s"))
                    s_a, s_b = rows(e_s, "a"), rows(e_s, "b")
                groups_a, groups_b = [e_a, s_a], [e_b, s_b]
            terms_a = [(1.0, _map(self._weights, linear("gate_a", "a")), groups_a)]  # generic gate, Eq. 10 (g_A1)
            terms_b = [(1.0, _map(self._weights, linear("gate_b", "b")), groups_b)]  # Eq. 13, first line
            if self.alpha != 0.0:
                # Adjusted gates, Eq. 11 and 13: A mixes E_A by (u,i) and E_S by (i,p), (u,p);
                # B mixes E_S by (u,i) and E_B by (i,p), (u,p). Without S, E_S -> E_A / E_B.
                other_a = s_a if self.shared else e_a
                other_b = s_b if self.shared else e_b

                def adjusted(name: str, layer: int = layer, rows=rows):
                    return _map(self._weights, rows(proj[(layer, name)], name[5]))

                terms_a += [(self.alpha, adjusted("gate_a_ui"), [e_a]), (self.alpha, adjusted("gate_a_ip"), [other_a]),
                            (self.alpha, adjusted("gate_a_up"), [other_a])]  # Eq. 12
                terms_b += [(self.alpha, adjusted("gate_b_ui"), [other_b]), (self.alpha, adjusted("gate_b_ip"), [e_b]),
                            (self.alpha, adjusted("gate_b_up"), [e_b])]  # Eq. 13
            outputs = {"a": terms_a, "b": terms_b}
            if self.shared and "gate_s" in w:  # not at the last layer
                outputs["s"] = [(1.0, self._weights(linear("gate_s", "s")), [e_a, e_s, e_b])]  # Eq. 14
            mixed = mixtures(outputs)
            g_a, g_b, g_s = mixed["a"], mixed["b"], mixed.get("s")
        if out_kernels is not None and not fold:
            g_a, g_b = tf.matmul(g_a, out_kernels["a"]), tf.matmul(g_b, out_kernels["b"])
        return {"a": g_a, "b": g_b}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_experts=self.num_experts,
            num_layers=self.num_layers,
            alpha=self.alpha,
            shared=self.shared,
            gate_softmax=self.gate_softmax,
        )
        return config


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
        ``MultiTaskBlock(out_kernels=...)``): the same as ``call(inputs)`` up to rounding."""
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
