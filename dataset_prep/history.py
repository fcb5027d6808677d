"""``history``: user-behaviour features for a labeled dataset, so RecBole's CTR models can read them (``load_col``).

``python -m dataset_prep history --dataset NAME --data-path DIR --out DIR2 [--out-name NAME2] [--max-len 20]
[--sids FILE.itemsid] [--no-embedding] [--overwrite]``

Input: a labeled dataset (the output of ``negatives``, or any dataset whose benchmark files have a ``label:float``
column): ``NAME.train.inter`` is required, ``NAME.valid.inter`` / ``NAME.test.inter`` / ``NAME.inter`` (and any
other ``NAME.<split>.inter``) are used when present. Writes ``DIR2/NAME2/``:

* every interaction file with its lines unchanged plus these columns, in this order:

  - ``hist_items:token_seq``: the row user's history, the item ids of their TRAINING positives (rows of
    ``NAME.train.inter`` with ``label > 0.5``) that the row may see, most recent last, at most ``--max-len`` of
    them, separated by spaces (RecBole's default ``seq_separator``). Which positives a row sees:

    - a row of ``NAME.train.inter`` (positive or negative) at time ``t`` sees the user's training positives with
      timestamp strictly before ``t``: positives at the same timestamp are excluded for every row of that time,
      so two positives at one time do not see each other, and a positive and its sampled negatives (same user,
      same timestamp, as ``negatives`` writes them) see the same positives. Without a ``timestamp`` column, time
      is file order and a label-0 row takes the position of its anchor, the most recent label-1 row at or before
      it in the file (any user's; as ``negatives`` writes them, its own positive): ``t`` = the number of label-1
      rows at or before the row (0 for a label-0 row before any positive), a positive's time is its 1-based
      ordinal among the label-1 rows, and the row sees the user's positives with ordinal < ``t``;
    - a row of any other file (valid, test, ``NAME.inter``, other splits) sees ALL the user's training positives:
      those files come after training in time (``NAME.inter``'s training rows included: the unsplit view is not
      causal).

    Then every occurrence of the ROW'S OWN ITEM is removed (for a training row this matters only for a repeat:
    the user clicked the item before), and the last ``--max-len`` are kept. Order: ``timestamp`` (ties: file
    order), without one file order. A positive repeated in training is repeated in the history. So a training
    positive and its negative rows get the same history, except a repeat positive, whose earlier clicks of its
    own item are left out of its own history only. The history of a row depends on (user, item, time) in
    training and on (user, item) elsewhere. A row without a training positive to see has an empty history: an
    empty field. Why causal in training: with the user's whole training history on every row, a training
    positive lacked its own item while its negatives carried the complete positive set, a training-only tell
    (with ``user_id``, "this complete history = negative") that test rows, which all see the complete set, lack.
  - ``hist_sids:token_seq`` (with ``--sids``): the SID tokens of the history items in history order, level-prefixed
    as in the SID file (``a_12 b_7 c_3 a_4 b_0 c_9 ...``); history items without a SID are skipped (counted in
    the summary).
  - ``hist_sim:float`` (unless ``--no-embedding``): the cosine between the row item's semantic embedding (from
    ``NAME.itememb``) and the mean embedding of its history items (history items without an embedding left out of
    the mean). 0.0 when the history is empty, when the row item has no embedding, or when no history item has one
    (each counted in the summary). A label-free score that carries most of the cold-item signal. The mean vector
    itself is not written: RecBole reduces a ``float_seq`` feature to its mean times one embedding.

* every other ``NAME.*`` file (``.item``, ``.itememb``, ``.cold_items``, ``.itemsid``, ...) copied, renamed to NAME2.

Leakage rule, enforced by construction: histories are read from ``NAME.train.inter`` only (its label-1 rows), so no
valid/test interaction and no cold item (a cold item has no training row; a ``NAME.cold_items`` item with a
training positive is refused) ever appears in a history, and no label of valid/test is read at all.

Refused with a ``DataError`` naming the file / field: no ``NAME.train.inter``; an interaction file without
``label``, ``user_id`` or ``item_id``, or that already has a ``hist_items``/``hist_sids``/``hist_sim`` column; a
training label or timestamp that is not a number; ``--max-len`` < 1; a ``--sids`` file that cannot be read; no
``NAME.itememb`` without ``--no-embedding``. Existing outputs need ``--overwrite``; all outputs are written together
or not at all.

Load the columns, e.g. ``load_col: {inter: [user_id, item_id, timestamp, label, hist_items, hist_sim]}``, and list
``hist_sim`` in ``numerical_features: [hist_sim]``: RecBole 1.2.1's context-aware models use a ``float`` field only
when it is a numerical feature (otherwise it is loaded and silently ignored). RecBole gives an inter ``token_seq``
field its own token vocabulary, not shared with ``item_id`` (the history tokens are not tied to the item embedding).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from recbole_sid.atomic_io import read_sids, read_vectors, sid_tokens
from recbole_sid.data.cold import read_cold_items
from recbole_sid.data.text import read_atomic_header, read_atomic_table
from recbole_sid.exceptions import DataError

from dataset_prep.files import Staging, add_copy_command, check_input, locate_copy, write_rows

USER_FIELD, ITEM_FIELD, LABEL_FIELD, TIME_FIELD = "user_id", "item_id", "label", "timestamp"
HIST_ITEMS, HIST_SIDS, HIST_SIM = "hist_items", "hist_sids", "hist_sim"
HIST_FIELDS = (HIST_ITEMS, HIST_SIDS, HIST_SIM)


def _check_header(path: Path) -> list[tuple[str, str]]:
    header = read_atomic_header(path)
    names = [n for n, _ in header]
    missing = [f for f in (USER_FIELD, ITEM_FIELD, LABEL_FIELD) if f not in names]
    if missing:
        hint = " (a labeled copy: run `python -m dataset_prep negatives` first)" if missing[0] == LABEL_FIELD else ""
        raise DataError(f"{path}: no '{missing[0]}' column (header fields: {names}); `history` needs '{USER_FIELD}', "
                        f"'{ITEM_FIELD}' and '{LABEL_FIELD}' in every interaction file{hint}")
    taken = [f for f in HIST_FIELDS if f in names]
    if taken:
        raise DataError(f"{path}: already has a '{taken[0]}' column (history features already added?); `history` "
                        f"writes {', '.join(HIST_FIELDS)} and refuses to replace or duplicate them")
    return header


def _numbers(path: Path, frame: pd.DataFrame, field: str) -> np.ndarray:
    values = pd.to_numeric(frame[field], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values))
    if len(bad):
        raise DataError(f"{path}: '{field}' must be a number on every row; line {bad[0] + 2} has "
                        f"{frame[field].iloc[bad[0]]!r} ({len(bad)} such rows)")
    return values


def _read_sid_tokens(sids) -> dict[str, str]:
    path = check_input(sids, "SID file (--sids)")
    try:
        raw_ids, codes = read_sids(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the SID file (--sids) ({exc}); expected an .itemsid atomic file "
                        f"(item_id:token, sid:token_seq) or a JSON {{id: [tokens]}}") from exc
    return {raw: " ".join(sid_tokens(row)) for raw, row in zip(raw_ids, codes)}


def _read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.exists():
        raise DataError(f"{path}: item embedding file not found; hist_sim needs the items' semantic embeddings: "
                        f"pass --no-embedding, or run `python -m dataset_prep embed` (or import-vectors) first")
    check_input(path, "item embedding file")
    try:
        ids, vectors, id_field, _ = read_vectors(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the item embedding file ({exc})") from exc
    if id_field != ITEM_FIELD:
        raise DataError(f"{path}: id column '{id_field}', expected '{ITEM_FIELD}' (an item embedding file)")
    return ids, vectors


def _groups(*columns):
    """``(first, inverse)``: the row index of each distinct tuple of ``columns`` (sorted) and each row's group."""
    order = np.lexsort(columns[::-1])
    same = np.ones(max(len(order) - 1, 0), dtype=bool)
    for col in columns:
        same &= col[order][1:] == col[order][:-1]
    new_group = np.concatenate([np.ones(min(len(order), 1), dtype=bool), ~same])
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(new_group) - 1
    return order[new_group], inverse


