"""RQ-KMeans: greedy residual k-means (faiss) on the item semantic embeddings; nothing is trained."""
from __future__ import annotations

import time

import numpy as np

from recbole_sid.quantization import decode_codes, residual_kmeans
from recbole_sid.tokenizers.base import PhaseLog, SideOutput, Tokenizer, TokenizerInput, TokenizerOutput


def rqkmeans_side(tokenizer: Tokenizer, x, log: PhaseLog) -> SideOutput:
    """Residual k-means of ``x`` [N, D] (rows = items 1..N) into the tokenizer's final SIDs, logged as one stage."""
    x = (x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)).astype(np.float32)
    start = time.perf_counter()
    codes, codebooks = residual_kmeans(x, tokenizer.num_levels, tokenizer.codebook_size, seed=tokenizer.seed,
                                       niter=tokenizer.kmeans_iters, use_gpu=tokenizer.use_gpu)
    final, greedy = tokenizer.finalize(x, codebooks, codes)
    recon = np.asarray(decode_codes(final, codebooks), dtype=np.float32)
    log.epoch("residual k-means", 1, {"recon_mse": float(((recon - x) ** 2).mean())},
              seconds=time.perf_counter() - start)
    return SideOutput(final, tokenizer.codebook_size, [np.asarray(cb) for cb in codebooks], greedy,
                      embeddings=x, reconstructions=recon)


class RQKMeansTokenizer(Tokenizer):
    """Residual k-means SIDs: level l's codebook is k-means on the residuals left by levels < l."""

    name = "RQ-KMeans"

    def fit(self, data: TokenizerInput, log: PhaseLog) -> TokenizerOutput:
        return TokenizerOutput(items=rqkmeans_side(self, data.item_sem[1:], log), history=log.history)
