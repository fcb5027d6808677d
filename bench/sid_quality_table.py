"""SID quality of our tokenizers side by side with public reference SIDs, scored by the same code.

    python bench/sid_quality_table.py --dataset amazon-scientific \
        --refs ../shared/data/amazon-scientific/reference-sids --runs results/amazon-scientific/cells \
        --out results/sid_quality_amazon-scientific.md

References: every ``*.index.json`` in --refs (4 learned levels, no repair), over their first 3 levels and all 4.
Ours: every leaderboard cell JSON in --runs with a SID report; the cell's exported ``<dataset>.itemsid`` (3 learned
levels + the dedup level) is re-scored here with ``recbole_sid.quality.sid_quality``; the greedy collision rate
(before the collision-aware last level) comes from the run's own report.
"""
import argparse
import json
from pathlib import Path

from recbole_sid.atomic_io import read_sids
from recbole_sid.quality import sid_quality


def pct(x):
    return "—" if x is None else f"{100 * x:.1f} %"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", required=True)
    p.add_argument("--refs")
    p.add_argument("--runs", required=True, help="folder of leaderboard cell JSONs")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    lines = [f"# SID quality on {args.dataset}: ours vs public reference SIDs (same scoring code)", "",
             f"`python bench/sid_quality_table.py --dataset {args.dataset} ...` (see the script's docstring).", "",
             "| SIDs | levels | collisions (greedy codes) | collisions before dedup | after dedup | "
             "level-1 codes used | level-1 perplexity | largest bucket |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    if args.refs:
        for path in sorted(Path(args.refs).glob("*.index.json")):
            _, codes = read_sids(path)
            for levels in (3, codes.shape[1]):
                r = sid_quality(codes, codebook_size=256, levels=levels)
                lines.append(f"| reference {path.name.split('.')[0]} | {levels} learned | — | {pct(r.collision_rate)} | "
                             f"— | {r.levels[0].codes_used} / 256 | {r.levels[0].perplexity:.1f} | "
                             f"{r.largest_bucket} |")
    for cell_path in sorted(Path(args.runs).glob("*-seed*.json")):
        cell = json.loads(cell_path.read_text())
        if cell.get("status") != "ok" or not cell.get("sid_files"):
            continue
        sid_file = Path(cell["sid_files"]["itemsid"])
        if not sid_file.is_file():
            continue
        _, codes = read_sids(sid_file)
        k = int(cell["config"].get("sid_codebook_size", 256))
        r = sid_quality(codes, codebook_size=k, has_dedup_level=True)
        greedy = cell["sid_quality"]["items"].get("collision_rate_greedy")
        lines.append(f"| {cell['model']} (seed {cell['seed']}) | {codes.shape[1] - 1} learned + dedup | {pct(greedy)} | "
                     f"{pct(r.collision_rate)} | {pct(r.collision_rate_after_dedup)} | {r.levels[0].codes_used} / {k} | "
                     f"{r.levels[0].perplexity:.1f} | {r.largest_bucket} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
