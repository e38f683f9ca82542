"""Launch-success AUC: does task A's score tell a launch that became a deal from one that failed?

On the held-out launches of a split (:func:`tfgb.data.split.split_launches` gives the failed launches a
split of their own under the deal groups' protocol), the positives are the split's deal groups'
(initiator, item) and the negatives its failed launches (:meth:`tfgb.data.prepare.Prepared.launches`,
every behaviour code). Each pair is scored with the model's P(deal | launch), ``model.launch_success(emb,
u, i)`` (:meth:`tfgb.models.base.GroupBuyingModel.launch_success`: sigmoid of task A's logit unless the
model learned a launch behaviour; NMTR's y^deal / y^launch), on embeddings propagated once, in inference
mode. With P positives and N negatives,

    AUC = (1 / (P N)) sum_{p, n} ( [s_p > s_n] + 0.5 [s_p = s_n] )

(the Mann-Whitney statistic; ties count one half). A NaN score counts against its own side, as ties
do in :mod:`tfgb.evaluation.metrics`: a NaN positive is below every negative, a NaN negative above
every positive.

The floor is the same AUC of a score that knows only the item: its training success rate
deals(i) / (deals(i) + failed launches(i)), both counted over the training split (the training groups
whose item is i, the training failed launches of i); an item with neither gets the global training
rate sum deals / (sum deals + sum failed launches).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfgb.evaluation.protocol import Scorer

SPLITS = ("valid", "test")


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """The Mann-Whitney AUC of ``positive`` [P] over ``negative`` [N] scores, ties 0.5 (module docstring).

    NaN when P = 0 or N = 0.
    """
    positive = np.asarray(positive, np.float64).ravel()
    negative = np.asarray(negative, np.float64).ravel()
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    below = np.sort(negative[~np.isnan(negative)])  # NaN negatives are above every positive: no credit
    finite = positive[~np.isnan(positive)]  # NaN positives are below every negative: no credit
    less = np.searchsorted(below, finite, side="left")
    equal = np.searchsorted(below, finite, side="right") - less
    return float((less.sum() + 0.5 * equal.sum()) / (positive.size * negative.size))


def held_out_launches(data, split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, success)`` of a split's launches: its deal groups (success True) then its failed
    launches (False); ``int64``, ``int64``, ``bool``, each [P + N]."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    groups = getattr(data, split)
    users, items, _ = data.launches(split)
    return (np.concatenate([groups.initiator, users]).astype(np.int64),
            np.concatenate([groups.item, items]).astype(np.int64),
            np.concatenate([np.ones(len(groups), bool), np.zeros(len(users), bool)]))


def success_rate(data) -> np.ndarray:
    """``float64`` [num_items]: each item's training success rate, the global training rate where an item
    has neither a training deal nor a training failed launch (module docstring)."""
    _, failed_items, _ = data.launches("train")
    deals = np.bincount(data.train.item, minlength=data.num_items).astype(np.float64)
    failed = np.bincount(failed_items, minlength=data.num_items).astype(np.float64)
    seen = deals + failed
    total = seen.sum()
    overall = deals.sum() / total if total else 0.0
    return np.where(seen > 0, deals / np.maximum(seen, 1.0), overall)


def pair_scores(model, users: np.ndarray, items: np.ndarray, batch_size: int = 256,
                scorer: Scorer | None = None) -> np.ndarray:
    """P(deal | launch) of single (user, item) pairs (``model.launch_success``), ``float32`` [n],
    ``batch_size * 100`` pairs per call; models without it (stubs) are scored by their task A logit."""
    scorer = scorer or Scorer(model, batch_size * 100)
    if len(users) == 0:
        return np.zeros(0, np.float32)
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    if not hasattr(model, "launch_success"):
        return scorer.items(users, items[:, None]).reshape(-1)
    score = tf.function(lambda u, i: model.launch_success(scorer.emb, u, i), reduce_retracing=True,
                        autograph=False)
    step = batch_size * 100
    return np.concatenate([score(tf.constant(users[a:a + step], tf.int32), tf.constant(items[a:a + step], tf.int32))
                           .numpy() for a in range(0, len(users), step)]).astype(np.float32)


def launch_success(model, data, split: str = "test", batch_size: int = 256,
                   return_scores: bool = False) -> dict | None | tuple[dict | None, dict]:
    """``{"auc": .., "floor_auc": .., "positives": P, "negatives": N}`` of a split's launches; None when the
    split has no failed launch (or no deal group).

    With ``return_scores`` also ``{"user", "item", "success", "score", "floor"}``, each [P + N], for
    breakdowns (:mod:`tfgb.evaluation.breakdown`); computed even when the metrics are None.
    """
    users, items, success = held_out_launches(data, split)
    scores = pair_scores(model, users, items, batch_size)
    floor = success_rate(data)[items]
    positives, negatives = int(success.sum()), int((~success).sum())
    result = None
    if positives and negatives:
        result = {"auc": auc(scores[success], scores[~success]), "floor_auc": auc(floor[success], floor[~success]),
                  "positives": positives, "negatives": negatives}
    if return_scores:
        return result, {"user": users, "item": items, "success": success, "score": scores, "floor": floor}
    return result
