"""Item-ID dropout for any RecBole context-aware (CTR) model (DropoutNet-style; config key ``item_id_dropout``).

A CTR baseline given SIDs as features ("DeepFM + SID") still has an ``item_id`` field, whose embedding is the one
thing a cold item cannot have: it was never trained, so at test time it is random noise next to the item's SID
fields. With ``item_id_dropout: p`` (> 0):

* in training, each row's item id is replaced by the padding id 0 with probability ``p``, so the padding row of the
  item table learns an "unknown item" vector and the other fields (SIDs, item features) learn to score alone;
* at evaluation, items without a training row get id 0 as well: a cold item is represented exactly as the rows
  that dropped their id in training, never by its untrained embedding.

Applied by the runner (``recbole_sid.quick_start.prepare_run``) to context-aware models that do not handle cold
items themselves (COINS has its own gate and cold handling and refuses the key). The model's own code is not
changed: its ``calculate_loss`` / ``predict`` receive a copy of the batch with the item ids replaced.
"""
from __future__ import annotations

from logging import getLogger

import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType

from recbole_sid.config_values import cfg_float
from recbole_sid.exceptions import ConfigError


def _replace_items(interaction, field: str, new_items: torch.Tensor):
    data = dict(interaction.interaction)
    data[field] = new_items
    return Interaction(data)


def apply_item_id_dropout(config, model, train_dataset) -> float:
    """Wrap ``model``'s ``calculate_loss``, ``predict`` and ``forward`` as described in the module docstring when
    ``item_id_dropout`` > 0; returns the probability (0.0: nothing done)."""
    p = cfg_float(config, "item_id_dropout", 0.0, minimum=0.0, maximum=1.0)
    if p <= 0.0:
        return 0.0
    if config["MODEL_TYPE"] != ModelType.CONTEXT:
        raise ConfigError(f"config key 'item_id_dropout' applies to context-aware (CTR) models; {config['model']} "
                          f"is a {config['MODEL_TYPE'].name.lower()} model")
    if config["model"] == "COINS":
        raise ConfigError("config key 'item_id_dropout' is for CTR baselines; COINS handles cold items with its own "
                          "gate and cold simulation (cold_gate, cold_simulation_prob)")
    field = config["ITEM_ID_FIELD"]
    items = torch.as_tensor(train_dataset.inter_feat[field])
    warm = torch.zeros(train_dataset.item_num, dtype=torch.bool)
    warm[items] = True
    model.register_buffer("item_id_warm", warm.to(next(model.parameters()).device), persistent=False)
    calculate_loss, predict = model.calculate_loss, model.predict

    def dropped_loss(interaction):
        ids = interaction[field]
        drop = torch.rand(ids.shape, device=ids.device) < p
        return calculate_loss(_replace_items(interaction, field, torch.where(drop, torch.zeros_like(ids), ids)))

    def cold_to_unknown(interaction):
        ids = interaction[field]
        known = model.item_id_warm[ids]
        return predict(_replace_items(interaction, field, torch.where(known, ids, torch.zeros_like(ids))))

    model.calculate_loss, model.predict = dropped_loss, cold_to_unknown
    getLogger().info(f"item_id_dropout: {config['model']} drops the item id of each training row with probability "
                     f"{p}; the {int((~warm[1:]).sum())} items without training rows use the padding id at evaluation")
    return p
