"""Tests for tfgb.data.stream: training batches with negatives, and candidate datasets."""
import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb.data.candidates import build_candidates
from tfgb.data.negatives import interactions
from tfgb.data.split import split_groups
from tfgb.data.stream import (
    TRAINING_KEYS,
    TrainingStream,
    candidate_dataset,
    training_dataset,
)
from tfgb.data.synth import generate
from tfgb.data.vocab import encode

BATCH, AUX = 64, 5


@pytest.fixture(scope="module")
def data():
    groups, users, items, failed_u, failed_i = encode(generate(users=150, items=40, groups=600, seed=8))
    train_idx, valid_idx, _ = split_groups(groups, seed=2)
    train = groups.take(train_idx)
    seen = interactions(train, failed_users=failed_u, failed_items=failed_i)
    stream = TrainingStream(train, seen, len(users), len(items), BATCH, AUX, seed=3)
    # Independent truth for the checks: training (user, item) pairs in every role + failed launches.
    _, i, p, _ = train.triples()
    truth = set(zip(train.initiator.tolist(), train.item.tolist(), strict=True))
    truth |= set(zip(p.tolist(), i.tolist(), strict=True)) | set(zip(failed_u.tolist(), failed_i.tolist(), strict=True))
    members = [set(train.participants[train.offsets[g]:train.offsets[g + 1]].tolist()) | {int(train.initiator[g])}
               for g in range(len(train))]
    return groups, train, groups.take(valid_idx), stream, truth, members


def epoch_arrays(stream, epoch, **kwargs):
    batches = list(stream.dataset(epoch, **kwargs).as_numpy_iterator())
    return batches, {k: np.concatenate([b[k] for b in batches]) for k in TRAINING_KEYS}


def test_batches_have_the_documented_keys_shapes_and_dtypes(data):
    _, train, _, stream, _, _ = data
    batches, _ = epoch_arrays(stream, 0)
    assert len(batches) == stream.num_batches == -(-stream.num_triples // BATCH)
    assert stream.num_triples == len(train.participants)
    for n, batch in enumerate(batches):
        assert set(batch) == set(TRAINING_KEYS)
        size = BATCH if n < len(batches) - 1 else stream.num_triples - BATCH * (len(batches) - 1)
        for key, value in batch.items():
            assert value.dtype == np.int32
            assert value.shape == ((size, AUX) if key.startswith("aux_") else (size,)), key
    spec = stream.dataset(0).element_spec
    assert spec["aux_items"].shape.as_list() == [None, AUX] and spec["item"].dtype == tf.int32


def test_never_a_positive_over_several_epochs(data):
    _, train, _, stream, truth, members = data
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
    _, train, _, stream, _, _ = data
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
    _, train, _, stream, _, _ = data
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


def test_training_dataset_function(data):
    _, train, _, stream, _, _ = data
    dataset = training_dataset(train, stream.interacted, stream.num_users, stream.num_items, BATCH, AUX, 3, epoch=1)
    first = next(iter(dataset))
    assert np.array_equal(first["aux_items"].numpy(), stream.batch(1, 0)["aux_items"])


@pytest.mark.parametrize(("task", "k"), [("a", 10), ("b", 10), ("a", 21), ("b", 21)])
def test_candidate_dataset(data, task, k):
    groups, _, valid, stream, _, _ = data
    lists = build_candidates(valid, interactions(groups), stream.num_users, stream.num_items, negatives=20, seed=1)
    batches = list(candidate_dataset(lists, task, k, batch_size=16).as_numpy_iterator())
    assert set(batches[0]) == {"initiator", "item", "candidates", "label"}
    merged = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    assert all(v.dtype == np.int32 for v in merged.values())
    assert merged["candidates"].shape == (len(valid), k) and batches[0]["candidates"].shape == (16, k)
    positive = lists.item if task == "a" else lists.participant
    assert np.array_equal(merged["candidates"][np.arange(len(valid)), merged["label"]], positive)
    assert np.array_equal(merged["item"], valid.item) and np.array_equal(merged["initiator"], valid.initiator)
    with pytest.raises(ValueError):
        candidate_dataset(lists, "c", k, 16)
