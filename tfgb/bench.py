"""``python -m tfgb.bench SUBCOMMAND``: measure where the time goes.

Subcommands (each a function in :data:`COMMANDS`; add new ones there):

  ``data [--pipeline P] [--data-dir D] [--set k=v ...] [--aux-size T] [--batches N]``
      Prepare the recipe's data from scratch in a fresh temporary cache (so no cache hides the
      work) and print seconds to read + encode, split, build candidate lists and graphs, the
      total, the time to load the cache again, and the training stream's throughput in triples
      per second (one epoch, or N batches, with negatives and aux sets), consumed by TensorFlow
      (as ``Model.fit`` does) and iterated from Python.

  ``train`` / ``eval``: see :mod:`tfgb.bench_train`. ``serve``: see :mod:`tfgb.bench_serve`.
  Each of the three takes ``--allocators bfc,system[,jemalloc]``: the same measurement once per
  memory allocator, side by side with the ratios (:mod:`tfgb.bench_allocators`).

  ``allocator``: the memory allocator a tfgb command runs with, and why (:mod:`tfgb.allocator`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from tfgb import config as config_lib
from tfgb.errors import cli_boundary, setup_logging


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", help="recipe TOML (default: the built-in defaults, synthetic data)")
    parser.add_argument("--data-dir", help="directory the recipe's data files are relative to")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")


def _data_parser(parser: argparse.ArgumentParser) -> None:
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


def _allocator_parser(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def bench_allocator(args: argparse.Namespace) -> int:
    """Print the allocator this command runs with (as every tfgb command would) and why."""
    import os

    from tfgb import allocator

    choice = allocator.configure()
    print(f"allocator                 {choice.allocator}")
    print(f"reason                    {choice.reason}")
    print(f"jemalloc library          {allocator.jemalloc_library() or '(none on this system)'}")
    print(f"jemalloc loaded           {allocator.jemalloc_loaded()}")
    print(f"TF_CPU_ALLOCATOR_USE_BFC  {os.environ.get('TF_CPU_ALLOCATOR_USE_BFC', '(unset)')}")
    print(f"MALLOC_CONF               {os.environ.get('MALLOC_CONF', '(unset)')}")
    return 0


def _with_allocators(add_arguments: Callable[[argparse.ArgumentParser], None]) -> Callable:
    def add(parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)
        parser.add_argument("--allocators", metavar="A,B,...",
                            help="run the same measurement once per memory allocator (bfc, system, jemalloc), "
                                 "each in its own process, and print them side by side with the ratios")
        parser.add_argument("--rounds", type=int, default=1,
                            help="with --allocators: run them round-robin this many times and print medians")
        parser.add_argument("--report-json", help=argparse.SUPPRESS)  # set by --allocators for its children

    return add


def _lazy(module: str, name: str) -> Callable:
    """A function of another bench module, imported when called (keeps `--help` fast)."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "data": (_data_parser, bench_data, "time data preparation, graphs and the training stream"),
    "train": (_with_allocators(_lazy("tfgb.bench_train", "add_train_arguments")), _lazy("tfgb.bench_train", "bench_train"),
              "time a training step: propagation vs the rest, rows/s, groups/s, FLOP/s vs dense matmul, memory"),
    "eval": (_with_allocators(_lazy("tfgb.bench_train", "add_eval_arguments")), _lazy("tfgb.bench_train", "bench_eval"),
             "time scoring the test candidate lists"),
    "serve": (_with_allocators(_lazy("tfgb.bench_serve", "add_arguments")), _lazy("tfgb.bench_serve", "run"),
              "latency and requests/s of an export: in-process SavedModel vs the local REST endpoint"),
    "allocator": (_allocator_parser, bench_allocator, "the memory allocator tfgb commands run with, and why"),
}
"""Subcommand name -> (add its arguments, run it, one-line help)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfgb.bench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    return parser


@cli_boundary
def main(argv: Sequence[str] | None = None) -> int:
    """Run one bench subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.verbose:
        setup_logging()
    if getattr(args, "allocators", None):
        from tfgb import bench_allocators

        return bench_allocators.run(argv, bench_allocators.parse(args.allocators), args.rounds)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
