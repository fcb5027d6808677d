"""RQKMeans: residual k-means semantic IDs (faiss), no tokenizer training; scored by the shared SID scorer."""
from logging import getLogger

import numpy as np
import torch

from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.quantization import decode_codes, residual_kmeans


class RQKMeans(SIDRecommender):
    """Plain greedy residual k-means on the items' semantic embeddings (training-free tokenizer baseline)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.kmeans_iters = int(config["kmeans_iters"])
        self.use_gpu = config["faiss_use_gpu"]
        dim = self.item_sem.shape[1]
        self.register_buffer("centroids", torch.zeros(self.sid_levels, self.codebook_size, dim))

    def fit_tokenizer(self, train_data) -> None:
        x = self.real_item_embeddings().cpu().numpy().astype(np.float32)
        codes, codebooks = residual_kmeans(x, self.sid_levels, self.codebook_size, seed=self.seed,
                                           niter=self.kmeans_iters, use_gpu=self.use_gpu)
        self.centroids.copy_(torch.from_numpy(np.stack(codebooks)))
        self.set_item_codes(self.finalize_codes(x, codebooks, codes))
        getLogger().info(f"RQKMeans: {x.shape[0]} items quantized into {self.sid_levels} x {self.codebook_size} codes")

    def item_reconstructions(self):
        return np.asarray(decode_codes(self.item_codes[1:].cpu().numpy(), list(self.centroids.cpu().numpy())),
                          dtype=np.float32)
