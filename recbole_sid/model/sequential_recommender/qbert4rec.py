"""QBERT4Rec (arXiv 2512.02474, "Q-BERT4Rec"): a BERT4Rec-style encoder over items represented by semantic IDs.

The paper publishes no code and only its abstract is readable; every choice below is a key of
``properties/model/QBERT4Rec.yaml`` (commented there) and documented in ``docs/qbert4rec.md``.

Stages 1 and 2 run once, inside ``__init__`` (phase 1, on the run's device, deterministic for the config ``seed``),
and end in frozen item SIDs (the buffer ``item_codes``); stage 3 is RecBole's own training loop (phase 2):

1. cross-modal semantic injection (:class:`SemanticInjection`): a randomly initialised per-item ID query attends over
   the item's modality views (text = the item semantic embedding; optional second modality = ``qbert_image_emb_file``;
   structural = BPR-MF item embeddings of the TRAINING split) in a dynamic Transformer whose per-layer gate decides,
   per item, whether to keep fusing; trained with a multi-view InfoNCE between the fused vector and each view;
2. the plugin's shared RQ-VAE over the fused vectors gives the item SIDs (``qbert_injection: False``: over the raw
   text embeddings; ``qbert_sid_file``: SIDs read from any tokenizer's ``.itemsid`` file instead of stages 1-2);
3. item vector = sum of its SID code embeddings (+ its ID embedding for items with training rows, optional);
   bidirectional Transformer (RecBole's ``TransformerEncoder``); masks built on tensors in the model (span, tail,
   multi-region, mixed per sequence) for ``qbert_pretrain_epochs`` epochs, then fine-tuning with the tail mask
   (the masked last position predicts the next item); full-sort scores every item through its SID.

The training loader must give plain sequences (``item_id_list``, ``item_length``, ``item_id``): ``transform: ~``
(RecBole's BERT4Rec yaml sets ``mask_itemseq``, which is loaded for the model named BERT4Rec only) and
``train_neg_sample_args: ~`` (CE over all items); both are checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch
import torch.nn as nn
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.utils import InputType

from recbole_sid.atomic_io import read_vectors
from recbole_sid.config_values import cfg, cfg_choice, cfg_float, cfg_int
from recbole_sid.data.negatives import warm_item_pool, warm_negatives_enabled
from recbole_sid.data.semantic import item_semantic_embeddings
from recbole_sid.data.sid_files import resolve_data_file, sid_file_codes
from recbole_sid.exceptions import ConfigError, DataError, QuantizationError
from recbole_sid.model.layers import info_nce
from recbole_sid.tokenizers.base import PhaseLog, SideOutput, Tokenizer, TokenizerOutput
from recbole_sid.tokenizers.stages import batches, fit_rqvae, train_bpr_mf

#: mask types of stage 3 (``qbert_mask_types``)
MASK_TYPES = ("span", "tail", "multi_region")
#: activation functions RecBole's TransformerEncoder knows (``hidden_act``)
HIDDEN_ACTS = ("gelu", "relu", "swish", "tanh", "sigmoid")
#: phases of stage 3
PHASES = ("pretrain", "finetune")


# --- stage 3 masks (tensors, whole batch at once) -------------------------------------------------------------
def mask_counts(lengths: torch.Tensor, ratio: float) -> torch.Tensor:
    """Items to mask per sequence: ``round(ratio * length)``, at least 1 and at most the length (0 for length 0)."""
    k = torch.floor(lengths.to(torch.float64) * ratio + 0.5).long()
    return torch.minimum(k.clamp_min(1), lengths)


def _positions(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device).unsqueeze(0)


def _uniform_ints(high: torch.Tensor, generator=None, shape=None) -> torch.Tensor:
    """Integers uniform in ``[0, high]`` (``high`` [B] >= 0), of ``shape`` ([B] or [B, R])."""
    shape = tuple(high.shape) if shape is None else shape
    u = torch.rand(shape, generator=generator, device=high.device, dtype=torch.float64)
    bound = (high + 1).to(torch.float64).view(high.shape[0], *([1] * (len(shape) - 1)))
    return torch.minimum(torch.floor(u * bound).long(), bound.long() - 1)


def span_mask(lengths: torch.Tensor, max_len: int, ratio: float, generator=None) -> torch.Tensor:
    """Span mask ``[B, max_len]``: one contiguous run of ``mask_counts`` real items at a uniform start."""
    k = mask_counts(lengths, ratio)
    start = _uniform_ints(lengths - k, generator)
    pos = _positions(lengths, max_len)
    return (pos >= start.unsqueeze(1)) & (pos < (start + k).unsqueeze(1))


def tail_mask(lengths: torch.Tensor, max_len: int, ratio: float | None = None,
              count: int | None = None) -> torch.Tensor:
    """Tail mask ``[B, max_len]``: the last ``mask_counts`` real items (``count`` of them when given); always the last
    real item."""
    k = mask_counts(lengths, ratio) if count is None else torch.minimum(torch.full_like(lengths, count), lengths)
    pos = _positions(lengths, max_len)
    return (pos >= (lengths - k).unsqueeze(1)) & (pos < lengths.unsqueeze(1))


def multi_region_mask(lengths: torch.Tensor, max_len: int, ratio: float, regions: int, generator=None) -> torch.Tensor:
    """Multi-region mask ``[B, max_len]``: ``mask_counts`` real items in up to ``regions`` separate runs (sizes differ
    by at most one, at least one unmasked item between two runs, gaps uniform); fewer runs where the sequence is too
    short for ``regions``."""
    k = mask_counts(lengths, ratio)
    r_eff = torch.minimum(torch.minimum(torch.full_like(lengths, regions), k), lengths - k + 1).clamp_min(1)
    available = lengths - k - (r_eff - 1)  # free slots beyond the mandatory separators (>= 0)
    r_idx = torch.arange(regions, device=lengths.device).unsqueeze(0)  # [1, R]
    used = r_idx < r_eff.unsqueeze(1)
    cuts = _uniform_ints(available, generator, shape=(lengths.shape[0], regions))
    cuts = torch.where(used, cuts, available.unsqueeze(1)).sort(dim=1).values
    extras = torch.diff(cuts, dim=1, prepend=torch.zeros_like(cuts[:, :1]))
    sizes = k.unsqueeze(1) // r_eff.unsqueeze(1) + (r_idx < (k % r_eff).unsqueeze(1)).long()
    sizes = torch.where(used, sizes, torch.zeros_like(sizes))
    gaps = extras + ((r_idx > 0) & used).long()
    starts = torch.cumsum(gaps, dim=1) + torch.cumsum(sizes, dim=1) - sizes
    pos = _positions(lengths, max_len).unsqueeze(1)  # [1, 1, L]
    inside = (pos >= starts.unsqueeze(2)) & (pos < (starts + sizes).unsqueeze(2))  # [B, R, L]
    return inside.any(dim=1)


def build_mask(kind: str, lengths: torch.Tensor, max_len: int, ratio: float, regions: int = 2,
               generator=None) -> torch.Tensor:
    """The ``[B, max_len]`` mask of one type (``MASK_TYPES``)."""
    if kind == "span":
        return span_mask(lengths, max_len, ratio, generator)
    if kind == "tail":
        return tail_mask(lengths, max_len, ratio)
    if kind == "multi_region":
        return multi_region_mask(lengths, max_len, ratio, regions, generator)
    raise ValueError(f"unknown mask type {kind!r}; expected one of {list(MASK_TYPES)}")


def mixed_mask(lengths: torch.Tensor, max_len: int, ratio: float, types, regions: int = 2,
               generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-mask pretraining: one mask type per sequence, uniform over ``types``. Returns ``(mask, type index)``."""
    masks = torch.stack([build_mask(t, lengths, max_len, ratio, regions, generator) for t in types])  # [T, B, L]
    choice = torch.randint(len(types), (lengths.shape[0],), generator=generator, device=lengths.device)
    return masks[choice, torch.arange(lengths.shape[0], device=lengths.device)], choice


