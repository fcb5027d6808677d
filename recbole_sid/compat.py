"""Compatibility shims for RecBole 1.2.1 on today's Python stack, all in one place.

Each shim says what breaks, on which versions, and when it can be deleted. ``apply()`` installs every shim
that the running stack needs and is idempotent; ``import recbole_sid`` calls it. Nothing here copies RecBole
code: the shims add a missing name back or wrap one call.

Not a shim but a bound (setup.cfg): pandas < 3. Under pandas 3 RecBole 1.2.1 fails to load ``token_seq``
fields ("Length of values (1) does not match length of index") and its chained
``df[field].fillna(..., inplace=True)`` silently does nothing under copy-on-write, so missing values stay NaN.
That is a data-correctness problem, not a missing name, so we refuse pandas 3 rather than patch around it.

Not a shim but a rule: the plugin never imports ``recbole.quick_start``. That module imports ``ray`` at
module level; ray 2.6.3 (RecBole's pin) imports ``pkg_resources`` (gone in setuptools >= 81) and uses
``np.bool8`` (gone in numpy >= 1.24/2.0). ``recbole_sid.quick_start`` is our own runner instead. When the user's
own script imports it, :func:`explain_quick_start_import` turns the failure into an error that says so.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import types
import warnings

_APPLIED: set[str] = set()


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


# --- numpy >= 2.0 -----------------------------------------------------------------------------------------
# Breaks: RecBole 1.2.1 ``Config.compatibility_settings`` reads ``np.float_``, ``np.complex_`` and
# ``np.unicode_`` (removed in numpy 2.0) to re-create ``np.float``/``np.int``/... which its metrics
# (``np.float``), ``Interaction`` and ``Dataset`` use. Every ``Config(...)`` raises AttributeError.
# Fix upstream: RecBole master drops the aliases; delete this shim when the plugin requires a RecBole that
# no longer calls ``compatibility_settings`` (none released as of 1.2.1).
_NUMPY_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


def numpy_aliases() -> bool:
    """Re-add the numpy 1.x aliases that RecBole's Config needs; returns True when anything was added."""
    import numpy as np

    added = False
    for alias, target in _NUMPY_ALIASES.items():
        if alias in np.__dict__:
            continue
        try:
            getattr(np, alias)
        except AttributeError:
            setattr(np, alias, getattr(np, target))
            added = True
    return added


# --- scipy >= 1.13 ----------------------------------------------------------------------------------------
# Breaks: RecBole 1.2.1 LightGCN, NGCF, NCL, SGL (via its graph), GCMC, SpectralCF, KGIN and MCCLK build their
# adjacency with ``dok_matrix._update(dict)``, a private method removed in scipy 1.13 (dok no longer
# subclasses dict's update path). Fix upstream: RecBole PR replacing ``_update`` (unreleased as of 1.2.1);
# delete when the plugin requires that RecBole.
def scipy_dok_update() -> bool:
    """Give ``scipy.sparse.dok_matrix`` back the bulk ``_update(dict)`` that RecBole's graph models call."""
    from scipy.sparse import dok_matrix

    if hasattr(dok_matrix, "_update"):
        return False

    def _update(self, data):
        """Bulk-insert ``{(row, col): value}``; same semantics as scipy < 1.13's private method."""
        store = getattr(self, "_dict", None)
        if store is not None:
            store.update(data)
        else:  # pragma: no cover - dict-based dok of older scipy always had _update
            dict.update(self, data)

    dok_matrix._update = _update
    return True


# --- torch >= 2.6 -----------------------------------------------------------------------------------------
# Breaks: ``torch.load`` defaults to ``weights_only=True`` since torch 2.6. RecBole 1.2.1's
# ``Trainer.evaluate(load_best_model=True)`` and ``Trainer.resume_checkpoint`` load the checkpoints the
# trainer itself saved, which pickle the whole ``Config`` (classes, enums, the yaml loader), so the restricted
# unpickler refuses them and every ``run_recbole`` with ``saved=True`` crashes after training.
# The shim does NOT change torch globally: it swaps the ``torch`` name inside ``recbole.trainer.trainer`` for a
# thin proxy that remembers the files this process saved through the trainer and loads exactly those with
# ``weights_only=False`` (they are our own run's checkpoints, written moments ago). Any other file keeps
# torch's safe default. Not needed (and not installed) on torch < 2.6. Fix upstream: RecBole master passes
# ``weights_only=False`` explicitly; delete when the plugin requires a RecBole release that does.
_CHECKPOINTS_WRITTEN: set[str] = set()


