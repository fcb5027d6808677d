"""Sequential data (``dataset_prep seq-cold-split``): RecBole's leave-one-out rows as files, the cold variant's rules
(no valid/test interaction in a training sequence, no held-out item in any training row or input history, targets
= each user's last interactions in time order), determinism, errors naming the file / field, and RecBole reading
the files with the plugin's warm / cold evaluation."""
import json
from pathlib import Path

import pytest
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from conftest import write_tiny_dataset
from dataset_prep.cli import main as prep_main
from dataset_prep.cold_split import cold_split
from dataset_prep.seq_split import benchmark_config, seq_cold_split
from recbole_sid.config import Config
from recbole_sid.exceptions import DataError

QUIET = {"log": lambda *a, **k: None}


def write_seq_dataset(root: Path, name: str = "seq") -> Path:
    """The tiny topic dataset plus users that exercise the edge cases: 1, 2 and 3 interactions, and ties in time
    (several interactions at one timestamp, resolved by file order)."""
    write_tiny_dataset(root, name=name, n_users=30, n_items=24, with_user_profile=False)
    with open(root / name / f"{name}.inter", "a") as f:
        f.write("short1\ti0\t4\t5\n")
        for k, item in enumerate(["i1", "i2"]):
            f.write(f"short2\t{item}\t4\t{10 + k}\n")
        for k, item in enumerate(["i3", "i4", "i5"]):
            f.write(f"short3\t{item}\t4\t{20 + k}\n")
        for item in ["i6", "i7", "i8", "i9", "i10", "i11"]:  # all at one time: file order is the time order
            f.write(f"tie\t{item}\t4\t77\n")
        f.write("tie\ti12\t4\t50\n")  # earlier than the rest, although written last
    return root


def read_rows(path: Path) -> list[tuple]:
    """``(user, [history], item, time)`` of a seq-cold-split file."""
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["user_id:token", "item_id_list:token_seq", "item_id:token", "timestamp:float"]
    rows = []
    for line in lines[1:]:
        user, history, item, time = line.split("\t")
        rows.append((user, history.split(), item, float(time)))
    return rows


def user_sequences(inter: Path) -> dict:
    """Each user's items in time order (ties: file order)."""
    rows = [line.split("\t") for line in inter.read_text().splitlines()[1:]]
    order = sorted(range(len(rows)), key=lambda k: (float(rows[k][3]), k))
    seqs = {}
    for k in order:
        seqs.setdefault(rows[k][0], []).append(rows[k][1])
    return seqs


def recbole_rows(dataset) -> list[tuple]:
    """``(user, (history...), item)`` tokens of every row of a RecBole sequential dataset split."""
    uid, iid = dataset.uid_field, dataset.iid_field
    histories = dataset.inter_feat[dataset.item_id_list_field].tolist()
    lengths = dataset.inter_feat[dataset.item_list_length_field].tolist()
    rows = []
    for u, seq, n, i in zip(dataset.inter_feat[uid].tolist(), histories, lengths, dataset.inter_feat[iid].tolist()):
        rows.append((str(dataset.id2token(uid, u)), tuple(str(t) for t in dataset.id2token(iid, seq[:n])),
                     str(dataset.id2token(iid, i))))
    return sorted(rows)


