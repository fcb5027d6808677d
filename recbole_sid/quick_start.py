"""The plugin's runner: RecBole's quick start for built-in and plugin models, without importing ``ray``.

Mirrors ``recbole.quick_start`` (``run``, ``run_recbole``, ``run_recboles``, ``load_data_and_model``) but resolves
models, trainers and yaml defaults through the plugin, checks that the dataset is on disk before RecBole could
try to download it, and never imports ``recbole.quick_start`` (which imports ray; see ``recbole_sid.compat``).
"""
from __future__ import annotations

import functools
import glob
import logging
import numbers
import os
import sys
import time
from collections.abc import MutableMapping
from logging import getLogger

import torch
import torch.distributed as dist
from recbole.data import create_dataset, data_preparation
from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_sid.compat import (
    check_cuda_processes,
    distributed_uses_cuda,
    recbole_pandas_warnings_silenced,
    single_process_config,
    unwrap_state_dict,
)
from recbole_sid.config import Config
from recbole_sid.data.text import ATOMIC_TYPES, read_atomic_header
from recbole_sid.data.negatives import apply_warm_negatives
from recbole_sid.distributed import ddp
from recbole_sid.distributed.launch import check_process_layout, spawn, torchrun_environment
from recbole_sid.evaluation import PerUserCapture, add_gauc, evaluate_warm_cold, select_valid_rows
from recbole_sid.exceptions import ConfigError, DataError, DatasetNotFoundError
from recbole_sid.model.item_id_dropout import apply_item_id_dropout
from recbole_sid.runs import name_run, run_folder
from recbole_sid.utils import get_model, get_trainer


def check_dataset_files(config) -> None:
    """Check the interaction files the run will read before RecBole loads them (RecBole never downloads here).

    :class:`DatasetNotFoundError` when they are not under ``data_path`` (RecBole would try to download unknown
    datasets); :class:`DataError` naming the file when one is empty, has a header column that is not
    ``name:type`` with a RecBole type, lacks the configured ``USER_ID_FIELD`` / ``ITEM_ID_FIELD`` (unless
    ``load_col`` / ``unload_col`` leave it out) or has no data row. RecBole itself would fail with ``ValueError:
    not enough values to unpack`` and no file name.
    """
    name, path = config["dataset"], config["data_path"]
    benchmark = config["benchmark_filename"]
    if benchmark:
        wanted = [os.path.join(path, f"{name}.{part}.inter") for part in benchmark]
    else:
        wanted = [os.path.join(path, f"{name}.inter")]
    missing = [f for f in wanted if not os.path.isfile(f)]
    if not missing:
        for file in wanted:
            check_inter_file(file, config)
        return
    root = os.path.dirname(os.path.normpath(path)) or "."
    present = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(root, "*", "*.inter")))
    raise DatasetNotFoundError(
        f"Dataset '{name}' not found: expected {', '.join(missing)} (data_path = '{os.path.dirname(path) or '.'}'). "
        f"recbole-sid never downloads data. Put RecBole atomic files in <data_path>/{name}/ (see "
        f"'python -m dataset_prep --help'), or pass --data_path=DIR. Datasets found under '{root}': "
        f"{', '.join(sorted(set(present))) or '(none)'}; ml-100k is always available (embedded in recbole)."
    )


def _loaded_id_fields(config) -> list[tuple[str, str]]:
    """``(config key, field)`` of the id fields RecBole will load from the ``.inter`` file."""
    load_col, unload_col = config["load_col"], config["unload_col"] or {}
    fields = []
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        field = config[key]
        if field is None:
            continue
        if isinstance(load_col, dict) and load_col.get("inter") != "*" and field not in (load_col.get("inter") or ()):
            continue
        if isinstance(unload_col, dict) and field in (unload_col.get("inter") or ()):
            continue
        fields.append((key, field))
    return fields


