"""QBERT4Rec (arXiv 2512.02474): the three mask types, the pretraining -> fine-tuning switch, the injection gate's
per-item depth, cold items in full-sort, SIDs from a file, determinism, config errors, and an end-to-end run."""
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from conftest import write_tiny_dataset
from recbole_sid.atomic_io import read_sids, write_sids, write_vectors
from recbole_sid.config import Config
from recbole_sid.exceptions import ConfigError, DataError
from recbole_sid.model.sequential_recommender.qbert4rec import (
    QBERT4Rec,
    SemanticInjection,
    append_item,
    mask_counts,
    mixed_mask,
    multi_region_mask,
    span_mask,
    tail_mask,
)
from recbole_sid.quick_start import run_recbole

#: items in the .item file that no user ever clicked: cold in every split
N_COLD = 5
TINY = {
    "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]}, "MAX_ITEM_LIST_LENGTH": 12,
    "hidden_size": 16, "inner_size": 32, "n_heads": 2, "qbert_fusion_dim": 16, "qbert_injection_epochs": 3,
    "sid_levels": 2, "sid_codebook_size": 8, "sid_code_dim": 8, "rqvae_hidden_dims": [16], "tokenizer_epochs": 3,
    "cf_epochs": 2, "cf_embedding_size": 8, "semantic_dim": 16, "kmeans_iters": 5, "qbert_pretrain_epochs": 1,
    "epochs": 2, "train_batch_size": 64, "eval_batch_size": 512, "show_progress": False,
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("qbert"), name="tiny", n_users=40, n_items=32,
                              with_user_profile=False)
    with open(root / "tiny" / "tiny.item", "a") as f:
        for c in range(N_COLD):
            f.write(f"cold{c}\tspace rocket orbit new{c}\tspace\n")
    return root


def make_config(root, **extra):
    return Config("QBERT4Rec", "tiny", config_dict={**TINY, "data_path": str(root), **extra}, cmd_args=[])


@pytest.fixture(scope="module")
def split(data_root):
    config = make_config(data_root)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return data_preparation(config, dataset)


def build(root, train_data, **extra):
    config = make_config(root, **extra)
    init_seed(config["seed"], config["reproducibility"])
    return QBERT4Rec(config, train_data._dataset)


# --- masks ----------------------------------------------------------------------------------------------------
def _runs(row: np.ndarray) -> list:
    """(start, length) of each run of True in a boolean row."""
    runs, start = [], None
    for pos, value in enumerate(list(row) + [False]):
        if value and start is None:
            start = pos
        elif not value and start is not None:
            runs.append((start, pos - start))
            start = None
    return runs


@pytest.mark.parametrize("kind", ["span", "tail", "multi_region"])
def test_mask_shapes_ratio_and_padding(kind):
    gen = torch.Generator().manual_seed(0)
    max_len, ratio = 20, 0.3
    lengths = torch.cat([torch.arange(1, max_len + 1), torch.randint(1, max_len + 1, (200,), generator=gen)])
    if kind == "span":
        mask = span_mask(lengths, max_len, ratio, gen)
    elif kind == "tail":
        mask = tail_mask(lengths, max_len, ratio)
    else:
        mask = multi_region_mask(lengths, max_len, ratio, regions=3, generator=gen)
    assert mask.shape == (len(lengths), max_len) and mask.dtype == torch.bool
    expected = torch.clamp(torch.floor(lengths * ratio + 0.5).long(), min=1)
    assert torch.equal(mask.sum(1), torch.minimum(expected, lengths))  # the masking ratio, at least one item
    assert torch.equal(mask_counts(lengths, ratio), mask.sum(1))
    padding = torch.arange(max_len).unsqueeze(0) >= lengths.unsqueeze(1)
    assert not bool((mask & padding).any())  # padding is never masked
    rows = mask.numpy()
    for row, length, k in zip(rows, lengths.tolist(), mask.sum(1).tolist()):
        runs = _runs(row)
        if kind in ("span", "tail"):
            assert len(runs) == 1
        if kind == "tail":
            assert row[length - 1] and runs[0][0] == length - k  # always the last real item
        if kind == "multi_region":
            assert 1 <= len(runs) <= 3
            if k >= 3 and length - k >= 2:  # room for 3 separate runs: exactly 3, sizes within one
                sizes = [n for _, n in runs]
                assert len(runs) == 3 and max(sizes) - min(sizes) <= 1
    if kind in ("span", "multi_region"):  # random placement: not every long sequence gets the same positions
        long_rows = rows[(lengths == max_len).numpy()]
        assert len({r.tobytes() for r in long_rows}) > 1
        assert not all(r[max_len - 1] for r in long_rows)


