"""Readers: deal-group files -> :class:`~tfgb.data.groups.RawGroups` with raw string ids.

Two kinds of file are read:

* **deal groups** -- ``initiator, item, participant...``: the Beibei layout (tab-separated, no
  header, ragged rows ``initiator<TAB>item<TAB>p1<TAB>p2...``), or CSV / TSV / Parquet tables with
  named columns whose participants column is a list (Parquet) or a delimited string;
* **failed launches** -- ``initiator, item`` (no participants): the Beibei layout with exactly two
  fields per row, or a table with the initiator and item columns.

With ``data.behavior_column`` set, every row of a CSV / TSV / Parquet table of ``data.files`` names
its behaviour, one of ``data.behaviors`` (cascade order, the last is the deal): rows of the deal are
deal groups, rows of any other behaviour are interactions that stopped there; they become failed
launches whose ``failed_behavior`` is the behaviour's index (their participants are ignored and
may be empty, missing, or the column absent when a file has no deal row). Rows of
``data.failed_launches`` are behaviour 0.

Ids are validated by :mod:`tfgb.data.ids` (kept as the strings written in the file; a value that is
empty, contains whitespace, looks like a decimal number (``"3.5"``, ``"12.0"``) or a missing-value
marker (``"NaN"``) is rejected). Every problem is a :class:`~tfgb.errors.DataError` naming the file,
the line (text files) or row (Parquet, counted from 1) and the problem. Readers are pure: they never
write anything.
"""
from __future__ import annotations

import io
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tfgb.config import DataConfig
from tfgb.data.groups import RawGroups
from tfgb.data.ids import Rows, arrow_ids, check_ids, first_true, quote
from tfgb.errors import ConfigError, DataError

