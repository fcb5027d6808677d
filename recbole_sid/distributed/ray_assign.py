"""The assignment pass of large-catalogue tokenizing as Ray tasks (``python -m recbole_sid.tokenize --embeddings ...
--ray [--ray-address ADDRESS]``).

Each task opens its shard itself (from the shard's path: every node must see the input files, e.g. a shared file
system) and runs :func:`recbole_sid.quantization.streaming.assign_block` on one block, the same function on the same
blocks as the single-process pass, so the codes are the same. The codebooks go to the object store once. The driver
keeps at most ``max_in_flight`` tasks running and takes their codes in block order (the partition spill and the
output are then written exactly as by the single-process pass); a task returns only int32 codes, ``block_rows x L``.

``ray`` is imported only here and only when asked for: RecBole 1.2.1's pin, ray 2.6.3, cannot be imported with
setuptools >= 81 (``pkg_resources``) or numpy >= 2 (``np.bool8``); then the error says so.
"""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from recbole_sid.exceptions import ConfigError, RecBoleSIDError

_OPEN_SHARDS: dict = {}  # per worker process: shard spec -> opened shard (memory maps are reused across tasks)


def import_ray():
    """The ``ray`` module, or a ConfigError that says why it cannot be imported and what to do."""
    try:
        import ray
    except Exception as exc:  # ImportError, or AttributeError (np.bool8) from inside ray
        raise ConfigError(
            f"--ray needs the ray package, which cannot be imported here ({type(exc).__name__}: {exc}). RecBole "
            f"1.2.1 pins ray<=2.6.3, which needs setuptools<81 (pkg_resources) and numpy<2; install those, or a ray "
            f"release that works with this stack, or run without --ray (the same SIDs, in one process).") from exc
    return ray


def _assign_task(spec: dict, start: int, stop: int, codebooks, batch_size: int):
    from recbole_sid.quantization.streaming import assign_block, open_shard

    key = tuple(sorted(spec.items()))
    shard = _OPEN_SHARDS.get(key)
    if shard is None:
        shard = _OPEN_SHARDS[key] = open_shard(spec)
    return assign_block(shard, start, stop, codebooks, batch_size)


def _local_runtime_env() -> dict | None:
    """Local workers must import ``recbole_sid`` from where this process does: a source checkout that is not on
    PYTHONPATH is added to the workers' PYTHONPATH (None when nothing is needed)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if "site-packages" in package_parent or package_parent in {str(Path(p).resolve()) for p in paths}:
        return None
    return {"env_vars": {"PYTHONPATH": os.pathsep.join([package_parent] + paths)}}


def assign_blocks_ray(shards, blocks, codebooks, batch_size: int, address: str | None = None,
                      num_cpus: int | None = None, max_in_flight: int | None = None):
    """Yield ``((shard, start, stop), codes int32 [rows, L])`` for every block, in block order, computed by Ray
    tasks. ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``, ...); None: the Ray this process
    already joined, else a new local one with ``num_cpus`` CPUs."""
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env=_local_runtime_env())
        started_here = True
    try:
        task = ray.remote(num_cpus=1)(_assign_task)
        cpus = int(ray.available_resources().get("CPU", 1)) or 1
        window = max_in_flight or max(2, 2 * cpus)
        codebooks_ref = ray.put([cb for cb in codebooks])
        specs = [shard.spec() for shard in shards.shards]
        pending = deque()
        todo = iter(blocks)
        for block in todo:
            pending.append((block, task.remote(specs[block[0]], block[1], block[2], codebooks_ref, batch_size)))
            if len(pending) >= window:
                break
        while pending:
            block, ref = pending.popleft()
            try:
                codes = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, RecBoleSIDError):
                    raise cause from None
                raise
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, task.remote(specs[nxt[0]], nxt[1], nxt[2], codebooks_ref, batch_size)))
            yield block, codes
    finally:
        if started_here:
            ray.shutdown()
