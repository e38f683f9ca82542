"""User-facing errors and the command-line boundary that reports them in one sentence."""
from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class TfgbError(Exception):
    """An error the user caused (a file, an id, a config value, a request); reported without a traceback."""


class DataError(TfgbError):
    """Bad input data: names the file, the line when known, and the problem."""

    def __init__(self, path: str, problem: str, line: int | None = None):
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


class ConfigError(TfgbError):
    """A bad recipe key or value."""


def cli_boundary(func: F) -> F:
    """Wrap a command's ``main`` so user errors exit with status 2 and one line on stderr."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TfgbError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
