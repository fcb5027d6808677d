"""After ``import recbole_sid``, RecBole's own entry points find the plugin's models (and their yaml defaults)."""
import subprocess
import sys

import pytest

import recbole_sid
from recbole_sid import cli, utils
from recbole_sid.exceptions import ConfigError, ModelNotFoundError


def test_recbole_get_model_and_get_trainer_find_plugin_models():
    import recbole.config.configurator
    import recbole.utils
    import recbole.utils.utils
    from recbole.utils import ModelType

    for module in (recbole.utils, recbole.utils.utils, recbole.config.configurator):
        assert module.get_model("DAS") is recbole_sid.get_model("DAS")
    assert recbole.utils.get_model("DAS").__module__ == "recbole_sid.model.general_recommender.das"
    assert recbole.utils.get_model("BPR").__module__ == "recbole.model.general_recommender.bpr"
    assert recbole.utils.get_trainer(ModelType.GENERAL, "RQVAE").__name__ == "SIDTrainer"
    assert recbole.utils.get_trainer(ModelType.GENERAL, "BPR").__name__ == "Trainer"
    with pytest.raises(ValueError, match="Unknown model 'NoSuchModel'"):
        recbole.utils.get_model("NoSuchModel")
    recbole_sid.register_with_recbole()  # idempotent: RecBole's originals stay reachable, no recursion
    assert utils.recbole_original("get_model") is not recbole_sid.get_model
    assert recbole.utils.get_trainer(ModelType.GENERAL, "BPR").__name__ == "Trainer"


def test_recbole_config_loads_the_plugin_yaml_defaults():
    from recbole.config import Config as RecBoleConfig

    by_name = RecBoleConfig(model="DAS", dataset="ml-100k", config_dict={"epochs": 3, "show_progress": False})
    by_class = RecBoleConfig(model=recbole_sid.get_model("DAS"), dataset="ml-100k",
                             config_dict={"show_progress": False})
    for config in (by_name, by_class):
        assert config["sid_levels"] == 3  # properties/quick_start_config/general.yaml
        assert config["das_align_u2i"] is True  # properties/model/DAS.yaml
        assert config["semantic_encoder"] == "tfidf"  # properties/overall.yaml
    assert by_name["epochs"] == 3
    # RecBole's own models keep RecBole's own defaults in RecBole's Config
    assert "sid_levels" not in RecBoleConfig(model="BPR", dataset="ml-100k", config_dict={"show_progress": False})


def test_import_recbole_quick_start_works_or_names_the_plugin_runner():
    code = (
        "import recbole_sid\n"
        "try:\n"
        "    import recbole.quick_start as qs\n"
        "except ImportError as exc:\n"
        "    print('ImportError', str(exc))\n"
        "else:\n"
        "    import recbole.quick_start.quick_start as inner\n"
        "    print('imported', inner.get_model is recbole_sid.get_model, inner.get_trainer is recbole_sid.get_trainer)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith("ImportError"):
        assert "recbole_sid.quick_start.run_recbole" in out.stdout and "run_recbole console script" in out.stdout
    else:
        assert out.stdout.split() == ["imported", "True", "True"]


@pytest.mark.parametrize("model", sorted(utils.OPTIONAL_DEPENDENCIES))
def test_optional_dependencies_are_checked_up_front(model):
    missing = [m for m, _ in utils.OPTIONAL_DEPENDENCIES[model] if not utils._module_available(m)]
    if missing:
        with pytest.raises(ModelNotFoundError, match=f"RecBole's {model} model needs the '{missing[0]}' package"):
            recbole_sid.get_model(model)
    else:
        assert recbole_sid.get_model(model).__name__ == model


def test_missing_dependency_stops_the_cli_before_loading_data(in_tmp, monkeypatch, capsys):
    monkeypatch.setattr(utils, "_module_available", lambda module: module != "torch_scatter")
    assert cli.main(["--model=KGIN", "--dataset=ml-100k"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "KGIN model needs the 'torch_scatter' package" in err and "pip install torch-scatter" in err
    assert not (in_tmp / "log").exists()
    assert recbole_sid.get_model("KGAT").__name__ == "KGAT"  # dgl reported present by the patched check


def test_setting_dependent_dependencies_are_checked_on_the_config(in_tmp, monkeypatch):
    from recbole_sid.config import Config

    monkeypatch.setattr(utils, "_module_available", lambda module: module != "community")
    assert Config("NNCF", "ml-100k", cmd_args=[])["neigh_info_method"] == "random"
    with pytest.raises(ConfigError, match=r"NNCF with neigh_info_method = 'louvain' needs the 'community' package"
                                          r".*pip install python-louvain"):
        Config("NNCF", "ml-100k", cmd_args=["--neigh_info_method=louvain"])