def append_item(seq: torch.Tensor, lengths: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``items`` [B] written after each right-padded sequence ``seq`` [B, L] (the first item is dropped from a full
    sequence only; RecBole's BERT4Rec drops it from every sequence). Returns ``(sequence, new lengths)``."""
    batch, max_len = seq.shape
    full = torch.cat([seq, torch.zeros(batch, 1, dtype=seq.dtype, device=seq.device)], dim=1)
    full.scatter_(1, lengths.view(-1, 1), items.view(-1, 1).to(seq.dtype))
    shift = (lengths >= max_len).long().view(-1, 1)
    idx = torch.arange(max_len, device=seq.device).unsqueeze(0) + shift
    return full.gather(1, idx), torch.clamp(lengths + 1, max=max_len)


# --- stage 1: cross-modal semantic injection ---------------------------------------------------------------------
@dataclass
class InjectionOutput:
    fused: torch.Tensor  # [B, d] the fused item vector
    depth: torch.Tensor  # [B] number of fusion layers applied (1..n_layers)
    gate_probs: torch.Tensor  # [B, n_layers - 1] continue probability of each gated layer
    views: torch.Tensor  # [B, V, d] projected modality views (the contrastive targets)
    ponder: torch.Tensor  # scalar: mean expected depth (soft), the depth penalty's term


class FusionLayer(nn.Module):
    """One dynamic-Transformer layer: the item query cross-attends over its modality views, then a feed-forward."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, query: torch.Tensor, keys: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attn(query.unsqueeze(1), keys, keys, key_padding_mask=missing, need_weights=False)
        q = self.ln1(query + attended.squeeze(1))
        return self.ln2(q + self.ffn(q))


class SemanticInjection(nn.Module):
    """Stage 1, cross-modal semantic injection: a per-item ID query fuses the modality views in a dynamic Transformer;
    the gate before each layer after the first decides per item whether to keep fusing (hard 0/1 in the forward pass,
    straight-through gradient), so fusion depth differs per item; an item that stops never resumes."""

    def __init__(self, n_items: int, view_dims, dim: int, n_layers: int, n_heads: int, dropout: float = 0.0,
                 threshold: float = 0.5, gate_bias: float = 1.0):
        super().__init__()
        self.n_layers, self.threshold = n_layers, threshold
        self.id_query = nn.Embedding(n_items, dim)
        nn.init.normal_(self.id_query.weight, std=dim ** -0.5)
        self.view_proj = nn.ModuleList(nn.Sequential(nn.Linear(int(d), dim), nn.LayerNorm(dim)) for d in view_dims)
        self.view_type = nn.Parameter(torch.zeros(len(view_dims), dim))
        self.layers = nn.ModuleList(FusionLayer(dim, n_heads, dropout) for _ in range(n_layers))
        self.gates = nn.ModuleList(nn.Linear(dim, 1) for _ in range(n_layers - 1))
        for gate in self.gates:  # every item starts by fusing through every layer (sigmoid(gate_bias) >= threshold)
            nn.init.zeros_(gate.weight)
            nn.init.constant_(gate.bias, gate_bias)

    def project_views(self, views) -> torch.Tensor:
        """``[B, V, d]`` projections of the modality views (each ``[B, D_m]``)."""
        return torch.stack([proj(x) for proj, x in zip(self.view_proj, views)], dim=1)

    def forward(self, items: torch.Tensor, views, available: torch.Tensor) -> InjectionOutput:
        projected = self.project_views(views)
        keys = projected + self.view_type.unsqueeze(0)
        missing = ~available
        q = self.id_query(items)
        q = self.layers[0](q, keys, missing)  # every item fuses at least once
        running = torch.ones(q.shape[0], 1, device=q.device, dtype=q.dtype)
        soft = torch.ones_like(running)
        depth = torch.ones(q.shape[0], device=q.device)
        probs, ponder = [], torch.ones((), device=q.device)
        for layer, gate in zip(self.layers[1:], self.gates):
            p = torch.sigmoid(gate(q))
            hard = (p >= self.threshold).to(p.dtype)
            running = running * (hard + p - p.detach())  # forward: 0/1; backward: through p
            soft = soft * p
            q = q + running * (layer(q, keys, missing) - q)
            depth = depth + running.detach().squeeze(1)
            probs.append(p.squeeze(1))
            ponder = ponder + soft.mean()
        gate_probs = torch.stack(probs, dim=1) if probs else q.new_zeros(q.shape[0], 0)
        return InjectionOutput(q, depth.round().long(), gate_probs, projected, ponder)


def train_injection(module: SemanticInjection, views, available: torch.Tensor, epochs: int, lr: float,
                    batch_size: int, temperature: float, depth_penalty: float, seed: int,
                    log: PhaseLog | None = None, view_names=None) -> None:
    """Multi-view contrastive training of stage 1: ``sum_m InfoNCE(fused_i, view_m(i))`` over the items that have view
    ``m`` (in-batch negatives), ``+ depth_penalty * expected depth``. Rows of ``views`` / ``available`` are item ids;
    row 0 (padding) is never used."""
    n_items = available.shape[0]
    device = available.device
    items_all = torch.arange(1, n_items, device=device)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    names = list(view_names or [f"view{m}" for m in range(len(views))])
    module.train()
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        n_batches = 0
        for idx in batches(len(items_all), batch_size, gen):
            items = items_all[idx.to(device)]
            avail = available[items]
            out = module(items, [v[items] for v in views], avail)
            terms = {}
            for m, name in enumerate(names):
                rows = avail[:, m]
                if int(rows.sum()) >= 2:
                    terms[f"nce_{name}"] = info_nce(out.fused[rows], out.views[rows, m], temperature=temperature,
                                                    ids=items[rows])
            if depth_penalty > 0:
                terms["depth"] = depth_penalty * out.ponder
            loss = sum(terms.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n_batches += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            sums["mean_depth"] = sums.get("mean_depth", 0.0) + float(out.depth.float().mean())
        if log is not None:
            log.epoch("injection", epoch + 1, {k: v / max(n_batches, 1) for k, v in sums.items()})
    module.eval()


def align_vectors(ids, vectors: np.ndarray, dataset, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``vectors`` (raw ``ids``) at RecBole's internal ids of ``field``: ``(tensor [n, D], present [n])``."""
    index = {str(raw): row for row, raw in enumerate(ids)}
    tokens = list(dataset.field2id_token[field])
    out = np.zeros((len(tokens), vectors.shape[1]), dtype=np.float32)
    present = np.zeros(len(tokens), dtype=bool)
    for internal, token in enumerate(tokens):
        if internal == 0:
            continue
        row = index.get(str(token))
        if row is not None:
            out[internal], present[internal] = vectors[row], True
    return torch.from_numpy(out), torch.from_numpy(present)


class _Keys:
    """Reads the model's keys with their checks and remembers those that were missing (their default is logged)."""

    def __init__(self, config):
        self.config, self.defaulted = config, []

    def _seen(self, key, default):
        if cfg(self.config, key) is None and default is not None and f"{key}={default!r}" not in self.defaulted:
            self.defaulted.append(f"{key}={default!r}")

    def int(self, key, default, minimum=None):
        self._seen(key, default)
        return cfg_int(self.config, key, default, minimum=minimum)

    def float(self, key, default, minimum=None, maximum=None):
        self._seen(key, default)
        return cfg_float(self.config, key, default, minimum=minimum, maximum=maximum)

    def choice(self, key, choices, default):
        self._seen(key, default)
        return cfg_choice(self.config, key, choices, default)

    def bool(self, key, default):
        self._seen(key, default)
        value = cfg(self.config, key, default)
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"config key '{key}' must be True or False, got {value!r}")
        return bool(value)


class QBERT4Rec(SequentialRecommender):
    """Q-BERT4Rec: semantic injection -> RQ-VAE SIDs (frozen) -> bidirectional encoder over SID item vectors with
    multi-mask pretraining then tail-mask fine-tuning; full-sort scores every item through its SID."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        logger = getLogger()
        keys = _Keys(config)
        self._check_loader_keys(config)
        # --- stage 3: encoder (RecBole's BERT4Rec sizes) ---
        self.n_layers = keys.int("n_layers", 2, minimum=1)
        self.n_heads = keys.int("n_heads", 2, minimum=1)
        self.hidden_size = keys.int("hidden_size", 64, minimum=1)
        if self.hidden_size % self.n_heads:
            raise ConfigError(f"config key 'hidden_size' ({self.hidden_size}) must be a multiple of 'n_heads' "
                              f"({self.n_heads})")
        self.inner_size = keys.int("inner_size", 256, minimum=1)
        self.hidden_dropout_prob = keys.float("hidden_dropout_prob", 0.2, 0.0, 1.0)
        self.attn_dropout_prob = keys.float("attn_dropout_prob", 0.2, 0.0, 1.0)
        self.hidden_act = keys.choice("hidden_act", HIDDEN_ACTS, "gelu")
        self.layer_norm_eps = keys.float("layer_norm_eps", 1e-12, minimum=0.0)
        self.initializer_range = keys.float("initializer_range", 0.02, minimum=0.0)
        self.mask_ratio = keys.float("mask_ratio", 0.2, 0.0, 1.0)
        if self.mask_ratio <= 0:
            raise ConfigError(f"config key 'mask_ratio' must be in (0, 1], got {self.mask_ratio}")
        self.mask_types = self._mask_types(config)
        self.mask_regions = keys.int("qbert_mask_regions", 2, minimum=1)
        self.pretrain_epochs = keys.int("qbert_pretrain_epochs", 10, minimum=0)
        self.input_id = keys.bool("qbert_input_id", False)
        self.output_id = keys.bool("qbert_output_id", False)
        # --- stages 1-2 ---
        self.seed = int(cfg(config, "seed", 2020))
        self.injection = keys.bool("qbert_injection", True)
        self.sid_file = cfg(config, "qbert_sid_file")
        self.image_file = cfg(config, "qbert_image_emb_file")
        self.structural = keys.bool("qbert_structural_view", True)
        self.fusion = {
            "dim": keys.int("qbert_fusion_dim", 64, minimum=1),
            "n_layers": keys.int("qbert_fusion_layers", 3, minimum=1),
            "n_heads": keys.int("qbert_fusion_heads", 2, minimum=1),
            "dropout": keys.float("qbert_fusion_dropout", 0.1, 0.0, 0.99),
            "threshold": keys.float("qbert_gate_threshold", 0.5, 0.0, 1.0),
            "gate_bias": keys.float("qbert_gate_bias", 1.0),
        }
        if self.fusion["dim"] % self.fusion["n_heads"]:
            raise ConfigError(f"config key 'qbert_fusion_dim' ({self.fusion['dim']}) must be a multiple of "
                              f"'qbert_fusion_heads' ({self.fusion['n_heads']})")
        self.injection_train = {
            "epochs": keys.int("qbert_injection_epochs", 50, minimum=0),
            "lr": keys.float("qbert_injection_lr", 1e-3, minimum=0.0),
            "batch_size": keys.int("qbert_injection_batch_size", 256, minimum=2),
            "temperature": keys.float("qbert_contrastive_temperature", 0.1, minimum=1e-6),
            "depth_penalty": keys.float("qbert_depth_penalty", 0.1, minimum=0.0),
        }
        self.cf = {"dim": keys.int("cf_embedding_size", 64, minimum=1), "epochs": keys.int("cf_epochs", 30, minimum=1),
                   "lr": keys.float("cf_lr", 0.01, minimum=0.0)}
        # the shared RQ-VAE and SID keys (reads sid_levels, sid_codebook_size, sid_last_level, checks K <= items);
        # with a SID file only sid_levels matters (the code table is sized from the file)
        if self.sid_file:
            self.tokenizer, self.sid_levels = None, keys.int("sid_levels", 3, minimum=1)
        else:
            try:
                self.tokenizer = Tokenizer(config, dataset.user_num, self.n_items)
            except QuantizationError as exc:
                raise ConfigError(f"config keys 'sid_levels' / 'sid_codebook_size': {exc}") from exc
            self.sid_levels = self.tokenizer.num_levels
        from recbole_sid.tokenizers.rqvae import RQVAEConfig

        self.rq = RQVAEConfig(config)
        for key, default in (("rqvae_hidden_dims", [256, 128]), ("sid_code_dim", 32), ("tokenizer_epochs", 100),
                             ("sid_levels", 3), ("sid_codebook_size", 256), ("sid_last_level", "unique")):
            keys._seen(key, default)
        if keys.defaulted:
            logger.info(f"QBERT4Rec: keys not set, defaults used: {', '.join(keys.defaulted)}")

        # --- items with training rows (targets or history of the TRAINING split) ---
        self.item_tokens = np.asarray(dataset.field2id_token[self.ITEM_ID])
        self.export_settings = {"dataset": config["dataset"], "dedup_max": cfg(config, "sid_dedup_max"),
                                "quality_k": cfg_int(config, "sid_quality_k", 10, minimum=1)}
        train_users, train_items = self._training_pairs(dataset)
        warm = torch.zeros(self.n_items, dtype=torch.bool)
        warm[train_items] = True
        warm[0] = False
        self.register_buffer("item_warm", warm)
        #: warm-only softmax: with ``warm_negatives`` (auto: on with a cold list) the training CE leaves out items
        #: without training rows, as every model's sampled negatives do; otherwise only padding is left out
        self.warm_only_softmax = warm_negatives_enabled(config)
        self.register_buffer("_softmax_excluded", ~warm if self.warm_only_softmax else
                             torch.arange(self.n_items) == 0, persistent=False)
        self.n_train_rows = len(dataset.inter_feat)
        world = cfg(config, "world_size", 1)
        self._rows_scale = int(world) if (not cfg(config, "single_spec", True) and isinstance(world, int)
                                          and world > 1) else 1

        # --- stages 1-2: frozen SIDs ---
        #: per-item fusion depth of stage 1 (items 1..n-1), None without stage 1
        self.injection_depth = None
        device = config["device"] if config["device"] is not None else torch.device("cpu")
        codes, self.sid_output = self._make_sids(config, dataset, train_users, train_items, device)
        self.code_table_size = max(self.tokenizer.codebook_size if self.tokenizer else 0, int(codes.max()) + 1)
        self.register_buffer("item_codes", torch.zeros(self.n_items, self.sid_levels, dtype=torch.long))
        self.item_codes[1:] = torch.as_tensor(codes, dtype=torch.long)
        self.register_buffer("_level_offsets", torch.arange(self.sid_levels) * self.code_table_size, persistent=False)
        #: training rows seen in stage 3 (decides pretraining vs fine-tuning; in the checkpoint)
        self.register_buffer("train_rows_seen", torch.zeros((), dtype=torch.long))
        self._rows_seen = 0
        self._announced = None

        # --- stage 3 layers ---
        h = self.hidden_size
        self.code_embedding = nn.Embedding(self.sid_levels * self.code_table_size, h)
        self.item_id_embedding = nn.Embedding(self.n_items, h) if (self.input_id or self.output_id) else None
        self.output_bias = nn.Parameter(torch.zeros(self.n_items)) if self.output_id else None
        self.mask_embedding = nn.Parameter(torch.zeros(h))
        self.position_embedding = nn.Embedding(self.max_seq_length, h)
        self.trm_encoder = TransformerEncoder(n_layers=self.n_layers, n_heads=self.n_heads, hidden_size=h,
                                              inner_size=self.inner_size, hidden_dropout_prob=self.hidden_dropout_prob,
                                              attn_dropout_prob=self.attn_dropout_prob, hidden_act=self.hidden_act,
                                              layer_norm_eps=self.layer_norm_eps)
        self.LayerNorm = nn.LayerNorm(h, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        self.output_ffn = nn.Linear(h, h)
        self.output_gelu = nn.GELU()
        self.output_ln = nn.LayerNorm(h, eps=self.layer_norm_eps)
        self.loss_fct = nn.CrossEntropyLoss()
        self.apply(self._init_weights)
        nn.init.normal_(self.mask_embedding, std=self.initializer_range)
        self._eval_item_vectors = None
        n_cold = int((~self.item_warm[1:]).sum())
        logger.info(f"QBERT4Rec: {self.n_items - 1} items ({n_cold} without training rows, scored through their SID "
                    f"alone), SIDs {self.sid_levels} x {self.code_table_size} from {self.sid_output.summary['source']}"
                    f"; stage 3: {self.pretrain_epochs} pretraining epochs with masks {self.mask_types}, then "
                    f"fine-tuning with the tail mask; training softmax over "
                    f"{'items with training rows (warm_negatives)' if self.warm_only_softmax else 'every item'}")

    # --- config checks --------------------------------------------------------------------------------------------
    @staticmethod
    def _check_loader_keys(config) -> None:
        if cfg(config, "transform") is not None:
            raise ConfigError(f"config key 'transform' must be ~ (null) for QBERT4Rec, got {config['transform']!r}: "
                              f"the model masks sequences itself and needs plain item_id_list / item_length / item_id "
                              f"batches (RecBole's mask_itemseq transform is BERT4Rec's)")
        loss_type = cfg(config, "loss_type", "CE")
        if loss_type != "CE":
            raise ConfigError(f"config key 'loss_type' must be 'CE' for QBERT4Rec (cross-entropy over every item at "
                              f"the masked positions), got {loss_type!r}")
        neg = cfg(config, "train_neg_sample_args")
        if isinstance(neg, dict) and neg.get("distribution", "none") not in ("none", None):
            raise ConfigError(f"config key 'train_neg_sample_args' must be ~ (null) for QBERT4Rec, got {neg}: its "
                              f"loss is a softmax over every item, so sampled negatives would only duplicate rows")

    @staticmethod
    def _mask_types(config) -> list:
        value = cfg(config, "qbert_mask_types", list(MASK_TYPES))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or any(v not in MASK_TYPES for v in value) \
                or len(set(value)) != len(value):
            raise ConfigError(f"config key 'qbert_mask_types' must be a non-empty list of distinct values among "
                              f"{list(MASK_TYPES)}, got {value!r}")
        return list(value)

    # --- stages 1-2 ---------------------------------------------------------------------------------------------
    def _training_pairs(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct (user, item) pairs of the TRAINING split: each row's target and every item of its history."""
        inter = dataset.inter_feat
        users = torch.as_tensor(np.asarray(inter[self.USER_ID]), dtype=torch.long)
        items = torch.as_tensor(np.asarray(inter[self.ITEM_ID]), dtype=torch.long)
        u_all, i_all = [users], [items]
        if self.ITEM_SEQ in inter:
            seq = torch.as_tensor(np.asarray(inter[self.ITEM_SEQ]), dtype=torch.long)
            keep = seq > 0
            u_all.append(users.unsqueeze(1).expand_as(seq)[keep])
            i_all.append(seq[keep])
        users, items = torch.cat(u_all), torch.cat(i_all)
        pairs = torch.unique(users * self.n_items + items)
        return pairs // self.n_items, pairs % self.n_items

    def _make_sids(self, config, dataset, train_users, train_items, device) -> tuple[np.ndarray, TokenizerOutput]:
        """Stages 1-2 (or the SID file): ``(codes [n_items - 1, sid_levels], TokenizerOutput for the export)``."""
        log = PhaseLog(name="QBERT4Rec phase 1")
        if self.sid_file:
            path = resolve_data_file(config, "qbert_sid_file")
            codes = sid_file_codes(path, dataset, self.sid_levels, "qbert_sid_file", "sid_levels")
            from recbole_sid.quality import collision_rate

            side = SideOutput(codes, int(codes.max()) + 1, [], float(collision_rate(codes)))
            getLogger().info(f"QBERT4Rec: SIDs read from {path} (first {self.sid_levels} levels); stages 1-2 skipped")
            return codes, TokenizerOutput(items=side, summary={"source": f"file {path}"})
        text = item_semantic_embeddings(config, dataset).float()
        summary = {}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            if self.injection:
                x, summary = self._inject(config, dataset, text, train_users, train_items, device, log)
                summary["source"] = "semantic injection (stage 1) + RQ-VAE"
            else:
                x = text[1:].to(device)
                summary["source"] = "RQ-VAE of the text embeddings (qbert_injection: False)"
            rqvae = self.rq.build(x.shape[1], self.sid_levels, self.tokenizer.codebook_size, self.seed).to(device)
            fit_rqvae(rqvae, x, self.rq.epochs, self.rq.lr, self.rq.batch_size, self.seed, log=log,
                      normalize=self.rq.normalize)
            from recbole_sid.tokenizers.rqvae import rqvae_side

            side = rqvae_side(self.tokenizer, rqvae, x)
        summary["collision_rate_greedy"] = side.collision_rate_greedy
        return side.codes, TokenizerOutput(items=side, history=log.history, summary=summary)

    def _views(self, config, dataset, text, train_users, train_items, device):
        """The modality views of stage 1: ``(names, [n_items, D_m] tensors, available [n_items, V])``."""
        names, views, avail = ["text"], [text], [torch.ones(self.n_items, dtype=torch.bool)]
        if self.image_file:
            path = resolve_data_file(config, "qbert_image_emb_file")
            ids, vectors, _, _ = read_vectors(path)
            image, present = align_vectors(ids, vectors, dataset, self.ITEM_ID)
            absent = int((~present[1:]).sum())
            if absent == self.n_items - 1:
                raise DataError(f"config key qbert_image_emb_file: {path} has a vector for none of the "
                                f"{self.n_items - 1} items of dataset '{dataset.dataset_name}' (ids differ?)")
            if absent:
                getLogger().warning(f"QBERT4Rec: {absent} of {self.n_items - 1} items have no vector in {path} "
                                    f"(qbert_image_emb_file); they fuse without that view")
            names.append("image"), views.append(image), avail.append(present)
        if self.structural:
            pool = warm_item_pool(train_items) if warm_negatives_enabled(config) else None
            _, cf_item = train_bpr_mf(train_users, train_items, dataset.user_num, self.n_items, self.cf["dim"],
                                      epochs=self.cf["epochs"], lr=self.cf["lr"], seed=self.seed, device=device,
                                      negative_items=pool, stage="QBERT4Rec structural view (BPR-MF)")
            names.append("structural"), views.append(cf_item.cpu()), avail.append(self.item_warm.clone())
        available = torch.stack(avail, dim=1)
        available[0] = True  # padding row, never used
        return names, [v.to(device) for v in views], available.to(device)

    def _inject(self, config, dataset, text, train_users, train_items, device, log):
        """Stage 1: train the semantic injection on every item; returns the fused vectors of items 1..n-1."""
        names, views, available = self._views(config, dataset, text, train_users, train_items, device)
        f = self.fusion
        module = SemanticInjection(self.n_items, [v.shape[1] for v in views], f["dim"], f["n_layers"], f["n_heads"],
                                   f["dropout"], f["threshold"], f["gate_bias"]).to(device)
        t = self.injection_train
        train_injection(module, views, available, t["epochs"], t["lr"], t["batch_size"], t["temperature"],
                        t["depth_penalty"], self.seed, log=log, view_names=names)
        with torch.no_grad():
            items = torch.arange(1, self.n_items, device=device)
            out = module(items, [v[items] for v in views], available[items])
        depth = out.depth.cpu().numpy()
        histogram = {int(d): int((depth == d).sum()) for d in np.unique(depth)}
        self.injection_depth = depth
        getLogger().info(f"QBERT4Rec stage 1: views {names}; fusion depth per item (layers: items) {histogram}")
        return out.fused.detach(), {"views": names, "depth_histogram": histogram,
                                    "mean_depth": float(depth.mean())}

    def export_codes(self, directory) -> dict:
        """Write the frozen item SIDs (+ dedup level) and their quality report to ``directory`` like every tokenizer
        (``recbole_sid.sid_export``); ``run_recbole`` calls it after training. Returns ``{"itemsid": path, ...}``."""
        from recbole_sid.sid_export import export_sids

        side = self.sid_output.items
        codes = self.item_codes[1:].cpu().numpy()
        side = SideOutput(codes, side.codebook_size, side.codebooks, side.collision_rate_greedy,
                          embeddings=side.embeddings, reconstructions=side.reconstructions)
        output = TokenizerOutput(items=side, history=self.sid_output.history, summary=self.sid_output.summary)
        result = export_sids(output, directory, model="QBERT4Rec", item_tokens=self.item_tokens,
                             item_field=self.ITEM_ID, last_level=self.tokenizer.last_level if self.tokenizer else None,
                             **self.export_settings)
        return result["sid_files"]

    # --- stage 3 --------------------------------------------------------------------------------------------------
    def _init_weights(self, module):
        """RecBole's BERT4Rec initialisation."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def item_vectors(self, items: torch.Tensor, use_id: bool) -> torch.Tensor:
        """``[..., hidden]``: the sum of the items' SID code embeddings (+ their ID embedding if ``use_id`` and the
        item has training rows; a cold item's ID embedding was never trained)."""
        vec = self.code_embedding(self.item_codes[items] + self._level_offsets).sum(dim=-2)
        if use_id and self.item_id_embedding is not None:
            vec = vec + self.item_id_embedding(items) * self.item_warm[items].unsqueeze(-1).to(vec.dtype)
        return vec

    def output_vectors(self) -> torch.Tensor:
        """``[n_items, hidden]`` output embedding of every item (cached in eval mode; row 0 is padding)."""
        if self.training or self._eval_item_vectors is None:
            vec = self.item_vectors(torch.arange(self.n_items, device=self.item_codes.device), self.output_id)
            if self.training:
                return vec
            self._eval_item_vectors = vec.detach()
        return self._eval_item_vectors

    def _scores(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        if items is not None:
            scores = (hidden * self.item_vectors(items, self.output_id)).sum(-1)
            if self.output_bias is not None:
                scores = scores + self.output_bias[items] * self.item_warm[items]
            return scores
        scores = hidden @ self.output_vectors().T
        if self.output_bias is not None:
            scores = scores + self.output_bias * self.item_warm
        return scores

    def forward(self, item_seq: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """``[B, L, hidden]`` encoder output; ``masked`` [B, L] positions read the mask embedding."""
        emb = self.item_vectors(item_seq, self.input_id)
        emb = emb * (item_seq > 0).unsqueeze(-1).to(emb.dtype)
        emb = torch.where(masked.unsqueeze(-1), self.mask_embedding.expand_as(emb), emb)
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        x = self.dropout(self.LayerNorm(emb + self.position_embedding(positions)))
        attention = self.get_attention_mask((item_seq > 0) | masked, bidirectional=True)
        out = self.trm_encoder(x, attention, output_all_encoded_layers=True)[-1]
        return self.output_ln(self.output_gelu(self.output_ffn(out)))

    @property
    def phase(self) -> str:
        """``pretrain`` for the first ``qbert_pretrain_epochs`` epochs of training rows, then ``finetune``."""
        return "pretrain" if self._rows_seen < self.pretrain_epochs * self.n_train_rows else "finetune"

    def _advance(self, rows: int) -> str:
        phase = self.phase
        if phase != self._announced:
            epochs = self._rows_seen / max(self.n_train_rows, 1)
            getLogger().info(f"QBERT4Rec: {'multi-mask pretraining' if phase == 'pretrain' else 'fine-tuning'} "
                             f"(after {epochs:.2f} epochs of training rows)")
            self._announced = phase
        self._rows_seen += rows * self._rows_scale
        self.train_rows_seen.fill_(self._rows_seen)
        return phase

    def training_masks(self, lengths: torch.Tensor, max_len: int, phase: str) -> torch.Tensor:
        """Pretraining: one of ``qbert_mask_types`` per sequence; fine-tuning: the last item only."""
        if phase == "pretrain":
            return mixed_mask(lengths, max_len, self.mask_ratio, self.mask_types, self.mask_regions)[0]
        return tail_mask(lengths, max_len, count=1)

    def calculate_loss(self, interaction):
        seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        full, full_len = append_item(seq, lengths, interaction[self.POS_ITEM_ID])
        phase = self._advance(seq.shape[0]) if self.training else "finetune"
        masked = self.training_masks(full_len, full.shape[1], phase)
        hidden = self.forward(full, masked)[masked]  # [M, H]
        logits = self._scores(hidden)
        # padding is never a target; nor, under warm_negatives, a held-out item (no training row has it as a target,
        # and counting it as a negative would teach the model that it is never clicked: a cold-start leak)
        logits = logits.masked_fill(self._softmax_excluded, float("-inf"))
        return self.loss_fct(logits, full[masked])

    def _last_hidden(self, interaction) -> torch.Tensor:
        seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        full, full_len = append_item(seq, lengths, torch.zeros_like(lengths))
        masked = tail_mask(full_len, full.shape[1], count=1)
        return self.gather_indexes(self.forward(full, masked), full_len - 1)

    def predict(self, interaction):
        return self._scores(self._last_hidden(interaction), interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        return self._scores(self._last_hidden(interaction))

    def train(self, mode: bool = True):
        self._eval_item_vectors = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._eval_item_vectors = None
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._rows_seen = int(self.train_rows_seen)
        return result
