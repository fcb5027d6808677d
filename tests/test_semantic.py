"""recbole_sid.data.semantic: item / user semantic embeddings aligned with RecBole's internal ids."""
import logging
import os

import numpy as np
import pytest
import torch

import recbole_sid  # noqa: F401  (compat shims before RecBole's Config)
from recbole.config import Config
from recbole.data import create_dataset, data_preparation

from recbole_sid.atomic_io import read_vectors, write_vectors
from recbole_sid.data import item_semantic_embeddings, user_semantic_embeddings
from recbole_sid.data import semantic as semantic_module
from recbole_sid.exceptions import DataError

NAME = "tinysem"
USERS = ["u1", "u2", "u3", "u4"]
ITEMS = [f"i{k}" for k in range(1, 9)]
TEXTS = {
    "i1": ("red apple fruit", "fruit"), "i2": ("green apple fruit", "fruit"), "i3": ("yellow banana fruit", "fruit"),
    "i4": ("steel hammer tool", "tool"), "i5": ("iron wrench tool", "tool"), "i6": ("brass screwdriver tool", "tool"),
    "i7": ("blue paint colour", "paint"), "i8": ("white paint colour", "paint"),
}
# each user: 5 interactions in time order; RecBole RS [0.6, 0.2, 0.2] by time -> 3 train, 1 valid, 1 test
HISTORY = {
    "u1": ["i1", "i2", "i4", "i7", "i8"],
    "u2": ["i3", "i5", "i6", "i1", "i2"],
    "u3": ["i7", "i8", "i1", "i3", "i4"],
    "u4": ["i4", "i5", "i2", "i6", "i3"],
}


def _write_dataset(root, with_user=False, with_itememb=True, extra_user=None):
    folder = root / NAME
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    t = 0
    for u, seq in HISTORY.items():
        for i in seq:
            t += 1
            lines.append(f"{u}\t{i}\t{t}")
    (folder / f"{NAME}.inter").write_text("\n".join(lines) + "\n")
    rows = ["item_id:token\ttitle:token_seq\tgroup:token"] + [f"{i}\t{t}\t{g}" for i, (t, g) in TEXTS.items()]
    (folder / f"{NAME}.item").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    item_vecs = {i: rng.standard_normal(6).astype(np.float32) for i in ITEMS}
    if with_itememb:
        write_vectors(folder / f"{NAME}.itememb", ITEMS, np.stack([item_vecs[i] for i in ITEMS]))
    user_vecs = {}
    if with_user:
        users = USERS + ([extra_user] if extra_user else [])
        prof = ["user_id:token\tgender:token\toccupation:token\tzip_code:token"]
        for k, u in enumerate(users):
            prof.append(f"{u}\t{'MF'[k % 2]}\t{['nurse', 'smith', 'clerk'][k % 3]}\t{10000 + k}")
        (folder / f"{NAME}.user").write_text("\n".join(prof) + "\n")
        user_vecs = {u: rng.standard_normal(4).astype(np.float32) for u in users}
        write_vectors(folder / f"{NAME}.useremb", users, np.stack([user_vecs[u] for u in users]),
                      id_field="user_id", vec_field="user_emb")
    return folder, item_vecs, user_vecs


def _config(root, **extra):
    cfg = {"data_path": str(root), "load_col": None, "show_progress": False, "seed": 1, "reproducibility": True,
           "eval_args": {"split": {"RS": [0.6, 0.2, 0.2]}, "order": "TO", "group_by": "user", "mode": "full"},
           "checkpoint_dir": str(root / "saved")}
    cfg.update(extra)
    return Config(model="BPR", dataset=NAME, config_dict=cfg)


def _l2(x):
    n = np.linalg.norm(x)
    return x / n if n > 0 else x


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, item_vecs, user_vecs = _write_dataset(tmp_path)
    return tmp_path, item_vecs


def test_item_embeddings_follow_recbole_ids(tiny):
    root, item_vecs = tiny
    config = _config(root)
    dataset = create_dataset(config)
    emb = item_semantic_embeddings(config, dataset)
    assert isinstance(emb, torch.Tensor) and emb.dtype == torch.float32
    assert emb.shape == (dataset.item_num, 6)
    assert torch.all(emb[0] == 0)  # [PAD]
    token2id = dataset.field2token_id[dataset.iid_field]
    for raw, vec in item_vecs.items():
        np.testing.assert_allclose(emb[token2id[raw]].numpy(), vec, rtol=1e-5, atol=1e-6)


