"""``python -m tfgb.export --model-dir M [--export-base saved_models/NAME]``: a TF Serving SavedModel.

Restores the run's best checkpoint, propagates the embeddings over the training graphs ONCE and
saves a :class:`ServingModule` into the next integer version directory of the export base
(``saved_models/NAME/VERSION/``, TF Serving's layout). The SavedModel holds the propagated
embedding tables (one extra out-of-vocabulary row each: the mean row), the variables of the
model's scoring layers and the raw-id vocabularies as hash tables; the graph adjacencies are not
in it. Signatures take raw ids (``tf.string``):

* ``serving_default``: ``initiator`` [B], ``candidates`` [B, C] items ->
  ``scores`` [B, C] float32 (task A logits s(i|u)), ``unknown_ids`` [B] int32.
* ``rank_participants``: ``initiator`` [B], ``item`` [B], ``candidates`` [B, C] users ->
  ``scores`` [B, C] float32 (task B logits s(p|u,i)), ``unknown_ids`` [B] int32.
* ``launch_success``, only for a model trained with a launch behaviour (``model.learns_launches``:
  NMTR with ``launch``, MGBR / MAMGBR with ``launch_task``): ``initiator`` [B], ``item`` [B] ->
  ``probability`` [B] float32, P(deal | launch), the model's own ``launch_success``
  (:meth:`tfgb.models.base.GroupBuyingModel.launch_success`: NMTR's y^deal / y^launch, launch_task's
  sigmoid of the deal increment), ``unknown_ids`` [B] int32. Other models' exports have no such signature.

``unknown_ids`` counts, per row, the ids of that row not in the vocabularies; they are scored
with the out-of-vocabulary row and never fail. A version is written into a temporary directory
inside the export base (``.tmp-<version>-<pid>``, a name TF Serving ignores) and renamed into
place in one ``os.rename``, so a watching server never sees half a model. The run's
``config.toml`` and vocabularies are copied to ``<version>/assets.extra/`` for reference.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import tensorflow as tf

from tfgb.errors import ConfigError, cli_boundary, setup_logging
from tfgb.rundir import RunDir

log = logging.getLogger("tfgb.export")

LAUNCH_SUCCESS = "launch_success"
_LAUNCH_INPUTS = [tf.TensorSpec([None], tf.string, name="initiator"), tf.TensorSpec([None], tf.string, name="item")]

_VERSION = re.compile(r"^\d+$")


def list_versions(export_base: str | os.PathLike) -> list[int]:
    """Integer version directories of ``export_base``, ascending; other names are ignored."""
    base = Path(export_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if _VERSION.match(p.name) and p.is_dir())


def with_oov_rows(emb: dict[str, tf.Tensor], kinds: dict[str, str], rows: dict | None = None) -> dict[str, tf.Tensor]:
    """Append the mean row to every per-user and per-item table (index U or I = out of vocabulary), or
    the model's own out-of-vocabulary row where ``rows`` has one (GPRec's user with unknown features).

    ``kinds`` is the model's declaration (:meth:`~tfgb.models.base.GroupBuyingModel.table_kinds`):
    ``"user"`` and ``"item"`` tables get the row, ``"constant"`` tensors are kept as they are.

    Raises:
      ValueError: ``emb`` holds a tensor whose kind the model does not declare.
    """
    undeclared = sorted(set(emb) - set(kinds))
    if undeclared:
        raise ValueError(f"propagate returned tensors without a declared kind (table_kinds): {undeclared}")
    out = {}
    for key, value in emb.items():
        value = tf.convert_to_tensor(value)
        if kinds[key] in ("user", "item"):
            row = (rows or {}).get(key)
            row = tf.reduce_mean(value, axis=0, keepdims=True) if row is None else \
                tf.reshape(row, tf.concat([[1], tf.shape(value)[1:]], 0))
            value = tf.concat([value, tf.cast(row, value.dtype)], 0)
        out[key] = value
    return out


def _vocab_table(ids, name: str) -> tf.lookup.StaticHashTable:
    """Raw id (string) -> index (int64); unknown ids -> ``len(ids)``, the out-of-vocabulary row."""
    keys = tf.constant([str(x) for x in ids], tf.string)
    values = tf.range(len(ids), dtype=tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), len(ids), name=name)


class ServingModule(tf.Module):
    """What a tfgb SavedModel holds: propagated embeddings, scoring weights, vocabularies.

    Args:
      model: a trained :class:`tfgb.models.base.GroupBuyingModel`; only its scorers are used
        (``score_items`` / ``score_participants``), never ``propagate``, so its graphs are not
        captured. The model object itself is not tracked: :meth:`track_scoring_variables` adds
        exactly the variables the traced scorers read.
      emb: ``model.propagate(training=False)`` output (every key is stored).
      user_ids, item_ids: raw ids in index order (the run's vocabularies).

    A model with ``learns_launches`` True also gets :meth:`launch_success` (attribute and
    signature); for the others the attribute does not exist.
    """

    def __init__(self, model, emb: dict[str, tf.Tensor], user_ids, item_ids):
        super().__init__(name="tfgb_serving")
        num_users, num_items = len(user_ids), len(item_ids)
        self.embeddings = {key: tf.Variable(value, trainable=False, name=key)
                           for key, value in with_oov_rows(emb, model.table_kinds(), model.oov_rows(emb)).items()}
        self.users = _vocab_table(user_ids, "users")
        self.items = _vocab_table(item_ids, "items")
        self.scoring_variables: dict[str, tf.Variable] = {}
        self._num_users, self._num_items = num_users, num_items
        self._score_items = lambda e, u, c: model.score_items(e, u, c, training=False)
        self._score_participants = lambda e, u, i, c: model.score_participants(e, u, i, c, training=False)
        self._launch = lambda e, u, i: model.launch_success(e, u, i)
        self.learns_launches = bool(getattr(model, "learns_launches", False))
        if self.learns_launches:
            self.launch_success = tf.function(self._launch_success, input_signature=_LAUNCH_INPUTS, autograph=False)

    def _lookup(self, table: tf.lookup.StaticHashTable, ids: tf.Tensor, oov: int) -> tuple[tf.Tensor, tf.Tensor]:
        index = table.lookup(ids)
        return index, tf.cast(tf.equal(index, oov), tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="initiator"),
                                  tf.TensorSpec([None, None], tf.string, name="candidates")], autograph=False)
    def rank_items(self, initiator: tf.Tensor, candidates: tf.Tensor) -> dict[str, tf.Tensor]:
        """Task A: scores [B, C] of item ``candidates`` [B, C] for ``initiator`` [B] (raw ids)."""
        u, unknown_u = self._lookup(self.users, initiator, self._num_users)
        c, unknown_c = self._lookup(self.items, candidates, self._num_items)
        scores = self._score_items(dict(self.embeddings), u, c)
        return {"scores": tf.cast(scores, tf.float32), "unknown_ids": unknown_u + tf.reduce_sum(unknown_c, 1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="initiator"),
                                  tf.TensorSpec([None], tf.string, name="item"),
                                  tf.TensorSpec([None, None], tf.string, name="candidates")], autograph=False)
    def rank_participants(self, initiator: tf.Tensor, item: tf.Tensor, candidates: tf.Tensor) -> dict[str, tf.Tensor]:
        """Task B: scores [B, C] of user ``candidates`` [B, C] for (``initiator``, ``item``) [B]."""
        u, unknown_u = self._lookup(self.users, initiator, self._num_users)
        i, unknown_i = self._lookup(self.items, item, self._num_items)
        c, unknown_c = self._lookup(self.users, candidates, self._num_users)
        scores = self._score_participants(dict(self.embeddings), u, i, c)
        unknown = unknown_u + unknown_i + tf.reduce_sum(unknown_c, 1)
        return {"scores": tf.cast(scores, tf.float32), "unknown_ids": unknown}

    def _launch_success(self, initiator: tf.Tensor, item: tf.Tensor) -> dict[str, tf.Tensor]:
        """P(deal | launch) [B] of the pairs (``initiator``, ``item``) [B] (raw ids): the model's
        ``launch_success`` on the frozen tables, in float32. ``unknown_ids`` counts the unknown initiator
        and item of each pair (0, 1 or 2).
        """
        u, unknown_u = self._lookup(self.users, initiator, self._num_users)
        i, unknown_i = self._lookup(self.items, item, self._num_items)
        probability = self._launch(dict(self.embeddings), u, i)
        return {"probability": tf.cast(probability, tf.float32), "unknown_ids": unknown_u + unknown_i}

    def track_scoring_variables(self) -> None:
        """Trace every signature and track every variable they capture (the scoring layers' weights)."""
        seen = {id(v) for v in self.embeddings.values()}
        found = {}
        for fn in self.signatures().values():
            for variable in fn.get_concrete_function().variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    # Keras 2 variable names are not unique ("head_a/kernel" twice): number them.
                    found[f"{len(found):03d}.{variable.name.split(':')[0].replace('/', '.')}"] = variable
        self.scoring_variables = found

    def signatures(self) -> dict:
        """The serving signatures by name: ``serving_default``, ``rank_participants`` and, for a model
        with ``learns_launches``, ``launch_success``."""
        out = {"serving_default": self.rank_items, "rank_participants": self.rank_participants}
        if self.learns_launches:
            out[LAUNCH_SUCCESS] = self.launch_success
        return out


def _open_run(model_dir: str | os.PathLike):
    """The run dir and its resolved recipe; ConfigError when ``model_dir`` is not a trained run."""
    run = RunDir(model_dir)
    if not run.path.is_dir():
        raise ConfigError(f"{model_dir}: no such model directory; train one first")
    return run, run.load_config()


def _restore_model(model_dir: Path, data_dir: str | None):
    """The run's :class:`tfgb.session.Session` with its best checkpoint restored (the last one when none is best)."""
    from tfgb.session import Session

    return Session.open(model_dir, data_dir)


def build_module(session) -> ServingModule:
    """Propagate once and wrap the model of a restored session for serving."""
    from tfgb.evaluation import Scorer

    # The traced propagation evaluation uses (tfgb.evaluation.Scorer), so that served scores equal
    # evaluated ones; eager propagation differs by float round-off (~1e-5).
    emb = Scorer(session.model).emb
    module = ServingModule(session.model, emb, session.data.user_vocab.ids, session.data.item_vocab.ids)
    module.track_scoring_variables()
    return module


def _next_version(export_base: Path) -> int:
    versions = list_versions(export_base)
    return versions[-1] + 1 if versions else 1


def _copy_extras(run: RunDir, target: Path) -> None:
    extra = target / "assets.extra"
    (extra / "vocab").mkdir(parents=True, exist_ok=True)
    shutil.copy2(run.config, extra / "config.toml")
    for name in ("users.txt", "items.txt"):
        shutil.copy2(run.vocab / name, extra / "vocab" / name)


def save_version(module: ServingModule, export_base: str | os.PathLike, run: RunDir | None = None) -> Path:
    """Save ``module`` as the next version of ``export_base`` atomically; returns the version dir."""
    base = Path(export_base)
    base.mkdir(parents=True, exist_ok=True)
    version = _next_version(base)
    tmp = base / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        if run is not None:
            _copy_extras(run, tmp)
        while True:
            target = base / str(version)
            try:
                # A concurrent export may have taken the number meanwhile: then take the next one.
                if target.exists():
                    raise FileExistsError(target)
                os.rename(tmp, target)
                return target
            except FileExistsError:
                version = _next_version(base)
            except OSError:
                if not target.exists():
                    raise
                version = _next_version(base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_model(model_dir: str | os.PathLike, export_base: str | os.PathLike, data_dir: str | None = None) -> Path:
    """Export the best checkpoint of the run in ``model_dir`` as the next version under ``export_base``.

    Raises:
      ConfigError: ``model_dir`` is not a trained run (no config or no checkpoint).
    """
    model_dir = Path(model_dir)
    session = _restore_model(model_dir, data_dir)
    module = build_module(session)
    path = save_version(module, export_base, session.run)
    log.info("exported %s to %s", model_dir, path)
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfgb.export", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True, help="a trained run (python -m tfgb.train)")
    p.add_argument("--export-base", help="versions go to EXPORT_BASE/N (default: the recipe's export.base)")
    p.add_argument("--data-dir", help="data directory, when the recipe reads files (default: the run's)")
    return p


@cli_boundary
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    export_base = args.export_base or _open_run(args.model_dir)[1].export.base
    print(export_model(args.model_dir, export_base, args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
