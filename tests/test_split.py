"""Tests for tfgb.data.split: the seeded train/valid/test split with cold-start moves."""
import numpy as np
import pytest

from tfgb.data.groups import DealGroups
from tfgb.data.split import planned_sizes, split_groups
from tfgb.data.synth import generate
from tfgb.data.vocab import encode


@pytest.fixture(scope="module")
def groups():
    return encode(generate(users=400, items=80, groups=3000, seed=5))[0]


def test_partition_sorted_disjoint_and_complete(groups):
    train, valid, test = split_groups(groups, (0.8, 0.1, 0.1), seed=1)
    everything = np.concatenate([train, valid, test])
    assert np.array_equal(np.sort(everything), np.arange(len(groups)))
    for part in (train, valid, test):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    # Close to 8:1:1; only cold-start groups leave valid/test.
    _, n_valid, n_test = planned_sizes(len(groups), (0.8, 0.1, 0.1))
    assert 0.8 * n_valid <= len(valid) <= n_valid and 0.8 * n_test <= len(test) <= n_test


def test_same_seed_same_split_new_seed_new_split(groups):
    a, b, c = split_groups(groups, seed=3), split_groups(groups, seed=3), split_groups(groups, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_no_cold_initiator_or_item_in_valid_or_test(groups):
    train, valid, test = split_groups(groups, seed=7)
    table = groups.take(train)
    users = set(table.initiator.tolist()) | set(table.participants.tolist())
    items = set(table.item.tolist())
    for part in (valid, test):
        assert set(groups.initiator[part].tolist()) <= users
        assert set(groups.item[part].tolist()) <= items


def test_cold_groups_go_back_to_training_warm_participants_not_required():
    # Item 1 has one group only; user 9 only ever participates in a group of a warm (u, i).
    offsets = np.arange(0, 41, 2, dtype=np.int64)  # 20 groups of two participants
    initiator = np.array([0, 1, 2, 3] * 5, dtype=np.int64)
    item = np.array([0] * 19 + [1], dtype=np.int64)
    participants = np.tile(np.array([4, 5], dtype=np.int64), 20)
    participants[-4] = 9  # group 18: (u 2, item 0, participants 9 and 5)
    table = DealGroups(initiator, item, offsets, participants, num_users=10, num_items=2)
    held_out_with_cold_participant = 0
    for seed in range(20):
        train, valid, test = split_groups(table, (0.5, 0.25, 0.25), seed=seed)
        assert 19 in train and 19 not in valid and 19 not in test
        held_out_with_cold_participant += 18 in valid or 18 in test
    assert held_out_with_cold_participant > 0


def test_planned_sizes():
    assert planned_sizes(10, (8, 1, 1)) == (8, 1, 1)
    assert planned_sizes(7, (1, 0, 0)) == (7, 0, 0)
    assert sum(planned_sizes(12345, (0.7, 0.2, 0.1))) == 12345
    with pytest.raises(ValueError):
        planned_sizes(10, (1, 1))
