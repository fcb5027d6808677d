"""``SIDRecommender``: base class of every semantic-ID tokenizer model of the plugin.

A tokenizer turns item (and user) semantic embeddings into SIDs; the shared :class:`SIDScorer` turns SIDs into
top-k scores, trained with BPR inside RecBole's usual training loop. Subclasses implement
:meth:`fit_tokenizer` (stages that run before the loop; nothing for one-stage models) and may add loss terms
with :meth:`extra_loss`. After training, :meth:`export_sids` writes ``NAME.itemsid`` (+ ``NAME.usersid``) and
``NAME-<Model>.sid_quality.json``.
"""
from __future__ import annotations

import json
from logging import getLogger
from pathlib import Path

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_sid.atomic_io import atomic_write, write_sids
from recbole_sid.data.semantic import item_semantic_embeddings
from recbole_sid.exceptions import ConfigError
from recbole_sid.model.layers import SIDScorer
from recbole_sid.quantization import add_dedup_level, check_quantizer_params
from recbole_sid.quantization.unique import unique_last_level


class SIDRecommender(GeneralRecommender):
    """Item SIDs from semantic embeddings, scored by the shared SID scorer (BPR, full-sort top-k)."""

    input_type = InputType.PAIRWISE
    #: number of user SID levels (0: the model has no user SIDs)
    user_sid_levels = 0

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.sid_levels = int(config["sid_levels"])
        self.codebook_size = int(config["sid_codebook_size"])
        self.embedding_size = int(config["embedding_size"])
        check_quantizer_params(self.sid_levels, self.codebook_size, n_items=self.n_items - 1)
        self.seed = int(config["seed"])
        self.dedup_max = config["sid_dedup_max"]
        self.quality_k = int(config["sid_quality_k"] or 10)
        self.sid_export = bool(config["sid_export"])
        self.last_level = config["sid_last_level"]
        if self.last_level not in ("unique", "greedy"):
            raise ConfigError(f"config key 'sid_last_level' must be 'unique' or 'greedy', got {self.last_level!r}")
        #: collision rate of the plain greedy codes, per side, before the collision-aware last level
        self.greedy_collision_rate: dict[str, float] = {}
        self.export_dir = config["sid_export_dir"] or config["checkpoint_dir"]
        self.dataset_name = config["dataset"]
        self.model_name = config["model"] if isinstance(config["model"], str) else type(self).__name__
        self.item_tokens = np.asarray(dataset.field2id_token[self.ITEM_ID])
        self.user_tokens = np.asarray(dataset.field2id_token[self.USER_ID])

        self.register_buffer("item_sem", item_semantic_embeddings(config, dataset), persistent=False)
        self.register_buffer("item_codes", torch.zeros(self.n_items, self.sid_levels, dtype=torch.long))
        self.register_buffer("tokenizer_fitted", torch.tensor(False))
        self._eval_item_vectors = None
        self.scorer = SIDScorer(self.n_users, self.sid_levels, self.codebook_size, self.embedding_size,
                                **self.scorer_user_args(config))

    # --- hooks for subclasses ------------------------------------------------------------------------------
    def scorer_user_args(self, config) -> dict:
        """Extra arguments of the scorer's user side (DAS adds user SID levels)."""
        return {}

    def fit_tokenizer(self, train_data) -> None:
        """Stages before RecBole's training loop; must set ``item_codes`` (rows 1..n_items-1)."""
        raise NotImplementedError

    def extra_loss(self, interaction) -> torch.Tensor | None:
        """Loss terms added to the scorer's BPR in the training loop (e.g. QuantAlign's alignment)."""
        return None

    def current_item_codes(self) -> torch.Tensor:
        """Item codes used for scoring (one-stage models recompute them from their quantizer)."""
        return self.item_codes

    def current_user_codes(self) -> torch.Tensor | None:
        return None

    def item_reconstructions(self) -> np.ndarray | None:
        """Reconstruction of each real item's semantic embedding from its SID (for the quality report)."""
        return None

    # --- shared helpers ------------------------------------------------------------------------------------
    def set_item_codes(self, codes) -> None:
        """Store the SIDs of items 1..n_items-1 (row 0 is RecBole's padding item)."""
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.item_codes.device)
        if codes.shape != (self.n_items - 1, self.sid_levels):
            raise ValueError(f"expected codes of shape {(self.n_items - 1, self.sid_levels)}, got {tuple(codes.shape)}")
        self.item_codes[1:] = codes
        self.tokenizer_fitted.fill_(True)

    def finalize_codes(self, x, codebooks, codes, side: str = "item") -> np.ndarray:
        """Greedy codes -> the stored SIDs: with ``sid_last_level: unique`` the last level of colliding items is
        re-assigned to distinct codes (``recbole_sid.quantization.unique_last_level``); the greedy collision rate
        is kept for the quality report either way."""
        from recbole_sid.quality import collision_rate

        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        codebooks = [cb.detach().cpu().numpy() if isinstance(cb, torch.Tensor) else np.asarray(cb) for cb in codebooks]
        codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        self.greedy_collision_rate[side] = float(collision_rate(codes))
        if self.last_level == "unique":
            codes, changed = unique_last_level(x, codebooks, codes)
            if changed:
                getLogger().debug(f"{side} SIDs: collision-aware last level re-assigned {changed} codes")
        return codes

    def real_item_embeddings(self) -> torch.Tensor:
        return self.item_sem[1:]

    # --- RecBole model contract ----------------------------------------------------------------------------
    def _user_vectors(self, users):
        user_codes = self.current_user_codes()
        return self.scorer.user_vectors(users, None if user_codes is None else user_codes[users])

    def rec_loss(self, users, pos_items, neg_items) -> torch.Tensor:
        """``L_rec``: BPR of the shared SID scorer on the current SIDs (items and, for DAS, users)."""
        codes = self.current_item_codes()
        return self.scorer.bpr_loss(self._user_vectors(users), self.scorer.item_vectors(codes[pos_items]),
                                    self.scorer.item_vectors(codes[neg_items]))

    def calculate_loss(self, interaction):
        loss = self.rec_loss(interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        extra = self.extra_loss(interaction)
        return loss if extra is None else loss + extra

    def predict(self, interaction):
        codes = self.current_item_codes()
        user_vec = self._user_vectors(interaction[self.USER_ID])
        return (user_vec * self.scorer.item_vectors(codes[interaction[self.ITEM_ID]])).sum(-1)

    def full_sort_predict(self, interaction):
        user_vec = self._user_vectors(interaction[self.USER_ID])
        return (user_vec @ self._all_item_vectors().T).view(-1)

    def _all_item_vectors(self) -> torch.Tensor:
        """Every item's scorer vector; in eval mode computed once per evaluation (cleared by ``train()``)."""
        if self.training:
            return self.scorer.item_vectors(self.current_item_codes())
        if self._eval_item_vectors is None:
            with torch.no_grad():
                self._eval_item_vectors = self.scorer.item_vectors(self.current_item_codes())
        return self._eval_item_vectors

    def train(self, mode: bool = True):
        self._eval_item_vectors = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._eval_item_vectors = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- export --------------------------------------------------------------------------------------------
    def _quality(self, codes_with_dedup, embeddings, reconstructions):
        from recbole_sid.quality import sid_quality

        return sid_quality(codes_with_dedup, codebook_size=self.codebook_size, has_dedup_level=True,
                           embeddings=embeddings, reconstructions=reconstructions, k=self.quality_k)

    @torch.no_grad()
    def export_sids(self, directory=None) -> dict:
        """Write ``NAME.itemsid`` (+ ``NAME.usersid``) with a dedup level and ``NAME-<Model>.sid_quality.json``."""
        logger = getLogger()
        directory = Path(directory or self.export_dir)
        item_codes = self.current_item_codes()[1:].cpu().numpy()
        try:
            item_full, item_dedup = add_dedup_level(item_codes, max_size=self.dedup_max)
        except Exception as exc:
            raise ConfigError(f"sid_dedup_max={self.dedup_max}: {exc}") from exc
        files = {"itemsid": str(write_sids(directory / f"{self.dataset_name}.itemsid", self.item_tokens[1:],
                                           item_full, id_field=self.ITEM_ID))}
        report = {"model": self.model_name, "dataset": self.dataset_name,
                  "items": self._quality(item_full, self.real_item_embeddings().cpu().numpy(),
                                         self.item_reconstructions()).to_dict()}
        report["items"]["dedup_size"] = int(item_dedup)
        report["items"]["sid_last_level"] = self.last_level
        report["items"]["collision_rate_greedy"] = self.greedy_collision_rate.get("item")
        user_codes = self.current_user_codes()
        if user_codes is not None:
            codes = user_codes[1:].cpu().numpy()
            user_full, user_dedup = add_dedup_level(codes, max_size=self.dedup_max)
            files["usersid"] = str(write_sids(directory / f"{self.dataset_name}.usersid", self.user_tokens[1:],
                                              user_full, id_field=self.USER_ID))
            report["users"] = self._quality(user_full, None, None).to_dict()
            report["users"]["dedup_size"] = int(user_dedup)
            report["users"]["collision_rate_greedy"] = self.greedy_collision_rate.get("user")
        quality_path = directory / f"{self.dataset_name}-{self.model_name}.sid_quality.json"
        with atomic_write(quality_path) as f:
            json.dump(report, f, indent=2, default=float)
        files["quality"] = str(quality_path)
        items = report["items"]
        logger.info(f"SIDs exported: {', '.join(files.values())}")
        logger.info(f"item SID quality: collision rate before dedup {items.get('collision_rate')}, "
                    f"(greedy {items['collision_rate_greedy']}), "
                    f"level-1 usage {items['levels'][0]['usage'] if items.get('levels') else 'n/a'}, "
                    f"dedup size {item_dedup}")
        return {"sid_files": files, "sid_quality": report}

