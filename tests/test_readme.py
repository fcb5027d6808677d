"""Every Python block of the README runs as written (on a small budget: the runner's epochs are cut)."""
import re
import sys
from pathlib import Path

import pytest

from conftest import REPO

#: keys merged into every run a README block starts, so that the blocks run in seconds; the code stays as written
FAST = {"epochs": 1, "tokenizer_epochs": 2, "cf_epochs": 1, "adapter_epochs": 1, "das_rqvae_pretrain_epochs": 1,
        "das_icdm_pretrain_epochs": 1, "das_joint_epochs": 1, "show_progress": False}


def python_blocks():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text[: match.start()].count("\n") + 2
        blocks.append(pytest.param(match.group(1), line, id=f"README.md:{line}"))
    return blocks


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 5


@pytest.mark.parametrize("code, line", python_blocks())
def test_readme_python_block_runs(code, line, in_tmp, monkeypatch):
    import recbole_sid.quick_start as quick_start
    import recbole_sid.utils as utils

    monkeypatch.setattr(utils, "_REGISTRY", dict(utils._REGISTRY))  # a block's register_model stays in this test
    run = quick_start.run_recbole

    def fast_run(*args, config_dict=None, **kwargs):
        return run(*args, config_dict={**(config_dict or {}), **FAST,
                                       "semantic_cache_dir": str(in_tmp / "cache")}, **kwargs)

    monkeypatch.setattr(quick_start, "run_recbole", fast_run)
    monkeypatch.setattr(sys, "argv", ["readme"])
    Path("MyMF.yaml").write_text("embedding_size: 32\n")  # the yaml file the registering example names
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_block"})
