"""Large-catalogue tokenizing: residual k-means SIDs for more items than fit in memory, in bounded memory.

    codes = tokenize_shards(["emb/"], "sids/", num_levels=3, codebook_size=256)   # or python -m recbole_sid.tokenize
                                                                                   #    --embeddings emb/ --out sids/

1. **Input**: item embeddings as ``.npy`` shards (memory-mapped, never loaded whole), optionally with
   ``<shard>.ids.txt`` (one raw item id per line; without it an item's id is its row number over all shards), or
   ``.parquet`` shards (an id column and a list-of-floats vector column, read in row batches; needs pyarrow).
2. **Codebooks** are fitted on a uniform sample of the items (``sample_size`` rows, seeded) with the same faiss
   residual k-means as ``residual_kmeans``. Default ``256 x K`` rows: faiss' k-means trains on at most
   ``max_points_per_centroid = 256`` points per centroid anyway (it subsamples larger inputs), so a larger sample
   does not change what k-means sees, only the memory; with fewer items than that the sample is every item and the
   codebooks are exactly those of ``residual_kmeans`` on the whole matrix.
3. **Assignment**: one streaming pass over fixed blocks of ``block_rows`` rows (greedy residual assignment,
   ``assign_residual``), in this process or as Ray tasks over the blocks (``ray=True``; the same blocks and the same
   function, so the same codes). Codes go to a memory-mapped file; each row's (index, codes) is also spilled to one of
   P partition files chosen by a hash of its SID *prefix* (the first L-1 codes), so that every item sharing a prefix
   lands in the same partition.
4. **Collisions** are resolved one partition at a time, by grouping on the SID prefix as
   ``recbole_sid.quantization.unique`` and ``dedup`` do in memory: with ``last_level="unique"`` a prefix group in
   which two items share the last code too gets distinct last codes by a minimum-cost assignment (groups larger
   than K are left to the dedup level); then the dedup level numbers the items sharing a full SID 0, 1, 2, ... in
   input order. For catalogues that fit in memory the result equals ``residual_kmeans`` + ``unique_last_level`` +
   ``add_dedup_level``.
5. **Output**, all or nothing: everything is written to a staging folder beside ``out`` and renamed onto ``out`` at
   the end: ``<name>-00000.itemsid`` ... (one RecBole atomic SID file per input shard, rows in input order, the dedup
   level included), ``<name>.codebooks.npy`` [L, K, D] and ``<name>.sid_manifest.json`` (inputs, settings, collision
   rates, per-level usage, timings).

Memory: the sample (``sample_size x D`` floats), one block (``block_rows x D`` floats) and the assignment kernel's
buffers (``assign_residual``: 16,384 x (2 D + K) floats), one partition
(``partition_rows x (8 + 4L)`` bytes, more when one SID prefix is shared by more items than that) and the vectors of
at most ``block_rows`` colliding items at a time; never N x D. Disk: the staging folder holds N x (L+1) int32
codes, the partition spill (N x (8 + 4L) bytes) and the output text.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recbole_sid.exceptions import DataError, QuantizationError
from recbole_sid.quantization.assign import DEFAULT_BATCH_SIZE, assign_residual, decode_codes
from recbole_sid.quantization.checks import check_quantizer_params
from recbole_sid.quantization.faiss_ops import DEFAULT_MAX_POINTS_PER_CENTROID, residual_kmeans

logger = logging.getLogger("recbole_sid")

#: rows per read and per assignment task: memory ``block_rows x D`` floats (plus the kernel's buffers, which
#: ``assign_residual`` sizes with its own ``DEFAULT_BATCH_SIZE`` rows whatever the block)
DEFAULT_BLOCK_ROWS = 65536
#: items per partition of the collision pass (about 20 MB of records at L = 3)
DEFAULT_PARTITION_ROWS = 1 << 20
#: at most this many partition files are open at once (file handles)
MAX_PARTITIONS = 512
LAST_LEVEL_RULES = ("unique", "greedy")
SHARD_SUFFIXES = (".npy", ".parquet")
#: sidecar of ``X.npy`` with its item ids, one per line
IDS_SUFFIX = ".ids.txt"
_MAX_SHOWN = 10


def default_sample_size(codebook_size: int) -> int:
    """``256 x K``: what faiss' k-means trains on per level at most (``max_points_per_centroid = 256``)."""
    return DEFAULT_MAX_POINTS_PER_CENTROID * int(codebook_size)


