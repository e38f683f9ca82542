"""Training: the CLI on the default recipe, how long a run trains (patience, budgets, two data sizes),
resume after SIGKILL, and the errors of the command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfgb import train as training
from tfgb.config import TrainConfig
from tfgb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# Small synthetic data (1,208 training groups, 1,823 triples: 8 batches of 256), a small MGBR, the
# validation cadence and the budget in epochs (the default recipe's step budget and cadence off).
# eval.full_max_initiators=0: these tests check training, not the all-item protocol (tests/test_full_catalog.py does)
DATA = ("data.synth.groups=1500", "data.synth.users=600", "data.synth.items=150", "eval.full_max_initiators=0")
SMALL = (*DATA, "train.epochs=3", "train.budget_steps=0", "train.eval_every_steps=0")
TINY_MODEL = ("model.mgbr.embedding_dim=8", "model.mgbr.num_experts=2", "model.mgbr.mtl_layers=1",
              "model.mgbr.mlp_hidden=[8]")

# `python -m tfgb.train` with a hook that SIGKILLs the process after step BATCH (0-based) of EPOCH
# (0-based): as abrupt as a power cut or an OOM kill, nothing is flushed or cleaned up.
KILLED_TRAIN = """
import os, signal, sys
from tfgb.train import main

def kill(position):
    if (position.epoch, position.batch) == ({epoch}, {batch}):
        os.kill(os.getpid(), signal.SIGKILL)

