"""Behaviour rows: the (user, item, furthest behaviour) samples of a multi-behaviour model's loss.

The cascade models (NMTR, and MGBR / MAMGBR with ``launch_task``) learn from the training
interactions with an ordered behaviour (:class:`tfgb.contract.Interactions`: for group buying
``launch`` then ``deal``), following the mini-batch construction of NMTR Sec. III-D: sample an
interacted (u, i) pair; for every behaviour r it reached (``stage >= r``) it is a positive of r,
and each positive gets N sampled negatives of r:

* r = 0 (``launch``): items u never interacted with in training (any role, any behaviour).
* r >= 1 (``deal``): with probability ``hard`` one of u's own training interactions that stopped
  before r (for group buying: a failed launch of u, the natural hard negative), when u has one;
  otherwise an item u never interacted with.

They ride on the training batch of :mod:`tfgb.data.stream`: each of its B triples carries M
behaviour rows (``behavior_*`` fields [B, M, ...] of :mod:`tfgb.contract`), so tf.data's
rebatching and the resume-at-batch guarantee hold unchanged. The epoch's order of the
interactions is ``default_rng([seed, epoch, 0, 1]).permutation``; the row of slot (t, j) of the
epoch's triple t is the interaction at position ``(t * M + j) mod N_int`` of that order, so with
``M = ceil(N_int / triples)`` every interaction is a row at least once per epoch. Negatives are
drawn from the batch's own generator after its triple negatives, so the triple fields of a
batch are the same with and without behaviour rows.
"""
from __future__ import annotations

import numpy as np

from tfgb.contract import Interactions
from tfgb.data.negatives import PairSet, sample_absent


def rows_per_triple(num_interactions: int, num_triples: int) -> int:
    """M = ceil(interactions / triples): every interaction a row at least once per epoch (>= 1)."""
    return max(1, -(-int(num_interactions) // max(int(num_triples), 1)))


class BehaviorRows:
    """Samples behaviour rows for the batches of one training stream.

    Args:
      interactions: the rows to draw (a training stream's share of the training interactions).
      interacted: every training (user, item) pair, any role or behaviour: what "never interacted" avoids.
      per_triple: M, rows per triple of a batch.
      negatives: N, negatives per positive and behaviour.
      hard: probability that a negative of a behaviour r >= 1 is one of the user's interactions that
        stopped before r (when the user has one).
      seed: the stream's seed.
    """

    def __init__(self, interactions: Interactions, interacted: PairSet, per_triple: int, negatives: int,
                 hard: float, seed: int):
        if len(interactions.user) == 0:
            raise ValueError("behaviour rows need at least one training interaction")
        if per_triple < 1 or negatives < 1 or not 0.0 <= hard <= 1.0:
            raise ValueError(f"behaviour rows need per_triple >= 1, negatives >= 1 and 0 <= hard <= 1, got "
                             f"{per_triple}, {negatives}, {hard}")
        self.user = interactions.user.astype(np.int64)
        self.item = interactions.item.astype(np.int64)
        self.stage = interactions.behavior.astype(np.int64)
        self.num_behaviors = len(interactions.behaviors)
        self.interacted = interacted
        self.per_triple, self.negatives, self.hard, self.seed = int(per_triple), int(negatives), float(hard), int(seed)
        # Per user, its interactions sorted by stage: those that stopped before r are a prefix of
        # before[u, r] entries starting at start[u].
        order = np.lexsort((self.stage, self.user))
        self._sorted_item = self.item[order]
        counts = np.bincount(self.user, minlength=interacted.num_rows)
        self._start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._before = np.zeros((interacted.num_rows, self.num_behaviors), np.int64)
        for r in range(1, self.num_behaviors):
            self._before[:, r] = np.bincount(self.user[self.stage < r], minlength=interacted.num_rows)

    @property
    def num_interactions(self) -> int:
        return int(self.user.size)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, int(epoch), 0, 1]).permutation(self.num_interactions)

    def rows(self, rng: np.random.Generator, epoch: int, first_triple: int, count: int,
             order: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The behaviour fields of triples ``[first_triple, first_triple + count)`` of ``epoch``.

        Returns:
          ``behavior_user``, ``behavior_item``, ``behavior_stage`` ``int32`` [count, M] and
          ``behavior_neg`` ``int32`` [count, M, R, N]: the negatives of every behaviour (those of a
          behaviour the row did not reach are drawn all the same and masked by the loss).
        """
        order = self.order(epoch) if order is None else order
        m, n, r_count = self.per_triple, self.negatives, self.num_behaviors
        slots = (first_triple * m + np.arange(count * m)) % self.num_interactions
        picked = order[slots]
        user, item, stage = self.user[picked], self.item[picked], self.stage[picked]
        neg = sample_absent(rng, self.interacted, user, r_count * n).reshape(-1, r_count, n)
        for r in range(1, r_count):
            available = np.repeat(self._before[user, r], n)
            use_hard = (available > 0) & (rng.random(available.size) < self.hard)
            pick = np.floor(rng.random(available.size) * np.maximum(available, 1)).astype(np.int64)
            where = np.repeat(self._start[user], n) + pick
            hard = self._sorted_item[np.minimum(where, self._sorted_item.size - 1)]
            neg[:, r, :] = np.where(use_hard, hard, neg[:, r, :].reshape(-1)).reshape(-1, n)
        return {
            "behavior_user": user.reshape(count, m).astype(np.int32),
            "behavior_item": item.reshape(count, m).astype(np.int32),
            "behavior_stage": stage.reshape(count, m).astype(np.int32),
            "behavior_neg": neg.reshape(count, m, r_count, n).astype(np.int32),
        }
