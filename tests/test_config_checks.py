"""The user's config keys are checked before any data is read: types, keys RecBole evals, misspelled keys, use_gpu."""
import logging

import pytest

from recbole_sid import cli
from recbole_sid.config import Config
from recbole_sid.exceptions import ConfigError
from recbole_sid.quick_start import run_recbole

from conftest import write_tiny_dataset


def test_wrong_type_names_key_value_source_and_type(in_tmp):
    with pytest.raises(ConfigError, match=r"'epochs' = 'abc' \(command line\) is a str; expected int.*300"):
        Config("BPR", "ml-100k", cmd_args=["--epochs=abc"])
    with pytest.raises(ConfigError, match=r"'learning_rate' = 'fast' \(config_dict\).*expected float"):
        Config("BPR", "ml-100k", config_dict={"learning_rate": "fast"}, cmd_args=[])
    (in_tmp / "bad.yaml").write_text("show_progress: 3\n")
    with pytest.raises(ConfigError, match=r"'show_progress' = 3 \(config file bad.yaml\) is an int; expected bool"):
        Config("BPR", "ml-100k", config_file_list=["bad.yaml"], cmd_args=[])
    for bad in (1.5, True, None, [3]):
        with pytest.raises(ConfigError, match="'epochs'"):
            Config("BPR", "ml-100k", config_dict={"epochs": bad}, cmd_args=[])
    with pytest.raises(ConfigError, match=r"'mlp_hidden_size' = 64 .*expected list or tuple"):  # "(list of int)"
        Config("DeepFM", "ml-100k", cmd_args=["--mlp_hidden_size=64"])
    with pytest.raises(ConfigError, match="'sid_levels'"):  # a plugin key, from the plugin's yaml defaults
        Config("DAS", "ml-100k", cmd_args=["--sid_levels=three"])


def test_types_recbole_accepts_still_pass(in_tmp):
    config = Config("BPR", "ml-100k", cmd_args=[], config_dict={
        "learning_rate": 1, "gpu_id": 0, "topk": 5, "metrics": "Recall", "valid_metric": "Recall@5",
        "eval_args": {"mode": "full"}, "load_col": None, "clip_grad_norm": {"max_norm": 5}, "epochs": 2,
        "train_batch_size": 512, "item_emb_file": "x.itememb",
    })
    assert (config["learning_rate"], config["gpu_id"], config["topk"], config["metrics"]) == (1, "0", [5], ["Recall"])
    assert Config("BPR", "ml-100k", cmd_args=["--gpu_id=(0,1)"])["gpu_id"] == "0,1"
    # an int default whose RecBole yaml comment says float (NNCF.yaml: resolution: 1  # (float))
    assert Config("NNCF", "ml-100k", cmd_args=["--resolution=0.5"])["resolution"] == 0.5
    assert Config("DAS", "ml-100k", cmd_args=["--faiss_use_gpu=False"])["faiss_use_gpu"] is False


def test_cli_wrong_type_stops_before_loading_data(in_tmp, capsys):
    assert cli.main(["--model=BPR", "--dataset=ml-100k", "--epochs=abc"]) == 2
    err = capsys.readouterr().err
    assert "'epochs' = 'abc'" in err and "expected int" in err and "Traceback" not in err
    assert not (in_tmp / "log").exists()  # failed while building the config: no log, no data read


def test_misspelled_key_warns_with_close_spellings(in_tmp):
    config = Config("BPR", "ml-100k", cmd_args=["--epohcs=1", "--epochs=1"])
    assert len(config.warnings) == 1
    assert "'epohcs' (command line)" in config.warnings[0] and "'epochs'" in config.warnings[0]
    # keys RecBole reads without a yaml default, other models' keys, the plugin's keys and CLI flags are known
    quiet = Config("BPR", "ml-100k", config_dict={"tail_ratio": 0.1, "dropout_prob": 0.2, "world_size": -1},
                   cmd_args=["--nproc=1", "--user_profile_weight=0.3", "--plugin=x", "--group_offset=0",
                             "--semantic_dim=16", "--encoding=utf-8"])
    assert quiet.warnings == []


def test_misspelled_key_is_logged_as_warning_in_a_run(in_tmp, caplog):
    root = write_tiny_dataset(in_tmp / "data")
    with caplog.at_level(logging.INFO):
        run_recbole(model="BPR", dataset="tiny", saved=False, cmd_args=[], config_dict={
            "data_path": str(root), "epochs": 1, "show_progress": False, "stopping_stepp": 3})
    records = [r for r in caplog.records if "stopping_stepp' (config_dict) is not a key" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "'stopping_step'" in records[0].getMessage()


def test_keys_recbole_evals_take_only_a_class_name(in_tmp):
    marker = in_tmp / "injected"
    payload = f"[__import__('pathlib').Path({str(marker)!r}).touch()][1]"
    with pytest.raises(ConfigError, match=r"'teacher'.*eval\(\).*CrossNet"):
        # today's RecBole runs eval(config['teacher']) while building KD_DAGFM
        run_recbole(model="KD_DAGFM", dataset="ml-100k", saved=False, cmd_args=[],
                    config_dict={"teacher": payload, "epochs": 1, "show_progress": False})
    assert not marker.exists()
    for bad in ("os", "__import__", "exit"):
        with pytest.raises(ConfigError, match="'teacher'"):
            Config("KD_DAGFM", "ml-100k", cmd_args=[f"--teacher={bad}"])
    assert Config("KD_DAGFM", "ml-100k", cmd_args=["--teacher=CIN"])["teacher"] == "CIN"


def test_use_gpu_matches_the_device(in_tmp, monkeypatch, caplog):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = Config("BPR", "ml-100k", cmd_args=[])
    assert config["device"].type == "cpu" and config["use_gpu"] is False
    notices = [n for n in config.notices if "use_gpu" in n]
    assert len(notices) == 1 and "no CUDA device" in notices[0]
    with caplog.at_level(logging.INFO):
        config.log_notices(logging.getLogger("test"))
    assert sum("use_gpu = True, but" in r.getMessage() for r in caplog.records) == 1
    off = Config("BPR", "ml-100k", cmd_args=["--use_gpu=False"])
    assert off["use_gpu"] is False and not [n for n in off.notices if "use_gpu" in n]
