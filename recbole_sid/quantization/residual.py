"""Trainable residual quantizer (the RQ in RQ-VAE, DAS and the two-stage tokenizers).

Per level l with residual r_l (r_0 = x) and chosen code vector e_l = E_l[c_l]:
``c_l = argmin_k ||r_l - E_l[k]||^2`` (greedy, batched, no gradient), ``r_{l+1} = r_l - sg(e_l)``;
``codebook_loss = sum_l mean ||sg(r_l) - e_l||^2`` (moves the codebooks only),
``commitment_loss = beta * sum_l mean ||r_l - sg(e_l)||^2`` (moves the input only);
``quantized = x + sg(sum_l e_l - x)``: its value is the sum of the code vectors, its gradient is the identity
to ``x`` (straight-through). Means are over rows and dimensions.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbole_sid.exceptions import QuantizationError
from recbole_sid.quantization.assign import DEFAULT_BATCH_SIZE, DISTANCES, assign_residual, nearest_code
from recbole_sid.quantization.checks import _is_int, check_embeddings, check_quantizer_params
from recbole_sid.quantization.faiss_ops import kmeans, resolve_use_gpu

logger = logging.getLogger("recbole_sid")

#: Relative scale of the noise added to padded rows when a k-means init batch has fewer rows than K.
PAD_NOISE = 1e-3


class RQOutput(NamedTuple):
    quantized: torch.Tensor  # [N, dim], straight-through
    codes: torch.Tensor  # LongTensor [N, L]
    codebook_loss: torch.Tensor  # scalar
    commitment_loss: torch.Tensor  # scalar (already multiplied by beta)
    loss: torch.Tensor  # codebook_loss + commitment_loss


class ResidualQuantizer(nn.Module):
    """L codebooks of K vectors of size ``dim``; greedy residual assignment; VQ-VAE losses; k-means init on the
    first training batch; optional dead-code re-seeding.

    ``kmeans_init=True``: the first ``forward`` in training mode runs faiss k-means level by level on that batch's
    residuals (``init_codebooks``), once; the ``initialized`` buffer is saved in the state dict, so a loaded model
    is not re-initialised. A batch with fewer rows than K is padded by sampling rows with replacement plus
    Gaussian noise of ``PAD_NOISE`` x the residuals' std, so k-means always gets K distinct points.
    ``kmeans_init=False``: codebooks start uniform in [-1/K, 1/K] (seeded).

    ``dead_code_threshold > 0``: training forwards count how often each code is chosen (``usage_counts``);
    ``reseed_dead_codes(x)`` replaces the codes used fewer than ``threshold`` times since the last call with random
    residuals of ``x`` at their level, and resets the counts. Call it e.g. once per epoch.
    """

    def __init__(self, num_levels: int = 3, codebook_size: int = 256, dim: int = 64, beta: float = 0.25,
                 kmeans_init: bool = True, kmeans_iters: int = 20, dead_code_threshold: int = 0, seed: int = 0,
                 distance: str = "l2", use_gpu="auto", batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        check_quantizer_params(num_levels, codebook_size)
        if not _is_int(dim) or dim < 1:
            raise QuantizationError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not np.isfinite(beta) or beta < 0:
            raise QuantizationError(f"beta (commitment weight) must be a finite number >= 0, got {beta!r}")
        if not _is_int(kmeans_iters) or kmeans_iters < 1:
            raise QuantizationError(f"kmeans_iters must be a positive integer, got {kmeans_iters!r}")
        if not _is_int(dead_code_threshold) or dead_code_threshold < 0:
            raise QuantizationError(f"dead_code_threshold must be an integer >= 0, got {dead_code_threshold!r}")
        if distance not in DISTANCES:
            raise QuantizationError(f"distance={distance!r} is not supported; use one of {list(DISTANCES)}")
        if not _is_int(batch_size) or batch_size < 1:
            raise QuantizationError(f"batch_size must be a positive integer, got {batch_size!r}")
        resolve_use_gpu(use_gpu)  # validates the value
        self.num_levels = int(num_levels)
        self.codebook_size = int(codebook_size)
        self.dim = int(dim)
        self.beta = float(beta)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iters = int(kmeans_iters)
        self.dead_code_threshold = int(dead_code_threshold)
        self.seed = int(seed)
        self.distance = distance
        self.use_gpu = use_gpu
        self.batch_size = int(batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.codebooks = nn.ModuleList(nn.Embedding(self.codebook_size, self.dim)
                                           for _ in range(self.num_levels))
            for cb in self.codebooks:
                nn.init.uniform_(cb.weight, -1.0 / self.codebook_size, 1.0 / self.codebook_size)
        self.register_buffer("initialized", torch.tensor(not self.kmeans_init))
        self.register_buffer("usage_counts", torch.zeros(self.num_levels, self.codebook_size, dtype=torch.long))
        self._generator = torch.Generator().manual_seed(self.seed + 1)
        self.kmeans_init_calls = 0  # how many times init_codebooks ran (inspection / tests)

    def extra_repr(self) -> str:
        return (f"num_levels={self.num_levels}, codebook_size={self.codebook_size}, dim={self.dim}, "
                f"beta={self.beta}, distance={self.distance!r}, kmeans_init={self.kmeans_init}, "
                f"dead_code_threshold={self.dead_code_threshold}")

    def _check_input(self, x, name: str = "x") -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.codebooks[0].weight.device)
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise QuantizationError(f"{name}: expected a tensor of shape [N, {self.dim}], got {shape}")
        if x.shape[0] == 0:
            raise QuantizationError(f"{name}: empty batch (0 rows)")
        if not x.is_floating_point():
            x = x.to(self.codebooks[0].weight.dtype)
        return x

    # --- forward ----------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> RQOutput:
        x = self._check_input(x)
        if self.training and not bool(self.initialized):
            self.init_codebooks(x.detach())
        weights = [cb.weight for cb in self.codebooks]
        codes = assign_residual(x.detach(), [w.detach() for w in weights], batch_size=self.batch_size,
                                distance=self.distance)
        residual = x
        total = torch.zeros_like(x)
        codebook_loss = x.new_zeros(())
        commitment_loss = x.new_zeros(())
        for level, weight in enumerate(weights):
            e = F.embedding(codes[:, level], weight)
            e_sg = e.detach()
            codebook_loss = codebook_loss + F.mse_loss(e, residual.detach())
            commitment_loss = commitment_loss + F.mse_loss(residual, e_sg)
            residual = residual - e_sg
            total = total + e_sg
        commitment_loss = self.beta * commitment_loss
        quantized = x + (total - x).detach()
        if self.training:
            with torch.no_grad():
                offsets = codes + torch.arange(self.num_levels, device=codes.device) * self.codebook_size
                counts = torch.bincount(offsets.flatten(), minlength=self.num_levels * self.codebook_size)
                self.usage_counts += counts.view(self.num_levels, self.codebook_size).to(self.usage_counts.device)
        return RQOutput(quantized, codes, codebook_loss, commitment_loss, codebook_loss + commitment_loss)

    # --- inference --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, x, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """Codes [N, L] (LongTensor) of ``x`` [N, dim]; no gradient, no state change. Rejects NaN/Inf rows."""
        x = check_embeddings(self._check_input(x), name="x", dim=self.dim)
        return assign_residual(x.to(self.codebooks[0].weight.device), list(self.codebooks), batch_size=batch_size,
                               distance=self.distance)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the code vectors (differentiable w.r.t. the codebooks); a prefix of the levels is allowed."""
        if isinstance(codes, np.ndarray):
            codes = torch.from_numpy(codes)
        if codes.dim() != 2 or codes.shape[1] > self.num_levels:
            raise QuantizationError(
                f"codes: expected shape [N, <= {self.num_levels}], got {tuple(codes.shape)}")
        codes = codes.long().to(self.codebooks[0].weight.device)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise QuantizationError(f"codes: values must lie in [0, {self.codebook_size - 1}], "
                                    f"got range [{int(codes.min())}, {int(codes.max())}]")
        out = self.codebooks[0].weight.new_zeros((codes.shape[0], self.dim))
        for level in range(codes.shape[1]):
            out = out + self.codebooks[level](codes[:, level])
        return out

    # --- initialisation and maintenance -----------------------------------------------------------------------

    def _pad(self, r: np.ndarray, k: int) -> np.ndarray:
        """Pad ``r`` to ``k`` rows: rows sampled with replacement (seeded) plus small Gaussian noise."""
        n = r.shape[0]
        idx = torch.randint(n, (k - n,), generator=self._generator).numpy()
        scale = float(r.std()) or 1.0
        noise = torch.randn((k - n, r.shape[1]), generator=self._generator).numpy() * (PAD_NOISE * scale)
        return np.concatenate([r, r[idx] + noise.astype(np.float32)], axis=0)

    @torch.no_grad()
    def init_codebooks(self, x) -> None:
        """k-means (faiss, seed ``seed + level``) on the residuals of ``x``, level by level; marks the quantizer
        initialised and resets usage counts."""
        x = check_embeddings(self._check_input(x), name="k-means init batch", dim=self.dim)
        r = x.detach().float().cpu().numpy().astype(np.float32, copy=True)
        n = r.shape[0]
        if n < self.codebook_size:
            logger.warning("k-means init on %d rows for codebook_size=%d: padding with %d noisy resampled rows "
                           "(use a larger first batch or call init_codebooks on more data)",
                           n, self.codebook_size, self.codebook_size - n)
        logger.info("ResidualQuantizer: k-means init of %d levels x %d codes on %d rows (faiss on the %s)",
                    self.num_levels, self.codebook_size, n, "GPU" if resolve_use_gpu(self.use_gpu) else "CPU")
        for level, cb in enumerate(self.codebooks):
            train = r if n >= self.codebook_size else self._pad(r, self.codebook_size)
            centroids = kmeans(train, self.codebook_size, niter=self.kmeans_iters, seed=self.seed + level,
                               use_gpu=self.use_gpu)
            cb.weight.data.copy_(torch.from_numpy(centroids).to(cb.weight.device, cb.weight.dtype))
            nearest_code(r, centroids, batch_size=self.batch_size, distance=self.distance, subtract=True)
        self.initialized.fill_(True)
        self.usage_counts.zero_()
        self.kmeans_init_calls += 1

    @torch.no_grad()
    def reseed_dead_codes(self, x, recount: bool = False) -> int:
        """Re-seed codes used fewer than ``dead_code_threshold`` times since the last call (per ``usage_counts``)
        with random residuals of ``x`` at their level (levels in order, so later levels see the updated
        residuals). Resets the counts. Returns how many codes were re-seeded (0 when the threshold is 0).

        ``recount=True``: usage is counted by assigning every row of ``x`` now (e.g. all items, once per epoch)
        instead of the training forwards since the last call, which only saw the rows that training sampled."""
        if self.dead_code_threshold <= 0:
            self.usage_counts.zero_()
            return 0
        x = check_embeddings(self._check_input(x), name="x", dim=self.dim)
        weight0 = self.codebooks[0].weight
        r = x.detach().to(weight0.device, weight0.dtype).clone()
        reseeded = 0
        for level, cb in enumerate(self.codebooks):
            if recount:
                usage = torch.bincount(nearest_code(r.clone(), cb.weight, batch_size=self.batch_size,
                                                    distance=self.distance), minlength=self.codebook_size)
            else:
                usage = self.usage_counts[level]
            dead = torch.nonzero(usage.to(self.usage_counts.device) < self.dead_code_threshold).flatten()
            if dead.numel():
                n = r.shape[0]
                if n >= dead.numel():
                    pick = torch.randperm(n, generator=self._generator)[:dead.numel()]
                else:
                    pick = torch.randint(n, (dead.numel(),), generator=self._generator)
                cb.weight.data[dead.to(cb.weight.device)] = r[pick.to(r.device)]
                reseeded += int(dead.numel())
            nearest_code(r, cb.weight, batch_size=self.batch_size, distance=self.distance, subtract=True)
        if reseeded:  # callers log one summary per epoch
            logger.debug("ResidualQuantizer: re-seeded %d dead codes (used < %d times)", reseeded,
                         self.dead_code_threshold)
        self.usage_counts.zero_()
        return reseeded

    def code_usage(self) -> torch.Tensor:
        """Usage counts [L, K] since the last k-means init / re-seed (training forwards only)."""
        return self.usage_counts.detach().clone()

    def reset_usage(self) -> None:
        self.usage_counts.zero_()
