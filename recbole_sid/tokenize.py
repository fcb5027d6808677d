"""Phase 1 alone: run a SID model's tokenizer and write its SIDs and quality report, without training a head.

    python -m recbole_sid.tokenize --model DAS --dataset ml-100k [--data-path DIR] [--out OUT] [--overwrite]
                                   [--config-files a.yaml b.yaml] [--key=value ...]
    python -m recbole_sid.tokenize --embeddings SHARDS... --out OUT [--levels 3] [--codebook-size 256]
                                   [--sample-size N] [--seed 0] [--ray [--ray-address ADDRESS]] [--overwrite] ...

The data, split and config are exactly those of ``run_recbole --model=<same> --dataset=<same>`` (RecBole's Config
with the plugin's yaml defaults; ``--key=value`` overrides as on that command line), so the SIDs are the ones that
run's phase 1 would make. Output: ``OUT/NAME.itemsid`` (+ ``OUT/NAME.usersid`` for DAS) and
``OUT/NAME-<Model>.sid_quality.json``, all written or none; an existing output is refused without ``--overwrite``.
Without ``--out`` the files go to a new folder of their own, ``<checkpoint_dir>/<Model>-<time>-<pid>-<random>/``,
so exports of different models or seeds never overwrite each other. The SIDs feed ``dataset_prep attach-sids``
(SIDs as a feature of any CTR model), COINS (``coins_sid_file``) and sequential models.

With ``--embeddings`` (a large catalogue, no RecBole dataset): residual k-means SIDs of item vectors given as ``.npy``
shards (memory-mapped; ``X.ids.txt`` beside ``X.npy`` gives the item ids) or parquet shards, in bounded memory:
codebooks from a sample (``--sample-size``, default 256 x K: what faiss' k-means would train on anyway), one
streaming assignment pass (in this process, or as Ray tasks over the shards with ``--ray``: the same SIDs), collisions
resolved by grouping on the SID prefix, SID files written per shard, all or nothing
(``recbole_sid.quantization.streaming``).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from pathlib import Path

from recbole_sid.exceptions import ConfigError, RecBoleSIDError


def tokenize(model: str, dataset: str, data_path=None, out=None, config_files=None, overrides: dict | None = None,
             overwrite: bool = False) -> dict:
    """Run ``model``'s phase 1 on ``dataset`` and export the SIDs; returns ``{"sid_files", "sid_quality", ...}``."""
    from recbole_sid.compat import recbole_pandas_warnings_silenced
    from recbole_sid.model.abstract_recommender import SIDRecommender
    from recbole_sid.quick_start import build_config, prepare_run
    from recbole_sid.runs import new_run_name, run_folder

    config_dict = dict(overrides or {})
    if data_path is not None:
        config_dict["data_path"] = str(data_path)
    config = build_config(model, dataset, config_files, config_dict, cmd_args=[])
    if not (isinstance(config.model_class, type) and issubclass(config.model_class, SIDRecommender)):
        from recbole_sid.tokenizers import TOKENIZERS

        raise ConfigError(f"--model {model}: not a SID model (no tokenizer); choose one of {', '.join(TOKENIZERS)}")
    with recbole_pandas_warnings_silenced():  # as in the runner: RecBole's own pandas FutureWarnings only
        _, train_data, valid_data, _, sid_model = prepare_run(config)
        output = sid_model.fit_tokenizer(train_data, valid_data)
    directory = Path(out) if out is not None else run_folder(config, new_run_name(config["model"]))
    result = sid_model.export_sids(output, directory, overwrite=overwrite)
    result["tokenizer_history"], result["tokenizer_summary"] = output.history, output.summary
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recbole_sid.tokenize", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Any other config key is given as --key=value, as with run_recbole.")
    parser.add_argument("--model", "-m", default=None, help="SID model: RQKMeans, RQVAE, LETTER, QARM or DAS")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (ml-100k needs no download)")
    parser.add_argument("--data-path", default=None, help="folder holding NAME/ (RecBole's data_path)")
    parser.add_argument("--out", default=None, help="output folder (default: a new folder of this run's own under "
                                                    "checkpoint_dir)")
    parser.add_argument("--config-files", nargs="+", default=None, help="yaml config files")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files in --out")
    large = parser.add_argument_group(
        "large catalogue (--embeddings instead of --model/--dataset)",
        "residual k-means SIDs of item vectors in shards, fitted on a sample, assigned in one streaming pass")
    large.add_argument("--embeddings", nargs="+", default=None, metavar="SHARD",
                       help=".npy shards [N, D] (with X.ids.txt beside X.npy: one item id per line; without: row "
                            "numbers) or .parquet shards, or folders of them (taken in name order)")
    large.add_argument("--levels", type=int, default=3, help="SID levels L (default 3)")
    large.add_argument("--codebook-size", type=int, default=256, help="codes per level K (default 256)")
    large.add_argument("--sample-size", type=int, default=None,
                       help="items the codebooks are fitted on (default 256 x K: faiss' k-means trains on at most 256 "
                            "points per centroid anyway)")
    large.add_argument("--seed", type=int, default=0, help="seed of the sample and of k-means (default 0)")
    large.add_argument("--kmeans-iters", type=int, default=20, help="k-means iterations per level (default 20)")
    large.add_argument("--last-level", choices=("unique", "greedy"), default="unique",
                       help="unique (default): items colliding on every level get distinct last codes; greedy: keep")
    large.add_argument("--dedup-max", type=int, default=None, help="largest dedup level allowed (default: no limit)")
    large.add_argument("--block-rows", type=int, default=None, help="rows per read and per assignment task (65536)")
    large.add_argument("--partition-rows", type=int, default=None,
                       help="items per partition of the collision pass (1048576)")
    large.add_argument("--name", default="items", help="output files NAME-00000.itemsid ... (default items)")
    large.add_argument("--id-field", default="item_id", help="id column name of the output files (item_id)")
    large.add_argument("--id-column", default="item_id", help="parquet: the id column (item_id)")
    large.add_argument("--vector-column", default="item_emb", help="parquet: the vector column (item_emb)")
    large.add_argument("--ray", action="store_true", help="run the assignment as Ray tasks (a new local Ray, or "
                                                          "--ray-address)")
    large.add_argument("--ray-address", default=None, help="a running Ray cluster (auto, ray://host:10001, ...); "
                                                           "implies --ray")
    large.add_argument("--ray-num-cpus", type=int, default=None, help="CPUs of a new local Ray (default: all)")
    return parser


