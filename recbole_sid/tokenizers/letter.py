"""LETTER (Wang et al., arXiv 2405.07314): a learnable tokenizer whose RQ-VAE is trained with collaborative and
diversity regularisation, so that the codes themselves carry collaborative signal.

Stage 1: a CF model on the training split gives a frozen collaborative embedding ``h_i`` per item.
Stage 2: the RQ-VAE is trained with ``L = L_sem + alpha * L_CF + beta * L_div``:
``L_CF`` = InfoNCE between the quantized latent ``z_i`` (sum of its code vectors) and ``h_i`` over the batch;
``L_div`` = per level, the chosen code vector is pulled toward another code of the same cluster of its codebook
(codebooks are clustered at the start of every epoch) and pushed from the other codes, which spreads the
assignments over the codebook. The component table (paper -> code) is in ``properties/model/LETTER.yaml``.
"""
from __future__ import annotations

from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F

from recbole_sid.config_values import cfg_choice, cfg_float, cfg_int
from recbole_sid.quantization import kmeans, nearest_code
from recbole_sid.tokenizers.base import PhaseLog, TokenizerInput, TokenizerOutput
from recbole_sid.tokenizers.rqvae import RQVAETokenizer, rqvae_side
from recbole_sid.tokenizers.stages import fit_rqvae, train_bpr_mf

CF_SIMILARITIES = ("dot", "cosine")


def cf_loss(z: torch.Tensor, h: torch.Tensor, similarity: str = "dot", temperature: float = 1.0) -> torch.Tensor:
    """LETTER's collaborative regularisation: InfoNCE from each quantized latent ``z_i`` to its CF embedding ``h_i``
    against the other items of the batch (``dot``: the paper's inner product; ``cosine``: cosine / temperature)."""
    if similarity == "cosine":
        z, h = F.normalize(z, dim=-1), F.normalize(h, dim=-1)
    logits = z @ h.T / temperature
    return F.cross_entropy(logits, torch.arange(z.shape[0], device=z.device))


class CodeClusters:
    """The clusters of one codebook (recomputed every epoch): for a code, a random *other* code of its cluster."""

    def __init__(self, codebook: np.ndarray, n_clusters: int, seed: int, niter: int, use_gpu="auto"):
        centroids = kmeans(codebook.astype(np.float32), n_clusters, niter=niter, seed=seed, use_gpu=use_gpu)
        labels = nearest_code(codebook.astype(np.float32).copy(), centroids)
        order = np.argsort(labels, kind="stable")
        sizes = np.bincount(labels, minlength=n_clusters)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order)) - starts[labels[order]]
        self.order = torch.as_tensor(order)
        self.start = torch.as_tensor(starts[labels])  # per code: where its cluster begins in ``order``
        self.size = torch.as_tensor(sizes[labels])  # per code: its cluster's size
        self.rank = torch.as_tensor(rank)  # per code: its position inside its cluster

    def positives(self, codes: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positive code, valid)`` for each code: another code of the same cluster (invalid in a singleton)."""
        c = codes.cpu()
        size = self.size[c]
        offset = torch.floor(torch.rand(len(c), generator=generator) * (size - 1).clamp_min(1)).long() + 1
        pos = self.order[self.start[c] + (self.rank[c] + offset) % size.clamp_min(1)]
        return pos.to(codes.device), (size > 1).to(codes.device)


def diversity_loss(codebook: torch.Tensor, codes: torch.Tensor, clusters: CodeClusters,
                   generator: torch.Generator) -> torch.Tensor:
    """LETTER's diversity regularisation on one level: cross-entropy of ``e_c . E^T`` (the chosen code itself
    masked) toward a random other code of the chosen code's cluster."""
    positive, valid = clusters.positives(codes, generator)
    if not bool(valid.any()):
        return codebook.new_zeros(())
    chosen = codes[valid]
    logits = codebook.index_select(0, chosen) @ codebook.T  # index_select: deterministic backward (see das.py)
    logits = logits.masked_fill(F.one_hot(chosen, codebook.shape[0]).bool(), float("-inf"))
    return F.cross_entropy(logits, positive[valid])


class LETTERTokenizer(RQVAETokenizer):
    """RQ-VAE + collaborative (InfoNCE to frozen CF embeddings) + diversity regularisation, trained together."""

    name = "LETTER"

    def __init__(self, config, n_users: int, n_items: int):
        super().__init__(config, n_users, n_items)
        self.cf_epochs = cfg_int(config, "cf_epochs", 30, minimum=1)
        self.cf_lr = cfg_float(config, "cf_lr", 0.01, minimum=0.0)
        self.alpha = cfg_float(config, "letter_cf_weight", 0.1, minimum=0.0)
        self.beta = cfg_float(config, "letter_diversity_weight", 1e-4, minimum=0.0)
        self.n_clusters = cfg_int(config, "letter_clusters", 10, minimum=1)
        self.similarity = cfg_choice(config, "letter_cf_similarity", CF_SIMILARITIES, "dot")
        self.temperature = cfg_float(config, "letter_cf_temperature", 1.0, minimum=1e-6)

    def fit(self, data: TokenizerInput, log: PhaseLog) -> TokenizerOutput:
        x = data.item_sem[1:]
        device = x.device
        # stage 1: CF embeddings of the training split, in the code space (the paper's h_i has the code size)
        _, cf_item = train_bpr_mf(data.train_users, data.train_items, data.n_users, data.n_items, self.rq.code_dim,
                                  epochs=self.cf_epochs, lr=self.cf_lr, seed=self.seed, device=device, log=log,
                                  negative_items=data.negative_items)
        warm = torch.bincount(data.train_items, minlength=data.n_items).to(device) > 0
        rqvae = self.build(x.shape[1]).to(device)
        n_clusters = max(1, min(self.n_clusters, self.codebook_size // 2))
        if n_clusters != self.n_clusters:
            getLogger().info(f"LETTER: letter_clusters={self.n_clusters} is too many for {self.codebook_size} codes; "
                             f"clustering each codebook into {n_clusters}")
        generator = torch.Generator().manual_seed(self.seed + 7)
        clusters: list[CodeClusters] = []

        def on_epoch_start(epoch: int) -> None:
            clusters[:] = [CodeClusters(cb.weight.detach().cpu().numpy(), n_clusters, self.seed + 31 * epoch + level,
                                        self.rq.kmeans_iters, self.use_gpu)
                           for level, cb in enumerate(rqvae.quantizer.codebooks)]

        def extra_terms(items: torch.Tensor, out) -> dict:
            terms = {}
            w = warm[items]
            if self.alpha > 0 and bool(w.any()):  # cold items have no trained CF embedding
                terms["cf"] = self.alpha * cf_loss(out.quantized[w], cf_item[items[w]], self.similarity,
                                                   self.temperature)
            if self.beta > 0:
                terms["diversity"] = self.beta * sum(
                    diversity_loss(cb.weight, out.codes[:, level], clusters[level], generator)
                    for level, cb in enumerate(rqvae.quantizer.codebooks))
            return terms

        fit_rqvae(rqvae, x, self.rq.epochs, self.rq.lr, self.rq.batch_size, self.seed, log=log,
                  stage="rqvae + cf + diversity", normalize=self.rq.normalize, extra_terms=extra_terms,
                  on_epoch_start=on_epoch_start, rows=torch.arange(1, data.n_items, device=device))
        return TokenizerOutput(items=rqvae_side(self, rqvae, x), history=log.history,
                               summary={"warm_items_aligned": int(warm[1:].sum())})
