"""GPRec (paper 002) as a plug-in: ``model.user_modeling = "gprec"`` on MGBR, MAMGBR, MF-BPR or LightGCN.

The backbone is unchanged (its propagation, scorer and losses); GPRec adds bi-level user modeling
(:mod:`tfgb.layers.gprec`) from the ``user_features`` side input and the user's own personal embedding:

* E_o = the embeddings of the user's feature codes (one table per column), E_p = a personal (user id)
  embedding of GPRec's own (``personal = "own"``), or the backbone's own ``users_i`` row of the user
  (``"backbone"``: Eq. 1's one table V); E_u = [E_p; E_o].
* r_G from the group classifier, the Gumbel masks and the dual group embeddings (Eq. 2-6); r_P = f2(E_p)
  (Eq. 12), as wide as r_G.

How r_G and r_P reach the backbone (``model.gprec.strategy``), for every user table of the backbone
(``users_i``, the initiator's representation in both tasks, and ``users_p``, the participant's in task B):

* ``input`` (Eq. 14): e'_u = e_u + W [r_G; r_P]. The backbone's prediction module f_y receives
  [r_b; r_G; r_P] through its user input, with its r_b block the identity; W starts at zero, so the
  plug-in starts as the backbone.
* ``dynamic`` (Eq. 15-16): e'_u = (I + W_DP) e_u with W_DP = reshape(f_DP([r_G; r_P])) [D, D] per user:
  the parameters of a linear f_y in front of the backbone's scorer, theta_y = I, plus the generated ones.
  f_DP's last layer starts at zero.
* ``ensemble`` (Eq. 17-18): the backbone's tables are kept and every logit becomes
  (s_b + s_G + s_P) / 3, s_G = f_G([r_G(u); e_i]) for task A and f_G([r_G(u); r_G(p); e_i]) for task B
  (likewise s_P with r_P): the participant's own groups enter task B.

The loss is the backbone's plus Eq. 20's auxiliary terms, on the batch's users:
lambda1 L_G - lambda2 L_G^Con + lambda3 L_O. L_G and L_G^Con are the backbone's ranking loss (BPR: "L is
consistent with the task") of f1([r_G(u); e_i]) for the item of u's training group against its sampled
negative, for the initiator and for the participant of every triple; L_G^Con uses r_G^Con and f1 with
its parameters frozen (Eq. 10). Masks carry Gumbel noise in training only.

Training transforms the rows of the batch's users only (the rest of each table is the backbone's;
nothing reads them in that step); evaluation and export transform every user (in chunks).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfgb.layers.gprec import (
    DualGroupEmbedding,
    GroupClassifier,
    PreferenceMLP,
    masks,
    orthogonal_loss,
)

TABLES = ("users_i", "users_p")
# The user fields of a training batch whose users GPRec represents in a step.
USER_FIELDS = ("initiator", "participant", "neg_participant", "aux_participants", "behavior_user")
CHUNK = 8192  # users per chunk when every user is transformed


class UserModeling(tf.keras.layers.Layer):
    """GPRec's parameters and representations for one backbone.

    Args:
      codes: ``int32`` [U, F] feature codes (0 = unknown); a row of zeros is appended for users out of
        the vocabulary (index U).
      sizes: codes per column (F entries).
      settings: ``[model.gprec]`` (:class:`tfgb.models.registry.GPRecSettings`).
    """

    def __init__(self, codes: np.ndarray, sizes: list[int], settings, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.num_users = int(codes.shape[0])
        codes = np.concatenate([codes, np.zeros((1, codes.shape[1]), np.int32)], 0)
        self._codes = tf.constant(codes, tf.int32)  # untracked constant [U + 1, F]
        def init():  # one instance per table: a shared unseeded one gives every table the same values
            return tf.keras.initializers.RandomNormal(stddev=0.1)

        d = settings.dim
        self.features = [tf.keras.layers.Embedding(int(n), d, embeddings_initializer=init(), name=f"feature_{k}")
                         for k, n in enumerate(sizes)]
        if settings.personal == "own":
            self.personal = tf.keras.layers.Embedding(self.num_users + 1, d, embeddings_initializer=init(),
                                                      name="personal")
        self.classifier = GroupClassifier(settings.groups, settings.classifier_hidden, name="classifier")
        self.group_embedding = DualGroupEmbedding(settings.groups, d, settings.pool, name="group_embedding")
        width = self.group_embedding.width
        self.f1 = PreferenceMLP(settings.mlp_hidden, name="f1")
        self.f2 = PreferenceMLP([64], output_units=width, name="f2")
        self.strategy_layers: dict[str, list] = {}
        self.terms = {name: tf.keras.metrics.Mean(name=name) for name in ("loss_gprec_g", "loss_gprec_con", "loss_gprec_o")}

    def represent(self, users: tf.Tensor, training: bool = False, e_p: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """``users`` [N] (index U = out of vocabulary) -> r_G, r_Con, r_P [N, W] and m1 [N, G].

        E_p is GPRec's own personal embedding (``model.gprec.personal = "own"``; zero for an unknown user),
        or ``e_p`` [N, D], the backbone's row of each user (``"backbone"``: Eq. 1's one embedding table V).
        """
        users = tf.reshape(users, [-1])
        if e_p is None:
            known = tf.cast(users < self.num_users, tf.float32)[:, None]
            e_p = self.personal(users) * known  # an unknown user has no personal embedding
        codes = tf.gather(self._codes, users)
        e_u = tf.concat([e_p, *(table(codes[:, k]) for k, table in enumerate(self.features))], -1)
        m1 = masks(self.classifier(e_u), self.settings.tau, training and self.settings.gumbel)
        return {"r_g": self.group_embedding(m1), "r_con": self.group_embedding(1.0 - m1), "r_p": self.f2(e_p),
                "m1": m1}

    def strategy(self, key: str, width: int) -> list:
        """The layers that map [r_G; r_P] into table ``key`` of width D (built on first use)."""
        if key not in self.strategy_layers:
            kind = self.settings.strategy
            if kind == "input":
                layers = [tf.keras.layers.Dense(width, use_bias=False, kernel_initializer="zeros", name=f"w_{key}")]
            elif kind == "dynamic":
                layers = [tf.keras.layers.Dense(64, activation="relu", name=f"dp_hidden_{key}"),
                          tf.keras.layers.Dense(width * width, kernel_initializer="zeros", name=f"dp_{key}")]
            else:
                layers = []
            self.strategy_layers[key] = layers
        return self.strategy_layers[key]

    def transform(self, key: str, rows: tf.Tensor, rep: dict[str, tf.Tensor]) -> tf.Tensor:
        """e'_u of the input or dynamic strategy: ``rows`` [N, D] backbone rows -> [N, D]."""
        width = int(rows.shape[-1])
        x = tf.concat([rep["r_g"], rep["r_p"]], -1)
        layers = self.strategy(key, width)
        if self.settings.strategy == "input":
            return rows + layers[0](x)
        w = tf.reshape(layers[1](layers[0](x)), [-1, width, width])
        return rows + tf.einsum("nd,nde->ne", rows, w)

    def aux_loss(self, rep: dict[str, tf.Tensor], pos: tf.Tensor, neg: tf.Tensor) -> tf.Tensor:
        """lambda1 L_G - lambda2 L_G^Con + lambda3 L_O (Eq. 20 without L_major) on N rows: ``rep`` of N
        users, ``pos`` / ``neg`` [N, D] the item of their group and a sampled negative item."""
        s = self.settings

        def bpr(r, frozen):
            diff = self.f1(tf.concat([r, pos], -1), frozen=frozen) - self.f1(tf.concat([r, neg], -1), frozen=frozen)
            return tf.reduce_mean(tf.nn.softplus(-diff))

        l_g, l_con = bpr(rep["r_g"], False), bpr(rep["r_con"], True)
        l_o = orthogonal_loss(rep["r_g"], rep["r_p"], s.orthogonal)
        for name, value in zip(self.terms, (l_g, l_con, l_o)):
            self.terms[name].update_state(value)
        return s.lambda1 * l_g - s.lambda2 * l_con + s.lambda3 * l_o


