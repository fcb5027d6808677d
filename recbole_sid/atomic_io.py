"""Reading and writing RecBole atomic files that the plugin produces: vectors (``.itememb``) and SIDs (``.itemsid``).

Every writer goes through :func:`atomic_write`: the file appears whole or not at all.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import string
import tempfile
from pathlib import Path

import numpy as np

from recbole_sid.exceptions import DataError

#: Largest code a SID file may hold (``recbole_sid.quantization.checks.MAX_CODEBOOK_SIZE`` - 1): a code indexes an
#: embedding table, so an unchecked ``a_999999999`` would allocate a table of a billion rows.
MAX_SID_CODE = 65535
#: Level prefixes of SID tokens: level 0 -> ``a_12``, level 1 -> ``b_7``, ...
LEVEL_PREFIXES = string.ascii_lowercase
_TOKEN_RE = re.compile(r"^<?([a-z])_(\d+)>?$")


def plain_name(name, what: str) -> str:
    """``name`` when it can name a file or folder inside another folder; else a ``DataError`` naming ``what`` (the
    flag or label it came from). Refused: empty, ``.``, ``..`` and anything with a path separator (``/``, ``\\``) or
    a NUL byte, since ``folder / name`` would then point elsewhere."""
    text = str(name)
    if text in ("", ".", "..") or any(c in text for c in "/\\\0"):
        raise DataError(f"{what} {text!r} is not a plain name: it names a file or folder inside the output folder, so "
                        f"it must not be empty, '.' or '..' nor contain '/' or '\\'")
    return text


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
#: ``.<final name>.<pid>@<host>.<random>.<tmp|staging>``: who wrote a temporary file, so a later run can tell
#: the files of a killed writer (``remove_stale_temps``) from those of one still running
_TEMP_NAME = re.compile(r"^\..+\.(\d+)@([A-Za-z0-9-]+)\.[A-Za-z0-9_]+\.(tmp|staging)$")
_log = logging.getLogger(__name__)


def temp_file(path, suffix: str) -> tuple[int, str]:
    """``mkstemp`` beside ``path``, named after this process (pid and host); stale temporary files of writers that
    are gone are removed from the folder first (:func:`remove_stale_temps`)."""
    path = Path(path)
    remove_stale_temps(path.parent)
    return tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=suffix, dir=path.parent)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True  # cannot tell: keep its files
    return True


def remove_stale_temps(folder) -> list[Path]:
    """Remove the temporary files in ``folder`` that a writer killed before it could clean up left behind (named
    by :func:`temp_file` on this host, by a process that no longer exists); each removal is logged as a warning.
    Files of live processes, of other hosts and any other file are kept. Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or match.group(2) != _HOST or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if _process_alive(pid):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:  # another run removed it first
            continue
        except OSError as exc:
            _log.warning(f"cannot remove stale temporary file {entry.path}: {exc}")
            continue
        _log.warning(f"removed stale temporary file {entry.path} (left by process {pid}, which is gone)")
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", overwrite: bool = True, encoding: str | None = "utf-8"):
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block finishes.

    ``overwrite=False`` refuses an existing ``path`` (FileExistsError naming it) before anything is written.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (pass --overwrite / overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path, ".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the final file the usual permissions
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_header(path, sep: str = "\t") -> list[str]:
    """The columns of an atomic file's header line (DataError naming the file when missing, unreadable or empty)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n\r")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if not header:
        raise DataError(f"{path}: empty file (expected a RecBole atomic header such as 'item_id:token')")
    return header.split(sep)


# --- vectors: NAME.itememb / NAME.useremb -----------------------------------------------------------------

def write_vectors(path, ids, vectors, id_field: str = "item_id", vec_field: str = "item_emb",
                  overwrite: bool = True, precision: int = 6) -> Path:
    """Write ``id_field:token`` + ``vec_field:float_seq`` rows (space-separated floats), atomically."""
    vectors = np.asarray(vectors, dtype=np.float32)
    ids = [str(i) for i in ids]
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise DataError(f"{path}: need one vector per id, got {len(ids)} ids and vectors of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = [ids[i] for i in np.where(~np.isfinite(vectors).all(axis=1))[0][:5]]
        raise DataError(f"{path}: vectors contain NaN/Inf (e.g. for ids {bad}); nothing written")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate ids; nothing written")
    fmt = f"%.{precision}g"
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(f"{id_field}:token\t{vec_field}:float_seq\n")
        for row_id, row in zip(ids, vectors):
            f.write(row_id + "\t" + " ".join(fmt % v for v in row) + "\n")
    return Path(path)


def read_vectors(path, sep: str = "\t") -> tuple[list[str], np.ndarray, str, str]:
    """Read a vectors atomic file; returns ``(ids, vectors [N, D] float32, id_field, vec_field)``."""
    path = Path(path)
    header = read_header(path, sep)
    if len(header) != 2 or not header[0].endswith(":token") or not header[1].endswith(":float_seq"):
        raise DataError(f"{path}: expected header '<id>:token<TAB><vec>:float_seq', got {header}")
    id_field, vec_field = header[0].split(":")[0], header[1].split(":")[0]
    ids, rows = [], []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\n\r")
            if not line:
                continue
            parts = line.split(sep)
            if len(parts) != 2:
                raise DataError(f"{path}:{line_no}: expected 2 tab-separated columns, got {len(parts)}")
            try:
                rows.append(np.array(parts[1].split(), dtype=np.float32))
            except ValueError as exc:
                raise DataError(f"{path}:{line_no}: '{vec_field}' is not a list of floats ({exc})") from exc
            ids.append(parts[0])
    if not rows:
        raise DataError(f"{path}: no vectors after the header")
    dims = {r.shape[0] for r in rows}
    if len(dims) != 1:
        raise DataError(f"{path}: vectors of different dimensions {sorted(dims)}")
    vectors = np.stack(rows)
    if not np.isfinite(vectors).all():
        bad = [ids[i] for i in np.where(~np.isfinite(vectors).all(axis=1))[0][:5]]
        raise DataError(f"{path}: vectors contain NaN/Inf (e.g. ids {bad})")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate ids in column '{id_field}'")
    return ids, vectors, id_field, vec_field


# --- semantic IDs: NAME.itemsid / NAME.usersid / public *.index.json --------------------------------------

def sid_tokens(codes_row) -> list[str]:
    """``[12, 7, 201]`` -> ``['a_12', 'b_7', 'c_201']``."""
    return [f"{LEVEL_PREFIXES[level]}_{int(code)}" for level, code in enumerate(codes_row)]


def write_sids(path, ids, codes, id_field: str = "item_id", overwrite: bool = True) -> Path:
    """Write ``id_field:token`` + ``sid:token_seq`` rows (``a_12 b_7 c_201 d_0``), atomically."""
    codes = np.asarray(codes)
    ids = [str(i) for i in ids]
    if codes.ndim != 2 or codes.shape[0] != len(ids):
        raise DataError(f"{path}: need one SID per id, got {len(ids)} ids and codes of shape {codes.shape}")
    if codes.shape[1] > len(LEVEL_PREFIXES):
        raise DataError(f"{path}: at most {len(LEVEL_PREFIXES)} SID levels, got {codes.shape[1]}")
    if (codes < 0).any():
        raise DataError(f"{path}: negative codes")
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(f"{id_field}:token\tsid:token_seq\n")
        for row_id, row in zip(ids, codes):
            f.write(row_id + "\t" + " ".join(sid_tokens(row)) + "\n")
    return Path(path)


def parse_sid_tokens(tokens, where: str) -> list[int]:
    """``['a_12', 'b_7']`` or ``['<a_12>', '<b_7>']`` -> ``[12, 7]``; levels must run a, b, c, ..."""
    codes = []
    for level, token in enumerate(tokens):
        match = _TOKEN_RE.match(token.strip())
        if not match:
            raise DataError(f"{where}: SID token {token!r} is not of the form 'a_12' or '<a_12>'")
        if match.group(1) != LEVEL_PREFIXES[level]:
            raise DataError(f"{where}: SID token {token!r} at level {level} should start with "
                            f"'{LEVEL_PREFIXES[level]}_'")
        digits = match.group(2)
        if len(digits) > len(str(MAX_SID_CODE)) or int(digits) > MAX_SID_CODE:
            raise DataError(f"{where}: SID code {token!r} is out of range: codes run from 0 to {MAX_SID_CODE} (a "
                            f"codebook has at most {MAX_SID_CODE + 1} codes)")
        codes.append(int(digits))
    return codes


def read_sids(path) -> tuple[list[str], np.ndarray]:
    """Read SIDs from an ``.itemsid``/``.usersid`` atomic file or a public ``{"id": ["<a_70>", ...]}`` JSON.

    Returns ``(ids, codes [N, L] int64)``; every row must have the same number of levels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    ids: list[str] = []
    rows: list[list[int]] = []
    if path.suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object {{id: [tokens]}}")
        for key, tokens in data.items():
            if not isinstance(tokens, list):
                raise DataError(f"{path}: value for id {key!r} is not a list of SID tokens")
            ids.append(str(key))
            rows.append(parse_sid_tokens(tokens, f"{path} (id {key})"))
    else:
        header = read_header(path, "\t")
        if len(header) != 2 or not header[1].endswith(":token_seq"):
            raise DataError(f"{path}: expected header '<id>:token<TAB>sid:token_seq', got {header}")
        with open(path, encoding="utf-8") as f:
            next(f)
            for line_no, line in enumerate(f, start=2):
                line = line.rstrip("\n\r")
                if not line:
                    continue
                parts = line.split("\t")
                if len(parts) != 2:
                    raise DataError(f"{path}:{line_no}: expected 2 tab-separated columns, got {len(parts)}")
                ids.append(parts[0])
                rows.append(parse_sid_tokens(parts[1].split(), f"{path}:{line_no}"))
    if not rows:
        raise DataError(f"{path}: no SIDs")
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise DataError(f"{path}: SIDs have different numbers of levels {sorted(lengths)}")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate ids")
    return ids, np.asarray(rows, dtype=np.int64)
