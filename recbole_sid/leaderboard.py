"""Leaderboard: every plugin model against RecBole's baselines, same runner, same splits, several seeds.

    python -m recbole_sid.leaderboard --dataset ml-100k --task topk|ctr|seq|all --seeds 3 --out results/

Each (dataset, model, seed) cell runs in its own process (so its peak memory is its own) through
``recbole_sid.quick_start.run_recbole`` and leaves ``<out>/<dataset>/cells/<model>-seed<s>.json``. Finished cells
are not run again (delete the JSON to rerun one); a crashed cell is recorded with its error and the tables are
still written. Outputs: ``<out>/<dataset>/leaderboard.md`` and ``.csv`` (mean and std over seeds) and PNG plots in
``<out>/<dataset>/plots/`` (``recbole_sid.plots``). CTR cells may read a labeled copy of the dataset
(``--ctr-data-path``); ``<CTR model>+SID-<tokenizer>`` cells ("DeepFM + SID") reuse the tokenizer's top-k cell
of the same seed for its exported SIDs. Sequential cells (``--task seq``: SASRec, BERT4Rec, QBERT4Rec and its
variants) read RecBole's leave-one-out split of the unsplit ``NAME.inter``, or on split seeds the leave-one-out files
of ``dataset_prep seq-cold-split`` (``<split-root>/seq/split<k>/``, the top-k split's held-out items); see
docs/sequential.md.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from recbole_sid.atomic_io import atomic_write, plain_name
from recbole_sid.exceptions import DataError, RecBoleSIDError
from recbole_sid.runs import cell_lock
from recbole_sid.stats import paired_bootstrap_users, paired_cells, summarize, verdict

TOPK_BASELINES = ["Pop", "ItemKNN", "BPR", "NeuMF", "LightGCN", "SGL"]
TOPK_PLUGIN = ["RQKMeans", "RQVAE", "LETTER", "QARM", "DAS"]
CTR_BASELINES = ["LR", "FM", "DeepFM", "DCN", "WideDeep"]
#: "DeepFM + SID" labels (``<CTR model>+SID-<tokenizer>``, see ``sid_feature_source``) are CTR plugin rows
CTR_PLUGIN = ["COINS", "DeepFM+SID-COINS", "DeepFM+SID-RQKMeans", "DeepFM+SID-DAS"]
#: sequential task (issue 15): RecBole's SASRec and BERT4Rec, QBERT4Rec, its ablations (``QBERT4REC_ABLATIONS``) and
#: QBERT4Rec on other tokenizers' SIDs (``QBERT4Rec+SID-<tokenizer>``: the tokenizer's top-k cell of the same split
#: and seed, its exported ``.itemsid`` as ``qbert_sid_file``)
SEQ_BASELINES = ["SASRec", "BERT4Rec"]
SEQ_PLUGIN = ["QBERT4Rec", "QBERT4Rec-no-injection", "QBERT4Rec-span-only", "QBERT4Rec-no-pretrain",
              "QBERT4Rec+SID-RQKMeans", "QBERT4Rec+SID-DAS"]
#: model classes of the sequential task (ad-hoc labels of other RecBole sequential models are found by their type)
SEQ_MODELS = ["SASRec", "BERT4Rec", "QBERT4Rec"]
#: what RecBole's sequential models need to run at all: CE over every item takes no sampled negatives (RecBole
#: refuses CE with negatives); BERT4Rec keeps its own ``transform: mask_itemseq`` (RecBole's BERT4Rec.yaml);
#: QBERT4Rec.yaml sets both itself
SEQ_MODEL_CONFIG = {"SASRec": {"train_neg_sample_args": None}, "BERT4Rec": {"train_neg_sample_args": None}}
#: RecBole's sequential protocol (its quick_start_config/sequential.yaml): leave-one-out, time order, full sort
SEQ_EVAL_ARGS = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}
#: the reference of the sequential paired tests (the model QBERT4Rec builds on)
SEQ_REFERENCE = "BERT4Rec"
TOPK_METRICS = ["recall@10", "ndcg@10"]
CTR_METRICS = ["auc", "gauc", "logloss"]
#: test-row buckets of each task: all, warm (items with training rows), long tail (CTR: 1 to
#: ``long_tail_max_clicks`` training clicks, a subset of warm), cold (held-out items; sequential: rows whose target
#: is a held-out item)
PARTS = {"topk": ("", "_warm", "_cold"), "ctr": ("", "_warm", "_longtail", "_cold"), "seq": ("", "_warm", "_cold")}
SEED_BASE = 2020


def default_models(task: str) -> list[str]:
    if task == "topk":
        return TOPK_BASELINES + TOPK_PLUGIN
    if task == "ctr":
        return CTR_BASELINES + CTR_PLUGIN
    if task == "seq":
        return SEQ_BASELINES + SEQ_PLUGIN
    return TOPK_BASELINES + TOPK_PLUGIN + CTR_BASELINES + CTR_PLUGIN + SEQ_BASELINES + SEQ_PLUGIN


#: named variants (ablations, feature sets): ``label -> (model, config overrides)``
VARIANTS = {
    "DAS-no-u2i": ("DAS", {"das_align_u2i": False}),
    "DAS-no-dual": ("DAS", {"das_align_dual": False}),
    "DAS-no-cooc": ("DAS", {"das_align_cooc": False}),
    "DAS-no-debias": ("DAS", {"das_use_debias": False}),
    "DAS-two-stage": ("DAS", {"das_one_stage": False}),
}
DAS_ABLATIONS = list(VARIANTS)
#: COINS's ablations (issue 14): the learnt gate, the transfer loss, the OPQ branch, the collaborative half of the
#: codes, each switched off alone
COINS_ABLATIONS = {
    "COINS-no-gate": ("COINS", {"coins_gate": "fixed"}),
    "COINS-no-transfer": ("COINS", {"transfer_weight": 0.0}),
    "COINS-no-opq": ("COINS", {"coins_opq_subspaces": 0}),
    "COINS-content-codes": ("COINS", {"coins_code_source": "content"}),
}
VARIANTS.update(COINS_ABLATIONS)
#: COINS with DeepFM's FM part (``coins_fm``, off by default): whether it helps decides the default
VARIANTS["COINS-fm"] = ("COINS", {"coins_fm": True})
#: COINS with DeepFM's first-order part except the item bias (``coins_first_order``): the baselines' linear path from
#: the numerical feature hist_sim and the field biases to the logit, which COINS's tower lacks
VARIANTS["COINS-first-order"] = ("COINS", {"coins_first_order": True})
#: QBERT4Rec's ablations (issue 15; keys of properties/model/QBERT4Rec.yaml): SIDs of the raw text embedding (no
#: cross-modal injection), span masks only in pretraining, no pretraining (tail-mask fine-tuning from the start)
QBERT4REC_ABLATIONS = {
    "QBERT4Rec-no-injection": ("QBERT4Rec", {"qbert_injection": False}),
    "QBERT4Rec-span-only": ("QBERT4Rec", {"qbert_mask_types": ["span"]}),
    "QBERT4Rec-no-pretrain": ("QBERT4Rec", {"qbert_pretrain_epochs": 0}),
}
VARIANTS.update(QBERT4REC_ABLATIONS)
#: diagnostic, not a default row: stage 1 without the structural (BPR-MF) view, which only warm items have; tests
#: whether that view is what pulls cold items' fused vectors and SIDs away from the warm ones
VARIANTS["QBERT4Rec-no-structural"] = ("QBERT4Rec", {"qbert_structural_view": False})
#: the CTR protocol of split seeds (issue 14): every CTR model reads the same columns, the user history and its
#: semantic score (``dataset_prep history``) beside each dataset's profile columns (RecBole's context-aware ml-100k
#: columns; Amazon's brand and categories); labels are the sampled ones of ``dataset_prep negatives``, never a
#: rating threshold
CTR_INTER_COLUMNS = ["user_id", "item_id", "timestamp", "label", "hist_items", "hist_sim"]
CTR_PROFILE_COLUMNS = {
    "ml-100k": {"user": ["user_id", "age", "gender", "occupation"], "item": ["item_id", "release_year", "class"]},
    "amazon-scientific": {"item": ["item_id", "brand", "categories"]},
}
#: "DeepFM + SID": ``<CTR model>+SID-<tokenizer>`` runs the CTR model on a copy of the dataset whose ``.item`` file
#: carries the SIDs exported by the tokenizer's top-k cell of the same dataset and seed (dataset_prep attach-sids)
SID_FEATURE_MARK = "+SID-"
SID_FIELD = "sid"


def sid_feature_source(label: str) -> tuple[str, str] | None:
    """``"DeepFM+SID-DAS"`` -> ``("DeepFM", "DAS")``; None for labels that are not SID-feature variants."""
    name = label_name(label)
    if SID_FEATURE_MARK not in name:
        return None
    model, tokenizer = name.split(SID_FEATURE_MARK, 1)
    return model, tokenizer


def resolve_model(label: str) -> tuple[str, dict]:
    """``label`` -> (model class name, config overrides). Labels: a model name, a VARIANTS key, or
    ``Label=Model:key=value,key=value`` for an ad-hoc variant."""
    if label in VARIANTS:
        model, overrides = VARIANTS[label]
        return model, dict(overrides)
    source = sid_feature_source(label)
    if source is not None:
        return source[0], {}
    if "=" in label.split(":")[0]:
        _, rest = label.split("=", 1)
        model, _, settings = rest.partition(":")
        overrides = {}
        for item in filter(None, settings.split(",")):
            key, _, value = item.partition("=")
            from recbole_sid.config import parse_value

            overrides[key] = parse_value(value)
        return model, overrides
    return label, {}


def label_name(label: str) -> str:
    return label.split("=", 1)[0] if "=" in label.split(":")[0] else label


def model_task(model: str) -> str:
    """``ctr``, ``seq`` or ``topk``: the task of a label's model class."""
    model = resolve_model(model)[0]
    if model in CTR_BASELINES + CTR_PLUGIN:
        return "ctr"
    if model in SEQ_MODELS:
        return "seq"
    if model in TOPK_BASELINES + TOPK_PLUGIN:
        return "topk"
    return "seq" if _is_sequential_class(model) else "topk"


