"""DAS's tokenizer (phase 1): every loss term is real and reaches the parameters it should; ablation flags; the
co-occurrence mask; warm starts before joint training; the stopping rule; user/item codebook sizes; no leakage."""
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from conftest import TINY_SID_CONFIG, write_tiny_dataset
from recbole_sid.atomic_io import read_sids
from recbole_sid.config import Config
from recbole_sid.data.semantic import user_semantic_embeddings
from recbole_sid.model.general_recommender.das import DAS
from recbole_sid.quick_start import run_recbole
from recbole_sid.tokenizers.base import PhaseLog
from recbole_sid.tokenizers.das import MDAM, CooccurrenceSampler, popularity_statistics


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("das"))


def build(tiny_root, **overrides):
    """The DAS model and its tokenizer with modules built (``prepare``), on the tiny dataset's training split."""
    cfg = dict(TINY_SID_CONFIG, data_path=str(tiny_root), **overrides)
    config = Config("DAS", "tiny", config_dict=cfg, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = DAS(config, train._dataset)
    model.tokenizer.prepare(model.tokenizer_input)
    model.tokenizer.train(True)
    return model, dataset, train, valid, test


def first_batch(model, size=64):
    data = model.tokenizer_input
    users, items = data.train_users[:size], data.train_items[:size]
    return users, items, torch.randint(1, data.n_items, (size,), generator=torch.Generator().manual_seed(0))


def test_every_term_finite_and_nonzero(tiny_root):
    model, _, _, _, _ = build(tiny_root)
    tok = model.tokenizer
    terms = tok.loss_terms(*first_batch(model))
    assert set(terms) == {"sem_item", "sem_user", "cf_click", "cf_conformity", "cf_popularity", "cf_orthogonal",
                          "align_u2i", "align_dual", "align_cooc_i2i", "align_cooc_u2u"}
    for name, value in terms.items():
        assert torch.isfinite(value), name
        assert value.item() != 0.0, name


def _grads(params, loss):
    for p in params.values():
        p.grad = None
    loss.backward(retain_graph=True)
    return {n: (p.grad is not None and p.grad.abs().sum().item() > 0) for n, p in params.items()}


def _any(grads, prefix):
    return any(v for n, v in grads.items() if n.startswith(prefix))


def test_gradients_reach_the_right_parameters(tiny_root):
    model, _, _, _, _ = build(tiny_root)
    tok = model.tokenizer
    params = {f"uism.{n}": p for n, p in tok.uism.named_parameters()}
    params.update({f"icdm.{n}": p for n, p in tok.icdm.named_parameters()})
    params.update({f"mdam.{n}": p for n, p in tok.mdam.named_parameters()})
    terms = tok.loss_terms(*first_batch(model))
    sem_item = _grads(params, terms["sem_item"])
    assert _any(sem_item, "uism.item_rqvae.encoder") and _any(sem_item, "uism.item_rqvae.quantizer.codebooks")
    assert _any(sem_item, "uism.item_rqvae.decoder") and not _any(sem_item, "uism.user_rqvae")
    sem_user = _grads(params, terms["sem_user"])
    assert _any(sem_user, "uism.user_rqvae.encoder") and _any(sem_user, "uism.user_rqvae.quantizer.codebooks")
    cf = _grads(params, terms["cf_click"])
    for tower in ("icdm.user_int", "icdm.item_pro", "icdm.user_con", "icdm.item_pop"):
        assert _any(cf, tower), tower
    assert not _any(cf, "uism")
    for name in ("align_u2i", "align_dual"):
        g = _grads(params, terms[name])
        assert _any(g, "uism.item_rqvae.encoder") and _any(g, "uism.user_rqvae.encoder"), name
        assert _any(g, "icdm.user_int") and _any(g, "icdm.item_pro"), name
        # only the unbiased parts are aligned with the SIDs
        assert not _any(g, "icdm.user_con") and not _any(g, "icdm.item_pop"), name
    cooc = _grads(params, terms["align_cooc_i2i"])
    assert _any(cooc, "uism.item_rqvae.encoder") and not _any(cooc, "icdm")
    # the RecBole model itself holds only the SID head: phase 1's modules are not trained in phase 2
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"head"}


