"""COINS vs DeepFM on ml-100k: seconds per training epoch, model init time, peak memory; and one cold-split run.

    python bench/bench_coins.py [--epochs 5] [--repeats 2] [--cold-epochs 20] [--seeds 2020 ...] [--no-cold]
                                [--threads 1] [--workdir DIR] [--out results/bench_coins.md]

Speed: RecBole's ml-100k context-aware setup (embedded copy, RS 8:1:1, labeled, threshold rating >= 4), each
(model, repeat) in a fresh subprocess, models interleaved so that both see the same machine load. Seconds per epoch =
median of the training-epoch wall times (evaluation excluded; first epoch dropped when there are more than 2).
Init = model construction (COINS: semantic embeddings + RQ-OPQ codes). Peak RSS = the process's ``ru_maxrss``;
"RSS before model" is taken after the dataset is loaded, so the difference is what the model and its training add.
Every child runs with ``--threads`` torch / OpenMP threads (default 1: on a shared machine multi-threaded torch and
faiss mostly measure the neighbours' load).

Cold split: ``python -m dataset_prep ml-100k --out WORKDIR/data --cold-ratio 0.1`` (seed 2020), then both models
with ``benchmark_filename: [train, valid, test]``, for each of ``--seeds`` (model init / training seed; the split
is fixed), early stopping on valid AUC; AUC / LogLoss on all, warm and cold test rows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import rss_mb

REPO = Path(__file__).resolve().parents[1]
MODELS = ("DeepFM", "COINS")


def speed_worker(model_name: str, epochs: int, workdir: Path) -> dict:
    import torch  # noqa: F401
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    from recbole_sid.quick_start import _time_training_epochs, build_config
    from recbole_sid.utils import get_trainer

    os.chdir(workdir)
    config = build_config(model_name, "ml-100k", config_dict={"epochs": epochs, "show_progress": False,
                                                              "stopping_step": epochs + 1}, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train, valid, _ = data_preparation(config, dataset)
    rss_before = rss_mb()
    init_seed(config["seed"], config["reproducibility"])
    t0 = time.perf_counter()
    model = config.model_class(config, train._dataset)
    init_s = time.perf_counter() - t0
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_s: list = []
    _time_training_epochs(trainer, epoch_s)
    trainer.fit(train, valid, saved=False, show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model_name, "init_s": init_s, "epoch_s": epoch_s, "rss_before_model_mb": rss_before,
            "peak_rss_mb": peak, "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "torch_threads": __import__("torch").get_num_threads()}


def cold_worker(model_name: str, epochs: int, workdir: Path, seed: int = 2020) -> dict:
    from recbole_sid.quick_start import run_recbole

    os.chdir(workdir)
    config_dict = {"data_path": str(workdir / "data"), "benchmark_filename": ["train", "valid", "test"],
                   "epochs": epochs, "show_progress": False, "seed": seed}
    result = run_recbole(model=model_name, dataset="ml-100k", config_dict=config_dict, cmd_args=[], saved=True)
    keep = ("best_valid_result", "test_result", "test_result_warm", "test_result_cold", "test_rows_warm",
            "test_rows_cold", "epochs_run", "train_seconds")
    return {"model": model_name, "seed": seed, **{k: result.get(k) for k in keep}}


def _child(kind: str, model: str, epochs: int, workdir: Path, threads: int, seed: int = 2020) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--model", model, "--epochs", str(epochs),
           "--workdir", str(workdir), "--threads", str(threads), "--seed", str(seed)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_epoch(epoch_s: list) -> float:
    times = epoch_s[1:] if len(epoch_s) > 2 else epoch_s
    return statistics.median(times)


def _fmt(result: dict | None) -> str:
    if not result:
        return "n/a"
    return f"{float(result['auc']):.4f} / {float(result['logloss']):.4f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per speed run")
    parser.add_argument("--repeats", type=int, default=2, help="speed runs per model (interleaved)")
    parser.add_argument("--cold-epochs", type=int, default=20, help="max epochs of the cold-split runs")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020], help="seeds of the cold-split runs")
    parser.add_argument("--seed", type=int, default=2020, help=argparse.SUPPRESS)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-split comparison")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(REPO / "results" / "bench_coins.md"))
    parser.add_argument("--child", choices=["speed", "cold"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        import torch

        import recbole_sid  # noqa: F401

        torch.set_num_threads(args.threads)
        if args.child == "speed":
            out = speed_worker(args.model, args.epochs, Path(args.workdir))
        else:
            out = cold_worker(args.model, args.epochs, Path(args.workdir), args.seed)
        print(json.dumps(out, default=float))
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_coins_"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    speed: dict = {m: [] for m in MODELS}
    for _ in range(args.repeats):
        for model in MODELS:
            speed[model].append(_child("speed", model, args.epochs, workdir, args.threads))
            print(f"speed {model}: {speed[model][-1]['epoch_s']}", file=sys.stderr)

    cold = {}
    cold_cmds = []
    if not args.no_cold:
        sys.path.insert(0, str(REPO))
        from dataset_prep import prepare_ml100k

        prepare_ml100k(workdir / "data", cold_ratio=0.1, seed=2020, overwrite=True, log=lambda *a, **k: None)
        cold_cmds.append(f"python -m dataset_prep ml-100k --out {workdir / 'data'} --cold-ratio 0.1")
        for seed in args.seeds:
            for model in MODELS:
                cold[(model, seed)] = _child("cold", model, args.cold_epochs, workdir, args.threads, seed)
                print(f"cold {model} seed {seed}: {cold[(model, seed)]['test_result']}", file=sys.stderr)
                cold_cmds.append(f"OMP_NUM_THREADS={args.threads} python -m recbole_sid --model={model} "
                                 f"--dataset=ml-100k --data_path={workdir / 'data'} "
                                 f"--benchmark_filename=\"['train','valid','test']\" --epochs={args.cold_epochs} "
                                 f"--seed={seed}")
    load_after = os.getloadavg()

    import numpy
    import torch

    lines = [
        "# bench_coins: COINS vs DeepFM on ml-100k", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {numpy.__version__}. Load average (1 min) before / after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f} (the machine is shared: timings are indicative).", "",
        f"Command: `python bench/bench_coins.py --epochs {args.epochs} --repeats {args.repeats} "
        f"--cold-epochs {args.cold_epochs} --seeds {' '.join(map(str, args.seeds))} --threads {args.threads}"
        f"{' --no-cold' if args.no_cold else ''}` "
        f"(every run: {args.threads} torch / OpenMP thread(s))", "",
        "## Speed and memory (RecBole ml-100k context-aware setup, batch 2048, defaults of each model's yaml)", "",
        "| model | s / epoch (median) | per-run medians | init s | params | RSS before model MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for model in MODELS:
        runs = speed[model]
        medians = [_median_epoch(r["epoch_s"]) for r in runs]
        summary[model] = statistics.median(medians)
        lines.append(f"| {model} | {summary[model]:.2f} | {', '.join(f'{m:.2f}' for m in medians)} | "
                     f"{statistics.median(r['init_s'] for r in runs):.2f} | {runs[0]['params']:,} | "
                     f"{statistics.median(r['rss_before_model_mb'] for r in runs):.0f} | "
                     f"{max(r['peak_rss_mb'] for r in runs):.0f} |")
    ratio = summary["COINS"] / summary["DeepFM"]
    lines += ["", f"COINS / DeepFM seconds per epoch: **{ratio:.2f}x** (target <= 1.5x).", ""]
    if cold:
        lines += [
            "## Cold split (10 % of items held out whole, split seed 2020), AUC / LogLoss on test rows", "",
            "| model | seed | all | warm | cold | best valid AUC | epochs run |", "|---|---|---|---|---|---|---|",
        ]
        for model in MODELS:
            for seed in args.seeds:
                r = cold[(model, seed)]
                lines.append(f"| {model} | {seed} | {_fmt(r['test_result'])} | {_fmt(r['test_result_warm'])} | "
                             f"{_fmt(r['test_result_cold'])} | {float(r['best_valid_result']['auc']):.4f} | "
                             f"{r['epochs_run']} |")
            if len(args.seeds) > 1:
                mean = {part: {m: statistics.mean(float(cold[(model, s)][part][m]) for s in args.seeds)
                               for m in ("auc", "logloss")}
                        for part in ("test_result", "test_result_warm", "test_result_cold")}
                lines.append(f"| {model} | mean | {_fmt(mean['test_result'])} | {_fmt(mean['test_result_warm'])} | "
                             f"{_fmt(mean['test_result_cold'])} | | |")
        any_r = next(iter(cold.values()))
        lines += ["", f"Test rows: {any_r['test_rows_warm']} warm, {any_r['test_rows_cold']} cold. The seed changes "
                      f"model init and batch order only (the split is fixed).", "", "Commands:", "",
                  *[f"    {c}" for c in cold_cmds], ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
