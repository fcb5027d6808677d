"""``run_recbole`` console script (also ``python -m recbole_sid``): RecBole's ``run_recbole.py``, plugin-aware.

Accepts RecBole's flags (``--model/-m``, ``--dataset/-d``, ``--config_files``, ``--nproc``, ``--ip``, ``--port``,
``--world_size``, ``--group_offset``) and passes every ``--key=value`` to the config as RecBole does. Bad
model, dataset, config file or override: one paragraph on stderr and exit status 2.

Distributed training (``docs/scale.md``): ``--nproc=N`` starts N processes here (DDP: NCCL on CUDA GPUs, gloo on the
CPU); several nodes take RecBole's ``--world_size``/``--group_offset``/``--ip``/``--port``; under torchrun
(``torchrun --nproc_per_node=N -m recbole_sid ...``) each process reads its rank from torchrun's variables. The
results are printed by the process of global rank 0 only.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole",
        allow_abbrev=False,
        description="Train and evaluate a RecBole or recbole-sid model (DAS, COINS, RQKMeans, RQVAE, LETTER, "
                    "QARM, or any RecBole model such as BPR, LightGCN, DeepFM).",
        epilog="Any other config key is given as --key=value (e.g. --epochs=5 --learning_rate=0.001), exactly as "
               "with RecBole's run_recbole.py. ml-100k needs no download (the copy inside recbole is used).",
    )
    parser.add_argument("--model", "-m", type=str, default="BPR", help="name of the model (default: BPR)")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="name of the dataset (default: ml-100k)")
    parser.add_argument("--config_files", type=str, default=None, help="config files, separated by spaces")
    parser.add_argument("--nproc", type=int, default=1,
                        help="number of processes on this node; > 1: distributed (DDP) training, with NCCL on CUDA "
                             "GPUs (list them: --gpu_id='0,1') and gloo on the CPU")
    parser.add_argument("--ip", type=str, default="localhost", help="ip of the master node (rank 0's)")
    parser.add_argument("--port", type=str, default="5678", help="port of the master node")
    parser.add_argument("--world_size", type=int, default=-1,
                        help="total number of processes over all nodes (default: --nproc)")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank of this node's first process")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may call recbole_sid.register_model); repeatable. "
                             "The environment variable RECBOLE_SID_PLUGINS takes a comma-separated list too")
    parser.add_argument("--list-models", action="store_true", help="list every model name and exit")
    return parser


def _paragraph(message: str) -> str:
    return "\n".join(textwrap.wrap(f"run_recbole: error: {message}", width=110))


def _current_folder_importable() -> None:
    """Let ``--plugin my_models`` find ``./my_models.py``, as ``python -m recbole_sid`` does.

    ``python -m`` puts the current folder on ``sys.path``; a console script puts its own ``bin/`` folder there
    instead, so plugins beside the user were not found. The folder is appended: installed packages still win.
    """
    cwd = os.path.realpath(os.getcwd())
    if cwd not in {os.path.realpath(entry or os.curdir) for entry in sys.path}:
        sys.path.append(cwd)


def _format_results(result) -> str:
    def fmt(d):
        return "  ".join(f"{k}: {float(v):.4f}" for k, v in d.items()) if d else "(none)"

    lines = ["", "best valid result: " + fmt(result.get("best_valid_result")),
             "test result:       " + fmt(result.get("test_result"))]
    for key, value in result.items():
        if key.startswith("test_result_") and isinstance(value, dict):
            lines.append(f"{key + ':':<19}" + fmt(value))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)

    import yaml

    import recbole_sid
    from recbole_sid.config import parse_cmd_args
    from recbole_sid.distributed import DistributedRunError
    from recbole_sid.exceptions import RecBoleSIDError

    plugins = args.plugin + recbole_sid.plugins_from_env()
    if plugins:
        _current_folder_importable()
    try:
        recbole_sid.import_plugins(plugins)
    except RecBoleSIDError as exc:
        if os.environ.get("RECBOLE_SID_DEBUG"):
            traceback.print_exc()
        print(_paragraph(str(exc)), file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.list_models:
        for group, names in recbole_sid.available_models().items():
            print(f"{group}: {', '.join(names) or '(none)'}")
        return 0
    try:
        parse_cmd_args(rest)  # everything argparse did not take must be --key=value
        # Like RecBole, every --key=value on the command line (RecBole's own flags too) reaches the config.
        cmd_args = [a for a in argv if a.startswith("--") and "=" in a]
        config_files = args.config_files.strip().split(" ") if args.config_files else None
        for file in config_files or []:
            if not os.path.isfile(file):
                raise recbole_sid.ConfigError(f"Config file not found: {file} (given with --config_files).")
        from recbole_sid.quick_start import run

        result = run(args.model, args.dataset, config_file_list=config_files, nproc=args.nproc,
                     world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset,
                     cmd_args=cmd_args)
    except DistributedRunError as exc:
        if os.environ.get("RECBOLE_SID_DEBUG"):
            traceback.print_exc()
        print(_paragraph(str(exc)), file=sys.stderr)
        return EXIT_FAILED
    except RecBoleSIDError as exc:
        print(_paragraph(str(exc)), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, KeyError, ValueError, TypeError, yaml.YAMLError) as exc:
        if os.environ.get("RECBOLE_SID_DEBUG"):
            traceback.print_exc()
        print(_paragraph(f"{type(exc).__name__}: {exc}. Check the model, dataset and config keys "
                         f"(set RECBOLE_SID_DEBUG=1 for the traceback)."), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("run_recbole: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(_format_results(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
