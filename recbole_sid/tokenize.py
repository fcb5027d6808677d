"""Phase 1 alone: run a SID model's tokenizer and write its SIDs and quality report, without training a head.

    python -m recbole_sid.tokenize --model DAS --dataset ml-100k [--data-path DIR] [--out OUT] [--overwrite]
                                   [--config-files a.yaml b.yaml] [--key=value ...]

The data, split and config are exactly those of ``run_recbole --model=<same> --dataset=<same>`` (RecBole's Config
with the plugin's yaml defaults; ``--key=value`` overrides as on that command line), so the SIDs are the ones that
run's phase 1 would make. Output: ``OUT/NAME.itemsid`` (+ ``OUT/NAME.usersid`` for DAS) and
``OUT/NAME-<Model>.sid_quality.json``, all written or none; an existing output is refused without ``--overwrite``.
Without ``--out`` the files go to a new folder of their own, ``<checkpoint_dir>/<Model>-<time>-<pid>-<random>/``,
so exports of different models or seeds never overwrite each other. The SIDs feed ``dataset_prep attach-sids``
(SIDs as a feature of any CTR model), COINS (``coins_sid_file``) and sequential models.
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
    parser.add_argument("--model", "-m", required=True, help="SID model: RQKMeans, RQVAE, LETTER, QARM or DAS")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name (ml-100k needs no download)")
    parser.add_argument("--data-path", default=None, help="folder holding NAME/ (RecBole's data_path)")
    parser.add_argument("--out", default=None, help="output folder (default: a new folder of this run's own under "
                                                    "checkpoint_dir)")
    parser.add_argument("--config-files", nargs="+", default=None, help="yaml config files")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files in --out")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = build_parser().parse_known_args(argv)
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
