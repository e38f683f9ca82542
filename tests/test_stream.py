"""Tests for tfgb.data.stream: training batches with negatives."""
import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb import contract
from tfgb.data.groups import DealGroups
from tfgb.data.negatives import interactions
from tfgb.data.split import split_groups
from tfgb.data.stream import TRAINING_KEYS, TrainingStream
from tfgb.data.synth import generate
from tfgb.data.vocab import encode
from tfgb.errors import ConfigError

BATCH, AUX = 64, 5


@pytest.fixture(scope="module")
def data():
    groups, users, items, failed_u, failed_i, _ = encode(generate(users=150, items=40, groups=600, seed=8))
    train_idx, _, _ = split_groups(groups, seed=2)
    train = groups.take(train_idx)
    seen = interactions(train, failed_users=failed_u, failed_items=failed_i)
    stream = TrainingStream(train, seen, len(users), len(items), BATCH, AUX, seed=3)
    # Independent truth for the checks: training (user, item) pairs in every role + failed launches.
    _, i, p, _ = train.triples()
    truth = set(zip(train.initiator.tolist(), train.item.tolist(), strict=True))
    truth |= set(zip(p.tolist(), i.tolist(), strict=True)) | set(zip(failed_u.tolist(), failed_i.tolist(), strict=True))
    members = [set(train.participants[train.offsets[g]:train.offsets[g + 1]].tolist()) | {int(train.initiator[g])}
               for g in range(len(train))]
    return train, stream, truth, members


def epoch_arrays(stream, epoch, **kwargs):
    batches = list(stream.dataset(epoch, **kwargs).as_numpy_iterator())
    return batches, {k: np.concatenate([b[k] for b in batches]) for k in TRAINING_KEYS}


def test_batches_have_the_documented_keys_shapes_and_dtypes(data):
    train, stream, _, _ = data
    batches, _ = epoch_arrays(stream, 0)
    assert len(batches) == stream.num_batches == -(-stream.num_triples // BATCH)
    assert stream.num_triples == len(train.participants)
    for n, batch in enumerate(batches):
        assert set(batch) == set(TRAINING_KEYS)
        size = BATCH if n < len(batches) - 1 else stream.num_triples - BATCH * (len(batches) - 1)
        for key, value in batch.items():
            assert value.dtype == np.int32
            assert value.shape == ((size, AUX) if key.startswith("aux_") else (size,)), key
        contract.check_batch(batch, AUX, folds=False)  # the data contract the models read
    spec = stream.dataset(0).element_spec
    assert spec["aux_items"].shape.as_list() == [None, AUX] and spec["item"].dtype == tf.int32


def test_never_a_positive_over_several_epochs(data):
    train, stream, truth, members = data
    for epoch in range(3):
        order = stream.order(epoch)
        for index in range(stream.num_batches):
            batch = stream.batch(epoch, index, order)
            group = stream.group[order[index * BATCH:(index + 1) * BATCH]]
            items = np.column_stack([batch["neg_item"], batch["aux_items"]])
            users = np.column_stack([batch["neg_participant"], batch["aux_participants"]])
            for u, g, item_row, user_row in zip(batch["initiator"].tolist(), group.tolist(), items.tolist(),
                                               users.tolist(), strict=True):
                assert not any((u, i) in truth for i in item_row)
                assert not members[g] & set(user_row)
            assert np.array_equal(batch["initiator"], train.initiator[group])
            assert np.all(items < train.num_items) and np.all(users < train.num_users)
            assert np.all(items >= 0) and np.all(users >= 0)


def test_each_epoch_is_a_reshuffled_permutation_of_all_triples(data):
    train, stream, _, _ = data
    u, i, p, _ = train.triples()
    expected = sorted(zip(u.tolist(), i.tolist(), p.tolist(), strict=True))
    orders = []
    for epoch in (0, 1):
        _, arrays = epoch_arrays(stream, epoch)
        triples = list(zip(arrays["initiator"].tolist(), arrays["item"].tolist(), arrays["participant"].tolist(),
                           strict=True))
        assert sorted(triples) == expected
        orders.append(triples)
    assert orders[0] != orders[1]


def test_deterministic_for_seed_and_epoch_and_resumable(data):
    train, stream, _, _ = data
    again = TrainingStream(train, stream.interacted, stream.num_users, stream.num_items, BATCH, AUX, seed=3)
    other = TrainingStream(train, stream.interacted, stream.num_users, stream.num_items, BATCH, AUX, seed=4)
    batches, arrays = epoch_arrays(stream, 1)
    _, same = epoch_arrays(again, 1, parallel_calls=1)
    _, different = epoch_arrays(other, 1)
    for key in TRAINING_KEYS:
        assert np.array_equal(arrays[key], same[key])
    assert not np.array_equal(arrays["participant"], different["participant"])
    # Resuming at batch 3 gives exactly the rest of the epoch; batch() agrees with the dataset.
    resumed, _ = epoch_arrays(stream, 1, start_batch=3)
    assert len(resumed) == len(batches) - 3
    for got, want in zip(resumed, batches[3:], strict=True):
        assert all(np.array_equal(got[k], want[k]) for k in TRAINING_KEYS)
    direct = stream.batch(1, 2)
    assert all(np.array_equal(direct[k], batches[2][k]) for k in TRAINING_KEYS)


def test_data_without_any_negative_is_refused_when_the_stream_is_built():
    # One group: initiator 0, item 0, participant 1; a failed launch (0, 1) covers item 1 as well.
    groups = DealGroups(np.array([0]), np.array([0]), np.array([0, 1]), np.array([1]), num_users=3, num_items=2)
    seen = interactions(groups, failed_users=np.array([0]), failed_items=np.array([1]))
    with pytest.raises(ConfigError, match="every item"):
        TrainingStream(groups, seen, 3, 2, BATCH, AUX, seed=0)
    two_users = DealGroups(groups.initiator, groups.item, groups.offsets, groups.participants, num_users=2, num_items=3)
    with pytest.raises(ConfigError, match="every user"):
        TrainingStream(two_users, interactions(two_users), 2, 3, BATCH, AUX, seed=0)
    with pytest.raises(ValueError, match="num_users, num_items"):
        TrainingStream(groups, interactions(groups), 3, 5, BATCH, AUX, seed=0)
    # With one free item and one free user, every draw is that one.
    roomy = DealGroups(groups.initiator, groups.item, groups.offsets, groups.participants, num_users=3, num_items=2)
    batch = TrainingStream(roomy, interactions(roomy), 3, 2, BATCH, AUX, seed=0).batch(0, 0)
    assert batch["aux_items"].tolist() == [[1] * AUX] and batch["neg_participant"].tolist() == [2]
