"""``seq-cold-split``: leave-one-out benchmark files for RecBole's sequential models, with a share of items held out.

``python -m dataset_prep seq-cold-split --dataset NAME --data-path DIR --out DIR2 [--out-name NAME2]
[--cold-ratio 0.1] [--seed 2020] [--max-history 50] [--overwrite]``

Why files: RecBole's ``SequentialDataset`` builds its training sequences itself only from an unsplit ``NAME.inter``
(``data_augmentation``: one row per interaction after a user's first, history = the user's earlier items, at most
``MAX_ITEM_LIST_LENGTH``, then ``eval_args: {split: {LS: valid_and_test}, order: TO}`` keeps each user's last row
for test and the one before for validation). With ``benchmark_filename`` it builds nothing: every row of
``NAME.<part>.inter`` must already carry its history as an ``item_id_list`` column, read as written. So a cold
variant, where the histories must skip the held-out items, is written as such rows.

Rule (deterministic for a ``seed``):

1. Cold items: the distinct items of ``NAME.inter``, sorted as strings, and ``round(cold_ratio * n_items)`` of them
   (at least 1, at most ``n_items - 1``) drawn with ``numpy.random.default_rng(seed)``: the same draw as
   ``cold-split``, so for one seed and ratio both splits hold out the same items (a tokenizer's top-k cell of that
   split never saw these items' interactions). ``--cold-ratio 0`` holds out nothing (RecBole's own leave-one-out,
   as files).
2. Each user's interactions in time order (``timestamp``, ties in file order; without a ``timestamp`` column, file
   order): ``x_1 .. x_n``, cold items included. Targets, as RecBole's ``LS: valid_and_test`` on ``NAME.inter``:
   n >= 4: test target ``x_n``, validation target ``x_(n-1)``; n = 3: test target ``x_3`` only; n <= 2: none.
   The targets are the user's LAST interactions whatever their item: a cold target stays a target.
3. Training sequence: the user's interactions before the targets, cold items removed (they are dropped, counted in
   the summary). Training rows: one per item of that sequence after the first, history = the sequence before it.
4. Validation row: history = the training sequence. Test row: history = the training sequence plus the validation
   target when that one is warm (a cold validation target is not an input). A row whose history would be empty is
   not written (counted).
5. Every history keeps its last ``--max-history`` items (RecBole's ``MAX_ITEM_LIST_LENGTH``, default 50: the runs
   must use the same value, a longer history breaks the models' position tables).

So no cold item is in any training row or any input history, no validation or test interaction is in its user's
training sequence, and a user's validation / test target may be a cold item (``NAME.cold_items`` lists them; the
plugin's evaluation then reports ``test_result_warm`` / ``test_result_cold`` by the test row's target). With
``--cold-ratio 0`` the rows equal those RecBole builds from ``NAME.inter`` with leave-one-out (tested).

Outputs in ``DIR2/NAME2/`` (never the input folder): ``NAME2.train.inter``, ``NAME2.valid.inter``,
``NAME2.test.inter`` with columns ``user_id:token  item_id_list:token_seq  item_id:token`` (+ ``timestamp:float``,
the target's, when the input has one), ``NAME2.cold_items`` (header ``item_id:token``, one raw id a line; not
written with ``--cold-ratio 0``), ``NAME2.seq_split.json`` (the parameters and counts) and the side files
(``.item .user .itememb .useremb .kg .link``) copied and renamed; ``NAME.inter`` is not copied (read without
``benchmark_filename`` it would be the unsplit data, cold items in training). Read it with
:func:`benchmark_config`::

    benchmark_filename: [train, valid, test]
    alias_of_item_id: [item_id_list]          # the history tokens are item ids (one id space)
    load_col: {inter: [user_id, item_id_list, item_id], item: [item_id]}   # item: when NAME.item exists
    eval_args: {split: {LS: valid_and_test}, order: TO, mode: full}

(``load_col: item`` keeps every item of the catalogue a candidate of the full sort, held-out items that are no one's
target included.) Refused with a ``DataError`` naming the file / field: no ``NAME.inter``; no ``user_id`` or
``item_id`` column; a non-numeric ``timestamp``; a ratio outside [0, 1); ``--max-history`` < 1; an output folder
that is the input's. Existing outputs need ``--overwrite``; all outputs are written together or not at all.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_sid.atomic_io import atomic_write
from recbole_sid.data.cold import COLD_ITEMS_HEADER
from recbole_sid.exceptions import DataError

from dataset_prep.files import Staging, add_copy_command, check_input, output_name, read_inter_table

SPLITS = ("train", "valid", "test")
SIDE_SUFFIXES = ("item", "user", "itememb", "useremb", "kg", "link")
DEFAULT_MAX_HISTORY = 50
#: the parameters file beside the benchmark files (written last: a split folder with it is complete)
PARAMS_SUFFIX = "seq_split.json"
HISTORY_FIELD = "item_id_list"


def draw_cold_items(distinct, cold_ratio: float, seed: int) -> np.ndarray:
    """The held-out items among ``distinct`` (sorted raw ids): ``cold-split``'s draw (rule 1); empty for ratio 0."""
    n_items = len(distinct)
    if cold_ratio == 0:
        return np.array([], dtype=object)
    if n_items < 2:
        raise DataError(f"need at least 2 distinct items to hold some out, found {n_items}")
    n_cold = int(min(max(round(cold_ratio * n_items), 1), n_items - 1))
    rng = np.random.default_rng(seed)
    return np.asarray(distinct, dtype=object)[rng.choice(n_items, size=n_cold, replace=False)]


