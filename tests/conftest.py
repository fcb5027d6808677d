"""Shared fixtures: a scratch working directory (RecBole writes log/ and saved/ into the cwd) and shared data."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``$RECBOLE_SID_SHARED_DATA``."""
    return Path(os.environ.get("RECBOLE_SID_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside an empty temporary directory (RecBole writes ./log and ./saved)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def amazon_dir():
    path = shared_data_dir() / "amazon-scientific"
    if not (path / "Scientific.inter.json").is_file():
        pytest.skip(f"amazon-scientific benchmark data not found at {path} (set RECBOLE_SID_SHARED_DATA)")
    return path


def cli_env(**extra):
    """Environment for CLI subprocesses: the source tree importable, quiet progress bars."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update({k: str(v) for k, v in extra.items()})
    return env


PYTHON = sys.executable
