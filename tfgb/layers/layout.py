"""Rows of the multi-task block given by reference to distinct entities (the fused path's inputs).

A batch scores many rows (u, i, p) that share their initiator, item or participant. The block's
first layer and its adjusted gates are linear in e_u, e_i and e_p alone, so the fused path
(:mod:`tfgb.layers.fused`) projects each distinct entity once and gathers the products, instead of
gathering the embeddings per row and projecting every row:

* :class:`Rows` (table, index): row n is ``table[index[n]]``;
* :class:`Tiled` (table, blocks): the same, with parts repeated over a list's rows (a triple's
  initiator over its |T| auxiliary rows): their products are added once per list and broadcast.

``materialize`` gives the dense rows [N, w] that the readable block (:mod:`tfgb.layers.mtl`) takes.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

import tensorflow as tf

__all__ = ["Rows", "Tiled", "columns", "materialize", "project", "project_parts", "to_rows"]


class Rows(NamedTuple):
    """Rows given by reference: row n is ``table[index[n]]``.

    Attributes:
        table: [M, w] distinct embeddings.
        index: [N] int row of ``table`` for each of the N rows scored.
    """

    table: tf.Tensor
    index: tf.Tensor


class Tiled(NamedTuple):
    """Rows given by reference, in blocks of repeated references.

    Block j holds ``len(index_j) * repeat_j`` rows; row r of block j is ``table[index_j[r // repeat_j]]``,
    and the blocks' rows follow one another. The e_u, e_i and e_p of one call must have the same number
    of blocks and the same number of rows in each; within a block every repeat is 1 or one common value.

    Attributes:
        table: [M, w] distinct embeddings.
        blocks: ``((index_j [n_j] int, repeat_j), ...)``.
    """

    table: tf.Tensor
    blocks: tuple[tuple[tf.Tensor, int], ...]


Part = tf.Tensor | Rows | Tiled


def to_rows(x: Tiled) -> Rows:
    """The :class:`Rows` of a :class:`Tiled` part (one index per row)."""
    return Rows(x.table, tf.concat([tf.repeat(index, repeat) for index, repeat in x.blocks], 0))


def materialize(x: Part) -> tf.Tensor:
    """The dense [N, w] rows of a tensor, :class:`Rows` or :class:`Tiled`."""
    if isinstance(x, Tiled):
        x = to_rows(x)
    return tf.gather(x.table, x.index) if isinstance(x, Rows) else x


def columns(x: Part, cols: slice) -> Part:
    """``x`` with only the embedding columns ``cols`` (the same layout of rows)."""
    if isinstance(x, Rows | Tiled):
        return x._replace(table=x.table[:, cols])
    return x[:, cols]


def width(x: Part) -> int | None:
    """The static embedding width of ``x``."""
    return (x.table if isinstance(x, Rows | Tiled) else x).shape[-1]


def project(x: tf.Tensor | Rows, kernels: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """``[x @ kernel for kernel in kernels]`` with one matmul.

    Args:
        x: Rows [N, width], dense or as :class:`Rows` (each distinct entity [M, width] is projected
            once, then gathered).
        kernels: Matrices [width, c_j].

    Returns:
        One [N, c_j] projection per kernel.
    """
    table = x.table if isinstance(x, Rows) else x
    out = tf.matmul(table, kernels[0] if len(kernels) == 1 else tf.concat(list(kernels), axis=1))
    pieces = [out] if len(kernels) == 1 else tf.split(out, [int(k.shape[1]) for k in kernels], axis=1)
    if isinstance(x, Rows):
        # Split the [M, sum c_j] product of the distinct entities, then gather each piece: a per-row
        # [N, sum c_j] gather followed by a split would hold every row's product twice.
        pieces = [tf.gather(piece, x.index) for piece in pieces]
    return pieces


Plan = dict[str, list[tuple[Hashable, tf.Tensor]]]


def project_parts(parts: dict[str, Part], plan: Plan) -> dict[Hashable, tf.Tensor]:
    """Per-row sums of products of the parts: ``out[key] = sum over (part, (key, kernel)) of part @ kernel``.

    Args:
        parts: name -> rows [N, w] (dense, :class:`Rows`, or all of them :class:`Tiled`).
        plan: part name -> ``(key, kernel [w, c])`` entries; entries of several parts with the same
            key are added (e.g. g^0 W = e_u W_u + e_i W_i + e_p W_p).

    Returns:
        key -> [N, c].
    """
    tiled = [isinstance(x, Tiled) for x in parts.values()]
    if any(tiled) and not all(tiled):
        raise ValueError("give e_u, e_i and e_p all as Tiled, or none of them")
    if all(tiled) and parts:
        return _tiled_products(parts, plan)
    out: dict[Hashable, tf.Tensor] = {}
    for name, entries in plan.items():
        if not entries:
            continue
        for (key, _), piece in zip(entries, project(parts[name], [kernel for _, kernel in entries])):
            out[key] = out[key] + piece if key in out else piece
    return out


def _tiled_products(parts: dict[str, Tiled], plan: Plan) -> dict[Hashable, tf.Tensor]:
    """:func:`project_parts` for :class:`Tiled` parts.

    In each block the repeated parts' products are gathered once per list and added there, the per-row
    parts' are gathered per row, and the two sums meet in one broadcast add.
    """
    counts = {len(x.blocks) for x in parts.values()}
    if len(counts) != 1:
        raise ValueError(f"Tiled parts have different numbers of blocks: {sorted(counts)}")
    tables: dict[str, dict[Hashable, tf.Tensor]] = {}  # part -> key -> [M, c] product of its distinct entities
    for name, entries in plan.items():
        if entries:
            pieces = project(parts[name].table, [kernel for _, kernel in entries])
            tables[name] = {key: piece for (key, _), piece in zip(entries, pieces)}
    keys = list(dict.fromkeys(key for entries in plan.values() for key, _ in entries))
    blocks: dict[Hashable, list[tf.Tensor]] = {key: [] for key in keys}
    for j in range(counts.pop()):
        # Repeats must be static; Keras may hand python ints over as constant tensors.
        refs = {name: (x.blocks[j][0], int(tf.get_static_value(x.blocks[j][1]))) for name, x in parts.items()}
        repeats = {r for _, r in refs.values()} - {1}
        if len(repeats) > 1:
            raise ValueError(f"Tiled block {j} repeats parts by different counts {sorted(repeats)}")
        repeat = repeats.pop() if repeats else 1
        for key in keys:
            coarse = fine = None  # sums of the repeated parts' (one row per list) and of the per-row parts'
            for name, (index, r) in refs.items():
                if key not in tables.get(name, {}):
                    continue
                rows = tf.gather(tables[name][key], index)
                if r == 1:
                    fine = rows if fine is None else fine + rows
                else:
                    coarse = rows if coarse is None else coarse + rows
            if coarse is None:
                blocks[key].append(fine)
            elif fine is None:
                blocks[key].append(tf.repeat(coarse, repeat, axis=0))
            else:
                cols = tf.shape(fine)[-1]
                blocks[key].append(tf.reshape(tf.reshape(fine, [-1, repeat, cols]) + coarse[:, None, :], [-1, cols]))
    return {key: tf.concat(pieces, 0) if len(pieces) > 1 else pieces[0] for key, pieces in blocks.items()}
