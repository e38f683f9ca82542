"""End-to-end: every new model trains through ``python -m tfgb.train``; ``python -m tfgb.compare`` tabulates.

MGBR and its variants are covered by test_train.py. The CLI runs are started two at a time (the
machine has two cores) by one module fixture and checked by one parametrized test.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tfgb import compare

ROOT = Path(__file__).resolve().parents[1]
TINY = ("train.epochs=1", "train.budget_steps=0", "data.synth.groups=1500", "data.synth.users=600", "data.synth.items=150")
# MAMGBR variants keep both block layers but fewer experts and heads: the test is about the wiring.
SMALL_BLOCK = ("model.mamgbr.num_experts=2", "model.mamgbr.heads=2")
MODELS = ["mamgbr", "mamgbr-m", "mamgbr-mh", "mamgbr-l", "lightgcn", "ngcf", "gbmf", "mf-bpr", "popularity"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    tmp = tmp_path_factory.mktemp("models")
    cache = f"data.cache_dir={tmp / 'cache'}"
    # Prepare the shared data cache once, so that parallel runs only read it.
    first = run(["-m", "tfgb.train", "--quiet", "--model-dir", str(tmp / MODELS[-1]),
                 *sets(f"model.name={MODELS[-1]}", *TINY, cache)], tmp)

    def train(name: str) -> subprocess.CompletedProcess:
        extra = SMALL_BLOCK if name.startswith("mamgbr") else ()
        return run(["-m", "tfgb.train", "--quiet", "--model-dir", str(tmp / name),
                    *sets(f"model.name={name}", *TINY, cache, *extra)], tmp)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(MODELS[:-1], pool.map(train, MODELS[:-1])))
    procs[MODELS[-1]] = first
    return tmp, procs


@pytest.mark.parametrize("name", MODELS)
def test_model_trains_one_epoch_through_the_cli(name: str, trained) -> None:
    tmp, procs = trained
    proc = procs[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp / name / "metrics.json").read_text())
    assert metrics["model"] == name and metrics["epochs"] == 1
    for split in ("valid", "test"):
        for task in ("a", "b"):
            values = metrics[split][task]
            assert set(values) == {"mrr@10", "ndcg@10", "hr@1/10", "hr@5/10",
                                   "mrr@100", "ndcg@100", "hr@10/100", "hr@50/100"}
            assert all(math.isfinite(v) for v in values.values()), values
            assert 0.0 < values["mrr@10"] <= 1.0
    history = (tmp / name / "history.csv").read_text().splitlines()
    assert "loss_a" in history[0].split(",") and len(history) == 2
    assert (metrics["parameters"] == 0) == (name == "popularity")


def test_compare_writes_table_csv_png_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["-m", "tfgb.compare", "--quiet", "--models", "popularity,mf-bpr", "--seeds", "1", "--out", str(out),
            *sets(*TINY, f"data.cache_dir={tmp_path / 'cache'}"), "--set-for", "mf-bpr:train.epochs=2"]
    proc = run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "comparison.md").read_text()
    assert "| popularity |" in table and "| mf-bpr |" in table and "±" in table and "1 epochs" in table
    assert "A MRR@10" in table and "B NDCG@100" in table and "B HR@50/100" in table and "min/epoch" in table
    with open(out / "comparison.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["model"] for row in rows] == ["popularity", "mf-bpr"]
    assert {"a_mrr@10_mean", "a_mrr@10_std", "b_ndcg@100_mean", "a_hr@1/10_mean", "b_hr@10/100_std",
            "parameters", "minutes_per_epoch"} <= set(rows[0])
    assert (out / "mrr10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --set-for changed mf-bpr's runs only, and the budget sentence says so.
    assert [float(row["epochs"]) for row in rows] == [1.0, 2.0]
    assert len((out / "runs" / "mf-bpr-seed1" / "history.csv").read_text().splitlines()) == 3
    assert "mf-bpr: `train.epochs=2`" in table
    finished = {path: path.stat().st_mtime_ns for path in out.glob("runs/*/metrics.json")}
    assert len(finished) == 2

    again = run(args, tmp_path)  # a finished comparison started again retrains nothing
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished earlier") == 2
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    assert (out / "comparison.md").read_text() == table


@pytest.mark.parametrize("extra, words", [
    (["--models", "mgbr,lightgnc"], ["unknown model", "lightgcn"]),
    (["--models", "mgbr", "--set", "train.seed=3"], ["train.seed", "--seeds"]),
    (["--models", "mgbr", "--seeds", "0"], ["--seeds"]),
    (["--models", "mgbr", "--set-for", "lightgcn:train.epochs=2"], ["--set-for", "lightgcn", "not in --models"]),
    (["--models", "mgbr", "--set-for", "mgbr-train.epochs=2"], ["--set-for", "MODEL:KEY=VALUE"]),
])
def test_compare_rejects_bad_arguments_in_one_sentence(extra: list[str], words: list[str], tmp_path: Path,
                                                        capsys) -> None:
    assert compare.main(["--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err
    assert not (tmp_path / "out").exists()


def test_summary_is_mean_and_sample_std_over_seeds() -> None:
    def metrics(a: float, b: float, minutes: float, **extra: float) -> dict:
        task = lambda x: {"mrr@100": x / 2, "hr@1/10": x / 4, "ndcg@100": x / 2, "mrr@10": x, "ndcg@10": x, **extra}
        return {"test": {"a": task(a), "b": task(b)}, "parameters": 10, "minutes_per_epoch": minutes, "epochs": 2}

    # The second run also has an HR the first lacks and an old self-length "hr@10": neither is tabulated.
    rows = compare.summarize({"m": [metrics(0.5, 0.2, 1.0), metrics(0.7, 0.2, 3.0, **{"hr@5/10": 1.0, "hr@10": 1.0})]})
    (row,) = rows
    assert row["a_mrr@10_mean"] == pytest.approx(0.6) and row["a_mrr@10_std"] == pytest.approx(math.sqrt(0.02))
    assert row["b_mrr@10_std"] == 0.0 and row["minutes_per_epoch"] == 2.0 and row["seeds"] == 2
    assert row["a_hr@1/10_mean"] == pytest.approx(0.15)
    assert compare.table_metrics(rows) == ["mrr@10", "ndcg@10", "hr@1/10", "mrr@100", "ndcg@100"]
    table = compare.markdown(rows, "budget")
    assert "| m | 0.6000 ± 0.1414 |" in table
    assert "| model | A MRR@10 | A NDCG@10 | A HR@1/10 | A MRR@100 | A NDCG@100 | B MRR@10 |" in table
    assert "HR@10 " not in table and "HR@5/10" not in table
