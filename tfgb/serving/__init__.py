"""Serving: the TF Serving export, the REST codec, the local server, the client and the serving bench.

``export`` (:mod:`tfgb.serving.export`) writes SavedModels; ``rest`` encodes and decodes TF Serving's
REST JSON; ``server`` is the local stand-in for TF Serving's REST API; ``client`` holds
:class:`RankingClient`; ``bench`` measures latency. Commands: ``python -m tfgb.export``,
``python -m tfgb.serve``, ``python -m tfgb.bench serve``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["RankingClient", "ServingError"]


def __getattr__(name: str) -> Any:
    # The client needs `requests` (the serve extra); import it only when it is asked for.
    if name in __all__:
        from tfgb.serving import client

        return getattr(client, name)
    raise AttributeError(f"module 'tfgb.serving' has no attribute {name!r}")
