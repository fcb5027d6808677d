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
#   u1: i2(1) i3(2) i5(2) i1(3) i4(4) i1(5)    u2: i6(10) i1(12)    u3: none (only a label-0 row)    u5: i7(1) i3(2)
# Each sampled negative follows its positive (same user, same time); u1 n3 at 4.5 is a real label-0 row (a low
# rating) without a positive at its time.
TRAIN = [
    ("u1", "i2", 1, 1), ("u1", "n1", 1, 0),
    ("u1", "i3", 2, 1),
    ("u1", "i1", 5, 1), ("u1", "n2", 5, 0),
    ("u1", "i5", 2, 1), ("u1", "n1", 2, 0),
    ("u1", "i4", 4, 1),
    ("u1", "i1", 3, 1),
    ("u1", "n3", 4.5, 0),
    ("u2", "i6", 10, 1.0), ("u2", "n1", 10, 0),
    ("u2", "i1", 12, 1), ("u2", "n3", 12, 0),
    ("u3", "i2", 1, 0),
    ("u5", "i7", 1, 1),
    ("u5", "i3", 2, 1), ("u5", "n5", 2, 0),
]
# valid/test items are never training items; u4 has no training row
VALID = [("u1", "v1", 6, 1), ("u1", "n4", 6, 0), ("u2", "v2", 13, 1), ("u4", "v1", 1, 1)]
TEST = [("u1", "c1", 7, 1), ("u1", "c2", 7, 0), ("u2", "v2", 14, 0), ("u4", "c1", 2, 1)]
TRAIN_ITEMS = {"i1", "i2", "i3", "i4", "i5", "i6", "i7", "n1", "n2", "n3", "n5"}
# semantic embeddings (c2 and i7 have none)
EMB = {"i1": [1, 0, 0], "i2": [0, 1, 0], "i3": [0, 0, 1], "i4": [1, 1, 0], "i5": [0, 1, 1], "i6": [1, 0, 1],
       "n1": [1, 2, 2], "n2": [2, 0, 1], "n3": [0, 0, 2], "n4": [1, 0, 0], "n5": [0, 1, 0], "v1": [3, 4, 0],
       "v2": [1, 1, 1], "c1": [0, 3, 4]}
# 2-level SIDs (i5 has none)
SIDS = {"i1": [1, 0], "i2": [2, 0], "i3": [3, 1], "i4": [4, 1], "i6": [6, 2], "i7": [7, 0], "n1": [8, 0]}

# hand-computed causal histories of the TRAIN rows, in file order (the user's positives strictly before the row's
# time, own item removed, the last max_len), for max_len 20 and 4
TRAIN_HIST20 = [
    "", "",  # u1 i2 and its negative at t=1: nothing before
    "i2",  # u1 i3 (t=2): i5, also at t=2, is not seen
    "i2 i3 i5 i4", "i2 i3 i5 i1 i4",  # u1 i1 (t=5, a repeat: i1 at t=3 removed) and its negative n2
    "i2", "i2",  # u1 i5 (t=2): i3 (same time) not seen; its negative n1 the same
    "i2 i3 i5 i1",  # u1 i4 (t=4)
    "i2 i3 i5",  # u1 i1 (t=3)
    "i2 i3 i5 i1 i4",  # u1 n3 (t=4.5, a label-0 row of its own)
    "", "",  # u2 i6 (t=10), its negative
    "i6", "i6",  # u2 i1 (t=12), its negative
    "",  # u3: no positive at all
    "", "i7", "i7",  # u5 i7 (t=1), i3 (t=2), its negative
]
TRAIN_HIST4 = [h if len(h.split()) <= 4 else " ".join(h.split()[-4:]) for h in TRAIN_HIST20]
# rows of every other file: all of u1's training positives i2 i3 i5 i1 i4 i1 (u2: i6 i1), own item removed
U1_ALL = "i2 i3 i5 i1 i4 i1"
# the TRAIN rows without their timestamp column: time is file order, a label-0 row sits at its anchor (the last
# label-1 row before it). u1's positives by ordinal: i2(1) i3(2) i1(3) i5(4) i4(5) i1(6)
TRAIN_HIST20_FILE_ORDER = [
    "", "", "i2", "i2 i3", "i2 i3", "i2 i3 i1", "i2 i3 i1", "i2 i3 i1 i5",
    "i2 i3 i5 i4",  # u1 i1, ordinal 6: its earlier i1 (ordinal 3) removed
    "i2 i3 i1 i5 i4",  # u1 n3: anchor u1 i1 (ordinal 6)
    "", "", "i6", "i6", "", "", "i7", "i7",
]


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


