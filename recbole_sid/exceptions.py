"""Typed errors of recbole-sid: every message names the file, field or config key and what was expected."""


class RecBoleSIDError(Exception):
    """Base class of every error the plugin raises on purpose (the CLI prints these as one paragraph)."""


class ModelNotFoundError(RecBoleSIDError, ValueError):
    """A model name that neither the plugin, a registered third party nor RecBole knows."""


class PluginError(RecBoleSIDError, ImportError):
    """A plugin module (``--plugin`` / ``RECBOLE_SID_PLUGINS``) that raised an error while being imported."""


class DatasetNotFoundError(RecBoleSIDError, FileNotFoundError):
    """A dataset whose atomic files are not under ``data_path`` (the plugin never downloads)."""


class ConfigError(RecBoleSIDError, ValueError):
    """A bad config file, config key or ``--key=value`` override."""


class DataError(RecBoleSIDError, ValueError):
    """Bad input data: a file, field or vector that is missing, malformed or inconsistent."""


class QuantizationError(RecBoleSIDError, ValueError):
    """Bad quantizer settings or input (K or L out of range, NaN vectors, fewer items than codes, ...)."""
