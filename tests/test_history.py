"""``python -m dataset_prep history``: user-history features (hist_items, hist_sids, hist_sim) for labeled data."""
import json
import math
import subprocess

import numpy as np
import pytest

import dataset_prep.history as history_module
from conftest import PYTHON, cli_env
from dataset_prep.history import add_history
from recbole_sid.atomic_io import write_sids, write_vectors
from recbole_sid.data.text import read_atomic_table
from recbole_sid.exceptions import DataError

QUIET = {"log": lambda *a: None}
HEADER = "user_id:token\titem_id:token\ttimestamp:float\tlabel:float"

# (user, item, timestamp, label), in file order. Training positives by time (ties: file order):
#   u1: i2(1) i3(2) i5(2) i1(3) i4(4) i1(5)    u2: i6(10)    u3: none (only a label-0 row)    u5: i7(1)
TRAIN = [
    ("u1", "i2", 1, 1), ("u1", "n1", 1, 0),
    ("u1", "i3", 2, 1),
    ("u1", "i1", 5, 1), ("u1", "n2", 5, 0),
    ("u1", "i5", 2, 1),
    ("u1", "i4", 4, 1),
    ("u1", "i1", 3, 1),
    ("u2", "i6", 10, 1.0), ("u2", "n3", 10, 0),
    ("u3", "i2", 1, 0),
    ("u5", "i7", 1, 1), ("u5", "n5", 1, 0),
]
# valid/test items are never training items; u4 has no training row
VALID = [("u1", "v1", 6, 1), ("u1", "n4", 6, 0), ("u2", "v2", 11, 1), ("u4", "v1", 1, 1)]
TEST = [("u1", "c1", 7, 1), ("u1", "c2", 7, 0), ("u2", "v2", 12, 0), ("u4", "c1", 2, 1)]
TRAIN_ITEMS = {"i1", "i2", "i3", "i4", "i5", "i6", "i7", "n1", "n2", "n3", "n5"}
# semantic embeddings (c2 and i7 have none)
EMB = {"i1": [1, 0, 0], "i2": [0, 1, 0], "i3": [0, 0, 1], "i4": [1, 1, 0], "i5": [0, 1, 1], "i6": [1, 0, 1],
       "n1": [1, 2, 2], "n2": [2, 0, 1], "n3": [0, 0, 2], "n4": [1, 0, 0], "n5": [0, 1, 0], "v1": [3, 4, 0],
       "v2": [1, 1, 1], "c1": [0, 3, 4]}
# 2-level SIDs (i5 has none)
SIDS = {"i1": [1, 0], "i2": [2, 0], "i3": [3, 1], "i4": [4, 1], "i6": [6, 2], "i7": [7, 0], "n1": [8, 0]}

# hand-computed histories of u1 (max_len 4 and 20), by row item; "*" = an item u1 has no training positive with
U1_MAX4 = {"i1": "i2 i3 i5 i4", "i2": "i5 i1 i4 i1", "i3": "i5 i1 i4 i1", "i4": "i3 i5 i1 i1", "i5": "i3 i1 i4 i1",
           "*": "i5 i1 i4 i1"}
U1_MAX20 = {"i1": "i2 i3 i5 i4", "i2": "i3 i5 i1 i4 i1", "i3": "i2 i5 i1 i4 i1", "i4": "i2 i3 i5 i1 i1",
            "i5": "i2 i3 i1 i4 i1", "*": "i2 i3 i5 i1 i4 i1"}


def _write(path, rows, header=HEADER):
    path.write_text(header + "\n" + "".join("\t".join(str(v) for v in row) + "\n" for row in rows))


def write_fixture(root, name="h", train=TRAIN, valid=VALID, test=TEST, emb=True, cold=("c1", "c2")):
    folder = root / name
    folder.mkdir(parents=True)
    _write(folder / f"{name}.train.inter", train)
    _write(folder / f"{name}.valid.inter", valid)
    _write(folder / f"{name}.test.inter", test)
    if cold is not None:
        (folder / f"{name}.cold_items").write_text("item_id:token\n" + "".join(f"{c}\n" for c in cold))
    (folder / f"{name}.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(
        f"{i}\ttitle {i}\n" for i in sorted(EMB)))
    if emb:
        write_vectors(folder / f"{name}.itememb", list(EMB), np.array(list(EMB.values()), dtype=float))
    return root


