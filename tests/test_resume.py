"""Resume: a run SIGKILLed mid-epoch resumes and ends as the uninterrupted run does; a changed recipe is
refused while a longer budget of the same recipe resumes. (Split from test_train.py so that the two
pytest-xdist workers share the long CLI runs.)"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from test_train import (
    KILLED_TRAIN,
    SMALL,
    TINY_MODEL,
    _history,
    run,
    train_args,
    train_here,
)

from tfgb.errors import ConfigError

# -- resume --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cadence, kill_at, kept, folds", [
    pytest.param("train.evals_per_epoch=2", (1, 5), 3, 2, id="folds-2-per-epoch"),
    pytest.param("train.evals_per_epoch=1", (1, 2), 1, 1, id="1-per-epoch", marks=pytest.mark.slow),
    pytest.param("train.evals_per_epoch=2", (1, 5), 3, 1, id="2-per-epoch", marks=pytest.mark.slow),
    pytest.param("train.eval_every_steps=3", (1, 3), 3, 1, id="every-3-steps", marks=pytest.mark.slow),
])
def test_killed_run_resumes_and_matches_uninterrupted(cadence: str, kill_at: tuple[int, int], kept: int,
                                                      folds: int, tmp_path: Path):
    """3 epochs of 8 steps. Killed after batch kill_at[1] (0-based) of epoch kill_at[0]: with two
    validations per epoch (parts of 4 and 4), epoch 1 and the first half of epoch 2 are kept and
    batches 5-6 of epoch 2 are lost; with one per epoch only epoch 1 is kept; every 3 steps, the
    validations at steps 3, 6 and 9 (the one at 9 spans epochs 1 and 2) are kept."""
    strict = {"TFGB_DETERMINISTIC": "1"}  # bit-identical kernels even when other processes load the CPU
    recipe = (*SMALL, *TINY_MODEL, cadence, f"train.graph_folds={folds}", "train.patience=2")
    straight = tmp_path / "straight"
    proc = run(["-m", "tfgb.train", *train_args(straight, *recipe)], tmp_path, env=strict)
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = tmp_path / "resumed"
    script = KILLED_TRAIN.format(epoch=kill_at[0], batch=kill_at[1])
    proc = run(["-c", script, *train_args(resumed, *recipe)], tmp_path, env=strict)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert len(_history(resumed)) == 1 + kept
    assert not (resumed / "metrics.json").exists()

    proc = run(["-m", "tfgb.train", *train_args(resumed, *recipe)], tmp_path, env=strict)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr
    straight_rows, resumed_rows = _history(straight), _history(resumed)
    header = straight_rows[0]
    assert header == resumed_rows[0]
    columns = [header.index(key) for key in ("step", "epoch", "since_best", "stop_reason")]
    assert [[r[k] for k in columns] for r in resumed_rows[1:]] == [[r[k] for k in columns] for r in straight_rows[1:]]
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert (b["steps"], b["stop_reason"]) == (a["steps"], a["stop_reason"])
    if not _same_mrr10(a, b):
        # Measured here: two *uninterrupted* runs of this recipe in separate processes, on a heavily
        # loaded machine, can part by one float32 ulp as early as the first training step (2 of 4
        # runs under `nice -n 19`; none in 12 runs at normal priority), after which the best
        # checkpoint may differ. Nothing resumes there, so it is not what this test is about. Run the
        # uninterrupted recipe once more: if it reproduces the first run, the resumed run broke
        # determinism and the test fails; if it does not, the machine was not reproducible during
        # this test and the comparison says nothing either way.
        again = tmp_path / "straight-again"
        proc = run(["-m", "tfgb.train", *train_args(again, *recipe)], tmp_path, env=strict)
        assert proc.returncode == 0, proc.stderr[-3000:]
        c = json.loads((again / "metrics.json").read_text())
        if not _same_mrr10(a, c) and not _same_mrr10(b, c):
            pytest.xfail("two uninterrupted runs of the same recipe differed on this machine during the test "
                         f"({_parted(straight_rows, _history(again))}); the resume comparison is inconclusive")
        assert _same_mrr10(b, c), (
            f"the resumed run differs from two identical uninterrupted runs; {_parted(straight_rows, resumed_rows)}")


def _same_mrr10(a: dict, b: dict) -> bool:
    """Whether two metrics.json hold bit-identical MRR@10 for both splits and both tasks."""
    return all(a[split][task]["mrr@10"] == b[split][task]["mrr@10"] for split in ("valid", "test") for task in "ab")


def _parted(rows: list[list[str]], other: list[list[str]]) -> str:
    """Where two runs' histories first differ (losses or validation metrics), for failure messages."""
    columns = [k for k, key in enumerate(rows[0]) if key.startswith(("loss", "aux_", "valid_"))]
    for n, (x, y) in enumerate(zip(rows[1:], other[1:]), 1):
        if [x[k] for k in columns] != [y[k] for k in columns]:
            return f"histories first differ at row {n}: {x[:7]} vs {y[:7]}"
    return "histories identical"


def test_changed_recipe_is_refused_but_a_longer_budget_resumes(tmp_path: Path):
    """In-process; block chunks and graph folds on, so that their training path runs too."""
    model_dir = tmp_path / "run"
    recipe = (*SMALL, *TINY_MODEL, "train.graph_folds=2", "train.batch_size=64", "train.block_chunk=24",
              "train.valid_max_groups=200")
    first = train_here(model_dir, *recipe, "train.epochs=1")
    with pytest.raises(ConfigError, match="different recipe"):
        train_here(model_dir, *recipe, "train.epochs=1", "model.mgbr.embedding_dim=16")
    # Training longer is not a different recipe: the run resumes after its first epoch.
    second = train_here(model_dir, *recipe, "train.epochs=2")
    assert (first["steps"], second["steps"]) == (30, 60)  # per epoch two folds of 15 batches of 64
    rows = _history(model_dir)
    # The resumed epoch learned: its validation objective beats the first epoch's (measured 0.422 -> 0.433 on
    # this data; the epoch's mean training loss is no signal here: 1.786 -> 1.909, then 1.710 and 1.656).
    objective = [float(row[rows[0].index("valid_objective")]) for row in rows[1:]]
    assert len(objective) == 2 and objective[1] > objective[0], objective


