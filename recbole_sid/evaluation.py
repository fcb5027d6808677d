"""Warm / cold breakdown of RecBole's evaluation, for any model run through the plugin's runner.

With a cold split (``dataset_prep cold-split``: ``<dataset>.cold_items`` beside the benchmark files, or config key
``cold_items_file``), the test set is evaluated three times with RecBole's own dataloaders and metrics: all rows,
rows of warm items, rows of cold items. Top-k (full sort): a user's ground truth is restricted to the subset's
items, the other test items of that user are masked like history, and every item is still ranked. CTR (labeled):
AUC / LogLoss over the subset's rows.

Validation rows (config key ``valid_rows``: ``warm`` by default, ``all`` or ``cold``): with a cold split, the rows
that early stopping and checkpoint selection score (:func:`select_valid_rows`). Per-user test values
(:func:`PerUserCapture`): each user's recall@k / ndcg@k on every test evaluation, for paired per-user tests.
"""
from __future__ import annotations

import os
from logging import getLogger

import numpy as np
import torch

from recbole_sid.data.cold import cold_item_mask
from recbole_sid.exceptions import ConfigError


def cold_items_source(config) -> str | None:
    """Path of the cold-item list for this run, or None when the run has no cold split."""
    explicit = config["cold_items_file"] if "cold_items_file" in config else None
    if explicit:
        return explicit
    default = os.path.join(config["data_path"], f"{config['dataset']}.cold_items")
    return default if os.path.isfile(default) else None


def subset_loader(loader, keep: torch.Tensor):
    """A copy of an evaluation dataloader over the rows where ``keep`` (BoolTensor over rows) is True."""
    dataset = loader._dataset
    subset = dataset.copy(dataset.inter_feat[keep])
    return type(loader)(loader.config, subset, loader._sampler, shuffle=False)


def cold_items_in_training(mask: torch.Tensor, train_data) -> int:
    """How many of the listed cold items have a training row (0 on a real cold split)."""
    train = train_data._dataset if hasattr(train_data, "_dataset") else train_data
    items = torch.as_tensor(train.inter_feat[train.iid_field])
    return int(torch.unique(items[mask[items]]).numel())


def warm_cold_loaders(config, dataset, test_data, train_data=None) -> dict:
    """``{"warm": loader, "cold": loader}`` over the test rows of warm / cold items ({} without a cold split).

    With ``train_data``, a cold list whose items appear in training (e.g. a ``.cold_items`` file beside the
    dataset but a random split, no ``benchmark_filename``) gives no breakdown, with a warning: "cold" metrics on
    items the model was trained on would be wrong.
    """
    source = cold_items_source(config)
    if source is None:
        return {}
    if config["cold_items_file"] is None:
        config["cold_items_file"] = source
    mask = cold_item_mask(config, dataset)
    if train_data is not None:
        leaked = cold_items_in_training(mask, train_data)
        if leaked:
            getLogger().warning(
                f"{source}: {leaked} of the {int(mask.sum())} listed cold items have training rows in this run's "
                f"split (benchmark_filename: {config['benchmark_filename']}), so they are not cold here: no "
                f"warm/cold breakdown is reported. Use the benchmark files written with the list "
                f"(benchmark_filename: [train, valid, test]) or remove the list.")
            return {}
    items = test_data._dataset.inter_feat[test_data._dataset.iid_field]
    is_cold = mask[items]
    buckets = [("warm", ~is_cold), ("cold", is_cold)]
    if train_data is not None and is_value_eval(config):
        clicks = training_clicks(config, train_data, dataset.item_num)
        limit = long_tail_max_clicks(config)
        buckets.insert(1, ("longtail", (clicks[items] >= 1) & (clicks[items] <= limit) & ~is_cold))
    loaders = {}
    for name, keep in buckets:
        if bool(keep.any()):
            loaders[name] = subset_loader(test_data, keep)
        else:
            getLogger().warning(f"no {name} items among the test rows: no test_result_{name}")
    return loaders


def is_value_eval(config) -> bool:
    """A CTR run (AUC / LogLoss on labeled rows) rather than a ranking one."""
    from recbole.utils import EvaluatorType

    return config["eval_type"] == EvaluatorType.VALUE


