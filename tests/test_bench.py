"""tfgb.bench on small synthetic data: ``data``, ``train`` and ``eval`` (in this process), and ``block_flops``."""
import re

import pytest

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


def test_every_subcommand_parses_and_is_listed_in_the_help(capsys):
    assert set(bench.COMMANDS) == {"data", "train", "eval", "serve", "allocator"}
    with pytest.raises(SystemExit) as info:
        bench.main(["--help"])
    assert info.value.code == 0
    listed = capsys.readouterr().out
    for name in bench.COMMANDS:
        assert re.search(rf"^\s+{name}\s", listed, re.MULTILINE), name
        with pytest.raises(SystemExit) as info:  # its own arguments (imported lazily) build and parse
            bench.main([name, "--help"])
        assert info.value.code == 0 and "usage: python -m tfgb.bench " + name in capsys.readouterr().out


# -- bench train / eval ------------------------------------------------------------------------

# A small MGBR on small data with 1:9 lists only: the benches' figures, not their size, are tested.
TINY = [arg for pair in ("data.synth.groups=300", "data.synth.users=120", "data.synth.items=60",
                         "data.negatives=9", "eval.ks=[10]", "train.aux_size=3", "model.mgbr.embedding_dim=8",
                         "model.mgbr.num_experts=2", "model.mgbr.gcn_layers=1", "model.mgbr.mtl_layers=1")
        for arg in ("--set", pair)]


def figures(out: str) -> dict[str, str]:
    """The printed ``  name  value`` lines of a bench, name -> value."""
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines() if line.startswith("  ")]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def leading_number(text: str) -> float:
    match = re.match(r"[\d,]+(\.\d+)?", text)
    assert match, text
    return float(match.group(0).replace(",", ""))


def test_bench_train_prints_every_figure_and_they_are_positive(capsys, tmp_path):
    import json
    import math

    report = tmp_path / "report.json"
    assert bench.main(["train", *TINY, "--steps", "1", "--report-json", str(report)]) == 0
    out = figures(capsys.readouterr().out)
    for label in ("batch (triples)", "aux size |T|", "scored rows per step", "seconds per step",
                  "with the readable block instead", "fused / readable (speed ratio)", "graph propagation (fwd+bwd)",
                  "the rest (block, heads, losses, update)", "scored rows per second", "triples per second",
                  "deal groups per second", "multi-task block FLOPs per step (fwd+bwd)",
                  "block FLOP/s (over the rest of the step)", "dense matmul FLOP/s, same run", "block / dense matmul"):
        assert label in out, (label, out)
    assert leading_number(out["batch (triples)"]) == 256 and leading_number(out["aux size |T|"]) == 3
    # 256 triples, each scored on 4 + 2|T| rows (A and B positives and negatives, the two aux sets)
    assert leading_number(out["scored rows per step"]) == 256 * (4 + 2 * 3)
    for label in ("seconds per step", "scored rows per second", "triples per second", "deal groups per second",
                  "dense matmul FLOP/s, same run"):
        assert leading_number(out[label]) > 0, (label, out[label])
    # Small figures print rounded (e.g. 0.0 GFLOP); the report holds them unrounded: all positive.
    values = json.loads(report.read_text())["values"]
    assert {"seconds per step", "propagation seconds", "rest seconds", "block GFLOP/s", "dense matmul GFLOP/s",
            "block / dense matmul", "readable block seconds per step", "fused / readable speed"} <= set(values)
    assert all(math.isfinite(v) and v > 0 for v in values.values()), values
    assert f"{values['seconds per step']:.3f}" == out["seconds per step"]


def test_bench_eval_prints_every_figure_and_they_are_positive(capsys, tmp_path):
    import json
    import math

    report = tmp_path / "report.json"
    assert bench.main(["eval", *TINY, "--steps", "1", "--report-json", str(report)]) == 0
    out = figures(capsys.readouterr().out)
    lists = re.fullmatch(r"([\d,]+) x (\d+) candidates", out["lists scored (both tasks)"])
    assert lists and int(lists.group(1)) > 0 and lists.group(1) != "0" and lists.group(2) == "10"
    for label in ("propagation, once", "candidates scored per second", "projected full test evaluation",
                  "peak resident memory"):
        assert label in out and leading_number(out[label]) >= 0, (label, out)
    assert leading_number(out["candidates scored per second"]) > 0
    values = json.loads(report.read_text())["values"]
    assert set(values) == {"propagation seconds", "candidates scored per second",
                           "projected full test evaluation (s)", "peak RSS in-process (GiB)"}
    assert all(math.isfinite(v) and v > 0 for v in values.values()), values


