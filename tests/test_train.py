"""End-to-end: `python -m tfgb.train` / `python -m tfgb.evaluate` on the built-in synthetic data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, *args], check=False, cwd=tmp_path, env=full_env, capture_output=True, text=True,
                          timeout=900)


def train_args(model_dir: Path, *sets: str) -> list[str]:
    args = ["-m", "tfgb.train", "--quiet", "--model-dir", str(model_dir),
            "--set", f"data.cache_dir={model_dir.parent / 'cache'}"]
    for s in sets:
        args += ["--set", s]
    return args


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


def test_run_dir_holds_recipe_vocab_history(default_run: Path):
    assert (default_run / "config.toml").exists()
    assert (default_run / "vocab" / "users.txt").exists() and (default_run / "vocab" / "items.txt").exists()
    history = (default_run / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    assert {"loss_a", "loss_b", "aux_a", "aux_b", "valid_objective"} <= set(header)
    assert len(history) - 1 == int(json.loads((default_run / "metrics.json").read_text())["epochs"])


def test_evaluate_cli_reproduces_test_metrics(default_run: Path, tmp_path: Path):
    proc = run(["-m", "tfgb.evaluate", "--quiet", "--model-dir", str(default_run)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    saved = json.loads((default_run / "metrics.json").read_text())["test"]
    for task in ("a", "b"):
        assert result[task]["mrr@10"] == pytest.approx(saved[task]["mrr@10"], abs=1e-6)


@pytest.mark.parametrize("variant", ["mgbr-m", "mgbr-r", "mgbr-g", "mgbr-d", "mgbr-m-r"])
def test_variants_train_and_evaluate(variant: str, tmp_path: Path):
    model_dir = tmp_path / "run"
    proc = run(train_args(model_dir, f"model.name={variant}", "train.epochs=1", "data.synth.groups=1500",
                          "data.synth.users=600", "data.synth.items=150"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["model"] == variant
    for task in ("a", "b"):
        assert 0.0 < metrics["test"][task]["mrr@10"] <= 1.0


SMALL = ("train.epochs=3", "data.synth.groups=1500", "data.synth.users=600", "data.synth.items=150")


def test_block_chunks_train_through_the_cli(tmp_path: Path):
    """train.block_chunk through `tfgb.train` (graph folds on) trains; the equality of its steps with the
    whole batch's is tested in test_mgbr (two runs part by float rounding, which Adam amplifies)."""
    model_dir = tmp_path / "run"
    proc = run(train_args(model_dir, *SMALL, "train.epochs=2", "train.graph_folds=2", "train.batch_size=64",
                          "train.block_chunk=24"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads((model_dir / "metrics.json").read_text())["test"]
    assert test["a"]["mrr@10"] > 0.45, test  # random ranking: 0.29 (task B needs more epochs on this data)
    rows = (model_dir / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in rows[1:]]
    assert len(losses) == 2 and losses[1] < losses[0], losses


@pytest.mark.parametrize("per_epoch, kill_at, kept, folds", [(1, "2:3", 1, 1), (2, "2:6", 3, 1), (2, "2:6", 3, 2)])
def test_killed_run_resumes_and_matches_uninterrupted(per_epoch: int, kill_at: str, kept: int, folds: int,
                                                      tmp_path: Path):
    strict = {"TFGB_DETERMINISTIC": "1"}  # bit-identical kernels even when other processes load the CPU
    recipe = (*SMALL, f"train.evals_per_epoch={per_epoch}", f"train.graph_folds={folds}")
    straight = tmp_path / "straight"
    proc = run(train_args(straight, *recipe), tmp_path, env=strict)
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = tmp_path / "resumed"
    proc = run(train_args(resumed, *recipe), tmp_path, env={"TFGB_KILL_AT": kill_at, **strict})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # One validation per epoch, killed at batch 3 of epoch 2: epoch 1 is complete and checkpointed,
    # nothing of epoch 2 is. Two per epoch (8 batches: parts of 4 and 4), killed at batch 6 of
    # epoch 2: epoch 1 and the first half of epoch 2 are kept, only batches 5-6 of epoch 2 are lost.
    assert len(_history(resumed)) == 1 + kept
    assert not (resumed / "metrics.json").exists()

    proc = run(train_args(resumed, *recipe), tmp_path, env=strict)
    assert proc.returncode == 0, proc.stderr[-3000:]
    straight_rows, resumed_rows = _history(straight), _history(resumed)
    header = straight_rows[0]
    assert len(straight_rows) == len(resumed_rows) == 1 + 3 * per_epoch
    assert [r[0] for r in resumed_rows[1:]] == [r[0] for r in straight_rows[1:]]
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    if not _same_mrr10(a, b):
        # Measured here: two *uninterrupted* runs of this recipe in separate processes, on a heavily
        # loaded machine, can part by one float32 ulp as early as the first training step (2 of 4
        # runs under `nice -n 19`; none in 12 runs at normal priority), after which the best
        # checkpoint may differ. Nothing resumes there, so it is not what this test is about. Run the
        # uninterrupted recipe once more: if it reproduces the first run, the resumed run broke
        # determinism and the test fails; if it does not, the machine was not reproducible during
        # this test and the comparison says nothing either way.
        again = tmp_path / "straight-again"
        proc = run(train_args(again, *recipe), tmp_path, env=strict)
        assert proc.returncode == 0, proc.stderr[-3000:]
        c = json.loads((again / "metrics.json").read_text())
        if not _same_mrr10(a, c) and not _same_mrr10(b, c):
            pytest.xfail("two uninterrupted runs of the same recipe differed on this machine during the test "
                         f"({_parted(straight_rows, _history(again))}); the resume comparison is inconclusive")
        assert _same_mrr10(b, c), (
            f"the resumed run differs from two identical uninterrupted runs; {_parted(straight_rows, resumed_rows)}")
    assert header == resumed_rows[0]


def _same_mrr10(a: dict, b: dict) -> bool:
    """Whether two metrics.json hold bit-identical MRR@10 for both splits and both tasks."""
    return all(a[split][task]["mrr@10"] == b[split][task]["mrr@10"] for split in ("valid", "test") for task in "ab")


def _history(model_dir: Path) -> list[list[str]]:
    """A run's history.csv as rows of fields, the header first."""
    return [r.split(",") for r in (model_dir / "history.csv").read_text().splitlines()]


def _parted(rows: list[list[str]], other: list[list[str]]) -> str:
    """Where two runs' histories first differ (losses or validation metrics), for failure messages."""
    columns = [k for k, key in enumerate(rows[0]) if key.startswith(("loss", "aux_", "valid_"))]
    for n, (x, y) in enumerate(zip(rows[1:], other[1:]), 1):
        if [x[k] for k in columns] != [y[k] for k in columns]:
            return f"histories first differ at row {n}: {x[:7]} vs {y[:7]}"
    return "histories identical"


def test_changed_recipe_is_refused_but_more_epochs_resume(tmp_path: Path):
    model_dir = tmp_path / "run"
    proc = run(train_args(model_dir, "train.epochs=1", *SMALL[1:]), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(train_args(model_dir, "train.epochs=1", "model.embedding_dim=8", *SMALL[1:]), tmp_path)
    assert proc.returncode == 2
    assert "different recipe" in proc.stderr and "Traceback" not in proc.stderr
    # Training longer is not a different recipe: the run resumes after its first epoch.
    proc = run(train_args(model_dir, "train.epochs=2", *SMALL[1:]), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((model_dir / "history.csv").read_text().splitlines()) == 1 + 2


@pytest.mark.parametrize("args, words", [
    (["--set", "model.name=mgbx"], ["unknown model", "mgbr"]),
    (["--set", "train.epoch=3"], ["train.epoch", "train.epochs"]),
    (["--pipeline", "missing.toml"], ["missing.toml", "not found"]),
])
def test_bad_command_lines_exit_2_with_one_sentence(args: list[str], words: list[str], tmp_path: Path):
    proc = run(["-m", "tfgb.train", "--model-dir", str(tmp_path / "run"), *args], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr
