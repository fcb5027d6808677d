"""Shared quantization layers of recbole-sid (no RecBole imports: usable on their own).

- ``ResidualQuantizer``: trainable greedy residual quantizer (k-means init, straight-through, dead-code reseed).
- ``RQVAE``: TIGER-style encoder -> residual quantizer -> decoder.
- ``residual_kmeans``, ``opq_encode``, ``rq_opq_encode``: faiss-backed, training-free quantizers.
- ``assign_residual`` / ``decode_codes``: batched greedy assignment and reconstruction (numpy or torch).
- ``add_dedup_level``: one extra level that makes every SID unique.
- ``check_embeddings`` / ``check_quantizer_params``: input checks raising ``QuantizationError``.
"""
from recbole_sid.quantization.assign import assign_residual, decode_codes, nearest_code
from recbole_sid.quantization.checks import check_codes, check_embeddings, check_quantizer_params
from recbole_sid.quantization.dedup import add_dedup_level, bucket_ids
from recbole_sid.quantization.faiss_ops import (
    OPQResult,
    RQOPQResult,
    kmeans,
    opq_encode,
    resolve_use_gpu,
    residual_kmeans,
    rq_opq_encode,
)
from recbole_sid.quantization.residual import ResidualQuantizer, RQOutput
from recbole_sid.quantization.rqvae import RQVAE, RQVAEOutput

__all__ = [
    "OPQResult",
    "RQOPQResult",
    "RQOutput",
    "RQVAE",
    "RQVAEOutput",
    "ResidualQuantizer",
    "add_dedup_level",
    "assign_residual",
    "bucket_ids",
    "check_codes",
    "check_embeddings",
    "check_quantizer_params",
    "decode_codes",
    "kmeans",
    "nearest_code",
    "opq_encode",
    "resolve_use_gpu",
    "residual_kmeans",
    "rq_opq_encode",
]
