"""Tests for tfgb.bench: the ``data`` subcommand on small synthetic data."""
import re

from tfgb import bench

SMALL = ["--set", "data.synth.users=200", "--set", "data.synth.items=50", "--set", "data.synth.groups=800",
         "--set", "data.negatives=20"]


def test_data_prints_every_figure(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the bench must not write a cache (it uses a temporary one)
    assert bench.main(["data", *SMALL, "--aux-size", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("read + encode", "split", "candidates", "graphs", "preparation total", "cache hit load"):
        assert re.search(rf"^{re.escape(label)}\s+\d+\.\d\d s", out, re.MULTILINE), label
    rates = re.findall(r"^stream \((graph|python)\)\s+([\d,]+) triples/s.*aux_size 3", out, re.MULTILINE)
    assert [name for name, _ in rates] == ["graph", "python"] and all(int(r.replace(",", "")) > 0 for _, r in rates)
    assert list(tmp_path.iterdir()) == []


def test_data_with_a_batch_limit(capsys):
    assert bench.main(["data", *SMALL, "--batches", "2"]) == 0
    assert "(512 triples in" in capsys.readouterr().out  # 2 batches of the default batch size 256


def test_user_errors_exit_with_status_2(capsys):
    assert bench.main(["data", "--set", "data.negatives=0"]) == 2
    assert "data.negatives" in capsys.readouterr().err
    assert bench.main(["data", "--set", "data.source='files'"]) == 2  # files without --data-dir
    assert "data" in capsys.readouterr().err


def test_subcommands_are_a_registry():
    assert "data" in bench.COMMANDS
