"""Files that models read by a config key: where the file is, and the SIDs of a dataset's items from an ``.itemsid``.

Shared by the models that accept SIDs from any tokenizer (COINS ``coins_sid_file``, QBERT4Rec ``qbert_sid_file``).
"""
from __future__ import annotations

import os
from logging import getLogger

import numpy as np

from recbole_sid.atomic_io import read_sids
from recbole_sid.config_values import cfg
from recbole_sid.exceptions import ConfigError, DataError


def resolve_data_file(config, key: str) -> str:
    """The file config ``key`` names: as given, else under ``data_path``; ``DataError`` naming the key otherwise."""
    value = os.path.expanduser(str(cfg(config, key)))
    if os.path.isfile(value):
        return value
    beside = os.path.join(str(cfg(config, "data_path", "")), value)
    if not os.path.isabs(value) and os.path.isfile(beside):
        return beside
    raise DataError(f"config key {key}: file {value} not found (also looked for {beside})")


def sid_file_codes(path, dataset, num_levels: int, key: str, levels_key: str) -> np.ndarray:
    """``[item_num - 1, num_levels]`` codes of items 1..item_num-1 (RecBole internal ids) from an ``.itemsid`` file:
    its first ``num_levels`` levels (an exported file's trailing dedup level is left out when ``num_levels`` is one
    less). Every item of the dataset must have a SID (``DataError`` with the count and examples); ids of the file
    that the dataset does not know are ignored (logged). ``key`` / ``levels_key``: the config keys the errors name."""
    raw_ids, codes = read_sids(path)
    if codes.shape[1] < num_levels:
        raise ConfigError(f"config key {key}: {path} has SIDs of {codes.shape[1]} levels but {levels_key}="
                          f"{num_levels}; set {levels_key} <= {codes.shape[1]}")
    index = {raw: row for row, raw in enumerate(raw_ids)}
    tokens = [str(t) for t in list(dataset.field2id_token[dataset.iid_field])[1:]]
    missing = [t for t in tokens if t not in index]
    if missing:
        raise DataError(f"config key {key}: {path} has no SID for {len(missing)} of {len(tokens)} items of dataset "
                        f"'{dataset.dataset_name}' (e.g. {', '.join(missing[:10])}); the file must cover every item "
                        f"(export it for this dataset, e.g. with RQKMeans/DAS)")
    unknown = len(raw_ids) - len(tokens)
    if unknown > 0:
        getLogger().info(f"{key}: {unknown} ids of {path} are not items of this dataset; ignored")
    rows = np.fromiter((index[t] for t in tokens), dtype=np.int64, count=len(tokens))
    return codes[rows, :num_levels]
