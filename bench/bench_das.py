"""DAS seconds per training epoch and peak memory against LightGCN's, same data, same machine, same run.

    python bench/bench_das.py [--dataset ml-100k] [--data-path dataset] [--epochs 3] [--models DAS LightGCN]

Each model trains in its own process (so peak RSS is its own) through the plugin's runner; the epoch time is
the mean wall time of RecBole's training epochs (evaluation excluded). Writes results/bench_das.md.
Target (issue 5): DAS <= 2x LightGCN's epoch time.
"""
import argparse
import os
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys
from recbole_sid.quick_start import run_recbole
model, dataset, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = run_recbole(model=model, dataset=dataset, config_dict=cfg, cmd_args=[], saved=False)
print("BENCH", json.dumps({"epoch_seconds": r["epoch_seconds"],
                           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-path", default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--models", nargs="*", default=["DAS", "LightGCN"])
    p.add_argument("--out", default="results/bench_das.md")
    p.add_argument("--note", default="", help="free text recorded with the results (e.g. machine load)")
    args = p.parse_args()
    cfg = {"epochs": args.epochs, "show_progress": False, "eval_step": args.epochs + 1, "sid_export": False}
    if args.data_path:
        cfg["data_path"] = args.data_path
    rows = []
    for model in args.models:
        out = subprocess.run([sys.executable, "-c", CHILD, model, args.dataset, json.dumps(cfg)],
                             capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if line is None:
            print(out.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{model} failed")
        rec = json.loads(line[6:])
        epochs = rec["epoch_seconds"]
        steady = epochs[1:] or epochs  # the first epoch includes one-off warm-up
        rows.append((model, sum(steady) / len(steady), min(epochs), rec["peak_rss_mb"]))
        print(model, rows[-1], flush=True)
    base = dict((m, s) for m, s, _, _ in rows).get("LightGCN")
    lines = [f"# DAS vs LightGCN: seconds per training epoch and peak memory ({args.dataset})", "",
             f"`python bench/bench_das.py --dataset {args.dataset} --epochs {args.epochs}` on "
             f"{platform.machine()} ({platform.processor() or 'cpu'}), {time.strftime('%Y-%m-%d')}; each model in its "
             f"own process; epoch time = mean of epochs 2..{args.epochs} (evaluation excluded); "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. {args.note}", "",
             "| model | s / epoch | fastest epoch | peak RSS MB | x LightGCN |", "|---|---:|---:|---:|---:|"]
    for model, mean, fastest, rss in rows:
        ratio = f"{mean / base:.2f}" if base else "—"
        lines.append(f"| {model} | {mean:.2f} | {fastest:.2f} | {rss:.0f} | {ratio} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
