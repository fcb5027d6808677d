"""attach-sids: a dataset copy whose .item carries the SID as a token_seq column, usable by RecBole's DeepFM."""
import subprocess

import numpy as np
import pytest
from recbole.data import create_dataset
from recbole.utils import FeatureType

from conftest import PYTHON, cli_env
from dataset_prep.attach_sids import attach_sids
from dataset_prep.cold_split import cold_split
from recbole_sid.atomic_io import read_sids, write_sids
from recbole_sid.config import Config
from recbole_sid.exceptions import DataError
from recbole_sid.quick_start import run_recbole
from test_ctr_cold import ctr_config, write_ctr_dataset

N_ITEMS = 40
QUIET = {"log": lambda *a, **k: None}


@pytest.fixture(scope="module")
def src_root(tmp_path_factory):
    root = write_ctr_dataset(tmp_path_factory.mktemp("attach"), n_items=N_ITEMS)
    cold_split("ctr", root, cold_ratio=0.2, seed=1, log=lambda *a: None)
    (root / "ctr" / "semantic_cache").mkdir()  # folders are not copied
    return root


def sid_codes(n=N_ITEMS):
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, 4, n), rng.integers(0, 4, n), rng.integers(0, 4, n), np.arange(n)], axis=1)


@pytest.fixture
def sid_file(tmp_path):
    path = tmp_path / "ctr.itemsid"
    write_sids(path, [f"i{i}" for i in range(N_ITEMS)] + ["i999"], np.vstack([sid_codes(), [[0, 0, 0, 0]]]))
    return path


def test_attach_writes_item_column_and_copies_files(src_root, sid_file, tmp_path):
    summary = attach_sids("ctr", src_root, sid_file, tmp_path / "out", out_name="ctrsid", **QUIET)
    folder = tmp_path / "out" / "ctrsid"
    assert summary["items"] == N_ITEMS and summary["levels"] == 4 and summary["sid_ids_not_in_dataset"] == 1
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"ctrsid.{s}" for s in ("inter", "item", "user", "train.inter", "valid.inter",
                                                     "test.inter", "cold_items", "itemsid"))
    for suffix in ("inter", "user", "train.inter", "test.inter", "cold_items"):
        assert (folder / f"ctrsid.{suffix}").read_bytes() == (src_root / "ctr" / f"ctr.{suffix}").read_bytes()
    old = (src_root / "ctr" / "ctr.item").read_text().splitlines()
    new = (folder / "ctrsid.item").read_text().splitlines()
    # one token column per level (one field, one embedding per level in a CTR model)
    assert new[0] == old[0] + "\tsid_1:token\tsid_2:token\tsid_3:token\tsid_4:token" and len(new) == len(old)
    assert summary["fields"] == ["sid_1", "sid_2", "sid_3", "sid_4"]
    codes = sid_codes()
    for before, after in zip(old[1:], new[1:]):
        item = int(before.split("\t")[0][1:])
        c = codes[item]
        assert after == before + f"\ta_{c[0]}\tb_{c[1]}\tc_{c[2]}\td_{c[3]}"
    ids, written = read_sids(folder / "ctrsid.itemsid")
    assert len(ids) == N_ITEMS + 1 and written.shape == (N_ITEMS + 1, 4)


def test_level_fields_load_in_recbole_and_deepfm_trains(src_root, sid_file, tmp_path, in_tmp):
    attach_sids("ctr", src_root, sid_file, tmp_path / "out", out_name="ctrsid", levels=3, **QUIET)
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"],
                "item": ["item_id", "category", "sid_1", "sid_2", "sid_3"], "user": ["user_id", "age", "gender"]}
    config_dict = ctr_config(tmp_path / "out", load_col=load_col)
    config = Config("DeepFM", "ctrsid", config_dict=config_dict, cmd_args=[])
    dataset = create_dataset(config)
    item = dataset.field2token_id["item_id"]["i0"]
    c = sid_codes()[0]
    for level, prefix in enumerate("abc", start=1):
        field = f"sid_{level}"
        assert dataset.field2type[field] == FeatureType.TOKEN
        token = dataset.field2id_token[field][int(dataset.get_item_feature()[field][item])]
        assert token == f"{prefix}_{c[level - 1]}"

    from recbole.model.context_aware_recommender import DeepFM

    assert {"sid_1", "sid_2", "sid_3"} <= set(DeepFM(config, dataset).token_field_names)
    result = run_recbole(model="DeepFM", dataset="ctrsid", config_dict=dict(config_dict, epochs=2), cmd_args=[],
                         saved=False)
    assert 0.0 <= result["test_result_cold"]["auc"] <= 1.0 and result["test_rows_cold"] > 0


