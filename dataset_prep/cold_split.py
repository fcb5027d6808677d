"""``cold-split``: hold out a share of items whole and write RecBole benchmark files.

Rule (deterministic for a given ``seed``):

1. The distinct items of ``NAME.inter`` are sorted (as strings) and ``round(cold_ratio * n_items)`` of them
   (at least 1, at most ``n_items - 1``) are drawn without replacement with ``numpy.random.default_rng(seed)``.
2. The cold items are divided between validation and test in proportion ``valid_ratio : test_ratio`` (each
   side gets at least one when there are two or more): ALL interactions of a "valid-cold" item go to
   ``NAME.valid.inter``, all of a "test-cold" item to ``NAME.test.inter``. No cold interaction reaches
   training, and the cold items that model selection sees are not the ones it is tested on.
3. The remaining (warm) interactions are split per user by time, leave-latest-out, with RecBole's own
   rounding (``Dataset._calcu_split_ids``): for ``n`` warm interactions of a user, ``floor(test_ratio * n)``
   latest go to test and the ``floor(valid_ratio * n)`` before them to valid; when ``0 < ratio * n < 1`` one
   interaction is moved there as long as training keeps at least one (test first, then valid). Ties in time
   keep the file order; without a ``timestamp`` column the file order is the time order.

Outputs (beside the input, or in ``OUT/OUT_NAME/``): ``NAME.train.inter``, ``NAME.valid.inter``,
``NAME.test.inter`` (same columns and lines as ``NAME.inter``) and ``NAME.cold_items`` (header ``item_id:token``
then one raw item id per line; which split each cold item went to is visible from the valid/test files).
Writing elsewhere copies ``NAME.inter`` and the side files (``.item``, ``.user``, ``.itememb``, ``.useremb``,
``.kg``, ``.link``) along, renamed to ``OUT_NAME``. Use with RecBole's
``benchmark_filename: [train, valid, test]``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_sid.atomic_io import atomic_write
from recbole_sid.data.cold import COLD_ITEMS_HEADER
from recbole_sid.exceptions import DataError

from dataset_prep.files import Staging, check_input, output_name, read_inter_table

SIDE_SUFFIXES = ("inter", "item", "user", "itememb", "useremb", "kg", "link")
SPLITS = ("train", "valid", "test")


def _ratio(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"--{name} must be a number in (0, 1), got {value!r}") from exc
    if not (0.0 < value < 1.0):
        raise DataError(f"--{name} must be in the open interval (0, 1), got {value}")
    return value


def split_counts(n: np.ndarray, valid_ratio: float, test_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-user ``(n_valid, n_test)`` with RecBole's ``_calcu_split_ids`` rounding, vectorised."""
    n = np.asarray(n, dtype=np.int64)
    n_valid = np.floor(valid_ratio * n).astype(np.int64)
    n_test = np.floor(test_ratio * n).astype(np.int64)
    n_train = n - n_valid - n_test
    # RecBole: for i in 1..: if cnt[0] <= 1: break; if 0 < ratio[-i] * tot < 1: cnt[-i] += 1; cnt[0] -= 1
    bump_test = (n_train > 1) & (test_ratio * n > 0) & (test_ratio * n < 1)
    n_test += bump_test
    n_train -= bump_test
    bump_valid = (n_train > 1) & (valid_ratio * n > 0) & (valid_ratio * n < 1)
    n_valid += bump_valid
    return n_valid, n_test