def check_inter_file(file, config) -> None:
    """One interaction file: a ``name:type`` header with the configured id fields, then at least one row."""
    sep = config["field_separator"] or "\t"
    example = sep.join(["user_id:token", "item_id:token", "rating:float", "timestamp:float"])
    expected = (f"expected a RecBole atomic header of 'name:type' columns separated by {sep!r} "
                f"(types: {', '.join(ATOMIC_TYPES)}), such as {example!r}, then one row per interaction")
    with open(file, encoding="utf-8", errors="replace") as f:
        if not f.readline().strip():
            raise DataError(f"{file}: the file is empty or its first line is blank; {expected}.")
    try:
        header = read_atomic_header(file, sep)
    except DataError as exc:
        raise DataError(f"{exc}; {expected}.") from exc
    names = [field for field, _ in header]
    for key, field in _loaded_id_fields(config):
        if field not in names:
            raise DataError(f"{file}: no '{field}' column, which {key} = {field} names (header fields: "
                            f"{', '.join(names)}). Rename the column or set {key} to the file's field.")
    with open(file, encoding="utf-8", errors="replace") as f:
        next(f, None)
        if not any(line.strip() for line in f):
            raise DataError(f"{file}: a header and no data row; {expected}.")


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None) -> Config:
    """The plugin ``Config`` (errors in files, keys or values come back as :class:`ConfigError`)."""
    return Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                  cmd_args=cmd_args)


def recbole_log_file() -> str | None:
    """The file RecBole's ``init_logger`` writes this run's log to (``./log/<model>/...``); None when it has none
    (``basicConfig`` adds no handler when the root logger already has one, e.g. under pytest)."""
    return next((h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)), None)


def _log_flops(model, dataset, config, logger) -> None:
    transform = construct_transform(config)
    try:
        flops = get_flops(model, dataset, config["device"], logger, transform)
    except Exception as exc:  # FLOPs are informative only; say that they were not computed and why
        logger.warning(f"FLOPs not computed for {config['model']}: {type(exc).__name__}: {exc}")
        return
    logger.info(set_color("FLOPs", "blue") + f": {flops}")


def _time_training_epochs(trainer, sink: list) -> None:
    """Record the wall time of every training epoch (evaluation excluded) of this trainer instance in ``sink``."""
    train_epoch = trainer._train_epoch

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = train_epoch(*args, **kwargs)
        sink.append(time.perf_counter() - start)
        return out

    trainer._train_epoch = timed


def _quiet_recbole_pandas(func):
    """Run ``func`` with RecBole's pandas FutureWarnings silenced (``recbole_sid.compat``), only while it runs."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with recbole_pandas_warnings_silenced():
            return func(*args, **kwargs)

    return wrapper


def plain_floats(result):
    """RecBole's metric dict with plain floats (numpy 2 would log ``np.float64(0.1234)`` for each value)."""
    if not isinstance(result, dict):
        return result
    return {key: float(value) if isinstance(value, numbers.Real) else value for key, value in result.items()}


