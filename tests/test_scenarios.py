"""Tests for tfgb.data.scenarios (item category paths, the scenario tree of TreeMS) and the planted tree of the
synthetic generator (tfgb.data.synth, step 7; tfgb.data.synth_tree)."""
import dataclasses
import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from support import hand_prepared

from tfgb import config as cfg
from tfgb.contract import ItemCategories
from tfgb.data import scenarios, synth
from tfgb.data.prepare import cache_key, prepare
from tfgb.errors import ConfigError, DataError


def node(categories: ItemCategories, name: str) -> int:
    return categories.names.index(name)


# -- the layout ----------------------------------------------------------------------------------

PATHS = {0: "baby/feeding/bottles", 1: "baby", 2: "toys/baby", 4: " baby//feeding/ "}


def test_from_paths_layout_root_padding_and_names_by_prefix():
    c = scenarios.from_paths(np.array(list(PATHS)), list(PATHS.values()), num_items=5)
    assert c.names[:2] == ("<unknown>", "") and c.parent[0] == 0 and c.parent[1] == 0
    assert c.nodes.dtype == np.int32 and c.parent.dtype == np.int32 and c.nodes.shape == (5, 4)
    baby, feeding, bottles = node(c, "baby"), node(c, "baby/feeding"), node(c, "baby/feeding/bottles")
    assert c.nodes[0].tolist() == [1, baby, feeding, bottles]
    assert c.nodes[1].tolist() == [1, baby, baby, baby]  # padded by repeating the deepest node
    assert c.nodes[3].tolist() == [1, 1, 1, 1]  # no path: the root alone
    assert c.nodes[4].tolist() == [1, baby, feeding, feeding]  # empty components and blanks dropped
    toys_baby = node(c, "toys/baby")
    assert toys_baby != baby and c.parent[toys_baby] == node(c, "toys") and c.parent[baby] == 1
    assert c.parent[bottles] == feeding and c.parent[feeding] == baby
    assert len(c.names) == 7 and scenarios.leaves(c).tolist() == [bottles, baby, toys_baby, 1, feeding]
    # The ids do not depend on the order of the rows.
    again = scenarios.from_paths(np.array(list(PATHS))[::-1], list(PATHS.values())[::-1], num_items=5)
    assert again.names == c.names and np.array_equal(again.nodes, c.nodes) and np.array_equal(again.parent, c.parent)


def test_an_item_with_two_paths_is_an_error_and_a_repeated_row_is_not():
    same = scenarios.from_paths(np.array([1, 1]), ["a/b", "a//b"], num_items=2)
    assert same.nodes[1].tolist() == [1, node(same, "a"), node(same, "a/b")]
    with pytest.raises(DataError, match="item 'i01' is listed with different category paths"):
        scenarios.from_paths(np.array([0, 1, 1]), ["a", "a/b", "a/c"], 2, ids=["i00", "i01", "i01"])


def test_read_counts_unknown_items_and_names_a_missing_column(tmp_path):
    data = hand_prepared([(0, 0, [1])], num_items=4)
    path = tmp_path / "categories.tsv"
    pd.DataFrame({"sku": ["i00", "i02", "zzz", "i03"], "cat": ["a>b", "a>c>d", "x", ""]}).to_csv(
        path, sep="\t", index=False)
    c, report = scenarios.read(path, data, id_column="sku", path_column="cat", separator=">")
    assert report["rows"] == 4 and report["unknown_items"] == 1
    assert report["items_with_path"] == 2 and report["items_without_path"] == 2 and report["depth"] == 3
    assert c.nodes.shape == (4, 4) and c.names[node(c, "a>c>d")] == "a>c>d"
    assert c.nodes[3].tolist() == [1, 1, 1, 1]  # an empty path: the root alone
    with pytest.raises(DataError) as err:
        scenarios.read(path, data)  # the default columns item / path
    assert str(path) in str(err.value) and "'item'" in str(err.value)
    assert "data.item_category_id_column" in str(err.value)
    with pytest.raises(DataError, match="data.item_category_path_column"):
        scenarios.read(path, data, id_column="sku")
    with pytest.raises(DataError, match="not found"):
        scenarios.read(tmp_path / "missing.csv", data)


# -- the derived tree ------------------------------------------------------------------------------

