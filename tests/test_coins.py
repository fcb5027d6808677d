"""COINS (arXiv 2510.12604): gate, RQ fusion, transfer loss directions, RQ-OPQ codes, SID-file codes, cold items,
end to end through run_recbole and the CLI on ml-100k."""
import subprocess

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import init_seed

from conftest import PYTHON, cli_env
from dataset_prep.cold_split import cold_split
from recbole_sid.atomic_io import write_sids
from recbole_sid.config import Config
from recbole_sid.data.semantic import item_semantic_embeddings
from recbole_sid.exceptions import ConfigError, DataError
from recbole_sid.model.context_aware_recommender.coins import COINS, mean_codebooks
from recbole_sid.model.gate import AdaptiveGate, RQFusion, transfer_loss
from recbole_sid.quantization import opq_encode, rq_opq_encode
from recbole_sid.quick_start import run_recbole
from test_ctr_cold import ctr_config, write_ctr_dataset


@pytest.fixture(scope="module")
def ctr_root(tmp_path_factory):
    root = write_ctr_dataset(tmp_path_factory.mktemp("coins"))
    cold_split("ctr", root, cold_ratio=0.2, seed=1, log=lambda *a: None)
    return root


def build(root, **extra):
    config = Config("COINS", "ctr", config_dict=ctr_config(root, **extra), cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    return config, dataset, train, valid, test, COINS(config, train._dataset)


def test_gate_output_shape_and_range():
    torch.manual_seed(0)
    gate = AdaptiveGate(12, [8], dropout=0.0)
    out = gate(torch.randn(33, 12) * 3)
    assert out.shape == (33, 1)
    assert bool(((out > 0) & (out < 1)).all()) and out.std() > 0
    assert AdaptiveGate(5, []).forward(torch.randn(4, 5)).shape == (4, 1)
    with pytest.raises(ValueError, match=r"\[B, 12\]"):
        gate(torch.randn(3, 11))


@pytest.mark.parametrize("mode", ["concat", "mean", "sum"])
def test_rq_fusion_modes(mode):
    levels = torch.randn(5, 3, 4)
    out = RQFusion(3, 4, mode)(levels)
    assert out.shape == (5, 4)
    if mode == "mean":
        assert torch.allclose(out, levels.mean(1))
    with pytest.raises(ValueError):
        RQFusion(3, 4, mode)(torch.randn(5, 2, 4))


@pytest.mark.parametrize("distance", ["kl", "cosine", "mse"])
def test_transfer_loss_directions_and_gate_weighting(distance):
    torch.manual_seed(0)
    base_id, base_rq = torch.randn(6, 8), torch.randn(6, 8)
    gate = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.2], requires_grad=True)

    def grads(g, term):
        id_emb, rq_emb = base_id.clone().requires_grad_(), base_rq.clone().requires_grad_()
        _, fwd, rev = transfer_loss(id_emb, rq_emb, g, distance=distance, return_terms=True)
        {"forward": fwd, "reverse": rev}[term].backward()
        return id_emb.grad, rq_emb.grad

    # warm pull: RQ moves toward sg(ID); no gradient reaches the ID embedding (stop-gradient)
    id_grad, rq_grad = grads(gate, "forward")
    assert id_grad is None or torch.count_nonzero(id_grad) == 0
    assert rq_grad.abs().sum(1).min() > 0
    # ... weighted by Tg: per row, gradient = Tg * gradient of the unweighted pull
    _, rq_unit = grads(torch.ones(6), "forward")
    assert torch.allclose(rq_grad, gate.detach()[:, None] * rq_unit, atol=1e-7)
    # reverse pull: ID moves toward sg(RQ); nothing reaches the RQ side; weighted by (1 - Tg)
    id_grad, rq_grad = grads(gate, "reverse")
    assert rq_grad is None or torch.count_nonzero(rq_grad) == 0
    assert id_grad.abs().sum(1).min() > 0
    id_unit, _ = grads(torch.zeros(6), "reverse")
    assert torch.allclose(id_grad, (1 - gate.detach())[:, None] * id_unit, atol=1e-7)
    # the gate itself is not trained by the transfer loss
    assert gate.grad is None