def _real_path(f) -> str | None:
    if isinstance(f, (str, os.PathLike)):
        return os.path.realpath(os.fspath(f))
    return None


def remember_checkpoint(path) -> None:
    """Mark ``path`` as a checkpoint this process wrote, so the trainer may unpickle it in full."""
    real = _real_path(path)
    if real is not None:
        _CHECKPOINTS_WRITTEN.add(real)


def is_own_checkpoint(path) -> bool:
    """Whether ``path`` was written by this process through RecBole's trainer (or ``remember_checkpoint``)."""
    real = _real_path(path)
    return real is not None and real in _CHECKPOINTS_WRITTEN


class _TrainerTorch(types.ModuleType):
    """Stand-in for ``torch`` inside ``recbole.trainer.trainer`` only: delegates everything, tracks checkpoints."""

    def __init__(self, torch_module):
        super().__init__("torch")
        self._torch = torch_module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def save(self, obj, f, *args, **kwargs):
        result = self._torch.save(obj, f, *args, **kwargs)
        remember_checkpoint(f)
        return result

    def load(self, f, *args, **kwargs):
        if "weights_only" not in kwargs and is_own_checkpoint(f):
            # Our own run's checkpoint (see the comment above): it pickles RecBole's Config on purpose.
            kwargs["weights_only"] = False
        return self._torch.load(f, *args, **kwargs)


def torch_needs_checkpoint_shim() -> bool:
    import torch

    return _version_tuple(torch.__version__) >= (2, 6)


def trainer_checkpoint_loading() -> bool:
    """Install the ``torch`` proxy in RecBole's trainer module where torch's ``weights_only`` default needs it."""
    if not torch_needs_checkpoint_shim():
        return False
    import torch
    import recbole.trainer.trainer as trainer_module

    if isinstance(trainer_module.torch, _TrainerTorch):
        return False
    trainer_module.torch = _TrainerTorch(torch)
    return True


# --- setuptools >= 81 / numpy >= 2.0: ``import recbole.quick_start`` ---------------------------------------------
# Breaks: RecBole 1.2.1's ``recbole.quick_start`` imports ``ray.tune`` at module level; ray 2.6.3 (RecBole's pin)
# imports ``pkg_resources`` (removed in setuptools 81) and reads ``np.bool8`` (removed in numpy 2.0), so existing
# scripts that call ``recbole.quick_start.run_recbole`` fail with ``No module named 'pkg_resources'``. Making the
# import work would need a fake ``pkg_resources`` (other packages rely on the real one) or changing the user's
# installed packages, so the shim does neither: a ``sys.meta_path`` finder wraps the import of exactly these modules
# and re-raises an ImportError or AttributeError from it as an ImportError that says what is wrong and names the
# plugin's runner. Where the import works (setuptools < 81, numpy < 2) it changes nothing. Fix upstream: RecBole
# master imports ray lazily (unreleased as of 1.2.1); delete when the plugin requires a RecBole release that does.
QUICK_START_MODULES = ("recbole.quick_start", "recbole.quick_start.quick_start")


class QuickStartImportError(ImportError):
    """``recbole.quick_start`` cannot be imported on this stack (see :func:`explain_quick_start_import`)."""


def quick_start_import_message(exc: BaseException) -> str:
    return (
        f"recbole.quick_start cannot be imported on this Python stack ({type(exc).__name__}: {exc}). RecBole "
        f"1.2.1's quick_start imports ray at module level, and ray 2.6.3 (RecBole's pin) needs pkg_resources "
        f"(removed in setuptools 81) and np.bool8 (removed in numpy 2.0). Use the plugin's runner, which runs "
        f"RecBole's and recbole-sid's models without ray: recbole_sid.quick_start.run_recbole (same arguments: "
        f"model, dataset, config_file_list, config_dict, saved), recbole_sid.quick_start.run and "
        f"load_data_and_model, or the run_recbole console script. RecBole's own quick_start imports where "
        f"setuptools<81 and numpy<2 are installed (README, Compatibility)."
    )


