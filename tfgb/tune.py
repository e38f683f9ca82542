"""``python -m tfgb.tune``: search a recipe's ``[tune]`` space with KerasTuner, resumably.

The search space is the recipe's ``[tune]`` section (:class:`tfgb.config.TuneConfig`): a list
of choices per hyper-parameter; a list of one value fixes it. Only the hyper-parameters that
matter to the recipe's model are searched: its registry entry's ``tunable`` ones. Each trial is a whole
``python -m tfgb.train`` run of the recipe with the trial's values; its objective is the run's
``best_valid_objective``, the mean validation MRR@10 of the two tasks (maximised).

KerasTuner 1.4.8 loads Keras 3 and rejects tf-keras models, so the tuners here keep its oracles
(random search, Bayesian optimisation, Hyperband) and override ``run_trial`` (public API) to
train a tfgb recipe and return ``{"mean_valid_mrr10": value}``.

Layout of ``DIR`` (default ``runs/tune-<recipe name>``)::

    DIR/config.toml           the resolved base recipe, search space included
    DIR/search.json           tuner, seed and --data-dir of the search
    DIR/keras_tuner/          KerasTuner's oracle state, one trial_<id>/trial.json per trial
    DIR/trials/<id>/          one tfgb model dir per trial (config, checkpoints, history, metrics)
    DIR/trials.csv            one row per trial: values, objective, minutes, status, error
    DIR/best.toml             the best trial's full recipe, named "<recipe name>-tuned"

A killed search started again with the same arguments resumes: finished trials are not run
again, the interrupted trial is run again and resumes from its last completed epoch (its model
dir). A higher ``--max-trials`` runs only the new trials. A trial that raises is logged with
its error, marked failed (never retried: training is deterministic) and listed with its error;
three failed trials in a row stop the search.
"""
from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import keras_tuner as kt
import tensorflow as tf

from tfgb import config as cfg
from tfgb import train as training
from tfgb.data.prepare import prepare
from tfgb.errors import ConfigError, TfgbError, cli_boundary, setup_logging
from tfgb.models import registry
from tfgb.rundir import atomic_write

log = logging.getLogger("tfgb.tune")

OBJECTIVE = "mean_valid_mrr10"
MAX_FAILURES_IN_A_ROW = 3

# Hyperband's bookkeeping values that are not recipe settings (tuner/epochs -> train.epochs).
_HIDDEN = ("tuner/initial_epoch", "tuner/bracket", "tuner/round")


def search_space(config: cfg.Config) -> dict[str, list]:
    """The searched recipe keys and their sorted choices; every choice is checked against the recipe.

    The hyper-parameters that matter to the recipe's model are its registry entry's ``tunable``
    ones (:mod:`tfgb.models.registry`), minus those its variant forces (e.g. mgbr-g forces alpha = 0)
    and the auxiliary-loss weights when ``train.aux_losses`` is off; their choices come from ``[tune]``.

    Raises:
      ConfigError: an empty list of choices, a choice the recipe rejects, or nothing to search.
    """
    entry = registry.entry(config.model.name)
    forced = registry.forced(config.model.name)
    space = {}
    for field, relative in entry.tunable.items():
        key = entry.key(relative)
        choices = getattr(config.tune, field)
        if not choices:
            raise ConfigError(f"config key 'tune.{field}' is an empty list; give at least one choice")
        if key in forced or (not config.train.aux_losses and key in ("train.beta_a", "train.beta_b")):
            continue
        for value in choices:
            try:
                trial_config(config, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"config key 'tune.{field}' has a choice the recipe rejects ({exc})") from None
        space[key] = sorted(set(choices))
    if not space:
        raise ConfigError(f"model '{config.model.name}' has no hyper-parameter in [tune] to search")
    return space


