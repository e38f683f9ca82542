"""Ranking metrics over candidate lists with one positive each: MRR@k, NDCG@k, HR@k.

Ties rank pessimistically: a positive tied with n negatives is ranked below all n of them, so a
model that gives every candidate the same score gets the worst rank, never a lucky one. A NaN
score of the positive ranks it last.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def positive_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of each list's positive, ties pessimistic.

    Args:
      scores: [N, C] scores, higher is better.
      labels: [N] column of the positive in each row.

    Returns:
      ``int64`` [N]: 1 + the number of other candidates scoring >= the positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores must be [N, C] and labels [N]; got {scores.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError("labels must index a column of scores")
    rows = np.arange(scores.shape[0])
    pos = scores[rows, labels]
    at_least = (scores >= pos[:, None]) | np.isnan(scores)
    ranks = at_least.sum(axis=1)  # counts the positive itself once when it is not NaN
    ranks = np.where(np.isnan(pos), scores.shape[1], ranks)
    return ranks.astype(np.int64)


def metrics_from_ranks(ranks: np.ndarray, k: int) -> dict[str, float]:
    """MRR@k, NDCG@k and HR@k from 1-based ranks (0 for a positive ranked below k)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= k
    if ranks.size == 0:
        return {f"mrr@{k}": float("nan"), f"ndcg@{k}": float("nan"), f"hr@{k}": float("nan")}
    return {
        f"mrr@{k}": float(np.mean(np.where(hit, 1.0 / ranks, 0.0))),
        f"ndcg@{k}": float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0))),
        f"hr@{k}": float(np.mean(hit)),
    }


def ranking_metrics(scores: np.ndarray, labels: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """All metrics at every cut-off in ``ks`` for one candidate matrix."""
    ranks = positive_ranks(scores, labels)
    out: dict[str, float] = {}
    for k in ks:
        out.update(metrics_from_ranks(ranks, int(k)))
    return out