sys.exit(main(sys.argv[1:], hooks=[kill]))
"""


def run(args: list[str], tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, *args], check=False, cwd=tmp_path, env=full_env, capture_output=True, text=True,
                          timeout=900)


def train_args(model_dir: Path, *sets: str) -> list[str]:
    args = ["--quiet", "--model-dir", str(model_dir), "--set", f"data.cache_dir={model_dir.parent / 'cache'}"]
    for s in sets:
        args += ["--set", s]
    return args


def train_here(model_dir: Path, *sets: str, hooks=()) -> dict:
    """``tfgb.train.train`` in this process; returns metrics.json."""
    config = training.load_config(None, [f"data.cache_dir={model_dir.parent / 'cache'}", *sets])
    return training.train(config, None, model_dir, progress=False, hooks=hooks)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """The default recipe, trained once through the CLI exactly as a new user would run it."""
    tmp = tmp_path_factory.mktemp("default")
    proc = run(["-m", "tfgb.train", "--quiet", "--model-dir", str(tmp / "run")], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


def test_default_recipe_learns_both_tasks(default_run: Path):
    metrics = json.loads((default_run / "metrics.json").read_text())
    test = metrics["test"]
    # Random ranking of 1 positive among 10 gives MRR@10 = 0.293; popularity alone ~0.50 (A) / ~0.35 (B).
    assert test["a"]["mrr@10"] > 0.6, test
    assert test["b"]["mrr@10"] > 0.6, test
    for task in ("a", "b"):
        assert set(test[task]) == {"mrr@10", "ndcg@10", "hr@1/10", "hr@5/10", "mrr@100", "ndcg@100", "hr@10/100",
                                   "hr@50/100"}


def test_default_recipe_trains_12_epochs_validated_once_each(default_run: Path):
    assert (default_run / "config.toml").exists()
    assert (default_run / "vocab" / "users.txt").exists() and (default_run / "vocab" / "items.txt").exists()
    metrics = json.loads((default_run / "metrics.json").read_text())
    history = _history(default_run)
    header = history[0]
    assert {"step", "epoch", "loss_a", "loss_b", "aux_a", "aux_b", "valid_objective", "since_best",
            "stop_reason"} <= set(header)
    epochs, reason = metrics["epochs"], metrics["stop_reason"]
    # 48 steps per epoch on this data: the step budget (576) and the cadence (48) are 12 epochs and one epoch,
    # unless patience (4 validations without a better objective) ends the run first: where the best epoch
    # falls depends on the CPU's floating-point paths (the recipe's comment).
    assert metrics["steps"] == 48 * epochs
    assert [row[header.index("step")] for row in history[1:]] == [str(48 * e) for e in range(1, epochs + 1)]
    assert [row[header.index("epoch")] for row in history[1:]] == [str(e) for e in range(1, epochs + 1)]
    assert [row[header.index("stop_reason")] for row in history[1:]] == [""] * (epochs - 1) + [reason]
    objective = [float(row[header.index("valid_objective")]) for row in history[1:]]
    best = int(np.argmax(objective)) + 1
    if reason == "max_epochs":
        assert epochs == 12 and 12 - best < 4
    else:
        assert reason == "patience" and epochs < 12 and epochs - best == 4, (reason, epochs, best)
        assert int(history[-1][header.index("since_best")]) == 4


def test_evaluate_cli_reproduces_test_metrics(default_run: Path, tmp_path: Path):
    proc = run(["-m", "tfgb.evaluate", "--quiet", "--model-dir", str(default_run)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    saved = json.loads((default_run / "metrics.json").read_text())["test"]
    for task in ("a", "b"):
        assert result[task]["mrr@10"] == pytest.approx(saved[task]["mrr@10"], abs=1e-6)


def test_evaluate_cli_scenario_protocol_breaks_task_b_down_by_head_and_tail(default_run: Path, tmp_path: Path):
    proc = run(["-m", "tfgb.evaluate", "--quiet", "--model-dir", str(default_run), "--protocol", "scenario"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    saved = json.loads((default_run / "metrics.json").read_text())["test"]["b"]
    for k, mrr in (("10", saved["mrr@10"]), ("100", saved["mrr@100"])):
        report = result["by_scenario"][k]
        # the whole test split, scored as the run's own test metrics score it (a derived tree: an mgbr run
        # saves none)
        assert report["all"]["mrr"] == pytest.approx(mrr, abs=1e-6)
        assert report["head"]["lists"] + report["tail"]["lists"] == report["all"]["lists"]
        assert report["head"]["leaves"] + report["tail"]["leaves"] == report["all"]["leaves"]
        assert 0 < report["tail"]["lists"] < report["head"]["lists"]
    assert result["categories"]["source"] == "derived"
    proc = run(["-m", "tfgb.evaluate", "--quiet", "--model-dir", str(default_run), "--protocol", "scenario",
                "--categories-from", str(tmp_path)], tmp_path)
    assert proc.returncode != 0 and "no saved scenario tree" in proc.stderr


# -- how long a run trains --------------------------------------------------------------------

def plan(steps_per_epoch: int, **train) -> training.Plan:
    return training.Plan.of(TrainConfig(**train), steps_per_epoch)


def test_validations_follow_steps_or_parts_of_epochs():
    every = plan(8, epochs=1, budget_steps=20, eval_every_steps=6)
    assert every.total == 20 and every.by_steps
    assert [every.next_validation(s) for s in (0, 5, 6, 12, 18, 19)] == [6, 6, 12, 18, 20, 20]
    parts = plan(8, epochs=2, evals_per_epoch=3)  # parts end at floor(8 k / 3) = 2, 5, 8 of each epoch
    assert parts.total == 16 and not parts.by_steps
    assert [parts.next_validation(s) for s in (0, 2, 5, 7, 8, 10, 13)] == [2, 5, 8, 8, 10, 13, 16]
    assert [parts.epochs(s) for s in (8, 10, 16)] == [1, 1.25, 2]


@pytest.mark.parametrize("progress, train, reason", [
    ({"step": 40, "since_best": 2, "seconds": 0.0}, {"patience": 3}, None),
    ({"step": 40, "since_best": 3, "seconds": 0.0}, {"patience": 3}, "patience"),
    ({"step": 40, "since_best": 30, "seconds": 0.0}, {"patience": 0}, None),  # patience off
    ({"step": 80, "since_best": 0, "seconds": 0.0}, {}, "max_epochs"),  # 10 epochs of 8 steps
    ({"step": 80, "since_best": 0, "seconds": 0.0}, {"budget_steps": 90}, None),
    ({"step": 90, "since_best": 0, "seconds": 0.0}, {"budget_steps": 90}, "budget_steps"),
    ({"step": 40, "since_best": 0, "seconds": 59.0}, {"max_minutes": 1.0}, None),
    ({"step": 40, "since_best": 0, "seconds": 60.0}, {"max_minutes": 1.0}, "max_minutes"),
])
def test_stop_reason(progress: dict, train: dict, reason: str | None):
    config = TrainConfig(epochs=10, **train)
    assert training.stop_reason(training.Plan.of(config, 8), progress, config) == reason


@pytest.mark.parametrize("key", ["train.budget_steps=-1", "train.patience=-1", "train.eval_every_steps=-2",
                                 "train.max_minutes=-0.5"])
def test_negative_training_lengths_are_refused(key: str):
    from tfgb import config as cfg

    with pytest.raises(ConfigError, match=key.split("=")[0]):
        cfg.load(overrides=[key])


def test_one_recipe_trains_longer_on_smaller_data(tmp_path: Path):
    """A recipe written for ~24 steps per epoch (the longer of 1 epoch and 20 steps, validated every 5
    steps) trains one epoch of that data and 20 steps (several epochs) of data a fifth of its size."""
    recipe = (*TINY_MODEL, "train.batch_size=128", "train.epochs=1", "train.budget_steps=20",
              "train.eval_every_steps=5", "train.valid_max_groups=100")
    large = train_here(tmp_path / "large", *recipe, "data.synth.groups=2500", "data.synth.users=800",
                       "data.synth.items=200")
    small = train_here(tmp_path / "small", *recipe, "data.synth.groups=500", "data.synth.users=400",
                       "data.synth.items=150")
    large_rows, small_rows = _history(tmp_path / "large"), _history(tmp_path / "small")
    assert large["stop_reason"] == "max_epochs" and large["epochs"] == 1 and large["steps"] > 20
    assert small["stop_reason"] == "budget_steps" and small["steps"] == 20 and small["epochs"] > 3
    assert [row[0] for row in small_rows[1:]] == ["5", "10", "15", "20"]  # the step column
    assert len(large_rows) - 1 == -(-large["steps"] // 5)  # every 5 steps and at the end of the epoch


def test_patience_stops_when_validation_stops_improving(tmp_path: Path):
    """With a learning rate too small to move a float32 weight, every validation scores the first one's
    objective: the best stays the first and the run stops after `patience` more validations."""
    metrics = train_here(tmp_path / "run", *DATA, *TINY_MODEL, "train.learning_rate=1e-12", "train.epochs=10",
                         "train.budget_steps=0", "train.eval_every_steps=2", "train.patience=3",
                         "train.valid_max_groups=100")
    assert metrics["stop_reason"] == "patience"
    assert (metrics["steps"], metrics["best_step"]) == (8, 2)  # validations at 2 (best), 4, 6, 8
    rows = _history(tmp_path / "run")
    header = rows[0]
    assert [row[header.index("since_best")] for row in rows[1:]] == ["0", "1", "2", "3"]
    assert len({row[header.index("valid_objective")] for row in rows[1:]}) == 1


def test_time_budget_ends_the_run_within_a_step(tmp_path: Path):
    steps = []
    metrics = train_here(tmp_path / "run", *DATA, *TINY_MODEL, "train.epochs=10", "train.budget_steps=0",
                         "train.max_minutes=0.0001", "train.valid_max_groups=100", hooks=[steps.append])
    assert metrics["stop_reason"] == "max_minutes"
    # 6 ms of budget: the first step (which traces the training function) already spends it.
    assert metrics["steps"] == 1 and [(p.step, p.epoch, p.batch) for p in steps] == [(1, 0, 0)]
    assert len(_history(tmp_path / "run")) == 1 + 1


def _history(model_dir: Path) -> list[list[str]]:
    """A run's history.csv as rows of fields, the header first."""
    return [r.split(",") for r in (model_dir / "history.csv").read_text().splitlines()]


@pytest.mark.parametrize("args, words", [
    (["--set", "model.name=mgbx"], ["unknown model", "mgbr"]),
    (["--set", "train.epoch=3"], ["train.epoch", "train.epochs"]),
    (["--pipeline", "missing.toml"], ["missing.toml", "not found"]),
])
def test_bad_command_lines_exit_2_with_one_sentence(args: list[str], words: list[str], tmp_path: Path, capsys):
    assert training.main(["--model-dir", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    for w in words:
        assert w in err
