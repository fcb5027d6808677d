"""``python -m dataset_prep <command>``: see ``--help`` of each command.

Bad input ends with one paragraph ``error: ...`` on stderr and exit status 2 (no traceback).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from recbole_sid.exceptions import RecBoleSIDError

from dataset_prep.convert import DEFAULT_MAX_WORDS


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_encoder_args(p):
    p.add_argument("--encoder", default="tfidf", choices=["tfidf", "sentence-transformers"],
                   help="text encoder (default tfidf: offline, deterministic TF-IDF words + char n-grams -> SVD)")
    p.add_argument("--model-path", default=None,
                   help="LOCAL sentence-transformers model folder (required with --encoder sentence-transformers; "
                        "nothing is downloaded)")
    p.add_argument("--dim", type=_positive_int, default=None,
                   help="output dimension (tfidf default 64; sentence-transformers default: the model's own)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dataset_prep",
                                     description="Raw data -> RecBole atomic files, semantic embeddings, cold split.")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)

    p = sub.add_parser("convert-json", help="public {user: [items]} / {item: {...}} JSON -> NAME.inter + NAME.item",
                       description="Convert X.inter.json ({user: [items in time order]}) and X.item.json "
                                   "({item: {title, description, brand, categories}}) into OUT/NAME/NAME.inter "
                                   "and OUT/NAME/NAME.item. An item repeated in a user's list is kept at each "
                                   "position (RecBole reads every line; rm_dup_inter: first keeps the first); the "
                                   "number of repeated (user, item) pairs is reported.")
    p.add_argument("--inter", required=True, help="X.inter.json")
    p.add_argument("--item", required=True, help="X.item.json")
    p.add_argument("--dataset", required=True, help="dataset NAME (folder and file stem)")
    p.add_argument("--out", required=True, help="output root: files go to OUT/NAME/")
    p.add_argument("--max-words", type=_positive_int, default=DEFAULT_MAX_WORDS,
                   help=f"cut descriptions to this many words (default {DEFAULT_MAX_WORDS})")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")

    p = sub.add_parser("embed", help="NAME.item (+ NAME.user) text -> NAME.itememb (+ NAME.useremb)",
                       description="Embed the text fields of DIR/NAME/NAME.item (and the profile fields of "
                                   "NAME.user when present) into NAME.itememb / NAME.useremb.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-path", required=True, help="folder holding NAME/")
    _add_encoder_args(p)
    p.add_argument("--fields", nargs="+", default=None,
                   help="item text fields in order (default: every token/token_seq field except ids)")
    p.add_argument("--user-fields", nargs="+", default=None,
                   help="user profile fields (default: every token/token_seq field except ids and zip codes)")
    p.add_argument("--no-users", action="store_true", help="do not write NAME.useremb")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="sentence-transformers batch size")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("import-vectors", help="attach precomputed vectors (.npy + ids) as NAME.itememb / .useremb",
                       description="Write V.npy ([N, D] floats) with IDS.txt (N raw ids, one per line) as "
                                   "DIR/NAME/NAME.itememb (or .useremb with --kind user).")
    p.add_argument("--vectors", required=True, help="V.npy, a 2-D float array")
    p.add_argument("--ids", required=True, help="IDS.txt, one raw id per line, same order as the rows")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-path", required=True)
    p.add_argument("--kind", choices=["item", "user"], default="item")
    p.add_argument("--dim", type=_positive_int, default=None, help="expected dimension (checked when given)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("cold-split", help="hold out items whole; write NAME.{train,valid,test}.inter + .cold_items",
                       description="Hold out a share of items (all their interactions go to valid or test) and "
                                   "split the warm interactions per user by time; writes RecBole benchmark files "
                                   "for benchmark_filename: [train, valid, test].")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-path", required=True)
    p.add_argument("--cold-ratio", type=float, required=True, help="share of items held out, in (0, 1)")
    p.add_argument("--valid-ratio", type=float, default=0.1, help="warm per-user valid share (default 0.1)")
    p.add_argument("--test-ratio", type=float, default=0.1, help="warm per-user test share (default 0.1)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--out", default=None, help="write to OUT/OUT_NAME/ instead of beside the input (side files copied)")
    p.add_argument("--out-name", default=None, help="dataset name of the output (with --out; default NAME)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("ml-100k", help="copy RecBole's embedded ml-100k to OUT/ml-100k/ and embed it",
                       description="Copy recbole/dataset_example/ml-100k/* into OUT/ml-100k/, embed items "
                                   "(title, year, genres) and users (age, gender, occupation), and optionally "
                                   "write a cold split there.")
    p.add_argument("--out", required=True)
    _add_encoder_args(p)
    p.add_argument("--cold-ratio", type=float, default=None, help="also write a cold split with this item share")
    p.add_argument("--valid-ratio", type=float, default=0.1)
    p.add_argument("--test-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--overwrite", action="store_true")
    from dataset_prep.attach_sids import add_parser as add_attach_sids

    add_attach_sids(sub)
    from dataset_prep.negatives import add_parser as add_negatives

    add_negatives(sub)
    from dataset_prep.history import add_parser as add_history

    add_history(sub)
    from dataset_prep.seq_split import add_parser as add_seq_split

    add_seq_split(sub)
    return parser


def run(args) -> dict:
    from dataset_prep import cold_split, convert_json, embed_dataset, import_vectors, prepare_ml100k

    if args.command == "convert-json":
        return convert_json(args.inter, args.item, args.dataset, args.out, overwrite=args.overwrite,
                            max_words=args.max_words)
    if args.command == "embed":
        return embed_dataset(args.dataset, args.data_path, encoder=args.encoder, model_path=args.model_path,
                             dim=args.dim, fields=args.fields, user_fields=args.user_fields,
                             users=not args.no_users, overwrite=args.overwrite, batch_size=args.batch_size)
    if args.command == "import-vectors":
        return import_vectors(args.vectors, args.ids, args.dataset, args.data_path, kind=args.kind, dim=args.dim,
                              overwrite=args.overwrite)
    if args.command == "cold-split":
        return cold_split(args.dataset, args.data_path, args.cold_ratio, args.valid_ratio, args.test_ratio,
                          seed=args.seed, out=args.out, out_name=args.out_name, overwrite=args.overwrite)
    if args.command == "ml-100k":
        return prepare_ml100k(args.out, cold_ratio=args.cold_ratio, valid_ratio=args.valid_ratio,
                              test_ratio=args.test_ratio, seed=args.seed, encoder=args.encoder,
                              model_path=args.model_path, dim=args.dim, overwrite=args.overwrite)
    if args.command in ("attach-sids", "negatives", "history", "seq-cold-split"):
        return args.run(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts the choices


class _StderrWarnings(logging.Handler):
    """``warning: ...`` lines on the current ``sys.stderr`` for the package's log records (e.g. stale temporary
    files removed by ``recbole_sid.atomic_io``)."""

    def emit(self, record):
        print(f"warning: {' '.join(record.getMessage().split())}", file=sys.stderr)


def log_warnings_to_stderr() -> None:
    """Show the warnings that ``recbole_sid`` logs while a command runs (once per process)."""
    logger = logging.getLogger("recbole_sid")
    if not any(isinstance(h, _StderrWarnings) for h in logger.handlers):
        logger.addHandler(_StderrWarnings(logging.WARNING))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    log_warnings_to_stderr()
    try:
        summary = run(args)
    except (RecBoleSIDError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0
