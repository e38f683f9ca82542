"""Tests for tfgb.data.prepare: the cached path from a recipe to split data and candidate lists."""
import copy
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from tfgb.config import Config
from tfgb.data import cache
from tfgb.data import prepare as prepare_module
from tfgb.data.candidates import Candidates
from tfgb.data.prepare import cache_key, prepare, prepare_split_sizes
from tfgb.data.synth import generate, write_beibei
from tfgb.data.vocab import Vocabulary
from tfgb.errors import ConfigError, DataError

BEIBEI = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "beibei")


def synthetic_config(cache_dir, seed=2023) -> Config:
    config = Config()
    config.data.cache_dir = str(cache_dir)
    config.data.seed = seed
    config.data.negatives = 20
    config.data.synth.users, config.data.synth.items, config.data.synth.groups = 200, 50, 800
    return config


def files_config(cache_dir, data_dir) -> Config:
    write_beibei(generate(users=200, items=50, groups=800, seed=1), data_dir)
    config = synthetic_config(cache_dir)
    config.data.source, config.data.files, config.data.failed_launches = "files", ["groups.txt"], "failed.txt"
    return config


def cache_dirs(cache_dir):
    return sorted(name for name in os.listdir(cache_dir) if not name.startswith("."))


def assert_same(a, b):
    for name in ("train", "valid", "test"):
        for field in ("initiator", "item", "offsets", "participants"):
            assert np.array_equal(getattr(getattr(a, name), field), getattr(getattr(b, name), field))
    for name in ("valid_candidates", "test_candidates"):
        assert np.array_equal(getattr(a, name).items, getattr(b, name).items)
        assert np.array_equal(getattr(a, name).participants, getattr(b, name).participants)
    assert a.user_vocab == b.user_vocab and a.item_vocab == b.item_vocab
    assert np.array_equal(a.failed_users, b.failed_users) and a.moved_to_train == b.moved_to_train


def test_second_call_loads_the_cache_without_reading(tmp_path, monkeypatch):
    config = synthetic_config(tmp_path / "cache")
    first = prepare(config)
    assert not first.from_cache and cache_dirs(tmp_path / "cache") == [os.path.basename(first.cache_path)]
    assert sorted(os.listdir(first.cache_path)) == sorted(
        ["groups.npz", "valid_candidates.npz", "test_candidates.npz", "users.txt", "items.txt", "manifest.json"])

    def fail(**_):
        raise AssertionError("the generator must not run on a cache hit")

    monkeypatch.setattr(prepare_module.synth, "generate", fail)
    second = prepare(config)
    assert second.from_cache and second.cache_path == first.cache_path
    assert_same(first, second)
    assert isinstance(second.test_candidates, Candidates) and len(second.test_candidates) == len(second.test)
    assert second.num_users == len(second.user_vocab) == second.train.num_users


