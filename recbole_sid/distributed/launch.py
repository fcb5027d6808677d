"""Starting the processes of a distributed run of the plugin's runner.

Three ways, the same run (see ``docs/scale.md``):

* ``run_recbole --nproc=N``: N processes on this machine, started with ``torch.multiprocessing.spawn`` (RecBole's
  way); NCCL on CUDA GPUs, gloo on the CPU (``recbole_sid.compat.init_distributed_device``);
* several nodes with RecBole's flags: on each node ``--nproc`` processes, ``--world_size`` processes in all, this
  node's first global rank ``--group_offset``, rank 0's node at ``--ip``/``--port``;
* torchrun (``torchrun --nproc_per_node=N -m recbole_sid ...``): each process is started by torchrun and reads its
  place from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (and LOCAL_WORLD_SIZE); it initialises from the
  environment (``env://``).
"""
from __future__ import annotations

import os

from recbole_sid.exceptions import ConfigError, RecBoleSIDError

#: the variables torchrun gives each process it starts (LOCAL_WORLD_SIZE too, read when present)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedRunError(RecBoleSIDError, RuntimeError):
    """A process of a distributed run failed (the message is that process's error)."""


def _int_variable(environ, name: str, minimum: int) -> int:
    text = environ.get(name, "")
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"environment variable {name}={text!r}: expected an integer >= {minimum} (set by torchrun "
                          f"for each process it starts)")
    return value


def torchrun_environment(environ=None) -> dict | None:
    """The config keys of a process started by torchrun (or another launcher that sets its variables):
    ``{"local_rank", "offset", "world_size", "nproc", "ip", "port"}``.

    None when RANK or WORLD_SIZE is not set, or WORLD_SIZE is 1 (a plain single-process run). With RANK and
    WORLD_SIZE set, the other variables must be set too; a missing or malformed one is a ConfigError naming it.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("RANK") or not environ.get("WORLD_SIZE"):
        return None
    missing = [name for name in TORCHRUN_ENV if not environ.get(name)]
    if missing:
        raise ConfigError(f"RANK and WORLD_SIZE are set, so this process is one of a distributed run started by "
                          f"torchrun (or a launcher like it), but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set. Start it with torchrun, or unset RANK "
                          f"and WORLD_SIZE for a single-process run.")
    world_size = _int_variable(environ, "WORLD_SIZE", 1)
    if world_size == 1:
        return None
    rank = _int_variable(environ, "RANK", 0)
    local_rank = _int_variable(environ, "LOCAL_RANK", 0)
    if rank >= world_size or local_rank > rank:
        raise ConfigError(f"RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world_size}: need "
                          f"LOCAL_RANK <= RANK < WORLD_SIZE")
    local_world = local_rank + 1
    if environ.get("LOCAL_WORLD_SIZE"):
        local_world = max(local_world, _int_variable(environ, "LOCAL_WORLD_SIZE", 1))
    _int_variable(environ, "MASTER_PORT", 1)
    return {"local_rank": local_rank, "offset": rank - local_rank, "world_size": world_size, "nproc": local_world,
            "ip": environ["MASTER_ADDR"], "port": environ["MASTER_PORT"]}


def check_process_layout(nproc: int, world_size: int, group_offset: int) -> None:
    """``--nproc`` processes here, ranks ``group_offset`` .. ``group_offset + nproc - 1`` of ``world_size``."""
    if nproc < 1:
        raise ConfigError(f"--nproc={nproc}: the number of processes on this node must be at least 1")
    if group_offset < 0 or group_offset + nproc > world_size:
        raise ConfigError(f"--nproc={nproc} --group_offset={group_offset} --world_size={world_size}: this node's "
                          f"ranks {group_offset}..{group_offset + nproc - 1} must lie in 0..{world_size - 1} "
                          f"(--world_size counts the processes of every node)")


def spawn(entry, nproc: int, args: tuple) -> None:
    """``torch.multiprocessing.spawn(entry, args, nproc)``; a failed process becomes a DistributedRunError that
    carries its error message (the other processes are stopped by torch)."""
    import torch.multiprocessing as mp

    try:
        mp.spawn(entry, args=args, nprocs=nproc, join=True)
    except mp.ProcessRaisedException as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise DistributedRunError(f"a process of the distributed run failed: {lines[-1] if lines else exc} "
                                  f"(set RECBOLE_SID_DEBUG=1 for its traceback)") from exc
    except mp.ProcessExitedException as exc:
        raise DistributedRunError(f"a process of the distributed run died: {exc}") from exc
