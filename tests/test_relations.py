"""Tests for tfgb.data.relations: the user-user views of TreeMS, derived from the training split or read."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
from support import hand_prepared

from tfgb import config as cfg
from tfgb.contract import UserRelations
from tfgb.data import relations
from tfgb.data.prepare import prepare
from tfgb.errors import DataError

IP, CO, LAUNCH = range(3)

# Training groups (initiator, item, participants); g3 repeats g0's (initiator, item) with another set.
TRAIN = [(0, 0, [1, 2]), (3, 0, [1]), (0, 1, [4]), (0, 0, [2])]
VALID = [(7, 0, [8, 9])]  # held out: none of users 7, 8, 9 may get an edge
FAILED = [(5, 0, 0), (1, 1, 0), (6, 0, 1), (9, 1, 2)]  # (user, item, split): 6 and 9 are held out


def edges(r: UserRelations) -> dict:
    weight = np.ones(len(r.src)) if r.weight is None else r.weight
    return {(int(v), int(s), int(d)): float(w) for v, s, d, w in zip(r.relation, r.src, r.dst, weight)}


def both(view: int, pairs: dict) -> dict:
    return {**{(view, a, b): w for (a, b), w in pairs.items()}, **{(view, b, a): w for (a, b), w in pairs.items()}}


def test_derive_gives_exactly_the_expected_edges_per_view():
    data = hand_prepared(TRAIN, valid=VALID, failed=FAILED, num_users=10, num_items=2)
    found = relations.derive(data)
    assert found.names == relations.VIEWS and found.weight.dtype == np.float32
    assert found.src.dtype == np.int32 and found.dst.dtype == np.int32 and found.relation.dtype == np.int8
    expected = {**both(IP, {(0, 1): 1, (0, 2): 2, (3, 1): 1, (0, 4): 1}),  # (0, 2): groups g0 and g3
                **both(CO, {(1, 2): 1}),
                **both(LAUNCH, {(0, 3): 1, (0, 5): 1, (3, 5): 1, (0, 1): 1})}  # item 0: 0, 3, 5; item 1: 0, 1
    assert edges(found) == expected
    keys = (found.relation.astype(np.int64) * 10 + found.src) * 10 + found.dst
    assert np.all(np.diff(keys) > 0)  # sorted by view, src, dst, no duplicate


def test_masks_drop_a_folds_groups_and_launches():
    data = hand_prepared(TRAIN, valid=VALID, failed=FAILED, num_users=10, num_items=2)
    without = relations.derive(data, groups_mask=np.array([False, True, True, True]),
                               launches_mask=np.array([False, True]))
    expected = {**both(IP, {(0, 2): 1, (3, 1): 1, (0, 4): 1}),
                **both(LAUNCH, {(0, 3): 1, (0, 1): 1})}  # no co-participation left, user 5 launched nothing
    assert edges(without) == expected


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    config = cfg.Config()
    config.data.synth = cfg.SynthConfig(users=150, items=40, groups=500, seed=2)
    config.data.negatives = 9
    config.data.cache_dir = str(tmp_path_factory.mktemp("relations") / "cache")
    return config, prepare(config)


def undirected(groups) -> set:
    """The (initiator, participant) pairs of ``groups``, both orders."""
    pairs = set(zip(np.repeat(groups.initiator, groups.sizes).tolist(), groups.participants.tolist()))
    return pairs | {(b, a) for a, b in pairs}


def test_fold_relations_lack_the_folds_own_groups(synthetic):
    _, data = synthetic
    folds = relations.fold_relations(data, 3, seed=1)
    group_fold, launch_fold = data.fold_of_groups(3, 1), data.fold_of_launches(3, 1)
    full = edges(relations.derive(data, seed=1))
    for f, r in enumerate(folds):
        assert edges(r) == edges(relations.derive(data, group_fold != f, launch_fold != f, seed=1))
        inside = data.train.take(np.flatnonzero(group_fold == f))
        outside = data.train.take(np.flatnonzero(group_fold != f))
        only_here = undirected(inside) - undirected(outside)  # met only in fold f's groups
        assert only_here and not any((IP, a, b) in edges(r) for a, b in only_here)
        assert all((IP, a, b) in full for a, b in only_here)


def many_launchers(n: int):
    """One item launched (failed) by users 0 .. n - 1, one more item by user 0 alone."""
    return hand_prepared([(0, 1, [1])], failed=[(u, 0, 0) for u in range(n)], num_users=n, num_items=2)


@pytest.mark.parametrize("cap", [1, 4, 5, 29, 40])
def test_co_launch_links_each_launcher_to_at_most_cap_others(cap):
    data = many_launchers(30)
    r = relations.derive(data, co_launch_cap=cap, seed=3)
    view = r.relation == LAUNCH
    pairs = set(zip(r.src[view].tolist(), r.dst[view].tolist()))
    assert pairs == {(b, a) for a, b in pairs} and all(a != b for a, b in pairs)  # symmetric, no self edge
    degree = np.bincount(r.src[view], minlength=30)
    assert degree.max() == min(cap, 29) and (degree == min(cap, 29)).all()  # 30 launchers: even, all matched
    assert set(r.weight[view].tolist()) == {1.0}
    again = relations.derive(data, co_launch_cap=cap, seed=3)
    assert edges(again) == edges(r)
    if cap < 28:
        assert edges(relations.derive(data, co_launch_cap=cap, seed=4)) != edges(r)


def test_an_odd_circle_leaves_one_launcher_a_link_short():
    r = relations.derive(many_launchers(31), co_launch_cap=5, seed=0)
    degree = np.bincount(r.src[r.relation == LAUNCH], minlength=31)
    assert sorted(degree.tolist()) == [4] + [5] * 30


def test_read_merges_reports_and_names_the_missing_column(tmp_path):
    data = hand_prepared(TRAIN, valid=VALID, failed=FAILED, num_users=10, num_items=2)
    path = tmp_path / "relations.csv"
    pd.DataFrame({"a": ["u00", "u01", "u00", "u00", "u03", "u02"], "b": ["u01", "u00", "u02", "nobody", "u03", "u06"],
                  "kind": ["friend", "friend", "pay", "friend", "friend", "pay"]}).to_csv(path, index=False)
    found, report = relations.read(path, data, columns=("a", "b", "kind"))
    assert found.names == ("friend", "pay")
    assert edges(found) == {**both(0, {(0, 1): 2}), **both(1, {(0, 2): 1, (2, 6): 1})}  # (0, 1) listed both ways
    assert report["rows"] == 6 and report["unknown_users"] == 1 and report["self_loops"] == 1
    assert report["views"] == {"friend": 2, "pay": 4}
    merged = relations.merge(relations.derive(data), found)
    assert merged.names == (*relations.VIEWS, "friend", "pay")
    assert edges(merged) == {**edges(relations.derive(data)), **{(v + 3, s, d): w for (v, s, d), w in edges(found).items()}}
    with pytest.raises(DataError) as err:
        relations.read(path, data)  # the default columns src, dst, relation
    assert str(path) in str(err.value) and "'src'" in str(err.value) and "data.user_relation_columns" in str(err.value)
    clash = dataclasses.replace(found, names=("co_launch", "pay"))
    with pytest.raises(DataError, match="relation 'co_launch' is already a view"):
        relations.merge(relations.derive(data), clash, str(path))


def test_for_recipe_appends_the_file_views(tmp_path):
    data = hand_prepared(TRAIN, valid=VALID, failed=FAILED, num_users=10, num_items=2)
    config = cfg.Config()
    derived, report = relations.for_recipe(config, data, None)
    assert derived.names == relations.VIEWS and "file" not in report
    pd.DataFrame({"src": ["u04"], "dst": ["u05"], "relation": ["friend"]}).to_csv(tmp_path / "r.tsv", sep="\t",
                                                                                  index=False)
    config.data.user_relations = "r.tsv"
    found, report = relations.for_recipe(config, data, str(tmp_path))
    assert found.names == (*relations.VIEWS, "friend") and report["file"]["views"] == {"friend": 2}
    assert report["views"]["friend"] == 2 and (3, 4, 5) in edges(found) and (3, 5, 4) in edges(found)


def neighbour_sets(r: UserRelations, views: int, users: int) -> list[list[set]]:
    out = [[set() for _ in range(users)] for _ in range(views)]
    for v, s, d in zip(r.relation.tolist(), r.src.tolist(), r.dst.tolist()):
        out[v][s].add(d)
    return out


def test_sample_neighbours_is_a_seeded_subset_without_replacement(synthetic):
    _, data = synthetic
    r = relations.derive(data, seed=0)
    k, users = 4, data.num_users
    sample = relations.sample_neighbours(r, users, k, seed=7)
    assert sample.shape == (3, users, k) and sample.dtype == np.int32
    truth = neighbour_sets(r, 3, users)
    larger = 0
    for v in range(3):
        for u in range(users):
            row = sample[v, u]
            picked = row[row >= 0].tolist()
            assert (row[len(picked):] == -1).all()  # padding at the end only
            assert len(set(picked)) == len(picked) == min(len(truth[v][u]), k)
            assert set(picked) <= truth[v][u]
            larger += len(truth[v][u]) > k
    assert larger > 20  # the sample did have to choose
    assert np.array_equal(relations.sample_neighbours(r, users, k, seed=7), sample)
    assert not np.array_equal(relations.sample_neighbours(r, users, k, seed=8), sample)
    # The sample depends on the edges, not on their order (nor on a repeated edge).
    order = np.random.default_rng(0).permutation(len(r.src))
    order = np.r_[order, order[:50]]
    shuffled = UserRelations(r.src[order], r.dst[order], r.relation[order], r.names, r.weight[order])
    assert np.array_equal(relations.sample_neighbours(shuffled, users, k, seed=7), sample)
    # Every neighbour of a low-degree user is taken.
    full = relations.sample_neighbours(r, users, 1000, seed=7)
    assert all(set(full[v, u][full[v, u] >= 0].tolist()) == truth[v][u] for v in range(3) for u in range(users))