@pytest.fixture
def root(tmp_path):
    return write_fixture(tmp_path / "in")


@pytest.fixture
def sid_file(tmp_path):
    return write_sids(tmp_path / "h.itemsid", list(SIDS), np.array(list(SIDS.values())))


def _table(path):
    return read_atomic_table(path)[0]


def _expected(user, item, max_len):
    """The hand-computed history of a row (every file: histories depend on (user, item) only)."""
    if user == "u1":
        table = U1_MAX4 if max_len == 4 else U1_MAX20
        return table.get(item, table["*"])
    if user == "u2":
        return "" if item == "i6" else "i6"
    if user == "u5":
        return "" if item == "i7" else "i7"
    return ""  # u3 (no training positive), u4 (no training row)


@pytest.mark.parametrize("max_len", [4, 20])
def test_histories_match_hand_computed(root, tmp_path, max_len):
    summary = add_history("h", root, tmp_path / "out", max_len=max_len, embedding=False, **QUIET)
    folder = tmp_path / "out" / "h"
    for split, rows in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        out = _table(folder / f"h.{split}.inter")
        assert list(out.columns) == ["user_id", "item_id", "timestamp", "label", "hist_items"]
        assert len(out) == len(rows)
        got = out["hist_items"].tolist()
        assert got == [_expected(u, i, max_len) for u, i, _, _ in rows], split
        assert all(len(h.split()) <= max_len for h in got)
    train = _table(folder / "h.train.inter")
    # a training positive never sees itself; its negative row (same user, time) is built for its own item
    assert train["hist_items"][3] == "i2 i3 i5 i4" and "i1" in train["hist_items"][4].split()
    if max_len == 20:  # u1 i2 (t=1) and its negative n1
        assert "i2" not in train["hist_items"][0].split() and "i2" in train["hist_items"][1].split()
    assert summary["columns"] == ["hist_items:token_seq"] and summary["max_len"] == max_len
    assert summary["training_positives"] == 8 and summary["users_with_history"] == 3
    assert summary["interactions"]["train"]["rows_empty_history"] == 3  # u2 i6, u3 i2, u5 i7


def test_lines_unchanged_and_side_files_copied(root, tmp_path, sid_file):
    summary = add_history("h", root, tmp_path / "out", out_name="h2", sids=sid_file, **QUIET)
    src, dst = root / "h", tmp_path / "out" / "h2"
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        f"h2.{s}" for s in ("train.inter", "valid.inter", "test.inter", "cold_items", "item", "itememb"))
    assert sorted(summary["files"]) == sorted(str(p) for p in dst.iterdir())
    for suffix in ("cold_items", "item", "itememb"):
        assert (dst / f"h2.{suffix}").read_bytes() == (src / f"h.{suffix}").read_bytes()
    for split in ("train", "valid", "test"):
        lines = (src / f"h.{split}.inter").read_text().splitlines()
        out = (dst / f"h2.{split}.inter").read_text().splitlines()
        assert out[0] == lines[0] + "\thist_items:token_seq\thist_sids:token_seq\thist_sim:float"
        assert [line.split("\t")[:4] for line in out[1:]] == [line.split("\t") for line in lines[1:]]


def test_timestamp_order_ties_and_file_order_without_timestamp(tmp_path):
    # same rows without a timestamp column: file order is the time order
    rows = [(u, i, lab) for u, i, _, lab in TRAIN]
    header = "user_id:token\titem_id:token\tlabel:float"
    folder = tmp_path / "in" / "h"
    folder.mkdir(parents=True)
    _write(folder / "h.train.inter", rows, header)
    _write(folder / "h.test.inter", [("u1", "c1", 1)], header)
    add_history("h", tmp_path / "in", tmp_path / "out", max_len=20, embedding=False, **QUIET)
    out = _table(tmp_path / "out" / "h" / "h.test.inter")
    assert out["hist_items"].tolist() == ["i2 i3 i1 i5 i4 i1"]  # file order, not U1_MAX20["*"] (time order)


