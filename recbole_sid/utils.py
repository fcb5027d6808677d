"""Model and trainer lookup: the plugin first, then third-party registrations, then RecBole (RecBole-GNN style)."""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from recbole_sid.exceptions import ConfigError, ModelNotFoundError, PluginError

#: Sub-packages searched for ``<name.lower()>.py``, in the plugin and in RecBole (same names as RecBole's).
MODEL_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)
#: RecBole's exlib models need lightgbm / xgboost; their package is only imported for these names.
_EXLIB_MODELS = {"lightgbm": "LightGBM", "xgboost": "XGBoost"}
#: old names of plugin models -> the paper-named model they now resolve to
MODEL_ALIASES = {"QuantAlign": "LETTER", "AlignQuant": "QARM"}


def canonical_model_name(model_name: str) -> str:
    """The model a (possibly old) name resolves to: ``QuantAlign`` -> ``LETTER``, ``AlignQuant`` -> ``QARM``."""
    return MODEL_ALIASES.get(model_name, model_name) if model_name not in _REGISTRY else model_name
#: Packages outside RecBole's requirements that RecBole 1.2.1 models import: model -> [(module, pip name)].
#: Found by grepping recbole/model and recbole/data for imports. Checked by ``get_model`` so that a run stops before
#: loading data (KGAT used to fail while building the model, KGIN and MCCLK in their first training batch).
#: torch_geometric is imported only by ``Dataset.get_norm_adj_mat``-style helpers with ``form="pyg"``, which no
#: RecBole model calls (RecBole-GNN does); faiss (NCL) and scikit-learn (SLIMElastic, NCEPLRec) are requirements.
OPTIONAL_DEPENDENCIES = {
    "LightGBM": [("lightgbm", "lightgbm")],
    "XGBoost": [("xgboost", "xgboost")],
    "KGAT": [("dgl", "dgl")],
    "KGIN": [("torch_scatter", "torch-scatter")],
    "MCCLK": [("torch_scatter", "torch-scatter")],
}
#: Dependencies needed only with some settings, checked on the final config (``check_config_dependencies``):
#: model -> (config key, predicate on its value, the setting in words, [(module, pip name)]).
CONDITIONAL_DEPENDENCIES = {
    "LDiffRec": ("n_cate", lambda v: v != 1, "n_cate != 1 (item clustering)",
                 [("kmeans_pytorch", "kmeans-pytorch")]),
    "NNCF": ("neigh_info_method", lambda v: v == "louvain", "neigh_info_method = 'louvain'",
             [("networkx", "networkx"), ("community", "python-louvain")]),
}


@dataclass
class Registration:
    """A model added with :func:`register_model`: its class, its yaml defaults and an optional trainer."""

    model_class: type
    yaml_path: str | None = None
    trainer_class: type | None = None


_REGISTRY: dict[str, Registration] = {}


