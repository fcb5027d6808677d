"""The compatibility shims: each one repairs what it says, and only where the stack needs it."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import recbole_sid
from recbole_sid import compat


def test_numpy_aliases_make_recbole_config_work():
    for alias in ("float_", "complex_", "unicode_"):
        assert hasattr(np, alias)
    from recbole.config import Config

    config = Config(model="BPR", dataset="ml-100k", config_dict={"show_progress": False})
    assert config["model"] == "BPR"
    assert np.float is float or np.float is np.float64  # what RecBole's metrics use after Config()


def test_shims_are_idempotent():
    before = np.float_
    assert all(v is False for v in compat.apply().values())
    assert np.float_ is before


def test_dok_update_bulk_inserts():
    from scipy.sparse import dok_matrix

    matrix = dok_matrix((3, 4), dtype=np.float32)
    matrix._update({(0, 1): 1.0, (2, 3): 0.5})
    dense = matrix.toarray()
    assert dense[0, 1] == 1.0 and dense[2, 3] == 0.5 and dense.sum() == 1.5


def test_no_ray_import():
    code = ("import sys, recbole_sid, recbole_sid.quick_start, recbole_sid.cli; "
            "print('ray' in sys.modules, 'recbole.quick_start' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not compat.torch_needs_checkpoint_shim(), reason="torch < 2.6 loads checkpoints unrestricted")
def test_trainer_loads_own_checkpoints_only(tmp_path):
    import recbole.trainer.trainer as trainer_module

    proxy = trainer_module.torch
    assert isinstance(proxy, compat._TrainerTorch)
    assert proxy.zeros(2).shape == (2,)  # everything else is torch itself
    assert torch.load is not proxy.load  # torch itself is untouched

    state = {"config": {"model": compat._TrainerTorch}, "state_dict": {"w": torch.ones(1)}}
    own = tmp_path / "own.pth"
    proxy.save(state, own)
    assert proxy.load(own)["state_dict"]["w"].item() == 1.0

    foreign = tmp_path / "foreign.pth"
    torch.save(state, foreign)  # not written through the trainer: torch's safe default still applies
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        proxy.load(foreign)


def test_version_tuple():
    assert compat._version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert compat._version_tuple("2.6.0a0") == (2, 6, 0)
    assert compat._version_tuple("1.26.4") >= (1, 24)


def test_package_exports():
    for name in ("register_model", "get_model", "get_trainer", "available_models", "ModelNotFoundError"):
        assert hasattr(recbole_sid, name)
