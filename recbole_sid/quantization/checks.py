"""Input checks shared by every quantizer: one place that turns bad input into a clear ``QuantizationError``.

Every message says what was wrong, where (the ``name`` of the input, row indices) and what would be accepted.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from recbole_sid.exceptions import QuantizationError

#: Codebook size bounds. 2 is the smallest codebook that carries information; 65536 keeps codes in 16 bits
#: and the per-batch distance matrix (batch x K) small.
MIN_CODEBOOK_SIZE = 2
MAX_CODEBOOK_SIZE = 65536
#: Level bounds: SID tokens are prefixed a_, b_, ..., z_ (``recbole_sid.atomic_io.LEVEL_PREFIXES``).
MIN_LEVELS = 1
MAX_LEVELS = 26

_SHOW_INDICES = 10
_CHECK_BLOCK = 65536  # rows per block of the NaN/Inf check


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _largest_power_of_two_at_most(n: int) -> int:
    return 1 << (int(n).bit_length() - 1) if n >= 1 else 0


def check_quantizer_params(num_levels, codebook_size, n_items: int | None = None) -> None:
    """Validate ``num_levels`` (L in [1, 26]) and ``codebook_size`` (K in [2, 65536]) and, if given, that there
    are at least K items to run k-means on."""
    if not _is_int(num_levels):
        raise QuantizationError(f"num_levels must be an integer, got {num_levels!r} ({type(num_levels).__name__})")
    if not _is_int(codebook_size):
        raise QuantizationError(
            f"codebook_size must be an integer, got {codebook_size!r} ({type(codebook_size).__name__})")
    if not MIN_LEVELS <= num_levels <= MAX_LEVELS:
        raise QuantizationError(
            f"num_levels={num_levels} is out of range: need {MIN_LEVELS} <= num_levels <= {MAX_LEVELS} "
            f"(SID tokens are prefixed a_ ... z_, one letter per level)")
    if not MIN_CODEBOOK_SIZE <= codebook_size <= MAX_CODEBOOK_SIZE:
        raise QuantizationError(
            f"codebook_size={codebook_size} is out of range: need {MIN_CODEBOOK_SIZE} <= codebook_size <= "
            f"{MAX_CODEBOOK_SIZE}")
    if n_items is not None and n_items < codebook_size:
        suggestion = max(MIN_CODEBOOK_SIZE, _largest_power_of_two_at_most(n_items))
        raise QuantizationError(
            f"only {n_items} items for codebook_size={codebook_size}: k-means needs at least as many items as "
            f"codes (with fewer, some codes can never be used and the codebook is under-determined). "
            f"Use a smaller codebook_size, e.g. codebook_size={suggestion}, or more items")


def check_embeddings(x, name: str = "embeddings", dim: int | None = None):
    """Validate a 2-D matrix of finite vectors, one row per item.

    numpy input (or anything ``np.asarray`` takes) comes back as a C-contiguous float32 array; a torch tensor
    comes back unchanged. Raises ``QuantizationError`` for a wrong shape, an empty matrix, a non-numeric dtype,
    a dimension other than ``dim`` or NaN/Inf rows (how many, and which indices).
    """
    is_tensor = isinstance(x, torch.Tensor)
    if not is_tensor:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise QuantizationError(f"{name}: cannot be read as a numeric matrix ({exc})") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise QuantizationError(f"{name}: expected a numeric matrix, got dtype {arr.dtype}")
        shape = arr.shape
    else:
        if x.is_complex() or x.dtype == torch.bool:
            raise QuantizationError(f"{name}: expected a real-valued tensor, got dtype {x.dtype}")
        shape = tuple(x.shape)
    if len(shape) != 2:
        raise QuantizationError(f"{name}: expected a 2-D matrix [n_items, dim], got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise QuantizationError(f"{name}: empty matrix of shape {shape}; need at least one row and one column")
    if dim is not None and shape[1] != dim:
        raise QuantizationError(f"{name}: vectors have dimension {shape[1]}, expected {dim}")
    # Fast path: the sum of all entries is finite iff every entry is (NaN and Inf propagate), unless finite
    # values overflow it; only then (or when something is wrong) are rows checked one block at a time.
    if is_tensor:
        if x.is_floating_point() and not bool(torch.isfinite(x.sum())):
            bad = _nonfinite_rows(x, lambda b: torch.isfinite(b).all(dim=1).cpu().numpy())
            if len(bad):
                raise QuantizationError(_nan_message(name, bad, shape[0]))
        return x
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if not np.isfinite(total):
        bad = _nonfinite_rows(arr, lambda b: np.isfinite(b).all(axis=1))
        if len(bad):
            raise QuantizationError(_nan_message(name, bad, shape[0]))
    return arr


def _nonfinite_rows(x, finite_rows_of, block: int = _CHECK_BLOCK) -> np.ndarray:
    """Indices of rows with NaN/Inf, checked block by block (no N x D temporary)."""
    bad = []
    for start in range(0, x.shape[0], block):
        ok = finite_rows_of(x[start:start + block])
        if not ok.all():
            bad.append(np.flatnonzero(~ok) + start)
    return np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)


def _nan_message(name: str, bad: np.ndarray, n: int) -> str:
    shown = ", ".join(str(int(i)) for i in bad[:_SHOW_INDICES])
    more = f", ... ({len(bad) - _SHOW_INDICES} more)" if len(bad) > _SHOW_INDICES else ""
    return (f"{name}: {len(bad)} of {n} rows contain NaN or Inf (row indices {shown}{more}); "
            f"fix or drop those vectors before quantizing")


def check_codes(codes, name: str = "codes") -> np.ndarray:
    """Validate an integer code matrix [N, L] of non-negative codes; returns it as int64 numpy."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise QuantizationError(f"{name}: expected a 2-D integer matrix [n_items, n_levels], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise QuantizationError(f"{name}: empty code matrix of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise QuantizationError(f"{name}: expected integer codes, got dtype {arr.dtype}")
    if (arr < 0).any():
        rows = np.flatnonzero((arr < 0).any(axis=1))
        raise QuantizationError(f"{name}: {len(rows)} rows hold negative codes (e.g. row {int(rows[0])})")
    return arr.astype(np.int64, copy=False)