def test_no_valid_or_test_item_in_any_history(root, tmp_path):
    # the unsplit NAME.inter is labeled too: it gets the training histories
    _write(root / "h" / "h.inter", TRAIN + VALID + TEST)
    summary = add_history("h", root, tmp_path / "out", max_len=20, embedding=False, **QUIET)
    assert set(summary["interactions"]) == {"inter", "train", "valid", "test"}
    held_out = {i for _, i, _, _ in VALID + TEST}
    assert not held_out & TRAIN_ITEMS  # the fixture keeps them apart
    seen = set()
    for split in ("inter", "train", "valid", "test"):
        name = "h.inter" if split == "inter" else f"h.{split}.inter"
        out = _table(tmp_path / "out" / "h" / name)
        for hist in out["hist_items"]:
            seen.update(hist.split())
    assert seen and not seen & held_out
    assert seen <= {i for _, i, _, lab in TRAIN if float(lab) > 0.5}  # label-1 training rows only (not n1, ...)
    inter = _table(tmp_path / "out" / "h" / "h.inter")
    assert inter["hist_items"].tolist() == [_expected(u, i, 20) for u, i, _, _ in TRAIN + VALID + TEST]


def test_valid_test_row_excludes_its_own_item(tmp_path):
    # a test row whose item is one of the user's training positives: excluded, as for a training row
    test = TEST + [("u1", "i4", 8, 1), ("u2", "i6", 12, 1)]
    root = write_fixture(tmp_path / "in", test=test)
    add_history("h", root, tmp_path / "out", max_len=4, embedding=False, **QUIET)
    out = _table(tmp_path / "out" / "h" / "h.test.inter")
    assert out["hist_items"].tolist()[-2:] == [U1_MAX4["i4"], ""]


def test_hist_sim_hand_computed(root, tmp_path):
    summary = add_history("h", root, tmp_path / "out", max_len=4, **QUIET)
    folder = tmp_path / "out" / "h"
    train, test = _table(folder / "h.train.inter"), _table(folder / "h.test.inter")
    sim_train, sim_test = train["hist_sim"].astype(float), test["hist_sim"].astype(float)
    # u1 i1 (t=5): history i2 i3 i5 i4 -> mean [1, 3, 2] / 4; cos([1, 0, 0], .) = 1 / sqrt(14)
    assert sim_train[3] == pytest.approx(1 / math.sqrt(14), abs=1e-6)
    # u1 c1 (test): history i5 i1 i4 i1 -> sum [3, 2, 1]; cos([0, 3, 4], .) = 10 / (5 sqrt(14))
    assert sim_test[0] == pytest.approx(2 / math.sqrt(14), abs=1e-6)
    # u2 n3: history i6 -> cos([0, 0, 2], [1, 0, 1])
    assert sim_train[9] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    # u1 n2 (t=5): history i5 i1 i4 i1 -> cos([2, 0, 1], [3, 2, 1]) = 7 / (sqrt(5) sqrt(14))
    assert sim_train[4] == pytest.approx(7 / math.sqrt(70), abs=1e-6)
    # 0.0: empty history (u2 i6, u3 i2, u5 i7, u4 rows), row item without embedding (c2), history without one (n5)
    assert train["hist_items"][8] == "" and train["hist_sim"][8] == "0.000000"
    assert train["hist_items"][10] == "" and sim_train[10] == 0.0
    assert test["hist_items"][3] == "" and sim_test[3] == 0.0
    assert test["hist_items"][1] != "" and sim_test[1] == 0.0  # c2 has no embedding
    assert train["hist_items"][12] == "i7" and sim_train[12] == 0.0  # i7, the only history item, has none
    assert summary["interactions"]["train"]["hist_sim_zero_rows"] == {
        "empty_history": 3, "item_without_embedding": 0, "history_without_embedding": 1}
    assert summary["interactions"]["test"]["hist_sim_zero_rows"] == {
        "empty_history": 1, "item_without_embedding": 1, "history_without_embedding": 0}
    assert summary["embedding"]["history_items_without_embedding"] == 1  # i7
    assert (sim_train.abs() <= 1).all() and (train["hist_sim"].str.match(r"^-?\d\.\d{6}$")).all()


