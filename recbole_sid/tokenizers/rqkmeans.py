"""RQ-KMeans: greedy residual k-means (faiss) on the item semantic embeddings; nothing is trained."""
from __future__ import annotations

import time

import numpy as np

from recbole_sid.quantization import decode_codes, residual_kmeans
from recbole_sid.tokenizers.base import PhaseLog, SideOutput, Tokenizer, TokenizerInput, TokenizerOutput


class RQKMeansTokenizer(Tokenizer):
    """Residual k-means SIDs: level l's codebook is k-means on the residuals left by levels < l."""

    name = "RQ-KMeans"

    def fit(self, data: TokenizerInput, log: PhaseLog) -> TokenizerOutput:
        x = data.item_sem[1:].detach().cpu().numpy().astype(np.float32)
        start = time.perf_counter()
        codes, codebooks = residual_kmeans(x, self.num_levels, self.codebook_size, seed=self.seed,
                                           niter=self.kmeans_iters, use_gpu=self.use_gpu)
        final, greedy = self.finalize(x, codebooks, codes)
        recon = np.asarray(decode_codes(final, codebooks), dtype=np.float32)
        mse = float(((recon - x) ** 2).mean())
        log.epoch("residual k-means", 1, {"recon_mse": mse}, seconds=time.perf_counter() - start)
        items = SideOutput(final, self.codebook_size, [np.asarray(cb) for cb in codebooks], greedy,
                           embeddings=x, reconstructions=recon)
        return TokenizerOutput(items=items, history=log.history)
