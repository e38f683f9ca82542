"""User-user relation views: TreeMS's multi-view user graph (the ``user_relations`` side input, paper 003
section 3.4).

The paper's views (friend, share, pay) are social data that group-buying logs do not carry; what a log
does carry is who met whom. :func:`derive` builds three views from the training split only (nothing of
the valid or test splits enters), every edge in both directions:

* ``initiator_participant``: the initiator and each participant of a training deal group;
* ``co_participation``: two participants of the same training deal group (no self edges);
* ``co_launch``: two users who launched the same item (a deal group or a failed launch). A popular item
  would link all its launchers pairwise, so each launcher is linked to at most ``co_launch_cap`` others of
  each item: the item's launchers are put in a seeded random circular order and each is linked to its
  ``co_launch_cap // 2`` nearest on either side (and, for an odd cap, to the one opposite), which samples
  the pairs uniformly and keeps the view symmetric; an item of at most ``co_launch_cap + 1`` launchers
  links all of them.

Edges are deduplicated per view; ``weight`` is the evidence behind an edge: the training groups for the
first two views, the items for ``co_launch`` (a pair launching one item several times counts once). The
masks of :func:`derive` select a subset of the training groups and failed launches: the relations of a
graph fold (:func:`fold_relations`) lack the fold's own groups and launches.

:func:`read` reads more views from a table of (source user, destination user, relation name) rows
(``data.user_relations``, columns ``data.user_relation_columns``); :func:`merge` appends them to the
derived ones. :func:`sample_neighbours` draws the fixed, seeded neighbour sample TreeMS attends over.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tfgb.contract import UserRelations
from tfgb.errors import DataError

if TYPE_CHECKING:
    from tfgb.data.prepare import Prepared

VIEWS = ("initiator_participant", "co_participation", "co_launch")
CO_LAUNCH_CAP = 10


def _runs(sorted_keys: np.ndarray) -> np.ndarray:
    """``int64`` start of every run of equal values in a sorted array (sort-based: ``np.unique`` of numpy 2.4
    hashes, several times slower on millions of ``int64`` keys)."""
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(sorted_keys) else \
        np.zeros(0, np.int64)


def _edges(view: np.ndarray, src: np.ndarray, dst: np.ndarray, num_users: int, names: Sequence[str],
           weight: np.ndarray | None = None) -> UserRelations:
    """Deduplicated edges (sorted by view, src, dst) whose weight sums ``weight`` (default 1 per row)."""
    n = np.int64(num_users)
    keys = (view.astype(np.int64) * n + src) * n + dst
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    starts = _runs(keys)
    unique = keys[starts]
    rows = np.ones(len(keys)) if weight is None else np.asarray(weight, np.float64)[order]
    total = np.add.reduceat(rows, starts).astype(np.float32) if len(keys) else np.zeros(0, np.float32)
    dst_out, rest = unique % n, unique // n
    return UserRelations((rest % n).astype(np.int32), dst_out.astype(np.int32), (rest // n).astype(np.int8),
                         tuple(names), total)


def _pairs_within(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``int64`` positions (a, b), a != b, of every ordered pair inside each block of consecutive entries
    of the given ``sizes`` [B] (entries of block j are ``sizes[:j].sum() + 0 .. sizes[j] - 1``)."""
    sizes = np.asarray(sizes, np.int64)
    starts = np.cumsum(sizes) - sizes
    block = np.repeat(np.arange(len(sizes)), sizes)
    reps = sizes[block]  # per entry: the size of its block
    a = np.repeat(np.arange(len(block), dtype=np.int64), reps)
    b = np.repeat(starts[block], reps) + np.arange(len(a)) - np.repeat(np.cumsum(reps) - reps, reps)
    keep = a != b
    return a[keep], b[keep]


