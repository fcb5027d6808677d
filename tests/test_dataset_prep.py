"""dataset_prep: convert-json, embed, import-vectors, cold-split, ml-100k; bad input; RecBole loads the result."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import recbole_sid  # noqa: F401  (compat shims before RecBole's Config)
from recbole.config import Config
from recbole.data import create_dataset, data_preparation

from dataset_prep import cold_split, convert_json, embed_dataset, import_vectors
from dataset_prep.cli import main
from dataset_prep.cold_split import split_counts
from dataset_prep.convert import clean_text, split_categories
from recbole_sid.atomic_io import read_vectors
from recbole_sid.data import cold_item_mask, item_semantic_embeddings, read_cold_items
from recbole_sid.exceptions import DataError

REPO = Path(__file__).resolve().parents[1]

ITEMS = {
    "A1": {"title": "Red <b>apple</b> &amp; pear", "description": "A\tfresh\nfruit " + "word " * 100,
           "brand": "Orchard", "categories": "Industrial & Scientific,Food, Fruit & Veg,Apples"},
    "A2": {"title": '"Quoted" green apple', "description": "", "brand": "Orchard",
           "categories": "Industrial & Scientific,Food, Fruit & Veg,Apples"},
    "B1": {"title": "Steel hammer", "description": "<p>heavy tool</p>", "brand": "",
           "categories": "Industrial & Scientific,Tools,Hammers"},
    "B2": {"title": "Iron wrench", "description": "adjustable tool", "brand": "Forge",
           "categories": ["Industrial & Scientific", "Tools", "Wrenches"]},
    "C1": {"title": "Blue paint", "description": "", "brand": "Hue", "categories": ""},
    "C2": {"title": "White paint", "description": "matt", "brand": "Hue",
           "categories": "Industrial & Scientific,Paint"},
}
INTERS = {"u1": ["A1", "B1", "C1", "A2", "B2"], "u2": ["B2", "C2", "A1", "B1"], "u3": ["C1", "C2", "A2", "A1", "B1"],
          "u4": ["A2", "B2", "C2", "C1"]}


def _write_json(tmp_path, inters=INTERS, items=ITEMS):
    inter, item = tmp_path / "X.inter.json", tmp_path / "X.item.json"
    inter.write_text(json.dumps(inters))
    item.write_text(json.dumps(items))
    return inter, item


def _quiet(*a, **k):
    pass


@pytest.fixture
def converted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inter, item = _write_json(tmp_path)
    summary = convert_json(inter, item, "toy", tmp_path / "data", max_words=5)
    return tmp_path / "data", summary


def _config(data_path, name, **extra):
    cfg = {"data_path": str(data_path), "load_col": None, "show_progress": False,
           "checkpoint_dir": str(Path(data_path) / "saved")}
    cfg.update(extra)
    return Config(model="BPR", dataset=name, config_dict=cfg)


# --- convert-json -----------------------------------------------------------------------------------------

def test_clean_text_and_categories():
    assert clean_text("a <i>b</i>\tc\n&amp;amp; d", max_words=None) == "a b c & d"
    assert clean_text('"x" y', max_words=1) == "''x''"
    assert clean_text(None) == "" and clean_text(["a", None, "b"]) == "a b"
    assert split_categories("Root,Tapes, Adhesives & Sealants,Tape") == ["Root", "Tapes, Adhesives & Sealants", "Tape"]
    assert split_categories([["Root", "A"], "B"]) == ["Root", "A", "B"]
    assert split_categories("") == []


def test_convert_json_files(converted):
    data, summary = converted
    folder = data / "toy"
    inter = (folder / "toy.inter").read_text().splitlines()
    assert inter[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert inter[1:4] == ["u1\tA1\t0", "u1\tB1\t1", "u1\tC1\t2"]
    item = [line.split("\t") for line in (folder / "toy.item").read_text().splitlines()]
    assert item[0] == ["item_id:token", "title:token_seq", "description:token_seq", "brand:token",
                       "categories:token_seq", "category1:token"]
    rows = {r[0]: r for r in item[1:]}
    assert all(len(r) == 6 for r in rows.values())
    assert rows["A1"][1] == "Red apple & pear"
    assert rows["A1"][2] == "A fresh fruit word word"  # tabs/newlines gone, cut to --max-words 5
    assert rows["A2"][1].startswith("''Quoted''")
    assert rows["B1"][2] == "heavy tool"
    assert rows["A1"][4] == "Industrial_&_Scientific Food,_Fruit_&_Veg Apples"
    assert rows["A1"][5] == "Food, Fruit & Veg" and rows["B2"][5] == "Tools" and rows["C1"][5] == ""
    assert summary["category_root"] == "Industrial & Scientific"
    assert summary["interactions"] == 18 and summary["items"] == 6 and summary["users"] == 4


def test_converted_dataset_loads_in_recbole(converted):
    data, _ = converted
    config = _config(data, "toy")
    dataset = create_dataset(config)
    assert dataset.item_num == 7 and dataset.user_num == 5 and dataset.inter_num == 18
    assert {"title", "description", "brand", "categories", "category1"} <= set(dataset.item_feat.columns)
    embed_dataset("toy", data, dim=4, log=_quiet)
    emb = item_semantic_embeddings(config, dataset)
    assert emb.shape == (7, 4)


def test_cli_convert_and_overwrite(tmp_path, capsys):
    inter, item = _write_json(tmp_path)
    args = ["convert-json", "--inter", str(inter), "--item", str(item), "--dataset", "toy", "--out", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "toy" / "toy.item").read_text()
    capsys.readouterr()
    assert main(args + ["--max-words", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert (tmp_path / "toy" / "toy.item").read_text() == before
    assert main(args + ["--max-words", "2", "--overwrite"]) == 0
    assert (tmp_path / "toy" / "toy.item").read_text() != before


def test_convert_keeps_repeated_pairs_and_says_so(tmp_path, capsys):
    """An item again in the same user's list is kept at each of its positions (RecBole reads each line as one
    interaction); the count is in the summary and on stderr."""
    inter, item = _write_json(tmp_path, inters={**INTERS, "u1": ["A1", "B1", "A1", "C1", "A1"], "u2": ["B2", "B2"]})
    args = ["convert-json", "--inter", str(inter), "--item", str(item), "--dataset", "toy", "--out", str(tmp_path)]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["repeated_pairs"] == 3 and summary["users_with_repeated_pairs"] == 2
    assert summary["interactions"] == 5 + 2 + 5 + 4
    assert captured.err == (f"warning: {inter}: 3 repeated (user, item) pairs (2 users) kept as separate "
                            f"interactions, each at its position in the list; RecBole reads every line (set "
                            f"rm_dup_inter: first in RecBole's config to keep only the first)\n")
    lines = (tmp_path / "toy" / "toy.inter").read_text().splitlines()
    assert [x for x in lines if x.startswith("u1\t")] == ["u1\tA1\t0", "u1\tB1\t1", "u1\tA1\t2", "u1\tC1\t3",
                                                          "u1\tA1\t4"]
    inter.write_text(json.dumps(INTERS))
    assert main(args + ["--overwrite"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["repeated_pairs"] == 0 and captured.err == ""


@pytest.mark.parametrize("case, message", [
    ("missing_file", "interaction file not found"),
    ("bad_json", "not valid JSON"),
    ("duplicate_item", "duplicate ids"),
    ("no_text_entry", r"2 items have no entry in .*X.item.json.*\['Z1', 'Z2'\]"),
    ("empty_text", r"1 items have empty text .*\['C1'\]"),
    ("not_a_list", "expected a list of item ids"),
    ("bad_entry", "expected an object"),
    ("directory", "interaction file is not a regular file"),
    ("not_utf8", "X.item.json: cannot read"),
])
def test_convert_bad_input(tmp_path, capsys, case, message):
    inter, item = _write_json(tmp_path)
    if case == "missing_file":
        inter = tmp_path / "absent.json"
    elif case == "bad_json":
        item.write_text('{"A1": {"title": "x"')
    elif case == "duplicate_item":
        item.write_text('{"A1": {"title": "x"}, "A1": {"title": "y"}}')
    elif case == "no_text_entry":
        inter.write_text(json.dumps({**INTERS, "u9": ["Z1", "A1", "Z2"]}))
    elif case == "empty_text":
        item.write_text(json.dumps({**ITEMS, "C1": {"title": " ", "description": "<br>", "brand": "",
                                                     "categories": ""}}))
    elif case == "not_a_list":
        inter.write_text(json.dumps({"u1": "A1"}))
    elif case == "bad_entry":
        item.write_text(json.dumps({**ITEMS, "A1": "just a string"}))
    elif case == "directory":
        inter = tmp_path
    elif case == "not_utf8":
        item.write_bytes(b'{"A1": {"title": "\xff\xfe"}}')
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        convert_json(inter, item, "toy", out)
    assert not out.exists() or not any(out.rglob("*"))  # nothing half-written
    rc = main(["convert-json", "--inter", str(inter), "--item", str(item), "--dataset", "toy", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err


def test_cli_help_and_subprocess_error(tmp_path, capsys):
    for cmd in (None, "convert-json", "embed", "import-vectors", "cold-split", "ml-100k"):
        with pytest.raises(SystemExit) as exc:
            main(["--help"] if cmd is None else [cmd, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "usage: python -m dataset_prep" in out
        if cmd is None:
            assert all(c in out for c in ("convert-json", "embed", "import-vectors", "cold-split", "ml-100k"))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "dataset_prep", "cold-split", "--dataset", "x", "--data-path",
                          str(tmp_path), "--cold-ratio", "1.5"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --cold-ratio must be in the open interval (0, 1), got 1.5"


# --- embed / import-vectors -------------------------------------------------------------------------------

def test_embed_writes_item_and_user_vectors(converted):
    data, _ = converted
    folder = data / "toy"
    (folder / "toy.user").write_text("user_id:token\tgender:token\tzip_code:token\n"
                                      "u1\tF\t111\nu2\tM\t222\nu3\tF\t333\nu4\tM\t444\n")
    summary = embed_dataset("toy", data, dim=3, log=_quiet)
    assert summary["item_fields"] == ["title", "description", "brand", "categories", "category1"]
    assert summary["user_fields"] == ["gender"]
    ids, vecs, id_field, vec_field = read_vectors(folder / "toy.itememb")
    assert (id_field, vec_field) == ("item_id", "item_emb") and sorted(ids) == sorted(ITEMS) and vecs.shape == (6, 3)
    ids, vecs, id_field, vec_field = read_vectors(folder / "toy.useremb")
    assert (id_field, vec_field) == ("user_id", "user_emb") and vecs.shape == (4, 3)
    with pytest.raises(DataError, match="already exists"):
        embed_dataset("toy", data, dim=3, log=_quiet)
    embed_dataset("toy", data, dim=2, fields=["title"], users=False, overwrite=True, log=_quiet)
    assert read_vectors(folder / "toy.itememb")[1].shape == (6, 2)


def test_embed_bad_input(converted, tmp_path):
    data, _ = converted
    folder = data / "toy"
    with pytest.raises(DataError, match="dataset folder not found"):
        embed_dataset("nope", data, log=_quiet)
    with pytest.raises(DataError, match=r"text field\(s\) \['colour'\] not in the file"):
        embed_dataset("toy", data, fields=["colour"], log=_quiet)
    with open(folder / "toy.inter", "a") as f:
        f.write("u9\tZZ\t9\n")
    with pytest.raises(DataError, match=r"1 items have no row in .*toy.item.*\['ZZ'\]"):
        embed_dataset("toy", data, log=_quiet)
    text = (folder / "toy.item").read_text().splitlines()
    (folder / "toy.item").write_text("\n".join(text + [text[1]]) + "\n")
    with pytest.raises(DataError, match=r"duplicate ids in 'item_id'.*A1"):
        embed_dataset("toy", data, log=_quiet)
    # a bad .user file after good items: neither file is written
    (folder / "toy.user").write_text("user_id:token\tgender:token\nu1\tF\nu2\t\nu3\tF\n")
    lines = [ln for ln in (folder / "toy.inter").read_text().splitlines() if "ZZ" not in ln]
    (folder / "toy.inter").write_text("\n".join(lines) + "\n")
    (folder / "toy.item").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"toy.user: 1 entities have empty text .*\['u2'\]"):
        embed_dataset("toy", data, log=_quiet)
    assert not (folder / "toy.itememb").exists() and not (folder / "toy.useremb").exists()
    (folder / "toy.item").write_text("item_id:token\ttitle:token_seq\nA1\t\n")
    with pytest.raises(DataError, match="empty text"):
        embed_dataset("toy", data, log=_quiet)
    (folder / "toy.item").unlink()
    with pytest.raises(DataError, match="item file not found"):
        embed_dataset("toy", data, log=_quiet)
    assert not (folder / "toy.itememb").exists()


@pytest.mark.parametrize("extra, found", [("\tstray", 7), (None, 5)])
def test_embed_refuses_rows_with_a_wrong_number_of_columns(converted, capsys, extra, found):
    """A .item row with a tab too many or too few: one error line naming the file, the line and both counts."""
    data, _ = converted
    item = data / "toy" / "toy.item"
    lines = item.read_text().splitlines()
    parts = lines[3].split("\t")
    lines[3] = "\t".join(parts + [extra[1:]]) if extra else "\t".join(parts[:-1])
    item.write_text("\n".join(lines) + "\n")
    assert main(["embed", "--dataset", "toy", "--data-path", str(data), "--dim", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{item}:4: {found} tab-separated columns, the header has 6" in err, err
    assert not (data / "toy" / "toy.itememb").exists()


def test_stale_temp_files_of_a_killed_run_are_removed(tmp_path, capsys):
    """A run killed by SIGKILL while writing leaves its temporary files; the next run that writes into the folder
    removes them (their process is gone) and says so, but keeps the temporary files of a live process."""
    import signal

    from conftest import cli_env, write_tiny_dataset

    root = write_tiny_dataset(tmp_path / "data", with_user_profile=False)
    folder = root / "tiny"
    killed = subprocess.Popen([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from dataset_prep.files import Staging\n"
        "from recbole_sid.atomic_io import atomic_write\n"
        "stage = Staging([sys.argv[1]], overwrite=False)\n"
        "with atomic_write(stage.path(sys.argv[1])) as f:\n"
        "    f.write('half')\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"), str(folder / "tiny.itememb")], env=cli_env())
    assert killed.wait() == -signal.SIGKILL
    left = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert len(left) == 2 and any(n.endswith(".staging") for n in left) and any(n.endswith(".tmp") for n in left)
    assert all(f".{killed.pid}@" in n for n in left)  # named after the writer's pid
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = folder / left[0].replace(f".{killed.pid}@", f".{live.pid}@")
        mine.write_text("a live writer's temporary file")
        assert main(["embed", "--dataset", "tiny", "--data-path", str(root), "--dim", "4"]) == 0
    finally:
        live.kill()
        live.wait()
    err = capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [mine.name]
    for name in left:
        assert f"warning: removed stale temporary file {folder / name} (left by process {killed.pid}" in err, err
    assert read_vectors(folder / "tiny.itememb")[1].shape == (48, 4)


def test_atomic_write_removes_only_stale_temp_files_of_this_host(tmp_path, caplog):
    """Any atomic write (leaderboard cells, caches, ...) cleans its folder: a dead writer's temporary file of this
    host goes, with a warning; another host's (its pid means nothing here) and unrelated files stay."""
    import logging

    from recbole_sid.atomic_io import atomic_write, temp_file

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fd, mine = temp_file(tmp_path / "cell.json", ".tmp")
    os.close(fd)
    stale = tmp_path / Path(mine).name.replace(f".{os.getpid()}@", f".{dead.pid}@")
    os.rename(mine, stale)
    other_host = tmp_path / f".cell.json.{dead.pid}@elsewhere-0.abc123.tmp"
    unrelated = tmp_path / ".cell.json.abc123.tmp"  # no writer named: not ours to judge
    for path in (other_host, unrelated):
        path.write_text("x")
    caplog.set_level(logging.WARNING)
    with atomic_write(tmp_path / "other.json") as f:
        f.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other_host.name, unrelated.name, "other.json"])
    assert [r.getMessage() for r in caplog.records] == [
        f"removed stale temporary file {stale} (left by process {dead.pid}, which is gone)"]


