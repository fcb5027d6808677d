"""QBERT4Rec stages 1-2 under several stage-1 settings: how cold items' SIDs relate to their text and to warm items.

    OMP_NUM_THREADS=1 python bench/qbert4rec_cold_sids.py \
        --cell results/seq/amazon-scientific/cells/QBERT4Rec-split2020-seed2020.json \
        [--arms default no-structural no-injection] [--out results/qbert4rec_cold_sids.md]

``--cell`` is a sequential leaderboard cell (or its run's ``spec.json``): its dataset, seed, split files (written by the
leaderboard under ``<split-root>/seq/split<k>/``, which must exist) and ``--set`` values. Each arm builds
QBERT4Rec on that split (its ``__init__`` trains stages 1-2 and freezes the SIDs; no stage-3 epoch runs) and reports,
on level-1 codes (and levels 1-2):

* **text agreement**: share of items whose code equals that of their nearest warm item by text cosine (warm items:
  a sample of 2,000, themselves excluded); how much of the code space is organised by text;
* **cold purity**: mean, over cold items, of the cold share of their level-1 code, against the cold share of all
  items; above it, cold items gather in codes of their own.

A diagnostic for the leaderboard's cold rows (``QBERT4Rec`` against ``QBERT4Rec-no-injection``), not a benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ARMS = {"default": {}, "no-structural": {"qbert_structural_view": False}, "no-injection": {"qbert_injection": False}}


def measure(spec: dict, overrides: dict) -> dict:
    import numpy as np

    from recbole_sid.data.semantic import item_semantic_embeddings
    from recbole_sid.quick_start import build_config, prepare_run

    config = build_config(model=spec["model"], dataset=spec["dataset"],
                          config_dict=dict(spec["config"], **overrides, epochs=0, show_progress=False))
    _, train, _, _, model = prepare_run(config)
    codes = model.item_codes[1:].cpu().numpy()
    warm = model.item_warm[1:].cpu().numpy()
    cold = ~warm
    text = item_semantic_embeddings(config, train._dataset).float()[1:].numpy()
    text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    level1 = codes[:, 0]
    share = {c: float(cold[level1 == c].mean()) for c in np.unique(level1)}
    warm_ids = np.where(warm)[0]

    def agreement(idx, exclude_self: bool) -> tuple[float, float]:
        sims = text[idx] @ text[warm_ids].T
        if exclude_self:
            sims[np.arange(len(idx)), np.searchsorted(warm_ids, idx)] = -np.inf
        nearest = warm_ids[sims.argmax(1)]
        return (float((level1[idx] == level1[nearest]).mean()),
                float((codes[idx, :2] == codes[nearest, :2]).all(1).mean()))

    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(warm_ids, size=min(2000, len(warm_ids)), replace=False))
    cold_l1, cold_l12 = agreement(np.where(cold)[0], False)
    warm_l1, warm_l12 = agreement(sample, True)
    return {"items": int(len(level1)), "cold": int(cold.sum()), "cold_share": float(cold.mean()),
            "cold_purity": float(np.mean([share[c] for c in level1[cold]])),
            "agree_cold_l1": cold_l1, "agree_cold_l12": cold_l12, "agree_warm_l1": warm_l1, "agree_warm_l12": warm_l12}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", required=True, nargs="+",
                        help="sequential leaderboard cells' JSON (or their runs' spec.json), one table row per arm each")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--out", help="markdown report (written to a temporary file, then renamed)")
    parser.add_argument("--arm-json", help=argparse.SUPPRESS)  # internal: measure one arm of one cell in this process
    args = parser.parse_args(argv)
    specs = []
    for cell in args.cell:
        spec = json.loads(Path(cell).read_text())
        spec["config"] = {k: v for k, v in spec["config"].items() if k != "checkpoint_dir"}  # this script saves nothing
        specs.append(spec)
    if args.arm_json:
        print("ARM " + json.dumps(measure(specs[0], ARMS[args.arm_json])), flush=True)
        return
    lines = ["# QBERT4Rec stages 1-2: cold items' SIDs", "",
             f"`OMP_NUM_THREADS=1 python bench/qbert4rec_cold_sids.py --cell {' '.join(args.cell)}`", "",
             "Text agreement: share of items whose code equals their nearest warm text neighbour's (level 1; levels "
             "1-2); cold purity: mean cold share of a cold item's level-1 code (no clustering of cold items = the "
             "cold share of all items).", "",
             "| dataset | split | items (cold) | stage 1 | text agreement L1, cold | L1, warm | L1-2, cold | L1-2, warm "
             "| cold purity L1 (cold share) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for cell, spec in zip(args.cell, specs):
        for arm in args.arms:  # one process per arm: RecBole's logger and seeds are process-wide
            done = subprocess.run([sys.executable, __file__, "--cell", cell, "--arm-json", arm],
                                  capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("ARM ")), None)
            if done.returncode or line is None:
                sys.exit(f"{cell}, arm {arm} failed:\n{done.stderr[-3000:]}")
            r = json.loads(line[4:])
            setting = json.dumps(ARMS[arm]) if ARMS[arm] else "QBERT4Rec.yaml"
            lines.append(f"| {spec['dataset']} | {spec.get('split_seed')} | {r['items']} ({r['cold']}) | {arm} "
                         f"(`{setting}`) | {r['agree_cold_l1']:.3f} | {r['agree_warm_l1']:.3f} "
                         f"| {r['agree_cold_l12']:.3f} | {r['agree_warm_l12']:.3f} "
                         f"| {r['cold_purity']:.3f} ({r['cold_share']:.3f}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(out)


if __name__ == "__main__":
    main()