def test_hist_sids(root, tmp_path, sid_file):
    summary = add_history("h", root, tmp_path / "out", max_len=4, sids=sid_file, embedding=False, **QUIET)
    folder = tmp_path / "out" / "h"
    train, test = _table(folder / "h.train.inter"), _table(folder / "h.test.inter")
    assert list(train.columns)[-2:] == ["hist_items", "hist_sids"]
    # u1 i1: history i2 i3 i5 i4; i5 has no SID and is skipped
    assert train["hist_sids"][3] == "a_2 b_0 a_3 b_1 a_4 b_1"
    # u1 c1 (test): history i5 i1 i4 i1
    assert test["hist_sids"][0] == "a_1 b_0 a_4 b_1 a_1 b_0"
    assert train["hist_sids"][9] == "a_6 b_2" and train["hist_sids"][8] == ""
    assert summary["sids"]["levels"] == 2 and summary["sids"]["history_items_without_sid"] == 1
    # rows whose history holds i5: every u1 row but those of i5 itself
    n_u1 = sum(u == "u1" for u, *_ in TRAIN + VALID + TEST)
    assert summary["sids"]["rows_with_skipped_items"] == n_u1 - 1


def _refused(call, match, out):
    with pytest.raises(DataError, match=match):
        call()
    assert not out.exists(), "something was written"


def test_missing_training_file(root, tmp_path):
    (root / "h" / "h.train.inter").unlink()
    _refused(lambda: add_history("h", root, tmp_path / "out", **QUIET), r"h\.train\.inter: training file not found",
             tmp_path / "out")


@pytest.mark.parametrize("field", ["label", "user_id", "item_id"])
def test_missing_field(root, tmp_path, field):
    path = root / "h" / "h.valid.inter"
    path.write_text(path.read_text().replace(f"{field}:", "other:", 1))
    _refused(lambda: add_history("h", root, tmp_path / "out", **QUIET), rf"h\.valid\.inter: no '{field}' column",
             tmp_path / "out")


@pytest.mark.parametrize("field", ["hist_items", "hist_sids", "hist_sim"])
def test_existing_history_column(root, tmp_path, field):
    path = root / "h" / "h.test.inter"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + f"\t{field}:float"] + [line + "\t0" for line in lines[1:]]) + "\n")
    _refused(lambda: add_history("h", root, tmp_path / "out", **QUIET), rf"h\.test\.inter: already has a '{field}'",
             tmp_path / "out")


@pytest.mark.parametrize("max_len", [0, -1, True, 2.5])
def test_bad_max_len(root, tmp_path, max_len):
    _refused(lambda: add_history("h", root, tmp_path / "out", max_len=max_len, **QUIET), "--max-len",
             tmp_path / "out")


def test_unreadable_sids(root, tmp_path):
    _refused(lambda: add_history("h", root, tmp_path / "out", sids=tmp_path / "nope.itemsid", **QUIET),
             r"nope\.itemsid: SID file \(--sids\) not found", tmp_path / "out")
    bad = tmp_path / "bad.itemsid"
    bad.write_text("item_id:token\tsid:token_seq\ni1\tx_1 y_2\n")
    _refused(lambda: add_history("h", root, tmp_path / "out", sids=bad, **QUIET), r"bad\.itemsid", tmp_path / "out")
    binary = tmp_path / "binary.itemsid"
    binary.write_bytes(b"item_id:token\tsid:token_seq\n\xff\xfe\x00\n")
    _refused(lambda: add_history("h", root, tmp_path / "out", sids=binary, **QUIET), r"binary\.itemsid",
             tmp_path / "out")


