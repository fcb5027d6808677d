"""Beyond one process: distributed training through the plugin's runner, and Ray for large-catalogue tokenizing.

- :mod:`recbole_sid.distributed.ddp`: what one process of a distributed (DDP) run does besides RecBole's own code:
  its global rank, one run name for every rank, phase 1 of SID models made identical on every rank, rank 0 alone
  writing SIDs, checkpoints and results, the best model handed to every rank without reading the file.
- :mod:`recbole_sid.distributed.launch`: starting the processes: ``--nproc`` local processes
  (``torch.multiprocessing.spawn``), one of several nodes (``--world_size``, ``--group_offset``, ``--ip``,
  ``--port``), or one process started by torchrun (its RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK).
- :mod:`recbole_sid.distributed.ray_assign`: the streaming SID assignment of ``recbole_sid.tokenize --embeddings`` as
  Ray tasks over shards (imports ray only when used).

The RecBole workarounds these rely on (the gloo backend on the CPU, DDP without ``device_ids`` on the CPU, reloading a
checkpoint of a distributed run, rank-0-only checkpoints) are shims in :mod:`recbole_sid.compat`.
"""
from recbole_sid.distributed.launch import DistributedRunError, TORCHRUN_ENV, torchrun_environment

__all__ = ["DistributedRunError", "TORCHRUN_ENV", "torchrun_environment"]
