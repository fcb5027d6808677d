"""``python -m dataset_prep negatives``: labeled copies of implicit datasets (label column + sampled negatives)."""
import json
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, cli_env, write_tiny_dataset
from dataset_prep.cold_split import cold_split
from dataset_prep.negatives import add_negatives
from recbole_sid.data.cold import read_cold_items
from recbole_sid.data.text import read_atomic_table
from recbole_sid.exceptions import DataError
from recbole_sid.quick_start import run_recbole
from test_ctr_cold import ctr_config

SPLITS = ("train", "valid", "test")
QUIET = {"log": lambda *a: None}


@pytest.fixture(scope="module")
def split_root(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("neg_in"))
    cold_split("tiny", root, cold_ratio=0.25, seed=1)
    return root


@pytest.fixture(scope="module")
def labeled(split_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("neg_out")
    summary = add_negatives("tiny", split_root, out, ratio=2, seed=7, **QUIET)
    return out / "tiny", summary


def _table(path):
    return read_atomic_table(path)[0]


def _pairs(frame):
    return set(zip(frame["user_id"], frame["item_id"]))


def _inputs(split_root):
    return {s: _table(split_root / "tiny" / f"tiny.{s}.inter") for s in SPLITS}


def test_labels_rows_and_layout(split_root, labeled):
    folder, summary = labeled
    assert summary["ratio"] == 2
    for split, original in _inputs(split_root).items():
        out = _table(folder / f"tiny.{split}.inter")
        assert list(out.columns) == list(original.columns) + ["label"]
        assert set(out["label"]) == {"0", "1"}
        pos = out[out["label"] == "1"].drop(columns="label").reset_index(drop=True)
        assert pos.equals(original)  # every original row, in order
        stats = summary["interactions"][split]
        n_neg = int((out["label"] == "0").sum())
        assert stats["positives"] == len(original) and stats["negatives"] == n_neg
        assert n_neg == 2 * len(original) - stats["missing_negatives"]
        # each positive directly followed by its negatives: the same row but the item
        owner = np.maximum.accumulate(np.where(out["label"] == "1", np.arange(len(out)), 0))
        ref = out.iloc[owner].reset_index(drop=True)
        for col in ("user_id", "rating", "timestamp"):
            assert (out[col] == ref[col]).all()
        negs = out[out["label"] == "0"].assign(owner=owner[(out["label"] == "0").to_numpy()])
        assert not negs.duplicated(["owner", "item_id"]).any()  # without replacement per positive
        assert (negs["item_id"] != ref.loc[negs.index, "item_id"]).all()


def test_no_false_negatives_and_pools(split_root, labeled):
    folder, summary = labeled
    inputs = _inputs(split_root)
    seen = set().union(*(_pairs(f) for f in inputs.values()))
    cold = set(read_cold_items(split_root / "tiny" / "tiny.cold_items"))
    warm = set(inputs["train"]["item_id"]) - cold
    assert summary["pools"] == {"all": len(warm | cold | set().union(*(set(f["item_id"]) for f in inputs.values()))),
                                "warm": len(warm), "cold": len(cold)}
    kinds = {}
    for split in SPLITS:
        out = _table(folder / f"tiny.{split}.inter")
        neg = out[out["label"] == "0"]
        assert not _pairs(neg) & seen, f"{split}: a negative is an item the user interacted with"
        owner = np.maximum.accumulate(np.where(out["label"] == "1", np.arange(len(out)), 0))
        pos_items = out["item_id"].to_numpy()[owner][(out["label"] == "0").to_numpy()]
        if split == "train":
            assert set(neg["item_id"]) <= warm and not set(out["item_id"]) & cold
        else:
            pos_cold = np.isin(pos_items, list(cold))
            neg_cold = neg["item_id"].isin(cold).to_numpy()
            assert (pos_cold == neg_cold).all(), f"{split}: a negative of another kind than its positive"
            assert set(neg["item_id"][~neg_cold]) <= warm
            kinds[split] = (pos_cold.sum(), (~pos_cold).sum())
    assert all(c > 0 and w > 0 for c, w in kinds.values()), kinds  # the fixture exercises both kinds


def test_short_pools_take_what_is_there(split_root, tmp_path):
    summary = add_negatives("tiny", split_root, tmp_path, ratio=15, seed=3, **QUIET)
    inputs = _inputs(split_root)
    seen = set().union(*(_pairs(f) for f in inputs.values()))
    cold = set(read_cold_items(split_root / "tiny" / "tiny.cold_items"))
    test = _table(tmp_path / "tiny" / "tiny.test.inter")
    owner = np.maximum.accumulate(np.where(test["label"] == "1", np.arange(len(test)), 0))
    counts = np.bincount(owner[(test["label"] == "0").to_numpy()], minlength=len(test))
    short = 0
    for row in np.flatnonzero((test["label"] == "1").to_numpy()):
        user, item = test["user_id"][row], test["item_id"][row]
        free = {i for i in cold if (user, i) not in seen} if item in cold else None
        if free is not None:
            assert counts[row] == min(15, len(free))  # 12 cold items: every cold row is short
            short += counts[row] < 15
        else:
            assert counts[row] == 15
    stats = summary["interactions"]["test"]
    assert stats["short_rows"] == short > 0
    assert stats["negatives"] == counts.sum() == 15 * stats["positives"] - stats["missing_negatives"]


def test_single_inter_pool_is_all_items(tmp_path):
    root = write_tiny_dataset(tmp_path / "in", n_users=20)
    summary = add_negatives("tiny", root, tmp_path / "out", ratio=3, seed=0, **QUIET)
    original = _table(root / "tiny" / "tiny.inter")
    out = _table(tmp_path / "out" / "tiny" / "tiny.inter")
    neg = out[out["label"] == "0"]
    assert len(neg) == 3 * len(original) and summary["interactions"]["inter"]["rows_by_pool"] == {"all": len(original)}
    assert not _pairs(neg) & _pairs(original)
    assert summary["cold_items_from"] is None and len(set(neg["item_id"])) > 30  # any item, cold or not


def test_deterministic_for_a_seed(split_root, labeled, tmp_path):
    folder, _ = labeled
    add_negatives("tiny", split_root, tmp_path / "same", ratio=2, seed=7, **QUIET)
    add_negatives("tiny", split_root, tmp_path / "other", ratio=2, seed=8, **QUIET)
    for split in SPLITS:
        name = f"tiny.{split}.inter"
        assert (tmp_path / "same" / "tiny" / name).read_bytes() == (folder / name).read_bytes()
    other = tmp_path / "other" / "tiny"
    assert any((other / f"tiny.{s}.inter").read_bytes() != (folder / f"tiny.{s}.inter").read_bytes() for s in SPLITS)


def test_side_files_copied_and_renamed(split_root, tmp_path):
    summary = add_negatives("tiny", split_root, tmp_path, out_name="tinyctr", seed=1, **QUIET)
    src, dst = split_root / "tiny", tmp_path / "tinyctr"
    for suffix in ("inter", "item", "user", "cold_items"):
        assert str(dst / f"tinyctr.{suffix}") in summary["files"]
    for suffix in ("item", "user", "cold_items"):
        assert (dst / f"tinyctr.{suffix}").read_bytes() == (src / f"tiny.{suffix}").read_bytes()
    # the unsplit NAME.inter beside the split files is labeled too (pool: all items)
    assert summary["interactions"]["inter"]["rows_by_pool"] == {"all": summary["interactions"]["inter"]["positives"]}
    assert sorted(p.name for p in dst.iterdir()) == sorted(f"tinyctr.{s}" for s in (
        "inter", "train.inter", "valid.inter", "test.inter", "item", "user", "cold_items"))


def test_refusals_write_nothing(split_root, labeled, tmp_path):
    folder, _ = labeled
    # an already labeled dataset
    with pytest.raises(DataError, match=r"tiny\.inter: already has a 'label' column"):
        add_negatives("tiny", folder.parent, tmp_path / "again", **QUIET)
    assert not (tmp_path / "again").exists()
    # outputs already there
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        add_negatives("tiny", split_root, folder.parent, ratio=2, seed=99, **QUIET)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(DataError, match="--ratio"):
        add_negatives("tiny", split_root, tmp_path / "zero", ratio=0, **QUIET)
    # the output folder would be the input folder
    inputs = {p.name: p.read_bytes() for p in (split_root / "tiny").iterdir()}
    with pytest.raises(DataError, match="input dataset's folder"):
        add_negatives("tiny", split_root, split_root, overwrite=True, **QUIET)
    assert {p.name: p.read_bytes() for p in (split_root / "tiny").iterdir()} == inputs
    with pytest.raises(DataError, match="dataset folder not found"):
        add_negatives("tiny", tmp_path / "nowhere", tmp_path / "zero", **QUIET)
    # no user_id column
    bad = tmp_path / "bad" / "tiny"
    bad.mkdir(parents=True)
    (bad / "tiny.inter").write_text("uid:token\titem_id:token\nu1\ti1\n")
    with pytest.raises(DataError, match=r"tiny\.inter: no 'user_id' column"):
        add_negatives("tiny", bad.parent, tmp_path / "bad_out", **QUIET)
    # a listed cold item with training rows
    (bad / "tiny.inter").unlink()
    (bad / "tiny.train.inter").write_text("user_id:token\titem_id:token\nu1\ti1\nu1\ti2\n")
    (bad / "tiny.test.inter").write_text("user_id:token\titem_id:token\nu2\ti3\n")
    (bad / "tiny.cold_items").write_text("item_id:token\ti1\ti3\n".replace("\ti", "\ni"))
    with pytest.raises(DataError, match=r"tiny\.cold_items: 1 listed cold items have rows"):
        add_negatives("tiny", bad.parent, tmp_path / "bad_out", **QUIET)
    assert not (tmp_path / "zero").exists() and not (tmp_path / "bad_out").exists()


def test_cli(split_root, tmp_path):
    cmd = [PYTHON, "-m", "dataset_prep", "negatives", "--dataset", "tiny", "--data-path", str(split_root),
           "--out", str(tmp_path), "--ratio", "1", "--seed", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["interactions"]["train"]["negatives"] == summary["interactions"]["train"]["positives"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "--overwrite" in done.stderr


def test_recbole_ctr_model_runs_in_labeled_mode(labeled, in_tmp):
    folder, _ = labeled
    config = ctr_config(folder.parent, threshold=None, epochs=1, checkpoint_dir=str(in_tmp / "saved"),
                        load_col={"inter": ["user_id", "item_id", "timestamp", "label"],
                                  "item": ["item_id", "title", "category"], "user": ["user_id", "age", "occupation"]})
    result = run_recbole(model="LR", dataset="tiny", config_dict=config, cmd_args=[])
    assert 0.0 <= result["test_result"]["auc"] <= 1.0
    for key in ("test_result_cold", "test_result_warm"):
        assert 0.0 <= result[key]["auc"] <= 1.0 and "logloss" in result[key], key
    # every labeled test row (positives and negatives) is evaluated: none dropped, both kinds present
    assert result["test_rows_cold"] > 0 and result["test_rows_warm"] > 0
    assert result["test_rows_cold"] + result["test_rows_warm"] == len(_table(folder / "tiny.test.inter"))
