"""Training stages the tokenizers share: BPR-MF CF embeddings, a contrastive adapter, RQ-VAE fitting."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from recbole_sid.data.negatives import sample_items
from recbole_sid.model.layers import info_nce
from recbole_sid.tokenizers.base import PhaseLog


def interaction_pairs(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(user ids, item ids) of ``dataset.inter_feat`` (RecBole's training or validation split)."""
    inter = dataset.inter_feat
    users = torch.as_tensor(np.asarray(inter[dataset.uid_field]), dtype=torch.long)
    items = torch.as_tensor(np.asarray(inter[dataset.iid_field]), dtype=torch.long)
    return users, items


def batches(n: int, batch_size: int, generator: torch.Generator):
    """Shuffled index batches covering ``range(n)`` once."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_bpr_mf(users, items, n_users: int, n_items: int, dim: int, epochs: int = 50, lr: float = 1e-2,
                 batch_size: int = 2048, reg: float = 1e-4, seed: int = 0, device="cpu",
                 log: PhaseLog | None = None, stage: str = "cf (BPR-MF)", negative_items: torch.Tensor | None = None):
    """BPR matrix factorisation on the training pairs; returns ``(user_emb [n_users, dim], item_emb [n_items, dim])``.

    Negatives are drawn uniformly from ``negative_items`` (the warm pool, ``recbole_sid.data.negatives``), or from
    all items without one (a sampled negative may rarely be a positive; standard BPR-MF).
    """
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.nn.Parameter(torch.randn(n_users, dim, generator=gen) * 0.1)
    item_emb = torch.nn.Parameter(torch.randn(n_items, dim, generator=gen) * 0.1)
    user_emb.data, item_emb.data = user_emb.data.to(device), item_emb.data.to(device)
    users, items = users.to(device), items.to(device)
    pool = None if negative_items is None else negative_items.cpu()  # drawn with the CPU generator
    optimizer = torch.optim.Adam([user_emb, item_emb], lr=lr)
    for epoch in range(epochs):
        total = 0.0
        for idx in batches(len(users), batch_size, gen):
            idx = idx.to(device)
            u, i = users[idx], items[idx]
            j = sample_items(len(idx), n_items, gen, pool).to(device)
            # index_select, not user_emb[u]: its backward adds repeated rows in a fixed order (deterministic with
            # several CPU threads; advanced indexing accumulates in thread order)
            eu, ei, ej = user_emb.index_select(0, u), item_emb.index_select(0, i), item_emb.index_select(0, j)
            loss = -F.logsigmoid((eu * ei).sum(-1) - (eu * ej).sum(-1)).mean()
            loss = loss + reg * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / len(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if log is not None:
            log.epoch(stage, epoch + 1, {"bpr": total / max(len(users), 1)})
    return user_emb.detach(), item_emb.detach()


def train_contrastive_adapter(adapter: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                              rows: torch.Tensor, epochs: int = 50, lr: float = 1e-3, batch_size: int = 1024,
                              temperature: float = 0.1, seed: int = 0, log: PhaseLog | None = None,
                              stage: str = "align (adapter)") -> torch.nn.Module:
    """Train ``adapter(inputs[rows])`` to match ``targets[rows]`` with InfoNCE (in-batch negatives)."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=lr)
    adapter.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx in batches(len(rows), batch_size, gen):
            batch = rows[idx.to(rows.device)]
            loss = info_nce(adapter(inputs[batch]), targets[batch], temperature=temperature, ids=batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        if log is not None:
            log.epoch(stage, epoch + 1, {"info_nce": total / max(count, 1)})
    adapter.eval()
    return adapter


def fit_rqvae(rqvae, x: torch.Tensor, epochs: int, lr: float, batch_size: int, seed: int = 0,
              log: PhaseLog | None = None, stage: str = "rqvae", normalize: bool = True,
              extra_terms: Callable | None = None, on_epoch_start: Callable | None = None,
              rows: torch.Tensor | None = None, kmeans_init: bool = True) -> None:
    """Train an ``RQVAE`` module on ``x`` [N, D]: k-means init of the codebooks on the encoder output of all rows,
    mini-batches, dead codes (unused by every row) re-seeded after each epoch but the last.

    ``normalize``: divide the reconstruction MSE by the variance of ``x`` (``RQVAE.normalize_reconstruction``).
    ``extra_terms(batch_rows, out) -> {name: weighted loss}`` adds terms (LETTER's CF and diversity losses);
    ``batch_rows`` are indices into ``x`` (``rows[...]`` when ``rows`` maps them to entity ids).
    ``on_epoch_start(epoch)`` runs before each epoch. Every term is logged per epoch (``log``).
    ``kmeans_init=False`` keeps codebooks that the caller already initialised.
    """
    rqvae.train()
    if normalize:
        rqvae.normalize_reconstruction(x)
    if kmeans_init:
        with torch.no_grad():
            rqvae.quantizer.init_codebooks(rqvae.encoder(x))
    optimizer = torch.optim.Adam(rqvae.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n_batches = -(-x.shape[0] // batch_size)
    for epoch in range(epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        sums: dict[str, float] = {}
        for idx in batches(x.shape[0], batch_size, gen):
            idx = idx.to(x.device)
            out = rqvae(x[idx])
            terms = {"recon": out.recon_loss, "codebook": out.codebook_loss, "commitment": out.commitment_loss}
            if extra_terms is not None:
                terms.update(extra_terms(idx if rows is None else rows[idx], out))
            loss = sum(terms.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
        means = {k: v / n_batches for k, v in sums.items()}
        means["total"] = sum(means.values())
        extra = {}
        if rqvae.quantizer.dead_code_threshold > 0 and epoch + 1 < epochs:
            with torch.no_grad():
                extra["dead_codes_reseeded"] = rqvae.quantizer.reseed_dead_codes(rqvae.encoder(x), recount=True)
        if log is not None:
            log.epoch(stage, epoch + 1, means, **extra)
    rqvae.eval()