def trial_config(base: cfg.Config, values: dict[str, Any]) -> cfg.Config:
    """``base`` with a trial's values (recipe keys; Hyperband's ``tuner/epochs`` = train.epochs), resolved."""
    config = copy.deepcopy(base)
    if "tuner/epochs" in values:  # Hyperband's resource is epochs: no step budget of the recipe on top
        cfg.set_key(config, "train.budget_steps", 0)
    for name, value in values.items():
        key = "train.epochs" if name == "tuner/epochs" else name
        if key.startswith("tuner/"):
            continue
        cfg.set_key(config, key, value)
    cfg.validate(config)
    return registry.resolve(config)


class _Stopped(Exception):
    """Too many failed trials in a row: the search stops (after the trial's state is saved)."""


class _TfgbTrials:
    """Mixin for a KerasTuner tuner: a trial trains a tfgb recipe into ``DIR/trials/<id>``.

    KerasTuner's ``BaseTuner.search`` calls ``run_trial``; the returned dict goes through
    ``oracle.update_trial`` (every key becomes a trial metric; the objective key is required) and
    ``oracle.end_trial`` scores the trial. An exception other than ``FatalError`` marks the trial
    INVALID (retried up to ``max_retries_per_trial``) or, for ``FailedTrialError``, FAILED with
    the traceback as ``trial.message`` (kept in its ``trial.json``; KerasTuner also prints it). A
    KeyboardInterrupt or a kill leaves the trial RUNNING in the saved oracle state, and
    ``Oracle.reload`` queues it to run again before any new trial.
    """

    def __init__(self, *, base: cfg.Config, data_dir: str | None, runs_dir: Path, **kwargs):
        self.base, self.data_dir, self.runs_dir = base, data_dir, runs_dir
        self.failures_in_a_row = 0
        # KerasTuner's own limit raises inside Oracle.end_trial before the trial's state is saved;
        # on_trial_end below applies the same limit after it is saved.
        super().__init__(objective=kt.Objective(OBJECTIVE, direction="max"), max_retries_per_trial=0,
                         max_consecutive_failed_trials=sys.maxsize, **kwargs)

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        values = trial.hyperparameters.values
        run_dir = self.runs_dir / trial.trial_id
        start = time.perf_counter()
        try:
            config = trial_config(self.base, values)
            parent = values.get("tuner/trial_id")
            if parent is not None and not run_dir.exists():
                _continue_from(self.runs_dir / str(parent), run_dir)
            tf.keras.backend.clear_session()
            metrics = training.train(config, self.data_dir, run_dir, progress=False)
            value = float(metrics["best_valid_objective"])
            if not math.isfinite(value):
                raise TfgbError(f"the validation objective is {value}")
        except Exception as exc:
            message = str(exc) if isinstance(exc, TfgbError) else f"{type(exc).__name__}: {exc}"
            log.error("trial %s failed: %s (traceback in %s)", trial.trial_id, message,
                      os.path.join(self.get_trial_dir(trial.trial_id), "trial.json"))
            raise kt.errors.FailedTrialError(message) from exc
        result = {OBJECTIVE: value, "minutes": round((time.perf_counter() - start) / 60, 3)}
        if metrics.get("minutes_per_epoch") is not None:
            result["minutes_per_epoch"] = float(metrics["minutes_per_epoch"])
        log.info("trial %s: %s = %.4f", trial.trial_id, OBJECTIVE, value)
        return result

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)  # Oracle.end_trial: scores, marks FAILED, saves the state
        if trial.status != "FAILED":
            self.failures_in_a_row = 0
            return
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise _Stopped(f"{self.failures_in_a_row} trials in a row failed; the last one: {_error(trial)}")


class RandomTuner(_TfgbTrials, kt.RandomSearch):
    """Random search over the ``[tune]`` choices."""


class BayesianTuner(_TfgbTrials, kt.BayesianOptimization):
    """Bayesian optimisation (Gaussian process) over the ``[tune]`` choices; needs scikit-learn."""


