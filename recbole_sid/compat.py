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


SHIMS = {
    "numpy_aliases": numpy_aliases,
    "scipy_dok_update": scipy_dok_update,
    "trainer_checkpoint_loading": trainer_checkpoint_loading,
    "explain_quick_start_import": explain_quick_start_import,
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