def test_explicit_item_emb_file_wins(tiny):
    root, _ = tiny
    other = root / "other.emb"
    write_vectors(other, ITEMS, np.ones((len(ITEMS), 3)))
    config = _config(root, item_emb_file=str(other))
    emb = item_semantic_embeddings(config, create_dataset(config))
    assert emb.shape[1] == 3 and torch.all(emb[1:] == 1)
    config = _config(root, item_emb_file=str(root / "nope.emb"))
    with pytest.raises(DataError, match="item_emb_file"):
        item_semantic_embeddings(config, create_dataset(config))


def test_missing_vectors_error_or_zero(tiny, caplog):
    root, item_vecs = tiny
    partial = root / "partial.emb"
    keep = ITEMS[:5]
    write_vectors(partial, keep, np.stack([item_vecs[i] for i in keep]))
    config = _config(root, item_emb_file=str(partial))
    dataset = create_dataset(config)
    with pytest.raises(DataError, match=r"no vector for 3 of 8 items.*i6.*missing_embedding"):
        item_semantic_embeddings(config, dataset)
    config["missing_embedding"] = "zero"
    caplog.set_level(logging.WARNING)
    emb = item_semantic_embeddings(config, dataset)
    token2id = dataset.field2token_id["item_id"]
    assert torch.all(emb[token2id["i7"]] == 0) and emb[token2id["i1"]].abs().sum() > 0
    assert any("3 items have no vector" in r.getMessage() for r in caplog.records)


