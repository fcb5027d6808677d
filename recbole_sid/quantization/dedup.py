"""The dedup level: one extra SID level that makes every item's SID unique (TIGER's collision handling).

Items that share all L learned codes (a "bucket") get 0, 1, 2, ... in the extra level, in input order; an item
alone in its bucket gets 0. The level's size is the largest bucket. Nothing is ever wrapped around: a bucket
larger than ``max_size`` raises.
"""
from __future__ import annotations

import numpy as np

from recbole_sid.exceptions import QuantizationError
from recbole_sid.quantization.checks import MAX_LEVELS, check_codes


def bucket_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(inverse [N], counts [B])``: the bucket (distinct SID) of each row and the size of each bucket."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def add_dedup_level(codes: np.ndarray, max_size: int | None = None) -> tuple[np.ndarray, int]:
    """Append a dedup level to ``codes`` [N, L]; returns ``(codes [N, L+1] int64, dedup_size)``.

    ``dedup_size`` = the largest bucket (1 when every SID is already unique). Within a bucket, items are
    numbered in input order (stable). ``max_size``: the most codes the dedup level may use; a larger bucket
    raises ``QuantizationError`` naming its size, its SID prefix and the limit.
    """
    codes = check_codes(codes, name="codes")
    if codes.shape[1] + 1 > MAX_LEVELS:
        raise QuantizationError(f"codes already have {codes.shape[1]} levels; a dedup level would exceed the "
                                f"{MAX_LEVELS}-level limit of SID tokens (a_ ... z_)")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer))
                                 or max_size < 1):
        raise QuantizationError(f"max_size must be a positive integer or None, got {max_size!r}")
    inverse, counts = bucket_ids(codes)
    largest = int(counts.max())
    if max_size is not None and largest > max_size:
        bucket = int(np.argmax(counts))
        first = int(np.flatnonzero(inverse == bucket)[0])
        n_over = int((counts > max_size).sum())
        raise QuantizationError(
            f"dedup level overflow: {largest} items share the SID prefix {codes[first].tolist()} (first at row "
            f"{first}) but the dedup level allows max_size={max_size} codes; {n_over} bucket(s) exceed the limit. "
            f"Raise max_size, add a learned level or use a larger codebook")
    order = np.argsort(inverse, kind="stable")  # rows grouped by bucket, input order inside each bucket
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(codes.shape[0], dtype=np.int64)
    rank[order] = np.arange(codes.shape[0], dtype=np.int64) - starts[inverse[order]]
    return np.concatenate([codes, rank[:, None]], axis=1), largest
