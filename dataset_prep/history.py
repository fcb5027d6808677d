"""``history``: user-behaviour features for a labeled dataset, so RecBole's CTR models can read them (``load_col``).

``python -m dataset_prep history --dataset NAME --data-path DIR --out DIR2 [--out-name NAME2] [--max-len 20]
[--sids FILE.itemsid] [--no-embedding] [--overwrite]``

Input: a labeled dataset (the output of ``negatives``, or any dataset whose benchmark files have a ``label:float``
column): ``NAME.train.inter`` is required, ``NAME.valid.inter`` / ``NAME.test.inter`` / ``NAME.inter`` (and any
other ``NAME.<split>.inter``) are used when present. Writes ``DIR2/NAME2/``:

* every interaction file with its lines unchanged plus these columns, in this order:

  - ``hist_items:token_seq``: the row user's history, the item ids of their most recent ``--max-len`` TRAINING
    positives (rows of ``NAME.train.inter`` with ``label > 0.5``), most recent last, separated by spaces (RecBole's
    default ``seq_separator``). Order: ``timestamp`` (ties: file order); without a ``timestamp`` column, file order.
    A positive repeated in training is repeated in the history. Every occurrence of the ROW'S OWN ITEM is left
    out (before the ``--max-len`` cut), in every file: a training positive never sees itself, its negative rows
    (same user and timestamp) are built the same way for their own item, and rows of valid/test (and
    ``NAME.inter``) get the user's training history with their own item excluded too, for symmetry. So the
    history of a row depends only on (user, item), whatever the file. It is not causal inside training: a training
    row also sees the user's later training positives (the valid/test rows, which come after training in time,
    see all of them). A user without training positives has an empty history: an empty field.
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

from recbole_sid.atomic_io import atomic_write, read_sids, read_vectors, sid_tokens
from recbole_sid.data.cold import read_cold_items
from recbole_sid.data.text import read_atomic_header, read_atomic_table
from recbole_sid.exceptions import DataError

from dataset_prep.files import Staging, add_copy_command, check_input, locate_copy

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


def _histories(pos_users, pos_items, q_users, q_items, n_users, n_items, max_len):
    """CSR-like histories: ``(ptr, flat, hist_of_query)``.

    ``pos_users``/``pos_items``: training positives sorted by (user, time, file order). History ``u`` (for
    ``u < n_users``) is user ``u``'s last ``max_len`` positives; every query whose item is not among its user's
    positives uses it. A query whose item is among them gets its own history (the item's occurrences removed).
    """
    starts = np.searchsorted(pos_users, np.arange(n_users + 1))
    counts = np.diff(starts)
    lengths = [np.minimum(counts, max_len)]
    default_idx = np.concatenate([np.arange(max(a, b - max_len), b) for a, b in zip(starts[:-1], starts[1:])]
                                 + [np.zeros(0, dtype=np.int64)])
    pieces = [pos_items[default_idx]]
    hist_of_query = q_users.astype(np.int64)
    own = np.isin(q_users * n_items + q_items, pos_users * n_items + pos_items)
    own_rows = np.flatnonzero(own)
    own_lengths = np.zeros(len(own_rows), dtype=np.int64)
    for k, q in enumerate(own_rows):  # one history per (user, own training item)
        seq = pos_items[starts[q_users[q]]:starts[q_users[q] + 1]]
        hist = seq[seq != q_items[q]][-max_len:]
        pieces.append(hist)
        own_lengths[k] = len(hist)
    hist_of_query[own_rows] = n_users + np.arange(len(own_rows))
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
    times = _numbers(train_path, train, TIME_FIELD) if TIME_FIELD in train.columns else np.zeros(len(train))

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
    positive = np.flatnonzero(labels > 0.5)
    t_users, t_items = codes[train_path]
    order = positive[np.lexsort((positive, times[positive], t_users[positive]))]
    pos_users, pos_items = t_users[order].astype(np.int64), t_items[order].astype(np.int64)

    cold_file = folder / f"{dataset}.cold_items"
    if cold_file.is_file():
        cold = np.isin(item_ids[np.unique(pos_items)], np.asarray(read_cold_items(cold_file), dtype=str))
        if cold.any():
            bad = item_ids[np.unique(pos_items)][cold]
            raise DataError(f"{cold_file}: {len(bad)} listed cold items have label-1 rows in {train_path} (first: "
                            f"{bad[:10].tolist()}); a cold item must have no training row")

    # one query per distinct (user, item) of every file; one history per query
    all_keys = user_codes.astype(np.int64) * n_items + item_codes
    q_keys, q_of_row = np.unique(all_keys, return_inverse=True)
    q_users, q_items = q_keys // n_items, q_keys % n_items
    ptr, flat, hist_of_query = _histories(pos_users, pos_items, q_users, q_items, n_users, n_items, max_len)
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
        "history_source": f"label-1 rows of {train_path.name} only (own item excluded, most recent last)",
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
    names = list(rows.columns)
    lines = rows[names[0]].str.cat([rows[c] for c in names[1:]], sep="\t")
    with atomic_write(path) as f:
        f.write("\t".join(f"{name}:{ftype}" for name, ftype in header)
                + "".join(f"\t{name}:{types[name]}" for name in new) + "\n")
        if len(lines):
            f.write("\n".join(lines.tolist()) + "\n")


#: ``--help`` text of the command
DESCRIPTION = (
    'Write OUT/OUT_NAME/ = DIR/NAME/ (a labeled dataset: label column, NAME.train.inter) with user-history columns '
    'in every interaction file: hist_items (token_seq: the most recent MAX_LEN label-1 training items of the user, '
    "most recent last, the row's own item excluded), hist_sids (token_seq, with --sids: their SID tokens) and "
    "hist_sim (float, unless --no-embedding: cosine of the row item's NAME.itememb vector and the history's mean). "
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
