"""Cold items written by ``python -m dataset_prep cold-split``: ``<dataset>.cold_items``.

Format: a RecBole-style header ``item_id:token`` then one raw item id per line (no other column).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from recbole_sid.exceptions import ConfigError, DataError

COLD_ITEMS_HEADER = "item_id:token"


def read_cold_items(path) -> list[str]:
    """Raw ids from a ``.cold_items`` file (header line optional)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if lines and lines[0].strip().endswith(":token"):
        lines = lines[1:]
    ids = [line.strip() for line in lines if line.strip()]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate item ids")
    return ids


def cold_item_mask(config, dataset) -> torch.Tensor:
    """``BoolTensor [dataset.item_num]``: True at the internal ids of the cold items.

    Source: config key ``cold_items_file``, else ``<data_path>/<dataset>.cold_items``.
    """
    try:
        explicit = config["cold_items_file"]
    except (KeyError, TypeError):
        explicit = None
    if explicit:
        path = Path(explicit)
    else:
        try:
            data_path, name = config["data_path"], config["dataset"]
        except (KeyError, TypeError) as exc:
            raise ConfigError("config needs 'data_path' and 'dataset' to find the cold items") from exc
        path = Path(data_path) / f"{name}.cold_items"
    ids = read_cold_items(path)
    token2id = dataset.field2token_id[dataset.iid_field]
    mask = np.zeros(dataset.item_num, dtype=bool)
    known = [token2id[i] for i in ids if i in token2id]
    mask[known] = True
    if len(known) < len(ids):
        logging.getLogger().warning(f"{path}: {len(ids) - len(known)} cold items are not in the dataset; ignored")
    return torch.from_numpy(mask)
