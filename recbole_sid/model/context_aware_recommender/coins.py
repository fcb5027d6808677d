"""COINS: semantic-ID enhanced cold item representation for CTR prediction (arXiv 2510.12604).

The paper publishes no code; every choice below is a key of ``properties/model/COINS.yaml`` (commented there).

Pipeline, per row (user u, item i, context C):

1. RQ-OPQ codes of the item's semantic embedding, computed once at model init (training-free, deterministic
   for the config ``seed``): RQ1..RQ3 by greedy residual k-means and OPQ codes of the FINAL residual
   (:func:`recbole_sid.quantization.rq_opq_encode`); or the first ``coins_rq_levels`` levels of an ``.itemsid``
   file (``coins_sid_file``), the OPQ codes then coming from the residual w.r.t. per-code mean codebooks.
2. Embeddings: RecBole's field embeddings (context, user profile, item features), the item ID embedding (RecBole's
   ``item_id`` field), one table per RQ level, one per OPQ sub-space.
3. ``Iemb_RQ = RQFusion(RQ1, RQ2, RQ3)``; ``Iemb_OPQ = Fusion(OPQ_1..OPQ_M)`` (item-specific).
4. ``Tg = sigmoid(DNN(C, Up, X, pop))`` with ``pop`` = normalised log count of the item's TRAINING rows;
   ``Iemb_c = Tg * Iemb_id + (1 - Tg) * Iemb_RQ``. An item with no training row has popularity 0, its ID embedding
   (never trained) is replaced by ``cold_id_embedding`` (zeros by default) and, with ``cold_gate: mask``, its
   gate is 0: it is represented by its semantic IDs only. A code that no item with training rows carries was never
   trained and reads as zeros; cold simulation (``cold_simulation_prob``) treats a training row's item as cold on
   every branch: ID, gate, popularity, and the RQ and OPQ codes that only this item carries.
   Ablations: ``coins_gate: fixed`` (Tg = 0.5), ``coins_opq_subspaces: 0`` (no OPQ branch),
   ``transfer_weight: 0``, ``coins_code_source: content``.
5. ``[fields except item_id ; Iemb_c ; Iemb_OPQ]`` -> DNN -> logit; ``L = BCE + transfer_weight * L_trans``
   (:func:`recbole_sid.model.gate.transfer_loss`, the paper's KL terms in the paper's argument order, on
   L2-normalised vectors with a temperature so that the distributions are not uniform; each term logged).
"""
from __future__ import annotations

from logging import getLogger
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from recbole.model.abstract_recommender import ContextRecommender
from recbole.model.layers import BaseFactorizationMachine, MLPLayers
from torch.nn.init import constant_, xavier_normal_

from recbole_sid.config_values import cfg, cfg_choice, cfg_float, cfg_int
from recbole_sid.data.semantic import item_semantic_embeddings
from recbole_sid.data.sid_files import resolve_data_file, sid_file_codes
from recbole_sid.exceptions import ConfigError, DataError
from recbole_sid.model.gate import FUSION_MODES, TRANSFER_DISTANCES, AdaptiveGate, RQFusion, transfer_loss
from recbole_sid.quantization import opq_encode, rq_opq_encode
from recbole_sid.quantization.faiss_ops import residual_kmeans

COLD_GATE_MODES = ("mask", "learn")
#: ``adaptive``: the paper's learnt gate Tg; ``fixed``: the "no gate" ablation, Tg = 0.5 for every item (then the
#: cold rule of ``cold_gate`` as for the learnt gate)
GATE_MODES = ("adaptive", "fixed")
COLD_ID_MODES = ("zero", "unknown")
#: what the RQ-OPQ codes quantize (without ``coins_sid_file``): ``aligned`` = content + collaborative (the item
#: text embedding mapped onto BPR-MF item embeddings of the training clicks by a contrastive adapter, QARM's
#: alignment; cold items get their vector from their text alone), ``content`` = the text embedding only
CODE_SOURCES = ("aligned", "content")