def _histories(pos_users, pos_items, pos_times, q_users, q_items, q_cuts, n_users, max_len):
    """CSR-like histories: ``(ptr, flat, hist_of_query)``.

    ``pos_users``/``pos_items``/``pos_times``: training positives sorted by (user, time, file order), times as
    integer ranks. Query ``q`` sees its user's positives with time < ``q_cuts[q]`` (a cut above every time: all
    of them), without its own item, the last ``max_len`` kept. A query whose item is not among the last
    ``max_len`` seen positives shares the slice ``[lo, end)`` of the sorted positives (one history per distinct
    slice); only the others get their own history, built in Python.
    """
    n_pos = len(pos_items)
    span = int(max(pos_times.max(initial=0), q_cuts.max(initial=0))) + 1
    starts = np.searchsorted(pos_users, np.arange(n_users + 1))
    # window end: the user's positives before the cut end at the first (user, time) >= (q_user, q_cut)
    end = np.searchsorted(pos_users * span + pos_times, q_users * span + q_cuts, side="left")
    user_start = starts[q_users]
    lo = np.maximum(user_start, end - max_len)
    # own item in [lo, end)? Those positions all belong to the query's user: count (item, position) in range
    by_item = np.sort(pos_items * (n_pos + 1) + np.arange(n_pos))
    own = (np.searchsorted(by_item, q_items * (n_pos + 1) + end)
           > np.searchsorted(by_item, q_items * (n_pos + 1) + lo))
    shared = np.flatnonzero(~own)
    first, slice_of = _groups(lo[shared], end[shared])
    s_lo, s_end = lo[shared][first], end[shared][first]
    s_len = s_end - s_lo
    lengths = [s_len]
    pieces = [pos_items[np.repeat(s_lo - np.cumsum(s_len) + s_len, s_len) + np.arange(s_len.sum())]]
    hist_of_query = np.empty(len(q_users), dtype=np.int64)
    hist_of_query[shared] = slice_of
    own_rows = np.flatnonzero(own)
    own_lengths = np.zeros(len(own_rows), dtype=np.int64)
    for k, q in enumerate(own_rows):  # one history per (user, own item, cut) whose own item is in the window
        seq = pos_items[user_start[q]:end[q]]
        hist = seq[seq != q_items[q]][-max_len:]
        pieces.append(hist)
        own_lengths[k] = len(hist)
    hist_of_query[own_rows] = len(first) + np.arange(len(own_rows))
    lengths.append(own_lengths)
    ptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    flat = np.concatenate(pieces).astype(np.int64)
    return ptr, flat, hist_of_query


