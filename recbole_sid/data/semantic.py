"""Semantic embeddings for models, aligned with RecBole's internal ids.

Public API (models call these):

* :func:`item_semantic_embeddings` ``(config, dataset) -> FloatTensor [dataset.item_num, D]``
* :func:`user_semantic_embeddings` ``(config, dataset, item_emb) -> FloatTensor [dataset.user_num, D']``

Row ``i`` is RecBole's internal id ``i`` (row 0 is ``[PAD]``, zeros). Raw ids are mapped with
``dataset.field2id_token`` / ``field2token_id``.

Item vectors, first source found:

1. config ``item_emb_file`` (an explicit path to an ``item_id:token``/``item_emb:float_seq`` atomic file);
2. ``<data_path>/<dataset>.itememb`` (``python -m dataset_prep embed`` / ``import-vectors`` write it);
3. built in-process with ``semantic_encoder`` (``tfidf``) / ``semantic_dim`` (64) / ``semantic_model_path``
   from the raw ``<data_path>/<dataset>.item`` text fields (``semantic_text_fields``, default ``auto``), then
   cached (see :func:`cache_dir_for`) under a key made of encoder settings, fields and the ``.item`` file's
   SHA-256, so any change rebuilds. Building and reuse are logged on RecBole's (root) logger.

Items of the dataset without a vector: ``missing_embedding: error`` (default; the error says how many and the
first 10 ids) or ``zero`` (zero rows and a warning with the count).

User vectors: ``[sqrt(w) * profile ; sqrt(1 - w) * history]`` then L2-normalised, where ``profile`` is the
L2-normalised embedding of the user's profile text (``user_emb_file`` -> ``<dataset>.useremb`` -> built from
``<dataset>.user`` fields ``semantic_user_fields`` (auto) exactly as for items; absent when the data has no
``.user`` file or it has no text-like field), ``history`` the L2-normalised mean of ``item_emb`` over the
user's interactions in ``dataset.inter_feat`` and ``w = user_profile_weight`` (0.5). Pass RecBole's TRAINING
dataset (``train_data.dataset``) so that only training interactions count. A user with no training
interaction gets the profile part only; without any profile ``D' = D`` (history only, ``w`` ignored) and
``user_profile_weight: 0`` also drops the profile.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recbole_sid.atomic_io import read_vectors, write_vectors
from recbole_sid.data.encoders import DEFAULT_DIM, get_encoder
from recbole_sid.data.text import entity_texts, file_sha256, read_atomic_header, read_atomic_table
from recbole_sid.exceptions import ConfigError, DataError

#: config keys read here, with their defaults.
DEFAULTS = {
    "item_emb_file": None,
    "user_emb_file": None,
    "semantic_encoder": "tfidf",
    "semantic_dim": None,  # None -> encoders.DEFAULT_DIM (64) for tfidf, the model's own for sentence-transformers
    "semantic_model_path": None,
    "semantic_text_fields": "auto",
    "semantic_user_fields": "auto",
    "semantic_cache_dir": "saved/semantic_cache/",
    "missing_embedding": "error",
    "user_profile_weight": 0.5,
}


def _cfg(config, key):
    try:
        value = config[key]
    except (KeyError, TypeError):
        value = None
    return DEFAULTS.get(key) if value is None else value


def _logger():
    return logging.getLogger()


def _data_dir(config) -> Path:
    data_path = _cfg(config, "data_path")
    if not data_path:
        raise ConfigError("config key 'data_path' is not set: cannot locate the dataset's files")
    return Path(os.path.normpath(str(data_path)))


def _dataset_name(config) -> str:
    name = _cfg(config, "dataset")
    if not name:
        raise ConfigError("config key 'dataset' is not set")
    return str(name)


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _protected_dirs() -> list[Path]:
    dirs = []
    try:
        import recbole

        dirs.append(Path(recbole.__file__).resolve().parent)
    except ImportError:  # pragma: no cover
        pass
    for key in ("purelib", "platlib"):
        with_path = sysconfig.get_paths().get(key)
        if with_path:
            dirs.append(Path(with_path))
    return dirs


def cache_dir_for(config, data_dir: Path | None = None) -> Path:
    """Where built vectors are cached: ``<data_path>/semantic_cache/`` when ``data_path`` is writable and not
    inside an installed package (RecBole's embedded ml-100k is), else ``semantic_cache_dir``
    (``saved/semantic_cache/``)."""
    data_dir = _data_dir(config) if data_dir is None else Path(data_dir)
    if (data_dir.is_dir() and os.access(data_dir, os.W_OK | os.X_OK)
            and not any(_is_within(data_dir, p) for p in _protected_dirs())):
        target = data_dir / "semantic_cache"
        try:
            target.mkdir(exist_ok=True)
            if os.access(target, os.W_OK | os.X_OK):
                return target
        except OSError:
            pass
    return Path(_cfg(config, "semantic_cache_dir")).resolve()


def _encoder_from_config(config):
    name = _cfg(config, "semantic_encoder")
    dim = _cfg(config, "semantic_dim")
    kwargs = {"dim": dim, "model_path": _cfg(config, "semantic_model_path")}
    if str(name).lower() in ("tfidf", "default") and dim is None:
        kwargs["dim"] = DEFAULT_DIM
    return get_encoder(name, **kwargs)


def _fields_setting(value):
    if value is None or value == "auto" or value == ["auto"]:
        return None
    return [value] if isinstance(value, str) else list(value)


def build_cached_vectors(config, source: Path, id_field: str, fields, kind: str):
    """Encode ``source`` (``.item``/``.user``) text or reuse the cache; returns ``(ids, vectors, path)``."""
    log = _logger()
    encoder = _encoder_from_config(config)
    header_fields = [n for n, _ in read_atomic_header(source)]
    key_material = {
        "kind": kind,
        "encoder": encoder.signature(),
        "fields": fields if fields is not None else ["auto", header_fields],
        "source_sha256": file_sha256(source),
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True, default=str).encode()).hexdigest()[:16]
    dim = key_material["encoder"].get("dim")
    cache_dir = cache_dir_for(config, source.parent)
    cache_file = cache_dir / f"{source.stem}.{kind}.{encoder.name}-d{dim if dim else 'native'}-{key}.emb"
    if cache_file.is_file():
        try:
            ids, vectors, _, _ = read_vectors(cache_file)
            log.info(f"semantic embeddings ({kind}): reusing cache {cache_file} (built from {source})")
            return ids, vectors, cache_file
        except DataError as exc:
            log.warning(f"semantic embeddings ({kind}): ignoring unreadable cache {cache_file}: {exc}")
    ids, texts, used = entity_texts(source, id_field, fields)
    vectors = encoder.encode(texts)
    try:
        write_vectors(cache_file, ids, vectors, id_field=id_field, vec_field=f"{kind}_emb")
        ids, vectors, _, _ = read_vectors(cache_file)  # same (rounded) values as every later cache hit
        where = str(cache_file)
    except OSError as exc:
        where = f"nowhere (cache write failed: {exc})"
    log.info(f"semantic embeddings ({kind}): built {len(ids)} x {vectors.shape[1]} vectors with encoder "
             f"'{encoder.name}' from fields {used} of {source}; cached at {where}")
    return ids, vectors, cache_file


def _align(ids, vectors: np.ndarray, dataset, field: str, what: str, source, config,
           built_from: Path | None = None) -> torch.Tensor:
    """Rows of ``vectors`` (raw ``ids``) placed at RecBole's internal ids of ``field``; row 0 stays zero.

    ``built_from``: the ``.item``/``.user`` file the vectors were built from in-process (``source`` is then the
    cache), so that an entity without a vector is reported as missing from that file, and the cache is named
    only when it lacks ids that the file has (a stale cache)."""
    id2token = np.asarray(dataset.field2id_token[field], dtype=object)
    n = len(id2token)
    positions = pd.Index(pd.Series(ids, dtype=object)).get_indexer(pd.Series(id2token, dtype=object))
    positions[0] = -1  # [PAD]
    out = np.zeros((n, vectors.shape[1]), dtype=np.float32)
    found = positions >= 0
    out[found] = vectors[positions[found]]
    missing = np.where(~found)[0]
    missing = missing[missing > 0]
    if len(missing):
        policy = str(_cfg(config, "missing_embedding")).lower()
        if policy not in ("error", "zero"):
            raise ConfigError(f"missing_embedding must be 'error' or 'zero', got {policy!r}")
        missing_ids = [str(t) for t in id2token[missing]]
        sample, name = missing_ids[:10], _cfg(config, "dataset")
        if built_from is not None:
            in_file = set(read_atomic_table(built_from, usecols=[field])[0][field].tolist())
            stale = [i for i in missing_ids if i in in_file]
            if stale:  # the cache lacks rows that the file has: only a damaged or hand-edited cache does
                raise DataError(f"{source}: stale semantic cache: it has no vector for {len(stale)} {what}s "
                                f"(first 10 ids: {stale[:10]}) that {built_from} has; delete it to rebuild the "
                                f"vectors")
            if policy == "error":
                raise DataError(f"{len(missing)} of {n - 1} {what}s of dataset '{name}' have no row in {built_from} "
                                f"(first 10 ids: {sample}), so they have no text to embed: add rows for them to "
                                f"{built_from}, or set missing_embedding: zero to give them zero vectors")
            _logger().warning(f"semantic embeddings: {len(missing)} {what}s have no row in {built_from}; using zero "
                              f"vectors for them (missing_embedding: zero; first ids {sample})")
        elif policy == "error":
            raise DataError(f"{source}: no vector for {len(missing)} of {n - 1} {what}s of dataset '{name}' "
                            f"(first 10 ids: {sample}); rebuild the vectors or set missing_embedding: zero")
        else:
            _logger().warning(f"semantic embeddings: {len(missing)} {what}s have no vector in {source}; using zero "
                              f"vectors for them (missing_embedding: zero; first ids {sample})")
    return torch.from_numpy(out)


def _explicit_file(config, key: str) -> Path | None:
    value = _cfg(config, key)
    if value is None or value == "":
        return None
    path = Path(os.path.expanduser(str(value)))
    if not path.is_file():
        raise DataError(f"config key {key}: file {path} not found")
    return path


def _load_entity_vectors(config, kind: str, id_field: str, required: bool):
    """``(ids, vectors, source, built_from)`` for ``kind`` in {item, user} or ``None`` when nothing exists and not
    required; ``built_from`` is the ``.item``/``.user`` file when the vectors were built from it (else None)."""
    data_dir, name = _data_dir(config), _dataset_name(config)
    explicit = _explicit_file(config, f"{kind}_emb_file")
    if explicit is not None:
        ids, vectors, _, _ = read_vectors(explicit)
        _logger().info(f"semantic embeddings ({kind}): read {explicit} (config key {kind}_emb_file)")
        return ids, vectors, explicit, None
    stored = data_dir / f"{name}.{kind}emb"
    if stored.is_file():
        ids, vectors, _, _ = read_vectors(stored)
        _logger().info(f"semantic embeddings ({kind}): read {stored}")
        return ids, vectors, stored, None
    raw = data_dir / f"{name}.{kind}"
    key = "semantic_text_fields" if kind == "item" else "semantic_user_fields"
    fields = _fields_setting(_cfg(config, key))
    if not raw.is_file():
        if required:
            raise DataError(f"no {kind} vectors for dataset '{name}': config key {kind}_emb_file is not set, "
                            f"{stored} does not exist and there is no {raw} to build them from")
        return None
    if not required and fields is None:
        # a .user file with only the id (and id-like columns) has no profile to embed
        from recbole_sid.data.text import auto_text_fields

        frame, types = read_atomic_table(raw)
        if not auto_text_fields(frame, types, id_field):
            _logger().info(f"semantic embeddings ({kind}): {raw} has no profile text field; history only")
            return None
    ids, vectors, cache = build_cached_vectors(config, raw, id_field, fields, kind)
    return ids, vectors, cache, raw


def item_semantic_embeddings(config, dataset) -> torch.Tensor:
    """``FloatTensor [dataset.item_num, D]``: row i = internal item id i, row 0 ([PAD]) zeros."""
    field = dataset.iid_field
    ids, vectors, source, built_from = _load_entity_vectors(config, "item", field, required=True)
    return _align(ids, vectors, dataset, field, "item", source, config, built_from)


def user_history_mean(dataset, item_emb) -> torch.Tensor:
    """Mean of ``item_emb`` over each user's interactions in ``dataset.inter_feat``; zeros without any."""
    item_emb = torch.as_tensor(item_emb, dtype=torch.float32)
    if item_emb.dim() != 2 or item_emb.shape[0] != dataset.item_num:
        raise DataError(f"item_emb must have shape [item_num={dataset.item_num}, D], got {tuple(item_emb.shape)}")
    inter = dataset.inter_feat
    if inter is None:
        raise DataError("dataset has no interactions (inter_feat is None)")
    uid = torch.as_tensor(np.asarray(inter[dataset.uid_field]), dtype=torch.long)
    iid = torch.as_tensor(np.asarray(inter[dataset.iid_field]), dtype=torch.long)
    n_users = dataset.user_num
    sums = torch.zeros(n_users, item_emb.shape[1], dtype=torch.float32).index_add_(0, uid, item_emb[iid])
    counts = torch.bincount(uid, minlength=n_users).clamp_min(1).to(torch.float32)
    return sums / counts.unsqueeze(1)


def _l2(x: torch.Tensor) -> torch.Tensor:
    norms = x.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, x / norms.clamp_min(1e-12), torch.zeros_like(x))


def user_profile_embeddings(config, dataset) -> torch.Tensor | None:
    """``FloatTensor [dataset.user_num, Dp]`` from the users' profile text, or ``None`` without a profile."""
    field = dataset.uid_field
    loaded = _load_entity_vectors(config, "user", field, required=False)
    if loaded is None:
        return None
    ids, vectors, source, built_from = loaded
    return _align(ids, vectors, dataset, field, "user", source, config, built_from)


def user_semantic_embeddings(config, dataset, item_emb) -> torch.Tensor:
    """``FloatTensor [dataset.user_num, D']``: ``l2([sqrt(w) * profile ; sqrt(1 - w) * history])``.

    ``dataset`` must be RecBole's training split (``train_data.dataset``): only its interactions count.
    """
    history = _l2(user_history_mean(dataset, item_emb))
    weight = float(_cfg(config, "user_profile_weight"))
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"user_profile_weight must be in [0, 1], got {weight}")
    profile = user_profile_embeddings(config, dataset) if weight > 0 else None
    if profile is None:
        return history
    combined = torch.cat([np.sqrt(weight) * _l2(profile), np.sqrt(1.0 - weight) * history], dim=1)
    return _l2(combined)