def properties_dir() -> Path:
    """The plugin's ``properties/`` folder: inside the installed package, or beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "properties", here.parent / "properties"):
        if (candidate / "model").is_dir():
            return candidate
    raise FileNotFoundError(
        f"recbole-sid's properties/ folder (model yaml defaults) was found neither at {here / 'properties'} "
        f"nor at {here.parent / 'properties'}; the installation is incomplete - reinstall recbole-sid."
    )


def register_model(model_class: type, yaml_path: str | os.PathLike | None = None, trainer_class: type | None = None):
    """Make ``model_class`` resolvable by its class name, with ``yaml_path`` loaded as its defaults.

    The yaml file is read after RecBole's own and the plugin's defaults and before the user's config files,
    exactly like ``properties/model/<Model>.yaml`` of the plugin's models. Returns the class (usable as a decorator
    through ``functools.partial``).
    """
    from recbole.model.abstract_recommender import AbstractRecommender

    if not (inspect.isclass(model_class) and issubclass(model_class, AbstractRecommender)):
        raise TypeError(
            f"register_model expects a RecBole model class (a subclass of AbstractRecommender), got {model_class!r}"
        )
    for attr in ("type", "input_type"):
        if not hasattr(model_class, attr):
            raise TypeError(f"register_model: {model_class.__name__} has no class attribute '{attr}' "
                            f"(RecBole needs both 'type' and 'input_type')")
    if yaml_path is not None:
        yaml_path = os.path.abspath(os.fspath(yaml_path))  # a later chdir must not lose it
        if not os.path.isfile(yaml_path):
            raise FileNotFoundError(f"register_model: yaml file for {model_class.__name__} not found: {yaml_path}")
    _REGISTRY[model_class.__name__] = Registration(model_class, yaml_path, trainer_class)
    return model_class


def plugins_from_env() -> list[str]:
    """Module names listed in ``RECBOLE_SID_PLUGINS`` (comma-separated)."""
    return [m.strip() for m in os.environ.get("RECBOLE_SID_PLUGINS", "").split(",") if m.strip()]


def import_plugins(modules) -> list:
    """Import third-party modules that register models (``register_model``) before any lookup.

    A module that is not found raises :class:`ModelNotFoundError`; an error raised while the module runs
    (a syntax error, a missing dependency, a failing ``register_model``, ...) raises :class:`PluginError` naming
    the module, the error and the plugin's line.
    """
    imported = []
    for name in modules:
        try:
            imported.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise ModelNotFoundError(
                    f"Plugin module '{name}' (from --plugin or RECBOLE_SID_PLUGINS) not found: no {name}.py (or "
                    f"package) in the current folder or on sys.path. Give the module name, without '.py'."
                ) from exc
            raise PluginError(_plugin_failure(name, exc)) from exc
        except Exception as exc:  # anything the plugin's own code raises at import
            raise PluginError(_plugin_failure(name, exc)) from exc
    return imported


def _plugin_failure(name: str, exc: BaseException) -> str:
    import traceback

    origin = None
    try:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
    except (ImportError, ValueError):
        pass
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" at {exc.filename}, line {exc.lineno}"
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
        own = [f for f in frames if origin and f.filename == origin]
        frame = (own or frames or [None])[-1]
        where = f" at {frame.filename}, line {frame.lineno}" if frame is not None else ""
    return (f"Plugin module '{name}' (from --plugin or RECBOLE_SID_PLUGINS) failed while being imported{where}: "
            f"{type(exc).__name__}: {exc}. Fix the module (set RECBOLE_SID_DEBUG=1 for the traceback).")


def registered_yaml(model_name: str) -> str | None:
    """The yaml file a third party registered for ``model_name`` (None if none)."""
    reg = _REGISTRY.get(model_name)
    return reg.yaml_path if reg else None


def registered_yaml_files() -> list[str]:
    """The yaml files of every registered model."""
    return [reg.yaml_path for reg in _REGISTRY.values() if reg.yaml_path]


def _module_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _missing_packages(requirements) -> list[tuple[str, str]]:
    return [(module, pip) for module, pip in requirements if not _module_available(module)]


def _missing_message(what: str, missing) -> str:
    modules = " and ".join(f"'{module}'" for module, _ in missing)
    plural = "s" if len(missing) > 1 else ""
    return (f"{what} needs the {modules} package{plural}, which {'are' if plural else 'is'} not installed "
            f"(pip install {' '.join(pip for _, pip in missing)}).")


def check_config_dependencies(model_name: str, config) -> None:
    """Raise ``ConfigError`` when a RecBole model's setting needs a package that is absent (NNCF + louvain, ...)."""
    if model_name not in CONDITIONAL_DEPENDENCIES or model_name in _REGISTRY:
        return
    key, needs, setting, requirements = CONDITIONAL_DEPENDENCIES[model_name]
    if not needs(config[key]):
        return
    missing = _missing_packages(requirements)
    if missing:
        raise ConfigError(_missing_message(f"RecBole's {model_name} with {setting}", missing))