# --- input shards ------------------------------------------------------------------------------------------------

class EmbeddingShard:
    """One input file of item vectors. Every read goes through :meth:`read` (a row range) or :meth:`take` (sorted
    row indices), each returning float32 ``[rows, D]``; :meth:`ids` yields the item ids in row order."""

    kind = "?"
    path: Path
    n_rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def ids(self, first_global_row: int):
        raise NotImplementedError

    def spec(self) -> dict:
        """What a worker process needs to open the same shard (:func:`open_shard`)."""
        raise NotImplementedError


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


class NpyShard(EmbeddingShard):
    """A ``.npy`` file [N, D] of real numbers, memory-mapped (``np.load(mmap_mode="r")``)."""

    kind = "npy"

    def __init__(self, path, ids_path=None):
        self.path = Path(path)
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: not a readable .npy array ({exc})") from exc
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise DataError(f"{self.path}: expected a 2-D array [n_items, dim], got shape "
                            f"{getattr(array, 'shape', None)}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise DataError(f"{self.path}: expected real numbers, got dtype {array.dtype}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise DataError(f"{self.path}: empty array of shape {array.shape}")
        self._array = array
        self.n_rows, self.dim = int(array.shape[0]), int(array.shape[1])
        self.ids_path = Path(ids_path) if ids_path is not None else None
        if self.ids_path is not None:
            lines = _count_lines(self.ids_path)
            if lines != self.n_rows:
                raise DataError(f"{self.ids_path}: {lines} ids for the {self.n_rows} rows of {self.path} (one id per "
                                f"line, same order as the rows)")

    def read(self, start, stop):
        return np.asarray(self._array[start:stop], dtype=np.float32)

    def take(self, rows):
        return np.asarray(self._array[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def ids(self, first_global_row):
        if self.ids_path is None:
            for row in range(self.n_rows):
                yield str(first_global_row + row)
            return
        with open(self.ids_path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                item = line.rstrip("\n\r")
                if not item or "\t" in item:
                    raise DataError(f"{self.ids_path}:{line_no}: an id must be non-empty and hold no tab, got "
                                    f"{item!r}")
                yield item

    def spec(self):
        return {"kind": "npy", "path": str(self.path), "ids_path": None if self.ids_path is None else
                str(self.ids_path)}


def _pyarrow_parquet(path):
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"{path}: reading parquet shards needs the pyarrow package, which is not installed "
                        f"(pip install pyarrow), or convert the shard to .npy ({exc})") from exc
    return pq


class ParquetShard(EmbeddingShard):
    """A ``.parquet`` file with an id column and a vector column (list of numbers, one list per item), read in
    row batches of at most ``batch_rows`` (pyarrow's ``iter_batches``)."""

    kind = "parquet"

    def __init__(self, path, id_column="item_id", vector_column="item_emb", batch_rows=DEFAULT_BLOCK_ROWS):
        self.path = Path(path)
        pq = _pyarrow_parquet(self.path)
        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a file that is not parquet
            raise DataError(f"{self.path}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
        names = self._file.schema_arrow.names
        for role, column in (("id", id_column), ("vector", vector_column)):
            if column not in names:
                raise DataError(f"{self.path}: no {role} column '{column}' (columns: {', '.join(names)}); set "
                                f"--{role}-column")
        self.id_column, self.vector_column = id_column, vector_column
        self.batch_rows = int(batch_rows)
        metadata = self._file.metadata
        self._group_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        self._group_start = np.concatenate([[0], np.cumsum(self._group_rows)]).astype(np.int64)
        self.n_rows = int(self._group_start[-1])
        if self.n_rows == 0:
            raise DataError(f"{self.path}: no rows")
        first = next(self._batches(0, 1))
        self.dim = int(first.shape[1])

    def _to_matrix(self, column, first_row: int) -> np.ndarray:
        import pyarrow as pa

        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)):
            raise DataError(f"{self.path}: column '{self.vector_column}' is {column.type}, expected a list of numbers "
                            f"per item")
        if column.null_count:
            raise DataError(f"{self.path}: column '{self.vector_column}' has {column.null_count} null vectors "
                            f"(rows from {first_row})")
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
        else:
            offsets = np.asarray(column.offsets)
            lengths = np.diff(offsets)
            width = int(lengths[0]) if len(lengths) else 0
            if (lengths != width).any():
                bad = int(np.flatnonzero(lengths != width)[0])
                raise DataError(f"{self.path}: row {first_row + bad} has a vector of {int(lengths[bad])} numbers, "
                                f"row {first_row} one of {width}; every vector needs the same dimension")
        values = column.flatten()
        try:
            flat = values.to_numpy(zero_copy_only=False)
        except Exception as exc:
            raise DataError(f"{self.path}: column '{self.vector_column}' holds {values.type}, expected numbers "
                            f"({exc})") from exc
        if not (np.issubdtype(flat.dtype, np.floating) or np.issubdtype(flat.dtype, np.integer)):
            raise DataError(f"{self.path}: column '{self.vector_column}' holds {flat.dtype}, expected numbers")
        return np.asarray(flat, dtype=np.float32).reshape(len(column), width)

    def _batches(self, start, stop):
        """Matrices covering rows [start, stop) in order, each at most ``batch_rows`` rows."""
        first_group = int(np.searchsorted(self._group_start, start, side="right") - 1)
        for group in range(first_group, len(self._group_rows)):
            group_start = int(self._group_start[group])
            if group_start >= stop:
                break
            row = group_start
            for batch in self._file.iter_batches(batch_size=self.batch_rows, row_groups=[group],
                                                 columns=[self.vector_column]):
                n = batch.num_rows
                lo, hi = max(start, row), min(stop, row + n)
                if lo < hi:
                    matrix = self._to_matrix(batch.column(0), row)
                    yield matrix[lo - row:hi - row]
                row += n
                if row >= stop:
                    return

    def read(self, start, stop):
        parts = list(self._batches(start, stop))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def take(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if not len(rows):
            return out
        groups = np.searchsorted(self._group_start, rows, side="right") - 1
        for group in np.unique(groups):
            members = np.flatnonzero(groups == group)
            group_start = int(self._group_start[group])
            row = group_start
            for batch in self._file.iter_batches(batch_size=self.batch_rows, row_groups=[int(group)],
                                                 columns=[self.vector_column]):
                n = batch.num_rows
                inside = members[(rows[members] >= row) & (rows[members] < row + n)]
                if len(inside):
                    matrix = self._to_matrix(batch.column(0), row)
                    out[inside] = matrix[rows[inside] - row]
                row += n
        return out

    def ids(self, first_global_row):
        for batch in self._file.iter_batches(batch_size=self.batch_rows, columns=[self.id_column]):
            column = batch.column(0)
            if column.null_count:
                raise DataError(f"{self.path}: column '{self.id_column}' has {column.null_count} null ids")
            for item in column.to_pylist():
                item = str(item)
                if not item or "\t" in item:
                    raise DataError(f"{self.path}: an id must be non-empty and hold no tab, got {item!r}")
                yield item

    def spec(self):
        return {"kind": "parquet", "path": str(self.path), "id_column": self.id_column,
                "vector_column": self.vector_column, "batch_rows": self.batch_rows}


def open_shard(spec: dict) -> EmbeddingShard:
    """The shard described by :meth:`EmbeddingShard.spec` (used by Ray workers)."""
    spec = dict(spec)
    kind = spec.pop("kind")
    return NpyShard(**spec) if kind == "npy" else ParquetShard(**spec)


def shard_files(inputs) -> list[Path]:
    """The shard files named by ``inputs`` (files, or folders whose ``*.npy`` / ``*.parquet`` are taken in name
    order); a DataError names a path that is missing, of an unknown kind or a folder without shards."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SHARD_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{path}: a folder without .npy or .parquet shards")
            files.extend(found)
        elif path.is_file():
            if path.suffix not in SHARD_SUFFIXES:
                raise DataError(f"{path}: not a .npy or .parquet shard (item vectors: .npy [N, D], or parquet with "
                                f"an id and a vector column)")
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not files:
        raise DataError("no input shards given")
    if len(set(files)) != len(files):
        raise DataError(f"a shard is given twice: {sorted({str(f) for f in files if files.count(f) > 1})}")
    return files


class ShardSet:
    """The input shards in order; global row g is row ``g - offsets[i]`` of shard i."""

    def __init__(self, shards: list[EmbeddingShard]):
        self.shards = shards
        dims = {s.dim for s in shards}
        if len(dims) != 1:
            first = shards[0]
            other = next(s for s in shards if s.dim != first.dim)
            raise DataError(f"{other.path}: vectors of dimension {other.dim}, but {first.path} has {first.dim}; every "
                            f"shard needs the same dimension")
        without = [s for s in shards if s.kind == "npy" and s.ids_path is None]
        with_ids = [s for s in shards if s not in without]
        if with_ids and without:
            raise DataError(f"{without[0].path}: no {without[0].path.with_suffix('').name}{IDS_SUFFIX} beside it, but "
                            f"{with_ids[0].path} has ids; give every .npy shard its ids file, or none (the ids are then "
                            f"row numbers over all shards)")
        self.dim = shards[0].dim
        self.offsets = np.concatenate([[0], np.cumsum([s.n_rows for s in shards])]).astype(np.int64)
        self.n_rows = int(self.offsets[-1])

    @classmethod
    def open(cls, inputs, id_column="item_id", vector_column="item_emb", batch_rows=DEFAULT_BLOCK_ROWS):
        shards = []
        for path in shard_files(inputs):
            if path.suffix == ".npy":
                ids = path.with_suffix("").with_name(path.with_suffix("").name + IDS_SUFFIX)
                shards.append(NpyShard(path, ids if ids.is_file() else None))
            else:
                shards.append(ParquetShard(path, id_column, vector_column, batch_rows))
        return cls(shards)

    def blocks(self, block_rows: int) -> list[tuple[int, int, int]]:
        """``(shard, start, stop)`` of every block, in input order; a block never crosses a shard."""
        out = []
        for index, shard in enumerate(self.shards):
            for start in range(0, shard.n_rows, block_rows):
                out.append((index, start, min(shard.n_rows, start + block_rows)))
        return out

    def locate(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows at the sorted global indices ``rows`` (float32 [len(rows), D])."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = self.locate(rows)
        for index in np.unique(shard_of):
            members = np.flatnonzero(shard_of == index)
            out[members] = self.shards[index].take(rows[members] - self.offsets[index])
        return out

    def describe(self, global_rows) -> str:
        """``file row r, ...`` for global row indices (at most 10 shown)."""
        global_rows = np.asarray(global_rows, dtype=np.int64)
        shard_of = self.locate(global_rows)
        parts = [f"{self.shards[s].path} row {int(g - self.offsets[s])}"
                 for g, s in zip(global_rows[:_MAX_SHOWN], shard_of[:_MAX_SHOWN])]
        more = f", ... ({len(global_rows) - _MAX_SHOWN} more)" if len(global_rows) > _MAX_SHOWN else ""
        return ", ".join(parts) + more


def check_finite_rows(x: np.ndarray, path, first_row: int) -> None:
    """DataError naming ``path`` and the rows (of that file) holding NaN or Inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum()):
            return
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        shown = ", ".join(str(first_row + int(i)) for i in bad[:_MAX_SHOWN])
        more = f", ... ({len(bad) - _MAX_SHOWN} more)" if len(bad) > _MAX_SHOWN else ""
        raise DataError(f"{path}: {len(bad)} rows contain NaN or Inf (rows {shown}{more} of that file); fix or drop "
                        f"those vectors before tokenizing")


def assign_block(shard: EmbeddingShard, start: int, stop: int, codebooks, batch_size: int) -> np.ndarray:
    """Greedy residual codes (int32 [stop - start, L]) of rows [start, stop) of ``shard``: the unit of work of the
    assignment pass, the same in this process and in a Ray task."""
    x = shard.read(start, stop)
    check_finite_rows(x, shard.path, start)
    return assign_residual(x, codebooks, batch_size=batch_size).astype(np.int32)


# --- the collision pass --------------------------------------------------------------------------------------------

def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    return h ^ (h >> np.uint64(33))


def prefix_partition(codes: np.ndarray, prefix_levels: int, n_parts: int) -> np.ndarray:
    """Partition (0 .. n_parts-1) of each row, a hash of its first ``prefix_levels`` codes."""
    if n_parts == 1:
        return np.zeros(len(codes), dtype=np.int64)
    h = np.zeros(len(codes), dtype=np.uint64)
    for level in range(prefix_levels):
        h = _mix(h * np.uint64(0x100000001B3) ^ codes[:, level].astype(np.uint64))
    return (h % np.uint64(n_parts)).astype(np.int64)


def _record_dtype(levels: int) -> np.dtype:
    return np.dtype([("row", "<i8"), ("codes", "<i4", (levels,))])


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal rows in the row-sorted key matrix ``keys`` [n, m] (m may be 0)."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if keys.shape[1] == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.any(keys[1:] != keys[:-1], axis=1)
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)


@dataclass
class PartitionStats:
    items: int = 0
    unique_greedy: int = 0
    unique_final: int = 0
    changed: int = 0
    largest_bucket: int = 0


def resolve_partition(records: np.ndarray, shards: ShardSet, codebooks, last_level: str, block_rows: int,
                      dedup_max=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, PartitionStats]:
    """Collision repair of one partition (every item of each SID prefix in it): ``(rows, codes [n, L], dedup
    [n], stats)``. ``records`` are (global row, greedy codes), rows increasing."""
    rows = records["row"]
    codes = np.array(records["codes"], dtype=np.int64)
    n, levels = codes.shape
    stats = PartitionStats(items=n)
    if n == 0:
        return rows, codes, np.zeros(0, dtype=np.int64), stats
    stats.unique_greedy = len(_group_starts(codes[_by_sid(rows, codes, levels)]))
    if last_level == "unique":
        stats.changed = _unique_last_level(rows, codes, shards, codebooks, block_rows)
    order = _by_sid(rows, codes, levels)  # buckets of equal SIDs, input order inside each
    full_sorted = codes[order]
    starts = _group_starts(full_sorted)
    sizes = np.diff(np.concatenate([starts, [n]]))
    stats.unique_final = len(starts)
    stats.largest_bucket = int(sizes.max())
    if dedup_max is not None and stats.largest_bucket > dedup_max:
        big = int(np.argmax(sizes))
        first = int(rows[order[starts[big]]])
        raise QuantizationError(
            f"dedup level overflow: {stats.largest_bucket} items share the SID {full_sorted[starts[big]].tolist()} "
            f"(first: {shards.describe([first])}) but the dedup level allows max_size={dedup_max} codes. Raise "
            f"--dedup-max, add a level or use a larger codebook")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
    return rows, codes, rank, stats


def _by_sid(rows, codes, levels: int) -> np.ndarray:
    """Order of the rows by their first ``levels`` codes, then by global row (input order)."""
    return np.lexsort((rows,) + tuple(codes[:, level] for level in reversed(range(levels))))


def _unique_last_level(rows, codes, shards: ShardSet, codebooks, block_rows: int) -> int:
    """``unique_last_level`` on the prefix groups of one partition, in place on ``codes``; returns codes changed.
    The vectors of at most ``max(block_rows, K)`` items are read at a time."""
    from scipy.optimize import linear_sum_assignment

    n, levels = codes.shape
    last = np.asarray(codebooks[levels - 1], dtype=np.float32)
    k = last.shape[0]
    order = _by_sid(rows, codes, levels - 1)  # prefix groups, input order inside each (as unique_last_level)
    starts = _group_starts(codes[order, : levels - 1])
    sizes = np.diff(np.concatenate([starts, [n]]))
    todo = []  # (start, size) of the groups to repair: a full-SID collision inside, at most K items
    for start, size in zip(starts, sizes):
        if size < 2 or size > k:
            continue
        members = order[start:start + size]
        if len(np.unique(codes[members, levels - 1])) < size:
            todo.append((int(start), int(size)))
    if not todo:
        return 0
    last_sq = (last ** 2).sum(axis=1)
    changed = 0
    chunk, chunk_rows = [], 0
    for group in todo + [None]:
        if group is not None and (chunk_rows + group[1] <= max(block_rows, k) or not chunk):
            chunk.append(group)
            chunk_rows += group[1]
            continue
        members_all = np.concatenate([order[s:s + z] for s, z in chunk])
        sorted_idx = np.argsort(rows[members_all], kind="stable")
        x = np.empty((len(members_all), shards.dim), dtype=np.float32)
        x[sorted_idx] = shards.take(rows[members_all][sorted_idx])
        offset = 0
        for _, size in chunk:
            members = members_all[offset:offset + size]
            r = x[offset:offset + size] - (decode_codes(codes[members, : levels - 1], codebooks[: levels - 1])
                                          if levels > 1 else 0.0)
            cost = (r ** 2).sum(axis=1, keepdims=True) - 2.0 * r @ last.T + last_sq
            _, chosen = linear_sum_assignment(cost)
            changed += int((codes[members, levels - 1] != chosen).sum())
            codes[members, levels - 1] = chosen
            offset += size
        if group is None:
            break
        chunk, chunk_rows = [group], group[1]
    return changed


# --- output ------------------------------------------------------------------------------------------------------

def _level_tokens(levels: int, k: int, dedup_size: int) -> list[list[str]]:
    from recbole_sid.atomic_io import LEVEL_PREFIXES

    sizes = [k] * levels + [dedup_size]
    return [[f"{LEVEL_PREFIXES[level]}_{code}" for code in range(size)] for level, size in enumerate(sizes)]


def _write_sid_shard(path: Path, ids, final: np.ndarray, tokens, id_field: str, block_rows: int) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"{id_field}:token\tsid:token_seq\n")
        ids = iter(ids)
        for start in range(0, len(final), block_rows):
            block = np.asarray(final[start:start + block_rows])
            lines = []
            for row in block.tolist():
                lines.append(next(ids) + "\t" + " ".join(tokens[level][code] for level, code in enumerate(row)))
            f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _staging_dir(out: Path) -> Path:
    from recbole_sid.atomic_io import _HOST

    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}@{_HOST}.", suffix=".staging", dir=out.parent))


