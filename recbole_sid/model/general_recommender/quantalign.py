"""QuantAlign: two-stage baseline that quantizes first and aligns later (LETTER-style order).

Stage 1: RQ-VAE on item semantic embeddings, codes frozen. Stage CF: a BPR-MF model on the training split gives
collaborative item embeddings. Stage 2 (RecBole's training loop): the SID code embeddings of the shared scorer are
aligned to those collaborative embeddings with InfoNCE (in-batch negatives), next to the scorer's BPR loss.
"""
from logging import getLogger

import torch

from recbole_sid.model.stages import train_bpr_mf, training_pairs
from recbole_sid.model.general_recommender.rqvae import RQVAE
from recbole_sid.model.layers import info_nce


class QuantAlign(RQVAE):
    """Quantize (frozen RQ-VAE codes), then align the code embeddings to CF embeddings (transfer by InfoNCE)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.align_weight = float(config["align_weight"])
        self.align_temperature = float(config["align_temperature"])
        self.cf_epochs = int(config["cf_epochs"])
        self.cf_lr = float(config["cf_lr"])
        self._train_users, self._train_items = training_pairs(dataset)
        self.register_buffer("cf_item_emb", torch.zeros(self.n_items, self.embedding_size))

    def fit_tokenizer(self, train_data) -> None:
        super().fit_tokenizer(train_data)  # stage 1: RQ-VAE codes, frozen from here on
        _, item_emb = train_bpr_mf(self._train_users, self._train_items, self.n_users, self.n_items,
                                   self.embedding_size, epochs=self.cf_epochs, lr=self.cf_lr, seed=self.seed,
                                   device=self.item_codes.device)
        self.cf_item_emb.copy_(item_emb)
        getLogger().info("QuantAlign: CF item embeddings ready; stage 2 aligns SID code embeddings to them")

    def extra_loss(self, interaction):
        if self.align_weight <= 0:
            return None
        items = interaction[self.ITEM_ID]
        code_vec = self.scorer.item_vectors(self.item_codes[items])
        return self.align_weight * info_nce(code_vec, self.cf_item_emb[items], self.align_temperature, ids=items)