@functools.lru_cache(maxsize=None)
def _is_sequential_class(model: str) -> bool:
    """Whether ``model`` names a sequential model class (plugin, registered or RecBole's); False when unknown."""
    try:
        from recbole.utils import ModelType

        from recbole_sid.utils import get_model

        return getattr(get_model(model), "type", None) == ModelType.SEQUENTIAL
    except Exception:  # an unknown name: its cell fails with the lookup's own error
        return False


def ctr_data_path(dataset: str, data_path: str, ctr_path: str | None) -> str:
    """Where CTR cells read ``dataset``: ``ctr_path`` when it holds the dataset (e.g. a labeled copy written by
    ``dataset_prep negatives``), else ``data_path`` (the choice is printed and recorded in each cell's config)."""
    if ctr_path and (Path(ctr_path) / dataset).is_dir():
        return ctr_path
    return data_path


def ctr_split_config(dataset: str, data_path: str) -> dict:
    """The config of a CTR cell on a split seed: the protocol's columns (``CTR_INTER_COLUMNS`` that the data has +
    the dataset's ``CTR_PROFILE_COLUMNS``), ``hist_sim`` as a numerical feature, no rating threshold."""
    header = (Path(data_path) / dataset / f"{dataset}.train.inter").read_text(encoding="utf-8").split("\n", 1)[0]
    present = {field.split(":")[0] for field in header.split("\t")}
    profile = CTR_PROFILE_COLUMNS.get(dataset)
    if profile is None:
        print(f"CTR cells of {dataset}: no profile columns are listed for it (CTR_PROFILE_COLUMNS); they read the "
              f"interaction columns only", file=sys.stderr)
    inter = [c for c in CTR_INTER_COLUMNS if c in present]
    load_col = {"inter": inter, **{k: list(v) for k, v in (profile or {}).items()}}
    return {"load_col": load_col, "numerical_features": ["hist_sim"] if "hist_sim" in inter else [],
            "threshold": None}


def dataset_config(dataset: str, data_path: str) -> dict:
    """Config keys that make every model see the same split of ``dataset``."""
    cfg = {"data_path": data_path}
    folder = Path(data_path) / dataset
    if (folder / f"{dataset}.train.inter").is_file():
        cfg["benchmark_filename"] = ["train", "valid", "test"]
    return cfg


def versions() -> dict:
    import numpy
    import pandas
    import recbole
    import scipy
    import torch

    import recbole_sid

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "pandas": pandas.__version__, "scipy": scipy.__version__, "recbole": recbole.__version__,
            "recbole_sid": recbole_sid.__version__, "recbole_sid_commit": source_commit(),
            "machine": f"{platform.machine()} {os.cpu_count()} CPU"}


def source_commit() -> str | None:
    """The git commit of the plugin's source when it runs from a checkout (``+dirty`` with uncommitted changes to
    tracked files), so that a cell says which code produced it; None for an installed wheel or without git."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


# --- one cell (child process) ------------------------------------------------------------------------------
def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    return value


def run_cell(spec: dict) -> dict:
    """Run one cell in this process and return its record (metrics, timings, memory, config, versions)."""
    import resource

    from recbole_sid.quick_start import run_recbole

    config_dict = dict(spec["config"])
    config_dict.update({"seed": spec["seed"], "checkpoint_dir": spec["run_dir"], "show_progress": False})
    if spec.get("sid_fields"):  # the SID columns must be loaded: add them to the effective load_col
        from recbole_sid.quick_start import build_config

        config = build_config(spec["model"], spec["dataset"], spec.get("config_files") or None, config_dict, [])
        load_col = config["load_col"]
        if load_col is not None:
            load_col = {k: list(v) for k, v in load_col.items()}
            load_col.setdefault("item", [config["ITEM_ID_FIELD"]])
            load_col["item"] = [c for c in load_col["item"] if c not in spec["sid_fields"]] + spec["sid_fields"]
            config_dict["load_col"] = load_col
    task = model_task(spec["model"])
    start = time.perf_counter()
    result = run_recbole(model=spec["model"], dataset=spec["dataset"], config_dict=config_dict, cmd_args=[],
                         config_file_list=spec.get("config_files") or None)
    if task == "seq" and "sid_quality" not in result:  # QBERT4Rec exports its SIDs and their report as files
        quality = Path((result.get("sid_files") or {}).get("quality") or "")
        if quality.is_file():
            result["sid_quality"] = json.loads(quality.read_text(encoding="utf-8"))
    record = {
        "model": spec.get("label", spec["model"]), "model_class": spec["model"], "task": task,
        "dataset": spec["dataset"], "seed": spec["seed"], "status": "ok",
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "config": config_dict, "versions": versions(),
    }
    if spec.get("sid_source"):
        record["sid_source"] = spec["sid_source"]
    for key in ("split_seed", "tuned"):
        if key in spec:
            record[key] = spec[key]
    per_user = result.pop("per_user", None)
    if per_user and spec.get("cell_out"):
        write_per_user(users_path(Path(spec["cell_out"])), per_user)
        record["per_user_file"] = users_path(Path(spec["cell_out"])).name
    record.update(_jsonable({k: v for k, v in result.items() if k not in ("sid_quality",)}))
    if "sid_quality" in result:
        record["sid_quality"] = _jsonable(result["sid_quality"])
    epochs = record.get("epoch_seconds") or []
    record["seconds_per_epoch"] = sum(epochs) / len(epochs) if epochs else None
    cap = result.get("epoch_cap")
    # stopped by the epoch cap rather than by early stopping: the budget, not the model, ended its training
    record["hit_cap"] = bool(cap and record.get("epochs_run", 0) >= cap and record.get("epochs_run", 0) > 1)
    return record


# --- the grid (parent) -------------------------------------------------------------------------------------
def check_names(datasets, models) -> None:
    """Datasets and model labels become folder and file names under ``--out`` (cells, run folders): DataError
    naming the first one that is not a plain name (``recbole_sid.atomic_io.plain_name``)."""
    for dataset in datasets:
        plain_name(dataset, "--dataset")
    for label in models:
        plain_name(label_name(label), "model label")
        source = sid_feature_source(label)
        if source is not None:
            plain_name(source[1], f"model label {label_name(label)!r}: tokenizer")


def cell_name(model: str, seed: int, split: int | None = None) -> str:
    """``<model>-seed<s>`` on the dataset's own split, ``<model>-split<k>-seed<s>`` on split seed ``k``."""
    model = plain_name(model, "model label")
    return f"{model}-seed{seed}" if split is None else f"{model}-split{split}-seed{seed}"


_UNSET = "<not set>"


def _check_cell_settings(path: Path, record: dict, extra: dict) -> None:
    """Refuse a finished cell whose recorded config differs from ``extra`` (the grid's ``--set``) on any of its keys."""
    config = record.get("config") or {}
    wanted = json.loads(json.dumps(extra or {}))  # as the cell recorded it (tuples -> lists)
    differ = {key: (config.get(key, _UNSET), value) for key, value in wanted.items()
              if config.get(key, _UNSET) != value}
    if differ:
        said = ", ".join(f"{key}={old!r} there, {new!r} here" for key, (old, new) in sorted(differ.items()))
        raise DataError(f"{path}: this finished cell was run with other --set values ({said}); a table mixes no "
                        f"two budgets: use another --out for these settings, or delete the cell to rerun it")


def cell_path(out: Path, dataset: str, model: str, seed: int, split: int | None = None) -> Path:
    return out / plain_name(dataset, "--dataset") / "cells" / f"{cell_name(model, seed, split)}.json"


def users_path(cell: Path) -> Path:
    """The per-user test values of a cell (``<cell>.users.npz``, beside its JSON)."""
    return cell.with_name(cell.name[:-len(".json")] + ".users.npz")


