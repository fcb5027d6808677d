"""Reusable layers of the plugin's models: the SID head every tokenizer shares, and InfoNCE."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

#: ``sid_head_init`` values: how the head's code embeddings start
HEAD_INITS = ("random", "codebook")


class SIDHead(nn.Module):
    """The phase-2 top-k head of every SID model: item vector = sum of its (frozen) SID code embeddings, plus its
    item-ID embedding when ``use_item_id`` and the item has training rows (the ``+id`` hybrid); user vector = user-ID
    embedding; score = dot product, trained with BPR in RecBole's loop.

    Every tokenizer (RQKMeans, RQVAE, LETTER, QARM, DAS) scores through this one class with the same size, so a
    leaderboard row differs from another only by its tokenizer. Codes of level ``l`` index rows ``l * K + code`` of
    one table; a dedup level, if any, is never scored (its codes mean nothing shared between items). A cold item
    (no training row) is scored from its codes alone, also with ``use_item_id``; ``id_dropout`` drops a warm item's
    ID embedding in training with that probability, so that the code embeddings learn to score items alone.
    """

    def __init__(self, n_users: int, n_items: int, num_levels: int, codebook_size: int, dim: int,
                 use_item_id: bool = False, id_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"sid_head_id_dropout must be in [0, 1), got {id_dropout}")
        self.num_levels, self.codebook_size, self.dim = num_levels, codebook_size, dim
        self.id_dropout = float(id_dropout)
        self.code_emb = nn.Embedding(num_levels * codebook_size, dim)
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_id_emb = nn.Embedding(n_items, dim) if use_item_id else None
        self.register_buffer("_level_offsets", torch.arange(num_levels) * codebook_size, persistent=False)
        #: items with at least one training row (only they get an ID embedding with ``use_item_id``)
        self.register_buffer("warm", torch.zeros(n_items, dtype=torch.bool))
        self.init_std = 0.1 / max(1, num_levels) ** 0.5
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.init_std)

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [N, >= L]`` -> ``[N, dim]``: the sum of the code embeddings of the first ``num_levels`` levels."""
        return self.code_emb(codes[:, : self.num_levels] + self._level_offsets).sum(dim=1)

    def item_vectors(self, items: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Vectors of ``items`` whose SIDs are ``codes`` (the rows of the model's code table for those items)."""
        vec = self.code_vectors(codes)
        if self.item_id_emb is not None:
            keep = self.warm[items]
            if self.training and self.id_dropout > 0:  # DropoutNet-style: the SID part must also stand alone
                keep = keep & (torch.rand(keep.shape, device=keep.device) >= self.id_dropout)
            vec = vec + self.item_id_emb(items) * keep.unsqueeze(-1).to(vec.dtype)
        return vec

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users)

    @staticmethod
    def bpr_loss(user_vec, pos_vec, neg_vec) -> torch.Tensor:
        """Bayesian personalised ranking loss on dot-product scores."""
        return -F.logsigmoid((user_vec * pos_vec).sum(-1) - (user_vec * neg_vec).sum(-1)).mean()

    @torch.no_grad()
    def init_from_codebooks(self, codebooks) -> None:
        """``sid_head_init: codebook``: start the code embeddings from the tokenizer's codebooks (L arrays [K, d]).

        One linear map P (d -> dim) is applied to every code vector, so an item's initial vector is P of its
        quantized vector (the sum of its code vectors): the top-``dim`` right singular vectors of the stacked
        codebooks when d > dim, zero padding when d < dim. The table is then scaled to the random init's std.
        """
        stacked = np.concatenate([np.asarray(cb, dtype=np.float64) for cb in codebooks], axis=0)
        if stacked.shape[0] != self.code_emb.num_embeddings:
            raise ValueError(f"codebooks hold {stacked.shape[0]} codes, the head has {self.code_emb.num_embeddings}")
        d = stacked.shape[1]
        if d > self.dim:
            _, _, vt = np.linalg.svd(stacked, full_matrices=False)
            mapped = stacked @ vt[: self.dim].T
        else:
            mapped = np.zeros((stacked.shape[0], self.dim))
            mapped[:, :d] = stacked
        std = mapped.std()
        if std > 0:
            mapped *= self.init_std / std
        self.code_emb.weight.copy_(torch.as_tensor(mapped, dtype=self.code_emb.weight.dtype))


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1, ids: torch.Tensor | None = None,
             symmetric: bool = True, key_ids: torch.Tensor | None = None, one_kind: bool = False) -> torch.Tensor:
    """InfoNCE with in-batch negatives between row-aligned ``query`` and ``key`` (cosine similarity / temperature).

    ``ids`` / ``key_ids`` (optional, [B]): the entity of each query row / key row. A pair (r, c), r != c, is not
    used as a negative when the queries are the same entity (``ids[r] == ids[c]``) or the keys are
    (``key_ids[r] == key_ids[c]``): a repeated entity would otherwise be pushed away from itself. ``key_ids``
    defaults to ``ids`` (both sides hold the same entities, e.g. an item's SID vector and its CF embedding).
    ``one_kind``: queries and keys are entities of one kind in one space (co-occurrence i2i: an item and another
    item), so a key that is the query's own entity (``ids[r] == key_ids[c]``, e.g. row r's anchor drawn as row c's
    partner) is not a negative either: it would be the query's most similar key.
    """
    q = F.normalize(query, dim=-1)
    k = F.normalize(key, dim=-1)
    logits = q @ k.T / temperature
    if key_ids is None:
        key_ids = ids
    same = None
    for side in (ids, key_ids):
        if side is not None:
            eq = side.unsqueeze(0) == side.unsqueeze(1)
            same = eq if same is None else same | eq
    if one_kind and ids is not None and key_ids is not None:
        same = same | (ids.unsqueeze(1) == key_ids.unsqueeze(0))
    if same is not None:
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss
