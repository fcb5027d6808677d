"""QBERT4Rec vs RecBole's BERT4Rec on the same data in one run: seconds per training epoch, model init, peak memory.

    python bench/bench_qbert4rec.py [--dataset ml-100k] [--data-path DIR] [--epochs 4] [--repeats 2] [--threads 1]
                                    [--use-gpu] [--workdir DIR] [--out results/bench_qbert4rec.md] [--key=value ...]

Run it by hand (a full ml-100k run takes minutes per model on one CPU thread). Every (model, repeat) runs in a fresh
subprocess, the two models interleaved so that both see the same machine load, with RecBole's sequential setup
(leave-one-out, full sort) and each model's yaml defaults (both: 2 layers, 2 heads, hidden 64, max length 50,
batch 2048). ``--key=value`` overrides go to both models (e.g. ``--MAX_ITEM_LIST_LENGTH=20``; a dataset of your own
needs ``--load_col="{'inter': ['user_id', 'item_id', 'timestamp']}"``).

* s / epoch: median wall time of the training epochs (evaluation is switched off: ``eval_step`` > epochs; the first
  epoch is dropped when there are more than 2). QBERT4Rec pretrains for the first half of the epochs
  (``qbert_pretrain_epochs = epochs // 2``, the mixed masks) and fine-tunes for the rest (tail mask); both phases are
  reported. BERT4Rec's epochs include RecBole's per-item Python masking (``MaskItemSequence``) in the dataloader.
* init s: model construction; for QBERT4Rec that is stages 1-2 (semantic embeddings, BPR-MF, injection, RQ-VAE).
* peak RSS: the process's ``ru_maxrss``; "RSS before model" is taken once the data is loaded. With ``--use-gpu`` also
  the peak CUDA memory allocated by torch from model construction to the end of training.
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
MODELS = ("BERT4Rec", "QBERT4Rec")


def worker(model_name: str, dataset: str, epochs: int, workdir: Path, overrides: dict, use_gpu: bool) -> dict:
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    from recbole_sid.quick_start import _time_training_epochs, build_config
    from recbole_sid.utils import get_trainer

    os.chdir(workdir)
    config_dict = {**overrides, "epochs": epochs, "show_progress": False, "eval_step": epochs + 1,
                   "stopping_step": epochs + 1, "use_gpu": use_gpu}
    if model_name == "QBERT4Rec":
        config_dict.setdefault("qbert_pretrain_epochs", epochs // 2)
    else:  # RecBole 1.2.1 refuses BERT4Rec's CE loss with its default sampled training negatives
        config_dict["train_neg_sample_args"] = None
    config = build_config(model_name, dataset, config_dict=config_dict, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    data = create_dataset(config)
    train, valid, _ = data_preparation(config, data)
    rss_before = rss_mb()
    cuda = torch.cuda.is_available() and config["device"].type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    init_seed(config["seed"], config["reproducibility"])
    t0 = time.perf_counter()
    model = config.model_class(config, train._dataset).to(config["device"])
    init_s = time.perf_counter() - t0
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_s: list = []
    _time_training_epochs(trainer, epoch_s)
    trainer.fit(train, valid, saved=False, show_progress=False)
    pretrain = int(config["qbert_pretrain_epochs"] or 0) if model_name == "QBERT4Rec" else 0
    return {"model": model_name, "init_s": init_s, "epoch_s": epoch_s, "pretrain_epochs": pretrain,
            "train_rows": len(train._dataset), "rss_before_model_mb": rss_before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
            "device": str(config["device"]), "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "torch_threads": torch.get_num_threads()}


def _child(model: str, args, rest: list) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--dataset", args.dataset, "--epochs",
           str(args.epochs), "--workdir", str(args.workdir), "--threads", str(args.threads), *rest]
    if args.data_path:
        cmd += ["--data-path", str(args.data_path)]
    if args.use_gpu:
        cmd.append("--use-gpu")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(times: list) -> float | None:
    if not times:
        return None
    return statistics.median(times[1:] if len(times) > 2 else times)


def _fmt(value, spec=".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-path", default=None, help="folder holding DATASET/ (ml-100k: the embedded copy)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per run (QBERT4Rec: half pretraining)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per model (interleaved)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads of every run")
    parser.add_argument("--use-gpu", action="store_true", help="let RecBole use the GPU (default: CPU)")
    parser.add_argument("--workdir", default=None, help="RecBole's log/ and saved/ go here (default: a temp dir)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench_qbert4rec.md"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    sys.path.insert(0, str(REPO))
    from recbole_sid.config import parse_cmd_args

    overrides = parse_cmd_args(rest)
    if args.data_path:
        overrides["data_path"] = str(Path(args.data_path).resolve())

    if args.child:
        import torch

        import recbole_sid  # noqa: F401

        torch.set_num_threads(args.threads)
        out = worker(args.model, args.dataset, args.epochs, Path(args.workdir), overrides, args.use_gpu)
        print(json.dumps(out, default=float))
        return 0

    args.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_qbert4rec_")).resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    runs: dict = {m: [] for m in MODELS}
    for _ in range(args.repeats):
        for model in MODELS:
            runs[model].append(_child(model, args, rest))
            print(f"{model}: epochs {[round(s, 2) for s in runs[model][-1]['epoch_s']]}", file=sys.stderr)
    load_after = os.getloadavg()

    import numpy
    import torch

    extra = " ".join(rest)
    lines = [
        f"# bench_qbert4rec: QBERT4Rec vs BERT4Rec on {args.dataset}", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {numpy.__version__}; device {runs[MODELS[0]][0]['device']}. Load average "
        f"(1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} (timings on a shared machine are "
        f"indicative).", "",
        f"Command: `python bench/bench_qbert4rec.py --dataset {args.dataset} --epochs {args.epochs} --repeats "
        f"{args.repeats} --threads {args.threads}{' --use-gpu' if args.use_gpu else ''}"
        f"{' --data-path ' + str(args.data_path) if args.data_path else ''}{' ' + extra if extra else ''}`", "",
        "| model | s / epoch (median) | pretrain s / epoch | fine-tune s / epoch | init s | params | "
        "RSS before model MB | peak RSS MB | peak CUDA MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for model in MODELS:
        rs = runs[model]
        all_med = [_median(r["epoch_s"]) for r in rs]
        pre = [_median(r["epoch_s"][: r["pretrain_epochs"]]) for r in rs] if model == "QBERT4Rec" else [None]
        fine = [_median(r["epoch_s"][r["pretrain_epochs"]:]) for r in rs] if model == "QBERT4Rec" else [None]
        pre, fine = [p for p in pre if p is not None], [f for f in fine if f is not None]
        summary[model] = statistics.median(all_med)
        cuda = [r["peak_cuda_mb"] for r in rs if r["peak_cuda_mb"] is not None]
        lines.append(
            f"| {model} | {summary[model]:.2f} | {_fmt(statistics.median(pre) if pre else None)} | "
            f"{_fmt(statistics.median(fine) if fine else None)} | {statistics.median(r['init_s'] for r in rs):.2f} | "
            f"{rs[0]['params']:,} | {statistics.median(r['rss_before_model_mb'] for r in rs):.0f} | "
            f"{max(r['peak_rss_mb'] for r in rs):.0f} | {_fmt(max(cuda) if cuda else None, '.0f')} |")
    ratio = summary["QBERT4Rec"] / summary["BERT4Rec"]
    lines += ["", f"QBERT4Rec / BERT4Rec seconds per training epoch: **{ratio:.2f}x** "
                  f"({runs['BERT4Rec'][0]['train_rows']:,} training rows per epoch).", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