def add_history(dataset: str, data_path, out, out_name: str | None = None, max_len: int = 20, sids=None,
                embedding: bool = True, overwrite: bool = False, log=print) -> dict:
    """Write ``OUT/OUT_NAME/`` = the labeled dataset with ``hist_items`` (+ ``hist_sids`` with ``sids``,
    + ``hist_sim`` unless ``embedding=False``) in every interaction file (module docstring).

    Returns a summary dict: files written, per interaction file the rows, rows with an empty history, mean history
    length and rows whose ``hist_sim`` is 0.0 by rule, and the SID / embedding coverage of history items.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise DataError(f"--max-len must be a positive integer (history items per row), got {max_len!r}")
    max_len = int(max_len)
    folder, target, inter_files = locate_copy(dataset, data_path, out, out_name)
    train_path = folder / f"{dataset}.train.inter"
    if train_path not in inter_files:
        raise DataError(f"{train_path}: training file not found; `history` builds histories from the label-1 rows "
                        f"of {train_path.name} (the benchmark files of cold-split, labeled by negatives)")
    headers = {path: _check_header(path) for path in inter_files}
    sid_of = _read_sid_tokens(sids) if sids is not None else None
    emb_path = folder / f"{dataset}.itememb"
    emb = _read_embeddings(emb_path) if embedding else None

    frames = {path: read_atomic_table(path)[0] for path in inter_files}
    train = frames[train_path]
    labels = _numbers(train_path, train, LABEL_FIELD)
    positive_row = labels > 0.5
    timed = TIME_FIELD in train.columns
    # a training row's time: its timestamp; without one, the ordinal of its anchor (the last label-1 row at or
    # before it in the file; 0 before any). Ranked: positives with rank < a row's rank are before it
    times = _numbers(train_path, train, TIME_FIELD) if timed else np.cumsum(positive_row)
    time_values, time_rank = np.unique(times, return_inverse=True)
    time_rank = time_rank.reshape(-1).astype(np.int64)
    after_training = len(time_values)  # the cut of every other file's rows: above every training time

    # codes: items and users sorted as strings over every interaction file
    item_ids, item_codes = np.unique(np.concatenate([f[ITEM_FIELD].to_numpy(dtype=str) for f in frames.values()]),
                                     return_inverse=True)
    user_ids, user_codes = np.unique(np.concatenate([f[USER_FIELD].to_numpy(dtype=str) for f in frames.values()]),
                                     return_inverse=True)
    n_items, n_users = len(item_ids), len(user_ids)
    bounds = np.cumsum([0] + [len(f) for f in frames.values()])
    spans = {p: (a, b) for p, a, b in zip(frames, bounds[:-1], bounds[1:])}
    codes = {p: (user_codes[a:b], item_codes[a:b]) for p, (a, b) in spans.items()}

    # training positives, by user, then time, then file order
    positive = np.flatnonzero(positive_row)
    t_users, t_items = codes[train_path]
    order = positive[np.lexsort((positive, time_rank[positive], t_users[positive]))]
    pos_users, pos_items = t_users[order].astype(np.int64), t_items[order].astype(np.int64)
    pos_times = time_rank[order]

    cold_file = folder / f"{dataset}.cold_items"
    if cold_file.is_file():
        cold = np.isin(item_ids[np.unique(pos_items)], np.asarray(read_cold_items(cold_file), dtype=str))
        if cold.any():
            bad = item_ids[np.unique(pos_items)][cold]
            raise DataError(f"{cold_file}: {len(bad)} listed cold items have label-1 rows in {train_path} (first: "
                            f"{bad[:10].tolist()}); a cold item must have no training row")

    # one query per distinct (user, item, cut) of every file: training rows see the positives before their
    # time, the rows of every other file all of them
    cuts = np.full(len(user_codes), after_training, dtype=np.int64)
    cuts[slice(*spans[train_path])] = time_rank
    all_users, all_items = user_codes.astype(np.int64), item_codes.astype(np.int64)
    first, q_of_row = _groups(all_users, all_items, cuts)
    q_users, q_items, q_cuts = all_users[first], all_items[first], cuts[first]
    ptr, flat, hist_of_query = _histories(pos_users, pos_items, pos_times, q_users, q_items, q_cuts, n_users,
                                          max_len)
    n_hist = len(ptr) - 1
    hist_len = np.diff(ptr)

    hist_text = np.array([" ".join(item_ids[flat[a:b]]) for a, b in zip(ptr[:-1], ptr[1:])], dtype=object)
    columns = {HIST_ITEMS: hist_text[hist_of_query]}
    summary_extra = {}
    if sid_of is not None:
        item_sid = np.array([sid_of.get(i, "") for i in item_ids], dtype=object)
        sid_text = np.array([" ".join(t for t in item_sid[flat[a:b]] if t) for a, b in zip(ptr[:-1], ptr[1:])],
                            dtype=object)
        columns[HIST_SIDS] = sid_text[hist_of_query]
        no_sid = item_sid[flat] == ""
        skipped_per_hist = np.bincount(np.repeat(np.arange(n_hist), hist_len), weights=no_sid, minlength=n_hist)
        summary_extra["sids"] = {
            "file": str(sids), "levels": int(max((len(t.split()) for t in sid_of.values()), default=0)),
            "history_items_without_sid": int(len(np.unique(flat[no_sid]))),
            "rows_with_skipped_items": int((skipped_per_hist[hist_of_query][q_of_row] > 0).sum()),
        }
    if emb is not None:
        emb_ids, vectors = emb
        row_of = pd.Series(np.arange(len(emb_ids)), index=pd.Index(emb_ids, dtype=object))
        item_row = row_of.reindex(item_ids.astype(object)).to_numpy()
        has_emb = ~np.isnan(item_row)
        table = np.zeros((n_items, vectors.shape[1]), dtype=np.float64)
        table[has_emb] = vectors[item_row[has_emb].astype(np.int64)]
        # cos(e_item, mean of history vectors) = cos(e_item, their sum)
        members = sparse.csr_matrix((has_emb[flat].astype(np.float64), flat, ptr), shape=(n_hist, n_items))
        hist_sum = np.asarray(members @ table)
        hist_with_emb = np.bincount(np.repeat(np.arange(n_hist), hist_len), weights=has_emb[flat], minlength=n_hist)
        item_vec = table[q_items]
        summed = hist_sum[hist_of_query]
        norms = np.linalg.norm(item_vec, axis=1) * np.linalg.norm(summed, axis=1)
        dots = np.einsum("ij,ij->i", item_vec, summed)
        sim = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
        q_sim = np.round(np.clip(sim, -1.0, 1.0), 6) + 0.0
        q_reason = np.select([hist_len[hist_of_query] == 0, ~has_emb[q_items], hist_with_emb[hist_of_query] == 0],
                             [1, 2, 3], 0)
        columns[HIST_SIM] = np.char.mod("%.6f", q_sim)
        summary_extra["embedding"] = {
            "file": str(emb_path), "dim": int(vectors.shape[1]),
            "items_without_embedding": int((~has_emb).sum()),
            "history_items_without_embedding": int(len(np.unique(flat[~has_emb[flat]]))),
        }

    stats = {}
    for path in inter_files:
        rows_q = q_of_row[slice(*spans[path])]
        lens = hist_len[hist_of_query[rows_q]]
        entry = {"rows": int(len(rows_q)), "rows_empty_history": int((lens == 0).sum()),
                 "mean_history_len": round(float(lens.mean()), 3) if len(lens) else 0.0}
        if emb is not None:
            reasons = np.bincount(q_reason[rows_q], minlength=4)
            entry["hist_sim_zero_rows"] = {"empty_history": int(reasons[1]), "item_without_embedding": int(reasons[2]),
                                           "history_without_embedding": int(reasons[3])}
        stats[path.name[len(dataset) + 1:-len(".inter")] or "inter"] = entry

    sides = [p for p in sorted(folder.iterdir())
             if p.is_file() and p.name.startswith(f"{dataset}.") and p not in frames]
    plan = {target / f"{target.name}{src.name[len(dataset):]}": src for src in [*inter_files, *sides]}
    types = {HIST_ITEMS: "token_seq", HIST_SIDS: "token_seq", HIST_SIM: "float"}
    with Staging(plan, overwrite) as stage:
        for dst, src in plan.items():
            if src in frames:
                rows_q = q_of_row[slice(*spans[src])]
                new = {name: values[rows_q] for name, values in columns.items()}
                _write_with_columns(stage.path(dst), headers[src], frames[src], new, types)
            else:
                shutil.copyfile(src, stage.path(dst))
        stage.commit()
    added = [f"{name}:{types[name]}" for name in columns]
    log(f"added {', '.join(added)} (histories of up to {max_len} training positives) to {len(inter_files)} "
        f"interaction files and copied {len(sides)} files to {target}")
    return {
        "folder": str(target), "max_len": max_len, "columns": added,
        "history_source": (
            f"label-1 rows of {train_path.name} only; a row of {train_path.name} sees the user's positives strictly "
            + ("before its timestamp (same-timestamp positives excluded)" if timed else
               "before its anchor in file order (the last label-1 row at or before it)")
            + ", a row of any other file all of them; own item excluded, then the last max_len, most recent last"),
        "training_time": TIME_FIELD if timed else "file order (anchor: last label-1 row at or before the row)",
        "training_positives": int(len(pos_items)), "users_with_history": int(len(np.unique(pos_users))),
        "interactions": stats, **summary_extra,
        "files": [str(p) for p in plan],
        "load_col_hint": {"inter": [USER_FIELD, ITEM_FIELD, "...", LABEL_FIELD, *columns]},
        "numerical_features_hint": [HIST_SIM] if HIST_SIM in columns else [],
    }


def _write_with_columns(path, header, frame, new, types) -> None:
    """The file's rows unchanged, then the ``new`` columns (one string per row)."""
    rows = frame.copy()
    for name, values in new.items():
        rows[name] = values
    write_rows(path, "\t".join(f"{name}:{ftype}" for name, ftype in header)
               + "".join(f"\t{name}:{types[name]}" for name in new), rows, list(rows.columns))


