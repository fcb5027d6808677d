"""QARM-style tokenizer (Kuaishou, arXiv 2411.11739): align the semantic embeddings with collaborative ones first,
then quantize the aligned vectors.

Stage 1: BPR-MF on the training split gives collaborative item embeddings; a contrastive adapter (MLP) maps each
item's semantic embedding onto its CF embedding (InfoNCE, items with training rows only). Stage 2: the adapted
vectors of ALL items (cold ones too: the adapter only needs their text) are quantized by residual k-means
(``qarm_quantizer: rqkmeans``) or by the shared RQ-VAE (``rqvae``).
"""
from __future__ import annotations

import torch

from recbole_sid.config_values import cfg, cfg_choice, cfg_float, cfg_int
from recbole_sid.quantization.rqvae import mlp
from recbole_sid.tokenizers.base import PhaseLog, Tokenizer, TokenizerInput, TokenizerOutput
from recbole_sid.tokenizers.rqkmeans import rqkmeans_side
from recbole_sid.tokenizers.rqvae import RQVAEConfig, rqvae_side
from recbole_sid.tokenizers.stages import fit_rqvae, train_bpr_mf, train_contrastive_adapter

QARM_QUANTIZERS = ("rqkmeans", "rqvae")


class QARMTokenizer(Tokenizer):
    """Contrastive adapter (semantic -> CF space), then residual quantization of the adapted vectors."""

    name = "QARM"

    def __init__(self, config, n_users: int, n_items: int):
        super().__init__(config, n_users, n_items)
        self.quantizer = cfg_choice(config, "qarm_quantizer", QARM_QUANTIZERS, "rqkmeans")
        self.cf_dim = cfg_int(config, "cf_embedding_size", 64, minimum=1)
        self.cf_epochs = cfg_int(config, "cf_epochs", 30, minimum=1)
        self.cf_lr = cfg_float(config, "cf_lr", 0.01, minimum=0.0)
        self.adapter_hidden = [int(h) for h in cfg(config, "adapter_hidden_dims", [128])]
        self.adapter_epochs = cfg_int(config, "adapter_epochs", 50, minimum=1)
        self.adapter_lr = cfg_float(config, "adapter_lr", 1e-3, minimum=0.0)
        self.temperature = cfg_float(config, "align_temperature", 0.2, minimum=1e-6)
        self.rq = RQVAEConfig(config)

    def fit(self, data: TokenizerInput, log: PhaseLog) -> TokenizerOutput:
        device = data.item_sem.device
        _, cf_item = train_bpr_mf(data.train_users, data.train_items, data.n_users, data.n_items, self.cf_dim,
                                  epochs=self.cf_epochs, lr=self.cf_lr, seed=self.seed, device=device, log=log,
                                  negative_items=data.negative_items)
        warm = torch.unique(data.train_items).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            adapter = mlp([data.item_sem.shape[1], *self.adapter_hidden, self.cf_dim]).to(device)
        train_contrastive_adapter(adapter, data.item_sem, cf_item, warm, epochs=self.adapter_epochs,
                                  lr=self.adapter_lr, temperature=self.temperature, seed=self.seed, log=log)
        with torch.no_grad():
            x = torch.nn.functional.normalize(adapter(data.item_sem[1:]), dim=-1)
        if self.quantizer == "rqkmeans":
            items = rqkmeans_side(self, x, log)
        else:
            rqvae = self.rq.build(x.shape[1], self.num_levels, self.codebook_size, self.seed).to(device)
            fit_rqvae(rqvae, x, self.rq.epochs, self.rq.lr, self.rq.batch_size, self.seed, log=log,
                      normalize=self.rq.normalize)
            items = rqvae_side(self, rqvae, x)
        return TokenizerOutput(items=items, history=log.history, summary={"warm_items_aligned": len(warm)})
