"""Leaderboard, sequential task (``--task seq``): labels and ablation keys, the data each cell reads (RecBole's
leave-one-out without split seeds, the seq-cold-split files on split seeds, written once), the tables (paired with
BERT4Rec; QBERT4Rec's variants with QBERT4Rec), and a tiny grid end to end: cells run with per-user values, and
``QBERT4Rec+SID-RQKMeans`` reads the SIDs of the RQKMeans cell of the same split."""
import json

import numpy as np
import pytest
import yaml

from conftest import REPO, TINY_SID_CONFIG, write_tiny_dataset
from recbole_sid import leaderboard
from recbole_sid.exceptions import DataError

#: sizes that make the sequential models fast on the tiny dataset (histories of 8 items)
SEQ_TINY = {
    "MAX_ITEM_LIST_LENGTH": 8, "hidden_size": 16, "inner_size": 32, "n_heads": 2, "qbert_fusion_dim": 16,
    "qbert_injection_epochs": 2, "qbert_pretrain_epochs": 1, "cf_epochs": 1, "eval_batch_size": 512,
}


def _set(config: dict) -> list[str]:
    return ["--set", *[f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items()]]


def test_labels_variants_and_ablation_keys():
    seq = leaderboard.default_models("seq")
    assert seq == ["SASRec", "BERT4Rec", "QBERT4Rec", "QBERT4Rec-no-injection", "QBERT4Rec-span-only",
                   "QBERT4Rec-no-pretrain", "QBERT4Rec+SID-RQKMeans", "QBERT4Rec+SID-DAS"]
    assert set(seq) <= set(leaderboard.default_models("all"))
    assert not set(seq) & set(leaderboard.default_models("topk") + leaderboard.default_models("ctr"))
    assert {leaderboard.model_task(m) for m in seq} == {"seq"}
    assert leaderboard.model_task("GRU=GRU4Rec:hidden_size=8") == "seq"  # any RecBole sequential model, by its type
    assert leaderboard.model_task("DeepFM+SID-DAS") == "ctr" and leaderboard.model_task("NoSuchModel") == "topk"
    assert leaderboard.resolve_model("QBERT4Rec+SID-DAS") == ("QBERT4Rec", {})
    # the ablations switch keys that QBERT4Rec's yaml defines, away from their defaults
    defaults = yaml.safe_load((REPO / "properties" / "model" / "QBERT4Rec.yaml").read_text())
    expected = {"QBERT4Rec-no-injection": {"qbert_injection": False},
                "QBERT4Rec-span-only": {"qbert_mask_types": ["span"]},
                "QBERT4Rec-no-pretrain": {"qbert_pretrain_epochs": 0},
                "QBERT4Rec-no-structural": {"qbert_structural_view": False}}  # diagnostic label, not a default row
    for label, overrides in expected.items():
        assert leaderboard.resolve_model(label) == ("QBERT4Rec", overrides)
        for key, value in overrides.items():
            assert key in defaults and defaults[key] != value