# -- block_flops against a count by hand ---------------------------------------------------------

def test_block_flops_of_one_layer_counted_by_hand():
    """d = 2 (input width w = 2d = 4), K = 1, L = 1, shared experts, alpha != 0, heads [3].

    Per distinct initiator / item / participant (2 + 3 + 4 = 9), its 4-wide token goes through the
    layer-1 kernels: experts A, B, S (K d = 2 columns each), generic gates A and B (2K = 2 columns
    each: over [E_A; E_S] and [E_B; E_S]; no gate S in the last layer) and the 4 adjusted gates that
    contain its part (2 tasks x 2 pairs, K = 1 column each): 6 + 4 + 4 = 14 columns, 9 x 4 x 14 = 504
    multiply-adds. Mixing, per row of a task: 2 groups x K experts x d = 4 (the adjusted gates'
    weights are added to the generic ones first): 5 rows of A and 3 of B, 32. Heads d -> 3 -> 1:
    2 x 3 + 3 = 9 per row, 72. 504 + 32 + 72 = 608 multiply-adds, 1216 FLOPs.
    """
    from tfgb.bench.train import block_flops

    flops = block_flops(rows_a=5, rows_b=3, rows=7, distinct={"u": 2, "i": 3, "p": 4}, width=4, d=2, k=1, layers=1,
                        shared=True, alpha=0.1, hidden=[3])
    assert flops == 2 * (504 + 32 + 72)


def test_block_flops_of_two_layers_with_the_head_folded_counted_by_hand():
    """d = 2, K = 1, L = 2, heads [1]: h = 1 < d, so layer 2's experts carry the head's first layer
    (h = 1 column each instead of d = 2).

    Per distinct id (9), 4 wide: layer-1 experts A, B, S (2 columns each), layer-1 gates A, B
    (2 each) and S (3: over [E_A; E_S; E_B]), the adjusted gates of both layers (2 x 4 x 1): 6 + 7 + 8
    = 21 columns, 9 x 4 x 21 = 756. Layer-1 mixing on all 7 rows (later layers need g_A, g_B, g_S
    of every row): 4 + 4 + 6 = 14 per row, 98. Layer 2 per task row (5 + 3 = 8): its task's expert
    and generic gate on g_X || g_S (4 wide, 1 + 2 columns) 12, expert S on g_A || g_S || g_B (6 wide,
    1 column) 6, mixing 2 groups x 1 expert x 1 column 2, the rest of the head (1 -> 1) 1: 21 per
    row, 168. 756 + 98 + 168 = 1022 multiply-adds.
    """
    from tfgb.bench.train import block_flops

    flops = block_flops(rows_a=5, rows_b=3, rows=7, distinct={"u": 2, "i": 3, "p": 4}, width=4, d=2, k=1, layers=2,
                        shared=True, alpha=0.1, hidden=[1])
    assert flops == 2 * (756 + 98 + 168)
    # With a head as wide as d nothing folds: layer 2's experts keep d columns, the head keeps d -> 2 -> 1,
    # and expert S runs once per row (7), its output read by both tasks' gates (folded, it carries each
    # task's head kernel: once per task row). Per task row: expert + gate 4 x (2 + 2) = 16, mixing
    # 2 x 2 = 4, head 2 x 2 + 2 = 6; per row: expert S 6 x 2 = 12.
    unfolded = block_flops(rows_a=5, rows_b=3, rows=7, distinct={"u": 2, "i": 3, "p": 4}, width=4, d=2, k=1,
                           layers=2, shared=True, alpha=0.1, hidden=[2])
    assert unfolded == 2 * (756 + 98 + 8 * (16 + 4 + 6) + 7 * 12)
