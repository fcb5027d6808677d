"""Real data: amazon-scientific JSON -> atomic files -> embeddings -> cold split -> RecBole loads it.

Reads ``../shared/data/amazon-scientific`` (or ``$RECBOLE_SID_SHARED_DATA/amazon-scientific``); skipped when absent.
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import recbole_sid  # noqa: F401  (compat shims before RecBole's Config)
from recbole.config import Config
from recbole.data import create_dataset, data_preparation

from dataset_prep.cli import main
from dataset_prep.evaluate import category_agreement
from recbole_sid.atomic_io import read_vectors
from recbole_sid.data import item_semantic_embeddings, read_cold_items, user_semantic_embeddings
from recbole_sid.data.text import read_atomic_table

SHARED = Path(os.environ.get("RECBOLE_SID_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
AMAZON = SHARED / "amazon-scientific"
NAME = "amazon-scientific"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not (AMAZON / "Scientific.inter.json").is_file() or not (AMAZON / "Scientific.item.json").is_file():
        pytest.skip(f"amazon-scientific data not found at {AMAZON} (set RECBOLE_SID_SHARED_DATA to the folder "
                    f"holding amazon-scientific/)")
    root = tmp_path_factory.mktemp("amazon")
    data = root / "data"
    assert main(["convert-json", "--inter", str(AMAZON / "Scientific.inter.json"), "--item",
                 str(AMAZON / "Scientific.item.json"), "--dataset", NAME, "--out", str(data)]) == 0
    assert main(["embed", "--dataset", NAME, "--data-path", str(data)]) == 0
    assert main(["cold-split", "--dataset", NAME, "--data-path", str(data), "--cold-ratio", "0.1"]) == 0
    return root, data / NAME


def test_atomic_files(prepared):
    _, folder = prepared
    inter, types = read_atomic_table(folder / f"{NAME}.inter")
    assert len(inter) == 58492 and inter["user_id"].nunique() == 8317 and inter["item_id"].nunique() == 4344
    item, types = read_atomic_table(folder / f"{NAME}.item")
    assert len(item) == 4344 and types["categories"] == "token_seq" and types["category1"] == "token"
    assert not item["title"].str.contains("\t").any()
    assert item["description"].str.split().map(len).max() <= 64
    cats = item["categories"][item["categories"] != ""]
    assert cats.str.startswith("Industrial_&_Scientific").all()  # the root is common to every categorised item
    assert (item["category1"] != "").sum() == len(cats) == 4213
    ids, vecs, _, _ = read_vectors(folder / f"{NAME}.itememb")
    assert len(ids) == 4344 and vecs.shape == (4344, 64)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)


def test_recbole_loads_cold_split_and_embeddings(prepared, monkeypatch):
    root, folder = prepared
    monkeypatch.chdir(root)
    config = Config(model="BPR", dataset=NAME, config_dict={
        "data_path": str(folder.parent), "benchmark_filename": ["train", "valid", "test"], "load_col": None,
        "show_progress": False, "checkpoint_dir": str(root / "saved")})
    dataset = create_dataset(config)
    assert dataset.item_num == 4345 and dataset.user_num == 8318 and dataset.inter_num == 58492
    train_data, _, _ = data_preparation(config, dataset)
    train = train_data._dataset
    token2id = dataset.field2token_id["item_id"]
    cold = read_cold_items(folder / f"{NAME}.cold_items")
    assert len(cold) == 434 and all(c in token2id for c in cold)
    cold_ids = torch.tensor([token2id[c] for c in cold])
    assert not torch.isin(train.inter_feat["item_id"], cold_ids).any()

    emb = item_semantic_embeddings(config, train)
    ids, vecs, _, _ = read_vectors(folder / f"{NAME}.itememb")
    rows = torch.tensor([token2id[i] for i in ids])
    np.testing.assert_allclose(emb[rows].numpy(), vecs)
    assert torch.all(emb[0] == 0)
    users = user_semantic_embeddings(config, train, emb)
    assert users.shape == (dataset.user_num, 64) and torch.isfinite(users).all()


def test_neighbours_share_first_level_category(prepared):
    _, folder = prepared
    ids, vecs, _, _ = read_vectors(folder / f"{NAME}.itememb")
    item, _ = read_atomic_table(folder / f"{NAME}.item")
    label = dict(zip(item["item_id"], item["category1"]))
    result = category_agreement(vecs, [label[i] for i in ids], k=10)
    assert result["categories"] == 25 and result["queries"] == 4213
    assert abs(result["random_sampled"] - result["random_expected"]) < 0.01
    assert result["share"] > 5 * result["random_expected"]