def test_cell_configs_and_the_sequential_split(tmp_path, capsys):
    """Without split seeds: RecBole's leave-one-out on NAME.inter (no benchmark files, even when the folder has
    top-k ones). On a split seed: the seq-cold-split files under <split-root>/seq/split<k>, written once with the
    top-k split's held-out items; a folder written with other parameters is refused, naming its file."""
    from dataset_prep.cold_split import cold_split

    root = write_tiny_dataset(tmp_path / "data", n_users=20, n_items=16)
    cold_split("tiny", root, cold_ratio=0.2, seed=1, log=lambda *a: None)  # top-k benchmark files beside NAME.inter
    grid = leaderboard.Grid(tmp_path / "out", str(root), {"MAX_ITEM_LIST_LENGTH": 8, "benchmark_filename": ["x"],
                                                           "train_neg_sample_args": {"uniform": 1}},
                            split_root=str(tmp_path / "splits"), cold_ratio=0.25)
    plain = grid.base_config("tiny", "SASRec")
    assert plain["data_path"] == str(root) and plain["benchmark_filename"] is None
    assert plain["eval_args"] == {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}
    assert plain["train_neg_sample_args"] is None and plain["MAX_ITEM_LIST_LENGTH"] == 8
    # the time column RecBole's leave-one-out sorts by; every item of NAME.item a candidate
    assert plain["load_col"] == {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]}
    bert = grid.base_config("tiny", "BERT4Rec")
    assert bert["train_neg_sample_args"] is None and "transform" not in bert  # BERT4Rec.yaml's mask_itemseq stays
    assert grid.base_config("tiny", "QBERT4Rec-span-only")["qbert_mask_types"] == ["span"]
    config = grid.base_config("tiny", "QBERT4Rec", 2021)
    folder = tmp_path / "splits" / "seq" / "split2021" / "tiny"
    assert config["data_path"] == str(folder.parent) and config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["alias_of_item_id"] == ["item_id_list"] and config["load_col"]["inter"][1] == "item_id_list"
    params = json.loads((folder / "tiny.seq_split.json").read_text())
    assert (params["seed"], params["cold_ratio"], params["max_history"]) == (2021, 0.25, 8)
    assert "writing the sequential split of tiny with seed 2021" in capsys.readouterr().err
    # the same held-out items as the top-k split of that seed
    grid.split_data_path("tiny", 2021)
    assert ((tmp_path / "splits" / "split2021" / "tiny" / "tiny.cold_items").read_text()
            == (folder / "tiny.cold_items").read_text())
    before = (folder / "tiny.train.inter").stat().st_mtime_ns
    grid.base_config("tiny", "SASRec", 2021)  # written once
    assert (folder / "tiny.train.inter").stat().st_mtime_ns == before
    other = leaderboard.Grid(tmp_path / "out", str(root), {}, split_root=str(tmp_path / "splits"), cold_ratio=0.25)
    with pytest.raises(DataError, match=r"tiny\.seq_split\.json.*max_history"):  # histories of 50, not 8
        other.base_config("tiny", "SASRec", 2021)
    (root / "nots").mkdir()
    (root / "nots" / "nots.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    with pytest.raises(DataError, match=r"nots\.inter: no 'timestamp' column"):
        grid.base_config("nots", "SASRec")


# --- tables from fake cells -----------------------------------------------------------------------------------
SPLITS = (2020, 2021, 2022)


def _fake_cell(out, model, split, task, warm, cold):
    cells = out / "fake" / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    path = cells / f"{model}-split{split}-seed2020.json"
    users = np.arange(1, len(warm) + len(cold) + 1)
    both = np.concatenate([warm, cold])
    leaderboard.write_per_user(leaderboard.users_path(path), {
        "all": {"users": users, "recall@10": both, "ndcg@10": both / 2},
        "warm": {"users": users[:len(warm)], "recall@10": warm, "ndcg@10": warm / 2},
        "cold": {"users": users[len(warm):], "recall@10": cold, "ndcg@10": cold / 2}})
    result = {name: {"recall@10": float(np.mean(v)), "ndcg@10": float(np.mean(v)) / 2}
              for name, v in (("test_result", both), ("test_result_warm", warm), ("test_result_cold", cold))}
    record = {"model": model, "model_class": leaderboard.resolve_model(model)[0], "task": task, "dataset": "fake",
              "seed": 2020, "split_seed": split, "status": "ok", "config": {"seed": 2020}, "versions": {},
              "best_valid_score": 0.1, "epochs_run": 4, "hit_cap": False, "per_user_file": path.name,
              "test_rows_warm": len(warm), "test_rows_cold": len(cold), **result}
    path.write_text(json.dumps(record))


@pytest.fixture
def fake_out(tmp_path):
    rng = np.random.default_rng(0)
    for k, split in enumerate(SPLITS):
        warm, cold = rng.uniform(0.1, 0.5, 150), rng.uniform(0.0, 0.2, 50)
        noise = np.where(np.arange(150) % 2 == 0, 0.05, -0.05)
        _fake_cell(tmp_path, "BERT4Rec", split, "seq", warm, cold)
        _fake_cell(tmp_path, "SASRec", split, "seq", warm + noise + 0.001 * (k - 1), cold * 0)
        _fake_cell(tmp_path, "QBERT4Rec", split, "seq", warm + 0.05, cold + 0.1)  # every user gains
        _fake_cell(tmp_path, "QBERT4Rec-span-only", split, "seq", warm, cold + 0.1)  # QBERT4Rec without its warm gain
        _fake_cell(tmp_path, "QBERT4Rec+SID-RQKMeans", split, "seq", warm + 0.05, cold + 0.05)
        _fake_cell(tmp_path, "RQVAE", split, "topk", warm, cold)
    return tmp_path


def _section(md, title):
    return md.split(title, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def _row(part, model):
    return next(line for line in part.splitlines() if line.startswith("| ") and f"| {model} |" in line)


def test_sequential_tables(fake_out):
    models = ["RQVAE", "BERT4Rec", "SASRec", "QBERT4Rec", "QBERT4Rec-span-only", "QBERT4Rec+SID-RQKMeans"]
    paths = leaderboard.write_outputs(fake_out, ["fake"], models)
    md = paths[0].read_text()
    assert md.index("Reference of the paired tests: **RQVAE**") < md.index("## Sequential")  # top-k, then seq
    seq = md.split("## Sequential (next item, leave-one-out, full sort)", 1)[1].split("\n## Config", 1)[0]
    assert "Reference of the paired tests: **BERT4Rec**" in seq and "RQVAE" not in seq
    all_rows, warm, cold = (_section(seq, f"### {t}: ranked by") for t in ("All test rows", "Warm targets",
                                                                           "Cold targets"))
    assert _row(warm, "BERT4Rec").endswith("| reference |")
    assert _row(warm, "QBERT4Rec").endswith("| better |") and "+0.0500 [+0.0500, +0.0500]" in _row(warm, "QBERT4Rec")
    assert _row(warm, "SASRec").endswith("| no detectable difference |")  # user-level noise
    assert _row(cold, "SASRec").endswith("| worse |") and _row(all_rows, "QBERT4Rec").endswith("| better |")
    variants = _section(seq, "### Variants against their base model")
    span = _row(variants, "QBERT4Rec-span-only")
    assert span.startswith("| QBERT4Rec-span-only | QBERT4Rec | 3 |")
    assert span.count("| worse |") == 2 and span.endswith("| no detectable difference |")  # all, warm; cold equal
    sid = _row(variants, "QBERT4Rec+SID-RQKMeans")
    # all rows: a quarter of the users (the cold ones) lose 0.05; warm: identical; cold: worse
    assert sid.startswith("| QBERT4Rec+SID-RQKMeans | QBERT4Rec | 3 | -0.0125") and sid.endswith("| worse |")
    assert "| +0.0000 [+0.0000, +0.0000] | 1.000 | 1.000 | no detectable difference |" in sid
    every = _section(seq, "### Every sequential metric")
    assert "| test rows warm | test rows cold |" in every and "| 150 | 50 |" in _row(every, "QBERT4Rec")
    # sequential rows get their own bar chart (top-k metrics on all / warm / cold targets), never the CTR one
    assert (fake_out / "fake" / "plots" / "metrics_seq.png").read_bytes().startswith(b"\x89PNG")
    assert not (fake_out / "fake" / "plots" / "metrics_ctr.png").exists()
    csv_text = (fake_out / "fake" / "leaderboard.csv").read_text()
    assert "test_rows_cold_mean" in csv_text.splitlines()[0]
    # --reference picks the section its model is in
    md = leaderboard.write_tables(fake_out, "fake", models, reference="SASRec").read_text()
    assert "Reference of the paired tests: **SASRec**" in md and "Reference of the paired tests: **RQVAE**" in md
    with pytest.raises(DataError, match="--reference"):
        leaderboard.write_tables(fake_out, "fake", models[1:], reference="Nope")


# --- end to end ---------------------------------------------------------------------------------------------------
def test_sequential_grid_on_split_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_tiny_dataset(tmp_path / "data")
    out, splits, topk = tmp_path / "results", tmp_path / "splits", tmp_path / "topk"
    common = ["--dataset", "tiny", "--data-path", str(root), "--seeds", "1", "--split-root", str(splits),
              "--cold-ratio", "0.2", *_set(dict(TINY_SID_CONFIG, **SEQ_TINY, epochs=1))]
    # a top-k run's RQKMeans cell of split 2020 (as the top-k benchmark leaves it)
    assert leaderboard.main(common + ["--out", str(topk), "--split-seeds", "1", "--models", "RQKMeans"]) == 0
    seq_run = common + ["--out", str(out), "--task", "seq", "--sid-cells", str(topk)]
    # QBERT4Rec on RQKMeans's SIDs on two splits: each reads its own split's RQKMeans cell of the top-k run (split
    # 2021's is run there on demand); then the sequential models on one split
    assert leaderboard.main(seq_run + ["--split-seeds", "2", "--models", "QBERT4Rec+SID-RQKMeans"]) == 0
    models = ["SASRec", "BERT4Rec", "QBERT4Rec", "QBERT4Rec-no-pretrain", "QBERT4Rec+SID-RQKMeans"]
    assert leaderboard.main(seq_run + ["--split-seeds", "1", "--models", *models]) == 0
    cells = out / "tiny" / "cells"
    assert not list(cells.glob("RQKMeans-*"))  # the tokenizer cells stay in the top-k run's folder
    for split in (2020, 2021):
        tokenizer = json.loads((topk / "tiny" / "cells" / f"RQKMeans-split{split}-seed2020.json").read_text())
        assert tokenizer["status"] == "ok" and tokenizer["task"] == "topk"
        assert tokenizer["config"]["data_path"] == str(splits / f"split{split}")  # the top-k split
        cell = json.loads((cells / f"QBERT4Rec+SID-RQKMeans-split{split}-seed2020.json").read_text())
        assert cell["status"] == "ok", cell.get("error")
        assert cell["config"]["qbert_sid_file"] == tokenizer["sid_files"]["itemsid"]
        assert cell["sid_source"] == {"model": "RQKMeans", "seed": 2020, "split_seed": split,
                                      "itemsid": tokenizer["sid_files"]["itemsid"], "levels": 2}
        assert cell["config"]["sid_levels"] == 2
        assert cell["config"]["data_path"] == str(splits / "seq" / f"split{split}")
        assert ((splits / "seq" / f"split{split}" / "tiny" / "tiny.cold_items").read_text()
                == (splits / f"split{split}" / "tiny" / "tiny.cold_items").read_text())
    split_file = json.loads((splits / "seq" / "split2020" / "tiny" / "tiny.seq_split.json").read_text())
    for model in models:
        cell = json.loads((cells / f"{model}-split2020-seed2020.json").read_text())
        assert cell["status"] == "ok", (model, cell.get("error"))
        assert cell["task"] == "seq" and cell["epochs_run"] == 1
        assert cell["config"]["benchmark_filename"] == ["train", "valid", "test"]
        assert cell["test_rows_cold"] == split_file["cold_targets"]["test"] > 0
        assert cell["test_rows_warm"] + cell["test_rows_cold"] == split_file["rows"]["test"]
        # per-user values like the top-k cells: one test row per user, the mean is RecBole's number
        with np.load(leaderboard.users_path(cells / f"{model}-split2020-seed2020.json")) as data:
            rows = {"all": cell["test_rows_warm"] + cell["test_rows_cold"], "warm": cell["test_rows_warm"],
                    "cold": cell["test_rows_cold"]}
            for part, key in (("all", "test_result"), ("warm", "test_result_warm"), ("cold", "test_result_cold")):
                users = data[f"{part}/users"].tolist()
                assert len(users) == len(set(users)) == rows[part]
                assert abs(float(np.mean(data[f"{part}/recall@10"])) - cell[key]["recall@10"]) < 1e-4
    assert json.loads((cells / "SASRec-split2020-seed2020.json").read_text())["config"]["train_neg_sample_args"] is None
    qbert = json.loads((cells / "QBERT4Rec-split2020-seed2020.json").read_text())
    assert qbert["sid_quality"]["items"]["num_levels"] == 2  # its own SIDs' report, for the SID quality table
    assert json.loads((cells / "QBERT4Rec-no-pretrain-split2020-seed2020.json").read_text()
                      )["config"]["qbert_pretrain_epochs"] == 0
    md = (out / "tiny" / "leaderboard.md").read_text()
    seq = md.split("## Sequential (next item, leave-one-out, full sort)", 1)[1]
    assert "Reference of the paired tests: **BERT4Rec**" in seq
    for model in models:
        assert f"| {model} |" in _section(seq, "### Every sequential metric")
    variants = _section(seq, "### Variants against their base model")
    assert "| QBERT4Rec-no-pretrain | QBERT4Rec | 1 |" in variants
    assert "| QBERT4Rec+SID-RQKMeans | QBERT4Rec | 2 |" in variants  # its 2 cells; paired over the one both ran
    assert "## SID quality" in md and "| QBERT4Rec |" in md.split("## SID quality", 1)[1]
    # without split seeds: RecBole's leave-one-out on the unsplit NAME.inter, one test row per user
    assert leaderboard.main(seq_run + ["--models", "SASRec"]) == 0
    plain = json.loads((cells / "SASRec-seed2020.json").read_text())
    assert plain["status"] == "ok", plain.get("error")
    assert plain["config"]["data_path"] == str(root) and plain["config"]["benchmark_filename"] is None
    with np.load(leaderboard.users_path(cells / "SASRec-seed2020.json")) as data:
        assert len(data["all/users"]) == 60
