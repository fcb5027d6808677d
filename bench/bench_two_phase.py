"""Whole-run wall time of SID models (phase 1 tokenizer + phase 2 head), side by side in one invocation.

    OMP_NUM_THREADS=1 python bench/bench_two_phase.py --data-path dataset --dataset ml-100k \
        [--models DAS LETTER RQVAE] [--set epochs=50 ...] [--out results/bench_two_phase.md]

Each model runs in its own process, one after the other, through the plugin's runner with its yaml defaults and
the same overrides: ``wall`` is the child's whole run (data loading, phase 1, phase 2 with RecBole's early
stopping, test evaluation); ``phase 1`` the tokenizer; ``phase 2`` RecBole's training loop with its validations.
Target (issue 11): DAS's whole run at most 1.5x LETTER's (``QuantAlign`` before).
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

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
from recbole_sid.quick_start import run_recbole
model, dataset, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = run_recbole(model=model, dataset=dataset, config_dict=cfg, cmd_args=[])
print("BENCH", json.dumps({"wall": time.perf_counter() - start, "phase1": r.get("tokenizer_seconds", 0.0),
                           "fit": r["train_seconds"], "epochs": r["epochs_run"],
                           "recall": float(r["test_result"]["recall@10"]),
                           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-path", default="dataset")
    parser.add_argument("--models", nargs="*", default=["DAS", "LETTER", "RQVAE"])
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every model")
    parser.add_argument("--out", default=None)
    parser.add_argument("--note", default="", help="free text recorded with the results (e.g. machine load)")
    args = parser.parse_args(argv)

    from recbole_sid.leaderboard import dataset_config, parse_set

    cfg = dataset_config(args.dataset, args.data_path)
    cfg.update({"seed": args.seed, "show_progress": False, "sid_export": False,
                "checkpoint_dir": f"saved/bench_two_phase/{args.dataset}"})
    cfg.update(parse_set(args.set))
    rows = {}
    for model in args.models:
        out = subprocess.run([sys.executable, "-c", CHILD, model, args.dataset, json.dumps(cfg)], capture_output=True,
                             text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if line is None:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{model} failed")
        rows[model] = json.loads(line[6:])
        print(model, rows[model], flush=True)
    base = rows.get("LETTER")
    lines = [f"# Whole-run wall time of SID models ({args.dataset})", "",
             f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} python bench/bench_two_phase.py "
             f"--data-path {args.data_path} --dataset {args.dataset} --models {' '.join(args.models)}"
             + (f" --set {' '.join(args.set)}" if args.set else "") + f"` on {platform.machine()}, "
             f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, seed {args.seed}; each model in its own process, "
             f"one after the other, yaml defaults; phase 2 = RecBole's loop with its validations (early stopping). "
             f"{args.note}", "",
             "| model | wall s | phase 1 s | phase 2 s | phase-2 epochs | test recall@10 | peak RSS MB | wall x LETTER |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, r in rows.items():
        ratio = f"{r['wall'] / base['wall']:.2f}" if base else "—"
        lines.append(f"| {model} | {r['wall']:.0f} | {r['phase1']:.0f} | {r['fit'] - r['phase1']:.0f} | {r['epochs']} "
                     f"| {r['recall']:.4f} | {r['peak_rss_mb']:.0f} | {ratio} |")
    out = Path(args.out or f"results/bench_two_phase_{args.dataset}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