@_quiet_recbole_pandas
def prepare_run(config):
    """What a run does before training, as RecBole's quick start: check the files, seed, logger (its file, argv,
    notices, config), dataset and dataloaders, the model on the training split.
    Returns ``(dataset, train_data, valid_data, test_data, model)``."""
    check_dataset_files(config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    log_file = recbole_log_file()
    if log_file:
        logger.info(f"RecBole log file: {log_file}")
    logger.info(sys.argv)
    config.log_notices(logger)
    logger.info(config)

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    apply_warm_negatives(config, train_data)
    valid_data = select_valid_rows(config, dataset, valid_data, train_data)

    # RecBole seeds each process with seed + local_rank; the global rank keeps the processes of several nodes apart
    init_seed(config["seed"] + ddp.global_rank(config), config["reproducibility"])
    model = config.model_class(config, train_data._dataset).to(config["device"])
    apply_item_id_dropout(config, model, train_data._dataset)
    logger.info(model)
    return dataset, train_data, valid_data, test_data, model


def run_recbole(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None,
                cmd_args=None, config=None):
    r"""Train and test ``model`` on ``dataset`` like RecBole's ``run_recbole``; returns RecBole's result dict.

    ``model`` may be a name (plugin, registered or RecBole model) or a model class. ``cmd_args`` are
    ``--key=value`` overrides (the CLI passes them; ``None`` reads ``sys.argv`` as RecBole does). A ready
    ``config`` may be passed instead of the arguments that build one.
    """
    if config is None:
        config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    dataset, train_data, valid_data, test_data, model = prepare_run(config)
    logger = getLogger()
    _log_flops(model, dataset, config, logger)
    distributed = ddp.is_distributed(config)
    ddp.prepare_model(model, config)  # distributed: phase 1 identical on every rank, rank 0 alone writes SIDs

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    name_run(trainer, config)  # a checkpoint file of this run's own (RecBole's name is only to the second)
    ddp.prepare_trainer(trainer, config)  # distributed: rank 0's run name everywhere, rank 0 alone checkpoints
    valid_curve, epoch_seconds = [], []
    _time_training_epochs(trainer, epoch_seconds)
    fit_start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"],
        callback_fn=lambda epoch, score: valid_curve.append((int(epoch), float(score))),
    )
    train_seconds = time.perf_counter() - fit_start
    sid_files = None
    if hasattr(model, "export_codes") and config["sid_export"] is not False:  # a CTR model with its own codes
        sid_files = model.export_codes(run_folder(config, trainer.run_name))
    load_best = saved
    if distributed and saved:
        ddp.load_best_model(trainer, config)  # rank 0 reads the checkpoint, every rank gets its state
        load_best = False
    with PerUserCapture(trainer) as capture:
        test_result = trainer.evaluate(test_data, load_best_model=load_best, show_progress=config["show_progress"])
        add_gauc(test_result, capture.take_gauc(test_data))
        per_user_all = capture.take(test_data)
        breakdown = evaluate_warm_cold(trainer, config, dataset, test_data, show_progress=config["show_progress"],
                                       train_data=train_data, capture=capture)
    if per_user_all is not None:
        breakdown["per_user"] = {"all": per_user_all, **breakdown.get("per_user", {})}

    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {plain_floats(best_valid_result)}")
    logger.info(set_color("test result", "yellow") + f": {plain_floats(test_result)}")
    for key, value in breakdown.items():
        if key.startswith("test_result_"):
            title = key.replace("_", " ", 1).replace("_", " (") + ")"
            logger.info(set_color(title, "yellow") + f": {plain_floats(value)}")

    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    result.update(breakdown)
    result["log_file"] = recbole_log_file()
    losses = getattr(trainer, "train_loss_dict", {}) or {}
    result["epochs_run"] = len(losses)
    result["epoch_cap"] = config["epochs"]
    result["train_seconds"] = train_seconds
    result["epoch_seconds"] = epoch_seconds
    result["curves"] = {"train_loss": {int(k): float(sum(v) if isinstance(v, tuple) else v) for k, v in losses.items()},
                        "valid_score": dict(valid_curve)}
    if sid_files:
        result["sid_files"] = sid_files
    extra = getattr(trainer, "extra_results", None)
    if extra:
        result.update(extra)
    if saved and getattr(trainer, "saved_model_file", None):
        result["model_file"] = trainer.saved_model_file
    if distributed:
        result["ddp"] = ddp.replica_report(model, config)
        dist.destroy_process_group()
    if ddp.is_main_process(config) and queue is not None:  # RecBole: local_rank 0, i.e. one per node
        queue.put(result)
    return result


