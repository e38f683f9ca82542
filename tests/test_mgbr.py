"""MGBR model: position invariance, row independence, losses, variants."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfgb  # noqa: F401
from tfgb import models
from tfgb.config import load
from tfgb.data.prepare import prepare

SMALL = ["data.synth.groups=1500", "data.synth.users=600", "data.synth.items=150", "train.batch_size=64",
         "model.mgbr.embedding_dim=8", "model.mgbr.num_experts=3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = load(None, SMALL + [f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])
    return config, prepare(config)


def build(data, name="mgbr", *sets):
    config, prepared = data
    config = models.resolve(load(None, SMALL + [f"model.name={name}", f"data.cache_dir={prepared.cache_path}",
                                                *sets]))
    tf.keras.utils.set_random_seed(3)
    model = models.build_for(config, prepared)
    batch = next(iter(prepared.training_dataset(config.train, epoch=0)))
    loss = model.compute_loss(batch, training=True)
    assert np.isfinite(loss.numpy())
    return model, prepared


@pytest.mark.parametrize("name, sets", [("mgbr", ()), ("mgbr-m", ()), ("mgbr-g", ()), ("mgbr-d", ()),
                                        ("mgbr", ("model.mgbr.bias=true",))])
def test_permuting_candidates_permutes_scores(data, name, sets):
    model, prepared = build(data, name, *sets)
    if model.use_bias:
        model.item_bias.assign(np.random.default_rng(2).normal(size=model.item_bias.shape).astype(np.float32))
    emb = model.propagate(training=False)
    lists = prepared.test_candidates.take(np.arange(16))
    items, _ = lists.task_a(100)
    users, _ = lists.task_b(100)
    perm = np.random.default_rng(0).permutation(100)
    a = model.score_items(emb, lists.initiator, items).numpy()
    a_perm = model.score_items(emb, lists.initiator, items[:, perm]).numpy()
    np.testing.assert_allclose(a_perm, a[:, perm], atol=1e-6)
    b = model.score_participants(emb, lists.initiator, lists.item, users).numpy()
    b_perm = model.score_participants(emb, lists.initiator, lists.item, users[:, perm]).numpy()
    np.testing.assert_allclose(b_perm, b[:, perm], atol=1e-6)
    # A list's scores do not depend on the other lists of the batch.
    alone = model.score_items(emb, lists.initiator[:1], items[:1]).numpy()
    np.testing.assert_allclose(alone, a[:1], atol=1e-6)
    assert np.unique(a.round(6)).size > 50  # not a constant scorer


def test_training_rows_score_like_candidate_scoring(data):
    """compute_loss's factored rows give the same logits as the candidate scorers."""
    model, _ = build(data)
    emb = model.propagate(training=False)
    u = tf.constant([1, 2, 3])
    i = tf.constant([4, 5, 6])
    p = tf.constant([[7], [8], [9]])
    direct = model.score_participants(emb, u, i, p).numpy()[:, 0]
    g = model.mtl(tf.gather(emb["users_i"], u), tf.gather(emb["items"], i), tf.gather(emb["users_p"], p[:, 0]))
    np.testing.assert_allclose(model.head_b(g["b"]).numpy(), direct, rtol=1e-5, atol=1e-6)


def test_loss_terms_are_logged_and_variants_drop_them(data):
    model, _ = build(data)
    assert {m.name for m in model.metrics} >= {"loss_a", "loss_b", "aux_a", "aux_b"}
    model_r, _ = build(data, "mgbr-r")
    assert not {"aux_a", "aux_b"} & {m.name for m in model_r.metrics}


def test_variants_change_the_architecture(data):
    full, _ = build(data)
    names = {v.name for v in full.trainable_variables}
    m_names = {v.name for v in build(data, "mgbr-m")[0].trainable_variables}
    g_names = {v.name for v in build(data, "mgbr-g")[0].trainable_variables}
    assert any("expert_s" in n for n in names) and not any("expert_s" in n for n in m_names)
    assert any("gate_a_ui" in n for n in names) and not any("gate_a_ui" in n for n in g_names)
    d_model, _ = build(data, "mgbr-d")
    assert [view.name for view in d_model.gcn.views] == ["hetero"]
    assert [view.name for view in full.gcn.views] == ["ui", "pi", "up"]


