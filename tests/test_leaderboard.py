"""Leaderboard smoke test: a tiny grid (1 epoch, 1 seed) writes tables whose numbers equal the runs' results."""
import csv
import json
import re
import sys
from pathlib import Path

import pytest

from conftest import TINY_SID_CONFIG, write_tiny_dataset
from recbole_sid import leaderboard
from recbole_sid.exceptions import DataError


def test_tiny_grid_tables_match_cells(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = write_tiny_dataset(tmp_path / "data")
    extra = dict(TINY_SID_CONFIG, epochs=1)
    out = tmp_path / "results"
    argv = ["--dataset", "tiny", "--data-path", str(root), "--seeds", "1", "--out", str(out),
            "--models", "BPR", "RQKMeans", "DAS-no-cooc", "NoSuchModel",
            "--set", *[f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in extra.items()]]
    assert leaderboard.main(argv) == 0
    err = capsys.readouterr().err
    md = (out / "tiny" / "leaderboard.md").read_text()
    # live progress: where the logs are, then one condensed line per epoch (model, seed, epoch, loss, valid score)
    bpr = json.loads((out / "tiny" / "cells" / "BPR-seed2020.json").read_text())
    run_dir = out / "tiny" / "runs" / "BPR-seed2020"
    assert f"  BPR seed 2020: stderr in {run_dir / 'stderr.log'}" in err, err
    assert Path(bpr["log_file"]).is_file() and Path(bpr["log_file"]).parent == tmp_path / "log" / "BPR"
    assert f"  BPR seed 2020: RecBole log {bpr['log_file']}" in err
    loss, score = bpr["curves"]["train_loss"]["0"], bpr["curves"]["valid_score"]["0"]
    assert re.search(rf"  BPR seed 2020: epoch 0 train loss {loss:.4f}, valid score {score:.6f}\n", err), err
    assert "epoch 0 training" in (run_dir / "stderr.log").read_text()
    rows = {r["model"]: r for r in csv.DictReader(open(out / "tiny" / "leaderboard.csv"))}
    for model in ("BPR", "RQKMeans", "DAS-no-cooc"):
        cell = json.loads((out / "tiny" / "cells" / f"{model}-seed2020.json").read_text())
        assert cell["status"] == "ok" and cell["epochs_run"] == 1
        for metric in ("recall@10", "ndcg@10"):
            assert float(rows[model][f"{metric}_mean"]) == cell["test_result"][metric]
            assert f"{cell['test_result'][metric]:.4f}" in md
        assert cell["peak_rss_mb"] > 0 and cell["seconds_per_epoch"] > 0
        shared = {k: v for k, v in cell["config"].items() if k not in leaderboard.PER_SEED_KEYS}
        assert json.loads(rows[model]["config"]) == shared
    header = next(line for line in md.splitlines() if line.startswith("| model | cells | recall@10"))
    assert "recall@10 warm" in header and "recall@10 cold" in header and "phase 1 s" in header
    rq_row = next(line for line in md.splitlines() if line.startswith("| RQKMeans |"))
    rq_cell = json.loads((out / "tiny" / "cells" / "RQKMeans-seed2020.json").read_text())
    assert f"| {rq_cell['tokenizer_seconds']:.0f} |" in rq_row and "±" not in rq_row  # one seed: no spread
    # SID quality columns are in the csv although the first row (BPR) has none
    assert float(rows["RQKMeans"]["collision_rate_mean"]) >= 0.0 and rows["BPR"]["collision_rate_mean"] == ""
    assert "Config on top of each model's yaml defaults" in md and '"das_align_cooc": false' in md
    das = json.loads((out / "tiny" / "cells" / "DAS-no-cooc-seed2020.json").read_text())
    assert das["model_class"] == "DAS" and das["config"]["das_align_cooc"] is False
    assert "SID quality" in md and "RQKMeans" in md.split("SID quality")[1]
    failed = json.loads((out / "tiny" / "cells" / "NoSuchModel-seed2020.json").read_text())
    assert failed["status"] == "error" and "NoSuchModel" in failed["error"]
    assert "Failed cells" in md
    plots = out / "tiny" / "plots"
    for name in ("metrics_topk.png", "codebook_usage.png", "curves.png"):
        assert (plots / name).read_bytes().startswith(b"\x89PNG"), name

    before = (out / "tiny" / "cells" / "BPR-seed2020.json").stat().st_mtime_ns
    assert leaderboard.main(argv) == 0  # resumes: finished cells are not rerun
    assert (out / "tiny" / "cells" / "BPR-seed2020.json").stat().st_mtime_ns == before

    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- leaderboard:tiny:start -->\nPLACEHOLDER-OLD\n<!-- leaderboard:tiny:end -->\ny\n")
    assert leaderboard.update_readme(readme, out, "tiny")
    text = readme.read_text()
    assert "PLACEHOLDER-OLD" not in text and f"{rows['BPR']['recall@10_mean']}"[:6] in text and text.endswith("y\n")
    # a second table of the same dataset under tagged markers leaves the first one alone
    readme.write_text(text + "<!-- leaderboard:v2/tiny:start -->\nOLD2\n<!-- leaderboard:v2/tiny:end -->\n")
    assert leaderboard.update_readme(readme, out, "tiny", tag="v2/")
    tagged = readme.read_text()
    assert "OLD2" not in tagged and tagged.startswith(text) and tagged.count("| BPR |") == 2


def test_ctr_grid_with_sid_feature_variant(tmp_path, monkeypatch):
    """CTR cells: warm/cold AUC in the tables equal the cells; ``DeepFM+SID-RQKMeans`` first runs (or reuses) the
    RQKMeans top-k cell of the same seed and reads a copy of the data whose ``.item`` carries its exported SIDs."""
    from dataset_prep.cold_split import cold_split
    from recbole_sid.atomic_io import read_sids, sid_tokens
    from test_ctr_cold import ctr_config, write_ctr_dataset

    monkeypatch.chdir(tmp_path)
    root = write_ctr_dataset(tmp_path / "data")
    cold_split("ctr", root, cold_ratio=0.2, seed=1, log=lambda *a: None)
    config = ctr_config(root)
    ctr_only = {k: config.pop(k) for k in ("threshold", "load_col")}
    config.pop("data_path")
    config.update({k: v for k, v in TINY_SID_CONFIG.items() if k not in config}, epochs=1)
    out = tmp_path / "results"
    argv = ["--dataset", "ctr", "--data-path", str(root), "--seeds", "1", "--out", str(out), "--task", "ctr",
            "--models", "LR", "DeepFM+SID-RQKMeans", "DeepFM+SID-COINS", "DeepFM+SID-NoSuchTokenizer",
            "--set", *[f"{k}={v!r}" for k, v in config.items()],
            "--ctr-set", *[f"{k}={v!r}" for k, v in ctr_only.items()]]
    assert leaderboard.main(argv) == 0
    cells = out / "ctr" / "cells"
    tokenizer = json.loads((cells / "RQKMeans-seed2020.json").read_text())
    assert tokenizer["status"] == "ok" and "threshold" not in tokenizer["config"]  # top-k cell: no CTR keys
    cell = json.loads((cells / "DeepFM+SID-RQKMeans-seed2020.json").read_text())
    assert cell["status"] == "ok" and cell["model_class"] == "DeepFM"
    assert cell["sid_source"]["model"] == "RQKMeans" and cell["sid_source"]["levels"] == 2
    assert cell["config"]["load_col"]["item"][-2:] == ["sid_1", "sid_2"] and cell["config"]["threshold"] == {"rating": 4}
    data = Path(cell["config"]["data_path"])
    assert data.parent.name == "DeepFM+SID-RQKMeans-seed2020"
    # the column holds the tokenizer's exported SIDs (its 2 scored levels, the dedup level dropped)
    ids, sids = read_sids(tokenizer["sid_files"]["itemsid"])
    expected = {i: sid_tokens(row[:2]) for i, row in zip(ids, sids)}
    lines = (data / "ctr" / "ctr.item").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[-2:] == ["sid_1:token", "sid_2:token"]  # one field per level
    got = {line.split("\t")[0]: line.split("\t")[-2:] for line in lines[1:]}
    assert got == expected
    # "DeepFM + SID" with COINS's own codes: the COINS cell exports its 3 RQ + 4 OPQ codes (ctr_config's sizes)
    coins_sid = json.loads((cells / "DeepFM+SID-COINS-seed2020.json").read_text())
    assert coins_sid["status"] == "ok" and coins_sid["sid_source"]["model"] == "COINS"
    assert coins_sid["config"]["load_col"]["item"][-7:] == [f"sid_{level}" for level in range(1, 8)]
    rows = {r["model"]: r for r in csv.DictReader(open(out / "ctr" / "leaderboard.csv"))}
    md = (out / "ctr" / "leaderboard.md").read_text()
    for model in ("LR", "DeepFM+SID-RQKMeans"):
        record = json.loads((cells / f"{model}-seed2020.json").read_text())
        for part in ("", "_warm", "_cold"):
            value = record[f"test_result{part}"]["auc"]
            assert 0.0 <= value <= 1.0
            assert float(rows[model][f"auc{part}_mean"]) == value
            assert f"{value:.4f}" in md
    assert (out / "ctr" / "plots" / "metrics_ctr.png").read_bytes().startswith(b"\x89PNG")
    failed = json.loads((cells / "DeepFM+SID-NoSuchTokenizer-seed2020.json").read_text())
    assert failed["status"] == "error" and "NoSuchTokenizer" in failed["error"]


@pytest.mark.parametrize("flag, value", [("--models", "../../../evil"), ("--models", "a/b=BPR:epochs=1"),
                                         ("--models", ".."), ("--models", "DeepFM+SID-../RQKMeans"),
                                         ("--dataset", "../tiny")])
def test_labels_and_datasets_must_be_plain_names(tmp_path, monkeypatch, capsys, flag, value):
    """Labels and datasets become file and folder names (cells, run folders): one that would leave --out is refused
    before any cell runs, with one error line naming it."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "a" / "b" / "results"
    args = {"--dataset": "tiny", "--models": "BPR", "--out": str(out), flag: value}
    argv = ["--data-path", str(tmp_path), "--seeds", "1", *[x for kv in args.items() for x in kv]]
    assert leaderboard.main(argv) == 2
    err = capsys.readouterr().err
    name = value.split("=")[0] if flag == "--models" else value
    assert err.startswith(f"error: {'model label' if flag == '--models' else '--dataset'} {name!r} is not a plain "
                          f"name") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing written anywhere
    dataset, model = ("tiny", name) if flag == "--models" else (value, "BPR")
    with pytest.raises(DataError, match="not a plain name"):  # the API refuses it too
        leaderboard.cell_path(out, dataset, model, 2020)


CHILD = """
import pathlib, sys, time
log = pathlib.Path(sys.argv[1])
print("30 Nov 11:39    INFO  RecBole log file: /x/log/M/M-d.log", file=sys.stderr, flush=True)
print("30 Nov 11:39    INFO  epoch 0 training [time: 0.10s, train loss: 1.5000]", file=sys.stderr, flush=True)
for _ in range(400):  # the parent must have written the line to stderr.log while this process still runs
    if "train loss: 1.5000" in log.read_text():
        break
    time.sleep(0.05)
else:
    sys.exit("stderr.log was not written while the cell ran")
print("30 Nov 11:39    INFO  epoch 0 evaluating [time: 0.01s, valid_score: 0.250000]", file=sys.stderr, flush=True)
print("30 Nov 11:39    INFO  epoch 1 training [time: 0.10s, train_loss1: 1.2500, train_loss2: 0.5000]",
      file=sys.stderr, flush=True)
print("Traceback (most recent call last):\\nValueError: boom", file=sys.stderr, flush=True)
sys.exit(int(sys.argv[2]))
"""


def test_cell_output_is_streamed_to_its_log_and_condensed(tmp_path, capsys):
    log = tmp_path / "stderr.log"
    error, log_file = leaderboard.stream_cell([sys.executable, "-c", CHILD, str(log), "1"], tmp_path, "M seed 7", None)
    assert error == "ValueError: boom" and log_file == "/x/log/M/M-d.log"
    err = capsys.readouterr().err.splitlines()
    assert err == [f"  M seed 7: stderr in {log}; RecBole's own log goes to {Path('log').resolve()}/<model>/ "
                   f"(named when the run opens it)",
                   "  M seed 7: RecBole log /x/log/M/M-d.log",
                   "  M seed 7: epoch 0 train loss 1.5000, valid score 0.250000",
                   "  M seed 7: epoch 1 train loss 1.2500, 0.5000"]
    assert log.read_text().splitlines()[-1] == "ValueError: boom" and "epoch 1 training" in log.read_text()
    assert leaderboard.stream_cell([sys.executable, "-c", CHILD, str(log), "0"], tmp_path, "M", None)[0] is None


def test_cell_timeout_keeps_what_it_wrote(tmp_path):
    child = "import sys, time; print('loading data', file=sys.stderr, flush=True); time.sleep(60)"
    error, _ = leaderboard.stream_cell([sys.executable, "-c", child], tmp_path, "M seed 1", 2)
    assert error == "timed out after 2 s"
    assert (tmp_path / "stderr.log").read_text() == "loading data\n"


def test_finished_cell_is_reused_only_with_the_same_set_values(tmp_path):
    """A resumed grid with another ``--set`` (e.g. a larger epoch cap) must not silently reuse cells of the old one."""
    path = leaderboard.cell_path(tmp_path, "tiny", "BPR", 2020, 2021)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"status": "ok", "config": {"epochs": 30, "MAX_ITEM_LIST_LENGTH": 20, "seed": 2020}}))
    same = leaderboard.Grid(tmp_path, "data", {"epochs": 30, "MAX_ITEM_LIST_LENGTH": 20})
    assert same.cached("tiny", "BPR", 2020, 2021)["config"]["epochs"] == 30
    assert leaderboard.Grid(tmp_path, "data", {}).cached("tiny", "BPR", 2020, 2021) is not None  # no --set: reused
    with pytest.raises(DataError, match=r"BPR-split2021-seed2020\.json.*epochs=30 there, 100 here"):
        leaderboard.Grid(tmp_path, "data", {"epochs": 100, "MAX_ITEM_LIST_LENGTH": 20}).cached("tiny", "BPR", 2020, 2021)
    with pytest.raises(DataError, match=r"stopping_step='<not set>' there, 5 here"):
        leaderboard.Grid(tmp_path, "data", {"stopping_step": 5}).cached("tiny", "BPR", 2020, 2021)
    # the tokenizer cells that SID-feature labels read are taken as they were run
    seq = leaderboard.Grid(tmp_path / "seq", "data", {"epochs": 100}, sid_cells=tmp_path)
    assert seq.sid_grid().cached("tiny", "BPR", 2020, 2021) is not None


def test_cells_record_the_source_commit():
    """Every cell's ``versions`` names the plugin's git commit when it runs from a checkout (this test suite does)."""
    commit = leaderboard.versions()["recbole_sid_commit"]
    if not (Path(leaderboard.__file__).resolve().parents[1] / ".git").exists():
        assert commit is None
    else:
        assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", commit), commit
