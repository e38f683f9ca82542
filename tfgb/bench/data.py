"""``python -m tfgb.bench data``: data preparation (cold cache), graph building and the training stream.

Prepares the recipe's data from scratch in a fresh temporary cache (so no cache hides the work) and
prints seconds to read + encode, split, build candidate lists and graphs, the total, the time to
load the cache again, and the training stream's throughput in triples per second (one epoch, or N
batches, with negatives and aux sets), consumed by TensorFlow (as ``Model.fit`` does) and iterated
from Python.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from tfgb import config as config_lib


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", help="recipe TOML (default: the built-in defaults, synthetic data)")
    parser.add_argument("--data-dir", help="directory the recipe's data files are relative to")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_recipe_arguments(parser)
    parser.add_argument("--aux-size", type=int, help="override train.aux_size (T) for the stream")
    parser.add_argument("--batches", type=int, default=0, help="stream batches to time (default: one epoch)")


def _count_in_graph(dataset) -> int:
    """Triples in ``dataset``, consumed by TensorFlow (as ``Model.fit`` or a ``tf.function`` loop does)."""
    import tensorflow as tf

    return int(dataset.reduce(tf.constant(0, tf.int64),
                              lambda total, batch: total + tf.size(batch["initiator"], tf.int64)))


def _count_in_python(dataset) -> int:
    """Triples in ``dataset``, iterated batch by batch from Python (a hand-written eager loop)."""
    return sum(int(batch["initiator"].shape[0]) for batch in dataset)


def bench_data(args: argparse.Namespace) -> int:
    """Time data preparation (cold cache), graph building and the training stream."""
    overrides = list(args.set) + ([f"train.aux_size={args.aux_size}"] if args.aux_size is not None else [])
    config = config_lib.load(args.pipeline, overrides)
    # Imported after the argument checks; the stream module loads TensorFlow before anything is timed.
    from tfgb.data.prepare import prepare
    from tfgb.data.stream import TrainingStream

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="tfgb-bench-") as cache_dir:
        config.data.cache_dir = cache_dir
        start = time.perf_counter()
        prepared = prepare(config, args.data_dir)
        prepare_seconds = time.perf_counter() - start
        tick = time.perf_counter()
        graphs = prepared.graphs()
        graph_seconds = time.perf_counter() - tick
        t = prepared.timings
        rows += [
            ("read + encode", f"{t['read'] + t['encode']:.2f} s"),
            ("split", f"{t['split']:.2f} s"),
            ("candidates", (f"{t['candidates']:.2f} s  (valid {len(prepared.valid_candidates):,} + test "
                            f"{len(prepared.test_candidates):,} lists, {config.data.negatives} negatives)")),
            ("cache write", f"{t['write']:.2f} s"),
            ("graphs", f"{graph_seconds:.2f} s  ("
                       + ", ".join(f"{k} {int(v.values.shape[0]):,}" for k, v in graphs.items()) + " nonzeros)"),
            ("preparation total", f"{prepare_seconds + graph_seconds:.2f} s"),
        ]
        tick = time.perf_counter()
        prepare(config, args.data_dir)
        rows.append(("cache hit load", f"{time.perf_counter() - tick:.2f} s"))

    train = config.train
    tick = time.perf_counter()
    stream = TrainingStream(prepared.train, prepared.train_interactions(), prepared.num_users, prepared.num_items,
                            train.batch_size, train.aux_size, train.seed)
    rows.append(("stream setup", f"{time.perf_counter() - tick:.2f} s"))
    limit = args.batches if args.batches > 0 else stream.num_batches
    for consumer, count in (("graph", _count_in_graph), ("python", _count_in_python)):
        dataset = stream.dataset(epoch=0).take(limit)
        tick = time.perf_counter()
        triples = count(dataset)
        seconds = time.perf_counter() - tick
        rate = triples / max(seconds, 1e-9)
        rows.append((f"stream ({consumer})", (f"{rate:,.0f} triples/s  ({triples:,} triples in {seconds:.2f} s; "
                                              f"batch {train.batch_size}, aux_size {train.aux_size})")))

    sizes = (f"{len(prepared.train):,}/{len(prepared.valid):,}/{len(prepared.test):,} groups, "
             f"{prepared.num_users:,} users, {prepared.num_items:,} items, {stream.num_triples:,} training triples")
    print(f"data               {sizes}")
    for name, value in rows:
        print(f"{name:<18} {value}")
    return 0
