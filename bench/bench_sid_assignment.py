"""Benchmark: SID assignment throughput and memory of greedy residual assignment (run by hand, not in tests).

Times ``assign_residual`` (numpy) and ``ResidualQuantizer.encode`` (torch) for 3 levels x 256 codes over a grid of
N items x D dims, and reports items/s, the FLOPs the assignment implies (2 * N * K * D per level: the r @ E^T
product; the rest is O(N * (K + D))), the achieved GFLOP/s, and the peak RSS increase of the call. Each
configuration runs in a fresh subprocess so peak RSS (``resource.getrusage``) belongs to that configuration alone.
Memory must grow with N only through the inputs and the [N, L] codes; the distance matrices are batch x K.

    python bench/bench_sid_assignment.py            # full grid, writes results/bench_sid_assignment.md
    python bench/bench_sid_assignment.py --quick    # N in 1e4, 1e5 and D in 64, 256
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEVELS, K = 3, 256
FULL_GRID = [(n, d) for n in (10_000, 100_000, 1_000_000) for d in (64, 256, 768)]
QUICK_GRID = [(n, d) for n in (10_000, 100_000) for d in (64, 256)]
METHODS = ("assign_residual", "ResidualQuantizer.encode")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(n: int, d: int, method: str, batch_size: int) -> dict:
    """One configuration, in its own process; prints one JSON line."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from recbole_sid.quantization import ResidualQuantizer, assign_residual

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    codebooks = [rng.standard_normal((K, d), dtype=np.float32) * 0.5 ** level for level in range(LEVELS)]
    if method == "assign_residual":
        def run(rows):
            return assign_residual(rows, codebooks, batch_size=batch_size)
        data = x
    else:
        rq = ResidualQuantizer(num_levels=LEVELS, codebook_size=K, dim=d, kmeans_init=False)
        with torch.no_grad():
            for cb, w in zip(rq.codebooks, codebooks):
                cb.weight.copy_(torch.from_numpy(w))
        rq.eval()
        data = torch.from_numpy(x)  # shares memory with x

        def run(rows):
            return rq.encode(rows, batch_size=batch_size)
    run(data[:2000])  # warm-up: BLAS threads, allocator
    rss_before = _rss_mb()
    best, repeats, spent = float("inf"), 0, 0.0
    while repeats < 3 and (repeats == 0 or spent < 2.0):
        start = time.perf_counter()
        codes = run(data)
        elapsed = time.perf_counter() - start
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
        del codes
    peak = _peak_rss_mb()
    flops = 2.0 * n * K * d * LEVELS
    return {"n": n, "d": d, "method": method, "seconds": best, "repeats": repeats, "items_per_s": n / best,
            "gflop": flops / 1e9, "gflops": flops / best / 1e9, "x_mb": x.nbytes / 2 ** 20,
            "rss_before_mb": rss_before, "peak_rss_mb": peak, "extra_peak_mb": max(0.0, peak - rss_before),
            "nkd_mb": n * K * d * 4 / 2 ** 20, "torch_threads": torch.get_num_threads()}


def _fmt_bytes_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def write_markdown(rows: list, path: Path, batch_size: int, wall: float, quick: bool) -> str:
    load = os.getloadavg()
    lines = [
        "# SID assignment benchmark",
        "",
        f"`python bench/bench_sid_assignment.py{' --quick' if quick else ''}` - greedy residual assignment, "
        f"{LEVELS} levels x {K} codes, batch_size={batch_size}, float32, CPU.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch threads {rows[0]['torch_threads'] if rows else '?'}, Python {platform.python_version()}; "
        f"load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (the machine is shared, so "
        f"throughput is indicative). Whole run: {wall:.0f} s.",
        "",
        "FLOP count = 2 x N x K x D per level (the batch x D by D x K product), x 3 levels. "
        "Extra peak RSS = peak RSS of the process minus its RSS just before the timed calls (x, the codebooks and "
        "the imports are already resident). For comparison, one N x K x D float32 tensor would need the size in the "
        "last column.",
        "",
        "| method | N | D | time (s) | items/s | GFLOP | GFLOP/s | x size | extra peak RSS | N x K x D tensor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['n']:,} | {r['d']} | {r['seconds']:.3f} | {r['items_per_s']:,.0f} | "
                     f"{r['gflop']:.0f} | {r['gflops']:.1f} | {_fmt_bytes_mb(r['x_mb'])} | "
                     f"{_fmt_bytes_mb(r['extra_peak_mb'])} | {_fmt_bytes_mb(r['nkd_mb'])} |")
    lines += ["", "Memory in N (same D): extra peak RSS per configuration.", ""]
    by_d = {}
    for r in rows:
        by_d.setdefault((r["method"], r["d"]), []).append(r)
    for (method, d), rs in sorted(by_d.items()):
        if len(rs) > 1:
            seq = ", ".join(f"N={r['n']:,}: {_fmt_bytes_mb(r['extra_peak_mb'])}" for r in rs)
            lines.append(f"- {method}, D={d}: {seq}")
    lines += ["",
              "Reading: the extra memory is the per-batch working set (batch x (K + 2D) floats: distances, the "
              "residual copy, the gathered code vectors), constant in N, plus the [N, 3] int64 codes (24 bytes per "
              "item), so it grows linearly in N and never approaches N x K x D.", ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small grid: N in 1e4, 1e5; D in 64, 256")
    p.add_argument("--out", default=str(REPO / "results" / "bench_sid_assignment.md"))
    p.add_argument("--batch-size", type=int, default=65536)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    p.add_argument("--child", nargs=3, metavar=("N", "D", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        n, d, method = int(args.child[0]), int(args.child[1]), args.child[2]
        print(json.dumps(child(n, d, method, args.batch_size)))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    grid = QUICK_GRID if args.quick else FULL_GRID
    rows, start = [], time.perf_counter()
    for n, d in grid:
        for method in methods:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), str(d), method,
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True)
            if out.returncode:
                print(f"N={n} D={d} {method}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{method:>26}  N={n:>9,}  D={d:>3}  {r['seconds']:8.3f} s  {r['items_per_s']:>12,.0f} items/s  "
                  f"{r['gflops']:6.1f} GFLOP/s  extra peak RSS {_fmt_bytes_mb(r['extra_peak_mb'])}", flush=True)
    wall = time.perf_counter() - start
    write_markdown(rows, Path(args.out), args.batch_size, wall, args.quick)
    print(f"wrote {args.out} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