def sequential_rows(users, items, times, cold, max_history: int = DEFAULT_MAX_HISTORY) -> tuple[dict, dict]:
    """Rules 2-5 on one interaction table (arrays in file order; ``times`` None = file order).

    Returns ``({split: [(row index of the target, [history row indices])]}, counts)``: rows are referred to by
    their index in the input, so any column of the target (user, item, timestamp) can be written.
    """
    users, items = np.asarray(users, dtype=object), np.asarray(items, dtype=object)
    n = len(users)
    position = np.arange(n)
    codes = pd.factorize(users)[0]
    keys = (position,) if times is None else (position, np.asarray(times, dtype=np.float64))
    order = np.lexsort(keys + (codes,))  # by user (first appearance), time, then file order
    is_cold = pd.Series(items).isin(set(cold)).to_numpy()
    out = {split: [] for split in SPLITS}
    counts = {"dropped_cold_history": 0, "dropped_empty_history": {"valid": 0, "test": 0},
              "users": 0, "users_with_test": 0}
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for group in np.split(order, bounds):
        if not len(group):
            continue
        counts["users"] += 1
        size = len(group)
        n_targets = 2 if size >= 4 else (1 if size == 3 else 0)
        before = group[:size - n_targets]
        warm = [int(r) for r in before if not is_cold[r]]
        counts["dropped_cold_history"] += len(before) - len(warm)
        for j in range(1, len(warm)):
            out["train"].append((warm[j], warm[max(0, j - max_history):j]))
        if n_targets == 2:
            valid_target = int(group[-2])
            if warm:
                out["valid"].append((valid_target, warm[-max_history:]))
            else:
                counts["dropped_empty_history"]["valid"] += 1
            if not is_cold[valid_target]:
                warm = warm + [valid_target]
        if n_targets:
            if warm:
                out["test"].append((int(group[-1]), warm[-max_history:]))
                counts["users_with_test"] += 1
            else:
                counts["dropped_empty_history"]["test"] += 1
    return out, counts


def benchmark_config(dataset: str, folder) -> dict:
    """The RecBole config keys that read the files of a ``seq-cold-split`` folder ``folder`` (= ``DIR2/NAME2``)."""
    load_col = {"inter": ["user_id", HISTORY_FIELD, "item_id"]}
    if (Path(folder) / f"{dataset}.item").is_file():
        load_col["item"] = ["item_id"]
    return {"benchmark_filename": list(SPLITS), "alias_of_item_id": [HISTORY_FIELD], "load_col": load_col,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}}


def read_params(dataset: str, folder) -> dict | None:
    """The parameters of the split in ``folder`` (``NAME.seq_split.json``), None when the folder has none."""
    path = Path(folder) / f"{dataset}.{PARAMS_SUFFIX}"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the split's parameters ({exc})") from exc


def _cold_ratio(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"--cold-ratio must be a number in [0, 1), got {value!r}") from exc
    if not (0.0 <= value < 1.0):
        raise DataError(f"--cold-ratio must be in [0, 1), got {value}")
    return value