def _co_launch(users: np.ndarray, items: np.ndarray, num_users: int, cap: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Directed (src, dst) of the ``co_launch`` view, before deduplication across items (module docstring)."""
    pairs = np.sort(items.astype(np.int64) * num_users + users)
    pairs = pairs[_runs(pairs)]  # distinct (item, launcher)
    item, user = pairs // num_users, pairs % num_users
    order = np.lexsort((rng.random(len(pairs)), item))  # a random circle per item
    item, user = item[order], user[order]
    starts = _runs(item)
    sizes = np.diff(np.r_[starts, len(item)])
    small = sizes <= cap + 1
    in_small = np.repeat(small, sizes)
    a, b = _pairs_within(sizes[small])  # items of at most cap + 1 launchers: every ordered pair
    src, dst = [user[in_small][a]], [user[in_small][b]]
    # Larger items: each undirected pair of neighbours on the circle once, then both directions.
    entry = np.flatnonzero(~in_small)
    n, base = np.repeat(sizes[~small], sizes[~small]), np.repeat(starts[~small], sizes[~small])
    position = entry - base
    ends_a, ends_b = [], []
    for d in range(1, cap // 2 + 1):
        ends_a.append(entry)
        ends_b.append(base + (position + d) % n)
    if cap % 2:  # and the one opposite: a matching (the last launcher of an odd circle has none)
        opposite = position < n // 2
        ends_a.append(entry[opposite])
        ends_b.append(entry[opposite] + n[opposite] // 2)
    u, v = user[np.concatenate(ends_a)], user[np.concatenate(ends_b)]
    return np.concatenate([*src, u, v]), np.concatenate([*dst, v, u])


def derive(data: Prepared, groups_mask: np.ndarray | None = None, launches_mask: np.ndarray | None = None,
           co_launch_cap: int = CO_LAUNCH_CAP, seed: int = 0) -> UserRelations:
    """The three views of :data:`VIEWS` from the training split (module docstring).

    Args:
      groups_mask: ``bool`` [G_train] the training deal groups to use (default: all).
      launches_mask: ``bool`` [F_train] the training failed launches to use (order of
        ``data.launches("train")``; default: all).
      co_launch_cap: the most other launchers of one item a launcher is linked to (``co_launch``).
      seed: the ``co_launch`` sample's seed.

    Returns:
      Edges sorted by view, src, dst; ``weight`` ``float32`` [E] as in the module docstring.
    """
    if co_launch_cap < 1:
        raise ValueError(f"co_launch_cap must be at least 1, got {co_launch_cap}")
    groups = data.train if groups_mask is None else data.train.take(np.flatnonzero(groups_mask))
    f_users, f_items, _ = data.launches("train")
    if launches_mask is not None:
        f_users, f_items = f_users[launches_mask], f_items[launches_mask]
    owner = np.repeat(groups.initiator, groups.sizes)
    member = groups.participants
    other = owner != member
    a, b = _pairs_within(groups.sizes)
    co_a, co_b = member[a], member[b]
    distinct = co_a != co_b
    l_src, l_dst = _co_launch(np.concatenate([groups.initiator, f_users]), np.concatenate([groups.item, f_items]),
                              data.num_users, co_launch_cap, np.random.default_rng(seed))
    parts = [(owner[other], member[other]), (member[other], owner[other]), (co_a[distinct], co_b[distinct]),
             (l_src, l_dst)]
    view = np.concatenate([np.full(len(s), v, np.int64) for (s, _), v in zip(parts, (0, 0, 1, 2))])
    src = np.concatenate([s for s, _ in parts]).astype(np.int64)
    dst = np.concatenate([d for _, d in parts]).astype(np.int64)
    return _edges(view, src, dst, data.num_users, VIEWS)


def fold_relations(data: Prepared, folds: int, seed: int, extra: UserRelations | None = None,
                   co_launch_cap: int = CO_LAUNCH_CAP) -> list[UserRelations]:
    """Per graph fold f (``train.graph_folds`` = ``folds``, ``train.seed`` = ``seed``): :func:`derive`
    without fold f's training groups (:meth:`Prepared.fold_of_groups`) and failed launches
    (:meth:`Prepared.fold_of_launches`), with the views of ``extra`` (a file's) appended."""
    group_fold, launch_fold = data.fold_of_groups(folds, seed), data.fold_of_launches(folds, seed)
    out = []
    for f in range(folds):
        derived = derive(data, group_fold != f, launch_fold != f, co_launch_cap, seed)
        out.append(derived if extra is None else merge(derived, extra))
    return out


def read(path: str | os.PathLike, data: Prepared, columns: Sequence[str] = ("src", "dst", "relation"),
         fmt: str = "auto") -> tuple[UserRelations, dict]:
    """The views of a table of (source user, destination user, relation name) rows, and a report.

    Every relation name is a view (in sorted order). Rows naming a user outside ``data.user_vocab`` are
    counted (``unknown_users``) and dropped, so are self-loops (``self_loops``); every pair is made
    symmetric, and an edge's ``weight`` counts the rows behind its pair (either direction).

    Raises:
      DataError: the file is missing or unreadable, lacks a column (naming it and
        ``data.user_relation_columns``), or a kept row has an empty relation name.
    """
    from tfgb.data.tables import read_table

    columns = list(columns)
    frame = read_table(path, fmt, "user relation", columns, [f"data.user_relation_columns[{n}]" for n in range(3)])
    src, dst = data.user_vocab.lookup(frame[columns[0]].to_numpy(object)), \
        data.user_vocab.lookup(frame[columns[1]].to_numpy(object))
    relation = frame[columns[2]].str.strip().to_numpy(object)
    unknown = (src < 0) | (dst < 0)
    loop = ~unknown & (src == dst)
    keep = ~unknown & ~loop
    empty = np.flatnonzero(keep & (relation == ""))
    if len(empty):
        raise DataError(str(path), f"row {int(empty[0]) + 1} has no relation name (column '{columns[2]}')")
    names, codes = np.unique(relation[keep].astype(str), return_inverse=True)
    s, d = src[keep], dst[keep]
    found = _edges(np.concatenate([codes, codes]), np.concatenate([s, d]), np.concatenate([d, s]), data.num_users,
                   tuple(str(x) for x in names))
    report = {"source": str(path), "rows": len(frame), "unknown_users": int(unknown.sum()),
              "self_loops": int(loop.sum()), "views": found.counts()}
    return found, report


def merge(a: UserRelations, b: UserRelations, source: str = "user relations") -> UserRelations:
    """The views of ``a`` followed by those of ``b`` (a missing ``weight`` counts 1 per edge).

    Raises:
      DataError: a view name of ``b`` is one of ``a``'s (``source`` names where ``b`` came from).
    """
    same = sorted(set(a.names) & set(b.names))
    if same:
        raise DataError(source, f"relation '{same[0]}' is already a view ({', '.join(a.names)}); rename it")
    weight = None
    if a.weight is not None or b.weight is not None:
        weight = np.concatenate([np.ones(len(r.src), np.float32) if r.weight is None else r.weight.astype(np.float32)
                                 for r in (a, b)])
    relation = np.concatenate([a.relation, b.relation.astype(np.int16) + len(a.names)]).astype(np.int8)
    return UserRelations(np.concatenate([a.src, b.src]).astype(np.int32), np.concatenate([a.dst, b.dst]).astype(np.int32),
                         relation, (*a.names, *b.names), weight)


def sample_neighbours(relations: UserRelations, num_users: int, k: int, seed: int) -> np.ndarray:
    """``int32`` [R, U, K]: per view and user a fixed, seeded sample of at most ``k`` distinct neighbours
    drawn without replacement (all of them when the degree is at most ``k``), in random order, padded
    with -1. The sample depends on the edge set and the seed, not on the order of the edges."""
    n, views = np.int64(num_users), len(relations.names)
    keys = np.sort((relations.relation.astype(np.int64) * n + relations.src) * n + relations.dst)
    keys = keys[_runs(keys)]
    dst, owner = keys % n, keys // n  # owner = view * U + src, sorted
    shuffle = np.random.default_rng(seed).permutation(len(keys))
    order = shuffle[np.argsort(owner[shuffle], kind="stable")]  # by owner, a random order within each
    owner, dst = owner[order], dst[order]
    starts = _runs(owner)
    rank = np.arange(len(owner)) - np.repeat(starts, np.diff(np.r_[starts, len(owner)]))
    keep = rank < k
    out = np.full((views, num_users, k), -1, np.int32)
    out[owner[keep] // n, owner[keep] % n, rank[keep]] = dst[keep]
    return out


def for_recipe(config, data: Prepared, data_dir: str | None) -> tuple[UserRelations, dict]:
    """The derived views (seeded by ``data.seed``), followed by the views of the file ``data.user_relations``
    (relative to ``data_dir``) when it is set; and a report."""
    from tfgb.errors import ConfigError

    d = config.data
    relations = derive(data, seed=d.seed)
    report: dict = {"derived": relations.counts()}
    if d.user_relations:
        if data_dir is None and not os.path.isabs(d.user_relations):
            raise ConfigError(f"data.user_relations = '{d.user_relations}' is relative to --data-dir, which was not "
                              "given")
        path = os.path.join(data_dir or "", d.user_relations)
        extra, report["file"] = read(path, data, d.user_relation_columns)
        relations = merge(relations, extra, path)
    report["views"] = relations.counts()
    return relations, report
