"""The rows of one MGBR training batch through the multi-task block, and which task scores each."""
from __future__ import annotations

from typing import ClassVar

import tensorflow as tf

from tfgb.layers.layout import Tiled

__all__ = ["TrainingRows"]


class TrainingRows:
    """The block's rows for a batch of b triples (u, i, p) with negatives i-, p- and t auxiliary rows each.

    Segments of rows, in this order (e_p = ``mean``: task A's mean participant embedding, Sec. II-E):

        ``a_pos``  (u, i,    mean)   b      task A      positive of L_A (Eq. 19)
        ``a_neg``  (u, i-,   mean)   b      task A      negative of L_A
        ``tp``     (u, i,    p'_j)   b*t    task A      T^P of L'_A (Eq. 20-21)
        ``ti``     (u, i'_j, p)      b*t    tasks A, B  T^I of L'_A, and the negatives of L'_B (Eq. 24)
        ``b_pos``  (u, i,    p)      b      task B      positive of L_B
        ``b_neg``  (u, i,    p-)     b      task B      negative of L_B

    Without auxiliary losses t = 0 (no ``tp``, ``ti``). Task A's rows come first and task B's last, so
    the block needs g^L_A on rows [0, a_until) and g^L_B on rows [b_from, N) only.

    Every row refers to distinct entities: the batch's initiators (table row = triple), its distinct
    items :attr:`item_ids` and distinct participants :attr:`participant_ids` (row 0, id -1: the mean).
    A triple's initiator and its item (``tp``) or participant (``ti``) repeat over its t auxiliary rows;
    :meth:`parts` gives them once per triple (:class:`~tfgb.layers.layout.Tiled`).

    Args:
        inputs: A :func:`tfgb.data.stream` batch: ``initiator``, ``item``, ``participant``,
            ``neg_item``, ``neg_participant`` [b], and with ``aux`` ``aux_items``, ``aux_participants`` [b, t].
        aux: Whether the auxiliary rows are scored.
    """

    TASKS: ClassVar[dict[str, tuple[str, ...]]] = {"a": ("a_pos", "a_neg", "tp", "ti"), "b": ("ti", "b_pos", "b_neg")}

    def __init__(self, inputs: dict[str, tf.Tensor], aux: bool) -> None:
        u = inputs["initiator"]
        b = tf.shape(u)[0]
        self.t = t = 0
        if aux:
            self.t = t = inputs["aux_items"].shape[1]  # static (the stream's aux_size)
            if t is None:
                raise ValueError("MGBR needs the aux set size as a static shape (aux_items [B, T])")
        seq = tf.range(b)
        # Slots: the batch's item and participant references, before duplicates are merged.
        item_slots = [inputs["item"], inputs["neg_item"]]
        part_slots = [-tf.ones_like(u[:1]), inputs["participant"], inputs["neg_participant"]]
        item, part = {"i": seq, "i-": b + seq}, {"mean": tf.zeros_like(seq), "p": 1 + seq, "p-": 1 + b + seq}
        # segment -> the (slot, repeat) of each part; and each row's item and participant id (broadcastable).
        self.refs = {"a_pos": {"u": (seq, 1), "i": (item["i"], 1), "p": (part["mean"], 1)},
                     "a_neg": {"u": (seq, 1), "i": (item["i-"], 1), "p": (part["mean"], 1)}}
        self.ids = {"a_pos": {"i": inputs["item"]}, "a_neg": {"i": inputs["neg_item"]}}
        if t:
            flat = tf.range(b * t)
            item_slots.append(tf.reshape(inputs["aux_items"], [-1]))
            part_slots.append(tf.reshape(inputs["aux_participants"], [-1]))
            self.refs["tp"] = {"u": (seq, t), "i": (item["i"], t), "p": (1 + 2 * b + flat, 1)}
            self.refs["ti"] = {"u": (seq, t), "i": (2 * b + flat, 1), "p": (part["p"], t)}
            self.ids["tp"] = {"i": inputs["item"][:, None], "p": inputs["aux_participants"]}
            self.ids["ti"] = {"i": inputs["aux_items"], "p": inputs["participant"][:, None]}
        self.refs["b_pos"] = {"u": (seq, 1), "i": (item["i"], 1), "p": (part["p"], 1)}
        self.refs["b_neg"] = {"u": (seq, 1), "i": (item["i"], 1), "p": (part["p-"], 1)}
        self.ids["b_pos"] = {"p": inputs["participant"]}
        self.ids["b_neg"] = {"p": inputs["neg_participant"]}
        # One table row per distinct id (tf.unique keeps first occurrences in order: the mean stays row 0).
        self.item_ids, item_row = tf.unique(tf.concat(item_slots, 0))
        self.participant_ids, part_row = tf.unique(tf.concat(part_slots, 0))
        rows = {"u": lambda s: s, "i": lambda s: tf.gather(item_row, s), "p": lambda s: tf.gather(part_row, s)}
        self.refs = {segment: {key: (rows[key](slots), r) for key, (slots, r) in refs.items()}
                     for segment, refs in self.refs.items()}
        self.b = b
        self.sizes = {segment: b * (t if segment in ("tp", "ti") else 1) for segment in self.refs}
        order = list(self.refs)
        last_a = max(order.index(s) for s in self.TASKS["a"] if s in self.refs)
        first_b = min(order.index(s) for s in self.TASKS["b"] if s in self.refs)
        self.a_until = sum(self.sizes[s] for s in order[:last_a + 1])  # rows [0, a_until) are task A's
        self.b_from = sum(self.sizes[s] for s in order[:first_b])  # rows [b_from, N) are task B's

    def parts(self, users: tf.Tensor, items: tf.Tensor, participants: tf.Tensor) -> tuple[Tiled, Tiled, Tiled]:
        """e_u, e_i, e_p of every row, from the distinct embeddings.

        Args:
            users: [b, w], the triples' initiators.
            items: [len(item_ids), w].
            participants: [len(participant_ids), w] (row 0: the mean participant).
        """
        blocks: list[dict[str, tuple[tf.Tensor, int]]] = []
        for refs in self.refs.values():
            plain = all(r == 1 for _, r in refs.values())
            if plain and blocks and all(r == 1 for _, r in blocks[-1].values()):  # one block of consecutive plain rows
                blocks[-1] = {key: (tf.concat([blocks[-1][key][0], slots], 0), 1) for key, (slots, _) in refs.items()}
            else:
                blocks.append(dict(refs))
        return tuple(Tiled(table, tuple(block[key] for block in blocks))
                     for key, table in (("u", users), ("i", items), ("p", participants)))

    def split(self, logits: tf.Tensor, task: str) -> dict[str, tf.Tensor]:
        """Task ``task``'s logits [n] (rows [0, a_until) for "a", [b_from, N) for "b") by segment:
        [b] per triple, or [b, t] for ``tp`` and ``ti``."""
        names = [s for s in self.TASKS[task] if s in self.sizes]
        pieces = tf.split(logits, tf.stack([self.sizes[s] for s in names]), num=len(names))
        return {s: tf.reshape(x, [self.b, self.t]) if s in ("tp", "ti") else x for s, x in zip(names, pieces)}