def test_build_from_item_text_caches_and_rebuilds(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    folder, _, _ = _write_dataset(tmp_path, with_itememb=False)
    caplog.set_level(logging.INFO)
    config = _config(tmp_path, semantic_dim=4)
    dataset = create_dataset(config)
    emb = item_semantic_embeddings(config, dataset)
    assert emb.shape == (dataset.item_num, 4)
    assert torch.all(emb[0] == 0)
    np.testing.assert_allclose(emb[1:].norm(dim=1).numpy(), 1.0, atol=1e-5)
    built = [r.getMessage() for r in caplog.records if "built" in r.getMessage()]
    assert built and "semantic_cache" in built[0] and "['title', 'group']" in built[0]
    caches = sorted((folder / "semantic_cache").iterdir())
    assert len(caches) == 1 and not (folder / f"{NAME}.itememb").exists()
    # same content -> cache reused; identical values
    caplog.clear()
    again = item_semantic_embeddings(config, dataset)
    assert torch.equal(emb, again)
    assert any("reusing cache" in r.getMessage() for r in caplog.records)
    # same-category items are closer than cross-category ones
    t2i = dataset.field2token_id["item_id"]
    sim = emb @ emb.T
    assert sim[t2i["i4"], t2i["i5"]] > sim[t2i["i4"], t2i["i7"]]
    # fields, dim or file content changes -> new cache key
    config["semantic_text_fields"] = ["title"]
    item_semantic_embeddings(config, dataset)
    config["semantic_dim"] = 3
    assert item_semantic_embeddings(config, dataset).shape[1] == 3
    with open(folder / f"{NAME}.item", "a") as f:
        f.write("i9\tnew item\tfruit\n")
    item_semantic_embeddings(config, dataset)
    assert len(list((folder / "semantic_cache").iterdir())) == 4


def test_build_refuses_item_rows_with_a_wrong_number_of_columns(tmp_path, monkeypatch):
    """The in-process build reads .item as raw text: a row with a tab too many is an error, not a shifted field."""
    from types import SimpleNamespace

    monkeypatch.chdir(tmp_path)
    folder, _, _ = _write_dataset(tmp_path, with_itememb=False)
    with open(folder / f"{NAME}.item", "a") as f:
        f.write("i9\tnew item\tfruit\textra\n")
    config = {"data_path": str(folder), "dataset": NAME, "semantic_dim": 4}  # RecBole: data_path/dataset
    with pytest.raises(DataError, match=rf"{NAME}.item:10: 4 tab-separated columns, the header has 3"):
        item_semantic_embeddings(config, SimpleNamespace(iid_field="item_id"))
    assert not list((folder / "semantic_cache").glob("*.emb"))


def test_items_without_an_item_row_are_named_not_the_cache(tmp_path, monkeypatch, caplog):
    """Vectors built in-process (no .itememb): items of the interactions that .item lacks are reported as such, with
    what to do; the cache is not blamed (it holds every row of .item)."""
    from conftest import TINY_SID_CONFIG, write_tiny_dataset
    from recbole_sid.quick_start import run_recbole

    monkeypatch.chdir(tmp_path)
    root = write_tiny_dataset(tmp_path / "data", with_user_profile=False)
    item = root / "tiny" / "tiny.item"
    lines = item.read_text().splitlines()
    item.write_text("\n".join(lines[:-20]) + "\n")  # i28 ... i47 have interactions but no .item row
    config = dict(TINY_SID_CONFIG, data_path=str(root), checkpoint_dir=str(tmp_path / "saved"))
    with pytest.raises(DataError) as caught:
        run_recbole(model="RQKMeans", dataset="tiny", config_dict=config, cmd_args=[])
    message = str(caught.value)
    assert message.startswith(f"20 of 48 items of dataset 'tiny' have no row in {item} "), message
    assert "first 10 ids: ['i" in message and "add rows for them to" in message and "missing_embedding: zero" in message
    assert "cache" not in message and "rebuild" not in message
    caplog.set_level(logging.WARNING)
    config.update(missing_embedding="zero", epochs=1)
    assert "recall@10" in run_recbole(model="RQKMeans", dataset="tiny", config_dict=config, cmd_args=[])["test_result"]
    assert any(f"20 items have no row in {item}; using zero vectors" in r.getMessage() for r in caplog.records)


def test_stale_cache_is_named(tmp_path, monkeypatch):
    """A cache that lacks ids the .item file has (edited or damaged by hand) is named, with how to rebuild it."""
    monkeypatch.chdir(tmp_path)
    folder, _, _ = _write_dataset(tmp_path, with_itememb=False)
    config = _config(tmp_path, semantic_dim=4)
    dataset = create_dataset(config)
    item_semantic_embeddings(config, dataset)
    (cache,) = (folder / "semantic_cache").iterdir()
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(line for line in lines if not line.startswith(("i3\t", "i7\t"))) + "\n")
    with pytest.raises(DataError, match=rf"{cache}: stale semantic cache: it has no vector for 2 items "
                                        rf"\(first 10 ids: \['i(3|7)', 'i(3|7)'\]\) that {folder / NAME}.item has; "
                                        rf"delete it to rebuild the vectors"):
        item_semantic_embeddings(config, dataset)


def test_cache_goes_to_semantic_cache_dir_for_protected_data_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, _, _ = _write_dataset(tmp_path, with_itememb=False)
    # pretend the dataset folder is inside an installed package (as RecBole's embedded ml-100k is)
    monkeypatch.setattr(semantic_module, "_protected_dirs", lambda: [tmp_path])
    config = _config(tmp_path, semantic_dim=4, semantic_cache_dir=str(tmp_path / "elsewhere"))
    item_semantic_embeddings(config, create_dataset(config))
    assert not (folder / "semantic_cache").exists()
    assert len(list((tmp_path / "elsewhere").glob(f"{NAME}.item.tfidf-d4-*.emb"))) == 1


def test_read_only_data_path_falls_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, _, _ = _write_dataset(tmp_path, with_itememb=False)
    if os.geteuid() == 0:
        monkeypatch.setattr(semantic_module.os, "access", lambda p, mode: False)
    else:
        folder.chmod(0o555)
    try:
        config = _config(tmp_path, semantic_dim=4)
        item_semantic_embeddings(config, create_dataset(config))
    finally:
        folder.chmod(0o755)
    assert (tmp_path / "saved" / "semantic_cache").is_dir()
    assert not (folder / "semantic_cache").exists()


