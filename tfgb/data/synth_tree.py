"""The planted category tree of the synthetic generator (``data.synth.tree``; :mod:`tfgb.data.synth`, step 7).

The tree: the root, :data:`BRANCHES` top branches, :data:`MIDS` mid nodes under each, and
``max(BRANCHES x MIDS, items // leaf_items)`` leaves (``leaf_items`` = :data:`ITEMS_PER_LEAF` by default) (at most one per item) spread over the mid nodes
(every mid node gets one, the rest at random). Every leaf gets one item, the other items are drawn
with Zipf-like leaf weights ``(rank + 1) ** -LEAF_ZIPF``, so a few leaves hold many items and many hold
one to three: the head and the long tail of scenarios TreeMS is for. With ``leaf_items = 1`` every
item is its own leaf, so a leaf holds as many groups as its item (Zipf popularity): most leaves then have
a handful of training groups, the sparse tail on which a leaf's ancestors are all a model knows of it. An item's path is
``b<branch>/m<mid within its branch>/l<leaf>``.

The item's top branch decides who joins its groups (the participants of step 6):

* branch 0, ``circle``: the initiator's friends, weighted by taste (step 6 as without a tree);
* branch 1, ``taste``: any user, weighted by ``exp(taste_p . taste_i / TEMPERATURE)``;
* branch 2, ``crowd``: any user, weighted by the joiner activity alone.

Every draw comes from its own generator (``seed + 2``): the tree first, then the participants of
branches 1 and 2, so the main generator of :func:`tfgb.data.synth.generate` makes the same draws with or
without a tree.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from tfgb.errors import ConfigError

if TYPE_CHECKING:
    from tfgb.data.synth import World

BRANCHES = ("circle", "taste", "crowd")
MIDS = 3  # mid nodes per branch
ITEMS_PER_LEAF = 8  # leaves = items // ITEMS_PER_LEAF (at least one per mid node)
LEAF_ZIPF = 1.0  # a leaf of rank r draws items with weight (r + 1) ** -LEAF_ZIPF


@dataclasses.dataclass
class Tree:
    """The planted tree: per item (``int64`` [I]) its ``branch`` (index into :data:`BRANCHES`), ``mid``
    (0 .. MIDS - 1 within its branch) and ``leaf`` (0 .. leaves - 1, by Zipf rank); ``rng`` is the
    generator the participants of branches 1 and 2 are drawn from."""

    branch: np.ndarray
    mid: np.ndarray
    leaf: np.ndarray
    rng: np.random.Generator

    def paths(self) -> list[str]:
        """Every item's path, ``"b<branch>/m<mid>/l<leaf>"``."""
        return [f"b{b}/m{m}/l{x}" for b, m, x in zip(self.branch.tolist(), self.mid.tolist(), self.leaf.tolist())]


def draw(items: int, seed: int, leaf_items: int = ITEMS_PER_LEAF) -> Tree:
    """The tree of ``items`` items for the generator seed ``seed``, about ``leaf_items`` items per leaf
    (module docstring)."""
    if leaf_items < 1:
        raise ConfigError(f"data.synth.leaf_items must be >= 1 (got {leaf_items})")
    rng = np.random.default_rng(seed + 2)
    mids = len(BRANCHES) * MIDS
    leaves = min(max(mids, items // leaf_items), items)
    weight = (np.arange(leaves) + 1.0) ** -LEAF_ZIPF
    leaf = np.empty(items, np.int64)
    order = rng.permutation(items)
    leaf[order[:leaves]] = np.arange(leaves)
    leaf[order[leaves:]] = rng.choice(leaves, size=items - leaves, p=weight / weight.sum())
    first = min(mids, leaves)
    mid_of_leaf = rng.permutation(np.r_[np.arange(first), rng.integers(mids, size=leaves - first)])
    mid = mid_of_leaf[leaf]
    return Tree(branch=mid // MIDS, mid=mid % MIDS, leaf=leaf, rng=rng)


def _top_k(rng: np.random.Generator, logits: np.ndarray, k: int) -> np.ndarray:
    """``int64`` [N, k] a draw without replacement per row, ``P ∝ exp(logits)`` (Gumbel top-k)."""
    noisy = logits + rng.gumbel(size=logits.shape)
    top = np.argpartition(-noisy, k - 1, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(noisy, top, axis=1), axis=1), axis=1)


def rejoin(state: World, tree: Tree, initiator: np.ndarray, item: np.ndarray, chosen: np.ndarray,
           size: np.ndarray) -> np.ndarray:
    """``chosen`` [G, W] (step 6's participants, -1 padded) with the groups of branch 1 and 2 items drawn
    again from every user but the initiator, ``size`` [G] participants each (module docstring)."""
    from tfgb.data.synth import TEMPERATURE

    users, width = len(state.joiner), chosen.shape[1]
    rows = np.flatnonzero(tree.branch[item] > 0)
    if len(rows) == 0 or users <= width:
        return chosen
    chosen = chosen.copy()
    log_joiner = np.log(state.joiner)
    step = max(1, 2_000_000 // users)
    for start in range(0, len(rows), step):
        part = rows[start:start + step]
        taste = state.item_taste[item[part]] @ state.user_taste.T / TEMPERATURE  # [n, U]
        logits = np.where((tree.branch[item[part]] == 1)[:, None], taste, log_joiner[None, :])
        logits[np.arange(len(part)), initiator[part]] = -np.inf
        drawn = _top_k(tree.rng, logits, width)
        drawn[np.arange(width)[None, :] >= size[part, None]] = -1
        chosen[part] = drawn
    return chosen