def _last(history, max_len):
    return " ".join(history.split()[-max_len:])


def _expected_all(user, item, max_len):
    """The hand-computed history of a row of any file but training: all of the user's training positives."""
    every = {"u1": U1_ALL, "u2": "i6 i1", "u5": "i7 i3"}.get(user, "")
    return _last(" ".join(i for i in every.split() if i != item), max_len)


def _expected_train(max_len):
    return TRAIN_HIST4 if max_len == 4 else TRAIN_HIST20


@pytest.mark.parametrize("max_len", [4, 20])
def test_histories_match_hand_computed(root, tmp_path, max_len):
    summary = add_history("h", root, tmp_path / "out", max_len=max_len, embedding=False, **QUIET)
    folder = tmp_path / "out" / "h"
    train = _table(folder / "h.train.inter")
    assert list(train.columns) == ["user_id", "item_id", "timestamp", "label", "hist_items"]
    assert train["hist_items"].tolist() == _expected_train(max_len)
    for split, rows in (("valid", VALID), ("test", TEST)):
        out = _table(folder / f"h.{split}.inter")
        assert list(out.columns) == ["user_id", "item_id", "timestamp", "label", "hist_items"]
        got = out["hist_items"].tolist()
        assert got == [_expected_all(u, i, max_len) for u, i, _, _ in rows], split
    assert summary["columns"] == ["hist_items:token_seq"] and summary["max_len"] == max_len
    assert summary["training_positives"] == 10 and summary["users_with_history"] == 3
    assert summary["training_time"] == "timestamp" and "strictly before its timestamp" in summary["history_source"]
    assert summary["interactions"]["train"]["rows_empty_history"] == 6  # u1 at t=1 (2), u2 at t=10 (2), u3, u5 i7
    assert summary["interactions"]["test"]["rows_empty_history"] == 1  # u4


def test_causal_rule_by_hand(root, tmp_path):
    # the cases of the rule, one by one (max_len 20): the histories of TRAIN_HIST20, by row
    add_history("h", root, tmp_path / "out", max_len=20, embedding=False, **QUIET)
    hist = _table(tmp_path / "out" / "h" / "h.train.inter")["hist_items"].tolist()
    assert hist[0] == "" and hist[1] == ""  # the user's first positive and its negative see nothing
    assert hist[2] == "i2" and hist[5] == "i2"  # a tie: u1 i3 and u1 i5, both at t=2, do not see each other
    assert hist[5] == hist[6]  # u1 i5 and its negative row n1 (same time): identical
    assert hist[8] == "i2 i3 i5" and hist[3] == "i2 i3 i5 i4"  # a repeat: u1 i1 at t=5 loses its click at t=3 ...
    assert hist[4] == "i2 i3 i5 i1 i4"  # ... which its negative row n2 (t=5) does see
    assert hist[9] == "i2 i3 i5 i1 i4"  # a label-0 row at t=4.5 sees the positives before it (not i1 at t=5)
    valid = _table(tmp_path / "out" / "h" / "h.valid.inter")["hist_items"].tolist()
    assert valid[0] == U1_ALL  # after training: everything, i1 at t=5 included


