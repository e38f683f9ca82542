"""``tfgb.session``: create, open, restore and save a run's session."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfgb.errors import ConfigError
from tfgb.evaluation import evaluate
from tfgb.session import Session
from tfgb.train import load_config

SETS = ["data.synth.groups=1500", "data.synth.users=600", "data.synth.items=150", "model.mgbr.embedding_dim=8",
        "model.mgbr.num_experts=2", "model.mgbr.mtl_layers=1"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(None, [*SETS, f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])


def test_create_builds_every_variable_and_restores_nothing(config, tmp_path: Path):
    session = Session.create(config, None, tmp_path / "run")
    assert session.model.trainable_variables and session.parameters() > 0
    # Adam's two slots per trainable variable exist before any step, so that a restore fills them.
    assert len(session.model.optimizer.variables) >= 2 * len(session.model.trainable_variables)
    assert (tmp_path / "run" / "vocab" / "users.txt").exists()
    assert session.progress.values() == {"step": 0, "validations": 0, "best": -1.0, "since_best": 0, "seconds": 0.0}
    assert not session.restore("best") and not session.restore("last") and session.restored is None
    with pytest.raises(ConfigError, match="no checkpoint to restore"):
        session.restore_best_or_last()
    with pytest.raises(ValueError, match="checkpoints"):
        session.restore("first")


def test_saved_weights_optimizer_and_progress_restore_in_a_new_session(config, tmp_path: Path):
    first = Session.create(config, None, tmp_path / "run")
    first.model.fit(first.data.training_dataset(config.train, epoch=0).take(1), verbose=0)  # one step
    first.progress.step.assign(7)
    first.progress.since_best.assign(2)
    first.progress.seconds.assign(12.5)
    first.save("last")
    second = Session.create(config, None, tmp_path / "run")
    before = [v.numpy() for v in second.model.trainable_variables]
    assert second.restore("last") and second.restored == "last"
    assert second.progress.values() == first.progress.values()
    for mine, theirs in zip(second.model.variables, first.model.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert int(second.model.optimizer.iterations.numpy()) == int(first.model.optimizer.iterations.numpy()) > 0
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, second.model.trainable_variables))


def test_open_restores_the_best_checkpoint_of_a_trained_run(tiny_run: Path):
    session = Session.open(tiny_run)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert session.restored == "best"
    assert session.progress.values()["step"] == metrics["best_step"]
    config = session.config
    test = evaluate(session.model, session.data.test_candidates, ks=[10], batch_size=config.eval.batch_size,
                    max_groups=config.eval.max_groups, seed=config.train.seed)
    for task in ("a", "b"):
        assert test[task]["mrr@10"] == pytest.approx(metrics["test"][task]["mrr@10"], abs=1e-6)


def test_open_falls_back_to_the_last_checkpoint(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "checkpoints" / "best")
    session = Session.open(run)
    assert session.restored == "last"
    best = Session.open(tiny_run)
    for mine, theirs in zip(session.model.trainable_variables, best.model.trainable_variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())  # one validation: last = best


def test_open_refuses_what_is_not_a_trained_run(tiny_run: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="no such model directory"):
        Session.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a tfgb model directory"):
        Session.open(tmp_path / "empty")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(tiny_run / "config.toml", untrained / "config.toml")
    with pytest.raises(ConfigError, match="no checkpoint"):
        Session.open(untrained)
    assert sorted(p.name for p in untrained.iterdir()) == ["config.toml"]  # nothing written


def test_restore_into_another_model_fails_loudly(tiny_run: Path, tmp_path: Path):
    """A checkpoint is read strictly: a model without the trained one's variables is an error, not a
    silently half-restored model."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = load_config(None, [f"data.cache_dir={tmp_path / 'cache'}", *SETS, "model.mgbr.embedding_dim=4"])
    session = Session.create(other, None, run)
    with pytest.raises((AssertionError, ValueError, tf.errors.InvalidArgumentError)):
        session.restore("best")
