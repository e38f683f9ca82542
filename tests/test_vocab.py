import dataclasses
import logging
import os

import numpy as np
import pytest

from tfgb.data.groups import RawGroups
from tfgb.data.vocab import Vocabulary, encode
from tfgb.errors import DataError


def raw_groups(rows, failed=()):
    """RawGroups from (initiator, item, [participants]) rows and (initiator, item) launches."""
    sizes = [len(r[2]) for r in rows]
    return RawGroups(
        initiator=np.array([r[0] for r in rows], dtype=object),
        item=np.array([r[1] for r in rows], dtype=object),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        participants=np.array([p for r in rows for p in r[2]], dtype=object),
        failed_initiator=np.array([f[0] for f in failed], dtype=object),
        failed_item=np.array([f[1] for f in failed], dtype=object),
    )


def decoded(groups, users, items):
    return [(users.ids[groups.initiator[g]], items.ids[groups.item[g]],
             list(users.ids[groups.participants[groups.offsets[g]:groups.offsets[g + 1]]]))
            for g in range(len(groups))]


def test_vocabulary_is_sorted_unique_and_looks_up_vectorized():
    vocab = Vocabulary(["b", "a", "10", "b", "9"])
    assert list(vocab.ids) == ["10", "9", "a", "b"] and len(vocab) == 4
    out = vocab.lookup(np.array([["a", "zz"], ["9", "b"]], dtype=object))
    assert out.dtype == np.int64 and out.tolist() == [[2, -1], [1, 3]]
    assert vocab.lookup([]).shape == (0,)


def test_integer_ids_become_strings():
    vocab = Vocabulary(np.array([30, 4, 30]))
    assert list(vocab.ids) == ["30", "4"]
    assert vocab.lookup([4, 7, 30]).tolist() == [1, -1, 0]
    assert vocab.lookup(["4"]).tolist() == [1]


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary(["00012", "x-y", "12", "ü"])
    path = tmp_path / "users.txt"
    vocab.save(path)
    assert path.read_text(encoding="utf-8") == "00012\n12\nx-y\nü\n"
    assert os.listdir(tmp_path) == ["users.txt"]  # the temp file was renamed into place
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.lookup(["12", "nope"]).tolist() == [1, -1]
    Vocabulary([]).save(tmp_path / "empty.txt")
    assert len(Vocabulary.load(tmp_path / "empty.txt")) == 0


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        Vocabulary.load(tmp_path / "missing.txt")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"dup\.txt, line 3: id 'a' is listed twice"):
        Vocabulary.load(tmp_path / "dup.txt")


def test_encode_separates_user_and_item_spaces_and_includes_failed_launches():
    raw = raw_groups([("5", "5", ["7"]), ("70", "9", ["5", "8"])], failed=[("99", "1"), ("5", "5")])
    groups, users, items, failed_u, failed_i, _ = encode(raw)
    assert list(users.ids) == ["5", "7", "70", "8", "99"] and list(items.ids) == ["1", "5", "9"]
    assert groups.num_users == 5 and groups.num_items == 3
    assert decoded(groups, users, items) == [("5", "5", ["7"]), ("70", "9", ["5", "8"])]
    # ("5", "5") is also a deal group's pair: it reached the deal, so it is no failed launch
    assert list(users.ids[failed_u]) == ["99"] and list(items.ids[failed_i]) == ["1"]
    for array in (groups.initiator, groups.item, groups.offsets, groups.participants, failed_u, failed_i):
        assert array.dtype == np.int64


def test_encode_cleans_groups_and_logs_counts(caplog):
    raw = raw_groups([
        ("1", "a", ["2", "3"]),
        ("1", "a", ["3", "2"]),       # same participant set as group 0: duplicate
        ("1", "a", ["2", "2", "3"]),  # repeated participant collapses -> duplicate too
        ("4", "b", ["4"]),            # only the initiator: group dropped (and user 4, item b with it)
        ("5", "c", ["5", "6", "6"]),  # initiator dropped, 6 collapsed
        ("1", "a", ["2"]),            # a different participant set: kept
    ], failed=[("7", "d"), ("7", "d"), ("1", "a")])
    with caplog.at_level(logging.INFO, logger="tfgb.data.vocab"):
        groups, users, items, failed_u, failed_i, _ = encode(raw)
    assert decoded(groups, users, items) == [("1", "a", ["2", "3"]), ("5", "c", ["6"]), ("1", "a", ["2"])]
    assert list(users.ids) == ["1", "2", "3", "5", "6", "7"] and list(items.ids) == ["a", "c", "d"]
    assert list(users.ids[failed_u]) == ["7"] and list(items.ids[failed_i]) == ["d"]
    text = caplog.text
    assert "dropped 2 participants equal to their initiator" in text
    assert "2 repeated participants" in text and "1 groups left without participants" in text
    assert "2 duplicate groups" in text and "3 groups kept" in text
    assert "dropped 1 duplicate failed launches" in text
    assert "dropped 1 failed launches whose (initiator, item) is a deal group's" in text


def test_encode_non_contiguous_integer_ids_and_no_failed_launches():
    raw = raw_groups([("1000000", "77", ["3"]), ("3", "2", ["1000000", "42"])])
    groups, users, items, failed_u, failed_i, _ = encode(raw)
    assert list(users.ids) == ["1000000", "3", "42"] and list(items.ids) == ["2", "77"]
    assert groups.initiator.tolist() == [0, 1] and groups.participants.tolist() == [1, 0, 2]
    assert failed_u.shape == (0,) and failed_i.shape == (0,)


def test_a_pair_listed_with_several_behaviours_keeps_its_furthest():
    raw = raw_groups([("1", "a", ["2"])], failed=[("3", "b"), ("4", "c"), ("3", "b"), ("4", "c")])
    raw = dataclasses.replace(raw, failed_behavior=np.array([0, 1, 1, 0], np.int8))
    _, users, items, failed_u, failed_i, behavior = encode(raw)
    assert list(zip(users.ids[failed_u], items.ids[failed_i], behavior.tolist())) == [("3", "b", 1), ("4", "c", 1)]
