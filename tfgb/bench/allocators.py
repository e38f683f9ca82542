"""``python -m tfgb.bench train|eval|serve --allocators bfc,system[,jemalloc]``: one measurement per allocator.

Each allocator runs the same bench command in a subprocess of its own (``TFGB_ALLOCATOR`` set,
the user's own allocator variables removed so the choice is the one named), one after the other
in one invocation. The parent never imports TensorFlow. Each child writes its measured figures
to a JSON file; the parent reads them with the child's resource usage (``wait4``: user and system
CPU seconds, minor page faults, peak resident memory) and prints them side by side, with the
ratio of every allocator's figure to the first one's. With ``--rounds N`` the allocators run round-robin
N times (bfc, system, bfc, system, ...) and each figure is the median of its N runs, so that a drift
of the machine's speed during the invocation does not favour whichever allocator ran first.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tfgb import allocator
from tfgb.errors import ConfigError

USER_VARIABLES = ("TF_CPU_ALLOCATOR_USE_BFC", "LD_PRELOAD", "MALLOC_CONF", allocator.ENV,
                  "TFGB_ALLOCATOR_REEXEC")


def parse(text: str) -> list[str]:
    """The allocators of ``--allocators`` (comma-separated), checked; ``jemalloc`` needs the library."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError("--allocators: name at least one of bfc, system, jemalloc")
    for name in names:
        if name not in ("bfc", "system", "jemalloc"):
            raise ConfigError(f"--allocators: {name!r} is not one of bfc, system, jemalloc")
    if "jemalloc" in names and allocator.jemalloc_library() is None:
        raise ConfigError("--allocators: jemalloc was asked for, but this system has no libjemalloc "
                          "(Debian: apt install libjemalloc2)")
    if len(set(names)) != len(names):
        raise ConfigError(f"--allocators: {text!r} names an allocator twice")
    return names


def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def write_report(path: str | None, title: str, values: dict[str, float]) -> None:
    """Called by a child bench: its figures for the parent's side-by-side table."""
    if path:
        Path(path).write_text(json.dumps({"title": title, "values": values}), encoding="utf-8")


def _run_child(argv: list[str], name: str, report: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}
    env[allocator.ENV] = name
    command = [sys.executable, "-m", "tfgb.bench", *argv, "--report-json", str(report)]
    print(f"\n=== allocator {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0 or not report.is_file():
        raise ConfigError(f"the bench under allocator {name} failed (exit status {process.returncode}); "
                          "its output is above")
    child = json.loads(report.read_text(encoding="utf-8"))
    cpu = usage.ru_utime + usage.ru_stime
    child["process"] = {
        "wall seconds": wall, "user CPU seconds": usage.ru_utime, "system CPU seconds": usage.ru_stime,
        "system share of CPU": usage.ru_stime / cpu if cpu else 0.0,
        "minor page faults (M)": usage.ru_minflt / 1e6, "peak RSS (GiB)": usage.ru_maxrss / 2**20,
    }
    return child


def run(argv: Sequence[str], names: list[str], rounds: int = 1) -> int:
    """Run the bench of ``argv`` (without ``--allocators``) per allocator, ``rounds`` times round-robin,
    and print the table of medians."""
    if rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    argv = strip_option(strip_option(strip_option(argv, "--allocators"), "--report-json"), "--rounds")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="tfgb-bench-alloc-") as tmp:
        for round_ in range(rounds):
            for name in names:
                runs[name].append(_run_child(argv, name, Path(tmp) / f"{name}-{round_}.json"))
    print()
    print(format_table({name: median_of(results) for name, results in runs.items()}, rounds))
    return 0


def median_of(results: list[dict]) -> dict:
    """One result whose every figure is the median over ``results`` (same title and keys)."""
    out = {"title": results[0]["title"]}
    for section in ("values", "process"):
        out[section] = {key: statistics.median(r[section][key] for r in results) for key in results[0][section]}
    return out


def format_table(results: dict[str, dict], rounds: int = 1) -> str:
    """Figures of every allocator side by side, then each one's ratio to the first allocator's."""
    names = list(results)
    first = names[0]
    title = results[first]["title"]
    rows: list[tuple[str, list[float]]] = []
    for section in ("values", "process"):
        for key in results[first][section]:
            rows.append((key, [results[n][section].get(key, float("nan")) for n in names]))
    width = max(len(key) for key, _ in rows)
    medians = f", medians of {rounds} rounds" if rounds > 1 else ""
    head = f"{title}: allocators side by side (ratios: each / {first}{medians})"
    cols = [f"{n:>12s}" for n in names] + [f"{n + '/' + first:>14s}" for n in names[1:]]
    lines = [head, f"  {'':<{width}}  " + " ".join(cols)]
    for key, vals in rows:
        cells = [f"{_fmt(v):>12s}" for v in vals]
        cells += [f"{(v / vals[0] if vals[0] else float('nan')):>14.2f}" for v in vals[1:]]
        lines.append(f"  {key:<{width}}  " + " ".join(cells))
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"