def test_bag_layout_loads_in_recbole_and_deepfm_trains(src_root, sid_file, tmp_path, in_tmp):
    attach_sids("ctr", src_root, sid_file, tmp_path / "out", out_name="ctrsid", levels=3, layout="bag", **QUIET)
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category", "sid"],
                "user": ["user_id", "age", "gender"]}
    config_dict = ctr_config(tmp_path / "out", load_col=load_col)
    config = Config("DeepFM", "ctrsid", config_dict=config_dict, cmd_args=[])
    dataset = create_dataset(config)
    assert dataset.field2type["sid"] == FeatureType.TOKEN_SEQ
    tokens = dataset.field2id_token["sid"]
    assert {t for t in tokens if t != "[PAD]"} <= {f"{p}_{k}" for p in "abc" for k in range(4)}
    # item i0's sid feature holds its 3 level tokens
    sid_seq = dataset.get_item_feature()["sid"][dataset.field2token_id["item_id"]["i0"]]
    got = sorted(tokens[t] for t in sid_seq.tolist() if t != 0)
    c = sid_codes()[0]
    assert got == sorted([f"a_{c[0]}", f"b_{c[1]}", f"c_{c[2]}"])

    from recbole.model.context_aware_recommender import DeepFM

    assert "sid" in DeepFM(config, dataset).token_seq_field_names

    result = run_recbole(model="DeepFM", dataset="ctrsid", config_dict=dict(config_dict, epochs=2), cmd_args=[],
                         saved=False)
    assert 0.0 <= result["test_result_cold"]["auc"] <= 1.0 and result["test_rows_cold"] > 0


def test_missing_items_error_and_nothing_written(src_root, tmp_path):
    partial = tmp_path / "partial.itemsid"
    write_sids(partial, [f"i{i}" for i in range(3, N_ITEMS)], sid_codes()[3:])
    with pytest.raises(DataError, match=r"no SID for 3 of 40 items of dataset 'ctr'.*i0"):
        attach_sids("ctr", src_root, partial, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out" / "ctr").exists() or not any((tmp_path / "out" / "ctr").iterdir())


def test_bad_inputs(src_root, sid_file, tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        attach_sids("nope", src_root, sid_file, tmp_path / "out", **QUIET)
    with pytest.raises(DataError, match="SID file not found"):
        attach_sids("ctr", src_root, tmp_path / "missing.itemsid", tmp_path / "out", **QUIET)
    with pytest.raises(DataError, match="input dataset's folder"):
        attach_sids("ctr", src_root, sid_file, src_root, **QUIET)
    with pytest.raises(DataError, match="only 4 levels"):
        attach_sids("ctr", src_root, sid_file, tmp_path / "out", levels=5, **QUIET)
    with pytest.raises(DataError, match="already has a 'category' column"):
        attach_sids("ctr", src_root, sid_file, tmp_path / "out", field="category", layout="bag", **QUIET)
    attach_sids("ctr", src_root, sid_file, tmp_path / "out", **QUIET)
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        attach_sids("ctr", src_root, sid_file, tmp_path / "out", **QUIET)
    attach_sids("ctr", src_root, sid_file, tmp_path / "out", overwrite=True, **QUIET)


def test_dataset_without_item_file_gets_one(tmp_path, sid_file):
    folder = tmp_path / "src" / "bare"
    folder.mkdir(parents=True)
    (folder / "bare.inter").write_text("user_id:token\titem_id:token\nu1\ti2\nu2\ti0\n")
    attach_sids("bare", tmp_path / "src", sid_file, tmp_path / "out", levels=2, **QUIET)
    c = sid_codes()
    assert (tmp_path / "out" / "bare" / "bare.item").read_text().splitlines() == [
        "item_id:token\tsid_1:token\tsid_2:token", f"i2\ta_{c[2][0]}\tb_{c[2][1]}", f"i0\ta_{c[0][0]}\tb_{c[0][1]}"]
    attach_sids("bare", tmp_path / "src", sid_file, tmp_path / "bag", levels=2, layout="bag", **QUIET)
    assert (tmp_path / "bag" / "bare" / "bare.item").read_text().splitlines() == [
        "item_id:token\tsid:token_seq", f"i2\ta_{c[2][0]} b_{c[2][1]}", f"i0\ta_{c[0][0]} b_{c[0][1]}"]


def test_cli(src_root, sid_file, tmp_path):
    args = ["--dataset", "ctr", "--data-path", str(src_root), "--sids", str(sid_file), "--out", str(tmp_path / "o")]
    proc = subprocess.run([PYTHON, "-m", "dataset_prep.attach_sids", *args, "--levels", "3"], env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "ctr" / "ctr.item").is_file() and '"levels": 3' in proc.stdout
    bad = subprocess.run([PYTHON, "-m", "dataset_prep.attach_sids", *args[:-1], str(tmp_path / "o")],
                         env=cli_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "--overwrite" in bad.stderr
    assert "Traceback" not in bad.stderr

    from dataset_prep.cli import build_parser

    if "attach-sids" not in build_parser()._subparsers._group_actions[0].choices:
        pytest.skip("attach-sids is not wired into dataset_prep/cli.py yet")
    proc = subprocess.run([PYTHON, "-m", "dataset_prep", "attach-sids", *args, "--overwrite"], env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_codes_beyond_any_codebook_are_one_line_errors(src_root, tmp_path):
    """A 25-digit code raised OverflowError (int64) before; now one line naming the file and the line."""
    bad = tmp_path / "bad.itemsid"
    bad.write_text("item_id:token\tsid:token_seq\ni1\ta_1 b_2\ni2\ta_1234567890123456789012345 b_0\n")
    out = subprocess.run([PYTHON, "-m", "dataset_prep", "attach-sids", "--dataset", "ctr", "--data-path",
                          str(src_root), "--sids", str(bad), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=cli_env())
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and f"{bad}:3: SID code" in err[0] and "out of range" in err[0]
    assert not (tmp_path / "out").exists()
