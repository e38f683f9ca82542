"""A client for a served tfgb model: rank items for an initiator, participants for a launched group.

It speaks only TF Serving's REST JSON, so it works against ``tensorflow/serving`` as well as
against ``python -m tfgb.serve``::

    from tfgb.serving import RankingClient

    client = RankingClient("http://127.0.0.1:8501", "default")
    client.rank_items("u17", ["i1", "i2", "i3"], top_k=2)            # [("i3", 2.1), ("i1", 0.4)]
    client.rank_participants("u17", "i3", ["u2", "u5", "u9"])         # [("u9", 1.3), ...]
    client.launch_success(["u17", "u2"], ["i3", "i1"])                # [0.71, 0.08]: P(deal | launch)

Ids may be strings or integers (they are sent as strings; results give back the ids as passed).
Candidate lists of one batch may differ in length: the client pads them in the request (every
candidate is scored independently, so padding changes no score) and drops the padding from the
results.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any
from urllib.parse import quote

import requests

from tfgb.errors import TfgbError

Ranking = list[tuple[Hashable, float]]
LAUNCH_SUCCESS = "launch_success"  # the signature of models trained with a launch behaviour


class ServingError(TfgbError):
    """The server refused a request or could not be reached; ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _raw_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) and not hasattr(value, "__index__"):
        raise TypeError(f"ids must be strings or integers, got {value!r}")
    return value if isinstance(value, str) else str(int(value))


def _ranked(ids: Sequence[Hashable], scores: Sequence[float], top_k: int | None) -> Ranking:
    order = sorted(range(len(ids)), key=lambda k: -scores[k])  # stable: ties keep the given order
    return [(ids[k], float(scores[k])) for k in order[:top_k]]


class RankingClient:
    """Rank candidates with a tfgb model behind a TF Serving REST endpoint.

    Args:
      base_url: the server, e.g. ``http://127.0.0.1:8501``.
      model: the model name (the export base's basename).
      timeout: seconds per HTTP request.
      version: pin a version (``/versions/N``); default the newest the server has.
    """

    def __init__(self, base_url: str, model: str, timeout: float = 10, version: int | None = None):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.version = version
        self._http = requests.Session()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RankingClient:  # noqa: PYI034 -- Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw REST calls ------------------------------------------------------------------------
    def _url(self, suffix: str = "") -> str:
        url = f"{self.base_url}/v1/models/{quote(self.model, safe='')}"
        return url + (f"/versions/{self.version}" if self.version is not None else "") + suffix

    def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        try:
            response = self._http.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServingError(f"cannot reach {url}: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            message = message or response.text.strip()[:200] or response.reason
            raise ServingError(f"{url} answered {response.status_code}: {message}", response.status_code)
        if not isinstance(payload, dict):
            raise ServingError(f"{url} answered with something that is not a JSON object")
        return payload

    def status(self) -> dict:
        """``GET /v1/models/NAME``: the model's version status."""
        return self._call("GET", self._url())

    def metadata(self) -> dict:
        """``GET /v1/models/NAME/metadata``: the signature defs."""
        return self._call("GET", self._url("/metadata"))

    def predict(self, instances: list[dict], signature_name: str = "serving_default") -> list[dict]:
        """``POST :predict`` in the row format; returns the ``predictions`` (one dict per instance)."""
        payload = self._call("POST", self._url(":predict"), {"signature_name": signature_name,
                                                             "instances": instances})
        predictions = payload.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(instances):
            raise ServingError("the server's answer has no prediction per instance")
        return predictions

    # -- ranking -------------------------------------------------------------------------------
    def _rank(self, signature: str, contexts: list[dict], candidates: Sequence[Sequence[Hashable]],
              top_k: int | None) -> list[Ranking]:
        if len(contexts) != len(candidates):
            raise ValueError(f"{len(contexts)} contexts but {len(candidates)} candidate lists")
        rows = [k for k, c in enumerate(candidates) if len(c)]
        out: list[Ranking] = [[] for _ in candidates]
        if not rows:
            return out
        width = max(len(candidates[k]) for k in rows)
        instances = []
        for k in rows:
            ids = [_raw_id(c) for c in candidates[k]]
            instances.append(dict(contexts[k], candidates=ids + [ids[0]] * (width - len(ids))))
        for k, prediction in zip(rows, self.predict(instances, signature)):
            out[k] = _ranked(list(candidates[k]), prediction["scores"][: len(candidates[k])], top_k)
        return out

    def rank_items(self, initiator: Hashable, candidates: Sequence[Hashable], top_k: int | None = None) -> Ranking:
        """Task A: ``candidates`` (item ids) as ``(id, score)`` pairs, best first (the top ``top_k``)."""
        return self.rank_items_batch([initiator], [candidates], top_k)[0]

    def rank_items_batch(self, initiators: Sequence[Hashable], candidates: Sequence[Sequence[Hashable]],
                         top_k: int | None = None) -> list[Ranking]:
        """Task A for many initiators in one request: one ranking per initiator."""
        contexts = [{"initiator": _raw_id(u)} for u in initiators]
        return self._rank("serving_default", contexts, candidates, top_k)

    def rank_participants(self, initiator: Hashable, item: Hashable, candidates: Sequence[Hashable],
                          top_k: int | None = None) -> Ranking:
        """Task B: ``candidates`` (user ids) for the group (``initiator``, ``item``), best first."""
        return self.rank_participants_batch([initiator], [item], [candidates], top_k)[0]

    def rank_participants_batch(self, initiators: Sequence[Hashable], items: Sequence[Hashable],
                                candidates: Sequence[Sequence[Hashable]], top_k: int | None = None) -> list[Ranking]:
        """Task B for many groups in one request: one ranking per (initiator, item)."""
        if len(initiators) != len(items):
            raise ValueError(f"{len(initiators)} initiators but {len(items)} items")
        contexts = [{"initiator": _raw_id(u), "item": _raw_id(i)} for u, i in zip(initiators, items)]
        return self._rank("rank_participants", contexts, candidates, top_k)

    # -- launch success ------------------------------------------------------------------------
    def launch_success(self, initiators: Sequence[Hashable], items: Sequence[Hashable]) -> list[float]:
        """P(deal | launch) of each pair (``initiators[k]``, ``items[k]``), in the order given, in one request.

        The ``launch_success`` signature, which only models trained with a launch behaviour export;
        unknown ids are scored with the out-of-vocabulary rows, as in the ranking methods.

        Raises:
          ValueError: ``initiators`` and ``items`` differ in length.
          ServingError: the server refused the request; for a model without the signature, a
            message naming the model.
        """
        if len(initiators) != len(items):
            raise ValueError(f"{len(initiators)} initiators but {len(items)} items")
        if not len(initiators):
            return []
        instances = [{"initiator": _raw_id(u), "item": _raw_id(i)} for u, i in zip(initiators, items)]
        try:
            predictions = self.predict(instances, LAUNCH_SUCCESS)
        except ServingError as exc:
            if exc.status == 400 and "not found in signature def" in str(exc):
                raise ServingError(f"model {self.model!r} at {self.base_url} has no {LAUNCH_SUCCESS!r} signature: "
                                   "only models trained with a launch behaviour export it (NMTR with "
                                   "model.nmtr.launch = true, MGBR / MAMGBR with launch_task = true)", 400) from None
            raise
        return [float(p["probability"]) for p in predictions]
