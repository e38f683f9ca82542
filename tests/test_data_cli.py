import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tfgb.data.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
BEIBEI = ROOT.parent / "shared" / "data" / "beibei"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tfgb.data", *args], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def test_synth_then_stats(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--users", "120", "--items", "40", "--groups", "300",
                 "--seed", "3"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "groups.txt"), str(out / "failed.txt")]
    cache = ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.negatives=9"]
    assert main(["stats", str(out), "--json", *cache]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["groups"] == {"read": 300, "kept": 300}
    if "split" in report:  # when tfgb.data.prepare is importable
        assert report["split"]["train"] + report["split"]["valid"] + report["split"]["test"] == 300
    # Counted from the written file: initiator, item, participants... per line.
    rows = [line.split("\t") for line in (out / "groups.txt").read_text().splitlines()]
    assert report["users"]["in_groups"] == len({r[0] for r in rows} | {p for r in rows for p in r[2:]})
    assert report["items"]["in_groups"] == len({r[1] for r in rows})
    assert report["participants_per_group"]["min"] >= 1 and report["participants_per_group"]["max"] <= 3
    assert set(report["degrees"]) == {"initiator", "item", "participant"}
    assert set(report["degrees"]["item"]) == {"p50", "p90", "p99", "max"}
    assert report["failed_launches"]["kept"] > 0
    assert main(["stats", str(out), *cache]) == 0
    text = capsys.readouterr().out
    assert "deal groups             300" in text and "failed launches" in text


def test_stats_with_a_pipeline_recipe(tmp_path, capsys):
    (tmp_path / "g.csv").write_text("buyer,item,participants\nu1,i1,u2;u3\nu2,i2,u1\nu2,i2,u1\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nsource = "files"\nfiles = ["g.csv"]\ninitiator_column = "buyer"\n')
    assert main(["stats", "--pipeline", str(recipe), "--data-dir", str(tmp_path), "--json",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["groups"] == {"read": 3, "kept": 2}  # the repeated group is dropped
    assert report["users"]["in_groups"] == 3 and report["items"]["in_groups"] == 2


def test_stats_of_the_default_synthetic_pipeline(tmp_path, capsys):
    assert main(["stats", "--pipeline", str(ROOT / "pipelines" / "default.toml"), "--json",
                 "--set", f"data.cache_dir={tmp_path}"]) == 0
    import tomllib

    recipe = tomllib.loads((ROOT / "pipelines" / "default.toml").read_text())
    assert json.loads(capsys.readouterr().out)["groups"]["kept"] == recipe["data"]["synth"]["groups"]


def test_stats_reports_split_sizes_when_prepare_is_available(tmp_path, capsys, monkeypatch):
    fake = types.ModuleType("tfgb.data.prepare")
    fake.prepare_split_sizes = lambda config, data_dir: (250, 25, 25)
    monkeypatch.setitem(sys.modules, "tfgb.data.prepare", fake)
    main(["synth", "--out", str(tmp_path), "--users", "120", "--items", "40", "--groups", "300"])
    capsys.readouterr()
    assert main(["stats", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == {"train": 250, "valid": 25, "test": 25}


def test_stats_missing_file_exits_2_with_one_line(tmp_path):
    result = run_cli("stats", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'groups.txt'}: file not found"]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_stats_bad_row_exits_2_naming_file_and_line(tmp_path):
    (tmp_path / "groups.txt").write_text("1\t2\t3\n4\t5\t6\n7\t8\n")
    result = run_cli("stats", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'groups.txt'}, line 3" in lines[0] and "found 2 fields" in lines[0]


def test_stats_bad_recipe_file_exits_2(tmp_path):
    (tmp_path / "r.toml").write_text('[data]\nsource = "files"\nfiles = ["g.csv"]\n')
    result = run_cli("stats", "--pipeline", str(tmp_path / "r.toml"), "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {tmp_path / 'g.csv'}: file not found"


def test_stats_needs_exactly_one_source(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["stats"])
    assert info.value.code == 2


@pytest.mark.realdata
@pytest.mark.skipif(not BEIBEI.is_dir(), reason=f"real Beibei data not found at {BEIBEI}")
def test_beibei_stats(tmp_path):
    result = run_cli("stats", "--pipeline", "pipelines/beibei_mgbr.toml", "--data-dir", str(BEIBEI), "--json",
                     "--set", f"data.cache_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups"] == {"read": 332_826, "kept": 332_826}
    assert report["users"]["in_groups"] == 189_691 and report["items"]["in_groups"] == 30_347
    assert report["failed_launches"]["kept"] == 211_291
