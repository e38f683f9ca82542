"""NMTR: neural multi-task recommendation from ordered behaviours (paper 004), for group buying.

The behaviours are the recipe's ``data.behaviors`` in cascade order; for Beibei ``launch`` (every
deal group and every failed launch) then ``deal`` (the group reached its size).

* Shared embeddings (Eq. 4): one user table P and one item table Q for every behaviour.
* One interaction unit per behaviour (Eq. 6-8, :class:`tfgb.layers.ncf.NCFUnit`): GMF, MLP or
  NeuMF, chosen by ``model.nmtr.unit`` (or per behaviour by ``model.nmtr.units``), each with its own
  parameters Theta^r.
* Cascaded predictions (Eq. 9, :func:`tfgb.layers.ncf.cascade`) with one item bias per behaviour
  b_i^r; ``model.nmtr.cascade = "mean"`` is the averaged cascade of the authors' code instead.
* The weighted joint log loss of Eq. 12 on the stream's behaviour rows
  (:mod:`tfgb.data.behavior_rows`): for every behaviour r a row reached, its positive and N sampled
  negatives of r (launch: items never interacted with; deal: the user's own failed launches with
  probability ``train.hard_negatives``, else items never interacted with). Each behaviour's term is
  the mean over its positives of ``-log y^r(u, i) - sum_n log(1 - y^r(u, j_n))`` (Eq. 12 sums; the
  mean only rescales the learning rate), weighted by lambda_r (``model.nmtr.weights``, normalised
  to sum to 1 as the paper requires; equal by default).

Task A (which item will u launch *and* bring to a deal?) is scored by the last behaviour's logit
out^R; ``launch_success``, P(deal | launch), is y^R / y^{R-1}. Task B is scored as the dot-product baselines score
it (MGBR Sec. III-B): s(p|u, i) = <p_u, p_p> with the shared user table, trained with task B's BPR
loss on the stream's triples, weighted by ``train.beta``. The item plays no part in task B.

``model.nmtr.launch = false`` (the ``nmtr-single`` variant) learns the deal behaviour alone: one
unit, its bias, deal rows only and never-interacted negatives only -- single-behaviour NCF, the
model "without the launch behaviour".
"""
from __future__ import annotations

import tensorflow as tf

from tfgb.config import TrainConfig
from tfgb.layers.ncf import NCFUnit, cascade
from tfgb.models.base import GroupBuyingModel
from tfgb.models.context import ModelContext
from tfgb.models.registry import NMTRSettings
from tfgb.tasks import bce_task, bpr_task