def write_per_user(path: Path, per_user: dict) -> None:
    """``{part: {"users": [...], metric: [...]}}`` -> one compressed npz (``<part>/<name>`` arrays), atomically."""
    import numpy as np

    arrays = {}
    for part, values in per_user.items():
        for name, column in values.items():
            arrays[f"{part}/{name}"] = np.asarray(column, dtype=np.int32 if name == "users" else np.float32)
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_per_user(path: Path, part: str, metric: str) -> dict | None:
    """``{user: value}`` of one part (all / warm / cold) and metric of a cell's npz; None when absent."""
    import numpy as np

    if not path.is_file():
        return None
    with np.load(path) as data:
        if f"{part}/users" not in data or f"{part}/{metric}" not in data:
            return None
        return dict(zip(data[f"{part}/users"].tolist(), data[f"{part}/{metric}"].tolist()))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TRAIN_LINE = re.compile(r"epoch (\d+) training \[time: [^,\]]*, (.*)\]\s*$")
_VALID_LINE = re.compile(r"epoch (\d+) evaluating \[time: [^,\]]*, valid_score: ([^\]\s]+)\]")
_LOG_FILE_LINE = re.compile(r"RecBole log file: (.+?)\s*$")


class CellProgress:
    """Condenses a running cell's stderr (RecBole's log lines) into short progress lines: where RecBole's log
    file is, and per epoch ``epoch N train loss L, valid score S`` (the loss is held until the epoch's valid score
    arrives, or printed alone when the next epoch starts without one)."""

    def __init__(self, name: str):
        self.name, self.log_file, self._pending = name, None, None

    def feed(self, line: str) -> list[str]:
        line = _ANSI.sub("", line)
        match = _LOG_FILE_LINE.search(line)
        if match:
            self.log_file = match.group(1)
            return [f"  {self.name}: RecBole log {self.log_file}"]
        match = _TRAIN_LINE.search(line)
        if match:
            out = self.flush()
            self._pending = (match.group(1), re.sub(r"train[ _]loss\d*: ", "", match.group(2)))
            return out
        match = _VALID_LINE.search(line)
        if match:
            epoch, score = match.groups()
            pending, self._pending = self._pending, None
            loss = f" train loss {pending[1]}," if pending and pending[0] == epoch else ""
            return [f"  {self.name}: epoch {epoch}{loss} valid score {score}"]
        return []

    def flush(self) -> list[str]:
        pending, self._pending = self._pending, None
        return [f"  {self.name}: epoch {pending[0]} train loss {pending[1]}"] if pending else []


def stream_cell(cmd, run_dir: Path, name: str, timeout: int | None) -> tuple[str | None, str | None]:
    """Run a cell's child process; its stderr goes to ``run_dir/stderr.log`` as it comes (stdout to
    ``stdout.log``), condensed progress (:class:`CellProgress`) to this process's stderr. Returns ``(error,
    RecBole log file)``: error is None on success, the last stderr line on failure, or the timeout."""
    log_path = run_dir / "stderr.log"
    print(f"  {name}: stderr in {log_path}; RecBole's own log goes to {Path('log').resolve()}/<model>/ (named when "
          f"the run opens it)", file=sys.stderr, flush=True)
    progress, last, timed_out = CellProgress(name), None, threading.Event()
    with open(log_path, "w", encoding="utf-8") as log, open(run_dir / "stdout.log", "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                errors="replace", env=dict(os.environ, PYTHONUNBUFFERED="1"))

        def kill():
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        try:
            if timer is not None:
                timer.daemon = True
                timer.start()
            for line in proc.stderr:
                log.write(line)
                log.flush()
                last = line.strip() or last
                for message in progress.feed(line):
                    print(message, file=sys.stderr, flush=True)
            proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:  # interrupted (Ctrl-C): the cell does not outlive the grid
                proc.kill()
                proc.wait()
    for message in progress.flush():
        print(message, file=sys.stderr, flush=True)
    if proc.returncode == 0:
        return None, progress.log_file
    if timed_out.is_set():
        return f"timed out after {timeout} s", progress.log_file
    return last or "(no output)", progress.log_file


def _progress(done, total, started, running):
    elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - started))
    print(f"[{done}/{total}] {elapsed} {running}", file=sys.stderr, flush=True)


