"""TreeMS's scenario-aware multi-view user-graph attention (paper 003, Eq. 8-13) as a plug-in for task B of
MGBR and MAMGBR: ``model.user_graph = "attention"``, settings ``[model.scenario_graph]``
(:class:`~tfgb.models.registry.ScenarioGraphSettings`).

The backbone is unchanged (its propagation, scorers and losses); the plug-in adds a term to every task B
logit of the backbone (:meth:`~tfgb.models.base.GroupBuyingModel.combine_participant_logits`, which the
backbone's scorer, training loss and auxiliary losses all pass through):

    s_B(p | u, i) = s_backbone(p | u, i) + MLP([g_u; g_p; g_u * g_p; t_up])

* the scenario context c of the item i: its category path's nodes through an LSTM (the last state h_H,
  as TreeMS's gates read it; :mod:`tfgb.data.scenarios`, unseen nodes replaced by their deepest known
  ancestor), concatenated with an item embedding of the plug-in's own;
* g_u, g_p: the initiator and the candidate participant, per user-user view (initiator-participant,
  co-participation, same-item co-launch, ``data.user_relations``; :mod:`tfgb.data.relations`) L levels of
  scenario-aware attention over a fixed, seeded sample of K neighbours
  (:class:`~tfgb.layers.treems.ScenarioGraphAttention`), the views concatenated (Eq. 13), on a user
  table of the plug-in's own;
* t_up: per view log(1 + the training edges u -> p) (Eq. 3's interaction history);
* the MLP's last layer starts at zero, so the plug-in starts as the backbone.

Under ``train.graph_folds`` (required: over every training group a triple's own edge would be among its
features) a batch reads the neighbour samples and histories built without its fold's groups and
launches, as the backbone's graphs are; evaluation and export read the full training set's.

:class:`RelationTables` and :func:`pair_history` are shared with :class:`tfgb.models.treems.TreeMS`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfgb.contract import UserRelations
from tfgb.data import relations as relations_lib
from tfgb.data import scenarios
from tfgb.layers.treems import ScenarioGraphAttention

BACKBONES = ("mgbr", "mamgbr")


def select_views(relations: UserRelations, views: list[str], key: str = "model.treems.views") -> UserRelations:
    """The relations of the named views only (all of them for an empty list), codes renumbered."""
    if not views:
        return relations
    unknown = sorted(set(views) - set(relations.names))
    if unknown:
        raise ValueError(f"{key} names {unknown}, not among the data's views {list(relations.names)}")
    codes = np.array([relations.names.index(v) for v in views])
    keep = np.isin(relations.relation, codes)
    remap = np.full(len(relations.names), -1, np.int64)
    remap[codes] = np.arange(len(codes))
    weight = None if relations.weight is None else relations.weight[keep]
    return UserRelations(relations.src[keep], relations.dst[keep], remap[relations.relation[keep]].astype(np.int8),
                         tuple(views), weight)


def history_keys(relations: UserRelations, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``int64`` keys ``(view * (U + 1) + src) * (U + 1) + dst`` and the ``float32`` weight of each."""
    n = num_users + 1
    keys = (relations.relation.astype(np.int64) * n + relations.src) * n + relations.dst
    weight = np.ones(len(keys), np.float32) if relations.weight is None else relations.weight.astype(np.float32)
    order = np.argsort(keys, kind="stable")
    return keys[order], weight[order]


