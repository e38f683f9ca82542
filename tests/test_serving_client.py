"""``tfgb.serving.RankingClient`` against ``tfgb.serve`` on loopback."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfgb.serving import server as serve
from tfgb.serving.client import RankingClient, ServingError


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory):
    base = tmp_path_factory.mktemp("client") / "tiny"
    shutil.copytree(tiny_export, base / "1")
    app = serve.make_app(base, poll_seconds=0)
    with serve.BackgroundServer(app) as running:
        yield running
    app.close()


@pytest.fixture(scope="module")
def client(server):
    with RankingClient(server.url, "tiny", timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def model(tiny_export: Path):
    return tf.saved_model.load(str(tiny_export))


@pytest.fixture(scope="module")
def ids(tiny_run: Path) -> tuple[list[str], list[str]]:
    return ((tiny_run / "vocab" / "users.txt").read_text().split(), (tiny_run / "vocab" / "items.txt").read_text().split())


def expected(scores: np.ndarray, candidates: list, top_k: int | None = None) -> list[tuple]:
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(candidates[k], float(scores[k])) for k in order]


def test_rank_items_sorted_by_score(client, model, ids):
    users, items = ids
    candidates = items[:30]
    scores = model.signatures["serving_default"](initiator=tf.constant([users[0]]),
                                                 candidates=tf.constant([candidates]))["scores"].numpy()[0]
    ranking = client.rank_items(users[0], candidates)
    assert [c for c, _ in ranking] == [c for c, _ in expected(scores, candidates)]
    np.testing.assert_allclose([s for _, s in ranking], np.sort(scores)[::-1], atol=1e-6)
    assert client.rank_items(users[0], candidates, top_k=5) == ranking[:5]


def test_rank_participants_and_integer_ids(client, model, ids):
    users, items = ids
    numeric = [int(u) for u in users[:20] if u.isdigit()]
    scores = model.signatures["rank_participants"](
        initiator=tf.constant([users[1]]), item=tf.constant([items[1]]),
        candidates=tf.constant([[str(u) for u in numeric]]))["scores"].numpy()[0]
    ranking = client.rank_participants(users[1], items[1], numeric, top_k=3)
    assert ranking[0][0] in numeric and isinstance(ranking[0][0], int)  # ids come back as given
    assert [c for c, _ in ranking] == [c for c, _ in expected(scores, numeric, 3)]


def test_batches_of_ragged_lists_equal_single_calls(client, ids):
    users, items = ids
    lists = [items[:5], items[5:7], [], items[10:20]]
    batch = client.rank_items_batch(users[:4], lists, top_k=4)
    assert batch[2] == []
    for k in (0, 1, 3):
        single = client.rank_items(users[k], lists[k], top_k=4)
        assert [c for c, _ in batch[k]] == [c for c, _ in single]
        np.testing.assert_allclose([s for _, s in batch[k]], [s for _, s in single], atol=1e-6)
    groups = client.rank_participants_batch(users[:2], items[:2], [users[5:8], users[8:20]])
    assert [len(g) for g in groups] == [3, 12]
    assert client.rank_items_batch([], []) == []


def test_status_metadata_and_unknown_ids(client):
    assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    assert "rank_participants" in client.metadata()["metadata"]["signature_def"]["signature_def"]
    ranking = client.rank_items("no-such-user", ["no-such-item", "nor-this"])
    assert len(ranking) == 2 and all(np.isfinite(s) for _, s in ranking)


def test_http_errors_raise_serving_error_with_the_server_message(server, client):
    with pytest.raises(ServingError) as info:
        RankingClient(server.url, "other").rank_items("1", ["1"])
    assert info.value.status == 404 and "Servable not found" in str(info.value)
    with pytest.raises(ServingError) as info:
        client.predict([{"initiator": "1", "candidates": ["1"]}], signature_name="nope")
    assert info.value.status == 400 and "not found in signature def" in str(info.value)
    with pytest.raises(ServingError) as info:
        RankingClient(server.url, "tiny", version=9).rank_items("1", ["1"])
    assert info.value.status == 404


def test_unreachable_server(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServingError, match="cannot reach"):
        RankingClient(f"http://127.0.0.1:{port}", "tiny", timeout=5).rank_items("1", ["1"])
