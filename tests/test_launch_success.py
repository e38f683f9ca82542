"""The ``launch_success`` signature: P(deal | launch) in the export, over REST and through the client.

A tiny NMTR is trained for a few steps in this process (tiny synthetic data), exported with the real
code (:func:`tfgb.serving.export.build_module` + :func:`tfgb.serving.export.save_version`) and reloaded;
its probabilities must be sigmoid(score_items) of the in-process model on the same ids, unknown ids
must be counted and scored with the mean (out-of-vocabulary) rows. Models without a launch behaviour
(``nmtr-single``, ``mf-bpr``) export no such signature; MGBR with ``launch_task`` does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
from support import mean_rows, small_recipe

from tfgb import config as cfg
from tfgb.evaluation import Scorer
from tfgb.serving import export
from tfgb.serving import server as serve
from tfgb.serving.client import RankingClient, ServingError
from tfgb.session import Session

PAIRS = 40


def recipe(name: str, cache_dir: Path) -> cfg.Config:
    return small_recipe(name, cache_dir, batch_size=32, learning_rate=0.05)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("launch_success")


def exported(name: str, workdir: Path, steps: int) -> dict:
    """``name`` trained for ``steps`` batches (0: only its variables built), exported and reloaded.

    The steps are the model's own ``train_step`` run eagerly (tracing it would take longer than the steps).
    """
    session = Session.create(recipe(name, workdir / "cache"), None, workdir / "runs" / name)
    for batch in session.stream().dataset(0).take(steps):
        session.model.train_step(batch)
    base = workdir / "saved_models" / name
    path = export.save_version(export.build_module(session), base)
    return {"session": session, "model": session.model, "base": base, "loaded": tf.saved_model.load(str(path)),
            "users": session.data.user_vocab.ids.astype(str), "items": session.data.item_vocab.ids.astype(str)}


@pytest.fixture(scope="module")
def nmtr(workdir: Path) -> dict:
    return exported("nmtr", workdir, steps=6)


@pytest.fixture(scope="module")
def single(workdir: Path) -> dict:
    return exported("nmtr-single", workdir, steps=0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def in_process(model, emb: dict, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """The in-process model's P(deal | launch), ``launch_success(emb, u, i)``."""
    return model.launch_success(emb, tf.constant(u, tf.int32), tf.constant(i, tf.int32)).numpy().astype(np.float64)


def random_pairs(built: dict, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, len(built["users"]), n), rng.integers(0, len(built["items"]), n)


def test_signature_def_inputs_and_outputs(nmtr):
    assert nmtr["model"].learns_launches is True
    fn = nmtr["loaded"].signatures["launch_success"]
    inputs = fn.structured_input_signature[1]
    assert sorted(inputs) == ["initiator", "item"]
    assert all(spec.dtype == tf.string and spec.shape.as_list() == [None] for spec in inputs.values())
    outputs = fn.structured_outputs
    assert sorted(outputs) == ["probability", "unknown_ids"]
    assert outputs["probability"].dtype == tf.float32 and outputs["unknown_ids"].dtype == tf.int32
    assert set(nmtr["loaded"].signatures) == {"serving_default", "rank_participants", "launch_success"}


def test_probabilities_equal_the_in_process_launch_success(nmtr):
    model = nmtr["model"]
    u, i = random_pairs(nmtr, PAIRS, 0)
    out = nmtr["loaded"].signatures["launch_success"](initiator=tf.constant(nmtr["users"][u]),
                                                      item=tf.constant(nmtr["items"][i]))
    probability = out["probability"].numpy()
    expected = in_process(model, model.propagate(training=False), u, i)
    assert probability.dtype == np.float32 and probability.shape == (PAIRS,)
    assert np.ptp(expected) > 1e-2  # the trained model tells the pairs apart: the comparison is not trivial
    np.testing.assert_allclose(probability, expected, atol=1e-5, rtol=0)
    assert ((probability > 0) & (probability < 1)).all()
    assert out["unknown_ids"].numpy().tolist() == [0] * PAIRS
    # NMTR's P(deal | launch) = y^deal / y^launch of its cascade, neither stage's probability alone.
    emb = model.propagate(training=False)
    stages = [sigmoid(s.numpy()) for s in model.cascaded(emb, tf.constant(u, tf.int32), tf.constant(i, tf.int32))]
    np.testing.assert_allclose(probability, np.minimum(stages[-1] / stages[0], 1.0), atol=1e-5, rtol=0)
    assert min(np.abs(probability - stages[0]).max(), np.abs(probability - stages[-1]).max()) > 1e-3