def mean_codebooks(x: np.ndarray, codes: np.ndarray) -> tuple[list, np.ndarray]:
    """Codebooks that fit given RQ ``codes`` [N, L] to ``x`` [N, D] and the final residual.

    Level ``l``'s code ``c`` gets the mean of the level-``l`` residuals of the items carrying it (the least-squares
    codebook for fixed assignments, i.e. one k-means update step); the residual then moves on to level ``l + 1``.
    Codes used by no item keep a zero vector.
    """
    x = np.asarray(x, dtype=np.float32)
    codes = np.asarray(codes, dtype=np.int64)
    residual = x.copy()
    codebooks = []
    for level in range(codes.shape[1]):
        col = codes[:, level]
        k = int(col.max()) + 1
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        np.add.at(sums, col, residual)
        counts = np.bincount(col, minlength=k).astype(np.float64)
        centroids = (sums / np.maximum(counts, 1.0)[:, None]).astype(np.float32)
        residual = residual - centroids[col]
        codebooks.append(centroids)
    return codebooks, residual


class COINS(ContextRecommender):
    """Gated cold-item CTR model over RQ-OPQ semantic IDs (pointwise BCE; ``predict`` returns probabilities)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        logger = getLogger()
        self.ITEM_ID = config["ITEM_ID_FIELD"]
        self.n_items = dataset.item_num
        self.seed = int(cfg(config, "seed", 2020))
        self.mlp_hidden_size = list(cfg(config, "mlp_hidden_size", [128, 128, 128]))
        self.dropout_prob = cfg_float(config, "dropout_prob", 0.2, 0.0, 1.0)
        self.rq_levels = cfg_int(config, "coins_rq_levels", 3, minimum=1)
        self.codebook_size = cfg_int(config, "coins_codebook_size", 256, minimum=2)
        self.opq_subspaces = cfg_int(config, "coins_opq_subspaces", 2, minimum=0)
        self.opq_nbits = cfg_int(config, "coins_opq_nbits", 8, minimum=1)
        self.kmeans_iters = cfg_int(config, "coins_kmeans_iters", 20, minimum=1)
        self.opq_iters = cfg_int(config, "coins_opq_iters", 25, minimum=1)
        self.use_gpu = cfg(config, "faiss_use_gpu", "auto")
        self.sid_file = cfg(config, "coins_sid_file", None)
        self.code_source = cfg_choice(config, "coins_code_source", CODE_SOURCES, "aligned")
        rq_fusion = cfg_choice(config, "rq_fusion", FUSION_MODES, "concat")
        opq_fusion = cfg_choice(config, "opq_fusion", FUSION_MODES, "concat")
        self.cold_gate = cfg_choice(config, "cold_gate", COLD_GATE_MODES, "mask")
        self.gate_mode = cfg_choice(config, "coins_gate", GATE_MODES, "adaptive")
        self.cold_id_embedding = cfg_choice(config, "cold_id_embedding", COLD_ID_MODES, "zero")
        self.cold_simulation_prob = cfg_float(config, "cold_simulation_prob", 0.1, 0.0, 1.0)
        self.transfer_weight = cfg_float(config, "transfer_weight", 0.1, 0.0)
        self.transfer_distance = cfg_choice(config, "transfer_distance", TRANSFER_DISTANCES, "kl")
        self.transfer_temperature = cfg_float(config, "transfer_temperature", 0.1, 1e-6)
        self.transfer_normalize = bool(cfg(config, "transfer_normalize", True))
        gate_hidden = list(cfg(config, "gate_hidden_size", [64]) or [])
        self.use_fm = bool(cfg(config, "coins_fm", False))
        self.use_first_order = bool(cfg(config, "coins_first_order", False))

        if self.ITEM_ID not in self.token_field_names:
            raise ConfigError(f"COINS needs the item id field '{self.ITEM_ID}' among the model's token fields")
        # position of the item id embedding inside embed_input_fields' sparse output [token_seq..., token...]
        self._item_slot = len(self.token_seq_field_names) + self.token_field_names.index(self.ITEM_ID)
        self._item_offset = int(self.token_field_offsets[self.token_field_names.index(self.ITEM_ID)])
        # The FM first-order part (RecBole's ``first_order_linear``: a bias per token, a weight per numerical feature)
        # is off by default: an item-id bias would bring back the untrained ID of cold items. ``coins_first_order``
        # keeps it for every field but item_id, whose rows are zeroed at init and never updated (gradient masked).
        if not self.use_first_order:
            del self.first_order_linear
        # 1. codes (training-free, deterministic for the config seed)
        rq_codes, opq_codes = self._encode_items(config, dataset)
        self.item_tokens = np.asarray(dataset.field2id_token[self.ITEM_ID])
        self.dataset_name = config["dataset"]
        self.rq_table_size = int(rq_codes.max()) + 1 if self.sid_file else self.codebook_size
        opq_k = 2 ** self.opq_nbits
        self.register_buffer("item_rq_codes", torch.zeros(self.n_items, self.rq_levels, dtype=torch.long))
        self.register_buffer("item_opq_codes", torch.zeros(self.n_items, self.opq_subspaces, dtype=torch.long))
        self.item_rq_codes[1:] = torch.from_numpy(np.ascontiguousarray(rq_codes, dtype=np.int64))
        self.item_opq_codes[1:] = torch.from_numpy(np.ascontiguousarray(opq_codes, dtype=np.int64))
        self.register_buffer("_rq_offsets", torch.arange(self.rq_levels) * self.rq_table_size, persistent=False)
        self.register_buffer("_opq_offsets", torch.arange(self.opq_subspaces) * opq_k, persistent=False)

        # item training popularity: log(1 + rows of the item in the dataset the model is built on = TRAINING split)
        items = torch.as_tensor(np.asarray(dataset.inter_feat[self.ITEM_ID]), dtype=torch.long)
        counts = torch.bincount(items, minlength=self.n_items).to(torch.float32)
        log_pop = torch.log1p(counts)
        self.register_buffer("item_log_pop", log_pop / log_pop.max().clamp_min(1e-12))
        self.register_buffer("item_warm", (counts > 0).to(torch.float32))
        # per code slot, how many items WITH training rows carry it: a code no such item carries was never trained
        # (its embedding is its random init), so it is read as zeros (:meth:`_code_embeddings`)
        self.register_buffer("rq_code_warm_items", self._warm_counts(self.item_rq_codes + self._rq_offsets,
                                                                     self.rq_levels * self.rq_table_size))
        self.register_buffer("opq_code_warm_items", self._warm_counts(self.item_opq_codes + self._opq_offsets,
                                                                      self.opq_subspaces * opq_k))
        n_cold = int((counts[1:] == 0).sum())
        logger.info(f"COINS: {self.n_items - 1} items, {n_cold} without training rows (cold: popularity 0, ID "
                    f"embedding -> {self.cold_id_embedding}, gate -> {self.cold_gate})")

        # 2. embedding tables of the SID side
        d = self.embedding_size
        self.rq_embedding = nn.Embedding(self.rq_levels * self.rq_table_size, d)
        self.opq_embedding = nn.Embedding(self.opq_subspaces * opq_k, d) if self.opq_subspaces else None
        self.rq_fusion = RQFusion(self.rq_levels, d, rq_fusion)
        self.opq_fusion = RQFusion(self.opq_subspaces, d, opq_fusion) if self.opq_subspaces else None
        self.unknown_item = nn.Parameter(torch.zeros(d)) if self.cold_id_embedding == "unknown" else None

        # 3. gate and CTR tower
        self.n_other_fields = self.num_feature_field - 1
        self.gate = (AdaptiveGate(self.n_other_fields * d + 1, gate_hidden, self.dropout_prob)
                     if self.gate_mode == "adaptive" else None)
        tower_in = (self.n_other_fields + 1 + (1 if self.opq_subspaces else 0)) * d
        self.mlp_layers = (MLPLayers([tower_in] + self.mlp_hidden_size, self.dropout_prob) if self.mlp_hidden_size
                           else nn.Identity())
        self.predict_layer = nn.Linear(self.mlp_hidden_size[-1] if self.mlp_hidden_size else tower_in, 1)
        # optional FM part (DeepFM's second-order term) over the same field vectors the DNN sees
        self.fm = BaseFactorizationMachine(reduce_sum=True) if self.use_fm else None
        self.loss = nn.BCEWithLogitsLoss()
        self.apply(self._init_weights)
        if self.use_first_order:
            self._freeze_item_bias()

    # --- codes ---------------------------------------------------------------------------------------------
    def _encode_items(self, config, dataset):
        logger = getLogger()
        x = item_semantic_embeddings(config, dataset)[1:].cpu().numpy().astype(np.float32)
        if self.sid_file:
            path = resolve_data_file(config, "coins_sid_file")
            rq_codes = sid_file_codes(path, dataset, self.rq_levels, "coins_sid_file", "coins_rq_levels")
            codebooks, residual = mean_codebooks(x, rq_codes)
            if self.opq_subspaces:
                opq_codes = opq_encode(residual, self.opq_subspaces, nbits=self.opq_nbits, seed=self.seed,
                                       niter=self.kmeans_iters, opq_niter=self.opq_iters, use_gpu=self.use_gpu).codes
            else:
                opq_codes = np.zeros((x.shape[0], 0), dtype=np.int64)
            source = f"the first {self.rq_levels} levels of {path} (OPQ on the residual w.r.t. per-code means)"
        else:
            if self.code_source == "aligned":
                x = self._aligned_vectors(config, dataset)
            if self.opq_subspaces:
                result = rq_opq_encode(x, num_levels=self.rq_levels, codebook_size=self.codebook_size,
                                       opq_subspaces=self.opq_subspaces, opq_nbits=self.opq_nbits, seed=self.seed,
                                       niter=self.kmeans_iters, opq_niter=self.opq_iters, use_gpu=self.use_gpu)
                rq_codes, opq_codes = result.rq_codes, result.opq_codes
            else:  # the "no OPQ" ablation: the RQ levels alone
                rq_codes = residual_kmeans(x, self.rq_levels, self.codebook_size, seed=self.seed,
                                           niter=self.kmeans_iters, use_gpu=self.use_gpu)[0]
                opq_codes = np.zeros((x.shape[0], 0), dtype=np.int64)
            source = (f"RQ-OPQ ({self.rq_levels} x {self.codebook_size} residual k-means, seed {self.seed}) of the "
                      f"{'content + collaborative (aligned)' if self.code_source == 'aligned' else 'content'} "
                      f"vectors")
        used = [len(np.unique(rq_codes[:, level])) for level in range(rq_codes.shape[1])]
        unique = len(np.unique(np.concatenate([rq_codes, opq_codes], axis=1), axis=0))
        opq = f"OPQ {self.opq_subspaces} x {2 ** self.opq_nbits}" if self.opq_subspaces else "no OPQ codes"
        logger.info(f"COINS: item codes from {source}; RQ codes used per level {used}; {opq}; {unique} distinct "
                    f"RQ+OPQ codes for {x.shape[0]} items")
        return rq_codes, opq_codes

    def _aligned_vectors(self, config, dataset) -> np.ndarray:
        """Content + collaborative item vectors ``[item_num - 1, cf_embedding_size]`` (L2-normalised): BPR-MF item
        embeddings of the training clicks (label-1 rows; negatives from items with training rows when
        ``warm_negatives`` is on), then a contrastive adapter from each item's semantic embedding onto them, trained
        on the clicked items and applied to every item (QARM's alignment, ``recbole_sid.tokenizers.stages``)."""
        from recbole_sid.data.negatives import warm_item_pool, warm_negatives_enabled
        from recbole_sid.quantization.rqvae import mlp
        from recbole_sid.tokenizers.stages import train_bpr_mf, train_contrastive_adapter

        sem = item_semantic_embeddings(config, dataset).float()
        inter = dataset.inter_feat
        users = torch.as_tensor(np.asarray(inter[dataset.uid_field]), dtype=torch.long)
        items = torch.as_tensor(np.asarray(inter[self.ITEM_ID]), dtype=torch.long)
        if self.LABEL in inter:
            clicked = torch.as_tensor(np.asarray(inter[self.LABEL])) > 0.5
            users, items = users[clicked], items[clicked]
        if len(items) == 0:
            raise DataError("coins_code_source: aligned needs clicks (label-1 training rows); the training split has "
                            "none. Use coins_code_source: content")
        cf_dim = cfg_int(config, "cf_embedding_size", 64, minimum=1)
        pool = warm_item_pool(items) if warm_negatives_enabled(config) else None
        _, cf_item = train_bpr_mf(users, items, dataset.user_num, self.n_items, cf_dim,
                                  epochs=cfg_int(config, "cf_epochs", 30, minimum=1),
                                  lr=cfg_float(config, "cf_lr", 0.01, minimum=0.0), seed=self.seed,
                                  negative_items=pool, stage="COINS codes: cf (BPR-MF)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            adapter = mlp([sem.shape[1], *[int(h) for h in cfg(config, "adapter_hidden_dims", [128])], cf_dim])
        train_contrastive_adapter(adapter, sem, cf_item, torch.unique(items),
                                  epochs=cfg_int(config, "adapter_epochs", 50, minimum=1),
                                  lr=cfg_float(config, "adapter_lr", 1e-3, minimum=0.0),
                                  temperature=cfg_float(config, "align_temperature", 0.2, minimum=1e-6),
                                  seed=self.seed, stage="COINS codes: align (adapter)")
        adapter.eval()
        with torch.no_grad():
            return torch.nn.functional.normalize(adapter(sem[1:]), dim=-1).numpy().astype(np.float32)

    def export_codes(self, directory) -> dict:
        """Write the item SIDs this model uses, RQ levels then OPQ codes (``<dataset>.itemsid`` in ``directory``), so
        other models can take the same codes as features ("DeepFM + SID" with COINS's codes). Returns
        ``{"itemsid": path}``."""
        from recbole_sid.atomic_io import write_sids

        codes = torch.cat([self.item_rq_codes, self.item_opq_codes], dim=1)[1:].cpu().numpy()
        path = Path(directory) / f"{self.dataset_name}.itemsid"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_sids(path, self.item_tokens[1:], codes)
        getLogger().info(f"COINS: item codes ({self.rq_levels} RQ + {self.opq_subspaces} OPQ levels) written to {path}")
        return {"itemsid": str(path)}

    # --- layers --------------------------------------------------------------------------------------------
    def _init_weights(self, module):
        if isinstance(module, nn.Embedding):
            xavier_normal_(module.weight.data)
        elif isinstance(module, nn.Linear):
            xavier_normal_(module.weight.data)
            if module.bias is not None:
                constant_(module.bias.data, 0)

    def _freeze_item_bias(self) -> None:
        """First-order part without a per-item bias: the item_id rows of its token table are zero and stay zero."""
        linear = self.first_order_linear
        k = linear.token_field_names.index(self.ITEM_ID)
        start = int(linear.token_field_offsets[k])
        weight = linear.token_embedding_table.embedding.weight
        keep = torch.ones_like(weight)
        keep[start:start + int(linear.token_field_dims[k])] = 0.0
        self.register_buffer("_first_order_keep", keep, persistent=False)
        with torch.no_grad():
            weight.mul_(keep)
        weight.register_hook(lambda grad: grad * self._first_order_keep)

    def _warm_counts(self, slots: torch.Tensor, size: int) -> torch.Tensor:
        """``[size]`` number of items with training rows whose code (row of ``slots`` [n_items, L]) is each slot."""
        warm = self.item_warm.unsqueeze(1).expand_as(slots)
        return torch.zeros(size).index_add_(0, slots[1:].reshape(-1), warm[1:].reshape(-1))

    def _code_embeddings(self, table: nn.Embedding, slots: torch.Tensor, warm_items: torch.Tensor,
                         simulated: torch.Tensor) -> torch.Tensor:
        """``[B, L, d]`` embeddings of code ``slots`` [B, L], zero for a code that no item with training rows carries
        (never trained). ``simulated`` [B] (1 = the row's item is treated as cold, cold simulation): its own training
        rows do not count, so a code that only this item carries is zeroed too, as it would be were the item cold."""
        others = warm_items[slots] - simulated.unsqueeze(1)
        return table(slots) * (others > 0.5).to(table.weight.dtype).unsqueeze(-1)

    def item_id_row(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``token_embedding_table.embedding.weight`` holding the ID embeddings of ``item_ids``."""
        return item_ids + self._item_offset

    def _fields(self, interaction):
        """``(id_emb [B, d], others [B, F-1, d])``: RecBole's field embeddings split into item id and the rest."""
        sparse, dense = self.embed_input_fields(interaction)
        parts = [sparse[:, : self._item_slot], sparse[:, self._item_slot + 1:]]
        if dense is not None and dense.dim() == 3:
            parts.append(dense)
        return sparse[:, self._item_slot], torch.cat(parts, dim=1)

    def forward_parts(self, interaction) -> dict:
        """Every intermediate of one forward pass (used by the loss and by tests)."""
        items = interaction[self.ITEM_ID]
        id_emb, others = self._fields(interaction)
        warm = self.item_warm[items]
        known, pop = warm, self.item_log_pop[items]
        if self.training and self.cold_simulation_prob > 0:
            keep = (torch.rand(items.shape[0], device=items.device) >= self.cold_simulation_prob).to(known.dtype)
            known, pop = known * keep, pop * keep
        simulated = warm - known  # 1: an item with training rows treated as cold in this row
        cold_vec = self.unknown_item if self.unknown_item is not None else torch.zeros_like(id_emb[:1])
        known_col = known.unsqueeze(1)
        id_used = known_col * id_emb + (1.0 - known_col) * cold_vec

        rq_levels = self._code_embeddings(self.rq_embedding, self.item_rq_codes[items] + self._rq_offsets,
                                          self.rq_code_warm_items, simulated)
        rq_emb = self.rq_fusion(rq_levels)
        opq_emb = None
        if self.opq_embedding is not None:
            opq_levels = self._code_embeddings(self.opq_embedding, self.item_opq_codes[items] + self._opq_offsets,
                                               self.opq_code_warm_items, simulated)
            opq_emb = self.opq_fusion(opq_levels)

        flat = others.reshape(others.shape[0], -1)
        if self.gate_mode == "adaptive":
            gate_raw = self.gate(torch.cat([flat, pop.unsqueeze(1)], dim=1))
        else:  # "no gate" ablation: equal weights
            gate_raw = torch.full_like(pop.unsqueeze(1), 0.5)
        gate = gate_raw * known_col if self.cold_gate == "mask" else gate_raw
        item_c = gate * id_used + (1.0 - gate) * rq_emb
        item_parts = [item_c] if opq_emb is None else [item_c, opq_emb]
        logit = self.predict_layer(self.mlp_layers(torch.cat([flat, *item_parts], dim=1))).squeeze(-1)
        if self.fm is not None:
            fields = torch.cat([others, *(v.unsqueeze(1) for v in item_parts)], dim=1)
            logit = logit + self.fm(fields).squeeze(-1)
        if self.use_first_order:
            logit = logit + self.first_order_linear(interaction).squeeze(-1)
        return {"logit": logit, "gate": gate.squeeze(1), "gate_raw": gate_raw.squeeze(1), "known": known,
                "pop": pop, "id_emb": id_emb, "rq_emb": rq_emb, "opq_emb": opq_emb, "item_emb": item_c}

    def forward(self, interaction):
        return self.forward_parts(interaction)["logit"]

    def calculate_loss(self, interaction):
        """``(BCE, transfer_weight * forward term, transfer_weight * reverse term)``: RecBole's trainer sums the
        tuple and logs each term per epoch (``train_loss1`` .. ``train_loss3``), so the transfer terms' share of the
        click loss is visible in every run's log; BCE alone without a transfer weight."""
        parts = self.forward_parts(interaction)
        loss = self.loss(parts["logit"], interaction[self.LABEL])
        if self.transfer_weight <= 0:
            return loss
        _, forward, reverse = transfer_loss(parts["id_emb"], parts["rq_emb"], parts["gate"], mask=parts["known"] > 0,
                                            distance=self.transfer_distance, temperature=self.transfer_temperature,
                                            return_terms=True, normalize=self.transfer_normalize)
        return loss, self.transfer_weight * forward, self.transfer_weight * reverse

    def predict(self, interaction):
        return torch.sigmoid(self.forward(interaction))

    @torch.no_grad()
    def gate_values(self, interaction) -> torch.Tensor:
        """Weight ``Tg`` of the ID side per row (evaluation mode: no cold simulation)."""
        was = self.training
        self.eval()
        try:
            return self.forward_parts(interaction)["gate"]
        finally:
            self.train(was)
