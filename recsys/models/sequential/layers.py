"""Network pieces shared by the sequential models.

* :class:`SequenceNetwork`: the interface every model's network implements -- ``encode(tokens
  [B, W]) -> hidden [B, W, d]`` over right-aligned tokens (:mod:`.sequences`), ``encode_last``
  (the last position only; a model may compute it more cheaply), ``logits(h) -> [..., n_items]``,
  ``item_table() -> [n_items, d]`` and the per-position **rating head**:
  ``ratings(tokens) = 0.1 + sigmoid(w . h + b)`` (MELO's normalised rating, trained against
  rating / 5). ``forward`` *is* ``ratings``, so the meta stage can run the backbone with other
  parameters: ``torch.func.functional_call(net, params, (tokens,))`` -> [B, W].
* :func:`rating_mse`: the rating objective (mean squared error against rating / 5 over the
  positions with a known rating, optional per-position weights).
* :class:`PostNormBlock` (BERT4Rec) and :class:`PreNormBlock` (SASRec) transformer layers, the
  attention masks, and :func:`align_left` / :func:`align_right` for the recurrent models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.models.sequential.sequences import PAD

RATING_SCALE = 5.0  # ratings are predicted as RATING_SCALE * (0.1 + sigmoid(.)): 0.5 .. 5.5
RATING_FLOOR = 0.1


class RatingHead(nn.Module):
    """``0.1 + sigmoid(h . w + b)`` per position: [..., d] -> [...].

    Zero-initialised (no random draws, so adding the head to a network leaves the random stream of
    its other parameters and of training unchanged); the model sets the bias from the training
    ratings' mean before a rating fit, so training starts at the global-mean predictor.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, h: Tensor) -> Tensor:
        return RATING_FLOOR + torch.sigmoid(h @ self.weight + self.bias)

    @torch.no_grad()
    def start_at(self, mean_rating: float) -> None:
        """Zero weights and the bias whose output is `mean_rating` (1..5 scale)."""
        p = min(max(mean_rating / RATING_SCALE - RATING_FLOOR, 1e-3), 1 - 1e-3)
        self.weight.zero_()
        self.bias.fill_(float(torch.logit(torch.tensor(p))))


def rating_mse(pred: Tensor, ratings: Tensor, weights: Tensor | None = None) -> Tensor:
    """MELO's rating loss: mean over positions with a known rating (finite ``ratings``, 1..5
    scale; NaN on padding and unknown ratings) of ``weights * (pred - rating / 5) ** 2``, `pred`
    being the normalised output of :meth:`SequenceNetwork.ratings`. Zero when no rating is known."""
    known = torch.isfinite(ratings)
    target = torch.where(known, ratings / RATING_SCALE, torch.zeros_like(ratings))
    err = (pred - target) ** 2
    if weights is not None:
        err = err * weights
    err = torch.where(known, err, torch.zeros_like(err))
    return err.sum() / known.sum().clamp_min(1)


class SequenceNetwork(nn.Module):
    """Base of the sequential networks; subclasses define ``encode`` and ``item_table``, own an
    ``n_items`` / ``max_len`` and a ``rating_head`` (:class:`RatingHead`)."""

    n_items: int
    max_len: int
    rating_head: RatingHead

    def encode(self, tokens: Tensor) -> Tensor:
        """Hidden states [B, W, d] of right-aligned tokens [B, W] (W <= max_len)."""
        raise NotImplementedError

    def encode_last(self, tokens: Tensor) -> Tensor:
        """Hidden state [B, d] of the last position (what next-item inference reads)."""
        return self.encode(tokens)[:, -1]

    def item_table(self) -> Tensor:
        """Output item embeddings [n_items, d] (PAD and special tokens excluded), row i = item i."""
        raise NotImplementedError

    def logits(self, h: Tensor) -> Tensor:
        """Item logits [..., n_items] of hidden states [..., d] (shared input embedding)."""
        return h @ self.item_table().T

    def ratings(self, tokens: Tensor) -> Tensor:
        """Normalised ratings [B, W] (0.1 + sigmoid; x 5 for the 1..5 scale) at every position."""
        return self.rating_head(self.encode(tokens))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.ratings(tokens)


# ---- full-softmax cross-entropy ----------------------------------------------------------------


class _BlockedCrossEntropy(torch.autograd.Function):
    """Mean CE of logits ``h @ table.T`` against `labels`, computed `chunk` rows at a time: only the
    per-row log-sum-exp is kept, the logits are recomputed block by block in the backward pass.
    The [N, I] logit and softmax tensors are never materialised (one extra matmul), so every
    elementwise pass runs on a block that stays in cache."""

    @staticmethod
    def forward(ctx, h: Tensor, table: Tensor, labels: Tensor, chunk: int) -> Tensor:
        n = h.shape[0]
        lse = torch.empty(n, dtype=h.dtype, device=h.device)
        for s in range(0, n, chunk):
            lse[s : s + chunk] = torch.logsumexp(h[s : s + chunk] @ table.T, 1)
        picked = (h * table[labels]).sum(1)
        ctx.save_for_backward(h, table, labels, lse)
        ctx.chunk = chunk
        return (lse - picked).mean()

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, table, labels, lse = ctx.saved_tensors
        n, chunk = h.shape[0], ctx.chunk
        scale = grad / n
        grad_h = torch.empty_like(h)
        grad_table = torch.zeros_like(table)
        for s in range(0, n, chunk):
            hc = h[s : s + chunk]
            p = (hc @ table.T).sub_(lse[s : s + chunk, None]).exp_()  # softmax of the block
            p[torch.arange(len(hc), device=h.device), labels[s : s + chunk]] -= 1
            p.mul_(scale)
            grad_h[s : s + chunk] = p @ table
            grad_table.addmm_(p.T, hc)
        return grad_h, grad_table, None, None