@pytest.mark.parametrize("max_len", [4, 20])
@pytest.mark.parametrize("timed", [True, False])
def test_positive_and_its_negatives_share_a_history(tmp_path, timed, max_len):
    # the property that removes the training-time tell: for every training positive, the label-0 rows right after
    # it (same user, same timestamp: its sampled negatives) get the same history. A repeat positive (the user
    # clicked the item earlier) differs only by its own item, removed from its own history.
    header = HEADER if timed else "user_id:token\titem_id:token\tlabel:float"
    rows = TRAIN if timed else [(u, i, lab) for u, i, _, lab in TRAIN]
    folder = tmp_path / "in" / "h"
    folder.mkdir(parents=True)
    _write(folder / "h.train.inter", rows, header)
    add_history("h", tmp_path / "in", tmp_path / "out", max_len=max_len, embedding=False, **QUIET)
    hist = _table(tmp_path / "out" / "h" / "h.train.inter")["hist_items"].tolist()
    pairs = repeats = 0
    for k, (user, item, time, label) in enumerate(TRAIN):
        if float(label) < 0.5:
            continue
        earlier = TRAIN[:k] if not timed else [r for r in TRAIN if r[2] < time]
        repeat = any(u == user and i == item and float(lab) > 0.5 for u, i, _, lab in earlier)
        j = k + 1  # its negatives: the label-0 rows right after it, same user (and same time)
        while (j < len(TRAIN) and TRAIN[j][0] == user and float(TRAIN[j][3]) < 0.5
               and (TRAIN[j][2] == time or not timed)):
            if not repeat:
                assert hist[j] == hist[k], (TRAIN[k], TRAIN[j])
                pairs += 1
            elif max_len == 20:
                assert " ".join(i for i in hist[j].split() if i != item) == hist[k], (TRAIN[k], TRAIN[j])
                repeats += 1
            j += 1
    # timed: u1 i1 at t=5 (+ n2) is the repeat; in file order u1 i1 (+ n3, its negative there) is
    assert pairs == (5 if timed else 6) and repeats == (1 if max_len == 20 else 0)


def test_file_order_without_timestamp(tmp_path):
    # same rows without a timestamp column: file order is the time, a label-0 row sits at its anchor
    rows = [(u, i, lab) for u, i, _, lab in TRAIN]
    header = "user_id:token\titem_id:token\tlabel:float"
    folder = tmp_path / "in" / "h"
    folder.mkdir(parents=True)
    _write(folder / "h.train.inter", rows, header)
    _write(folder / "h.test.inter", [("u1", "c1", 1), ("u1", "i1", 0)], header)
    summary = add_history("h", tmp_path / "in", tmp_path / "out", max_len=20, embedding=False, **QUIET)
    out = _table(tmp_path / "out" / "h" / "h.train.inter")
    assert out["hist_items"].tolist() == TRAIN_HIST20_FILE_ORDER
    test = _table(tmp_path / "out" / "h" / "h.test.inter")
    assert test["hist_items"].tolist() == ["i2 i3 i1 i5 i4 i1", "i2 i3 i5 i4"]  # file order, not time order
    assert summary["training_time"].startswith("file order") and "anchor" in summary["history_source"]


def test_anchor_rule_without_timestamp(tmp_path):
    # t of a row = the number of label-1 rows at or before it (any user's); it sees its user's positives with a
    # smaller ordinal
    header = "user_id:token\titem_id:token\tlabel:float"
    rows = [
        ("u1", "n0", 0),  # t=0: before any positive
        ("u1", "i2", 1),  # ordinal 1
        ("u1", "n1", 0),  # anchor: u1 i2 (t=1)
        ("u2", "i6", 1),  # ordinal 2
        ("u1", "n2", 0),  # anchor: u2 i6 (t=2), another user's positive: u1 i2 (ordinal 1) is before it
        ("u1", "i3", 1),  # ordinal 3
        ("u1", "n3", 0),  # anchor: u1 i3 (t=3)
        ("u1", "i2", 1),  # ordinal 4, a repeat
        ("u1", "n4", 0),  # anchor: u1 i2 (t=4)
    ]
    folder = tmp_path / "in" / "h"
    folder.mkdir(parents=True)
    _write(folder / "h.train.inter", rows, header)
    _write(folder / "h.test.inter", [("u1", "c1", 1), ("u1", "i2", 0), ("u2", "c1", 0)], header)
    add_history("h", tmp_path / "in", tmp_path / "out", max_len=20, embedding=False, **QUIET)
    out = _table(tmp_path / "out" / "h" / "h.train.inter")
    assert out["hist_items"].tolist() == ["", "", "", "", "i2", "i2", "i2", "i3", "i2 i3"]
    test = _table(tmp_path / "out" / "h" / "h.test.inter")
    assert test["hist_items"].tolist() == ["i2 i3 i2", "i3", "i6"]


