"""Task A metrics by the initiator's training sparsity, and every metric family of a split in one call.

**Cells.** Each evaluated row belongs to its initiator's cell: deals the initiator launched in training
(training deal groups with it as initiator) in {0, 1, 2, 3+} x its training failed launches in
{0, 1, 2+}, twelve cells named ``deals=1,failed=0`` etc. The 0-deal row exists because the cold-start
rule (:mod:`tfgb.data.split`) keeps a held-out group whose initiator occurs in training in any role, so
an initiator may have joined training groups without launching one.

**Families** (each with its own rows, so each cell reports its own counts):

* ``sampled``: the saved lists' task A metrics (:func:`tfgb.evaluation.protocol.evaluate`), ``rows`` =
  lists in the cell;
* ``full``: the full-catalog ``hr@K`` / ``ndcg@K`` (:mod:`tfgb.evaluation.full`), ``rows`` = initiators;
* ``launch_success``: the launch AUC and its floor (:mod:`tfgb.evaluation.launch`) over the cell's held-out
  launches (a launch's cell is its initiator's), with ``positives`` and ``negatives``; the AUCs are None
  when the cell lacks either.

A family's metrics are left out of a cell with no rows (only ``rows: 0`` is kept).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tfgb.config import EvalConfig
from tfgb.evaluation import full as full_lib
from tfgb.evaluation import launch as launch_lib
from tfgb.evaluation.metrics import metrics_from_ranks
from tfgb.evaluation.protocol import evaluate

DEALS = ("0", "1", "2", "3+")
FAILED = ("0", "1", "2+")
PROTOCOLS = ("sampled", "full", "all")


def cell_names() -> list[str]:
    """The cells in order: ``deals=0,failed=0``, ``deals=0,failed=1``, ..., ``deals=3+,failed=2+``."""
    return [f"deals={d},failed={f}" for d in DEALS for f in FAILED]


def training_counts(data) -> tuple[np.ndarray, np.ndarray]:
    """Per user, ``int64`` [num_users]: training deal groups launched (as initiator), training failed launches."""
    users, _, _ = data.launches("train")
    return (np.bincount(data.train.initiator, minlength=data.num_users).astype(np.int64),
            np.bincount(users, minlength=data.num_users).astype(np.int64))


def cells(data, users: np.ndarray) -> np.ndarray:
    """The cell (an index into :func:`cell_names`) of each user's rows, ``int64`` [n]."""
    deals, failed = training_counts(data)
    users = np.asarray(users, np.int64)
    return np.minimum(deals[users], len(DEALS) - 1) * len(FAILED) + np.minimum(failed[users], len(FAILED) - 1)


def breakdown(data, sampled: Mapping | None = None, cutoffs: Mapping[int, Sequence[int]] | None = None,
              full: full_lib.FullRanks | None = None, full_ks: Sequence[int] = (),
              launches: Mapping | None = None) -> dict:
    """``{cell name: {family: {...}}}`` for the families given (module docstring).

    Args:
      sampled: the ranks of ``evaluate(..., return_ranks=True)``; its task A ranks are broken down.
      cutoffs: HR cut-offs per list length for ``sampled`` (None: the recipe defaults).
      full: the full-catalog ranks, broken down at ``full_ks``.
      launches: the scores of ``launch_success(..., return_scores=True)``.
    """
    cutoffs = EvalConfig().cutoffs() if cutoffs is None else dict(cutoffs)
    names = cell_names()
    out: dict = {name: {} for name in names}
    if sampled is not None:
        where = cells(data, sampled["initiator"])
        for c, name in enumerate(names):
            rows = where == c
            entry: dict = {"rows": int(rows.sum())}
            if entry["rows"]:
                for k, ranks in sampled["a"].items():
                    entry.update(metrics_from_ranks(ranks[rows], k, cutoffs.get(k, ())))
            out[name]["sampled"] = entry
    if full is not None:
        where = cells(data, full.initiator)
        for c, name in enumerate(names):
            rows = where == c
            entry = {"rows": int(rows.sum())}
            if entry["rows"]:
                entry.update(full_lib.metrics_from_ranks(full.rank[rows], full_ks))
            out[name]["full"] = entry
    if launches is not None:
        where = cells(data, launches["user"])
        success = launches["success"]
        for c, name in enumerate(names):
            rows = where == c
            pos, neg = rows & success, rows & ~success
            entry = {"positives": int(pos.sum()), "negatives": int(neg.sum()), "auc": None, "floor_auc": None}
            if entry["positives"] and entry["negatives"]:
                entry["auc"] = launch_lib.auc(launches["score"][pos], launches["score"][neg])
                entry["floor_auc"] = launch_lib.auc(launches["floor"][pos], launches["floor"][neg])
            out[name]["launch_success"] = entry
    return out


def split_report(model, data, split: str, eval_config: EvalConfig, seed: int, protocol: str = "all",
                 full_initiators: int | None = None, max_groups: int | None = None, progress: bool = False) -> dict:
    """The metrics of a split under ``protocol``.

    * ``sampled``: :func:`tfgb.evaluation.protocol.evaluate` of the split's saved lists (``a``, ``b``,
      ``groups``), on a ``max_groups`` subsample (None: ``eval.max_groups``);
    * ``full``: ``full`` (:func:`tfgb.evaluation.full.full_catalog` at ``eval.full_ks`` on ``full_initiators``
      initiators, 0 = all; left out when None) and ``launch_success`` (left out when the split has no
      failed launch);
    * ``all``: both, and ``sparsity`` (:func:`breakdown` of every family computed).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    cutoffs = eval_config.cutoffs()
    out: dict = {}
    sampled_ranks = full_ranks = launch_scores = None
    if protocol in ("sampled", "all"):
        lists = data.valid_candidates if split == "valid" else data.test_candidates
        groups = eval_config.max_groups if max_groups is None else max_groups
        metrics, sampled_ranks = evaluate(model, lists, ks=eval_config.ks, batch_size=eval_config.batch_size,
                                          max_groups=groups, seed=seed, progress=progress, desc=split,
                                          hr_cutoffs=cutoffs, return_ranks=True)
        out.update(metrics)
    if protocol in ("full", "all"):
        if full_initiators is not None:
            out["full"], full_ranks = full_lib.full_catalog(
                model, data, eval_config.full_ks, full_initiators, seed, eval_config.batch_size, progress, split,
                return_ranks=True)
        launched, launch_scores = launch_lib.launch_success(model, data, split, eval_config.batch_size,
                                                            return_scores=True)
        if launched is not None:
            out["launch_success"] = launched
        else:
            launch_scores = None
    if protocol == "all":
        out["sparsity"] = breakdown(data, sampled_ranks, cutoffs, full_ranks, eval_config.full_ks, launch_scores)
    return out
