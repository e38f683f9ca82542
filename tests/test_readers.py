from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfgb.config import DataConfig
from tfgb.data.readers import file_format, read_groups
from tfgb.errors import ConfigError, DataError

BEIBEI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beibei"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def files(*names: str, failed: str = "", **kwargs) -> DataConfig:
    return DataConfig(source="files", files=list(names), failed_launches=failed, **kwargs)


def groups_of(raw) -> list[tuple]:
    """Groups as (initiator, item, [participants]) tuples, for readable assertions."""
    return [(raw.initiator[g], raw.item[g], list(raw.participants[raw.offsets[g]:raw.offsets[g + 1]]))
            for g in range(len(raw))]


def test_beibei_ragged_rows_keep_ids_as_strings(tmp_path):
    write(tmp_path / "g.txt", "00012\t5\t7\n3\t5\t8\t9\t10\n\n12\t0700\t3\r\n")
    raw = read_groups(files("g.txt"), str(tmp_path))
    assert groups_of(raw) == [("00012", "5", ["7"]), ("3", "5", ["8", "9", "10"]), ("12", "0700", ["3"])]
    assert raw.initiator.dtype == object and all(type(x) is str for x in raw.participants)
    assert raw.offsets.dtype == np.int64 and len(raw.failed_initiator) == 0


def test_files_concatenate_in_order_with_failed_launches_and_absolute_paths(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "a.txt", "1\t2\t3\n")
    write(tmp_path / "elsewhere" / "b.txt", "4\t5\t6\t7")  # no final newline
    write(tmp_path / "f.txt", "u9\ti9\n1\t2\n")
    raw = read_groups(files("a.txt", str(tmp_path / "elsewhere" / "b.txt"), failed="f.txt"), str(tmp_path))
    assert groups_of(raw) == [("1", "2", ["3"]), ("4", "5", ["6", "7"])]
    assert list(raw.failed_initiator) == ["u9", "1"] and list(raw.failed_item) == ["i9", "2"]


def test_non_integer_and_non_contiguous_ids(tmp_path):
    write(tmp_path / "g.txt", "alice\tbook-1\tbob\tcarol\n900000000000\t42\tx_1\n")
    raw = read_groups(files("g.txt"), str(tmp_path))
    assert groups_of(raw) == [("alice", "book-1", ["bob", "carol"]), ("900000000000", "42", ["x_1"])]


def test_csv_with_delimited_participants_and_named_columns(tmp_path):
    write(tmp_path / "g.csv", "who,what,others,extra\n007,10,1;2;3,x\n8,11,4,y\n")
    data = files("g.csv", initiator_column="who", item_column="what", participants_column="others")
    raw = read_groups(data, str(tmp_path))
    assert groups_of(raw) == [("007", "10", ["1", "2", "3"]), ("8", "11", ["4"])]


def test_csv_with_python_list_participants(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"initiator": ["u1", "u2"], "item": ["i1", "i2"], "participants": [["p1", "p2"], ["p3"]]})
    frame.to_csv(tmp_path / "g.csv", index=False)  # writes "['p1', 'p2']"
    write(tmp_path / "h.csv", 'initiator,item,participants\n1,2,"[3, 4]"\n5,6,[]\n')
    assert groups_of(read_groups(files("g.csv"), str(tmp_path))) == [("u1", "i1", ["p1", "p2"]),
                                                                      ("u2", "i2", ["p3"])]
    with pytest.raises(DataError, match=r"h\.csv, line 3: participant list is empty"):
        read_groups(files("h.csv"), str(tmp_path))


def test_tsv_and_csv_failed_launches(tmp_path):
    write(tmp_path / "g.tsv", "initiator\titem\tparticipants\n1\t2\t3|4\n")
    write(tmp_path / "f.csv", "item,initiator\n20,10\n")
    raw = read_groups(files("g.tsv", failed="f.csv", participant_separator="|"), str(tmp_path))
    assert groups_of(raw) == [("1", "2", ["3", "4"])]
    assert list(raw.failed_initiator) == ["10"] and list(raw.failed_item) == ["20"]


