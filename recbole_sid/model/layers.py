"""Reusable layers of the plugin's models: the shared SID scorer and InfoNCE."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SIDScorer(nn.Module):
    """Shared top-k scorer: item vector = sum of its SID code embeddings, user vector = ID (+ user SID) embedding.

    Every tokenizer (RQKMeans, RQVAE, QuantAlign, AlignQuant, DAS) scores through this module, so tokenizers are
    compared on equal terms and an item never seen in training still gets a real score from its codes.
    Codes of level ``l`` index rows ``l * K + code`` of one table. A dedup level, if any, is not scored: its
    codes carry no meaning shared between items.
    """

    def __init__(self, n_users: int, num_levels: int, codebook_size: int, dim: int,
                 user_levels: int = 0, user_codebook_size: int = 0, use_user_id: bool = True):
        super().__init__()
        self.num_levels, self.codebook_size, self.dim = num_levels, codebook_size, dim
        self.code_emb = nn.Embedding(num_levels * codebook_size, dim)
        self.user_emb = nn.Embedding(n_users, dim) if use_user_id else None
        self.user_levels, self.user_codebook_size = user_levels, user_codebook_size
        self.user_code_emb = nn.Embedding(user_levels * user_codebook_size, dim) if user_levels else None
        self.register_buffer("_level_offsets", torch.arange(num_levels) * codebook_size, persistent=False)
        if user_levels:
            self.register_buffer("_user_offsets", torch.arange(user_levels) * user_codebook_size, persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.1 / max(1, num_levels) ** 0.5)

    def item_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [N, >= L]`` -> ``[N, dim]`` (sum over the first ``num_levels`` levels)."""
        return self.code_emb(codes[:, : self.num_levels] + self._level_offsets).sum(dim=1)

    def user_vectors(self, user_ids: torch.Tensor, user_codes: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, dim]`` from the user ID embedding and, when the scorer has user levels, the user's SID codes."""
        parts = []
        if self.user_emb is not None:
            parts.append(self.user_emb(user_ids))
        if self.user_code_emb is not None:
            if user_codes is None:
                raise ValueError("this scorer has user SID levels: pass user_codes")
            parts.append(self.user_code_emb(user_codes[:, : self.user_levels] + self._user_offsets).sum(dim=1))
        return torch.stack(parts).sum(dim=0)

    @staticmethod
    def bpr_loss(user_vec, pos_vec, neg_vec) -> torch.Tensor:
        """Bayesian personalised ranking loss on dot-product scores."""
        return -F.logsigmoid((user_vec * pos_vec).sum(-1) - (user_vec * neg_vec).sum(-1)).mean()


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1, ids: torch.Tensor | None = None,
             symmetric: bool = True) -> torch.Tensor:
    """InfoNCE with in-batch negatives between row-aligned ``query`` and ``key`` (cosine similarity / temperature).

    ``ids`` (optional, [B]): rows with the same id are the same entity, so they are not used as each other's
    negatives (duplicates in a batch would otherwise be pushed apart from themselves).
    """
    q = F.normalize(query, dim=-1)
    k = F.normalize(key, dim=-1)
    logits = q @ k.T / temperature
    if ids is not None:
        same = ids.unsqueeze(0) == ids.unsqueeze(1)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss
