"""Raw ids as tfgb reads them: validation, and where a bad one is in its file.

An id is kept as the string written in the file (``"00012"`` stays ``"00012"``); a value that is
empty, contains whitespace, looks like a decimal number (``"3.5"``, ``"12.0"``) or a missing-value
marker (``"NaN"``) is rejected with a :class:`~tfgb.errors.DataError` naming the file and the line
(text files) or row (Parquet, counted from 1). Used by :mod:`tfgb.data.readers`.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tfgb.errors import DataError

_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][+-]?\d+)")
_MISSING = re.compile(r"(?i:[+-]?nan|na|n/a|<na>|#n/a|null|none|[+-]?inf(?:inity)?)")


@dataclasses.dataclass(frozen=True)
class Rows:
    """Where the rows of one file came from, to name them in errors.

    Attributes:
      path: the file.
      unit: ``"line"`` (text files: the file's line number) or ``"row"`` (Parquet: row counted from 1).
      numbers: ``int64`` [R] line or row number of every row kept from the file.
    """

    path: str
    unit: str
    numbers: np.ndarray

    def error(self, row: int, problem: str) -> DataError:
        """A DataError for table row ``row`` (0-based index into the kept rows)."""
        number = int(self.numbers[row])
        if self.unit == "line":
            return DataError(self.path, problem, line=number)
        exc = DataError(self.path, f"row {number}: {problem}")
        exc.args = (f"{self.path}, row {number}: {problem}",)  # same shape as "path, line N: problem"
        return exc


def first_true(mask: pa.Array) -> int:
    """Index of the first true value of a pyarrow boolean array."""
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def arrow_ids(column: object, rows: Rows, role: str) -> np.ndarray:
    """A pyarrow id column (strings, integers or integer-valued floats) as an ``object`` array of str."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    if column.null_count:
        raise rows.error(first_true(column.is_null()), f"{role} id is missing")
    if pa.types.is_floating(kind):
        floats = column.to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(floats).all():
            raise rows.error(int(np.flatnonzero(~np.isfinite(floats))[0]), f"{role} id is missing (NaN)")
        if (floats != np.round(floats)).any():
            row = int(np.flatnonzero(floats != np.round(floats))[0])
            raise rows.error(row, f"{role} id '{float(floats[row])}' is not an id (a decimal number)")
        column = pa.array(floats.astype(np.int64))
    elif not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(rows.path, f"the {role} column holds {kind} values, not ids (strings or integers)")
    return pc.cast(column, pa.string()).to_numpy(zero_copy_only=False).astype(object)


def check_ids(values: np.ndarray, locate, rows: Rows) -> None:
    """Raise a DataError for the first value in ``values`` that is not an id.

    Args:
      values: ``object`` array of raw ids.
      locate: maps a position in ``values`` to ``(row, role)``.
      rows: names the file and the row in the error.
    """
    if len(values) == 0:
        return
    codes, unique = pd.factorize(values, use_na_sentinel=False)
    text = pd.Series(unique, dtype=object)
    not_str = ~text.map(type).eq(str).to_numpy()
    empty = text.str.len().eq(0).to_numpy()
    space = text.str.contains(r"\s", regex=True).fillna(False).to_numpy(dtype=bool)
    decimal = text.str.fullmatch(_DECIMAL.pattern).fillna(False).to_numpy(dtype=bool)
    missing = text.str.fullmatch(_MISSING.pattern).fillna(False).to_numpy(dtype=bool)
    bad = not_str | empty | space | decimal | missing
    if not bad.any():
        return
    first = int(np.flatnonzero(bad[codes])[0])
    code = codes[first]
    reason = ("empty field" if empty[code] else "contains whitespace" if space[code]
              else "a decimal number" if decimal[code] else "a missing-value marker")
    row, role = locate(first)
    value = unique[code] if isinstance(unique[code], str) else ""
    raise rows.error(row, f"{role} id {quote(value)} is not an id ({reason})")


def quote(value: str) -> str:
    """``'value'`` for messages, with unprintable characters escaped and long values cut."""
    shown = value if len(value) <= 40 else value[:37] + "..."
    if not shown.isprintable():
        shown = shown.encode("unicode_escape").decode("ascii")
    return f"'{shown}'"
