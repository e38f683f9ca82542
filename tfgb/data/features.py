"""User feature tables (the ``user_features`` side input, :class:`tfgb.contract.UserFeatures`).

Two sources, one result: integer codes per user and column, 0 = unknown (a user without a row, a value
never seen, a user unknown at serving time), 1.. the known values.

* **A file** (``data.user_features``: CSV / TSV / Parquet): a user id column (``data.user_feature_id_column``)
  and any other columns. A numeric column is bucketised by quantile boundaries of the vocabulary users'
  values (at most ``BUCKETS`` buckets); any other column is categorical, its distinct values coded in
  sorted order. Rows of users outside the vocabulary are counted, and kept: an export can still give
  them their features.
* **Derived from the training split only** (:func:`derive`): per user, deal groups launched, failed
  launches, all launches, their success rate, groups joined as a participant, the mean training
  popularity of the items the user launched, and the initiator-participant degree (distinct partners in
  training groups, either role); bucketised the same way. Nothing of the valid or test splits enters.

:class:`FeatureSpec` is what makes the codes reproducible: the column names, each numeric column's
boundaries and each categorical column's values. It is saved in the run dir (``user_features.json``)
with the codes, and the export maps raw ids to the same codes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING

import numpy as np

from tfgb.contract import UserFeatures
from tfgb.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tfgb.data.prepare import Prepared

BUCKETS = 8
DERIVED = ("launches", "deals", "failed", "success_rate", "joined", "launched_popularity", "partners")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How raw values become codes: ``boundaries[c]`` (numeric column) or ``values[c]`` (categorical)."""

    columns: tuple[str, ...]
    boundaries: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    values: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    source: str = "derived"

    def sizes(self) -> dict[str, int]:
        """Codes per column, the unknown code 0 included."""
        return {c: (len(self.boundaries[c]) + 2 if c in self.boundaries else len(self.values[c]) + 1)
                for c in self.columns}

    def encode(self, column: str, raw: np.ndarray) -> np.ndarray:
        """``int32`` codes of raw values (NaN / None / unseen -> 0)."""
        if column in self.boundaries:
            x = np.asarray(raw, np.float64)
            codes = np.searchsorted(np.asarray(self.boundaries[column]), x, side="right") + 1
            return np.where(np.isfinite(x), codes, 0).astype(np.int32)
        index = {v: n + 1 for n, v in enumerate(self.values[column])}
        return np.array([index.get(_text(v), 0) for v in raw], np.int32)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FeatureSpec:
        return cls(columns=tuple(data["columns"]), boundaries=data["boundaries"], values=data["values"],
                   source=data["source"])


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def quantile_boundaries(x: np.ndarray, buckets: int = BUCKETS) -> list[float]:
    """Distinct interior quantiles of the finite values of ``x``: at most ``buckets`` buckets."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return []
    cuts = np.unique(np.quantile(x, np.linspace(0, 1, buckets + 1)[1:-1]))
    return [float(c) for c in cuts]


def build(columns: dict[str, np.ndarray], numeric: set[str], source: str,
          fit_rows: np.ndarray | None = None) -> tuple[FeatureSpec, dict[str, np.ndarray]]:
    """A spec fitted on ``columns`` (rows ``fit_rows`` only, default all) and the codes of every row."""
    fit = slice(None) if fit_rows is None else fit_rows
    boundaries = {c: quantile_boundaries(np.asarray(v, np.float64)[fit]) for c, v in columns.items() if c in numeric}
    values = {c: sorted({t for t in map(_text, np.asarray(v, object)[fit]) if t is not None})
              for c, v in columns.items() if c not in numeric}
    spec = FeatureSpec(tuple(columns), boundaries, values, source)
    return spec, {c: spec.encode(c, v) for c, v in columns.items()}


def derive(data: Prepared) -> tuple[FeatureSpec, UserFeatures]:
    """The derived features of every vocabulary user, from the training split only (module docstring)."""
    train, n = data.train, data.num_users
    f_users, f_items, _ = data.launches("train")
    deals = np.bincount(train.initiator, minlength=n).astype(np.float64)
    failed = np.bincount(f_users, minlength=n).astype(np.float64)
    launches = deals + failed
    item_pop = np.bincount(train.item, minlength=data.num_items).astype(np.float64)
    pop_sum = np.bincount(train.initiator, weights=item_pop[train.item], minlength=n) \
        + np.bincount(f_users, weights=item_pop[f_items], minlength=n)
    sizes = np.diff(train.offsets)
    owner = np.repeat(train.initiator, sizes)
    pairs = np.unique(np.stack([np.concatenate([owner, train.participants]),
                                np.concatenate([train.participants, owner])], 1), axis=0) \
        if len(owner) else np.zeros((0, 2), np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = {
            "launches": launches, "deals": deals, "failed": failed,
            "success_rate": np.where(launches > 0, deals / np.maximum(launches, 1), np.nan),
            "joined": np.bincount(train.participants, minlength=n).astype(np.float64),
            "launched_popularity": np.where(launches > 0, pop_sum / np.maximum(launches, 1), np.nan),
            "partners": np.bincount(pairs[:, 0], minlength=n).astype(np.float64),
        }
    spec, codes = build(columns, set(columns), "derived")
    return spec, UserFeatures(columns=codes, sizes=spec.sizes())


def read(path: str | os.PathLike, id_column: str, data: Prepared, fmt: str = "auto"
         ) -> tuple[FeatureSpec, UserFeatures, dict]:
    """The feature table ``path`` (CSV / TSV / Parquet): see :func:`from_frame`."""
    from tfgb.data.tables import load_frame

    path = str(path)
    frame = load_frame(path, fmt, "user feature", text=False)
    return from_frame(frame, id_column, data, path)


def from_frame(frame, id_column: str, data: Prepared, path: str = "user features"
               ) -> tuple[FeatureSpec, UserFeatures, dict]:
    """Codes of every vocabulary user from a feature table (``path`` names it in errors), and a report.

    Numeric columns (every value a number) are bucketised on the vocabulary users' values; the rest are
    categorical. The report counts rows, vocabulary users found, users without a row, and rows of users
    outside the vocabulary (``extra``: their raw ids and codes, for the export).
    """
    import pandas as pd

    if id_column not in frame.columns:
        raise DataError(path, f"no user id column '{id_column}' (columns: {', '.join(map(str, frame.columns))}); "
                        "set data.user_feature_id_column")
    others = [c for c in frame.columns if c != id_column]
    if not others:
        raise DataError(path, f"the user feature table has no column besides '{id_column}'")
    ids = frame[id_column].astype(str).to_numpy()
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataError(path, f"user '{dup}' has more than one row")
    index = data.user_vocab.lookup(ids)
    known = index >= 0
    columns, numeric = {}, set()
    for c in others:
        as_number = pd.to_numeric(frame[c], errors="coerce")
        if as_number.notna().sum() == frame[c].notna().sum():
            columns[c] = as_number.to_numpy(np.float64)
            numeric.add(c)
        else:
            columns[c] = frame[c].to_numpy(object)
    spec, row_codes = build(columns, numeric, "file", fit_rows=np.flatnonzero(known))
    codes = {c: np.zeros(data.num_users, np.int32) for c in others}
    for c in others:
        codes[c][index[known]] = row_codes[c][known]
    report = {"rows": len(ids), "users_found": int(known.sum()),
              "users_without_row": int(data.num_users - known.sum()), "unknown_users": int((~known).sum()),
              "extra": {"ids": ids[~known].tolist(), "codes": {c: row_codes[c][~known].tolist() for c in others}}}
    return spec, UserFeatures(columns=codes, sizes=spec.sizes()), report


def save(directory: str | os.PathLike, spec: FeatureSpec, features: UserFeatures, extra: dict | None = None) -> None:
    """``user_features.json`` (the spec, and the rows of users outside the vocabulary) and
    ``user_features.npz`` (codes [U] per column) in ``directory``, atomically."""
    os.makedirs(directory, exist_ok=True)
    npz = os.path.join(directory, "user_features.npz")
    with open(npz + ".tmp", "wb") as fh:
        np.savez(fh, **{c: features.columns[c] for c in spec.columns})
    os.replace(npz + ".tmp", npz)
    path = os.path.join(directory, "user_features.json")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({**spec.to_json(), "extra": extra or {"ids": [], "codes": {}}}, fh)
    os.replace(path + ".tmp", path)


def matrix(features: UserFeatures, columns: tuple[str, ...] | None = None) -> np.ndarray:
    """Codes as one ``int32`` matrix [U, F] in ``columns`` order (default: the table's own)."""
    columns = tuple(features.columns) if columns is None else columns
    return np.stack([features.columns[c] for c in columns], 1).astype(np.int32)


def load(directory: str | os.PathLike) -> tuple[FeatureSpec, UserFeatures, dict] | None:
    """What :func:`save` wrote into ``directory``, or None when it holds no user features."""
    path = os.path.join(directory, "user_features.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    spec = FeatureSpec.from_json(data)
    with np.load(os.path.join(directory, "user_features.npz")) as codes:
        columns = {c: codes[c].astype(np.int32) for c in spec.columns}
    return spec, UserFeatures(columns=columns, sizes=spec.sizes()), {"extra": data.get("extra", {})}


def for_recipe(config, data: Prepared, data_dir: str | None) -> tuple[FeatureSpec, UserFeatures, dict] | None:
    """The user features a recipe asks for: ``data.user_features`` (a file relative to ``data_dir``, or
    ``"synthetic"``: :func:`tfgb.data.synth.user_features` of the synthetic data), else the derived
    features when the model uses them (``model.user_modeling = "gprec"``), else None."""
    source = config.data.user_features
    if source == "synthetic":
        from tfgb.data import synth

        if config.data.source != "synthetic":
            raise ConfigError("data.user_features = 'synthetic' is the synthetic generator's table: it needs "
                              "data.source = 'synthetic'")
        table = synth.user_features(config.data.synth.users, config.data.synth.items, config.data.synth.seed)
        return from_frame(table, "user", data, "synthetic user features")
    if source:
        if data_dir is None and not os.path.isabs(source):
            raise ConfigError(f"data.user_features = '{source}' is relative to --data-dir, which was not given")
        return read(os.path.join(data_dir or "", source), config.data.user_feature_id_column, data)
    if config.model.user_modeling != "none":
        spec, features = derive(data)
        return spec, features, {"rows": data.num_users, "users_found": data.num_users}
    return None