def long_tail_max_clicks(config) -> int:
    """``long_tail_max_clicks``: an item with 1 to this many training clicks is in the long-tail bucket."""
    from recbole_sid.config_values import cfg_int

    return cfg_int(config, "long_tail_max_clicks", 5, minimum=1)


def training_clicks(config, train_data, n_items: int) -> torch.Tensor:
    """Training clicks per item: rows with label > 0.5 of a labeled (CTR) split, every row otherwise."""
    train = train_data._dataset if hasattr(train_data, "_dataset") else train_data
    items = torch.as_tensor(train.inter_feat[train.iid_field])
    label = config["LABEL_FIELD"]
    if label and label in train.inter_feat:
        items = items[torch.as_tensor(train.inter_feat[label]) > 0.5]
    return torch.bincount(items, minlength=n_items)


def gauc(scores, labels, users) -> tuple[float | None, int]:
    """Group AUC: each user's AUC (ties count half) weighted by the user's number of rows, over the users that have
    both a positive (label > 0.5) and a negative row. Returns ``(gauc, users counted)``; None when no user counts."""
    import pandas as pd

    frame = pd.DataFrame({"u": np.asarray(users), "s": np.asarray(scores, dtype=np.float64),
                          "y": np.asarray(labels, dtype=np.float64) > 0.5})
    frame["rank_pos"] = frame.groupby("u")["s"].rank(method="average") * frame["y"]
    groups = frame.groupby("u").agg(n=("y", "size"), pos=("y", "sum"), rank_pos=("rank_pos", "sum"))
    groups = groups[(groups["pos"] > 0) & (groups["pos"] < groups["n"])]
    if groups.empty:
        return None, 0
    neg = groups["n"] - groups["pos"]
    auc = (groups["rank_pos"] - groups["pos"] * (groups["pos"] + 1) / 2) / (groups["pos"] * neg)
    return float((auc * groups["n"]).sum() / groups["n"].sum()), int(len(groups))


VALID_ROWS = ("all", "warm", "cold")


def select_valid_rows(config, dataset, valid_data, train_data=None):
    """The validation loader that early stopping and checkpoint selection use: ``valid_rows`` of a cold split.

    ``warm`` (default): rows of items with training rows. ``cold``: rows of the held-out items. ``all``: every row.
    Without a cold list (or one that leaks into training) every row is used, and that is logged. The tokenizers'
    own stopping rules (DAS) read the same rows, since they get this loader.
    """
    from recbole_sid.config_values import cfg_choice

    rows = cfg_choice(config, "valid_rows", VALID_ROWS, "warm")
    if rows == "all" or valid_data is None:
        return valid_data
    source = cold_items_source(config)
    if source is None:
        getLogger().info(f"valid_rows: {rows}, but the run has no cold-item list: validation scores all rows")
        return valid_data
    if config["cold_items_file"] is None:
        config["cold_items_file"] = source
    mask = cold_item_mask(config, dataset)
    if train_data is not None and cold_items_in_training(mask, train_data):
        getLogger().info(f"valid_rows: {rows}, but {source} lists items with training rows: validation scores all "
                         f"rows")
        return valid_data
    items = valid_data._dataset.inter_feat[valid_data._dataset.iid_field]
    keep = mask[items] if rows == "cold" else ~mask[items]
    if not bool(keep.any()):
        raise ConfigError(f"valid_rows: {rows}, but the validation split has no {rows}-item row ({source}); use "
                          f"valid_rows: all")
    getLogger().info(f"valid_rows: {rows}: early stopping and checkpoint selection score {int(keep.sum())} of "
                     f"{len(items)} validation rows")
    return subset_loader(valid_data, keep)


