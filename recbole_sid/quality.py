"""Quality of a set of semantic IDs (DESIGN.md section 5), as plain functions with small result types.

Per level: codes used / K and perplexity (exp of the entropy of the code distribution). Overall: collision rate
``(N - unique) / N`` over the learned levels (i.e. before any dedup level), largest bucket (most items sharing one
SID), unique-ID ratio; with embeddings: reconstruction MSE / cosine and neighbour preservation.

Run as ``python -m recbole_sid.quality SIDS [SIDS ...] [--emb NAME.itememb] [--levels N] [--codebook-size K]
[--has-dedup-level] [--json]``; SIDS is an ``.itemsid``/``.usersid`` atomic file or a public ``.index.json``.
No RecBole import here.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from recbole_sid.exceptions import DataError, RecBoleSIDError

__all__ = [
    "LevelStats",
    "SIDQualityReport",
    "collision_rate",
    "infer_codebook_size",
    "largest_bucket",
    "level_stats",
    "main",
    "neighbor_preservation",
    "reconstruction_error",
    "sid_one_hot",
    "sid_quality",
]


@dataclass
class LevelStats:
    level: int  # 1-based
    codes_used: int
    codebook_size: int
    usage: float  # codes_used / codebook_size
    perplexity: float  # exp(entropy), in [1, codes_used]


@dataclass
class SIDQualityReport:
    n_items: int
    num_levels: int  # learned levels reported (without the dedup level)
    levels: list
    collision_rate: float  # over the learned levels, i.e. before the dedup level
    largest_bucket: int
    unique_ratio: float
    recon_mse: float | None = None
    recon_cosine: float | None = None
    neighbor_overlap: float | None = None
    dedup_level_present: bool = False
    collision_rate_after_dedup: float | None = None
    codebook_size_inferred: bool = False
    neighbor_k: int | None = None
    neighbor_space: str | None = None  # "reconstructions" or "sid-one-hot"
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """A readable table."""
        ks = sorted({s.codebook_size for s in self.levels})
        k_text = ", ".join(str(k) for k in ks)
        inferred = " (inferred as 2^ceil(log2(max code + 1)))" if self.codebook_size_inferred else ""
        lines = [f"SID quality: {self.n_items} items, {self.num_levels} learned level(s)"
                 f"{' + dedup level' if self.dedup_level_present else ''}, codebook size {k_text}{inferred}",
                 "",
                 f"{'level':>5}  {'codes used':>13}  {'usage':>7}  {'perplexity':>10}"]
        for s in self.levels:
            lines.append(f"{s.level:>5}  {f'{s.codes_used} / {s.codebook_size}':>13}  {100 * s.usage:>6.1f}%  "
                         f"{s.perplexity:>10.2f}")
        lines.append("")
        n_coll = int(round(self.collision_rate * self.n_items))
        where = "before the dedup level" if self.dedup_level_present else f"over {self.num_levels} level(s)"
        rows = [("collision rate", f"{100 * self.collision_rate:.2f} %  ({n_coll} items beyond the first of their "
                                   f"SID, {where})"),
                ("largest bucket", f"{self.largest_bucket} items with one SID"),
                ("unique ratio", f"{100 * self.unique_ratio:.2f} %")]
        if self.collision_rate_after_dedup is not None:
            rows.append(("after dedup level", f"{100 * self.collision_rate_after_dedup:.2f} % collisions"))
        if self.recon_mse is not None:
            rows.append(("reconstruction", f"MSE {self.recon_mse:.6g}, mean cosine {self.recon_cosine:.4f}"))
        if self.neighbor_overlap is not None:
            rows.append((f"neighbours @{self.neighbor_k}",
                         f"{100 * self.neighbor_overlap:.2f} % overlap (embeddings vs {self.neighbor_space})"))
        width = max(len(name) for name, _ in rows)
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# --- basic metrics ------------------------------------------------------------------------------------------------

def _codes(codes, name: str = "codes") -> np.ndarray:
    if hasattr(codes, "detach"):
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: expected a non-empty 2-D integer matrix [n_items, n_levels], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: expected integer codes, got dtype {arr.dtype}")
    if (arr < 0).any():
        raise DataError(f"{name}: negative codes (first at row {int(np.flatnonzero((arr < 0).any(axis=1))[0])})")
    return arr.astype(np.int64, copy=False)


def infer_codebook_size(codes) -> int:
    """``2^ceil(log2(max code + 1))`` (at least 2): 255 -> 256, 256 -> 512, 100 -> 128."""
    top = int(_codes(codes).max()) + 1
    return max(2, 1 << max(0, math.ceil(math.log2(top))))


def level_stats(codes, codebook_size=None) -> list:
    """Per-level usage and perplexity. ``codebook_size``: an int for every level, a list (one per level) or None
    (inferred, see ``infer_codebook_size``)."""
    codes = _codes(codes)
    n_levels = codes.shape[1]
    if codebook_size is None:
        sizes = [infer_codebook_size(codes)] * n_levels
    elif isinstance(codebook_size, (list, tuple, np.ndarray)):
        sizes = [int(k) for k in codebook_size]
        if len(sizes) < n_levels:
            raise DataError(f"codebook_size: {len(sizes)} sizes given for {n_levels} levels")
    else:
        sizes = [int(codebook_size)] * n_levels
    stats = []
    for level in range(n_levels):
        col, k = codes[:, level], sizes[level]
        if k < 1 or int(col.max()) >= k:
            raise DataError(f"level {level + 1} holds code {int(col.max())}, which does not fit codebook_size={k}")
        counts = np.bincount(col, minlength=k)
        p = counts[counts > 0] / col.shape[0]
        entropy = float(-(p * np.log(p)).sum())
        used = int((counts > 0).sum())
        stats.append(LevelStats(level=level + 1, codes_used=used, codebook_size=k, usage=used / k,
                                perplexity=float(math.exp(entropy))))
    return stats


def _bucket_counts(codes: np.ndarray) -> np.ndarray:
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return counts


def collision_rate(codes) -> float:
    """``(N - number of distinct SIDs) / N``: the share of items that would need a dedup code."""
    codes = _codes(codes)
    return float((codes.shape[0] - _bucket_counts(codes).shape[0]) / codes.shape[0])


def largest_bucket(codes) -> int:
    """The most items that share one SID (1 when all SIDs are unique)."""
    return int(_bucket_counts(_codes(codes)).max())


def _matrix(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{name}: expected a non-empty 2-D matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise DataError(f"{name}: {len(bad)} rows contain NaN/Inf (e.g. rows {bad[:5].tolist()})")
    return arr


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def reconstruction_error(emb, recon) -> tuple:
    """``(MSE over all entries, mean cosine similarity of matching rows)``."""
    e, r = _matrix(emb, "embeddings"), _matrix(recon, "reconstructions")
    if e.shape != r.shape:
        raise DataError(f"embeddings {e.shape} and reconstructions {r.shape} differ in shape")
    mse = float(np.mean((e.astype(np.float64) - r) ** 2))
    cos = float(np.mean(np.sum(_normalize(e).astype(np.float64) * _normalize(r), axis=1)))
    return mse, cos


def sid_one_hot(codes) -> np.ndarray:
    """Concatenated one-hot codes [N, sum of codes used per level]: cosine between two rows is the share of
    levels at which the two SIDs agree (only used columns are kept, so the matrix stays small)."""
    codes = _codes(codes)
    blocks = []
    for level in range(codes.shape[1]):
        _, inv = np.unique(codes[:, level], return_inverse=True)
        inv = inv.reshape(-1)
        block = np.zeros((codes.shape[0], int(inv.max()) + 1), dtype=np.float32)
        block[np.arange(codes.shape[0]), inv] = 1.0
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def neighbor_preservation(emb, z, k: int = 10, batch_size: int = 1024, tie_tol: float = 1e-6) -> float:
    """Mean overlap |kNN_e(i) & kNN_z(i)| / k of the k nearest neighbours (cosine, the item itself excluded) of
    every item in the embedding space ``emb`` and in ``z`` (reconstructions, quantized vectors, or
    ``sid_one_hot(codes)``).

    Ties in z (common with SIDs: all items sharing a SID are equally near) are broken at random *in
    expectation*: if t is the k-th largest similarity, the z-neighbours are every item above t plus a uniformly
    random subset of those at t, and the overlap counts the items at t with weight (slots left) / (items at t).
    The result is therefore deterministic and independent of item order. Ties in ``emb`` go to the lower index.
    Cost O(N^2 D), batched over ``batch_size`` query rows.
    """
    e, zz = _matrix(emb, "embeddings"), _matrix(z, "z")
    n = e.shape[0]
    if zz.shape[0] != n:
        raise DataError(f"embeddings ({n} rows) and z ({zz.shape[0]} rows) differ in length")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be a positive integer, got {k!r}")
    if n < 2:
        raise DataError("neighbour preservation needs at least 2 items")
    k = min(int(k), n - 1)
    e, zz = _normalize(e), _normalize(zz)
    total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = np.arange(stop - start)
        se = e[start:stop] @ e.T
        sz = zz[start:stop] @ zz.T
        se[rows, rows + start] = -np.inf
        sz[rows, rows + start] = -np.inf
        # top-k in e: stable argsort, so ties at the boundary go to the lower index
        order = np.argsort(-se, axis=1, kind="stable")[:, :k]
        in_e = np.zeros_like(se, dtype=bool)
        in_e[rows[:, None], order] = True
        kth = -np.partition(-sz, k - 1, axis=1)[:, k - 1:k]
        above = sz > kth + tie_tol
        at = np.abs(sz - kth) <= tie_tol
        n_above = above.sum(axis=1)
        n_at = at.sum(axis=1)
        weight_at = (k - n_above) / np.maximum(n_at, 1)
        overlap = (above & in_e).sum(axis=1) + weight_at * (at & in_e).sum(axis=1)
        total += float(overlap.sum())
    return total / (n * k)


def sid_quality(codes, codebook_size=None, has_dedup_level: bool = False, embeddings=None, reconstructions=None,
                k: int = 10, levels: int | None = None) -> SIDQualityReport:
    """Full report. ``has_dedup_level``: the last column is a dedup level; level stats, collision rate and
    largest bucket then cover the learned levels only, and ``collision_rate_after_dedup`` covers all columns.
    ``levels``: use only the first ``levels`` learned levels. ``embeddings`` + ``reconstructions``: reconstruction
    error and neighbour preservation against the reconstructions; ``embeddings`` alone: neighbour preservation
    against the one-hot SIDs of the reported levels (``sid_one_hot``)."""
    codes = _codes(codes)
    notes = []
    after_dedup = None
    learned = codes
    if has_dedup_level:
        if codes.shape[1] < 2:
            raise DataError("has_dedup_level needs at least 2 levels (learned levels + the dedup level)")
        learned = codes[:, :-1]
        after_dedup = collision_rate(codes)
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or \
                not 1 <= levels <= learned.shape[1]:
            raise DataError(f"levels={levels!r}: the SIDs have {learned.shape[1]} learned level(s); "
                            f"choose 1..{learned.shape[1]}")
        learned = learned[:, :levels]
    inferred = codebook_size is None
    if inferred:
        codebook_size = infer_codebook_size(learned)
    stats = level_stats(learned, codebook_size)
    rate = collision_rate(learned)
    report = SIDQualityReport(
        n_items=int(codes.shape[0]), num_levels=int(learned.shape[1]), levels=stats, collision_rate=rate,
        largest_bucket=largest_bucket(learned), unique_ratio=1.0 - rate, dedup_level_present=bool(has_dedup_level),
        collision_rate_after_dedup=after_dedup, codebook_size_inferred=inferred, notes=notes)
    if embeddings is not None:
        emb = _matrix(embeddings, "embeddings")
        if emb.shape[0] != codes.shape[0]:
            raise DataError(f"embeddings ({emb.shape[0]} rows) and SIDs ({codes.shape[0]} items) differ in length")
        if reconstructions is not None:
            report.recon_mse, report.recon_cosine = reconstruction_error(emb, reconstructions)
            z, report.neighbor_space = reconstructions, "reconstructions"
        else:
            z, report.neighbor_space = sid_one_hot(learned), "sid-one-hot"
            notes.append("neighbours in SID space: cosine of concatenated one-hot codes (share of agreeing "
                         "levels); ties broken uniformly at random in expectation")
        if emb.shape[0] >= 2:
            report.neighbor_k = min(int(k), emb.shape[0] - 1)
            report.neighbor_overlap = neighbor_preservation(emb, z, k=k)
    elif reconstructions is not None:
        raise DataError("reconstructions given without embeddings; pass both")
    return report


# --- CLI --------------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recbole_sid.quality",
                                description="Quality report of a set of semantic IDs (usage, perplexity, "
                                            "collisions, neighbour preservation).")
    p.add_argument("sids", nargs="+",
                   help="SID file(s): NAME.itemsid / NAME.usersid atomic files or public *.index.json; several "
                        "files are reported one after the other (a JSON list with --json)")
    p.add_argument("--emb", help="NAME.itememb vectors of the same ids: adds neighbour preservation "
                                 "(embeddings vs one-hot SIDs)")
    p.add_argument("--levels", type=int, help="use only the first N learned levels")
    p.add_argument("--codebook-size", type=int,
                   help="codebook size K (default: 2^ceil(log2(max code + 1)), said so in the output)")
    p.add_argument("--has-dedup-level", action="store_true",
                   help="the last level is a dedup level (collisions are reported before and after it)")
    p.add_argument("-k", "--neighbors", type=int, default=10, help="k of the neighbour preservation (default 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _aligned_embeddings(emb_path: str, ids: list) -> np.ndarray:
    from recbole_sid.atomic_io import read_vectors

    emb_ids, vectors, _, _ = read_vectors(emb_path)
    index = {i: row for row, i in enumerate(emb_ids)}
    missing = [i for i in ids if i not in index]
    if missing:
        raise DataError(f"{emb_path}: no vector for {len(missing)} of {len(ids)} SID ids (e.g. {missing[:5]})")
    return vectors[[index[i] for i in ids]]


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from recbole_sid.atomic_io import read_sids

    reports = []
    try:
        for path in args.sids:
            ids, codes = read_sids(path)
            embeddings = _aligned_embeddings(args.emb, ids) if args.emb else None
            report = sid_quality(codes, codebook_size=args.codebook_size, has_dedup_level=args.has_dedup_level,
                                 embeddings=embeddings, k=args.neighbors, levels=args.levels)
            reports.append((path, report))
    except RecBoleSIDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = [dict(report.to_dict(), file=str(path)) for path, report in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        print("\n\n".join(f"file: {path}\n{report.format()}" for path, report in reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
