"""The memory allocator: chosen before TensorFlow loads, the user's own setting kept, bench side by side."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tfgb import allocator
from tfgb.bench import allocators as bench_allocators
from tfgb.errors import ConfigError

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def _resolve(env: dict, command: bool = True, jemalloc: str | None = JEMALLOC, loaded: bool = False):
    return allocator.resolve(env, command, jemalloc, loaded)


def test_default_is_bfc_for_commands_and_libraries_with_or_without_jemalloc():
    for command, jemalloc in ((True, JEMALLOC), (True, None), (False, JEMALLOC)):
        env: dict = {}
        choice, reexec = _resolve(env, command=command, jemalloc=jemalloc)
        assert (choice.allocator, reexec, env["TF_CPU_ALLOCATOR_USE_BFC"]) == ("bfc", None, "true")


def test_jemalloc_without_the_library_or_outside_a_command_falls_back_to_bfc():
    env: dict = {"TFGB_ALLOCATOR": "jemalloc"}
    choice, reexec = _resolve(env, jemalloc=None)
    assert (choice.allocator, reexec, env["TF_CPU_ALLOCATOR_USE_BFC"]) == ("bfc", None, "true")
    assert "no libjemalloc" in choice.reason
    env = {"TFGB_ALLOCATOR": "jemalloc"}
    choice, reexec = _resolve(env, command=False)  # import tfgb in a notebook: cannot preload any more
    assert (choice.allocator, reexec, env["TF_CPU_ALLOCATOR_USE_BFC"]) == ("bfc", None, "true")
    assert "not a tfgb command" in choice.reason


def test_a_command_reexecutes_once_with_jemalloc():
    env: dict = {"LD_PRELOAD": "/opt/libother.so", "TFGB_ALLOCATOR": "jemalloc"}
    choice, reexec = _resolve(env)
    assert choice.allocator == "jemalloc" and reexec is not None
    assert reexec["LD_PRELOAD"] == f"{JEMALLOC}:/opt/libother.so"
    assert reexec["MALLOC_CONF"] == allocator.JEMALLOC_CONF
    # the re-executed process finds jemalloc loaded and does not re-execute again
    choice, again = _resolve(reexec, loaded=True)
    assert (choice.allocator, again, reexec["TF_CPU_ALLOCATOR_USE_BFC"]) == ("jemalloc", None, "false")
    # ... and if the preload failed, it falls back to bfc instead of looping
    env = dict(reexec)
    del env["TF_CPU_ALLOCATOR_USE_BFC"]
    env["LD_PRELOAD"] = "/opt/libother.so"
    choice, again = _resolve(env, loaded=False)
    assert (choice.allocator, again) == ("bfc", None)


def test_user_settings_win():
    for env in ({"TF_CPU_ALLOCATOR_USE_BFC": "false"}, {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TFGB_ALLOCATOR": "bfc"},
                {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}):
        before = dict(env)
        choice, reexec = _resolve(env)
        assert (choice.allocator, reexec, env) == ("user", None, before)
    env = {"TFGB_ALLOCATOR": "jemalloc", "MALLOC_CONF": "narenas:2"}  # the user's own jemalloc settings
    _, reexec = _resolve(env)
    assert reexec["MALLOC_CONF"] == "narenas:2"


def test_explicit_choices_and_a_bad_value():
    env = {"TFGB_ALLOCATOR": "system"}
    assert _resolve(env)[0].allocator == "system" and env["TF_CPU_ALLOCATOR_USE_BFC"] == "false"
    env = {"TFGB_ALLOCATOR": "BFC"}
    assert _resolve(env)[0].allocator == "bfc" and env["TF_CPU_ALLOCATOR_USE_BFC"] == "true"
    with pytest.raises(allocator.AllocatorError, match="not one of auto, bfc, jemalloc, system"):
        _resolve({"TFGB_ALLOCATOR": "pool"})


def test_command_detection():
    assert allocator.tfgb_command(["python", "-m", "tfgb.train", "--pipeline", "x"])
    assert allocator.tfgb_command(["python", "-u", "-m", "tfgb.bench", "train"])
    assert not allocator.tfgb_command(["python", "-m", "pytest", "-m", "tfgb.x"])
    assert not allocator.tfgb_command(["python", "-c", "import tfgb", "-m", "tfgb.train"])
    assert not allocator.tfgb_command(["python", "script.py", "-m", "tfgb.train"])


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in bench_allocators.USER_VARIABLES}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=False,
                          timeout=120)


# TensorFlow's BFC pool honours a memory limit; its default allocator (malloc) does not. Allocating
# 64 MiB under a 32 MiB limit therefore shows which allocator TensorFlow really uses.
_ALLOCATE = """
import sys, tfgb
loaded_before = "tensorflow" in sys.modules
import tensorflow as tf
try:
    tf.zeros([64 * 2**20 // 4]) + 1.0
    outcome = "allocated"
except tf.errors.ResourceExhaustedError:
    outcome = "exhausted"
print(loaded_before, tfgb.allocator.CURRENT.allocator, outcome)
"""


def test_import_applies_the_pool_before_tensorflow_loads_and_keeps_the_users_setting():
    cases = [({}, ["False", "bfc", "exhausted"]), ({"TFGB_ALLOCATOR": "system"}, ["False", "system", "allocated"]),
             ({"TF_CPU_ALLOCATOR_USE_BFC": "false"}, ["False", "user", "allocated"])]  # the last: the user's own
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:  # three independent processes at once
        outs = list(pool.map(lambda case: _python(_ALLOCATE, TF_CPU_BFC_MEM_LIMIT_IN_MB="32", **case[0]), cases))
    for (_, want), out in zip(cases, outs):
        assert out.stdout.split() == want, out.stderr[-2000:]


def test_a_bad_value_stops_a_command_with_one_sentence():
    clean = {k: v for k, v in os.environ.items() if k not in bench_allocators.USER_VARIABLES}
    out = subprocess.run([sys.executable, "-m", "tfgb.bench", "allocator"], env={**clean, "TFGB_ALLOCATOR": "pool"},
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: TFGB_ALLOCATOR='pool' is not one of auto, bfc, jemalloc, system"


@pytest.mark.skipif(allocator.jemalloc_library() is None, reason="this system has no libjemalloc")
def test_a_command_runs_with_jemalloc_preloaded_when_asked_and_the_system_has_it():
    clean = {k: v for k, v in os.environ.items() if k not in bench_allocators.USER_VARIABLES}
    out = subprocess.run([sys.executable, "-m", "tfgb.bench", "allocator"], env={**clean, "TFGB_ALLOCATOR": "jemalloc"},
                         capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["allocator", "jemalloc"]
    assert "jemalloc loaded           True" in out.stdout
    assert f"MALLOC_CONF               {allocator.JEMALLOC_CONF}" in out.stdout


def test_bench_allocator_options():
    assert bench_allocators.parse("bfc, System") == ["bfc", "system"]
    for bad in ("", "bfc,pool", "bfc,bfc"):
        with pytest.raises(ConfigError):
            bench_allocators.parse(bad)
    argv = ["train", "--steps", "2", "--allocators", "bfc,system", "--report-json=x", "--set", "a=b"]
    assert bench_allocators.strip_option(bench_allocators.strip_option(argv, "--allocators"), "--report-json") == [
        "train", "--steps", "2", "--set", "a=b"]


def test_rounds_report_the_median_of_each_figure():
    runs = [{"title": "t", "values": {"s": s}, "process": {"rss": r}} for s, r in ((3.0, 1.0), (1.0, 5.0), (2.0, 2.0))]
    assert bench_allocators.median_of(runs) == {"title": "t", "values": {"s": 2.0}, "process": {"rss": 2.0}}
    assert "medians of 3 rounds" in bench_allocators.format_table({"bfc": bench_allocators.median_of(runs)}, 3)


def test_side_by_side_table_has_every_figure_and_the_ratios():
    results = {
        "bfc": {"title": "bench train: t", "values": {"seconds per step": 2.0}, "process": {"peak RSS (GiB)": 4.0}},
        "system": {"title": "bench train: t", "values": {"seconds per step": 5.0}, "process": {"peak RSS (GiB)": 3.0}},
    }
    table = bench_allocators.format_table(results).splitlines()
    assert "ratios: each / bfc" in table[0]
    assert table[1].split() == ["bfc", "system", "system/bfc"]
    assert table[2].split()[-3:] == ["2.000", "5.000", "2.50"]
    assert table[3].split()[-3:] == ["4.000", "3.000", "0.75"]


def test_bench_train_side_by_side_runs_each_allocator_in_its_own_process(capsys):
    from tfgb import bench

    # Small data, 1:9 lists only and a cheap model: the test is about running each allocator in its own
    # process and tabulating, not about the model (bench train on MGBR: tests/test_bench.py).
    small = [arg for pair in ("data.synth.groups=300", "data.synth.users=120", "data.synth.items=60",
                              "data.negatives=9", "eval.ks=[10]", "model.name=mf-bpr") for arg in ("--set", pair)]
    assert bench.main(["train", *small, "--steps", "1", "--allocators", "bfc,system"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== allocator bfc") == 1 and out.count("=== allocator system") == 1
    table = out[out.index("allocators side by side"):].splitlines()
    rows = {line.split("  ")[1].strip(): line for line in table[2:] if line.strip()}
    for key in ("seconds per step", "block / dense matmul", "system share of CPU", "minor page faults (M)",
                "peak RSS (GiB)"):
        cells = rows[key].split()[-3:]
        assert all(cell != "-" for cell in cells), rows[key]
    assert float(rows["peak RSS (GiB)"].split()[-3]) > 0.1  # each child's own peak, from wait4