def test_import_vectors(converted):
    data, _ = converted
    folder = data / "toy"
    ids = sorted(ITEMS)
    vec = np.arange(len(ids) * 3, dtype=np.float64).reshape(len(ids), 3)
    np.save(folder.parent / "v.npy", vec)
    (folder.parent / "ids.txt").write_text("\n".join(ids) + "\n")
    summary = import_vectors(folder.parent / "v.npy", folder.parent / "ids.txt", "toy", data, dim=3, log=_quiet)
    assert summary["vectors"] == 6 and summary["without_vector"] == 0
    got_ids, got, _, _ = read_vectors(folder / "toy.itememb")
    assert got_ids == ids and np.allclose(got, vec)


@pytest.mark.parametrize("case, message", [
    ("nan", r"1 rows contain NaN/Inf \(first rows: \[2\]\)"),
    ("inf", "NaN/Inf"),
    ("wrong_dim", "dimension 3, expected --dim 5"),
    ("one_d", "expected a 2-D array"),
    ("length", "5 ids but .*v.npy has 6 vectors"),
    ("dup_ids", r"duplicate ids \(1; first: \['A1'\]\)"),
    ("not_npy", "not a readable .npy"),
    ("missing_ids", "ids file not found"),
    ("unknown_ids", "none of the 6 ids"),
])
def test_import_vectors_bad_input(converted, capsys, case, message):
    data, _ = converted
    root = data.parent
    ids = sorted(ITEMS)
    vec = np.ones((6, 3), dtype=np.float32)
    dim = None
    ids_path = root / "ids.txt"
    if case == "nan":
        vec[2, 1] = np.nan
    elif case == "inf":
        vec[0, 0] = np.inf
    elif case == "wrong_dim":
        dim = 5
    elif case == "one_d":
        vec = np.ones(6)
    elif case == "length":
        ids = ids[:5]
    elif case == "dup_ids":
        ids = ids[:5] + ["A1"]
    elif case == "unknown_ids":
        ids = [f"X{k}" for k in range(6)]
    np.save(root / "v.npy", vec)
    if case == "not_npy":
        (root / "v.npy").write_text("hello")
    ids_path.write_text("\n".join(ids) + "\n")
    if case == "missing_ids":
        ids_path = root / "absent.txt"
    with pytest.raises(DataError, match=message):
        import_vectors(root / "v.npy", ids_path, "toy", data, dim=dim, log=_quiet)
    assert not (data / "toy" / "toy.itememb").exists()
    args = ["import-vectors", "--vectors", str(root / "v.npy"), "--ids", str(ids_path), "--dataset", "toy",
            "--data-path", str(data)] + (["--dim", str(dim)] if dim else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


# --- cold-split -------------------------------------------------------------------------------------------

def _write_inter(folder: Path, name: str, n_users=30, n_items=40, per_user=8, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    t = 1000
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            t -= 1  # file order is NOT time order
            lines.append(f"u{u}\ti{i}\t{rng.integers(1, 6)}\t{t + 7 * u}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    (folder / f"{name}.item").write_text("item_id:token\ttitle:token_seq\n" +
                                         "".join(f"i{i}\tthing number {i} kind {i % 4}\n" for i in range(n_items)))


def _read_inter(path):
    lines = path.read_text().splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_split_counts_match_recbole():
    from recbole.data.dataset import Dataset

    for n in range(1, 40):
        for vr, tr in [(0.1, 0.1), (0.2, 0.2), (0.15, 0.05)]:
            cuts = Dataset._calcu_split_ids(None, n, [1 - vr - tr, vr, tr])
            v, t = split_counts(np.array([n]), vr, tr)
            assert [n - v[0] - t[0], n - t[0]] == [int(c) for c in cuts], (n, vr, tr)


def test_cold_split_rule(tmp_path):
    data = tmp_path / "data"
    _write_inter(data / "cs", "cs")
    summary = cold_split("cs", data, cold_ratio=0.2, valid_ratio=0.2, test_ratio=0.2, seed=3, log=_quiet)
    folder = data / "cs"
    header, full = _read_inter(folder / "cs.inter")
    parts = {s: _read_inter(folder / f"cs.{s}.inter") for s in ("train", "valid", "test")}
    assert all(h == header for h, _ in parts.values())
    rows = {s: r for s, (_, r) in parts.items()}
    # every line lands in exactly one split, unchanged
    assert sorted(map(tuple, full)) == sorted(map(tuple, rows["train"] + rows["valid"] + rows["test"]))
    cold = read_cold_items(folder / "cs.cold_items")
    assert (folder / "cs.cold_items").read_text().splitlines()[0] == "item_id:token"
    n_items = len({r[1] for r in full})
    assert len(cold) == round(0.2 * n_items) == summary["cold_items"]
    train_items = {r[1] for r in rows["train"]}
    valid_cold = {r[1] for r in rows["valid"]} & set(cold)
    test_cold = {r[1] for r in rows["test"]} & set(cold)
    assert not train_items & set(cold)
    assert valid_cold and test_cold and not valid_cold & test_cold and valid_cold | test_cold == set(cold)
    # all interactions of a cold item sit in the one split it was given
    for item in cold:
        n_all = sum(r[1] == item for r in full)
        assert n_all == sum(r[1] == item for r in rows["valid" if item in valid_cold else "test"])
    # warm: per user, the latest interactions (by timestamp) are test, then valid
    for user in {r[0] for r in full}:
        warm = sorted((float(r[3]), s) for s in rows for r in rows[s] if r[0] == user and r[1] not in cold)
        labels = [s for _, s in warm]
        v, t = split_counts(np.array([len(warm)]), 0.2, 0.2)
        assert labels == ["train"] * (len(warm) - v[0] - t[0]) + ["valid"] * v[0] + ["test"] * t[0]
    # deterministic
    again = cold_split("cs", data, cold_ratio=0.2, valid_ratio=0.2, test_ratio=0.2, seed=3, overwrite=True,
                       log=_quiet)
    assert again["interactions"] == summary["interactions"] and read_cold_items(folder / "cs.cold_items") == cold
    cold_split("cs", data, cold_ratio=0.2, valid_ratio=0.2, test_ratio=0.2, seed=4, overwrite=True, log=_quiet)
    assert read_cold_items(folder / "cs.cold_items") != cold


def test_cold_split_through_recbole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    _write_inter(data / "cs", "cs")
    embed_dataset("cs", data, dim=4, log=_quiet)
    cold_split("cs", data, cold_ratio=0.25, out=tmp_path / "out", out_name="cs-cold", log=_quiet)
    out = tmp_path / "out" / "cs-cold"
    for suffix in ("item", "itememb", "inter", "train.inter", "valid.inter", "test.inter", "cold_items"):
        assert (out / f"cs-cold.{suffix}").is_file(), suffix
    assert not (data / "cs" / "cs.train.inter").exists()  # input folder untouched
    config = _config(tmp_path / "out", "cs-cold", benchmark_filename=["train", "valid", "test"],
                     eval_args={"order": "TO", "group_by": "user", "mode": "full"})
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    cold = read_cold_items(out / "cs-cold.cold_items")
    token2id = dataset.field2token_id["item_id"]
    assert all(c in token2id for c in cold)  # cold items are in the item map
    cold_ids = {token2id[c] for c in cold}
    train_items = set(train_data._dataset.inter_feat["item_id"].tolist())
    assert train_items and not train_items & cold_ids
    test_items = set(test_data._dataset.inter_feat["item_id"].tolist())
    valid_items = set(valid_data._dataset.inter_feat["item_id"].tolist())
    assert (test_items | valid_items) >= cold_ids
    mask = cold_item_mask(config, dataset)
    assert mask.sum().item() == len(cold) and all(mask[i] for i in cold_ids)
    emb = item_semantic_embeddings(config, train_data._dataset)
    assert emb.shape == (dataset.item_num, 4) and all(emb[i].abs().sum() > 0 for i in cold_ids)


@pytest.mark.parametrize("kwargs, message", [
    ({"cold_ratio": 0.0}, r"--cold-ratio must be in the open interval \(0, 1\), got 0.0"),
    ({"cold_ratio": 1.0}, "--cold-ratio must be in the open interval"),
    ({"cold_ratio": -0.1}, "--cold-ratio"),
    ({"cold_ratio": "abc"}, "must be a number"),
    ({"cold_ratio": 0.1, "valid_ratio": 0.0}, "--valid-ratio"),
    ({"cold_ratio": 0.1, "valid_ratio": 0.5, "test_ratio": 0.5}, "must be < 1"),
])
def test_cold_split_bad_ratios(tmp_path, kwargs, message):
    _write_inter(tmp_path / "cs", "cs")
    with pytest.raises(DataError, match=message):
        cold_split("cs", tmp_path, log=_quiet, **kwargs)
    assert not (tmp_path / "cs" / "cs.train.inter").exists()


def test_cold_split_refuses_existing_outputs_whole(tmp_path):
    _write_inter(tmp_path / "cs", "cs")
    (tmp_path / "cs" / "cs.test.inter").write_text("keep me")
    with pytest.raises(DataError, match=r"cs.test.inter already exists.*--overwrite"):
        cold_split("cs", tmp_path, cold_ratio=0.1, log=_quiet)
    assert not (tmp_path / "cs" / "cs.train.inter").exists()  # none of the siblings were written
    assert (tmp_path / "cs" / "cs.test.inter").read_text() == "keep me"
    with pytest.raises(DataError, match="interaction file not found"):
        cold_split("absent", tmp_path, cold_ratio=0.1, log=_quiet)


# --- ml-100k from the installed recbole package -----------------------------------------------------------

@pytest.mark.parametrize("command", ["cold-split", "attach-sids", "negatives"])
@pytest.mark.parametrize("flag, name", [("--out-name", "../../x"), ("--out-name", ".."), ("--out-name", "a/b"),
                                        ("--dataset", "../tiny")])
def test_output_names_must_stay_inside_out(tmp_path, capsys, command, flag, name):
    """--out-name (and --dataset, the default output name) name a folder and files under --out: a name with a path
    separator, '.' or '..' would write elsewhere and is refused with one error line naming the flag."""
    from conftest import write_tiny_dataset
    from recbole_sid.atomic_io import write_sids

    root = write_tiny_dataset(tmp_path / "a" / "data", with_user_profile=False)
    sids = tmp_path / "a" / "tiny.itemsid"
    write_sids(sids, [f"i{i}" for i in range(48)], np.arange(96).reshape(48, 2))
    before = sorted(tmp_path.rglob("*"))
    args = {"--dataset": "tiny", "--data-path": str(root), "--out": str(tmp_path / "a" / "out"), flag: name}
    extra = {"cold-split": ["--cold-ratio", "0.2"], "attach-sids": ["--sids", str(sids)], "negatives": []}[command]
    assert main([command, *[x for kv in args.items() for x in kv], *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {name!r} is not a plain name") and err.count("\n") == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere


def test_ml100k_command_and_recbole_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import recbole

    package = Path(recbole.__file__).resolve().parent
    before = sorted(p.name for p in (package / "dataset_example" / "ml-100k").iterdir())
    assert main(["ml-100k", "--out", str(tmp_path / "data"), "--cold-ratio", "0.1"]) == 0
    folder = tmp_path / "data" / "ml-100k"
    for suffix in ("inter", "item", "user", "itememb", "useremb", "train.inter", "valid.inter", "test.inter",
                   "cold_items"):
        assert (folder / f"ml-100k.{suffix}").is_file(), suffix
    assert sorted(p.name for p in (package / "dataset_example" / "ml-100k").iterdir()) == before
    ids, vecs, _, _ = read_vectors(folder / "ml-100k.itememb")
    assert len(ids) == 1682 and vecs.shape[1] == 64
    assert read_vectors(folder / "ml-100k.useremb")[1].shape == (943, 64)
    assert main(["ml-100k", "--out", str(tmp_path / "data")]) == 2  # exists, no --overwrite
    # RecBole loads the prepared copy (renamed: stock RecBole always reads ml-100k from its own package)
    cold_split("ml-100k", tmp_path / "data", cold_ratio=0.1, out=tmp_path / "data", out_name="ml-100k-prep",
               log=_quiet)
    config = _config(tmp_path / "data", "ml-100k-prep", benchmark_filename=["train", "valid", "test"])
    dataset = create_dataset(config)
    train_data = data_preparation(config, dataset)[0]
    assert dataset.item_num == 1683 and dataset.user_num == 944
    emb = item_semantic_embeddings(config, train_data._dataset)
    assert emb.shape == (1683, 64) and torch_allclose_norms(emb[1:])
    with pytest.raises(DataError, match="inside the installed recbole package"):
        from dataset_prep import prepare_ml100k

        prepare_ml100k(package / "dataset_example", log=_quiet)


def torch_allclose_norms(x):
    return bool(((x.norm(dim=1) - 1).abs() < 1e-4).all())
