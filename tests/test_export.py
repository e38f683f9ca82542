"""``tfgb.export``: the TF Serving SavedModel of a trained run (signatures, scores, OOV, versions)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfgb.rundir import RunDir
from tfgb.serving import export


def saved_model_cli(*args: str) -> str:
    exe = shutil.which("saved_model_cli")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    proc = subprocess.run([*cmd, *args], check=False, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def session(tiny_run: Path):
    """The run restored in this process, as tfgb.evaluate restores it."""
    from tfgb.session import Session

    s = Session.open(tiny_run)
    assert s.restored == "best"
    return s


@pytest.fixture(scope="module")
def loaded(tiny_export: Path):
    return tf.saved_model.load(str(tiny_export))


def signature_blocks(text: str) -> dict[str, str]:
    parts = re.split(r"signature_def\['([^']+)'\]:", text.split("The MetaGraph with tag set")[0])
    return dict(zip(parts[1::2], parts[2::2]))


def test_saved_model_cli_show_lists_both_signatures(tiny_export: Path):
    blocks = signature_blocks(saved_model_cli("show", "--all", "--dir", str(tiny_export)))
    flat = {name: " ".join(block.split()) for name, block in blocks.items()}
    expected = {"serving_default": ["initiator", "candidates"], "rank_participants": ["initiator", "item", "candidates"]}
    for name, inputs in expected.items():
        text = flat[name]
        for key in inputs:
            shape = "(-1, -1)" if key == "candidates" else "(-1)"
            assert f"inputs['{key}'] tensor_info: dtype: DT_STRING shape: {shape}" in text, text
        assert "outputs['scores'] tensor_info: dtype: DT_FLOAT shape: (-1, -1)" in text, text
        assert "outputs['unknown_ids'] tensor_info: dtype: DT_INT32 shape: (-1)" in text, text
        assert "Method name is: tensorflow/serving/predict" in text
        assert len(re.findall(r"inputs\['", text)) == len(inputs)


@pytest.mark.parametrize("signature, exprs, unknown", [
    ("serving_default", 'initiator=["{u}","nobody"];candidates=[["{i}","{i}"],["{i}","no-item"]]', [0, 2]),
    ("rank_participants", 'initiator=["{u}"];item=["no-item"];candidates=[["{u}","nobody","{u}"]]', [2]),
])
def test_saved_model_cli_run(tiny_export: Path, tiny_run: Path, signature: str, exprs: str, unknown: list[int]):
    user = (tiny_run / "vocab" / "users.txt").read_text().split()[0]
    item = (tiny_run / "vocab" / "items.txt").read_text().split()[0]
    out = saved_model_cli("run", "--dir", str(tiny_export), "--tag_set", "serve", "--signature_def", signature,
                          "--input_exprs", exprs.format(u=user, i=item))
    assert "Result for output key scores" in out
    counts = out.split("Result for output key unknown_ids:")[1].strip().strip("[]").split()
    assert [int(x) for x in counts] == unknown


def test_scores_equal_in_process_model(session, loaded):
    from tfgb.evaluation import Scorer

    scorer = Scorer(session.model)
    lists = session.data.test_candidates
    users, items = session.data.user_vocab.ids, session.data.item_vocab.ids

    def as_ids(vocab, index):
        return tf.constant(vocab[index].astype(str))

    out = loaded.signatures["serving_default"](initiator=as_ids(users, lists.initiator),
                                               candidates=as_ids(items, lists.items))
    np.testing.assert_allclose(out["scores"].numpy(), scorer.items(lists.initiator, lists.items), atol=1e-5, rtol=0)
    assert out["unknown_ids"].numpy().tolist() == [0] * len(lists)

    out = loaded.signatures["rank_participants"](initiator=as_ids(users, lists.initiator),
                                                 item=as_ids(items, lists.item),
                                                 candidates=as_ids(users, lists.participants))
    expected = scorer.participants(lists.initiator, lists.item, lists.participants)
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5, rtol=0)
    assert out["unknown_ids"].numpy().tolist() == [0] * len(lists)


def test_unknown_ids_are_counted_and_scored(session, loaded):
    users, items = session.data.user_vocab.ids, session.data.item_vocab.ids
    known = [str(items[0]), str(items[1])]
    fn = loaded.signatures["serving_default"]
    clean = fn(initiator=tf.constant([str(users[0])]), candidates=tf.constant([known]))
    mixed = fn(initiator=tf.constant([str(users[0]), "no-such-user"]),
               candidates=tf.constant([known + ["no-such-item"], ["x", "y", known[0]]]))
    assert mixed["unknown_ids"].numpy().tolist() == [1, 3]
    scores = mixed["scores"].numpy()
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores[0, :2], clean["scores"].numpy()[0], atol=1e-6)  # unaffected by the unknown
    assert scores[1, 0] == scores[1, 1]  # both unknown items use the one OOV row

    out = loaded.signatures["rank_participants"](initiator=tf.constant(["?"]), item=tf.constant(["?"]),
                                                 candidates=tf.constant([["?", str(users[1])]]))
    assert out["unknown_ids"].numpy().tolist() == [3]
    assert np.isfinite(out["scores"].numpy()).all()


def test_saved_model_holds_embeddings_and_weights_not_graphs(session, tiny_export: Path):
    nnz = {int(g.values.shape[0]) for g in session.data.graphs().values()}
    variables = dict(tf.train.list_variables(str(tiny_export / "variables" / "variables")))
    sizes = {name: int(np.prod(shape)) for name, shape in variables.items() if shape}
    assert not nnz & set(sizes.values()), "a stored variable has the size of a graph's nonzeros"
    assert {name.split("/")[0] for name in sizes} == {"embeddings", "scoring_variables"}
    num_users, num_items = session.data.num_users, session.data.num_items
    # The tiny run has model.bias: its item / participant biases are tables too, with an OOV row.
    for key, rows in (("users_i", num_users), ("users_p", num_users), ("items", num_items),
                      ("item_bias", num_items), ("participant_bias", num_users)):
        assert variables[f"embeddings/{key}/.ATTRIBUTES/VARIABLE_VALUE"][0] == rows + 1  # + the OOV row

    # Every variable the model's scorers read, and nothing else (no GCN tables, no optimizer state).
    tables = ("gcn", "item_bias", "participant_bias")  # stored as embeddings (above)
    scoring = {int(np.prod(v.shape)) for v in session.model.trainable_variables
               if not any(t in v.name for t in tables)}
    stored = sum(sizes.values())
    expected = sum(v.shape.num_elements() for v in session.model.variables if "gcn" not in v.name)
    expected += sum(int(np.prod(variables[n])) for n in variables if n.startswith("embeddings/"))
    assert stored <= expected and scoring <= set(sizes.values())
    data_bytes = sum(p.stat().st_size for p in (tiny_export / "variables").glob("*.data-*"))
    assert data_bytes <= 4 * stored * 1.05 + 65536

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((tiny_export / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    for node in list(graph.node) + [n for f in graph.library.function for n in f.node_def]:
        if node.op == "Const":
            dims = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
            assert not dims or int(np.prod(dims)) not in nnz, node.name
    assert (tiny_export / "saved_model.pb").stat().st_size < 2 * 1024 * 1024


def test_versions_increment_atomically(tiny_run: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    default_base = Path(RunDir(tiny_run).load_config().export.base)
    (default_base / ".tmp-7-99999").mkdir(parents=True)  # a killed export's leftovers
    (default_base / "notes").mkdir()
    assert export.main(["--model-dir", str(tiny_run)]) == 0
    assert capsys.readouterr().out.strip() == str(default_base / "1")
    second = export.export_model(tiny_run, default_base)
    assert second == default_base / "2"
    assert sorted(p.name for p in default_base.iterdir()) == [".tmp-7-99999", "1", "2", "notes"]
    assert export.list_versions(default_base) == [1, 2]
    extra = second / "assets.extra"
    assert (extra / "config.toml").read_text() == (tiny_run / "config.toml").read_text()
    assert (extra / "vocab" / "users.txt").read_text() == (tiny_run / "vocab" / "users.txt").read_text()
    assert (extra / "vocab" / "items.txt").exists()


def test_errors_exit_2_in_one_sentence(tiny_run: Path, tmp_path: Path, capsys):
    assert export.main(["--model-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such model directory" in err and "\n" not in err
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(tiny_run / "config.toml", untrained / "config.toml")
    assert export.main(["--model-dir", str(untrained), "--export-base", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoint" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
