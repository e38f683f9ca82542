"""Reading the side tables that sit beside the deal groups (item categories, user relations).

A side table is CSV, TSV or Parquet, chosen by extension under ``fmt = "auto"``
(:func:`tfgb.data.readers.file_format`; a ``.txt`` file is read as TSV, like the Beibei files). Every
value is read as text, so raw ids keep their spelling (``"007"`` stays ``"007"``) and match the
vocabularies, which hold raw ids as text.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from tfgb.errors import DataError


def read_table(path: str | os.PathLike, fmt: str, what: str, columns: Sequence[str], keys: Sequence[str]):
    """The table at ``path`` as a ``pandas.DataFrame`` of strings (missing values as ``""``).

    Args:
      path: the file.
      fmt: ``"auto"`` (by extension), ``"csv"``, ``"tsv"``, ``"beibei"`` (tab-separated) or ``"parquet"``.
      what: what the table is, for errors (``"item category"``).
      columns: the columns the caller needs.
      keys: the recipe key naming each of ``columns`` (same order), for errors.

    Raises:
      DataError: the file is missing, unreadable, or lacks one of ``columns`` (naming the file, the
        column and its recipe key).
    """
    frame = load_frame(path, fmt, what)
    frame.columns = [str(c) for c in frame.columns]
    for column, key in zip(columns, keys, strict=True):
        if column not in frame.columns:
            raise DataError(path, f"no column '{column}' in the {what} table (columns: {', '.join(frame.columns)}); "
                                  f"set {key}")
    return frame[list(columns)].fillna("").astype(str)


def load_frame(path: str | os.PathLike, fmt: str, what: str, text: bool = True):
    """The whole table at ``path`` as a ``pandas.DataFrame`` with string column names: every value as text
    (missing as ``""``) when ``text``, else as pandas reads it (numbers as numbers, missing as NaN; the user
    feature tables, whose numeric columns are bucketised).

    Raises:
      DataError: the file is missing or unreadable (naming the file and ``what`` it is).
    """
    import pandas as pd

    from tfgb.data.readers import file_format

    path = str(path)
    kind = file_format(path, fmt)
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str if text else object,
                                keep_default_na=not text)
    except FileNotFoundError:
        raise DataError(path, f"{what} file not found") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's
        raise DataError(path, f"cannot read the {what} table ({exc})") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame
