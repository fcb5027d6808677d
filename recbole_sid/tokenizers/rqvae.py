"""RQ-VAE (TIGER): encoder MLP -> residual quantizer -> decoder, trained on the item semantic embeddings."""
from __future__ import annotations

import numpy as np
import torch

from recbole_sid.config_values import cfg, cfg_float, cfg_int
from recbole_sid.quantization import RQVAE
from recbole_sid.tokenizers.base import (
    PhaseLog,
    SideOutput,
    Tokenizer,
    TokenizerInput,
    TokenizerOutput,
)
from recbole_sid.tokenizers.stages import fit_rqvae


class RQVAEConfig:
    """The RQ-VAE keys every RQ-VAE tokenizer shares (``quick_start_config/general.yaml``): one size for all."""

    def __init__(self, config):
        self.hidden_dims = [int(h) for h in cfg(config, "rqvae_hidden_dims", [256, 128])]
        self.code_dim = cfg_int(config, "sid_code_dim", 32, minimum=1)
        self.beta = cfg_float(config, "rqvae_beta", 0.25, minimum=0.0)
        self.dropout = cfg_float(config, "rqvae_dropout", 0.0, minimum=0.0)
        self.dead_code_threshold = cfg_int(config, "dead_code_threshold", 1, minimum=0)
        self.epochs = cfg_int(config, "tokenizer_epochs", 100, minimum=0)
        self.lr = cfg_float(config, "tokenizer_lr", 1e-3, minimum=0.0)
        self.batch_size = cfg_int(config, "tokenizer_batch_size", 256, minimum=1)
        self.normalize = bool(cfg(config, "rqvae_recon_normalize", True))
        self.kmeans_iters = cfg_int(config, "kmeans_iters", 20, minimum=1)
        self.use_gpu = cfg(config, "faiss_use_gpu", "auto")

    def build(self, in_dim: int, num_levels: int, codebook_size: int, seed: int) -> RQVAE:
        return RQVAE(in_dim=in_dim, hidden_dims=self.hidden_dims, code_dim=self.code_dim, num_levels=num_levels,
                     codebook_size=codebook_size, beta=self.beta, dropout=self.dropout, kmeans_init=True, seed=seed,
                     dead_code_threshold=self.dead_code_threshold, kmeans_iters=self.kmeans_iters,
                     use_gpu=self.use_gpu)


@torch.no_grad()
def rqvae_side(tokenizer: Tokenizer, rqvae: RQVAE, x: torch.Tensor, side: str = "item") -> SideOutput:
    """Final SIDs of ``x`` from a trained RQ-VAE (greedy codes of its latent, then the last-level rule), with its
    codebooks and the reconstructions of ``x`` from the final SIDs."""
    rqvae.eval()
    latent = rqvae.encoder(x)
    codebooks = [cb.weight.detach().cpu().numpy() for cb in rqvae.quantizer.codebooks]
    codes, greedy = tokenizer.finalize(latent, codebooks, rqvae.quantizer.encode(latent), side=side)
    recon = rqvae.decode(torch.as_tensor(codes, device=x.device)).cpu().numpy().astype(np.float32)
    return SideOutput(codes, rqvae.quantizer.codebook_size, codebooks, greedy,
                      embeddings=x.detach().cpu().numpy(), reconstructions=recon)


class RQVAETokenizer(Tokenizer):
    """TIGER's RQ-VAE: ``L_sem = recon + codebook + commitment`` on the item semantic embeddings, then frozen."""

    name = "RQ-VAE"

    def __init__(self, config, n_users: int, n_items: int):
        super().__init__(config, n_users, n_items)
        self.rq = RQVAEConfig(config)

    def build(self, in_dim: int) -> RQVAE:
        return self.rq.build(in_dim, self.num_levels, self.codebook_size, self.seed)

    def fit(self, data: TokenizerInput, log: PhaseLog) -> TokenizerOutput:
        x = data.item_sem[1:]
        rqvae = self.build(x.shape[1]).to(x.device)
        fit_rqvae(rqvae, x, self.rq.epochs, self.rq.lr, self.rq.batch_size, self.seed, log=log,
                  normalize=self.rq.normalize)
        return TokenizerOutput(items=rqvae_side(self, rqvae, x), history=log.history)