class NMTR(GroupBuyingModel):
    """NMTR over the recipe's behaviours (see the module docstring).

    Args:
      context: vocabulary sizes and the behaviour names (:class:`~tfgb.models.context.ModelContext`).
      settings: ``[model.nmtr]`` (:class:`~tfgb.models.registry.NMTRSettings`).
      train: ``beta``, the weight of task B's BPR loss.
    """

    def __init__(self, context: ModelContext, settings: NMTRSettings, train: TrainConfig, **kwargs):
        super().__init__(context, **kwargs)
        names = tuple(context.behaviors)
        self.behaviors = names if settings.launch else names[-1:]
        # Indices of the learned behaviours in the data's cascade (rows carry data indices).
        self.stages = list(range(len(names))) if settings.launch else [len(names) - 1]
        units = list(settings.units) or [settings.unit] * len(self.behaviors)
        if len(units) != len(self.behaviors):
            raise ValueError(f"model.nmtr.units names {len(units)} units for the {len(self.behaviors)} behaviours "
                             f"{list(self.behaviors)}")
        weights = list(settings.weights) or [1.0] * len(self.behaviors)
        if len(weights) != len(self.behaviors) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"model.nmtr.weights must give one non-negative weight per behaviour "
                             f"{list(self.behaviors)}, got {list(settings.weights)}")
        self.loss_weights = [w / sum(weights) for w in weights]
        self.cascade_mode = settings.cascade
        self.beta = train.beta
        self.learns_launches = settings.launch and len(self.behaviors) > 1
        init = tf.keras.initializers.RandomNormal(stddev=settings.init_std)
        self.users = tf.keras.layers.Embedding(self.num_users, settings.embedding_dim, name="users",
                                               embeddings_initializer=init)
        self.items = tf.keras.layers.Embedding(self.num_items, settings.embedding_dim, name="items",
                                               embeddings_initializer=tf.keras.initializers.RandomNormal(
                                                   stddev=settings.init_std))
        self.units = [NCFUnit(kind, settings.embedding_dim, settings.mlp_layers, name=f"unit_{name}")
                      for kind, name in zip(units, self.behaviors)]
        self.item_bias = self.add_weight(name="item_bias", shape=(self.num_items, len(self.behaviors)),
                                         initializer="zeros")  # b_i^r, one column per behaviour
        self.behavior_tasks = [bce_task(f"loss_{name}") for name in self.behaviors]
        self.task_b = bpr_task("loss_b")

    def table_kinds(self) -> dict[str, str]:
        return {**super().table_kinds(), "item_bias": "item"}

    def propagate(self, training: bool = False, graphs=None) -> dict[str, tf.Tensor]:
        users = self.users(tf.range(self.num_users))
        return {"users_i": users, "users_p": users, "items": self.items(tf.range(self.num_items)),
                "item_bias": tf.convert_to_tensor(self.item_bias)}

    def cascaded(self, emb: dict[str, tf.Tensor], user: tf.Tensor, item: tf.Tensor) -> list[tf.Tensor]:
        """out^r (Eq. 9) of every learned behaviour for ``user``, ``item`` of the same shape."""
        p, q = tf.gather(emb["users_i"], user), tf.gather(emb["items"], item)
        bias = tf.gather(emb["item_bias"], item)  # [..., R]
        scores = [unit(p, q) for unit in self.units]
        return cascade(scores, [bias[..., r] for r in range(len(self.units))], self.cascade_mode)

    def score_items(self, emb, initiator, candidates, training=False):
        """Task A: out^R(u, i), the deal logit, for [B] initiators and [B, C] items -> [B, C]."""
        user = tf.broadcast_to(initiator[:, None], tf.shape(candidates))
        return self.cascaded(emb, user, candidates)[-1]

    def launch_success(self, emb, initiator, item):
        """P(deal | launch) = y^R / y^{R-1} = sigmoid(out^R) / sigmoid(out^{R-1}) (a deal is a launch, so
        P(deal) = P(deal, launch)), at most 1; sigmoid(out^R) for the single-behaviour variant.

        Not sigmoid(out^R) alone: that is P(deal), which also holds P(launch); on Beibei the launch logit
        ranks held-out deals *below* held-out failed launches (AUC 0.37: items launched often fail often).
        """
        out = self.cascaded(emb, initiator, item)
        if len(out) == 1:
            return tf.sigmoid(out[0])
        return tf.minimum(tf.exp(tf.math.log_sigmoid(out[-1]) - tf.math.log_sigmoid(out[-2])), 1.0)

    def score_participants(self, emb, initiator, item, candidates, training=False):
        """Task B: s(p|u,i) = <p_u, p_p> (the item is ignored): [B], [B], [B, C] -> [B, C]."""
        del item
        return tf.einsum("bd,bcd->bc", tf.gather(emb["users_i"], initiator), tf.gather(emb["users_p"], candidates))

    def behavior_loss(self, emb: dict[str, tf.Tensor], inputs: dict[str, tf.Tensor],
                      training: bool = False) -> tf.Tensor:
        """Eq. 12 on the batch's behaviour rows: sum_r lambda_r * (mean over r's positives of their log losses)."""
        user = tf.reshape(inputs["behavior_user"], [-1])
        item = tf.reshape(inputs["behavior_item"], [-1])
        stage = tf.reshape(inputs["behavior_stage"], [-1])
        neg = inputs["behavior_neg"]
        neg = tf.reshape(neg, [-1, neg.shape[2], neg.shape[3]])  # [L, R_data, N]
        n = neg.shape[2]
        positives = self.cascaded(emb, user, item)
        loss = tf.zeros([])
        for k, (r, task) in enumerate(zip(self.stages, self.behavior_tasks)):
            # Negatives of behaviour r: the stream's draws for r; without the launch behaviour only the
            # never-interacted ones (column 0), so no failed launch is used as a label.
            negatives = neg[:, r] if self.learns_launches else neg[:, 0]
            negative = self.cascaded(emb, tf.broadcast_to(user[:, None], tf.shape(negatives)), negatives)[k]
            logits = tf.concat([positives[k][:, None], negative], 1)  # [L, 1 + N]
            labels = tf.concat([tf.ones_like(user[:, None], tf.float32), tf.zeros_like(negatives, tf.float32)], 1)
            reached = tf.cast(stage >= r, tf.float32)
            weight = reached / tf.maximum(tf.reduce_sum(reached), 1.0)
            weight = tf.broadcast_to(weight[:, None], [tf.shape(user)[0], 1 + n])
            loss += self.loss_weights[k] * task(tf.reshape(labels, [-1, 1]), tf.reshape(logits, [-1, 1]),
                                           sample_weight=tf.reshape(weight, [-1, 1]), training=training)
        return loss

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Eq. 12 on the behaviour rows + ``beta`` * task B's BPR loss on the triples."""
        emb = self.propagate(training)
        u = inputs["initiator"]
        users = tf.stack([inputs["participant"], inputs["neg_participant"]], 1)
        loss_b = self.task_b(tf.zeros_like(u, tf.float32), self.score_participants(emb, u, None, users, training),
                             training=training)
        return self.behavior_loss(emb, inputs, training) + self.beta * loss_b