class _ExplainingLoader(importlib.abc.Loader):
    """Delegates to the real loader; an ImportError/AttributeError while executing becomes QuickStartImportError."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        except QuickStartImportError:
            raise
        except (ImportError, AttributeError) as exc:
            raise QuickStartImportError(quick_start_import_message(exc), name=module.__name__) from exc


class _QuickStartFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in QUICK_START_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ExplainingLoader(spec.loader)
        return spec


def explain_quick_start_import() -> bool:
    """Install the finder that explains a failing ``import recbole.quick_start`` (idempotent)."""
    if any(isinstance(finder, _QuickStartFinder) for finder in sys.meta_path):
        return False
    sys.meta_path.insert(0, _QuickStartFinder())
    return True


# --- pandas >= 2.1: RecBole's pandas FutureWarnings ---------------------------------------------------------
# Breaks nothing, but every run prints screens of them: RecBole 1.2.1's ``Dataset`` fills missing values with
# chained ``feat[field].fillna(..., inplace=True)`` ("A value is trying to be set on a copy ... through chained
# assignment", pandas >= 2.2) and counts with ``Series.agg(len)`` ("using <built-in function len> in Series.agg
# cannot aggregate", pandas >= 2.1). Not installed globally: :func:`recbole_pandas_warnings_silenced` ignores
# exactly these messages, attributed to RecBole's modules, while the plugin's runner runs; the user's own code keeps
# every warning. (The chained fillna really does nothing under pandas 3, which is why setup.cfg says pandas<3.)
# Fix upstream: RecBole master rewrites both calls; delete when the plugin requires a RecBole release with them.
RECBOLE_PANDAS_WARNINGS = (
    r"A value is trying to be set on a copy of a DataFrame or Series through chained assignment",
    r"using <built-in function len> in Series\.agg cannot aggregate",
)


@contextlib.contextmanager
def recbole_pandas_warnings_silenced():
    """Ignore RecBole's own pandas FutureWarnings (above) inside the block; warning filters are restored after."""
    with warnings.catch_warnings():
        for message in RECBOLE_PANDAS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=r"recbole(\.|$)")
        yield


# --- distributed training: the backend, torchrun's environment -------------------------------------------------
# Breaks: RecBole 1.2.1 ``Config._init_device`` starts every distributed run (``local_rank`` in the config) with
# ``init_process_group(backend="nccl", init_method="tcp://<ip>:<port>")``, asserts ``len(gpu_id) >= nproc`` and puts
# the model on ``cuda:<local_rank>``. On a machine without CUDA (or with ``gpu_id: ''`` / ``use_gpu: False``)
# ``--nproc=2`` dies with "Distributed package doesn't have NCCL built in" or a bare AssertionError; CPU processes,
# which torch supports with the gloo backend, cannot be used at all. Under torchrun, whose agent may already serve the
# rendezvous store on MASTER_PORT, a ``tcp://`` rank 0 fails to bind that port; torchrun's workers must initialise
# from the environment (``env://``).
# The shim is called by the plugin's ``Config._init_device`` for distributed runs only (single-process runs keep
# RecBole's code; RecBole's own ``Config`` is not patched): RecBole's code still normalises ``gpu_id`` and sets
# CUDA_VISIBLE_DEVICES; then NCCL and ``cuda:<local_rank>`` when the run uses CUDA (RecBole's choice), gloo and the
# CPU otherwise; ``env://`` when RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT describe this very process,
# ``tcp://<ip>:<port>`` otherwise; too few GPUs is a ConfigError that says what to set. Every rank but the global
# rank 0 (``local_rank + offset``; RecBole tests ``local_rank``, so each node's first process would log and write)
# logs errors only. Fix upstream: none released as of 1.2.1; delete when RecBole chooses the backend itself.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_from_environment(rank: int, world_size: int, environ=None) -> bool:
    """Whether torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) describe this process."""
    environ = os.environ if environ is None else environ
    if not all(environ.get(name) for name in TORCHRUN_VARIABLES):
        return False
    try:
        return int(environ["RANK"]) == int(rank) and int(environ["WORLD_SIZE"]) == int(world_size)
    except ValueError:
        return False


def distributed_uses_cuda(final: dict) -> bool:
    """A distributed run uses CUDA (NCCL) when a GPU is visible, ``gpu_id`` names one and ``use_gpu`` is not False."""
    import torch

    return bool(torch.cuda.is_available() and str(final.get("gpu_id") or "") and final.get("use_gpu") is not False)


