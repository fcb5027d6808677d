"""``recbole_sid.runs.cell_lock``: two leaderboard processes over one ``--out`` never run the same cell at once."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time

import pytest

from recbole_sid import leaderboard
from recbole_sid.atomic_io import _HOST
from recbole_sid.exceptions import DataError
from recbole_sid.runs import cell_lock


def _wait_for(path, seconds=60.0):
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def test_free_lock_is_held_during_the_body_and_released_after_an_error(tmp_path):
    lock = tmp_path / "cell.lock"
    with cell_lock(lock):
        holder = json.loads(lock.read_text())
        assert holder["host"] == _HOST and holder["pid"] > 0
    assert not lock.exists()
    with pytest.raises(RuntimeError):
        with cell_lock(lock):
            raise RuntimeError("the cell failed")
    assert not lock.exists()


def test_a_gone_holder_is_taken_over_and_logged(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "cell.lock"
    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": _HOST}))
    said = []
    with cell_lock(lock, poll=0.01, log=said.append):
        assert json.loads(lock.read_text())["pid"] != int(gone.stdout)
    assert len(said) == 1 and "is gone" in said[0] and str(lock) in said[0]


def test_a_live_holder_is_waited_for(tmp_path):
    """Another process holds the lock: this one enters only after that one released it (no timing involved: the
    holder writes 'released' before it lets go)."""
    lock, held, released = tmp_path / "cell.lock", tmp_path / "held", tmp_path / "released"
    code = (f"import time, pathlib; from recbole_sid.runs import cell_lock\n"
            f"with cell_lock({str(lock)!r}):\n"
            f"    pathlib.Path({str(held)!r}).touch(); time.sleep(0.5); pathlib.Path({str(released)!r}).touch()\n")
    holder = subprocess.Popen([sys.executable, "-c", code])
    try:
        _wait_for(held)
        said = []
        with cell_lock(lock, poll=0.02, log=said.append):
            assert released.exists()
        assert len(said) == 1 and f"pid {holder.pid} is running this cell" in said[0]
    finally:
        holder.wait(timeout=60)
    assert holder.returncode == 0


def test_a_lock_from_another_host_is_refused_with_the_file_named(tmp_path):
    lock = tmp_path / "cell.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "some-other-node"}))
    with pytest.raises(DataError, match=r"cell\.lock: held by pid 1 on host some-other-node"):
        with cell_lock(lock, poll=0.01):
            pass


def test_grid_waits_for_a_running_cell_and_reuses_its_record(tmp_path, monkeypatch):
    """The second grid process finds the cell locked, waits, then reads the first one's record: it runs nothing."""
    monkeypatch.setattr(leaderboard, "cell_lock", functools.partial(cell_lock, poll=0.02))
    grid = leaderboard.Grid(tmp_path, "data", {"epochs": 3})
    monkeypatch.setattr(grid, "_run_locked", lambda *a, **k: pytest.fail("the cell ran twice"))
    run_dir = tmp_path / "tiny" / "runs" / leaderboard.cell_name("BPR", 2020, None)
    run_dir.mkdir(parents=True)
    path = leaderboard.cell_path(tmp_path, "tiny", "BPR", 2020)
    path.parent.mkdir(parents=True)
    inside = threading.Event()

    def first_process():
        with cell_lock(run_dir / "cell.lock"):
            inside.set()
            time.sleep(0.3)
            path.write_text(json.dumps({"status": "ok", "config": {"epochs": 3}, "test_result": {"recall@10": 0.5}}))

    thread = threading.Thread(target=first_process)
    thread.start()
    inside.wait(timeout=30)
    try:
        record = grid.run("tiny", "BPR", 2020)
    finally:
        thread.join()
    assert record["test_result"] == {"recall@10": 0.5}
    assert not (run_dir / "cell.lock").exists()


def test_a_file_that_is_no_lock_of_ours_is_refused_not_waited_on(tmp_path):
    lock = tmp_path / "cell.lock"
    lock.write_text("")
    with pytest.raises(DataError, match=r"cell\.lock: not a lock file this plugin wrote"):
        with cell_lock(lock, poll=0.01):
            pass
    assert lock.exists() and not list(tmp_path.glob(".cell.lock.*"))  # its own staging file is gone too
