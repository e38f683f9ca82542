"""``python -m tfgb.bench SUBCOMMAND``: measure where the time goes.

Subcommands (each a function in :data:`COMMANDS`; add new ones there):

  ``data [--pipeline P] [--data-dir D] [--set k=v ...] [--aux-size T] [--batches N]``: data
      preparation and the training stream (:mod:`tfgb.bench.data`).

  ``train`` / ``eval``: see :mod:`tfgb.bench.train`. ``serve``: see :mod:`tfgb.serving.bench`.
  Each of the three takes ``--allocators bfc,system[,jemalloc]``: the same measurement once per
  memory allocator, side by side with the ratios (:mod:`tfgb.bench.allocators`).

  ``allocator``: the memory allocator a tfgb command runs with, and why (:mod:`tfgb.allocator`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tfgb.errors import cli_boundary, setup_logging


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
    "data": (_lazy("tfgb.bench.data", "add_arguments"), _lazy("tfgb.bench.data", "bench_data"),
             "time data preparation, graphs and the training stream"),
    "train": (_with_allocators(_lazy("tfgb.bench.train", "add_train_only_arguments")), _lazy("tfgb.bench.train", "bench_train"),
              "time a training step: propagation vs the rest, rows/s, groups/s, FLOP/s vs dense matmul, memory"),
    "eval": (_with_allocators(_lazy("tfgb.bench.train", "add_eval_arguments")), _lazy("tfgb.bench.train", "bench_eval"),
             "time scoring the test candidate lists"),
    "serve": (_with_allocators(_lazy("tfgb.serving.bench", "add_arguments")), _lazy("tfgb.serving.bench", "run"),
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
        from tfgb.bench import allocators as bench_allocators

        return bench_allocators.run(argv, bench_allocators.parse(args.allocators), args.rounds)
    return COMMANDS[args.command][1](args)
