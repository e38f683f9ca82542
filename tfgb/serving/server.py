"""``python -m tfgb.serve --export-base saved_models/NAME``: a local stand-in for TF Serving's REST API.

For machines without Docker or ``tensorflow_model_server``. It serves the newest integer version
of the export base under the model name ``NAME`` (the export base's basename), speaking the
same JSON as TF Serving, so clients (:class:`tfgb.serving.client.RankingClient`) work against either:

* ``GET  /v1/models/NAME[/versions/N]``: version status;
* ``GET  /v1/models/NAME[/versions/N]/metadata``: the signature defs;
* ``POST /v1/models/NAME[/versions/N]:predict``: ``{"signature_name": ..., "instances": [...]}``
  (row format, answered with ``{"predictions": [...]}``) or ``{"signature_name": ...,
  "inputs": {...}}`` (columnar format, answered with ``{"outputs": ...}``).

Every signature of the SavedModel is served: ``serving_default``, ``rank_participants`` and, in the
exports of models trained with a launch behaviour, ``launch_success`` (:mod:`tfgb.serving.export`).

Errors are ``{"error": "..."}`` with status 400 (bad request), 404 (unknown model, version or
path), 405 (wrong method), 413 (body over ``--max-body-bytes``) or 500 (a bug; the server goes
on). Raw ids of ``tf.string`` inputs may be JSON strings, integers (sent as their decimal
string) or TF Serving's ``{"b64": ...}``; floats, booleans, nulls and other objects are refused.
Every response carries the version that answered it in an ``X-Model-Version`` header.

A background thread polls the export base every ``--poll-seconds`` and loads a newer version
completely (including one warm-up call per signature) before swapping it in; requests in flight
finish on the version they started with. Directories that are not integers (such as the
exporter's ``.tmp-*``) are ignored, and a version that fails to load is logged and retried only
when its files change.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import signal
import sys
import threading
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from tfgb.errors import ConfigError, cli_boundary, setup_logging
from tfgb.serving.export import list_versions
from tfgb.serving.rest import RequestError, decode_predict, encode_predict

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger("tfgb.serve")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
VERSION_HEADER = "X-Model-Version"
_ROUTE = re.compile(r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<action>/metadata|:[A-Za-z]+)?$")


# -- loaded versions ---------------------------------------------------------------------------
@dataclasses.dataclass
class Signature:
    """One callable signature of a loaded SavedModel: input specs by name, output names."""

    name: str
    fn: Any
    inputs: dict[str, tf.TensorSpec]
    outputs: list[str]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {k: tf.constant(v, dtype=self.inputs[k].dtype) for k, v in feeds.items()}
        return {k: v.numpy() for k, v in self.fn(**tensors).items()}

    def dummy_feeds(self) -> dict[str, np.ndarray]:
        """One row with one of everything: a warm-up call that also proves the version works."""
        feeds = {}
        for key, spec in self.inputs.items():
            shape = [1 if d is None else d for d in spec.shape]
            fill = "" if spec.dtype == tf.string else 0
            feeds[key] = np.full(shape, fill, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
        return feeds


@dataclasses.dataclass
class Servable:
    """One loaded, warmed-up version."""

    version: int
    path: Path
    model: Any  # the loaded object: keeps the signatures' variables alive
    signatures: dict[str, Signature]
    signature_defs: dict[str, Any]  # TF Serving's JSON of the SignatureDefMap


def read_signature_defs(path: Path) -> dict[str, Any]:
    """The SignatureDefs of ``path/saved_model.pb`` as TF Serving prints them (proto JSON)."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    out = {}
    for name, signature in proto.meta_graphs[0].signature_def.items():
        try:
            out[name] = json_format.MessageToDict(signature, preserving_proto_field_name=True,
                                                  always_print_fields_with_no_presence=True)
        except TypeError:  # protobuf < 5.26
            out[name] = json_format.MessageToDict(signature, preserving_proto_field_name=True,
                                                  including_default_value_fields=True)
    return out