def test_transfer_loss_follows_the_paper_and_acts():
    """Tg * KL(sg(id), rq) + (1 - Tg) * KL(id, sg(rq)) on L2-normalised vectors / temperature, by hand; on
    embeddings at initialisation scale it is far from zero (the old unnormalised KL at t=1 was ~1e-3)."""
    torch.manual_seed(1)
    id_emb, rq_emb = 0.05 * torch.randn(64, 10), 0.05 * torch.randn(64, 10)
    gate = torch.rand(64)
    t = 0.1
    p_id = torch.softmax(torch.nn.functional.normalize(id_emb, dim=-1) / t, -1)
    p_rq = torch.softmax(torch.nn.functional.normalize(rq_emb, dim=-1) / t, -1)
    kl = lambda p, q: (p * (p.log() - q.log())).sum(-1)  # noqa: E731
    _, fwd, rev = transfer_loss(id_emb, rq_emb, gate, distance="kl", temperature=t, return_terms=True)
    assert fwd.item() == pytest.approx((gate * kl(p_id, p_rq)).mean().item(), rel=1e-5)
    assert rev.item() == pytest.approx(((1 - gate) * kl(p_id, p_rq.detach())).mean().item(), rel=1e-5)
    assert (fwd + rev).item() > 0.2
    old = transfer_loss(id_emb, rq_emb, gate, distance="kl", temperature=1.0, normalize=False)
    assert old.item() < 0.01
    cos = transfer_loss(id_emb, rq_emb, torch.ones(64), distance="cosine")
    expected = (1 - torch.nn.functional.cosine_similarity(id_emb, rq_emb, dim=-1)).mean()
    assert cos.item() == pytest.approx(expected.item(), rel=1e-5)


