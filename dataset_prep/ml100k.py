"""``ml-100k``: copy RecBole's embedded ml-100k into ``OUT/ml-100k/`` and build its embeddings.

Item text: ``movie_title``, ``release_year``, ``class`` (genres). User profile: ``age``, ``gender``,
``occupation`` (``zip_code`` is left out). With ``--cold-ratio`` the cold split is written in the same folder
(``ml-100k.{train,valid,test}.inter`` + ``ml-100k.cold_items``). Never writes inside the installed package.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from recbole_sid.exceptions import DataError

from dataset_prep.cold_split import SPLITS, _ratio, cold_split
from dataset_prep.embed import embed_dataset
from dataset_prep.files import Staging, check_outputs

NAME = "ml-100k"
ITEM_FIELDS = ["movie_title", "release_year", "class"]
USER_FIELDS = ["age", "gender", "occupation"]


def embedded_ml100k() -> Path:
    import recbole

    folder = Path(recbole.__file__).resolve().parent / "dataset_example" / NAME
    if not (folder / f"{NAME}.inter").is_file():
        raise DataError(f"{folder}: the installed recbole package has no embedded ml-100k")
    return folder


def prepare_ml100k(out, cold_ratio: float | None = None, valid_ratio: float = 0.1, test_ratio: float = 0.1,
                   seed: int = 2020, encoder: str = "tfidf", model_path=None, dim: int | None = None,
                   overwrite: bool = False, log=print) -> dict:
    src = embedded_ml100k()
    target = Path(out) / NAME
    package_root = src.parent.parent
    if target.resolve() == package_root or package_root in target.resolve().parents:
        raise DataError(f"--out {out}: refusing to write inside the installed recbole package ({package_root})")
    if cold_ratio is not None:  # check the split settings before anything is copied
        _ratio("cold-ratio", cold_ratio)
        if _ratio("valid-ratio", valid_ratio) + _ratio("test-ratio", test_ratio) >= 1:
            raise DataError(f"--valid-ratio + --test-ratio must be < 1, got {valid_ratio} + {test_ratio}")
    copies = {p: target / p.name for p in sorted(src.iterdir()) if p.is_file()}
    planned = list(copies.values()) + [target / f"{NAME}.itememb", target / f"{NAME}.useremb"]
    if cold_ratio is not None:
        planned += [target / f"{NAME}.{s}.inter" for s in SPLITS] + [target / f"{NAME}.cold_items"]
    check_outputs(planned, overwrite)  # refuse before anything is written
    with Staging(list(copies.values()), overwrite=True) as stage:
        for s, d in copies.items():
            shutil.copyfile(s, stage.path(d))
        stage.commit()
    log(f"copied {len(copies)} files from {src} to {target}")
    summary = {"folder": str(target), "copied": [p.name for p in copies]}
    summary["embed"] = embed_dataset(NAME, out, encoder=encoder, model_path=model_path, dim=dim,
                                     fields=ITEM_FIELDS, user_fields=USER_FIELDS, overwrite=True, log=log)
    if cold_ratio is not None:
        summary["cold_split"] = cold_split(NAME, out, cold_ratio, valid_ratio, test_ratio, seed=seed,
                                           overwrite=True, log=log)
    return summary
