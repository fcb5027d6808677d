"""One name per run: every run writes its own checkpoint and SID files, so two runs never share an output file.

RecBole names a checkpoint ``<Model>-<local time to the second>.pth``: two runs started in the same second (two
seeds at once, a leaderboard and a manual run) write the same file, and each reloads whatever was written last.
A run here is named ``<Model>-<local time>-<pid>-<random>``; its checkpoint is ``<checkpoint_dir>/<run>.pth`` and
its SID files go to ``<sid_export_dir or checkpoint_dir>/<run>/``.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def new_run_name(model: str) -> str:
    from recbole.utils import get_local_time

    return f"{model}-{get_local_time()}-{os.getpid()}-{secrets.token_hex(3)}"


def name_run(trainer, config) -> str:
    """Give ``trainer`` a checkpoint file of its own (once; idempotent) and return the run's name."""
    existing = getattr(trainer, "run_name", None)
    if existing:
        return existing
    name = new_run_name(str(config["model"]))
    trainer.run_name = name
    trainer.saved_model_file = os.path.join(trainer.checkpoint_dir, f"{name}.pth")
    return name


def run_folder(config, run_name: str) -> Path:
    """Where a run's SID files go: ``<sid_export_dir or checkpoint_dir>/<run name>/``."""
    try:
        base = config["sid_export_dir"]
    except (KeyError, TypeError):
        base = None
    return Path(base or config["checkpoint_dir"]) / run_name
