"""The leaderboard's benchmark protocol: search spaces and trials, split seeds, tables with intervals and paired tests."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SID_CONFIG, write_tiny_dataset
from recbole_sid import leaderboard, tuning
from recbole_sid.exceptions import ConfigError, DataError


# --- search spaces -----------------------------------------------------------------------------------------------
def test_search_space_file(tmp_path):
    path = tmp_path / "M.hyper"
    path.write_text("# comment\nlearning_rate choice [0.001,0.005]\nname choice ['a', \"__import__('os')\"]\n")
    space = tuning.read_search_space(path)
    assert space == {"learning_rate": [0.001, 0.005], "name": ["a", "__import__('os')"]}  # read, never evaluated
    for bad, message in (("lr uniform 0 1", "key choice"), ("lr choice 0.1", "non-empty list"),
                         ("lr choice [1]\nlr choice [2]", "twice"), ("lr choice [1, ", "YAML")):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            tuning.read_search_space(path)


def test_every_model_space_is_valid_and_within_budget():
    from recbole_sid.config_checks import known_keys

    spaces = {p.stem: tuning.read_search_space(p) for p in tuning.hyper_dir().glob("*.hyper")}
    assert {"BPR", "LightGCN", "SGL", "NeuMF", "ItemKNN", "RQKMeans", "RQVAE", "LETTER", "QARM", "DAS"} <= set(spaces)
    for model, space in spaces.items():
        assert len(tuning.trial_configs(space, 8)) <= 8
        for key in space:
            assert key in known_keys(), f"{model}.hyper: {key} is no config key"


def test_trial_configs_grid_or_seeded_subset():
    space = {"a": [1, 2], "b": [10, 20, 30]}
    full = tuning.trial_configs(space, 6)
    assert full == [{"a": 1, "b": 10}, {"a": 1, "b": 20}, {"a": 1, "b": 30},
                    {"a": 2, "b": 10}, {"a": 2, "b": 20}, {"a": 2, "b": 30}]
    part = tuning.trial_configs(space, 4, seed=1)
    assert len(part) == 4 and part == tuning.trial_configs(space, 4, seed=1)
    assert all(c in full for c in part) and part == [c for c in full if c in part]  # grid order
    with pytest.raises(ConfigError):
        tuning.trial_configs(space, 0)


def test_best_trial_follows_the_metric_direction():
    records = [{"status": "ok", "best_valid_score": 0.2, "valid_score_bigger": True},
               {"status": "error", "best_valid_score": 0.9},
               {"status": "ok", "best_valid_score": 0.3, "valid_score_bigger": True}]
    assert tuning.best_trial(records) == 2
    smaller = [dict(r, valid_score_bigger=False) for r in records]
    assert tuning.best_trial(smaller) == 0
    assert tuning.best_trial([{"status": "error"}]) is None


# --- tables: intervals and paired tests on fake cells with a known answer ----------------------------------------
SPLITS = (2020, 2021, 2022)


def _fake_cell(out, model, split, per_user_warm, per_user_cold, valid=0.1):
    cells = out / "fake" / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    path = cells / f"{model}-split{split}-seed2020.json"
    users = np.arange(1, len(per_user_warm) + 1)
    leaderboard.write_per_user(leaderboard.users_path(path), {
        "warm": {"users": users, "recall@10": per_user_warm, "ndcg@10": per_user_warm},
        "cold": {"users": users, "recall@10": per_user_cold, "ndcg@10": per_user_cold}})
    record = {"model": model, "model_class": model, "task": "topk", "dataset": "fake", "seed": 2020,
              "split_seed": split, "status": "ok", "config": {"seed": 2020}, "versions": {},
              "best_valid_score": valid, "epochs_run": 5, "hit_cap": model == "BPR",
              "test_result": {"recall@10": float(np.mean(per_user_warm)), "ndcg@10": float(np.mean(per_user_warm))},
              "test_result_warm": {"recall@10": float(np.mean(per_user_warm)),
                                   "ndcg@10": float(np.mean(per_user_warm))},
              "test_result_cold": {"recall@10": float(np.mean(per_user_cold)),
                                   "ndcg@10": float(np.mean(per_user_cold))}}
    path.write_text(json.dumps(record))


@pytest.fixture
def fake_out(tmp_path):
    rng = np.random.default_rng(0)
    for k, split in enumerate(SPLITS):
        base = rng.uniform(0.1, 0.5, 200)
        cold = rng.uniform(0.0, 0.2, 200)
        _fake_cell(tmp_path, "RQVAE", split, base, cold, valid=0.30)
        _fake_cell(tmp_path, "QARM", split, base - 0.01, cold, valid=0.20)
        # DAS: every user +0.05 on warm items (a sure difference); cold: symmetric noise around the reference
        noise = np.where(np.arange(200) % 2 == 0, 0.05, -0.05)
        _fake_cell(tmp_path, "DAS", split, base + 0.05, cold + noise + 0.001 * (k - 1))
        _fake_cell(tmp_path, "BPR", split, base, cold * 0)  # warm equal to the reference, cold all zero
        _fake_cell(tmp_path, "DAS-no-u2i", split, base, cold + noise + 0.001 * (k - 1))  # DAS without its +0.05
    return tmp_path


def _row(md, section, model):
    part = md.split(section, 1)[1].split("\n## ", 1)[0]
    return next(line for line in part.splitlines() if line.startswith("| ") and f"| {model}" in line)


def test_tables_give_intervals_and_paired_verdicts(fake_out):
    md = leaderboard.write_tables(fake_out, "fake", ["RQVAE", "QARM", "DAS", "BPR"]).read_text()
    assert "Reference of the paired tests: **RQVAE**" in md  # best mean validation score among two-stage models
    warm, cold = "## Warm items", "## Cold items"
    assert _row(md, warm, "DAS").endswith("| better |")
    assert "+0.0500 [+0.0500, +0.0500]" in _row(md, warm, "DAS")
    assert _row(md, warm, "BPR").endswith("| no detectable difference |")
    assert _row(md, warm, "RQVAE").endswith("| reference |")
    assert _row(md, warm, "QARM").endswith("| worse |")
    assert _row(md, cold, "DAS").endswith("| no detectable difference |")  # user-level noise: bootstrap disagrees
    assert _row(md, cold, "BPR").endswith("| worse |")
    assert "BPR †" in _row(md, warm, "BPR")  # a cell stopped at the epoch cap is flagged
    # ranking order: DAS first on warm items
    warm_rows = [line for line in md.split(warm, 1)[1].split("\n## ", 1)[0].splitlines() if line.startswith("| 1 ")]
    assert "DAS" in warm_rows[0]
    # mean ± 95 % t half-width over the 3 cells (t(0.975, 2) = 4.302652729911275)
    values = [json.loads((fake_out / "fake" / "cells" / f"RQVAE-split{s}-seed2020.json").read_text())
              ["test_result_warm"]["recall@10"] for s in SPLITS]
    half = 4.302652729911275 * np.std(values, ddof=1) / np.sqrt(3)
    assert f"{np.mean(values):.4f} ± {half:.4f}" in _row(md, warm, "RQVAE")


def test_variants_are_paired_with_their_base_model(fake_out):
    md = leaderboard.write_tables(fake_out, "fake", ["RQVAE", "DAS", "DAS-no-u2i"]).read_text()
    row = _row(md, "## Variants against their base model", "DAS-no-u2i")
    assert row.startswith("| DAS-no-u2i | DAS | 3 | -0.0500 [-0.0500, -0.0500] |")
    warm, cold = row.split(" | worse | ", 1)  # warm: every user lost 0.05
    assert cold == "+0.0000 [+0.0000, +0.0000] | 1.000 | 1.000 | no detectable difference |"  # cold: identical


def test_explicit_reference(fake_out):
    md = leaderboard.write_tables(fake_out, "fake", ["RQVAE", "DAS", "BPR"], reference="BPR").read_text()
    assert "Reference of the paired tests: **BPR**" in md
    assert _row(md, "## Cold items", "DAS").endswith("| better |")
    with pytest.raises(DataError, match="--reference"):
        leaderboard.write_tables(fake_out, "fake", ["RQVAE"], reference="Nope")


# --- split seeds and the search, end to end on the tiny dataset ---------------------------------------------------
def test_split_seeds_and_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_tiny_dataset(tmp_path / "data")
    hyper = tmp_path / "hyper"
    hyper.mkdir()
    (hyper / "BPR.hyper").write_text("learning_rate choice [0.0001,0.05]\n")
    monkeypatch.setattr(tuning, "hyper_dir", lambda: hyper)
    assert leaderboard.split_seeds(0) == [None] and leaderboard.split_seeds(2, 1) == [2021, 2022]
    out = tmp_path / "results"
    extra = dict(TINY_SID_CONFIG, epochs=2)
    argv = ["--dataset", "tiny", "--data-path", str(root), "--seeds", "1", "--split-seeds", "2", "--out", str(out),
            "--split-root", str(tmp_path / "splits"), "--cold-ratio", "0.2", "--tune", "--trials", "2",
            "--models", "BPR", "Pop",
            "--set", *[f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in extra.items()]]
    assert leaderboard.main(argv) == 0
    for split in (2020, 2021):
        assert (tmp_path / "splits" / f"split{split}" / "tiny" / "tiny.cold_items").is_file()
    first = (tmp_path / "splits" / "split2020" / "tiny" / "tiny.cold_items").read_text()
    assert first != (tmp_path / "splits" / "split2021" / "tiny" / "tiny.cold_items").read_text()
    search = json.loads((out / "tuning" / "tiny" / "BPR.json").read_text())
    assert search["split_seed"] == 2020 and len(search["results"]) == 2
    scores = [r["best_valid_score"] for r in search["results"]]
    assert search["chosen"] == search["results"][int(np.argmax(scores))]["config"]
    assert not (out / "tuning" / "tiny" / "Pop.json").exists()  # no search space: defaults
    for split in (2020, 2021):
        cell = json.loads((out / "tiny" / "cells" / f"BPR-split{split}-seed2020.json").read_text())
        assert cell["status"] == "ok" and cell["split_seed"] == split and cell["tuned"] == search["chosen"]
        assert cell["config"]["learning_rate"] == search["chosen"]["learning_rate"]
        assert cell["config"]["data_path"].endswith(f"split{split}")
        assert leaderboard.users_path(out / "tiny" / "cells" / f"BPR-split{split}-seed2020.json").is_file()
    md = (out / "tiny" / "leaderboard.md").read_text()
    assert "## Warm items" in md and "## Cold items" in md and "learning_rate=" in md


def test_ctr_cells_on_split_seeds(tmp_path, monkeypatch):
    """CTR cells on split seeds read a labeled copy of each split with the user-history features (written once by
    dataset_prep negatives + history), the protocol's columns and no rating threshold; "DeepFM + SID-COINS" takes
    the codes of the COINS cell of the same split; the CTR tables pair models with DeepFM and COINS's ablations
    with COINS."""
    from test_ctr_cold import ctr_config, write_ctr_dataset

    monkeypatch.chdir(tmp_path)
    root = write_ctr_dataset(tmp_path / "data")
    rng = np.random.default_rng(0)
    with open(root / "ctr" / "ctr.itememb", "w") as f:
        f.write("item_id:token\titem_emb:float_seq\n")
        for i in range(40):
            f.write(f"i{i}\t" + " ".join(f"{v:.4f}" for v in rng.normal(size=16)) + "\n")
    config = ctr_config(root, epochs=1)
    for key in ("data_path", "threshold", "load_col", "benchmark_filename"):
        config.pop(key)
    out, splits = tmp_path / "results", tmp_path / "splits"
    argv = ["--dataset", "ctr", "--data-path", str(root), "--seeds", "1", "--split-seeds", "2", "--out", str(out),
            "--split-root", str(splits), "--cold-ratio", "0.2", "--task", "ctr",
            "--models", "DeepFM", "COINS", "COINS-no-opq", "DeepFM+SID-COINS",
            "--set", *[f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items()]]
    assert leaderboard.main(argv) == 0
    cells = out / "ctr" / "cells"
    for split in (2020, 2021):
        data = splits / "ctr" / f"split{split}" / "ctr"
        header = (data / "ctr.train.inter").read_text().split("\n", 1)[0]
        assert "label:float" in header and "hist_items:token_seq" in header and "hist_sim:float" in header
        # the labeled copy keeps the split's cold items
        assert (data / "ctr.cold_items").read_text() == (splits / f"split{split}" / "ctr" / "ctr.cold_items").read_text()
        for model in ("DeepFM", "COINS", "COINS-no-opq", "DeepFM+SID-COINS"):
            cell = json.loads((cells / f"{model}-split{split}-seed2020.json").read_text())
            assert cell["status"] == "ok", (model, cell.get("error"))
            assert cell["split_seed"] == split and cell["config"]["threshold"] is None
            assert cell["config"]["numerical_features"] == ["hist_sim"]
            assert cell["config"]["load_col"]["inter"] == leaderboard.CTR_INTER_COLUMNS
        sid = json.loads((cells / f"DeepFM+SID-COINS-split{split}-seed2020.json").read_text())
        coins = json.loads((cells / f"COINS-split{split}-seed2020.json").read_text())
        assert sid["sid_source"]["split_seed"] == split
        assert sid["sid_source"]["itemsid"] == coins["sid_files"]["itemsid"]
        assert Path(sid["config"]["data_path"]).parent.name == f"DeepFM+SID-COINS-split{split}-seed2020"
        assert coins["config"]["data_path"] == str(splits / "ctr" / f"split{split}")
    md = (out / "ctr" / "leaderboard.md").read_text()
    assert "### AUC against DeepFM" in md and "| COINS-no-opq | COINS | 2 |" in md
    assert "auc longtail" in md and "gauc cold" in md
