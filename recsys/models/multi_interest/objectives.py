"""BaM's training pieces as pure tensor functions (Lee, Yun & Kang, IEEE BigData 2024; REMI: Xie et
al., RecSys 2023), so each can be tested on hand-made numbers.

* :func:`select_interest` -- which of the K interests a training example trains:
  ``hard`` (prior work): argmax_k corr_k; ``p`` (BaM_p) and ``l`` (BaM_l): one draw from
  softmax(τ · corr) (τ = 0: uniform; τ -> ∞: hard). For BaM_l the correlations come from the
  projections (:meth:`MultiInterestNetwork.correlation`), otherwise corr_k = ⟨v_k, e_pos⟩.
* :func:`sampled_softmax_loss` -- cross-entropy of the positive against uniformly drawn negatives
  shared by the batch, with the log-q correction (log of each candidate's expected count N / I;
  uniform, so it shifts every logit alike and the softmax does not change), accidental hits (a
  negative equal to the row's positive) removed, and REMI's interest-aware hard-negative weights
  w_j = N · softmax_j(β · s_j) (detached; β = 0: plain sampled softmax).
* :func:`multi_interest_logits` -- BaM's multi-interest loss (Eq. 12-13) scores every candidate by
  log Σ_k exp⟨v_k, e⟩ (all interests at once) and runs the same sampled softmax on them.
* :func:`routing_regularization` -- REMI's RR on the attention (routing) matrices A [B, K, W]: per
  user, C = Â Âᵀ / d with Â each interest's attention centred over the valid positions; the
  penalty is Σ_users ‖diag(C)‖² (an interest that collapses onto one item has a large variance).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from recsys.models.sequential.sequences import PAD

SELECTIONS = ("hard", "p", "l")
NEG = -1e9


def selection_probabilities(corr: Tensor, tau: float) -> Tensor:
    """softmax(τ · corr) over interests, [B, K] (τ = 0: uniform)."""
    return torch.softmax(tau * corr, dim=-1)


def select_interest(corr: Tensor, selection: str, tau: float = 1.0, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor | None]:
    """(chosen interest index [B], the probabilities it was drawn from [B, K] or None for hard)."""
    if selection == "hard":
        return corr.argmax(dim=-1), None
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    probs = selection_probabilities(corr, tau)
    idx = torch.multinomial(probs.detach(), 1, generator=generator).squeeze(1)
    return idx, probs


def gather_interest(interests: Tensor, idx: Tensor, probs: Tensor | None = None, straight_through: bool = False
                    ) -> Tensor:
    """The chosen interest of each row [B, d]. With `straight_through` (and probabilities) the value
    is the same, but gradients reach the probabilities through one-hot + p - stop_grad(p)."""
    onehot = torch.nn.functional.one_hot(idx, interests.shape[1]).to(interests.dtype)
    if straight_through and probs is not None:
        onehot = onehot + probs - probs.detach()
        return torch.einsum("bk,bkd->bd", onehot, interests)
    return interests[torch.arange(len(idx), device=idx.device), idx]


def sampled_softmax_loss(pos_logit: Tensor, neg_logits: Tensor, *, n_items: int, neg_items: Tensor | None = None,
                         pos_items: Tensor | None = None, beta: float = 0.0) -> Tensor:
    """Per-row loss [B] = logsumexp([s⁺, s⁻_j + log w_j]) - s⁺ after the log-q correction.

    `neg_logits` [B, N] score the N shared negatives `neg_items` [N]; where a negative equals the
    row's positive (`pos_items` [B]) it is removed. w_j = N · softmax_j(β s⁻_j) (detached) is
    REMI's interest-aware hard-negative weight; β = 0 gives w = 1.
    """
    n = neg_logits.shape[1]
    logq = math.log(n / n_items)  # log expected count of any item among N uniform draws
    pos = pos_logit - logq
    neg = neg_logits - logq
    if neg_items is not None and pos_items is not None:
        neg = neg.masked_fill(neg_items.unsqueeze(0) == pos_items.unsqueeze(1), NEG)
    if beta:
        live = neg > NEG / 2
        logw = torch.log_softmax((beta * neg).masked_fill(~live, NEG), dim=1) + math.log(n)
        neg = neg + logw.detach()
    return torch.logsumexp(torch.cat([pos.unsqueeze(1), neg], dim=1), dim=1) - pos


def multi_interest_logits(interests: Tensor, pos_vec: Tensor, neg_table: Tensor) -> tuple[Tensor, Tensor]:
    """(positive [B], negatives [B, N]) scores log Σ_k exp⟨v_k, e⟩ of BaM's multi-interest loss."""
    pos = torch.logsumexp(torch.einsum("bkd,bd->bk", interests, pos_vec), dim=1)
    neg = torch.logsumexp(torch.matmul(interests, neg_table.t()), dim=1)
    return pos, neg


def routing_regularization(att: Tensor, tokens: Tensor, hidden: int) -> Tensor:
    """REMI's routing regulariser Σ_users ‖diag(Â Âᵀ / d)‖² (see the module docstring)."""
    valid = (tokens != PAD).unsqueeze(1).to(att.dtype)  # [B, 1, W]
    count = valid.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (att * valid).sum(-1, keepdim=True) / count
    centred = (att - mean) * valid
    diag = (centred * centred).sum(-1) / hidden  # [B, K]
    return (diag * diag).sum()


def entropy(counts) -> float:
    """Shannon entropy (nats) of a histogram (0 for an empty one)."""
    p = torch.as_tensor(counts, dtype=torch.float64)
    total = p.sum()
    if total <= 0:
        return 0.0
    p = p[p > 0] / total
    return float(-(p * p.log()).sum())
