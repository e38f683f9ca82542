"""TF Serving's REST JSON for predict: decode requests into arrays, encode outputs as responses.

Follows TF Serving's conventions (``tensorflow_serving/util/json_tensor``): a request holds an
optional ``signature_name`` and exactly one of ``instances`` (row format: a list with one
JSON object per example, keyed by input name; a bare value per example when the signature has a
single input) or ``inputs`` (columnar format: an object of batched values by input name).
Responses are ``{"predictions": [...]}`` for the row format (one dict per example when the
signature has several outputs) and ``{"outputs": ...}`` for the columnar one.

tfgb decides what TF Serving leaves open: ``tf.string`` inputs take JSON strings, integers
(their decimal string) or ``{"b64": ...}``; floats, booleans, nulls and other objects are
refused, as are unknown fields, missing or unknown input names, ragged rows and empty batches.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

DEFAULT_SIGNATURE = "serving_default"
_REQUEST_FIELDS = ("signature_name", "instances", "inputs")


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-sentence message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _leaf_converter(dtype: tf.DType):
    def string(x: Any, name: str) -> str | bytes:
        if isinstance(x, str):
            return x
        if isinstance(x, int) and not isinstance(x, bool):
            return str(x)
        if isinstance(x, dict) and set(x) == {"b64"} and isinstance(x["b64"], str):
            try:
                return base64.b64decode(x["b64"], validate=True)
            except ValueError:
                raise RequestError(f"'{name}' holds an invalid base64 value") from None
        raise RequestError(f"'{name}' takes ids as JSON strings or integers, got {json.dumps(x)[:60]}")

    def number(x: Any, name: str) -> Any:
        ok = isinstance(x, bool) if dtype.is_bool else (
            isinstance(x, int if dtype.is_integer else (int, float)) and not isinstance(x, bool))
        if not ok:
            raise RequestError(f"'{name}' takes {dtype.name} values, got {json.dumps(x)[:60]}")
        return x

    return string if dtype == tf.string else number


class _Ragged(Exception):
    pass


def _shape(value: Any, rank: int) -> tuple[int, ...]:
    """Shape of a nested JSON list of the given rank; TypeError for a wrong rank, _Ragged for ragged."""
    if rank == 0:
        if isinstance(value, list):
            raise TypeError("too many dimensions")
        return ()
    if not isinstance(value, list):
        raise TypeError(f"got {json.dumps(value)[:60]} where a list was expected")
    shapes = [_shape(v, rank - 1) for v in value]
    for shape in shapes[1:]:
        if shape != shapes[0]:
            raise _Ragged(f"rows of shapes {list(shapes[0])} and {list(shape)}")
    return (len(value),) + (shapes[0] if shapes else (0,) * (rank - 1))


def _flatten(value: Any, rank: int) -> list:
    return [value] if rank == 0 else [x for v in value for x in _flatten(v, rank - 1)]


def to_array(value: Any, spec: tf.TensorSpec, name: str, rows: bool = False) -> np.ndarray:
    """A JSON value as an array for ``spec`` (rank, known dims and element types checked).

    Args:
      value: the batched value (the row format's per-instance values, listed).
      spec: the signature's input spec.
      name: the input's name, for messages.
      rows: ``value`` comes from the row format (messages then describe one instance).
    """
    rank = spec.shape.rank
    dims = [-1 if d is None else d for d in spec.shape]
    expected = f"{dims[1:]} in every instance" if rows else f"{dims}"
    try:
        shape = _shape(value, rank)
    except _Ragged as exc:
        raise RequestError(f"'{name}' is ragged ({exc}); all rows of a request must have the same length") from None
    except TypeError as exc:
        raise RequestError(f"'{name}' must have shape {expected} ({exc})") from None
    if any(want >= 0 and have != want for have, want in zip(shape, dims)):
        raise RequestError(f"'{name}' must have shape {expected}, got {list(shape[1:] if rows else shape)}")
    convert = _leaf_converter(spec.dtype)
    dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
    return np.array([convert(x, name) for x in _flatten(value, rank)], dtype=dtype).reshape(shape)


def _check_keys(obj: dict, names: list[str], where: str) -> None:
    missing = [n for n in names if n not in obj]
    extra = sorted(set(obj) - set(names))
    if missing or extra:
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"unknown {', '.join(map(repr, extra))}"] if extra else [])
        raise RequestError(f"{where}: {'; '.join(parts)} (the signature's inputs are {', '.join(map(repr, names))})")


def _row_feeds(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise RequestError("'instances' must be a non-empty list of examples")
    names = list(specs)
    columns: dict[str, list] = {n: [] for n in names}
    for k, row in enumerate(instances):
        if len(names) == 1 and not isinstance(row, dict):
            row = {names[0]: row}
        if not isinstance(row, dict):
            raise RequestError(f"instance {k} must be a JSON object with keys {', '.join(map(repr, names))}")
        _check_keys(row, names, f"instance {k}")
        for n in names:
            columns[n].append(row[n])
    return {n: to_array(columns[n], specs[n], n, rows=True) for n in names}


def _column_feeds(inputs: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    names = list(specs)
    if len(names) == 1 and not (isinstance(inputs, dict) and set(inputs) == set(names)):
        inputs = {names[0]: inputs}
    if not isinstance(inputs, dict):
        raise RequestError("'inputs' must be a JSON object mapping input names to values")
    _check_keys(inputs, names, "'inputs'")
    feeds = {n: to_array(inputs[n], specs[n], n) for n in names}
    batch = {n: a.shape[0] for n, a in feeds.items() if a.ndim}
    if len(set(batch.values())) > 1:
        raise RequestError("inputs have different batch sizes: "
                           + ", ".join(f"'{n}' {b}" for n, b in batch.items()))
    if 0 in batch.values():
        raise RequestError("'inputs' holds no example (batch size 0)")
    return feeds


def decode_predict(body: bytes, signatures: Mapping[str, Mapping[str, tf.TensorSpec]]
                   ) -> tuple[str, dict[str, np.ndarray], bool]:
    """Parse a predict request against ``signatures`` (name -> input specs by input name).

    Returns:
      The signature name, the input arrays by name, and True for the row format.

    Raises:
      RequestError: status 400 with a one-sentence message.
    """
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(request, dict):
        raise RequestError("the request body must be a JSON object")
    extra = sorted(set(request) - set(_REQUEST_FIELDS))
    if extra:
        raise RequestError(f"unknown field(s) {', '.join(map(repr, extra))} in the request; expected "
                           "'signature_name' and one of 'instances' or 'inputs'")
    name = request.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise RequestError("'signature_name' must be a string")
    if name not in signatures:
        raise RequestError(f'Serving signature name: "{name}" not found in signature def')
    if ("instances" in request) == ("inputs" in request):
        raise RequestError("the request needs exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    if "instances" in request:
        return name, _row_feeds(request["instances"], signatures[name]), True
    return name, _column_feeds(request["inputs"], signatures[name]), False


def _jsonable(array: np.ndarray) -> Any:
    value = array.tolist()
    return _decode_bytes(value) if array.dtype.kind in "OS" else value


def _decode_bytes(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_bytes(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def encode_predict(outputs: dict[str, np.ndarray], names: list[str], rows: bool) -> dict[str, Any]:
    """TF Serving's response: ``predictions`` (one value, or one dict per row when there are several
    outputs) for the row format, ``outputs`` (one value, or a dict by name) for the columnar one."""
    values = {n: _jsonable(outputs[n]) for n in names}
    if not rows:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{n: values[n][k] for n in names} for k in range(len(values[names[0]]))]}