def test_tail_count_one_and_append_item():
    seq = torch.tensor([[5, 6, 0, 0], [1, 2, 3, 4]])
    full, lengths = append_item(seq, torch.tensor([2, 4]), torch.tensor([9, 8]))
    assert full.tolist() == [[5, 6, 9, 0], [2, 3, 4, 8]]  # a short sequence keeps its first item
    assert lengths.tolist() == [3, 4]
    assert tail_mask(lengths, 4, count=1).tolist() == [[False, False, True, False], [False, False, False, True]]


def test_mixed_mask_draws_every_type_and_a_single_type_only():
    gen = torch.Generator().manual_seed(1)
    lengths = torch.full((300,), 15)
    mask, choice = mixed_mask(lengths, 15, 0.4, ["span", "tail", "multi_region"], regions=2, generator=gen)
    assert set(choice.tolist()) == {0, 1, 2}
    tails = mask[choice == 1]
    assert bool(tails[:, 14].all()) and not bool(tails[:, 0].any())
    multi = [len(_runs(r)) for r in mask[choice == 2].numpy()]
    assert set(multi) == {2}
    mask, choice = mixed_mask(lengths, 15, 0.4, ["span"], generator=gen)
    assert set(choice.tolist()) == {0} and all(len(_runs(r)) == 1 for r in mask.numpy())


# --- pretraining, then fine-tuning ------------------------------------------------------------------------------
def test_pretraining_then_finetuning_switch(data_root, split):
    train_data = split[0]
    model = build(data_root, train_data, qbert_pretrain_epochs=1, qbert_mask_types=["span"], mask_ratio=0.5)
    model.train()
    n_rows = len(train_data._dataset)
    phases, masked_counts = [], []
    original = model.training_masks

    def spy(lengths, max_len, phase):
        mask = original(lengths, max_len, phase)
        phases.append(phase)
        masked_counts.append((mask.sum(1), lengths))
        return mask

    model.training_masks = spy
    for _ in range(2):  # two epochs of RecBole's training loader
        for batch in train_data:
            loss = model.calculate_loss(batch)
            assert torch.isfinite(loss)
    assert model.train_rows_seen.item() == 2 * n_rows
    half = len(phases) // 2
    assert phases[:half] == ["pretrain"] * half and phases[half:] == ["finetune"] * half
    for (counts, lengths), phase in zip(masked_counts, phases):
        if phase == "pretrain":
            assert torch.equal(counts, mask_counts(lengths, 0.5))
        else:
            assert bool((counts == 1).all())
    # fine-tuning masks the last real position only
    lengths = torch.tensor([3, 12])
    assert model.training_masks(lengths, 12, "finetune").nonzero().tolist() == [[0, 2], [1, 11]]
    # the phase is in the checkpoint
    fresh = build(data_root, train_data, qbert_pretrain_epochs=1)
    assert fresh.phase == "pretrain"
    fresh.load_state_dict(model.state_dict())
    assert fresh.phase == "finetune"
    # no pretraining (ablation): fine-tuning from the first batch
    assert build(data_root, train_data, qbert_pretrain_epochs=0).phase == "finetune"


