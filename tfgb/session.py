"""A run's session: its prepared data, model, optimizer and checkpoint, built once.

Every command that touches a model goes through this module::

    session = Session.create(config, data_dir, model_dir)   # a new run, or one about to resume (train)
    session = Session.open(model_dir)                       # a trained run, best checkpoint restored
                                                            # (evaluate, export, bench eval)
    session.restore("last")                                 # True when that checkpoint exists
    session.restore_best_or_last()                          # "best" or "last"; ConfigError when neither
    session.save("best")                                    # after a validation (train)

A session always has its variables built (one forward pass over two triples), so a checkpoint
restores into existing variables and the optimizer's slots are restored, not created afterwards.

A checkpoint (``MODEL_DIR/checkpoints/last`` and ``.../best``, see :mod:`tfgb.rundir`) holds the
model, its optimizer and the run's :class:`Progress`: optimizer steps done, validations done, the
best validation objective, validations since that best one, and the seconds of training and
validation spent. Restoring ``last`` therefore resumes the patience counter and the time budget as
well as the weights.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import tensorflow as tf

from tfgb import config as cfg
from tfgb import models
from tfgb.data import features as user_features
from tfgb.data.prepare import Prepared, prepare
from tfgb.errors import ConfigError
from tfgb.rundir import CHECKPOINTS, RunDir

log = logging.getLogger("tfgb.session")


class Progress(tf.Module):
    """How far a run has come; checkpointed with the weights.

    Attributes (``tf.Variable`` s):
      step: optimizer steps done, counted across epochs (epoch = step // steps per epoch).
      validations: validations done.
      best: the best validation objective so far (-1 before the first validation).
      since_best: validations done since the best one (0 right after an improvement).
      seconds: wall time spent training and validating, summed over every process of the run.
    """

    def __init__(self):
        super().__init__(name="progress")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.validations = tf.Variable(0, dtype=tf.int64, trainable=False, name="validations")
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_objective")
        self.since_best = tf.Variable(0, dtype=tf.int64, trainable=False, name="since_best")
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")

    def values(self) -> dict[str, float | int]:
        """The variables as Python numbers."""
        return {"step": int(self.step.numpy()), "validations": int(self.validations.numpy()),
                "best": float(self.best.numpy()), "since_best": int(self.since_best.numpy()),
                "seconds": float(self.seconds.numpy())}


@dataclasses.dataclass
class Session:
    """Everything a run needs. Build it with :meth:`create` or :meth:`open`, not directly."""

    config: cfg.Config
    run: RunDir
    data: Prepared
    model: tf.keras.Model
    progress: Progress
    checkpoint: tf.train.Checkpoint
    restored: str | None = None  # "best" / "last": the checkpoint last restored; None = fresh weights
    _managers: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, config: cfg.Config, data_dir: str | None, model_dir: str | os.PathLike) -> Session:
        """Prepare the data, build the model, its optimizer, checkpoint and variables; train nothing.

        Writes the vocabularies into ``model_dir/vocab``; nothing is restored (see :meth:`restore`).
        """
        return cls._build(config, data_dir, RunDir(model_dir), write_vocab=True)

    @classmethod
    def open(cls, model_dir: str | os.PathLike, data_dir: str | None = None) -> Session:
        """A trained run with its best checkpoint restored (the last one when no validation improved).

        The recipe is the run's ``config.toml``; the data is read from ``data_dir``, or from where the
        run read it (``data_source.json``). Nothing in the run dir is written.

        Raises:
          ConfigError: ``model_dir`` is not a run dir, or holds no checkpoint.
        """
        run = RunDir(model_dir)
        if not run.path.is_dir():
            raise ConfigError(f"{model_dir}: no such model directory; train one first")
        config = run.load_config()
        if not any(run.has_checkpoint(which) for which in CHECKPOINTS):
            raise ConfigError(f"{model_dir}: the run holds no checkpoint yet (checkpoints/best or checkpoints/last); "
                              "train it first")
        session = cls._build(config, data_dir or run.read_data_dir(), run, write_vocab=False)
        session.restore_best_or_last()
        return session

    @classmethod
    def _build(cls, config: cfg.Config, data_dir: str | None, run: RunDir, write_vocab: bool) -> Session:
        configure_determinism(config.train.deterministic)
        tf.keras.utils.set_random_seed(config.train.seed)
        data = prepare(config, data_dir)
        if write_vocab:
            data.save_vocabularies(run.vocab)
        features = user_features.load(run.path)  # a run's own, saved when it started (resume, open)
        if features is None:
            features = user_features.for_recipe(config, data, data_dir)
            if features is not None:
                user_features.save(run.path, *features[:2], extra=features[2].get("extra"))
        categories, relations = side_tables(config, data, data_dir, run)
        model = models.build_for(config, data, features[1] if features else None, categories, relations)
        model.compile(optimizer=make_optimizer(config.train))
        progress = Progress()
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, progress=progress)
        session = cls(config, run, data, model, progress, checkpoint)
        session._build_variables()
        return session

    def _build_variables(self) -> None:
        """Create every model and optimizer variable with one forward pass over two triples.

        Every field of the training batch has the triples ``B`` as its first axis
        (:mod:`tfgb.contract`) and no weight's shape depends on ``B``, so two triples of the first
        batch are enough; the whole first batch, run eagerly, was the peak memory of a large-batch
        run (10.3 GiB at batch 1024 and |T| = 99).
        """
        batch = self.stream().batch(0, 0)
        self.model.compute_loss({name: tf.constant(value[:2]) for name, value in batch.items()}, training=False)
        self.model.reset_metrics()
        self.model.optimizer.build(self.model.trainable_variables)

    def restore(self, which: str) -> bool:
        """Restore the ``"best"`` or ``"last"`` checkpoint (weights, optimizer, progress).

        Returns False, changing nothing, when the run has no such checkpoint.
        """
        path = tf.train.latest_checkpoint(str(self.run.checkpoint_dir(which)))
        if path is None:
            return False
        self.checkpoint.read(path).assert_existing_objects_matched().expect_partial()
        self.restored = which
        return True

    def restore_best_or_last(self) -> str:
        """Restore the best checkpoint, or the last one when there is no best; returns which.

        Raises:
          ConfigError: the run has neither.
        """
        for which in CHECKPOINTS:
            if self.restore(which):
                if which == "last":
                    log.warning("%s: no best checkpoint, using the last one", self.run.path)
                return which
        raise ConfigError(f"{self.run.path}: no checkpoint to restore (checkpoints/best or checkpoints/last); "
                          "train first")

    def save(self, which: str) -> None:
        """Write the current state as the ``"best"`` or ``"last"`` checkpoint (one kept of each),
        numbered by ``progress.step``."""
        if which not in self._managers:
            self._managers[which] = tf.train.CheckpointManager(self.checkpoint, str(self.run.checkpoint_dir(which)),
                                                               max_to_keep=1)
        self._managers[which].save(checkpoint_number=int(self.progress.step.numpy()))

    def stream(self):
        """This run's training stream (:meth:`tfgb.data.prepare.Prepared.training_stream`), with behaviour
        rows when the model learns from them."""
        return self.data.training_stream(self.config.train, behaviors=models.registry.learns_behaviors(self.config))

    def steps_per_epoch(self) -> int:
        """Optimizer steps (batches) in one epoch of this run's training data."""
        return self.stream().num_batches

    def parameters(self) -> int:
        """Trainable parameters of the model."""
        return int(sum(v.shape.num_elements() for v in self.model.trainable_variables))


def side_tables(config: cfg.Config, data: Prepared, data_dir: str | None, run: RunDir):
    """The item categories and user relations of a run (None where the recipe neither names nor needs them).

    The categories are the run's own when it saved them (a resumed or reopened run: a derived tree is
    not derived again), else read or derived (:func:`tfgb.data.scenarios.for_recipe`) and saved in the run
    dir. The relations are rebuilt from the training split (and ``data.user_relations``) every time:
    they are a function of the data and the recipe.
    """
    from tfgb.contract import ITEM_CATEGORIES, USER_RELATIONS
    from tfgb.data import relations as relations_lib
    from tfgb.data import scenarios

    needs = models.registry.needs(config)
    found = scenarios.load(run.path)
    if found is None:
        found = scenarios.for_recipe(config, data, data_dir, needed=ITEM_CATEGORIES in needs)
        if found is not None:
            scenarios.save(run.path, *found)
    relations = None
    if USER_RELATIONS in needs or config.data.user_relations:
        relations = relations_lib.for_recipe(config, data, data_dir)[0]
    return (found[0] if found else None), relations


def configure_determinism(enabled: bool) -> None:
    """Make training bit-reproducible: deterministic kernels and ops run one at a time.

    Measured: with op determinism alone, two runs differ by ~1e-5 after a few steps because
    independent ops (e.g. the gradient updates of different embedding tables) run concurrently;
    one inter-op thread removes that (intra-op threads still use every core) for ~15% speed.
    Call it before TensorFlow runs its first op (``python -m tfgb.train`` does).
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
