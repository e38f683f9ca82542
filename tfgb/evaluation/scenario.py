"""TreeMS's metrics of task B on tfgb's lists, by scenario frequency (paper 003, Sec. 4.1.3 and 4.3).

Every list is (initiator u, item i, its true participant and k - 1 sampled users); its scenario is i's
leaf in the scenario tree (:func:`tfgb.data.scenarios.leaves`). On the lists of length k:

* **AUC**: the Mann-Whitney AUC of every list's positive over every list's negatives, pooled
  (:func:`tfgb.evaluation.launch.auc`, ties one half): it compares scores across lists, so it also asks
  whether scores are comparable between initiators and scenarios.
* **GAUC**: per source user u, the AUC of u's positives over u's negatives (pooled over u's lists), averaged
  with u's impressions (its lists x k) as weights, as the paper's "frequency as weight".
* **MRR**, **HR@5**, **HR@10**: from the pessimistic rank of each list's positive
  (:func:`tfgb.evaluation.metrics.positive_ranks`); MRR over the whole list.

**Head and tail.** Leaves are ranked by their training groups (groups whose item lies under the leaf);
the head is the most frequent leaves that together hold ``1 - tail_share`` of the training groups, the
tail the rest (the long tail of rare scenarios), leaves never seen in training included. Each part reports
its lists and leaves.
"""
from __future__ import annotations

import numpy as np

from tfgb.data.candidates import Candidates
from tfgb.evaluation.figures import save_png
from tfgb.evaluation.launch import auc
from tfgb.evaluation.metrics import positive_ranks
from tfgb.evaluation.protocol import Scorer, subsample

PARTS = ("all", "head", "tail")


def tail_leaves(leaf_counts: np.ndarray, tail_share: float = 0.2) -> np.ndarray:
    """``bool`` [N] over node ids: the leaves of the tail (module docstring); ``leaf_counts`` [N] training
    groups per leaf. A leaf without training groups (a scenario first seen in evaluation) is in the tail;
    the entries of nodes that are no leaf mean nothing (no list is looked up there)."""
    counts = np.asarray(leaf_counts, np.float64)
    order = np.argsort(-counts, kind="stable")
    before = np.cumsum(counts[order]) - counts[order]  # groups of the more frequent leaves
    tail = np.zeros(len(counts), bool)
    tail[order] = before >= (1.0 - tail_share) * counts.sum()
    return tail


def list_metrics(scores: np.ndarray, label: np.ndarray, initiator: np.ndarray) -> dict[str, float]:
    """AUC, GAUC, MRR, HR@5 and HR@10 of lists ``scores`` [N, k] with positives at ``label`` [N]."""
    n, k = scores.shape
    if n == 0:
        return {"lists": 0}
    rows = np.arange(n)
    positive = scores[rows, label]
    negative_mask = np.ones_like(scores, bool)
    negative_mask[rows, label] = False
    ranks = positive_ranks(scores, label)
    weighted, weights = 0.0, 0.0
    order = np.argsort(initiator, kind="stable")
    starts = np.flatnonzero(np.r_[True, initiator[order][1:] != initiator[order][:-1]])
    for block in np.split(order, starts[1:]):
        value = auc(positive[block], scores[block][negative_mask[block]])
        weighted += len(block) * k * value
        weights += len(block) * k
    return {"lists": int(n), "auc": auc(positive, scores[negative_mask]), "gauc": weighted / weights,
            "mrr": float(np.mean(1.0 / ranks)), "hr@5": float(np.mean(ranks <= 5)),
            "hr@10": float(np.mean(ranks <= 10))}


def participant_report(model, candidates: Candidates, leaves: np.ndarray, leaf_counts: np.ndarray,
                       k: int = 100, tail_share: float = 0.2, batch_size: int = 256, max_groups: int = 0,
                       seed: int = 0) -> dict:
    """Task B's AUC / GAUC / MRR / HR@5 / HR@10 on lists of length ``k``, for all lists, head and tail.

    Args:
      leaves: ``int`` [I] the leaf node of every item.
      leaf_counts: ``int`` [N] training groups per node (:func:`tfgb.data.scenarios.leaf_counts`).
      k: list length (at most the saved lists' M + 1).
      max_groups, seed: a seeded subsample of the lists (0 = all).

    Returns:
      ``{"k": k, "tail_share": s, "all" | "head" | "tail": {"lists", "leaves", "auc", ...}}``.
    """
    lists = candidates.take(subsample(candidates, max_groups, seed))
    k = min(k, lists.negatives + 1)
    cand, label = lists.task_b(k)
    scores = Scorer(model, batch_size).participants(lists.initiator, lists.item, cand).reshape(cand.shape)
    leaf = np.asarray(leaves)[lists.item]
    tail = tail_leaves(leaf_counts, tail_share)[leaf]
    out: dict = {"k": int(k), "tail_share": float(tail_share)}
    for part, keep in zip(PARTS, (np.ones(len(leaf), bool), ~tail, tail)):
        out[part] = {**list_metrics(scores[keep], label[keep], lists.initiator[keep]),
                     "leaves": len(np.unique(leaf[keep]))}
    return out


def treems_report(model, data, config, run_path=None, progress: bool = False) -> dict:
    """What a TreeMS run reports at its end: :func:`participant_report` on the test lists at the recipe's
    longest list length and at 10, and the mean gates over the test groups' scenarios (written as
    ``treems_expert_utilisation.png`` into ``run_path`` when given)."""
    import os

    out = {"by_scenario": {}}
    for k in sorted({10, max(config.eval.ks)}):
        out["by_scenario"][str(k)] = participant_report(
            model, data.test_candidates, model.leaves, model.leaf_counts, k=k, batch_size=config.eval.batch_size,
            seed=config.train.seed)
    emb = model.propagate(training=False)
    out["utilisation"] = model.utilisation(emb, np.asarray(data.test.item)).round(5).tolist()
    if run_path is not None:
        utilisation_png({f"{config.model.name} (gamma = {model.settings.gamma:g})": np.array(out["utilisation"])},
                        os.path.join(run_path, "treems_expert_utilisation.png"))
    return out


def utilisation_png(panels: dict[str, np.ndarray], path) -> str:
    """Expert utilisation as PNG heatmaps at ``path`` (atomically): one panel per entry of ``panels``, a
    [H, n] matrix of mean gates (layer x expert, e.g. :meth:`tfgb.models.treems.TreeMS.utilisation` of a
    run with and one without the inconsistency loss). Returns the path."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], panels.items()):
        matrix = np.asarray(matrix, np.float64)
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-9), aspect="auto")
        ax.set_xlabel("expert")
        ax.set_ylabel("layer (root first)")
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(matrix.shape[0]))
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax)
    fig.suptitle("TreeMS: mean gate of every expert per layer", fontsize=10)
    return save_png(fig, path)