# --- stage 1: the injection gate ----------------------------------------------------------------------------------
def test_injection_gate_changes_fusion_depth_per_item():
    torch.manual_seed(0)
    n_items, dim = 30, 8
    module = SemanticInjection(n_items, [12, 6], dim, n_layers=3, n_heads=2, dropout=0.0).eval()
    items = torch.arange(1, n_items)
    views = [torch.randn(n_items, 12)[items], torch.randn(n_items, 6)[items]]
    available = torch.ones(len(items), 2, dtype=torch.bool)
    available[::3, 1] = False  # some items lack the second view
    with torch.no_grad():
        assert bool((module(items, views, available).depth == 3).all())  # gates start open
        module.gates[0].weight.copy_(torch.randn(1, dim))  # layer 2 opens for some items only
        module.gates[0].bias.zero_()
        module.gates[1].bias.fill_(-20.0)  # layer 3 is closed for every item
        out = module(items, views, available)
    depth = out.depth
    assert set(depth.tolist()) == {1, 2}  # the gate makes the depth differ per item
    with torch.no_grad():  # an item of depth 1 is exactly the first layer's output, depth 2 the second's
        keys = module.project_views(views) + module.view_type
        first = module.layers[0](module.id_query(items), keys, ~available)
        second = module.layers[1](first, keys, ~available)
    ones, twos = depth == 1, depth == 2
    assert torch.allclose(out.fused[ones], first[ones], atol=1e-6)
    assert torch.allclose(out.fused[twos], second[twos], atol=1e-6)
    assert not torch.allclose(first[twos], second[twos])
    # the straight-through gate receives gradient from the fused vector
    module.train()
    module.gates[0].weight.grad = None
    module(items, views, available).fused.pow(2).sum().backward()
    assert module.gates[0].weight.grad is not None and module.gates[0].weight.grad.abs().sum() > 0


def test_model_injection_views_depth_and_image_view(data_root, split, tmp_path):
    train_data = split[0]
    ds = train_data._dataset
    tokens = list(ds.field2id_token[ds.iid_field])[1:]
    rng = np.random.default_rng(0)
    write_vectors(tmp_path / "img.itememb", tokens[:-3], rng.normal(size=(len(tokens) - 3, 6)))  # 3 lack an image
    model = build(data_root, train_data, qbert_image_emb_file=str(tmp_path / "img.itememb"), qbert_fusion_layers=2)
    assert model.sid_output.summary["views"] == ["text", "image", "structural"]
    assert model.injection_depth.shape == (ds.item_num - 1,)
    assert set(model.injection_depth.tolist()) <= {1, 2}
    assert sum(model.sid_output.summary["depth_histogram"].values()) == ds.item_num - 1
    plain = build(data_root, train_data, qbert_injection=False)  # ablation: SIDs of the raw text embedding
    assert "text embeddings" in plain.sid_output.summary["source"]
    assert not torch.equal(plain.item_codes, model.item_codes)


# --- stage 3: cold items -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_id", [False, True])
def test_cold_items_get_finite_scores(data_root, split, use_id):
    train_data, _, test_data = split
    model = build(data_root, train_data, qbert_input_id=use_id, qbert_output_id=use_id).eval()
    ds = train_data._dataset
    cold = [ds.field2token_id[ds.iid_field][f"cold{c}"] for c in range(N_COLD)]
    assert not bool(model.item_warm[cold].any()) and int(model.item_warm.sum()) > 0
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch).view(len(batch), -1)
        assert scores.shape == (len(batch), ds.item_num)
        assert bool(torch.isfinite(scores[:, 1:]).all())
        assert bool((scores[:, cold].std(0) > 0).all())  # a real score per user, not a constant
        codes_only = model.code_embedding(model.item_codes[cold] + model._level_offsets).sum(1)
        assert torch.allclose(model.output_vectors()[cold], codes_only)  # a cold item: its SID alone
        one = batch[model.ITEM_SEQ][:1], batch[model.ITEM_SEQ_LEN][:1]
        pointwise = model.predict({model.ITEM_SEQ: one[0].repeat(N_COLD, 1), model.ITEM_SEQ_LEN: one[1].repeat(N_COLD),
                                   model.ITEM_ID: torch.tensor(cold)})
        assert torch.allclose(pointwise, scores[0, cold], atol=1e-5)


# --- SIDs from a file, determinism ----------------------------------------------------------------------------
def test_sids_from_file(data_root, split, tmp_path):
    train_data = split[0]
    ds = train_data._dataset
    tokens = list(ds.field2id_token[ds.iid_field])[1:]
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 5, size=(len(tokens), 3))
    order = rng.permutation(len(tokens))  # the file's row order is not the dataset's
    write_sids(tmp_path / "tok.itemsid", [tokens[i] for i in order], codes[order])
    # sid_codebook_size (above the item count here) does not matter with a file: the table is sized from it
    model = build(data_root, train_data, qbert_sid_file=str(tmp_path / "tok.itemsid"), sid_codebook_size=256)
    assert model.item_codes[1:].tolist() == codes[:, :2].tolist()  # the first sid_levels levels, by item id
    assert model.sid_output.summary["source"].startswith("file")
    out = model.export_codes(tmp_path / "export")
    ids, exported = read_sids(out["itemsid"])
    assert ids == tokens and np.array_equal(exported[:, :2], codes[:, :2])
    with pytest.raises(ConfigError, match="qbert_sid_file"):
        build(data_root, train_data, qbert_sid_file=str(tmp_path / "tok.itemsid"), sid_levels=4)
    write_sids(tmp_path / "part.itemsid", tokens[:-2], codes[:-2])
    with pytest.raises(DataError, match="qbert_sid_file.*no SID for 2"):
        build(data_root, train_data, qbert_sid_file=str(tmp_path / "part.itemsid"))