def test_parquet_with_list_column_and_integer_ids(tmp_path):
    table = pa.table({"initiator": pa.array([1, 20], pa.int64()), "item": ["a", "b"],
                      "participants": pa.array([[3, 4], [5]], pa.list_(pa.int64()))})
    pq.write_table(table, tmp_path / "g.parquet")
    pq.write_table(pa.table({"initiator": ["1"], "item": ["c"]}), tmp_path / "f.pq")
    raw = read_groups(files("g.parquet", failed="f.pq"), str(tmp_path))
    assert groups_of(raw) == [("1", "a", ["3", "4"]), ("20", "b", ["5"])]
    assert list(raw.failed_item) == ["c"]


def test_parquet_with_delimited_string_participants(tmp_path):
    pq.write_table(pa.table({"initiator": ["u1"], "item": ["i1"], "participants": ["p1;p2"]}), tmp_path / "g.pq")
    assert groups_of(read_groups(files("g.pq"), str(tmp_path))) == [("u1", "i1", ["p1", "p2"])]


def test_format_is_chosen_by_extension_unless_given(tmp_path):
    assert [file_format(f"x{e}") for e in (".txt", ".CSV", ".tsv", ".parquet", ".pq")] == \
        ["beibei", "csv", "tsv", "parquet", "parquet"]
    assert file_format("x.dat", "beibei") == "beibei"
    write(tmp_path / "g.dat", "1\t2\t3\n")
    assert len(read_groups(files("g.dat", format="beibei"), str(tmp_path))) == 1


@pytest.mark.parametrize("name, text, words", [
    ("g.txt", "1\t2\t3\n4\t5\n", ["g.txt, line 2", "expected initiator, item and at least one participant",
                                 "found 2 fields"]),
    ("g.txt", "1\t2\t3\n\n4\n", ["g.txt, line 3", "found 1 field"]),
    ("g.txt", "1\t2\t3\n4\t\t6\n", ["line 2", "item id '' is not an id"]),
    ("g.txt", "1\t2\t3\n4\t5\t6.5\n", ["line 2", "participant id '6.5' is not an id"]),
    ("g.txt", "1\t2\t3 4\n", ["line 1", "participant id '3 4'", "whitespace"]),
    ("g.txt", "1\t2\t3\r\n4\t5\r6\n", ["line 2", "item id '5\\r6'", "whitespace"]),
    ("g.csv", "initiator,item,participants\n1,2,3\n4,5,\n", ["g.csv, line 3", "participant list is empty"]),
    ("g.csv", "initiator,item,participants\n1,2,3\n,5,6\n", ["line 3", "initiator id '' is not an id"]),
    ("g.csv", "initiator,item,participants\n1,NaN,3\n", ["line 2", "item id 'NaN' is not an id"]),
    ("g.csv", "initiator,item,participants\n1,2,3;;4\n", ["line 2", "participant id '' is not an id"]),
    ("g.csv", "initiator,item,participants\n12.0,2,3\n", ["line 2", "initiator id '12.0' is not an id"]),
    ("g.csv", "initiator,goods,participants\n1,2,3\n", ["g.csv", "missing column 'item'",
                                                        "initiator, goods, participants"]),
    ("g.csv", "initiator,item,participants\n", ["g.csv", "no rows"]),
    ("g.txt", "", ["g.txt", "file is empty"]),
    ("g.txt", "\n\n", ["g.txt", "file is empty"]),
    ("g.xlsx", "1,2,3", ["g.xlsx", "unknown file type '.xlsx'"]),
])
def test_bad_input_gets_one_clear_error(tmp_path, name, text, words, recipe=files):
    write(tmp_path / name, text)
    with pytest.raises(DataError) as info:
        read_groups(recipe(name), str(tmp_path))
    message = str(info.value)
    assert all(w in message for w in words), message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        read_groups(files("nope.txt"), str(tmp_path))


