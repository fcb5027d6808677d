"""Large-catalogue tokenizing (``recbole_sid.quantization.streaming``, ``python -m recbole_sid.tokenize --embeddings``).

What is checked (issue 16, item 2):
* sharded .npy input gives exactly the SIDs of the in-memory pipeline (``residual_kmeans`` + ``unique_last_level``
  + ``add_dedup_level``) when the sample is every item, over several shards, blocks and collision partitions;
  ``--last-level greedy`` likewise without the unique step; with a smaller sample, the codebooks are those of the
  seeded sample;
* memory stays bounded: no read materialises more than ``max(block_rows, sample_size)`` rows, and the traced peak
  of a run is a small fraction of the N x D matrix;
* the Ray path gives the same files as the single-process path (skipped, with the reason, where ray cannot be
  imported: RecBole's ray 2.6.3 needs setuptools < 81 and numpy < 2);
* parquet shards give the same SIDs as .npy (skipped without pyarrow), and without pyarrow the error names the
  package and the file;
* bad inputs give errors naming the file (NaN rows, dimensions, ids files, shapes, kinds); a failing run leaves
  nothing behind (no output, no staging folder); an existing output is refused without --overwrite.
"""
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from recbole_sid.exceptions import DataError
from recbole_sid.quantization import add_dedup_level, residual_kmeans
from recbole_sid.quantization import streaming
from recbole_sid.quantization.streaming import read_sid_shards, tokenize_shards
from recbole_sid.quantization.unique import unique_last_level
from recbole_sid.tokenize import main as tokenize_main

N, D = 3000, 16
BOUNDS = [(0, 1000), (1000, 1700), (1700, 3000)]


