"""MGBR: multi-view GCN embeddings, a multi-task expert block and two heads (paper 000).

Scores are logits of Eq. 16-17 (the sigmoid is monotone, so ranking and the log-sigmoid of the
BPR losses use the logits directly). The loss is Eq. 25:
``L = L_A + beta * L_B + beta_A * L'_A + beta_B * L'_B``.
"""
from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.layers import fused
from tfgb.layers.batch_rows import TrainingRows
from tfgb.layers.gcn import MultiViewGCN
from tfgb.layers.heads import PredictionHead
from tfgb.layers.layout import Rows, Tiled, materialize
from tfgb.layers.mtl import MultiTaskBlock
from tfgb.models.base import GroupBuyingModel
from tfgb.models.context import ModelContext
from tfgb.models.launch import LaunchCascade
from tfgb.models.registry import MGBRSettings
from tfgb.tasks import bpr_task, listwise_task


def standardize(x: tf.Tensor, epsilon: float = 1e-6) -> tf.Tensor:
    """Zero mean, unit variance per column over ALL rows (nodes) of an embedding table [N, D].

    The statistics come from the whole table, never from a batch, so a candidate's score still
    depends only on its own (u, i, p).
    """
    mean, variance = tf.nn.moments(x, axes=[0], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + epsilon)


def trim(g: dict[str, tf.Tensor], a_until=None, b_from=None) -> dict[str, tf.Tensor]:
    """Rows ``[0, a_until)`` of g["a"] and ``[b_from, N)`` of g["b"] (None = all), for the tasks in ``g``."""
    bounds = {"a": slice(None, a_until), "b": slice(b_from, None)}
    return {task: value[bounds[task]] for task, value in g.items()}


