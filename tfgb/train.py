"""``python -m tfgb.train``: train a model from a pipeline recipe, resumably, for as long as the data needs.

With no arguments it trains the default recipe on the built-in synthetic data. The run validates
every ``train.eval_every_steps`` optimizer steps (counted across epochs), or ``train.evals_per_epoch``
times per epoch when that is 0, and where the budget ends: validation metrics on a seeded subsample,
the best checkpoint kept by the mean validation MRR@10 of the two tasks (the objective). It stops at
the first of (:class:`tfgb.config.TrainConfig`):

* ``patience``: that many validations in a row without a better objective (0 = off);
* the step budget: max(``epochs`` epochs, ``budget_steps`` steps), so a recipe written for a large
  data set still trains ``budget_steps`` steps (several epochs) on a small one;
* ``max_minutes`` of training and validation, summed over resumes (0 = no limit); checked after
  every step, so the run ends within one step and one validation of it.

``history.csv`` and ``metrics.json`` say why it stopped (``stop_reason``). At the end: valid and test
metrics of both tasks on every list length of ``eval.ks`` in ``metrics.json``. A killed run started
again with the same model dir resumes from its last validation (weights, optimizer, step, patience
counter and time spent come from the checkpoint); with op determinism on, it ends with the metrics
of an uninterrupted run (batch b of epoch e depends only on the seed, e and b).

Library use: :func:`train` (or :func:`fit` on a :class:`tfgb.session.Session`) takes ``hooks``,
functions called with the :class:`Position` of every training step, e.g. to interrupt a run.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow as tf

from tfgb import allocator, models
from tfgb import config as cfg
from tfgb.errors import cli_boundary, setup_logging
from tfgb.evaluation import evaluate, objective
from tfgb.rundir import RunDir
from tfgb.session import Session, configure_determinism

log = logging.getLogger("tfgb.train")

DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "default.toml"


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a run is after a training step: ``step`` steps done in all; that step trained batch
    ``batch`` (0-based) of epoch ``epoch`` (0-based)."""

    step: int
    epoch: int
    batch: int


