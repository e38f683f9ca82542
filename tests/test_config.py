import pytest

from tfgb import config as cfg
from tfgb.errors import ConfigError


def test_defaults_validate_and_round_trip(tmp_path):
    c = cfg.load()
    path = tmp_path / "c.toml"
    cfg.save(c, path)
    assert cfg.load(path) == c


def test_overrides_are_typed():
    c = cfg.load(overrides=["model.embedding_dim=16", "train.learning_rate=1e-3", "model.shared_experts=false",
                            "data.split=[0.7, 0.2, 0.1]", "model.name=mgbr-m", "train.beta=1"])
    assert c.model.embedding_dim == 16 and c.train.learning_rate == 1e-3
    assert c.model.shared_experts is False and c.data.split == [0.7, 0.2, 0.1]
    assert c.model.name == "mgbr-m" and isinstance(c.train.beta, float)


@pytest.mark.parametrize("override, words", [
    ("model.embeding_dim=8", ["model.embeding_dim", "model.embedding_dim"]),
    ("modl.name=x", ["modl", "model"]),
    ("model.embedding_dim=abc", ["model.embedding_dim", "integer"]),
    ("model.embedding_dim=1.5", ["model.embedding_dim", "integer"]),
    ("model.shared_experts=3", ["model.shared_experts", "true or false"]),
    ("train.epochs=0", ["train.epochs"]),
    ("train.evals_per_epoch=0", ["train.evals_per_epoch"]),
    ("model.init_std=0", ["model.init_std", "positive"]),
    ("model.embedding_dropout=1", ["model.embedding_dropout"]),
    ("model.bias_init=ones", ["model.bias_init", "log_count"]),
    ("model=3", ["section"]),
    ("novalue", ["key=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        cfg.load(overrides=[override])
    for w in words:
        assert w in str(err.value)


def test_bad_recipe_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[model]\nembedding_dim = 'big'\n")
    with pytest.raises(ConfigError, match="r.toml.*model.embedding_dim"):
        cfg.load(p)
    p.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        cfg.load(p)
    with pytest.raises(ConfigError, match="not found"):
        cfg.load(tmp_path / "missing.toml")
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(p)
