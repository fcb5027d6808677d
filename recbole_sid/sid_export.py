"""Writing a tokenizer's SIDs and their quality report, and warning about items that share a full SID.

Files (RecBole atomic files): ``NAME.itemsid`` and, for tokenizers with user SIDs, ``NAME.usersid``, each with a
dedup level that makes every SID unique; ``NAME-<Model>.sid_quality.json``. They are written together or not at
all (``dataset_prep.files.Staging``).
"""
from __future__ import annotations

import json
from logging import getLogger
from pathlib import Path

import numpy as np

from recbole_sid.atomic_io import write_sids
from recbole_sid.exceptions import ConfigError
from recbole_sid.quantization import add_dedup_level
from recbole_sid.quantization.dedup import bucket_ids
from recbole_sid.tokenizers.base import SideOutput, TokenizerOutput


def warn_identical_sids(codes: np.ndarray, codebook_size: int, side: str = "item") -> dict:
    """Log a WARNING when entities share a full SID (the head then gives them identical scores); returns the
    counts ``{"sharing": n, "largest_bucket": b}``. Nothing is logged when every SID is unique."""
    codes = np.asarray(codes)
    if len(codes) == 0:
        return {"sharing": 0, "largest_bucket": 0}
    bucket, counts = bucket_ids(codes)
    sharing = int((counts[bucket] > 1).sum())
    largest = int(counts.max())
    if sharing:
        beyond = (f" - larger than a codebook ({codebook_size} codes), so no last-level code can separate it"
                  if largest > codebook_size else "")
        if side == "item":
            effect = "the SID head gives them identical scores"
            fix = ("more levels (sid_levels), a larger last codebook (sid_codebook_size), or the +id head "
                   "(sid_head_id: True, for items with training rows)")
        else:
            effect = "a model reading the user SIDs cannot tell them apart"
            fix = "more levels (user_sid_levels) or a larger last codebook (user_sid_codebook_size)"
        getLogger().warning(
            f"{sharing} of {len(codes)} {side}s ({sharing / len(codes):.1%}) share their full SID with another "
            f"{side} (largest group: {largest} {side}s{beyond}); {effect}. Usually their text embeddings are "
            f"(near) identical. To separate them: {fix}. The exported files add a dedup level, which makes the "
            f"SIDs unique but carries no meaning.")
    return {"sharing": sharing, "largest_bucket": largest}


def _quality(side: SideOutput, full_codes: np.ndarray, k: int) -> dict:
    from recbole_sid.quality import sid_quality

    report = sid_quality(full_codes, codebook_size=side.codebook_size, has_dedup_level=True,
                         embeddings=side.embeddings, reconstructions=side.reconstructions if side.embeddings is
                         not None else None, k=k).to_dict()
    report["collision_rate_greedy"] = side.collision_rate_greedy
    return report


def export_sids(output: TokenizerOutput, directory, dataset: str, model: str, item_tokens, user_tokens=None,
                item_field: str = "item_id", user_field: str = "user_id", dedup_max=None, quality_k: int = 10,
                last_level: str | None = None, overwrite: bool = True) -> dict:
    """Write the SIDs of ``output`` (entities 1..N-1; ``*_tokens`` hold the raw ids with row 0 = padding) and the
    quality report to ``directory``. Returns ``{"sid_files": {...}, "sid_quality": report}``."""
    from dataset_prep.files import Staging

    directory = Path(directory)
    sides = {"items": (output.items, item_tokens, item_field, "itemsid")}
    if output.users is not None:
        sides["users"] = (output.users, user_tokens, user_field, "usersid")
    report = {"model": model, "dataset": dataset, "summary": output.summary}
    full = {}
    for name, (side, tokens, _, _) in sides.items():
        try:
            full[name], dedup = add_dedup_level(side.codes, max_size=dedup_max)
        except Exception as exc:
            raise ConfigError(f"sid_dedup_max={dedup_max}: {exc}") from exc
        report[name] = _quality(side, full[name], quality_k)
        report[name]["dedup_size"] = int(dedup)
        report[name]["sid_last_level"] = last_level
        report[name]["identical_sids"] = warn_identical_sids(side.codes, side.codebook_size, name[:-1])
    files = {suffix: directory / f"{dataset}.{suffix}" for _, (_, _, _, suffix) in sides.items()}
    files["quality"] = directory / f"{dataset}-{model}.sid_quality.json"
    with Staging(list(files.values()), overwrite) as stage:
        for name, (side, tokens, field, suffix) in sides.items():
            write_sids(stage.path(files[suffix]), np.asarray(tokens)[1:], full[name], id_field=field)
        with open(stage.path(files["quality"]), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=float)
        stage.commit()
    items = report["items"]
    logger = getLogger()
    logger.info(f"SIDs exported: {', '.join(str(p) for p in files.values())}")
    logger.info(f"item SID quality: collision rate of the greedy codes {items['collision_rate_greedy']:.4f}, "
                f"before the dedup level {items['collision_rate']:.4f}; level-1 usage "
                f"{items['levels'][0]['usage']:.3f}; dedup size {items['dedup_size']}")
    return {"sid_files": {k: str(v) for k, v in files.items()}, "sid_quality": report}