def vectors(n=N, d=D, seed=1, duplicates=300):
    """Random vectors with near-duplicate pairs, so that SIDs collide and the unique / dedup steps have work."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    src, dst = rng.integers(0, n, duplicates), rng.integers(0, n, duplicates)
    x[dst] = x[src] + 1e-4 * rng.standard_normal((duplicates, d)).astype(np.float32)
    return x


def write_shards(folder: Path, x, bounds=BOUNDS, ids=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(bounds):
        np.save(folder / f"part-{i}.npy", x[a:b])
        if ids:
            (folder / f"part-{i}.ids.txt").write_text("".join(f"item{r}\n" for r in range(a, b)))
    return folder


def in_memory(x, levels, k, last_level="unique", seed=0, niter=10):
    codes, codebooks = residual_kmeans(x, levels, k, seed=seed, niter=niter)
    if last_level == "unique":
        codes, _ = unique_last_level(x, codebooks, codes)
    return add_dedup_level(codes)[0], codebooks


SMALL = {"seed": 0, "niter": 10, "block_rows": 256, "partition_rows": 500}


@pytest.mark.parametrize("levels,k", [(3, 16), (2, 64)])
def test_sharded_npy_equals_in_memory_pipeline(tmp_path, levels, k):
    x = vectors()
    shards = write_shards(tmp_path / "emb", x)
    manifest = tokenize_shards([shards], tmp_path / "out", num_levels=levels, codebook_size=k, **SMALL)
    ids, codes = read_sid_shards(tmp_path / "out")
    expected, codebooks = in_memory(x, levels, k)
    assert ids == [f"item{r}" for r in range(N)]
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "items.codebooks.npy"), np.stack(codebooks))
    assert manifest["partitions"] == 6 and manifest["sample_size"] == N  # fewer items than 256 x K: every item
    assert manifest["last_level_changed"] > 0 and manifest["collision_rate"] < manifest["collision_rate_greedy"]
    assert manifest["dedup_size"] == int(expected[:, -1].max()) + 1
    assert manifest["files"] == ["items-00000.itemsid", "items-00001.itemsid", "items-00002.itemsid"]
    assert json.loads((tmp_path / "out" / "items.sid_manifest.json").read_text())["items"] == N


def test_greedy_last_level_and_row_number_ids(tmp_path):
    x = vectors()
    shards = write_shards(tmp_path / "emb", x, ids=False)
    tokenize_shards([shards], tmp_path / "out", num_levels=3, codebook_size=16, last_level="greedy", **SMALL)
    ids, codes = read_sid_shards(tmp_path / "out")
    assert ids == [str(r) for r in range(N)]  # no ids files: row numbers over all shards
    np.testing.assert_array_equal(codes, in_memory(x, 3, 16, last_level="greedy")[0])


def test_codebooks_come_from_the_seeded_sample(tmp_path):
    x = vectors()
    shards = write_shards(tmp_path / "emb", x)
    manifest = tokenize_shards([shards], tmp_path / "out", num_levels=2, codebook_size=16, sample_size=500,
                               **SMALL)
    rows = np.sort(np.random.default_rng(0).choice(N, size=500, replace=False))
    _, expected = residual_kmeans(x[rows], 2, 16, seed=0, niter=10)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "items.codebooks.npy"), np.stack(expected))
    assert manifest["sample_size"] == 500
    with pytest.raises(Exception, match="sample_size must be an integer >= 16"):
        tokenize_shards([shards], tmp_path / "out2", num_levels=2, codebook_size=16, sample_size=8)


def test_reads_are_bounded(tmp_path, monkeypatch):
    """No read materialises more than max(block_rows, sample_size) rows; the assignment reads every row once."""
    n, block, sample = 20000, 1000, 1024
    x = vectors(n=n, d=8, duplicates=2000)
    shards = write_shards(tmp_path / "emb", x, bounds=[(0, 7000), (7000, 20000)])
    largest, read_total = [0], [0]
    read, take = streaming.NpyShard.read, streaming.NpyShard.take

    def counted_read(self, start, stop):
        out = read(self, start, stop)
        largest[0] = max(largest[0], len(out))
        read_total[0] += len(out)
        return out

    def counted_take(self, rows):
        out = take(self, rows)
        largest[0] = max(largest[0], len(out))
        return out

    monkeypatch.setattr(streaming.NpyShard, "read", counted_read)
    monkeypatch.setattr(streaming.NpyShard, "take", counted_take)
    manifest = tokenize_shards([shards], tmp_path / "out", num_levels=3, codebook_size=64, sample_size=sample,
                               seed=0, niter=5, block_rows=block, partition_rows=4000)
    assert manifest["last_level_changed"] > 0  # the collision pass read vectors too
    assert 0 < largest[0] <= max(block, sample) < n
    assert read_total[0] == n


def test_traced_memory_is_a_fraction_of_the_matrix(tmp_path):
    """Python-side peak (tracemalloc traces numpy's buffers; memory maps are the OS page cache) of a 200,000 x 64
    run stays under 1/8 of the matrix (measured: about 1/20)."""
    n, d = 200000, 64  # 48.8 MiB of float32
    rng = np.random.default_rng(0)
    folder = tmp_path / "emb"
    folder.mkdir()
    for i in range(4):
        np.save(folder / f"part-{i}.npy", rng.standard_normal((n // 4, d)).astype(np.float32))
    settings = {"num_levels": 3, "codebook_size": 16, "sample_size": 2048, "seed": 0, "niter": 5,
                "block_rows": 4096, "partition_rows": 10000}
    write_shards(tmp_path / "warm", vectors(n=600, d=d), bounds=[(0, 600)])  # imports and caches before tracing
    tokenize_shards([tmp_path / "warm"], tmp_path / "warm-out", **settings)
    tracemalloc.start()
    try:
        tokenize_shards([folder], tmp_path / "out", **settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * d * 4 / 8, f"traced peak {peak / 2**20:.1f} MiB for a {n * d * 4 / 2**20:.1f} MiB matrix"


def _ray_or_skip():
    try:
        import ray  # noqa: F401
    except Exception as exc:  # ImportError, or ray 2.6.3 failing on numpy 2 / setuptools >= 81
        pytest.skip(f"ray cannot be imported here ({type(exc).__name__}: {exc}); RecBole's ray 2.6.3 needs "
                    f"setuptools<81 and numpy<2")
    return ray


def test_ray_gives_the_same_files(tmp_path):
    ray = _ray_or_skip()
    x = vectors()
    shards = write_shards(tmp_path / "emb", x)
    single = tokenize_shards([shards], tmp_path / "single", num_levels=3, codebook_size=16, **SMALL)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with_ray = tokenize_shards([shards], tmp_path / "ray", num_levels=3, codebook_size=16, ray=True, **SMALL)
        # a bad shard fails inside a task: the DataError (naming the file) comes back as itself
        bad = x.copy()
        bad[1500] = np.nan
        bad_shards = write_shards(tmp_path / "bad", bad)
        with pytest.raises(DataError, match=r"part-1\.npy: 1 rows contain NaN or Inf \(rows 500 "):
            tokenize_shards([bad_shards], tmp_path / "bad-out", num_levels=3, codebook_size=16, sample_size=16,
                            ray=True, **SMALL)
    finally:
        ray.shutdown()
    assert with_ray["assignment"] == "ray (local)"
    for name in single["files"] + ["items.codebooks.npy"]:
        assert (tmp_path / "single" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name


def test_parquet_shards_equal_npy(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed: parquet shards are not tested here")
    import pyarrow.parquet as pq

    x = vectors()
    folder = tmp_path / "pq"
    folder.mkdir()
    for i, (a, b) in enumerate(BOUNDS):
        table = pa.table({"item_id": [f"item{r}" for r in range(a, b)],
                          "item_emb": pa.array(list(x[a:b]), type=pa.list_(pa.float32()))})
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=300)
    tokenize_shards([folder], tmp_path / "out", num_levels=3, codebook_size=16, **SMALL)
    ids, codes = read_sid_shards(tmp_path / "out")
    assert ids == [f"item{r}" for r in range(N)]
    np.testing.assert_array_equal(codes, in_memory(x, 3, 16)[0])
    with pytest.raises(DataError, match=r"part-0\.parquet: no vector column 'vec'"):
        tokenize_shards([folder], tmp_path / "out2", num_levels=3, codebook_size=16, vector_column="vec")


def test_parquet_without_pyarrow_names_the_package(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.split(".")[0] == "pyarrow":
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    shard = tmp_path / "items.parquet"
    shard.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"items\.parquet: reading parquet shards needs the pyarrow package"):
        tokenize_shards([shard], tmp_path / "out", num_levels=2, codebook_size=4)


def _error(tmp_path, inputs, match, **kwargs):
    kwargs = {"num_levels": 2, "codebook_size": 4, "seed": 0, "niter": 3, **kwargs}
    with pytest.raises(DataError, match=match):
        tokenize_shards(inputs, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging folder left


def test_bad_inputs_name_the_file(tmp_path):
    x = vectors(n=600, d=4)
    good = tmp_path / "good.npy"
    np.save(good, x[:300])
    other_dim = tmp_path / "dim.npy"
    np.save(other_dim, x[:50, :3])
    _error(tmp_path, [good, other_dim], r"dim\.npy: vectors of dimension 3, but .*good\.npy has 4")
    flat = tmp_path / "flat.npy"
    np.save(flat, x[:10, 0])
    _error(tmp_path, [flat], r"flat\.npy: expected a 2-D array")
    text = tmp_path / "words.npy"
    np.save(text, np.array([["a", "b"]]))
    _error(tmp_path, [text], r"words\.npy: expected real numbers")
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not a numpy file")
    _error(tmp_path, [broken], r"broken\.npy: not a readable \.npy array")
    _error(tmp_path, [tmp_path / "missing.npy"], r"missing\.npy: no such file or folder")
    csv = tmp_path / "vectors.csv"
    csv.write_text("1,2\n")
    _error(tmp_path, [csv], r"vectors\.csv: not a \.npy or \.parquet shard")
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    _error(tmp_path, [empty_dir], r"nothing: a folder without \.npy or \.parquet shards")

    ids_dir = tmp_path / "ids"
    ids_dir.mkdir()
    np.save(ids_dir / "a.npy", x[:300])
    (ids_dir / "a.ids.txt").write_text("".join(f"i{r}\n" for r in range(299)))
    _error(tmp_path, [ids_dir], r"a\.ids\.txt: 299 ids for the 300 rows of .*a\.npy")
    (ids_dir / "a.ids.txt").write_text("".join(f"i{r}\n" for r in range(300)))
    np.save(ids_dir / "b.npy", x[300:])
    _error(tmp_path, [ids_dir], r"b\.npy: no b\.ids\.txt beside it")


def test_nan_rows_found_while_streaming_leave_nothing_behind(tmp_path):
    """A NaN row outside the sample is found by the assignment pass, after work was staged: nothing is kept."""
    x = vectors(n=600, d=4)
    x[450] = np.inf
    folder = write_shards(tmp_path / "emb", x, bounds=[(0, 300), (300, 600)], ids=False)
    _error(tmp_path, [folder], r"part-1\.npy: 1 rows contain NaN or Inf \(rows 150 of that file\)", sample_size=16,
           block_rows=64)
    _error(tmp_path, [folder], r"1 sampled rows contain NaN or Inf: .*part-1\.npy row 150", sample_size=600)


def test_cli(tmp_path, capsys):
    x = vectors(n=600, d=8)
    folder = write_shards(tmp_path / "emb", x, bounds=[(0, 250), (250, 600)])
    out = tmp_path / "sids"
    argv = ["--embeddings", str(folder), "--out", str(out), "--levels", "2", "--codebook-size", "16",
            "--kmeans-iters", "5", "--block-rows", "100"]
    assert tokenize_main(argv) == 0
    assert "600 items, 2 SID file(s)" in capsys.readouterr().out
    ids, codes = read_sid_shards(out)
    assert len(ids) == 600 and codes.shape[1] == 3
    assert tokenize_main(argv) == 2  # the output exists
    assert "already exists" in capsys.readouterr().err
    assert tokenize_main(argv + ["--overwrite", "--name", "v2"]) == 0
    assert sorted(p.name for p in out.iterdir())[0] == "v2-00000.itemsid"
    x[10, 3] = np.nan
    np.save(folder / "part-0.npy", x[:250])
    assert tokenize_main(argv + ["--overwrite", "--sample-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "part-0.npy" in err and "NaN" in err
    assert (out / "v2-00000.itemsid").is_file()  # the failed run kept the previous output