def _commit(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename the staging folder onto ``out`` (a previous ``out`` is replaced only with ``overwrite``)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700 folders; the output gets the usual permissions
    old = None
    if out.exists():
        if not overwrite:
            raise DataError(f"{out} already exists; refusing to overwrite it (pass --overwrite)")
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- the whole job -----------------------------------------------------------------------------------------------

def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise QuantizationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def tokenize_shards(inputs, out, num_levels: int = 3, codebook_size: int = 256, sample_size: int | None = None,
                    seed: int = 0, niter: int = 20, last_level: str = "unique", dedup_max: int | None = None,
                    block_rows: int = DEFAULT_BLOCK_ROWS, partition_rows: int = DEFAULT_PARTITION_ROWS,
                    use_gpu="auto", ray: bool = False, ray_address: str | None = None,
                    ray_num_cpus: int | None = None, name: str = "items", id_field: str = "item_id",
                    id_column: str = "item_id", vector_column: str = "item_emb", overwrite: bool = False) -> dict:
    """Residual k-means SIDs of every item of the shards ``inputs``, written to the folder ``out`` (see the module
    docstring). Returns the manifest (also written as ``out/<name>.sid_manifest.json``)."""
    from recbole_sid.atomic_io import plain_name

    started = time.perf_counter()
    check_quantizer_params(num_levels, codebook_size)
    if last_level not in LAST_LEVEL_RULES:
        raise QuantizationError(f"last_level={last_level!r}: choose one of {list(LAST_LEVEL_RULES)}")
    block_rows = _check_int("block_rows", block_rows, 1)
    partition_rows = _check_int("partition_rows", partition_rows, 1)
    if dedup_max is not None:
        dedup_max = _check_int("dedup_max", dedup_max, 1)
    name = plain_name(name, "--name")
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; refusing to overwrite it (pass --overwrite)")
    shards = ShardSet.open(inputs, id_column, vector_column, block_rows)
    n, dim, levels, k = shards.n_rows, shards.dim, int(num_levels), int(codebook_size)
    check_quantizer_params(levels, k, n_items=n)
    if sample_size is None:
        sample_size = default_sample_size(k)
    sample_size = _check_int("sample_size", sample_size, k)
    timings = {}

    staging = _staging_dir(out)
    try:
        work = staging / "_work"
        work.mkdir()
        # 1. codebooks from a seeded uniform sample (every row when there are fewer)
        t = time.perf_counter()
        if sample_size >= n:
            sample_rows = np.arange(n, dtype=np.int64)
        else:
            sample_rows = np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))
        sample = shards.take(sample_rows)
        bad = np.flatnonzero(~np.isfinite(sample).all(axis=1)) if not np.isfinite(sample.sum()) else []
        if len(bad):
            raise DataError(f"{len(bad)} sampled rows contain NaN or Inf: {shards.describe(sample_rows[bad])}; fix "
                            f"or drop those vectors before tokenizing")
        logger.info("large tokenize: %d items x %d in %d shard(s); codebooks (%d levels x %d) from a sample of %d",
                    n, dim, len(shards.shards), levels, k, len(sample_rows))
        _, codebooks = residual_kmeans(sample, levels, k, seed=seed, niter=niter, use_gpu=use_gpu)
        codebooks = [np.ascontiguousarray(cb, dtype=np.float32) for cb in codebooks]
        del sample
        timings["codebooks_s"] = time.perf_counter() - t

        # 2. streaming assignment; codes to a memory map, (row, codes) spilled by SID prefix
        t = time.perf_counter()
        n_parts = min(MAX_PARTITIONS, max(1, math.ceil(n / partition_rows)))
        prefix_levels = levels - 1
        if prefix_levels == 0:  # one level: its "prefix" is empty, every item one group; partition by the code
            n_parts, prefix_levels = (1, 0) if (last_level == "unique" and n <= k) else (n_parts, 1)
        record = _record_dtype(levels)
        part_files = [open(work / f"part-{p:05d}.bin", "wb") for p in range(n_parts)]
        usage_greedy = np.zeros((levels, k), dtype=np.int64)
        try:
            blocks = shards.blocks(block_rows)
            if ray or ray_address:
                from recbole_sid.distributed.ray_assign import assign_blocks_ray

                results = assign_blocks_ray(shards, blocks, codebooks, DEFAULT_BATCH_SIZE, address=ray_address,
                                            num_cpus=ray_num_cpus)
            else:
                results = ((block, assign_block(shards.shards[block[0]], block[1], block[2], codebooks,
                                                DEFAULT_BATCH_SIZE))
                           for block in blocks)
            for (index, start, stop), block_codes in results:
                first = int(shards.offsets[index]) + start
                recs = np.empty(stop - start, dtype=record)
                recs["row"] = np.arange(first, first + stop - start, dtype=np.int64)
                recs["codes"] = block_codes
                for level in range(levels):
                    usage_greedy[level] += np.bincount(block_codes[:, level], minlength=k)
                part = prefix_partition(block_codes, prefix_levels, n_parts)
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
                for p in range(n_parts):
                    if bounds[p] < bounds[p + 1]:
                        recs[order[bounds[p]:bounds[p + 1]]].tofile(part_files[p])
        finally:
            for f in part_files:
                f.close()
        timings["assign_s"] = time.perf_counter() - t

        # 3. collisions, one partition at a time: unique last level, then the dedup level
        t = time.perf_counter()
        final = np.lib.format.open_memmap(work / "final.npy", mode="w+", dtype=np.int32, shape=(n, levels + 1))
        total = PartitionStats()
        for p in range(n_parts):
            path = work / f"part-{p:05d}.bin"
            records = np.fromfile(path, dtype=record)
            rows, codes, rank, stats = resolve_partition(records, shards, codebooks, last_level, block_rows,
                                                         dedup_max)
            del records
            final[rows, :levels] = codes
            final[rows, levels] = rank
            for field in ("items", "unique_greedy", "unique_final", "changed"):
                setattr(total, field, getattr(total, field) + getattr(stats, field))
            total.largest_bucket = max(total.largest_bucket, stats.largest_bucket)
            path.unlink()
        final.flush()
        timings["collisions_s"] = time.perf_counter() - t

        # 4. output: one SID file per input shard, the codebooks, the manifest
        t = time.perf_counter()
        tokens = _level_tokens(levels, k, max(1, total.largest_bucket))
        usage_final = np.zeros((levels, k), dtype=np.int64)
        files = []
        for index, shard in enumerate(shards.shards):
            lo, hi = int(shards.offsets[index]), int(shards.offsets[index + 1])
            target = staging / f"{name}-{index:05d}.itemsid"
            _write_sid_shard(target, shard.ids(lo), final[lo:hi], tokens, id_field, block_rows)
            for start in range(lo, hi, block_rows):
                block = np.asarray(final[start:min(hi, start + block_rows), :levels])
                for level in range(levels):
                    usage_final[level] += np.bincount(block[:, level], minlength=k)
            files.append(target.name)
        np.save(staging / f"{name}.codebooks.npy", np.stack(codebooks))
        del final
        shutil.rmtree(work)
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - started
        manifest = {
            "inputs": [{"path": str(s.path), "rows": s.n_rows, "ids": _ids_source(s)} for s in shards.shards],
            "items": n, "dim": dim, "levels": levels, "codebook_size": k, "seed": seed, "kmeans_iters": niter,
            "sample_size": int(len(sample_rows)), "last_level": last_level, "block_rows": block_rows,
            "partitions": n_parts, "assignment": ("ray" + (f" ({ray_address})" if ray_address else " (local)"))
            if (ray or ray_address) else "single process",
            "collision_rate_greedy": (n - total.unique_greedy) / n,
            "collision_rate": (n - total.unique_final) / n,
            "last_level_changed": total.changed,
            "dedup_size": total.largest_bucket,
            "levels_report": [_level_report(usage_final[level], k) for level in range(levels)],
            "levels_report_greedy": [_level_report(usage_greedy[level], k) for level in range(levels)],
            "files": files, "codebooks": f"{name}.codebooks.npy", "seconds": timings,
        }
        with open(staging / f"{name}.sid_manifest.json", "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        _commit(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("large tokenize: %d items -> %s in %.1fs (collision rate %.4f greedy, %.4f before the dedup level; "
                "dedup size %d)", n, out, timings["total_s"], manifest["collision_rate_greedy"],
                manifest["collision_rate"], manifest["dedup_size"])
    return manifest


def _ids_source(shard: EmbeddingShard) -> str:
    if shard.kind == "parquet":
        return f"column {shard.id_column}"
    return str(shard.ids_path) if shard.ids_path is not None else "row numbers"


def _level_report(counts: np.ndarray, k: int) -> dict:
    used = int((counts > 0).sum())
    p = counts[counts > 0] / counts.sum()
    return {"codes_used": used, "usage": used / k, "perplexity": float(np.exp(-(p * np.log(p)).sum()))}


def read_sid_shards(out, name: str = "items") -> tuple[list[str], np.ndarray]:
    """Every id and SID (with the dedup level) of an output folder, in input order (for tests and small outputs)."""
    from recbole_sid.atomic_io import read_sids

    manifest = json.loads((Path(out) / f"{name}.sid_manifest.json").read_text(encoding="utf-8"))
    ids, codes = [], []
    for file in manifest["files"]:
        shard_ids, shard_codes = read_sids(Path(out) / file)
        ids.extend(shard_ids)
        codes.append(shard_codes)
    return ids, np.concatenate(codes)
