"""Tokenizer models (RQKMeans, RQVAE, QuantAlign, AlignQuant, DAS) end to end: SID export, quality report,
shared scorer on cold items, warm/cold evaluation through the runner."""
import json
import subprocess

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from conftest import PYTHON, TINY_SID_CONFIG, cli_env, write_tiny_dataset
from dataset_prep.cold_split import cold_split
from recbole_sid.atomic_io import read_sids
from recbole_sid.config import Config
from recbole_sid.data.cold import read_cold_items
from recbole_sid.evaluation import warm_cold_loaders
from recbole_sid.quick_start import run_recbole

MODELS = ["RQKMeans", "RQVAE", "QuantAlign", "AlignQuant", "DAS"]


@pytest.fixture(scope="module")
def cold_root(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("tok"), n_users=80, n_items=60)
    cold_split("tiny", root, cold_ratio=0.2, seed=1, log=lambda *a: None)
    return root


def cold_config(root, **extra):
    return dict(TINY_SID_CONFIG, data_path=str(root), benchmark_filename=["train", "valid", "test"], **extra)


@pytest.mark.parametrize("model", MODELS)
def test_tokenizer_runs_exports_and_reports(model, cold_root, tmp_path):
    result = run_recbole(model=model, dataset="tiny", config_dict=cold_config(cold_root, checkpoint_dir=str(tmp_path)),
                         cmd_args=[])
    for key in ("test_result", "test_result_warm", "test_result_cold"):
        assert "recall@10" in result[key], key
    ids, codes = read_sids(tmp_path / "tiny.itemsid")
    assert len(ids) == 60 and codes.shape[1] == TINY_SID_CONFIG["sid_levels"] + 1
    assert len({tuple(c) for c in codes}) == len(ids)  # the dedup level makes every SID unique
    assert codes[:, :-1].max() < TINY_SID_CONFIG["sid_codebook_size"]
    report = json.loads((tmp_path / f"tiny-{model}.sid_quality.json").read_text())
    items = report["items"]
    assert items["n_items"] == 60 and items["collision_rate_after_dedup"] == 0.0
    assert 0.0 <= items["collision_rate"] < 1.0 and items["dedup_size"] == items["largest_bucket"]
    assert len(items["levels"]) == TINY_SID_CONFIG["sid_levels"]
    assert items["recon_mse"] is not None and items["neighbor_overlap"] is not None
    assert result["sid_files"]["itemsid"].endswith("tiny.itemsid")
    if model == "DAS":
        uids, ucodes = read_sids(tmp_path / "tiny.usersid")
        assert len(uids) == 80 and "users" in report


def test_cold_items_get_real_scores(cold_root):
    """An item never seen in training is scored from its SID codes, like any other item."""
    config = Config("RQKMeans", "tiny", config_dict=cold_config(cold_root), cmd_args=[])
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    model = config.model_class(config, train._dataset)
    model.fit_tokenizer(train)
    cold = [dataset.field2token_id["item_id"][i] for i in read_cold_items(cold_root / "tiny" / "tiny.cold_items")]
    trained_items = set(train._dataset.inter_feat["item_id"].tolist())
    assert not set(cold) & trained_items
    users = torch.arange(1, 6)
    scores = model.full_sort_predict({"user_id": users}).view(len(users), -1)
    manual = model.scorer.user_vectors(users) @ model.scorer.item_vectors(model.item_codes).T
    assert torch.allclose(scores, manual)
    cold_scores = scores[:, cold]
    assert torch.isfinite(cold_scores).all() and cold_scores.std() > 0
    # cold items sharing all codes with a warm item get exactly its score: the score depends on the SID only
    codes = model.item_codes
    for c in cold:
        twins = [i for i in trained_items if torch.equal(codes[i], codes[c])]
        if twins:
            assert torch.allclose(scores[:, c], scores[:, twins[0]])


def test_warm_cold_loaders_split_test_rows(cold_root):
    config = Config("BPR", "tiny", config_dict=cold_config(cold_root), cmd_args=[])
    dataset = create_dataset(config)
    _, _, test = data_preparation(config, dataset)
    loaders = warm_cold_loaders(config, dataset, test)
    cold = {dataset.field2token_id["item_id"][i] for i in read_cold_items(cold_root / "tiny" / "tiny.cold_items")}
    test_items = test._dataset.inter_feat["item_id"].tolist()
    cold_rows = loaders["cold"]._dataset.inter_feat["item_id"].tolist()
    warm_rows = loaders["warm"]._dataset.inter_feat["item_id"].tolist()
    assert set(cold_rows) <= cold and not set(warm_rows) & cold
    assert len(cold_rows) + len(warm_rows) == len(test_items) and cold_rows
    # the cold loader ranks every item but counts only cold positives; other test items are masked like history
    for uid in loaders["cold"].uid_list.tolist():
        positives = set(loaders["cold"].uid2positive_item[uid].tolist())
        assert positives <= cold and positives


def test_baseline_gets_warm_cold_breakdown(cold_root, in_tmp):
    result = run_recbole(model="BPR", dataset="tiny", config_dict=cold_config(cold_root), cmd_args=[], saved=False)
    assert result["test_result_cold"]["recall@10"] >= 0 and result["test_rows_cold"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_cli_on_ml100k(model, in_tmp):
    """`run_recbole --model=<tokenizer> --dataset=ml-100k` works with the embedded data and default encoder."""
    fast = ["--epochs=1", "--tokenizer_epochs=2", "--cf_epochs=1", "--adapter_epochs=1", "--show_progress=False",
            f"--semantic_cache_dir={in_tmp / 'cache'}"]
    out = subprocess.run([PYTHON, "-m", "recbole_sid", f"--model={model}", "--dataset=ml-100k", *fast], cwd=in_tmp,
                         env=cli_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test result" in out.stdout
    ids, codes = read_sids(in_tmp / "saved" / "ml-100k.itemsid")
    assert len(ids) == 1682 and len({tuple(c) for c in codes}) == 1682
    assert "semantic embeddings" in out.stderr.lower()  # the default encoder's build is logged
    assert np.isfinite(json.loads((in_tmp / "saved" / f"ml-100k-{model}.sid_quality.json").read_text())
                       ["items"]["collision_rate"])