BatchHook = Callable[[Position], None]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where a run validates and where its budget ends, in optimizer steps numbered across epochs."""

    steps_per_epoch: int
    total: int  # the step budget: max(epochs x steps_per_epoch, budget_steps)
    every: int  # eval_every_steps; 0 = evals_per_epoch parts of each epoch
    per_epoch: int
    by_steps: bool  # whether budget_steps, not epochs, sets the budget

    @classmethod
    def of(cls, train: cfg.TrainConfig, steps_per_epoch: int) -> Plan:
        by_epochs = train.epochs * steps_per_epoch
        return cls(steps_per_epoch, max(by_epochs, train.budget_steps), train.eval_every_steps,
                   train.evals_per_epoch, train.budget_steps > by_epochs)

    def next_validation(self, step: int) -> int:
        """The step of the first validation after ``step``: the next multiple of ``every``, or the next
        of the epoch's parts ``floor(n k / evals_per_epoch)``, k = 1..evals_per_epoch; at most the budget."""
        if self.every > 0:
            return min((step // self.every + 1) * self.every, self.total)
        n = self.steps_per_epoch
        epoch, done = divmod(step, n)
        part = next(n * k // self.per_epoch for k in range(1, self.per_epoch + 1) if n * k // self.per_epoch > done)
        return min(epoch * n + part, self.total)

    def epochs(self, step: int) -> int | float:
        """``step`` in epochs: 3 of 4 steps per epoch -> 0.75; whole epochs stay ints."""
        whole, rest = divmod(step, self.steps_per_epoch)
        return whole if rest == 0 else round(step / self.steps_per_epoch, 3)


def stop_reason(plan: Plan, progress: dict, train: cfg.TrainConfig) -> str | None:
    """Why the run stops now (``patience``, ``budget_steps``, ``max_epochs``, ``max_minutes``), or None."""
    if train.patience and progress["since_best"] >= train.patience:
        return "patience"
    if progress["step"] >= plan.total:
        return "budget_steps" if plan.by_steps else "max_epochs"
    if train.max_minutes and progress["seconds"] >= train.max_minutes * 60:
        return "max_minutes"
    return None


def load_config(pipeline: str | None, overrides: list[str]) -> cfg.Config:
    """The recipe (default: pipelines/default.toml when present, else built-in defaults) + overrides, resolved."""
    if pipeline is None and DEFAULT_PIPELINE.exists():
        pipeline = str(DEFAULT_PIPELINE)
    return models.resolve(cfg.load(pipeline, overrides))


def peak_memory_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2)


class _Steps(tf.keras.callbacks.Callback):
    """Counts the steps of one ``model.fit`` call, calls the hooks after each, and ends the call
    once ``deadline`` (a ``time.perf_counter`` value; None = none) has passed."""

    def __init__(self, plan: Plan, first: int, hooks: Sequence[BatchHook], deadline: float | None):
        super().__init__()
        self.plan, self.first, self.hooks, self.deadline = plan, first, hooks, deadline
        self.done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        step = self.first + self.done
        position = Position(step, *divmod(step - 1, self.plan.steps_per_epoch))
        for hook in self.hooks:
            hook(position)
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.model.stop_training = True


def segment_dataset(stream, start: int, stop: int) -> tf.data.Dataset:
    """The training batches of steps ``start`` .. ``stop - 1`` (numbered across epochs)."""
    n, parts, step = stream.num_batches, [], start
    while step < stop:
        epoch, batch = divmod(step, n)
        count = min(n - batch, stop - step)
        parts.append(stream.dataset(epoch, start_batch=batch).take(count))
        step += count
    dataset = functools.reduce(tf.data.Dataset.concatenate, parts)
    return dataset.apply(tf.data.experimental.assert_cardinality(stop - start))


def fit(session: Session, progress: bool = True, hooks: Sequence[BatchHook] = ()) -> tuple[list[dict], str]:
    """Train until :func:`stop_reason` says stop, resuming from the last checkpoint when there is one.

    Returns the history rows (one per validation, all of the run's) and the stop reason. After each
    validation the best checkpoint is kept and the last one written, so a killed run loses at most
    the steps since its last validation.
    """
    config, run, model, state = session.config, session.run, session.model, session.progress
    train = config.train
    stream = session.stream()
    plan = Plan.of(train, stream.num_batches)
    if train.eval_every_steps > 0 and train.evals_per_epoch > 1:
        log.warning("train.eval_every_steps = %d sets the validation cadence; train.evals_per_epoch = %d is unused",
                    train.eval_every_steps, train.evals_per_epoch)
    if session.restore("last"):
        log.info("resuming %s after step %d (epoch %s)", run.path, state.step.numpy(), plan.epochs(int(state.step)))
    history = run.read_history()[: state.values()["validations"]]
    for row in history:
        row.pop("stop_reason", None)
    while (reason := stop_reason(plan, state.values(), train)) is None:
        start, spent = int(state.step.numpy()), float(state.seconds.numpy())
        target = plan.next_validation(start)
        began = time.perf_counter()
        deadline = began + train.max_minutes * 60 - spent if train.max_minutes else None
        if progress:
            print(f"Epoch {start // plan.steps_per_epoch + 1}: steps {start + 1}-{target} of at most {plan.total}",
                  file=sys.stderr)
        steps = _Steps(plan, start, hooks, deadline)
        logs = model.fit(segment_dataset(stream, start, target), epochs=1, verbose=1 if progress else 0,
                         callbacks=[steps]).history
        train_seconds = time.perf_counter() - began
        valid = evaluate(model, session.data.valid_candidates, ks=[10], batch_size=config.eval.batch_size,
                         max_groups=train.valid_max_groups, seed=train.seed)
        score = objective(valid)
        improved = score > float(state.best.numpy())
        seconds = time.perf_counter() - began
        state.step.assign(start + steps.done)
        state.validations.assign_add(1)
        state.seconds.assign(spent + seconds)
        if improved:
            state.best.assign(score)
            state.since_best.assign(0)
            session.save("best")
        else:
            state.since_best.assign_add(1)
        row = {"step": start + steps.done, "epoch": plan.epochs(start + steps.done)}
        row.update({k: float(v[-1]) for k, v in logs.items() if k.startswith(("loss_", "aux_")) or k == "loss"})
        row.update({f"valid_{task}_mrr@10": valid[task]["mrr@10"] for task in ("a", "b")})
        row.update({"valid_objective": score, "since_best": int(state.since_best.numpy()),
                    "train_seconds": round(train_seconds, 2), "seconds": round(seconds, 2),
                    "peak_rss_gib": peak_memory_gib()})
        history.append(row)
        run.write_history(history)
        session.save("last")
        if progress:
            print(f"  valid mrr@10  task A {row['valid_a_mrr@10']:.4f}  task B {row['valid_b_mrr@10']:.4f}"
                  f"  objective {score:.4f}{'  (best)' if improved else ''}  [{row['seconds']:.1f} s]",
                  file=sys.stderr)
    if history:
        history[-1]["stop_reason"] = reason
        run.write_history(history)
    log.info("%s: stopped after %d steps (%s)", run.path, state.step.numpy(), reason)
    return history, reason


def final_metrics(session: Session, reason: str, progress: bool = True) -> dict:
    """Restore the best checkpoint and evaluate it: the saved lists of valid and test (both tasks), and on
    test also (:func:`tfgb.evaluation.breakdown.split_report`) ``test.full`` (the full-catalog protocol on
    ``eval.full_max_initiators`` initiators; left out when that is 0), ``test.launch_success`` (left out
    without held-out failed launches) and ``test.sparsity`` (task A by the initiator's training counts)."""
    from tfgb.evaluation.breakdown import split_report

    config = session.config
    plan = Plan.of(config.train, session.steps_per_epoch())
    steps = int(session.progress.step.numpy())  # read before the best checkpoint rewinds it
    session.restore_best_or_last()
    best = session.progress.values()
    out = {"model": config.model.name, "epochs": plan.epochs(steps), "steps": steps, "stop_reason": reason,
           "best_epoch": plan.epochs(best["step"]), "best_step": best["step"], "best_valid_objective": best["best"]}
    out["valid"] = evaluate(session.model, session.data.valid_candidates, ks=config.eval.ks,
                            batch_size=config.eval.batch_size, max_groups=config.eval.valid_max_groups,
                            seed=config.train.seed, progress=progress, desc="valid", hr_cutoffs=config.eval.cutoffs())
    out["test"] = split_report(session.model, session.data, "test", config.eval, config.train.seed, "all",
                               full_initiators=config.eval.full_max_initiators or None, progress=progress)
    out["parameters"] = session.parameters()
    if hasattr(session.model, "gprec"):  # GPRec's groups: numbers here, the cosine heatmap beside them
        from tfgb.evaluation import groups

        out["gprec"] = groups.report(session.model)
        groups.heatmap(session.model, session.run.path / "gprec_group_cosines.png")
    if hasattr(session.model, "utilisation"):  # TreeMS: the paper's task B metrics by scenario, the gates' use
        from tfgb.evaluation.scenario import treems_report

        out["treems"] = treems_report(session.model, session.data, config, session.run.path)
    return out


def train(config: cfg.Config, data_dir: str | None, model_dir: str | Path, progress: bool = True,
          hooks: Sequence[BatchHook] = ()) -> dict:
    """Train (or resume) and evaluate; writes everything into ``model_dir``; returns metrics.

    ``hooks`` are called after every training step with its :class:`Position`.
    """
    run = RunDir(model_dir)
    if run.claim(config):
        log.info("%s already holds this recipe: resuming", run.path)
    run.write_data_dir(data_dir)
    session = Session.create(config, data_dir, model_dir)
    history, reason = fit(session, progress, hooks)
    metrics = final_metrics(session, reason, progress)
    seconds = sum(row["train_seconds"] for row in history if "train_seconds" in row)
    metrics["minutes_per_epoch"] = round(seconds / metrics["epochs"] / 60, 3) if history and metrics["epochs"] else None
    metrics["peak_rss_gib"] = peak_memory_gib()  # of this process (a resumed run: since the resume)
    metrics["allocator"] = allocator.CURRENT.allocator if allocator.CURRENT else "unknown"  # TFGB_ALLOCATOR
    run.write_metrics(metrics)
    return metrics


def format_metrics(metrics: dict) -> str:
    """One line per split and task, metrics grouped by list length: ``mrr@10 ndcg@10 hr@1/10 hr@5/10 | mrr@100 ...``;
    then, where a split has them, the full-catalog metrics, the launch AUC and one line per sparsity cell."""
    from tfgb.evaluation.metrics import key_order, parse_key

    lines = []
    for split in ("valid", "test"):
        if split not in metrics:
            continue
        for task, label in (("a", "task A (items)"), ("b", "task B (participants)")):
            values, length = [], None
            for key in sorted(metrics[split][task], key=key_order):
                parsed = parse_key(key)
                if length is not None and parsed is not None and parsed[2] != length:
                    values.append("|")
                length = parsed[2] if parsed is not None else length
                values.append(f"{key} {metrics[split][task][key]:.4f}")
            lines.append(f"{split:5s} {label:22s} {'  '.join(values)}")
        lines += _beyond_lists(split, metrics[split])
    if "gprec" in metrics:
        g = metrics["gprec"]
        lines.append(f"gprec groups {g['groups']}: empty {g['empty_groups']}, full {g['full_groups']}, mask entropy "
                     f"{g['mask_entropy_bits']:.3f} bits, occupancy entropy {g['occupancy_entropy_bits']:.2f} of "
                     f"{g['max_entropy_bits']:.2f} bits, undecided masks {g['undecided_share']:.3f}, cos(p_i, n_i) "
                     f"{g['own_pair_cosine_mean']:.3f} vs cos(p_i, n_j) {g['other_pair_cosine_mean']:.3f}")
    if "treems" in metrics:
        for k, report in metrics["treems"]["by_scenario"].items():
            for part in ("all", "head", "tail"):
                m = report[part]
                if m.get("lists"):
                    lines.append(f"test  task B 1:{int(k) - 1} {part:4s}  lists {m['lists']:6d}  leaves {m['leaves']:4d}  "
                                 f"auc {m['auc']:.4f}  gauc {m['gauc']:.4f}  mrr {m['mrr']:.4f}  hr@5 {m['hr@5']:.4f}  "
                                 f"hr@10 {m['hr@10']:.4f}")
    return "\n".join(lines)


def _beyond_lists(split: str, result: dict) -> list[str]:
    """The lines of ``full``, ``launch_success`` and ``sparsity`` (one per cell with rows) of a split."""
    lines = []
    full = result.get("full")
    if full:
        ks = [key[3:] for key in full if key.startswith("hr@")]
        values = " | ".join(f"hr@{k} {full[f'hr@{k}']:.4f}  ndcg@{k} {full[f'ndcg@{k}']:.4f}" for k in ks)
        lines.append(f"{split:5s} {'task A full catalog':22s} {values}  ({full['initiators']} initiators, "
                     f"{full['mean_candidates']:.0f} items each)")
    launch = result.get("launch_success")
    if launch:
        lines.append(f"{split:5s} {'launch success':22s} auc {launch['auc']:.4f}  floor (item rate) "
                     f"{launch['floor_auc']:.4f}  ({launch['positives']} deals, {launch['negatives']} failed)")
    for cell, families in (result.get("sparsity") or {}).items():
        parts = []
        sampled, cell_full, cell_launch = families.get("sampled"), families.get("full"), families.get("launch_success")
        if sampled and sampled["rows"]:
            key = "mrr@10" if "mrr@10" in sampled else next(k for k in sampled if k != "rows")
            parts.append(f"lists {sampled['rows']:5d} {key} {sampled[key]:.4f}")
        if cell_full and cell_full["rows"]:
            key = "hr@100" if "hr@100" in cell_full else next(k for k in cell_full if k.startswith("hr@"))
            parts.append(f"full {cell_full['rows']:4d} {key} {cell_full[key]:.4f}")
        if cell_launch and cell_launch["auc"] is not None:
            parts.append(f"launches {cell_launch['positives']}/{cell_launch['negatives']} auc {cell_launch['auc']:.4f}")
        if parts:
            lines.append(f"{split:5s} {'  ' + cell:22s} {' | '.join(parts)}")
    if lines and len(lines) > bool(full) + bool(launch):
        lines.insert(bool(full) + bool(launch), f"{split:5s} {'task A by sparsity':22s} cells: training deals "
                     "launched x training failed launches of the initiator")
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfgb.train", description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", help="recipe TOML (default: pipelines/default.toml, synthetic data)")
    p.add_argument("--data-dir", help="directory the recipe's data files are relative to")
    p.add_argument("--model-dir", help="where the run is written (default: runs/<recipe name>-<model>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@cli_boundary
def main(argv: list[str] | None = None, hooks: Sequence[BatchHook] = ()) -> int:
    """The command; ``hooks`` as in :func:`train` (for callers that run the command in-process)."""
    args = parser().parse_args(argv)
    setup_logging()
    config = load_config(args.pipeline, args.overrides)
    configure_determinism(config.train.deterministic)  # before any TensorFlow op runs
    model_dir = args.model_dir or f"runs/{config.name}-{config.model.name}"
    metrics = train(config, args.data_dir, model_dir, progress=not args.quiet, hooks=hooks)
    print(format_metrics(metrics))
    print(f"model dir: {model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