FORMAT_BY_EXTENSION = {".txt": "beibei", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
"""File extension -> format, used when ``data.format`` is ``"auto"``."""

_DIGITS_TAB_NEWLINE = np.zeros(256, dtype=bool)
_DIGITS_TAB_NEWLINE[[9, 10, *range(48, 58)]] = True
_EMPTY = np.array([], dtype=object)


def read_groups(data: DataConfig, data_dir: str | os.PathLike) -> RawGroups:
    """Read the deal groups (and failed launches) a recipe's ``[data]`` section names.

    Args:
      data: the recipe's data section; ``files`` are read in order and concatenated,
        ``failed_launches`` (when non-empty) is read into the failed-launch arrays.
      data_dir: directory that relative paths in ``data`` are resolved against; absolute paths are
        used as they are.

    Returns:
      The deal groups with raw string ids; the failed launches are the rows of ``data.files`` that
      stopped before the deal (with ``data.behavior_column``), then those of ``data.failed_launches``.

    Raises:
      DataError: a file is missing, empty, of an unknown type, or holds a bad row.
      ConfigError: ``data.files`` is empty, or ``data.behavior_column`` is set for a Beibei-layout file.
    """
    if not data.files:
        raise ConfigError("config key 'data.files' is empty: name at least one file of deal groups")
    tables = [read_deal_groups(os.path.join(data_dir, name), data) for name in data.files]
    offsets = np.zeros(sum(len(t) for t in tables) + 1, dtype=np.int64)
    np.cumsum(np.concatenate([np.diff(t.offsets) for t in tables]), out=offsets[1:])
    launches = [(t.failed_initiator, t.failed_item, t.behavior_codes()) for t in tables]
    if data.failed_launches:
        initiator, item = read_launches(os.path.join(data_dir, data.failed_launches), data)
        launches.append((initiator, item, np.zeros(len(initiator), np.int8)))
    return RawGroups(
        initiator=np.concatenate([t.initiator for t in tables]),
        item=np.concatenate([t.item for t in tables]),
        offsets=offsets,
        participants=np.concatenate([t.participants for t in tables]),
        failed_initiator=np.concatenate([_EMPTY, *(f[0] for f in launches)]),
        failed_item=np.concatenate([_EMPTY, *(f[1] for f in launches)]),
        failed_behavior=np.concatenate([np.zeros(0, np.int8), *(f[2] for f in launches)]),
    )


def file_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """The reader for ``path``: ``fmt`` itself, or chosen by extension when it is ``"auto"``.

    Raises:
      DataError: ``fmt`` is "auto" and the extension is none of .txt, .csv, .tsv, .parquet, .pq.
    """
    if fmt != "auto":
        return fmt
    extension = os.path.splitext(str(path))[1].lower()
    if extension not in FORMAT_BY_EXTENSION:
        known = ", ".join(FORMAT_BY_EXTENSION)
        raise DataError(str(path), f"unknown file type '{extension or '(none)'}' (expected one of {known}, "
                                   "or set data.format)")
    return FORMAT_BY_EXTENSION[extension]


def read_deal_groups(path: str | os.PathLike, data: DataConfig) -> RawGroups:
    """Read one file of deal groups (``initiator, item, participant...``).

    Args:
      path: the file.
      data: its format (``data.format``), and for tables the column names and participant separator;
        with ``data.behavior_column`` the rows that stopped before the deal are the failed launches.

    Raises:
      ConfigError: ``data.behavior_column`` is set and the file is in the Beibei layout.
    """
    path = str(path)
    fmt = file_format(path, data.format)
    if data.behavior_column:
        if fmt == "beibei":
            raise ConfigError(f"config key 'data.behavior_column' needs CSV, TSV or Parquet files, but {path} is in "
                              "the beibei format (its failed launches come from data.failed_launches)")
        return _read_behavior_table(path, fmt, data)
    if fmt == "beibei":
        tokens, fields, rows = _read_beibei(path)
        if (fields < 3).any():
            row = int(np.flatnonzero(fields < 3)[0])
            raise rows.error(row, "expected initiator, item and at least one participant, "
                                  f"found {fields[row]} field{'s' if fields[row] != 1 else ''}")
        return _table_from_tokens(tokens, fields)
    columns = [data.initiator_column, data.item_column, data.participants_column]
    table, rows = _read_columns(path, fmt, columns)
    initiator = _ids(table[data.initiator_column], rows, "initiator")
    item = _ids(table[data.item_column], rows, "item")
    offsets, participants = _participants(table[data.participants_column], rows, data.participant_separator)
    return RawGroups(initiator, item, offsets, participants)


def read_launches(path: str | os.PathLike, data: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of failed launches (``initiator, item``).

    Returns:
      ``(initiator, item)``: two ``object`` arrays [F] of raw ids.
    """
    path = str(path)
    fmt = file_format(path, data.format)
    if fmt == "beibei":
        tokens, fields, rows = _read_beibei(path)
        if (fields != 2).any():
            row = int(np.flatnonzero(fields != 2)[0])
            raise rows.error(row, f"expected initiator and item (a failed launch), found {fields[row]} "
                                  f"field{'s' if fields[row] != 1 else ''}")
        return tokens[0::2], tokens[1::2]
    table, rows = _read_columns(path, fmt, [data.initiator_column, data.item_column])
    return _ids(table[data.initiator_column], rows, "initiator"), _ids(table[data.item_column], rows, "item")


def _read_behavior_table(path: str, fmt: str, data: DataConfig) -> RawGroups:
    """A table whose ``data.behavior_column`` names every row's behaviour: deal rows are deal groups,
    the others failed launches with their behaviour's index (participants read for deal rows only)."""
    column = data.behavior_column
    table, rows = _read_columns(path, fmt, [data.initiator_column, data.item_column, column],
                                optional=[data.participants_column], keys={column: "behavior_column"})
    values = table[column]
    if not isinstance(values, np.ndarray):
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise DataError(path, f"the behaviour column '{column}' holds {values.type} values, not behaviour names")
        values = values.to_numpy(zero_copy_only=False).astype(object)
    codes = pd.Index(list(data.behaviors), dtype=object).get_indexer(values)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        value = "(missing)" if not isinstance(values[row], str) else quote(values[row])
        raise rows.error(row, f"behaviour {value} in column '{column}' is not one of data.behaviors "
                              f"({', '.join(data.behaviors)})")
    initiator = _ids(table[data.initiator_column], rows, "initiator")
    item = _ids(table[data.item_column], rows, "item")
    deal = codes == len(data.behaviors) - 1
    offsets, participants = np.zeros(1, dtype=np.int64), _EMPTY
    if deal.any():
        if data.participants_column not in table:
            first = rows.numbers[int(np.flatnonzero(deal)[0])]
            raise DataError(path, f"missing column '{data.participants_column}', needed by the deal rows "
                                  f"('{data.behaviors[-1]}', first at {rows.unit} {first}; set data.participants_column)")
        members = table[data.participants_column]
        members = members[deal] if isinstance(members, np.ndarray) else members.filter(pa.array(deal))
        offsets, participants = _participants(members, Rows(rows.path, rows.unit, rows.numbers[deal]),
                                              data.participant_separator)
    return RawGroups(initiator[deal], item[deal], offsets, participants, failed_initiator=initiator[~deal],
                     failed_item=item[~deal], failed_behavior=codes[~deal].astype(np.int8))


# --- raw bytes ------------------------------------------------------------------------------------

def _read_bytes(path: str) -> bytes:
    """The file's contents; DataError when it is missing, unreadable or empty."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise DataError(path, f"cannot read the file ({exc.strerror})") from None
    if not raw.strip():
        raise DataError(path, "file is empty")
    return raw


def _read_beibei(path: str) -> tuple[np.ndarray, np.ndarray, Rows]:
    """Split a Beibei-layout file into tokens without a Python loop over rows.

    Returns:
      ``(tokens, fields, rows)``: ``object`` [T] every field of every non-blank line in order,
      ``int64`` [R] fields per non-blank line, and their line numbers.
    """
    raw = _read_bytes(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    if not raw.endswith(b"\n"):
        raw += b"\n"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, "is not UTF-8 text", line=raw.count(b"\n", 0, exc.start) + 1) from None
    buf = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    tabs_per_line = np.bincount(np.searchsorted(newlines, np.flatnonzero(buf == 9)), minlength=len(newlines))
    line_start = np.concatenate([[0], newlines[:-1] + 1])
    blank = newlines == line_start
    # One split over the whole text: every line contributes (tabs + 1) tokens, a blank line one "".
    tokens = np.array(text[:-1].replace("\n", "\t").split("\t"), dtype=object)
    if blank.any():
        tokens = tokens[~np.repeat(blank, tabs_per_line + 1)]
    fields = (tabs_per_line + 1)[~blank].astype(np.int64)
    rows = Rows(path, "line", np.flatnonzero(~blank).astype(np.int64) + 1)
    starts = np.zeros(len(fields), dtype=np.int64)
    np.cumsum(fields[:-1], out=starts[1:])

    def locate(t: int) -> tuple[int, str]:
        row = int(np.searchsorted(starts, t, side="right") - 1)
        return row, ("initiator", "item", "participant")[min(t - int(starts[row]), 2)]

    if _DIGITS_TAB_NEWLINE[buf].all():
        # Fast path (all of Beibei): tokens are digit strings, only an empty field can be wrong.
        empty = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)) == 0
        if empty.any():
            row, role = locate(int(np.flatnonzero(empty)[0]))
            raise rows.error(row, f"{role} id '' is not an id (empty field)")
    else:
        check_ids(tokens, locate, rows)
    return tokens, fields, rows


def _table_from_tokens(tokens: np.ndarray, fields: np.ndarray) -> RawGroups:
    """Cut the flat tokens of ragged rows (each with >= 3 fields) into a deal-group table."""
    starts = np.zeros(len(fields), dtype=np.int64)
    np.cumsum(fields[:-1], out=starts[1:])
    position = np.arange(len(tokens), dtype=np.int64) - np.repeat(starts, fields)
    offsets = np.zeros(len(fields) + 1, dtype=np.int64)
    np.cumsum(fields - 2, out=offsets[1:])
    return RawGroups(tokens[starts], tokens[starts + 1], offsets, tokens[position >= 2])


# --- tables with named columns ----------------------------------------------------------------------

def _read_columns(path: str, fmt: str, columns: list[str], optional: list[str] = (),
                  keys: dict[str, str] | None = None) -> tuple[dict[str, object], Rows]:
    """Read the named columns of a CSV / TSV / Parquet file.

    Args:
      columns: the columns the file must have; ``optional``: columns read when the file has them.
      keys: column -> the recipe key naming it, for the missing-column error (default: the id columns).

    Returns:
      ``(table, rows)``: column name -> ``object`` array of str (CSV/TSV) or a pyarrow Array
      (Parquet), and where each row came from. Blank CSV lines are skipped.
    """
    if fmt == "parquet":
        return _read_parquet(path, columns, optional, keys)
    if fmt not in ("csv", "tsv"):
        raise ConfigError(f"config key 'data.format' must be auto, beibei, csv, tsv or parquet, got {fmt!r}")
    raw = _read_bytes(path)  # missing / empty file errors, before pandas sees it
    try:
        frame = pd.read_csv(io.BytesIO(raw), sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                            na_filter=False, skip_blank_lines=False, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text") from None
    except (pd.errors.ParserError, ValueError) as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        found = re.search(r"line (\d+)", message)
        raise DataError(path, f"cannot be parsed as {fmt.upper()} ({message})",
                        line=int(found.group(1)) if found else None) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _require_columns(path, columns, list(frame.columns), keys)
    columns = [*columns, *(name for name in optional if name in frame.columns and name not in columns)]
    values = {name: frame[name].to_numpy(dtype=object) for name in columns}
    blank = np.logical_and.reduce([v == "" for v in frame.to_numpy(dtype=object).T]) if len(frame) else None
    numbers = np.arange(len(frame), dtype=np.int64) + 2  # line 1 is the header
    if blank is not None and blank.any():
        values = {name: v[~blank] for name, v in values.items()}
        numbers = numbers[~blank]
    if len(numbers) == 0:
        raise DataError(path, "file has a header but no rows")
    return values, Rows(path, "line", numbers)


def _read_parquet(path: str, columns: list[str], optional: list[str] = (),
                  keys: dict[str, str] | None = None) -> tuple[dict[str, object], Rows]:
    _read_bytes(path)
    try:
        names = pq.read_schema(path).names
        _require_columns(path, columns, names, keys)
        columns = [*columns, *(name for name in optional if name in names and name not in columns)]
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"is not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise DataError(path, "file has no rows")
    values = {name: table.column(name).combine_chunks() for name in columns}
    return values, Rows(path, "row", np.arange(table.num_rows, dtype=np.int64) + 1)


def _require_columns(path: str, wanted: list[str], found: list[str], keys: dict[str, str] | None = None) -> None:
    missing = [name for name in wanted if name not in found]
    if missing:
        key = (keys or {}).get(missing[0], "initiator_column / item_column / participants_column")
        raise DataError(path, f"missing column '{missing[0]}' (columns found: {', '.join(map(str, found))}; "
                              f"set data.{key})")


def _ids(column: object, rows: Rows, role: str) -> np.ndarray:
    """One id column as an ``object`` array of validated str."""
    values = arrow_ids(column, rows, role) if not isinstance(column, np.ndarray) else column
    check_ids(values, lambda t: (t, role), rows)
    return values


def _participants(column: object, rows: Rows, separator: str) -> tuple[np.ndarray, np.ndarray]:
    """Participants of every row from a list column, a delimited string column or an id column.

    A string column whose every value is a bracketed list literal (``"[3, 4]"``, ``"['a', 'b']"``)
    is read as lists; otherwise values are split on ``separator``.

    Returns:
      ``(offsets, participants)``: ``int64`` [R + 1] CSR offsets and ``object`` [P] raw ids.
    """
    if isinstance(column, pa.Array):
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if column.null_count:
            raise rows.error(first_true(column.is_null()), "participant list is missing")
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or \
                pa.types.is_fixed_size_list(column.type):
            sizes = pc.list_value_length(column).to_numpy().astype(np.int64)
            return _with_sizes(sizes, rows, lambda owner: arrow_ids(column.flatten(), owner, "participant"))
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return np.arange(len(column) + 1, dtype=np.int64), _ids(column, rows, "participant")  # one each
        column = column.to_numpy(zero_copy_only=False).astype(object)
    text = pd.Series(column, dtype=object)
    if (text.str.startswith("[") & text.str.endswith("]")).all():
        # Python / JSON list literals, e.g. a pandas list column written to CSV: "['3', '4']", "[3, 4]".
        text = text.str.slice(1, -1)
        column, separator, strip = text.to_numpy(dtype=object), ",", " '\""
    else:
        strip = None
    empty = (text.str.strip() == "").to_numpy()
    if empty.any():
        raise rows.error(int(np.flatnonzero(empty)[0]), "participant list is empty")
    if not separator:
        return np.arange(len(column) + 1, dtype=np.int64), _ids(column, rows, "participant")
    # One split over all rows joined by the separator: row r contributes (separators in r) + 1 ids.
    sizes = (text.str.count(re.escape(separator)) + 1).to_numpy(dtype=np.int64)

    def split(_owner: Rows) -> np.ndarray:
        values = np.array(separator.join(column.tolist()).split(separator), dtype=object)
        return values if strip is None else pd.Series(values, dtype=object).str.strip(strip).to_numpy(dtype=object)

    return _with_sizes(sizes, rows, split)


def _with_sizes(sizes: np.ndarray, rows: Rows, read) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from per-row list ``sizes`` and the validated flat ids ``read(owner_rows)`` returns."""
    if (sizes == 0).any():
        raise rows.error(int(np.flatnonzero(sizes == 0)[0]), "participant list is empty")
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    owner = Rows(rows.path, rows.unit, np.repeat(rows.numbers, sizes))  # row of every participant
    values = read(owner)
    check_ids(values, lambda t: (t, "participant"), owner)
    return offsets, values