def test_missing_embeddings(tmp_path):
    root = write_fixture(tmp_path / "in", emb=False)
    _refused(lambda: add_history("h", root, tmp_path / "out", **QUIET),
             r"h\.itememb: item embedding file not found.*--no-embedding.*dataset_prep embed", tmp_path / "out")
    summary = add_history("h", root, tmp_path / "out", embedding=False, **QUIET)
    assert summary["columns"] == ["hist_items:token_seq"] and "embedding" not in summary
    assert summary["numerical_features_hint"] == []
    assert "hist_sim" not in _table(tmp_path / "out" / "h" / "h.train.inter").columns


def test_bad_training_values_and_cold_item_in_training(tmp_path):
    root = write_fixture(tmp_path / "a", train=TRAIN + [("u2", "i1", 11, "yes")])
    _refused(lambda: add_history("h", root, tmp_path / "out", **QUIET), r"h\.train\.inter: 'label' must be a number",
             tmp_path / "out")
    root = write_fixture(tmp_path / "b", cold=("c1", "i3"))
    _refused(lambda: add_history("h", root, tmp_path / "out", **QUIET),
             r"h\.cold_items: 1 listed cold items have label-1 rows", tmp_path / "out")


def test_overwrite_refused_then_allowed(root, tmp_path):
    add_history("h", root, tmp_path / "out", max_len=4, **QUIET)
    folder = tmp_path / "out" / "h"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        add_history("h", root, tmp_path / "out", max_len=20, **QUIET)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    add_history("h", root, tmp_path / "out", max_len=20, overwrite=True, **QUIET)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after.keys() == before.keys() and after["h.train.inter"] != before["h.train.inter"]
    # deterministic: the same call writes the same bytes
    add_history("h", root, tmp_path / "out", max_len=20, overwrite=True, **QUIET)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == after


def test_nothing_written_when_a_write_fails(root, tmp_path, monkeypatch):
    real, calls = history_module._write_with_columns, []

    def failing(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, *args)

    monkeypatch.setattr(history_module, "_write_with_columns", failing)
    with pytest.raises(OSError, match="disk full"):
        add_history("h", root, tmp_path / "out", **QUIET)
    assert len(calls) == 2
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no output, no temporary file


def test_cli(root, tmp_path, sid_file):
    cmd = [PYTHON, "-m", "dataset_prep", "history", "--dataset", "h", "--data-path", str(root), "--out",
           str(tmp_path / "out"), "--max-len", "4", "--sids", str(sid_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["columns"] == ["hist_items:token_seq", "hist_sids:token_seq", "hist_sim:float"]
    assert _table(tmp_path / "out" / "h" / "h.train.inter")["hist_items"][3] == U1_MAX4["i1"]
    done = subprocess.run(cmd[:-4] + ["--max-len", "0"], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "--max-len" in done.stderr


def test_recbole_reads_the_columns(root, tmp_path, in_tmp):
    import recbole_sid
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.utils import FeatureType

    assert recbole_sid  # imported first: it installs the compatibility layer

    summary = add_history("h", root, tmp_path / "out", max_len=4, **QUIET)
    assert summary["numerical_features_hint"] == ["hist_sim"]
    config = Config(model="DeepFM", dataset="h", config_dict={
        "data_path": str(tmp_path / "out"), "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id", "timestamp", "label", "hist_items", "hist_sim"]},
        "numerical_features": ["hist_sim"], "eval_args": {"mode": "labeled", "order": "TO", "split": {"RS": [
            0.8, 0.1, 0.1]}}, "show_progress": False})
    dataset = create_dataset(config)
    assert dataset.field2type["hist_items"] == FeatureType.TOKEN_SEQ and dataset.field2seqlen["hist_items"] == 4
    assert dataset.field2type["hist_sim"] == FeatureType.FLOAT
    inter = dataset.inter_feat
    tokens = dataset.field2id_token["hist_items"]
    first = [tokens[t] for t in inter["hist_items"][3].tolist() if t]  # u1 i1 (t=5), padding 0 dropped
    assert first == U1_MAX4["i1"].split()
    assert len(inter["hist_items"][8]) == 0  # u2 i6: empty history
    assert float(inter["hist_sim"][3][0]) == pytest.approx(1 / math.sqrt(14), abs=1e-6)