def test_determinism_same_seed_same_sids(data_root, split):
    train_data = split[0]
    a, b = build(data_root, train_data), build(data_root, train_data)
    assert torch.equal(a.item_codes, b.item_codes)
    assert len(torch.unique(a.item_codes[1:], dim=0)) > 1
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    other = build(data_root, train_data, seed=7)
    assert not torch.equal(a.item_codes, other.item_codes)


# --- config errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, error", [
    ("qbert_mask_types", ["span", "bogus"], ConfigError),
    ("qbert_mask_types", [], ConfigError),
    ("mask_ratio", 0.0, ConfigError),
    ("qbert_pretrain_epochs", -1, ConfigError),
    ("qbert_mask_regions", 0, ConfigError),
    ("transform", "mask_itemseq", ConfigError),
    ("loss_type", "BPR", ConfigError),
    ("train_neg_sample_args", {"distribution": "uniform", "sample_num": 1}, ConfigError),
    ("hidden_size", 15, ConfigError),
    ("qbert_fusion_dim", 15, ConfigError),
    ("qbert_gate_threshold", 1.5, ConfigError),
    ("qbert_image_emb_file", "no/such/file.itememb", DataError),
    ("qbert_sid_file", "no/such/file.itemsid", DataError),
    ("sid_codebook_size", 64, ConfigError),  # more codes than the 37 items
])
def test_bad_config_values_name_the_key(data_root, split, key, value, error):
    with pytest.raises(error, match=key):
        build(data_root, split[0], **{key: value})


# --- end to end ----------------------------------------------------------------------------------------------------
def test_run_recbole_end_to_end(data_root, in_tmp):
    result = run_recbole("QBERT4Rec", "tiny", config_dict={**TINY, "data_path": str(data_root)}, cmd_args=[])
    assert result["epochs_run"] == 2
    assert all(np.isfinite(v) for v in result["test_result"].values())
    ids, codes = read_sids(result["sid_files"]["itemsid"])
    assert codes.shape == (32 + N_COLD, TINY["sid_levels"] + 1)  # + the dedup level
    assert len(np.unique(codes, axis=0)) == len(ids)
    assert Path(result["sid_files"]["quality"]).is_file()


@pytest.mark.parametrize("warm_negatives", [True, False])
def test_training_softmax_leaves_out_cold_items_under_warm_negatives(data_root, split, warm_negatives):
    """Under ``warm_negatives`` a held-out item is no negative of the training CE (as no sampled negative is)."""
    train_data = split[0]
    model = build(data_root, train_data, warm_negatives=warm_negatives).train()
    ds = train_data._dataset
    cold = [ds.field2token_id[ds.iid_field][f"cold{c}"] for c in range(N_COLD)]
    seen = []
    model.loss_fct.register_forward_pre_hook(lambda module, args: seen.append((args[0].detach(), args[1])))
    loss = model.calculate_loss(next(iter(train_data)))
    logits, target = seen[0]
    assert torch.isfinite(loss) and bool(model.item_warm[target].all())
    assert bool(torch.isneginf(logits[:, 0]).all())  # padding: never
    warm_cols = model.item_warm.nonzero().squeeze(1)
    assert bool(torch.isfinite(logits[:, warm_cols]).all())
    if warm_negatives:
        assert bool(torch.isneginf(logits[:, cold]).all())
    else:
        assert bool(torch.isfinite(logits[:, cold]).all())
    model.eval()  # evaluation scores every item, cold ones through their SID
    with torch.no_grad():
        batch = next(iter(split[2]))[0]
        assert bool(torch.isfinite(model.full_sort_predict(batch).view(len(batch), -1)[:, cold]).all())
