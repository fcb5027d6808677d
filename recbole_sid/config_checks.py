"""Checks of the user's config keys against the known keys and the types of their defaults (``Config`` runs them).

* **Types.** A key whose default in this run is not ``None`` must get a value of an accepted type, checked before
  RecBole loads any data (``--epochs=abc`` used to fail after the model was built, with a ``TypeError`` that did not
  name ``epochs``). Accepted: the type of the default, of the key's default in any other yaml file of RecBole or the
  plugin, the types named in RecBole's yaml comments (``topk: [10]  # (list or int or None)``) and the few keys
  that RecBole converts itself (:data:`EXTRA_TYPES`). An int key takes ints (a float only when float is accepted),
  a float key takes ints and floats, a bool key takes bools only, a list key takes lists and tuples.
* **Keys that reach ``eval``.** RecBole 1.2.1's ``KD_DAGFM`` runs ``eval(config['teacher'])``; such keys
  (:data:`EVALED_KEYS`) only take the name of a class of the module that evaluates them.
* **Unknown keys.** A key that no yaml file of RecBole or the plugin, no registered model yaml and no RecBole
  code (:data:`RECBOLE_KEYS_WITHOUT_DEFAULT`) knows gets a warning naming close spellings (``--epohcs=1``).
"""
from __future__ import annotations

import difflib
import functools
import glob
import importlib
import inspect
import keyword
import numbers
import os
import re

import yaml

from recbole_sid.exceptions import ConfigError

#: Keys RecBole 1.2.1 reads (``config["k"]``, ``config.get("k")``, ``"k" in config``) without a yaml default:
#: every such key of ``recbole/**/*.py`` that is in no ``recbole/properties`` yaml file.
RECBOLE_KEYS_WITHOUT_DEFAULT = frozenset({
    "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "INVERSE_ITEM_SEQ", "MASK_INDEX", "MASK_ITEM_SEQ", "MODEL_INPUT_TYPE",
    "MODEL_TYPE", "NEG_ITEMS", "POS_ITEMS", "REORDER_ITEM_SEQ", "cin", "contrast", "dataset", "device",
    "encoding", "eta", "eval_type", "feature_num", "full", "has_residual", "ip", "local_rank", "model",
    "neg_sampling", "norm", "nproc", "offset", "port", "sim", "single_spec", "tail_ratio", "test_neg_sample_args",
    "token_num_threshold", "training_neg_sample_num", "use_filter", "valid_neg_sample_args", "verbose",
    "world_size", "xgb_early_stopping_rounds",
    # RecBole's run_recbole.py flags, which reach the config as --key=value too, and its argument lists.
    "config_file", "config_files", "group_offset",
})
#: The plugin's own command-line flags (``--plugin=NAME`` reaches the config like every --key=value).
CLI_KEYS = frozenset({"plugin"})

#: Types RecBole accepts besides those of the yaml defaults: ``Config._init_device`` joins a tuple of GPU ids and
#: ``str()``s anything else; ``load_col: ~`` loads every column; ``faiss_use_gpu`` and ``warm_negatives`` are
#: ``auto``, True or False.
EXTRA_TYPES = {
    "gpu_id": (int, tuple),
    "load_col": (type(None),),
    "faiss_use_gpu": (bool,),
    "warm_negatives": (bool,),
}
#: Keys whose value RecBole passes to ``eval()``: key -> (module that evaluates it, model). The value must name a
#: class defined in that module (KD_DAGFM: ``CrossNet`` or ``CIN``).
EVALED_KEYS = {
    "teacher": ("recbole.model.context_aware_recommender.kd_dagfm", "KD_DAGFM"),
}

_COMMENT_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict,
                  "None": type(None)}
_KEY_LINE = re.compile(r"^([A-Za-z_][\w-]*)\s*:.*#\s*\(([^)]*)\)")
_NOT_A_CONFIG = {"url.yaml", "kg_url.yaml"}  # dataset name -> download URL, not config keys


def _yaml_files() -> list[str]:
    import recbole

    from recbole_sid.utils import properties_dir

    roots = [os.path.join(os.path.dirname(os.path.realpath(recbole.__file__)), "properties"), str(properties_dir())]
    files = []
    for root in roots:
        files += sorted(f for f in glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)
                        if os.path.basename(f) not in _NOT_A_CONFIG)
    return files