def _hand_history(item_vecs, upto):
    """L2-normalised mean over each user's first ``upto`` interactions (time order)."""
    return {u: _l2(np.mean([item_vecs[i] for i in seq[:upto]], axis=0)) for u, seq in HISTORY.items()}


def test_user_embeddings_use_training_interactions_only(tiny):
    root, item_vecs = tiny
    config = _config(root)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    train_ds = train_data._dataset
    assert len(train_ds.inter_feat) == 12  # 3 per user
    item_emb = item_semantic_embeddings(config, train_ds)
    user_emb = user_semantic_embeddings(config, train_ds, item_emb)
    assert user_emb.shape == (train_ds.user_num, 6)  # no .user file: history only
    assert torch.all(user_emb[0] == 0)
    t2u = train_ds.field2token_id["user_id"]
    train_only, with_valid, with_test = _hand_history(item_vecs, 3), _hand_history(item_vecs, 4), _hand_history(
        item_vecs, 5)
    for u in USERS:
        got = user_emb[t2u[u]].numpy()
        np.testing.assert_allclose(got, train_only[u], rtol=1e-5, atol=1e-6)
        # the comparison can fail: a leaked valid/test interaction would change the vector
        assert not np.allclose(got, with_valid[u], atol=1e-3)
        assert not np.allclose(got, with_test[u], atol=1e-3)
    # and the function does see every interaction of the dataset it is given (the full one here)
    leaked = user_semantic_embeddings(config, dataset, item_emb)
    for u in USERS:
        np.testing.assert_allclose(leaked[t2u[u]].numpy(), with_test[u], rtol=1e-5, atol=1e-6)


def test_user_embeddings_combine_profile_and_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, item_vecs, user_vecs = _write_dataset(tmp_path, with_user=True, extra_user="u5")
    config = _config(tmp_path)
    dataset = create_dataset(config)
    train_ds = data_preparation(config, dataset)[0]._dataset
    item_emb = item_semantic_embeddings(config, train_ds)
    user_emb = user_semantic_embeddings(config, train_ds, item_emb)
    assert user_emb.shape == (train_ds.user_num, 4 + 6)
    t2u = train_ds.field2token_id["user_id"]
    hist = _hand_history(item_vecs, 3)
    for u in USERS:
        expected = _l2(np.concatenate([np.sqrt(0.5) * _l2(user_vecs[u]), np.sqrt(0.5) * hist[u]]))
        np.testing.assert_allclose(user_emb[t2u[u]].numpy(), expected, rtol=1e-5, atol=1e-6)
    # u5 has a profile but no interaction: profile part only, zeros for the history part
    u5 = user_emb[t2u["u5"]].numpy()
    np.testing.assert_allclose(u5[:4], _l2(user_vecs["u5"]), rtol=1e-5, atol=1e-6)
    assert np.all(u5[4:] == 0)
    # weight 0 drops the profile
    config["user_profile_weight"] = 0.0
    assert user_semantic_embeddings(config, train_ds, item_emb).shape[1] == 6


def test_user_profile_built_from_user_file(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    folder, _, _ = _write_dataset(tmp_path, with_user=True)
    (folder / f"{NAME}.useremb").unlink()
    caplog.set_level(logging.INFO)
    config = _config(tmp_path, semantic_dim=3)
    train_ds = data_preparation(config, create_dataset(config))[0]._dataset
    user_emb = user_semantic_embeddings(config, train_ds, item_semantic_embeddings(config, train_ds))
    assert user_emb.shape == (train_ds.user_num, 3 + 6)
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "['gender', 'occupation']" in msgs  # zip_code is left out as an identifier
    assert list((folder / "semantic_cache").glob(f"{NAME}.user.tfidf-d3-*.emb"))


def test_item_emb_shape_is_checked(tiny):
    root, _ = tiny
    config = _config(root)
    dataset = create_dataset(config)
    with pytest.raises(DataError, match="item_num"):
        user_semantic_embeddings(config, dataset, torch.zeros(3, 6))


def test_cached_file_round_trip_matches_reader(tiny):
    root, item_vecs = tiny
    ids, vecs, id_field, vec_field = read_vectors(root / NAME / f"{NAME}.itememb")
    assert (id_field, vec_field) == ("item_id", "item_emb") and ids == ITEMS
