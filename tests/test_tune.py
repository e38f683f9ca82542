"""End-to-end: `python -m tfgb.tune` on tiny synthetic data: results, resume, failed trials, bad spaces.

Two trials train for real (the interrupted and resumed search), on data and a model small enough
that a trial takes seconds: 1:9 lists only, one block layer, one GCN layer, |T| = 3. The other
searches replace the trainer with a stand-in (FAKE_TRAIN): they are about the tuner's bookkeeping,
not about training. Each search is a process that spends most of its time starting TensorFlow, so
the ``searches`` fixture runs them all, two at a time (the machine has two cores), and the tests
read what they left.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = ("train.epochs=1", "train.budget_steps=0", "train.eval_every_steps=0", "train.evals_per_epoch=2",
        "train.batch_size=64",
        "train.aux_size=3", "train.valid_max_groups=100", "data.synth.groups=600", "data.synth.users=300",
        "data.synth.items=120", "data.negatives=9", "eval.ks=[10]", "eval.full_max_initiators=0", "model.mgbr.gcn_layers=1",
        "model.mgbr.mlp_hidden=[8]")
# Two searched hyper-parameters (4 combinations); the rest of MGBR's space fixed.
SPACE = ("tune.embedding_dim=[8,16]", "tune.learning_rate=[0.003,0.01]", "tune.num_experts=[2]",
         "tune.mtl_layers=[1]", "tune.alpha=[0.1]", "tune.beta=[1.0]", "tune.beta_a=[0.3]", "tune.beta_b=[0.3]")

# Trials that train nothing: the objective is embedding_dim / 100, the embedding_dims in FAILING raise;
# like the trainer, a trial writes its model dir (here only metrics.json).
FAKE_TRAIN = """
import json, pathlib, sys
import tfgb.train

def train(config, data_dir, model_dir, progress=True):
    if config.model.mgbr.embedding_dim in FAILING:
        raise RuntimeError(f"boom at embedding_dim {config.model.mgbr.embedding_dim}")
    metrics = {"best_valid_objective": config.model.mgbr.embedding_dim / 100, "minutes_per_epoch": 0.0}
    pathlib.Path(model_dir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(model_dir) / "metrics.json").write_text(json.dumps(metrics))
    return metrics

tfgb.train.train = train
from tfgb.tune import main
sys.exit(main(sys.argv[1:]))
"""

# `python -m tfgb.tune` whose trainings SIGKILL the process after the second step of their first epoch.
KILLED_TUNE = """
import os, signal, sys
import tfgb.train

def kill(position):
    if (position.epoch, position.batch) == (0, 1):
        os.kill(os.getpid(), signal.SIGKILL)