def _find_module(package: str, model_name: str):
    file_name = model_name.lower()
    for submodule in MODEL_SUBMODULES:
        module_path = f"{package}.{submodule}.{file_name}"
        try:
            spec = importlib.util.find_spec(module_path)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            return importlib.import_module(module_path)
    return None


def _plugin_models() -> dict[str, type]:
    from recbole.model.abstract_recommender import AbstractRecommender

    found = {}
    for submodule in MODEL_SUBMODULES:
        pkg_name = f"recbole_sid.model.{submodule}"
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError:
            continue
        for path in Path(pkg.__file__).parent.glob("*.py"):
            if path.stem.startswith("_"):
                continue
            module = importlib.import_module(f"{pkg_name}.{path.stem}")
            for name, obj in vars(module).items():
                if (inspect.isclass(obj) and issubclass(obj, AbstractRecommender) and obj.__module__ == module.__name__
                        and name.lower() == path.stem):
                    found[name] = obj
    return found


def _recbole_models() -> list[str]:
    from recbole.model.abstract_recommender import AbstractRecommender

    names = []
    for submodule in MODEL_SUBMODULES:
        pkg = importlib.import_module(f"recbole.model.{submodule}")
        names += [n for n, o in vars(pkg).items() if inspect.isclass(o) and issubclass(o, AbstractRecommender)]
    names += list(_EXLIB_MODELS.values())
    return sorted(set(names))


def available_models() -> dict[str, list[str]]:
    """Every model name this installation resolves: ``{"recbole_sid": [...], "registered": [...], "recbole": [...]}``."""
    return {
        "recbole_sid": sorted(_plugin_models()),
        "registered": sorted(_REGISTRY),
        "recbole": _recbole_models(),
    }


def _not_found(model_name: str) -> ModelNotFoundError:
    models = available_models()
    every = models["recbole_sid"] + models["registered"] + models["recbole"]
    close = difflib.get_close_matches(model_name, every, n=3, cutoff=0.6)
    close += [m for m in every if m.lower() == model_name.lower() and m not in close]
    hint = f" Did you mean {', '.join(close)}? (model names are case-sensitive class names)" if close else ""
    return ModelNotFoundError(
        f"Unknown model '{model_name}'.{hint} Available models - recbole-sid: {', '.join(models['recbole_sid']) or '(none)'}; "
        f"registered: {', '.join(models['registered']) or '(none)'}; RecBole: {', '.join(models['recbole'])}."
    )


def get_model(model_name: str) -> type:
    """Model class for ``model_name``: registrations, then ``recbole_sid.model.*``, then RecBole's models."""
    if not isinstance(model_name, str) or not model_name:
        raise ModelNotFoundError(f"model must be a non-empty model name, got {model_name!r}")
    if model_name in _REGISTRY:
        return _REGISTRY[model_name].model_class
    model_name = canonical_model_name(model_name)
    for package in ("recbole_sid.model", "recbole.model"):
        module = _find_module(package, model_name)
        if module is not None:
            if not hasattr(module, model_name):
                raise _not_found(model_name)
            if package == "recbole.model":
                _check_dependencies(model_name)
            return getattr(module, model_name)
    if model_name.lower() in _EXLIB_MODELS:
        if model_name != _EXLIB_MODELS[model_name.lower()]:
            raise _not_found(model_name)
        _check_dependencies(model_name)
        return recbole_original("get_model")(model_name)
    raise _not_found(model_name)


def _check_dependencies(model_name: str) -> None:
    missing = _missing_packages(OPTIONAL_DEPENDENCIES.get(model_name, ()))
    if missing:
        raise ModelNotFoundError(_missing_message(f"RecBole's {model_name} model", missing))


def recbole_original(name: str):
    """RecBole's own ``recbole.utils.<name>`` (``get_model``/``get_trainer``), even after ``register_with_recbole``."""
    import recbole.utils.utils as recbole_utils

    originals = recbole_utils.__dict__.setdefault("_recbole_sid_originals", {})
    if name not in originals:
        originals[name] = getattr(recbole_utils, name)
    return originals[name]


