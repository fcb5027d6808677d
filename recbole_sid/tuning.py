"""The leaderboard's small hyper-parameter search: the same number of configurations for every model.

Search spaces are RecBole's hyper-parameter files (``properties/hyper/<Model>.hyper``, one line per key:
``learning_rate choice [0.001,0.005]``; only ``choice`` is supported, values are read as YAML, never evaluated).
:func:`trial_configs` lists the grid in a fixed order and, when it is larger than the budget, keeps ``trials``
configurations drawn without replacement with a fixed seed. The leaderboard runs each on one split seed and one
model seed, keeps the one with the best validation score (the run's ``valid_metric`` on its ``valid_rows``) and
applies it to every cell of that model (``python -m recbole_sid.leaderboard --tune``).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import yaml

from recbole_sid.exceptions import ConfigError


def hyper_dir() -> Path:
    from recbole_sid.utils import properties_dir

    return properties_dir() / "hyper"


def read_search_space(path) -> dict[str, list]:
    """``{key: [values]}`` of a RecBole hyper-parameter file (``key choice [v1, v2]`` lines)."""
    path = Path(path)
    space: dict[str, list] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) != 3 or parts[1] != "choice":
            raise ConfigError(f"{path}, line {number}: expected 'key choice [v1, v2, ...]', got {line!r}")
        key, _, values = parts
        try:
            parsed = yaml.safe_load(values)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}, line {number}: the values of {key!r} are not a YAML list ({exc})") from exc
        if not isinstance(parsed, list) or not parsed:
            raise ConfigError(f"{path}, line {number}: the values of {key!r} must be a non-empty list, got {values!r}")
        if key in space:
            raise ConfigError(f"{path}, line {number}: {key!r} is given twice")
        space[key] = parsed
    return space


def model_search_space(model: str) -> dict[str, list] | None:
    """The search space of ``model`` (class name) from ``properties/hyper``, or None when it has none (e.g. Pop)."""
    path = hyper_dir() / f"{model}.hyper"
    return read_search_space(path) if path.is_file() else None


def trial_configs(space: dict[str, list], trials: int, seed: int = 2020) -> list[dict]:
    """At most ``trials`` configurations of ``space``: the whole grid (keys in file order, last key fastest) when
    it fits, else ``trials`` of them drawn without replacement with ``numpy.random.default_rng(seed)``, in grid
    order."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    keys = list(space)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if len(grid) <= trials:
        return grid
    keep = np.sort(np.random.default_rng(seed).choice(len(grid), size=trials, replace=False))
    return [grid[i] for i in keep]


def best_trial(records: list[dict]) -> int | None:
    """Index of the finished trial with the best ``best_valid_score`` (bigger or smaller as its
    ``valid_score_bigger`` says; the first one on ties); None when no trial finished."""
    best, best_score = None, None
    for i, record in enumerate(records):
        score = record.get("best_valid_score")
        if record.get("status") != "ok" or score is None:
            continue
        bigger = record.get("valid_score_bigger", True)
        if best is None or (score > best_score if bigger else score < best_score):
            best, best_score = i, score
    return best