def test_transfer_loss_mask_and_value():
    id_emb, rq_emb = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    mask = torch.tensor([True, False, True, False])
    loss = transfer_loss(id_emb, rq_emb, torch.full((4,), 0.5), mask=mask, distance="mse", normalize=False)
    loss.backward()
    assert torch.count_nonzero(id_emb.grad[~mask]) == 0 and torch.count_nonzero(rq_emb.grad[~mask]) == 0
    expected = ((id_emb - rq_emb).pow(2).mean(1)[mask]).mean().item()  # 0.5 * d + 0.5 * d, averaged over kept rows
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert transfer_loss(id_emb, rq_emb, torch.ones(4), mask=torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_opq_codes_come_from_the_final_residual():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    result = rq_opq_encode(x, num_levels=2, codebook_size=8, opq_subspaces=4, opq_nbits=3, seed=0, niter=10,
                           opq_niter=5)
    residual = result.residual(x)
    assert not np.allclose(residual, x)
    on_residual = opq_encode(residual, 4, nbits=3, seed=0, niter=10, opq_niter=5).codes
    on_raw = opq_encode(x, 4, nbits=3, seed=0, niter=10, opq_niter=5).codes
    np.testing.assert_array_equal(result.opq_codes, on_residual)
    assert not np.array_equal(result.opq_codes, on_raw)


def test_aligned_codes_quantize_content_plus_collaborative_vectors(ctr_root):
    """Default source: RQ-OPQ of the adapter's aligned vectors (content mapped onto BPR-MF of the clicks)."""
    config, _, train, _, _, model = build(ctr_root)
    assert model.code_source == "aligned"
    x = model._aligned_vectors(config, train._dataset)  # deterministic for the seed: recomputed the same
    assert x.shape == (train._dataset.item_num - 1, 16)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    expected = rq_opq_encode(x, num_levels=3, codebook_size=4, opq_subspaces=4, opq_nbits=2, seed=config["seed"],
                             niter=5, opq_niter=5)
    np.testing.assert_array_equal(model.item_rq_codes[1:].numpy(), expected.rq_codes)
    np.testing.assert_array_equal(model.item_opq_codes[1:].numpy(), expected.opq_codes)
    content = build(ctr_root, coins_code_source="content")[-1]
    assert not torch.equal(content.item_rq_codes, model.item_rq_codes)  # the clicks change the codes


def test_model_codes_are_rq_opq_of_semantic_embeddings_and_deterministic(ctr_root):
    config, _, train, _, _, model = build(ctr_root, coins_code_source="content")
    x = item_semantic_embeddings(config, train._dataset)[1:].numpy()
    expected = rq_opq_encode(x, num_levels=3, codebook_size=4, opq_subspaces=4, opq_nbits=2, seed=config["seed"],
                             niter=5, opq_niter=5)
    np.testing.assert_array_equal(model.item_rq_codes[1:].numpy(), expected.rq_codes)
    np.testing.assert_array_equal(model.item_opq_codes[1:].numpy(), expected.opq_codes)
    again = COINS(config, train._dataset)
    assert torch.equal(again.item_rq_codes, model.item_rq_codes)
    assert torch.equal(again.item_opq_codes, model.item_opq_codes)
    # the codes are saved with the model (checkpoints restore them exactly)
    assert {"item_rq_codes", "item_opq_codes", "item_log_pop", "item_warm"} <= set(model.state_dict())


def test_popularity_counts_training_rows_only(ctr_root):
    _, dataset, train, _, test, model = build(ctr_root)
    counts = torch.bincount(train._dataset.inter_feat["item_id"], minlength=dataset.item_num).float()
    expected = torch.log1p(counts) / torch.log1p(counts).max()
    assert torch.allclose(model.item_log_pop, expected)
    test_items = test._dataset.inter_feat["item_id"]
    cold = test_items[counts[test_items] == 0]
    assert len(cold) > 0 and float(model.item_log_pop[cold].abs().max()) == 0.0
    assert float(model.item_warm[cold].max()) == 0.0


def _sid_file(path, dataset, codes):
    ids = list(dataset.field2id_token["item_id"][1:])
    write_sids(path, ids, codes)
    return ids


def test_codes_from_sid_file(ctr_root, tmp_path):
    config, dataset, train, _, _, _ = build(ctr_root)
    n = dataset.item_num - 1
    rng = np.random.default_rng(3)
    codes = np.stack([rng.integers(0, 5, n), rng.integers(0, 3, n), rng.integers(0, 4, n), np.arange(n)], axis=1)
    _sid_file(tmp_path / "ctr.itemsid", dataset, codes)
    _, _, train, _, _, model = build(ctr_root, coins_sid_file=str(tmp_path / "ctr.itemsid"))
    np.testing.assert_array_equal(model.item_rq_codes[1:].numpy(), codes[:, :3])  # first 3 levels, dedup dropped
    assert model.rq_embedding.num_embeddings == 3 * 5
    x = item_semantic_embeddings(config, train._dataset)[1:].numpy()
    _, residual = mean_codebooks(x, codes[:, :3])
    expected = opq_encode(residual, 4, nbits=2, seed=config["seed"], niter=5, opq_niter=5).codes
    np.testing.assert_array_equal(model.item_opq_codes[1:].numpy(), expected)


def test_sid_file_errors(ctr_root, tmp_path):
    _, dataset, _, _, _, _ = build(ctr_root)
    n = dataset.item_num - 1
    ids = list(dataset.field2id_token["item_id"][1:])
    write_sids(tmp_path / "partial.itemsid", ids[3:], np.zeros((n - 3, 3), dtype=int))
    with pytest.raises(DataError, match=r"no SID for 3 of \d+ items .*" + ids[0]):
        build(ctr_root, coins_sid_file=str(tmp_path / "partial.itemsid"))
    write_sids(tmp_path / "short.itemsid", ids, np.zeros((n, 2), dtype=int))
    with pytest.raises(ConfigError, match="2 levels but coins_rq_levels=3"):
        build(ctr_root, coins_sid_file=str(tmp_path / "short.itemsid"))
    with pytest.raises(DataError, match="not found"):
        build(ctr_root, coins_sid_file=str(tmp_path / "nope.itemsid"))
    # a code far beyond any codebook: refused with the file and line, before any table is allocated
    huge = tmp_path / "huge.itemsid"
    write_sids(huge, ids, np.zeros((n, 3), dtype=int))
    lines = huge.read_text().splitlines()
    lines[5] = lines[5].split("\t")[0] + "\ta_999999999 b_0 c_0"
    huge.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"huge.itemsid:6: SID code 'a_999999999' is out of range: codes run from 0 "
                                        r"to 65535"):
        build(ctr_root, coins_sid_file=str(huge))