def plugin_yaml_files(model_name: str, model_type, recbole_models_too: bool = False) -> list:
    """The plugin's yaml defaults for ``model_name``, in loading order (after RecBole's own yaml files).

    ``properties/overall.yaml``; for plugin and registered models also the plugin's quick-start yaml of their type
    (``general.yaml`` for GENERAL), ``properties/model/<Model>.yaml`` and the registered yaml. For RecBole's own
    models: ``overall.yaml`` when ``recbole_models_too`` (the plugin's ``Config``), else nothing (RecBole's Config).
    """
    from recbole.utils import ModelType

    props = properties_dir()
    model_name = canonical_model_name(model_name)
    model_yaml = props / "model" / f"{model_name}.yaml"
    registered = registered_yaml(model_name)
    if not (model_yaml.is_file() or model_name in _REGISTRY or recbole_models_too):
        return []
    files = [props / "overall.yaml"]
    if model_type == ModelType.GENERAL and (model_yaml.is_file() or registered):
        files.append(props / "quick_start_config" / "general.yaml")
    files += [f for f in (model_yaml, registered) if f and os.path.isfile(f)]
    return files


def register_with_recbole() -> None:
    """Make RecBole's own entry points find the plugin's (and registered) models; ``import recbole_sid`` calls it.

    Without it, ``recbole.utils.get_model("DAS")`` falls through to RecBole's exlib package and fails with
    ``No module named 'lightgbm'``, so ``recbole.config.Config(model="DAS")``, ``recbole.quick_start.run_recbole``
    and ``load_data_and_model`` fail on every plugin model, and ``Config(model=<class DAS>)`` misses the plugin's
    yaml defaults (``sid_levels``, ...). RecBole modules bind the names at import (``from recbole.utils import
    get_model``), so the names are replaced in every loaded ``recbole`` module that holds RecBole's function (modules
    imported later, such as ``recbole.quick_start``, bind the replaced ``recbole.utils`` names); RecBole's
    ``Config._load_internal_config_dict`` also loads :func:`plugin_yaml_files`. Idempotent.
    """
    from recbole.config.configurator import Config as RecBoleConfig

    for name, ours in (("get_model", get_model), ("get_trainer", get_trainer)):
        original = recbole_original(name)
        for module_name, module in list(sys.modules.items()):
            if module_name.split(".")[0] == "recbole" and getattr(module, name, None) is original:
                setattr(module, name, ours)
    load = RecBoleConfig.__dict__["_load_internal_config_dict"]
    if getattr(load, "__wrapped__", None) is not None:
        return

    def _load_internal_config_dict(self, model, model_class, dataset):
        load(self, model, model_class, dataset)
        if not getattr(self, "loads_plugin_defaults", False):  # recbole_sid.config.Config loads its own
            for file in plugin_yaml_files(model, self.internal_config_dict["MODEL_TYPE"]):
                self._update_internal_config_dict(file)

    _load_internal_config_dict.__wrapped__ = load
    RecBoleConfig._load_internal_config_dict = _load_internal_config_dict


def get_trainer(model_type, model_name: str) -> type:
    """Trainer class: a registered one, ``recbole_sid.trainer.<Model>Trainer``, else RecBole's choice."""
    reg = _REGISTRY.get(model_name)
    if reg is not None and reg.trainer_class is not None:
        return reg.trainer_class
    model_name = canonical_model_name(model_name)
    trainer_module = importlib.import_module("recbole_sid.trainer")
    if hasattr(trainer_module, model_name + "Trainer"):
        return getattr(trainer_module, model_name + "Trainer")
    if reg is not None:
        from recbole_sid.model.abstract_recommender import SIDRecommender

        if issubclass(reg.model_class, SIDRecommender):  # phase 1 (tokenizer) needs the SID trainer
            return trainer_module.SIDTrainer
    return recbole_original("get_trainer")(model_type, model_name)
