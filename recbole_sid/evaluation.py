"""Warm / cold breakdown of RecBole's evaluation, for any model run through the plugin's runner.

With a cold split (``dataset_prep cold-split``: ``<dataset>.cold_items`` beside the benchmark files, or config key
``cold_items_file``), the test set is evaluated three times with RecBole's own dataloaders and metrics: all rows,
rows of warm items, rows of cold items. Top-k (full sort): a user's ground truth is restricted to the subset's
items, the other test items of that user are masked like history, and every item is still ranked. CTR (labeled):
AUC / LogLoss over the subset's rows.
"""
from __future__ import annotations

import os
from logging import getLogger

import torch

from recbole_sid.data.cold import cold_item_mask


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
    loaders = {}
    for name, keep in (("warm", ~is_cold), ("cold", is_cold)):
        if bool(keep.any()):
            loaders[name] = subset_loader(test_data, keep)
        else:
            getLogger().warning(f"no {name} items among the test rows: no test_result_{name}")
    return loaders


def evaluate_warm_cold(trainer, config, dataset, test_data, show_progress=False, train_data=None) -> dict:
    """``{"test_result_warm": ..., "test_result_cold": ...}`` with the trainer's current (best) model."""
    results = {}
    for name, loader in warm_cold_loaders(config, dataset, test_data, train_data).items():
        results[f"test_result_{name}"] = trainer.evaluate(loader, load_best_model=False, show_progress=show_progress)
        results[f"test_rows_{name}"] = len(loader._dataset.inter_feat)
    return results
