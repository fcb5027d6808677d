"""Raw RecBole atomic files (``.item``/``.user``) as text: which fields are text-like, one string per entity.

Read with pandas as plain strings (``quoting=QUOTE_NONE``), never through RecBole's tokenised features.

Text of an entity: the values of the chosen fields in the given order, joined with ``". "``; inside a value
``_`` becomes a space (``categories`` tokens written by ``dataset_prep convert-json`` join the words of one
category with ``_``) and whitespace is collapsed. Empty values are skipped.

Automatic field choice (``fields=None``, config ``semantic_text_fields: auto``): every ``token`` and
``token_seq`` column except the entity's id column, columns named ``*_id``, and identifier-like columns
(names containing ``zip``/``postcode``/``postal``, or a ``token`` column whose values are all distinct, judged
on files of 20 rows or more).
"""
from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import pandas as pd

from recbole_sid.atomic_io import read_header
from recbole_sid.exceptions import DataError

TEXT_TYPES = ("token", "token_seq")
#: the field types of RecBole atomic files (``recbole.utils.FeatureType``)
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
_IDENTIFIER_NAME = re.compile(r"(zip|postcode|postal)", re.IGNORECASE)
_WS = re.compile(r"\s+")


def file_sha256(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_atomic_header(path, sep: str = "\t") -> list[tuple[str, str]]:
    """``[(field, type), ...]`` from the first line of an atomic file."""
    path = Path(path)
    columns = []
    for col in read_header(path, sep):
        if col.count(":") != 1:
            raise DataError(f"{path}: header column {col!r} is not of the form 'name:type'")
        name, ftype = col.split(":")
        if ftype not in ATOMIC_TYPES:
            raise DataError(f"{path}: column {name!r} has unknown type {ftype!r} (RecBole types: "
                            f"{', '.join(ATOMIC_TYPES)})")
        columns.append((name, ftype))
    names = [n for n, _ in columns]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate column names in the header {names}")
    return columns


def check_row_widths(path, n_columns: int, sep: str = "\t") -> None:
    """``DataError`` naming the file, the line and both counts for the first row whose number of ``sep``-separated
    columns differs from the header's (pandas would shift or pad such a row without a word). Blank lines are
    skipped, as pandas does."""
    try:
        with open(path, encoding="utf-8") as f:
            next(f, None)
            for line_no, line in enumerate(f, start=2):
                line = line.rstrip("\n")
                if line and line.count(sep) != n_columns - 1:
                    what = "tab" if sep == "\t" else repr(sep)
                    raise DataError(f"{path}:{line_no}: {line.count(sep) + 1} {what}-separated columns, the header "
                                    f"has {n_columns} (a {what} too many or too few in this row)")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def read_atomic_table(path, sep: str = "\t", usecols=None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read an atomic file as strings; returns ``(frame with bare field names, {field: type})``.

    Every row must have as many columns as the header (:func:`check_row_widths`)."""
    path = Path(path)
    columns = read_atomic_header(path, sep)
    check_row_widths(path, len(columns), sep)
    types = dict(columns)
    wanted = [f"{n}:{t}" for n, t in columns if usecols is None or n in usecols]
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                            quoting=csv.QUOTE_NONE, usecols=wanted, engine="c", encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse as a tab-separated RecBole atomic file ({exc})") from exc
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame, {n: types[n] for n in frame.columns}


def auto_text_fields(frame: pd.DataFrame, types: dict[str, str], id_field: str) -> list[str]:
    """Text-like columns of an entity table (see the module docstring for the rule)."""
    fields = []
    for name, ftype in types.items():
        if name == id_field or ftype not in TEXT_TYPES:
            continue
        if name.endswith("_id") or _IDENTIFIER_NAME.search(name):
            continue
        if ftype == "token" and len(frame) >= 20 and frame[name].nunique() == len(frame):
            continue
        fields.append(name)
    return fields


def clean_value(value: str) -> str:
    return _WS.sub(" ", str(value).replace("_", " ")).strip()


def build_texts(frame: pd.DataFrame, fields: list[str]) -> list[str]:
    """One string per row: the non-empty cleaned values of ``fields`` joined with ``". "``."""
    cleaned = [frame[f].map(clean_value).tolist() for f in fields]
    return [". ".join(v for v in row if v) for row in zip(*cleaned)] if cleaned else [""] * len(frame)


def entity_texts(path, id_field: str, fields=None, sep: str = "\t") -> tuple[list[str], list[str], list[str]]:
    """``(ids, texts, fields_used)`` for an ``.item`` / ``.user`` file.

    Errors (``DataError`` naming the file): no id column, duplicate ids, an unknown field, no text field,
    entities whose text is empty.
    """
    path = Path(path)
    frame, types = read_atomic_table(path, sep)
    if id_field not in types:
        raise DataError(f"{path}: no '{id_field}' column (header fields: {list(types)})")
    ids = frame[id_field]
    if (ids.str.strip() == "").any():
        raise DataError(f"{path}: {int((ids == '').sum())} rows have an empty '{id_field}'")
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: duplicate ids in '{id_field}' ({len(dup)}; first: {dup[:10]})")
    if fields is None or fields == "auto" or fields == ["auto"]:
        fields = auto_text_fields(frame, types, id_field)
        if not fields:
            raise DataError(f"{path}: no text-like (token/token_seq) field besides '{id_field}' to embed")
    else:
        fields = [fields] if isinstance(fields, str) else list(fields)
        unknown = [f for f in fields if f not in types]
        if unknown:
            raise DataError(f"{path}: text field(s) {unknown} not in the file (fields: {list(types)})")
        if id_field in fields:
            raise DataError(f"{path}: the id field '{id_field}' cannot be a text field")
        if not fields:
            raise DataError(f"{path}: empty list of text fields")
    texts = build_texts(frame, fields)
    empty = [i for i, t in zip(ids, texts) if not t]
    if empty:
        raise DataError(f"{path}: {len(empty)} entities have empty text in fields {fields} "
                        f"(first: {empty[:10]})")
    return ids.tolist(), texts, fields
