"""``train.graph_folds``: training batches scored over graphs that leave out their own groups."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from support import tiny_model_config

from tfgb import contract, models
from tfgb.config import Config
from tfgb.data.prepare import prepare
from tfgb.data.stream import TRAINING_KEYS, FoldedStream
from tfgb.models.base import Graphs
from tfgb.models.context import ModelContext

K = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = Config()
    config.data = dataclasses.replace(config.data, cache_dir=str(tmp_path_factory.mktemp("cache")), negatives=19,
                                      synth=dataclasses.replace(config.data.synth, users=300, items=60, groups=900))
    config.train = dataclasses.replace(config.train, batch_size=64, aux_size=3, graph_folds=K, seed=5)
    return config, prepare(config)


def triples_of(train, index):
    sub = train.take(index)
    u, i, p, _ = sub.triples()
    return sorted(zip(u.tolist(), i.tolist(), p.tolist(), strict=True))


def test_folded_epoch_holds_every_triple_once_each_batch_one_fold(data):
    config, prepared = data
    stream = prepared.training_stream(config.train)
    assert isinstance(stream, FoldedStream) and len(stream.streams) == K
    fold_of_group = prepared.fold_of_groups(K, config.train.seed)
    counts = np.bincount(fold_of_group)
    assert counts.max() - counts.min() <= 1
    batches = list(stream.dataset(1).as_numpy_iterator())
    assert len(batches) == stream.num_batches
    seen = {f: [] for f in range(K)}
    for b in batches:
        assert set(b) == {*TRAINING_KEYS, "fold"}
        contract.check_batch(b, config.train.aux_size, folds=True)
        folds = np.unique(b["fold"])
        assert len(folds) == 1, "a batch mixes folds"
        seen[int(folds[0])] += list(zip(b["initiator"].tolist(), b["item"].tolist(), b["participant"].tolist(),
                                        strict=True))
    for f in range(K):
        assert sorted(seen[f]) == triples_of(prepared.train, np.flatnonzero(fold_of_group == f))
    order = [int(b["fold"][0]) for b in batches]
    assert len(set(order[: len(order) // 2])) > 1, "folds are not interleaved"
    # Pure function of (epoch, index): a resumed dataset and single batches agree; epochs differ.
    later = list(stream.dataset(1, start_batch=3).as_numpy_iterator())
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(later, batches[3:], strict=True) for k in x)
    one = stream.batch(1, 4)
    assert all(np.array_equal(one[k], batches[4][k]) for k in one)
    other = next(iter(stream.dataset(2).as_numpy_iterator()))
    assert not np.array_equal(other["initiator"], batches[0]["initiator"])


def edges(graph: tf.sparse.SparseTensor) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in graph.indices.numpy() if r != c}


def test_fold_graphs_hold_exactly_the_other_folds_edges(data):
    config, prepared = data
    train, users = prepared.train, prepared.num_users
    fold_of_group = prepared.fold_of_groups(K, config.train.seed)
    users_f, items_f, _ = prepared.launches("train")  # held-out failed launches are no edge of any graph
    failed = set(zip(users_f.tolist(), items_f.tolist(), strict=True))
    for f, graphs in enumerate(prepared.fold_graphs(K, config.train.seed)):
        others = train.take(np.flatnonzero(fold_of_group != f))
        ui = set(zip(others.initiator.tolist(), others.item.tolist(), strict=True)) | failed
        want = {(u, users + i) for u, i in ui} | {(users + i, u) for u, i in ui}
        assert edges(graphs["ui"]) == want
        u, _, p, _ = others.triples()
        up = set(zip(u.tolist(), p.tolist(), strict=True))
        assert edges(graphs["up"]) == ({(a, b) for a, b in up} | {(b, a) for a, b in up}) - {(a, a) for a, _ in up}
        # The held-out groups' own (initiator, participant) pairs are gone unless another fold has them.
        mine = train.take(np.flatnonzero(fold_of_group == f))
        u, _, p, _ = mine.triples()
        only_mine = set(zip(u.tolist(), p.tolist(), strict=True)) - up - {(b, a) for a, b in up}
        assert only_mine and not only_mine & edges(graphs["up"])


def small_config(name: str) -> Config:
    return tiny_model_config(name, mtl_layers=1)


@pytest.mark.parametrize("name", ["mgbr", "mamgbr", "lightgcn", "ngcf", "gbmf"])
def test_a_fold_batch_is_scored_over_its_fold_graphs_and_trains(name, data):
    config, prepared = data
    tf.keras.utils.set_random_seed(1)
    folds = prepared.fold_graphs(K, config.train.seed)
    context = ModelContext(prepared.num_users, prepared.num_items, prepared.graphs(), fold_graphs=tuple(folds))
    model = models.build(small_config(name), context)
    batch = {k: tf.constant(v) for k, v in prepared.training_stream(config.train).batch(0, 0).items()}
    f = int(batch["fold"][0])
    got = model.propagate_batch(batch, training=False)
    own = model.propagate(False, Graphs(model.derive_graphs(dict(folds[f]))))  # the fold graphs as built
    full = model.propagate(False)
    assert set(got) == set(own) == set(full)
    for key in got:
        np.testing.assert_allclose(got[key].numpy(), own[key].numpy(), rtol=1e-6, atol=1e-6)
    assert not all(np.allclose(got[k].numpy(), full[k].numpy()) for k in got), "the fold graphs changed nothing"
    # A traced training step differentiates through the fold's branch.
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    model.compute_loss(batch, training=False)  # builds every variable
    before = [v.numpy().copy() for v in model.trainable_variables]
    step = tf.function(model.train_step)
    logs = step(batch)
    assert np.isfinite(float(logs["loss"]))
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables, strict=True)]
    assert all(changed), [v.name for v, c in zip(model.trainable_variables, changed, strict=True) if not c]


def test_fold_batch_without_fold_graphs_is_refused(data):
    config, prepared = data
    model = models.build(small_config("mgbr"), ModelContext(prepared.num_users, prepared.num_items, prepared.graphs()))
    batch = {k: tf.constant(v) for k, v in prepared.training_stream(config.train).batch(0, 0).items()}
    with pytest.raises(ValueError, match="fold_graphs"):
        model.compute_loss(batch)
