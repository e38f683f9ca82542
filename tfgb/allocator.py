"""The CPU memory allocator TensorFlow uses, chosen before TensorFlow loads.

TensorFlow's default CPU allocator hands every tensor to glibc's ``malloc``. Large buffers are
``mmap``-ed, returned to the kernel on free and faulted back in, zeroed, by the next op: on Beibei
that was more than half of a training step (README, "Memory allocator"). tfgb therefore pools:

``TFGB_ALLOCATOR`` (read once, when ``tfgb`` is imported):

* ``auto`` (the default) = ``bfc``: measured side by side on this project's machines (README,
  "Memory allocator") it was the fastest choice that keeps the Beibei memory target, and it needs
  nothing from the system and no new process;
* ``bfc``: TensorFlow's own pooling allocator (``TF_CPU_ALLOCATOR_USE_BFC=true``). Works in any
  process, also when tfgb is imported as a library;
* ``jemalloc``: the command re-executes itself once with ``libjemalloc`` in ``LD_PRELOAD`` and
  ``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1`` (freed pages stay with the process; with
  jemalloc's default decay nothing changes). A process that is not a tfgb command (a notebook, a
  test run) cannot preload a library after it started, and uses ``bfc`` instead;
* ``system``: TensorFlow's default (glibc ``malloc``).

A setting of the user's own always wins: if ``TF_CPU_ALLOCATOR_USE_BFC`` is set, or ``LD_PRELOAD``
already names an allocator, tfgb changes nothing. Import TensorFlow *after* tfgb (or set the
variables yourself) for the choice to take effect; ``python -m tfgb.bench allocator`` prints what a
command gets; ``python -m tfgb.bench train|eval|serve --allocators bfc,system,jemalloc`` measures them.

This module must not import TensorFlow (nor anything that does).
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV = "TFGB_ALLOCATOR"
CHOICES = ("auto", "bfc", "jemalloc", "system")
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_REEXEC_MARK = "TFGB_ALLOCATOR_REEXEC"  # set on the re-executed command: never re-execute twice
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc", "hoard")
_JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


class AllocatorError(ValueError):
    """``TFGB_ALLOCATOR`` holds a value that is not one of :data:`CHOICES`."""


@dataclass(frozen=True)
class Choice:
    """What this process runs with, and why (printed by ``python -m tfgb.allocator``)."""

    allocator: str  # bfc | jemalloc | system | user
    reason: str


def jemalloc_library() -> str | None:
    """Path of the system's jemalloc shared library, or None."""
    for path in _JEMALLOC_PATHS:
        if Path(path).is_file():
            return path
    name = ctypes.util.find_library("jemalloc")
    return name if name and Path(name).is_absolute() and Path(name).is_file() else None


def jemalloc_loaded() -> bool:
    """Whether jemalloc is mapped into this process (preloaded)."""
    try:
        return "libjemalloc" in Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def tfgb_command(orig_argv: Sequence[str] | None = None) -> bool:
    """Whether this process was started as ``python ... -m tfgb[.<command>] ...``."""
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    for i, arg in enumerate(argv[1:-1], start=1):
        if arg == "-m":
            return argv[i + 1] == "tfgb" or argv[i + 1].startswith("tfgb.")
        if arg == "-c" or not arg.startswith("-"):
            return False  # a script or -c code comes first: not a tfgb command
    return False


def resolve(environ: MutableMapping[str, str], command: bool, jemalloc: str | None,
            loaded: bool) -> tuple[Choice, dict[str, str] | None]:
    """Decide the allocator and set TensorFlow's variable in ``environ``.

    Returns the choice and, when the process must re-execute itself with jemalloc preloaded, the
    environment to re-execute with (else None). Pure apart from ``environ``: tested directly.
    """
    wanted = environ.get(ENV, "auto").strip().lower() or "auto"
    if wanted not in CHOICES:
        raise AllocatorError(f"{ENV}={environ[ENV]!r} is not one of {', '.join(CHOICES)}")
    preload = environ.get("LD_PRELOAD", "")
    if environ.get(_REEXEC_MARK) and loaded:  # the command re-executed itself with jemalloc
        environ["TF_CPU_ALLOCATOR_USE_BFC"] = "false"  # TensorFlow's allocator calls the preloaded malloc
        return Choice("jemalloc", f"{ENV}={wanted}: jemalloc preloaded by tfgb ({environ.get('MALLOC_CONF')})"), None
    if "TF_CPU_ALLOCATOR_USE_BFC" in environ:
        return Choice("user", f"TF_CPU_ALLOCATOR_USE_BFC={environ['TF_CPU_ALLOCATOR_USE_BFC']} was set by the "
                              "user; left as it is"), None
    if any(name in preload for name in _PRELOADED):
        return Choice("user", f"LD_PRELOAD={preload} was set by the user; left as it is"), None
    if wanted == "system":
        environ["TF_CPU_ALLOCATOR_USE_BFC"] = "false"
        return Choice("system", f"{ENV}=system: TensorFlow's default CPU allocator (glibc malloc)"), None
    if wanted == "jemalloc":
        if loaded:
            environ["TF_CPU_ALLOCATOR_USE_BFC"] = "false"  # TensorFlow's allocator calls the preloaded malloc
            return Choice("jemalloc", f"{ENV}={wanted}: jemalloc is preloaded"), None
        why = ("the system has no libjemalloc (Debian: libjemalloc2)" if jemalloc is None
               else "preloading needs a new process, and this is not a tfgb command" if not command
               else "the re-executed command did not load it" if environ.get(_REEXEC_MARK) else "")
        if not why:
            env = dict(environ)
            env["LD_PRELOAD"] = f"{jemalloc}:{preload}" if preload else jemalloc
            env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
            env[_REEXEC_MARK] = "1"
            return Choice("jemalloc", f"{ENV}={wanted}: re-executing with {jemalloc} preloaded"), env
        environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
        return Choice("bfc", f"{ENV}=jemalloc: TensorFlow's BFC pool instead ({why})"), None
    environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    return Choice("bfc", f"{ENV}={wanted}: TensorFlow's BFC pool"), None


CURRENT: Choice | None = None
"""The choice made when tfgb was imported."""


def configure() -> Choice:
    """Apply ``TFGB_ALLOCATOR`` to this process (called once by ``import tfgb``); may re-execute it."""
    global CURRENT
    if CURRENT is not None:
        return CURRENT
    command = tfgb_command()
    try:
        choice, reexec = resolve(os.environ, command, jemalloc_library(), jemalloc_loaded())
    except AllocatorError as exc:
        if command:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    if reexec is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], reexec)
    if "tensorflow" in sys.modules and choice.allocator in ("bfc", "system"):
        choice = Choice(choice.allocator, choice.reason + " (TensorFlow was imported before tfgb: the setting "
                                                          "applies only if it had not allocated yet)")
    CURRENT = choice
    return choice
