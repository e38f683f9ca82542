import pytest

from tfgb import config as cfg
from tfgb.errors import ConfigError


def test_defaults_validate_and_round_trip(tmp_path):
    c = cfg.load()
    path = tmp_path / "c.toml"
    cfg.save(c, path)
    assert cfg.load(path) == c


def test_overrides_are_typed():
    c = cfg.load(overrides=["model.mgbr.embedding_dim=16", "train.learning_rate=1e-3", "model.mgbr.shared_experts=false",
                            "data.split=[0.7, 0.2, 0.1]", "model.name=mgbr-m", "train.beta=1"])
    assert c.model.mgbr.embedding_dim == 16 and c.train.learning_rate == 1e-3
    assert c.model.mgbr.shared_experts is False and c.data.split == [0.7, 0.2, 0.1]
    assert c.model.name == "mgbr-m" and isinstance(c.train.beta, float)


@pytest.mark.parametrize("override, words", [
    ("model.mgbr.embeding_dim=8", ["model.mgbr.embeding_dim", "model.mgbr.embedding_dim"]),
    ("model.embedding_dim=8", ["moved to 'model.mgbr.embedding_dim'"]),
    ("model.heads=2", ["not a setting of model 'mgbr'", "model.mamgbr"]),
    ("model.mgbr.graph=star", ["model.mgbr.graph", "multi, hetero"]),
    ("model.name=mgbrd", ["unknown model 'mgbrd'", "did you mean 'mgbr-d'"]),
    ("modl.name=x", ["modl", "model"]),
    ("model.mgbr.embedding_dim=abc", ["model.mgbr.embedding_dim", "integer"]),
    ("model.mgbr.embedding_dim=1.5", ["model.mgbr.embedding_dim", "integer"]),
    ("model.mgbr.shared_experts=3", ["model.mgbr.shared_experts", "true or false"]),
    ("train.epochs=0", ["train.epochs"]),
    ("train.evals_per_epoch=0", ["train.evals_per_epoch"]),
    ("model.mgbr.init_std=0", ["model.mgbr.init_std", "positive"]),
    ("model.mgbr.embedding_dropout=1", ["model.mgbr.embedding_dropout"]),
    ("model.mgbr.bias_init=ones", ["model.mgbr.bias_init", "log_count"]),
    ("model=3", ["section"]),
    ("novalue", ["key=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        cfg.load(overrides=[override])
    for w in words:
        assert w in str(err.value)


def test_only_the_chosen_models_section_is_saved_and_it_loads_back(tmp_path):
    c = cfg.load(overrides=["model.name=ngcf", "model.ngcf.dropout=0.2"])
    text = cfg.dumps(c)
    assert "[model.ngcf]" in text and "[model.mgbr]" not in text
    path = tmp_path / "c.toml"
    cfg.save(c, path)
    assert cfg.load(path).model.ngcf.dropout == 0.2


def test_bad_recipe_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[model.mgbr]\nembedding_dim = 'big'\n")
    with pytest.raises(ConfigError, match="r.toml.*model.mgbr.embedding_dim"):
        cfg.load(p)
    # a recipe of the time before per-model sections names the new key
    p.write_text("[model]\nname = 'lightgcn'\nembedding_dim = 64\n")
    with pytest.raises(ConfigError, match=r"r.toml: config key 'model.embedding_dim' moved to 'model.lightgcn.embedding_dim'"):
        cfg.load(p)
    p.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        cfg.load(p)
    with pytest.raises(ConfigError, match="not found"):
        cfg.load(tmp_path / "missing.toml")
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(p)