def two_communities(extra_valid=()):
    """Items 0-5 launched and joined by users 0-9, items 6-11 by users 10-19; item 12 only in the test split."""
    rng = np.random.default_rng(0)
    train = []
    for item in range(12):
        users = np.arange(10) + (10 if item >= 6 else 0)
        for _ in range(6):
            a, b, c = rng.choice(users, 3, replace=False)
            train.append((int(a), item, [int(b), int(c)]))
    return hand_prepared(train, valid=[(0, 3, [1]), *extra_valid], test=[(15, 12, [16])],
                         failed=[(2, 4, 0), (12, 7, 0), (0, 12, 1)], num_users=20, num_items=13)


def test_derive_finds_the_planted_split_and_leaves_unseen_items_at_the_root():
    data = two_communities()
    c = scenarios.derive(data, depth=1, branching=2, seed=0)
    top = c.nodes[:, 1]
    assert len(set(top[:6])) == 1 and len(set(top[6:12])) == 1 and top[0] != top[6]
    assert {c.names[t] for t in top[:12]} == {"c0", "c1"}
    assert c.nodes[12].tolist() == [1, 1]  # no training interaction (test split only)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    config = cfg.Config()
    config.data.synth = cfg.SynthConfig(users=300, items=120, groups=1200, seed=4, tree=True)
    config.data.negatives = 9
    config.data.cache_dir = str(tmp_path_factory.mktemp("scenarios") / "cache")
    return config, prepare(config)


