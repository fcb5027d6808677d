"""``run_recbole --plugin MODULE`` (and RECBOLE_SID_PLUGINS) from the folder holding MODULE.py, through the console
script (which, unlike ``python -m``, does not put the current folder on sys.path)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import recbole_sid
from recbole_sid.exceptions import PluginError

from conftest import cli_env

PLUGIN = textwrap.dedent('''
    import torch
    from recbole.model.abstract_recommender import GeneralRecommender
    from recbole.utils import InputType
    import recbole_sid

    class FolderMF(GeneralRecommender):
        input_type = InputType.PAIRWISE

        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            self.w = torch.nn.Embedding(self.n_items, 4)

    recbole_sid.register_model(FolderMF)
''')


def console_script() -> str:
    script = Path(sys.executable).with_name("run_recbole")
    found = str(script) if script.exists() else shutil.which("run_recbole")
    assert found, "the run_recbole console script is not installed next to this interpreter"
    return found


def run_script(args, cwd, **env):
    environ = cli_env(**env)
    assert str(cwd) not in environ["PYTHONPATH"].split(os.pathsep)  # only the script's own lookup can find it
    return subprocess.run([console_script(), *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=300)


def test_plugins_in_the_current_folder_are_found(tmp_path):
    (tmp_path / "my_models.py").write_text(PLUGIN)
    (tmp_path / "env_models.py").write_text(PLUGIN.replace("FolderMF", "EnvMF"))
    out = run_script(["--plugin", "my_models", "--list-models"], tmp_path, RECBOLE_SID_PLUGINS="env_models")
    assert out.returncode == 0, out.stderr
    assert "registered: EnvMF, FolderMF" in out.stdout


def test_error_inside_a_plugin_is_one_paragraph_exit_2(tmp_path):
    (tmp_path / "bad_plugin.py").write_text("x = 1\nundefined_name + 1\n")
    out = run_script(["--plugin", "bad_plugin", "--model=BPR"], tmp_path)
    assert out.returncode == 2, out.stderr
    err = " ".join(out.stderr.split())
    assert err.startswith("run_recbole: error: Plugin module 'bad_plugin'") and "Traceback" not in err
    assert "NameError: name 'undefined_name' is not defined" in err and "bad_plugin.py, line 2" in err
    missing = run_script(["--plugin", "no_such_plugin_xyz"], tmp_path)
    assert missing.returncode == 2
    assert "Plugin module 'no_such_plugin_xyz'" in missing.stderr and "not found" in missing.stderr


@pytest.mark.parametrize("body, error, line", [
    ("import recbole_sid\nrecbole_sid.register_model(object)\n", "TypeError: register_model expects", 2),
    ("import os\nimport not_installed_pkg_xyz\n", "ModuleNotFoundError: No module named 'not_installed_pkg_xyz'", 2),
    ("\n\ndef broken(:\n", "SyntaxError", 3),
])
def test_plugin_errors_name_the_plugin_the_error_and_the_line(tmp_path, monkeypatch, body, error, line):
    name = f"bad_plugin_{abs(hash(body))}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as err:
        recbole_sid.import_plugins([name])
    message = str(err.value)
    assert f"Plugin module '{name}'" in message and error in message
    assert f"{name}.py, line {line}" in message
