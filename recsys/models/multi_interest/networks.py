"""Multi-interest encoders: right-aligned item tokens [B, W] -> K interest vectors [B, K, d].

Written from the papers' descriptions (MIND: Li et al., CIKM 2019; ComiRec-SA: Cen et al., KDD
2020; REMI: Xie et al., RecSys 2023) and BaM's summary of its backbones:

* :class:`MINDEncoder` -- capsule dynamic routing ("behaviour-to-interest"): every history
  embedding e_j is mapped by one shared bilinear matrix, û_j = S e_j; routing logits b_kj start
  from a fixed N(0, 1) draw (MIND initialises them randomly; a fixed, saved draw keeps evaluation
  deterministic) and for ``routing_iters`` (3) rounds: c_kj = softmax_k(b_kj) (padding c = 0),
  s_k = Σ_j c_kj û_j, v_k = squash(s_k) = |s_k|² / (1 + |s_k|²) · s_k / |s_k|,
  b_kj += ⟨û_j, v_k⟩. Only the last round back-propagates into û (the earlier ones see it
  detached), as in the capsule papers. No ReLU layer on the capsules (BaM's setting).
* :class:`ComiRecSAEncoder` -- self-attentive heads: H = item embeddings (+ a learned position
  embedding, counted from the right end so the most recent item always has the same one),
  A = softmax_over_positions(W2 tanh(W1 H)) with W1: d -> 4d and W2: 4d -> K (no biases), padding
  masked; v_k = Σ_j A_kj e_j (item embeddings without positions). ``attention(tokens)`` returns A
  [B, K, W] as well, which REMI's routing regularisation reads.

W1 tanh(W1 H) is the encoder's dominant cost (a d x 4d matmul per position); it runs on the
non-PAD positions only (packed), so padding costs nothing there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recsys.models.sequential.sequences import PAD

NEG = -1e9  # logit of a masked position (finite: a row of PAD only gives a uniform, not NaN, softmax)


def positions_from_right(width: int, max_len: int, device: torch.device) -> Tensor:
    """Position index of each column of a right-aligned batch of `width` columns (last = max_len - 1)."""
    return torch.arange(max_len - width, max_len, device=device).clamp(min=0)


def positions_from_left(tokens: Tensor) -> Tensor:
    """[B, W] position of each column counted from the row's oldest item (0), as if the row were
    left-aligned (upstream BaM / ComiRec pad on the right); PAD columns get 0."""
    width = tokens.shape[1]
    n = (tokens != PAD).sum(dim=1, keepdim=True)
    return (torch.arange(width, device=tokens.device)[None, :] - (width - n)).clamp(min=0)


def squash(s: Tensor, dim: int = -1, eps: float = 1e-9) -> Tensor:
    """Capsule squashing |s|² / (1 + |s|²) · s / |s| along `dim`."""
    sq = (s * s).sum(dim, keepdim=True)
    return sq / (1.0 + sq) * s / torch.sqrt(sq + eps)


class MultiInterestEncoder(nn.Module):
    """Base: ``forward(embedded [B, W, d], tokens [B, W]) -> (interests [B, K, d], attention
    [B, K, W] or None)``."""

    has_attention = False

    def forward(self, emb: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError


class MINDEncoder(MultiInterestEncoder):
    """Dynamic-routing capsules (see the module docstring)."""

    def __init__(self, hidden: int, n_interests: int, seq_len: int, routing_iters: int = 3) -> None:
        super().__init__()
        self.k, self.seq_len, self.iters = n_interests, seq_len, routing_iters
        self.bilinear = nn.Linear(hidden, hidden, bias=False)
        # fixed initial routing logits, one per (interest, position from the right); saved with the weights
        self.register_buffer("routing_init", torch.randn(n_interests, seq_len))

    def forward(self, emb: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        width = tokens.shape[1]
        mask = (tokens != PAD).unsqueeze(1).to(emb.dtype)  # [B, 1, W]
        u_hat = self.bilinear(emb)  # [B, W, d]
        u_fixed = u_hat.detach()
        cols = positions_from_right(width, self.seq_len, emb.device)
        b = self.routing_init[:, cols].unsqueeze(0).expand(tokens.shape[0], -1, -1)  # [B, K, W]
        v = None
        for it in range(self.iters):
            c = torch.softmax(b, dim=1) * mask  # over interests; padding routes nowhere
            u = u_hat if it == self.iters - 1 else u_fixed
            v = squash(torch.bmm(c, u))  # [B, K, d]
            if it < self.iters - 1:
                b = b + torch.bmm(v, u_fixed.transpose(1, 2))
        return v, None


class ComiRecSAEncoder(MultiInterestEncoder):
    """Self-attentive multi-interest heads (see the module docstring)."""

    has_attention = True

    def __init__(self, hidden: int, n_interests: int, seq_len: int, attention_size: int | None = None,
                 add_pos: bool = True, positions_from_oldest: bool = False) -> None:
        super().__init__()
        self.k, self.seq_len, self.positions_from_oldest = n_interests, seq_len, positions_from_oldest
        size = attention_size or 4 * hidden
        self.pos = nn.Embedding(seq_len, hidden) if add_pos else None
        self.w1 = nn.Linear(hidden, size, bias=False)
        self.w2 = nn.Linear(size, n_interests, bias=False)

    def attention_logits(self, emb: Tensor, tokens: Tensor) -> Tensor:
        """W2 tanh(W1 (e + p)) [B, K, W], NEG on padding; computed on the non-PAD positions only."""
        b, width = tokens.shape
        h = emb
        if self.pos is not None and self.positions_from_oldest:
            h = h + self.pos(positions_from_left(tokens))
        elif self.pos is not None:
            h = h + self.pos(positions_from_right(width, self.seq_len, emb.device)).unsqueeze(0)
        valid = tokens != PAD
        logits = emb.new_full((b, width, self.k), NEG)
        packed = h[valid]  # [n_valid, d]
        if packed.shape[0]:
            logits = logits.index_put((valid,), self.w2(torch.tanh(self.w1(packed))))
        return logits.transpose(1, 2)

    def forward(self, emb: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        att = torch.softmax(self.attention_logits(emb, tokens), dim=-1)  # over positions
        att = att * (tokens != PAD).unsqueeze(1).to(att.dtype)  # an all-PAD row attends nothing
        return torch.bmm(att, emb), att


class MultiInterestNetwork(nn.Module):
    """Item table (token 0 = PAD), an encoder, and BaM_l's two projections.

    ``interests(tokens) -> (V [B, K, d], attention or None)``; ``item_table() -> [I, d]`` (row i =
    item i) is the output embedding every score uses: score(u, i) = max_k ⟨v_k, e_i⟩.
    """

    def __init__(self, n_items: int, hidden: int, encoder: MultiInterestEncoder, linear_size: int | None) -> None:
        super().__init__()
        self.n_items = n_items
        self.emb = nn.Embedding(n_items + 1, hidden, padding_idx=PAD)
        self.encoder = encoder
        # BaM_l (Eq. 9): corr = ⟨P v_k + p, Q e + q⟩ with P, Q: d -> linear_size
        self.proj_interest = nn.Linear(hidden, linear_size) if linear_size else None
        self.proj_item = nn.Linear(hidden, linear_size) if linear_size else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He-normal weights (fan-in), zero biases; the PAD row stays 0
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                nn.init.kaiming_normal_(p)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.emb.weight[PAD].zero_()

    def interests(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.encoder(self.emb(tokens), tokens)

    def item_table(self) -> Tensor:
        return self.emb.weight[1 : self.n_items + 1]

    def item_vectors(self, items: Tensor) -> Tensor:
        """Output embeddings of item ids (not tokens)."""
        return self.emb(items + 1)

    def correlation(self, interests: Tensor, items: Tensor, projected: bool) -> Tensor:
        """[B, K] correlation of each interest with the item vector [B, d]: ⟨v_k, e⟩, or BaM_l's
        projected ⟨P v_k + p, Q e + q⟩."""
        if projected:
            if self.proj_interest is None:
                raise RuntimeError("this network has no BaM_l projections (linear_size=0)")
            return torch.einsum("bkl,bl->bk", self.proj_interest(interests), self.proj_item(items))
        return torch.einsum("bkd,bd->bk", interests, items)


def max_interest_scores(interests: Tensor, table: Tensor) -> Tensor:
    """Item scores [B, I] = max over interests of ⟨v_k, e_i⟩ (interests [B, K, d], table [I, d])."""
    return torch.matmul(interests, table.t()).amax(dim=1)


__all__ = ["ComiRecSAEncoder", "MINDEncoder", "MultiInterestEncoder", "MultiInterestNetwork", "max_interest_scores",
           "positions_from_right", "squash"]
