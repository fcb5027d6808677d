"""Benchmark: greedy residual assignment, ``recbole_sid.quantization.assign_residual`` against faiss.

Both assign N vectors of dimension d to the SAME codebooks (3 levels x 256 codes, fitted once per d with
``residual_kmeans`` on a sample), greedily: ``faiss.ResidualQuantizer`` is configured with ``max_beam_size = 1``
(its default beam of 5 is not greedy), its codebooks copied from ours and ``is_trained`` set, and encodes with
``compute_codes``, once with its default distance computation and once with ``use_beam_LUT = 1`` (look-up tables
of codebook inner products). Reported per (d, N, threads): seconds and items/s of each, the share of items whose L
codes agree, and the GFLOP/s implied by the assignment's matrix products (2 N K d per level) beside the machine's
fp32 GEMM throughput measured in the same process: the assignment's own shape (65536 x d @ d x 256) and
2048 x 2048 x 2048, each with numpy's ``matmul`` (OpenBLAS) and torch's ``mm`` (MKL / oneDNN; ``assign_residual``
runs on torch), the faster of the two being "the machine's GEMM". The 2048^3 GEMM is measured again right after
each configuration, so that both see the same load on a shared machine. Each thread count runs in its own process
with OMP/BLAS thread variables set, so that numpy's BLAS, torch and faiss' OpenMP all use that many threads.

    python bench/bench_assign_faiss.py --out results/bench_assign_faiss.md            # d 64/256/768, N 1e5/1e6,
                                                                                      # 1 and 2 threads
    python bench/bench_assign_faiss.py --dims 64 --sizes 2000 --threads 1 --out /tmp/tiny.md   # a tiny check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gemm_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> dict:
    """fp32 GFLOP/s of an (m x k) @ (k x n) product, repeated for about ``seconds``, with numpy's ``matmul`` and
    torch's ``mm``: ``{"numpy": .., "torch": .., "best": ..}``."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    out = {}
    for name, product in (("numpy", lambda: a @ b), ("torch", lambda: torch.mm(at, bt))):
        product()  # warm-up
        runs, start = 0, time.perf_counter()
        while True:
            product()
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                out[name] = 2.0 * m * k * n * runs / elapsed / 1e9
                break
    out["best"] = max(out["numpy"], out["torch"])
    return out


def unpack_codes(packed, levels: int, nbits: int):
    """faiss' bit-packed codes (little-endian bit string, ``nbits`` per level) -> int64 [N, levels]."""
    import numpy as np

    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, :levels * nbits]
    weights = (1 << np.arange(nbits, dtype=np.int64))
    return bits.reshape(len(packed), levels, nbits).astype(np.int64) @ weights


def child(args) -> list[dict]:
    """Every (d, N) at this process's thread count; returns one record per configuration."""
    import faiss
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    torch.set_num_threads(args.threads)
    from recbole_sid.quantization import assign_residual, residual_kmeans

    faiss.omp_set_num_threads(args.threads)
    levels, k = args.levels, args.codebook_size
    nbits = k.bit_length() - 1
    if 1 << nbits != k:
        raise SystemExit("--codebook-size must be a power of two (faiss stores nbits per level)")
    records = []
    for d in args.dims:
        rng = np.random.default_rng(d)
        centers = rng.standard_normal((1000, d), dtype=np.float32)
        fit = centers[rng.integers(0, 1000, args.fit_rows)] + 0.3 * rng.standard_normal((args.fit_rows, d),
                                                                                        dtype=np.float32)
        _, codebooks = residual_kmeans(fit, levels, k, seed=0, niter=args.kmeans_iters, use_gpu=False)
        gemm_shape = gemm_gflops(65536, d, k)
        rq = faiss.ResidualQuantizer(d, levels, nbits)
        rq.max_beam_size = 1  # greedy; faiss' default beam is 5
        rq.train_type = faiss.ResidualQuantizer.Train_default
        faiss.copy_array_to_vector(np.concatenate(codebooks).ravel().astype(np.float32), rq.codebooks)
        rq.is_trained = True
        for n in args.sizes:
            x = centers[rng.integers(0, 1000, n)] + 0.3 * rng.standard_normal((n, d), dtype=np.float32)
            timings = {}
            start = time.perf_counter()
            ours = assign_residual(x, codebooks)
            timings["assign_residual"] = time.perf_counter() - start
            rq.use_beam_LUT = 0
            start = time.perf_counter()
            theirs = unpack_codes(rq.compute_codes(x), levels, nbits)
            timings["faiss"] = time.perf_counter() - start
            rq.use_beam_LUT = 1
            rq.compute_codebook_tables()
            start = time.perf_counter()
            theirs_lut = unpack_codes(rq.compute_codes(x), levels, nbits)
            timings["faiss_lut"] = time.perf_counter() - start
            flops = 2.0 * n * k * d * levels
            gemm_square = gemm_gflops(2048, 2048, 2048)  # right after this configuration: the same load
            records.append({
                "d": d, "n": n, "threads": args.threads, **{f"{key}_s": value for key, value in timings.items()},
                "agree": float((ours == theirs).all(axis=1).mean()),
                "agree_lut": float((ours == theirs_lut).all(axis=1).mean()),
                "assign_gflops": flops / timings["assign_residual"] / 1e9,
                "gemm_shape_gflops": gemm_shape["best"], "gemm_square_gflops": gemm_square["best"],
                "gemm_square_numpy_gflops": gemm_square["numpy"], "gemm_square_torch_gflops": gemm_square["torch"],
                "share_of_gemm": flops / timings["assign_residual"] / 1e9 / gemm_square["best"],
            })
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    return records


