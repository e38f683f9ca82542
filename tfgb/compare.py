"""``python -m tfgb.compare``: train several models on one recipe over several seeds and tabulate them.

Every model gets the same budget: the recipe's ``[train]`` section as resolved (same epochs,
batch size, learning rate, negatives and validation-based choice of the best epoch), the same
data, split and saved candidate lists (``data.seed`` is never changed); only ``model.name`` and
``train.seed`` (1..seeds: initialisation, dropout and the training stream's negatives) vary.
Variant settings of the registry (e.g. ``train.aux_losses = false`` for the baselines) apply
on top, as in ``python -m tfgb.train``.

Layout of ``OUT``::

    OUT/runs/<model>-seed<k>/   one ``python -m tfgb.train`` model dir per run
    OUT/comparison.md           test metrics, mean ± std over seeds, parameters, minutes/epoch
    OUT/comparison.csv          the same numbers, one row per model
    OUT/mrr10.png               test MRR@10 and the first HR of the 1:9 list (hr@1/10 by default) per
                                task and model, error bars = std over seeds

The metric columns are every key of :mod:`tfgb.evaluation.metrics` that all runs report (``mrr@k``, ``ndcg@k``
and ``hr@c/k``, grouped by list length k), so they follow the recipe's ``eval.ks`` and
``eval.hr_cutoffs``.

A killed comparison started again with the same arguments resumes: runs whose ``metrics.json``
exists are read, not retrained, and an unfinished run resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import math
import sys
from pathlib import Path

from tfgb.config import Config
from tfgb.errors import ConfigError, cli_boundary, setup_logging
from tfgb.evaluation.metrics import key_order, parse_key
from tfgb.rundir import RunDir, atomic_write

log = logging.getLogger("tfgb.compare")

TASKS = (("a", "task A (items)"), ("b", "task B (participants)"))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def run_all(pipeline: str | None, data_dir: str | None, names: list[str], seeds: int, out: Path,
            overrides: list[str], progress: bool = True,
            per_model: dict[str, list[str]] | None = None) -> dict[str, list[dict]]:
    """Train (or read) every (model, seed) run; returns ``{model: [metrics of seed 1, ...]}``.

    ``per_model``: extra overrides of one model's runs (``--set-for``), applied after ``overrides``.
    """
    per_model = per_model or {}
    import tensorflow as tf

    from tfgb import train as train_lib

    configs = {}
    for name in names:  # resolve every recipe first: a typo fails before hours of training
        for seed in range(1, seeds + 1):
            configs[name, seed] = train_lib.load_config(pipeline, [*overrides, *per_model.get(name, []),
                                                                   f"model.name={name}", f"train.seed={seed}"])
    results: dict[str, list[dict]] = {name: [] for name in names}
    total = len(configs)
    for done, ((name, seed), config) in enumerate(configs.items(), 1):
        run = RunDir(out / "runs" / f"{name}-seed{seed}")
        if run.metrics.exists():
            print(f"[{done}/{total}] {name} seed {seed}: finished earlier, read {run.metrics}", file=sys.stderr)
            results[name].append(run.read_metrics())
            continue
        print(f"[{done}/{total}] {name} seed {seed}: training into {run.path}", file=sys.stderr)
        tf.keras.backend.clear_session()
        with contextlib.redirect_stdout(sys.stderr):  # Keras progress bars go to stdout
            metrics = train_lib.train(config, data_dir, run.path, progress=progress)
        results[name].append(metrics)
        test = metrics["test"]
        print(f"[{done}/{total}] {name} seed {seed}: test MRR@10 A {test['a']['mrr@10']:.4f} "
              f"B {test['b']['mrr@10']:.4f}", file=sys.stderr)
    return results


def common_metrics(results: dict[str, list[dict]]) -> list[str]:
    """The metric keys (:mod:`tfgb.evaluation.metrics`) in the test metrics of both tasks of every run, in
    :func:`tfgb.evaluation.metrics.key_order` (mrr@10, ndcg@10, hr@1/10, hr@5/10, mrr@100, ...)."""
    keys: set[str] | None = None
    for runs in results.values():
        for r in runs:
            for task, _ in TASKS:
                found = {key for key in r["test"][task] if parse_key(key) is not None}
                keys = found if keys is None else keys & found
    return sorted(keys or (), key=key_order)


def table_metrics(rows: list[dict]) -> list[str]:
    """The metric keys summarized in ``rows`` (columns ``a_<key>_mean``), in their column order."""
    return [col[2:-5] for col in rows[0] if col.startswith("a_") and col.endswith("_mean")] if rows else []


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    """One row per model: mean and std of every test metric, parameters, minutes per epoch."""
    metrics = common_metrics(results)
    rows = []
    for name, runs in results.items():
        row: dict = {"model": name, "seeds": len(runs)}
        for task, _ in TASKS:
            for metric in metrics:
                mean, std = mean_std([float(r["test"][task][metric]) for r in runs])
                row[f"{task}_{metric}_mean"], row[f"{task}_{metric}_std"] = mean, std
        row["parameters"] = int(runs[0].get("parameters", 0))
        minutes = [r["minutes_per_epoch"] for r in runs if r.get("minutes_per_epoch") is not None]
        row["minutes_per_epoch"] = sum(minutes) / len(minutes) if minutes else float("nan")
        row["epochs"] = float(runs[0].get("epochs", 0))
        row["train_minutes"] = row["minutes_per_epoch"] * row["epochs"]
        rows.append(row)
    return rows


def markdown(rows: list[dict], budget: str) -> str:
    """The comparison table (test split) as Markdown."""
    metrics = table_metrics(rows)
    head = ["model"] + [f"{task.upper()} {metric.upper()}" for task, _ in TASKS for metric in metrics]
    head += ["parameters", "epochs", "min/epoch", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"]]
        cells += [f"{row[f'{task}_{metric}_mean']:.4f} ± {row[f'{task}_{metric}_std']:.4f}"
                  for task, _ in TASKS for metric in metrics]
        cells += [f"{row['parameters']:,}", f"{row['epochs']:g}", f"{row['minutes_per_epoch']:.3f}",
                  f"{row['train_minutes']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Test split; task A ranks items for the initiator, task B participants for (initiator, item). "
            "MRR@k and NDCG@k over the whole list of k candidates (@10 = 1 positive + 9 negatives, "
            "@100 = 1 + 99); HR@c/k = share of lists whose positive is in the top c of its k candidates "
            "(random ranking: c/k). Pessimistic ties. Mean ± sample std over seeds.")
    return "\n".join(["# Model comparison", "", budget, "", note, "", *lines, ""])


def write_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _panels(rows: list[dict]) -> list[tuple[str, str, float]]:
    """(metric, y label, value of a random ranking) of each plot panel: MRR@10 and the smallest HR of 1:9."""
    metrics = table_metrics(rows)
    panels = [("mrr@10", "test MRR@10 (1:9)", sum(1.0 / rank for rank in range(1, 11)) / 10)]
    cutoffs = [cutoff for name, cutoff, length in map(parse_key, metrics) if name == "hr" and length == 10]
    if cutoffs:
        c = min(cutoffs)
        panels.append((f"hr@{c}/10", f"test HR@{c}/10 (top {c} of 1:9)", c / 10))
    return [panel for panel in panels if panel[0] in metrics]


def plot(rows: list[dict], path: Path) -> None:
    """Bar charts of test MRR@10 and the first HR cut-off of 1:9 per task and model, std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["model"] for row in rows]
    width = 0.38
    panels = _panels(rows)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(n * max(6.0, 1.1 * len(rows) + 2), 4.0), squeeze=False)
    for ax, (metric, ylabel, random) in zip(axes[0], panels):
        for offset, (task, label) in zip((-width / 2, width / 2), TASKS):
            ax.bar([x + offset for x in range(len(rows))], [row[f"{task}_{metric}_mean"] for row in rows], width,
                   yerr=[row[f"{task}_{metric}_std"] for row in rows], capsize=3, label=label)
        ax.axhline(random, color="gray", linestyle="--", linewidth=1, label=f"random ranking ({random:.3f})")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper center", ncol=3, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def budget_text(config: Config, pipeline: str | None, overrides: list[str], seeds: int, out: Path,
                per_model: dict[str, list[str]] | None = None) -> str:
    """The sentence stating what every model was given."""
    t = config.train
    same = (f"Same budget for every model: {t.epochs} epochs, batch {t.batch_size}, learning rate "
            f"{t.learning_rate}, best checkpoint by validation MRR@10")
    if per_model:
        changed = "; ".join(f"{name}: `{' '.join(sets)}`" for name, sets in per_model.items())
        same = (f"Every model gets the recipe's budget ({t.epochs} epochs, batch {t.batch_size}, learning rate "
                f"{t.learning_rate}, best checkpoint by validation MRR@10) except these per-model settings "
                f"(--set-for): {changed}")
    return (f"Recipe `{pipeline or 'pipelines/default.toml'}` ({config.name}), overrides "
            f"`{' '.join(overrides) or 'none'}`. {same}; seeds "
            f"train.seed = 1..{seeds} (data split and candidate lists fixed by data.seed = {config.data.seed}). "
            f"Runs in `{out / 'runs'}`.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfgb.compare", description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", help="recipe TOML (default: pipelines/default.toml, synthetic data)")
    p.add_argument("--data-dir", help="directory the recipe's data files are relative to")
    p.add_argument("--models", default="mgbr,mamgbr,lightgcn,ngcf,gbmf,mf-bpr,popularity",
                   help="comma-separated registry names (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="train.seed = 1..SEEDS per model (default: 3)")
    p.add_argument("--out", help="output directory (default: runs/compare-<recipe name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value for every run, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--set-for", dest="per_model", action="append", default=[], metavar="MODEL:KEY=VALUE",
                   help="override a recipe value for one model's runs only, e.g. --set-for lightgcn:train.epochs=20 "
                        "(repeatable; stated in the table's budget sentence)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (run summaries still go to stderr)")
    return p


@cli_boundary
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    names = [name.strip().lower() for name in args.models.split(",") if name.strip()]
    if not names:
        raise ConfigError("--models needs at least one model name")
    if len(set(names)) != len(names):
        raise ConfigError(f"--models lists a model twice: {args.models}")
    if args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    for override in args.overrides:
        key = override.split("=", 1)[0].strip()
        if key in ("model.name", "train.seed"):
            raise ConfigError(f"--set {key} is chosen by compare itself (--models / --seeds)")
    per_model: dict[str, list[str]] = {}
    for spec in args.per_model:
        name, sep, assignment = spec.partition(":")
        name = name.strip().lower()
        if not sep or "=" not in assignment:
            raise ConfigError(f"--set-for needs MODEL:KEY=VALUE, got {spec!r}")
        if name not in names:
            raise ConfigError(f"--set-for names {name!r}, which is not in --models ({args.models})")
        if assignment.split("=", 1)[0].strip() in ("model.name", "train.seed"):
            raise ConfigError(f"--set-for {spec}: model.name and train.seed are chosen by compare itself")
        per_model.setdefault(name, []).append(assignment)
    from tfgb import train as train_lib  # imports TensorFlow

    config = train_lib.load_config(args.pipeline, args.overrides)
    out = Path(args.out or f"runs/compare-{config.name}")
    results = run_all(args.pipeline, args.data_dir, names, args.seeds, out, args.overrides, not args.quiet, per_model)
    rows = summarize(results)
    table = markdown(rows, budget_text(config, args.pipeline, args.overrides, args.seeds, out, per_model))
    atomic_write(out / "comparison.md", table)
    atomic_write(out / "comparison.csv", write_csv(rows))
    plot(rows, out / "mrr10.png")
    print(table)
    print(f"written: {out / 'comparison.md'}, {out / 'comparison.csv'}, {out / 'mrr10.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