def recbole_split(root, name, **extra):
    config = Config("SASRec", name, config_dict={"data_path": str(root), "train_neg_sample_args": None,
                                                 "show_progress": False, **extra}, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return dataset, [loader._dataset for loader in data_preparation(config, dataset)]


def test_cold_ratio_zero_gives_recbole_leave_one_out_rows(tmp_path, in_tmp):
    """RecBole's own protocol on the unsplit NAME.inter (LS valid_and_test, TO, full: RecBole's sequential.yaml)
    gives each user's last interaction as test, the one before as validation, every earlier prefix as training,
    histories cut to MAX_ITEM_LIST_LENGTH; ``--cold-ratio 0`` writes exactly those rows, and RecBole reads them back
    through benchmark_filename in one item-id space (alias_of_item_id)."""
    root = write_seq_dataset(tmp_path / "data")
    _, ls = recbole_split(root, "seq", MAX_ITEM_LIST_LENGTH=5,
                          load_col={"inter": ["user_id", "item_id", "timestamp"]})
    summary = seq_cold_split("seq", root, cold_ratio=0, out=tmp_path / "split", max_history=5, **QUIET)
    assert summary["cold_items"] == 0 and not (tmp_path / "split" / "seq" / "seq.cold_items").exists()
    folder = tmp_path / "split" / "seq"
    _, bench = recbole_split(tmp_path / "split", "seq", MAX_ITEM_LIST_LENGTH=5, **benchmark_config("seq", folder))
    for part, (mine, theirs) in zip(("train", "valid", "test"), zip(bench, ls)):
        assert recbole_rows(mine) == recbole_rows(theirs), part
    assert [len(d) for d in ls] == [summary["rows"][p] for p in ("train", "valid", "test")]
    assert len(ls[0]) > 100 and len(ls[1]) == 31 and len(ls[2]) == 32  # 31 users with >= 4 interactions, + short3
    test = {r[0]: r for r in recbole_rows(ls[2])}
    seqs = user_sequences(root / "seq" / "seq.inter")
    assert test["tie"][2] == "i11" and test["tie"][1] == ("i12", "i6", "i7", "i8", "i9", "i10")[-5:]
    assert "short1" not in test and "short2" not in test  # too short for a test row (as RecBole's LS)
    assert all(test[u][2] == seqs[u][-1] for u in test)


@pytest.fixture
def cold_root(tmp_path):
    root = write_seq_dataset(tmp_path / "data")
    summary = seq_cold_split("seq", root, cold_ratio=0.3, seed=5, out=tmp_path / "split", max_history=4, **QUIET)
    return root, tmp_path / "split" / "seq", summary


def test_cold_split_rules(cold_root, tmp_path):
    root, folder, summary = cold_root
    rows = {part: read_rows(folder / f"seq.{part}.inter") for part in ("train", "valid", "test")}
    cold = set(folder.joinpath("seq.cold_items").read_text().splitlines()[1:])
    # the same held-out items as cold-split's for the seed and ratio (its valid/test division aside)
    cold_split("seq", root, cold_ratio=0.3, seed=5, out=tmp_path / "topk", log=lambda *a: None)
    assert cold == set((tmp_path / "topk" / "seq" / "seq.cold_items").read_text().splitlines()[1:])
    assert summary["cold_items"] == len(cold) == round(0.3 * 24)
    # no held-out item in any training row (history or target) nor in any valid / test history
    assert not any(item in cold for _, history, target, _ in rows["train"] for item in history + [target])
    assert not any(item in cold for part in ("valid", "test") for _, history, _, _ in rows[part] for item in history)
    # held-out items do occur as targets: the cold variant has cold valid and test rows
    cold_targets = {part: sum(r[2] in cold for r in rows[part]) for part in ("valid", "test")}
    assert cold_targets["valid"] > 0 and cold_targets["test"] > 0
    assert summary["cold_targets"] == cold_targets
    seqs = user_sequences(root / "seq" / "seq.inter")
    valid = {r[0]: r for r in rows["valid"]}
    test = {r[0]: r for r in rows["test"]}
    train_items = {}
    for user, history, target, _ in rows["train"]:
        train_items.setdefault(user, set()).update(history + [target])
    for user, seq in seqs.items():
        if len(seq) >= 3:  # leave-one-out targets: the user's last interactions in time order
            assert test[user][2] == seq[-1], user
        if len(seq) >= 4:
            assert valid[user][2] == seq[-2], user
        else:
            assert user not in valid
        targets = seq[-2:] if len(seq) >= 4 else seq[-1:] if len(seq) == 3 else []
        # no valid/test interaction in the user's training sequence (the data has no repeated (user, item))
        assert not set(targets) & train_items.get(user, set()), user
        # histories: the user's warm items before the target, in time order, the last max_history (= 4) of them
        warm_before = [i for i in seq[:len(seq) - len(targets)] if i not in cold]
        if user in valid:
            assert valid[user][1] == warm_before[-4:]
        if user in test:
            expected = warm_before + ([seq[-2]] if len(seq) >= 4 and seq[-2] not in cold else [])
            assert test[user][1] == expected[-4:]
        # training rows: every prefix of the warm training sequence
        mine = sorted((h, t) for u, h, t, _ in rows["train"] if u == user)
        assert mine == sorted((warm_before[max(0, j - 4):j], warm_before[j]) for j in range(1, len(warm_before)))
    assert test["tie"][2] == "i11" and valid["tie"][2] == "i10"
    # side files copied, the unsplit NAME.inter not (it would put the held-out items in training)
    assert (folder / "seq.item").is_file() and not (folder / "seq.inter").exists()
    params = json.loads((folder / "seq.seq_split.json").read_text())
    assert params["seed"] == 5 and params["cold_ratio"] == 0.3 and params["max_history"] == 4


def test_deterministic_for_a_seed(cold_root, tmp_path):
    root, folder, _ = cold_root
    seq_cold_split("seq", root, cold_ratio=0.3, seed=5, out=tmp_path / "again", max_history=4, **QUIET)
    for name in ("seq.train.inter", "seq.valid.inter", "seq.test.inter", "seq.cold_items"):
        assert (tmp_path / "again" / "seq" / name).read_bytes() == (folder / name).read_bytes(), name
    seq_cold_split("seq", root, cold_ratio=0.3, seed=6, out=tmp_path / "other", max_history=4, **QUIET)
    assert (tmp_path / "other" / "seq" / "seq.cold_items").read_text() != (folder / "seq.cold_items").read_text()


def test_recbole_runs_the_cold_split_with_warm_and_cold_results(cold_root, in_tmp):
    """SASRec (CE, no sampled negatives) trains on the files; the plugin's evaluation splits the test rows by their
    target into warm and cold, and every item of NAME.item is a full-sort candidate (load_col item)."""
    from recbole_sid.quick_start import run_recbole

    _, folder, summary = cold_root
    config = {"data_path": str(folder.parent), **benchmark_config("seq", folder), "MAX_ITEM_LIST_LENGTH": 4,
              "train_neg_sample_args": None, "epochs": 1, "hidden_size": 16, "inner_size": 32,
              "show_progress": False, "eval_batch_size": 256}
    result = run_recbole("SASRec", "seq", config_dict=config, cmd_args=[])
    assert {"test_result", "test_result_warm", "test_result_cold"} <= set(result)
    assert result["test_rows_cold"] == summary["cold_targets"]["test"]
    assert result["test_rows_warm"] + result["test_rows_cold"] == summary["rows"]["test"]
    dataset, _ = recbole_split(folder.parent, "seq", **{k: v for k, v in config.items() if k != "data_path"})
    assert dataset.item_num - 1 == 24  # [PAD] + every item of seq.item


@pytest.mark.parametrize("edit, match", [
    (lambda p: p.write_text(p.read_text().replace("user_id:token", "uid:token", 1)), r"seq\.inter: no 'user_id'"),
    (lambda p: p.write_text(p.read_text() + "u1\ti1\t4\tlate\n"), r"seq\.inter: 'timestamp' is not numeric"),
])
def test_bad_input_names_the_file_and_field(tmp_path, edit, match):
    root = write_seq_dataset(tmp_path / "data")
    edit(root / "seq" / "seq.inter")
    with pytest.raises(DataError, match=match):
        seq_cold_split("seq", root, out=tmp_path / "split", **QUIET)
    assert not (tmp_path / "split").exists() or not any((tmp_path / "split").rglob("*.inter"))


def test_bad_arguments_and_existing_outputs(tmp_path, capsys):
    root = write_seq_dataset(tmp_path / "data")
    with pytest.raises(DataError, match="--cold-ratio"):
        seq_cold_split("seq", root, cold_ratio=1.0, out=tmp_path / "split", **QUIET)
    with pytest.raises(DataError, match="--max-history"):
        seq_cold_split("seq", root, max_history=0, out=tmp_path / "split", **QUIET)
    with pytest.raises(DataError, match="--out"):
        seq_cold_split("seq", root, **QUIET)
    with pytest.raises(DataError, match="input dataset's folder"):
        seq_cold_split("seq", root, out=root, **QUIET)
    with pytest.raises(DataError, match="seq.inter: interaction file not found"):
        seq_cold_split("seq", tmp_path, out=tmp_path / "split", **QUIET)
    argv = ["seq-cold-split", "--dataset", "seq", "--data-path", str(root), "--out", str(tmp_path / "split"),
            "--seed", "3", "--max-history", "6"]
    assert prep_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 3 and summary["max_history"] == 6 and summary["cold_items"] == round(0.1 * 24)
    before = (tmp_path / "split" / "seq" / "seq.train.inter").read_bytes()
    assert prep_main(argv[:-4] + ["--seed", "4"]) == 2  # existing outputs: refused, nothing replaced
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err
    assert (tmp_path / "split" / "seq" / "seq.train.inter").read_bytes() == before
    assert prep_main(argv[:-4] + ["--seed", "4", "--overwrite"]) == 0
    assert json.loads((tmp_path / "split" / "seq" / "seq.seq_split.json").read_text())["seed"] == 4