def load_servable(path: Path, version: int) -> Servable:
    """Load, inspect and warm up one version directory."""
    model = tf.saved_model.load(str(path))
    signatures = {}
    for name, fn in model.signatures.items():
        inputs = dict(fn.structured_input_signature[1])
        signatures[name] = Signature(name, fn, inputs, sorted(fn.structured_outputs))
    for signature in signatures.values():
        signature(signature.dummy_feeds())
    return Servable(version, path, model, signatures, read_signature_defs(path))


def _stamp(path: Path) -> tuple:
    """Names, sizes and mtimes of every file under ``path``: changes while a copy is still going on."""
    return tuple(sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in path.rglob("*") if p.is_file()))


class ModelStore:
    """The served version of one export base, swapped atomically when a newer one has loaded."""

    def __init__(self, export_base: str | Path):
        self.base = Path(export_base)
        self.name = self.base.resolve().name
        self._current: Servable | None = None
        self._failed: dict[int, tuple] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Servable | None:
        return self._current

    def poll(self) -> Servable | None:
        """Serve the newest loadable version (loading it first); returns the served version."""
        with self._lock:
            for version in reversed(list_versions(self.base)):
                if self._current is not None and version == self._current.version:
                    break
                path = self.base / str(version)
                try:
                    stamp = _stamp(path)
                except OSError:  # removed while we looked
                    continue
                if not (path / "saved_model.pb").is_file() or self._failed.get(version) == stamp:
                    continue
                try:
                    servable = load_servable(path, version)
                except Exception as exc:  # noqa: BLE001 -- a broken or half-copied version must not stop serving
                    self._failed[version] = stamp
                    log.error("cannot load %s (will retry when its files change): %s", path, exc)
                    continue
                self._current = servable
                log.info("serving %s version %d from %s", self.name, version, path)
                break
            return self._current

    def start(self, seconds: float) -> None:
        """Poll every ``seconds`` in a daemon thread until :meth:`close`."""

        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.poll()
                except Exception:
                    log.exception("polling %s failed", self.base)

        self._thread = threading.Thread(target=loop, name="tfgb-serve-poll", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# -- the WSGI application ------------------------------------------------------------------------
class App:
    """The WSGI application: routes TF Serving's REST paths to the served version of a store."""

    def __init__(self, store: ModelStore, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.store = store
        self.max_body_bytes = int(max_body_bytes)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        version = None
        try:
            status, payload, version = self._handle(environ)
        except RequestError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # a bug: report it, never let it take the server down
            log.exception("request failed: %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        try:
            body = json.dumps(payload).encode("utf-8")
        except (TypeError, ValueError) as exc:
            status, body = 500, json.dumps({"error": f"internal error: cannot encode the response ({exc})"}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if version is not None:
            headers.append((VERSION_HEADER, str(version)))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def close(self) -> None:
        """Stop polling for new versions."""
        self.store.close()

    def _handle(self, environ: dict) -> tuple[int, dict, int | None]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        match = _ROUTE.match(path)
        action = (match["action"] or "") if match else ""
        if match is None or action.startswith(":") and action not in (":predict", ":classify", ":regress"):
            raise RequestError(f"Malformed request: {method} {path}", 404)
        if match["label"] is not None:
            raise RequestError(f"Unrecognized servable version label: {match['label']}", 404)
        servable = self._servable(match["model"], match["version"])
        if action.startswith(":"):
            if method != "POST":
                raise RequestError(f"{action[1:]} takes POST, not {method}", 405)
            if action != ":predict":
                raise RequestError(f"{action[1:]} is not supported; use :predict")
            return (200, self._predict(environ, servable), servable.version)
        if method != "GET":
            raise RequestError(f"{path} takes GET, not {method}", 405)
        if action == "/metadata":
            return 200, self._metadata(servable), servable.version
        return 200, {"model_version_status": [{"version": str(servable.version), "state": "AVAILABLE",
                                               "status": {"error_code": "OK", "error_message": ""}}]}, None

    def _servable(self, model: str, version: str | None) -> Servable:
        servable = self.store.current  # one read: the whole request uses this version
        if model != self.store.name or servable is None:
            raise RequestError(f"Servable not found for request: Latest({model})", 404)
        if version is not None and int(version) != servable.version:
            raise RequestError(f"Servable not found for request: Specific({model}, {version})", 404)
        return servable

    def _metadata(self, servable: Servable) -> dict:
        return {"model_spec": {"name": self.store.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": {"signature_def": servable.signature_defs}}}

    def _read_body(self, environ: dict) -> bytes:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH") or ""
        if not length:
            body = stream.read(self.max_body_bytes + 1)
        elif not length.isdigit():
            raise RequestError("invalid Content-Length")
        elif int(length) > self.max_body_bytes:
            raise RequestError(f"the request body ({length} bytes) is over the limit of {self.max_body_bytes}", 413)
        else:
            body = stream.read(int(length))
        if len(body) > self.max_body_bytes:
            raise RequestError(f"the request body is over the limit of {self.max_body_bytes} bytes", 413)
        return body

    def _predict(self, environ: dict, servable: Servable) -> dict:
        specs = {name: signature.inputs for name, signature in servable.signatures.items()}
        name, feeds, rows = decode_predict(self._read_body(environ), specs)
        signature = servable.signatures[name]
        try:
            outputs = signature(feeds)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise RequestError(getattr(exc, "message", str(exc)).splitlines()[0]) from None
        return encode_predict(outputs, signature.outputs, rows)


def make_app(export_base: str | Path, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
             poll_seconds: float = 2.0) -> App:
    """The WSGI app serving ``export_base``: loads its newest version now, then polls (0 = never).

    Raises:
      ConfigError: ``export_base`` is not a directory.
    """
    if not Path(export_base).is_dir():
        raise ConfigError(f"{export_base}: no such export base; run python -m tfgb.export first")
    store = ModelStore(export_base)
    if store.poll() is None:
        log.warning("%s holds no loadable version yet; waiting for one", export_base)
    if poll_seconds > 0:
        store.start(poll_seconds)
    return App(store, max_body_bytes)


# -- running it ------------------------------------------------------------------------------
def create_server(app: App, host: str = "127.0.0.1", port: int = 8501, threads: int = 4):
    """A waitress server for ``app``; waitress itself refuses bodies far over the app's limit."""
    import waitress

    hard_limit = max(2 * app.max_body_bytes, app.max_body_bytes + (1 << 20))
    return waitress.create_server(app, host=host, port=port, threads=threads, max_request_body_size=hard_limit,
                                  ident="tfgb-serve")


def _close(server) -> None:
    from waitress import wasyncore

    server.task_dispatcher.shutdown()
    wasyncore.close_all(getattr(server, "map", None) or server._map)


class BackgroundServer:
    """``app`` served by waitress on ``host:port`` (0 = a free port) in a thread; a context manager."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0, threads: int = 4):
        self.app = app
        self.server = create_server(app, host, port, threads)
        self.port = int(self.server.effective_port)
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.run, name="tfgb-serve", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        from waitress import wasyncore

        # Close the sockets from inside the server's own loop, which then ends.
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        self._thread.join(timeout=10)
        self.server.task_dispatcher.shutdown()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(export_base: str | Path, host: str = "127.0.0.1", port: int = 8501,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, poll_seconds: float = 2.0, threads: int = 4) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight and stop."""
    app = make_app(export_base, max_body_bytes, poll_seconds)
    try:
        server = create_server(app, host, port, threads)
    except OSError as exc:
        app.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"serving {app.store.name} at http://{host}:{server.effective_port}/v1/models/{app.store.name}",
              flush=True)
        server.run()  # returns on KeyboardInterrupt (SIGINT, or SIGTERM through _interrupt)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _close(server)
        app.close()
        print("stopped", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfgb.serve", description=__doc__.splitlines()[0])
    p.add_argument("--export-base", required=True, help="the directory of integer versions (python -m tfgb.export)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for new versions (0 = never)")
    p.add_argument("--threads", type=int, default=4, help="request worker threads")
    return p


@cli_boundary
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    serve(args.export_base, args.host, args.port, args.max_body_bytes, args.poll_seconds, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
