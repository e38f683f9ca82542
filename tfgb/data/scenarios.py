"""Item category paths: TreeMS's scenario tree (the ``item_categories`` side input, paper 003 section 3.3).

The result is one :class:`tfgb.contract.ItemCategories`: node id 0 is reserved (unknown / out of
vocabulary), node 1 is the implicit root (name ``""``) that starts every path, and ``nodes`` [I, H] holds
every vocabulary item's root-to-deepest path (a shorter path repeats its deepest node; an item without
one is the root alone). Node names are full path prefixes (``"baby"``, ``"baby/feeding"``), so equal
names at different places stay distinct, and node ids are numbered by depth, then name: the same paths
give the same ids whatever the order of the rows.

Two sources:

* **A file** (``data.item_categories``: CSV / TSV / Parquet): an item id column
  (``data.item_category_id_column``) and a path column (``data.item_category_path_column``) whose
  components are separated by ``data.category_separator``; empty components are dropped. Rows of items
  outside the vocabulary are counted and skipped (:func:`read`).
* **Derived from the training split only** (:func:`derive`), a proxy tree where no catalogue is
  available: each item is the vector of its training users (initiators, participants and failed
  launchers; ``log(1 + count)``, rows normalised), reduced by a seeded truncated SVD to
  :data:`SVD_DIMS` dimensions, then split by seeded k-means into ``branching`` clusters, each cluster
  again, to ``depth`` levels; a cluster of fewer than ``branching`` items is a leaf. Nodes are named by
  cluster rank at each level, largest first (``"c0"``, ``"c0/c3"``). Items without a training interaction
  keep the root alone. Nothing of the valid or test splits enters.

:func:`known_nodes` and :func:`fall_back` make the paths safe for a model: a node that no training group's
item lies under has no trained embedding, and an item whose leaf is such a node gets the path of its
deepest known ancestor instead. :func:`save` / :func:`load` keep a run's tree in its run dir
(``item_categories.json`` + ``item_categories.npz``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tfgb.contract import ItemCategories
from tfgb.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tfgb.data.prepare import Prepared

UNKNOWN, ROOT = 0, 1
UNKNOWN_NAME = "<unknown>"
SVD_DIMS = 32  # dimensions of the derived item vectors
KMEANS_ITERATIONS = 30  # Lloyd steps per split at most (most splits converge in fewer)


def _components(path: object, separator: str) -> list[str]:
    """The non-empty, whitespace-stripped components of one path (NaN / None: no component)."""
    if path is None or (isinstance(path, float) and np.isnan(path)):
        return []
    return [c.strip() for c in str(path).split(separator) if c.strip()]


def from_paths(item_index: np.ndarray, paths: Sequence[str], num_items: int, separator: str = "/",
               source: str = "item categories", ids: Sequence[str] | None = None) -> ItemCategories:
    """The tree and item paths of ``paths[r]`` for item ``item_index[r]`` (layout in the module docstring).

    Args:
      item_index: ``int`` [n] item vocabulary indices, in ``[0, num_items)``.
      paths: [n] category paths, components separated by ``separator``.
      num_items: I, the rows of ``nodes``; items without a row get the root alone.
      source: what the rows come from (a file), named in errors.
      ids: [n] the raw item id of each row, named in errors (default: the index).

    Raises:
      DataError: an index outside the vocabulary, or one item listed with two different paths.
    """
    import pandas as pd

    item_index = np.asarray(item_index, np.int64).reshape(-1)
    if len(item_index) != len(paths):
        raise ValueError(f"item categories: {len(item_index)} item indices for {len(paths)} paths")
    outside = item_index[(item_index < 0) | (item_index >= num_items)]
    if len(outside):
        raise DataError(source, f"item index {int(outside[0])} is outside the item vocabulary [0, {num_items})")
    parts = [_components(p, separator) for p in paths]
    rows = pd.DataFrame({"item": item_index, "path": [separator.join(c) for c in parts]})
    rows = rows.drop_duplicates()
    clash = rows["item"].duplicated(keep=False).to_numpy()
    if clash.any():
        first = rows[clash].iloc[:1].index[0]
        both = rows.loc[rows["item"] == rows.loc[first, "item"], "path"].tolist()
        name = ids[first] if ids is not None else int(rows.loc[first, "item"])
        raise DataError(source, f"item '{name}' is listed with different category paths ('{both[0]}' and "
                                f"'{both[1]}')")
    keep = rows.index.to_numpy()
    parts = [parts[r] for r in keep]
    deepest = max((len(c) for c in parts), default=0)
    prefixes = [[separator.join(c[:k + 1]) if k < len(c) else None for c in parts] for k in range(deepest)]
    named = sorted({(k, p) for k, level in enumerate(prefixes) for p in level if p is not None})
    index = {p: 2 + n for n, (_, p) in enumerate(named)}
    parent = np.zeros(2 + len(named), np.int32)
    parent[2:] = [index[p.rsplit(separator, 1)[0]] if k else ROOT for k, p in named]
    levels = np.zeros((len(keep), 1 + deepest), np.int32)
    levels[:, 0] = ROOT
    for k, level in enumerate(prefixes):
        levels[:, k + 1] = [index.get(p, 0) if p is not None else 0 for p in level]
    filled = np.maximum.accumulate(np.where(levels > 0, np.arange(1 + deepest), 0), axis=1)
    nodes = np.full((num_items, 1 + deepest), ROOT, np.int32)
    nodes[item_index[keep]] = np.take_along_axis(levels, filled, axis=1)
    return ItemCategories(nodes, (UNKNOWN_NAME, "", *(p for _, p in named)), parent)


def describe(categories: ItemCategories) -> dict:
    """Items with a path beyond the root, items without one, the deepest depth and the node count."""
    with_path = int((categories.nodes[:, -1] != ROOT).sum())
    return {"items_with_path": with_path, "items_without_path": int(len(categories.nodes) - with_path),
            "depth": categories.height - 1, "nodes": categories.num_nodes}


def from_frame(frame, data: Prepared, id_column: str = "item", path_column: str = "path", separator: str = "/",
               source: str = "item categories") -> tuple[ItemCategories, dict]:
    """The categories of a table of (item id, path) rows (``source`` names it in errors), and a report.

    Rows of ids outside ``data.item_vocab`` are counted (``unknown_items``) and skipped.
    """
    ids = frame[id_column].astype(str).to_numpy(object)
    index = data.item_vocab.lookup(ids)
    known = np.flatnonzero(index >= 0)
    paths = frame[path_column].to_numpy(object)
    categories = from_paths(index[known], paths[known].tolist(), data.num_items, separator, source, ids[known])
    report = {"source": source, "rows": len(ids), "unknown_items": int(len(ids) - len(known)), **describe(categories)}
    return categories, report


def read(path: str | os.PathLike, data: Prepared, id_column: str = "item", path_column: str = "path",
         separator: str = "/", fmt: str = "auto") -> tuple[ItemCategories, dict]:
    """The category table ``path`` (CSV / TSV / Parquet by extension under ``fmt = "auto"``), and a report:
    ``rows``, ``unknown_items`` (rows skipped), ``items_with_path``, ``items_without_path``, ``depth``, ``nodes``.

    Raises:
      DataError: the file is missing or unreadable, lacks the id or path column (naming it and its recipe
        key), or lists an item with two paths.
    """
    from tfgb.data.tables import read_table

    frame = read_table(path, fmt, "item category", [id_column, path_column],
                       ["data.item_category_id_column", "data.item_category_path_column"])
    return from_frame(frame, data, id_column, path_column, separator, str(path))


# -- the derived proxy tree --------------------------------------------------------------------------

def item_vectors(data: Prepared, dims: int = SVD_DIMS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(float64 [A, d] vectors, int64 [A] their items)`` of the A items with a training interaction.

    An item's row counts its training users: the initiator and participants of its deal groups and the
    users of its failed launches; counts become ``log(1 + count)``, rows are L2-normalised and reduced by
    a seeded truncated SVD to ``d = min(dims, A - 1, U - 1)`` dimensions; the SVD rows are L2-normalised
    again, so k-means on them clusters by direction (who buys the item), not by popularity.
    """
    import scipy.sparse as sp
    from sklearn.utils.extmath import randomized_svd

    train = data.train
    f_users, f_items, _ = data.launches("train")
    items = np.concatenate([train.item, np.repeat(train.item, train.sizes), f_items]).astype(np.int64)
    users = np.concatenate([train.initiator, train.participants, f_users]).astype(np.int64)
    counts = sp.csr_matrix((np.ones(len(items)), (items, users)), shape=(data.num_items, data.num_users))
    counts.sum_duplicates()
    active = np.flatnonzero(np.diff(counts.indptr) > 0)
    counts = counts[active]
    counts.data = np.log1p(counts.data)
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    counts = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ counts
    d = min(dims, len(active) - 1, data.num_users - 1)
    if d < 1:
        return np.zeros((len(active), 1)), active
    u, s, _ = randomized_svd(counts, d, n_iter=4, random_state=seed)
    vectors = u * s
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12), active


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """``int64`` [n] cluster of each row of ``x`` [n, d]: k-means++ seeding then Lloyd steps.

    Clusters are renumbered by size, largest first (ties: the cluster of the lower row first); a
    cluster that lost all its rows keeps its centre, so fewer than ``k`` labels may be used.
    """
    n = len(x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    gap = ((x - centres[0]) ** 2).sum(axis=1)
    for j in range(1, k):
        total = gap.sum()
        pick = rng.integers(n) if total <= 0 else min(int(np.searchsorted(np.cumsum(gap), rng.random() * total)), n - 1)
        centres[j] = x[pick]
        gap = np.minimum(gap, ((x - centres[j]) ** 2).sum(axis=1))
    squares = (x * x).sum(axis=1)
    label = np.full(n, -1)
    for _ in range(iterations):
        new = np.argmin(squares[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(axis=1)[None, :], axis=1)
        if np.array_equal(new, label):
            break
        label = new
        member = np.zeros((k, n))
        member[label, np.arange(n)] = 1.0
        size = member.sum(axis=1)
        centres = np.where(size[:, None] > 0, (member @ x) / np.maximum(size, 1)[:, None], centres)
    size = np.bincount(label, minlength=k)
    first = np.full(k, n)
    np.minimum.at(first, label, np.arange(n))
    rank = np.empty(k, np.int64)
    rank[np.lexsort((first, -size))] = np.arange(k)
    return rank[label]


def derive(data: Prepared, depth: int = 3, branching: int = 6, seed: int = 0) -> ItemCategories:
    """A proxy category tree from the training split only (module docstring); the same for the same seed.

    Args:
      depth: levels below the root at most (H = 1 + depth when any cluster splits that deep).
      branching: clusters per split; a cluster of fewer items is not split (its items' paths end there),
        nor is one whose items k-means cannot separate (one non-empty cluster).
      seed: the SVD's and every k-means split's seed.
    """
    if depth < 1 or branching < 2:
        raise ConfigError(f"the derived category tree needs data.category_depth >= 1 and "
                          f"data.category_branching >= 2 (got {depth} and {branching})")
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the same floating-point sums on every machine, and no thread contention (two BLAS
    # threads beside a busy core took 5-10x longer than one).
    with threadpool_limits(limits=1):
        vectors, items = item_vectors(data, SVD_DIMS, seed)
        label = np.full((len(items), depth), -1, np.int64)
        frontier = [np.arange(len(items))]
        for level in range(depth):
            below = []
            for n, members in enumerate(frontier):
                if len(members) < branching:
                    continue
                found = kmeans(vectors[members], branching, np.random.default_rng([seed, level, n]))
                if found.max() == 0:
                    continue
                label[members, level] = found
                below += [members[found == c] for c in range(int(found.max()) + 1)]
            frontier = below
    paths = ["/".join(f"c{c}" for c in row if c >= 0) for row in label.tolist()]
    return from_paths(items, paths, data.num_items, "/", "derived item categories")


# -- using the tree ----------------------------------------------------------------------------------

def leaves(categories: ItemCategories) -> np.ndarray:
    """``int32`` [I] the deepest node of every item's path (the root for an item without one)."""
    return categories.nodes[:, -1].astype(np.int32)


def known_nodes(categories: ItemCategories, item_counts: np.ndarray) -> np.ndarray:
    """``bool`` [N]: the nodes on the path of some item with ``item_counts > 0`` (training groups
    launched with each item, [I]); the root is always known, the reserved id 0 never."""
    counts = np.asarray(item_counts)
    if counts.shape != (len(categories.nodes),):
        raise ValueError(f"item_counts must be [{len(categories.nodes)}] (one count per item), got {counts.shape}")
    known = np.zeros(categories.num_nodes, bool)
    known[categories.nodes[counts > 0].ravel()] = True
    known[ROOT], known[UNKNOWN] = True, False
    return known


def fall_back(categories: ItemCategories, known: np.ndarray) -> np.ndarray:
    """``int32`` [I, H] the paths cut at their first unknown node: that node and every one below it are
    replaced by the deepest known ancestor (a node under an unknown one counts as unknown), so an item
    whose leaf never appeared in training gets the path of its deepest known ancestor."""
    nodes = categories.nodes
    ok = np.asarray(known, bool)[nodes]
    ok[:, 0] = True
    ok = np.logical_and.accumulate(ok, axis=1)
    last = ok.sum(axis=1) - 1
    return np.where(ok, nodes, nodes[np.arange(len(nodes)), last][:, None]).astype(np.int32)


def model_paths(categories: ItemCategories, item_counts: np.ndarray) -> np.ndarray:
    """``int32`` [I, H]: every item's path as a model reads it, each node no training group's item lies
    under (``item_counts`` [I] training groups per item) replaced by its deepest known ancestor."""
    return fall_back(categories, known_nodes(categories, item_counts)).astype(np.int32)


def leaf_counts(categories: ItemCategories, item_counts: np.ndarray, subtree: bool = False) -> np.ndarray:
    """[N] training groups per node (``item_counts`` [I] summed over the items whose leaf it is; with
    ``subtree``, over every item on whose path it lies). ``int64`` for integer counts, else ``float64``."""
    counts = np.asarray(item_counts)
    n = categories.num_nodes
    if subtree:
        nodes = categories.nodes
        distinct = np.ones(nodes.shape, bool)  # each node once per path (a short path repeats its leaf)
        distinct[:, 1:] = nodes[:, 1:] != nodes[:, :-1]
        weights = np.broadcast_to(counts[:, None], nodes.shape)[distinct]
        total = np.bincount(nodes[distinct], weights=weights, minlength=n)
    else:
        total = np.bincount(leaves(categories), weights=counts, minlength=n)
    return total.astype(np.int64) if np.issubdtype(counts.dtype, np.integer) else total


# -- the run dir, the recipe -------------------------------------------------------------------------

def save(directory: str | os.PathLike, categories: ItemCategories, report: dict | None = None) -> None:
    """``item_categories.npz`` (``nodes`` [I, H], ``parent`` [N]) and ``item_categories.json`` (the node
    names and the report) in ``directory``, each written to a temporary file and renamed into place."""
    os.makedirs(directory, exist_ok=True)
    npz = os.path.join(directory, "item_categories.npz")
    with open(npz + ".tmp", "wb") as fh:
        np.savez(fh, nodes=categories.nodes.astype(np.int32), parent=categories.parent.astype(np.int32))
    os.replace(npz + ".tmp", npz)
    path = os.path.join(directory, "item_categories.json")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({"names": list(categories.names), "report": report or {}}, fh)
    os.replace(path + ".tmp", path)


def load(directory: str | os.PathLike) -> tuple[ItemCategories, dict] | None:
    """What :func:`save` wrote into ``directory``, or None when it holds no item categories."""
    path = os.path.join(directory, "item_categories.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        saved = json.load(fh)
    with np.load(os.path.join(directory, "item_categories.npz")) as arrays:
        nodes, parent = arrays["nodes"].astype(np.int32), arrays["parent"].astype(np.int32)
    return ItemCategories(nodes, tuple(saved["names"]), parent), saved.get("report", {})


def for_recipe(config, data: Prepared, data_dir: str | None, needed: bool) -> tuple[ItemCategories, dict] | None:
    """The item categories a recipe asks for: ``data.item_categories`` (a file relative to ``data_dir``, or
    ``"synthetic"``: :func:`tfgb.data.synth.item_categories` of the synthetic data), else the derived tree
    (``data.category_depth`` / ``category_branching``, seeded by ``data.seed``) when ``needed``, else None."""
    d = config.data
    source = d.item_categories
    if source == "synthetic":
        from tfgb.data import synth

        if d.source != "synthetic":
            raise ConfigError("data.item_categories = 'synthetic' is the synthetic generator's tree: it needs "
                              "data.source = 'synthetic'")
        table = synth.item_categories(d.synth.users, d.synth.items, d.synth.seed, d.synth.leaf_items)
        return from_frame(table, data, "item", "path", "/", "synthetic item categories")
    if source:
        if data_dir is None and not os.path.isabs(source):
            raise ConfigError(f"data.item_categories = '{source}' is relative to --data-dir, which was not given")
        return read(os.path.join(data_dir or "", source), data, d.item_category_id_column,
                    d.item_category_path_column, d.category_separator)
    if needed:
        categories = derive(data, d.category_depth, d.category_branching, d.seed)
        return categories, {"source": "derived", "rows": 0, "unknown_items": 0, **describe(categories)}
    return None
