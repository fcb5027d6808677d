"""``Config``: RecBole's configurator, aware of the plugin's models and yaml defaults (RecBole-GNN style).

Differences from ``recbole.config.Config``, each on purpose:

* model names resolve through :func:`recbole_sid.get_model` (plugin, registered, then RecBole), and an unknown
  name raises :class:`ModelNotFoundError` listing what exists;
* after RecBole's own yaml files it loads ``properties/overall.yaml`` (plugin-wide keys), the plugin's
  quick-start yaml for the model type, and ``properties/model/<Model>.yaml`` (or the yaml given to
  ``register_model``); the user's files, dict and command line still override all of them;
* ``ml-100k`` is read from ``<data_path>/ml-100k`` when that folder holds it, and from the copy embedded in the
  ``recbole`` package otherwise (stock RecBole always takes the embedded copy); the choice is logged;
* string values from the command line and ``config_dict`` are parsed with ``ast.literal_eval`` instead of
  RecBole's ``eval``, and keys that RecBole itself passes to ``eval`` (``teacher``) only take a class name;
* ``cmd_args`` passes ``--key=value`` overrides explicitly (the CLI does); malformed ones raise ``ConfigError``;
* the user's keys are checked before any data is read (``recbole_sid.config_checks``): a value of the wrong type
  raises ``ConfigError`` naming the key, the value and the expected type; an unknown key is logged as a warning
  with close spellings;
* on a machine without a usable CUDA device ``use_gpu`` is set to False (RecBole logs ``use_gpu = True`` beside
  ``device = cpu``), with a notice;
* a process of a distributed run (``local_rank`` set) initialises torch.distributed with NCCL on CUDA and gloo on
  the CPU, from torchrun's environment or ``tcp://ip:port`` (``recbole_sid.compat.init_distributed_device``;
  RecBole's own code only knows NCCL).
"""
from __future__ import annotations

import ast
import os
from logging import getLogger

from recbole.config.configurator import Config as RecBoleConfig

from recbole_sid import compat, config_checks
from recbole_sid.exceptions import ConfigError
from recbole_sid.utils import canonical_model_name, check_config_dependencies, get_model, plugin_yaml_files


def embedded_dataset_dir(name: str) -> str:
    """Folder of a dataset shipped inside the installed ``recbole`` package (``recbole/dataset_example``)."""
    import recbole

    return os.path.join(os.path.dirname(os.path.realpath(recbole.__file__)), "dataset_example", name)


