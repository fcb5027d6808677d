"""``negatives``: a labeled copy of an implicit-feedback dataset, for RecBole's CTR models (``mode: labeled``).

``python -m dataset_prep negatives --dataset NAME --data-path DIR --out DIR2 [--out-name NAME2] [--ratio 1]
[--seed 2020] [--overwrite]``

Writes ``DIR2/NAME2/``:

* every interaction file of ``DIR/NAME/`` (``NAME.inter`` and/or the benchmark files ``NAME.<split>.inter`` of
  ``cold-split``) with one more column ``label:float``: each original row with label 1, followed directly by its
  ``--ratio`` sampled negative rows (label 0). A negative row is the positive row with only the item replaced:
  same user, same timestamp, every other column (a ``rating`` too) copied, so no column but the item tells a
  negative from its positive;
* every other ``NAME.*`` file (``.item``, ``.user``, ``.itememb``, ``.cold_items``, ...) copied, renamed to NAME2.

Sampling rules (deterministic for ``--seed``: ``numpy.random.default_rng(seed)``, files in name order):

* No false negatives: a negative item is never an item the user has a row with in ANY interaction file.
* The negatives of one positive row are distinct and drawn uniformly without replacement from a pool minus the
  user's items. Items are those of the interaction files. Pools:

  - ``NAME.train.inter``: the warm items: items with a training row (and not listed in ``NAME.cold_items``).
    No cold item ever appears in the training file.
  - every other split (valid, test): the pool of the positive's own kind. A positive item is cold when
    ``NAME.cold_items`` lists it (without that file: when it has no training row); its negatives are then cold
    items, otherwise warm items. Cold AUC thus ranks a cold positive against cold negatives, and warm AUC a
    warm positive against warm negatives, as the model will see them at serving time.
  - ``NAME.inter`` (the unsplit view, also labeled when split files sit beside it): all items.

  When the pool minus the user's items holds fewer than ``--ratio`` items, the row gets all of them (possibly
  none); such rows are counted in the summary (``short_rows``, ``missing_negatives``).

Refused with a ``DataError`` naming the file: an interaction file that already has a ``label`` column or lacks
``user_id``/``item_id``; split files without ``NAME.train.inter``; a ``NAME.cold_items`` item with training rows;
``--ratio`` < 1. Existing outputs need ``--overwrite``; all outputs are written together or not at all.

Use the output with a CTR model and no ``threshold`` (the label is the column), loading it, e.g.
``load_col: {inter: [user_id, item_id, timestamp, label]}`` and ``benchmark_filename: [train, valid, test]``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from recbole_sid.data.cold import read_cold_items
from recbole_sid.data.text import read_atomic_header, read_atomic_table
from recbole_sid.exceptions import DataError

from dataset_prep.files import Staging, add_copy_command, locate_copy, write_rows

USER_FIELD, ITEM_FIELD, LABEL_FIELD = "user_id", "item_id", "label"
ALL, WARM, COLD = 0, 1, 2
POOL_NAMES = ("all", "warm", "cold")
MAX_REJECTION_ROUNDS = 64


def _split_name(path: Path, dataset: str) -> str:
    """``inter`` for ``NAME.inter``, else the ``<split>`` of ``NAME.<split>.inter``."""
    middle = path.name[len(dataset) + 1:-len(".inter")]
    return middle or "inter"


def _read_inter(path: Path):
    header = read_atomic_header(path)
    names = [n for n, _ in header]
    if LABEL_FIELD in names:
        raise DataError(f"{path}: already has a '{LABEL_FIELD}' column (already labeled?); negatives are only "
                        f"added to implicit-feedback files")
    missing = [f for f in (USER_FIELD, ITEM_FIELD) if f not in names]
    if missing:
        raise DataError(f"{path}: no '{missing[0]}' column (header fields: {names}); interaction files need "
                        f"'{USER_FIELD}' and '{ITEM_FIELD}'")
    frame, _ = read_atomic_table(path)
    return header, frame


def _sample(users, pools, pool_of_row, user_items, n_items, ratio, rng):
    """``[n, ratio]`` item codes (-1 where the row's pool ran short) for rows ``(users, pool_of_row)``.

    Rejection sampling, vectorised over rows: draw ``ratio`` pool items per row; redraw every slot that holds
    one of the user's items or repeats an earlier slot of its row. Every step treats the allowed items alike, so
    each row's set is uniform over the subsets of (pool minus user's items). Rows whose allowed set is not
    larger than ``ratio`` (or that are unresolved after MAX_REJECTION_ROUNDS) are enumerated one by one.
    """
    keys, starts = user_items
    out = np.full((len(users), ratio), -1, dtype=np.int64)
    for pool_id, pool in enumerate(pools):
        rows = np.flatnonzero(pool_of_row == pool_id)
        if not len(rows):
            continue
        in_pool = np.zeros(n_items, dtype=bool)
        in_pool[pool] = True
        owned = np.bincount(keys // n_items, weights=in_pool[keys % n_items], minlength=len(starts) - 1)
        allowed = len(pool) - owned[users[rows]].astype(np.int64)
        explicit = list(rows[allowed <= ratio])
        todo = rows[allowed > ratio]
        if len(todo):
            cand = pool[rng.integers(0, len(pool), size=(len(todo), ratio))]
            active = np.arange(len(todo))
            for _ in range(MAX_REJECTION_ROUNDS):
                sub = cand[active]
                bad = _is_user_item(users[todo[active]][:, None] * n_items + sub, keys) | _repeats(sub)
                hit = bad.any(axis=1)
                active = active[hit]
                if not len(active):
                    break
                bad = bad[hit]
                sub = cand[active]
                sub[bad] = pool[rng.integers(0, len(pool), size=int(bad.sum()))]
                cand[active] = sub
            explicit.extend(todo[active])
            done = np.ones(len(todo), dtype=bool)
            done[active] = False
            out[todo[done]] = cand[done]
        for row in sorted(explicit):
            u = users[row]
            mine = keys[starts[u]:starts[u + 1]] % n_items
            free = np.setdiff1d(pool, mine, assume_unique=True)
            take = rng.permutation(free)[:ratio]
            out[row, :len(take)] = take
    return out


def _is_user_item(pair_keys, keys):
    pos = np.searchsorted(keys, pair_keys)
    return keys[np.minimum(pos, len(keys) - 1)] == pair_keys


def _repeats(cand):
    """True at each slot whose value already occurs in an earlier slot of the same row."""
    order = np.argsort(cand, axis=1, kind="stable")
    ordered = np.take_along_axis(cand, order, axis=1)
    dup_sorted = np.zeros(cand.shape, dtype=bool)
    dup_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    dup = np.zeros(cand.shape, dtype=bool)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def add_negatives(dataset: str, data_path, out, out_name: str | None = None, ratio: int = 1, seed: int = 2020,
                  overwrite: bool = False, log=print) -> dict:
    """Write ``OUT/OUT_NAME/`` = the dataset with ``label:float`` and sampled negatives (module docstring).

    Returns a summary dict: files written, per interaction file the positive / negative row counts, the pool
    and the rows whose pool ran short, and the pool sizes.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1:
        raise DataError(f"--ratio must be a positive integer (negatives per positive row), got {ratio!r}")
    ratio = int(ratio)
    folder, target, inter_files = locate_copy(dataset, data_path, out, out_name)
    tables = {path: _read_inter(path) for path in inter_files}
    splits = {path: _split_name(path, dataset) for path in inter_files}
    split_files = [p for p in inter_files if splits[p] != "inter"]
    train_path = folder / f"{dataset}.train.inter"
    if split_files and train_path not in tables:
        raise DataError(f"{folder}: split files {[p.name for p in split_files]} but no {train_path.name}; the "
                        f"warm/cold pools are defined by the training file")

    # codes: items and users sorted as strings over every interaction file
    item_ids, item_codes = np.unique(np.concatenate([t[1][ITEM_FIELD].to_numpy(dtype=str) for t in tables.values()]),
                                     return_inverse=True)
    user_ids, user_codes = np.unique(np.concatenate([t[1][USER_FIELD].to_numpy(dtype=str) for t in tables.values()]),
                                     return_inverse=True)
    n_items, n_users = len(item_ids), len(user_ids)
    bounds = np.cumsum([0] + [len(t[1]) for t in tables.values()])
    codes = {p: (user_codes[a:b], item_codes[a:b]) for p, a, b in zip(tables, bounds[:-1], bounds[1:])}
    keys = np.unique(user_codes.astype(np.int64) * n_items + item_codes)
    starts = np.searchsorted(keys, np.arange(n_users + 1, dtype=np.int64) * n_items)

    in_train = np.zeros(n_items, dtype=bool)
    cold_file = folder / f"{dataset}.cold_items"
    cold_source, cold_unknown = None, 0
    if split_files:
        in_train[codes[train_path][1]] = True
        if cold_file.is_file():
            listed = read_cold_items(cold_file)
            is_cold = np.isin(item_ids, np.asarray(listed, dtype=str))
            cold_unknown = len(listed) - int(is_cold.sum())
            trained = item_ids[is_cold & in_train]
            if len(trained):
                raise DataError(f"{cold_file}: {len(trained)} listed cold items have rows in {train_path} (first: "
                                f"{trained[:10].tolist()}); a cold item must have no training row")
            cold_source = cold_file.name
        else:
            is_cold = ~in_train
            cold_source = f"items without a row in {train_path.name}"
    else:
        is_cold = np.zeros(n_items, dtype=bool)
    pools = (np.arange(n_items), np.flatnonzero(in_train & ~is_cold), np.flatnonzero(is_cold))

    rng = np.random.default_rng(seed)
    sampled, stats = {}, {}
    for path in inter_files:
        users, items = codes[path]
        split = splits[path]
        if split == "inter":
            pool_of_row = np.full(len(items), ALL)
        elif split == "train":
            pool_of_row = np.full(len(items), WARM)
        else:
            pool_of_row = np.where(is_cold[items], COLD, WARM)
        neg = _sample(users, pools, pool_of_row, (keys, starts), n_items, ratio, rng)
        found = (neg >= 0).sum(axis=1)
        sampled[path] = neg
        stats[split] = {
            "positives": int(len(items)), "negatives": int(found.sum()),
            "rows_by_pool": {POOL_NAMES[k]: int(c) for k, c in enumerate(np.bincount(pool_of_row, minlength=3)) if c},
            "short_rows": int((found < ratio).sum()), "missing_negatives": int((ratio - found).sum()),
        }

    # NAME.<suffix> -> NAME2.<suffix>: labeled interaction files first, then the other files as they are
    sides = [p for p in sorted(folder.iterdir())
             if p.is_file() and p.name.startswith(f"{dataset}.") and p not in tables]
    plan = {target / f"{target.name}{src.name[len(dataset):]}": src for src in [*inter_files, *sides]}
    with Staging(plan, overwrite) as stage:
        for dst, src in plan.items():
            if src in tables:
                _write_labeled(stage.path(dst), tables[src], codes[src][1], sampled[src], item_ids)
            else:
                shutil.copyfile(src, stage.path(dst))
        stage.commit()
    files = list(plan)
    log(f"wrote {len(inter_files)} labeled interaction files ({ratio} negatives per positive row) and copied "
        f"{len(sides)} files to {target}")
    return {
        "folder": str(target), "ratio": ratio, "seed": seed,
        "order": "each positive row (label 1) directly followed by its negatives (label 0)",
        "pools": {name: int(len(pool)) for name, pool in zip(POOL_NAMES, pools)},
        "cold_items_from": cold_source, "cold_items_not_in_interactions": cold_unknown,
        "interactions": stats,
        "files": [str(p) for p in files],
        "load_col_hint": {"inter": [USER_FIELD, ITEM_FIELD, "...", LABEL_FIELD]},
    }


