"""Stages that tokenizer models run before RecBole's training loop: RQ-VAE fitting, CF embeddings, adapters."""
from __future__ import annotations

from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F

from recbole_sid.model.layers import info_nce


def training_pairs(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(user ids, item ids) of ``dataset.inter_feat`` — the model's dataset is RecBole's training split."""
    inter = dataset.inter_feat
    users = torch.as_tensor(np.asarray(inter[dataset.uid_field]), dtype=torch.long)
    items = torch.as_tensor(np.asarray(inter[dataset.iid_field]), dtype=torch.long)
    return users, items


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_bpr_mf(users, items, n_users: int, n_items: int, dim: int, epochs: int = 50, lr: float = 1e-2,
                 batch_size: int = 2048, reg: float = 1e-4, seed: int = 0, device="cpu", log_every: int = 10):
    """BPR matrix factorisation on the training pairs; returns ``(user_emb [n_users, dim], item_emb [n_items, dim])``.

    Negatives are drawn uniformly from all items (a sampled negative may rarely be a positive; standard BPR-MF).
    """
    logger = getLogger()
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.nn.Parameter(torch.randn(n_users, dim, generator=gen) * 0.1)
    item_emb = torch.nn.Parameter(torch.randn(n_items, dim, generator=gen) * 0.1)
    user_emb.data, item_emb.data = user_emb.data.to(device), item_emb.data.to(device)
    users, items = users.to(device), items.to(device)
    optimizer = torch.optim.Adam([user_emb, item_emb], lr=lr)
    for epoch in range(epochs):
        total = 0.0
        for idx in _batches(len(users), batch_size, gen):
            idx = idx.to(device)
            u, i = users[idx], items[idx]
            j = torch.randint(1, n_items, (len(idx),), generator=gen).to(device)
            eu, ei, ej = user_emb[u], item_emb[i], item_emb[j]
            loss = -F.logsigmoid((eu * ei).sum(-1) - (eu * ej).sum(-1)).mean()
            loss = loss + reg * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / len(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if log_every and (epoch + 1) % log_every == 0:
            logger.info(f"CF stage (BPR-MF) epoch {epoch + 1}/{epochs}: loss {total / len(users):.4f}")
    return user_emb.detach(), item_emb.detach()


def train_contrastive_adapter(adapter: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                              rows: torch.Tensor, epochs: int = 50, lr: float = 1e-3, batch_size: int = 1024,
                              temperature: float = 0.1, seed: int = 0, log_every: int = 10) -> torch.nn.Module:
    """Train ``adapter(inputs[rows])`` to match ``targets[rows]`` with InfoNCE (in-batch negatives)."""
    logger = getLogger()
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=lr)
    adapter.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx in _batches(len(rows), batch_size, gen):
            batch = rows[idx.to(rows.device)]
            loss = info_nce(adapter(inputs[batch]), targets[batch], temperature=temperature, ids=batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        if log_every and (epoch + 1) % log_every == 0:
            logger.info(f"alignment stage epoch {epoch + 1}/{epochs}: InfoNCE {total / max(count, 1):.4f}")
    adapter.eval()
    return adapter


def fit_rqvae(rqvae, x: torch.Tensor, epochs: int, lr: float, batch_size: int, seed: int = 0,
              name: str = "RQ-VAE stage") -> None:
    """Train an ``RQVAE`` module on ``x``: full-data k-means init, mini-batches, dead codes re-seeded per epoch."""
    logger = getLogger()
    rqvae.train()
    with torch.no_grad():
        rqvae.quantizer.init_codebooks(rqvae.encoder(x))
    optimizer = torch.optim.Adam(rqvae.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    batches = -(-x.shape[0] // batch_size)
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        total = recon = 0.0
        for start in range(0, x.shape[0], batch_size):
            out = rqvae(x[order[start:start + batch_size]])
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            total += out.loss.item()
            recon += out.recon_loss.item()
        if rqvae.quantizer.dead_code_threshold > 0 and epoch + 1 < epochs:
            with torch.no_grad():
                rqvae.quantizer.reseed_dead_codes(rqvae.encoder(x))
        if (epoch + 1) % max(1, epochs // 5) == 0:
            logger.info(f"{name} epoch {epoch + 1}/{epochs}: loss {total / batches:.4f} "
                        f"(reconstruction {recon / batches:.4f})")
    rqvae.eval()
