"""``SIDRecommender``: the base class of every SID model of the plugin, in two phases.

Phase 1 (:meth:`fit_tokenizer`, run once by ``SIDTrainer`` before RecBole's loop): the model's tokenizer
(``recbole_sid.tokenizers``) turns semantic embeddings and the training split into item (and user) SIDs, which are
then frozen. Phase 2 (RecBole's own training loop, early stopping and evaluation): the shared :class:`SIDHead`
is trained on the frozen SIDs with BPR. A subclass only names its tokenizer (``tokenizer_class``); the head, its
options (``sid_head_id``, ``sid_head_init``) and its size are the same for every SID model.
"""
from __future__ import annotations

from logging import getLogger

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_sid.config_values import cfg, cfg_choice
from recbole_sid.data.negatives import warm_item_pool, warm_negatives_enabled
from recbole_sid.data.semantic import item_semantic_embeddings, user_semantic_embeddings
from recbole_sid.exceptions import ConfigError
from recbole_sid.model.layers import HEAD_INITS, SIDHead
from recbole_sid.tokenizers.base import PhaseLog, Tokenizer, TokenizerInput, TokenizerOutput
from recbole_sid.tokenizers.stages import interaction_pairs


class SIDRecommender(GeneralRecommender):
    """Tokenizer (phase 1) -> frozen SIDs -> the shared SID head (phase 2, BPR, full-sort top-k)."""

    input_type = InputType.PAIRWISE
    #: the phase-1 tokenizer of this model (a ``recbole_sid.tokenizers.Tokenizer`` subclass)
    tokenizer_class: type[Tokenizer] = Tokenizer

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.tokenizer = self.tokenizer_class(config, self.n_users, self.n_items)  # reads and checks its keys
        self.sid_levels, self.codebook_size = self.tokenizer.num_levels, self.tokenizer.codebook_size
        self.embedding_size = int(config["embedding_size"])
        self.head_init = cfg_choice(config, "sid_head_init", HEAD_INITS, "codebook")
        self.register_buffer("item_codes", torch.zeros(self.n_items, self.sid_levels, dtype=torch.long))
        if self.tokenizer.has_user_sids:
            self.register_buffer("user_codes", torch.zeros(self.n_users, self.tokenizer.user_levels,
                                                           dtype=torch.long))
        self.register_buffer("tokenizer_fitted", torch.tensor(False))
        try:
            self.head = SIDHead(self.n_users, self.n_items, self.sid_levels, self.codebook_size,
                                self.embedding_size, use_item_id=bool(cfg(config, "sid_head_id", False)),
                                id_dropout=float(cfg(config, "sid_head_id_dropout", 0.0)))
        except ValueError as exc:
            raise ConfigError(f"config key {exc}") from exc
        train_users, train_items = interaction_pairs(dataset)  # the model's dataset is RecBole's TRAINING split
        self.head.warm[train_items] = True
        item_sem = item_semantic_embeddings(config, dataset)
        user_sem = user_semantic_embeddings(config, dataset, item_sem) if self.tokenizer.has_user_sids else None
        #: what phase 1 reads (plain tensors, not part of the checkpoint)
        self.tokenizer_input = TokenizerInput(item_sem=item_sem, user_sem=user_sem, train_users=train_users,
                                              train_items=train_items, n_users=self.n_users, n_items=self.n_items,
                                              negative_items=warm_item_pool(train_items)
                                              if warm_negatives_enabled(config) else None)
        self.item_tokens = np.asarray(dataset.field2id_token[self.ITEM_ID])
        self.user_tokens = np.asarray(dataset.field2id_token[self.USER_ID])
        self.export_settings = {"dataset": config["dataset"], "model": config["model"],
                                "dedup_max": config["sid_dedup_max"],
                                "quality_k": int(cfg(config, "sid_quality_k", 10))}
        self._eval_item_vectors = None

    # --- phase 1 -------------------------------------------------------------------------------------------
    def fit_tokenizer(self, train_data=None, valid_data=None, tensorboard=None) -> TokenizerOutput:
        """Run the tokenizer once and freeze its SIDs in ``item_codes`` (and ``user_codes``). ``valid_data`` feeds
        a tokenizer's own stopping rule (DAS); the head's code embeddings start from the tokenizer's codebooks
        when ``sid_head_init: codebook``."""
        data = self.tokenizer_input
        device = self.item_codes.device
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(data).items()}
        data = TokenizerInput(**moved)
        data.tensorboard = tensorboard
        if valid_data is not None:
            data.valid_users, data.valid_items = (t.to(device) for t in interaction_pairs(valid_data._dataset))
        output = self.tokenizer.fit(data, PhaseLog(tensorboard))
        self.set_sids(output)
        return output

    def export_sids(self, output: TokenizerOutput, directory, overwrite: bool = True) -> dict:
        """Write phase 1's SIDs and their quality report to ``directory`` (``recbole_sid.sid_export``)."""
        from recbole_sid.sid_export import export_sids

        return export_sids(output, directory, item_tokens=self.item_tokens, user_tokens=self.user_tokens,
                           item_field=self.ITEM_ID, user_field=self.USER_ID, last_level=self.tokenizer.last_level,
                           overwrite=overwrite, **self.export_settings)

    @torch.no_grad()
    def set_sids(self, output: TokenizerOutput) -> None:
        """Store (freeze) the tokenizer's SIDs; row 0 is RecBole's padding entity."""
        codes = torch.as_tensor(np.asarray(output.items.codes), dtype=torch.long, device=self.item_codes.device)
        if tuple(codes.shape) != (self.n_items - 1, self.sid_levels):
            raise ValueError(f"expected item SIDs of shape {(self.n_items - 1, self.sid_levels)}, "
                             f"got {tuple(codes.shape)}")
        self.item_codes[1:] = codes
        if self.tokenizer.has_user_sids and output.users is not None:
            self.user_codes[1:] = torch.as_tensor(np.asarray(output.users.codes), dtype=torch.long,
                                                  device=self.user_codes.device)
        if self.head_init == "codebook":
            self.head.init_from_codebooks(output.items.codebooks)
            getLogger().info("SID head: code embeddings initialised from the tokenizer's codebooks")
        self.tokenizer_fitted.fill_(True)
        self._eval_item_vectors = None

    # --- phase 2: the RecBole model contract ---------------------------------------------------------------
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.head.item_vectors(items, self.item_codes[items])

    def calculate_loss(self, interaction):
        users = self.head.user_vectors(interaction[self.USER_ID])
        return self.head.bpr_loss(users, self.item_vectors(interaction[self.ITEM_ID]),
                                  self.item_vectors(interaction[self.NEG_ITEM_ID]))

    def predict(self, interaction):
        users = self.head.user_vectors(interaction[self.USER_ID])
        return (users * self.item_vectors(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        users = self.head.user_vectors(interaction[self.USER_ID])
        return (users @ self._all_item_vectors().T).view(-1)

    def _all_item_vectors(self) -> torch.Tensor:
        """Every item's head vector; in eval mode computed once per evaluation (cleared by ``train()``)."""
        if self.training:
            return self.item_vectors(torch.arange(self.n_items, device=self.item_codes.device))
        if self._eval_item_vectors is None:
            with torch.no_grad():
                self._eval_item_vectors = self.item_vectors(torch.arange(self.n_items, device=self.item_codes.device))
        return self._eval_item_vectors

    def train(self, mode: bool = True):
        self._eval_item_vectors = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._eval_item_vectors = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
