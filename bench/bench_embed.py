"""Time and peak memory of data preparation + default embeddings, and category coherence of the embeddings.

    python bench/bench_embed.py [--out results/bench_embed.md] [--repeats 3] [--workdir DIR]

Each step runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own; the step's wall time excludes
interpreter start-up and imports (reported separately as the RSS after imports). Datasets: amazon-scientific
(``../shared/data`` or ``$RECBOLE_SID_SHARED_DATA``; skipped when absent) and ml-100k from the installed recbole.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import rss_mb

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECBOLE_SID_SHARED_DATA", REPO.parent / "shared" / "data"))
AMAZON = SHARED / "amazon-scientific"


def worker(step: str, workdir: Path) -> dict:
    """Run one step in this (fresh) process; returns timings and memory."""
    import recbole_sid  # noqa: F401
    from dataset_prep import convert_json, embed_dataset, prepare_ml100k

    quiet = lambda *a, **k: None  # noqa: E731
    data = workdir / "data"
    base_rss = rss_mb()
    t0 = time.perf_counter()
    info: dict = {}
    if step == "amazon-convert":
        info = convert_json(AMAZON / "Scientific.inter.json", AMAZON / "Scientific.item.json", "amazon-scientific",
                            data, overwrite=True)
    elif step == "amazon-embed":
        info = embed_dataset("amazon-scientific", data, overwrite=True, log=quiet)
    elif step == "ml100k-copy":
        from dataset_prep.ml100k import embedded_ml100k

        dst = data / "ml-100k"
        dst.mkdir(parents=True, exist_ok=True)
        for p in embedded_ml100k().iterdir():
            shutil.copyfile(p, dst / p.name)
    elif step == "ml100k-embed":
        from dataset_prep.ml100k import ITEM_FIELDS, USER_FIELDS

        info = embed_dataset("ml-100k", data, fields=ITEM_FIELDS, user_fields=USER_FIELDS, overwrite=True, log=quiet)
    elif step == "ml100k-all":
        info = prepare_ml100k(workdir / "all", overwrite=True, log=quiet)
    elif step.endswith("-recbole-load"):
        from recbole.config import Config
        from recbole.data import create_dataset

        from recbole_sid.data import item_semantic_embeddings

        name = "amazon-scientific" if step.startswith("amazon") else "ml-100k-prep"
        if name == "ml-100k-prep" and not (data / name).exists():
            shutil.copytree(data / "ml-100k", data / name)
            for p in (data / name).iterdir():
                p.rename(p.with_name(p.name.replace("ml-100k", name)))
        os.chdir(workdir)
        config = Config(model="BPR", dataset=name, config_dict={"data_path": str(data), "load_col": None,
                                                                 "show_progress": False})
        dataset = create_dataset(config)
        emb = item_semantic_embeddings(config, dataset)
        info = {"items": dataset.item_num, "users": dataset.user_num, "inters": dataset.inter_num,
                "emb": list(emb.shape)}
    else:
        raise SystemExit(f"unknown step {step}")
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": step, "wall_s": wall, "rss_after_imports_mb": base_rss, "peak_rss_mb": peak, "info": info}


def run_step(step: str, workdir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, __file__, "--worker", step, "--workdir", str(workdir)], env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def coherence(workdir: Path) -> list[dict]:
    """Share of 10 nearest neighbours with the same first-level category (amazon), vs random neighbours."""
    import numpy as np

    from dataset_prep.evaluate import category_agreement
    from recbole_sid.atomic_io import read_vectors
    from recbole_sid.data.encoders import TfidfEncoder
    from recbole_sid.data.text import entity_texts, read_atomic_table

    folder = workdir / "data" / "amazon-scientific"
    item, _ = read_atomic_table(folder / "amazon-scientific.item")
    label = dict(zip(item["item_id"], item["category1"]))
    ids, vecs, _, _ = read_vectors(folder / "amazon-scientific.itememb")
    rows = [{"embedding": "default (tfidf d=64, all text fields)", **category_agreement(vecs, [label[i] for i in ids])}]
    for fields, dim in ((["title", "description", "brand"], 64), (["title", "description", "brand"], 128),
                        (["title"], 64)):
        ids2, texts, _ = entity_texts(folder / "amazon-scientific.item", "item_id", fields)
        v = TfidfEncoder(dim=dim).encode(texts)
        rows.append({"embedding": f"tfidf d={dim}, {'+'.join(fields)} (no category text)",
                     **category_agreement(v, [label[i] for i in ids2])})
    rng = np.random.default_rng(0)
    rows.append({"embedding": "random unit vectors (sanity)",
                 **category_agreement(rng.standard_normal(vecs.shape), [label[i] for i in ids])})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "results" / "bench_embed.md"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.workdir)), default=str))
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_embed_"))
    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {}
    steps = ["ml100k-copy", "ml100k-embed", "ml100k-recbole-load"]
    if (AMAZON / "Scientific.inter.json").is_file():
        steps = ["amazon-convert", "amazon-embed", "amazon-recbole-load"] + steps
    else:
        print(f"amazon-scientific not found at {AMAZON}: skipped", file=sys.stderr)
    for step in steps:
        repeats = args.repeats if step.endswith("embed") or step.endswith("convert") else 1
        results[step] = [run_step(step, workdir) for _ in range(repeats)]
        print(step, [round(r["wall_s"], 2) for r in results[step]], file=sys.stderr)
    coh = coherence(workdir) if "amazon-embed" in results else []
    load_after = os.getloadavg()

    import numpy
    import sklearn
    import torch

    lines = ["# bench_embed: data preparation and default semantic embeddings", "",
             f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
             f"numpy {numpy.__version__}, scikit-learn {sklearn.__version__}, torch {torch.__version__}. "
             f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (the machine is shared: "
             f"timings are indicative).", "",
             f"Command: `python bench/bench_embed.py --repeats {args.repeats}`. Each step runs in a fresh process; "
             "wall time excludes interpreter start and imports; peak RSS is the process's `ru_maxrss` "
             "(imports included, shown separately).", "",
             "| step | wall s (median of runs) | min s | runs | RSS after imports MB | peak RSS MB | output |",
             "|---|---|---|---|---|---|---|"]
    for step, runs in results.items():
        walls = [r["wall_s"] for r in runs]
        info = runs[-1]["info"]
        brief = {k: v for k, v in info.items() if k in ("items", "users", "interactions", "item_dim", "user_dim",
                                                          "inters", "emb")}
        lines.append(f"| {step} | {statistics.median(walls):.2f} | {min(walls):.2f} | {len(runs)} | "
                     f"{max(r['rss_after_imports_mb'] for r in runs):.0f} | {max(r['peak_rss_mb'] for r in runs):.0f} "
                     f"| {json.dumps(brief)} |")
    if coh:
        lines += ["", "## amazon-scientific: 10 nearest neighbours sharing the first-level category", "",
                  "First-level category = the first category after the root `Industrial & Scientific` (the root of "
                  "all 4,213 categorised items; 131 items have no category and are not queries, and never match as "
                  "neighbours). 25 first-level categories. Cosine neighbours over all 4,344 items, self excluded. "
                  "Random baseline: expected = mean over queries of (n_c - 1)/(N - 1); sampled = 5 draws of 10 "
                  "random distinct other items per query.", "",
                  "| embedding | share@10 | random expected | random sampled | lift |", "|---|---|---|---|---|"]
        for row in coh:
            lines.append(f"| {row['embedding']} | {row['share']:.4f} | {row['random_expected']:.4f} | "
                         f"{row['random_sampled']:.4f} | {row['lift']:.1f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