#: ``--help`` text of the command
DESCRIPTION = (
    'Write OUT/OUT_NAME/ = DIR/NAME/ (a labeled dataset: label column, NAME.train.inter) with user-history columns '
    'in every interaction file: hist_items (token_seq: the most recent MAX_LEN label-1 training items of the user, '
    'for a training row only those strictly before its timestamp (without one: before its anchor, the last label-1 '
    "row at or before it in the file), most recent last, the row's own item excluded), hist_sids (token_seq, "
    "with --sids: their SID tokens) and hist_sim (float, unless --no-embedding: cosine of the row item's "
    "NAME.itememb vector and the history's mean). "
    'Histories come from NAME.train.inter only. Other NAME.* files are copied. Load them with load_col (and '
    'numerical_features: [hist_sim], or RecBole ignores the float column).')


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``history`` (it runs :func:`run_from_args`, also set as ``args.run``)."""
    p = add_copy_command(subparsers, "history", run=run_from_args,
                         help="labeled copy + user-history columns hist_items / hist_sids / hist_sim (CTR features)",
                         description=DESCRIPTION)
    p.add_argument("--max-len", type=int, default=20, help="history items per row (default 20)")
    p.add_argument("--sids", default=None,
                   help="SID file (NAME.itemsid or .json): also write hist_sids, the SID tokens of the history")
    p.add_argument("--no-embedding", action="store_true",
                   help="do not write hist_sim (needs no NAME.itememb)")
    return p


def run_from_args(args) -> dict:
    return add_history(args.dataset, args.data_path, args.out, out_name=args.out_name, max_len=args.max_len,
                       sids=args.sids, embedding=not args.no_embedding, overwrite=args.overwrite)
