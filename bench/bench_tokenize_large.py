"""Benchmark: large-catalogue tokenizing (``python -m recbole_sid.tokenize --embeddings``), one process and local Ray.

Writes synthetic item vectors as ``.npy`` shards (clustered: 1,000 centres plus noise, generated shard by shard, so
the generator never holds the whole matrix), then runs the tokenize command once per mode in a subprocess and
reports wall time, items/s, the peak RSS of the whole process tree (sampled every 0.2 s with psutil: the command,
and for Ray its raylet and workers; the memory-mapped input counts where its pages are resident) and the SID
collision rates, and checks that every mode wrote the same SID files. Vector generation is not timed.

    python bench/bench_tokenize_large.py                         # 10^7 items x 64, single process and local Ray
    python bench/bench_tokenize_large.py --items 20000 --shard-rows 5000 --modes single --out /tmp/tiny.md  # tiny

Disk: the input (items x dim x 4 bytes: 2.4 GiB at the default size), per mode the SID text (about 30 bytes per
item) and, while a mode runs, its staging folder (codes and partition spill, about 30 bytes per item at L = 3).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_shards(folder: Path, items: int, dim: int, shard_rows: int, seed: int = 0) -> list[Path]:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    paths = []
    for index, start in enumerate(range(0, items, shard_rows)):
        rows = min(shard_rows, items - start)
        path = folder / f"part-{index:05d}.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
        for lo in range(0, rows, 1 << 18):  # 262,144 rows at a time
            hi = min(rows, lo + (1 << 18))
            out[lo:hi] = centres[rng.integers(0, 1000, hi - lo)] + 0.3 * rng.standard_normal((hi - lo, dim),
                                                                                              dtype=np.float32)
        out.flush()
        del out
        paths.append(path)
    return paths


def tree_rss_mb(proc) -> float:
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2 ** 20


def run_mode(mode: str, args, emb: Path, out: Path) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "recbole_sid.tokenize", "--embeddings", str(emb), "--out", str(out),
           "--levels", str(args.levels), "--codebook-size", str(args.codebook_size), "--seed", "0",
           "--overwrite"]
    if args.sample_size:
        cmd += ["--sample-size", str(args.sample_size)]
    if args.block_rows:
        cmd += ["--block-rows", str(args.block_rows)]
    if mode == "ray":
        cmd += ["--ray"] + (["--ray-num-cpus", str(args.ray_num_cpus)] if args.ray_num_cpus else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(watched))
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{mode}: tokenize failed ({proc.returncode}):\n{stderr[-3000:]}")
    manifest = json.loads((out / "items.sid_manifest.json").read_text())
    digest = hashlib.sha256()
    for name in manifest["files"]:
        with open(out / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return {"mode": mode, "seconds": seconds, "peak_rss_mb": peak, "items_per_s": manifest["items"] / seconds,
            "stages": manifest["seconds"], "collision_rate_greedy": manifest["collision_rate_greedy"],
            "collision_rate": manifest["collision_rate"], "dedup_size": manifest["dedup_size"],
            "sha256": digest.hexdigest()}


def markdown(results, args, input_gib: float) -> str:
    same = len({r["sha256"] for r in results}) == 1
    lines = [
        "# Large-catalogue tokenizing: one process vs local Ray",
        "",
        f"`python bench/bench_tokenize_large.py {' '.join(sys.argv[1:])}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}: {args.items:,} synthetic items x {args.dim} "
        f"(1,000 clusters) in .npy shards of {args.shard_rows:,} rows ({input_gib:.2f} GiB), {args.levels} levels x "
        f"{args.codebook_size} codes, sample {args.sample_size or 256 * args.codebook_size:,}, OMP_NUM_THREADS="
        f"{args.threads}. Peak RSS: the whole process tree (Ray: raylet, workers), resident pages of the "
        f"memory-mapped input included. Same SID files in every mode: {'yes' if same else 'NO'}.",
        "",
        "| mode | wall s | items/s | peak RSS MiB | codebooks s | assign s | collisions s | write s | collision rate "
        "(greedy / final) | dedup size |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s = r["stages"]
        lines.append(f"| {r['mode']} | {r['seconds']:.1f} | {r['items_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | "
                     f"{s['codebooks_s']:.1f} | {s['assign_s']:.1f} | {s['collisions_s']:.1f} | {s['write_s']:.1f} | "
                     f"{r['collision_rate_greedy']:.4f} / {r['collision_rate']:.4f} | {r['dedup_size']} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--sample-size", type=int, default=None, help="default: the tokenizer's (256 x K)")
    parser.add_argument("--block-rows", type=int, default=None, help="default: the tokenizer's (65536)")
    parser.add_argument("--modes", nargs="+", choices=("single", "ray"), default=["single", "ray"])
    parser.add_argument("--ray-num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the command (default 1)")
    parser.add_argument("--workdir", default=None, help="where shards and outputs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", default=str(REPO / "results" / "bench_tokenize_large.md"))
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_tokenize_large."))
    try:
        emb = workdir / "emb"
        if not emb.is_dir() or not any(emb.glob("*.npy")):
            start = time.perf_counter()
            write_shards(emb, args.items, args.dim, args.shard_rows)
            print(f"wrote {args.items:,} x {args.dim} in {time.perf_counter() - start:.1f}s to {emb}", flush=True)
        results = []
        for mode in args.modes:
            result = run_mode(mode, args, emb, workdir / f"out-{mode}")
            print(json.dumps(result), flush=True)
            results.append(result)
            shutil.rmtree(workdir / f"out-{mode}", ignore_errors=True)
        input_gib = sum(p.stat().st_size for p in emb.glob("*.npy")) / 2 ** 30
        text = markdown(results, args, input_gib)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(text)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
