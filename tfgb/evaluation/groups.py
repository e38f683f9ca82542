"""Diagnostics of GPRec's learned user groups (:mod:`tfgb.models.gprec`), for a trained model.

* **Occupancy**: per group, the share of users in it (m^1 > 0.5 at inference).
* **Entropy** of the assignments: the mean over users and groups of the binary entropy of m^1 (bits; 0 =
  every mask is 0 or 1, 1 = every mask is 0.5), and the entropy of the occupancy distribution over groups
  (how evenly users spread, in bits, out of log2 G).
* **Undecided share**: the share of mask values inside [0.05, 0.95] (the paper wants them near 0 or 1).
* **Positive vs negative cosine**: the G x G matrix cos(p_i, n_j) of the dual group embeddings (the
  paper's RQ5: a group's positive and negative embeddings should differ), saved as a PNG heatmap.

:func:`report` returns the numbers (``metrics.json`` key ``gprec``); :func:`heatmap` writes the PNG.
"""
from __future__ import annotations

import os

import numpy as np

from tfgb.evaluation.figures import save_png


def assignments(model) -> np.ndarray:
    """m^1 at inference for every vocabulary user, ``float32`` [U, G]."""
    return model.group_masks()


def report(model) -> dict:
    """The numbers of the module docstring."""
    m = assignments(model)
    p = np.clip(m, 1e-7, 1 - 1e-7)
    bits = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    occupancy = (m > 0.5).mean(0)
    share = occupancy / occupancy.sum() if occupancy.sum() > 0 else np.full_like(occupancy, 1.0 / len(occupancy))
    spread = float(-(share[share > 0] * np.log2(share[share > 0])).sum())
    pos = model.gprec.group_embedding.positive.numpy()
    neg = model.gprec.group_embedding.negative.numpy()
    cos = _cosines(pos, neg)
    return {"groups": int(m.shape[1]), "users": int(m.shape[0]),
            "occupancy": [round(float(x), 4) for x in occupancy],
            "empty_groups": int((occupancy == 0).sum()), "full_groups": int((occupancy == 1).sum()),
            "mask_entropy_bits": round(float(bits.mean()), 4),
            "occupancy_entropy_bits": round(spread, 4), "max_entropy_bits": round(float(np.log2(m.shape[1])), 4),
            "undecided_share": round(float(((m > 0.05) & (m < 0.95)).mean()), 4),
            "own_pair_cosine_mean": round(float(np.diag(cos).mean()), 4),
            "other_pair_cosine_mean": round(float(cos[~np.eye(len(cos), dtype=bool)].mean()) if len(cos) > 1
                                            else 0.0, 4)}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def heatmap(model, path: str | os.PathLike) -> str:
    """cos(p_i, n_j) as a PNG heatmap at ``path`` (written atomically); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cos = _cosines(model.gprec.group_embedding.positive.numpy(), model.gprec.group_embedding.negative.numpy())
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(cos, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xlabel("negative embedding n_j")
    ax.set_ylabel("positive embedding p_i")
    ax.set_title("GPRec: cosine of positive vs negative group embeddings")
    fig.colorbar(image, ax=ax)
    return save_png(fig, path)
