"""Warm-only training negatives, validation rows and per-user test values on a cold split (tiny dataset)."""
import numpy as np
import pytest
import torch

from conftest import TINY_SID_CONFIG, write_tiny_dataset
from dataset_prep.cold_split import cold_split
from recbole_sid.data.cold import read_cold_items
from recbole_sid.data.negatives import sample_items, warm_item_pool, warm_negatives_enabled
from recbole_sid.exceptions import ConfigError
from recbole_sid.quick_start import build_config, prepare_run, run_recbole


@pytest.fixture
def cold_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_tiny_dataset(tmp_path / "data")
    cold_split("tiny", root, cold_ratio=0.25, seed=1, log=lambda *a, **k: None)
    return root


def _config(root, model="BPR", **extra):
    config = dict(TINY_SID_CONFIG, data_path=str(root), benchmark_filename=["train", "valid", "test"],
                  epochs=1, **extra)
    return build_config(model, "tiny", None, config, [])


def _cold_ids(root, dataset):
    token2id = dataset.field2token_id[dataset.iid_field]
    return {token2id[t] for t in read_cold_items(root / "tiny" / "tiny.cold_items") if t in token2id}


def _drawn_negatives(train_data, epochs=5):
    drawn = []
    for _ in range(epochs):
        for batch in train_data:
            drawn += batch["neg_item_id"].tolist()
    return set(drawn)


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_no_cold_item_is_ever_sampled(cold_root, distribution):
    config = _config(cold_root, train_neg_sample_args={"distribution": distribution, "sample_num": 1,
                                                       "alpha": 1.0, "dynamic": False, "candidate_num": 0})
    assert warm_negatives_enabled(config)  # auto: the cold list is beside the dataset
    dataset, train_data, _, _, _ = prepare_run(config)
    cold = _cold_ids(cold_root, dataset)
    assert cold
    drawn = _drawn_negatives(train_data)
    assert drawn and not (drawn & cold)
    train_items = set(train_data._dataset.inter_feat[dataset.iid_field].tolist())
    assert drawn <= train_items  # only items with training rows


def test_without_warm_negatives_cold_items_are_sampled(cold_root):
    """The control: RecBole's own sampler does draw the held-out items (what warm_negatives prevents)."""
    config = _config(cold_root, warm_negatives=False)
    assert not warm_negatives_enabled(config)
    dataset, train_data, _, _, _ = prepare_run(config)
    assert _drawn_negatives(train_data) & _cold_ids(cold_root, dataset)


def test_sid_tokenizers_draw_from_the_warm_pool(cold_root):
    config = _config(cold_root, model="LETTER")
    dataset, train_data, _, _, model = prepare_run(config)
    pool = model.tokenizer_input.negative_items
    train_items = torch.as_tensor(train_data._dataset.inter_feat[dataset.iid_field])
    assert torch.equal(pool, warm_item_pool(train_items))
    assert not (set(pool.tolist()) & _cold_ids(cold_root, dataset))
    drawn = sample_items(5000, dataset.item_num, torch.Generator().manual_seed(0), pool)
    assert set(drawn.tolist()) == set(pool.tolist())
    off = _config(cold_root, model="LETTER", warm_negatives=False)
    assert prepare_run(off)[4].tokenizer_input.negative_items is None


def test_warm_negatives_key_is_checked(cold_root):
    with pytest.raises(ConfigError, match="warm_negatives"):
        warm_negatives_enabled({"warm_negatives": "sometimes"})


@pytest.mark.parametrize("rows", ["all", "warm", "cold"])
def test_valid_rows(cold_root, rows):
    dataset, _, valid_data, _, _ = prepare_run(_config(cold_root, valid_rows=rows))
    cold = _cold_ids(cold_root, dataset)
    items = set(valid_data._dataset.inter_feat[dataset.iid_field].tolist())
    if rows == "warm":
        assert items and not (items & cold)
    elif rows == "cold":
        assert items and items <= cold
    else:
        assert items & cold and items - cold


def test_per_user_values_average_to_recbole_metrics(cold_root):
    result = run_recbole(model="BPR", dataset="tiny", config_dict=dict(
        TINY_SID_CONFIG, data_path=str(cold_root), benchmark_filename=["train", "valid", "test"], epochs=2),
        cmd_args=[])
    for part, key in (("all", "test_result"), ("warm", "test_result_warm"), ("cold", "test_result_cold")):
        values = result["per_user"][part]
        assert len(values["users"]) == len(values["recall@10"]) == len(values["ndcg@10"]) > 0
        for metric in ("recall@10", "ndcg@10"):
            assert round(float(np.mean(values[metric])), 4) == pytest.approx(result[key][metric], abs=1e-4)
    assert result["epoch_cap"] == 2