def seq_cold_split(dataset: str, data_path, cold_ratio: float = 0.1, seed: int = 2020, out=None,
                   out_name: str | None = None, max_history: int = DEFAULT_MAX_HISTORY, overwrite: bool = False,
                   log=print) -> dict:
    """Write the sequential leave-one-out split of ``<data_path>/<dataset>/<dataset>.inter`` to ``<out>/<out_name>/``
    (module docstring); returns a summary (also written as ``NAME2.seq_split.json``)."""
    target_name = output_name(dataset, out_name)
    cold_ratio = _cold_ratio(cold_ratio)
    if isinstance(max_history, bool) or not isinstance(max_history, (int, np.integer)) or max_history < 1:
        raise DataError(f"--max-history must be a positive integer, got {max_history!r}")
    if out is None:
        raise DataError("seq-cold-split needs --out: its benchmark files are not the top-k ones (cold-split's), so "
                        "they go to a folder of their own")
    folder = Path(data_path) / dataset
    inter_path = check_input(folder / f"{dataset}.inter", "interaction file")
    target = Path(out) / target_name
    if target.resolve() == folder.resolve():
        raise DataError(f"{target}: the output folder is the input dataset's folder; choose another --out (or "
                        f"--out-name) so that the input files stay as they are")
    header, columns, frame, _ = read_inter_table(inter_path)
    users, items = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    times = None
    if "timestamp" in columns:
        try:
            times = frame["timestamp"].astype(np.float64).to_numpy()
        except ValueError as exc:
            raise DataError(f"{inter_path}: 'timestamp' is not numeric ({exc})") from exc
    distinct = np.array(sorted(set(items.tolist())), dtype=object)
    try:
        cold = draw_cold_items(distinct, cold_ratio, seed)
    except DataError as exc:
        raise DataError(f"{inter_path}: {exc}") from exc
    rows, counts = sequential_rows(users, items, times, cold, max_history)

    outputs = {s: target / f"{target_name}.{s}.inter" for s in SPLITS}
    cold_file = target / f"{target_name}.cold_items"
    params_file = target / f"{target_name}.{PARAMS_SUFFIX}"
    sides = {}
    for suffix in SIDE_SUFFIXES:
        src = folder / f"{dataset}.{suffix}"
        if src.is_file():
            sides[src] = target / f"{target_name}.{suffix}"
    declared = [*outputs.values(), *([cold_file] if len(cold) else []), *sides.values(), params_file]
    cold_set = set(cold.tolist())
    summary = {
        "dataset": dataset, "source": str(inter_path), "folder": str(target), "seed": int(seed),
        "cold_ratio": cold_ratio, "max_history": int(max_history),
        "rows": {s: len(rows[s]) for s in SPLITS},
        "cold_items": len(cold),
        "cold_targets": {s: int(sum(items[t] in cold_set for t, _ in rows[s])) for s in ("valid", "test")},
        "cold_interactions_dropped": counts["dropped_cold_history"],
        "rows_without_history_dropped": counts["dropped_empty_history"],
        "users": counts["users"], "users_with_test_row": counts["users_with_test"],
        "files": [str(p) for p in declared],
    }
    out_header = ["user_id:token", f"{HISTORY_FIELD}:token_seq", "item_id:token"]
    time_values = None
    if times is not None:
        out_header.append("timestamp:float")
        time_values = frame["timestamp"].to_numpy()
    with Staging(declared, overwrite) as stage:
        for split in SPLITS:
            with atomic_write(stage.path(outputs[split])) as f:
                f.write("\t".join(out_header) + "\n")
                for t, history in rows[split]:
                    fields = [users[t], " ".join(items[history].tolist()), items[t]]
                    if time_values is not None:
                        fields.append(time_values[t])
                    f.write("\t".join(fields) + "\n")
        if len(cold):
            with atomic_write(stage.path(cold_file)) as f:
                f.write(COLD_ITEMS_HEADER + "\n")
                f.writelines(f"{i}\n" for i in sorted(cold_set))
        for src, dst in sides.items():
            shutil.copyfile(src, stage.path(dst))
        with atomic_write(stage.path(params_file)) as f:
            json.dump(summary, f, indent=1)
        stage.commit()
    log(f"seq-cold-split: {summary['rows']} rows, {len(cold)} cold items, cold targets {summary['cold_targets']} "
        f"-> {target}")
    return summary


def add_parser(subparsers):
    """Register ``seq-cold-split`` (runs :func:`run_from_args`, set as ``args.run``)."""
    p = add_copy_command(subparsers, "seq-cold-split", run=run_from_args,
                         help="leave-one-out sequential benchmark files (item_id_list histories) with held-out items",
                         description="Write NAME.{train,valid,test}.inter for RecBole's sequential models with "
                                     "benchmark_filename: each user's last interaction is the test target, the one "
                                     "before it the validation target; a share of items is held out whole: never "
                                     "in a training row or an input history, only as a target. "
                                     "Rule: dataset_prep/seq_split.py and docs/sequential.md.")
    for action in p._actions:
        if action.dest == "dataset":
            action.help = "dataset NAME (reads DIR/NAME/NAME.inter, the unsplit interactions)"
    p.add_argument("--cold-ratio", type=float, default=0.1,
                   help="share of items held out, in [0, 1) (default 0.1; 0: plain leave-one-out)")
    p.add_argument("--seed", type=int, default=2020, help="seed of the held-out draw (cold-split's draw)")
    p.add_argument("--max-history", type=int, default=DEFAULT_MAX_HISTORY,
                   help=f"items per history, = the runs' MAX_ITEM_LIST_LENGTH (default {DEFAULT_MAX_HISTORY})")
    return p


def run_from_args(args) -> dict:
    return seq_cold_split(args.dataset, args.data_path, args.cold_ratio, seed=args.seed, out=args.out,
                          out_name=args.out_name, max_history=args.max_history, overwrite=args.overwrite,
                          log=lambda *a, **k: None)
