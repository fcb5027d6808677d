"""One name per run: every run writes its own checkpoint and SID files, so two runs never share an output file.

RecBole names a checkpoint ``<Model>-<local time to the second>.pth``: two runs started in the same second (two
seeds at once, a leaderboard and a manual run) write the same file, and each reloads whatever was written last.
A run here is named ``<Model>-<local time>-<pid>-<random>``; its checkpoint is ``<checkpoint_dir>/<run>.pth`` and
its SID files go to ``<sid_export_dir or checkpoint_dir>/<run>/``.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
from contextlib import contextmanager
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


@contextmanager
def cell_lock(path, poll: float = 10.0, log=None):
    """Hold ``path`` (a leaderboard cell's lock file) while the body runs, so that two grid processes over one
    ``--out`` never run the same cell at once (they would share its run folder, logs and cell file).

    The file is created exclusively and records the holder's pid and host. While another live process on this
    host holds it, wait (checking every ``poll`` s; said once through ``log``), then take it: the caller then
    reads the holder's finished cell. A lock left by a process that is gone is taken over, and ``log`` says so.
    A lock from another host cannot be checked from here: DataError naming the file and its holder."""
    from recbole_sid.atomic_io import _HOST, _process_alive
    from recbole_sid.exceptions import DataError

    path = Path(path)
    say = log or (lambda message: None)
    # written whole to a file of this process and thread (named like atomic_io's temporary files, so a killed
    # writer's is cleaned up), then hard-linked to ``path``, which fails if it exists: no reader ever sees a lock
    # file without its holder
    mine = path.with_name(f".{path.name}.{os.getpid()}@{_HOST}.{threading.get_ident()}.tmp")
    mine.write_text(json.dumps({"pid": os.getpid(), "host": _HOST, "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    waited = False
    try:
        while True:
            try:
                os.link(mine, path)
                break
            except FileExistsError:
                pass
            try:
                holder = json.loads(path.read_text())
                pid, host = holder["pid"], holder["host"]
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path}: not a lock file this plugin wrote ({exc}); delete it if no grid process "
                                f"runs this cell") from exc
            if host == _HOST and not _process_alive(pid):
                say(f"{path}: its holder (pid {pid}) is gone without finishing; taking the lock over")
                path.unlink(missing_ok=True)
                continue
            if host != _HOST:
                raise DataError(f"{path}: held by pid {pid} on host {host}, which this host cannot check; wait for "
                                f"that run, or delete the file if it is gone")
            if not waited:
                say(f"{path}: pid {pid} is running this cell; waiting for it")
                waited = True
            time.sleep(poll)
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