def test_embedding_dropout_only_when_training(data):
    model, prepared = build(data, "mgbr", "model.mgbr.embedding_dropout=0.5")
    config = load(None, SMALL)
    batch = next(iter(prepared.training_dataset(config.train, epoch=0)))
    # Training: a fresh mask per call, so the loss moves; inference: no dropout at all.
    losses = {round(float(model.compute_loss(batch, training=True)), 6) for _ in range(3)}
    assert len(losses) == 3
    assert float(model.compute_loss(batch, training=False)) == float(model.compute_loss(batch, training=False))
    plain, _ = build(data, "mgbr")
    plain.set_weights(model.get_weights())
    assert float(plain.compute_loss(batch, training=False)) == pytest.approx(
        float(model.compute_loss(batch, training=False)), abs=1e-6)
    plain_losses = {round(float(plain.compute_loss(batch, training=True)), 6) for _ in range(3)}
    assert len(plain_losses) == 1


@pytest.mark.parametrize("name, sets", [("mgbr", ()), ("mgbr", ("model.mgbr.bias=true",)), ("mamgbr", ())])
def test_every_loss_term_matches_rows_scored_one_by_one(data, name, sets):
    """Eq. 19, 21 and 24 recomputed from explicitly built (u, i, p) rows of each triple."""
    model, prepared = build(data, name, *sets)
    rng = np.random.default_rng(1)
    if model.use_bias:  # zeros at the start: make them matter
        for var in (model.item_bias, model.participant_bias):
            var.assign(rng.normal(size=var.shape).astype(np.float32))
    batch = next(iter(prepared.training_dataset(load(None, SMALL).train, epoch=0)))
    emb = model.propagate(training=False)
    bias = ({"a": emb["item_bias"].numpy()[:, 0], "b": emb["participant_bias"].numpy()[:, 0]}
            if model.use_bias else None)
    u, i, p = batch["initiator"], batch["item"], batch["participant"]
    aux_i, aux_p = batch["aux_items"], batch["aux_participants"]
    b, t = aux_i.shape

    def score(head, uu, ii, pp):  # pp: participant ids, or None for task A's mean embedding
        e_p = (tf.repeat(emb["mean_p"][None, :], len(uu), 0) if pp is None else tf.gather(emb["users_p"], pp))
        g = model.mtl(tf.gather(emb["users_i"], uu), tf.gather(emb["items"], ii), e_p, training=False)
        logits = getattr(model, f"head_{head}")(g[head], training=False).numpy().reshape(-1)
        if bias is not None:
            logits = logits + bias[head][np.asarray(ii if head == "a" else pp).reshape(-1)]
        return logits

    def log_sigmoid(x):
        return -np.logaddexp(0.0, -x)

    loss_a = -log_sigmoid(score("a", u, i, None) - score("a", u, batch["neg_item"], None)).mean()
    pos_b = score("b", u, i, p)
    loss_b = -log_sigmoid(pos_b - score("b", u, i, batch["neg_participant"])).mean()
    rep = np.repeat(np.arange(b), t)
    s_ti = score("a", tf.gather(u, rep), tf.reshape(aux_i, [-1]), tf.gather(p, rep)).reshape(b, t)  # T^I
    s_tp = score("a", tf.gather(u, rep), tf.gather(i, rep), tf.reshape(aux_p, [-1])).reshape(b, t)  # T^P
    logits = np.concatenate([s_ti, s_tp], 1)
    log_softmax = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    aux_a = (-(log_softmax[:, t:]).sum(1) / (2 * t)).mean()  # y = 1 on T^P (Eq. 21)
    s_b_ti = score("b", tf.gather(u, rep), tf.reshape(aux_i, [-1]), tf.gather(p, rep)).reshape(b, t)
    aux_b = -log_sigmoid(pos_b[:, None] - s_b_ti).mean()  # Eq. 24

    model.reset_metrics()
    model.compute_loss(batch, training=False)
    logged = {m.name: float(m.result()) for m in model.metrics}
    for key, want in (("loss_a", loss_a), ("loss_b", loss_b), ("aux_a", aux_a), ("aux_b", aux_b)):
        assert logged[key] == pytest.approx(want, rel=1e-4, abs=1e-5), key


