"""The run_recbole console script, launched as a subprocess: RecBole baselines end to end, and bad input."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import PYTHON, cli_env


def run_cli(args, cwd, env=None, timeout=600):
    """``python -m recbole_sid ARGS`` in ``cwd``; returns the CompletedProcess (stdout and stderr as text)."""
    return subprocess.run([PYTHON, "-m", "recbole_sid", *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("run_recbole")
    found = script if script.exists() else shutil.which("run_recbole")
    assert found, "the run_recbole console script is not installed next to this interpreter"
    out = subprocess.run([str(found), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for flag in ("--model", "--dataset", "--config_files", "--nproc", "--ip", "--port", "--world_size",
                 "--group_offset"):
        assert flag in out.stdout


def _metrics(stdout, line_name):
    line = next(ln for ln in stdout.splitlines() if ln.startswith(line_name))
    return dict((k, float(v)) for k, v in re.findall(r"([\w@]+): ([0-9.]+)", line))


@pytest.mark.parametrize("model", ["BPR", "LightGCN"])
def test_topk_baselines_run_end_to_end(model, in_tmp):
    out = run_cli([f"--model={model}", "--dataset=ml-100k", "--epochs=1", "--show_progress=False"], in_tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    test = _metrics(out.stdout, "test result")
    assert set(test) >= {"recall@10", "ndcg@10", "mrr@10", "hit@10"}
    assert 0.0 < test["recall@10"] < 1.0
    assert "using the copy embedded in the installed recbole package" in out.stderr
    assert list((in_tmp / "saved").glob(f"{model}-*.pth")), "no checkpoint written"


def test_ctr_baseline_deepfm_runs_end_to_end(in_tmp):
    out = run_cli(["-m", "DeepFM", "-d", "ml-100k", "--epochs=1", "--show_progress=False"], in_tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    test = _metrics(out.stdout, "test result")
    assert set(test) == {"auc", "gauc", "logloss"}  # GAUC: recbole_sid.evaluation.gauc
    assert 0.5 < test["auc"] < 1.0 and 0.0 < test["gauc"] < 1.0
    # RecBole's context-aware ml-100k quick-start config is applied (labels from rating >= 4).
    assert "threshold = {'rating': 4}" in out.stderr


def test_unknown_model_lists_available_models(in_tmp):
    out = run_cli(["--model=NoSuchModel"], in_tmp)
    assert out.returncode == 2
    assert "Unknown model 'NoSuchModel'" in out.stderr
    import recbole_sid

    for name in recbole_sid.available_models()["recbole_sid"] + ["LightGCN", "DeepFM"]:
        assert name in out.stderr
    assert "Traceback" not in out.stderr and "ModuleNotFoundError" not in out.stderr


def test_wrong_case_model_suggests_spelling(in_tmp):
    out = run_cli(["--model=lightgcn"], in_tmp)
    assert out.returncode == 2
    assert "Did you mean" in out.stderr and "LightGCN" in out.stderr


def test_unknown_dataset_fails_without_download(in_tmp):
    out = run_cli(["--model=BPR", "--dataset=no-such-data"], in_tmp)
    assert out.returncode == 2
    assert "Dataset 'no-such-data' not found" in out.stderr
    assert "never downloads" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (in_tmp / "dataset" / "no-such-data").exists()


def test_missing_config_file(in_tmp):
    out = run_cli(["--model=BPR", "--config_files=missing.yaml"], in_tmp)
    assert out.returncode == 2
    assert "Config file not found: missing.yaml" in out.stderr


def test_invalid_yaml_config_file(in_tmp):
    (in_tmp / "bad.yaml").write_text("epochs: [1, 2\n")
    out = run_cli(["--model=BPR", "--config_files=bad.yaml"], in_tmp)
    assert out.returncode == 2
    assert "bad.yaml is not valid YAML" in out.stderr


@pytest.mark.parametrize("bad", ["--epochs", "epochs=3", "--=3", "--epochs=", "-x"])
def test_malformed_override(bad, in_tmp):
    out = run_cli(["--model=BPR", bad], in_tmp)
    assert out.returncode == 2, out.stderr
    assert "Malformed override" in out.stderr
    assert "Traceback" not in out.stderr


def test_registered_model_runs_by_name_with_its_yaml(in_tmp):
    """A model defined outside the plugin, added with register_model, runs through the CLI by name."""
    (in_tmp / "tiny_ext.yaml").write_text("embedding_size: 7\ntiny_marker: from-yaml\n")
    (in_tmp / "tiny_ext.py").write_text(textwrap.dedent('''
        import os
        import torch
        from recbole.model.abstract_recommender import GeneralRecommender
        from recbole.utils import InputType
        import recbole_sid

        class TinyMF(GeneralRecommender):
            input_type = InputType.PAIRWISE

            def __init__(self, config, dataset):
                super().__init__(config, dataset)
                assert config["tiny_marker"] == "from-yaml", config["tiny_marker"]
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

        recbole_sid.register_model(TinyMF, os.path.join(os.path.dirname(__file__), "tiny_ext.yaml"))
    '''))
    env = cli_env(PYTHONPATH=os.pathsep.join([str(in_tmp), cli_env()["PYTHONPATH"]]))
    out = run_cli(["--model=TinyMF", "--plugin=tiny_ext", "--epochs=1", "--show_progress=False"], in_tmp, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedding_size = 7" in out.stderr
    assert "(user_emb): Embedding(944, 7)" in out.stderr
    assert _metrics(out.stdout, "test result")["recall@10"] > 0

    listed = run_cli(["--plugin=tiny_ext", "--list-models"], in_tmp, env=env)
    assert "registered: TinyMF" in listed.stdout
    missing = run_cli(["--plugin=not_a_module_xyz", "--model=BPR"], in_tmp)
    assert missing.returncode == 2 and "not_a_module_xyz" in missing.stderr
