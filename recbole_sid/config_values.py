"""Reading a model's config keys with a default and a check: one ``ConfigError`` naming the key and what it takes.

Used by the plugin's models and tokenizers (RecBole's ``Config`` returns None for a missing key instead of raising).
"""
from __future__ import annotations

import numpy as np

from recbole_sid.exceptions import ConfigError


def cfg(config, key, default=None):
    """``config[key]``, or ``default`` when the key is missing or None."""
    try:
        value = config[key]
    except (KeyError, TypeError):
        value = None
    return default if value is None else value


def cfg_int(config, key, default=None, minimum: int | None = None) -> int:
    """An integer (not a bool), at least ``minimum``."""
    value = cfg(config, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"config key '{key}' must be an integer{bound}, got {value!r}")
    return int(value)


def cfg_float(config, key, default=None, minimum: float | None = None, maximum: float | None = None) -> float:
    """A number (a numeric string too, as a yaml file may hold ``1e-3``), within ``[minimum, maximum]``."""
    value = cfg(config, key, default)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}") from exc
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ConfigError(f"config key '{key}' must be in [{minimum}, {maximum}], got {number}")
    return number


def cfg_choice(config, key, choices, default=None) -> str:
    """One of ``choices``."""
    value = cfg(config, key, default)
    if value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
    return value
