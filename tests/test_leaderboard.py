"""Leaderboard smoke test: a tiny grid (1 epoch, 1 seed) writes tables whose numbers equal the runs' results."""
import csv
import json

from conftest import TINY_SID_CONFIG, write_tiny_dataset
from recbole_sid import leaderboard


def test_tiny_grid_tables_match_cells(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_tiny_dataset(tmp_path / "data")
    extra = dict(TINY_SID_CONFIG, epochs=1)
    out = tmp_path / "results"
    argv = ["--dataset", "tiny", "--data-path", str(root), "--seeds", "1", "--out", str(out),
            "--models", "BPR", "RQKMeans", "DAS-no-cooc", "NoSuchModel",
            "--set", *[f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in extra.items()]]
    assert leaderboard.main(argv) == 0
    md = (out / "tiny" / "leaderboard.md").read_text()
    rows = {r["model"]: r for r in csv.DictReader(open(out / "tiny" / "leaderboard.csv"))}
    for model in ("BPR", "RQKMeans", "DAS-no-cooc"):
        cell = json.loads((out / "tiny" / "cells" / f"{model}-seed2020.json").read_text())
        assert cell["status"] == "ok" and cell["epochs_run"] == 1
        for metric in ("recall@10", "ndcg@10"):
            assert float(rows[model][f"{metric}_mean"]) == cell["test_result"][metric]
            assert f"{cell['test_result'][metric]:.4f}" in md
        assert cell["peak_rss_mb"] > 0 and cell["seconds_per_epoch"] > 0
    das = json.loads((out / "tiny" / "cells" / "DAS-no-cooc-seed2020.json").read_text())
    assert das["model_class"] == "DAS" and das["config"]["das_align_cooc"] is False
    assert "SID quality" in md and "RQKMeans" in md.split("SID quality")[1]
    failed = json.loads((out / "tiny" / "cells" / "NoSuchModel-seed2020.json").read_text())
    assert failed["status"] == "error" and "NoSuchModel" in failed["error"]
    assert "Failed cells" in md

    before = (out / "tiny" / "cells" / "BPR-seed2020.json").stat().st_mtime_ns
    assert leaderboard.main(argv) == 0  # resumes: finished cells are not rerun
    assert (out / "tiny" / "cells" / "BPR-seed2020.json").stat().st_mtime_ns == before

    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- leaderboard:tiny:start -->\nPLACEHOLDER-OLD\n<!-- leaderboard:tiny:end -->\ny\n")
    assert leaderboard.update_readme(readme, out, "tiny")
    text = readme.read_text()
    assert "PLACEHOLDER-OLD" not in text and f"{rows['BPR']['recall@10_mean']}"[:6] in text and text.endswith("y\n")
