"""One process of a distributed (DDP) run of the plugin's runner: what it does besides RecBole's own code.

RecBole's DDP (``Config._init_device``, ``AbstractTrainer``, ``DistributedSampler`` dataloaders,
``Trainer._map_reduce``) trains one replica per process on its share of every batch and averages the gradients.
The plugin's runner adds, for every model:

* one run name for every rank (each would draw its own, ``recbole_sid.runs``): the checkpoint and the SID folder are
  those of rank 0;
* rank 0 alone writes checkpoints (``recbole_sid.compat.checkpoints_from_rank_zero``), SIDs (``export_sids``,
  ``export_codes``) and results (the runner returns them to the launcher from rank 0 only);
* SID models: every rank runs phase 1 (the tokenizer) on the same data with the same seed, then rank 0's model state
  (SIDs, codebook-initialised head) is broadcast, so the replicas start phase 2 identical even where a tokenizer
  draws from a global random state that differs per rank (RecBole seeds each rank with ``seed + local_rank``);
* the best checkpoint is read by rank 0 and its state broadcast before testing, so no other rank (another node)
  needs the file;
* :func:`replica_report`: every rank's parameter checksum after training (identical when DDP kept them in sync).
"""
from __future__ import annotations

import functools
import os
from logging import getLogger

import torch
import torch.distributed as dist

from recbole_sid.compat import checkpoints_from_rank_zero, is_own_checkpoint, unwrap_state_dict


def is_distributed(config) -> bool:
    """Whether ``config`` belongs to a process of a distributed run (RecBole's ``single_spec`` is False)."""
    return config["single_spec"] is False


def global_rank(config) -> int:
    """This process's rank among all processes of all nodes: ``local_rank + offset`` (0 for a single process)."""
    if not is_distributed(config):
        return 0
    return int(config["local_rank"] or 0) + int(config["offset"] or 0)


def is_main_process(config) -> bool:
    return global_rank(config) == 0


def broadcast_object(obj, config):
    """``obj`` of rank 0, on every rank (unchanged on a single process)."""
    if not is_distributed(config):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_module_state(module: torch.nn.Module) -> None:
    """Every parameter and buffer of ``module`` set to rank 0's values (then ``load_state_dict`` so that models
    clear what they cache from their own state)."""
    state = module.state_dict()
    for tensor in state.values():
        if isinstance(tensor, torch.Tensor):
            dist.broadcast(tensor, src=0)
    module.load_state_dict(state)


def prepare_model(model, config) -> None:
    """Wrap the model's phase-1 and export methods for a distributed run (no-op for a single process)."""
    if not is_distributed(config):
        return
    main = is_main_process(config)
    if hasattr(model, "fit_tokenizer"):
        fit_tokenizer = model.fit_tokenizer

        @functools.wraps(fit_tokenizer)
        def fit_tokenizer_on_every_rank(*args, **kwargs):
            output = fit_tokenizer(*args, **kwargs)
            broadcast_module_state(model)  # rank 0's SIDs and head everywhere
            if main:
                getLogger().info("phase 1 (distributed): rank 0's SIDs and head broadcast to every rank")
            return output

        model.fit_tokenizer = fit_tokenizer_on_every_rank
    for name in ("export_sids", "export_codes"):
        method = getattr(model, name, None)
        if method is None or main:
            continue

        def skipped(*args, **kwargs):  # rank 0 alone writes files
            return {}

        setattr(model, name, skipped)


def prepare_trainer(trainer, config) -> None:
    """Rank 0's run name (checkpoint and SID folder) on every rank; rank 0 alone writes checkpoints."""
    if not is_distributed(config):
        return
    name = broadcast_object(getattr(trainer, "run_name", None), config)
    if name:
        trainer.run_name = name
        trainer.saved_model_file = os.path.join(trainer.checkpoint_dir, f"{name}.pth")
    checkpoints_from_rank_zero(trainer, global_rank(config))


def load_best_model(trainer, config) -> None:
    """Rank 0 reads the best checkpoint of this run and every rank gets its state (replaces RecBole's
    ``evaluate(load_best_model=True)``, in which every rank reads the file, which other nodes may not have)."""
    dist.barrier()  # rank 0 has finished writing
    payload = None
    if is_main_process(config):
        path = trainer.saved_model_file
        # our own run's checkpoint (rank 0 wrote it moments ago): it pickles RecBole's Config, as RecBole's do
        kwargs = {"weights_only": False} if is_own_checkpoint(path) else {}
        checkpoint = torch.load(path, map_location=config["device"], **kwargs)
        trainer.model.load_state_dict(unwrap_state_dict(checkpoint["state_dict"]))
        payload = checkpoint.get("other_parameter")
        trainer.logger.info(f"Loading model structure and parameters from {path} (rank 0, then broadcast)")
    other = broadcast_object(payload, config)
    broadcast_module_state(trainer.model)
    trainer.model.load_other_parameter(other)


def replica_report(model, config) -> dict | None:
    """``{"world_size", "backend", "rank", "replica_checksums"}``: every rank's sum of its parameters (float64),
    gathered; equal values mean the replicas stayed identical. None for a single process."""
    if not is_distributed(config):
        return None
    with torch.no_grad():
        total = sum((p.detach().double().sum() for p in model.parameters()), torch.zeros((), dtype=torch.float64))
    total = total.to(config["device"]).reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    return {"world_size": dist.get_world_size(), "backend": str(dist.get_backend()), "rank": global_rank(config),
            "replica_checksums": [float(t.item()) for t in gathered]}
