"""DAS (arXiv 2508.10584), the tokenizer: one-stage Dual-Aligned Semantic IDs for users and items.

UISM (dual RQ-VAEs) quantizes user and item semantic embeddings; ICDM (a DICE-style debiased two-tower CF model)
learns collaborative embeddings; MDAM aligns the quantized SID vectors with the unbiased CF parts through several
InfoNCE views. Quantization and alignment are optimised together ("one stage"):

    L = gamma * L_sem + alpha * L_cf + beta * L_align

Phase 1 of the ``DAS`` model runs, in order (epochs are keys of ``properties/model/DAS.yaml``):

1. UISM warm start: each RQ-VAE trains on reconstruction alone (``L_sem``, k-means codebook init on all entities);
2. ICDM warm start: the CF towers train on the clicks alone (``L_cf``);
3. joint training of all three modules, evaluated after every epoch by a DAS-native retrieval score on the
   validation split (``c_u_int`` against the decoded item SIDs, recall@k); training stops after
   ``das_stopping_step`` epochs without improvement and the best epoch's SIDs are kept.

The SIDs are then frozen: the model's phase 2 trains the shared top-k head on them in RecBole's loop.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_sid.config_values import cfg, cfg_float, cfg_int
from recbole_sid.data.negatives import sample_items
from recbole_sid.exceptions import ConfigError
from recbole_sid.model.layers import info_nce
from recbole_sid.quantization import RQVAE
from recbole_sid.tokenizers.base import (
    PhaseLog,
    Tokenizer,
    TokenizerInput,
    TokenizerOutput,
    churn,
)
from recbole_sid.tokenizers.rqvae import RQVAEConfig, rqvae_side
from recbole_sid.tokenizers.stages import batches, fit_rqvae


class UISM(nn.Module):
    """UISM, user-item semantic modelling: dual RQ-VAE quantizers, one for items and one for users."""

    def __init__(self, item_rqvae: RQVAE, user_rqvae: RQVAE):
        super().__init__()
        self.item_rqvae, self.user_rqvae = item_rqvae, user_rqvae

    def forward(self, item_x: torch.Tensor, user_x: torch.Tensor):
        """Returns the two RQVAEOutputs (item, user); ``L_sem`` is the sum of their losses."""
        return self.item_rqvae(item_x), self.user_rqvae(user_x)


class ICDM(nn.Module):
    """ICDM, ID-based collaborative debias module: DICE-style two-tower CF with interest/conformity users and
    content/popularity items; bias parts supervised by popularity and kept orthogonal to the unbiased parts."""

    def __init__(self, n_users: int, n_items: int, dim: int, debias: bool, seed: int = 0):
        super().__init__()
        self.debias = debias
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.user_int = nn.Embedding(n_users, dim)  # c_u_int (interest)
            self.item_pro = nn.Embedding(n_items, dim)  # c_i_pro (content)
            if debias:
                self.user_con = nn.Embedding(n_users, dim)  # c_u_con (conformity)
                self.item_pop = nn.Embedding(n_items, dim)  # c_i_pop (popularity)
                self.item_pop_head = nn.Linear(dim, 1)  # c_i_pop -> item popularity statistic
                self.user_con_head = nn.Linear(dim, 1)  # c_u_con -> user conformity statistic
            for emb in self.modules():
                if isinstance(emb, nn.Embedding):
                    nn.init.normal_(emb.weight, std=0.1)

    def score(self, users, items):
        s = (self.user_int(users) * self.item_pro(items)).sum(-1)
        if self.debias:
            s = s + (self.user_con(users) * self.item_pop(items)).sum(-1)
        return s

    def losses(self, users, pos, neg, item_pop, user_con, con_weight: float, pop_weight: float,
               orth_weight: float) -> dict:
        """``L_cf`` terms: click BPR; with debias, conformity BPR on popularity-ordered pairs (DICE), popularity
        regression of the bias parts, and orthogonality between bias and unbiased parts."""
        terms = {"click": -F.logsigmoid(self.score(users, pos) - self.score(users, neg)).mean()}
        if not self.debias:
            return terms
        con_u, pop_p, pop_n = self.user_con(users), self.item_pop(pos), self.item_pop(neg)
        # DICE: when the positive is more popular than the negative, conformity alone can explain the click.
        more_popular = (item_pop[pos] > item_pop[neg]).float()
        con_bpr = -F.logsigmoid((con_u * pop_p).sum(-1) - (con_u * pop_n).sum(-1))
        terms["conformity"] = con_weight * (con_bpr * more_popular).sum() / more_popular.sum().clamp_min(1.0)
        items = torch.cat([pos, neg])
        terms["popularity"] = pop_weight * (
            F.mse_loss(self.item_pop_head(self.item_pop(items)).squeeze(-1), item_pop[items])
            + F.mse_loss(self.user_con_head(con_u).squeeze(-1), user_con[users]))
        cos_u = F.cosine_similarity(self.user_int(users), con_u, dim=-1)
        cos_i = F.cosine_similarity(self.item_pro(items), self.item_pop(items), dim=-1)
        terms["orthogonal"] = orth_weight * (cos_u.pow(2).mean() + cos_i.pow(2).mean())
        return terms


class MDAM(nn.Module):
    """MDAM, multi-view dual alignment: InfoNCE between quantized SID vectors (z) and unbiased CF embeddings (c).

    In-batch negatives exclude every copy of the positive: a pair is masked when its anchors are the same entity
    or its keys are (``info_nce`` with ``ids`` and ``key_ids``); in the co-occurrence views also when a key is the
    anchor itself (an item drawn as another row's partner)."""

    def __init__(self, code_dim: int, cf_dim: int, temperature: float, seed: int = 0):
        super().__init__()
        self.temperature = temperature
        # projection of the SID side into the CF space when their sizes differ (identity otherwise)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.proj = nn.Identity() if code_dim == cf_dim else nn.Linear(code_dim, cf_dim, bias=False)

    def nce(self, a, b, ids=None, key_ids=None, one_kind=False):
        return info_nce(a, b, self.temperature, ids=ids, key_ids=key_ids, one_kind=one_kind)

    def u2i(self, z_u, c_i_pro, c_u_int, z_i, users, items):
        """Dual u2i: z_u <-> c_i_pro and c_u_int <-> z_i over observed (u, i) pairs."""
        return (self.nce(self.proj(z_u), c_i_pro, users, items)
                + self.nce(c_u_int, self.proj(z_i), users, items))

    def dual(self, z_i, c_i_pro, items, z_u, c_u_int, users):
        """Dual i2i / u2u: an item's (user's) SID vector with its own unbiased CF embedding."""
        return self.nce(self.proj(z_i), c_i_pro, items) + self.nce(self.proj(z_u), c_u_int, users)

    def cooccurrence(self, z_a, z_b, anchors, partners):
        """Co-occurrence i2i (u2u): SID vectors of items clicked by a same user (users sharing an item). Rows
        without a partner (``partners < 0``) are left out."""
        valid = partners >= 0
        if not bool(valid.any()):
            return z_a.new_zeros(())
        return self.nce(self.proj(z_a[valid]), self.proj(z_b[valid]), anchors[valid], partners[valid], one_kind=True)


class CooccurrenceSampler:
    """Co-occurrence pairs of the training split, built once per run with sparse products: ``C = R^T R`` (items)
    and ``R R^T`` (users) without the diagonal; a partner is drawn with probability proportional to ``C_ij``."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, max_nnz: int):
        r = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users.numpy(), items.numpy())),
                          shape=(n_users, n_items))
        r.data[:] = 1.0  # repeated clicks count once
        self.item = self._build((r.T @ r).tocsr(), max_nnz, "item")
        self.user = self._build((r @ r.T).tocsr(), max_nnz, "user")

    @staticmethod
    def _build(matrix: sp.csr_matrix, max_nnz: int, name: str):
        matrix.setdiag(0)
        matrix.eliminate_zeros()
        if matrix.nnz > max_nnz:
            raise ConfigError(f"DAS co-occurrence ({name}) has {matrix.nnz} pairs, above das_cooc_max_nnz={max_nnz}; "
                              f"raise the limit or set das_align_cooc: False")
        cum = torch.from_numpy(np.cumsum(matrix.data, dtype=np.float64))
        return {"indptr": torch.from_numpy(matrix.indptr.astype(np.int64)),
                "indices": torch.from_numpy(matrix.indices.astype(np.int64)), "cum": cum, "matrix": matrix}

    @staticmethod
    def sample(table, rows: torch.Tensor, generator: torch.Generator):
        """One partner per row (``-1`` where the row has none); vectorised over ``rows``."""
        rows_cpu = rows.cpu()
        start, end = table["indptr"][rows_cpu], table["indptr"][rows_cpu + 1]
        cum = table["cum"]
        before = torch.where(start > 0, cum[(start - 1).clamp_min(0)], torch.zeros_like(start, dtype=cum.dtype))
        total = torch.where(end > start, cum[(end - 1).clamp_min(0)] - before, torch.zeros_like(before))
        target = before + torch.rand(len(rows_cpu), generator=generator, dtype=cum.dtype) * total
        pos = torch.searchsorted(cum, target, right=True).clamp_max(max(len(cum) - 1, 0))
        partner = torch.where(end > start, table["indices"][pos] if len(cum) else start, torch.full_like(start, -1))
        return partner.to(rows.device)


def popularity_statistics(users, items, n_users: int, n_items: int):
    """Item popularity = standardised log(1 + clicks); user conformity = mean popularity of the user's clicks."""
    log_pop = torch.log1p(torch.bincount(items, minlength=n_items).float())
    item_pop = (log_pop - log_pop.mean()) / log_pop.std().clamp_min(1e-6)
    sums = torch.zeros(n_users).index_add_(0, users, item_pop[items])
    counts = torch.bincount(users, minlength=n_users).float()
    user_con = torch.where(counts > 0, sums / counts.clamp_min(1.0), torch.zeros_like(sums))
    return item_pop, user_con


@torch.no_grad()
def retrieval_recall(user_vec: torch.Tensor, item_vec: torch.Tensor, train_users, train_items, valid_users,
                     valid_items, k: int = 10, batch_size: int = 1024) -> float:
    """Full-sort recall@k of ``cos(user_vec[u], item_vec[i])`` on the validation pairs, each user's training items
    masked like history (RecBole's full-sort protocol). Row 0 of both tables is padding and never ranked."""
    n_users, n_items = user_vec.shape[0], item_vec.shape[0]
    u_vec, i_vec = F.normalize(user_vec, dim=-1), F.normalize(item_vec, dim=-1)

    def matrix(us, its):
        m = sp.csr_matrix((np.ones(len(us), dtype=np.float32), (us.cpu().numpy(), its.cpu().numpy())),
                          shape=(n_users, n_items))
        m.data[:] = 1.0
        return m

    train, valid = matrix(train_users, train_items), matrix(valid_users, valid_items)
    users = np.unique(valid_users.cpu().numpy())
    k = min(k, n_items - 1)
    recalls = []
    for start in range(0, len(users), batch_size):
        b = users[start:start + batch_size]
        scores = u_vec[torch.as_tensor(b)] @ i_vec.T
        scores[:, 0] = float("-inf")
        scores[torch.as_tensor(train[b].toarray() > 0)] = float("-inf")
        top = scores.topk(k, dim=1).indices.numpy()
        truth = valid[b].toarray() > 0
        hits = np.take_along_axis(truth, top, axis=1).sum(axis=1)
        recalls.append(hits / truth.sum(axis=1))
    return float(np.concatenate(recalls).mean()) if recalls else 0.0


class DASTokenizer(Tokenizer):
    """UISM + ICDM + MDAM: warm starts, then joint one-stage training with a validation-based stopping rule."""

    name = "DAS"
    has_user_sids = True

    def __init__(self, config, n_users: int, n_items: int):
        super().__init__(config, n_users, n_items)
        self.user_levels = cfg_int(config, "user_sid_levels", 3, minimum=1)
        self.user_codebook_size = cfg_int(config, "user_sid_codebook_size", 256, minimum=2)
        if self.user_codebook_size > n_users - 1:
            raise ConfigError(f"config key 'user_sid_codebook_size'={self.user_codebook_size} is larger than the "
                              f"number of users ({n_users - 1}): k-means needs at least as many users as codes")
        self.rq = RQVAEConfig(config)
        self.gamma = cfg_float(config, "das_sem_weight", 1.0, minimum=0.0)
        self.alpha = cfg_float(config, "alpha", 1.0, minimum=0.0)
        self.beta = cfg_float(config, "beta", 0.5, minimum=0.0)
        self.use_debias = bool(cfg(config, "das_use_debias", True))
        self.align_u2i = bool(cfg(config, "das_align_u2i", True))
        self.align_dual = bool(cfg(config, "das_align_dual", True))
        self.align_cooc = bool(cfg(config, "das_align_cooc", True))
        self.one_stage = bool(cfg(config, "das_one_stage", True))
        self.con_weight = cfg_float(config, "icdm_conformity_weight", 0.5, minimum=0.0)
        self.pop_weight = cfg_float(config, "icdm_pop_weight", 0.1, minimum=0.0)
        self.orth_weight = cfg_float(config, "icdm_orth_weight", 0.1, minimum=0.0)
        self.cf_dim = cfg_int(config, "cf_embedding_size", 64, minimum=1)
        self.temperature = cfg_float(config, "align_temperature", 0.2, minimum=1e-6)
        self.batch_size = cfg_int(config, "das_batch_size", 512, minimum=2)
        self.cf_batch_size = cfg_int(config, "train_batch_size", 2048, minimum=2)  # ICDM warm start (CF only)
        self.lr = cfg_float(config, "das_lr", 1e-3, minimum=0.0)
        self.cooc_max_nnz = cfg_int(config, "das_cooc_max_nnz", 50_000_000, minimum=1)
        self.rqvae_epochs = cfg_int(config, "das_rqvae_pretrain_epochs", 50, minimum=0)
        self.icdm_epochs = cfg_int(config, "das_icdm_pretrain_epochs", 20, minimum=0)
        self.joint_epochs = cfg_int(config, "das_joint_epochs", 30, minimum=0)
        self.stopping_step = cfg_int(config, "das_stopping_step", 3, minimum=1)
        self.valid_k = cfg_int(config, "das_valid_topk", 10, minimum=1)
        self.modules_ready = False

    # --- modules and statistics ----------------------------------------------------------------------------
    def prepare(self, data: TokenizerInput) -> None:
        """Build UISM, ICDM, MDAM and the training-split statistics (popularity, co-occurrence)."""
        if data.user_sem is None:
            raise ValueError("DAS needs user semantic embeddings (TokenizerInput.user_sem)")
        self.data = data
        device = data.item_sem.device
        self.uism = UISM(self.rq.build(data.item_sem.shape[1], self.num_levels, self.codebook_size, self.seed),
                         self.rq.build(data.user_sem.shape[1], self.user_levels, self.user_codebook_size,
                                       self.seed + 1)).to(device)
        self.icdm = ICDM(data.n_users, data.n_items, self.cf_dim, self.use_debias, self.seed + 2).to(device)
        self.mdam = MDAM(self.rq.code_dim, self.cf_dim, self.temperature, self.seed + 3).to(device)
        users, items = data.train_users.cpu(), data.train_items.cpu()
        item_pop, user_con = popularity_statistics(users, items, data.n_users, data.n_items)
        self.item_pop, self.user_con = item_pop.to(device), user_con.to(device)
        self.cooc = (CooccurrenceSampler(users, items, data.n_users, data.n_items, self.cooc_max_nnz)
                     if self.align_cooc else None)
        self.generator = torch.Generator().manual_seed(self.seed + 4)
        with torch.no_grad():  # L_sem's scale, and a k-means init of the codebooks on every entity (not one batch)
            self.uism.item_rqvae.normalize_reconstruction(data.item_sem[1:])
            self.uism.user_rqvae.normalize_reconstruction(data.user_sem[1:])
            self.uism.item_rqvae.quantizer.init_codebooks(self.uism.item_rqvae.encoder(data.item_sem[1:]))
            self.uism.user_rqvae.quantizer.init_codebooks(self.uism.user_rqvae.encoder(data.user_sem[1:]))
        self.modules_ready = True

    def parameters(self):
        return [*self.uism.parameters(), *self.icdm.parameters(), *self.mdam.parameters()]

    def train(self, mode: bool = True) -> None:
        for module in (self.uism, self.icdm, self.mdam):
            module.train(mode)

    # --- the loss ----------------------------------------------------------------------------------------
    def cf_terms(self, users, pos, neg) -> dict:
        """``alpha * L_cf`` terms of ICDM (keys ``cf_*``)."""
        return {f"cf_{key}": self.alpha * value for key, value in
                self.icdm.losses(users, pos, neg, self.item_pop, self.user_con, self.con_weight, self.pop_weight,
                                 self.orth_weight).items()}

    def loss_terms(self, users, pos, neg) -> dict:
        """Every term of the joint objective on one batch of training pairs, already weighted: ``sem_item``,
        ``sem_user`` (UISM), ``cf_*`` (ICDM), ``align_*`` (MDAM)."""
        item_rows, user_rows = pos, users
        if self.cooc is not None:
            cooc_items = CooccurrenceSampler.sample(self.cooc.item, pos, self.generator)
            cooc_users = CooccurrenceSampler.sample(self.cooc.user, users, self.generator)
            # a row without a partner (-1) borrows its anchor; the co-occurrence loss leaves it out anyway
            item_rows = torch.cat([pos, torch.where(cooc_items >= 0, cooc_items, pos)])
            user_rows = torch.cat([users, torch.where(cooc_users >= 0, cooc_users, users)])
        # UISM runs once per distinct entity of the batch (popular items and active users repeat): L_sem counts
        # each entity once, and the quantized vectors are gathered back to the rows
        items_u, items_inv = torch.unique(item_rows, return_inverse=True)
        users_u, users_inv = torch.unique(user_rows, return_inverse=True)
        item_out, user_out = self.uism(self.data.item_sem[items_u], self.data.user_sem[users_u])
        # index_select: its backward (index_add_) sums repeated rows in a fixed order on the CPU; advanced indexing
        # (index_put_ with accumulate) sums them in thread order, so two threads gave different SIDs per run
        z_items = item_out.quantized.index_select(0, items_inv)
        z_users = user_out.quantized.index_select(0, users_inv)
        a = len(users)
        z_i, z_u = z_items[:a], z_users[:a]
        terms = {"sem_item": self.gamma * item_out.loss, "sem_user": self.gamma * user_out.loss}
        terms.update(self.cf_terms(users, pos, neg))
        c_u_int, c_i_pro = self.icdm.user_int(users), self.icdm.item_pro(pos)  # only the unbiased parts
        if self.align_u2i:
            terms["align_u2i"] = self.beta * self.mdam.u2i(z_u, c_i_pro, c_u_int, z_i, users, pos)
        if self.align_dual:
            terms["align_dual"] = self.beta * self.mdam.dual(z_i, c_i_pro, pos, z_u, c_u_int, users)
        if self.cooc is not None:
            terms["align_cooc_i2i"] = self.beta * self.mdam.cooccurrence(z_i, z_items[a:], pos, cooc_items)
            terms["align_cooc_u2u"] = self.beta * self.mdam.cooccurrence(z_u, z_users[a:], users, cooc_users)
        return terms

    # --- phase 1 -------------------------------------------------------------------------------------------
    def _negatives(self, n: int) -> torch.Tensor:
        pool = self.data.negative_items
        return sample_items(n, self.data.n_items, self.generator, None if pool is None else pool.cpu()).to(
            self.data.item_sem.device)

    def _epoch(self, optimizer, terms_fn, batch_size: int) -> dict:
        """One pass over the training pairs with ``terms_fn(users, pos, neg)``; returns the per-term means."""
        data, device = self.data, self.data.item_sem.device
        sums: dict[str, float] = {}
        n_batches = 0
        start = time.perf_counter()
        for idx in batches(len(data.train_users), batch_size, self.generator):
            users, pos = data.train_users[idx].to(device), data.train_items[idx].to(device)
            terms = terms_fn(users, pos, self._negatives(len(idx)))
            optimizer.zero_grad()
            sum(terms.values()).backward()
            optimizer.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            n_batches += 1
        means = {k: v / max(n_batches, 1) for k, v in sums.items()}
        means["total"] = sum(means.values())
        means["seconds"] = time.perf_counter() - start
        return means

    @torch.no_grad()
    def current_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Greedy item and user codes of every entity under the current quantizers (eval mode)."""
        self.train(False)
        items = self.uism.item_rqvae.encode(self.data.item_sem[1:]).cpu().numpy()
        users = self.uism.user_rqvae.encode(self.data.user_sem[1:]).cpu().numpy()
        return items, users

    @torch.no_grad()
    def valid_score(self, item_codes: np.ndarray) -> float | None:
        """Recall@k of ``c_u_int`` against the decoded, projected item SIDs on the validation pairs."""
        data = self.data
        if data.valid_users is None or len(data.valid_users) == 0:
            return None
        z = self.uism.item_rqvae.quantizer.decode(torch.as_tensor(item_codes, device=data.item_sem.device))
        item_vec = torch.cat([z.new_zeros(1, self.cf_dim), self.mdam.proj(z)])
        return retrieval_recall(self.icdm.user_int.weight, item_vec, data.train_users, data.train_items,
                                data.valid_users, data.valid_items, k=self.valid_k)

    @torch.no_grad()
    def reseed_dead_codes(self) -> int:
        """Codes that no entity uses (all items / all users, counted now) get random residuals; returns how many."""
        self.train(False)
        total = 0
        for rqvae, x in ((self.uism.item_rqvae, self.data.item_sem[1:]),
                         (self.uism.user_rqvae, self.data.user_sem[1:])):
            if rqvae.quantizer.dead_code_threshold > 0:
                total += rqvae.quantizer.reseed_dead_codes(rqvae.encoder(x), recount=True)
        return total

    def fit(self, data: TokenizerInput, log: PhaseLog) -> TokenizerOutput:
        self.prepare(data)
        # 1. UISM warm start: reconstruction only (the same RQ-VAE training as the RQVAE tokenizer)
        for side, rqvae, x, seed in (("item", self.uism.item_rqvae, data.item_sem[1:], self.seed),
                                     ("user", self.uism.user_rqvae, data.user_sem[1:], self.seed + 1)):
            if self.rqvae_epochs:
                fit_rqvae(rqvae, x, self.rqvae_epochs, self.rq.lr, self.rq.batch_size, seed, log=log,
                          stage=f"warm start: {side} rqvae", normalize=False, kmeans_init=False)
        # 2. ICDM warm start: the CF towers on the clicks only
        if self.icdm_epochs:
            optimizer = torch.optim.Adam(self.icdm.parameters(), lr=self.lr)
            self.icdm.train()
            for epoch in range(self.icdm_epochs):
                log.epoch("warm start: icdm", epoch + 1, self._epoch(optimizer, self.cf_terms, self.cf_batch_size))
        # 3. joint: UISM + ICDM + MDAM, stopping on the validation retrieval score
        item_codes, user_codes = self.current_codes()
        best = {"epoch": 0, "score": self.valid_score(item_codes), "state": copy.deepcopy(self.uism.state_dict())}
        log.epoch("joint", 0, {}, valid_recall=best["score"] if best["score"] is not None else float("nan"))
        if self.one_stage:
            optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        else:  # the two-stage ablation: the quantizers are frozen after their warm start, only ICDM/MDAM align
            self.uism.requires_grad_(False)
            optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)
        waited = 0
        for epoch in range(1, self.joint_epochs + 1):
            self.train(True)
            if not self.one_stage:
                self.uism.train(False)  # frozen: no dropout, no codebook statistics
            means = self._epoch(optimizer, self.loss_terms, self.batch_size)
            reseeded = self.reseed_dead_codes() if self.one_stage else 0
            new_items, new_users = self.current_codes()
            score = self.valid_score(new_items)
            item_churn = churn(item_codes, new_items)
            user_churn = {f"user_{k}": v for k, v in churn(user_codes, new_users).items()}
            item_codes, user_codes = new_items, new_users
            log.epoch("joint", epoch, means, dead_codes_reseeded=reseeded, **item_churn, **user_churn,
                      valid_recall=score if score is not None else float("nan"))
            if score is None or best["score"] is None or score > best["score"]:
                best = {"epoch": epoch, "score": score, "state": copy.deepcopy(self.uism.state_dict())}
                waited = 0
            else:
                waited += 1
                if waited >= self.stopping_step:
                    break
        self.uism.load_state_dict(best["state"])
        self.train(False)
        items = rqvae_side(self, self.uism.item_rqvae, data.item_sem[1:], "item")
        users = rqvae_side(self, self.uism.user_rqvae, data.user_sem[1:], "user")
        # reconstruction error of the final SIDs, as a share of the embeddings' variance (1 = the mean vector)
        recon = {f"recon_{side}_normalized": float(((out.reconstructions - out.embeddings) ** 2).mean() /
                                                   float(rqvae.recon_scale))
                 for side, out, rqvae in (("item", items, self.uism.item_rqvae), ("user", users, self.uism.user_rqvae))}
        summary = {"best_joint_epoch": best["epoch"], "best_valid_recall": best["score"], **recon}
        return TokenizerOutput(items=items, users=users, history=log.history, summary=summary)
