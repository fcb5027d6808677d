"""DAS: every loss term is real and reaches the parameters it should; ablation flags; determinism; no leakage."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from conftest import TINY_SID_CONFIG, write_tiny_dataset
from recbole_sid.config import Config
from recbole_sid.data.semantic import user_semantic_embeddings
from recbole_sid.model.general_recommender.das import DAS, CooccurrenceSampler
from recbole_sid.quick_start import run_recbole


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("das"))


def build(tiny_root, **overrides):
    cfg = dict(TINY_SID_CONFIG, data_path=str(tiny_root), **overrides)
    config = Config("DAS", "tiny", config_dict=cfg, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = DAS(config, train._dataset)
    model.fit_tokenizer(train)
    model.train()
    return model, dataset, train, valid, test


def first_batch(train):
    return next(iter(train))


def test_every_term_finite_and_nonzero(tiny_root):
    model, _, train, _, _ = build(tiny_root)
    terms = model.loss_terms(first_batch(train))
    assert set(terms) == {"rec", "sem_item", "sem_user", "cf_click", "cf_conformity", "cf_popularity",
                          "cf_orthogonal", "align_u2i", "align_dual", "align_cooc_i2i", "align_cooc_u2u"}
    for name, value in terms.items():
        assert torch.isfinite(value), name
        assert value.item() != 0.0, name
    batch = first_batch(train)
    model._generator.manual_seed(1)
    total = model.calculate_loss(batch).detach()
    model._generator.manual_seed(1)
    assert torch.isclose(total, sum(v.detach() for v in model.loss_terms(batch).values()))


def _grads(model, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n: (p.grad is not None and p.grad.abs().sum().item() > 0) for n, p in model.named_parameters()}


def _any(grads, prefix):
    return any(v for n, v in grads.items() if n.startswith(prefix))


def test_gradients_reach_the_right_parameters(tiny_root):
    model, _, train, _, _ = build(tiny_root)
    terms = model.loss_terms(first_batch(train))
    sem_item = _grads(model, terms["sem_item"])
    assert _any(sem_item, "uism.item_rqvae.encoder") and _any(sem_item, "uism.item_rqvae.quantizer.codebooks")
    assert _any(sem_item, "uism.item_rqvae.decoder") and not _any(sem_item, "uism.user_rqvae")
    sem_user = _grads(model, terms["sem_user"])
    assert _any(sem_user, "uism.user_rqvae.encoder") and _any(sem_user, "uism.user_rqvae.quantizer.codebooks")
    cf = _grads(model, terms["cf_click"])
    for tower in ("icdm.user_int", "icdm.item_pro", "icdm.user_con", "icdm.item_pop"):
        assert _any(cf, tower), tower
    assert not _any(cf, "uism")
    for name in ("align_u2i", "align_dual"):
        g = _grads(model, terms[name])
        assert _any(g, "uism.item_rqvae.encoder") and _any(g, "uism.user_rqvae.encoder"), name
        assert _any(g, "icdm.user_int") and _any(g, "icdm.item_pro"), name
        # only the unbiased parts are aligned with the SIDs
        assert not _any(g, "icdm.user_con") and not _any(g, "icdm.item_pop"), name
    cooc = _grads(model, terms["align_cooc_i2i"])
    assert _any(cooc, "uism.item_rqvae.encoder") and not _any(cooc, "icdm")
    rec = _grads(model, terms["rec"])
    assert _any(rec, "scorer.code_emb") and _any(rec, "scorer.user_code_emb") and _any(rec, "scorer.user_emb")


@pytest.mark.parametrize("flag, removed", [
    ("das_align_u2i", {"align_u2i"}),
    ("das_align_dual", {"align_dual"}),
    ("das_align_cooc", {"align_cooc_i2i", "align_cooc_u2u"}),
    ("das_use_debias", {"cf_conformity", "cf_popularity", "cf_orthogonal"}),
])
def test_switching_a_family_off_removes_exactly_its_term(tiny_root, flag, removed):
    full, _, train, _, _ = build(tiny_root)
    ablated, _, train2, _, _ = build(tiny_root, **{flag: False})
    batch = first_batch(train)
    full_terms, ablated_terms = full.loss_terms(batch), ablated.loss_terms(batch)
    assert set(full_terms) - set(ablated_terms) == removed
    assert set(ablated_terms) <= set(full_terms)


def test_alpha_beta_weights(tiny_root):
    base, _, train, _, _ = build(tiny_root)
    scaled, _, _, _, _ = build(tiny_root, alpha=2.0, beta=0.0)
    batch = first_batch(train)
    a, b = base.loss_terms(batch), scaled.loss_terms(batch)
    assert torch.isclose(b["cf_click"], 2 * a["cf_click"])
    assert b["align_u2i"].item() == 0.0 and torch.isclose(b["sem_item"], a["sem_item"])


def test_same_seed_same_sids(tiny_root, tmp_path):
    sids = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        cfg = dict(TINY_SID_CONFIG, data_path=str(tiny_root), checkpoint_dir=str(out))
        result = run_recbole(model="DAS", dataset="tiny", config_dict=cfg, cmd_args=[])
        sids.append(((out / "tiny.itemsid").read_text(), (out / "tiny.usersid").read_text(),
                     result["test_result"]))
    assert sids[0] == sids[1]
    assert sids[0][0].startswith("item_id:token\tsid:token_seq\n")


def test_training_split_only(tiny_root):
    """Co-occurrence pairs, popularity statistics and user embeddings use training interactions only."""
    model, dataset, train, valid, test = build(tiny_root)
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
    got = model.cooc.item["matrix"]
    assert (got != expected).nnz == 0
    assert (got != leaky).nnz > 0

    pop, con = DAS.popularity_statistics(torch.as_tensor(users), torch.as_tensor(items), model.n_users, model.n_items)
    assert torch.allclose(model.item_pop, pop)
    leaky_pop, _ = DAS.popularity_statistics(torch.as_tensor(all_users), torch.as_tensor(all_items),
                                             model.n_users, model.n_items)
    assert not torch.allclose(model.item_pop, leaky_pop)

    config = Config("DAS", "tiny", config_dict=dict(TINY_SID_CONFIG, data_path=str(tiny_root)), cmd_args=[])
    assert torch.allclose(model.user_sem, user_semantic_embeddings(config, train._dataset, model.item_sem))
    assert not torch.allclose(model.user_sem, user_semantic_embeddings(config, dataset, model.item_sem))


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


def test_sid_freeze_epoch(tiny_root):
    """``das_sid_freeze_epoch: 1``: the first epoch end refreshes the SIDs, later ones do not, and once frozen the
    loss is the top-k head's ``L_rec`` alone; 0 refreshes after every epoch."""
    model, _, train, _, _ = build(tiny_root, das_sid_freeze_epoch=1)
    batch = first_batch(train)
    assert "align_u2i" in model.loss_terms(batch) and not model.sids_frozen
    with torch.no_grad():  # move the quantizers so that a refresh would change the codes
        for p in model.uism.parameters():
            p.add_(torch.randn_like(p))
    before = model.item_codes.clone()
    model.on_train_epoch_end()
    assert model.sids_frozen and not torch.equal(model.item_codes, before)
    frozen_items, frozen_users = model.item_codes.clone(), model.user_codes.clone()
    with torch.no_grad():
        for p in model.uism.parameters():
            p.add_(torch.randn_like(p))
    model.on_train_epoch_end()
    assert torch.equal(model.item_codes, frozen_items) and torch.equal(model.user_codes, frozen_users)
    assert set(model.loss_terms(batch)) == {"rec"}

    never, _, _, _, _ = build(tiny_root)
    for _ in range(3):
        never.on_train_epoch_end()
    assert not never.sids_frozen and never.epochs_done == 3
    with pytest.raises(ValueError, match="das_sid_freeze_epoch"):
        build(tiny_root, das_sid_freeze_epoch=-1)
