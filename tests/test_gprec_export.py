"""GPRec's export: served scores equal in-process ones, with derived and with file features; an unknown user
is scored as a user with unknown features and no personal embedding; the REST API answers the same."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import requests
import tensorflow as tf
from support import small_recipe

from tfgb import models
from tfgb.data import features as user_features
from tfgb.data.prepare import prepare
from tfgb.evaluation import Scorer
from tfgb.serving import export
from tfgb.serving import server as serve

CASES = [("mf-bpr", "input", ""), ("mf-bpr", "ensemble", "synthetic"), ("mgbr", "dynamic", "synthetic")]


def perturb(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        if variable.dtype == tf.float32 and "moving_variance" not in variable.name:
            variable.assign(variable.numpy() + rng.normal(0.0, 0.3, variable.shape.as_list()).astype(np.float32))


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join(x or "derived" for x in c))
def built(request, tmp_path_factory):
    name, strategy, source = request.param
    tmp = tmp_path_factory.mktemp("gprec_export")
    config = small_recipe(name, tmp / "cache")
    config.model.user_modeling, config.data.user_features = "gprec", source
    g = config.model.gprec
    g.strategy, g.groups, g.dim, g.classifier_hidden, g.mlp_hidden = strategy, 3, 4, [6], [6]
    data = prepare(config)
    found = user_features.for_recipe(config, data, None)
    tf.keras.utils.set_random_seed(1)
    model = models.build_for(config, data, found[1])
    batch = next(iter(data.training_stream(config.train).dataset(0).take(1)))
    model.compute_loss({k: v[:8] for k, v in batch.items()}, training=True)
    perturb(model, 2)
    module = export.build_module(types.SimpleNamespace(model=model, data=data))
    path = export.save_version(module, tmp / "saved_models" / "g")
    return {"model": model, "data": data, "path": path, "loaded": tf.saved_model.load(str(path)), "tmp": tmp}


def test_served_scores_equal_in_process_ones_and_an_unknown_user_has_unknown_features(built):
    model, data, loaded = built["model"], built["data"], built["loaded"]
    scorer = Scorer(model)
    lists = data.test_candidates.take(np.arange(12))
    users, items = data.user_vocab.ids.astype(str), data.item_vocab.ids.astype(str)
    initiator = users[lists.initiator].copy()
    initiator[::3] = "stranger"
    out = loaded.signatures["serving_default"](initiator=tf.constant(initiator),
                                               candidates=tf.constant(items[lists.items]))
    want = scorer.items(lists.initiator, lists.items)
    known = np.arange(len(initiator)) % 3 != 0
    np.testing.assert_allclose(out["scores"].numpy()[known], want[known], rtol=1e-4, atol=1e-4)
    # the stranger: the model's own out-of-vocabulary rows (unknown features, no personal embedding)
    emb = export.with_oov_rows(scorer.emb, model.table_kinds(), model.oov_rows(scorer.emb))
    u = np.where(known, lists.initiator, data.num_users)
    expected = model.score_items(emb, tf.constant(u), tf.constant(lists.items)).numpy()
    np.testing.assert_allclose(out["scores"].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert out["unknown_ids"].numpy().tolist() == (~known).astype(int).tolist()
    if model.gprec.settings.strategy != "ensemble":  # the row is not the mean row of the table
        mean = scorer.emb["users_i"].numpy().mean(0)
        assert np.abs(emb["users_i"].numpy()[-1] - mean).max() > 1e-3
    parts = loaded.signatures["rank_participants"](initiator=tf.constant(initiator), item=tf.constant(items[lists.item]),
                                                   candidates=tf.constant(users[lists.participants]))
    want_b = scorer.participants(lists.initiator, lists.item, lists.participants)
    np.testing.assert_allclose(parts["scores"].numpy()[known], want_b[known], rtol=1e-4, atol=1e-4)


def test_rest_answers_what_the_savedmodel_answers(built):
    base = built["path"].parent
    app = serve.make_app(base, 64 * 1024, poll_seconds=0.2)
    data, loaded = built["data"], built["loaded"]
    users, items = data.user_vocab.ids.astype(str).tolist(), data.item_vocab.ids.astype(str).tolist()
    body = {"signature_name": "serving_default",
            "instances": [{"initiator": users[0], "candidates": items[:5]}, {"initiator": "stranger",
                                                                             "candidates": items[:5]}]}
    try:
        with serve.BackgroundServer(app) as running:
            answer = requests.post(f"{running.url}/v1/models/g:predict", data=json.dumps(body), timeout=30)
    finally:
        app.close()
    assert answer.status_code == 200, answer.text
    got = np.array([p["scores"] for p in answer.json()["predictions"]])
    want = loaded.signatures["serving_default"](initiator=tf.constant([users[0], "stranger"]),
                                                candidates=tf.constant([items[:5]] * 2))["scores"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
