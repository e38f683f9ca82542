"""The data contract: training-batch fields, side inputs, and how a model's needs are checked."""
from __future__ import annotations

import numpy as np
import pytest

from tfgb import contract
from tfgb.errors import ConfigError


def batch(b: int = 3, t: int = 2, dtype=np.int32) -> dict[str, np.ndarray]:
    return {f.name: np.zeros([b if d == "B" else t for d in f.shape], dtype) for f in contract.TRAINING_BATCH}


def test_a_batch_of_the_contract_passes_and_each_violation_names_the_field():
    contract.check_batch(batch(), aux_size=2, folds=False)
    with_fold = {**batch(), "fold": np.zeros(3, np.int32)}
    contract.check_batch(with_fold, aux_size=2, folds=True)
    with pytest.raises(ValueError, match=r"missing \['fold'\]"):
        contract.check_batch(batch(), aux_size=2, folds=True)
    bad = batch()
    bad["neg_item"] = bad["neg_item"].astype(np.int64)
    with pytest.raises(ValueError, match="'neg_item' has dtype int64"):
        contract.check_batch(bad, aux_size=2, folds=False)
    with pytest.raises(ValueError, match="'aux_items' has shape \\[3, 2\\].*T = 5"):
        contract.check_batch(batch(), aux_size=5, folds=False)
    bad = batch()
    bad["participant"] = np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="disagree on B"):
        contract.check_batch(bad, aux_size=2, folds=False)


def test_a_missing_side_input_stops_with_one_sentence_naming_the_recipe_key():
    side = contract.SideInputs()
    with pytest.raises(ConfigError) as err:
        side.require([contract.USER_FEATURES], "gprec-mgbr")
    assert str(err.value) == "model 'gprec-mgbr' needs a table of user features: set 'data.user_features' in the recipe"
    side.require([], "mgbr")
    have = contract.SideInputs(interactions=contract.Interactions(
        np.array([0, 1], np.int32), np.array([2, 2], np.int32), np.array([0, 1], np.int8), ("launch", "deal")))
    have.require([contract.INTERACTIONS], "nmtr")
    assert have.provided() == ["interactions"] and have.interactions.counts() == {"launch": 1, "deal": 1}


def test_interactions_reject_codes_outside_the_behaviours():
    with pytest.raises(ValueError, match="behaviour codes"):
        contract.Interactions(np.array([0], np.int32), np.array([0], np.int32), np.array([2], np.int8),
                              ("launch", "deal"))


def test_side_inputs_of_prepared_data_hold_deals_and_failed_launches(tmp_path):
    from tfgb.config import load
    from tfgb.data.prepare import prepare
    from tfgb.models.context import side_inputs

    config = load(None, ["data.synth.groups=300", "data.synth.users=120", "data.synth.items=150",
                         f"data.cache_dir={tmp_path}"])
    data = prepare(config)
    side = side_inputs(data)
    counts = side.interactions.counts()
    train_launches = data.launches("train")
    assert counts == {"launch": len(train_launches[0]), "deal": len(data.train)} and counts["launch"] > 0
    assert 0 < len(train_launches[0]) < len(data.failed_users)  # some failed launches are held out
    pairs = set(zip(side.interactions.user.tolist(), side.interactions.item.tolist()))
    deals = set(zip(data.train.initiator.tolist(), data.train.item.tolist()))
    assert pairs == deals | set(zip(*(a.tolist() for a in train_launches[:2])))
    for split in ("valid", "test"):  # held-out launches are no training interaction
        held = set(zip(*(a.tolist() for a in data.launches(split)[:2])))
        assert held and not held & pairs