class RelationTables:
    """The user-user side of a model: per slot (0 = every training group; f + 1 = without fold f's groups,
    under ``train.graph_folds``) a seeded neighbour sample ``[U, R * K]`` (view-major, -1 padded) and the
    sorted history keys and weights of :func:`history_keys`.

    Args:
      context: a :class:`~tfgb.models.context.ModelContext` with ``side.user_relations`` (and
        ``fold_relations`` under graph folds).
      views: the views used (``[]`` = all).
      k: neighbours per user and view.
      seed: slot n's sample is drawn with ``seed + n``.
    """

    def __init__(self, context, views: list[str], k: int, seed: int, key: str = "model.treems.views"):
        u = context.num_users
        slots = [select_views(r, views, key) for r in (context.side.user_relations, *context.fold_relations)]
        self.view_names, self.k, self.num_users = slots[0].names, k, u
        r = len(self.view_names)
        samples = [relations_lib.sample_neighbours(rel, u, k, seed + n) for n, rel in enumerate(slots)]
        self.neighbours = tf.constant(np.stack([s.transpose(1, 0, 2).reshape(u, r * k) for s in samples]))
        keys, weights = zip(*(history_keys(rel, u) for rel in slots))
        self.keys, self.weights = tf.constant(np.concatenate(keys)), tf.constant(np.concatenate(weights))
        self.bounds = tf.constant(np.cumsum([0, *(len(x) for x in keys)]), tf.int64)

    @property
    def slots(self) -> int:
        return int(self.neighbours.shape[0])

    def tables(self, slot, prefix: str = "") -> dict[str, tf.Tensor]:
        """``{prefix + "neighbours", "history_keys", "history_weights"}`` of ``slot`` (int or scalar tensor)."""
        start, end = self.bounds[slot], self.bounds[slot + 1]
        return {f"{prefix}neighbours": tf.gather(self.neighbours, slot),
                f"{prefix}history_keys": self.keys[start:end], f"{prefix}history_weights": self.weights[start:end]}

    def slot_of(self, inputs) -> tf.Tensor | int:
        """The slot of a training batch: its fold's (``inputs["fold"]`` + 1) under graph folds, else 0."""
        if "fold" in inputs and self.slots > 1:
            return tf.cast(inputs["fold"][0], tf.int32) + 1
        return 0


def pair_history(keys: tf.Tensor, weights: tf.Tensor, views: int, num_users: int, initiator: tf.Tensor,
                 candidates: tf.Tensor) -> tf.Tensor:
    """t of Eq. 3: per view log(1 + training edges from u to v); ``initiator`` broadcastable to
    ``candidates`` [S...] -> [S..., R]."""
    n = num_users + 1
    size = tf.shape(keys, out_type=tf.int64)[0]
    v = tf.cast(candidates, tf.int64)
    u = tf.broadcast_to(tf.cast(initiator, tf.int64), tf.shape(v, out_type=tf.int64))
    out = []
    for r in range(views):
        key = tf.reshape((r * n + u) * n + v, [-1])
        at = tf.minimum(tf.searchsorted(keys, key, out_type=tf.int64), tf.maximum(size - 1, 0))
        found = tf.logical_and(size > 0, tf.equal(tf.gather(keys, at), key))
        out.append(tf.where(found, tf.gather(weights, at), 0.0))
    return tf.math.log1p(tf.reshape(tf.stack(out, -1), tf.concat([tf.shape(candidates), [-1]], 0)))


class ScenarioUserGraph(tf.keras.layers.Layer):
    """The plug-in's trainable part (module docstring): user and item tables, the path encoder, one
    attention stack per view and the MLP of the added logit.

    Call: ``(emb, users, items, parts)`` with ``emb`` holding ``ug_paths``, ``ug_neighbours`` and the
    ``ug_history_*`` tables and :meth:`tables`, ``users`` / ``items`` / ``parts`` index arrays broadcastable to one shape S
    -> the added logits [S].
    """

    def __init__(self, num_users: int, num_items: int, num_nodes: int, views: int, settings, **kwargs):
        super().__init__(**kwargs)
        self.settings, self.views, self.num_users = settings, views, num_users
        d = settings.embedding_dim

        def normal():  # one instance per table
            return tf.keras.initializers.RandomNormal(stddev=0.1)

        self.users = self.add_weight(name="users", shape=(num_users, d), initializer=normal())
        self.items = self.add_weight(name="items", shape=(num_items, d), initializer=normal())
        self.nodes = tf.keras.layers.Embedding(num_nodes, settings.node_dim, embeddings_initializer=normal(),
                                               name="nodes")
        self.lstm = tf.keras.layers.LSTM(settings.lstm_units, name="lstm")
        self.attention = [ScenarioGraphAttention(settings.levels, d, settings.graph_attention, name=f"view_{r}")
                          for r in range(views)] if settings.levels else []
        self.mlp = [tf.keras.layers.Dense(w, activation="relu", name=f"mlp_{n}") for n, w in enumerate(settings.hidden)]
        self.head = tf.keras.layers.Dense(1, kernel_initializer="zeros", name="predict")

    def context(self, emb, items: tf.Tensor) -> tf.Tensor:
        """c of items [S...] -> [S..., units + d]: the path's last LSTM state and the item's embedding."""
        flat = tf.reshape(items, [-1])
        paths = tf.gather(emb["ug_paths"], flat)
        c = tf.concat([self.lstm(self.nodes(paths)), tf.gather(emb["ug_items"], flat)], -1)
        return tf.reshape(c, tf.concat([tf.shape(items), [-1]], 0))

    def tables(self) -> dict[str, tf.Tensor]:
        """The plug-in's user and item tables, as entries of the backbone's ``emb`` (so an export gives
        them out-of-vocabulary rows)."""
        return {"ug_users": tf.convert_to_tensor(self.users), "ug_items": tf.convert_to_tensor(self.items)}

    def represent(self, emb, nodes: tf.Tensor, context: tf.Tensor) -> tf.Tensor:
        """Users [S...] under ``context`` (broadcastable to [S..., dc]) -> [S..., R d] (levels = 0: [S..., d])."""
        table = emb["ug_users"]
        if not self.attention:
            return tf.gather(table, nodes)
        k = self.settings.neighbours
        return tf.concat([layer((table, emb["ug_neighbours"][:, r * k:(r + 1) * k], nodes, context))[0]
                          for r, layer in enumerate(self.attention)], -1)

    def call(self, emb, users, items, parts) -> tf.Tensor:
        shape = tf.broadcast_dynamic_shape(tf.broadcast_dynamic_shape(tf.shape(users), tf.shape(items)),
                                           tf.shape(parts))
        # the context and the initiator once per distinct (list) position, then broadcast to the candidates
        head = tf.broadcast_dynamic_shape(tf.shape(users), tf.shape(items))
        users, items = tf.broadcast_to(users, head), tf.broadcast_to(items, head)
        c = self.context(emb, items)
        g_u = self.represent(emb, users, c)
        g_p = self.represent(emb, tf.broadcast_to(parts, shape), c)
        g_u = tf.broadcast_to(g_u, tf.shape(g_p))
        x = [g_u, g_p, g_u * g_p]
        if self.settings.history:
            x.append(pair_history(emb["ug_history_keys"], emb["ug_history_weights"], self.views, self.num_users,
                                  users, tf.broadcast_to(parts, shape)))
        x = tf.concat(x, -1)
        for layer in self.mlp:
            x = layer(x)
        return self.head(x)[..., 0]