class GPRecMixin:
    """Mixed in front of a backbone class by :func:`with_gprec`; see the module docstring."""

    def __init__(self, context, settings, train, gprec=None, **kwargs):
        super().__init__(context, settings, train, **kwargs)
        from tfgb.data.features import matrix

        features = context.side.user_features
        columns = tuple(features.columns)
        self.gprec = UserModeling(matrix(features, columns), [int(features.sizes[c]) for c in columns], gprec,
                                  name="gprec")
        object.__setattr__(self, "_gprec_batch", None)  # untracked: set while a batch is traced
        # f_G / f_P of the ensemble strategy, one pair per task
        if gprec.strategy == "ensemble":
            self.ensemble = {name: PreferenceMLP(gprec.mlp_hidden, name=f"ensemble_{name}")
                             for name in ("g_a", "p_a", "g_b", "p_b")}

    # -- representations into the backbone's tables -------------------------------------------------
    def _personal(self, emb, users):
        """E_p of ``users``: None (GPRec's own table) or the backbone's ``users_i`` rows."""
        return tf.gather(emb["users_i"], users) if self.gprec.settings.personal == "backbone" else None

    def propagate_batch(self, inputs, training=False):
        fields = [tf.reshape(inputs[f], [-1]) for f in USER_FIELDS if f in inputs]
        users, position = tf.unique(tf.concat(fields, 0))  # initiators first, then participants
        box = {"users": users}  # propagate fills in "rep": one mask draw per user and step
        object.__setattr__(self, "_gprec_batch", box)
        try:
            emb = super().propagate_batch(inputs, training)
        finally:
            object.__setattr__(self, "_gprec_batch", None)
        b = tf.shape(inputs["initiator"])[0]
        rows = {key: tf.gather(value, position[:2 * b]) for key, value in box["rep"].items()}  # initiator, participant
        pos, neg = (tf.gather(emb["items"], tf.tile(inputs[key], [2])) for key in ("item", "neg_item"))
        emb["plugin_loss"] = self.gprec.aux_loss(rows, pos, neg)
        return emb

    def propagate(self, training=False, graphs=None):
        emb = super().propagate(training, graphs)
        ensemble = self.gprec.settings.strategy == "ensemble"
        box = self._gprec_batch
        if box is not None:  # a training step: the batch's users only
            users = box["users"]
            rep = box["rep"] = self.gprec.represent(users, training, self._personal(emb, users))
            if not ensemble:
                new = {key: self.gprec.transform(key, tf.gather(emb[key], users), rep) for key in TABLES}
                for key in TABLES:
                    emb[key] = tf.tensor_scatter_nd_update(emb[key], users[:, None], new[key])
            return emb
        if ensemble:
            return emb
        for key in TABLES:  # every user, for evaluation and export
            emb[f"gprec_base_{key}"] = tf.reduce_mean(emb[key], 0)  # for the out-of-vocabulary row
        parts = {key: [] for key in TABLES}
        for start, rep in self._every_user(emb, training):
            for key in TABLES:
                parts[key].append(self.gprec.transform(key, emb[key][start:start + CHUNK], rep))
        emb.update({key: tf.concat(parts[key], 0) for key in TABLES})
        return emb

    def _every_user(self, emb, training=False):
        """(first user, representations) of every chunk of ``CHUNK`` users, E_p from the backbone's ``emb``."""
        for start in range(0, self.num_users, CHUNK):
            users = tf.range(start, min(start + CHUNK, self.num_users))
            yield start, self.gprec.represent(users, training, self._personal(emb, users))

    def group_masks(self) -> np.ndarray:
        """m^1 at inference of every vocabulary user, ``float32`` [U, G], E_p from the backbone's own
        (untransformed) rows, as evaluation computes them."""
        emb = super().propagate()
        return np.concatenate([rep["m1"].numpy() for _, rep in self._every_user(emb)], 0)

    def table_kinds(self):
        kinds = dict(super().table_kinds())
        if self.gprec.settings.strategy != "ensemble":
            kinds.update({f"gprec_base_{key}": "constant" for key in TABLES})
        return kinds

    def oov_rows(self, emb):
        """The out-of-vocabulary row of each user table: a user with unknown features and no personal
        embedding, on the backbone's mean row (the export appends it; other tables keep the mean row)."""
        if self.gprec.settings.strategy == "ensemble":
            return {}
        e_p = emb["gprec_base_users_i"][None, :] if self.gprec.settings.personal == "backbone" else None
        rep = self.gprec.represent(tf.constant([self.num_users]), e_p=e_p)
        return {key: self.gprec.transform(key, emb[f"gprec_base_{key}"][None, :], rep)[0] for key in TABLES}

    # -- the ensemble strategy: logits averaged with the group and personal towers ------------------
    def _towers(self, emb, users, items, parts=None, training=False):
        shape = tf.shape(users)
        users = tf.reshape(users, [-1])
        rep_u = self.gprec.represent(users, training, self._personal(emb, users))
        x_i = tf.reshape(items, [-1, items.shape[-1]])
        if parts is None:
            g = self.ensemble["g_a"](tf.concat([rep_u["r_g"], x_i], -1))
            p = self.ensemble["p_a"](tf.concat([rep_u["r_p"], x_i], -1))
        else:
            parts = tf.reshape(parts, [-1])
            rep_p = self.gprec.represent(parts, training, self._personal(emb, parts))
            g = self.ensemble["g_b"](tf.concat([rep_u["r_g"], rep_p["r_g"], x_i], -1))
            p = self.ensemble["p_b"](tf.concat([rep_u["r_p"], rep_p["r_p"], x_i], -1))
        return tf.reshape(g + p, shape)

    def combine_item_logits(self, emb, users, items, logits, training=False):
        """Eq. 18 for task A: ``users`` and ``items`` index arrays of ``logits``' shape."""
        logits = super().combine_item_logits(emb, users, items, logits, training)
        if self.gprec.settings.strategy != "ensemble":
            return logits
        shape = tf.shape(logits)
        users, items = tf.broadcast_to(users, shape), tf.broadcast_to(items, shape)
        return (logits + self._towers(emb, users, tf.gather(emb["items"], items), training=training)) / 3.0

    def combine_participant_logits(self, emb, users, items, parts, logits, training=False):
        """Eq. 18 for task B: ``users``, ``items``, ``parts`` index arrays of ``logits``' shape."""
        logits = super().combine_participant_logits(emb, users, items, parts, logits, training)
        if self.gprec.settings.strategy != "ensemble":
            return logits
        shape = tf.shape(logits)
        users, items, parts = (tf.broadcast_to(x, shape) for x in (users, items, parts))
        return (logits + self._towers(emb, users, tf.gather(emb["items"], items), parts, training)) / 3.0


_CLASSES: dict[type, type] = {}


def with_gprec(cls: type) -> type:
    """The backbone class ``cls`` with GPRec mixed in (one class per backbone, made once)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"GPRec{cls.__name__}", (GPRecMixin, cls), {"__doc__": GPRecMixin.__doc__})
    return _CLASSES[cls]
