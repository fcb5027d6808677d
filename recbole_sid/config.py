"""``Config``: RecBole's configurator, aware of the plugin's models and yaml defaults (RecBole-GNN style).

Differences from ``recbole.config.Config``, each on purpose:

* model names resolve through :func:`recbole_sid.get_model` (plugin, registered, then RecBole), and an unknown
  name raises :class:`ModelNotFoundError` listing what exists;
* after RecBole's own yaml files it loads ``properties/overall.yaml`` (plugin-wide keys), the plugin's
  quick-start yaml for the model type, and ``properties/model/<Model>.yaml`` (or the yaml given to
  ``register_model``); the user's files, dict and command line still override all of them;
* ``ml-100k`` is read from ``<data_path>/ml-100k`` when that folder holds it, and from the copy embedded in the
  ``recbole`` package otherwise (stock RecBole always takes the embedded copy); the choice is logged;
* string values from the command line are parsed with ``ast.literal_eval`` instead of RecBole's ``eval``;
* ``cmd_args`` passes ``--key=value`` overrides explicitly (the CLI does); malformed ones raise ``ConfigError``.
"""
from __future__ import annotations

import ast
import os
from logging import getLogger

from recbole.config.configurator import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_sid.exceptions import ConfigError
from recbole_sid.utils import canonical_model_name, get_model, properties_dir, registered_yaml

#: quick-start yaml of the plugin applied by model type (after RecBole's own quick-start yaml).
_QUICK_START_BY_TYPE = {
    ModelType.GENERAL: "general.yaml",
}


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

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = None if cmd_args is None else list(cmd_args)
        #: messages to log once RecBole's logger is initialised (Config is built before ``init_logger``).
        self.notices: list[str] = []
        for file in config_file_list or []:
            if not os.path.isfile(file):
                raise ConfigError(f"Config file not found: {file} (given in config_file_list / --config_files).")
        super().__init__(model, dataset, config_file_list, config_dict)

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
        props = properties_dir()
        files = [props / "overall.yaml"]
        quick_start = _QUICK_START_BY_TYPE.get(self.internal_config_dict["MODEL_TYPE"])
        model_yaml = props / "model" / f"{model}.yaml"
        if quick_start is not None and (model_yaml.is_file() or registered_yaml(model)):
            # plugin quick-start defaults apply to the plugin's (and registered) models only, never RecBole's.
            files.append(props / "quick_start_config" / quick_start)
        files.append(model_yaml)
        extra = registered_yaml(model)
        if extra:
            files.append(extra)
        for file in files:
            if os.path.isfile(file):
                self._update_internal_config_dict(file)

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
        """Log the notices gathered while building the config (call after ``init_logger``)."""
        logger = logger or getLogger()
        for message in self.notices:
            logger.info(message)