def check_cuda_processes(final: dict, nproc: int) -> None:
    """ConfigError unless ``gpu_id`` lists and CUDA shows at least ``nproc`` GPUs (one per process of this node)."""
    import torch

    from recbole_sid.exceptions import ConfigError

    listed = [g for g in str(final.get("gpu_id") or "").split(",") if g.strip()]
    if len(listed) < nproc or torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"--nproc={nproc} on CUDA needs {nproc} GPUs, one per process: gpu_id = '{final.get('gpu_id')}' lists "
            f"{len(listed)} and {torch.cuda.device_count()} are visible. List them (--gpu_id='0,1'), or run CPU "
            f"processes with the gloo backend (--use_gpu=False).")


def init_distributed_device(config, recbole_init_device) -> None:
    """The distributed branch of ``Config._init_device`` for ``config`` (see the comment above).

    ``recbole_init_device`` is RecBole's own method; it runs with ``local_rank`` hidden, so that it only normalises
    ``gpu_id`` and sets CUDA_VISIBLE_DEVICES (its single-process branch).
    """
    import torch
    import torch.distributed as dist

    from recbole_sid.exceptions import ConfigError

    final = config.final_config_dict
    local_rank = int(final.pop("local_rank"))
    try:
        recbole_init_device(config)
    finally:
        final["local_rank"] = local_rank
    nproc = int(final.get("nproc") or 1)
    offset = int(final.get("offset") or 0)
    world_size = int(final.get("world_size") or nproc)
    rank = local_rank + offset
    if not 0 <= rank < world_size:
        raise ConfigError(f"distributed run: process rank {rank} (local_rank {local_rank} + group_offset {offset}) is "
                          f"outside world_size {world_size}; --world_size must count every process of every node")
    if distributed_uses_cuda(final):
        check_cuda_processes(final, nproc)
        backend, device = "nccl", torch.device("cuda", local_rank)
        torch.cuda.set_device(local_rank)
    else:
        backend, device = "gloo", torch.device("cpu")
    if launched_from_environment(rank, world_size):
        init_method = "env://"
    else:
        init_method = f"tcp://{final.get('ip') or 'localhost'}:{final.get('port')}"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    final.update({"device": device, "single_spec": False, "world_size": world_size, "offset": offset})
    if rank != 0:
        final.update({"state": "error", "show_progress": False, "verbose": False})


# --- distributed training: folders created by several processes at once ---------------------------------------
# Breaks: RecBole 1.2.1 ``recbole.utils.ensure_dir`` is ``if not os.path.exists(d): os.makedirs(d)``. The processes
# of a distributed run start together and all create ``./log``, ``./log/<model>`` and ``checkpoint_dir``: the slower
# one finds the folder made between its test and its ``makedirs`` and dies with ``FileExistsError: './log'`` (seen
# under torchrun with 2 CPU processes). The shim replaces the name in RecBole's modules with
# ``os.makedirs(d, exist_ok=True)`` (same result, no race). Fix upstream: none as of 1.2.1.
def _ensure_dir(dir_path):
    """Make sure ``dir_path`` exists (RecBole's ``ensure_dir`` without its exists-then-create race)."""
    os.makedirs(dir_path, exist_ok=True)


def ensure_dir_race_free() -> bool:
    """Swap RecBole's ``ensure_dir`` for :func:`_ensure_dir` in every loaded ``recbole`` module that holds it."""
    import recbole.utils
    import recbole.utils.utils as utils_module

    original = utils_module.__dict__.get("ensure_dir")
    if original is _ensure_dir:
        return False
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "recbole" and module is not None and getattr(module, "ensure_dir", None) is original:
            module.ensure_dir = _ensure_dir
    return True