@functools.lru_cache(maxsize=None)
def _yaml_loader():
    """RecBole's yaml loader (``1e-3`` is a float). Built once: each build adds a resolver to ``yaml.FullLoader``."""
    from recbole.config.configurator import Config as RecBoleConfig

    return RecBoleConfig._build_yaml_loader(None)


def _load_yaml(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        loaded = yaml.load(f.read(), Loader=_yaml_loader())
    return loaded if isinstance(loaded, dict) else {}


def _comment_types(path: str) -> dict[str, set]:
    found = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = _KEY_LINE.match(line)
            if match:  # "(list or int or None)" -> list, int, None; "(list of int)" -> list
                words = [alternative.split()[0] for alternative in re.split(r"\s+or\s+", match.group(2).strip())
                         if alternative.split()]
                found[match.group(1)] = {_COMMENT_TYPES[w] for w in words if w in _COMMENT_TYPES}
    return found


@functools.lru_cache(maxsize=None)
def yaml_catalogue() -> dict[str, frozenset]:
    """``{key: accepted types}`` over every yaml file of RecBole and the plugin (read once per process)."""
    types: dict[str, set] = {}
    for path in _yaml_files():
        for key, value in _load_yaml(path).items():
            types.setdefault(key, set()).add(type(value))
        for key, named in _comment_types(path).items():
            types.setdefault(key, set()).update(named)
    return {key: frozenset(value) for key, value in types.items()}


def known_keys(extra=()) -> set[str]:
    """Every key RecBole or the plugin knows, plus ``extra`` (this run's defaults, registered yaml files)."""
    from recbole.utils import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

    from recbole_sid.utils import registered_yaml_files

    keys = set(yaml_catalogue()) | RECBOLE_KEYS_WITHOUT_DEFAULT | CLI_KEYS | set(extra)
    keys.update(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)
    for path in registered_yaml_files():
        if os.path.isfile(path):  # a registered model's yaml that is gone only matters to that model's runs
            keys.update(_load_yaml(path))
    return keys


def _kind(value):
    """The type family a value is checked as (None for values that are not checked, such as classes)."""
    if value is None:
        return type(None)
    if isinstance(value, bool):
        return bool
    if isinstance(value, numbers.Integral):
        return int
    if isinstance(value, numbers.Real):
        return float
    for family in (str, list, tuple, dict):
        if isinstance(value, family):
            return family
    return None


def _accepts(accepted: set, kind) -> bool:
    if kind is int:
        return bool(accepted & {int, float})
    if kind is tuple:
        return bool(accepted & {list, tuple})
    return kind in accepted


def _names(accepted: set) -> str:
    accepted = accepted | ({tuple} if list in accepted else set())
    order = [bool, int, float, str, list, tuple, dict, type(None)]
    names = ["None" if t is type(None) else t.__name__ for t in order if t in accepted]
    return " or ".join(names)


def check_type(key: str, value, default, source: str) -> None:
    """Raise :class:`ConfigError` when ``value`` is not of a type ``key`` accepts (its default: ``default``)."""
    if default is None or key in ("model", "dataset"):
        return
    kind = _kind(value)
    if kind is None:
        return
    accepted = {type(default)} | set(yaml_catalogue().get(key, ())) | set(EXTRA_TYPES.get(key, ()))
    if _accepts(accepted, kind):
        return
    hint = ""
    if kind is str and accepted & {int, float, bool}:
        hint = " (a command-line value is read as a Python literal: --key=5, --key=0.01, --key=True)"
    what = "None" if kind is type(None) else ("an int" if kind is int else f"a {kind.__name__}")
    raise ConfigError(
        f"Config key '{key}' = {value!r} ({source}) is {what}; expected {_names(accepted)}, like its default "
        f"{default!r}{hint}."
    )


def check_evaled(key: str, value, source: str) -> None:
    """Refuse values of keys RecBole passes to ``eval()`` unless they name a class of the evaluating module."""
    if key not in EVALED_KEYS:
        return
    module_name, model = EVALED_KEYS[key]
    module = importlib.import_module(module_name)
    allowed = sorted(n for n, obj in vars(module).items()
                     if inspect.isclass(obj) and obj.__module__ == module_name and n != model)
    if (isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value)
            and value in allowed):
        return
    raise ConfigError(
        f"Config key '{key}' = {value!r} ({source}) is refused: RecBole's {model} passes this value to Python's "
        f"eval(), so only the name of a class of {module_name} is accepted ({', '.join(allowed)}; "
        f"e.g. CrossNet or CIN)."
    )


def close_keys(key: str, keys) -> list[str]:
    return difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.75)