def test_failed_launch_rows_have_exactly_two_fields(tmp_path):
    write(tmp_path / "g.txt", "1\t2\t3\n")
    write(tmp_path / "f.txt", "1\t2\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"f\.txt, line 2: expected initiator and item .* found 3 fields"):
        read_groups(files("g.txt", failed="f.txt"), str(tmp_path))


def test_pandas_float_ids_from_int_columns_with_nan_are_rejected(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"initiator": [1, None], "item": [2, 3], "participants": ["4", "5"]})
    frame.to_csv(tmp_path / "g.csv", index=False)  # writes 1.0 and an empty cell
    with pytest.raises(DataError, match=r"line 2: initiator id '1.0' is not an id"):
        read_groups(files("g.csv"), str(tmp_path))
    frame.to_parquet(tmp_path / "g.parquet")  # a float64 column with NaN
    with pytest.raises(DataError, match=r"g\.parquet, row 2: initiator id is missing"):
        read_groups(files("g.parquet"), str(tmp_path))
    frame.dropna().to_parquet(tmp_path / "ok.parquet")  # integer-valued floats are ids
    assert list(read_groups(files("ok.parquet"), str(tmp_path)).initiator) == ["1"]
    pd.DataFrame({"initiator": [1.5], "item": [2], "participants": ["4"]}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(DataError, match=r"f\.parquet, row 1: initiator id '1.5' is not an id"):
        read_groups(files("f.parquet"), str(tmp_path))


def test_parquet_empty_participant_list_names_the_row(tmp_path):
    table = pa.table({"initiator": ["1", "2"], "item": ["3", "4"],
                      "participants": pa.array([["5"], []], pa.list_(pa.string()))})
    pq.write_table(table, tmp_path / "g.parquet")
    with pytest.raises(DataError, match=r"g\.parquet, row 2: participant list is empty"):
        read_groups(files("g.parquet"), str(tmp_path))


def test_no_files_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.files"):
        read_groups(files(), str(tmp_path))


@pytest.mark.realdata
@pytest.mark.skipif(not BEIBEI.is_dir(), reason=f"real Beibei data not found at {BEIBEI}")
def test_reads_beibei_tune_and_test():
    raw = read_groups(files("tune.txt", "test.txt", failed="invalid.txt", format="beibei"), str(BEIBEI))
    assert len(raw) == 332_826 and len(raw.failed_initiator) == 211_291
    assert int(np.diff(raw.offsets).min()) == 1


def behavior_files(*names: str, failed: str = "", **kwargs) -> DataConfig:
    return files(*names, failed=failed, behavior_column="behavior", behaviors=["view", "launch", "deal"], **kwargs)


def launches_of(raw) -> list[tuple]:
    return list(zip(raw.failed_initiator, raw.failed_item, raw.failed_behavior.tolist(), strict=True))


def test_csv_behavior_column_splits_deals_from_interactions_that_stopped(tmp_path):
    write(tmp_path / "g.csv", "initiator,item,participants,behavior\n1,10,2;3,deal\n1,11,,view\n4,10,5,launch\n"
                              "\n6,12,7,deal\n")
    write(tmp_path / "f.csv", "initiator,item\n8,13\n")
    raw = read_groups(behavior_files("g.csv", failed="f.csv"), str(tmp_path))
    assert groups_of(raw) == [("1", "10", ["2", "3"]), ("6", "12", ["7"])]
    # File rows first (their behaviour's index; participants of a non-deal row are ignored), then data.failed_launches.
    assert launches_of(raw) == [("1", "11", 0), ("4", "10", 1), ("8", "13", 0)]
    assert raw.failed_behavior.dtype == np.int8


def test_parquet_behavior_column_with_null_participants_outside_deals(tmp_path):
    table = pa.table({"initiator": pa.array([1, 2, 3, 4], pa.int64()), "item": ["a", "b", "c", "d"],
                      "participants": pa.array([[5, 6], None, [], [7]], pa.list_(pa.int64())),
                      "behavior": pa.array(["deal", "launch", "view", "deal"]).dictionary_encode()})
    pq.write_table(table, tmp_path / "g.parquet")
    raw = read_groups(behavior_files("g.parquet"), str(tmp_path))
    assert groups_of(raw) == [("1", "a", ["5", "6"]), ("4", "d", ["7"])]
    assert launches_of(raw) == [("2", "b", 1), ("3", "c", 0)]


def test_a_file_without_deal_rows_needs_no_participants_column(tmp_path):
    write(tmp_path / "g.csv", "initiator,item,participants,behavior\n1,10,2,deal\n")
    write(tmp_path / "views.tsv", "initiator\titem\tbehavior\n1\t11\tview\n")
    raw = read_groups(behavior_files("g.csv", "views.tsv"), str(tmp_path))
    assert groups_of(raw) == [("1", "10", ["2"])] and launches_of(raw) == [("1", "11", 0)]
    write(tmp_path / "h.csv", "initiator,item,behavior\n1,11,view\n1,10,deal\n")
    with pytest.raises(DataError, match=r"h\.csv: missing column 'participants', needed by the deal rows .* line 3"):
        read_groups(behavior_files("h.csv"), str(tmp_path))


@pytest.mark.parametrize("name, text, words", [
    ("g.csv", "initiator,item,participants,behavior\n1,10,2,deal\n1,11,,click\n",
     ["g.csv, line 3", "behaviour 'click'", "column 'behavior'", "view, launch, deal"]),
    ("g.csv", "initiator,item,participants,behavior\n1,10,2,Deal\n", ["line 2", "behaviour 'Deal'"]),
    ("g.csv", "initiator,item,participants\n1,10,2\n", ["g.csv", "missing column 'behavior'",
                                                        "set data.behavior_column"]),
    ("g.csv", "initiator,item,participants,behavior\n1,10,,deal\n", ["line 2", "participant list is empty"]),
    ("g.csv", "initiator,item,participants,behavior\n1,,,view\n", ["line 2", "item id '' is not an id"]),
])
def test_bad_behavior_rows_get_one_clear_error(tmp_path, name, text, words):
    test_bad_input_gets_one_clear_error(tmp_path, name, text, words, recipe=behavior_files)


def test_parquet_missing_behavior_names_the_row(tmp_path):
    pq.write_table(pa.table({"initiator": ["1", "2"], "item": ["3", "4"], "participants": ["5", "6"],
                             "behavior": ["deal", None]}), tmp_path / "g.parquet")
    with pytest.raises(DataError, match=r"g\.parquet, row 2: behaviour \(missing\) .* \(view, launch, deal\)"):
        read_groups(behavior_files("g.parquet"), str(tmp_path))
    pq.write_table(pa.table({"initiator": ["1"], "item": ["3"], "participants": ["5"], "behavior": [2]}),
                   tmp_path / "codes.parquet")
    with pytest.raises(DataError, match=r"codes\.parquet: the behaviour column 'behavior' holds int64 values"):
        read_groups(behavior_files("codes.parquet"), str(tmp_path))


def test_behavior_column_with_the_beibei_format_is_a_config_error(tmp_path):
    write(tmp_path / "g.txt", "1\t2\t3\n")
    with pytest.raises(ConfigError, match=r"data\.behavior_column.*beibei.*data\.failed_launches"):
        read_groups(behavior_files("g.txt"), str(tmp_path))
    write(tmp_path / "g.csv", "initiator,item,participants,behavior\n1,2,3,deal\n")
    with pytest.raises(ConfigError, match="data.behavior_column"):
        read_groups(behavior_files("g.csv", format="beibei"), str(tmp_path))


def test_without_behavior_column_a_behavior_column_is_just_another_column(tmp_path):
    write(tmp_path / "g.csv", "initiator,item,participants,behavior\n1,10,2,view\n")
    write(tmp_path / "f.csv", "initiator,item\n8,13\n")
    raw = read_groups(files("g.csv", failed="f.csv"), str(tmp_path))
    assert groups_of(raw) == [("1", "10", ["2"])] and launches_of(raw) == [("8", "13", 0)]