def markdown(records, args) -> str:
    lines = [
        "# Greedy residual assignment: `assign_residual` vs `faiss.ResidualQuantizer` (max_beam_size = 1)",
        "",
        f"`python bench/bench_assign_faiss.py {' '.join(sys.argv[1:])}` on {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} CPUs, Python {platform.python_version()}; {args.levels} levels x {args.codebook_size} "
        f"codes, the same codebooks for both (residual k-means on {args.fit_rows} rows). faiss LUT: "
        f"`use_beam_LUT = 1`. GFLOP/s of the assignment: 2 N K d L / time. GEMM: the faster of numpy's matmul and "
        f"torch's mm, fp32, in the same process and thread count, of the assignment's shape (65536 x d @ d x K) and "
        f"2048^3 (measured right after each row's assignment; numpy / torch in brackets). Share: assignment GFLOP/s "
        f"over the 2048^3 GEMM's.",
        "",
        "| d | N | threads | assign_residual s | items/s | faiss s | faiss LUT s | faiss / ours | codes agree "
        "| assign GFLOP/s | GEMM GFLOP/s (shape) | GEMM GFLOP/s (2048^3; numpy / torch) | share of GEMM |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(records, key=lambda r: (r["d"], r["n"], r["threads"])):
        lines.append(
            f"| {r['d']} | {r['n']:,} | {r['threads']} | {r['assign_residual_s']:.3f} | "
            f"{r['n'] / r['assign_residual_s']:,.0f} | {r['faiss_s']:.3f} | {r['faiss_lut_s']:.3f} | "
            f"{r['faiss_s'] / r['assign_residual_s']:.2f}x | {r['agree']:.4%} / {r['agree_lut']:.4%} | "
            f"{r['assign_gflops']:.1f} | {r['gemm_shape_gflops']:.1f} | {r['gemm_square_gflops']:.1f} "
            f"({r['gemm_square_numpy_gflops']:.0f} / {r['gemm_square_torch_gflops']:.0f}) | {r['share_of_gemm']:.0%} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256, 768])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--fit-rows", type=int, default=20_000, help="rows the codebooks are fitted on")
    parser.add_argument("--kmeans-iters", type=int, default=10)
    parser.add_argument("--out", required=True, help="markdown results file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.threads = args.threads[0]
        print(json.dumps(child(args)))
        return 0
    records = []
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, __file__, "--child", "--threads", str(threads), "--dims", *map(str, args.dims),
               "--sizes", *map(str, args.sizes), "--levels", str(args.levels), "--codebook-size",
               str(args.codebook_size), "--fit-rows", str(args.fit_rows), "--kmeans-iters", str(args.kmeans_iters),
               "--out", args.out]
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        records.extend(json.loads(out.stdout.strip().splitlines()[-1]))
    text = markdown(records, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
