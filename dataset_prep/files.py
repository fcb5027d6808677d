"""Writing several output files all-or-nothing, and refusing existing outputs without ``--overwrite``."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from recbole_sid.atomic_io import plain_name, temp_file
from recbole_sid.exceptions import DataError


def check_outputs(paths, overwrite: bool) -> None:
    """``DataError`` naming the first existing output (and how many) unless ``overwrite``."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more output files)" if len(existing) > 1 else ""
        raise DataError(f"{existing[0]} already exists{more}; refusing to overwrite it: pass --overwrite")


def check_input(path, what: str = "input file") -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_file():
        raise DataError(f"{path}: {what} is not a regular file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: {what} is not readable (permission denied)")
    return path


class Staging:
    """Write every output to a temporary file beside it; ``commit()`` renames them all into place.

    Used as a context manager: leaving the block with an exception (or without ``commit()``) removes the
    temporary files, so no output is ever half-written or written without its siblings.
    """

    def __init__(self, outputs, overwrite: bool):
        self.outputs = [Path(p) for p in outputs]
        check_outputs(self.outputs, overwrite)
        self._temps: dict[Path, Path] = {}

    def path(self, final) -> Path:
        final = Path(final)
        if final not in self.outputs:
            raise ValueError(f"{final} is not a declared output")
        if final not in self._temps:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_file(final, ".staging")
            os.close(fd)
            self._temps[final] = Path(tmp)
        return self._temps[final]

    def commit(self) -> list[Path]:
        missing = [p for p in self.outputs if p not in self._temps]
        if missing:
            raise RuntimeError(f"outputs never written: {missing}")
        umask = os.umask(0)
        os.umask(umask)
        for final, tmp in self._temps.items():
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
            os.replace(tmp, final)
        self._temps.clear()
        return self.outputs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for tmp in self._temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._temps.clear()
        return False


def add_copy_command(subparsers, name: str, help: str, description: str, run):
    """Register a command that writes a modified copy of a dataset (attach-sids, negatives): the shared arguments
    --dataset, --data-path, --out, --out-name, --overwrite, and ``run(args)`` as ``args.run``."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("--dataset", required=True, help="dataset NAME (DIR/NAME/NAME.inter or NAME.<split>.inter)")
    parser.add_argument("--data-path", required=True, help="folder that holds NAME/")
    parser.add_argument("--out", required=True, help="output root (writes OUT/OUT_NAME/)")
    parser.add_argument("--out-name", default=None, help="dataset name of the copy (default: NAME)")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    parser.set_defaults(run=run)
    return parser


def inter_files(folder: Path, dataset: str) -> list[Path]:
    """``NAME.inter`` and the benchmark files ``NAME.<split>.inter`` of the folder."""
    found = []
    for path in folder.iterdir():
        name = path.name
        if not path.is_file() or not name.startswith(f"{dataset}.") or not name.endswith(".inter"):
            continue
        middle = name[len(dataset) + 1:-len(".inter")]
        if name == f"{dataset}.inter" or (middle and "." not in middle):
            found.append(path)
    return sorted(found)


def output_name(dataset: str, out_name: str | None) -> str:
    """The name of a command's output dataset (``--out-name``, default ``--dataset``), refused unless it is a plain
    name that stays inside the output folder (``recbole_sid.atomic_io.plain_name``)."""
    if out_name is not None:
        return plain_name(out_name, "--out-name")
    return plain_name(dataset, "--dataset")


def locate_copy(dataset: str, data_path, out, out_name: str | None = None) -> tuple[Path, Path, list[Path]]:
    """``(input folder, output folder, interaction files)`` of a command that writes a modified copy of a dataset
    to ``OUT/OUT_NAME/``; DataError when the input is missing, the output would replace it or leave ``OUT``."""
    output_name(dataset, out_name)
    folder = Path(data_path) / dataset
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found (expected --data-path DIR holding DIR/{dataset}/)")
    target = Path(out) / (out_name or dataset)
    if target.resolve() == folder.resolve():
        raise DataError(f"{target}: the output folder is the input dataset's folder; choose another --out "
                        f"(or --out-name) so that the input files stay as they are")
    found = inter_files(folder, dataset)
    if not found:
        raise DataError(f"{folder}: no interaction file {dataset}.inter or {dataset}.<split>.inter")
    return folder, target, found


def write_rows(path, header: str, rows, columns) -> None:
    """Write ``header`` (without its newline) then the string ``columns`` of ``rows`` (a DataFrame), tab-separated,
    one line per row, atomically (the writers of ``negatives`` and ``history``)."""
    from recbole_sid.atomic_io import atomic_write

    lines = rows[columns[0]].str.cat([rows[c] for c in columns[1:]], sep="\t")
    with atomic_write(path) as f:
        f.write(header + "\n")
        if len(lines):
            f.write("\n".join(lines.tolist()) + "\n")


def read_inter_table(inter_path: Path):
    """``(header line, column names, frame of strings, data lines)`` of an interaction file with ``user_id`` and
    ``item_id`` (blank lines left out); DataError naming the file when a column is missing, it is empty or it does
    not parse."""
    import csv

    import pandas as pd

    with open(inter_path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n\r")
        lines = [line.rstrip("\n\r") for line in f]
    lines = [line for line in lines if line.strip()]
    columns = [c.split(":")[0] for c in header.split("\t")]
    for needed in ("user_id", "item_id"):
        if needed not in columns:
            raise DataError(f"{inter_path}: no '{needed}' column in the header {header.split(chr(9))}")
    if not lines:
        raise DataError(f"{inter_path}: no interactions")
    try:
        frame = pd.read_csv(inter_path, sep="\t", dtype=str, keep_default_na=False, na_filter=False,
                            quoting=csv.QUOTE_NONE, engine="c", skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{inter_path}: cannot parse ({exc})") from exc
    frame.columns = columns
    if len(frame) != len(lines):
        raise DataError(f"{inter_path}: {len(lines)} lines but {len(frame)} parsed rows (stray quotes or tabs?)")
    return header, columns, frame, lines