class MGBR(GroupBuyingModel):
    """MGBR and its ablations (-M, -R, -G, -D are configuration, see :mod:`tfgb.models.registry`).

    Args:
      context: vocabulary sizes, the training graphs ("ui", "pi", "up", "hetero") and, under
        ``train.graph_folds``, the fold graphs; training counts for ``bias_init = "log_count"``.
      settings: ``[model.mgbr]`` (:class:`~tfgb.models.registry.MGBRSettings`): d, H, K, L, alpha,
        shared experts, graph mode, MLP sizes, biases.
      train: loss weights (beta, beta_A, beta_B), whether the auxiliary losses are on, block chunks.
    """

    def __init__(self, context: ModelContext, settings: MGBRSettings, train: TrainConfig, **kwargs):
        super().__init__(context, **kwargs)
        self.model_config = settings
        self.beta, self.beta_a, self.beta_b = train.beta, train.beta_a, train.beta_b
        self.aux_losses = train.aux_losses
        self.block_chunk = int(train.block_chunk)
        self.gcn = MultiViewGCN(self.num_users, self.num_items, settings.embedding_dim, settings.gcn_layers,
                                mode=settings.graph, init_std=settings.init_std, recompute=settings.recompute_gcn,
                                name="gcn")
        self.mtl = self._make_block(settings)
        self.head_a = PredictionHead(settings.mlp_hidden, zero_init=settings.head_zero_init, name="head_a")
        self.head_b = PredictionHead(settings.mlp_hidden, zero_init=settings.head_zero_init, name="head_b")
        self.embedding_dropout = tf.keras.layers.Dropout(settings.embedding_dropout, name="embedding_dropout")
        self.use_bias = settings.bias
        if self.use_bias:
            # One scalar per item (task A) and per participant (task B): zeros, or with bias_init =
            # "log_count" log(1 + training count), i.e. the model starts as the popularity ranker.
            log_count = settings.bias_init == "log_count"

            def start(counts):
                return tf.constant_initializer(np.log1p(counts.astype(np.float64)).reshape(-1, 1)) if log_count \
                    else "zeros"

            self.item_bias = self.add_weight(name="item_bias", shape=(self.num_items, 1),
                                             initializer=start(context.item_counts))
            self.participant_bias = self.add_weight(name="participant_bias", shape=(self.num_users, 1),
                                                    initializer=start(context.participant_counts))
        self.task_a = bpr_task("loss_a")
        self.task_b = bpr_task("loss_b")
        # launch_task (tfgb.models.launch): task A's logit becomes the deal logit of a launch -> deal cascade.
        self.learns_launches = bool(settings.launch_task)
        if self.learns_launches:
            self.launch = LaunchCascade(self.num_items, settings.embedding_dim, settings.launch_weight, name="launch")
        if self.aux_losses:
            self.aux_task_a = listwise_task("aux_a")
            self.aux_task_b = bpr_task("aux_b")

    def _make_block(self, model: MGBRSettings) -> tf.keras.layers.Layer:
        return MultiTaskBlock(model.embedding_dim, model.num_experts, model.mtl_layers, alpha=model.alpha,
                              shared=model.shared_experts, gate_softmax=model.gate_softmax, name="mtl")

    # -- embeddings and scoring -------------------------------------------------------------
    uses_graph_folds = True

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        """Eq. 1-6 over the training graphs; adds ``mean_p``, the mean participant embedding (Sec. II-E)."""
        emb = dict(self.gcn((graphs or self._graphs).graphs, training=training))
        if self.model_config.standardize:
            emb = {key: standardize(value) for key, value in emb.items()}
        emb["mean_p"] = tf.reduce_mean(emb["users_p"], axis=0)
        return self._with_biases(emb)

    def table_kinds(self) -> dict[str, str]:
        kinds = {**super().table_kinds(), "mean_p": "constant"}
        if self.use_bias:
            kinds.update(item_bias="item", participant_bias="user")
        if self.learns_launches:
            kinds["launch_bias"] = "item"
        return kinds

    def _with_biases(self, emb: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Adds the ``model.bias`` tables: [I, 1] and [U, 1], so an export gives them out-of-vocabulary rows."""
        if self.use_bias:
            emb["item_bias"] = tf.convert_to_tensor(self.item_bias)
            emb["participant_bias"] = tf.convert_to_tensor(self.participant_bias)
        if self.learns_launches:
            emb["launch_bias"] = tf.convert_to_tensor(self.launch.bias)
        return emb

    def _launch(self, emb: dict[str, tf.Tensor], user: tf.Tensor, items: tf.Tensor) -> tf.Tensor | float:
        """The launch head's logit (``launch_task``) for ``user`` broadcast to ``items``; 0 without it."""
        if not self.learns_launches:
            return 0.0
        return self.launch.logits(emb, user, items)

    def _bias(self, emb: dict[str, tf.Tensor], key: str, ids: tf.Tensor) -> tf.Tensor | float:
        """The learned bias of each id (``model.bias``), shaped like ``ids``; 0 without biases."""
        if not self.use_bias:
            return 0.0
        return tf.reshape(tf.gather(emb[key], tf.reshape(ids, [-1])), tf.shape(ids))

    # The block runs by its fused path (tfgb.layers.fused) in training and scoring; ``readable_block``
    # switches to its readable call (tfgb.layers.mtl): the same values from the same weights.
    fused_block = True

    @contextlib.contextmanager
    def readable_block(self):
        """Within: the block runs as its readable ``call`` on dense rows instead of the fused path.

        Functions traced within keep that path (the tests compare the two, the bench times them).
        """
        self.fused_block = False
        try:
            yield self
        finally:
            del self.fused_block

    def _block_calls(self, e_u, e_i, e_p, tasks: tuple[str, ...]) -> list[tuple[tuple, tuple[str, ...]]]:
        """The block calls that give ``tasks``, as ((e_u, e_i, e_p), tasks) pairs: one call for all."""
        return [((e_u, e_i, e_p), tasks)]

    def _logits(self, e_u, e_i, e_p, training: bool, tasks: tuple[str, ...] = ("a", "b"), a_until=None,
                b_from=None) -> dict[str, tf.Tensor]:
        """Head logits (Eq. 16-17) of the block's rows: task A's for rows ``[0, a_until)``, B's for ``[b_from, N)``.

        The fused path takes the rows as :class:`~tfgb.layers.layout.Rows` or ``Tiled`` and the heads'
        first Dense kernels (``out_kernels``, folded into the last layer's experts where that saves
        work); the readable path runs the block on dense rows, then the heads. The same logits up to
        rounding.
        """
        heads = {"a": self.head_a, "b": self.head_b}
        logits = {}
        for (u, i, p), call_tasks in self._block_calls(e_u, e_i, e_p, tasks):
            if self.fused_block:
                for task in call_tasks:
                    if not heads[task].built:  # its weights are created by a first call, under its own name scope
                        heads[task](tf.zeros([1, self.mtl.dim]))
                z = fused.run(self.mtl, u, i, p, training=training, tasks=call_tasks, a_until=a_until, b_from=b_from,
                              out_kernels={task: heads[task].first_kernel for task in call_tasks})
                logits.update({task: heads[task].from_first_product(z[task]) for task in call_tasks})
            else:
                g = self.mtl(materialize(u), materialize(i), materialize(p), training=training, tasks=call_tasks)
                logits.update({task: heads[task](x, training=training) for task, x in trim(g, a_until, b_from).items()})
        return {task: tf.reshape(x, [-1]) for task, x in logits.items()}

    @staticmethod
    def _candidate_rows(per_list: list[tf.Tensor], per_cell: tf.Tensor, b: tf.Tensor, c) -> list[Rows | Tiled]:
        """Block inputs for a [B, C] candidate matrix: ``per_list`` tables [B or 1, w] (one row per list,
        or one row for all) and ``per_cell`` [B*C, w]. With a static C the per-list parts are given
        once per list (:class:`Tiled`); otherwise by one reference per row."""
        static = tf.get_static_value(c)
        out = []
        for table in per_list:
            index = tf.zeros([b], tf.int32) if table.shape[0] == 1 else tf.range(b)
            out.append(Tiled(table, ((index, int(static)),)) if static is not None else Rows(table, tf.repeat(index, c)))
        cells = tf.range(tf.shape(per_cell)[0])
        out.append(Tiled(per_cell, ((cells, 1),)) if static is not None else Rows(per_cell, cells))
        return out

    def score_items(self, emb, initiator, candidates, training=False, launch=True):
        """Task A logits [B, C]; with ``launch_task`` out^launch + r, ``launch=False``: r alone (the deal increment)."""
        b, c = tf.shape(candidates)[0], candidates.shape[1] or tf.shape(candidates)[1]
        e_u, e_p, e_i = self._candidate_rows([tf.gather(emb["users_i"], initiator), emb["mean_p"][None, :]],
                                             tf.gather(emb["items"], tf.reshape(candidates, [-1])), b, c)
        logits = tf.reshape(self._logits(e_u, e_i, e_p, training, tasks=("a",))["a"], [b, c])
        logits += self._bias(emb, "item_bias", candidates)
        if launch:
            logits += self._launch(emb, initiator[:, None], candidates)
        return self.combine_item_logits(emb, initiator[:, None], candidates, logits, training)

    def launch_success(self, emb, initiator, item):
        """P(deal | launch): with ``launch_task`` sigmoid(r), the deal increment L_success trains
        (:mod:`tfgb.models.launch`); otherwise the base class's untrained score."""
        if not self.learns_launches:
            return super().launch_success(emb, initiator, item)
        return tf.sigmoid(self.score_items(emb, initiator, item[:, None], launch=False)[:, 0])

    def score_participants(self, emb, initiator, item, candidates, training=False):
        b, c = tf.shape(candidates)[0], candidates.shape[1] or tf.shape(candidates)[1]
        e_u, e_i, e_p = self._candidate_rows([tf.gather(emb["users_i"], initiator), tf.gather(emb["items"], item)],
                                             tf.gather(emb["users_p"], tf.reshape(candidates, [-1])), b, c)
        logits = tf.reshape(self._logits(e_u, e_i, e_p, training, tasks=("b",))["b"], [b, c])
        logits += self._bias(emb, "participant_bias", candidates)
        return self.combine_participant_logits(emb, initiator[:, None], item[:, None], candidates, logits, training)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        """Score candidate matrices: ``{"items": [B, C], "participants": [B, C]}`` for the keys given."""
        emb = self.propagate(training)
        out = {}
        if "item_candidates" in inputs:
            out["items"] = self.score_items(emb, inputs["initiator"], inputs["item_candidates"], training)
        if "participant_candidates" in inputs:
            out["participants"] = self.score_participants(
                emb, inputs["initiator"], inputs["item"], inputs["participant_candidates"], training)
        return out

    # -- training ---------------------------------------------------------------------------
    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Eq. 25 on one batch of :func:`tfgb.data.stream` triples (see :meth:`loss_from_embeddings`)."""
        return self.loss_from_embeddings(self.propagate_batch(inputs, training), inputs, training)

    def loss_and_gradients(self, inputs: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, list]:
        """The training loss of a batch, its regularization loss, and the gradient of their sum.

        With ``train.block_chunk`` = c > 0 the embeddings are propagated once, the block runs over
        chunks of c triples (each chunk's loss weighted by its share of the batch: every loss
        term is a mean over triples, so the weighted sum is the batch loss), the chunks' gradients
        with respect to the embedding tables are added up and then propagated back through the
        GCN once. Only one chunk's block activations are alive at a time; the gradient is the
        whole batch's (up to the order of floating-point sums).

        The chunk loop accumulates gradients only for the tables and for the variables that
        propagation does not read (block, heads): a variable propagation reads (the GCN tables and
        weights, the bias tables; most of the parameters) gets its gradient from the tables' alone,
        through the outer tape. The variables the loop body reads are checked against that split
        when the loop is traced.
        """
        variables = self.trainable_variables
        chunk = self.block_chunk
        if not chunk:
            with tf.GradientTape() as tape:
                loss = self.compute_loss(inputs, training=True)
                regularization = tf.reduce_sum([tf.reduce_sum(x) for x in self.losses])
                total = loss + regularization
            return loss, regularization, tape.gradient(total, variables)
        with tf.GradientTape() as outer:
            emb = self.propagate_batch(inputs, training=True)
            propagated = {v.ref() for v in outer.watched_variables()}  # what propagation read, before regularization
            regularization = tf.reduce_sum([tf.reduce_sum(x) for x in self.losses])
        keys = sorted(emb)
        tables = [emb[key] for key in keys]
        looped = [v for v in variables if v.ref() not in propagated]
        b = tf.shape(inputs["initiator"])[0]
        count = (b + chunk - 1) // chunk
        n_tables = len(tables)

        def body(c, loss, *grads):
            start = c * chunk
            part = {key: value[start:start + chunk] for key, value in inputs.items()}
            share = tf.cast(tf.shape(part["initiator"])[0], tf.float32) / tf.cast(b, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(tables)
                part_loss = share * self.loss_from_embeddings(dict(zip(keys, tables)), part, training=True)
            both = [v.name for v in tape.watched_variables() if v.ref() in propagated]
            if both:  # its gradient from this loop would be lost: the loop has no accumulator for it
                raise NotImplementedError(f"train.block_chunk: the block reads variables propagation reads too: {both}")
            new = tape.gradient(part_loss, tables + looped, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return (c + 1, loss + part_loss, *(acc + tf.convert_to_tensor(g) for acc, g in zip(grads, new)))

        # An explicit while loop (Keras may trace train_step without AutoGraph). One chunk at a time:
        # independent iterations would otherwise run in parallel, each with its block activations alive.
        _, loss, *grads = tf.while_loop(
            lambda c, *_: c < count, body,
            (tf.constant(0, count.dtype), tf.zeros([]), *(tf.zeros_like(t) for t in tables),
             *(tf.zeros_like(v) for v in looped)),
            parallel_iterations=1)
        table_grads = list(grads[:n_tables])
        in_loop = {v.ref(): g for v, g in zip(looped, grads[n_tables:])}
        through = outer.gradient(tables + [regularization], variables,
                                 output_gradients=table_grads + [tf.ones([])],
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, regularization, [t + in_loop[v.ref()] if v.ref() in in_loop else t
                                      for v, t in zip(variables, through)]

    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """TFRS's train step, on :meth:`loss_and_gradients` (which honours ``train.block_chunk``)."""
        loss, regularization, grads = self.loss_and_gradients(inputs)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization, total_loss=loss + regularization)
        return metrics

    def loss_from_embeddings(self, emb: dict[str, tf.Tensor], inputs: dict[str, tf.Tensor],
                             training: bool = False) -> tf.Tensor:
        """Eq. 25 on one batch of :func:`tfgb.data.stream` triples.

        Every row of the batch (:class:`~tfgb.layers.batch_rows.TrainingRows`: task A's positives and
        negatives with e_p = the mean participant, the 2|T| auxiliary rows per triple, task B's positives
        and negatives) goes through the multi-task block in one call; each row is scored independently.
        """
        rows = TrainingRows(inputs, aux=self.aux_losses)
        # The batch's distinct entities: the block projects each initiator, item and participant once.
        users = tf.gather(emb["users_i"], inputs["initiator"])
        items = tf.gather(emb["items"], rows.item_ids)
        parts = tf.concat([emb["mean_p"][None, :], tf.gather(emb["users_p"], rows.participant_ids[1:])], 0)
        # model.embedding_dropout: one mask per distinct entity of the batch, shared by every row that
        # refers to it (e.g. an initiator's mask by all 4 + 2|T| rows of its triple).
        users, items, parts = (self.embedding_dropout(x, training=training) for x in (users, items, parts))
        logits = self._logits(*rows.parts(users, items, parts), training, a_until=rows.a_until, b_from=rows.b_from)
        a, b = rows.split(logits["a"], "a"), rows.split(logits["b"], "b")
        if self.use_bias:  # the item of every task-A row, the participant of every task-B row
            a = {segment: x + self._bias(emb, "item_bias", rows.ids[segment]["i"]) for segment, x in a.items()}
            b = {segment: x + self._bias(emb, "participant_bias", rows.ids[segment]["p"]) for segment, x in b.items()}
        if self.learns_launches:  # task A's logit is the cascade's deal logit on every task-A row
            u = inputs["initiator"]
            a = {segment: x + self._launch(emb, u if x.shape.rank == 1 else u[:, None], rows.ids[segment]["i"])
                 for segment, x in a.items()}
        # a plug-in's terms (tfgb.models.gprec), on the initiator, item and participant of every row
        u, item = inputs["initiator"], inputs["item"]
        a = {segment: self.combine_item_logits(emb, u if x.shape.rank == 1 else u[:, None], rows.ids[segment]["i"], x,
                                               training) for segment, x in a.items()}
        b = {segment: self.combine_participant_logits(
            emb, u if x.shape.rank == 1 else u[:, None],
            rows.ids[segment].get("i", item if x.shape.rank == 1 else item[:, None]), rows.ids[segment]["p"], x,
            training) for segment, x in b.items()}
        dummy = tf.zeros_like(a["a_pos"])
        loss = self.task_a(dummy, tf.stack([a["a_pos"], a["a_neg"]], 1), training=training)  # Eq. 19
        loss += self.beta * self.task_b(dummy, tf.stack([b["b_pos"], b["b_neg"]], 1), training=training)
        if self.aux_losses:
            # Each triple's list is [T^I ; T^P], [B, 2T], with y = 1 on T^P (Eq. 20-21).
            labels = tf.concat([tf.zeros_like(a["ti"]), tf.ones_like(a["tp"])], 1)
            loss += self.beta_a * self.aux_task_a(labels, tf.concat([a["ti"], a["tp"]], 1), training=training)
            # s(p|u, i) of the positive against s(p|u, i') of T^I (Eq. 24).
            loss += self.beta_b * self.aux_task_b(dummy, tf.concat([b["b_pos"][:, None], b["ti"]], 1),
                                                  training=training)
        if self.learns_launches:
            loss += self.launch.loss(emb, inputs, lambda u, i: self.score_items(emb, u, i, training, launch=False),
                                     training)
        return loss + self.plugin_loss(emb)