class HyperbandTuner(_TfgbTrials, kt.Hyperband):
    """Hyperband: up to ``train.epochs`` epochs; a continued trial resumes its parent's model dir."""


TUNERS = {"random": RandomTuner, "bayesian": BayesianTuner, "hyperband": HyperbandTuner}


def _continue_from(parent: Path, child: Path) -> None:
    """Hyperband: start ``child`` as a copy of ``parent`` (tfgb resumes it to the new train.epochs)."""
    tmp = child.with_name(child.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(parent, tmp)
    (tmp / "metrics.json").unlink(missing_ok=True)
    os.replace(tmp, child)


def make_tuner(kind: str, space: dict[str, list], base: cfg.Config, data_dir: str | None, tune_dir: Path,
               max_trials: int, seed: int) -> kt.engine.base_tuner.BaseTuner:
    """A tuner over ``space`` that reloads the oracle state of ``tune_dir`` when there is one."""
    hp = kt.HyperParameters()
    for key, choices in space.items():
        if len(choices) == 1:
            hp.Fixed(key, choices[0])
        else:
            hp.Choice(key, choices)
    common = {"base": base, "data_dir": data_dir, "runs_dir": tune_dir / "trials", "hyperparameters": hp,
              "seed": seed, "directory": str(tune_dir), "project_name": "keras_tuner", "overwrite": False}
    if kind == "hyperband":
        tuner = HyperbandTuner(max_epochs=base.train.epochs, factor=3, **common)
        tuner.oracle.max_trials = max_trials  # Hyperband's oracle takes no max_trials; the base Oracle obeys it
        return tuner
    return TUNERS[kind](max_trials=max_trials, **common)


def check_tuner(kind: str) -> None:
    """Fail before the search starts when the tuner cannot run here."""
    if kind == "bayesian" and importlib.util.find_spec("sklearn") is None:
        raise ConfigError("--tuner bayesian needs scikit-learn (pip install scikit-learn); "
                          "or use --tuner random or hyperband")


def claim(tune_dir: Path, base: cfg.Config, settings: dict[str, Any]) -> bool:
    """Record the search's recipe and settings, or check that they match the search in ``tune_dir``.

    Returns True when ``tune_dir`` already holds this search (it resumes). A directory whose
    search never started a trial (no oracle state yet) is taken over.
    """
    recipe, meta = tune_dir / "config.toml", tune_dir / "search.json"
    if recipe.exists() and meta.exists() and (tune_dir / "keras_tuner" / "oracle.json").exists():
        new, old = _flat(cfg.to_dict(base)), _flat(cfg.to_dict(cfg.load(recipe)))
        changed = [k for k in sorted(set(new) | set(old)) if new.get(k) != old.get(k)]
        old_settings = json.loads(meta.read_text())
        changed += [f"--{k.replace('_', '-')}" for k in settings if old_settings.get(k) != settings[k]]
        if changed:
            raise ConfigError(f"{tune_dir} holds a search with other settings ({', '.join(changed[:5])}); "
                              "use another --dir or the same settings to resume")
        return True
    atomic_write(recipe, cfg.dumps(base))
    atomic_write(meta, json.dumps(settings, indent=2) + "\n")
    return False


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _error(trial) -> str:
    """The one-line error of a failed trial (KerasTuner keeps the whole traceback in trial.json)."""
    if not trial.message:
        return ""
    last = trial.message.strip().splitlines()[-1]
    return last.split("FailedTrialError: ", 1)[-1]


def _metric(trial, name: str) -> float | None:
    return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None


def trial_rows(oracle) -> list[dict[str, Any]]:
    """One row per trial: its values (recipe keys), objective, minutes, status and error."""
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        row: dict[str, Any] = {"trial": trial_id}
        for name, value in trial.hyperparameters.values.items():
            if name not in _HIDDEN:
                row[{"tuner/epochs": "train.epochs", "tuner/trial_id": "continues"}.get(name, name)] = value
        row.update({"objective": trial.score if trial.status == "COMPLETED" else None,
                    "minutes": _metric(trial, "minutes"), "min/epoch": _metric(trial, "minutes_per_epoch"),
                    "status": trial.status.lower(), "error": _error(trial)})
        rows.append(row)
    return rows


def best_trial(oracle):
    """The completed trial with the highest objective, or None."""
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    return max(done, key=lambda t: t.score) if done else None


_RESULTS = ["objective", "minutes", "min/epoch", "status", "error"]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in _RESULTS]
    return keys + _RESULTS