def test_bad_config_values(ctr_root):
    with pytest.raises(ConfigError, match="cold_gate"):
        build(ctr_root, cold_gate="sometimes")
    with pytest.raises(ConfigError, match="cold_simulation_prob"):
        build(ctr_root, cold_simulation_prob=1.5)


def _trained(ctr_root, **extra):
    config, dataset, train, valid, test, model = build(ctr_root, epochs=5, **extra)
    Trainer(config, model).fit(train, valid, saved=False, show_progress=False)
    model.eval()
    batch = next(iter(test))[0]
    return model, batch


@pytest.mark.parametrize("cold_gate, fm", [("mask", False), ("learn", False), ("mask", True)])
def test_cold_items_lean_on_the_sid_side(ctr_root, cold_gate, fm, in_tmp):
    model, batch = _trained(ctr_root, cold_gate=cold_gate, cold_id_embedding="unknown" if cold_gate == "learn" else "zero",
                            coins_fm=fm)
    items = batch["item_id"]
    cold = model.item_warm[items] == 0
    assert cold.any() and (~cold).any()
    gate = model.gate_values(batch)
    if cold_gate == "mask":
        # Tg = 0 for items without training rows (Iemb_c = Iemb_RQ exactly); warm items keep a learned Tg in (0, 1)
        assert float(gate[cold].abs().max()) == 0.0
        assert 0.0 < float(gate[~cold].min()) and float(gate[~cold].max()) < 1.0 and float(gate[~cold].std()) > 0
        assert float(gate[cold].mean()) < float(gate[~cold].mean())
    else:
        # the gate's own value (popularity 0 as input); the ID side is the shared "unknown item" vector
        assert bool(((gate > 0) & (gate < 1)).all())
    # changing the ID embeddings of the batch's items changes warm predictions, never cold ones
    before = model.predict(batch).detach()
    with torch.no_grad():
        model.token_embedding_table.embedding.weight[model.item_id_row(items)] += 5.0
    after = model.predict(batch).detach()
    assert torch.allclose(before[cold], after[cold], atol=1e-6)
    assert not torch.allclose(before[~cold], after[~cold], atol=1e-3)


def test_fm_part_adds_the_second_order_term(ctr_root):
    """``coins_fm: True``: logit = DNN logit + 0.5 * sum((sum of field vectors)^2 - sum of squares) over the fields
    the DNN sees (other fields, gated item vector, OPQ vector), never the raw item ID embedding."""
    _, _, train, _, _, model = build(ctr_root, coins_fm=True, dropout_prob=0.0)
    model.eval()
    batch = next(iter(train))
    parts = model.forward_parts(batch)
    _, others = model._fields(batch)
    fields = torch.cat([others, parts["item_emb"].unsqueeze(1), parts["opq_emb"].unsqueeze(1)], dim=1)
    fm = 0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1)).sum(1)
    flat = others.reshape(others.shape[0], -1)
    dnn = model.predict_layer(model.mlp_layers(torch.cat([flat, parts["item_emb"], parts["opq_emb"]], 1))).squeeze(-1)
    assert torch.allclose(parts["logit"], dnn + fm, atol=1e-5)
    assert float(fm.abs().max()) > 0
    plain = build(ctr_root, coins_fm=False)[-1]
    assert plain.fm is None and model.fm is not None


