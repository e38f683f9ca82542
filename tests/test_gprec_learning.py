"""Does GPRec help the sparse users it is for? Measured on synthetic data with planted feature-defined groups
(tfgb.data.synth.user_features: a noisy copy of each user's taste community, and an age that depends on it)
and many sparse users (6,000 users for 6,000 deal groups: most initiators launch one group or none).

MF-BPR with the GPRec plug-in (the paper's defaults: input strategy, G = 60, tau = 0.5, Gumbel noise in
training) against the same recipe without it, on task A's test lists of initiators who launched no training
group (the ``deals=0,failed=0`` cell of the sparsity breakdown; they occur in training as participants only).
Both runs are full trainings of several minutes on 2 cores: marked slow, run with ``-m slow``.
"""
from __future__ import annotations

import pytest

import tfgb  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
from tfgb.config import load
from tfgb.train import train

SPARSE = ["data.synth.users=6000", "data.synth.groups=6000", "eval.full_max_initiators=0", "train.epochs=2",
          "model.name=mf-bpr"]
CELL = "deals=0,failed=0"
# Measured with these settings (seed 2023, the recipe's): the cell's MRR@10 0.632 with GPRec against 0.487
# without it, on 89 lists (task A overall 0.635 / 0.608; task B 0.455 / 0.484: GPRec costs task B here). The margin
# asserted is half the measured gap of the cell.
MARGIN = 0.07


@pytest.mark.slow
def test_gprec_ranks_items_better_for_initiators_without_training_groups(tmp_path):
    cell = {}
    for name, sets in (("gprec", ["model.user_modeling=gprec", "data.user_features=synthetic"]), ("plain", [])):
        config = load(None, [*SPARSE, *sets, f"data.cache_dir={tmp_path}/cache"])
        metrics = train(config, None, tmp_path / name, progress=False)
        cell[name] = metrics["test"]["sparsity"][CELL]["sampled"]["mrr@10"]
        assert metrics["test"]["sparsity"][CELL]["sampled"]["rows"] >= 50  # 89 lists here
    assert cell["gprec"] > cell["plain"] + MARGIN, cell
