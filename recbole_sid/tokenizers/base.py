"""The one interface every SID tokenizer implements (phase 1 of every SID model).

A tokenizer turns semantic embeddings (and, for the collaborative ones, the training interactions) into frozen
SIDs: ``Tokenizer(config, n_users, n_items).fit(TokenizerInput) -> TokenizerOutput``. Nothing here imports RecBole:
the SID models (``recbole_sid.model``) build the input from RecBole's training split, and
``python -m recbole_sid.tokenize`` runs a tokenizer alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from logging import getLogger

import numpy as np
import torch

from recbole_sid.config_values import cfg, cfg_choice, cfg_int
from recbole_sid.quantization import check_quantizer_params
from recbole_sid.quantization.unique import unique_last_level

#: ``sid_last_level`` values
LAST_LEVEL_RULES = ("unique", "greedy")


@dataclass
class TokenizerInput:
    """What a tokenizer may read. Rows are RecBole internal ids; row 0 is the padding entity (zeros)."""

    item_sem: torch.Tensor  # [n_items, D] semantic embeddings of every item (cold ones too)
    train_users: torch.Tensor  # [P] user ids of the TRAINING interactions
    train_items: torch.Tensor  # [P] item ids of the training interactions
    n_users: int
    n_items: int
    user_sem: torch.Tensor | None = None  # [n_users, D'] (tokenizers with user SIDs)
    valid_users: torch.Tensor | None = None  # validation interactions, for a tokenizer's own stopping rule
    valid_items: torch.Tensor | None = None
    #: the pool sampled negatives are drawn from (warm items, ``recbole_sid.data.negatives``); None: every item
    negative_items: torch.Tensor | None = None
    tensorboard: object = None  # a SummaryWriter (RecBole's trainer's), or None


@dataclass
class SideOutput:
    """SIDs of one side (items or users) and what the quality report needs."""

    codes: np.ndarray  # [N - 1, L] final codes of entities 1..N-1 (after the last-level rule, no dedup level)
    codebook_size: int
    codebooks: list  # L arrays [K, d] in the space that was quantized (for sid_head_init: codebook)
    collision_rate_greedy: float  # of the plain greedy codes, before the last-level rule
    embeddings: np.ndarray | None = None  # [N - 1, D] what the SIDs are compared with in the quality report
    reconstructions: np.ndarray | None = None  # [N - 1, D] reconstruction of ``embeddings`` from the SIDs


@dataclass
class TokenizerOutput:
    items: SideOutput
    users: SideOutput | None = None
    #: one record per phase-1 epoch: {"stage", "epoch", loss terms..., churn / valid score where measured}
    history: list = field(default_factory=list)
    #: anything else worth reporting (best epoch, normalised reconstruction error, ...)
    summary: dict = field(default_factory=dict)


class PhaseLog:
    """Per-epoch log of phase 1: one INFO line per epoch and stage, tensorboard scalars ``phase1/<stage>/<term>``,
    and the records themselves (``history``)."""

    def __init__(self, tensorboard=None, name: str = "phase 1"):
        self.tensorboard, self.name = tensorboard, name
        self.history: list[dict] = []
        self._step: dict[str, int] = {}

    def epoch(self, stage: str, epoch: int, terms: dict, **extra) -> dict:
        record = {"stage": stage, "epoch": int(epoch), **{k: float(v) for k, v in terms.items()}}
        record.update({k: (float(v) if isinstance(v, (int, float, np.number)) else v) for k, v in extra.items()})
        self.history.append(record)
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in record.items() if k not in ("stage", "epoch"))
        getLogger().info(f"{self.name} [{stage}] epoch {epoch}: {shown}")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.tensorboard.add_scalar(f"phase1/{stage}/{key}", value, int(epoch))
        return record


class Tokenizer:
    """Phase 1 of a SID model: ``fit`` returns frozen item (and user) SIDs. Subclasses read and check their config
    keys in ``__init__`` (so a bad key fails before any data is loaded) and implement ``fit``."""

    #: name used in logs and reports (the paper's name)
    name = "tokenizer"
    #: whether ``fit`` also returns user SIDs (then ``TokenizerInput.user_sem`` must be given)
    has_user_sids = False

    def __init__(self, config, n_users: int, n_items: int):
        self.seed = int(cfg(config, "seed", 2020))
        self.num_levels = cfg_int(config, "sid_levels", 3, minimum=1)
        self.codebook_size = cfg_int(config, "sid_codebook_size", 256, minimum=2)
        self.last_level = cfg_choice(config, "sid_last_level", LAST_LEVEL_RULES, "unique")
        self.kmeans_iters = cfg_int(config, "kmeans_iters", 20, minimum=1)
        self.use_gpu = cfg(config, "faiss_use_gpu", "auto")
        check_quantizer_params(self.num_levels, self.codebook_size, n_items=n_items - 1)
        self.n_users, self.n_items = n_users, n_items

    def fit(self, data: TokenizerInput, log: PhaseLog) -> TokenizerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    # --- helpers shared by the tokenizers ------------------------------------------------------------------
    def finalize(self, x, codebooks, codes, side: str = "item") -> tuple[np.ndarray, float]:
        """Greedy codes -> final codes: with ``sid_last_level: unique`` colliding items get distinct last-level
        codes (``unique_last_level``). Returns ``(codes, collision rate of the greedy codes)``."""
        from recbole_sid.quality import collision_rate

        x = _numpy(x)
        codebooks = [_numpy(cb) for cb in codebooks]
        codes = _numpy(codes).astype(np.int64)
        greedy = float(collision_rate(codes))
        if self.last_level == "unique":
            codes, changed = unique_last_level(x, codebooks, codes)
            if changed:
                getLogger().debug(f"{side} SIDs: collision-aware last level re-assigned {changed} codes")
        return codes, greedy


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, torch.nn.Embedding):
        return x.weight.detach().cpu().numpy()
    return np.asarray(x)


def churn(previous: np.ndarray | None, current: np.ndarray) -> dict:
    """Share of entities whose SID changed since the previous epoch: any code, and per level."""
    if previous is None:
        return {}
    changed = previous != current
    out = {"churn_any": float(changed.any(axis=1).mean())}
    for level in range(current.shape[1]):
        out[f"churn_l{level + 1}"] = float(changed[:, level].mean())
    return out
