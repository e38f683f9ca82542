"""The model directory of a run: resolved recipe, vocabularies, checkpoints, history, metrics.

Layout::

    MODEL_DIR/config.toml          resolved recipe (after --set overrides and the model variant)
    MODEL_DIR/vocab/users.txt      raw user ids, one per line, line n = index n
    MODEL_DIR/vocab/items.txt      raw item ids
    MODEL_DIR/checkpoints/last/    model + optimizer + progress (tfgb.session.Progress) at the last validation
    MODEL_DIR/checkpoints/best/    the same at the validation with the best objective
    MODEL_DIR/history.csv          one row per validation: step, epoch, loss terms, validation metrics,
                                   seconds; the last row also says why training stopped (stop_reason)
    MODEL_DIR/metrics.json         final metrics per split and task, steps trained, stop_reason
    MODEL_DIR/data_source.json     the --data-dir the run read (absolute), for evaluate/export

Every file is written atomically (temporary file, then rename), so a killed run never leaves a
half-written file behind.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from tfgb import config as cfg
from tfgb.errors import ConfigError


def atomic_write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# Settings a run may change when it resumes: how long to train and how to evaluate at the end.
RESUMABLE_CHANGES = ("train.epochs:", "train.budget_steps:", "train.patience:", "train.max_minutes:", "eval.")

# The two checkpoints of a run, in the order a trained run is restored from.
CHECKPOINTS = ("best", "last")


class RunDir:
    """Paths and small readers/writers for one model directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.toml")
    vocab = property(lambda self: self.path / "vocab")
    last = property(lambda self: self.path / "checkpoints" / "last")
    best = property(lambda self: self.path / "checkpoints" / "best")
    history = property(lambda self: self.path / "history.csv")
    metrics = property(lambda self: self.path / "metrics.json")
    source = property(lambda self: self.path / "data_source.json")

    def checkpoint_dir(self, which: str) -> Path:
        """``checkpoints/best`` or ``checkpoints/last``."""
        if which not in CHECKPOINTS:
            raise ValueError(f"a run's checkpoints are {CHECKPOINTS}, not {which!r}")
        return self.path / "checkpoints" / which

    def has_checkpoint(self, which: str) -> bool:
        """Whether the ``best`` / ``last`` checkpoint has been written (a checkpoint index exists)."""
        return (self.checkpoint_dir(which) / "checkpoint").exists()

    def write_data_dir(self, data_dir: str | None) -> None:
        """Remember where the data came from, so evaluate/export need no --data-dir."""
        atomic_write(self.source, json.dumps({"data_dir": os.path.abspath(data_dir) if data_dir else None}) + "\n")

    def read_data_dir(self) -> str | None:
        return json.loads(self.source.read_text())["data_dir"] if self.source.exists() else None

    def load_config(self) -> cfg.Config:
        if not self.config.exists():
            raise ConfigError(f"{self.path}: not a tfgb model directory (no config.toml); train one first")
        return cfg.load(self.config)

    def claim(self, config: cfg.Config) -> bool:
        """Write ``config`` into a new model dir, or check that it matches an existing run's.

        Returns True when the directory already held this run (training resumes).
        """
        if self.config.exists():
            old = cfg.load(self.config)
            changed = [c for c in _diff(cfg.to_dict(old), cfg.to_dict(config))
                       if not c.startswith(RESUMABLE_CHANGES)]
            if changed:
                raise ConfigError(
                    f"{self.path} holds a run with a different recipe ({', '.join(changed[:5])}); "
                    "use another --model-dir or the same settings to resume")
            atomic_write(self.config, cfg.dumps(config))  # e.g. more epochs: record the new target
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config, cfg.dumps(config))
        return False

    def read_history(self) -> list[dict[str, Any]]:
        if not self.history.exists():
            return []
        with open(self.history, encoding="utf-8") as fh:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.history, buf.getvalue())

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write(self.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics.read_text()) if self.metrics.exists() else {}


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