class Grid:
    """The cells of one leaderboard run: runs each (dataset, label, split seed, seed) once, in its own process.

    ``split_root``: where the cold splits of each split seed live (``<split_root>/split<k>/<dataset>/``, made by
    ``dataset_prep cold-split`` from ``<data_path>/<dataset>`` the first time they are needed). ``tuning``: the
    folder of the hyper-parameter search (:meth:`tuned_config`), None to run every model with its defaults.
    ``sid_cells``: the ``--out`` folder whose tokenizer cells the ``<model>+SID-<tokenizer>`` labels take their SIDs
    from (run there, with that folder's search, when missing); None: this grid's own ``out``.
    """

    def __init__(self, out: Path, data_path: str, extra: dict, config_files=None, timeout: int | None = None,
                 ctr_path: str | None = None, ctr_extra: dict | None = None, split_root: str | None = None,
                 cold_ratio: float = 0.1, tuning: Path | None = None, sid_cells: Path | None = None):
        self.out, self.data_path, self.extra, self.config_files = out, data_path, extra, config_files
        self.timeout, self.ctr_path, self.ctr_extra = timeout, ctr_path, ctr_extra or {}
        self.split_root, self.cold_ratio, self.tuning = split_root, cold_ratio, tuning
        self.sid_cells = sid_cells

    def sid_grid(self) -> "Grid":
        """The grid of the tokenizer cells that SID-feature labels read (``sid_cells``, else this one)."""
        if self.sid_cells is None or Path(self.sid_cells).resolve() == Path(self.out).resolve():
            return self
        out = Path(self.sid_cells)
        grid = Grid(out, self.data_path, self.extra, self.config_files, self.timeout, self.ctr_path, self.ctr_extra,
                    self.split_root, self.cold_ratio, tuning=out / "tuning")
        grid.check_settings = False  # a tokenizer's cells are read as they were run (their --set is their own)
        return grid

    #: whether a finished cell is reused only when it was run with this grid's ``--set`` values (see :meth:`cached`)
    check_settings = True

    def cached(self, dataset: str, label: str, seed: int, split: int | None = None) -> dict | None:
        """The finished cell, or None. A cell run with other ``--set`` values than this grid's is refused (DataError
        naming the cell and the keys): reusing it would mix two budgets or protocols in one table."""
        path = cell_path(self.out, dataset, label_name(label), seed, split)
        if path.is_file():
            record = json.loads(path.read_text())
            if record.get("status") == "ok":
                if self.check_settings:
                    _check_cell_settings(path, record, self.extra)
                return record
        return None

    def split_data_path(self, dataset: str, split: int | None) -> str:
        """The data path of ``dataset`` on split seed ``split`` (the dataset's own files when None); the split
        is written on first use."""
        if split is None:
            return self.data_path
        if not self.split_root:
            raise DataError("split seeds need a --split-root folder for the splits")
        root = Path(self.split_root) / f"split{split}"
        if not (root / dataset / f"{dataset}.cold_items").is_file():
            from dataset_prep.cold_split import cold_split

            print(f"  writing the cold split of {dataset} with seed {split} (cold ratio {self.cold_ratio}) to "
                  f"{root / dataset}", file=sys.stderr, flush=True)
            try:
                cold_split(dataset, self.data_path, self.cold_ratio, seed=split, out=root,
                           log=lambda *a, **k: None)
            except FileExistsError:
                if not (root / dataset / f"{dataset}.cold_items").is_file():
                    raise
        return str(root)

    def ctr_split_data_path(self, dataset: str, split: int) -> str:
        """The CTR data of ``dataset`` on split seed ``split``: ``<root>/split<k>/<dataset>`` (root: ``--ctr-data-path``,
        else ``<split_root>/ctr``), written on first use from the top-k split by ``dataset_prep negatives`` (one
        sampled negative per row, seed = the split seed, training negatives from items with training rows) and
        ``dataset_prep history`` (``hist_items``, ``hist_sim``)."""
        base = Path(self.ctr_path) if self.ctr_path else Path(self.split_root or "dataset/splits") / "ctr"
        root = base / f"split{split}"
        if (root / dataset / f"{dataset}.train.inter").is_file():
            return str(root)
        import shutil

        from dataset_prep.history import add_history
        from dataset_prep.negatives import add_negatives

        source = self.split_data_path(dataset, split)
        embedding = (Path(source) / dataset / f"{dataset}.itememb").is_file()
        print(f"  writing the CTR data of {dataset} on split {split} (negatives, history) to {root / dataset}"
              + ("" if embedding else f"; no {dataset}.itememb, so no hist_sim column (dataset_prep embed writes "
                                      f"one)"), file=sys.stderr, flush=True)
        scratch = root / f".negatives-{os.getpid()}"
        try:
            add_negatives(dataset, source, scratch, seed=split, log=lambda *a, **k: None)
            add_history(dataset, scratch, root, embedding=embedding, log=lambda *a, **k: None)
        except FileExistsError:  # another worker wrote it first
            if not (root / dataset / f"{dataset}.train.inter").is_file():
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return str(root)

    def seq_max_history(self) -> int:
        """History length of the sequential splits: ``MAX_ITEM_LIST_LENGTH`` of ``--set`` (RecBole's 50 by default,
        also SASRec's, BERT4Rec's and QBERT4Rec's), which every sequential cell then runs with."""
        from dataset_prep.seq_split import DEFAULT_MAX_HISTORY

        value = self.extra.get("MAX_ITEM_LIST_LENGTH")
        return DEFAULT_MAX_HISTORY if value is None else int(value)

    def seq_split_data_path(self, dataset: str, split: int) -> str:
        """The sequential data of ``dataset`` on split seed ``split``: ``<split_root>/seq/split<k>/<dataset>``, written
        on first use by ``dataset_prep seq-cold-split`` from ``<data_path>/<dataset>/<dataset>.inter`` (seed = the
        split seed, ``--cold-ratio``: the same held-out items as the top-k split of that seed; histories of
        :meth:`seq_max_history` items). A folder written with other parameters is refused (DataError naming it)."""
        from dataset_prep.seq_split import PARAMS_SUFFIX, read_params, seq_cold_split

        if not self.split_root:
            raise DataError("split seeds need a --split-root folder for the splits")
        root = Path(self.split_root) / "seq" / f"split{split}"
        folder = root / dataset
        max_history = self.seq_max_history()
        params = read_params(dataset, folder)
        if params is None:
            print(f"  writing the sequential split of {dataset} with seed {split} (cold ratio {self.cold_ratio}, "
                  f"histories of {max_history} items) to {folder}", file=sys.stderr, flush=True)
            try:
                seq_cold_split(dataset, self.data_path, self.cold_ratio, seed=split, out=root,
                               max_history=max_history, log=lambda *a, **k: None)
            except DataError:  # another worker wrote it first (its outputs exist now), or a real error
                if read_params(dataset, folder) is None:
                    raise
            params = read_params(dataset, folder)
        wanted = {"seed": split, "cold_ratio": float(self.cold_ratio), "max_history": max_history}
        found = {key: params.get(key) for key in wanted}
        if found != wanted:
            raise DataError(f"{folder / f'{dataset}.{PARAMS_SUFFIX}'}: the sequential split there was written with "
                            f"{found}, this run asks for {wanted} (--cold-ratio, --set MAX_ITEM_LIST_LENGTH); use "
                            f"another --split-root or delete {folder}")
        return str(root)

    def seq_config(self, dataset: str, split: int | None) -> dict:
        """The data keys of a sequential cell. Without a split seed: RecBole's own leave-one-out on the unsplit
        ``<data_path>/<dataset>/<dataset>.inter`` (no benchmark files, even when the folder has top-k ones); on split
        seed k: the files of :meth:`seq_split_data_path` (``dataset_prep.seq_split.benchmark_config``)."""
        if split is None:
            config = {"data_path": self.data_path, "benchmark_filename": None, "eval_args": dict(SEQ_EVAL_ARGS)}
            folder = Path(self.data_path) / dataset
            inter = folder / f"{dataset}.inter"
            if inter.is_file():  # else RecBole's own lookup (ml-100k: the embedded copy) and its error
                from recbole_sid.atomic_io import read_header

                fields = [column.split(":")[0] for column in read_header(inter)]
                if "timestamp" not in fields:
                    raise DataError(f"{inter}: no 'timestamp' column, by which RecBole's leave-one-out orders each "
                                    f"user's interactions (with --split-seeds, seq-cold-split takes the file order)")
                config["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
                if (folder / f"{dataset}.item").is_file():  # every item of the catalogue is a candidate
                    config["load_col"]["item"] = ["item_id"]
            return config
        from dataset_prep.seq_split import benchmark_config

        path = self.seq_split_data_path(dataset, split)
        return {"data_path": path, **benchmark_config(dataset, Path(path) / dataset)}

    def tuned_config(self, dataset: str, label: str) -> dict | None:
        """The configuration the search chose for ``label``'s model class on ``dataset`` (None: not searched)."""
        if self.tuning is None:
            return None
        path = tuning_path(self.tuning, dataset, resolve_model(label)[0])
        if not path.is_file():
            return None
        return json.loads(path.read_text()).get("chosen")

    def base_config(self, dataset: str, label: str, split: int | None = None) -> dict:
        if model_task(label) == "ctr" and split is not None:
            path = self.ctr_split_data_path(dataset, split)
            config = dataset_config(dataset, path)
            config.update(ctr_split_config(dataset, path))
            config.update(self.extra)
            config.update(self.ctr_extra)
        elif model_task(label) == "ctr":
            config = dataset_config(dataset, ctr_data_path(dataset, self.data_path, self.ctr_path))
            config.update(self.extra)
            config.update(self.ctr_extra)
        elif model_task(label) == "seq":
            # the protocol's data keys and what the model needs to run win over --set (which every task shares)
            data = self.seq_config(dataset, split)
            config = dict(data)
            config.update(self.extra)
            config.update(data)
            config.update(SEQ_MODEL_CONFIG.get(resolve_model(label)[0], {}))
        else:
            config = dataset_config(dataset, self.split_data_path(dataset, split))
            config.update(self.extra)
        config.update(self.tuned_config(dataset, label) or {})
        config.update(resolve_model(label)[1])
        return config

    def run(self, dataset: str, label: str, seed: int, split: int | None = None,
            overrides: dict | None = None) -> dict:
        """The cell's record: from its JSON when it already finished, else run (dependencies first).
        ``overrides``: config on top of everything else (a tuning trial)."""
        record = self.cached(dataset, label, seed, split)
        if record is not None:
            return record
        model = label_name(label)
        run_dir = self.out / dataset / "runs" / cell_name(model, seed, split)
        run_dir.mkdir(parents=True, exist_ok=True)
        # two grid processes over one --out: the second waits for the first's cell instead of running it again
        with cell_lock(run_dir / "cell.lock", log=lambda message: print(f"  {message}", file=sys.stderr, flush=True)):
            record = self.cached(dataset, label, seed, split)
            return record if record is not None else self._run_locked(dataset, label, model, seed, split, run_dir,
                                                                      overrides)

    def _run_locked(self, dataset: str, label: str, model: str, seed: int, split: int | None, run_dir: Path,
                    overrides: dict | None) -> dict:
        """Run the cell (its lock held): write its record, or an error record, to the cell file and return it."""
        path = cell_path(self.out, dataset, model, seed, split)
        log_file = None
        try:
            config = self.base_config(dataset, label, split)
            config.update(overrides or {})
            spec = {"model": resolve_model(label)[0], "label": model, "dataset": dataset, "seed": seed,
                    "config": config, "run_dir": str(run_dir), "config_files": self.config_files,
                    "cell_out": str(path)}
            if split is not None:
                spec["split_seed"] = split
            spec["tuned"] = overrides or self.tuned_config(dataset, label)
            source = sid_feature_source(label)
            if source is not None:
                self._attach_sids(spec, source[1], run_dir)
            error, log_file = self._run_child(spec, run_dir)
        except (RecBoleSIDError, OSError) as exc:
            error = " ".join(str(exc).split())
            with open(run_dir / "stderr.log", "a", encoding="utf-8") as f:
                f.write(error + "\n")
        if error is not None:
            with atomic_write(path) as f:
                json.dump({"model": model, "dataset": dataset, "seed": seed, "split_seed": split, "status": "error",
                           "error": error, "log": str(run_dir / "stderr.log"), "log_file": log_file}, f, indent=1)
            print(f"  cell failed: {model} seed {seed} on {dataset}: {error}", file=sys.stderr)
        return json.loads(path.read_text())

    def tune(self, dataset: str, model: str, trials: int, split: int | None, seed: int) -> dict | None:
        """Search ``model``'s space (``properties/hyper/<model>.hyper``) with ``trials`` configurations on one split
        and seed; writes and returns ``<tuning>/<dataset>/<model>.json`` (None: the model has no space)."""
        from recbole_sid.tuning import best_trial, model_search_space, trial_configs

        space = model_search_space(model)
        if space is None or self.tuning is None:
            return None
        path = tuning_path(self.tuning, dataset, model)
        if path.is_file():
            return json.loads(path.read_text())
        configs = trial_configs(space, trials, seed=SEED_BASE)
        trial_grid = Grid(self.tuning, self.data_path, self.extra, self.config_files, self.timeout, self.ctr_path,
                          self.ctr_extra, self.split_root, self.cold_ratio, tuning=None)
        records = []
        for k, overrides in enumerate(configs):
            _progress(k, len(configs), time.time(), f"tuning {model} on {dataset}: trial {k + 1} {overrides}")
            record = trial_grid.run(dataset, f"{model}@t{k}={model}", seed, split, overrides=overrides)
            records.append(record)
        best = best_trial(records)
        summary = {"model": model, "dataset": dataset, "split_seed": split, "seed": seed, "trials": trials,
                   "space": space, "valid_rows": self.extra.get("valid_rows", "warm (default)"),
                   "results": [{"config": c, "status": r.get("status"), "best_valid_score": r.get("best_valid_score"),
                                "epochs_run": r.get("epochs_run"), "hit_cap": r.get("hit_cap"),
                                "error": r.get("error")} for c, r in zip(configs, records)],
                   "chosen": configs[best] if best is not None else None}
        if best is None:
            print(f"  tuning {model} on {dataset}: no trial finished; its cells use the defaults", file=sys.stderr)
        else:
            with atomic_write(path) as f:
                json.dump(summary, f, indent=1)
        return summary

    def _run_child(self, spec: dict, run_dir: Path):
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        path = Path(spec["cell_out"])
        cmd = [sys.executable, "-m", "recbole_sid.leaderboard", "--run-cell", str(spec_path), "--cell-out", str(path)]
        return stream_cell(cmd, run_dir, f"{spec['label']} seed {spec['seed']}", self.timeout)

    def _attach_sids(self, spec: dict, tokenizer: str, run_dir: Path) -> None:
        """SID-feature cell: run (or reuse) the tokenizer's top-k cell of the same dataset and seed, then write a
        copy of the CTR data with its SIDs as a ``sid`` column under ``run_dir/data`` and point the cell at it.
        A sequential cell (``QBERT4Rec+SID-<tokenizer>``) reads the exported file itself (:meth:`_sid_file`)."""
        if model_task(spec["model"]) == "seq":
            return self._sid_file(spec, tokenizer)
        sid_file, levels = self._tokenizer_sids(spec, tokenizer)
        from dataset_prep.attach_sids import attach_sids

        summary = attach_sids(spec["dataset"], spec["config"]["data_path"], sid_file, run_dir / "data",
                              overwrite=True, log=lambda *a, **k: None, field=SID_FIELD, levels=levels)
        spec["config"]["data_path"] = str(run_dir / "data")
        spec["sid_fields"] = summary["fields"]
        spec["sid_source"] = {"model": tokenizer, "seed": spec["seed"], "split_seed": spec.get("split_seed"),
                              "itemsid": str(sid_file), "levels": levels}

    def _sid_file(self, spec: dict, tokenizer: str) -> None:
        """``QBERT4Rec+SID-<tokenizer>``: the tokenizer's exported ``.itemsid`` (its top-k cell of the same split and
        seed) as ``qbert_sid_file`` in place of QBERT4Rec's own stages 1-2, with its number of levels as
        ``sid_levels`` (the dedup level left out)."""
        sid_file, levels = self._tokenizer_sids(spec, tokenizer)
        spec["config"]["qbert_sid_file"] = str(sid_file)
        if levels:
            spec["config"]["sid_levels"] = int(levels)
        spec["sid_source"] = {"model": tokenizer, "seed": spec["seed"], "split_seed": spec.get("split_seed"),
                              "itemsid": str(sid_file), "levels": levels}

    def _tokenizer_sids(self, spec: dict, tokenizer: str) -> tuple[Path, int | None]:
        """Run (or reuse) ``tokenizer``'s cell of the same dataset, split and seed; ``(its exported .itemsid, its
        number of SID levels without the dedup level)``."""
        dataset, seed = spec["dataset"], spec["seed"]
        if model_task(tokenizer) != "topk" and resolve_model(tokenizer)[0] != "COINS":
            raise DataError(f"{spec['label']}: {tokenizer} is neither a top-k SID tokenizer nor COINS (the models "
                            f"whose cells export item SIDs)")
        source = self.sid_grid()
        print(f"  {spec['label']}: SIDs from {tokenizer} seed {seed} on {dataset}"
              + ("" if source is self else f" (cells of {source.out})"), file=sys.stderr, flush=True)
        split = spec.get("split_seed")
        record = source.run(dataset, tokenizer, seed, split)
        if record.get("status") != "ok":
            raise DataError(f"{spec['label']} needs the SIDs of {tokenizer} seed {seed}, whose cell failed: "
                            f"{record.get('error')}")
        sid_file = Path((record.get("sid_files") or {}).get("itemsid", ""))
        if not sid_file.is_file():
            raise DataError(f"{spec['label']} needs {tokenizer}'s exported SIDs, but {sid_file or 'no itemsid'} "
                            f"(from {cell_path(source.out, dataset, tokenizer, seed, split)}) is not a file; delete "
                            f"that cell to rerun it")
        levels = (record.get("sid_quality") or {}).get("items", {}).get("num_levels")
        return sid_file, levels


def tuning_path(tuning: Path, dataset: str, model: str) -> Path:
    """The search record of ``model`` (class name) on ``dataset``: ``<tuning>/<dataset>/<model>.json``."""
    return Path(tuning) / plain_name(dataset, "--dataset") / f"{plain_name(model, 'model')}.json"


def split_seeds(count: int, start: int = 0) -> list[int | None]:
    """Split seeds ``SEED_BASE + start ..`` (``count`` of them); ``[None]`` (the dataset's own split) for 0."""
    return [None] if count <= 0 else [SEED_BASE + k for k in range(start, start + count)]


def run_grid(datasets, models, seeds: int, out: Path, data_path: str, extra: dict, config_files=None,
             timeout: int | None = None, seed_start: int = 0, ctr_path: str | None = None,
             ctr_extra: dict | None = None, splits: int = 0, split_start: int = 0, split_root: str | None = None,
             cold_ratio: float = 0.1, tune: bool = False, trials: int = 6, reference: str | None = None,
             sid_cells: Path | None = None) -> list[Path]:
    check_names(datasets, models)
    tuning = out / "tuning"
    grid = Grid(out, data_path, extra, config_files, timeout, ctr_path, ctr_extra, split_root, cold_ratio, tuning,
                sid_cells)
    split_list = split_seeds(splits, split_start)
    if tune:  # one search per model class, on the first split seed and the first model seed
        for dataset in datasets:
            for model in dict.fromkeys(resolve_model(m)[0] for m in models):
                grid.tune(dataset, model, trials, split_seeds(max(splits, 0))[0], SEED_BASE)
    # split-major, then seed-major order: a partial grid already covers every model once
    cells = [(d, m, SEED_BASE + s, k) for k in split_list for s in range(seed_start, seed_start + seeds)
             for d in datasets for m in models]
    for dataset in datasets:
        if any(model_task(m) == "ctr" for m in models):
            print(f"CTR cells read {dataset} from {ctr_data_path(dataset, data_path, ctr_path)}", file=sys.stderr)
        if any(model_task(m) == "seq" for m in models):
            where = (f"the leave-one-out files under {Path(split_root or '') / 'seq'}/split<k>/" if splits > 0 else
                     f"{Path(data_path) / dataset / (dataset + '.inter')} with RecBole's leave-one-out")
            print(f"sequential cells read {dataset} from {where}", file=sys.stderr)
    started = time.time()
    for done, (dataset, label, seed, split) in enumerate(cells):
        state = "cached" if grid.cached(dataset, label, seed, split) else "running"
        where = f"split {split} " if split is not None else ""
        _progress(done, len(cells), started, f"{state} {label_name(label)} {where}seed {seed} on {dataset}")
        grid.run(dataset, label, seed, split)
    _progress(len(cells), len(cells), started, "done")
    return write_outputs(out, datasets, models, reference)


def write_outputs(out: Path, datasets, models, reference: str | None = None) -> list[Path]:
    """Tables (md, csv) and plots (PNG) of every dataset from its finished cells; returns the written files."""
    from recbole_sid.plots import PlotDependencyError, write_plots

    paths = []
    for dataset in datasets:
        labels = [label_name(m) for m in models]
        paths.append(write_tables(out, dataset, labels, reference))
        try:
            paths += write_plots(out, dataset, labels)
        except PlotDependencyError as exc:
            print(f"no plots for {dataset}: {exc}", file=sys.stderr)
    return paths


def _mean_std(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    # one seed has no spread: no std (a "± 0" would read as a measured zero variance)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return mean, std


def read_cells(out: Path, dataset: str, model: str) -> list[dict]:
    """Every cell JSON of ``model`` (a label) on ``dataset``, finished or failed, in (split, seed) order; each
    gets ``_path``, the file it was read from."""
    pattern = re.compile(rf"^{re.escape(model)}-(?:split(\d+)-)?seed(\d+)\.json$")
    found = []
    for path in (Path(out) / dataset / "cells").glob(f"{model}-*.json"):
        match = pattern.match(path.name)
        if match:
            found.append(((int(match.group(1) or -1), int(match.group(2))), path))
    cells = []
    for _, path in sorted(found):
        cell = json.loads(path.read_text())
        cell["_path"] = str(path)
        cells.append(cell)
    return cells


def collect(out: Path, dataset: str, models) -> list[dict]:
    """One row per model: mean/std over its finished seeds of every reported number."""
    rows = []
    for model in models:
        cells = read_cells(out, dataset, model)
        if not cells:  # not run on this dataset (e.g. a variant run on one dataset only)
            continue
        ok = [c for c in cells if c.get("status") == "ok"]
        # the task a cell recorded (an ad-hoc label "X=COINS:..." does not name its model class)
        task = next((c["task"] for c in ok if c.get("task")), None) or model_task(model)
        row = {"model": model, "task": task, "seeds": len(ok),
               "errors": "; ".join(sorted({c["error"] for c in cells if c.get("status") == "error"}))}
        metrics = CTR_METRICS if row["task"] == "ctr" else TOPK_METRICS
        row["_cells"] = {"files": {_cell_key(c): c["_path"] for c in ok if "_path" in c}}
        for part in PARTS[row["task"]]:
            for metric in metrics:
                key = f"{metric}{part}"
                values = [c.get(f"test_result{part}", {}).get(metric) for c in ok]
                row[key] = _mean_std(values)
                summary = summarize(values)
                row[f"{key}_ci95"] = None if summary.ci_high is None else summary.ci_high - summary.mean
                row["_cells"][key] = {_cell_key(c): v for c, v in zip(ok, values) if v is not None}
        if row["task"] == "seq":  # test rows by their target: how many a cell's warm / cold numbers rest on
            for part in ("warm", "cold"):
                row[f"test_rows_{part}"] = _mean_std([c.get(f"test_rows_{part}") for c in ok])
        row["split_seeds"] = len({c.get("split_seed") for c in ok})
        row["at_cap"] = sum(1 for c in ok if c.get("hit_cap"))
        row["best_valid_score"] = _mean_std([c.get("best_valid_score") for c in ok])
        row["tuned"] = next((c["tuned"] for c in ok if c.get("tuned")), None)
        row["seconds_per_epoch"] = _mean_std([c.get("seconds_per_epoch") for c in ok])
        row["tokenizer_seconds"] = _mean_std([c.get("tokenizer_seconds") for c in ok])
        row["peak_rss_mb"] = _mean_std([c.get("peak_rss_mb") for c in ok])
        row["epochs_run"] = _mean_std([c.get("epochs_run") for c in ok])
        quality = [c["sid_quality"]["items"] for c in ok if c.get("sid_quality")]
        if quality:
            row["collision_rate"] = _mean_std([q["collision_rate"] for q in quality])
            row["collision_rate_greedy"] = _mean_std([q.get("collision_rate_greedy") for q in quality])
            row["level1_usage"] = _mean_std([q["levels"][0]["usage"] for q in quality])
            row["level1_perplexity"] = _mean_std([q["levels"][0]["perplexity"] for q in quality])
        row["config"] = _shared_config(ok[0]["config"]) if ok else None
        row["versions"] = ok[0]["versions"] if ok else None
        rows.append(row)
    return rows


#: config keys that differ between the seeds of one model by design (the split seed's data folder too)
PER_SEED_KEYS = ("seed", "checkpoint_dir", "show_progress", "data_path")


def _cell_key(cell: dict) -> tuple:
    """What pairs the cells of two models: ``(split seed, model seed)``."""
    return (cell.get("split_seed"), cell.get("seed"))


def _shared_config(config: dict) -> dict:
    """A cell's config without the keys that change per seed (the seed, its run folder)."""
    return {k: v for k, v in config.items() if k not in PER_SEED_KEYS}


def _config_section(rows) -> list[str]:
    """``## Config and versions``: the versions, then each distinct config (what the run set on top of the
    models' yaml defaults, ``--set`` included; seeds and run folders left out) with the models that used it."""
    groups: dict[str, list[str]] = {}
    versions = None
    for r in rows:
        if r["config"] is None:
            continue
        versions = versions or r["versions"]
        groups.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r["model"])
    if not groups:
        return []
    lines = ["## Config and versions", "", "Versions (first finished cell; every cell records its own):", "", "```",
             json.dumps(versions, indent=1), "```", "",
             "Config on top of each model's yaml defaults (`properties/model/<Model>.yaml`), per group of models:", ""]
    for config, models in groups.items():
        lines.append(f"- {', '.join(models)}: `{config}`")
    return lines + [""]


def _fmt(pair, digits=4):
    mean, std = pair if isinstance(pair, tuple) else (None, None)
    if mean is None:
        return "—"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


#: the two-stage SID models, among which the default reference of the paired tests is chosen
TWO_STAGE_SID = ["RQKMeans", "RQVAE", "LETTER", "QARM"]
#: the metric the headline rankings sort by and test
HEADLINE_METRIC = "recall@10"
HOW_TO_READ = (
    "How to read: every number is a mean over cells (a cell is one split seed x model seed run, trained on "
    "the same split with the same budget) ± the half-width of its 95 % Student-t interval. Warm and cold items "
    "are ranked separately. Δ is the model's mean difference from the reference; p (cells) is a paired t-test over "
    "the cells both models ran, p (users) a paired bootstrap over test users (2,000 replicates, users resampled "
    "within each cell, every cell weighing the same). The verdict says better / worse only when both tests give "
    "p < 0.05 in the same direction, else \"no detectable difference\" (which is not evidence of equality: with "
    "3 cells only large or very consistent differences reach it). A † marks models with cells stopped by the "
    "epoch cap rather than early stopping.")


def default_reference(rows) -> str | None:
    """The two-stage SID model with the best mean validation score (what checkpoint selection maximised)."""
    candidates = [r for r in rows if r["model"] in TWO_STAGE_SID and r["task"] == "topk"
                  and (r.get("best_valid_score") or (None,))[0] is not None]
    return max(candidates, key=lambda r: r["best_valid_score"][0])["model"] if candidates else None


def _per_user_by_cell(row: dict, key: str) -> dict:
    """``{cell key: {user: value}}`` of a row's metric ``key`` (e.g. ``recall@10_warm``) from the cells' npz."""
    metric, _, part = key.partition("_")
    found = {}
    for cell_key, path in row["_cells"]["files"].items():
        values = read_per_user(users_path(Path(path)), part or "all", metric)
        if values:
            found[cell_key] = values
    return found


def compare(row: dict, reference: dict, key: str) -> tuple:
    """``(cell test, user test or None, verdict)`` of ``row`` against ``reference`` on metric ``key``."""
    cell_test = paired_cells(row["_cells"].get(key, {}), reference["_cells"].get(key, {}))
    mine, theirs = _per_user_by_cell(row, key), _per_user_by_cell(reference, key)
    user_test = paired_bootstrap_users(mine, theirs, seed=0) if mine and theirs else None
    return cell_test, user_test, verdict(cell_test, user_test)


def _ci(row: dict, key: str, digits: int = 4) -> str:
    mean = (row.get(key) or (None,))[0]
    if mean is None:
        return "—"
    half = row.get(f"{key}_ci95")
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"


def _p(value) -> str:
    return "—" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def _ranking(rows, by_model, reference, part: str, heading: str = "## ", titles: dict | None = None) -> list[str]:
    """One headline table: the top-k rows ranked by ``HEADLINE_METRIC`` on ``part`` (warm / cold / all)."""
    suffix = "" if part == "all" else f"_{part}"
    key = f"{HEADLINE_METRIC}{suffix}"
    ranked = sorted((r for r in rows if (r.get(key) or (None,))[0] is not None), key=lambda r: -r[key][0])
    title = (titles or {"warm": "Warm items", "cold": "Cold items", "all": "All test rows"})[part]
    lines = [f"{heading}{title}: ranked by {key.replace('_', ' ')}", "",
             f"| # | model | cells | {key.replace('_', ' ')} | ndcg@10{suffix.replace('_', ' ')} | "
             f"Δ vs {reference or '—'} | p (cells) | p (users) | verdict |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for rank, r in enumerate(ranked, 1):
        mark = " †" if r.get("at_cap") else ""
        if reference is None or r["model"] == reference or reference not in by_model:
            delta, p_cells, p_users, said = "—", "—", "—", "reference" if r["model"] == reference else "—"
        else:
            cell_test, user_test, said = compare(r, by_model[reference], key)
            delta = _delta(cell_test)
            p_cells, p_users = _p(cell_test.p_value), _p(user_test.p_value if user_test else None)
        lines.append(f"| {rank} | {r['model']}{mark} | {r['seeds']} | {_ci(r, key)} | "
                     f"{_ci(r, 'ndcg@10' + suffix)} | {delta} | {p_cells} | {p_users} | {said} |")
    return lines + [""]


def _delta(cell_test) -> str:
    if cell_test.mean_diff is None:
        return "—"
    text = f"{cell_test.mean_diff:+.4f}"
    return text if cell_test.ci_low is None else f"{text} [{cell_test.ci_low:+.4f}, {cell_test.ci_high:+.4f}]"


def _variant_base(label: str) -> str | None:
    """The base model a named variant (``VARIANTS``) is paired with; None for other labels."""
    return VARIANTS[label][0] if label in VARIANTS else None


def _variant_table(rows, by_model, key: str = HEADLINE_METRIC, suffixes=("_warm", "_cold"),
                   base_of=_variant_base) -> list[str]:
    """Each named variant (``VARIANTS``: DAS's, COINS's and QBERT4Rec's ablations, the two-stage DAS) paired against
    its base model (``base_of``) on ``key`` in each test bucket of ``suffixes``."""
    pairs = [(r, by_model[base_of(r["model"])]) for r in rows if base_of(r["model"]) in by_model]
    if not pairs:
        return []
    names = [(s.strip("_") or "all").replace("longtail", "long tail") for s in suffixes]
    lines = [f"## Variants against their base model ({key}; Δ = variant - base)", "",
             "| variant | base | cells | " + " | ".join(f"Δ {n} | p (cells) | p (users) | verdict ({n})"
                                                       for n in names) + " |",
             "|---|---|---:|" + "---:|---:|---:|---|" * len(suffixes)]
    for row, base in pairs:
        parts = []
        for suffix in suffixes:
            cell_test, user_test, said = compare(row, base, key + suffix)
            parts.append(f"{_delta(cell_test)} | {_p(cell_test.p_value)} | "
                         f"{_p(user_test.p_value if user_test else None)} | {said}")
        lines.append(f"| {row['model']} | {base['model']} | {row['seeds']} | " + " | ".join(parts) + " |")
    return lines + [""]


#: the reference of the CTR paired tests: the model COINS's target is stated against (issue 14)
CTR_REFERENCE = "DeepFM"
CTR_HOW_TO_READ = (
    "How to read (CTR): every number is a mean over cells (one split seed x model seed, the same labeled split, "
    "features and budget for every model) ± the half-width of its 95 % Student-t interval. Buckets of test rows "
    "by the item's training clicks: warm (>= 1), long tail (1 to `long_tail_max_clicks`, default 5; a subset of "
    "warm), cold (none: held-out items). GAUC is the per-user AUC weighted by the user's rows (users whose rows "
    "are all one label left out). Δ is the mean paired difference from the reference over the cells both ran, "
    "with its 95 % interval; p (cells) a paired t-test over those cells. CTR cells keep no per-user values, so the "
    "verdict rests on the cell test alone (better / worse at p < 0.05, else \"no detectable difference\").")


def _ctr_tables(rows) -> list[str]:
    """The CTR tables: AUC per bucket against ``CTR_REFERENCE``, the variants against their base, every metric."""
    by_model = {r["model"]: r for r in rows}
    reference = CTR_REFERENCE if CTR_REFERENCE in by_model else None
    suffixes = ("", "_longtail", "_cold")
    names = ("all", "long tail", "cold")
    lines = ["## CTR", "", CTR_HOW_TO_READ, "",
             f"### AUC against {reference or '— (no DeepFM cells)'} (Δ = model - {reference or 'reference'})", "",
             "| model | cells | " + " | ".join(f"AUC {n} | Δ {n} | p (cells) | verdict ({n})" for n in names) + " |",
             "|---|---:|" + "---:|---:|---:|---|" * len(suffixes)]
    for r in sorted(rows, key=lambda r: -((r.get("auc_cold") or (0.0,))[0] or 0.0)):
        parts = []
        for suffix in suffixes:
            key = f"auc{suffix}"
            if reference is None or r["model"] == reference:
                parts.append(f"{_ci(r, key)} | — | — | {'reference' if r['model'] == reference else '—'}")
                continue
            cell_test, _, said = compare(r, by_model[reference], key)
            parts.append(f"{_ci(r, key)} | {_delta(cell_test)} | {_p(cell_test.p_value)} | {said}")
        lines.append(f"| {r['model']} | {r['seeds']} | " + " | ".join(parts) + " |")
    lines.append("")
    variants = _variant_table(rows, by_model, "auc", suffixes)
    if variants:
        lines += ["#" + variants[0]] + variants[1:]
    cols = [f"{m}{p}" for p in PARTS["ctr"] for m in CTR_METRICS]
    lines += ["### Every CTR metric", "", "| model | cells | " + " | ".join(c.replace("_", " ") for c in cols) +
              " | epochs | s/epoch | peak MB |", "|---|---:|" + "---:|" * (len(cols) + 3)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seeds']} | " + " | ".join(_ci(r, c) for c in cols) +
                     f" | {_fmt(r['epochs_run'], 0)} | {_fmt(r['seconds_per_epoch'], 2)} | {_fmt(r['peak_rss_mb'], 0)} |")
    return lines + [""]


def _seq_base(label: str) -> str | None:
    """What a sequential row is paired with in the variants table: QBERT4Rec for its ablations and for QBERT4Rec on
    another tokenizer's SIDs (``QBERT4Rec+SID-<tokenizer>``)."""
    source = sid_feature_source(label)
    return source[0] if source is not None else _variant_base(label)


SEQ_TITLES = {"all": "All test rows", "warm": "Warm targets", "cold": "Cold targets"}
SEQ_HOW_TO_READ = (
    "How to read (sequential): next-item prediction, leave-one-out: each user's last interaction in time order is "
    "the test target, the one before it the validation target, and the model ranks every item (full sort) after "
    "the user's history. On split seeds a share of items is held out whole (`dataset_prep seq-cold-split`, the "
    "same items as the top-k split of that seed): never in a training sequence or an input history, only as a "
    "target. Test rows are split by their target: warm (an item with training rows) and cold (a held-out item; ID "
    "models cannot reach those). Every number is a mean over cells (split seed x model seed) ± the half-width of "
    "its 95 % Student-t interval; Δ, p (cells), p (users) (one test row per user) and the verdict as in the top-k "
    "tables; † marks models with cells stopped by the epoch cap. The variants table pairs QBERT4Rec's ablations and "
    "QBERT4Rec on other tokenizers' SIDs with QBERT4Rec.")


def _seq_tables(rows, reference: str | None = None) -> list[str]:
    """The sequential tables: rankings on all / warm / cold test targets against ``SEQ_REFERENCE`` (BERT4Rec) or
    ``reference``, QBERT4Rec's variants against QBERT4Rec, every metric."""
    by_model = {r["model"]: r for r in rows}
    if reference is None:
        reference = SEQ_REFERENCE if SEQ_REFERENCE in by_model else None
    lines = ["## Sequential (next item, leave-one-out, full sort)", "", SEQ_HOW_TO_READ, "",
             f"Reference of the paired tests: **{reference or 'none'}**", ""]
    for part in ("all", "warm", "cold"):
        lines += _ranking(rows, by_model, reference, part, heading="### ", titles=SEQ_TITLES)
    variants = _variant_table(rows, by_model, HEADLINE_METRIC, ("", "_warm", "_cold"), base_of=_seq_base)
    if variants:
        lines += ["#" + variants[0]] + variants[1:]
    cols = [f"{m}{p}" for p in PARTS["seq"] for m in TOPK_METRICS]
    lines += ["### Every sequential metric (all / warm / cold test targets)", "",
              "| model | cells | " + " | ".join(c.replace("_", " ") for c in cols) +
              " | test rows warm | test rows cold | cells at cap | epochs | s/epoch | peak MB |",
              "|---|---:|" + "---:|" * (len(cols) + 6)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seeds']} | " + " | ".join(_ci(r, c) for c in cols) +
                     f" | {_fmt(((r.get('test_rows_warm') or (None,))[0], None), 0)}"
                     f" | {_fmt(((r.get('test_rows_cold') or (None,))[0], None), 0)}"
                     f" | {r.get('at_cap', 0)} | {_fmt(r['epochs_run'], 0)}"
                     f" | {_fmt(r['seconds_per_epoch'], 2)} | {_fmt(r['peak_rss_mb'], 0)} |")
    return lines + [""]


def _topk_tables(rows, reference: str | None) -> list[str]:
    by_model = {r["model"]: r for r in rows}
    if reference is not None and reference not in by_model:
        raise DataError(f"--reference {reference!r} has no finished cell (models: {', '.join(by_model)})")
    reference = reference or default_reference(rows)
    lines = [HOW_TO_READ, "", f"Reference of the paired tests: **{reference or 'none'}**"
             + (" (the two-stage SID model with the best mean validation score)" if reference else ""), ""]
    for part in ("warm", "cold"):
        lines += _ranking(rows, by_model, reference, part)
    lines += _variant_table(rows, by_model)
    cols = [f"{m}{p}" for p in ("", "_warm", "_cold") for m in TOPK_METRICS]
    phase1 = any((r.get("tokenizer_seconds") or (None,))[0] is not None for r in rows)
    lines += ["## Every metric (all / warm / cold test rows)", "",
              "| model | cells | " + " | ".join(c.replace("_", " ") for c in cols) + " | cells at cap | epochs" +
              (" | phase 1 s" if phase1 else "") + " | s/epoch | peak MB |",
              "|---|---:|" + "---:|" * (len(cols) + 4 + phase1)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seeds']} | " + " | ".join(_ci(r, c) for c in cols) +
                     f" | {r.get('at_cap', 0)} | {_fmt(r['epochs_run'], 0)}" +
                     (f" | {_fmt(r['tokenizer_seconds'], 0)}" if phase1 else "") +
                     f" | {_fmt(r['seconds_per_epoch'], 2)} | {_fmt(r['peak_rss_mb'], 0)} |")
    lines.append("")
    tuned = [r for r in rows if r.get("tuned")]
    if tuned:
        lines += ["## Chosen configurations (search on the first split seed; validation score of the cells)", "",
                  "| model | chosen | mean valid score |", "|---|---|---:|"]
        for r in rows:
            chosen = ", ".join(f"{k}={v}" for k, v in (r.get("tuned") or {}).items()) or "defaults (no search space)"
            lines.append(f"| {r['model']} | {chosen} | {_fmt(r['best_valid_score'])} |")
        lines.append("")
    return lines


def write_tables(out: Path, dataset: str, models, reference: str | None = None) -> Path:
    rows = collect(out, dataset, models)
    folder = out / dataset
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# Leaderboard: {dataset}", ""]
    topk_rows = [r for r in rows if r["task"] == "topk"]
    seq_rows = [r for r in rows if r["task"] == "seq"]
    # --reference names the reference of the section its model is in (top-k by default)
    seq_reference = reference if reference in {r["model"] for r in seq_rows} else None
    topk_reference = None if seq_reference else reference
    if topk_rows:
        lines += _topk_tables(topk_rows, topk_reference)
    elif topk_reference is not None and seq_rows:  # a sequential-only table: say the name matched nothing
        raise DataError(f"--reference {topk_reference!r} has no finished cell (models: "
                        f"{', '.join(r['model'] for r in rows)})")
    if seq_rows:
        lines += _seq_tables(seq_rows, seq_reference)
    ctr_rows = [r for r in rows if r["task"] == "ctr"]
    if ctr_rows:
        lines += _ctr_tables(ctr_rows)
    sid_rows = [r for r in rows if r.get("collision_rate")]
    if sid_rows:
        lines += ["## SID quality (items, before the dedup level)", "",
                  "| model | collision rate (greedy codes) | collision rate (final codes) | level-1 usage | "
                  "level-1 perplexity |", "|---|---:|---:|---:|---:|"]
        for r in sid_rows:
            lines.append(f"| {r['model']} | {_fmt(r['collision_rate_greedy'])} | {_fmt(r['collision_rate'])} | "
                         f"{_fmt(r['level1_usage'])} | {_fmt(r['level1_perplexity'], 1)} |")
        lines.append("")
    errors = [r for r in rows if r["errors"]]
    if errors:
        lines += ["## Failed cells", ""] + [f"- {r['model']}: {r['errors']}" for r in errors] + [""]
    lines += _config_section(rows)
    md = folder / "leaderboard.md"
    with atomic_write(md) as f:
        f.write("\n".join(lines))
    # every key any row has, in first-seen order; (mean, std) pairs become two columns
    keys, paired = [], set()
    for r in rows:
        for k, v in r.items():
            if k.startswith("_"):
                continue
            if k not in keys:
                keys.append(k)
            if isinstance(v, tuple):
                paired.add(k)
    with atomic_write(folder / "leaderboard.csv") as f:
        writer = csv.writer(f)
        writer.writerow([c for k in keys for c in ((f"{k}_mean", f"{k}_std") if k in paired else (k,))])
        for r in rows:
            line = []
            for k in keys:
                v = r.get(k)
                if k in paired:
                    line += list(v) if isinstance(v, tuple) else ["", ""]
                elif k in ("config", "versions", "tuned"):
                    line.append(json.dumps(v, sort_keys=True) if v is not None else "")
                else:
                    line.append(v)
            writer.writerow(line)
    return md


README_START = "<!-- leaderboard:{dataset}:start -->"
README_END = "<!-- leaderboard:{dataset}:end -->"


def update_readme(readme: Path, out: Path, dataset: str, tag: str = "") -> bool:
    """Replace the block between the README's markers for ``dataset`` with ``<out>/<dataset>/leaderboard.md``
    (its tables, without the config dump), so the README quotes the committed results verbatim."""
    text = readme.read_text(encoding="utf-8")
    start, end = README_START.format(dataset=tag + dataset), README_END.format(dataset=tag + dataset)
    if start not in text or end not in text:
        return False
    table = (out / dataset / "leaderboard.md").read_text(encoding="utf-8")
    table = table.split("\n## Config and versions")[0].strip()
    table = "\n".join(line.replace("## ", "#### ", 1) if line.startswith("## ") else line
                      for line in table.splitlines()[1:]).strip()
    source = f"From [`{out / dataset / 'leaderboard.md'}`]({out / dataset / 'leaderboard.md'}) (mean ± 95 % CI half-width over cells; the tables' own paragraph says how to read them)."
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with atomic_write(readme) as f:
        f.write(f"{head}{start}\n{source}\n\n{table}\n{end}{tail}")
    return True


def parse_set(items) -> dict:
    from recbole_sid.config import parse_value

    extra = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        extra[key] = parse_value(value)
    return extra


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_sid.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", default=[], help="dataset name (repeatable)")
    parser.add_argument("--task", choices=["topk", "ctr", "seq", "all"], default="topk",
                        help="default models: top-k, CTR, sequential (SASRec, BERT4Rec, QBERT4Rec and its variants) "
                        "or all three")
    parser.add_argument("--models", nargs="*", help="models to run (default: every baseline and plugin model)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (2020, 2021, ...)")
    parser.add_argument("--seed-start", type=int, default=0,
                        help="skip the first N seeds (e.g. to share a grid between two workers)")
    parser.add_argument("--split-seeds", type=int, default=0,
                        help="number of cold-split seeds (2020, 2021, ...), each split written by dataset_prep "
                        "cold-split under --split-root (sequential cells: dataset_prep seq-cold-split under "
                        "<split-root>/seq, the same held-out items); 0: the dataset's own files as they are "
                        "(sequential cells: RecBole's leave-one-out on the unsplit NAME.inter)")
    parser.add_argument("--split-start", type=int, default=0, help="skip the first N split seeds")
    parser.add_argument("--split-root", default="dataset/splits", help="folder of the split seeds' data")
    parser.add_argument("--cold-ratio", type=float, default=0.1, help="share of items each split holds out")
    parser.add_argument("--tune", action="store_true",
                        help="first search each model's properties/hyper/<Model>.hyper space (--trials "
                        "configurations, first split and seed) and run every cell with the chosen configuration")
    parser.add_argument("--trials", type=int, default=6, help="configurations per model in the search (the same "
                        "budget for every model)")
    parser.add_argument("--reference", help="model the paired tests compare with (default: the two-stage SID model "
                        "with the best mean validation score; sequential: BERT4Rec)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--sid-cells", help="the --out folder of a top-k run whose tokenizer cells (same split and "
                        "seed) give the <model>+SID-<tokenizer> labels their SIDs, e.g. the sequential benchmark "
                        "reading the top-k benchmark's RQKMeans and DAS cells; a missing one is run there, with that "
                        "folder's search (default: --out)")
    parser.add_argument("--data-path", default="dataset/")
    parser.add_argument("--config-files", nargs="*", help="yaml files passed to every run")
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides for every run")
    parser.add_argument("--ctr-data-path", help="folder with labeled copies for CTR cells (dataset_prep negatives); "
                        "a dataset not found there is read from --data-path")
    parser.add_argument("--ctr-set", nargs="*", metavar="KEY=VALUE", help="config overrides for CTR cells only "
                        "(after --set), e.g. load_col for a labeled copy")
    parser.add_argument("--timeout", type=int, default=None, help="seconds before a cell is killed")
    parser.add_argument("--tables-only", action="store_true", help="rewrite the tables from finished cells")
    parser.add_argument("--readme", help="README to update between <!-- leaderboard:DATASET:start/end --> markers")
    parser.add_argument("--readme-tag", default="", help="marker prefix, for a second table of one dataset: "
                        "<!-- leaderboard:TAGDATASET:start/end -->")
    parser.add_argument("--run-cell", help=argparse.SUPPRESS)
    parser.add_argument("--cell-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_cell:
        spec = json.loads(Path(args.run_cell).read_text())
        record = run_cell(spec)
        with atomic_write(Path(args.cell_out)) as f:
            json.dump(record, f, indent=1, default=str)
        return 0
    if not args.dataset:
        parser.error("give at least one --dataset")
    models = args.models or default_models(args.task)
    try:
        check_names(args.dataset, models)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.tables_only:
        paths = write_outputs(out, args.dataset, models, args.reference)
    else:
        paths = run_grid(args.dataset, models, args.seeds, out, args.data_path, parse_set(args.set),
                         args.config_files, args.timeout, args.seed_start, args.ctr_data_path,
                         parse_set(args.ctr_set), args.split_seeds, args.split_start, args.split_root,
                         args.cold_ratio, args.tune, args.trials, args.reference,
                         Path(args.sid_cells) if args.sid_cells else None)
    for path in paths:
        print(path)
    if args.readme:
        for dataset in args.dataset:
            if update_readme(Path(args.readme), out, dataset, args.readme_tag):
                print(f"{args.readme}: {dataset} table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
