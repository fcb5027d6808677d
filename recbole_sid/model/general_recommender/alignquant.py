"""AlignQuant: two-stage baseline that aligns first and quantizes later (QARM-style order).

Stage 1: a BPR-MF model on the training split gives collaborative item embeddings, and a contrastive adapter
(MLP) maps each item's semantic embedding onto them (InfoNCE, warm items only). Stage 2: the adapted vectors of
ALL items (cold ones included: the adapter only needs their text) are quantized by residual k-means or an RQ-VAE.
"""
from logging import getLogger

import numpy as np
import torch

from recbole_sid.exceptions import ConfigError
from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.model.general_recommender.rqvae import build_rqvae, rqvae_codes
from recbole_sid.model.stages import fit_rqvae, train_bpr_mf, train_contrastive_adapter, training_pairs
from recbole_sid.quantization import decode_codes, residual_kmeans
from recbole_sid.quantization.rqvae import mlp


class AlignQuant(SIDRecommender):
    """Align semantic embeddings to CF embeddings with a contrastive adapter, then quantize the aligned vectors."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.quantizer_kind = config["aq_quantizer"]
        if self.quantizer_kind not in ("rqkmeans", "rqvae"):
            raise ConfigError(f"config key 'aq_quantizer' must be 'rqkmeans' or 'rqvae', got {self.quantizer_kind!r}")
        self.cf_epochs, self.cf_lr = int(config["cf_epochs"]), float(config["cf_lr"])
        self.adapter_epochs, self.adapter_lr = int(config["adapter_epochs"]), float(config["adapter_lr"])
        self.align_temperature = float(config["align_temperature"])
        self.kmeans_iters = int(config["kmeans_iters"])
        self.use_gpu = config["faiss_use_gpu"]
        self.tokenizer_epochs = int(config["tokenizer_epochs"])
        self.tokenizer_lr = float(config["tokenizer_lr"])
        self.tokenizer_batch_size = int(config["tokenizer_batch_size"])
        self._train_users, self._train_items = training_pairs(dataset)
        in_dim = self.item_sem.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.adapter = mlp([in_dim, *config["adapter_hidden_dims"], self.embedding_size])
        self.register_buffer("aligned", torch.zeros(self.n_items, self.embedding_size))
        self.register_buffer("centroids", torch.zeros(self.sid_levels, self.codebook_size, self.embedding_size))
        self.rqvae = (build_rqvae(config, self.embedding_size, self.sid_levels, self.codebook_size, self.seed)
                      if self.quantizer_kind == "rqvae" else None)

    def fit_tokenizer(self, train_data) -> None:
        logger = getLogger()
        device = self.item_codes.device
        _, cf_item = train_bpr_mf(self._train_users, self._train_items, self.n_users, self.n_items,
                                  self.embedding_size, epochs=self.cf_epochs, lr=self.cf_lr, seed=self.seed,
                                  device=device)
        warm = torch.unique(self._train_items).to(device)
        train_contrastive_adapter(self.adapter, self.item_sem, cf_item, warm, epochs=self.adapter_epochs,
                                  lr=self.adapter_lr, temperature=self.align_temperature, seed=self.seed)
        with torch.no_grad():
            aligned = torch.nn.functional.normalize(self.adapter(self.item_sem), dim=-1)
        self.aligned.copy_(aligned)
        x = aligned[1:]
        if self.quantizer_kind == "rqkmeans":
            codes, codebooks = residual_kmeans(x.cpu().numpy().astype(np.float32), self.sid_levels,
                                               self.codebook_size, seed=self.seed, niter=self.kmeans_iters,
                                               use_gpu=self.use_gpu)
            self.centroids.copy_(torch.from_numpy(np.stack(codebooks)))
            codes = self.finalize_codes(x, codebooks, codes)
        else:
            fit_rqvae(self.rqvae, x, self.tokenizer_epochs, self.tokenizer_lr, self.tokenizer_batch_size, self.seed)
            codes = rqvae_codes(self, self.rqvae, x)
        self.set_item_codes(codes)
        logger.info(f"AlignQuant: {len(warm)} warm items aligned; {x.shape[0]} items quantized ({self.quantizer_kind})")

    def real_item_embeddings(self):
        """The quality report compares SIDs with the vectors they quantize: the aligned embeddings."""
        return self.aligned[1:] if bool(self.tokenizer_fitted) else self.item_sem[1:]

    @torch.no_grad()
    def item_reconstructions(self):
        codes = self.item_codes[1:]
        if self.quantizer_kind == "rqkmeans":
            return np.asarray(decode_codes(codes.cpu().numpy(), list(self.centroids.cpu().numpy())), dtype=np.float32)
        return self.rqvae.decode(codes).cpu().numpy().astype(np.float32)
