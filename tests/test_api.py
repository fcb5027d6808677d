"""Python API: Config behaviour, registration, run_recbole's result dict, load_data_and_model, determinism."""
import shutil

import pytest
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

import recbole_sid
from recbole_sid.config import Config, embedded_dataset_dir, parse_cmd_args, parse_value
from recbole_sid.exceptions import ConfigError, ModelNotFoundError
from recbole_sid.quick_start import load_data_and_model, run_recbole

FAST = {"epochs": 1, "show_progress": False, "eval_batch_size": 100000}


class ApiTinyMF(GeneralRecommender):
    """Matrix factorisation used to exercise register_model in-process."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.user_emb = torch.nn.Embedding(self.n_users, config["embedding_size"])
        self.item_emb = torch.nn.Embedding(self.n_items, config["embedding_size"])

    def calculate_loss(self, interaction):
        u = self.user_emb(interaction[self.USER_ID])
        pos = (u * self.item_emb(interaction[self.ITEM_ID])).sum(-1)
        neg = (u * self.item_emb(interaction[self.NEG_ITEM_ID])).sum(-1)
        return -torch.nn.functional.logsigmoid(pos - neg).mean()

    def predict(self, interaction):
        return (self.user_emb(interaction[self.USER_ID]) * self.item_emb(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        return (self.user_emb(interaction[self.USER_ID]) @ self.item_emb.weight.T).view(-1)


def test_parse_value_never_evaluates_code():
    assert parse_value("[64, 32]") == [64, 32]
    assert parse_value("1e-3") == 0.001
    assert parse_value("True") is True and parse_value("false") is False
    assert parse_value("{'RS': [0.8, 0.1, 0.1]}") == {"RS": [0.8, 0.1, 0.1]}
    payload = "__import__('os').getcwd()"
    assert parse_value(payload) == payload  # a string, not the result of running it


def test_parse_cmd_args_is_strict():
    assert parse_cmd_args(["--epochs=3", "--learning_rate=0.01"]) == {"epochs": 3, "learning_rate": 0.01}
    with pytest.raises(ConfigError, match="given twice"):
        parse_cmd_args(["--epochs=3", "--epochs=4"])
    with pytest.raises(ConfigError, match="Malformed override 'epochs=3'"):
        parse_cmd_args(["epochs=3"])


def test_config_priority_cmd_over_dict_over_file(in_tmp):
    (in_tmp / "a.yaml").write_text("epochs: 7\nlearning_rate: 0.5\ntrain_batch_size: 99\n")
    config = Config("BPR", "ml-100k", config_file_list=["a.yaml"], config_dict={"learning_rate": 0.25, "epochs": 5},
                    cmd_args=["--epochs=3"])
    assert (config["epochs"], config["learning_rate"], config["train_batch_size"]) == (3, 0.25, 99)


def test_ml100k_embedded_default_and_user_copy(in_tmp):
    config = Config("BPR", "ml-100k", config_dict={"data_path": str(in_tmp / "data")}, cmd_args=[])
    assert config["data_path"].endswith("dataset_example/ml-100k")
    assert any("embedded" in notice for notice in config.notices)

    own = in_tmp / "data" / "ml-100k"
    own.mkdir(parents=True)
    shutil.copy(f"{embedded_dataset_dir('ml-100k')}/ml-100k.inter", own / "ml-100k.inter")
    config = Config("BPR", "ml-100k", config_dict={"data_path": str(in_tmp / "data")}, cmd_args=[])
    assert config["data_path"] == str(own) and not [n for n in config.notices if "embedded" in n]


def test_unknown_model_error_is_typed():
    with pytest.raises(ModelNotFoundError, match="Unknown model 'Nope'.*RecBole: .*BPR"):
        recbole_sid.get_model("Nope")
    with pytest.raises(ModelNotFoundError, match="needs the 'lightgbm' package"):
        recbole_sid.get_model("LightGBM") if __import__("importlib").util.find_spec("lightgbm") is None \
            else pytest.skip("lightgbm is installed here")


def test_register_model_applies_yaml(in_tmp):
    (in_tmp / "tiny.yaml").write_text("embedding_size: 5\n")
    recbole_sid.register_model(ApiTinyMF, in_tmp / "tiny.yaml")
    assert recbole_sid.get_model("ApiTinyMF") is ApiTinyMF
    assert "ApiTinyMF" in recbole_sid.available_models()["registered"]
    config = Config("ApiTinyMF", "ml-100k", config_dict=FAST, cmd_args=[])
    assert config["embedding_size"] == 5
    # user settings still win over registered defaults
    assert Config("ApiTinyMF", "ml-100k", config_dict={"embedding_size": 9}, cmd_args=[])["embedding_size"] == 9
    with pytest.raises(TypeError, match="RecBole model class"):
        recbole_sid.register_model(object)
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        recbole_sid.register_model(ApiTinyMF, in_tmp / "nothere.yaml")


def test_run_recbole_result_dict_and_reload(in_tmp):
    result = run_recbole(model="BPR", dataset="ml-100k", config_dict=dict(FAST), cmd_args=[])
    assert set(result) >= {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
    assert result["test_result"]["recall@10"] > 0

    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(result["model_file"])
    assert config["model"] == "BPR" and type(model).__name__ == "BPR"
    saved = torch.load(result["model_file"], weights_only=False)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key])

    again = run_recbole(model="BPR", dataset="ml-100k", config_dict=dict(FAST), cmd_args=[])
    assert again["test_result"] == result["test_result"]  # same seed and config -> same metrics


def test_model_class_can_be_passed(in_tmp):
    result = run_recbole(model=ApiTinyMF, dataset="ml-100k", config_dict=dict(FAST, embedding_size=4),
                         cmd_args=[], saved=False)
    assert result["test_result"]["recall@10"] >= 0


def test_registered_yaml_survives_a_change_of_folder(in_tmp, monkeypatch):
    """A plugin registers ``"MyMF.yaml"`` relative to where it was imported; a later chdir must not lose it."""
    import recbole_sid.utils as utils

    monkeypatch.setattr(utils, "_REGISTRY", dict(utils._REGISTRY))
    (in_tmp / "rel.yaml").write_text("embedding_size: 7\n")
    recbole_sid.register_model(ApiTinyMF, "rel.yaml")
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Config("ApiTinyMF", "ml-100k", config_dict=FAST, cmd_args=[])["embedding_size"] == 7
