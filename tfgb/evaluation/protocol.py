"""Evaluate a model on saved candidate lists: one protocol for every model (docs/design.md).

Embeddings are propagated once per evaluation, in inference mode; every list is scored in
batches and each candidate independently; metrics use pessimistic ties (:mod:`tfgb.evaluation.metrics`).
A list of length k (k = 10 is the "1:9" protocol, k = 100 "1:99") yields ``mrr@k`` and ``ndcg@k``
over the whole list and ``hr@c/k`` for the recipe's cut-offs c < k (``eval.hr_cutoffs``).
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfgb.config import EvalConfig
from tfgb.data.candidates import Candidates
from tfgb.evaluation.metrics import metrics_from_ranks, positive_ranks


def subsample(candidates: Candidates, max_groups: int, seed: int) -> np.ndarray:
    """Row indices of a seeded subsample of at most ``max_groups`` lists (all rows when 0)."""
    n = len(candidates)
    if max_groups <= 0 or max_groups >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_groups, replace=False))


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _functions(model) -> tuple:
    """The model's traced propagate / score functions, traced once per model (not per evaluation)."""
    if model not in _FUNCTIONS:
        _FUNCTIONS[model] = (
            tf.function(lambda: model.propagate(training=False), autograph=False),
            tf.function(lambda emb, u, c: model.score_items(emb, u, c, training=False), reduce_retracing=True,
                        autograph=False),
            tf.function(lambda emb, u, i, c: model.score_participants(emb, u, i, c, training=False),
                        reduce_retracing=True, autograph=False),
        )
    return _FUNCTIONS[model]


class Scorer:
    """Scores candidate matrices of both tasks from embeddings propagated once."""

    def __init__(self, model, batch_size: int = 256):
        self.model = model
        self.batch_size = batch_size
        propagate, items, parts = _functions(model)
        self.emb = propagate()
        self._items = lambda u, c: items(self.emb, u, c)
        self._parts = lambda u, i, c: parts(self.emb, u, i, c)

    def items(self, initiator: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Task A scores [N, C] for ``initiator`` [N] and item ``candidates`` [N, C]."""
        return self._batched(lambda s: self._items(initiator[s], candidates[s]), len(initiator))

    def participants(self, initiator: np.ndarray, item: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Task B scores [N, C]."""
        return self._batched(lambda s: self._parts(initiator[s], item[s], candidates[s]), len(initiator))

    def _batched(self, fn, n: int) -> np.ndarray:
        out = [fn(slice(start, start + self.batch_size)).numpy() for start in range(0, n, self.batch_size)]
        return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)


def evaluate(model, candidates: Candidates, ks: Iterable[int] = (10, 100), batch_size: int = 256,
             max_groups: int = 0, seed: int = 0, progress: bool = False, desc: str = "eval",
             hr_cutoffs: Mapping[int, Sequence[int]] | None = None, return_ranks: bool = False) -> dict | tuple:
    """Metrics of both tasks: ``{"a": {"mrr@10": ..., "hr@1/10": ...}, "b": {...}, "groups": N}``.

    Args:
      ks: list lengths; those above the saved lists' M + 1 are skipped.
      hr_cutoffs: ``{list length: HR cut-offs}`` (:meth:`tfgb.config.EvalConfig.cutoffs`); None = the
        recipe defaults. A length without an entry reports MRR and NDCG only.
      return_ranks: also return the per-list ranks, ``(metrics, ranks)`` with ``ranks = {"initiator": [N],
        "a": {k: [N]}, "b": {k: [N]}}`` (``int64``, the evaluated lists in order; positive ranks of
        :func:`tfgb.evaluation.metrics.positive_ranks`).
    """
    cutoffs = EvalConfig().cutoffs() if hr_cutoffs is None else dict(hr_cutoffs)
    lists = candidates.take(subsample(candidates, max_groups, seed))
    scorer = Scorer(model, batch_size)
    ks = [int(k) for k in ks if k <= lists.negatives + 1]
    result: dict = {"a": {}, "b": {}, "groups": len(lists)}
    ranks: dict = {"initiator": lists.initiator, "a": {}, "b": {}}
    bar = tqdm(total=2 * len(ks), desc=desc, disable=not progress, leave=False)
    for k in ks:
        cand, label = lists.task_a(k)
        scores = scorer.items(lists.initiator, cand).reshape(cand.shape)  # [0, 0] for no lists -> [0, k]
        ranks["a"][k] = positive_ranks(scores, label)
        result["a"].update(metrics_from_ranks(ranks["a"][k], k, cutoffs.get(k, ())))
        bar.update()
        cand, label = lists.task_b(k)
        scores = scorer.participants(lists.initiator, lists.item, cand).reshape(cand.shape)
        ranks["b"][k] = positive_ranks(scores, label)
        result["b"].update(metrics_from_ranks(ranks["b"][k], k, cutoffs.get(k, ())))
        bar.update()
    bar.close()
    return (result, ranks) if return_ranks else result


def objective(result: dict, k: int = 10) -> float:
    """The selection objective: mean MRR@k of the two tasks."""
    return 0.5 * (result["a"][f"mrr@{k}"] + result["b"][f"mrr@{k}"])