def test_loss_is_bce_plus_weighted_transfer(ctr_root):
    _, _, train, _, _, model = build(ctr_root, cold_simulation_prob=0.0, dropout_prob=0.0, transfer_weight=0.7)
    batch = next(iter(train))
    model.train()
    bce_term, forward_term, reverse_term = model.calculate_loss(batch)  # RecBole logs each term
    parts = model.forward_parts(batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(parts["logit"], batch["label"])
    _, fwd, rev = transfer_loss(parts["id_emb"], parts["rq_emb"], parts["gate"], mask=parts["known"] > 0,
                                distance="kl", temperature=0.1, return_terms=True)
    assert bce_term.item() == pytest.approx(bce.item(), rel=1e-5)
    assert forward_term.item() == pytest.approx(0.7 * fwd.item(), rel=1e-5)
    assert reverse_term.item() == pytest.approx(0.7 * rev.item(), rel=1e-5)
    # the transfer terms act: a visible share of the click loss at initialisation (it was ~0.06 % before)
    assert (forward_term + reverse_term).item() > 0.05 * bce.item()
    probs = model.predict(batch)
    assert bool(((probs > 0) & (probs < 1)).all())


def test_coins_end_to_end_on_cold_split(ctr_root, in_tmp):
    result = run_recbole(model="COINS", dataset="ctr", config_dict=ctr_config(ctr_root), cmd_args=[], saved=False)
    for key in ("test_result", "test_result_warm", "test_result_cold"):
        assert 0.0 <= result[key]["auc"] <= 1.0 and result[key]["logloss"] > 0, key
    assert result["epochs_run"] == 3
    # the codes COINS used are exported (RQ levels, then OPQ codes), for "DeepFM + SID" with the same codes
    from recbole_sid.atomic_io import read_sids

    ids, codes = read_sids(result["sid_files"]["itemsid"])
    config, _, train, _, _, model = build(ctr_root)
    assert codes.shape == (train._dataset.item_num - 1, 3 + 4)
    token2id = train._dataset.field2token_id["item_id"]
    rows = [token2id[i] for i in ids]
    np.testing.assert_array_equal(codes[:, :3], model.item_rq_codes[rows].numpy())
    np.testing.assert_array_equal(codes[:, 3:], model.item_opq_codes[rows].numpy())


def test_cli_coins_on_ml100k(in_tmp):
    proc = subprocess.run(
        [PYTHON, "-m", "recbole_sid", "--model=COINS", "--dataset=ml-100k", "--epochs=1", "--show_progress=False",
         "--saved=False", "--coins_kmeans_iters=5", "--coins_opq_iters=5"],
        cwd=in_tmp, env=cli_env(OMP_NUM_THREADS=1), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "test result:" in out and "auc:" in out and "logloss:" in out
    auc = float(out.split("test result:")[1].split("auc:")[1].split()[0])
    assert 0.6 < auc <= 1.0
    assert "COINS: item codes from RQ-OPQ" in out


def test_untrained_codes_read_as_zeros_and_cold_simulation_reaches_the_code_branches(ctr_root):
    """A code (RQ or OPQ) that no item with training rows carries is read as zeros; under cold simulation, a row's
    item loses exactly the codes that only it carries (what it would see were it cold), on both code branches."""
    _, _, train, _, _, model = build(ctr_root, coins_codebook_size=8, coins_opq_nbits=3)
    # hand-built code table: items 1, 2 share every code; item 3 alone carries its codes; item 4 is cold
    warm = torch.zeros_like(model.item_warm)
    warm[[1, 2, 3]] = 1.0
    model.item_warm.copy_(warm)
    for name, codes, offsets, table in (("rq", model.item_rq_codes, model._rq_offsets, model.rq_embedding),
                                        ("opq", model.item_opq_codes, model._opq_offsets, model.opq_embedding)):
        codes.zero_()
        codes[3] = 1
        codes[4] = 2
        counts = model._warm_counts(codes + offsets, table.num_embeddings)
        slots = codes[torch.tensor([1, 3, 4])] + offsets
        real = model._code_embeddings(table, slots, counts, torch.zeros(3))
        assert torch.equal(real[0], table(slots[0])), name          # shared, trained code: kept
        assert torch.equal(real[1], table(slots[1])), name          # item 3's own codes: kept while it is warm
        assert float(real[2].abs().max()) == 0.0, name              # the cold item's codes: never trained -> zeros
        simulated = model._code_embeddings(table, slots, counts, torch.tensor([1.0, 1.0, 0.0]))
        assert torch.equal(simulated[0], table(slots[0])), name     # another warm item carries item 1's codes
        assert float(simulated[1].abs().max()) == 0.0, name         # only item 3 carries its codes: dropped


def test_the_real_buffers_count_items_with_training_rows(ctr_root):
    _, _, train, _, _, model = build(ctr_root)
    warm = model.item_warm.bool()
    for codes, offsets, counts in ((model.item_rq_codes, model._rq_offsets, model.rq_code_warm_items),
                                   (model.item_opq_codes, model._opq_offsets, model.opq_code_warm_items)):
        slots = (codes + offsets)[1:][warm[1:]].reshape(-1)
        expected = torch.bincount(slots, minlength=counts.numel()).float()
        assert torch.equal(counts, expected)


def test_ablations_no_opq_and_fixed_gate(ctr_root, in_tmp):
    """``coins_opq_subspaces: 0``: the RQ codes alone (no OPQ table, narrower tower); ``coins_gate: fixed``:
    Tg = 0.5 for items with training rows and 0 for cold ones (cold_gate: mask), no gate network."""
    _, _, train, _, test, model = build(ctr_root, coins_opq_subspaces=0, coins_gate="fixed")
    assert model.opq_embedding is None and model.item_opq_codes.shape[1] == 0 and model.gate is None
    model.eval()
    batch = next(iter(test))[0]
    parts = model.forward_parts(batch)
    assert parts["opq_emb"] is None
    cold = model.item_warm[batch["item_id"]] == 0
    assert cold.any() and (~cold).any()
    assert bool((parts["gate"][~cold] == 0.5).all()) and bool((parts["gate"][cold] == 0).all())
    full = build(ctr_root)[-1]
    assert model.mlp_layers.mlp_layers[1].in_features == full.mlp_layers.mlp_layers[1].in_features - model.embedding_size
    result = run_recbole(model="COINS", dataset="ctr", cmd_args=[], saved=False,
                         config_dict=ctr_config(ctr_root, coins_opq_subspaces=0, coins_gate="fixed", epochs=2))
    assert 0.0 <= result["test_result"]["auc"] <= 1.0


def test_first_order_part_has_no_item_bias(ctr_root):
    """``coins_first_order: True``: logit = DNN logit + RecBole's first-order term over every field; the item_id
    rows of its token table are zero at init and stay zero through training, the other rows learn."""
    _, _, train, _, _, model = build(ctr_root, coins_first_order=True, cold_simulation_prob=0.0, dropout_prob=0.0)
    linear = model.first_order_linear
    k = linear.token_field_names.index("item_id")
    start, size = int(linear.token_field_offsets[k]), int(linear.token_field_dims[k])
    weight = linear.token_embedding_table.embedding.weight
    assert float(weight[start:start + size].abs().max()) == 0.0 and float(weight.abs().max()) > 0
    before = weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for batch in list(iter(train))[:3]:
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        (sum(loss) if isinstance(loss, tuple) else loss).backward()
        optimizer.step()
    assert float(weight[start:start + size].abs().max()) == 0.0
    assert not torch.equal(weight, before)
    model.eval()
    batch = next(iter(train))
    parts = model.forward_parts(batch)
    without = parts["logit"] - linear(batch).squeeze(-1)
    _, others = model._fields(batch)
    flat = others.reshape(others.shape[0], -1)
    dnn = model.predict_layer(model.mlp_layers(torch.cat([flat, parts["item_emb"], parts["opq_emb"]], 1))).squeeze(-1)
    assert torch.allclose(without, dnn, atol=1e-5)
    assert not hasattr(build(ctr_root)[-1], "first_order_linear")
