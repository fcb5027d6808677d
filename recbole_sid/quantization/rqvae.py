"""TIGER-style RQ-VAE: encoder MLP -> residual quantizer -> decoder MLP (Rajput et al. 2023).

``loss = recon_loss (MSE / recon_scale) + codebook_loss + commitment_loss``. The decoder sees the straight-through quantized
latent, so the reconstruction gradient reaches the encoder; the codebooks learn from ``codebook_loss``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbole_sid.exceptions import QuantizationError
from recbole_sid.quantization.assign import DEFAULT_BATCH_SIZE
from recbole_sid.quantization.checks import _is_int, check_embeddings
from recbole_sid.quantization.residual import ResidualQuantizer


class RQVAEOutput(NamedTuple):
    recon: torch.Tensor
    latent: torch.Tensor  # encoder output
    quantized: torch.Tensor  # straight-through quantized latent
    codes: torch.Tensor  # LongTensor [N, L]
    recon_loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    loss: torch.Tensor


def mlp(dims: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]``, ReLU (+ dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Encoder ``in_dim -> hidden_dims -> code_dim``, ``ResidualQuantizer(num_levels, codebook_size, code_dim)``,
    decoder ``code_dim -> reversed(hidden_dims) -> in_dim``. Parameters are initialised from ``seed`` without
    touching torch's global RNG. Extra keyword arguments go to the ``ResidualQuantizer``
    (``kmeans_iters``, ``dead_code_threshold``, ``distance``, ``use_gpu``, ``batch_size``)."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int] = (256, 128), code_dim: int = 64,
                 num_levels: int = 3, codebook_size: int = 256, beta: float = 0.25, dropout: float = 0.0,
                 kmeans_init: bool = True, seed: int = 0, **quantizer_kwargs):
        super().__init__()
        if not _is_int(in_dim) or in_dim < 1:
            raise QuantizationError(f"in_dim must be a positive integer, got {in_dim!r}")
        if not _is_int(code_dim) or code_dim < 1:
            raise QuantizationError(f"code_dim must be a positive integer, got {code_dim!r}")
        hidden_dims = list(hidden_dims or [])
        if any(not _is_int(h) or h < 1 for h in hidden_dims):
            raise QuantizationError(f"hidden_dims must be positive integers, got {hidden_dims!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise QuantizationError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_dim, self.code_dim = int(in_dim), int(code_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = mlp([self.in_dim, *hidden_dims, self.code_dim], dropout)
            self.decoder = mlp([self.code_dim, *reversed(hidden_dims), self.in_dim], dropout)
        self.quantizer = ResidualQuantizer(num_levels=num_levels, codebook_size=codebook_size, dim=self.code_dim,
                                           beta=beta, kmeans_init=kmeans_init, seed=seed, **quantizer_kwargs)
        #: the reconstruction MSE is divided by this (1 = plain MSE; see ``normalize_reconstruction``)
        self.register_buffer("recon_scale", torch.tensor(1.0))

    @torch.no_grad()
    def normalize_reconstruction(self, x) -> float:
        """Divide the reconstruction MSE by the mean per-dimension variance of ``x`` (the training inputs), so that
        ``recon_loss`` = 1 means "no better than predicting the mean vector" whatever the embedding's scale or
        dimension. L2-normalised 64-d text vectors have a variance near 1/64, so their plain MSE is ~0.015 and
        would be a rounding error beside a contrastive loss of ~5. Returns the scale."""
        x = self._check_input(x)
        scale = float(x.float().var(dim=0).mean()) if x.shape[0] > 1 else 1.0
        self.recon_scale.fill_(scale if scale > 0 else 1.0)
        return float(self.recon_scale)

    def _check_input(self, x) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.in_dim:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise QuantizationError(f"x: expected a tensor of shape [N, {self.in_dim}], got {shape}")
        return x.to(next(self.parameters()).device)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        x = self._check_input(x)
        latent = self.encoder(x)
        q = self.quantizer(latent)
        recon = self.decoder(q.quantized)
        recon_loss = F.mse_loss(recon, x) / self.recon_scale
        return RQVAEOutput(recon, latent, q.quantized, q.codes, recon_loss, q.codebook_loss, q.commitment_loss,
                           recon_loss + q.loss)

    @torch.no_grad()
    def encode(self, x, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """SID codes [N, L] of ``x`` (encoder in eval mode, i.e. no dropout; the module's mode is restored)."""
        x = check_embeddings(self._check_input(x), name="x", dim=self.in_dim)
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            latents = torch.cat([self.encoder(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        finally:
            self.encoder.train(was_training)
        return self.quantizer.encode(latents, batch_size=batch_size)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Straight-through quantized latent of ``x`` (differentiable w.r.t. the encoder). In training mode this
        is a training forward of the quantizer (k-means init on first use, usage counts)."""
        return self.quantizer(self.encoder(self._check_input(x))).quantized

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstructed input vectors from codes [N, <= L]."""
        return self.decoder(self.quantizer.decode(codes))
