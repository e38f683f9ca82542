"""``python -m tfgb.train``: train a model from a pipeline recipe, resumably.

With no arguments it trains the default recipe on the built-in synthetic data. Per epoch: a
progress bar with every loss term, validation metrics on a seeded subsample, the best checkpoint
kept by mean validation MRR@10 of the two tasks. At the end: valid and test metrics of both
tasks at 1:9 and 1:99 in ``metrics.json``. A killed run started again with the same model dir
resumes from its last completed epoch; with op determinism on, it ends with the same metrics as
an uninterrupted run (the data stream of epoch e depends only on the seed and e).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfgb import config as cfg
from tfgb import models
from tfgb.data.prepare import Prepared, prepare
from tfgb.errors import cli_boundary, setup_logging
from tfgb.evaluation import evaluate, objective
from tfgb.rundir import RunDir

log = logging.getLogger("tfgb.train")

DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "default.toml"


@dataclasses.dataclass
class Session:
    """Everything a run needs, built once: data, graphs, model, checkpoint state."""

    config: cfg.Config
    run: RunDir
    data: Prepared
    model: tf.keras.Model
    checkpoint: tf.train.Checkpoint
    epoch: tf.Variable
    best: tf.Variable


def load_config(pipeline: str | None, overrides: list[str]) -> cfg.Config:
    """The recipe (default: pipelines/default.toml when present, else built-in defaults) + overrides, resolved."""
    if pipeline is None and DEFAULT_PIPELINE.exists():
        pipeline = str(DEFAULT_PIPELINE)
    return models.resolve(cfg.load(pipeline, overrides))


def build_session(config: cfg.Config, data_dir: str | None, model_dir: str | Path) -> Session:
    """Prepare data, build the model and its checkpoint; nothing is trained here."""
    configure_determinism(config.train.deterministic)
    tf.keras.utils.set_random_seed(config.train.seed)
    run = RunDir(model_dir)
    data = prepare(config, data_dir)
    data.save_vocabularies(run.vocab)
    graphs = data.graphs()
    model = models.build(config, data.num_users, data.num_items, graphs)
    if config.train.graph_folds > 1:
        model.set_fold_graphs(data.fold_graphs(config.train.graph_folds, config.train.seed))
    if getattr(model, "use_bias", False) and config.model.bias_init == "log_count":
        model.set_bias_prior(np.bincount(data.train.item, minlength=data.num_items),
                             np.bincount(data.train.participants, minlength=data.num_users))
    model.compile(optimizer=make_optimizer(config.train))
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_objective")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch, best=best)
    return Session(config, run, data, model, checkpoint, epoch, best)


def configure_determinism(enabled: bool) -> None:
    """Make training bit-reproducible: deterministic kernels and ops run one at a time.

    Measured: with op determinism alone, two runs differ by ~1e-5 after a few steps because
    independent ops (e.g. the gradient updates of different embedding tables) run concurrently;
    one inter-op thread removes that (intra-op threads still use every core) for ~15% speed.
    """
    if not enabled:
        return
    tf.config.experimental.enable_op_determinism()
    if tf.config.threading.get_inter_op_parallelism_threads() != 1:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime already started in this process (e.g. a second run)
            log.warning("could not limit inter-op threads after TensorFlow started; runs may differ by ~1e-5")


def make_optimizer(train: cfg.TrainConfig) -> tf.keras.optimizers.Optimizer:
    """Adam (the papers' optimizer), or AdamW when ``train.weight_decay`` > 0."""
    if train.weight_decay > 0:
        return tf.keras.optimizers.AdamW(train.learning_rate, weight_decay=train.weight_decay)
    return tf.keras.optimizers.Adam(train.learning_rate)


def restore(session: Session, which: str = "last") -> bool:
    """Restore the ``last`` or ``best`` checkpoint; False when there is none."""
    directory = session.run.last if which == "last" else session.run.best
    path = tf.train.latest_checkpoint(str(directory))
    if path is None:
        return False
    # Build the optimizer's slots first so that they are restored, not created after the restore.
    session.model.optimizer.build(session.model.trainable_variables)
    session.checkpoint.read(path).assert_existing_objects_matched().expect_partial()
    return True


def _build_variables(session: Session) -> None:
    """Create every model variable with one tiny forward pass (checkpoints restore into them)."""
    batch = next(iter(session.data.training_dataset(session.config.train, epoch=0).take(1)))
    # A few triples are enough (no weight's shape depends on the batch); the whole first batch, run
    # eagerly, was the peak memory of a large-batch run (10.3 GiB at batch 1024 and |T| = 99).
    batch = {key: value[:2] for key, value in batch.items()}
    session.model.compute_loss(batch, training=False)
    session.model.reset_metrics()


def _fault_injection(epoch: int, first: int = 0, count: int | None = None) -> list[tf.keras.callbacks.Callback]:
    """Testing hook: ``TFGB_KILL_AT=EPOCH:BATCH`` SIGKILLs the process at that (1-based) epoch and batch.

    ``first`` and ``count`` are the batches of the epoch that this ``fit`` call trains (one
    validation segment); BATCH counts from the start of the epoch.

    The kill is as abrupt as a power cut or an OOM kill: nothing is flushed or cleaned up. The
    resume test uses it to interrupt a run deterministically, mid-epoch.
    """
    spec = os.environ.get("TFGB_KILL_AT")
    if not spec:
        return []
    kill_epoch, kill_batch = (int(x) for x in spec.split(":"))
    if kill_epoch != epoch + 1 or kill_batch <= first or (count is not None and kill_batch > first + count):
        return []

    class Kill(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if first + batch + 1 >= kill_batch:
                os.kill(os.getpid(), signal.SIGKILL)

    return [Kill()]


def peak_memory_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2)


def _epoch_label(segments: int, per_epoch: int) -> int | float:
    """Completed validation segments as epochs: 3 of 4 per epoch -> 0.75; whole epochs stay ints."""
    return segments // per_epoch if segments % per_epoch == 0 else round(segments / per_epoch, 3)


def fit(session: Session, progress: bool = True) -> list[dict]:
    """Train the remaining epochs; returns the history rows (one per validation).

    Each epoch is cut into ``train.evals_per_epoch`` consecutive segments of its batches; after each
    segment the model is validated, the best checkpoint kept and the last one written, so a killed
    run loses at most one segment. ``session.epoch`` counts completed segments.
    """
    config, run, model = session.config, session.run, session.model
    per_epoch = config.train.evals_per_epoch
    _build_variables(session)
    managers = {name: tf.train.CheckpointManager(session.checkpoint, str(path), max_to_keep=1)
                for name, path in (("last", run.last), ("best", run.best))}
    if restore(session, "last"):
        log.info("resuming %s after epoch %s", run.path, _epoch_label(int(session.epoch.numpy()), per_epoch))
    history = run.read_history()[: int(session.epoch.numpy())]
    for segment in range(int(session.epoch.numpy()), config.train.epochs * per_epoch):
        epoch, part = divmod(segment, per_epoch)
        start = time.perf_counter()
        stream = session.data.training_stream(config.train)
        bounds = [stream.num_batches * k // per_epoch for k in range(per_epoch + 1)]
        first, count = bounds[part], bounds[part + 1] - bounds[part]
        if progress:
            where = f" (part {part + 1}/{per_epoch})" if per_epoch > 1 else ""
            print(f"Epoch {epoch + 1}/{config.train.epochs}{where}", file=sys.stderr)
        dataset = stream.dataset(epoch, start_batch=first)
        if per_epoch > 1:
            dataset = dataset.take(count)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
        fit_logs = model.fit(dataset, epochs=1, verbose=(1 if progress else 0), callbacks=_fault_injection(epoch, first, count)
                             ).history
        train_seconds = time.perf_counter() - start
        valid = evaluate(model, session.data.valid_candidates, ks=[10], batch_size=config.eval.batch_size,
                         max_groups=config.train.valid_max_groups, seed=config.train.seed)
        score = objective(valid)
        row = {"epoch": _epoch_label(segment + 1, per_epoch)}
        row.update({k: float(v[-1]) for k, v in fit_logs.items() if k.startswith(("loss_", "aux_")) or k == "loss"})
        row.update({f"valid_{task}_mrr@10": valid[task]["mrr@10"] for task in ("a", "b")})
        row.update({"valid_objective": score, "train_seconds": round(train_seconds, 2),
                    "seconds": round(time.perf_counter() - start, 2), "peak_rss_gib": peak_memory_gib()})
        improved = score > float(session.best.numpy())
        if improved:
            session.best.assign(score)
        session.epoch.assign(segment + 1)
        if improved:
            managers["best"].save(checkpoint_number=segment + 1)
        history.append(row)
        run.write_history(history)
        managers["last"].save(checkpoint_number=segment + 1)
        if progress:
            print(f"  valid mrr@10  task A {row['valid_a_mrr@10']:.4f}  task B {row['valid_b_mrr@10']:.4f}"
                  f"  objective {score:.4f}{'  (best)' if improved else ''}  [{row['seconds']:.1f} s]",
                  file=sys.stderr)
    return history


def final_metrics(session: Session, progress: bool = True) -> dict:
    """Restore the best checkpoint and evaluate it on the full valid and test lists."""
    config = session.config
    per_epoch = config.train.evals_per_epoch
    # Epochs trained, read before the best checkpoint rewinds the counter of completed segments.
    epochs = _epoch_label(int(session.epoch.numpy()), per_epoch)
    if not restore(session, "best"):
        restore(session, "last")
    out = {"model": config.model.name, "epochs": epochs,
           "best_epoch": _epoch_label(int(session.epoch.numpy()), per_epoch),
           "best_valid_objective": float(session.best.numpy())}
    for split, lists, limit in (("valid", session.data.valid_candidates, config.eval.valid_max_groups),
                                ("test", session.data.test_candidates, config.eval.max_groups)):
        out[split] = evaluate(session.model, lists, ks=config.eval.ks, batch_size=config.eval.batch_size,
                              max_groups=limit, seed=config.train.seed, progress=progress, desc=split)
    out["parameters"] = int(sum(v.shape.num_elements() for v in session.model.trainable_variables))
    return out


def train(config: cfg.Config, data_dir: str | None, model_dir: str | Path, progress: bool = True) -> dict:
    """Train (or resume) and evaluate; writes everything into ``model_dir``; returns metrics."""
    run = RunDir(model_dir)
    resumed = run.claim(config)
    if resumed:
        log.info("%s already holds this recipe: resuming", run.path)
    run.write_data_dir(data_dir)
    session = build_session(config, data_dir, model_dir)
    history = fit(session, progress)
    metrics = final_metrics(session, progress)
    seconds = [row["train_seconds"] for row in history if "train_seconds" in row]
    epochs = len(seconds) / config.train.evals_per_epoch
    metrics["minutes_per_epoch"] = round(sum(seconds) / epochs / 60, 3) if seconds else None
    metrics["peak_rss_gib"] = peak_memory_gib()  # of this process (a resumed run: since the resume)
    run.write_metrics(metrics)
    return metrics


def format_metrics(metrics: dict) -> str:
    """One line per split and task, metrics grouped by list length: ``mrr@10 ndcg@10 hr@1/10 hr@5/10 | mrr@100 ...``."""
    from tfgb.metrics import key_order, parse_key

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
    return "\n".join(lines)


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
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    config = load_config(args.pipeline, args.overrides)
    configure_determinism(config.train.deterministic)  # before any TensorFlow op runs
    model_dir = args.model_dir or f"runs/{config.name}-{config.model.name}"
    metrics = train(config, args.data_dir, model_dir, progress=not args.quiet)
    print(format_metrics(metrics))
    print(f"model dir: {model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