# --- distributed training: RecBole's trainer on CPU processes ---------------------------------------------------
# Breaks: RecBole 1.2.1 ``AbstractTrainer.__init__`` converts the model's BatchNorm layers with
# ``SyncBatchNorm.convert_sync_batchnorm`` and wraps it in ``DistributedDataParallel(model,
# device_ids=[local_rank])`` for every distributed run. Both are GPU-only: a CPU module raises "DistributedDataParallel
# device_ids and output_device arguments only work with single-device/multiple-device GPU modules or CPU modules" and,
# with a BatchNorm layer, "SyncBatchNorm layers only work with GPU modules". The shim wraps ``__init__``: a model on
# the CPU is wrapped without ``device_ids`` and its BatchNorm layers stay per-process (their statistics are not
# synchronised across CPU processes); CUDA models and single-process runs go through RecBole's code unchanged.
# Fix upstream: none released as of 1.2.1; delete with the backend shim above.
def trainer_ddp_on_cpu() -> bool:
    """Let RecBole's trainers wrap a CPU model in DistributedDataParallel (see the comment above)."""
    from recbole.trainer.trainer import AbstractTrainer

    original = AbstractTrainer.__dict__["__init__"]
    if getattr(original, "__wrapped__", None) is not None:
        return False

    def __init__(self, config, model):
        if config["single_spec"] or any(p.device.type != "cpu" for p in model.parameters()):
            return original(self, config, model)
        from torch.nn.parallel import DistributedDataParallel

        self.config = config
        self.model = model
        self.distributed_model = DistributedDataParallel(model)

    __init__.__wrapped__ = original
    AbstractTrainer.__init__ = __init__
    return True


# --- distributed training: who writes the checkpoint -------------------------------------------------------------
# Breaks: RecBole 1.2.1 ``Trainer._save_checkpoint`` skips the write only when ``local_rank != 0``, so in a run over
# several nodes the first process of EVERY node writes the checkpoint (on a shared file system: several writers of
# one file). Not installed on the class: the plugin's runner calls this on each trainer of a distributed run, and
# then only the global rank 0 (``local_rank + offset``) writes. Fix upstream: none as of 1.2.1.
def checkpoints_from_rank_zero(trainer, rank: int) -> None:
    """Make ``trainer`` write checkpoints only when ``rank`` (this process's global rank) is 0."""
    if rank == 0 or getattr(trainer._save_checkpoint, "_rank_zero_only", False):
        return

    def _save_checkpoint(*args, **kwargs):  # another rank writes nothing
        return None

    _save_checkpoint._rank_zero_only = True
    trainer._save_checkpoint = _save_checkpoint


# --- distributed training: reloading a checkpoint written by a distributed run ---------------------------------
# Breaks: RecBole 1.2.1 pickles the run's ``Config`` into every checkpoint together with the writing process's
# distributed state (``single_spec: False``, ``local_rank``, ``world_size``, ``device: cuda:<local_rank>``).
# ``load_data_and_model`` then builds dataloaders with a ``DistributedSampler`` ("Default process group has not been
# initialized") and moves the model to that GPU (RecBole issue #2063: a checkpoint from a multi-GPU run does not
# reload). A state dict taken from the ``DistributedDataParallel`` wrapper instead of the model (other scripts do,
# RecBole's trainer does not) has every key prefixed ``module.``. The shim turns the checkpoint's config back into
# a single-process one on this machine's device and strips that prefix. Fix upstream: none as of 1.2.1.
def single_process_config(config):
    """Make a checkpoint's ``config`` a single-process one (in place; returns it): ``single_spec`` True,
    ``local_rank`` 0 and the device chosen again for this machine (CUDA when it has one and ``gpu_id`` names one)."""
    import torch

    final = config.final_config_dict
    final["single_spec"] = True
    final["local_rank"] = 0
    gpu_id = str(final.get("gpu_id") or "")
    use_cuda = torch.cuda.is_available() and bool(gpu_id) and final.get("use_gpu") is not False
    final["device"] = torch.device("cuda") if use_cuda else torch.device("cpu")
    return config


def unwrap_state_dict(state_dict):
    """``state_dict`` without the ``module.`` prefix DistributedDataParallel adds (unchanged when not every key has it)."""
    keys = list(state_dict)
    if keys and all(key.startswith("module.") for key in keys):
        return type(state_dict)((key[len("module."):], value) for key, value in state_dict.items())
    return state_dict


SHIMS = {
    "numpy_aliases": numpy_aliases,
    "scipy_dok_update": scipy_dok_update,
    "trainer_checkpoint_loading": trainer_checkpoint_loading,
    "explain_quick_start_import": explain_quick_start_import,
    "trainer_ddp_on_cpu": trainer_ddp_on_cpu,
    "ensure_dir_race_free": ensure_dir_race_free,
}


def apply() -> dict[str, bool]:
    """Install every shim this stack needs (idempotent); returns ``{shim: installed_now}``."""
    report = {}
    for name, shim in SHIMS.items():
        if name in _APPLIED:
            report[name] = False
            continue
        report[name] = shim()
        _APPLIED.add(name)
    return report