def parse_value(text: str):
    """Parse one ``--key=value`` value like RecBole does, without ``eval``: literals, else true/false, else str."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lowered = text.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        if lowered in ("none", "null", "~"):
            return None
        return text
    if value is not None and not isinstance(value, (str, int, float, list, tuple, dict, bool)):
        return text
    return value


def parse_cmd_args(args) -> dict:
    """``['--epochs=5', '--learning_rate=1e-3']`` -> ``{'epochs': 5, 'learning_rate': 0.001}``; strict."""
    parsed = {}
    for arg in args:
        if not isinstance(arg, str) or not arg.startswith("--") or "=" not in arg:
            raise ConfigError(
                f"Malformed override {arg!r}: expected --key=value (for example --epochs=5 or "
                f"--learning_rate=0.001), with no spaces around '='."
            )
        key, value = arg[2:].split("=", 1)
        if not key or not key.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"Malformed override {arg!r}: '{key}' is not a config key name.")
        if value == "":
            raise ConfigError(f"Malformed override {arg!r}: no value after '=' for config key '{key}'.")
        parsed_value = parse_value(value)
        if key in parsed and parsed[key] != parsed_value:
            raise ConfigError(f"Config key '{key}' is given twice on the command line with different values.")
        parsed[key] = parsed_value
    return parsed


class Config(RecBoleConfig):
    """RecBole's ``Config`` plus the plugin's models and yaml defaults (see the module docstring)."""

    #: the plugin's yaml files are loaded here, not by the hook ``register_with_recbole`` adds to RecBole's Config
    loads_plugin_defaults = True

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = None if cmd_args is None else list(cmd_args)
        #: messages to log once RecBole's logger is initialised (Config is built before ``init_logger``):
        #: ``notices`` at INFO level, ``warnings`` at WARNING level.
        self.notices: list[str] = []
        self.warnings: list[str] = []
        self._key_files: dict[str, str] = {}
        for file in config_file_list or []:
            if not os.path.isfile(file):
                raise ConfigError(f"Config file not found: {file} (given in config_file_list / --config_files).")
        super().__init__(model, dataset, config_file_list, config_dict)
        check_config_dependencies(self.model, self)

    # -- parsing -------------------------------------------------------------------------------------------
    def _convert_config_dict(self, config_dict):
        for key, value in config_dict.items():
            if isinstance(value, str):
                config_dict[key] = parse_value(value)
        return config_dict

    def _load_config_files(self, file_list):
        import yaml

        merged = {}
        for file in file_list or []:
            try:
                with open(file, encoding="utf-8") as f:
                    loaded = yaml.load(f.read(), Loader=self.yaml_loader)
            except yaml.YAMLError as exc:
                raise ConfigError(f"Config file {file} is not valid YAML: {exc}") from exc
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise ConfigError(f"Config file {file} must hold a mapping of config keys, got {type(loaded).__name__}.")
            merged.update(loaded)
            self._key_files.update(dict.fromkeys(loaded, file))
        return merged

    def _load_cmd_line(self):
        if self._cmd_args is None:
            return super()._load_cmd_line()
        return parse_cmd_args(self._cmd_args)

    # -- model lookup and yaml defaults -------------------------------------------------------------------
    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("No model given: pass model=..., --model=NAME or 'model' in a config file.")
        if isinstance(model, str):
            final_model, final_model_class = canonical_model_name(model), get_model(model)
            if final_model != model:
                self.notices.append(f"model '{model}' is an old name of '{final_model}'; running {final_model}")
        else:
            final_model, final_model_class = model.__name__, model
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError("No dataset given: pass dataset=..., --dataset=NAME or 'dataset' in a config file.")
        return final_model, final_model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        # plugin quick-start and model defaults apply to the plugin's (and registered) models; overall.yaml to all.
        for file in plugin_yaml_files(model, self.internal_config_dict["MODEL_TYPE"], recbole_models_too=True):
            self._update_internal_config_dict(file)

    # -- checks of the user's keys (before RecBole reads any of them) ----------------------------------------
    def _get_final_config_dict(self):
        self._check_user_keys()
        return super()._get_final_config_dict()

    def _key_source(self, key: str) -> str:
        if key in self.cmd_config_dict:
            return "command line"
        if key in self.variable_config_dict:
            return "config_dict"
        return f"config file {self._key_files.get(key, '?')}"

    def _check_user_keys(self):
        for key, value in self.external_config_dict.items():
            config_checks.check_evaled(key, value, self._key_source(key))
            config_checks.check_type(key, value, self.internal_config_dict.get(key), self._key_source(key))
        known = config_checks.known_keys(self.internal_config_dict)
        for key in self.external_config_dict:
            if key in known:
                continue
            close = config_checks.close_keys(key, known)
            hint = f" Did you mean {' or '.join(repr(k) for k in close)}?" if close else ""
            self.warnings.append(
                f"Config key '{key}' ({self._key_source(key)}) is not a key of RecBole, recbole-sid or the "
                f"registered models.{hint} It is kept as given, but no default exists for it, so it may be unused."
            )

    def _init_device(self):
        if "local_rank" in self.final_config_dict:  # a process of a distributed run: NCCL on CUDA, gloo on the CPU
            compat.init_distributed_device(self, RecBoleConfig._init_device)
        else:
            super()._init_device()
        device = self.final_config_dict.get("device")
        if self.final_config_dict.get("use_gpu") and getattr(device, "type", None) == "cpu":
            import torch

            reason = ("no CUDA device is available" if not torch.cuda.is_available()
                      else f"gpu_id = '{self.final_config_dict.get('gpu_id')}' selects no GPU")
            self.final_config_dict["use_gpu"] = False
            self.notices.append(f"use_gpu = True, but {reason}: running on the CPU, use_gpu set to False.")

    def _set_default_parameters(self):
        requested = self.final_config_dict.get("data_path") or "dataset/"
        super()._set_default_parameters()
        if self.dataset == "ml-100k":
            own = os.path.join(requested, "ml-100k")
            if os.path.isfile(os.path.join(own, "ml-100k.inter")) or os.path.isfile(
                    os.path.join(own, "ml-100k.train.inter")):
                self.final_config_dict["data_path"] = own
            else:
                embedded = os.path.realpath(embedded_dataset_dir("ml-100k"))
                self.final_config_dict["data_path"] = embedded
                self.notices.append(
                    f"ml-100k not found under data_path '{requested}': using the copy embedded in the installed "
                    f"recbole package ({embedded})."
                )

    def log_notices(self, logger=None):
        """Log the notices and warnings gathered while building the config (call after ``init_logger``)."""
        logger = logger or getLogger()
        for message in self.notices:
            logger.info(message)
        for message in self.warnings:
            logger.warning(message)

