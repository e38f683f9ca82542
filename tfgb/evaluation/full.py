"""The full-catalog protocol of task A (NMTR, Sec. IV-A: "ranks all unobserved items in the training set").

For a seeded subsample of at most ``eval.full_max_initiators`` initiators of a held-out split (valid or
test), each with one of its held-out groups (a seeded choice when it has several), the group's item is
ranked against every item of the catalog the initiator has no known interaction with:

* an item the initiator interacted with in training (:meth:`tfgb.data.prepare.Prepared.train_interactions`:
  any role in a training group, or a training failed launch) is not ranked;
* **filtered**: nor is an item of the initiator's other held-out interactions (valid and test groups in
  any role, valid and test failed launches). Those are positives of the held-out data too; ranking
  them as negatives would penalise a model for predicting them. The ranked negatives are therefore exactly
  the pool the saved 1:99 lists drew their negatives from (:mod:`tfgb.data.candidates`), so a saved list
  is a random subset of the full one.

With r the 1-based rank of the held-out item among its initiator's ranked items, ties pessimistic (r = 1 +
the number of ranked negatives scoring >= it, a NaN negative counting as above it, a NaN positive ranked
last, as in :mod:`tfgb.evaluation.metrics`), and n initiators:

* ``hr@K``   = (1/n) #{r <= K};
* ``ndcg@K`` = (1/n) sum_{r <= K} 1 / log2(r + 1) (one relevant item, so the ideal DCG is 1).

Scores come from the model's own ``score_items`` on embeddings propagated once (in inference mode),
over blocks of at most ``batch_size`` initiators x ``batch_size * 100 / block`` items, the load of one
batch of the 1:99 lists, so a 30k-item catalog never has to be scored at once.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
from tqdm.auto import tqdm

from tfgb.data import negatives
from tfgb.errors import ConfigError
from tfgb.evaluation.protocol import Scorer

SPLITS = ("valid", "test")


@dataclasses.dataclass(frozen=True)
class FullRanks:
    """Per-initiator results of the full-catalog protocol (n rows, one per evaluated initiator).

    Attributes:
      initiator: ``int64`` [n] the initiators, sorted.
      item: ``int64`` [n] each one's held-out item.
      rank: ``int64`` [n] the item's 1-based rank among the ranked items, ties pessimistic.
      candidates: ``int64`` [n] items ranked for each initiator (the held-out item included).
    """

    initiator: np.ndarray
    item: np.ndarray
    rank: np.ndarray
    candidates: np.ndarray

    def __len__(self) -> int:
        return int(self.initiator.shape[0])

    def take(self, rows: np.ndarray) -> FullRanks:
        """The rows at ``rows`` (an index or a mask)."""
        return FullRanks(self.initiator[rows], self.item[rows], self.rank[rows], self.candidates[rows])


def check_ks(ks: Iterable[int]) -> list[int]:
    """``eval.full_ks`` as a list of ints; ConfigError unless every K is a positive integer."""
    given = list(ks)
    if not given or any(isinstance(k, bool) or int(k) != k or k < 1 for k in given):
        raise ConfigError(f"config key 'eval.full_ks' must be a non-empty list of positive integers, got {given}")
    return [int(k) for k in given]


def choose(data, split: str, max_initiators: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated ``(initiators, items)``: at most ``max_initiators`` (0 = all) distinct initiators of
    ``split``'s groups, each with the item of one of its groups; both ``int64`` [n], sorted by initiator.

    Two independent streams of ``seed``: one permutes the initiators (a smaller subsample is a prefix of
    the same permutation, so it is a subset of a larger one), the other picks each initiator's group.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if max_initiators < 0:
        raise ConfigError(f"config key 'eval.full_max_initiators' must be >= 0, got {max_initiators}")
    groups = getattr(data, split)
    pick_stream, group_stream = np.random.SeedSequence([int(seed), 0xF011]).spawn(2)
    shuffled = np.random.default_rng(group_stream).permutation(len(groups))
    # The first occurrence of each initiator in a random order of the groups: a uniform choice of its groups.
    users, first = np.unique(groups.initiator[shuffled], return_index=True)
    items = groups.item[shuffled[first]]
    if 0 < max_initiators < len(users):
        keep = np.sort(np.random.default_rng(pick_stream).permutation(len(users))[:max_initiators])
        users, items = users[keep], items[keep]
    return users.astype(np.int64), items.astype(np.int64)


def known_interactions(data) -> negatives.PairSet:
    """Every (user, item) of the data: training pairs plus every held-out group (any role) and failed launch."""
    return negatives.interactions(data.train, data.valid, data.test, failed_users=data.failed_users,
                                  failed_items=data.failed_items)


def unknown_mask(pairs: negatives.PairSet, rows: np.ndarray) -> np.ndarray:
    """``bool`` [len(rows), num_cols]: True where ``(rows[r], col)`` is not in ``pairs``."""
    lo = np.searchsorted(pairs.keys, rows * pairs.num_cols)
    hi = np.searchsorted(pairs.keys, (rows + 1) * pairs.num_cols)
    counts = hi - lo
    which = np.repeat(np.arange(len(rows)), counts)
    # Key positions lo[r] .. hi[r] - 1 of every row, concatenated.
    cols = pairs.keys[np.arange(counts.sum()) + np.repeat(lo - np.cumsum(counts) + counts, counts)]
    mask = np.ones((len(rows), pairs.num_cols), bool)
    mask[which, cols - rows[which] * pairs.num_cols] = False
    return mask


def rank_full_catalog(model, data, split: str = "test", max_initiators: int = 1000, seed: int = 0,
                      batch_size: int = 256, progress: bool = False, scorer: Scorer | None = None,
                      candidates_per_call: int | None = None) -> FullRanks:
    """Rank each chosen initiator's held-out item against the filtered catalog (module docstring).

    Args:
      model: anything with the model contract's ``propagate(training)`` and ``score_items``.
      data: a :class:`tfgb.data.prepare.Prepared`.
      split: ``"valid"`` or ``"test"``.
      max_initiators: at most this many initiators (0 = every initiator of the split).
      seed: the subsample's and the group choice's seed.
      batch_size: initiators per block.
      scorer: a :class:`tfgb.evaluation.protocol.Scorer` of ``model`` to reuse (default: a new one).
      candidates_per_call: (initiator, item) scores per model call (default ``batch_size * 100``, the load of
        one batch of 1:99 lists); a block's items are scored in chunks of ``candidates_per_call // block``.

    Returns:
      The :class:`FullRanks` of the chosen initiators.
    """
    users, items = choose(data, split, max_initiators, seed)
    n, catalog = len(users), data.num_items
    scorer = scorer or Scorer(model, batch_size)
    known = known_interactions(data)
    block = max(1, min(batch_size, n))
    width = max(1, (candidates_per_call or batch_size * 100) // block)
    ranks, pools = np.zeros(n, np.int64), np.zeros(n, np.int64)
    columns = np.arange(catalog, dtype=np.int64)
    bar = tqdm(total=n, desc=f"{split} full catalog", disable=not progress, leave=False, unit="initiator")
    for start in range(0, n, block):
        u, i = users[start:start + block], items[start:start + block]
        rows = np.arange(len(u))
        scores = np.empty((len(u), catalog), np.float32)
        for lo in range(0, catalog, width):
            cand = np.broadcast_to(columns[lo:lo + width], (len(u), min(width, catalog - lo)))
            scores[:, lo:lo + cand.shape[1]] = scorer.items(u, np.ascontiguousarray(cand)).reshape(cand.shape)
        ranked = unknown_mask(known, u)  # the filtered negatives
        ranked[rows, i] = False
        positive = scores[rows, i]
        above = ((scores >= positive[:, None]) | np.isnan(scores)) & ranked
        pools[start:start + block] = ranked.sum(axis=1) + 1
        ranks[start:start + block] = np.where(np.isnan(positive), pools[start:start + block], above.sum(axis=1) + 1)
        bar.update(len(u))
    bar.close()
    return FullRanks(users, items, ranks, pools)


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """``hr@K`` and ``ndcg@K`` for every K (in the order hr@K1, ndcg@K1, hr@K2, ...); NaN for no ranks."""
    ranks = np.asarray(ranks, np.float64)
    out: dict[str, float] = {}
    for k in check_ks(ks):
        hit = ranks <= k
        empty = ranks.size == 0
        out[f"hr@{k}"] = float("nan") if empty else float(hit.mean())
        out[f"ndcg@{k}"] = float("nan") if empty else float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    return out


def summarize(result: FullRanks, ks: Iterable[int]) -> dict:
    """The metrics of :func:`metrics_from_ranks` plus ``initiators`` (n) and ``mean_candidates`` (items
    ranked per initiator, averaged)."""
    out: dict = metrics_from_ranks(result.rank, ks)
    out["initiators"] = len(result)
    out["mean_candidates"] = float(result.candidates.mean()) if len(result) else float("nan")
    return out


def full_catalog(model, data, ks: Iterable[int] = (50, 80, 100, 200), max_initiators: int = 1000, seed: int = 0,
                 batch_size: int = 256, progress: bool = False, split: str = "test",
                 return_ranks: bool = False, candidates_per_call: int | None = None) -> dict | tuple[dict, FullRanks]:
    """The full-catalog metrics of ``split``: ``{"hr@50": .., "ndcg@50": .., ..., "initiators": n,
    "mean_candidates": ..}`` (:func:`summarize`); with ``return_ranks`` also the :class:`FullRanks`.
    Arguments as in :func:`rank_full_catalog`."""
    ks = check_ks(ks)
    ranks = rank_full_catalog(model, data, split, max_initiators, seed, batch_size, progress,
                              candidates_per_call=candidates_per_call)
    metrics = summarize(ranks, ks)
    return (metrics, ranks) if return_ranks else metrics
