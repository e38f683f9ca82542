"""TreeMS's export: the scenario paths, neighbour samples and histories live inside the SavedModel; served task B
scores equal in-process ones with raw ids, unknown items get the root's scenario, unknown users no neighbours;
the REST API answers the same. Side tables from files (categories, relations) as well as derived."""
from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import requests
import tensorflow as tf
from support import small_recipe

from tfgb import models
from tfgb.data.prepare import prepare
from tfgb.evaluation import Scorer
from tfgb.serving import export
from tfgb.serving import server as serve


def perturb(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        if variable.dtype == tf.float32:
            variable.assign(variable.numpy() + rng.normal(0.0, 0.3, variable.shape.as_list()).astype(np.float32))


@pytest.fixture(scope="module", params=["derived", "files"])
def built(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("treems_export")
    config = small_recipe("treems", tmp / "cache")
    data = prepare(config)
    data_dir = None
    if request.param == "files":
        items = data.item_vocab.ids.astype(str)
        paths = [f"top{n % 2}/mid{n % 4}/leaf{n % 7}" for n in range(len(items))]
        pd.DataFrame({"item": items, "path": paths}).to_csv(tmp / "categories.csv", index=False)
        users = data.user_vocab.ids.astype(str)
        pd.DataFrame({"src": users[:30], "dst": users[30:60], "relation": ["friend"] * 30}).to_csv(
            tmp / "relations.csv", index=False)
        config.data.item_categories, config.data.user_relations, data_dir = "categories.csv", "relations.csv", str(tmp)
    tf.keras.utils.set_random_seed(1)
    model = models.build_for(config, data, data_dir=data_dir)
    batch = next(iter(data.training_stream(config.train).dataset(0).take(1)))
    model.compute_loss({k: v[:8] for k, v in batch.items()}, training=True)
    perturb(model, 2)
    module = export.build_module(types.SimpleNamespace(model=model, data=data))
    path = export.save_version(module, tmp / "saved_models" / "t")
    return {"model": model, "data": data, "path": path, "loaded": tf.saved_model.load(str(path)),
            "kind": request.param}


def test_served_scores_equal_in_process_ones_with_unknown_ids(built):
    model, data, loaded = built["model"], built["data"], built["loaded"]
    if built["kind"] == "files":
        assert "friend" in model.view_names
    for key in ("paths", "neighbours", "history_keys", "history_weights"):
        assert key in loaded.embeddings  # held inside the SavedModel
    lists = data.test_candidates.take(np.arange(12))
    users, items = data.user_vocab.ids.astype(str), data.item_vocab.ids.astype(str)
    reference = Scorer(model).participants(lists.initiator, lists.item, lists.participants)
    out = loaded.signatures["rank_participants"](initiator=tf.constant(users[lists.initiator]),
                                                 item=tf.constant(items[lists.item]),
                                                 candidates=tf.constant(users[lists.participants]))
    np.testing.assert_allclose(out["scores"].numpy(), reference, rtol=1e-5, atol=1e-5)
    assert out["unknown_ids"].numpy().tolist() == [0] * 12
    # an unknown item: the root's scenario; an unknown candidate: no neighbours, no history
    cand = users[lists.participants].astype(object)  # fixed-width strings would cut "nobody"
    cand[:, 0] = "nobody"
    out = loaded.signatures["rank_participants"](initiator=tf.constant(users[lists.initiator]),
                                                 item=tf.constant(["no-such-item"] * 12), candidates=tf.constant(cand))
    assert out["unknown_ids"].numpy().tolist() == [2] * 12
    emb = export.with_oov_rows(model.propagate(), model.table_kinds(), model.oov_rows(model.propagate()))
    c = np.where(cand == "nobody", data.num_users, lists.participants)
    want = model.score_participants(emb, tf.constant(lists.initiator), tf.fill([12], data.num_items),
                                    tf.constant(c)).numpy()
    np.testing.assert_allclose(out["scores"].numpy(), want, rtol=1e-5, atol=1e-5)
    assert (emb["paths"].numpy()[-1] == 1).all() and (emb["neighbours"].numpy()[-1] == -1).all()
    assert np.ptp(out["scores"].numpy(), 1).min() > 0


def test_rest_answers_what_the_savedmodel_answers(built):
    base = built["path"].parent
    app = serve.make_app(base, 64 * 1024, poll_seconds=0.2)
    data, loaded = built["data"], built["loaded"]
    users, items = data.user_vocab.ids.astype(str).tolist(), data.item_vocab.ids.astype(str).tolist()
    body = {"signature_name": "rank_participants",
            "instances": [{"initiator": users[0], "item": items[1], "candidates": users[2:7]},
                          {"initiator": "stranger", "item": "nothing", "candidates": users[2:7]}]}
    try:
        with serve.BackgroundServer(app) as running:
            answer = requests.post(f"{running.url}/v1/models/t:predict", data=json.dumps(body), timeout=30)
    finally:
        app.close()
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    got = np.array([p["scores"] for p in predictions])
    want = loaded.signatures["rank_participants"](initiator=tf.constant([users[0], "stranger"]),
                                                  item=tf.constant([items[1], "nothing"]),
                                                  candidates=tf.constant([users[2:7]] * 2))
    np.testing.assert_allclose(got, want["scores"].numpy(), rtol=1e-5, atol=1e-6)
    assert [p["unknown_ids"] for p in predictions] == [0, 2]
