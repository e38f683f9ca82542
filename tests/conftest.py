"""Shared fixtures: one tiny trained run and its first export (for the export and serving tests)."""
from __future__ import annotations

from pathlib import Path

import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A one-epoch MGBR run (with the item / participant biases of `model.bias`) on small synthetic data (~10 s)."""
    from tfgb.train import load_config, train

    tmp = tmp_path_factory.mktemp("tiny")
    config = load_config(None, ["train.epochs=1", "train.budget_steps=0", "data.synth.groups=1500", "data.synth.users=600",
                                "data.synth.items=150", "model.mgbr.bias=true", f"data.cache_dir={tmp}/cache"])
    train(config, None, tmp / "run", progress=False)
    return tmp / "run"


@pytest.fixture(scope="session")
def tiny_export(tiny_run: Path, tmp_path_factory) -> Path:
    """Version 1 of ``tiny_run`` exported to ``<tmp>/saved_models/tiny/1``; returns the version dir."""
    from tfgb.serving.export import export_model

    return export_model(tiny_run, tmp_path_factory.mktemp("export") / "saved_models" / "tiny")