def tokenize_large(args) -> dict:
    """``--embeddings`` mode: :func:`recbole_sid.quantization.streaming.tokenize_shards` with the flags."""
    from recbole_sid.quantization.streaming import DEFAULT_BLOCK_ROWS, DEFAULT_PARTITION_ROWS, tokenize_shards

    import logging

    if args.out is None:
        raise ConfigError("--embeddings needs --out (the folder the SID files are written to)")
    if not logging.getLogger().handlers:  # progress of a long job on stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s  %(message)s")
    return tokenize_shards(
        args.embeddings, args.out, num_levels=args.levels, codebook_size=args.codebook_size,
        sample_size=args.sample_size, seed=args.seed, niter=args.kmeans_iters, last_level=args.last_level,
        dedup_max=args.dedup_max, block_rows=args.block_rows or DEFAULT_BLOCK_ROWS,
        partition_rows=args.partition_rows or DEFAULT_PARTITION_ROWS, ray=args.ray, ray_address=args.ray_address,
        ray_num_cpus=args.ray_num_cpus, name=args.name, id_field=args.id_field, id_column=args.id_column,
        vector_column=args.vector_column, overwrite=args.overwrite)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.embeddings is not None:
        if args.model or args.dataset or rest:
            parser.error("--embeddings tokenizes item vectors directly: it takes no --model, --dataset or --key=value")
        try:
            manifest = tokenize_large(args)
        except RecBoleSIDError as exc:
            if os.environ.get("RECBOLE_SID_DEBUG"):
                traceback.print_exc()
            print("\n".join(textwrap.wrap(f"tokenize: error: {' '.join(str(exc).split())}", width=110)),
                  file=sys.stderr)
            return 2
        print(f"{manifest['items']} items, {len(manifest['files'])} SID file(s) in {args.out}; collision rate "
              f"{manifest['collision_rate_greedy']:.4f} greedy, {manifest['collision_rate']:.4f} before the dedup "
              f"level (dedup size {manifest['dedup_size']}); {manifest['seconds']['total_s']:.1f}s")
        return 0
    if not args.model or not args.dataset:
        parser.error("give --model and --dataset (a SID model's phase 1), or --embeddings (a large catalogue)")
    try:
        from recbole_sid.config import parse_cmd_args

        overrides = parse_cmd_args(rest)
        for file in args.config_files or []:
            if not os.path.isfile(file):
                raise ConfigError(f"Config file not found: {file} (given with --config-files).")
        result = tokenize(args.model, args.dataset, args.data_path, args.out, args.config_files, overrides,
                          args.overwrite)
    except RecBoleSIDError as exc:
        if os.environ.get("RECBOLE_SID_DEBUG"):
            traceback.print_exc()
        print("\n".join(textwrap.wrap(f"tokenize: error: {' '.join(str(exc).split())}", width=110)), file=sys.stderr)
        return 2
    for kind, path in result["sid_files"].items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