@pytest.mark.parametrize("flag, removed", [
    ("das_align_u2i", {"align_u2i"}),
    ("das_align_dual", {"align_dual"}),
    ("das_align_cooc", {"align_cooc_i2i", "align_cooc_u2u"}),
    ("das_use_debias", {"cf_conformity", "cf_popularity", "cf_orthogonal"}),
])
def test_switching_a_family_off_removes_exactly_its_term(tiny_root, flag, removed):
    full, _, _, _, _ = build(tiny_root)
    ablated, _, _, _, _ = build(tiny_root, **{flag: False})
    batch = first_batch(full)
    full_terms, ablated_terms = full.tokenizer.loss_terms(*batch), ablated.tokenizer.loss_terms(*batch)
    assert set(full_terms) - set(ablated_terms) == removed
    assert set(ablated_terms) <= set(full_terms)


def test_alpha_beta_gamma_weights(tiny_root):
    base, _, _, _, _ = build(tiny_root)
    scaled, _, _, _, _ = build(tiny_root, alpha=2.0, beta=0.0, das_sem_weight=3.0)
    batch = first_batch(base)
    a, b = base.tokenizer.loss_terms(*batch), scaled.tokenizer.loss_terms(*batch)
    assert torch.isclose(b["cf_click"], 2 * a["cf_click"])
    assert torch.isclose(b["sem_item"], 3 * a["sem_item"])
    assert b["align_u2i"].item() == 0.0


def test_reconstruction_is_normalised_so_that_it_acts(tiny_root):
    """L_sem's reconstruction is the MSE divided by the embeddings' variance: predicting the mean vector scores 1
    (plain MSE of L2-normalised text vectors is ~1/D, a rounding error beside the contrastive terms)."""
    model, _, _, _, _ = build(tiny_root)
    rqvae, x = model.tokenizer.uism.item_rqvae, model.tokenizer_input.item_sem[1:]
    scale = float(rqvae.recon_scale)
    assert scale == pytest.approx(float(x.var(dim=0).mean()), rel=1e-5) and scale < 0.2
    mean_guess = F.mse_loss(x.mean(0, keepdim=True).expand_as(x), x) / rqvae.recon_scale
    assert float(mean_guess) == pytest.approx(1.0 * (len(x) - 1) / len(x), rel=1e-3)


def test_cooccurrence_mask_covers_repeated_partners():
    """Co-occurrence partners repeat (popular items are drawn often): a row whose partner appears again in the batch
    must not see that copy as a negative. The mask covers same anchors OR same partners, and a key that is the
    query's own entity (row 3's anchor drawn as row 2's partner)."""
    torch.manual_seed(0)
    mdam = MDAM(code_dim=4, cf_dim=4, temperature=0.5)
    z_a, z_b = torch.randn(4, 4), torch.randn(4, 4)
    anchors = torch.tensor([1, 2, 3, 4])
    partners = torch.tensor([7, 7, 4, 9])  # rows 0 and 1 share their partner; row 2's partner is row 3's anchor
    z_b[1] = z_b[0]  # the same entity has the same vector
    z_b[2] = z_a[3]
    got = mdam.cooccurrence(z_a, z_b, anchors, partners)
    logits = F.normalize(z_a, dim=-1) @ F.normalize(z_b, dim=-1).T / 0.5
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True  # the partner's copy, both directions
    mask[3, 2] = True  # row 3's query against its own vector (the key of row 2)
    logits = logits.masked_fill(mask, float("-inf"))
    labels = torch.arange(4)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert torch.isclose(got, expected)
    unmasked = mdam.nce(z_a, z_b, anchors)  # anchors only: the identical copy counts as a negative
    assert not torch.isclose(got, unmasked)
    # rows without a partner (-1) are left out
    assert torch.isclose(mdam.cooccurrence(z_a, z_b, anchors, torch.tensor([7, 7, -1, -1])),
                         mdam.nce(z_a[:2], z_b[:2], anchors[:2], partners[:2]))
    u2i_like = mdam.nce(z_a, z_b, anchors, partners)  # users vs items: user 4 and item 4 are not one entity
    assert not torch.isclose(u2i_like, got)


def _fit(model, train, valid):
    return model.fit_tokenizer(train, valid)


def test_warm_starts_run_before_joint_epochs_and_are_logged(tiny_root):
    model, _, train, valid, _ = build(tiny_root, das_rqvae_pretrain_epochs=2, das_icdm_pretrain_epochs=3,
                                      das_joint_epochs=2, das_stopping_step=5)
    output = _fit(model, train, valid)
    stages = [(r["stage"], r["epoch"]) for r in output.history]
    assert stages == ([("warm start: item rqvae", e) for e in (1, 2)] + [("warm start: user rqvae", e) for e in (1, 2)]
                      + [("warm start: icdm", e) for e in (1, 2, 3)] + [("joint", e) for e in (0, 1, 2)])
    joint = [r for r in output.history if r["stage"] == "joint" and r["epoch"] > 0]
    for record in joint:  # every loss term, the churn and the stopping score are logged per joint epoch
        assert {"sem_item", "cf_click", "align_u2i", "align_cooc_i2i", "churn_any", "churn_l1", "user_churn_any",
                "valid_recall"} <= set(record)
    assert 0 <= output.summary["best_joint_epoch"] <= 2
    assert output.summary["recon_item_normalized"] > 0


