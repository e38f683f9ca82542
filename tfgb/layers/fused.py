"""The multi-task block's fast path: :meth:`TaskBlock.call`'s outputs from the same weights, faster.

:func:`run` reads the experts and gates of a :class:`~tfgb.layers.mtl.TaskBlock` (MGBR's or MAMGBR's)
and follows the same wiring (Eq. 7-15 of MGBR); the models train and score through it. What it does
that the readable ``call`` does not:

1. **Distinct entities.** Layer 1's experts and gates and every adjusted gate begin with a linear map
   of e_u, e_i and e_p alone (the whole expert for linear experts; Q/K/V or the FFN's first layer for
   attention experts; a gate's first dense layer). Given as :class:`~tfgb.layers.layout.Rows` or
   :class:`~tfgb.layers.layout.Tiled`, each distinct initiator, item and participant is projected once
   and the products gathered per row (or added once per list and broadcast).
2. **Task rows at the last layer.** When rows are independent (``block.rows_independent``), the last
   layer computes task A only on rows [0, a_until) and task B only on [b_from, N). The layer's per-row
   inputs are split once into three segments (A only, both, B only) and each segment is a batch of its
   own, so no [N, K, d] expert output is sliced (a slice's gradient is a zero-padded [N, K, d]).
3. **Grouped mixing.** A gate's weights on one expert group are added before mixing (task A's generic
   and (u, i) weights both mix E_A), and a group that several gates mix (E_S below the last layer) is
   read by one [M, K] x [K, d] product per row.
4. **Head folding.** With linear experts, L > 1 and a head's first width h < d, the head's first kernel
   H goes into the last layer's expert kernels (W H, h columns per expert): mixing is linear, so the
   product is g^L H up to rounding.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import tensorflow as tf

from tfgb.layers.layout import Part, project_parts, width
from tfgb.layers.mtl import PAIRS, TASKS, TaskBlock, check_tasks

__all__ = ["mixtures", "run"]

# The per-row inputs of one layer: ("g", gate) -> g^{l-1} of that gate; (layer, sub-layer, kernel name) -> the
# product of e_u, e_i, e_p with that kernel (see _plan).
LayerInputs = dict[Hashable, tf.Tensor]


def run(block: TaskBlock, e_u: Part, e_i: Part, e_p: Part, *, training: bool | None = None,
        tasks: Sequence[str] = TASKS, a_until: int | tf.Tensor | None = None, b_from: int | tf.Tensor | None = None,
        out_kernels: Mapping[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
    """The block's outputs on rows of (initiator, item, participant), by the fast path.

    Args:
        block: A :class:`~tfgb.layers.mtl.TaskBlock` (built on first use).
        e_u, e_i, e_p: The N rows [N, w]: dense, :class:`~tfgb.layers.layout.Rows`, or all three
            :class:`~tfgb.layers.layout.Tiled`.
        training: Training mode (batch statistics and dropout of experts that have them).
        tasks: Outputs to compute, a subset of ("a", "b").
        a_until: Task A's output for rows [0, a_until) only (default: all).
        b_from: Task B's output for rows [b_from, N) only (default: all); with both tasks and both
            bounds, b_from <= a_until (every row is some task's).
        out_kernels: Optional {task: H [dim, h]} (e.g. the heads' first Dense kernels): return g^L H.

    Returns:
        {task: rows of g^L_task [n, dim], or g^L_task H [n, h] with out_kernels}.
    """
    tasks = check_tasks(block, tasks)
    parts = {"u": e_u, "i": e_i, "p": e_p}
    if not block.built:
        block(*[tf.zeros([0, width(e_u)])] * 3)
    for name, x in parts.items():
        if width(x) is not None and width(x) != block.input_width:
            raise ValueError(f"{type(block).__name__}: e_{name} has width {width(x)}, expected {block.input_width}.")
    if out_kernels is not None and not set(tasks) <= set(out_kernels):
        raise ValueError(f"out_kernels needs a kernel for each of {tasks}, got {sorted(out_kernels)}.")
    _check_ranges(tasks, a_until, b_from)
    products = project_parts(parts, _plan(block, tasks))
    fold = (out_kernels is not None and block.linear_experts and block.num_layers > 1
            and all(int(out_kernels[task].shape[-1]) < block.dim for task in tasks))
    last = block.num_layers - 1

    def inputs(layer: int, g: dict[str, tf.Tensor]) -> LayerInputs:
        return {**{("g", x): value for x, value in g.items()},
                **{key: value for key, value in products.items() if key[0] == layer}}

    g: dict[str, tf.Tensor] = {}
    for layer in range(last):
        g = _layer(block, layer, inputs(layer, g), block.gates_at(layer, tasks), None, training)
    trim = block.rows_independent(training)
    pieces: dict[str, list[tf.Tensor]] = {task: [] for task in tasks}
    for segment_tasks, segment in _segments(inputs(last, g), tasks, a_until, b_from, trim):
        out = _layer(block, last, segment, segment_tasks, out_kernels if fold else None, training)
        for task in segment_tasks:
            pieces[task].append(out[task])
    out = {task: tf.concat(p, 0) if len(p) > 1 else p[0] for task, p in pieces.items()}
    if not trim:  # every row was computed (e.g. batch statistics need them all): keep each task's
        if "a" in out and a_until is not None:
            out["a"] = out["a"][:a_until]
        if "b" in out and b_from is not None:
            out["b"] = out["b"][b_from:]
    if out_kernels is not None and not fold:
        out = {task: tf.matmul(value, out_kernels[task]) for task, value in out.items()}
    return out


def _check_ranges(tasks: tuple[str, ...], a_until, b_from) -> None:
    if len(tasks) < 2 or a_until is None or b_from is None:
        return
    if isinstance(a_until, int) and isinstance(b_from, int):
        if b_from > a_until:
            raise ValueError(f"b_from ({b_from}) must not exceed a_until ({a_until}).")
    else:
        tf.debugging.assert_less_equal(tf.cast(b_from, tf.int64), tf.cast(a_until, tf.int64),
                                       message="b_from must not exceed a_until")


def _plan(block: TaskBlock, tasks: tuple[str, ...]) -> dict[str, list]:
    """The products of e_u, e_i, e_p with every kernel that applies to them alone, per part.

    Keys (layer, sub-layer, kernel name): layer 1's experts and generic gates read the tokens
    (e_u, e_i, e_p) (Eq. 15), every layer's adjusted gates the pairs (e_u, e_i), (e_i, e_p), (e_u, e_p).
    """
    w = block.input_width
    plan: dict[str, list] = {part: [] for part in "uip"}
    first = block.stages[0]
    names = [f"expert_{x}" for x in block.experts_at(0, tasks)] + [f"gate_{x}" for x in block.gates_at(0, tasks)]
    for name in names:
        for t, part in enumerate("uip"):
            plan[part] += [((0, name, key), kernel) for key, kernel in first[name].input_kernels(t, w)]
    if block.alpha != 0.0:
        for layer, stage in enumerate(block.stages):
            for task in (x for x in block.gates_at(layer, tasks) if x in TASKS):
                for pair in PAIRS:
                    name = f"gate_{task}_{pair}"
                    for j, part in enumerate(pair):
                        plan[part] += [((layer, name, key), kernel) for key, kernel in stage[name].input_kernels(j, w)]
    return plan


def _segments(rows: LayerInputs, tasks: tuple[str, ...], a_until, b_from,
              trim: bool) -> list[tuple[tuple[str, ...], LayerInputs]]:
    """The last layer's rows as (tasks, per-row inputs) segments: each task's rows only when ``trim``."""
    if not trim or (a_until is None and b_from is None):
        return [(tasks, rows)]
    if tasks == ("a",):
        return [(tasks, rows if a_until is None else {key: value[:a_until] for key, value in rows.items()})]
    if tasks == ("b",):
        return [(tasks, rows if b_from is None else {key: value[b_from:] for key, value in rows.items()})]
    n = tf.shape(next(iter(rows.values())))[0]
    start = tf.constant(0) if b_from is None else tf.cast(b_from, tf.int32)
    stop = n if a_until is None else tf.cast(a_until, tf.int32)
    split = {key: tf.split(value, tf.stack([start, stop - start, n - stop]), num=3) for key, value in rows.items()}
    empty = [b_from is None or (isinstance(b_from, int) and b_from == 0), False, a_until is None]  # known empty
    return [(segment_tasks, {key: values[j] for key, values in split.items()})
            for j, segment_tasks in enumerate((("a",), ("a", "b"), ("b",))) if not empty[j]]


def _layer(block: TaskBlock, layer: int, rows: LayerInputs, gates: Sequence[str],
           out_kernels: Mapping[str, tf.Tensor] | None, training: bool | None) -> dict[str, tf.Tensor]:
    """Layer ``layer`` (0-based) on one set of rows: {gate: g^l [n, d]}, or g^l H with ``out_kernels``
    (folded into the experts: each gate mixes its groups' outputs times its own H)."""
    stage, wiring = block.stages[layer], block.wiring

    def products(name: str) -> dict:
        return {key[2]: value for key, value in rows.items() if key[:2] == (layer, name)}

    def tokens(x: str) -> list[tf.Tensor]:
        return [rows[("g", y)] for y in wiring.reads[x]]

    experts: dict[tuple[str, str | None], tf.Tensor] = {}

    def group(x: str, gate: str) -> tuple[str, str | None]:
        """The key of E_x as gate ``gate`` mixes it (computed on first use)."""
        key = (x, gate if out_kernels else None)
        if key not in experts:
            sub = stage[f"expert_{x}"]
            if layer == 0:
                experts[key] = sub.from_inputs(products(f"expert_{x}"), training)
            else:
                experts[key] = sub.from_tokens(tokens(x), training, out_kernels[gate] if out_kernels else None)
        return key

    terms: dict[str, list] = {}
    for gate in gates:
        sub = stage[f"gate_{gate}"]
        weights = sub.from_inputs(products(f"gate_{gate}")) if layer == 0 else sub(tf.concat(tokens(gate), axis=-1))
        terms[gate] = [(1.0, weights, [group(x, gate) for x in wiring.mixes[gate]])]  # Eq. 10, 13, 14
        if block.alpha != 0.0 and gate in TASKS:
            for pair, x in wiring.adjusted[gate]:  # Eq. 11, 13
                name = f"gate_{gate}_{pair}"
                terms[gate].append((block.alpha, stage[name].from_inputs(products(name)), [group(x, gate)]))
    return mixtures(terms, experts)


def mixtures(outputs: Mapping[str, Sequence[tuple[float, tf.Tensor, Sequence[Hashable]]]],
             groups: Mapping[Hashable, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Several gate outputs, each ``sum_terms coef * mix(weights, [groups[key] for key in keys])``.

    Mixing is linear in the weights, so per output the weights of each group are added first; a group
    mixed by M > 1 outputs is read once: one [M, K] x [K, c] product per row gives all M mixtures, and
    the backward pass builds one [N, K, c] gradient for it, not M to be added.

    Args:
        outputs: name -> terms ``(coef, weights [N, G*K], keys)``; the K weights of ``groups[keys[j]]``
            are columns j*K..(j+1)*K-1 of ``weights``.
        groups: key -> expert outputs [N, K, c].

    Returns:
        name -> the mixed rows [N, c].
    """
    summed: dict[Hashable, dict[str, tf.Tensor]] = {}  # group -> output -> its summed weights [N, K]
    for name, terms in outputs.items():
        for coef, weights, keys in terms:
            for key, w in zip(keys, tf.split(weights, len(keys), axis=1) if len(keys) > 1 else [weights]):
                w = w if coef == 1.0 else coef * w
                per_output = summed.setdefault(key, {})
                per_output[name] = per_output[name] + w if name in per_output else w
    out: dict[str, tf.Tensor] = {}
    for key, per_output in summed.items():
        names = list(per_output)
        if len(names) > 1:
            mixed = tf.unstack(tf.matmul(tf.stack([per_output[n] for n in names], axis=1), groups[key]), axis=1)
        else:
            # A batched [1, K] x [K, c] matmul per row: on CPU its gradient is several times faster than
            # the same contraction as an einsum.
            mixed = [tf.squeeze(tf.matmul(per_output[names[0]][:, None, :], groups[key]), axis=1)]
        for name, term in zip(names, mixed):
            out[name] = out[name] + term if name in out else term
    return out
