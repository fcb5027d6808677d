"""Cold-start evaluation for CTR models: AUC / LogLoss on all, warm and cold test rows, checked against sklearn.

Also home of the tiny labeled (CTR) fixture shared by test_coins.py and test_attach_sids.py: mixed ratings
1..5 (``threshold: {rating: 4}`` makes the 0/1 label), item text for the semantic embeddings, user profiles.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from dataset_prep.cold_split import cold_split
from recbole_sid.config import Config
from recbole_sid.data.cold import read_cold_items
from recbole_sid.evaluation import warm_cold_loaders
from recbole_sid.quick_start import load_data_and_model, run_recbole

TOPICS = ["space rocket orbit", "garden flower soil", "kitchen knife cook", "guitar music chord"]


def write_ctr_dataset(root: Path, name: str = "ctr", n_users: int = 40, n_items: int = 40, per_user: int = 14,
                      seed: int = 0) -> Path:
    """``root/name/name.{inter,item,user}``: users like one of 4 topics; ratings 4-5 mostly on that topic, 1-3
    elsewhere (15 % flipped), so labels are mixed and both text and clicks carry signal. Returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    item_topic = np.arange(n_items) % len(TOPICS)
    with open(folder / f"{name}.item", "w") as f:
        f.write("item_id:token\ttitle:token_seq\tcategory:token\n")
        for i in range(n_items):
            words = TOPICS[item_topic[i]].split() + [f"w{rng.integers(0, 20)}"]
            f.write(f"i{i}\t{' '.join(words)}\t{TOPICS[item_topic[i]].split()[0]}\n")
    with open(folder / f"{name}.user", "w") as f:
        f.write("user_id:token\tage:token\tgender:token\n")
        for u in range(n_users):
            f.write(f"u{u}\t{20 + u % 4 * 10}\t{'MF'[u % 2]}\n")
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u in range(n_users):
            for t, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
                liked = (item_topic[i] == u % len(TOPICS)) != (rng.random() < 0.15)
                rating = int(rng.integers(4, 6)) if liked else int(rng.integers(1, 4))
                f.write(f"u{u}\ti{i}\t{rating}\t{1000 * u + t}\n")
    return Path(root)


def ctr_config(root, **extra) -> dict:
    """Config of a fast CTR run on the tiny cold-split fixture (COINS keys are ignored by other models)."""
    config = {
        "data_path": str(root), "benchmark_filename": ["train", "valid", "test"], "threshold": {"rating": 4},
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "item": ["item_id", "title", "category"], "user": ["user_id", "age", "gender"]},
        "show_progress": False, "epochs": 3, "train_batch_size": 64, "eval_batch_size": 4096,
        "embedding_size": 8, "mlp_hidden_size": [16], "gate_hidden_size": [8], "semantic_dim": 16,
        "coins_codebook_size": 4, "coins_opq_subspaces": 4, "coins_opq_nbits": 2, "coins_kmeans_iters": 5,
        "coins_opq_iters": 5, "cf_embedding_size": 16, "adapter_hidden_dims": [16], "cf_epochs": 3, "adapter_epochs": 3,
    }
    config.update(extra)
    return config


@pytest.fixture(scope="module")
def ctr_root(tmp_path_factory):
    root = write_ctr_dataset(tmp_path_factory.mktemp("ctr"))
    cold_split("ctr", root, cold_ratio=0.2, seed=1, log=lambda *a: None)
    return root


def _predictions(model, loader):
    preds, labels, items, users = [], [], [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            interaction = batch[0]
            preds.append(model.predict(interaction))
            labels.append(interaction["label"])
            items.append(interaction["item_id"])
            users.append(interaction["user_id"])
    return (torch.cat(preds).numpy().astype(np.float64), torch.cat(labels).numpy(), torch.cat(items).numpy(),
            torch.cat(users).numpy())


def _gauc(y, p, users):
    """Per-user sklearn AUC weighted by the user's rows, over users with both labels (by hand); None without one."""
    total = weight = 0.0
    for user in np.unique(users):
        rows = users == user
        if 0 < y[rows].sum() < rows.sum():
            total += roc_auc_score(y[rows], p[rows]) * rows.sum()
            weight += rows.sum()
    return total / weight if weight else None


def _close(recbole_value, exact, places):
    # RecBole rounds each metric to metric_decimal_place places
    assert abs(float(recbole_value) - exact) <= 0.5 * 10 ** -places + 1e-9, (recbole_value, exact)


@pytest.mark.parametrize("model_name", ["DeepFM", "COINS"])
def test_ctr_breakdown_matches_sklearn(model_name, ctr_root, in_tmp):
    result = run_recbole(model=model_name, dataset="ctr", config_dict=ctr_config(ctr_root, checkpoint_dir=str(in_tmp)),
                         cmd_args=[], saved=True)
    for key in ("test_result", "test_result_warm", "test_result_longtail", "test_result_cold"):
        assert {"auc", "logloss"} <= set(result[key]) <= {"auc", "gauc", "logloss"}, key
    config, model, dataset, train_data, _, test_data = load_data_and_model(result["model_file"])
    preds, labels, items, users = _predictions(model, test_data)
    cold_ids = {dataset.field2token_id["item_id"][i] for i in read_cold_items(ctr_root / "ctr" / "ctr.cold_items")}
    is_cold = np.isin(items, list(cold_ids))
    assert is_cold.any() and (~is_cold).any()
    assert result["test_rows_cold"] == int(is_cold.sum()) and result["test_rows_warm"] == int((~is_cold).sum())
    # long tail: items with 1..long_tail_max_clicks label-1 training rows
    train = train_data._dataset.inter_feat
    clicks = np.bincount(train["item_id"].numpy()[train["label"].numpy() > 0.5], minlength=dataset.item_num)
    limit = config["long_tail_max_clicks"]
    is_tail = (clicks[items] >= 1) & (clicks[items] <= limit) & ~is_cold
    assert is_tail.any() and (~is_tail & ~is_cold).any(), "the fixture must have long-tail and head items"
    assert result["test_rows_longtail"] == int(is_tail.sum())
    places = config["metric_decimal_place"]
    assert "gauc" in result["test_result"]
    for key, rows in (("test_result", slice(None)), ("test_result_warm", ~is_cold),
                      ("test_result_longtail", is_tail), ("test_result_cold", is_cold)):
        y, p = labels[rows], preds[rows]
        assert 0 < y.sum() < len(y), f"{key}: the fixture must give both labels"
        _close(result[key]["auc"], roc_auc_score(y, p), places)
        expected = _gauc(y, p, users[rows])
        if expected is None:  # no user with both labels among these rows (one warm test row per user here)
            assert "gauc" not in result[key], key
        else:
            _close(result[key]["gauc"], expected, places)
        _close(result[key]["logloss"], log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]), places)


