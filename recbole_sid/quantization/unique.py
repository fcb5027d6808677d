"""Collision-aware last level: items that share every code get distinct last-level codes (LC-Rec-style).

Greedy residual quantization gives near-duplicate items (product variants, same text) the same SID. Within each
group of items that share their first L-1 codes, if two or more also share the last code, the group's last-level
codes are re-chosen by a minimum-cost assignment (Hungarian, ``scipy.optimize.linear_sum_assignment``) of its
items to distinct codes of the last codebook, the cost being the squared distance from each item's residual to
each code. Groups without a collision keep their greedy codes; a group larger than K keeps its greedy codes and
is left to the dedup level. This is LC-Rec's "uniform semantic mapping" done exactly on the colliding groups only.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from recbole_sid.quantization.assign import _codebook_list, decode_codes
from recbole_sid.quantization.dedup import bucket_ids


def unique_last_level(x, codebooks, codes) -> tuple[np.ndarray, int]:
    """Re-assign the last level of colliding SIDs; returns ``(codes [N, L] int64, items re-assigned)``.

    ``x``: the vectors that were quantized [N, D]; ``codebooks``: the L codebooks [K, D]; ``codes``: greedy codes.
    """
    x = np.asarray(x, dtype=np.float32)
    codes = np.array(codes, dtype=np.int64, copy=True)
    cbs = [np.asarray(cb, dtype=np.float32) for cb in _codebook_list(codebooks)]
    n, levels = codes.shape
    if n == 0:
        return codes, 0
    last = cbs[levels - 1]
    k = last.shape[0]
    full_bucket, full_counts = bucket_ids(codes)
    colliding = full_counts[full_bucket] > 1
    if not colliding.any():
        return codes, 0
    prefix = codes[:, : levels - 1] if levels > 1 else np.zeros((n, 1), dtype=np.int64)
    prefix_bucket, prefix_counts = bucket_ids(prefix)
    groups = np.unique(prefix_bucket[colliding])
    residual = x - (decode_codes(codes[:, : levels - 1], cbs[: levels - 1]) if levels > 1 else 0.0)
    last_sq = (last ** 2).sum(axis=1)
    changed = 0
    order = np.argsort(prefix_bucket, kind="stable")
    starts = np.searchsorted(prefix_bucket[order], groups)
    for group, start in zip(groups, starts):
        members = order[start:start + prefix_counts[group]]
        if len(members) > k:
            continue  # more items than codes: the dedup level separates them
        r = residual[members]
        cost = (r ** 2).sum(axis=1, keepdims=True) - 2.0 * r @ last.T + last_sq
        _, chosen = linear_sum_assignment(cost)
        changed += int((codes[members, levels - 1] != chosen).sum())
        codes[members, levels - 1] = chosen
    return codes, changed
