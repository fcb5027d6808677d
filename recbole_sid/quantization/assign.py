"""Greedy residual assignment (numpy and torch), batched so that no N x K x D tensor is ever built.

Level l picks, for each row, the code nearest to the current residual r and subtracts it:
``c_l = argmin_k ||r - e_k||^2 = argmin_k (||r||^2 - 2 r.e_k + ||e_k||^2)``. ``||r||^2`` is the same for every
k of one row, so it is left out of the argmin; ``-2 r.e_k + ||e_k||^2`` is one (batch x D) @ (D x K) matrix
product plus a row vector. Peak extra memory: ``batch_size x (K + 2 D)`` floats, whatever N is.
Ties go to the lowest code index (``argmin``'s first-minimum rule), the same in both back ends.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from torch import nn

from recbole_sid.exceptions import QuantizationError

#: rows per block: buffers of B x (2 D + K) floats (117 MiB at d = 768), whatever N is
DEFAULT_BATCH_SIZE = 16384
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
    n = x.shape[0]
    if isinstance(x, torch.Tensor):
        with torch.no_grad():
            xt = x.detach()
            cbt = [(cb if isinstance(cb, torch.Tensor) else torch.from_numpy(np.asarray(cb)))
                   .to(device=xt.device, dtype=xt.dtype) for cb in cbs]
            codes = torch.empty((n, len(cbt)), dtype=torch.long, device=xt.device)
            residual = torch.empty_like(xt) if return_residual else None
            _assign_blocks(lambda start, stop, out: out.copy_(xt[start:stop]), n, cbt, codes, residual,
                           batch_size, distance)
        return (codes, residual) if return_residual else codes
    x = np.asarray(x, dtype=np.float32)
    if any(stride < 0 for stride in x.strides):  # torch.from_numpy takes no negative strides
        x = np.ascontiguousarray(x)
    cbt = [torch.from_numpy(np.array(cb.cpu().numpy() if isinstance(cb, torch.Tensor) else cb, dtype=np.float32))
           for cb in cbs]
    codes = np.empty((n, len(cbt)), dtype=np.int64)
    residual = np.empty_like(x) if return_residual else None

    def load(start: int, stop: int, out: torch.Tensor) -> None:
        with warnings.catch_warnings():  # a read-only memmap is only read here: torch warns about writes it never does
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            out.copy_(torch.from_numpy(x[start:stop]))  # torch's copy runs on every intra-op thread

    with torch.no_grad():
        _assign_blocks(load, n, cbt, torch.from_numpy(codes),
                       None if residual is None else torch.from_numpy(residual), batch_size, distance)
    return (codes, residual) if return_residual else codes


def _assign_blocks(load, n: int, cbt: list, codes: torch.Tensor, residual, batch_size: int, distance: str) -> None:
    """The greedy residual kernel both back ends run (numpy arrays are wrapped as CPU tensors without a copy).

    Every buffer is allocated once and reused block after block: the rows ``r`` [B, D], the chosen code vectors
    [B, D] and the scores [B, K]. Re-allocating them per block made the numpy version fault fresh pages for every
    block (glibc hands large blocks back to the OS) and ran the gather, the subtraction and the argmin on one
    thread; torch runs them on every intra-op thread. l2: one ``addmm`` computes ``||e||^2 - 2 r.e`` straight into
    the score buffer."""
    like = cbt[0]
    dim, k_max = int(like.shape[1]), max(int(cb.shape[0]) for cb in cbt)
    rows = min(batch_size, max(n, 1))
    r_buf = torch.empty((rows, dim), dtype=like.dtype, device=like.device)
    pick_buf = torch.empty_like(r_buf)
    score_buf = torch.empty((rows, k_max), dtype=like.dtype, device=like.device)
    idx_buf = torch.empty(rows, dtype=torch.long, device=like.device)
    levels = [(cb, cb.t().contiguous(), _aux_torch(cb, distance)) for cb in cbt]
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        m = stop - start
        r, pick, idx = r_buf[:m], pick_buf[:m], idx_buf[:m]
        load(start, stop, r)
        for level, (cb, cb_t, aux) in enumerate(levels):
            scores = score_buf[:m, :cb.shape[0]]
            if distance == "l2":
                torch.addmm(aux, r, cb_t, beta=1.0, alpha=-2.0, out=scores)
                torch.argmin(scores, dim=1, out=idx)
            else:
                torch.mm(r, cb_t, out=scores)
                scores.mul_(aux)
                torch.argmax(scores, dim=1, out=idx)
            codes[start:stop, level] = idx
            torch.index_select(cb, 0, idx, out=pick)
            r.sub_(pick)
        if residual is not None:
            residual[start:stop] = r


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
