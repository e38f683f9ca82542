"""The seeded train/valid/test split of deal groups (the evaluation protocol, docs/design.md).

1. A seeded permutation of the groups is cut into train/valid/test by the ratios
   (:func:`planned_sizes`: valid and test sizes are rounded down, train takes the rest).
2. Cold start: a valid/test group whose initiator never occurs in a training group (in any
   role: as an initiator or as a participant), or whose item is never the item of a training
   group, goes back to training. One pass suffices: moving groups only adds users and items to
   training, so no remaining group becomes cold. Participants of valid/test groups may be
   absent from training: they are users with an embedding all the same.

Same groups and seed give the same split on every machine (``np.random.default_rng``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from tfgb.data.groups import DealGroups

logger = logging.getLogger(__name__)


def planned_sizes(num_groups: int, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Train/valid/test sizes before cold-start groups move back to training.

    Args:
      num_groups: G.
      ratios: three non-negative weights (train, valid, test), normalised by their sum.

    Returns:
      ``(train, valid, test)`` summing to G; valid and test are ``floor(G * r / sum(r))``.
    """
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers with a positive sum, got {ratios!r}")
    total = float(sum(ratios))
    valid = int(np.floor(num_groups * ratios[1] / total))
    test = int(np.floor(num_groups * ratios[2] / total))
    return num_groups - valid - test, valid, test


def split_groups(
    groups: DealGroups, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 2023
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split deal groups into train/valid/test group indices.

    Args:
      groups: the encoded table, G groups.
      ratios: (train, valid, test) weights.
      seed: seed of the permutation.

    Returns:
      ``(train, valid, test)``: sorted, disjoint ``int64`` index arrays into ``groups`` whose
      union is ``arange(G)``. Every initiator of a valid/test group occurs in some training group
      (as initiator or participant) and every item of a valid/test group is the item of some
      training group.
    """
    n_train, n_valid, _ = planned_sizes(len(groups), ratios)
    order = np.random.default_rng(seed).permutation(len(groups)).astype(np.int64)
    train = order[:n_train]
    held = order[n_train:]

    seen_users = np.zeros(groups.num_users, dtype=bool)
    seen_users[groups.initiator[train]] = True
    seen_users[groups.take(train).participants] = True
    seen_items = np.zeros(groups.num_items, dtype=bool)
    seen_items[groups.item[train]] = True
    warm = seen_users[groups.initiator[held]] & seen_items[groups.item[held]]

    is_valid = np.arange(held.size) < n_valid
    valid = np.sort(held[warm & is_valid])
    test = np.sort(held[warm & ~is_valid])
    train = np.sort(np.concatenate([train, held[~warm]]))
    moved_valid = int(n_valid - valid.size)
    moved_test = int(held.size - n_valid - test.size)
    logger.debug("split %d groups: %d/%d/%d; cold start moved %d valid and %d test groups to training",
                 len(groups), train.size, valid.size, test.size, moved_valid, moved_test)
    return train, valid, test


def split_launches(groups: DealGroups, train: np.ndarray, users: np.ndarray, items: np.ndarray,
                   ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 2023) -> np.ndarray:
    """The split of the failed launches, under the protocol of the deal groups.

    A seeded permutation (its own stream: ``default_rng([seed, 1])``) of the F launches is cut by the
    same ratios; a held-out launch whose initiator is in no training group (any role) or whose item
    is the item of no training group goes back to training, as a cold-start deal group does. Held-out
    launches never enter the training graphs, the training interactions or the training labels:
    with the held-out deal groups of the same split they are the launches with a known outcome
    that launch-success AUC is measured on.

    Args:
      groups: every deal group; ``train``: the training group indices of :func:`split_groups`.
      users / items: ``int`` [F], the failed launches.

    Returns:
      ``int8`` [F]: 0 = train, 1 = valid, 2 = test.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    n_train, n_valid, _ = planned_sizes(len(users), ratios)
    order = np.random.default_rng([seed, 1]).permutation(len(users))
    where = np.zeros(len(users), np.int8)
    where[order[n_train:n_train + n_valid]] = 1
    where[order[n_train + n_valid:]] = 2
    seen_users = np.zeros(groups.num_users, dtype=bool)
    seen_users[groups.initiator[train]] = True
    seen_users[groups.take(train).participants] = True
    seen_items = np.zeros(groups.num_items, dtype=bool)
    seen_items[groups.item[train]] = True
    cold = ~(seen_users[users] & seen_items[items])
    moved = int(((where > 0) & cold).sum())
    where[cold] = 0
    logger.debug("split %d failed launches: %d/%d/%d; cold start moved %d back to training", len(users),
                 int((where == 0).sum()), int((where == 1).sum()), int((where == 2).sum()), moved)
    return where