train = tfgb.train.train
tfgb.train.train = lambda *args, **kwargs: train(*args, hooks=[kill], **kwargs)
from tfgb.tune import main
sys.exit(main(sys.argv[1:]))
"""


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)


def tune_args(tmp: Path, tune_dir: Path, max_trials: int, *extra: str) -> list[str]:
    args = ["--max-trials", str(max_trials), "--dir", str(tune_dir), "--set", f"data.cache_dir={tmp / 'cache'}"]
    for s in (*TINY, *SPACE, *extra):
        args += ["--set", s]
    return args


def read_trials(tune_dir: Path) -> list[dict]:
    with open(tune_dir / "trials.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def fake(failing: str, tmp: Path, tune_dir: Path, max_trials: int, *extra: str,
         options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """A search with the stand-in trainer (``extra``: --set values); the trials with an embedding_dim in
    ``failing`` raise."""
    script = FAKE_TRAIN.replace("FAILING", failing)
    return run(["-c", script, *tune_args(tmp, tune_dir, max_trials, *extra), *options], tmp)


def mtimes(tune_dir: Path, trials: tuple[str, ...]) -> dict[str, int]:
    return {t: (tune_dir / "trials" / t / "metrics.json").stat().st_mtime_ns for t in trials}


@pytest.fixture(scope="module")
def searches(tmp_path_factory) -> dict:
    """Every search of this module; name -> its CompletedProcess and directories.

    "search": a real 2-trial random search SIGKILLed in the middle of trial 0 ("killed"), then
    resumed. After it: "more" (a copy of it, to 3 trials) and "other" (it again with another space).
    The stand-in searches ("failed", "three", "bayesian") and "bad_space" run beside it.
    """
    root = tmp_path_factory.mktemp("tune")
    out: dict = {}

    def search() -> None:
        tmp, tune_dir = root / "search", root / "search" / "tune"
        tmp.mkdir()
        out["killed"] = run(["-c", KILLED_TUNE, *tune_args(tmp, tune_dir, 2)], tmp)
        out["killed_left_metrics"] = (tune_dir / "trials" / "0" / "metrics.json").exists()
        out["search"] = run(["-m", "tfgb.tune", *tune_args(tmp, tune_dir, 2)], tmp)
        out["search_dir"] = tune_dir
        more = root / "more" / "tune"
        shutil.copytree(tune_dir, more)  # copy2 keeps the mtimes
        out["more_dir"], out["more_before"] = more, mtimes(more, ("0", "1"))

    def stand_in(name: str, failing: str, max_trials: int, *extra: str, options: tuple[str, ...] = ()) -> None:
        tmp = root / name
        tmp.mkdir()
        out[name] = fake(failing, tmp, tmp / "tune", max_trials, *extra, options=options)
        out[f"{name}_dir"] = tmp / "tune"

    def bad_space() -> None:
        tmp = root / "bad_space"
        tmp.mkdir()
        out["bad_space"] = run(["-m", "tfgb.tune", "--dir", str(tmp / "tune"), "--set", "tune.alpha=[]"], tmp)
        out["bad_space_dir"] = tmp / "tune"

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = [pool.submit(search),
                 pool.submit(stand_in, "failed", "(16,)", 3, "tune.embedding_dim=[8,16,32]", "tune.learning_rate=[0.01]"),
                 pool.submit(stand_in, "three", "(8, 16, 32, 64)", 4, "tune.embedding_dim=[8,16,32,64]",
                             "tune.learning_rate=[0.01]"),
                 pool.submit(stand_in, "bayesian", "()", 4, "tune.embedding_dim=[8,16,32]",
                             "tune.learning_rate=[0.003,0.01]", options=("--tuner", "bayesian")),
                 pool.submit(bad_space)]
        first[0].result()  # the searches below continue the real one
        search_tmp = out["search_dir"].parent
        later = [pool.submit(lambda: out.__setitem__("more", fake("()", search_tmp, out["more_dir"], 3))),
                 pool.submit(lambda: out.__setitem__("other", run(
                     ["-m", "tfgb.tune", *tune_args(search_tmp, out["search_dir"], 2, "tune.embedding_dim=[8,32]")],
                     search_tmp)))]
        for future in first + later:
            future.result()
    return out


def test_search_finishes_the_interrupted_trial_and_writes_results(searches: dict):
    assert searches["killed"].returncode == -9, searches["killed"].stderr[-3000:]
    assert not searches["killed_left_metrics"]
    proc, search = searches["search"], searches["search_dir"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already holds this search: resuming" in proc.stderr
    rows = read_trials(search)
    assert [r["trial"] for r in rows] == ["0", "1"]  # the killed trial ran again; no extra trial
    for row in rows:
        assert row["status"] == "completed" and row["error"] == ""
        # The objective is the trial run's own best validation objective (the trainer's, not a stand-in's).
        metrics = json.loads((search / "trials" / row["trial"] / "metrics.json").read_text())
        assert float(row["objective"]) == pytest.approx(metrics["best_valid_objective"], abs=1e-12)
        assert metrics["stop_reason"] == "max_epochs" and math.isfinite(float(row["minutes"]))
        assert row["model.mgbr.embedding_dim"] in ("8", "16") and row["train.learning_rate"] in ("0.003", "0.01")
    assert "model.mamgbr.heads" not in rows[0] and "model.mamgbr.dropout" not in rows[0]  # not MGBR hyper-parameters
    assert sorted(p.name for p in (search / "trials").iterdir()) == ["0", "1"]
    for trial in ("0", "1"):  # one epoch validated twice; the trials learn: the loss falls
        with open(search / "trials" / trial / "history.csv", encoding="utf-8") as fh:
            history = list(csv.DictReader(fh))
        assert len(history) == 2 and history[-1]["epoch"] == "1" and history[-1]["stop_reason"] == "max_epochs"
        assert float(history[1]["loss"]) < float(history[0]["loss"]), history


def test_best_recipe_is_the_best_trial_and_trains(searches: dict):
    """best.toml is the recipe the best trial trained with (so it trains as that trial did), renamed."""
    import tfgb.config as cfg
    from tfgb.train import load_config

    search = searches["search_dir"]
    rows = read_trials(search)
    best = max(rows, key=lambda r: float(r["objective"]))
    recipe = load_config(str(search / "best.toml"), [])  # as `python -m tfgb.train --pipeline best.toml` reads it
    assert recipe.name == "default-tuned"
    assert recipe.model.mgbr.embedding_dim == int(best["model.mgbr.embedding_dim"])
    assert recipe.train.learning_rate == float(best["train.learning_rate"])
    trained = cfg.to_dict(cfg.load(search / "trials" / best["trial"] / "config.toml"))
    assert {**cfg.to_dict(recipe), "name": trained["name"]} == trained


def test_more_trials_runs_only_the_new_ones(searches: dict):
    """The search continued to 3 trials (with the stand-in trainer: the new trial's training is not tested)."""
    proc, tune_dir = searches["more"], searches["more_dir"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already holds this search: resuming" in proc.stderr
    assert mtimes(tune_dir, ("0", "1")) == searches["more_before"]
    assert sorted(p.name for p in (tune_dir / "trials").iterdir()) == ["0", "1", "2"]
    rows = read_trials(tune_dir)
    assert [r["status"] for r in rows] == ["completed"] * 3
    values = {(r["model.mgbr.embedding_dim"], r["train.learning_rate"]) for r in rows}
    assert len(values) == 3  # a new combination, not a repeat


def test_failed_trial_is_reported_with_its_error(searches: dict):
    proc, tune_dir = searches["failed"], searches["failed_dir"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["model.mgbr.embedding_dim"]: r for r in read_trials(tune_dir)}
    assert {k: r["status"] for k, r in rows.items()} == {"8": "completed", "16": "failed", "32": "completed"}
    assert rows["16"]["objective"] == "" and rows["16"]["error"] == "RuntimeError: boom at embedding_dim 16"
    assert f"trial {rows['16']['trial']} failed: RuntimeError: boom at embedding_dim 16" in proc.stderr
    assert "3 trials: 2 completed, 1 failed" in proc.stdout
    assert "embedding_dim = 32" in (tune_dir / "best.toml").read_text()


def test_three_failures_in_a_row_stop_the_search(searches: dict):
    proc, tune_dir = searches["three"], searches["three_dir"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = errors(proc.stderr)  # KerasTuner prints each failed trial's traceback before it
    assert line.startswith("error: search stopped: 3 trials in a row failed"), line
    assert [r["status"] for r in read_trials(tune_dir)] == ["failed"] * 3
    assert not (tune_dir / "best.toml").exists()


def test_bad_space_is_one_sentence(searches: dict):
    proc = searches["bad_space"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert errors(proc.stderr) == ["error: config key 'tune.alpha' is an empty list; give at least one choice"]
    assert not searches["bad_space_dir"].exists()


def test_other_settings_in_the_same_dir_are_refused(searches: dict):
    proc = searches["other"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = errors(proc.stderr)
    assert "other settings" in line and "tune.embedding_dim" in line


def test_bayesian_search_runs_distinct_trials(searches: dict):
    proc, tune_dir = searches["bayesian"], searches["bayesian_dir"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_trials(tune_dir)
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert len({(r["model.mgbr.embedding_dim"], r["train.learning_rate"]) for r in rows}) == 4
    best = max(rows, key=lambda r: float(r["objective"]))
    assert float(best["objective"]) == pytest.approx(int(best["model.mgbr.embedding_dim"]) / 100)
    assert f"embedding_dim = {best['model.mgbr.embedding_dim']}" in (tune_dir / "best.toml").read_text()