class PerUserCapture:
    """Keeps each user's top-k metric values of every full-sort evaluation run while it is installed on a trainer.

    RecBole's evaluator averages over users; this wraps ``trainer.evaluator.evaluate`` to keep the struct it gets
    and computes, with RecBole's own metric classes, ``recall@k`` and ``ndcg@k`` per user (row order = the loader's
    ``uid_list``). :meth:`take` returns ``{"users": internal ids, "recall@k": [...], "ndcg@k": [...]}``.
    """

    def __init__(self, trainer, k: int | None = None):
        self.trainer, self.structs = trainer, []
        topk = trainer.config["topk"]
        self.k = int(k or (topk[0] if isinstance(topk, (list, tuple)) else topk))
        self._original = None

    def __enter__(self):
        self._original = self.trainer.evaluator.evaluate

        def capture(struct):
            self.structs.append(struct)
            return self._original(struct)

        self.trainer.evaluator.evaluate = capture
        return self

    def __exit__(self, *exc):
        self.trainer.evaluator.evaluate = self._original

    def take_gauc(self, loader) -> tuple[float | None, int] | None:
        """GAUC (:func:`gauc`) of the last evaluation when it was a CTR (value) one, with the users counted; rows
        come in the loader's order (evaluation loaders do not shuffle)."""
        if not self.structs or "rec.score" not in self.structs[-1] or "data.label" not in self.structs[-1]:
            return None
        struct = self.structs.pop()
        dataset = loader._dataset
        users = np.asarray(dataset.inter_feat[dataset.uid_field])
        scores = struct.get("rec.score").reshape(-1).numpy()
        labels = struct.get("data.label").reshape(-1).numpy()
        if len(users) != len(scores):
            return None
        return gauc(scores, labels, users)

    @staticmethod
    def loader_users(loader):
        """The user of each evaluated row of a full-sort ``loader``: its ``uid_list`` (general models), else, for a
        sequential loader (one row per test case, no ``uid_list`` in RecBole), each row's user when the users are
        distinct (leave-one-out: one test row per user); None otherwise."""
        if hasattr(loader, "uid_list"):
            return torch.as_tensor(loader.uid_list).numpy()
        if getattr(loader, "is_sequential", False):
            users = np.asarray(loader._dataset.inter_feat[loader.uid_field])
            if len(users) and len(np.unique(users)) == len(users):
                return users
        return None

    def take(self, loader) -> dict | None:
        """Per-user values of the last evaluation (of ``loader``); None when it was not a full-sort ranking."""
        users = self.loader_users(loader)
        if not self.structs or "rec.topk" not in self.structs[-1] or users is None:
            return None
        from recbole.evaluator.metrics import NDCG, Recall

        struct = self.structs.pop()
        rec = struct.get("rec.topk")
        width = rec.shape[1] - 1
        if self.k > width:
            return None
        pos_index = rec[:, :width].to(torch.bool).numpy()
        pos_len = rec[:, width].numpy()
        config = {"topk": [width], "metric_decimal_place": 4}
        recall = Recall(config).metric_info(pos_index, pos_len)[:, self.k - 1]
        ndcg = NDCG(config).metric_info(pos_index, pos_len)[:, self.k - 1]
        if len(users) != len(recall):
            return None
        return {"users": users.tolist(), f"recall@{self.k}": recall.tolist(), f"ndcg@{self.k}": ndcg.tolist()}


def add_gauc(result, measured) -> None:
    """Put a measured GAUC into RecBole's result dict (``gauc``, rounded like RecBole's metrics)."""
    if result is not None and measured is not None and measured[0] is not None:
        result["gauc"] = round(measured[0], 4)


def evaluate_warm_cold(trainer, config, dataset, test_data, show_progress=False, train_data=None,
                       capture: PerUserCapture | None = None) -> dict:
    """``{"test_result_warm": ..., "test_result_cold": ...}`` with the trainer's current (best) model; with a
    ``capture`` installed, also ``{"per_user": {"warm": ..., "cold": ...}}`` (see :class:`PerUserCapture`)."""
    results, per_user = {}, {}
    for name, loader in warm_cold_loaders(config, dataset, test_data, train_data).items():
        results[f"test_result_{name}"] = trainer.evaluate(loader, load_best_model=False, show_progress=show_progress)
        results[f"test_rows_{name}"] = len(loader._dataset.inter_feat)
        if capture is not None:
            add_gauc(results[f"test_result_{name}"], capture.take_gauc(loader))
            values = capture.take(loader)
            if values is not None:
                per_user[name] = values
    if per_user:
        results["per_user"] = per_user
    return results