def full_softmax_ce(h: Tensor, table: Tensor, labels: Tensor, chunk: int | None = None) -> Tensor:
    """``F.cross_entropy(h @ table.T, labels)`` (mean over the N rows of h [N, d], all I items of
    table [I, d]) without materialising the [N, I] logits: blocks of `chunk` rows (default 256 on
    CPU, where a block stays in cache, 8192 on GPUs). Same value and gradients up to float rounding."""
    if len(h) == 0:
        return h.sum() * 0.0
    if chunk is None:
        chunk = 256 if h.device.type == "cpu" else 8192
    return _BlockedCrossEntropy.apply(h, table, labels, int(chunk))


# ---- transformer layers --------------------------------------------------------------------


def positions_from_right(width: int, max_len: int, device: torch.device) -> Tensor:
    """Position ids of a right-aligned batch of `width` columns: the last column is max_len - 1,
    so trimming all-PAD columns on the left changes no position."""
    return torch.arange(max_len - width, max_len, device=device)


def key_padding_mask(tokens: Tensor) -> Tensor | None:
    """Bool SDPA mask [B, 1, 1, W] (True = may attend) hiding PAD keys; None without PAD, so SDPA
    can pick a fused kernel."""
    pad = tokens == PAD
    return (~pad)[:, None, None, :] if bool(pad.any()) else None


def causal_mask(tokens: Tensor) -> Tensor | None:
    """Bool SDPA mask [B, 1, W, W]: query t attends keys j <= t that are not PAD; a PAD query
    attends itself (its row would otherwise be empty and give NaN). None when the batch has no
    PAD: the block then asks SDPA for its built-in causal mask (a fused kernel)."""
    if not bool((tokens == PAD).any()):
        return None
    w = tokens.shape[1]
    tril = torch.ones(w, w, dtype=torch.bool, device=tokens.device).tril()
    eye = torch.eye(w, dtype=torch.bool, device=tokens.device)
    keys = (tokens != PAD)[:, None, None, :]
    return tril & (keys | eye)


class PostNormBlock(nn.Module):
    """Post-norm transformer layer (BERT, BERT4Rec Eq. 3-5): ``A = LN(x + drop(MHA(x)))``,
    ``LN(A + drop(FFN(A)))`` with a GELU FFN of inner size 4d."""

    def __init__(self, d: int, n_heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.n_heads, self.attn_dropout = n_heads, attn_dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, 4 * d)
        self.ff2 = nn.Linear(4 * d, d)
        self.ln2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, w, d = x.shape
        q, k, v = self.qkv(x).view(b, w, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0)
        a = self.ln1(x + self.drop(self.out(att.transpose(1, 2).reshape(b, w, d))))
        return self.ln2(a + self.drop(self.ff2(F.gelu(self.ff1(a)))))


class PreNormBlock(nn.Module):
    """SASRec's layer (Kang & McAuley 2018, Sec. III-B/C): each sub-layer g is applied as
    ``x + Dropout(g(LayerNorm(x)))``; g = multi-head self-attention (causal mask given by the
    caller), then the point-wise FFN ``ReLU(x W1 + b1) W2 + b2`` with inner size `ffn` (the
    paper: d), dropout after the ReLU as well. ``causal``: a None mask means SDPA's causal one."""

    def __init__(self, d: int, n_heads: int, ffn: int, dropout: float, attn_dropout: float, causal: bool = True) -> None:
        super().__init__()
        self.n_heads, self.attn_dropout, self.causal = n_heads, attn_dropout, causal
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ffn)
        self.ff2 = nn.Linear(ffn, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, w, d = x.shape
        y = self.ln1(x)
        q, k, v = self.qkv(y).view(b, w, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0,
                                             is_causal=self.causal and mask is None)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, w, d)))
        return x + self.drop(self.ff2(self.drop(F.relu(self.ff1(self.ln2(x))))))


# ---- recurrent models over right-aligned batches ---------------------------------------------


def _shift(x: Tensor, shift: Tensor) -> Tensor:
    """Row i of x [B, W, ...] rolled left by shift[i] (column j <- column (j + shift[i]) mod W)."""
    w = x.shape[1]
    idx = (torch.arange(w, device=x.device)[None, :] + shift[:, None]) % w
    if x.ndim == 2:
        return x.gather(1, idx)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))


def align_left(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(left-aligned tokens, number of real tokens per row) of a right-aligned batch: a recurrent
    network reads the real items first, so the trailing PAD cannot change their states."""
    n = (tokens != PAD).sum(1)
    return _shift(tokens, tokens.shape[1] - n), n


def align_right(h: Tensor, n: Tensor) -> Tensor:
    """Outputs [B, W, d] of left-aligned rows with n real items, moved back to right alignment;
    the PAD columns (states computed after the sequence ended) are zeroed."""
    w = h.shape[1]
    real = torch.arange(w, device=h.device)[None, :] >= (w - n)[:, None]
    return _shift(h, n) * real[..., None]