def test_files_cache_hit_skips_the_reader_and_new_bytes_give_a_new_key(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    config = files_config(tmp_path / "cache", data_dir)
    first = prepare(config, str(data_dir))
    calls = []
    real_reader = prepare_module.read_groups
    monkeypatch.setattr(prepare_module, "read_groups", lambda *a: calls.append(a) or real_reader(*a))
    assert prepare(config, str(data_dir)).from_cache and not calls
    with open(data_dir / "failed.txt", "a", encoding="utf-8") as fh:
        fh.write("0\t1\n")  # any changed byte of an input is a new key
    third = prepare(config, str(data_dir))
    assert not third.from_cache and calls and third.cache_path != first.cache_path


def test_changed_seed_or_negatives_gives_a_new_cache_dir(tmp_path):
    a = prepare(synthetic_config(tmp_path))
    b = prepare(synthetic_config(tmp_path, seed=7))
    config = synthetic_config(tmp_path)
    config.data.negatives = 10
    c = prepare(config)
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3 and not b.from_cache and not c.from_cache
    assert not np.array_equal(a.valid.initiator[:50], b.valid.initiator[:50])
    assert c.test_candidates.negatives == 10
    assert len(cache_dirs(tmp_path)) == 3


def test_a_killed_write_leaves_no_trusted_cache(tmp_path, monkeypatch):
    config = synthetic_config(tmp_path)

    def killed(self, path):
        raise KeyboardInterrupt  # the process dies while writing the candidate lists

    monkeypatch.setattr(Candidates, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare(config)
    assert cache_dirs(tmp_path) == []
    monkeypatch.undo()
    # A SIGKILL leaves its temporary directory behind: it is never read.
    os.makedirs(tmp_path / ".tmp-stale-123")
    fresh = prepare(config)
    assert not fresh.from_cache and cache_dirs(tmp_path) == [os.path.basename(fresh.cache_path)]
    # A directory under the key without a complete manifest is not trusted either.
    os.remove(os.path.join(fresh.cache_path, "manifest.json"))
    again = prepare(config)
    assert not again.from_cache
    assert prepare(config).from_cache
    # Nor is a damaged one (an array file missing): it is rebuilt.
    os.remove(os.path.join(again.cache_path, "groups.npz"))
    rebuilt = prepare(config)
    assert not rebuilt.from_cache and prepare(config).from_cache
    assert_same(fresh, rebuilt)


def test_files_source_needs_a_data_dir_and_existing_files(tmp_path):
    config = files_config(tmp_path / "cache", tmp_path / "data")
    with pytest.raises(ConfigError, match="data-dir"):
        prepare(config, None)
    config.data.files = ["missing.txt"]
    with pytest.raises(DataError, match="missing.txt"):
        prepare(config, str(tmp_path / "data"))


def test_vocabularies_and_split_sizes(tmp_path):
    config = synthetic_config(tmp_path / "cache")
    data = prepare(config)
    data.save_vocabularies(tmp_path / "model" / "vocab")
    assert Vocabulary.load(tmp_path / "model" / "vocab" / "users.txt") == data.user_vocab
    assert Vocabulary.load(tmp_path / "model" / "vocab" / "items.txt") == data.item_vocab
    sizes = prepare_split_sizes(config)
    assert sizes == {"train": len(data.train), "valid": len(data.valid), "test": len(data.test),
                     "moved_to_train": sum(data.moved_to_train.values())}
    assert sizes["train"] + sizes["valid"] + sizes["test"] == 800


def test_training_helpers(tmp_path):
    config = synthetic_config(tmp_path)
    data = prepare(config)
    graphs = data.graphs()
    assert set(graphs) == {"ui", "pi", "up", "hetero"} and data.graphs() is graphs
    batch = next(iter(data.training_dataset(config.train, epoch=0)))
    assert batch["aux_items"].shape == (config.train.batch_size, config.train.aux_size)
    assert data.training_stream(config.train) is data.training_stream(config.train)


@pytest.mark.realdata
@pytest.mark.skipif(not os.path.isdir(BEIBEI), reason="the Beibei data (../shared/data/beibei) is absent")
def test_beibei(tmp_path):
    config = Config()
    config.data.source, config.data.files, config.data.failed_launches = "files", ["tune.txt", "test.txt"], "invalid.txt"
    config.data.format, config.data.cache_dir = "beibei", str(tmp_path)
    data = prepare(config, BEIBEI)
    assert len(data.train) + len(data.valid) + len(data.test) == 332826
    assert prepare(config, BEIBEI).from_cache


def test_a_concurrent_writer_keeps_the_first_complete_cache(tmp_path):
    config = synthetic_config(tmp_path)
    first = prepare(config)
    manifest = os.path.join(first.cache_path, "manifest.json")
    before = os.stat(manifest).st_mtime_ns
    key = prepare_module.cache_key(config, None)
    cache.write(first, str(tmp_path), first.cache_path, key, config)  # the slower run finishes
    assert os.stat(manifest).st_mtime_ns == before and os.listdir(tmp_path) == [os.path.basename(first.cache_path)]
    assert prepare(config).from_cache


# The cache key: the input data, the data settings that shape the prepared arrays, FORMAT_VERSION.
# Every field of the data section shapes the data except these (per source).
FEATURES = {"user_features", "user_feature_id_column",  # read beside the cache (tfgb.data.features,
            "item_categories", "item_category_id_column", "item_category_path_column",  # scenarios, relations)
            "category_separator", "category_depth", "category_branching", "user_relations", "user_relation_columns"}
NOT_SHAPING = {"files": {"cache_dir", "synth", *FEATURES},
               "synthetic": {"cache_dir", "files", "failed_launches", "format", "initiator_column", "item_column",
                             "participants_column", "participant_separator", "behavior_column", *FEATURES}}
SHAPING = {
    "files": [("source", "synthetic"), ("files", ["groups.txt", "failed.txt"]), ("failed_launches", ""),
              ("format", "beibei"), ("initiator_column", "u"), ("item_column", "i"), ("participants_column", "p"),
              ("participant_separator", ","), ("split", [0.7, 0.2, 0.1]), ("seed", 1), ("negatives", 10),
              ("behaviors", ["start", "launch", "deal"]), ("behavior_column", "kind")],
    "synthetic": [("source", "files"), ("synth.users", 201), ("synth.items", 51), ("synth.groups", 801),
                  ("synth.seed", 8), ("synth.tree", True), ("split", [0.8, 0.15, 0.05]), ("seed", 1), ("negatives", 10),
                  ("behaviors", ["start", "deal"])],
}


def with_setting(config, key, value):
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, synth=dataclasses.replace(config.data.synth)))
    section, _, field = key.rpartition(".")
    setattr(config.data.synth if section else config.data, field, value)
    return config