def _reference(train, others, max_len, timed):
    """Brute force: the rule of the module docstring, row by row."""
    ordinal, times = 0, []
    for row in train:
        ordinal += row[-1] == 1
        times.append(row[2] if timed else ordinal)
    positives = [(t, k, row[0], row[1]) for k, (row, t) in enumerate(zip(train, times)) if row[-1] == 1]
    positives.sort()

    def history(user, item, cut):
        seq = [i for t, _, u, i in positives if u == user and t < cut and i != item]
        return " ".join(seq[-max_len:])

    return ([history(row[0], row[1], t) for row, t in zip(train, times)],
            [history(row[0], row[1], math.inf) for row in others])


@pytest.mark.parametrize("timed", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_data_matches_brute_force(tmp_path, timed, seed):
    rng = np.random.default_rng(seed)
    n, users, items = 300, [f"u{k}" for k in range(13)], [f"i{k}" for k in range(16)]
    train = [(users[rng.integers(12)], items[rng.integers(15)], int(rng.integers(0, 20)), int(rng.random() < 0.6))
             for _ in range(n)]
    others = [(users[rng.integers(14) % 13], items[rng.integers(17) % 16], 99, int(rng.random() < 0.5))
              for _ in range(80)]  # u12 and i15 have no training row
    header = HEADER if timed else "user_id:token\titem_id:token\tlabel:float"
    strip = (lambda rows: rows) if timed else (lambda rows: [(u, i, lab) for u, i, _, lab in rows])
    folder = tmp_path / "in" / "h"
    folder.mkdir(parents=True)
    _write(folder / "h.train.inter", strip(train), header)
    _write(folder / "h.test.inter", strip(others), header)
    for max_len in (1, 3, 50):
        add_history("h", tmp_path / "in", tmp_path / f"out{max_len}", max_len=max_len, embedding=False, **QUIET)
        want_train, want_test = _reference(train, others, max_len, timed)
        assert _table(tmp_path / f"out{max_len}" / "h" / "h.train.inter")["hist_items"].tolist() == want_train
        assert _table(tmp_path / f"out{max_len}" / "h" / "h.test.inter")["hist_items"].tolist() == want_test


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
    # NAME.inter is not the training file: every row of it (its training rows too) sees all training positives
    inter = _table(tmp_path / "out" / "h" / "h.inter")
    assert inter["hist_items"].tolist() == [_expected_all(u, i, 20) for u, i, _, _ in TRAIN + VALID + TEST]


def test_valid_test_rows_see_all_training_positives_but_their_own_item(tmp_path):
    # valid/test rows see every training positive of the user, whatever their timestamp (u1 i1 at t=5 too), and
    # not their own item, removed before the --max-len cut
    test = TEST + [("u1", "i4", 0, 1), ("u1", "i1", 8, 0), ("u2", "i6", 15, 1), ("u5", "i3", 3, 1)]
    root = write_fixture(tmp_path / "in", test=test)
    add_history("h", root, tmp_path / "out", max_len=4, embedding=False, **QUIET)
    out = _table(tmp_path / "out" / "h" / "h.test.inter")
    assert out["hist_items"].tolist() == ["i5 i1 i4 i1", "i5 i1 i4 i1", "i6 i1", "",
                                          "i3 i5 i1 i1", "i2 i3 i5 i4", "i1", "i7"]
    valid = _table(tmp_path / "out" / "h" / "h.valid.inter")
    assert valid["hist_items"].tolist() == ["i5 i1 i4 i1", "i5 i1 i4 i1", "i6 i1", ""]


def test_hist_sim_hand_computed(root, tmp_path):
    summary = add_history("h", root, tmp_path / "out", max_len=4, **QUIET)
    folder = tmp_path / "out" / "h"
    train, test = _table(folder / "h.train.inter"), _table(folder / "h.test.inter")
    sim_train, sim_test = train["hist_sim"].astype(float), test["hist_sim"].astype(float)
    # u1 i1 (t=5): history i2 i3 i5 i4 -> mean [1, 3, 2] / 4; cos([1, 0, 0], .) = 1 / sqrt(14)
    assert sim_train[3] == pytest.approx(1 / math.sqrt(14), abs=1e-6)
    # u1 c1 (test): history i5 i1 i4 i1 -> sum [3, 2, 1]; cos([0, 3, 4], .) = 10 / (5 sqrt(14))
    assert sim_test[0] == pytest.approx(2 / math.sqrt(14), abs=1e-6)
    # u2 n3 (t=12): history i6 -> cos([0, 0, 2], [1, 0, 1])
    assert sim_train[13] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    # u1 n2 (t=5): history i3 i5 i1 i4 -> sum [2, 2, 2]; cos([2, 0, 1], .) = 6 / (sqrt(5) sqrt(12))
    assert sim_train[4] == pytest.approx(6 / math.sqrt(60), abs=1e-6)
    # u1 i4 (t=4): history i2 i3 i5 i1 -> sum [1, 2, 2]; cos([1, 1, 0], .) = 3 / (3 sqrt(2))
    assert sim_train[7] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    # u1 n3 (t=4.5): history i3 i5 i1 i4 -> cos([0, 0, 2], [2, 2, 2])
    assert sim_train[9] == pytest.approx(1 / math.sqrt(3), abs=1e-6)
    # 0.0: empty history (u1 at t=1, u2 at t=10, u3 i2, u5 i7, u4 rows), row item without embedding (c2),
    # history without one (u5 i3 and n5 at t=2: i7)
    assert train["hist_items"][0] == "" and train["hist_sim"][0] == "0.000000"
    assert train["hist_items"][10] == "" and sim_train[10] == 0.0
    assert test["hist_items"][3] == "" and sim_test[3] == 0.0
    assert test["hist_items"][1] != "" and sim_test[1] == 0.0  # c2 has no embedding
    assert train["hist_items"][17] == "i7" and sim_train[17] == 0.0  # i7, the only history item, has none
    assert summary["interactions"]["train"]["hist_sim_zero_rows"] == {
        "empty_history": 6, "item_without_embedding": 0, "history_without_embedding": 2}
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
    assert train["hist_sids"][13] == "a_6 b_2" and train["hist_sids"][10] == ""
    # u1 n2 (t=5): history i3 i5 i1 i4
    assert train["hist_sids"][4] == "a_3 b_1 a_1 b_0 a_4 b_1"
    assert summary["sids"]["levels"] == 2 and summary["sids"]["history_items_without_sid"] == 1
    # rows whose history holds i5: 5 training rows of u1 (t >= 3), its 4 valid/test rows
    assert sum("i5" in h.split() for h in TRAIN_HIST4) == 5
    assert summary["sids"]["rows_with_skipped_items"] == 5 + 4


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
    root = write_fixture(tmp_path / "t", train=TRAIN + [("u2", "i1", "soon", 1)])
    _refused(lambda: add_history("h", root, tmp_path / "out", **QUIET),
             r"h\.train\.inter: 'timestamp' must be a number", tmp_path / "out")
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
    assert _table(tmp_path / "out" / "h" / "h.train.inter")["hist_items"].tolist() == TRAIN_HIST4
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
    assert first == TRAIN_HIST4[3].split() == "i2 i3 i5 i4".split()
    assert len(inter["hist_items"][10]) == 0  # u2 i6 (t=10): empty history
    assert float(inter["hist_sim"][3][0]) == pytest.approx(1 / math.sqrt(14), abs=1e-6)
