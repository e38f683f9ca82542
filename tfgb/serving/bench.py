"""``python -m tfgb.bench serve --export-base saved_models/NAME``: what the HTTP layer costs.

Measures, on the newest version of an export, the latency (p50, p99) and sequential throughput
(requests per second, one client) of single-row requests with ``--candidates`` candidates for
both signatures, two ways:

* ``in-process``: ``tf.saved_model.load`` + the signature called directly (raw ids in, numpy out);
* ``http``: :mod:`tfgb.serving.server` started in this process on a free loopback port, called with the
  TF Serving REST JSON (``instances`` form) over a kept-alive connection;

and prints the ratios between them. Request ids are drawn (seeded) from the export's
vocabularies in ``assets.extra/vocab``. Each measurement stops after ``--requests`` requests or
``--max-seconds``, whichever comes first, after ``--warmup`` unmeasured requests.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfgb.errors import ConfigError

SIGNATURES = ("serving_default", "rank_participants")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export-base", required=True, help="directory of integer versions (python -m tfgb.export)")
    parser.add_argument("--requests", type=int, default=300, help="measured requests per signature and path")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests first")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit per measurement")
    parser.add_argument("--seed", type=int, default=0)


def _requests(path: Path, n: int, candidates: int, seed: int) -> dict[str, list[dict]]:
    """``n`` single-row inputs per signature, with ids drawn from the export's vocabularies."""
    vocab = path / "assets.extra" / "vocab"
    try:
        users = (vocab / "users.txt").read_text(encoding="utf-8").splitlines()
        items = (vocab / "items.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        raise ConfigError(f"{path}: no vocabularies in assets.extra/vocab; export with python -m tfgb.export")
    rng = np.random.default_rng(seed)

    def pick(ids: list[str], size: int = 1) -> list[str]:
        return [ids[k] for k in rng.integers(0, len(ids), size)]

    return {
        "serving_default": [{"initiator": pick(users)[0], "candidates": pick(items, candidates)} for _ in range(n)],
        "rank_participants": [{"initiator": pick(users)[0], "item": pick(items)[0],
                               "candidates": pick(users, candidates)} for _ in range(n)],
    }


def _measure(call: Callable[[dict], object], rows: list[dict], warmup: int, max_seconds: float) -> dict:
    for row in rows[:warmup]:
        call(row)
    latencies = []
    start = time.perf_counter()
    for row in rows[warmup:]:
        tick = time.perf_counter()
        call(row)
        latencies.append(time.perf_counter() - tick)
        if tick - start > max_seconds:
            break
    total = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "rps": len(latencies) / total}


def _in_process(path: Path) -> Callable[[str], Callable[[dict], object]]:
    import tensorflow as tf

    model = tf.saved_model.load(str(path))

    def make(signature: str) -> Callable[[dict], object]:
        fn = model.signatures[signature]
        return lambda row: {k: v.numpy() for k, v in fn(**{k: tf.constant([v]) for k, v in row.items()}).items()}

    return make


def _over_http(url: str) -> Callable[[str], Callable[[dict], object]]:
    import requests

    http = requests.Session()

    def make(signature: str) -> Callable[[dict], object]:
        def call(row: dict) -> object:
            response = http.post(url, json={"signature_name": signature, "instances": [row]}, timeout=30)
            response.raise_for_status()
            return response.json()

        return call

    return make


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print one table row per signature and path, then the ratios."""
    from tfgb.serving.export import list_versions

    versions = list_versions(args.export_base)
    if not versions:
        raise ConfigError(f"{args.export_base}: no exported version; run python -m tfgb.export first")
    path = Path(args.export_base) / str(versions[-1])
    rows = _requests(path, args.requests + args.warmup, args.candidates, args.seed)
    results: dict[tuple[str, str], dict] = {}
    make = _in_process(path)
    for signature in SIGNATURES:
        results[signature, "in-process"] = _measure(make(signature), rows[signature], args.warmup, args.max_seconds)

    from tfgb.serving.server import BackgroundServer, make_app

    app = make_app(args.export_base, poll_seconds=0)
    try:
        with BackgroundServer(app) as server:
            make = _over_http(f"{server.url}/v1/models/{app.store.name}:predict")
            for signature in SIGNATURES:
                results[signature, "http"] = _measure(make(signature), rows[signature], args.warmup,
                                                      args.max_seconds)
    finally:
        app.close()

    print(f"{path}: 1 row x {args.candidates} candidates per request, sequential, one client")
    print(f"{'signature':18s} {'path':11s} {'requests':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}")
    for (signature, kind), r in results.items():
        print(f"{signature:18s} {kind:11s} {r['requests']:8d} {r['p50']:8.2f} {r['p99']:8.2f} {r['rps']:8.1f}")
    for signature in SIGNATURES:
        local, http = results[signature, "in-process"], results[signature, "http"]
        print(f"{signature}: http / in-process  p50 x{http['p50'] / local['p50']:.2f}  "
              f"p99 x{http['p99'] / local['p99']:.2f}  throughput x{http['rps'] / local['rps']:.2f}")
    from tfgb.bench.allocators import write_report

    write_report(getattr(args, "report_json", None), f"bench serve: {path}",
                 {f"{signature} {kind} {key}": r[key] for (signature, kind), r in results.items()
                  for key in ("p50", "p99", "rps")})
    return 0