def test_log_count_bias_prior_is_set_from_training_counts(tmp_path):
    from tfgb.session import Session
    from tfgb.train import load_config

    config = load_config(None, SMALL + ["model.mgbr.bias=true", "model.mgbr.bias_init=log_count",
                                        f"data.cache_dir={tmp_path / 'cache'}"])
    session = Session.create(config, None, tmp_path / "run")
    train = session.data.train
    np.testing.assert_allclose(session.model.item_bias.numpy()[:, 0],
                               np.log1p(np.bincount(train.item, minlength=session.data.num_items)), rtol=1e-6)
    np.testing.assert_allclose(session.model.participant_bias.numpy()[:, 0],
                               np.log1p(np.bincount(train.participants, minlength=session.data.num_users)),
                               rtol=1e-6)
    assert session.model.item_bias.numpy().std() > 0.1  # the synthetic data has popularity skew


@pytest.mark.parametrize("name, sets", [("mgbr", ("model.mgbr.bias=true",)), ("mgbr-m", ()), ("mgbr-g", ())])
def test_block_chunks_give_the_whole_batch_loss_and_gradient(data, name, sets):
    """train.block_chunk: the block over chunks of triples (last one shorter), one propagation."""
    whole, prepared = build(data, name, *sets)
    chunked, _ = build(data, name, *sets, "train.block_chunk=20")
    if whole.use_bias:  # zeros at the start: make them matter
        rng = np.random.default_rng(4)
        for var in (whole.item_bias, whole.participant_bias):
            var.assign(rng.normal(size=var.shape).astype(np.float32))
    chunked.set_weights(whole.get_weights())
    batch = next(iter(prepared.training_dataset(load(None, SMALL).train, epoch=0)))
    assert batch["initiator"].shape[0] == 64  # 20 + 20 + 20 + 4
    want_loss, _, want = whole.loss_and_gradients(batch)
    got_loss, _, got = tf.function(chunked.loss_and_gradients)(batch)
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert len(got) == len(want) == len(whole.trainable_variables)
    want = [tf.convert_to_tensor(w).numpy() for w in want]
    scale = max(np.abs(w).max() for w in want)
    for var, g, w in zip(whole.trainable_variables, got, want):
        if var.name.startswith(("gcn", "mtl")):
            assert np.abs(w).max() > 1e-3 * scale, var.name  # trained by this batch
        # Sums in another order: agreement to 1e-5 of the largest gradient entry (the logit biases'
        # gradients are zero up to rounding: every loss term is invariant to a shift of all logits).
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), w, rtol=1e-4, atol=1e-5 * scale, err_msg=var.name)


def test_block_chunk_must_not_be_negative_nor_split_batch_statistics(data):
    from tfgb.config import ConfigError
    with pytest.raises(ConfigError, match="block_chunk"):
        load(None, ["train.block_chunk=-1"])
    with pytest.raises(ConfigError, match="batch normalisation"):  # MAMGBR's experts: BatchNorm over the batch
        build(data, "mamgbr", "train.block_chunk=16")


def test_block_chunks_take_the_whole_batch_step_through_keras(data):
    """One step of Keras' own train function (as model.fit runs it), chunked and not, lands on the same
    weights (plain SGD, so the update is the gradient; Adam's first step would amplify rounding)."""
    models_ = []
    for sets in ((), ("train.block_chunk=20",)):
        model, prepared = build(data, "mgbr", "model.mgbr.bias=true", *sets)
        model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1.0))
        models_.append(model)
    whole, chunked = models_
    chunked.set_weights(whole.get_weights())
    start = [w.copy() for w in whole.get_weights()]
    batch = next(iter(prepared.training_dataset(load(None, SMALL).train, epoch=0)))
    logs = [model.make_train_function()(iter(tf.data.Dataset.from_tensors(batch))) for model in models_]
    assert float(logs[1]["loss"]) == pytest.approx(float(logs[0]["loss"]), rel=1e-5)
    steps = [[after - before for after, before in zip(model.get_weights(), start)] for model in models_]
    scale = max(np.abs(s).max() for s in steps[0])
    assert scale > 0
    for got, want in zip(steps[1], steps[0]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
