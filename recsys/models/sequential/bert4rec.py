"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained with a cloze objective.

Written from the paper's description:

* Input: item embedding + learned absolute positional embedding, then LayerNorm and dropout.
  Tokens: 0 = PAD, item i -> i + 1, I + 1 = [MASK] (see :mod:`.sequences`).
* L blocks of post-norm transformer layers, as in the paper (Eq. 3-5):
  ``A = LN(H + Dropout(MultiHead(H)))``, ``H' = LN(A + Dropout(FFN(A)))``, FFN = GELU MLP
  with inner size 4d; attention is bidirectional (PAD keys are masked, nothing else).
* Output (Eq. 7): ``softmax(GELU(h W_P + b_P) E^T + b_O)`` with E the input item embedding
  table (tied) restricted to real items, so PAD and [MASK] are never scored. (BERT's own
  masked-LM head adds a LayerNorm after the GELU; the paper's equation has none, nor has this.)
* Training: each epoch has one row per user -- the user's training sequence (for a leave-one-out
  split ``seq[:-2]``), a random window of ``max_len`` items when it is longer (``window=
  "random"``; ``"last"`` always takes the most recent one) -- with ``mask_prob`` of its items
  replaced by [MASK] (at least one) and a full-softmax cross-entropy over all items computed at
  the masked positions only. A fraction ``last_mask_prob`` of rows masks only the last item
  (the paper's extra samples that match next-item inference). No prefixes are materialised:
  an epoch reads every training interaction at most once.
* Inference: the last ``max_len - 1`` history items followed by [MASK]; the logits at [MASK]
  rank all items (full ranking, no sampled negatives); history items are excluded by the caller
  (:func:`recsys.metrics.ranking.evaluate` ``exclude``) or by :meth:`BERT4Rec.recommend`.
* Training, validation, early stopping, scoring, checkpoints and the rating head (``objective=
  "rating"``: bidirectional encoding of the unmasked sequence, a rating per position) come from
  :class:`~recsys.models.sequential.core.SequentialModel`.

Paper settings (experimental setup): d = 64, L = 2, h = 2, dropout 0.1, Adam lr 1e-4 with linear
decay, weight decay 0.01, gradient clipping at norm 5, batch 256; max length N = 200 for ML-1M /
ML-20M and 50 for Beauty / Steam; mask proportion rho = 0.2 for ML-1M / ML-20M, 0.4 Steam, 0.6
Beauty. Defaults follow the paper except: lr 1e-3 after a 100-step linear warm-up, then constant
(far fewer steps than the paper's 400k); early stopping on validation NDCG@10 (not described in the paper); ``last_mask_prob`` 0.1
(the paper gives no proportion); and batches of users of similar length, drawn from random
length-sorted pools (``length_pool``), so less padding is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.checks import check_float, check_fraction, check_int
from recsys.errors import ConfigError
from recsys.models.sequential.core import SequentialConfig, SequentialModel
from recsys.models.sequential.layers import (
    PostNormBlock,
    RatingHead,
    SequenceNetwork,
    key_padding_mask,
    positions_from_right,
)
from recsys.models.sequential.sequences import PAD, mask_positions
from recsys.models.registry import register_model


@dataclass(frozen=True)
class BERT4RecConfig(SequentialConfig):
    """Hyper-parameters (plus those of :class:`SequentialConfig`).

    Paper values per dataset: ``max_len`` 200 (ML-1M, ML-20M) or 50 (Beauty, Steam);
    ``mask_prob`` 0.2 (ML-1M, ML-20M), 0.4 (Steam), 0.6 (Beauty).
    """

    n_blocks: int = 2
    n_heads: int = 2
    attn_dropout: float = 0.1  # on the attention weights (``dropout``: input, after attention, after the FFN)
    mask_prob: float = 0.2
    last_mask_prob: float = 0.1  # rows that mask only their last item (paper: "also" such samples)
    label_smoothing: float = 0.0
    warmup_steps: int = 100  # linear lr warm-up over the first optimiser steps (0 = none), as BERT's optimiser
    weight_decay: float = 0.01  # decoupled (AdamW), on weight matrices and embeddings only, as BERT
    grad_clip: float | None = 5.0

    def validate(self) -> None:
        super().validate()
        for name in ("n_blocks", "n_heads"):
            check_int(name, getattr(self, name), 1)
        if self.hidden % self.n_heads:
            raise ConfigError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        check_fraction("mask_prob", self.mask_prob)
        for name in ("attn_dropout", "label_smoothing"):
            check_float(name, getattr(self, name), 0.0, 1.0, high_open=True)
        check_float("last_mask_prob", self.last_mask_prob, 0.0, 1.0)


class BERT4RecNetwork(SequenceNetwork):
    """Embeddings + encoder + tied output head; token ids as in :mod:`.sequences`, MASK = n_items + 1."""

    def __init__(self, n_items: int, cfg: BERT4RecConfig) -> None:
        super().__init__()
        self.n_items, self.max_len = n_items, cfg.max_len
        self.mask_token = n_items + 1
        d = cfg.hidden
        self.tok = nn.Embedding(n_items + 2, d, padding_idx=PAD)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(PostNormBlock(d, cfg.n_heads, cfg.dropout, cfg.attn_dropout) for _ in range(cfg.n_blocks))
        self.proj = nn.Linear(d, d)
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        for m in self.modules():  # BERT's initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.tok.weight[PAD].zero_()
        self.rating_head = RatingHead(d)  # zero-initialised: draws nothing from the RNG

    def encode(self, tokens: Tensor) -> Tensor:
        """Hidden states [B, W, d] of right-aligned tokens [B, W], W <= max_len.

        Positions count from the right end (the last column is position max_len - 1), so a
        batch trimmed of all-PAD columns on the left is encoded exactly as its padded form.
        """
        pos = positions_from_right(tokens.shape[1], self.max_len, tokens.device)
        h = self.drop(self.ln(self.tok(tokens) + self.pos(pos)))
        mask = key_padding_mask(tokens)
        for block in self.blocks:
            h = block(h, mask)
        return h

    def item_table(self) -> Tensor:
        return self.tok.weight[1 : self.n_items + 1]

    def logits(self, h: Tensor) -> Tensor:
        """Item logits [..., n_items] of hidden states [..., d] (PAD and MASK rows excluded)."""
        return F.gelu(self.proj(h)) @ self.item_table().T + self.out_bias


@register_model
class BERT4Rec(SequentialModel):
    """BERT4Rec under the library's model contract.

    Unlike the bag-of-items models, input is *ordered*: ``fit``, ``score`` and ``evaluate`` take a
    leave-one-out Split (with a stage) or lists of item-id arrays, never CSR rows. Learned state:
    ``net_`` (:class:`BERT4RecNetwork`, weights of the best validation epoch), ``n_items_``,
    ``history_`` (per epoch: loss, seconds, validation metrics) and ``best_epoch_``.
    """

    name = "bert4rec"
    Config = BERT4RecConfig
    min_train_items = 1

    def _network(self) -> BERT4RecNetwork:
        return BERT4RecNetwork(self.n_items_, self.config)

    def _train_span(self) -> int:
        return self.config.max_len

    def _history_len(self) -> int:
        return self.config.max_len - 1  # room for the [MASK] the prediction is read at

    def _query_tokens(self, hist: np.ndarray) -> np.ndarray:
        return np.concatenate([hist, np.full((len(hist), 1), self.net_.mask_token, dtype=np.int64)], axis=1)

    def _next_item_loss(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, int]:
        """Cloze: mask ``mask_prob`` of the items (at least one per row), CE at the masked positions only."""
        cfg, net = self.config, self.net_
        masked = mask_positions(tokens, cfg.mask_prob, rng, cfg.last_mask_prob)
        labels = torch.from_numpy(tokens[masked] - 1).to(self.device)
        tokens[masked] = net.mask_token
        h = net.encode(torch.from_numpy(tokens).to(self.device))
        # logits only at the masked positions: [M, I] instead of [B, W, I]
        logits = net.logits(h[torch.from_numpy(masked).to(self.device)])
        return F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing), len(labels)

    @classmethod
    def epoch_cost(cls, config: BERT4RecConfig, shape):
        """One row per training user (its window of up to max_len items, length-pooled batches of
        batch_size padded to their longest row): ``n_blocks`` bidirectional post-norm layers (qkv,
        output, GELU FFN of 4d; attention over the W x W square) over the padded positions, then at
        the M masked positions only (mask_prob of each row's items, at least one; last_mask_prob of
        the rows: the last item alone) the projection d x d and the full-softmax logits [M, I]
        (materialised: forward, gradients of h and of the tied item table, 6 M d I), which dominate
        once I >> d. AdamW over all weights every step (gradient clipping adds one pass)."""
        from recsys.models.base import BASE_PROCESS_BYTES
        from recsys.training.cost import ADAM_STATE, CUDA_CONTEXT_BYTES, F32, EpochCost, adam_traffic, dense_layer_flops
        from recsys.models.sequential.core import length_model, transformer_cost, transformer_params, window_stats

        c, i, d = config, shape.n_items, config.hidden
        ws = window_stats(shape, c.max_len, c.batch_size, c.length_pool)
        tr = transformer_cost(d, 4 * d, c.n_heads, c.n_blocks, ws.padded, ws.square)
        n = np.minimum(length_model(shape)[0], c.max_len)
        per_row = (1 - c.last_mask_prob) * (n * c.mask_prob + (1 - c.mask_prob) ** n) + c.last_mask_prob
        masked = ws.rows * float(per_row.mean())
        head = dense_layer_flops(masked, d, d)
        out = 6.0 * masked * d * i
        dense = tr["linear"] + tr["attention"] + head + out
        params = (i + 2) * d + c.max_len * d + 2 * d + transformer_params(d, 4 * d, c.n_blocks) + d * d + d + i + d + 1
        weights = (ADAM_STATE + 1) * F32 * params  # + the best epoch's copy
        m_step = masked / max(ws.steps, 1) * ws.max_width / max(ws.real / ws.rows, 1.0)  # masks in the widest batch
        act = ws.max_tokens * tr["act_bytes_per_token"] + ws.max_tokens * ws.max_width * tr["att_bytes_per_square"]
        logits = 3 * F32 * m_step * i  # logits, softmax, their gradient
        data = 32 * shape.nnz + 48 * shape.n_users
        host = BASE_PROCESS_BYTES + weights + act + logits + data
        device = CUDA_CONTEXT_BYTES + weights + act + logits
        traffic = ws.steps * (adam_traffic(params) + 4 * F32 * params) + 3 * ws.padded * tr["act_bytes_per_token"] \
            + 3 * ws.square * tr["att_bytes_per_square"] + 6 * F32 * masked * i
        return EpochCost(flops=dense, dense_flops=dense, host_bytes=host, device_bytes=device, traffic_bytes=traffic,
                         steps=ws.steps, params=params,
                         terms={"blocks_linear": tr["linear"], "attention": tr["attention"], "output_softmax": out + head,
                                "padded_positions": ws.padded, "masked_positions": masked,
                                "activation_bytes": act, "logits_block_bytes": logits})