def test_two_stage_ablation_freezes_the_quantizers(tiny_root):
    """das_one_stage: False: the joint stage trains ICDM / MDAM only, so no joint epoch changes a code; the
    one-stage default moves them."""
    settings = dict(das_rqvae_pretrain_epochs=2, das_icdm_pretrain_epochs=1, das_joint_epochs=3, das_stopping_step=5,
                    sid_last_level="greedy", dead_code_threshold=0)
    churn = {}
    for one_stage in (False, True):
        model, _, train, valid, _ = build(tiny_root, das_one_stage=one_stage, **settings)
        output = _fit(model, train, valid)
        joint = [r for r in output.history if r["stage"] == "joint" and r["epoch"] > 0]
        assert len(joint) == 3
        churn[one_stage] = [r["churn_any"] + r["user_churn_any"] for r in joint]
        frozen = [p.requires_grad for p in model.tokenizer.uism.parameters()]
        assert (not any(frozen)) if not one_stage else all(frozen)
    assert all(c == 0 for c in churn[False]) and any(c > 0 for c in churn[True])


def test_stopping_rule_keeps_the_best_epoch(tiny_root, monkeypatch):
    model, _, train, valid, _ = build(tiny_root, das_joint_epochs=10, das_stopping_step=2, sid_last_level="greedy")
    tok = model.tokenizer
    scores = iter([0.05, 0.30, 0.20, 0.25, 0.10, 0.9, 0.9])  # epoch 0 (before joint), 1, 2, ...
    monkeypatch.setattr(tok, "valid_score", lambda codes: next(scores))
    seen = []
    current = tok.current_codes
    monkeypatch.setattr(tok, "current_codes", lambda: seen.append(current()) or seen[-1])
    output = _fit(model, train, valid)
    joint = [r["epoch"] for r in output.history if r["stage"] == "joint"]
    assert joint == [0, 1, 2, 3]  # epochs 2 and 3 did not improve on epoch 1: stop after 2 of them
    assert output.summary["best_joint_epoch"] == 1
    assert np.array_equal(output.items.codes, seen[1][0])  # the SIDs of epoch 1, not of the last epoch
    assert np.array_equal(model.item_codes[1:].numpy(), seen[1][0])


def test_same_seed_same_sids(tiny_root, tmp_path):
    sids = []
    for run in range(2):
        cfg = dict(TINY_SID_CONFIG, data_path=str(tiny_root), checkpoint_dir=str(tmp_path / f"run{run}"))
        result = run_recbole(model="DAS", dataset="tiny", config_dict=cfg, cmd_args=[])
        files = result["sid_files"]
        with open(files["itemsid"]) as f_items, open(files["usersid"]) as f_users:
            sids.append((f_items.read(), f_users.read(), result["test_result"]))
    assert sids[0] == sids[1]
    assert sids[0][0].startswith("item_id:token\tsid:token_seq\n")


def test_user_and_item_codebook_sizes_are_independent(tiny_root, tmp_path):
    cfg = dict(TINY_SID_CONFIG, data_path=str(tiny_root), checkpoint_dir=str(tmp_path), sid_codebook_size=8,
               user_sid_codebook_size=4, user_sid_levels=3)
    result = run_recbole(model="DAS", dataset="tiny", config_dict=cfg, cmd_args=[])
    _, item_codes = read_sids(result["sid_files"]["itemsid"])
    _, user_codes = read_sids(result["sid_files"]["usersid"])
    assert item_codes.shape[1] == 2 + 1 and user_codes.shape[1] == 3 + 1  # learned levels + dedup
    assert item_codes[:, :-1].max() < 8 and user_codes[:, :-1].max() < 4
    report = json.loads(open(result["sid_files"]["quality"]).read())
    assert [lv["codebook_size"] for lv in report["users"]["levels"]] == [4, 4, 4]
    assert [lv["codebook_size"] for lv in report["items"]["levels"]] == [8, 8]
    assert report["users"]["levels"][0]["codes_used"] <= 4