def run_recboles(rank, *args):
    """Entry point of one process of a distributed run (``torch.multiprocessing.spawn``); ``rank`` is the local one."""
    kwargs = args[-1]
    if not isinstance(kwargs, MutableMapping):
        raise ValueError(f"The last argument of run_recboles should be a dict, but got {type(kwargs)}")
    kwargs["config_dict"] = kwargs.get("config_dict", {})
    kwargs["config_dict"]["local_rank"] = rank
    run_recbole(*args[:3], **kwargs)


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, nproc=1, world_size=-1,
        ip="localhost", port="5678", group_offset=0, cmd_args=None):
    """Single-process or distributed run, with the arguments of RecBole's ``run_recbole.py``.

    Distributed (``recbole_sid.distributed.launch``): ``nproc`` processes here (``world_size`` in all, this node's
    first rank ``group_offset``, rank 0's node at ``ip``:``port``), DDP with NCCL on CUDA GPUs and gloo on the CPU;
    or, when torchrun's variables (RANK, WORLD_SIZE, ...) are set, this process alone as the rank they name.
    Returns RecBole's result dict from the process of global rank 0; None on other nodes and torchrun ranks.
    """
    env = torchrun_environment()
    if env is not None:
        if nproc != 1 or world_size > 0:
            raise ConfigError(f"this process was started by torchrun (RANK={os.environ['RANK']}, WORLD_SIZE="
                              f"{os.environ['WORLD_SIZE']}): torchrun sets the processes, so --nproc and "
                              f"--world_size must not be given (use torchrun's --nproc_per_node / --nnodes)")
        config_dict = dict(config_dict or {})
        config_dict.update(env)
        result = run_recbole(model=model, dataset=dataset, config_file_list=config_file_list,
                             config_dict=config_dict, saved=saved, cmd_args=cmd_args)
        return result if env["local_rank"] + env["offset"] == 0 else None
    if nproc == 1 and world_size <= 0:
        return run_recbole(model=model, dataset=dataset, config_file_list=config_file_list,
                           config_dict=config_dict, saved=saved, cmd_args=cmd_args)
    if world_size == -1:
        world_size = nproc
    check_process_layout(nproc, world_size, group_offset)
    # Check the config and the data here, once, before any process starts (bad keys, missing files, too few GPUs).
    checked = build_config(model, dataset, config_file_list, dict(config_dict or {}), cmd_args)
    check_dataset_files(checked)
    if distributed_uses_cuda(checked.final_config_dict):
        check_cuda_processes(checked.final_config_dict, nproc)
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    if nproc == 1:  # this node's one process of a run over several nodes: this process (no spawn)
        config_dict["local_rank"] = 0
        result = run_recbole(model=model, dataset=dataset, config_file_list=config_file_list,
                             config_dict=config_dict, saved=saved, cmd_args=cmd_args)
        return result if group_offset == 0 else None
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved, "cmd_args": cmd_args}
    spawn(run_recboles, nproc, (model, dataset, config_file_list, kwargs))
    return None if queue.empty() else queue.get()


@_quiet_recbole_pandas
def load_data_and_model(model_file):
    r"""Load a checkpoint written by ``run_recbole`` (plugin or RecBole model) with its data and dataloaders.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)`` like RecBole's function.
    The checkpoint must be one written by RecBole's trainer through this plugin: it pickles the run's ``Config``,
    so it is loaded with ``weights_only=False`` — only open checkpoints you (or your own runs) wrote.
    """
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"Checkpoint not found: {model_file}")
    # weights_only=False: a RecBole/recbole-sid checkpoint pickles the Config object (see docstring).
    checkpoint = torch.load(model_file, map_location="cpu", weights_only=False)
    # A checkpoint of a distributed run pickles that process's DDP state (DistributedSampler loaders, cuda:<rank>);
    # it reloads as a single-process run on this machine (recbole_sid.compat.single_process_config).
    config = single_process_config(checkpoint["config"])
    if hasattr(config, "compatibility_settings"):  # what Config() does and unpickling does not (np.float, ...)
        config.compatibility_settings()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    check_dataset_files(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    apply_warm_negatives(config, train_data)  # the same loaders and model wrappers as the run that wrote it
    valid_data = select_valid_rows(config, dataset, valid_data, train_data)

    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(unwrap_state_dict(checkpoint["state_dict"]))
    model.load_other_parameter(checkpoint.get("other_parameter"))
    apply_item_id_dropout(config, model, train_data._dataset)
    return config, model, dataset, train_data, valid_data, test_data
