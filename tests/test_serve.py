"""``tfgb.serve``: TF Serving's REST API over HTTP on loopback, from a waitress server in a thread."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf

from tfgb.serving import server as serve
from tfgb.serving.export import export_model

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 64 * 1024


def new_base(tiny_export: Path, root: Path) -> Path:
    """A fresh export base "tiny" holding version 1, a half-written temp dir and a stray file."""
    base = root / "tiny"
    shutil.copytree(tiny_export, base / "1")
    half = base / ".tmp-2-12345"
    (half / "variables").mkdir(parents=True)
    (half / "saved_model.pb").write_bytes((tiny_export / "saved_model.pb").read_bytes()[:100])
    (base / "README").write_text("not a version\n")
    return base


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory):
    app = serve.make_app(new_base(tiny_export, tmp_path_factory.mktemp("serve")), MAX_BODY, poll_seconds=0.2)
    with serve.BackgroundServer(app) as running:
        yield running
    app.close()


@pytest.fixture(scope="module")
def direct(tiny_export: Path):
    """The SavedModel called in this process: what every HTTP answer must equal."""
    model = tf.saved_model.load(str(tiny_export))

    def call(signature: str, **inputs) -> dict:
        out = model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    return call


@pytest.fixture(scope="module")
def ids(tiny_run: Path) -> tuple[list[str], list[str]]:
    return ((tiny_run / "vocab" / "users.txt").read_text().split(), (tiny_run / "vocab" / "items.txt").read_text().split())


def post(server, body, path: str = "/v1/models/tiny:predict") -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.url + path, data=data, timeout=30)


def test_status_and_metadata(server):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("/v1/models/tiny", "/v1/models/tiny/versions/1"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 200 and response.json() == expected
    meta = requests.get(server.url + "/v1/models/tiny/metadata", timeout=10).json()
    assert meta["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(defs["rank_participants"]["inputs"]) == {"initiator", "item", "candidates"}
    candidates = defs["serving_default"]["inputs"]["candidates"]
    assert candidates["dtype"] == "DT_STRING"
    assert [d["size"] for d in candidates["tensor_shape"]["dim"]] == ["-1", "-1"]
    scores = defs["serving_default"]["outputs"]["scores"]
    assert scores["dtype"] == "DT_FLOAT" and defs["serving_default"]["outputs"]["unknown_ids"]["dtype"] == "DT_INT32"
    assert defs["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_predict_both_signatures_both_formats(server, direct, ids):
    users, items = ids
    u, it, c_items, c_users = users[:2], items[:2], [items[2:7], items[7:12]], [users[2:7], users[7:12]]

    want = direct("serving_default", initiator=u, candidates=c_items)
    rows = post(server, {"instances": [{"initiator": u[k], "candidates": c_items[k]} for k in range(2)]})
    assert rows.status_code == 200 and rows.headers[serve.VERSION_HEADER] == "1"
    predictions = rows.json()["predictions"]
    np.testing.assert_allclose([p["scores"] for p in predictions], want["scores"], atol=1e-6)
    assert [p["unknown_ids"] for p in predictions] == [0, 0]
    cols = post(server, {"signature_name": "serving_default", "inputs": {"initiator": u, "candidates": c_items}})
    np.testing.assert_allclose(cols.json()["outputs"]["scores"], want["scores"], atol=1e-6)
    assert cols.json()["outputs"]["unknown_ids"] == [0, 0]

    want = direct("rank_participants", initiator=u, item=it, candidates=c_users)
    rows = post(server, {"signature_name": "rank_participants",
                         "instances": [{"initiator": u[k], "item": it[k], "candidates": c_users[k]} for k in range(2)]})
    np.testing.assert_allclose([p["scores"] for p in rows.json()["predictions"]], want["scores"], atol=1e-6)
    cols = post(server, {"signature_name": "rank_participants",
                         "inputs": {"initiator": u, "item": it, "candidates": c_users}}, "/v1/models/tiny/versions/1:predict")
    np.testing.assert_allclose(cols.json()["outputs"]["scores"], want["scores"], atol=1e-6)


def test_integer_ids_unknown_ids_and_b64(server, ids):
    users, items = ids
    numeric = [i for i in items if i.isdigit()][:3]
    as_strings = post(server, {"instances": [{"initiator": users[0], "candidates": numeric + ["no-such-item"]}]})
    as_ints = post(server, {"instances": [{"initiator": {"b64": "dGhlcmU="},  # "there": not a user
                                           "candidates": [int(i) for i in numeric] + ["no-such-item"]}]})
    assert as_strings.status_code == as_ints.status_code == 200, as_ints.text
    first, second = as_strings.json()["predictions"][0], as_ints.json()["predictions"][0]
    assert first["unknown_ids"] == 1 and second["unknown_ids"] == 2
    assert np.isfinite(second["scores"]).all()


BAD_REQUESTS = [
    ({"signature_name": "serving_default"}, 400, "exactly one of"),
    ({"instances": [{"initiator": "1", "candidates": ["1"]}], "inputs": {}}, 400, "exactly one of"),
    ({"instances": [{"initiator": "1", "candidates": ["1"]}], "extra": 1}, 400, "unknown field"),
    ({"instances": [{"initiator": "1", "candidates": ["1"], "foo": "x"}]}, 400, "unknown 'foo'"),
    ({"instances": [{"initiator": "1"}]}, 400, "missing 'candidates'"),
    ({"instances": [{"initiator": 1.5, "candidates": ["1"]}]}, 400, "JSON strings or integers"),
    ({"instances": [{"initiator": "1", "candidates": [True]}]}, 400, "JSON strings or integers"),
    ({"instances": [{"initiator": None, "candidates": ["1"]}]}, 400, "JSON strings or integers"),
    ({"instances": [{"initiator": {"id": "1"}, "candidates": ["1"]}]}, 400, "JSON strings or integers"),
    ({"instances": [{"initiator": "1", "candidates": [["1"]]}]}, 400, "shape [-1] in every instance"),
    ({"instances": [{"initiator": "1", "candidates": "1"}]}, 400, "shape [-1] in every instance"),
    ({"instances": [{"initiator": ["1"], "candidates": ["1"]}]}, 400, "too many dimensions"),
    ({"instances": [{"initiator": "1", "candidates": ["1", "2"]}, {"initiator": "2", "candidates": ["1"]}]},
     400, "ragged"),
    ({"signature_name": "nope", "instances": [{"initiator": "1", "candidates": ["1"]}]}, 400, "not found"),
    ({"signature_name": 3, "instances": []}, 400, "must be a string"),
    ({"instances": []}, 400, "non-empty"),
    ({"instances": {"initiator": "1"}}, 400, "non-empty list"),
    ({"instances": ["1"]}, 400, "must be a JSON object"),
    ({"inputs": {"initiator": ["1", "2"], "candidates": [["1"]]}}, 400, "different batch sizes"),
    ({"inputs": {"initiator": ["1"], "candidates": ["1"]}}, 400, "must have shape [-1, -1]"),
    ({"inputs": {"initiator": [], "candidates": []}}, 400, "no example"),
    ({"inputs": ["1"]}, 400, "JSON object"),
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    ([1, 2], 400, "must be a JSON object"),
    ({"instances": [{"initiator": "1", "candidates": ["x" * 70_000]}]}, 413, "over the limit"),
]


@pytest.mark.parametrize("body, status, message", BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_bad_requests_are_refused_with_json(server, body, status: int, message: str):
    response = post(server, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"], response.json()


@pytest.mark.parametrize("method, path, status, message", [
    ("POST", "/v1/models/tiny/versions/7:predict", 404, "Specific(tiny, 7)"),
    ("GET", "/v1/models/tiny/versions/7", 404, "Specific(tiny, 7)"),
    ("POST", "/v1/models/other:predict", 404, "Latest(other)"),
    ("GET", "/v1/models/other/metadata", 404, "Latest(other)"),
    ("POST", "/v1/models/tiny/labels/stable:predict", 404, "label"),
    ("GET", "/v1/models/tiny:frobnicate", 404, "Malformed request"),
    ("GET", "/v2/anything", 404, "Malformed request"),
    ("GET", "/v1/models/tiny:predict", 405, "takes POST"),
    ("POST", "/v1/models/tiny", 405, "takes GET"),
    ("POST", "/v1/models/tiny:classify", 400, "not supported"),
])
def test_unknown_paths_versions_and_methods(server, method: str, path: str, status: int, message: str):
    response = requests.request(method, server.url + path, data="{}", timeout=10)
    assert response.status_code == status and message in response.json()["error"]


def test_a_bug_answers_500_and_the_server_goes_on(server, monkeypatch):
    def broken(environ, servable):
        raise RuntimeError("boom")

    monkeypatch.setattr(server.app, "_predict", broken)
    response = post(server, {"instances": [{"initiator": "1", "candidates": ["1"]}]})
    assert response.status_code == 500 and "boom" in response.json()["error"]
    monkeypatch.undo()
    assert post(server, {"instances": [{"initiator": "1", "candidates": ["1"]}]}).status_code == 200


def test_concurrent_clients(server, direct, ids):
    users, items = ids
    body = {"instances": [{"initiator": users[3], "candidates": items[:100]}]}
    want = direct("serving_default", initiator=[users[3]], candidates=[items[:100]])["scores"][0]
    errors: list[str] = []

    def client() -> None:
        with requests.Session() as http:
            for _ in range(25):
                response = http.post(server.url + "/v1/models/tiny:predict", json=body, timeout=30)
                scores = response.json()["predictions"][0]["scores"] if response.ok else None
                if scores is None or not np.allclose(scores, want, atol=1e-6):
                    errors.append(response.text[:200])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)


def test_new_version_is_swapped_in_without_failed_requests(tiny_run: Path, tiny_export: Path, tmp_path: Path, ids):
    users, items = ids
    base = new_base(tiny_export, tmp_path)
    app = serve.make_app(base, MAX_BODY, poll_seconds=0.1)
    body = {"signature_name": "rank_participants",
            "instances": [{"initiator": users[0], "item": items[0], "candidates": users[:100]}]}
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream() -> None:  # bounded: at most 20,000 requests, and stops 20 answers after the switch
        with requests.Session() as http:
            for _ in range(20_000):
                response = http.post(f"{running.url}/v1/models/tiny:predict", json=body, timeout=30)
                if response.status_code != 200:
                    failures.append(response.text[:200])
                seen.append(response.headers.get(serve.VERSION_HEADER, "?"))
                if stop.is_set() or seen[-20:] == ["2"] * 20:
                    return

    with serve.BackgroundServer(app) as running:
        client = threading.Thread(target=stream)
        client.start()
        try:
            assert export_model(tiny_run, base) == base / "2"
            deadline = time.monotonic() + 60
            while app.store.current.version != 2 and time.monotonic() < deadline:
                client.join(timeout=0.1)  # bounded polling for the swap
            client.join(timeout=60)
        finally:
            stop.set()
            client.join()
    app.close()
    assert not failures
    assert seen[0] == "1" and seen[-20:] == ["2"] * 20
    assert seen == sorted(seen)  # once version 2 answers, version 1 never does again
    assert (base / ".tmp-2-12345").exists()  # the half-written dir was ignored, not loaded or removed


def test_broken_version_is_skipped_until_its_files_change(tiny_export: Path, tmp_path: Path):
    base = new_base(tiny_export, tmp_path)
    store = serve.ModelStore(base)
    assert store.poll().version == 1
    broken = base / "5"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"half a model")
    assert store.poll().version == 1  # logged, not served, and the old version stays
    assert store.poll().version == 1
    shutil.rmtree(broken)
    shutil.copytree(tiny_export, broken)
    assert store.poll().version == 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_and_stops_cleanly_on_sigterm(tiny_export: Path, tmp_path: Path):
    base = new_base(tiny_export, tmp_path)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "tfgb.serve", "--export-base", str(base), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 120, None
        while status != 200 and proc.poll() is None and time.monotonic() < deadline:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/v1/models/tiny", timeout=1).status_code
            except requests.ConnectionError:
                try:  # bounded polling until it listens (returns at once if the server died)
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
        assert status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate()
    assert f"http://127.0.0.1:{port}/v1/models/tiny" in out


def test_cli_missing_export_base_exits_2(tmp_path: Path, capsys):
    assert serve.main(["--export-base", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such export base" in err and "\n" not in err
