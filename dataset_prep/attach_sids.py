"""``attach-sids``: a copy of a dataset whose ``.item`` file carries each item's semantic ID as a feature.

``python -m dataset_prep attach-sids --dataset NAME --data-path DIR --sids FILE.itemsid --out DIR2
[--out-name NAME2] [--field sid] [--levels N] [--overwrite]``

Writes ``DIR2/NAME2/``:

* ``NAME2.item``: every line of ``NAME.item`` unchanged plus the item's SID: by default one ``token`` column per
  level, ``sid_1 .. sid_L`` (``a_12``, ``b_7``, ...: each token prefixed by its level), so a context-aware model
  gets one field, and one embedding, per level; with ``--layout bag`` one ``sid:token_seq`` column holding all the
  tokens (``a_12 b_7 c_201``), which RecBole averages into one vector. Without a ``NAME.item`` a new one holds
  ``item_id:token`` and the SID column(s).
* every other ``NAME.*`` file of the folder (``.inter``, benchmark ``.train/.valid/.test.inter``, ``.user``,
  ``.itememb``, ``.useremb``, ``.cold_items``, ``.kg``, ``.link``, ...) copied, renamed to ``NAME2``; the SID file
  as ``NAME2.itemsid`` (the SIDs of the new column, ``--levels`` applied).

Every item of the dataset (``.item`` rows and items of the interaction files) must have a SID; ids of the SID
file unknown to the dataset are ignored (counted in the summary). All outputs are written together or not at all.

Any RecBole context-aware model (DeepFM, DCN, WideDeep, ...) then uses the SID unchanged as features ("DeepFM +
SID"), once the columns are loaded, e.g. for ml-100k: ``load_col: {inter: [user_id, item_id, rating, timestamp],
user: [user_id, age, gender, occupation], item: [item_id, release_year, class, sid_1, sid_2, sid_3]}``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from recbole_sid.atomic_io import atomic_write, read_sids, sid_tokens, write_sids
from recbole_sid.data.text import read_atomic_header, read_atomic_table
from recbole_sid.exceptions import DataError, RecBoleSIDError

from dataset_prep.files import Staging, add_copy_command, check_input, inter_files, locate_copy

from dataset_prep.cli import _positive_int  # noqa: E402  (shared argparse type)

ID_FIELD = "item_id"


def _dataset_items(folder: Path, dataset: str, item_file: Path | None) -> tuple[list[str], list[Path]]:
    """Distinct raw item ids of the dataset in first-seen order: ``.item`` rows first, then interaction files."""
    seen: dict[str, None] = {}
    sources = []
    if item_file is not None:
        frame, types = read_atomic_table(item_file, usecols=[ID_FIELD])
        if ID_FIELD not in types:
            raise DataError(f"{item_file}: no '{ID_FIELD}' column in the header")
        seen.update(dict.fromkeys(frame[ID_FIELD].tolist()))
        sources.append(item_file)
    for path in inter_files(folder, dataset):
        frame, types = read_atomic_table(path, usecols=[ID_FIELD])
        if ID_FIELD not in types:
            raise DataError(f"{path}: no '{ID_FIELD}' column in the header")
        seen.update(dict.fromkeys(frame[ID_FIELD].tolist()))
        sources.append(path)
    return list(seen), sources


SID_LAYOUTS = ("levels", "bag")


def sid_columns(field: str, num_levels: int, layout: str) -> list[str]:
    """Names of the SID columns: ``sid_1 .. sid_L`` (one ``token`` field per level) or ``sid`` (one ``token_seq``)."""
    return [f"{field}_{level}" for level in range(1, num_levels + 1)] if layout == "levels" else [field]


def attach_sids(dataset: str, data_path, sids, out, out_name: str | None = None, overwrite: bool = False,
                log=print, field: str = "sid", levels: int | None = None, layout: str = "levels") -> dict:
    """Write ``OUT/OUT_NAME/`` = the dataset with the SID in its ``.item`` file: ``layout="levels"`` (default) adds
    one ``token`` column per level, ``field_1 .. field_L`` (a context-aware model gets one field, one embedding per
    level); ``"bag"`` adds one ``field:token_seq`` column (RecBole averages its token embeddings into one vector).

    ``levels``: keep only the first ``levels`` SID levels (default: all, including a dedup level if the file has
    one; a dedup token is unique per item, so for cold items it is an untrained embedding: ``levels=3`` drops it
    from the usual 3 + 1 files). Returns a summary dict.
    """
    folder, target, _ = locate_copy(dataset, data_path, out, out_name)
    target_name = target.name
    sid_path = check_input(sids, "SID file")
    if not field or not field.replace("_", "").isalnum():
        raise DataError(f"--field must be a plain column name (letters, digits, '_'), got {field!r}")
    if layout not in SID_LAYOUTS:
        raise DataError(f"--layout must be one of {', '.join(SID_LAYOUTS)}, got {layout!r}")

    item_file = folder / f"{dataset}.item"
    item_file = check_input(item_file, "item file") if item_file.exists() else None
    raw_ids, codes = read_sids(sid_path)
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
            raise DataError(f"--levels must be a positive integer, got {levels!r}")
        if levels > codes.shape[1]:
            raise DataError(f"{sid_path}: --levels {levels} but the SIDs have only {codes.shape[1]} levels")
        codes = codes[:, :levels]
    columns = sid_columns(field, codes.shape[1], layout)
    header = None
    if item_file is not None:
        header = read_atomic_header(item_file)
        names = [n for n, _ in header]
        taken = [c for c in columns if c in names]
        if taken:
            raise DataError(f"{item_file}: already has a '{taken[0]}' column; pass another --field name")
        if ID_FIELD not in names:
            raise DataError(f"{item_file}: no '{ID_FIELD}' column in the header")
    separator = "\t" if layout == "levels" else " "
    tokens = {raw: separator.join(sid_tokens(row)) for raw, row in zip(raw_ids, codes)}
    kind = "token" if layout == "levels" else "token_seq"
    new_header = "\t".join(f"{c}:{kind}" for c in columns)

    items, sources = _dataset_items(folder, dataset, item_file)
    missing = [i for i in items if i not in tokens]
    if missing:
        raise DataError(f"{sid_path}: no SID for {len(missing)} of {len(items)} items of dataset '{dataset}' "
                        f"(items from {', '.join(p.name for p in sources)}; first 10: {missing[:10]}); the SID "
                        f"file must cover every item")
    unknown = len(set(tokens) - set(items))

    copies = {}
    for src in sorted(folder.iterdir()):
        if not src.is_file() or not src.name.startswith(f"{dataset}."):
            continue
        suffix = src.name[len(dataset) + 1:]
        if suffix in ("item", "itemsid"):
            continue
        copies[src] = target / f"{target_name}.{suffix}"
    new_item = target / f"{target_name}.item"
    new_sid = target / f"{target_name}.itemsid"
    outputs = [new_item, new_sid, *copies.values()]
    with Staging(outputs, overwrite) as stage:
        with atomic_write(stage.path(new_item)) as f:
            if item_file is None:
                f.write(f"{ID_FIELD}:token\t{new_header}\n")
                f.writelines(f"{i}\t{tokens[i]}\n" for i in items)
            else:
                col = [n for n, _ in header].index(ID_FIELD)
                with open(item_file, encoding="utf-8") as src:
                    first = src.readline().rstrip("\r\n")
                    f.write(f"{first}\t{new_header}\n")
                    for line_no, line in enumerate(src, start=2):
                        line = line.rstrip("\r\n")
                        if not line.strip():
                            continue
                        parts = line.split("\t")
                        if len(parts) != len(header):
                            raise DataError(f"{item_file}:{line_no}: {len(parts)} tab-separated columns, header has "
                                            f"{len(header)}")
                        f.write(f"{line}\t{tokens[parts[col]]}\n")
        write_sids(stage.path(new_sid), raw_ids, codes, id_field=ID_FIELD)
        for src, dst in copies.items():
            shutil.copyfile(src, stage.path(dst))
        stage.commit()
    log(f"attached {codes.shape[1]}-level SIDs of {sid_path} to {len(items)} items as {new_header} in "
        f"{new_item}; copied {len(copies)} files")
    return {
        "folder": str(target), "item_file": str(new_item), "fields": columns, "layout": layout,
        "items": len(items), "levels": int(codes.shape[1]), "sid_ids_not_in_dataset": unknown,
        "files": [str(p) for p in outputs],
        "load_col_hint": {"item": [ID_FIELD, "...", *columns]},
    }


#: ``--help`` text of the command
DESCRIPTION = (
    'Write OUT/OUT_NAME/ = DIR/NAME/ with the SIDs of FILE.itemsid (tokens a_12 b_7 ...) appended to NAME.item as'
    ' one token column per level (or one token_seq column); other NAME.* files (inter, benchmark splits, user, itememb, cold_items, ...) are '
    "copied. RecBole's context-aware models (DeepFM, DCN, WideDeep, ...) then use it as a feature once it is in "
    'load_col (item: [item_id, ..., sid]).')


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``attach-sids`` (it runs :func:`run_from_args`, also set as ``args.run``)."""
    p = add_copy_command(subparsers, "attach-sids", run=run_from_args,
                         help="copy a dataset with each item's SID as columns sid_1 .. sid_L of NAME.item",
                         description=DESCRIPTION)
    p.add_argument("--sids", required=True, help="SID file: NAME.itemsid (item_id:token, sid:token_seq) or .json")
    p.add_argument("--field", default="sid", help="name of the new column(s) (default sid: sid_1 .. sid_L)")
    p.add_argument("--layout", choices=SID_LAYOUTS, default="levels",
                   help="levels (default): one token column per SID level; bag: one token_seq column (RecBole "
                   "averages its tokens into one vector)")
    p.add_argument("--levels", type=_positive_int, default=None,
                   help="keep only the first N SID levels (default: all, a dedup level included)")
    return p


def run_from_args(args) -> dict:
    return attach_sids(args.dataset, args.data_path, args.sids, args.out, out_name=args.out_name,
                       overwrite=args.overwrite, field=args.field, levels=args.levels, layout=args.layout)


def main(argv=None) -> int:
    """Standalone entry: ``python -m dataset_prep.attach_sids --dataset ... --sids ... --out ...``."""
    parser = argparse.ArgumentParser(prog="python -m dataset_prep")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["attach-sids", *(sys.argv[1:] if argv is None else argv)])
    try:
        summary = args.run(args)
    except (RecBoleSIDError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