def _write_labeled(path, table, items, neg, item_ids) -> None:
    """Each row with label 1 followed by its negatives (the row with the item replaced) with label 0."""
    header, frame = table
    n, ratio = neg.shape
    block = np.concatenate([items[:, None], neg], axis=1)
    keep = block >= 0
    source_row = np.repeat(np.arange(n), ratio + 1).reshape(n, ratio + 1)[keep]
    labels = np.zeros((n, ratio + 1), dtype="<U1")
    labels[:] = "0"
    labels[:, 0] = "1"
    rows = frame.iloc[source_row].reset_index(drop=True)
    rows[ITEM_FIELD] = item_ids[block[keep]]
    rows[LABEL_FIELD] = labels[keep]
    write_rows(path, "\t".join(f"{name}:{ftype}" for name, ftype in header) + f"\t{LABEL_FIELD}:float", rows,
               list(frame.columns) + [LABEL_FIELD])


#: ``--help`` text of the command
DESCRIPTION = (
    'Write OUT/OUT_NAME/ = DIR/NAME/ with a label:float column in every interaction file: each row with label 1 '
    'followed by RATIO sampled negatives (label 0; same row, other item). Negatives are never items of the user '
    '(any split); train negatives are warm items; valid/test negatives are cold for a cold positive and warm for '
    'a warm one; NAME.inter negatives are any item. Other NAME.* files are copied. For RecBole CTR models (mode: '
    'labeled, AUC/LogLoss) with label in load_col.')


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``negatives`` (it runs :func:`run_from_args`, also set as ``args.run``)."""
    p = add_copy_command(subparsers, "negatives", run=run_from_args,
                         help="labeled copy of an implicit dataset: label:float column + sampled negatives (CTR)",
                         description=DESCRIPTION)
    p.add_argument("--ratio", type=int, default=1, help="negatives per positive row (default 1)")
    p.add_argument("--seed", type=int, default=2020, help="sampling seed (default 2020)")
    return p


def run_from_args(args) -> dict:
    return add_negatives(args.dataset, args.data_path, args.out, out_name=args.out_name, ratio=args.ratio,
                         seed=args.seed, overwrite=args.overwrite)

