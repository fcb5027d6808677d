"""DAS: one-stage Dual-Aligned Semantic IDs (arXiv 2508.10584), as a RecBole model.

User and item SIDs are quantized from semantic embeddings (UISM) and, in the same training run, aligned with
debiased collaborative signals (ICDM) through several contrastive views (MDAM):

    L = L_rec + L_sem + alpha * L_cf + beta * L_align

``L_rec`` is the shared SID scorer's BPR loss (the top-k head every tokenizer of the plugin uses); ``L_sem``,
``L_cf`` and ``L_align`` are the paper's three modules. The paper publishes no code; every choice we made is a
key in ``properties/model/DAS.yaml``, documented there.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_sid.data.semantic import user_semantic_embeddings
from recbole_sid.exceptions import ConfigError
from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.model.general_recommender.rqvae import build_rqvae, rqvae_codes
from recbole_sid.model.layers import info_nce
from recbole_sid.model.stages import training_pairs


class UISM(nn.Module):
    """UISM, user-item semantic modelling: dual RQ-VAE quantizers, one for items and one for users."""

    def __init__(self, config, item_dim: int, user_dim: int, num_levels: int, codebook_size: int,
                 user_levels: int, user_codebook_size: int, seed: int):
        super().__init__()
        self.item_rqvae = build_rqvae(config, item_dim, num_levels, codebook_size, seed)
        self.user_rqvae = build_rqvae(config, user_dim, user_levels, user_codebook_size, seed + 1)

    def forward(self, item_x: torch.Tensor, user_x: torch.Tensor):
        """Returns the two RQVAEOutputs (item, user); ``L_sem`` is the sum of their losses."""
        return self.item_rqvae(item_x), self.user_rqvae(user_x)


class ICDM(nn.Module):
    """ICDM, ID-based collaborative debias module: DICE-style two-tower CF with interest/conformity users and
    content/popularity items; bias parts supervised by popularity and kept orthogonal to the unbiased parts."""

    def __init__(self, n_users: int, n_items: int, dim: int, debias: bool):
        super().__init__()
        self.debias = debias
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
    """MDAM, multi-view dual alignment: InfoNCE between quantized SID vectors (z) and unbiased CF embeddings (c)."""

    def __init__(self, code_dim: int, cf_dim: int, temperature: float):
        super().__init__()
        self.temperature = temperature
        # projection of the SID side into the CF space when their sizes differ (identity otherwise)
        self.proj = nn.Identity() if code_dim == cf_dim else nn.Linear(code_dim, cf_dim, bias=False)

    def nce(self, a, b, ids=None):
        return info_nce(a, b, self.temperature, ids=ids)

    def u2i(self, z_u, c_i_pro, c_u_int, z_i, items):
        """Dual u2i: z_u <-> c_i_pro and c_u_int <-> z_i over observed (u, i) pairs."""
        return self.nce(self.proj(z_u), c_i_pro, items) + self.nce(c_u_int, self.proj(z_i), items)

    def dual(self, z_i, c_i_pro, items, z_u, c_u_int, users):
        """Dual i2i / u2u: an item's (user's) SID vector with its own unbiased CF embedding."""
        return self.nce(self.proj(z_i), c_i_pro, items) + self.nce(self.proj(z_u), c_u_int, users)

    def cooccurrence(self, z_a, z_b, ids, valid):
        """Co-occurrence i2i (u2u): SID vectors of items clicked by a same user (users sharing an item)."""
        if not bool(valid.any()):
            return z_a.new_zeros(())
        return self.nce(self.proj(z_a[valid]), self.proj(z_b[valid]), ids[valid])


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
            raise ValueError(f"DAS co-occurrence ({name}) has {matrix.nnz} pairs, above das_cooc_max_nnz={max_nnz}; "
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


class DAS(SIDRecommender):
    """One-stage Dual-Aligned Semantic IDs: UISM + ICDM + MDAM trained jointly with the shared SID scorer."""

    def __init__(self, config, dataset):
        self.user_sid_levels = int(config["user_sid_levels"])
        self.user_codebook_size = int(config["user_sid_codebook_size"])
        super().__init__(config, dataset)
        self.alpha, self.beta = float(config["alpha"]), float(config["beta"])
        self.use_debias = bool(config["das_use_debias"])
        self.align_u2i, self.align_dual = bool(config["das_align_u2i"]), bool(config["das_align_dual"])
        self.align_cooc = bool(config["das_align_cooc"])
        self.con_weight, self.pop_weight = float(config["icdm_conformity_weight"]), float(config["icdm_pop_weight"])
        self.orth_weight = float(config["icdm_orth_weight"])
        cf_dim = int(config["cf_embedding_size"])
        self.align_batch_size = int(config["das_align_batch_size"])
        self.freeze_epoch = int(config["das_sid_freeze_epoch"] or 0)
        if self.freeze_epoch < 0:
            raise ConfigError(f"config key 'das_sid_freeze_epoch' must be >= 0 (0: never), got {self.freeze_epoch}")
        #: epochs finished so far; SIDs are frozen once it reaches ``freeze_epoch`` (see ``on_train_epoch_end``)
        self.epochs_done = 0

        users, items = training_pairs(dataset)  # the model's dataset is RecBole's TRAINING split
        self.register_buffer("user_sem", user_semantic_embeddings(config, dataset, self.item_sem), persistent=False)
        self.register_buffer("user_codes", torch.zeros(self.n_users, self.user_sid_levels, dtype=torch.long))
        item_pop, user_con = self.popularity_statistics(users, items, self.n_users, self.n_items)
        self.register_buffer("item_pop", item_pop, persistent=False)
        self.register_buffer("user_con", user_con, persistent=False)
        self.cooc = (CooccurrenceSampler(users, items, self.n_users, self.n_items, int(config["das_cooc_max_nnz"]))
                     if self.align_cooc else None)
        self._generator = torch.Generator().manual_seed(self.seed)

        self.uism = UISM(config, self.item_sem.shape[1], self.user_sem.shape[1], self.sid_levels,
                         self.codebook_size, self.user_sid_levels, self.user_codebook_size, self.seed)
        self.icdm = ICDM(self.n_users, self.n_items, cf_dim, self.use_debias)
        self.mdam = MDAM(int(config["sid_code_dim"]), cf_dim, float(config["align_temperature"]))

    # --- statistics of the training split ----------------------------------------------------------------
    @staticmethod
    def popularity_statistics(users, items, n_users: int, n_items: int):
        """Item popularity = standardised log(1 + clicks); user conformity = mean popularity of the user's clicks."""
        log_pop = torch.log1p(torch.bincount(items, minlength=n_items).float())
        item_pop = (log_pop - log_pop.mean()) / log_pop.std().clamp_min(1e-6)
        sums = torch.zeros(n_users).index_add_(0, users, item_pop[items])
        counts = torch.bincount(users, minlength=n_users).float()
        user_con = torch.where(counts > 0, sums / counts.clamp_min(1.0), torch.zeros_like(sums))
        return item_pop, user_con

    # --- SIDRecommender hooks -----------------------------------------------------------------------------
    def scorer_user_args(self, config) -> dict:
        return {"user_levels": self.user_sid_levels, "user_codebook_size": self.user_codebook_size}

    def fit_tokenizer(self, train_data) -> None:
        """One stage: nothing is trained here; both codebooks get their k-means initialisation on all entities."""
        with torch.no_grad():
            self.uism.item_rqvae.quantizer.init_codebooks(self.uism.item_rqvae.encoder(self.item_sem[1:]))
            self.uism.user_rqvae.quantizer.init_codebooks(self.uism.user_rqvae.encoder(self.user_sem[1:]))
        self.refresh_codes()
        self.tokenizer_fitted.fill_(True)

    @torch.no_grad()
    def refresh_codes(self) -> None:
        """Recompute every item's and user's SID from the current quantizers (stored in the state dict)."""
        was_training = self.training
        self.item_codes[1:] = torch.as_tensor(rqvae_codes(self, self.uism.item_rqvae, self.item_sem[1:]))
        self.user_codes[1:] = torch.as_tensor(rqvae_codes(self, self.uism.user_rqvae, self.user_sem[1:], "user"))
        self.uism.train(was_training)

    @property
    def sids_frozen(self) -> bool:
        """True once ``das_sid_freeze_epoch`` epochs of joint training have run: SIDs are final from then on."""
        return 0 < self.freeze_epoch <= self.epochs_done

    def on_train_epoch_end(self) -> None:
        """After each joint epoch: re-seed dead codes of both codebooks, then refresh the stored SIDs. Once the
        SIDs are frozen nothing changes here."""
        if self.sids_frozen:
            return
        self.epochs_done += 1
        with torch.no_grad():
            for rqvae, x in ((self.uism.item_rqvae, self.item_sem[1:]), (self.uism.user_rqvae, self.user_sem[1:])):
                if rqvae.quantizer.dead_code_threshold > 0:
                    rqvae.quantizer.reseed_dead_codes(rqvae.encoder(x))
        self.refresh_codes()

    def current_user_codes(self):
        return self.user_codes

    @torch.no_grad()
    def item_reconstructions(self):
        return self.uism.item_rqvae.decode(self.item_codes[1:]).cpu().numpy().astype(np.float32)

    # --- the loss --------------------------------------------------------------------------------------------
    def loss_terms(self, interaction) -> dict:
        """Every term of ``L``, already weighted: keys ``rec``, ``sem_item``, ``sem_user``, ``cf_*``, ``align_*``.

        The scorer reads the SIDs stored at the last epoch end (``refresh_codes``); the quantizers run on the
        first ``das_align_batch_size`` rows of the (shuffled) batch and their co-occurrence partners, which feed
        ``L_sem`` and ``L_align`` (InfoNCE costs B^2, so a sub-batch keeps epochs cheap with hundreds of negatives).
        """
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        if self.sids_frozen:  # only the top-k head still learns; UISM/ICDM/MDAM can no longer change a SID
            return {"rec": self.rec_loss(users, pos, neg)}
        a = min(len(users), self.align_batch_size)
        u_a, i_a = users[:a], pos[:a]
        item_rows, user_rows = i_a, u_a
        if self.cooc is not None:
            cooc_items = CooccurrenceSampler.sample(self.cooc.item, i_a, self._generator)
            cooc_users = CooccurrenceSampler.sample(self.cooc.user, u_a, self._generator)
            item_rows = torch.cat([i_a, cooc_items.clamp_min(0)])
            user_rows = torch.cat([u_a, cooc_users.clamp_min(0)])
        item_out, user_out = self.uism(self.item_sem[item_rows], self.user_sem[user_rows])
        z_i, z_u = item_out.quantized, user_out.quantized

        terms = {}
        # shared SID scorer (top-k head): item = its SID code embeddings, user = ID + its user-SID embeddings
        terms["rec"] = self.rec_loss(users, pos, neg)
        # UISM: L_sem = reconstruction + codebook + commitment, both sides
        terms["sem_item"] = item_out.loss
        terms["sem_user"] = user_out.loss
        # ICDM: L_cf on the whole batch
        for key, value in self.icdm.losses(users, pos, neg, self.item_pop, self.user_con, self.con_weight,
                                           self.pop_weight, self.orth_weight).items():
            terms[f"cf_{key}"] = self.alpha * value
        # MDAM: L_align, with the unbiased CF parts only
        c_u_int, c_i_pro = self.icdm.user_int(u_a), self.icdm.item_pro(i_a)
        if self.align_u2i:
            terms["align_u2i"] = self.beta * self.mdam.u2i(z_u[:a], c_i_pro, c_u_int, z_i[:a], i_a)
        if self.align_dual:
            terms["align_dual"] = self.beta * self.mdam.dual(z_i[:a], c_i_pro, i_a, z_u[:a], c_u_int, u_a)
        if self.cooc is not None:
            terms["align_cooc_i2i"] = self.beta * self.mdam.cooccurrence(z_i[:a], z_i[a:], i_a, cooc_items >= 0)
            terms["align_cooc_u2u"] = self.beta * self.mdam.cooccurrence(z_u[:a], z_u[a:], u_a, cooc_users >= 0)
        return terms

    def calculate_loss(self, interaction):
        return sum(self.loss_terms(interaction).values())