class UserGraphMixin:
    """Mixed in front of a backbone class by :func:`with_user_graph`; see the module docstring."""

    def __init__(self, context, settings, train, user_graph=None, **kwargs):
        super().__init__(context, settings, train, **kwargs)
        s = user_graph
        self.relation_tables = RelationTables(context, list(s.views), s.neighbours, train.seed,
                                              "model.scenario_graph.views")
        categories = context.side.item_categories
        self._ug_paths = tf.constant(scenarios.model_paths(categories, np.asarray(context.item_counts)))
        self.user_graph = ScenarioUserGraph(self.num_users, self.num_items, categories.num_nodes,
                                            len(self.relation_tables.view_names), s, name="user_graph")

    def _ug_tables(self, slot) -> dict[str, tf.Tensor]:
        return {"ug_paths": self._ug_paths, **self.user_graph.tables(), **self.relation_tables.tables(slot, "ug_")}

    def propagate(self, training=False, graphs=None):
        emb = super().propagate(training, graphs)
        emb.update(self._ug_tables(0))
        return emb

    def propagate_batch(self, inputs, training=False):
        emb = super().propagate_batch(inputs, training)
        emb.update(self._ug_tables(self.relation_tables.slot_of(inputs)))
        return emb

    def table_kinds(self):
        return {**super().table_kinds(), "ug_users": "user", "ug_items": "item", "ug_paths": "item", "ug_neighbours": "user",
                "ug_history_keys": "constant", "ug_history_weights": "constant"}

    def oov_rows(self, emb):
        """An unknown item's scenario is the root alone; an unknown user has no neighbours."""
        return {**super().oov_rows(emb), "ug_paths": tf.ones([int(self._ug_paths.shape[1])], tf.int32),
                "ug_neighbours": -tf.ones([int(self.relation_tables.neighbours.shape[-1])], tf.int32)}

    def combine_participant_logits(self, emb, users, items, parts, logits, training=False):
        logits = super().combine_participant_logits(emb, users, items, parts, logits, training)
        return logits + self.user_graph(emb, users, items, parts)


_CLASSES: dict[type, type] = {}


def with_user_graph(cls: type) -> type:
    """The backbone class ``cls`` with the user-graph plug-in mixed in (one class per backbone, made once)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"UserGraph{cls.__name__}", (UserGraphMixin, cls), {"__doc__": UserGraphMixin.__doc__})
    return _CLASSES[cls]