@pytest.mark.parametrize("source", ["files", "synthetic"])
def test_every_data_shaping_setting_changes_the_key(tmp_path, source):
    data_dir = str(tmp_path / "data")
    config = files_config(tmp_path / "cache", data_dir)
    if source == "synthetic":
        config.data.source = "synthetic"
    tested = {key.split(".")[0] for key, _ in SHAPING[source]}
    assert tested | NOT_SHAPING[source] == {f.name for f in dataclasses.fields(config.data)}  # none forgotten
    key = cache_key(config, data_dir)
    assert cache_key(copy.deepcopy(config), data_dir) == key  # same inputs, same key
    keys = {key} | {cache_key(with_setting(config, name, value), data_dir) for name, value in SHAPING[source]}
    assert len(keys) == 1 + len(SHAPING[source])
    unused = {"synth": ("synth.users", 999), "files": ("files", ["failed.txt"])}
    for field in NOT_SHAPING[source]:
        assert cache_key(with_setting(config, *unused.get(field, (field, "x"))), data_dir) == key, field
    # Integer split ratios are the same setting as their float values.
    assert (cache_key(with_setting(config, "split", [8, 1, 1]), data_dir)
            == cache_key(with_setting(config, "split", [8.0, 1.0, 1.0]), data_dir))


def test_settings_outside_the_data_section_keep_the_key(tmp_path):
    config = synthetic_config(tmp_path)
    key = cache_key(config, None)
    other = synthetic_config(tmp_path / "elsewhere")  # data.cache_dir does not shape the data either
    other.name = "another recipe"
    other.train.learning_rate, other.train.batch_size, other.train.seed = 0.5, 7, 99
    other.model.name = "lightgcn"
    assert cache_key(other, None) == key
    # Nothing outside the data section is read at all.
    assert cache_key(dataclasses.replace(config, model=None, train=None, eval=None, export=None), None) == key


def test_file_identity_is_its_content(tmp_path):
    data_dir = tmp_path / "data"
    config = files_config(tmp_path / "cache", data_dir)
    first = prepare(config, str(data_dir))
    moved = tmp_path / "copy"
    shutil.copytree(data_dir, moved)  # the same bytes in another directory: the same cache
    again = prepare(config, str(moved))
    assert again.from_cache and again.cache_path == first.cache_path
    # One byte changed in place, same size, mtime put back: a new key all the same.
    path = moved / "groups.txt"
    stat = os.stat(path)
    text = path.read_bytes()
    position = text.index(b"\t")
    path.write_bytes(text[:position - 1] + (b"9" if text[position - 1:position] != b"9" else b"8") + text[position:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    assert cache_key(config, str(moved)) != cache_key(config, str(data_dir))
    with open(os.path.join(first.cache_path, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    assert cache_key(config, inputs=manifest["key_inputs"]) == manifest["key"] == cache_key(config, str(data_dir))
    assert [name for name, *_ in manifest["key_inputs"]["files"]] == ["groups.txt", "failed.txt"]


def test_a_new_format_version_gives_a_new_key_and_ignores_old_caches(tmp_path, monkeypatch):
    config = synthetic_config(tmp_path)
    old = prepare(config)
    key = cache_key(config, None)
    monkeypatch.setattr(prepare_module, "FORMAT_VERSION", prepare_module.FORMAT_VERSION + 1)
    assert cache_key(config, None) != key
    new = prepare(config)
    assert not new.from_cache and new.cache_path != old.cache_path
    assert_same(old, new)
