"""``embed`` and ``import-vectors``: ``NAME.itememb`` / ``NAME.useremb`` beside a dataset's atomic files.

Both files: header ``item_id:token<TAB>item_emb:float_seq`` (``user_id``/``user_emb`` for users), one row per
entity, floats separated by spaces (``recbole_sid.atomic_io.write_vectors``).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from recbole_sid.atomic_io import read_vectors, write_vectors
from recbole_sid.data.encoders import DEFAULT_DIM, get_encoder
from recbole_sid.data.text import auto_text_fields, entity_texts, read_atomic_table
from recbole_sid.exceptions import DataError

from dataset_prep.files import Staging, check_input

INTER_SUFFIXES = ("inter", "train.inter", "valid.inter", "test.inter")


def dataset_dir(data_path, dataset: str) -> Path:
    folder = Path(data_path) / dataset
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found (expected --data-path DIR holding DIR/{dataset}/)")
    return folder


def interaction_ids(folder: Path, dataset: str, field: str) -> tuple[set[str], list[Path]]:
    """Distinct values of ``field`` over every interaction file of the dataset (full and benchmark)."""
    ids: set[str] = set()
    files = [folder / f"{dataset}.{s}" for s in INTER_SUFFIXES if (folder / f"{dataset}.{s}").is_file()]
    for path in files:
        frame, types = read_atomic_table(path, usecols=[field])
        if field not in types:
            raise DataError(f"{path}: no '{field}' column")
        ids.update(frame[field].tolist())
    return ids, files


def _user_fields_available(path: Path, fields) -> bool:
    if fields is not None:
        return True
    frame, types = read_atomic_table(path)
    return bool(auto_text_fields(frame, types, "user_id"))


def embed_dataset(dataset: str, data_path, encoder: str = "tfidf", model_path=None, dim: int | None = None,
                  fields=None, user_fields=None, users: bool = True, overwrite: bool = False,
                  batch_size: int = 64, log=print) -> dict:
    """Embed ``NAME.item`` (and ``NAME.user`` when it has profile fields); returns a summary dict."""
    folder = dataset_dir(data_path, dataset)
    item_file = check_input(folder / f"{dataset}.item", "item file")
    kwargs = {"dim": dim, "model_path": model_path, "batch_size": batch_size}
    if encoder in ("tfidf", "default") and dim is None:
        kwargs["dim"] = DEFAULT_DIM
    enc = get_encoder(encoder, **kwargs)

    item_ids, item_texts, used_fields = entity_texts(item_file, "item_id", fields)
    inter_items, inter_files = interaction_ids(folder, dataset, "item_id")
    missing = sorted(inter_items - set(item_ids))
    if missing:
        raise DataError(f"{inter_files[0]}: {len(missing)} items have no row in {item_file} to embed "
                        f"(first 10: {missing[:10]})")

    user_file = folder / f"{dataset}.user"
    do_users = users and user_file.is_file() and _user_fields_available(user_file, user_fields)
    outputs = [folder / f"{dataset}.itememb"] + ([folder / f"{dataset}.useremb"] if do_users else [])
    with Staging(outputs, overwrite) as stage:
        log(f"embedding {len(item_ids)} items from fields {used_fields} of {item_file} with '{enc.name}'")
        item_vecs = enc.encode(item_texts)
        write_vectors(stage.path(outputs[0]), item_ids, item_vecs, "item_id", "item_emb")
        summary = {"itememb": str(outputs[0]), "items": len(item_ids), "item_dim": int(item_vecs.shape[1]),
                   "item_fields": used_fields}
        if do_users:
            user_ids, user_texts, used_user = entity_texts(user_file, "user_id", user_fields)
            log(f"embedding {len(user_ids)} user profiles from fields {used_user} of {user_file}")
            # the encoder is refit on the user texts (tfidf is transductive)
            user_vecs = get_encoder(encoder, **kwargs).encode(user_texts)
            write_vectors(stage.path(outputs[1]), user_ids, user_vecs, "user_id", "user_emb")
            summary.update(useremb=str(outputs[1]), users=len(user_ids), user_dim=int(user_vecs.shape[1]),
                           user_fields=used_user)
        stage.commit()
    return summary


def read_ids_file(path) -> list[str]:
    path = check_input(path, "ids file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    ids = [line.strip() for line in lines]
    blank = [n + 1 for n, i in enumerate(ids) if not i]
    if blank:
        raise DataError(f"{path}: blank ids on lines {blank[:10]}")
    if any("\t" in i for i in ids):
        raise DataError(f"{path}: ids must not contain tabs")
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise DataError(f"{path}: duplicate ids ({len(dup)}; first: {dup[:10]})")
    return ids


def import_vectors(vectors, ids, dataset: str, data_path, kind: str = "item", dim: int | None = None,
                   overwrite: bool = False, log=print) -> dict:
    """Attach precomputed vectors (``.npy`` [N, D] + one id per line) as ``NAME.itememb`` / ``NAME.useremb``."""
    if kind not in ("item", "user"):
        raise DataError(f"--kind must be 'item' or 'user', got {kind!r}")
    folder = dataset_dir(data_path, dataset)
    vec_path = check_input(vectors, "vectors file")
    try:
        array = np.load(vec_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{vec_path}: not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise DataError(f"{vec_path}: expected a 2-D array [N, D], got shape {getattr(array, 'shape', None)}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{vec_path}: expected real numbers, got dtype {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{vec_path}: empty array of shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise DataError(f"{vec_path}: vectors have dimension {array.shape[1]}, expected --dim {dim}")
    array = array.astype(np.float32)
    bad = np.where(~np.isfinite(array).all(axis=1))[0]
    if len(bad):
        raise DataError(f"{vec_path}: {len(bad)} rows contain NaN/Inf (first rows: {bad[:10].tolist()})")
    id_list = read_ids_file(ids)
    if len(id_list) != array.shape[0]:
        raise DataError(f"{ids}: {len(id_list)} ids but {vec_path} has {array.shape[0]} vectors")

    known, _ = interaction_ids(folder, dataset, f"{kind}_id")
    side = folder / f"{dataset}.{kind}"
    if side.is_file():
        frame, _ = read_atomic_table(side, usecols=[f"{kind}_id"])
        known.update(frame[f"{kind}_id"].tolist())
    unknown = [i for i in id_list if known and i not in known]
    if known and len(unknown) == len(id_list):
        raise DataError(f"{ids}: none of the {len(id_list)} ids is a {kind} of dataset '{dataset}' "
                        f"(first: {id_list[:5]})")
    lacking = sorted(known - set(id_list))
    target = folder / f"{dataset}.{kind}emb"
    with Staging([target], overwrite) as stage:
        write_vectors(stage.path(target), id_list, array, f"{kind}_id", f"{kind}_emb")
        read_vectors(stage.path(target))  # round-trip check before the file appears
        stage.commit()
    if unknown:
        log(f"warning: {len(unknown)} ids are not {kind}s of '{dataset}' (kept; first: {unknown[:5]})", file=sys.stderr)
    if lacking:
        log(f"warning: {len(lacking)} {kind}s of '{dataset}' have no vector (models apply missing_embedding; "
            f"first: {lacking[:5]})", file=sys.stderr)
    return {"file": str(target), "vectors": len(id_list), "dim": int(array.shape[1]),
            "unknown_ids": len(unknown), "without_vector": len(lacking)}
