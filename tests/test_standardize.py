"""``model.<mgbr|mamgbr>.standardize``: every GCN output column has mean 0 and std 1 over ALL rows of its
table, so a candidate's score does not depend on the other rows of the batch it is scored in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfgb.models.mgbr import standardize

DATA = ("data.synth.groups=600", "data.synth.users=300", "data.synth.items=120", "data.negatives=9")
TABLES = ("users_i", "items", "users_p")  # the per-user / per-item tables of the multi-view GCN (Eq. 4-6)


def test_standardize_is_per_column_over_all_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[3.0, -1.0, 0.0], scale=[5.0, 0.1, 2.0], size=(500, 3)).astype(np.float32)
    y = standardize(tf.constant(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(y, (x - x.mean(axis=0)) / x.std(axis=0), rtol=1e-4, atol=1e-4)
    # Rows are only shifted and scaled by their column's statistics: their order within a column stays.
    assert (np.argsort(y, axis=0) == np.argsort(x, axis=0)).all()


def session(name: str, standardized: bool, tmp_path: Path):
    from tfgb.session import Session
    from tfgb.train import load_config

    tf.keras.backend.clear_session()
    section = name.split("-")[0]
    config = load_config(None, [*DATA, f"data.cache_dir={tmp_path.parent / 'cache'}", f"model.name={name}",
                                f"model.{section}.embedding_dim=8", f"model.{section}.num_experts=2",
                                f"model.{section}.standardize={str(standardized).lower()}"])
    return Session.create(config, None, tmp_path / f"{name}-{standardized}")


@pytest.mark.parametrize("name", ["mgbr", "mamgbr-m"])  # MAMGBR-M: [GCN_A || GCN_B], each half on its own
def test_tables_are_standardized_and_a_score_ignores_the_rest_of_the_batch(name: str, tmp_path: Path):
    raw_model = session(name, False, tmp_path).model
    raw = {key: value.numpy() for key, value in raw_model.propagate(training=False).items()}
    run = session(name, True, tmp_path)
    model = run.model
    model.set_weights(raw_model.get_weights())
    emb = model.propagate(training=False)
    for key in TABLES:
        table, before = emb[key].numpy(), raw[key]
        np.testing.assert_allclose(table.mean(axis=0), 0.0, atol=1e-4, err_msg=key)
        # std 1 up to the epsilon: sqrt(var / (var + 1e-6)), var ~ 1e-4 at initialisation
        np.testing.assert_allclose(table.std(axis=0), 1.0, atol=5e-3, err_msg=key)
        mean, var = before.mean(axis=0), before.var(axis=0)
        np.testing.assert_allclose(table, (before - mean) / np.sqrt(var + 1e-6), rtol=1e-3, atol=1e-3, err_msg=key)
        # The setting matters: without it the freshly initialised GCN's columns are far from std 1.
        assert np.abs(np.sqrt(var) - 1.0).min() > 0.5, key

    lists = run.data.test_candidates.take(np.arange(16))
    items, _ = lists.task_a()
    users, _ = lists.task_b()
    batch_a = model.score_items(emb, lists.initiator, items).numpy()
    batch_b = model.score_participants(emb, lists.initiator, lists.item, users).numpy()
    assert np.unique(batch_a.round(5)).size > 20  # not a constant scorer
    # List 0 scored alone, and with other companions (the batch reversed), gets the same scores.
    alone_a = model.score_items(emb, lists.initiator[:1], items[:1]).numpy()
    alone_b = model.score_participants(emb, lists.initiator[:1], lists.item[:1], users[:1]).numpy()
    np.testing.assert_allclose(alone_a, batch_a[:1], atol=1e-5)
    np.testing.assert_allclose(alone_b, batch_b[:1], atol=1e-5)
    reversed_a = model.score_items(emb, lists.initiator[::-1], items[::-1]).numpy()
    np.testing.assert_allclose(reversed_a[::-1], batch_a, atol=1e-5)
