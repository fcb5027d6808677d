"""faiss-backed quantizers that need no training loop: k-means, residual k-means, OPQ and RQ + OPQ.

GPU: k-means runs on the GPU when ``faiss.get_num_gpus() > 0`` and ``use_gpu`` allows it ("auto" or True),
on the CPU otherwise; results come back as numpy either way. OPQ training has no GPU implementation in faiss
and always runs on the CPU. Which one is used is logged on ``logging.getLogger("recbole_sid")``.
On the CPU every function is deterministic for a given ``seed``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

from recbole_sid.exceptions import QuantizationError
from recbole_sid.quantization.assign import DEFAULT_BATCH_SIZE, assign_residual, decode_codes, nearest_code
from recbole_sid.quantization.checks import check_embeddings, check_quantizer_params

logger = logging.getLogger("recbole_sid")

#: faiss' own default: k-means trains on at most 256 * K points per level (a seeded random subsample).
DEFAULT_MAX_POINTS_PER_CENTROID = 256


def faiss_num_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def resolve_use_gpu(use_gpu="auto") -> bool:
    """``"auto"``: GPU iff faiss sees one. ``True``: GPU if faiss sees one, else CPU with a warning.
    ``False``: CPU."""
    if use_gpu not in ("auto", True, False):
        raise QuantizationError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
    n_gpus = faiss_num_gpus()
    if use_gpu is True and n_gpus == 0:
        logger.warning("use_gpu=True but faiss sees no GPU (faiss-cpu installed, or no CUDA device); "
                       "running faiss on the CPU")
    return bool(use_gpu) and n_gpus > 0


def kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0, use_gpu="auto",
           max_points_per_centroid: int = DEFAULT_MAX_POINTS_PER_CENTROID) -> np.ndarray:
    """faiss k-means of ``x`` [N, D] (N >= k) into ``k`` centroids; returns float32 [k, D]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] < k:
        raise QuantizationError(f"k-means: {x.shape[0]} points for {k} clusters; need at least {k}")
    gpu = resolve_use_gpu(use_gpu)
    logger.debug("faiss k-means on %s: %d points, k=%d, d=%d", "GPU" if gpu else "CPU", x.shape[0], k, x.shape[1])
    km = faiss.Kmeans(x.shape[1], int(k), niter=int(niter), seed=int(seed), gpu=gpu, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=int(max_points_per_centroid))
    km.train(x)
    return np.array(km.centroids, dtype=np.float32).reshape(int(k), x.shape[1])


# --- residual k-means ------------------------------------------------------------------------------------------
# Why not faiss.ResidualQuantizer: with its defaults it is NOT plain greedy residual k-means.
#  * It encodes with beam search (max_beam_size=5): each level keeps the 5 best partial codes and the final
#    code is the best full combination, so level-1 is not necessarily the centroid nearest to x.
#  * Its train_type defaults to Train_progressive_dim: each level's k-means starts on a few leading dimensions
#    and grows them, and codebooks may be refined afterwards (niter_codebook_refine / Train_refine_codebook).
# Configuring it (max_beam_size=1, train_type=Train_default) gets close, but its assignment and training
# details stay faiss-internal. We run faiss.Kmeans per level instead and assign with our own greedy
# nearest-centroid code (assign.py), so the codes equal greedy assignment on the residuals by construction
# and ResidualQuantizer / residual_kmeans / assign_residual all share one assignment rule.

def residual_kmeans(x: np.ndarray, num_levels: int, codebook_size: int, seed: int = 0, niter: int = 20,
                    use_gpu="auto", batch_size: int = DEFAULT_BATCH_SIZE,
                    max_points_per_centroid: int = DEFAULT_MAX_POINTS_PER_CENTROID, return_residual: bool = False):
    """Greedy residual k-means: level l runs k-means (seed ``seed + l``) on the residuals left by levels < l and
    assigns every row to its nearest centroid. Returns ``(codes int64 [N, L], codebooks: list of float32 [K, D])``
    (plus the final residual [N, D] with ``return_residual=True``).

    k-means trains on at most ``max_points_per_centroid * K`` rows per level (faiss' seeded subsample); every row
    is assigned.
    """
    x = check_embeddings(x, name="x")
    check_quantizer_params(num_levels, codebook_size, n_items=x.shape[0])
    gpu = resolve_use_gpu(use_gpu)
    logger.info("residual k-means (%d levels x %d codes, %d x %d) with faiss on the %s",
                num_levels, codebook_size, x.shape[0], x.shape[1], "GPU" if gpu else "CPU")
    residual = x.copy()
    codes = np.empty((x.shape[0], num_levels), dtype=np.int64)
    codebooks = []
    for level in range(num_levels):
        centroids = kmeans(residual, codebook_size, niter=niter, seed=seed + level, use_gpu=gpu,
                           max_points_per_centroid=max_points_per_centroid)
        codes[:, level] = nearest_code(residual, centroids, batch_size=batch_size, subtract=True)
        codebooks.append(centroids)
    return (codes, codebooks, residual) if return_residual else (codes, codebooks)


