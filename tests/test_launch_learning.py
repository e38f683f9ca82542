"""Do failed launches, as labels, teach a model which launches succeed? Measured on synthetic data with a
planted success mechanism (tfgb.data.synth: a launch succeeds more often when the initiator's friends like
the item, and for items of high appeal).

MGBR with the launch -> deal cascade (``mgbr-launch``) against the same recipe without it (``mgbr``), on
held-out launches (test deals against test failed launches). Both runs are full trainings (about a minute
each on 2 idle cores, several on a loaded machine): marked slow, run with ``-m slow``.
"""
from __future__ import annotations

import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
from tfgb.config import load
from tfgb.train import train

SMALL = ["data.synth.users=800", "data.synth.items=150", "data.synth.groups=3000", "data.negatives=49",
         "eval.ks=[10]", "eval.full_max_initiators=0", "train.epochs=10", "train.budget_steps=0",
         "train.eval_every_steps=0", "train.patience=0", "model.mgbr.embedding_dim=16"]
# Measured with these settings, seeds 1 and 2: mgbr-launch 0.849 / 0.847 against mgbr 0.832 / 0.815 (the
# item success-rate floor: 0.766); task A MRR@10 0.857 / 0.842 against 0.830 / 0.799. The margin asserted
# is half the smaller measured gap. (NMTR does not show it: nmtr 0.748 / 0.752 against nmtr-single
# 0.758 / 0.771 on the same data.)
MARGIN = 0.008


@pytest.mark.slow
def test_the_launch_behaviour_raises_launch_success_auc(tmp_path):
    auc = {}
    for name in ("mgbr-launch", "mgbr"):
        config = load(None, [*SMALL, f"model.name={name}", "train.seed=1", f"data.cache_dir={tmp_path}/cache"])
        metrics = train(config, None, tmp_path / name, progress=False)
        auc[name] = metrics["test"]["launch_success"]["auc"]
        assert metrics["test"]["a"]["mrr@10"] > 0.6  # both learned task A (random: 0.29, popularity ~0.5)
    assert auc["mgbr-launch"] > auc["mgbr"] + MARGIN, auc
