"""Tests for tfgb.data.candidates: the saved evaluation lists."""
import numpy as np
import pytest

from tfgb.data.candidates import Candidates, build_candidates
from tfgb.data.groups import DealGroups
from tfgb.data.negatives import interactions
from tfgb.data.split import split_groups
from tfgb.data.synth import generate
from tfgb.data.vocab import encode
from tfgb.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    groups, users, items, failed_u, failed_i, _ = encode(generate(users=500, items=150, groups=4000, seed=2))
    train, valid, test = (groups.take(i) for i in split_groups(groups, seed=3))
    everything = interactions(train, valid, test, failed_users=failed_u, failed_items=failed_i)
    # Independent truth: every (user, item) in any split, any role, or a failed launch.
    _, i, p, _ = groups.triples()
    truth = set(zip(groups.initiator.tolist(), groups.item.tolist(), strict=True))
    truth |= set(zip(p.tolist(), i.tolist(), strict=True)) | set(zip(failed_u.tolist(), failed_i.tolist(), strict=True))
    lists = build_candidates(test, everything, len(users), len(items), negatives=99, seed=11)
    return test, everything, truth, lists, len(users), len(items)


def random_groups(n, users, items, seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return DealGroups(rng.integers(0, users, n), rng.integers(0, items, n), offsets,
                      rng.integers(0, users, offsets[-1]), users, items)


def test_shapes_and_types(data):
    test, _, _, lists, _, _ = data
    n = len(test)
    assert len(lists) == n and lists.negatives == 99
    assert lists.items.shape == lists.participants.shape == (n, 100)
    assert lists.item_negatives.dtype == lists.participant_negatives.dtype == np.int64
    rows = np.arange(n)
    assert np.array_equal(lists.items[rows, lists.item_label], test.item)
    assert np.array_equal(lists.participants[rows, lists.participant_label], lists.participant)
    assert np.array_equal(lists.initiator, test.initiator)


def test_item_negatives_were_never_interacted_with_in_any_split(data):
    _, _, truth, lists, _, _ = data
    for u, row in zip(lists.initiator.tolist(), lists.item_negatives.tolist(), strict=True):
        assert not any((u, i) in truth for i in row)
        assert len(set(row)) == len(row)


def test_participants_positive_is_a_member_negatives_are_not(data):
    test, _, _, lists, _, _ = data
    for g in range(len(test)):
        members = set(test.participants[test.offsets[g]:test.offsets[g + 1]].tolist())
        assert int(lists.participant[g]) in members
        negatives = lists.participant_negatives[g].tolist()
        assert not members & set(negatives) and int(test.initiator[g]) not in negatives
        assert len(set(negatives)) == len(negatives)


def test_positive_position_is_uniform_over_all_slots():
    table = random_groups(5000, users=3000, items=800, seed=0)
    lists = build_candidates(table, interactions(table), 3000, 800, negatives=99, seed=5)
    for label in (lists.item_label, lists.participant_label):
        counts = np.bincount(label, minlength=100)
        assert counts.size == 100 and counts.min() > 0  # every slot is hit
        chi2 = ((counts - 50.0) ** 2 / 50.0).sum()  # 99 degrees of freedom: mean 99, sd 14
        assert chi2 < 99 + 5 * 14
    counts10 = np.bincount(lists.task_a(10)[1], minlength=10)
    assert counts10.min() > 400


def test_at_10_is_the_positive_plus_the_first_9_negatives(data):
    _, _, _, lists, _, _ = data
    for task, negatives, positive in (("a", lists.item_negatives, lists.item),
                                      ("b", lists.participant_negatives, lists.participant)):
        short, label10 = getattr(lists, f"task_{task}")(10)
        full, label100 = getattr(lists, f"task_{task}")(100)
        rows = np.arange(len(lists))
        assert np.array_equal(short[rows, label10], positive) and np.array_equal(full[rows, label100], positive)
        keep = np.ones(short.shape, dtype=bool)
        keep[rows, label10] = False
        assert np.array_equal(short[keep].reshape(-1, 9), negatives[:, :9])  # sampling order kept
        for r in range(len(lists)):
            assert set(short[r].tolist()) <= set(full[r].tolist())


def test_same_seed_same_lists_new_seed_new_lists(data):
    test, everything, _, lists, users, items = data
    again = build_candidates(test, everything, users, items, negatives=99, seed=11)
    other = build_candidates(test, everything, users, items, negatives=99, seed=12)
    for name in ("item_negatives", "participant_negatives", "participant", "item_slot"):
        assert np.array_equal(getattr(lists, name), getattr(again, name))
    assert not np.array_equal(lists.item_negatives, other.item_negatives)
    assert not np.array_equal(lists.item_label, other.item_label)


def test_save_load_and_take(data, tmp_path):
    _, _, _, lists, _, _ = data
    lists.save(tmp_path / "lists.npz")
    loaded = Candidates.load(tmp_path / "lists.npz")
    assert np.array_equal(loaded.items, lists.items) and np.array_equal(loaded.participant_label,
                                                                        lists.participant_label)
    part = lists.take(np.array([3, 1]))
    assert np.array_equal(part.items, lists.items[[3, 1]])
    with pytest.raises(ValueError):
        lists.task_a(101)


def test_too_many_negatives_for_tiny_data_is_a_config_error():
    table = random_groups(20, users=50, items=8, seed=1)
    with pytest.raises(ConfigError, match="data.negatives"):
        build_candidates(table, interactions(table), 50, 8, negatives=9, seed=0)
    table = random_groups(20, users=6, items=500, seed=1)
    with pytest.raises(ConfigError, match="data.negatives"):
        build_candidates(table, interactions(table), 6, 500, negatives=5, seed=0)
