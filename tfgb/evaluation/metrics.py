"""Ranking metrics over candidate lists with one positive each.

A *list of length k* is one positive and k - 1 negatives (k = 10 is the "1:9" protocol, k = 100
"1:99"). With r in [1, k] the 1-based rank of the positive in its list and N lists, the keys are:

* ``mrr@k``  = (1/N) sum 1 / r, over the whole list of length k;
* ``ndcg@k`` = (1/N) sum 1 / log2(1 + r), over the whole list (one relevant candidate, so the
  ideal DCG is 1);
* ``hr@c/k`` = (1/N) #{r <= c}, the hit rate in the top c of the list of length k, for cut-offs
  1 <= c < k only: ``hr@5/10`` is "the positive is among the first 5 of its 10 candidates".
  ``hr@k/k`` would be 1 for every scorer and is never reported. A random scorer has expectation c / k.

Ties rank pessimistically: a positive tied with n negatives is ranked below all n of them, so a
model that gives every candidate the same score gets the worst rank r = k (``hr@c/k`` = 0,
``mrr@k`` = 1/k), never a lucky one. A NaN score of the positive ranks it last; a NaN negative
counts as scoring above the positive.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

_KEY = re.compile(r"^(mrr|ndcg)@(\d+)$|^hr@(\d+)/(\d+)$")


def hr_key(cutoff: int, length: int) -> str:
    """The key of the hit rate in the top ``cutoff`` of lists of length ``length``: ``hr@c/k``."""
    return f"hr@{int(cutoff)}/{int(length)}"


def parse_key(key: str) -> tuple[str, int, int] | None:
    """``(name, cutoff, length)`` of a metric key (MRR and NDCG: cutoff = length); None if not one.

    ``parse_key("hr@5/10") == ("hr", 5, 10)``, ``parse_key("mrr@10") == ("mrr", 10, 10)``.
    """
    match = _KEY.match(key)
    if match is None:
        return None
    name, length, cutoff, hr_length = match.groups()
    if name:
        return name, int(length), int(length)
    return "hr", int(cutoff), int(hr_length)


def key_order(key: str) -> tuple:
    """Sort key that groups metrics by list length: mrr@k, ndcg@k, then hr@c/k by c; unknown keys last."""
    parsed = parse_key(key)
    if parsed is None:
        return (1, 0, 0, key)
    name, cutoff, length = parsed
    return (0, length, ("mrr", "ndcg", "hr").index(name), cutoff)


def positive_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of each list's positive, ties pessimistic.

    Args:
      scores: [N, C] scores, higher is better.
      labels: [N] column of the positive in each row.

    Returns:
      ``int64`` [N]: 1 + the number of other candidates scoring >= the positive (or NaN).
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


def metrics_from_ranks(ranks: np.ndarray, length: int, hr_cutoffs: Iterable[int] = ()) -> dict[str, float]:
    """``mrr@k``, ``ndcg@k`` and ``hr@c/k`` (c in ``hr_cutoffs``) from ranks in lists of length k.

    Args:
      ranks: [N] 1-based ranks, each in [1, ``length``].
      length: k, the number of candidates per list.
      hr_cutoffs: cut-offs c, each with 1 <= c < k.

    Returns:
      The metrics, NaN for N = 0.

    Raises:
      ValueError: a rank outside [1, k] or a cut-off outside [1, k - 1].
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    length = int(length)
    cutoffs = [int(c) for c in hr_cutoffs]
    for c in cutoffs:
        if not 1 <= c < length:
            raise ValueError(f"HR cut-off {c} must be in [1, {length - 1}] for lists of length {length}: "
                             f"a hit in the top {length} of {length} candidates cannot fail")
    if ranks.size and (ranks.min() < 1 or ranks.max() > length):
        raise ValueError(f"ranks must be in [1, {length}]")
    empty = ranks.size == 0
    out = {
        f"mrr@{length}": float("nan") if empty else float(np.mean(1.0 / ranks)),
        f"ndcg@{length}": float("nan") if empty else float(np.mean(1.0 / np.log2(ranks + 1.0))),
    }
    for c in cutoffs:
        out[hr_key(c, length)] = float("nan") if empty else float(np.mean(ranks <= c))
    return out


def ranking_metrics(scores: np.ndarray, labels: np.ndarray, hr_cutoffs: Iterable[int] = ()) -> dict[str, float]:
    """The metrics of one candidate matrix [N, k]: ``mrr@k``, ``ndcg@k`` and ``hr@c/k`` for c in ``hr_cutoffs``."""
    scores = np.asarray(scores)
    ranks = positive_ranks(scores, labels)
    return metrics_from_ranks(ranks, scores.shape[1], hr_cutoffs)
