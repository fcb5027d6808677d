"""Greedy residual assignment (numpy and torch), batched so that no N x K x D tensor is ever built.

Level l picks, for each row, the code nearest to the current residual r and subtracts it:
``c_l = argmin_k ||r - e_k||^2 = argmin_k (||r||^2 - 2 r.e_k + ||e_k||^2)``. ``||r||^2`` is the same for every
k of one row, so it is left out of the argmin; ``-2 r.e_k + ||e_k||^2`` is one (batch x D) @ (D x K) matrix
product plus a row vector. Peak extra memory: ``batch_size x (K + D)`` floats, whatever N is.
Ties go to the lowest code index (``argmin``'s first-minimum rule), the same in both back ends.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from recbole_sid.exceptions import QuantizationError

DEFAULT_BATCH_SIZE = 65536
DISTANCES = ("l2", "cosine")


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise QuantizationError(f"distance={distance!r} is not supported; use one of {list(DISTANCES)}")


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise QuantizationError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _codebook_list(codebooks) -> list:
    """Accept a list of [K, D] arrays/tensors, ``nn.Embedding``s or an ``nn.ModuleList`` of them."""
    if isinstance(codebooks, (np.ndarray, torch.Tensor)) and codebooks.ndim == 2:
        codebooks = [codebooks]
    out = []
    for level, cb in enumerate(codebooks):
        if isinstance(cb, nn.Embedding):
            cb = cb.weight
        if isinstance(cb, torch.Tensor):
            cb = cb.detach()
        if cb.ndim != 2:
            raise QuantizationError(f"codebook {level}: expected a 2-D [K, D] matrix, got shape {tuple(cb.shape)}")
        out.append(cb)
    if not out:
        raise QuantizationError("no codebooks given (need at least one [K, D] matrix)")
    dims = {int(cb.shape[1]) for cb in out}
    if len(dims) != 1:
        raise QuantizationError(f"codebooks have different dimensions {sorted(dims)}")
    return out


# --- one level on one batch: the kernel both back ends share -------------------------------------------------

def _nearest_numpy(r: np.ndarray, cb: np.ndarray, aux: np.ndarray, distance: str) -> np.ndarray:
    """Index of the nearest code for each row of ``r`` ([B, D]); ``aux`` is ||e||^2 (l2) or 1/||e|| (cosine)."""
    scores = r @ cb.T  # [B, K]
    if distance == "l2":
        scores *= -2.0
        scores += aux
        return scores.argmin(axis=1)
    scores *= aux
    return scores.argmax(axis=1)


def _aux_numpy(cb: np.ndarray, distance: str) -> np.ndarray:
    sq = np.einsum("kd,kd->k", cb, cb)
    if distance == "l2":
        return sq
    return (1.0 / np.maximum(np.sqrt(sq), 1e-12)).astype(cb.dtype)


def _nearest_torch(r: torch.Tensor, cb: torch.Tensor, aux: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "l2":
        return torch.addmm(aux, r, cb.t(), beta=1.0, alpha=-2.0).argmin(dim=1)
    return (torch.mm(r, cb.t()) * aux).argmax(dim=1)


def _aux_torch(cb: torch.Tensor, distance: str) -> torch.Tensor:
    sq = (cb * cb).sum(dim=1)
    if distance == "l2":
        return sq
    return 1.0 / sq.sqrt().clamp_min(1e-12)


def nearest_code(r, codebook, batch_size: int = DEFAULT_BATCH_SIZE, distance: str = "l2",
                 subtract: bool = False):
    """One level: nearest code of every row of ``r`` (batched). With ``subtract=True`` the chosen code vectors
    are subtracted from ``r`` in place (``r`` must then be a writable float array/tensor)."""
    _check_distance(distance)
    batch_size = _check_batch_size(batch_size)
    if isinstance(r, torch.Tensor):
        cb = codebook.detach().to(device=r.device, dtype=r.dtype) if isinstance(codebook, torch.Tensor) \
            else torch.as_tensor(np.asarray(codebook), device=r.device, dtype=r.dtype)
        aux = _aux_torch(cb, distance)
        out = torch.empty(r.shape[0], dtype=torch.long, device=r.device)
        with torch.no_grad():
            for start in range(0, r.shape[0], batch_size):
                rb = r[start:start + batch_size]
                idx = _nearest_torch(rb, cb, aux, distance)
                out[start:start + batch_size] = idx
                if subtract:
                    rb.sub_(cb.index_select(0, idx))
        return out
    cb = np.ascontiguousarray(codebook.detach().cpu().numpy() if isinstance(codebook, torch.Tensor) else codebook,
                              dtype=r.dtype)
    aux = _aux_numpy(cb, distance)
    out = np.empty(r.shape[0], dtype=np.int64)
    for start in range(0, r.shape[0], batch_size):
        rb = r[start:start + batch_size]
        idx = _nearest_numpy(rb, cb, aux, distance)
        out[start:start + batch_size] = idx
        if subtract:
            rb -= cb[idx]
    return out


def assign_residual(x, codebooks: Sequence, batch_size: int = DEFAULT_BATCH_SIZE, distance: str = "l2",
                    return_residual: bool = False):
    """Greedy residual assignment of ``x`` [N, D] to ``codebooks`` (L matrices [K_l, D]), batched over rows.

    numpy in -> numpy out (float32 arithmetic, codes int64 [N, L]); torch in -> torch out on ``x``'s device and
    dtype (LongTensor [N, L], no autograd). ``return_residual=True`` also returns the final residual
    ``x - sum_l e_l[c_l]`` [N, D]. ``distance="cosine"`` picks ``argmax_k r.e_k / ||e_k||`` instead of the l2
    nearest code (the residual is still updated by subtraction).
    """
    _check_distance(distance)
    batch_size = _check_batch_size(batch_size)
    cbs = _codebook_list(codebooks)
    dim = int(cbs[0].shape[1])
    if x.ndim != 2 or x.shape[1] != dim:
        raise QuantizationError(f"x: expected shape [N, {dim}] to match the codebooks, got {tuple(x.shape)}")
    n, n_levels = x.shape[0], len(cbs)
    if isinstance(x, torch.Tensor):
        with torch.no_grad():
            xt = x.detach()
            cbt = [(cb if isinstance(cb, torch.Tensor) else torch.from_numpy(np.asarray(cb)))
                   .to(device=xt.device, dtype=xt.dtype) for cb in cbs]
            aux = [_aux_torch(cb, distance) for cb in cbt]
            codes = torch.empty((n, n_levels), dtype=torch.long, device=xt.device)
            residual = torch.empty_like(xt) if return_residual else None
            for start in range(0, n, batch_size):
                r = xt[start:start + batch_size].clone()
                for level, (cb, a) in enumerate(zip(cbt, aux)):
                    idx = _nearest_torch(r, cb, a, distance)
                    codes[start:start + batch_size, level] = idx
                    r.sub_(cb.index_select(0, idx))
                if return_residual:
                    residual[start:start + batch_size] = r
        return (codes, residual) if return_residual else codes
    x = np.asarray(x, dtype=np.float32)
    cbn = [np.ascontiguousarray(cb.cpu().numpy() if isinstance(cb, torch.Tensor) else cb, dtype=np.float32)
           for cb in cbs]
    aux = [_aux_numpy(cb, distance) for cb in cbn]
    codes = np.empty((n, n_levels), dtype=np.int64)
    residual = np.empty_like(x) if return_residual else None
    for start in range(0, n, batch_size):
        r = x[start:start + batch_size].copy()
        for level, (cb, a) in enumerate(zip(cbn, aux)):
            idx = _nearest_numpy(r, cb, a, distance)
            codes[start:start + batch_size, level] = idx
            r -= cb[idx]
        if return_residual:
            residual[start:start + batch_size] = r
    return (codes, residual) if return_residual else codes


def decode_codes(codes, codebooks: Sequence):
    """Sum of the chosen code vectors: ``sum_l codebooks[l][codes[:, l]]``; a prefix of levels is allowed."""
    cbs = _codebook_list(codebooks)
    if codes.ndim != 2 or codes.shape[1] > len(cbs):
        raise QuantizationError(
            f"codes: expected shape [N, <= {len(cbs)}] for {len(cbs)} codebooks, got {tuple(codes.shape)}")
    for level in range(codes.shape[1]):
        k = int(cbs[level].shape[0])
        col = codes[:, level]
        if col.shape[0] and (int(col.min()) < 0 or int(col.max()) >= k):
            raise QuantizationError(
                f"codes: level {level} holds code {int(col.max()) if int(col.max()) >= k else int(col.min())} "
                f"outside [0, {k - 1}]")
    if isinstance(codes, torch.Tensor):
        cbt = [(cb if isinstance(cb, torch.Tensor) else torch.from_numpy(np.asarray(cb))).to(codes.device)
               for cb in cbs]
        out = torch.zeros((codes.shape[0], cbt[0].shape[1]), dtype=cbt[0].dtype, device=codes.device)
        for level in range(codes.shape[1]):
            out = out + cbt[level].index_select(0, codes[:, level].long())
        return out
    cbn = [np.asarray(cb.cpu().numpy() if isinstance(cb, torch.Tensor) else cb, dtype=np.float32) for cb in cbs]
    out = np.zeros((codes.shape[0], cbn[0].shape[1]), dtype=np.float32)
    for level in range(codes.shape[1]):
        out += cbn[level][codes[:, level]]
    return out