def cold_split(dataset: str, data_path, cold_ratio: float, valid_ratio: float = 0.1, test_ratio: float = 0.1,
               seed: int = 2020, out=None, out_name: str | None = None, overwrite: bool = False,
               log=print) -> dict:
    target_name = output_name(dataset, out_name)
    cold_ratio = _ratio("cold-ratio", cold_ratio)
    valid_ratio = _ratio("valid-ratio", valid_ratio)
    test_ratio = _ratio("test-ratio", test_ratio)
    if valid_ratio + test_ratio >= 1:
        raise DataError(f"--valid-ratio + --test-ratio must be < 1 (training keeps the rest), got "
                        f"{valid_ratio} + {test_ratio}")
    folder = Path(data_path) / dataset
    inter_path = check_input(folder / f"{dataset}.inter", "interaction file")
    header, columns, frame, lines = read_inter_table(inter_path)
    users = frame["user_id"].to_numpy()
    items = frame["item_id"].to_numpy()
    if "timestamp" in columns:
        try:
            times = frame["timestamp"].astype(np.float64).to_numpy()
        except ValueError as exc:
            raise DataError(f"{inter_path}: 'timestamp' is not numeric ({exc})") from exc
    else:
        times = np.zeros(len(frame))

    # 1-2. cold items
    distinct = np.array(sorted(set(items.tolist())), dtype=object)
    n_items = len(distinct)
    if n_items < 2:
        raise DataError(f"{inter_path}: need at least 2 distinct items to hold some out, found {n_items}")
    n_cold = int(min(max(round(cold_ratio * n_items), 1), n_items - 1))
    rng = np.random.default_rng(seed)
    cold = distinct[rng.choice(n_items, size=n_cold, replace=False)]
    n_cold_valid = int(round(n_cold * valid_ratio / (valid_ratio + test_ratio)))
    if n_cold >= 2:
        n_cold_valid = min(max(n_cold_valid, 1), n_cold - 1)
    cold_valid, cold_test = set(cold[:n_cold_valid].tolist()), set(cold[n_cold_valid:].tolist())

    label = np.zeros(len(frame), dtype=np.int8)  # 0 train, 1 valid, 2 test
    is_valid_cold = pd.Series(items).isin(cold_valid).to_numpy()
    is_test_cold = pd.Series(items).isin(cold_test).to_numpy()
    label[is_valid_cold] = 1
    label[is_test_cold] = 2

    # 3. warm interactions, per user by time, latest last
    warm = np.where(~(is_valid_cold | is_test_cold))[0]
    user_codes = pd.factorize(users[warm])[0]
    order = warm[np.lexsort((warm, times[warm], user_codes))]
    codes_sorted = pd.factorize(users[order])[0]
    sizes = np.bincount(codes_sorted)
    n_valid, n_test = split_counts(sizes, valid_ratio, test_ratio)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos_from_end = sizes[codes_sorted] - 1 - (np.arange(len(order)) - starts[codes_sorted])
    warm_label = np.where(pos_from_end < n_test[codes_sorted], 2,
                          np.where(pos_from_end < n_test[codes_sorted] + n_valid[codes_sorted], 1, 0))
    label[order] = warm_label

    # outputs
    target = folder if out is None else Path(out) / target_name
    if out is None and out_name not in (None, dataset):
        raise DataError("--out-name needs --out (renaming in place would leave two names in one folder)")
    outputs = {s: target / f"{target_name}.{s}.inter" for s in SPLITS}
    cold_file = target / f"{target_name}.cold_items"
    sides = {}
    if target.resolve() != folder.resolve():
        for suffix in SIDE_SUFFIXES:
            src = folder / f"{dataset}.{suffix}"
            if src.is_file():
                sides[src] = target / f"{target_name}.{suffix}"
    lines_arr = np.array(lines, dtype=object)
    with Staging([*outputs.values(), cold_file, *sides.values()], overwrite) as stage:
        for code, split in enumerate(SPLITS):
            with atomic_write(stage.path(outputs[split])) as f:
                f.write(header + "\n")
                f.writelines(line + "\n" for line in lines_arr[label == code])
        with atomic_write(stage.path(cold_file)) as f:
            f.write(COLD_ITEMS_HEADER + "\n")
            f.writelines(f"{i}\n" for i in sorted(cold.tolist()))
        for src, dst in sides.items():
            shutil.copyfile(src, stage.path(dst))
        stage.commit()

    train_items = set(items[label == 0].tolist())
    train_users = set(users[label == 0].tolist())
    summary = {
        "folder": str(target),
        "interactions": {s: int((label == c).sum()) for c, s in enumerate(SPLITS)},
        "cold_items": n_cold, "cold_items_valid": len(cold_valid), "cold_items_test": len(cold_test),
        "cold_interactions": int((is_valid_cold | is_test_cold).sum()),
        "warm_items_without_training": int(n_items - n_cold - len(train_items)),
        "users_without_training": int(len(set(users.tolist())) - len(train_users)),
        "files": [str(p) for p in [*outputs.values(), cold_file, *sides.values()]],
    }
    return summary
