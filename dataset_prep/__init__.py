"""dataset_prep: raw data -> RecBole atomic files, semantic embeddings and a cold-start split.

Run ``python -m dataset_prep --help``. Subcommands: ``convert-json``, ``embed``, ``import-vectors``,
``cold-split``, ``ml-100k``, ``attach-sids``, ``negatives``, ``history``, ``seq-cold-split`` (leave-one-out files
for sequential models, ``dataset_prep.seq_split``). Every command refuses to replace existing outputs without
``--overwrite``, writes its files together (all or none) and reports bad input as ``error: ...`` with exit status 2.
"""
from dataset_prep.cold_split import cold_split
from dataset_prep.convert import convert_json
from dataset_prep.embed import embed_dataset, import_vectors
from dataset_prep.ml100k import prepare_ml100k

__all__ = ["cold_split", "convert_json", "embed_dataset", "import_vectors", "prepare_ml100k"]