def test_unknown_ids_are_counted_and_scored_with_the_mean_rows(nmtr):
    model, users, items = nmtr["model"], nmtr["users"], nmtr["items"]
    U, I = len(users), len(items)
    initiators = [users[3], "nobody", users[5], "nobody-else", users[7]]
    pairs_items = [items[2], items[4], "no-item", "no-item-either", items[2]]
    out = nmtr["loaded"].signatures["launch_success"](initiator=tf.constant(initiators), item=tf.constant(pairs_items))
    assert out["unknown_ids"].numpy().tolist() == [0, 1, 1, 2, 0]
    probability = out["probability"].numpy()
    assert np.isfinite(probability).all() and ((probability > 0) & (probability < 1)).all()
    emb = mean_rows(model.propagate(training=False), model.table_kinds())
    expected = in_process(model, emb, np.array([3, U, 5, U, 7]), np.array([2, 4, I, I, 2]))
    np.testing.assert_allclose(probability, expected, atol=1e-5, rtol=0)


def test_rest_server_and_client_answer_the_same_values(nmtr, single):
    users, items = nmtr["users"], nmtr["items"]
    initiators = [users[1], users[2], "nobody", users[4]]
    pair_items = [items[1], "no-item", items[3], items[4]]
    direct = nmtr["loaded"].signatures["launch_success"](initiator=tf.constant(initiators),
                                                         item=tf.constant(pair_items))
    want, unknown = direct["probability"].numpy(), direct["unknown_ids"].numpy().tolist()
    assert unknown == [0, 1, 1, 0]
    app = serve.make_app(nmtr["base"], poll_seconds=0)
    with serve.BackgroundServer(app) as running:
        url = f"{running.url}/v1/models/nmtr"
        meta = requests.get(url + "/metadata", timeout=30).json()["metadata"]["signature_def"]["signature_def"]
        assert set(meta["launch_success"]["inputs"]) == {"initiator", "item"}
        assert meta["launch_success"]["outputs"]["probability"]["dtype"] == "DT_FLOAT"

        rows = requests.post(url + ":predict", timeout=30, data=json.dumps(
            {"signature_name": "launch_success",
             "instances": [{"initiator": u, "item": i} for u, i in zip(initiators, pair_items)]}))
        assert rows.status_code == 200, rows.text
        predictions = rows.json()["predictions"]
        np.testing.assert_allclose([p["probability"] for p in predictions], want, atol=1e-6, rtol=0)
        assert [p["unknown_ids"] for p in predictions] == unknown
        cols = requests.post(url + ":predict", timeout=30, data=json.dumps(
            {"signature_name": "launch_success", "inputs": {"initiator": initiators, "item": pair_items}}))
        np.testing.assert_allclose(cols.json()["outputs"]["probability"], want, atol=1e-6, rtol=0)
        assert cols.json()["outputs"]["unknown_ids"] == unknown

        with RankingClient(running.url, "nmtr", timeout=30) as client:
            got = client.launch_success(initiators, pair_items)
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
            assert client.launch_success([], []) == []
            with pytest.raises(ValueError, match="2 initiators but 1 items"):
                client.launch_success(initiators[:2], pair_items[:1])
    app.close()

    # A model without the launch behaviour: the same call fails with an error naming the model.
    app = serve.make_app(single["base"], poll_seconds=0)
    with serve.BackgroundServer(app) as running, RankingClient(running.url, "nmtr-single", timeout=30) as client:
        with pytest.raises(ServingError) as info:
            client.launch_success([single["users"][0]], [single["items"][0]])
        assert info.value.status == 400
        assert "'nmtr-single'" in str(info.value) and "launch_success" in str(info.value)
        assert client.rank_items(single["users"][0], list(single["items"][:3]))  # the model itself is served
    app.close()


@pytest.mark.parametrize("name", ["nmtr-single", "mf-bpr"])
def test_models_without_a_launch_behaviour_export_no_signature(name, single, workdir):
    built = single if name == "nmtr-single" else exported(name, workdir, steps=0)
    assert not getattr(built["model"], "learns_launches", False)
    assert set(built["loaded"].signatures) == {"serving_default", "rank_participants"}
    assert not hasattr(built["loaded"], "launch_success")


def test_mgbr_with_launch_task_exports_the_signature(workdir):
    built = exported("mgbr-launch", workdir, steps=0)
    model = built["model"]
    assert model.learns_launches is True
    u, i = random_pairs(built, 12, 1)
    out = built["loaded"].signatures["launch_success"](initiator=tf.constant(built["users"][u]),
                                                       item=tf.constant(built["items"][i]))
    # The export propagates as evaluation does (tfgb.evaluation.Scorer): compare with those embeddings.
    expected = in_process(model, Scorer(model).emb, u, i)
    assert np.ptp(expected) > 1e-3
    np.testing.assert_allclose(out["probability"].numpy(), expected, atol=1e-5, rtol=0)
    assert out["unknown_ids"].numpy().tolist() == [0] * 12
