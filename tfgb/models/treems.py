"""TreeMS: tree-guided expert networks with scenario-aware multi-view user-graph attention (paper 003).

TreeMS is a model of sharing recommendation: a source user u shares in a scenario s and the model ranks
destination users v. In group buying that is task B: the initiator u launched item i, the scenario is
i's category path (``data.item_categories``, or a proxy tree derived from the training split:
:mod:`tfgb.data.scenarios`), and the candidates are the participants.

* **Scenario** (Eq. 4, 6; :class:`~tfgb.layers.treems.TreeGates`): the root-to-leaf path of i's category,
  its nodes embedded and run through an LSTM; h_i gates expert layer i. A node no training group's item
  lies under is replaced by its deepest known ancestor (:func:`tfgb.data.scenarios.fall_back`), so an
  unseen leaf borrows its ancestors' gates. ``model.treems.gate = "leaf"`` (variant ``treems-flat``):
  gates from one embedding of the leaf id, the flat gate the tree is measured against.
* **Users** (Eq. 8-13; :class:`~tfgb.layers.treems.ScenarioGraphAttention`): per user-user view
  (:mod:`tfgb.data.relations`: initiator-participant, co-participation, same-item co-launch, and the
  relations of ``data.user_relations``) L levels of attention over a fixed, seeded sample of K neighbours,
  with the scenario context c in the attention; the views concatenated (Eq. 13). ``levels = 0``
  (variant ``treems-nog``): the plain user embedding.
* **Input** (Eq. 3): x = [u, v, t, c] with t the interaction history of (u, v), per view log(1 + the
  training edges between them), and c = [h_H, e_i] (h_H alone with ``item_context = false``; the paper's
  c is "the context of the scenario", and the item is the content shared).
* **Experts** (Eq. 5, 7; :class:`~tfgb.layers.treems.TowerExperts`): n towers of H layers (H = the path
  length, root included), per layer mixed by its gate, concatenated, an MLP, one logit; with ``bias`` a
  participant bias started at log(1 + training groups joined), and the head at zero, so the model
  starts as the participant-popularity ranker.
* **Loss** (Eq. 14-16): task B's binary log loss of the positive participant (label 1) and the stream's
  sampled negative (label 0) (``task_b_loss = "bpr"``: BPR of the pair), weighted by ``train.beta``,
  ``+ gamma * L_aux`` ``+ lambda ||Theta||^2`` over every trainable variable (``l2``; 0 by default, Adam
  instead of the paper's AdaGrad as for every tfgb model). L_aux (Eq. 15) is read two ways
  (``aux_over``): ``row``, the equation as written, on each triple's gates and averaged over the batch;
  its minimum is the uniform gate of every scenario, and measured (Beibei and the synthetic tree, gamma =
  0.1) it reaches that minimum (-H (1 - 1/n) / 2) within the first epoch, so no scenario picks experts;
  ``batch``, on the batch's mean gates, the load balancing the paper motivates ("each expert evenly
  utilized"), which a scenario-specific choice of experts does not pay for.

Task A is not TreeMS's: it is scored as the dot-product baselines score it, s(i|u) = <e_u, q_i> (+ an
item bias started at log(1 + training count) with ``bias``), trained with BPR. Under
``train.graph_folds`` the neighbour samples and the histories of a batch's fold are built without the
fold's groups and launches (as the graphs of the other models are), so a triple never sees its own edge.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.data import scenarios
from tfgb.layers.treems import (
    ScenarioGraphAttention,
    TowerExperts,
    TreeGates,
    inconsistency_loss,
)
from tfgb.models.base import GroupBuyingModel
from tfgb.models.context import ModelContext
from tfgb.models.registry import TreeMSSettings
from tfgb.models.user_graph import RelationTables, pair_history
from tfgb.tasks import bce_task, bpr_task


def tower_widths(depth: int, start: int = 64, smallest: int = 8) -> list[int]:
    """The default expert widths: ``start`` halved at every layer, never below ``smallest``."""
    return [max(start >> i, smallest) for i in range(depth)]


class TreeMS(GroupBuyingModel):
    """TreeMS for task B, dot products for task A (see the module docstring).

    Args:
      context: vocabulary sizes, training counts, the ``item_categories`` and ``user_relations`` side
        inputs, and under ``train.graph_folds`` each fold's relations (``fold_relations``).
      settings: ``[model.treems]`` (:class:`~tfgb.models.registry.TreeMSSettings`).
      train: ``beta`` (task B's weight) and ``seed`` (the neighbour samples).
    """

    uses_graph_folds = True

    def __init__(self, context: ModelContext, settings: TreeMSSettings, train: TrainConfig, **kwargs):
        super().__init__(context, **kwargs)
        self.settings, self.beta = settings, train.beta
        categories = context.side.item_categories
        self._paths = tf.constant(scenarios.model_paths(categories, np.asarray(context.item_counts)))
        # each item's own leaf and the training groups under every node (head / tail of the evaluation)
        self.leaves = scenarios.leaves(categories)
        self.leaf_counts = scenarios.leaf_counts(categories, np.asarray(context.item_counts))
        self.depth = int(self._paths.shape[1])
        num_nodes = categories.num_nodes
        # [slots, U, R * K] neighbour samples and histories: slot 0 = every training group, f + 1 = without fold f's
        self.relation_tables = RelationTables(context, list(settings.views), settings.neighbours, train.seed)
        self.view_names, self.k = self.relation_tables.view_names, settings.neighbours
        u = self.num_users
        d, normal = settings.embedding_dim, tf.keras.initializers.RandomNormal  # one instance per table
        self.users = self.add_weight(name="users", shape=(u, d), initializer=normal(stddev=0.1))
        self.items = self.add_weight(name="items", shape=(self.num_items, d), initializer=normal(stddev=0.1))
        if settings.bias:
            counts = tf.keras.initializers.Constant
            self.item_bias = self.add_weight(name="item_bias", shape=(self.num_items,),
                                             initializer=counts(np.log1p(context.item_counts).astype(np.float32)))
            self.participant_bias = self.add_weight(
                name="participant_bias", shape=(u,),
                initializer=counts(np.log1p(context.participant_counts).astype(np.float32)))
        self.gates = TreeGates(num_nodes, settings.node_dim, settings.lstm_units, settings.num_experts, self.depth,
                               settings.gate, name="gates")
        self.attention = [ScenarioGraphAttention(settings.levels, d, settings.graph_attention, name=f"view_{name}")
                          for name in self.view_names] if settings.levels else []
        widths = list(settings.expert_widths) or tower_widths(self.depth)
        if len(widths) != self.depth:
            raise ValueError(f"model.treems.expert_widths has {len(widths)} layers; the scenario paths have "
                             f"{self.depth} nodes (root included), one per expert layer")
        self.experts = TowerExperts(settings.num_experts, widths, list(settings.hidden), settings.zero_head,
                                    name="experts")
        self.task_a = bpr_task("loss_a")
        self.task_b = bce_task("loss_b") if settings.task_b_loss == "bce" else bpr_task("loss_b")
        self.aux_metric = tf.keras.metrics.Mean(name="loss_treems_aux")

    # -- tables ---------------------------------------------------------------------------------------
    def table_kinds(self) -> dict[str, str]:
        kinds = {"users_i": "user", "items": "item", "paths": "item", "neighbours": "user",
                 "history_keys": "constant", "history_weights": "constant"}
        if self.settings.bias:
            kinds.update(item_bias="item", participant_bias="user")
        return kinds

    def oov_rows(self, emb):
        """An unknown item's scenario is the root alone; an unknown user has no neighbours."""
        width = int(self.relation_tables.neighbours.shape[-1])
        return {"paths": tf.ones([self.depth], tf.int32), "neighbours": -tf.ones([width], tf.int32)}

    def _tables(self, slot) -> dict[str, tf.Tensor]:
        emb = {"users_i": tf.convert_to_tensor(self.users), "items": tf.convert_to_tensor(self.items),
               "paths": self._paths, **self.relation_tables.tables(slot)}
        if self.settings.bias:
            emb.update(item_bias=tf.convert_to_tensor(self.item_bias),
                       participant_bias=tf.convert_to_tensor(self.participant_bias))
        return emb

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        """The tables over every training group (``graphs`` is not used: TreeMS has no graph propagation)."""
        return self._tables(0)

    def propagate_batch(self, inputs, training=False):
        """The tables of the batch's fold (slot f + 1) under ``train.graph_folds``, else every group's."""
        return self._tables(self.relation_tables.slot_of(inputs))

    # -- scoring --------------------------------------------------------------------------------------
    def score_items(self, emb, initiator, candidates, training=False):
        """s(i|u) = <e_u, q_i> (+ the item's bias): [B], [B, C] -> [B, C]."""
        logits = tf.einsum("bd,bcd->bc", tf.gather(emb["users_i"], initiator), tf.gather(emb["items"], candidates))
        if self.settings.bias:
            logits += tf.gather(emb["item_bias"], candidates)
        return self.combine_item_logits(emb, initiator[:, None], candidates, logits, training)

    def scenario(self, emb, item: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``item`` [B] -> (gates [B, H, n], context c [B, dc]) of its scenario."""
        gates, state = self.gates(tf.gather(emb["paths"], item))
        if self.settings.item_context:
            state = tf.concat([state, tf.gather(emb["items"], item)], -1)
        return gates, state

    def represent(self, emb, nodes: tf.Tensor, context: tf.Tensor) -> tuple[tf.Tensor, list]:
        """Users ``nodes`` [S...] under ``context`` (broadcastable to [S..., dc]) -> ([S..., R d], weights per view)."""
        if not self.attention:
            return tf.gather(emb["users_i"], nodes), []
        k, reps, weights = self.k, [], []
        for r, layer in enumerate(self.attention):
            rep, w = layer((emb["users_i"], emb["neighbours"][:, r * k:(r + 1) * k], nodes, context))
            reps.append(rep)
            weights.append(w)
        return tf.concat(reps, -1), weights

    def pair_history(self, emb, initiator: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """t of Eq. 3: [B], [B, C] -> [B, C, R], per view log(1 + training edges from u to v)."""
        return pair_history(emb["history_keys"], emb["history_weights"], len(self.view_names), self.num_users,
                            initiator[:, None], candidates)

    def participant_logits(self, emb, initiator, item, candidates, training=False) -> tuple[tf.Tensor, tf.Tensor]:
        """Task B logits [B, C] and the gates [B, H, n] of each list's scenario."""
        gates, context = self.scenario(emb, item)
        source, _ = self.represent(emb, initiator, context)
        target, _ = self.represent(emb, candidates, context[:, None, :])
        parts = [target]
        if self.settings.history:
            parts.append(self.pair_history(emb, initiator, candidates))
        logits, _ = self.experts((tf.concat([source, context], -1), tf.concat(parts, -1), gates))
        if self.settings.bias:
            logits += tf.gather(emb["participant_bias"], candidates)
        return logits, gates

    def score_participants(self, emb, initiator, item, candidates, training=False):
        """s(p|u, i) of TreeMS: [B], [B], [B, C] -> [B, C]."""
        logits, _ = self.participant_logits(emb, initiator, item, candidates, training)
        return self.combine_participant_logits(emb, initiator[:, None], item[:, None], candidates, logits, training)

    # -- training -------------------------------------------------------------------------------------
    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """``L_A + beta * L_B + gamma * L_aux + lambda ||Theta||^2`` on one batch (module docstring)."""
        emb = self.propagate_batch(inputs, training)
        u, item = inputs["initiator"], inputs["item"]
        dummy = tf.zeros_like(u, tf.float32)
        loss = self.task_a(dummy, self.score_items(emb, u, tf.stack([item, inputs["neg_item"]], 1), training),
                           training=training)
        parts = tf.stack([inputs["participant"], inputs["neg_participant"]], 1)
        logits, gates = self.participant_logits(emb, u, item, parts, training)
        logits = self.combine_participant_logits(emb, u[:, None], item[:, None], parts, logits, training)
        if self.settings.task_b_loss == "bce":
            labels = tf.tile(tf.constant([[1.0, 0.0]]), [tf.shape(u)[0], 1])
            weight = tf.fill(tf.shape(labels), 1.0 / tf.cast(tf.size(labels), tf.float32))
            loss_b = self.task_b(tf.reshape(labels, [-1, 1]), tf.reshape(logits, [-1, 1]),
                                 sample_weight=tf.reshape(weight, [-1, 1]), training=training)
        else:
            loss_b = self.task_b(dummy, logits, training=training)
        if self.settings.aux_over == "batch":  # the experts' load over the batch's scenarios
            aux = inconsistency_loss(tf.reduce_mean(gates, 0, keepdims=True))[0]
        else:
            aux = tf.reduce_mean(inconsistency_loss(gates))
        self.aux_metric.update_state(aux)
        loss += self.beta * loss_b + self.settings.gamma * aux + self.plugin_loss(emb)
        if self.settings.l2:
            loss += self.settings.l2 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in self.trainable_variables])
        return loss

    def utilisation(self, emb, items: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Mean gate of every expert layer over the scenarios of ``items`` (e.g. the test groups'): [H, n]."""
        total, count = 0.0, 0
        for start in range(0, len(items), batch):
            gates, _ = self.scenario(emb, tf.constant(items[start:start + batch], tf.int32))
            total += tf.reduce_sum(gates, 0).numpy()
            count += len(items[start:start + batch])
        return total / max(count, 1)