def test_labeled_loaders_split_rows_and_keep_labels(ctr_root):
    from recbole.data import create_dataset, data_preparation

    config = Config("DeepFM", "ctr", config_dict=ctr_config(ctr_root), cmd_args=[])
    dataset = create_dataset(config)
    _, _, test = data_preparation(config, dataset)
    loaders = warm_cold_loaders(config, dataset, test)
    cold = {dataset.field2token_id["item_id"][i] for i in read_cold_items(ctr_root / "ctr" / "ctr.cold_items")}
    parts = {name: loader._dataset.inter_feat for name, loader in loaders.items()}
    assert set(parts["cold"]["item_id"].tolist()) <= cold and not set(parts["warm"]["item_id"].tolist()) & cold
    assert len(parts["cold"]) + len(parts["warm"]) == len(test._dataset.inter_feat)
    # the label column travels with the rows (labeled mode): same multiset of (user, item, label) rows
    whole = test._dataset.inter_feat
    key = lambda f: sorted(zip(f["user_id"].tolist(), f["item_id"].tolist(), f["label"].tolist()))  # noqa: E731
    assert key(whole) == sorted(key(parts["cold"]) + key(parts["warm"]))
    assert type(loaders["cold"]) is type(test)


def test_gauc_by_hand():
    from recbole_sid.evaluation import gauc

    # user a: AUC 1 (2 rows); b: AUC 0 (3 rows); c: positives only (left out); d: a tie, AUC 0.5 (2 rows)
    users = ["a", "a", "b", "b", "b", "c", "c", "d", "d"]
    scores = [0.9, 0.1, 0.2, 0.8, 0.5, 0.3, 0.4, 0.5, 0.5]
    labels = [1, 0, 1, 0, 0, 1, 1, 1, 0]
    value, counted = gauc(scores, labels, users)
    assert counted == 3
    assert value == pytest.approx((1.0 * 2 + 0.0 * 3 + 0.5 * 2) / 7)
    assert gauc([0.1, 0.2], [1, 1], ["a", "a"]) == (None, 0)


def test_item_id_dropout_for_ctr_baselines(ctr_root, in_tmp):
    """item_id_dropout: training rows drop their item id with probability p; at evaluation, items without training
    rows use the padding id, so their (never trained) ID embedding cannot change a prediction."""
    from recbole_sid.exceptions import ConfigError
    from recbole_sid.quick_start import build_config, prepare_run

    config = build_config("DeepFM", "ctr", None, ctr_config(ctr_root, item_id_dropout=0.5), [])
    _, train_data, _, test_data, model = prepare_run(config)
    batch = next(iter(test_data))[0]
    items = batch["item_id"]
    cold = ~model.item_id_warm[items]
    assert cold.any() and (~cold).any()
    model.eval()
    before = model.predict(batch).detach()
    table = model.token_embedding_table.embedding.weight
    offset = int(model.token_embedding_table.offsets[model.token_field_names.index("item_id")])
    with torch.no_grad():
        table[items + offset] += 3.0  # every test item's own ID embedding moves
    after = model.predict(batch).detach()
    assert torch.allclose(before[cold], after[cold], atol=1e-6)
    assert not torch.allclose(before[~cold], after[~cold], atol=1e-4)
    # training: about p of the rows lose their id (the model sees a copy; the batch itself is untouched)
    import recbole_sid.model.item_id_dropout as dropout_module

    model.train()
    train_batch = next(iter(train_data))
    torch.manual_seed(0)
    ids_before = train_batch["item_id"].clone()

    captured = {}
    real = dropout_module._replace_items

    def spy(interaction, field, new_items):
        captured["ids"] = new_items
        return real(interaction, field, new_items)

    dropout_module._replace_items = spy
    try:
        model.calculate_loss(train_batch)
    finally:
        dropout_module._replace_items = real
    dropped = float((captured["ids"] == 0).float().mean())
    assert 0.3 < dropped < 0.7 and torch.equal(train_batch["item_id"], ids_before)
    with pytest.raises(ConfigError, match="item_id_dropout"):
        prepare_run(build_config("COINS", "ctr", None, ctr_config(ctr_root, item_id_dropout=0.5), []))
