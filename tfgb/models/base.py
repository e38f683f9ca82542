"""The interface every tfgb model implements, and the scoring helpers they share.

A model is built from one :class:`~tfgb.models.context.ModelContext` (``Model(context, settings,
train)``, see :mod:`tfgb.models.registry`). It propagates its embeddings once (``propagate``, a dict
of tensors whose kinds ``table_kinds`` declares: per-user tables [U, ...], per-item tables [I, ...]
and constants), then scores candidate matrices for the two tasks from those embeddings. Training calls ``compute_loss`` (the TFRS contract) on the batches of
:mod:`tfgb.data.stream`; evaluation and export call ``propagate`` once and the scorers many times.
Every candidate's score depends only on its own (u, i, p) row, never on its column or on other
rows of the batch.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfgb.models.context import ModelContext


def align_values(full: tf.sparse.SparseTensor, part: tf.sparse.SparseTensor) -> np.ndarray:
    """``part``'s values at ``full``'s indices (0 where ``part`` has no entry), ``float32`` [nnz of full].

    Both in row-major order; every entry of ``part`` must be an entry of ``full``.
    """
    width = int(full.dense_shape[1])
    full_keys = full.indices.numpy() @ np.array([width, 1], np.int64)
    part_keys = part.indices.numpy() @ np.array([width, 1], np.int64)
    where = np.searchsorted(full_keys, part_keys)
    if part_keys.size and (where.max() >= full_keys.size or not np.array_equal(full_keys[where], part_keys)):
        raise ValueError("a fold graph has an entry that the full training graph lacks")
    out = np.zeros(full_keys.size, np.float32)
    out[where] = part.values.numpy()
    return out


class Graphs:
    """A plain (untracked) holder of the training graphs: constants, never checkpointed or exported."""

    def __init__(self, graphs: dict[str, tf.sparse.SparseTensor]):
        self.graphs = dict(graphs)

    def __getitem__(self, key: str) -> tf.sparse.SparseTensor:
        return self.graphs[key]


class GroupBuyingModel(tfrs.Model):
    """Base class: subclasses implement ``propagate``, ``score_items``, ``score_participants``
    and ``compute_loss``.

    Embedding dict conventions (``propagate`` output): ``users_i`` [U, D] initiator embeddings,
    ``items`` [I, D], ``users_p`` [U, D] participant embeddings.
    """

    def __init__(self, context: ModelContext, **kwargs):
        super().__init__(**kwargs)
        self.num_users = int(context.num_users)
        self.num_items = int(context.num_items)
        self._graphs = Graphs(self.derive_graphs(dict(context.graphs)))
        # train.graph_folds: per fold f, the graphs of the training groups outside fold f. Each fold
        # graph (and each graph the model derives from it) has a subset of the full graph's entries,
        # so it is kept as values over the full graph's indices, zero where fold f's groups were the
        # only source of an entry: [k, nnz] per graph, one copy of the indices. Untracked constants.
        self._fold_values = Graphs({})
        if context.fold_graphs and self.uses_graph_folds:
            derived = [self.derive_graphs(dict(graphs)) for graphs in context.fold_graphs]
            self._fold_values = Graphs({key: tf.constant(np.stack([align_values(full, d[key]) for d in derived]))
                                        for key, full in self._graphs.graphs.items()})

    # Every tfgb step and scorer is plain TensorFlow (explicit tf.while_loop, Python control flow on
    # static values only), so it is traced without AutoGraph: converting the source of the multi-task
    # block was most of the tracing time (the scorers and exports use autograph=False likewise).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """TFRS's train step (``compute_loss``, its gradient, the optimizer), traced without AutoGraph."""
        return super().train_step(inputs)

    # Models whose training propagates over the graphs set this: their batches of a
    # ``train.graph_folds`` stream are then scored over their fold's graphs (see ``propagate_batch``).
    uses_graph_folds = False

    def derive_graphs(self, graphs: dict[str, tf.sparse.SparseTensor]) -> dict[str, tf.sparse.SparseTensor]:
        """Adds the model's own graphs made from the training graphs (e.g. LightGCN's user-item graph)."""
        return graphs

    def table_kinds(self) -> dict[str, str]:
        """The kind of every tensor ``propagate`` returns: ``"user"`` (a table with one row per user,
        [U, ...]), ``"item"`` ([I, ...]) or ``"constant"`` (anything else). The export adds an
        out-of-vocabulary row to user and item tables from this alone; a test checks it against
        ``propagate`` for every registered model."""
        return {"users_i": "user", "users_p": "user", "items": "item"}

    def propagate(self, training: bool = False, graphs: Graphs | None = None) -> dict[str, tf.Tensor]:
        """The embedding tables, propagated over ``graphs`` (default: every training group's graphs)."""
        raise NotImplementedError

    def propagate_batch(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        """``propagate`` for one training batch: over the graphs of its fold when it has one.

        A batch of a ``train.graph_folds`` stream carries ``fold`` [B] (one value); its triples are
        scored over graphs built without that fold's groups, i.e. without their own edges.
        Evaluation and export always propagate over all training groups.
        """
        if "fold" not in inputs or not self.uses_graph_folds:
            return self.propagate(training)
        if not self._fold_values.graphs:
            raise ValueError("a batch with a 'fold' needs the fold graphs: build the model from a context with "
                             "fold_graphs (ModelContext.from_prepared under train.graph_folds > 1)")
        fold = tf.cast(inputs["fold"][0], tf.int32)
        graphs = {key: tf.sparse.SparseTensor(full.indices, tf.gather(self._fold_values[key], fold), full.dense_shape)
                  for key, full in self._graphs.graphs.items()}
        return self.propagate(training, Graphs(graphs))

    def score_items(self, emb: dict[str, tf.Tensor], initiator: tf.Tensor, candidates: tf.Tensor,
                    training: bool = False) -> tf.Tensor:
        """Task A logits s(i|u): ``initiator`` [B], ``candidates`` [B, C] item indices -> [B, C]."""
        raise NotImplementedError

    def score_participants(self, emb: dict[str, tf.Tensor], initiator: tf.Tensor, item: tf.Tensor,
                           candidates: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Task B logits s(p|u,i): ``initiator`` [B], ``item`` [B], ``candidates`` [B, C] users -> [B, C]."""
        raise NotImplementedError

    # True for models trained with a launch behaviour (NMTR; MGBR / MAMGBR with launch_task): their
    # launch_success is a probability they were trained for, and the export gives it a signature.
    learns_launches = False

    def launch_success(self, emb: dict[str, tf.Tensor], initiator: tf.Tensor, item: tf.Tensor) -> tf.Tensor:
        """P(deal | launch) of single pairs: ``initiator`` [N], ``item`` [N] -> [N] in (0, 1).

        This default is sigmoid of task A's logit: for MGBR / MAMGBR with ``launch_task`` the probability
        their L_success trains on launched pairs (:mod:`tfgb.models.launch`); for models without a launch
        behaviour a score, no trained probability (launch-success AUC still ranks launches by it). NMTR
        overrides it.
        """
        return tf.sigmoid(self.score_items(emb, initiator, item[:, None])[:, 0])

    # -- hooks of plug-ins (tfgb.models.gprec): identities here ------------------------------------
    def combine_item_logits(self, emb, users, items, logits, training=False):
        """Task A logits after a plug-in's own terms; ``users``, ``items``: index arrays broadcastable to
        ``logits``. Every scorer and training loss of a backbone passes its task A logits through it."""
        return logits

    def combine_participant_logits(self, emb, users, items, parts, logits, training=False):
        """Task B logits after a plug-in's own terms (``users``, ``items``, ``parts`` broadcastable)."""
        return logits

    def oov_rows(self, emb: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Out-of-vocabulary rows of the model's own for some of ``emb``'s user / item tables; the export
        appends the mean row to every other table."""
        return {}

    @staticmethod
    def plugin_loss(emb: dict[str, tf.Tensor]) -> tf.Tensor | float:
        """A plug-in's loss terms for the batch ``emb`` was propagated for (``propagate_batch``), or 0."""
        return emb.get("plugin_loss", 0.0)

    def bpr_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """``L_A + beta * L_B`` (BPR, Eq. 19 of MGBR) on one stream batch, through ``score_*``.

        For models with ``task_a``, ``task_b`` (BPR tasks) and ``beta``: the baselines.
        """
        emb = self.propagate_batch(inputs, training)
        u = inputs["initiator"]
        items = tf.stack([inputs["item"], inputs["neg_item"]], 1)
        users = tf.stack([inputs["participant"], inputs["neg_participant"]], 1)
        dummy = tf.zeros_like(u, tf.float32)
        loss = self.task_a(dummy, self.score_items(emb, u, items, training), training=training)
        loss += self.beta * self.task_b(dummy, self.score_participants(emb, u, inputs["item"], users, training),
                                        training=training)
        return loss + self.plugin_loss(emb)