def _cell(value: Any, column: str = "") -> str:
    """A table cell: results rounded for reading, hyper-parameter values exactly as chosen."""
    if value is None:
        return ""
    if column in ("objective", "minutes", "min/epoch"):
        return f"{value:.4f}" if column == "objective" else f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = _columns(rows)
    cells = [columns] + [[_cell(row.get(c), c) for c in columns] for row in rows]
    widths = [max(len(line[n]) for line in cells) for n in range(len(columns))]
    return "\n".join("  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip() for line in cells)


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    atomic_write(path, buf.getvalue())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfgb.tune", description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", help="recipe TOML with a [tune] section (default: pipelines/default.toml)")
    p.add_argument("--data-dir", help="directory the recipe's data files are relative to")
    p.add_argument("--max-trials", type=int, default=10, help="trials in total, counting earlier runs (default 10)")
    p.add_argument("--tuner", choices=sorted(TUNERS), default="random", help="KerasTuner oracle (default random)")
    p.add_argument("--dir", help="search directory (default: runs/tune-<recipe name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set tune.embedding_dim=[16,32] (repeatable)")
    p.add_argument("--seed", type=int, default=1, help="seed of the tuner's choices (default 1)")
    return p


@cli_boundary
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    base = training.load_config(args.pipeline, args.overrides)
    space = search_space(base)
    if args.max_trials < 1:
        raise ConfigError("--max-trials must be at least 1")
    check_tuner(args.tuner)
    tune_dir = Path(args.dir or f"runs/tune-{base.name}")
    settings = {"tuner": args.tuner, "seed": args.seed,
                "data_dir": os.path.abspath(args.data_dir) if args.data_dir else None}
    if claim(tune_dir, base, settings):
        log.info("%s already holds this search: resuming", tune_dir)
    training.configure_determinism(base.train.deterministic)  # before any TensorFlow op runs
    prepare(base, args.data_dir)  # data errors end the search before it starts; trials read the cache
    tuner = make_tuner(args.tuner, space, base, args.data_dir, tune_dir, args.max_trials, args.seed)
    stopped = None
    try:
        tuner.search()
    except _Stopped as exc:
        stopped = exc

    rows = trial_rows(tuner.oracle)
    write_table(rows, tune_dir / "trials.csv")
    print(format_table(rows))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "failed")}
    print(f"{len(rows)} trials: {counts['completed']} completed, {counts['failed']} failed"
          + "".join(f"; trial {r['trial']} failed: {r['error']}" for r in rows if r["status"] == "failed"))
    best = best_trial(tuner.oracle)
    if best is not None:
        config = trial_config(base, best.hyperparameters.values)
        config.name = f"{base.name}-tuned"
        cfg.save(config, tune_dir / "best.toml")
        print(f"best: trial {best.trial_id}, {OBJECTIVE} {best.score:.4f}, "
              f"model dir {tune_dir / 'trials' / best.trial_id}")
        recipe = tune_dir / "best.toml"
        data = f" --data-dir {args.data_dir}" if args.data_dir else ""
        print(f"best recipe: {recipe}  (python -m tfgb.train --pipeline {recipe}{data})")
    if stopped is not None:
        print(f"error: search stopped: {stopped}", file=sys.stderr)
        return 1
    if best is None:
        print("error: no trial completed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