def test_training_split_only(tiny_root):
    """Co-occurrence pairs, popularity statistics and user embeddings use training interactions only."""
    model, dataset, train, valid, test = build(tiny_root)
    tok = model.tokenizer
    tr = train._dataset.inter_feat
    users, items = tr["user_id"].numpy(), tr["item_id"].numpy()
    all_users, all_items = dataset.inter_feat["user_id"].numpy(), dataset.inter_feat["item_id"].numpy()
    assert len(all_users) > len(users)  # valid/test rows exist, so a leak would change the numbers below

    def cooc(u, i):
        r = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(model.n_users, model.n_items))
        r.data[:] = 1
        c = (r.T @ r).tocsr()
        c.setdiag(0)
        c.eliminate_zeros()
        return c

    expected, leaky = cooc(users, items), cooc(all_users, all_items)
    got = tok.cooc.item["matrix"]
    assert (got != expected).nnz == 0
    assert (got != leaky).nnz > 0

    pop, _ = popularity_statistics(torch.as_tensor(users), torch.as_tensor(items), model.n_users, model.n_items)
    assert torch.allclose(tok.item_pop, pop)
    leaky_pop, _ = popularity_statistics(torch.as_tensor(all_users), torch.as_tensor(all_items), model.n_users,
                                         model.n_items)
    assert not torch.allclose(tok.item_pop, leaky_pop)

    config = Config("DAS", "tiny", config_dict=dict(TINY_SID_CONFIG, data_path=str(tiny_root)), cmd_args=[])
    user_sem, item_sem = model.tokenizer_input.user_sem, model.tokenizer_input.item_sem
    assert torch.allclose(user_sem, user_semantic_embeddings(config, train._dataset, item_sem))
    assert not torch.allclose(user_sem, user_semantic_embeddings(config, dataset, item_sem))


def test_cooccurrence_sampler_draws_real_partners():
    users = torch.tensor([0, 0, 1, 1, 2])
    items = torch.tensor([1, 2, 2, 3, 4])
    sampler = CooccurrenceSampler(users, items, 3, 5, max_nnz=100)
    gen = torch.Generator().manual_seed(0)
    partners = CooccurrenceSampler.sample(sampler.item, torch.tensor([1, 2, 3, 4] * 50), gen)
    pairs = set(zip([1, 2, 3, 4] * 50, partners.tolist()))
    assert pairs <= {(1, 2), (2, 1), (2, 3), (3, 2), (4, -1)}
    assert {(2, 1), (2, 3)} <= pairs  # both partners of item 2 are drawn
    with pytest.raises(ValueError, match="das_cooc_max_nnz"):
        CooccurrenceSampler(users, items, 3, 5, max_nnz=1)


def test_phase_log_writes_tensorboard_scalars():
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

    writer = Writer()
    log = PhaseLog(writer)
    log.epoch("joint", 3, {"sem_item": torch.tensor(0.5), "align_u2i": 2.0}, churn_any=0.25)
    assert ("phase1/joint/sem_item", 0.5, 3) in writer.scalars and ("phase1/joint/churn_any", 0.25, 3) in writer.scalars
    assert log.history == [{"stage": "joint", "epoch": 3, "sem_item": 0.5, "align_u2i": 2.0, "churn_any": 0.25}]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_same_gradients_with_two_threads(tiny_root, two_threads):
    """Repeated items in a batch are gathered with index_select, whose backward adds the repeats in a fixed order:
    with advanced indexing (index_put_ with accumulate) two CPU threads added them in thread order, and the same seed
    gave different SIDs from run to run (seen on ml-100k with OMP_NUM_THREADS=2)."""
    model, _, _, _, _ = build(tiny_root, sid_code_dim=32, rqvae_hidden_dims=[32])
    tok, data = model.tokenizer, model.tokenizer_input
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(data.train_users), (4096,), generator=gen)  # tiny data: every item repeats
    neg = torch.randint(1, data.n_items, (4096,), generator=gen)
    params = list(tok.uism.item_rqvae.encoder.parameters())
    grads = []
    for _ in range(6):
        tok.generator.manual_seed(5)
        terms = tok.loss_terms(data.train_users[idx], data.train_items[idx], neg)
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(
            terms["align_cooc_i2i"] + terms["align_dual"], params)]))
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_bpr_mf_is_deterministic_with_two_threads(two_threads):
    from recbole_sid.tokenizers.stages import train_bpr_mf

    gen = torch.Generator().manual_seed(0)
    users, items = torch.randint(0, 20, (8192,), generator=gen), torch.randint(1, 30, (8192,), generator=gen)
    runs = [train_bpr_mf(users, items, 20, 30, dim=32, epochs=2, batch_size=4096, seed=3) for _ in range(3)]
    assert all(torch.equal(runs[0][0], r[0]) and torch.equal(runs[0][1], r[1]) for r in runs[1:])
