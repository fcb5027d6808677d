"""COINS layers (arXiv 2510.12604): RQ fusion, adaptive transfer gate and the asymmetric knowledge-transfer loss.

Names follow the paper:

* :class:`RQFusion` - ``Iemb_RQ = Fuse(RQ1, RQ2, RQ3)``: the level embeddings of an item's RQ codes fused into
  one vector (the paper names "concatenation followed by a linear layer, or simple averaging"; both are here).
* :class:`AdaptiveGate` - ``Tg = sigmoid(DNN(C, Up, X))``: one scalar in (0, 1) per row from the context,
  the user profile and the item features (COINS feeds the item's training popularity in ``X``).
* :func:`transfer_loss` - ``L_trans = Tg * KL(sg(Iemb_id), Iemb_RQ) + (1 - Tg) * KL(Iemb_id, sg(Iemb_RQ))``:
  the first term pulls the RQ embedding toward the stop-gradient ID embedding (collaborative knowledge flows
  into the shared semantic codes), the second pulls the ID embedding toward the stop-gradient RQ embedding
  (semantic knowledge flows into sparse IDs), each weighted by the gate.

Nothing here depends on RecBole's datasets; :class:`~recbole_sid.model.context_aware_recommender.coins.COINS`
wires them together.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.layers import MLPLayers

FUSION_MODES = ("concat", "mean", "sum")
TRANSFER_DISTANCES = ("kl", "cosine", "mse")


class RQFusion(nn.Module):
    """``[B, L, d]`` level embeddings -> ``[B, d]``.

    ``concat``: concatenate the L level embeddings and project them back to ``d`` with one linear layer (the
    levels keep distinct roles: coarse level 1 vs fine level 3). ``mean`` / ``sum``: parameter-free pooling.
    """

    def __init__(self, num_levels: int, dim: int, mode: str = "concat"):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"RQ fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        self.num_levels, self.dim, self.mode = int(num_levels), int(dim), mode
        self.proj = nn.Linear(self.num_levels * self.dim, self.dim) if mode == "concat" else None

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        if levels.dim() != 3 or levels.shape[1] != self.num_levels or levels.shape[2] != self.dim:
            raise ValueError(f"RQFusion expects [B, {self.num_levels}, {self.dim}] level embeddings, "
                             f"got {tuple(levels.shape)}")
        if self.mode == "concat":
            return self.proj(levels.reshape(levels.shape[0], -1))
        if self.mode == "mean":
            return levels.mean(dim=1)
        return levels.sum(dim=1)

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}, dim={self.dim}, mode={self.mode}"


class AdaptiveGate(nn.Module):
    """``Tg = sigmoid(DNN(x))``, ``x`` = [context ; user profile ; item features (incl. popularity)] -> ``[B, 1]``.

    The DNN is RecBole's ``MLPLayers`` (ReLU, dropout) over ``hidden_sizes`` followed by a linear layer to one
    logit; with ``hidden_sizes=[]`` the gate is logistic regression on ``x``.
    """

    def __init__(self, in_dim: int, hidden_sizes=(64,), dropout: float = 0.0):
        super().__init__()
        hidden_sizes = list(hidden_sizes or [])
        self.in_dim = int(in_dim)
        self.mlp = MLPLayers([self.in_dim] + hidden_sizes, dropout) if hidden_sizes else nn.Identity()
        self.out = nn.Linear(hidden_sizes[-1] if hidden_sizes else self.in_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"AdaptiveGate expects [B, {self.in_dim}] inputs, got {tuple(x.shape)}")
        return torch.sigmoid(self.out(self.mlp(x)))


def pull(moving: torch.Tensor, target: torch.Tensor, distance: str = "kl", temperature: float = 1.0,
         moving_first: bool = False, normalize: bool = True) -> torch.Tensor:
    """Per-row distance that moves ``moving`` toward ``target``; ``target`` is detached (stop-gradient). ``[B]``.

    With ``normalize`` both vectors are L2-normalised first, so the distance does not depend on the embeddings'
    scale (xavier-initialised 10-d embeddings have entries near 0.05: their softmax is nearly uniform and a KL
    between them is about 1e-3, which is why the transfer loss did nothing before).

    ``kl``: the paper's KL between the two embeddings read as distributions over dimensions (softmax of the vector
    / ``temperature``). Argument order as the paper writes each term: ``KL(sg(target) || moving)`` by default,
    ``KL(moving || sg(target))`` with ``moving_first`` (COINS's reverse term ``KL(Iemb_id, sg(Iemb_RQ))``).
    ``cosine``: ``1 - cos(moving, sg(target))``. ``mse``: mean squared difference.
    """
    target = target.detach()
    if normalize:
        moving, target = F.normalize(moving, dim=-1), F.normalize(target, dim=-1)
    if distance == "kl":
        log_t = F.log_softmax(target / temperature, dim=-1)
        log_m = F.log_softmax(moving / temperature, dim=-1)
        if moving_first:
            return (log_m.exp() * (log_m - log_t)).sum(dim=-1)
        return (log_t.exp() * (log_t - log_m)).sum(dim=-1)
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(moving, target, dim=-1)
    if distance == "mse":
        return (moving - target).pow(2).mean(dim=-1)
    raise ValueError(f"transfer distance must be one of {TRANSFER_DISTANCES}, got {distance!r}")


def transfer_loss(id_emb: torch.Tensor, rq_emb: torch.Tensor, gate: torch.Tensor, mask: torch.Tensor | None = None,
                  distance: str = "kl", temperature: float = 1.0, return_terms: bool = False,
                  normalize: bool = True):
    """COINS knowledge-transfer loss, averaged over the rows where ``mask`` is True (all rows without a mask).

    ``L = mean_rows[ Tg * KL(sg(Iemb_id), Iemb_RQ) + (1 - Tg) * KL(Iemb_id, sg(Iemb_RQ)) ]`` (the paper's terms and
    argument order; ``distance`` may replace KL by ``cosine`` or ``mse``, see :func:`pull`):

    * forward term ("warm pull"): gradient reaches ``rq_emb`` only;
    * reverse term: gradient reaches ``id_emb`` only;
    * ``gate`` (``[B]`` or ``[B, 1]``) weights the terms and is detached: the transfer loss does not train the
      gate (otherwise the gate would simply move toward whichever term is smaller).

    With ``return_terms=True`` returns ``(loss, forward_term, reverse_term)``, the two terms being the weighted
    means of each part (``loss = forward_term + reverse_term``). No selected row: zero (still differentiable).
    """
    g = gate.detach().reshape(-1)
    if g.shape[0] != id_emb.shape[0] or id_emb.shape != rq_emb.shape:
        raise ValueError(f"transfer_loss: shapes differ: id {tuple(id_emb.shape)}, rq {tuple(rq_emb.shape)}, "
                         f"gate {tuple(gate.shape)}")
    forward = g * pull(rq_emb, id_emb, distance, temperature, moving_first=False, normalize=normalize)
    reverse = (1.0 - g) * pull(id_emb, rq_emb, distance, temperature, moving_first=True, normalize=normalize)
    if mask is None:
        weight = torch.ones_like(g)
    else:
        weight = mask.reshape(-1).to(g.dtype)
    denom = weight.sum().clamp_min(1.0)
    forward_term = (forward * weight).sum() / denom
    reverse_term = (reverse * weight).sum() / denom
    loss = forward_term + reverse_term
    return (loss, forward_term, reverse_term) if return_terms else loss