# --- OPQ -------------------------------------------------------------------------------------------------------

@dataclass
class OPQResult:
    """OPQ codes and the codec that made them: ``y = x @ rotation.T``, then PQ with ``centroids``
    [M, 2**nbits, D/M] on each of the M sub-vectors of y."""

    codes: np.ndarray  # int64 [N, M]
    rotation: np.ndarray  # float32 [D, D], orthonormal
    centroids: np.ndarray  # float32 [M, 2**nbits, D // M]
    nbits: int

    @property
    def num_subspaces(self) -> int:
        return int(self.centroids.shape[0])

    def encode(self, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Codes [N, M] of new vectors with this codec (nearest centroid per sub-vector of the rotated x)."""
        x = check_embeddings(x, name="x", dim=self.rotation.shape[1])
        y = x @ self.rotation.T
        m, _, dsub = self.centroids.shape
        codes = np.empty((x.shape[0], m), dtype=np.int64)
        for j in range(m):
            sub = np.ascontiguousarray(y[:, j * dsub:(j + 1) * dsub])
            codes[:, j] = nearest_code(sub, self.centroids[j], batch_size=batch_size)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Approximate vectors (in the original, un-rotated space) for codes [N, M]."""
        codes = np.asarray(codes)
        m = self.num_subspaces
        if codes.ndim != 2 or codes.shape[1] != m:
            raise QuantizationError(f"codes: expected shape [N, {m}], got {codes.shape}")
        y = np.concatenate([self.centroids[j][codes[:, j]] for j in range(m)], axis=1)
        return y @ self.rotation


def _check_opq_params(dim: int, n: int, num_subspaces, nbits) -> None:
    if isinstance(num_subspaces, bool) or not isinstance(num_subspaces, (int, np.integer)) or num_subspaces < 1:
        raise QuantizationError(f"num_subspaces must be a positive integer, got {num_subspaces!r}")
    if dim % num_subspaces:
        divisors = [m for m in range(1, dim + 1) if dim % m == 0]
        raise QuantizationError(
            f"OPQ: num_subspaces M={num_subspaces} must divide the vector dimension D={dim} "
            f"(each sub-vector gets D/M dimensions); divisors of {dim}: {divisors}")
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or not 1 <= nbits <= 16:
        raise QuantizationError(f"OPQ: nbits must be an integer in [1, 16], got {nbits!r}")
    if n < dim:  # faiss' OPQMatrix.train corrupts memory (abort / segfault) with fewer vectors than dimensions
        raise QuantizationError(f"OPQ: only {n} vectors of dimension {dim}; training the rotation needs at least as "
                                f"many vectors as dimensions (quantize lower-dimensional vectors or more items)")
    if n < 2 ** nbits:
        suggestion = max(1, int(np.floor(np.log2(n)))) if n >= 2 else None
        raise QuantizationError(
            f"OPQ: only {n} vectors for 2**nbits={2 ** nbits} codes per subspace; k-means needs at least as many "
            f"vectors as codes" + (f" (use nbits <= {suggestion})" if suggestion else ""))


def opq_encode(x: np.ndarray, num_subspaces: int, nbits: int = 8, seed: int = 0, niter: int = 20,
               opq_niter: int = 25, use_gpu="auto") -> OPQResult:
    """Train OPQ (``faiss.OPQMatrix``) + a product quantizer on ``x`` [N, D] and return its codes [N, M].

    M = ``num_subspaces`` must divide D. The rotation is trained by faiss' alternating optimisation
    (``opq_niter`` rounds); the final PQ (``niter`` k-means iterations per subspace, seed ``seed``) is trained on the
    rotated vectors, and every sub-vector gets its nearest centroid. ``use_gpu`` is accepted for a uniform API;
    faiss trains OPQ on the CPU only.
    """
    x = check_embeddings(x, name="x")
    n, dim = x.shape
    _check_opq_params(dim, n, num_subspaces, nbits)
    if resolve_use_gpu(use_gpu):
        logger.info("OPQ: faiss has no GPU OPQ training; running on the CPU")
    logger.info("OPQ%d,PQ%dx%d on %d x %d vectors with faiss on the CPU", num_subspaces, num_subspaces, nbits,
                n, dim)
    opq = faiss.OPQMatrix(dim, int(num_subspaces))
    opq.niter = int(opq_niter)
    opq.verbose = False
    pq_for_opq = faiss.ProductQuantizer(dim, int(num_subspaces), int(nbits))
    pq_for_opq.cp.seed = int(seed)
    pq_for_opq.cp.min_points_per_centroid = 1
    opq.pq = pq_for_opq  # the Python object must stay alive while opq trains (it does: local variable)
    opq.train(x)
    y = opq.apply(x)
    pq = faiss.ProductQuantizer(dim, int(num_subspaces), int(nbits))
    pq.cp.seed = int(seed)
    pq.cp.niter = int(niter)
    pq.cp.min_points_per_centroid = 1
    pq.train(y)
    rotation = faiss.vector_to_array(opq.A).astype(np.float32).reshape(dim, dim)
    centroids = faiss.vector_to_array(pq.centroids).astype(np.float32).reshape(
        int(num_subspaces), 2 ** int(nbits), dim // int(num_subspaces))
    result = OPQResult(codes=np.empty((0, int(num_subspaces)), dtype=np.int64), rotation=rotation,
                       centroids=centroids, nbits=int(nbits))
    result.codes = result.encode(x)
    return result


@dataclass
class RQOPQResult:
    """RQ codes [N, L] of the vectors and OPQ codes [N, M] of their final residual ``x - sum_l e_l[c_l]``."""

    rq_codes: np.ndarray
    opq_codes: np.ndarray
    rq_codebooks: list
    opq: OPQResult

    def residual(self, x: np.ndarray) -> np.ndarray:
        """The final RQ residual of ``x`` (the vectors the OPQ codes quantize)."""
        return np.asarray(x, dtype=np.float32) - decode_codes(self.rq_codes, self.rq_codebooks)

    def decode(self) -> np.ndarray:
        """Reconstruction: RQ part + OPQ part."""
        return decode_codes(self.rq_codes, self.rq_codebooks) + self.opq.decode(self.opq_codes)


def rq_opq_encode(x: np.ndarray, num_levels: int = 3, codebook_size: int = 256, opq_subspaces: int = 8,
                  opq_nbits: int = 8, seed: int = 0, niter: int = 20, opq_niter: int = 25, use_gpu="auto",
                  rq_codebooks=None, batch_size: int = DEFAULT_BATCH_SIZE) -> RQOPQResult:
    """COINS-style RQ-OPQ: greedy residual k-means codes (or, given ``rq_codebooks``, greedy assignment to
    those) plus OPQ codes trained and computed on the FINAL residual after the L RQ levels, not on ``x``."""
    x = check_embeddings(x, name="x")
    if rq_codebooks is None:
        rq_codes, rq_codebooks, residual = residual_kmeans(x, num_levels, codebook_size, seed=seed, niter=niter,
                                                           use_gpu=use_gpu, batch_size=batch_size,
                                                           return_residual=True)
    else:
        rq_codebooks = [np.ascontiguousarray(np.asarray(cb), dtype=np.float32) for cb in rq_codebooks]
        rq_codes, residual = assign_residual(x, rq_codebooks, batch_size=batch_size, return_residual=True)
    opq = opq_encode(residual, opq_subspaces, nbits=opq_nbits, seed=seed, niter=niter, opq_niter=opq_niter,
                     use_gpu=use_gpu)
    return RQOPQResult(rq_codes=rq_codes, opq_codes=opq.codes, rq_codebooks=list(rq_codebooks), opq=opq)