def test_derive_is_seeded_respects_the_depth_and_reads_only_the_training_split(synthetic):
    _, data = synthetic
    a, b = scenarios.derive(data, 2, 4, seed=3), scenarios.derive(data, 2, 4, seed=3)
    assert a.names == b.names and np.array_equal(a.nodes, b.nodes)
    assert not np.array_equal(scenarios.derive(data, 2, 4, seed=4).nodes, a.nodes)
    assert a.height == 3 and all(len(n.split("/")) <= 2 for n in a.names[2:])
    children = np.bincount(a.parent[2:], minlength=a.num_nodes)
    assert children.max() <= 4 and children[1] == 4
    # A path that stops above the deepest level stops at a cluster of fewer than `branching` items.
    leaf = scenarios.leaves(a)
    depth_of = np.array([0, 0] + [len(n.split("/")) for n in a.names[2:]])
    short = np.unique(leaf[(depth_of[leaf] == 1)])
    assert all((leaf == s).sum() < 4 for s in short)
    # Another valid / test split, and other held-out failed launches: the same tree.
    moved = dataclasses.replace(
        data, valid=data.valid.take(np.arange(len(data.valid))[::-1][: len(data.valid) // 2]),
        test=dataclasses.replace(data.test, item=(data.test.item + 1) % data.num_items),
        failed_split=np.where(data.failed_split == 1, 2, data.failed_split).astype(np.int8))
    again = scenarios.derive(moved, 2, 4, seed=3)
    assert again.names == a.names and np.array_equal(again.nodes, a.nodes)
    # ... while a training group more does change it.
    more = dataclasses.replace(data, train=data.train.take(np.arange(len(data.train) // 2)))
    assert not np.array_equal(scenarios.derive(more, 2, 4, seed=3).nodes, a.nodes)


def test_derive_ignores_held_out_groups_of_a_hand_built_split():
    base = scenarios.derive(two_communities(), 2, 2, seed=1)
    other = scenarios.derive(two_communities(extra_valid=[(3, 12, [11]), (14, 2, [4, 5])]), 2, 2, seed=1)
    assert base.names == other.names and np.array_equal(base.nodes, other.nodes)


# -- using the tree ------------------------------------------------------------------------------

def test_an_unseen_leaf_falls_back_to_its_deepest_known_ancestor():
    c = scenarios.from_paths(np.arange(4), ["a/x", "a/y", "b/z", "a/x/deep"], num_items=5)
    a, ax, ay, deep = (node(c, n) for n in ("a", "a/x", "a/y", "a/x/deep"))
    known = scenarios.known_nodes(c, np.array([3, 0, 0, 0, 7]))  # item 4 has no path: the root only
    assert known.tolist() == [n in ("", "a", "a/x") for n in c.names]
    paths = scenarios.fall_back(c, known)
    assert paths.dtype == np.int32
    assert paths.tolist() == [[1, a, ax, ax], [1, a, a, a], [1, 1, 1, 1], [1, a, ax, ax], [1, 1, 1, 1]]
    assert np.array_equal(scenarios.fall_back(c, np.ones(c.num_nodes, bool)), c.nodes)
    assert scenarios.leaves(c).tolist() == [ax, ay, node(c, "b/z"), deep, 1]
    counts = np.array([3, 1, 2, 4, 5])
    per_leaf = scenarios.leaf_counts(c, counts)
    assert per_leaf.dtype == np.int64 and per_leaf[[ax, ay, deep, 1]].tolist() == [3, 1, 4, 5]
    assert per_leaf.sum() == counts.sum() and per_leaf[a] == 0
    subtree = scenarios.leaf_counts(c, counts, subtree=True)
    assert subtree[[1, a, ax, node(c, "b")]].tolist() == [15, 8, 7, 2]


def test_save_and_load_round_trip(tmp_path):
    c = scenarios.from_paths(np.array(list(PATHS)), list(PATHS.values()), num_items=5)
    assert scenarios.load(tmp_path / "run") is None
    scenarios.save(tmp_path / "run", c, {"source": "x.csv", "rows": 4})
    loaded, report = scenarios.load(tmp_path / "run")
    assert loaded.names == c.names and np.array_equal(loaded.nodes, c.nodes) and np.array_equal(loaded.parent, c.parent)
    assert loaded.nodes.dtype == np.int32 and report == {"source": "x.csv", "rows": 4}
    assert sorted(os.listdir(tmp_path / "run")) == ["item_categories.json", "item_categories.npz"]


# -- the recipe ----------------------------------------------------------------------------------

def test_for_recipe_file_synthetic_derived_or_none(synthetic, tmp_path):
    config, data = synthetic
    config = dataclasses.replace(config, data=dataclasses.replace(config.data))
    assert scenarios.for_recipe(config, data, None, needed=False) is None
    derived, report = scenarios.for_recipe(config, data, None, needed=True)
    assert report["source"] == "derived" and derived.nodes.shape[0] == data.num_items
    config.data.item_categories = "synthetic"
    planted, report = scenarios.for_recipe(config, data, None, needed=False)
    table = synth.item_categories(300, 120, 4)
    assert report["unknown_items"] == 0 and report["items_with_path"] == data.num_items and report["depth"] == 3
    first = int(data.item_vocab.ids[0])
    assert planted.names[planted.nodes[0, -1]] == table.path[first]
    table.to_csv(tmp_path / "tree.csv", index=False)
    config.data.item_categories = "tree.csv"
    from_file, _ = scenarios.for_recipe(config, data, str(tmp_path), needed=False)
    assert from_file.names == planted.names and np.array_equal(from_file.nodes, planted.nodes)
    with pytest.raises(ConfigError, match="--data-dir"):
        scenarios.for_recipe(config, data, None, needed=False)
    config.data.item_categories, config.data.source = "synthetic", "files"
    with pytest.raises(ConfigError, match="data.source = 'synthetic'"):
        scenarios.for_recipe(config, data, None, needed=False)


def test_side_table_settings_are_checked_and_leave_the_cache_key():
    config = cfg.Config()
    key = cache_key(config)
    for name, value in (("item_categories", "c.csv"), ("category_depth", 5), ("category_branching", 3),
                        ("category_separator", ">"), ("user_relations", "r.csv"),
                        ("user_relation_columns", ["a", "b", "c"]), ("item_category_path_column", "p")):
        changed = dataclasses.replace(config, data=dataclasses.replace(config.data, **{name: value}))
        assert cache_key(changed) == key, name
    assert cache_key(dataclasses.replace(config, data=dataclasses.replace(
        config.data, synth=dataclasses.replace(config.data.synth, tree=True)))) != key
    for setting, message in (("data.category_branching=1", "category_branching"),
                             ("data.category_depth=0", "category_depth"),
                             ('data.user_relation_columns=["a", "b"]', "user_relation_columns")):
        with pytest.raises(ConfigError, match=message):
            cfg.load(None, [setting])


# -- the planted tree of the synthetic generator ---------------------------------------------------

def digest(raw) -> str:
    h = hashlib.sha256()
    for a in (raw.initiator, raw.item, raw.offsets, raw.participants, raw.failed_initiator, raw.failed_item,
              raw.failed_behavior):
        h.update("|".join(map(str, a.tolist())).encode() + b"#")
    return h.hexdigest()


def test_without_a_tree_the_data_is_bit_identical_to_before():
    # recorded from generate(users=300, items=60, groups=1500, seed=1) before the tree existed
    assert digest(synth.generate(users=300, items=60, groups=1500, seed=1)) == \
        "10a42d88291484411cafedd1f5889489efe1acc93604819facd426c0adfe84df"
    assert digest(synth.generate(users=300, items=60, groups=1500, seed=1, tree=False)) == \
        digest(synth.generate(users=300, items=60, groups=1500, seed=1))
    assert digest(synth.generate(users=300, items=60, groups=1500, seed=1, tree=True)) != \
        digest(synth.generate(users=300, items=60, groups=1500, seed=1))
    assert synth.world(300, 60, 1).branch is None


@pytest.fixture(scope="module")
def planted():
    return synth.generate(users=2000, items=400, groups=4000, seed=5, tree=True), synth.world(2000, 400, 5, tree=True)


def test_the_top_branch_decides_who_joins(planted):
    raw, state = planted
    group = np.repeat(np.arange(len(raw)), np.diff(raw.offsets))
    initiator, item = raw.initiator.astype(int)[group], raw.item.astype(int)[group]
    participant = raw.participants.astype(int)
    friend = (state.friends[initiator] == participant[:, None]).any(axis=1)
    branch = state.branch[item]
    share = [friend[branch == b].mean() for b in range(3)]
    assert min((branch == b).sum() for b in range(3)) > 300
    assert share[0] > 0.7 and share[2] < 0.1 and share[1] < 0.3
    # taste branch: participants share the item's taste more than the crowd's do
    affinity = np.einsum("nd,nd->n", state.user_taste[participant], state.item_taste[item])
    assert affinity[branch == 1].mean() > affinity[branch == 2].mean() + 0.3


def test_leaf_sizes_are_long_tailed_and_the_table_matches_the_world(planted):
    _, state = planted
    table = synth.item_categories(2000, 400, 5)
    assert list(table.columns) == ["item", "path"] and len(table) == 400
    parts = table.path.str.split("/", expand=True)
    assert (parts[0] == "b" + pd.Series(state.branch).astype(str)).all()
    sizes = np.sort(parts[2].value_counts().to_numpy())[::-1]
    assert len(sizes) >= 40 and (sizes <= 3).sum() >= len(sizes) // 4 and sizes[0] >= 5 * np.median(sizes)
    assert parts.groupby(2)[1].nunique().max() == 1  # a leaf sits under one mid node
    assert parts.groupby([0, 1]).ngroups == 9


def test_one_item_per_leaf_makes_the_leaves_follow_item_popularity_and_keys_the_cache():
    table = synth.item_categories(2000, 400, 5, leaf_items=1)
    parts = table.path.str.split("/", expand=True)
    assert parts[2].nunique() == 400  # every item its own leaf
    assert (parts[0] == synth.item_categories(2000, 400, 5).path.str.split("/", expand=True)[0]).mean() < 1  # redrawn
    raw = synth.generate(users=2000, items=400, groups=4000, seed=5, tree=True, leaf_items=1)
    def per_leaf(leaf_items):  # training-size groups of every leaf
        leaf = synth.item_categories(2000, 400, 5, leaf_items).path.str.split("/").str[2].to_numpy()
        return pd.Series(leaf[raw.item.astype(int)]).value_counts().reindex(np.unique(leaf), fill_value=0)

    one, eight = per_leaf(1), per_leaf(8)
    assert (one <= 2).sum() >= 80 and one.max() >= 20 * one.median()  # a sparse tail: 100 leaves of <= 2 groups
    assert (eight <= 2).sum() <= 5 and eight.median() >= 3 * one.median()
    on = cfg.Config()
    on.data.synth.tree = True
    single = dataclasses.replace(on, data=dataclasses.replace(on.data, synth=dataclasses.replace(on.data.synth,
                                                                                                  leaf_items=1)))
    assert cache_key(single) != cache_key(on)
    assert cache_key(cfg.Config()) == cache_key(dataclasses.replace(cfg.Config(), data=dataclasses.replace(
        cfg.Config().data, synth=dataclasses.replace(cfg.Config().data.synth, leaf_items=1))))  # no tree: ignored
    with pytest.raises(ConfigError, match="leaf_items"):
        synth.generate(users=50, items=20, groups=40, tree=True, leaf_items=0)
