"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item sequence.

Written from the paper's description:

* Input (Sec. III-A): item embedding + learned positional embedding, dropout; PAD positions are
  zeroed. Positions count from the right end of the window (the most recent item is position
  max_len - 1), as with the paper's left-padded fixed-length input, so trimming all-PAD columns
  changes nothing.
* Blocks (Sec. III-B/C): ``n_blocks`` layers of causal multi-head self-attention and a point-wise
  two-layer ReLU FFN (inner size ``ffn``, the paper: d), each sub-layer as
  ``x + Dropout(g(LayerNorm(x)))``; a final LayerNorm. Query t attends items 1..t only.
* Prediction (Sec. III-D): ``r_{i,t} = F_t . M_i`` with the *shared* input item embedding M.
* Training: each user's training sequence (seq[:-2] under leave-one-out; a random window of
  ``max_len + 1`` items when longer) is one row; every position t predicts item t + 1 in one
  pass -- no prefixes are materialised. ``loss="ce"`` (default): full-softmax cross-entropy over
  all items at every position (Klenitskiy & Vasilev, RecSys 2023, "SASRec+"); ``loss="bce"``: the
  paper's binary cross-entropy with one positive and one negative per position, the negative
  drawn uniformly from the items other than the positive (the paper draws among items the user
  never interacted with; with thousands of items the two rarely differ).
* Inference: the last ``max_len`` history items; the hidden state of the last position ranks all
  items (full ranking, history excluded by the caller).

Paper settings (Sec. IV-C): d = 50, 2 blocks, 1 head, dropout 0.2 on ML-1M (0.5 on the sparse
Amazon sets), Adam lr 1e-3 with beta2 = 0.98, batch 128, max length 200 on ML-1M (50 otherwise).
Defaults follow it except d = 64 (as in the SASRec+ comparison with BERT4Rec), CE loss, early
stopping on validation NDCG@10 and length-sorted batches (``length_pool``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.checks import check_choice, check_float, check_int
from recsys.errors import ConfigError, DataError
from recsys.models.sequential.core import SequentialConfig, SequentialModel
from recsys.models.sequential.layers import (
    PreNormBlock,
    RatingHead,
    SequenceNetwork,
    causal_mask,
    positions_from_right,
)
from recsys.models.sequential.sequences import PAD
from recsys.models.registry import register_model

LOSSES = ("ce", "bce")


@dataclass(frozen=True)
class SASRecConfig(SequentialConfig):
    """Hyper-parameters (plus those of :class:`SequentialConfig`); ``ffn`` None = ``hidden``."""

    n_blocks: int = 2
    n_heads: int = 1
    ffn: int | None = None
    dropout: float = 0.2
    attn_dropout: float = 0.2  # on the attention weights (the paper uses one dropout rate)
    loss: str = "ce"
    betas: tuple[float, float] = (0.9, 0.98)
    batch_size: int = 128

    def validate(self) -> None:
        super().validate()
        for name in ("n_blocks", "n_heads"):
            check_int(name, getattr(self, name), 1)
        if self.ffn is not None:
            check_int("ffn", self.ffn, 1)
        if self.hidden % self.n_heads:
            raise ConfigError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        check_float("attn_dropout", self.attn_dropout, 0.0, 1.0, high_open=True)
        check_choice("loss", self.loss, LOSSES)


class SASRecNetwork(SequenceNetwork):
    """Embeddings, causal pre-norm blocks, final LayerNorm; logits against the input item table."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_items, self.max_len = n_items, cfg.max_len
        d = cfg.hidden
        self.tok = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(PreNormBlock(d, cfg.n_heads, cfg.ffn or d, cfg.dropout, cfg.attn_dropout)
                                    for _ in range(cfg.n_blocks))
        self.ln = nn.LayerNorm(d)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.tok.weight[PAD].zero_()
        self.rating_head = RatingHead(d)

    def encode(self, tokens: Tensor) -> Tensor:
        pos = positions_from_right(tokens.shape[1], self.max_len, tokens.device)
        h = self.drop(self.tok(tokens) + self.pos(pos)) * (tokens != PAD).unsqueeze(-1)
        mask = causal_mask(tokens)
        for block in self.blocks:
            h = block(h, mask)
        return self.ln(h)

    def item_table(self) -> Tensor:
        return self.tok.weight[1 : self.n_items + 1]


@register_model
class SASRec(SequentialModel):
    """SASRec under the library's sequential contract (:class:`SequentialModel`)."""

    name = "sasrec"
    Config = SASRecConfig

    def _network(self) -> SASRecNetwork:
        if self.config.loss == "bce" and self.n_items_ < 2:
            raise DataError("loss='bce' needs at least 2 items to draw negatives from")
        return SASRecNetwork(self.n_items_, self.config)

    def _next_item_loss(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, int]:
        if self.config.loss == "ce":
            return super()._next_item_loss(tokens, rng)
        net = self.net_
        inp, labels, where = self._shifted(tokens)
        h = net.encode(inp)[where]
        # uniform over the items other than the positive: shift by 1..I-1 (mod I)
        neg = (labels + torch.from_numpy(rng.integers(1, self.n_items_, len(labels))).to(self.device)) % self.n_items_
        table = net.item_table()
        pos_logit = (h * table[labels]).sum(-1)
        neg_logit = (h * table[neg]).sum(-1)
        loss = F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()  # -log s(p) - log(1 - s(n))
        return loss, len(labels)

    @classmethod
    def epoch_cost(cls, config: SASRecConfig, shape):
        """One row per training user (its window of up to max_len + 1 items, length-pooled batches
        of batch_size padded to their longest row; inputs are the window minus its last item):
        the embedding sum, ``n_blocks`` causal pre-norm layers over the padded positions (qkv,
        output, FFN products; attention over the W x W square), and at every real position the
        next-item loss -- ``loss="ce"``: the full softmax over all items, blocked
        (:func:`~.layers.full_softmax_ce`: one product forward, three in the backward -- the
        recomputed logits, the gradients of h and of the item table: 8 N d I), which dominates
        once I >> d; ``loss="bce"``: one positive and one negative dot product (elementwise).
        AdamW over all weights (the dense item-table gradient included) every step."""
        from recsys.models.base import BASE_PROCESS_BYTES
        from recsys.training.cost import ADAM_STATE, CUDA_CONTEXT_BYTES, F32, EpochCost, adam_traffic
        from recsys.models.sequential.core import transformer_cost, transformer_params, window_stats

        c, i = config, shape.n_items
        d, f = c.hidden, c.ffn or c.hidden
        ws = window_stats(shape, c.max_len + 1, c.batch_size, c.length_pool, offset=1)
        tr = transformer_cost(d, f, c.n_heads, c.n_blocks, ws.padded, ws.square)
        n_pred = ws.real  # every real input position predicts the next item
        out = 8.0 * n_pred * d * i if c.loss == "ce" else 0.0
        dense = tr["linear"] + tr["attention"] + out
        params = (i + 1) * d + c.max_len * d + transformer_params(d, f, c.n_blocks) + 2 * d + d + 1
        weights = (ADAM_STATE + 1) * F32 * params  # + the best epoch's copy
        w = ws.max_width
        act = ws.max_tokens * (tr["act_bytes_per_token"] + 4 * F32 * d) + ws.max_tokens * w * tr["att_bytes_per_square"]
        ce_block = lambda chunk: 2 * F32 * min(chunk, ws.max_tokens) * i if c.loss == "ce" else 0.0
        data = 32 * shape.nnz + 48 * shape.n_users
        host = BASE_PROCESS_BYTES + weights + act + ce_block(256) + data
        device = CUDA_CONTEXT_BYTES + weights + act + ce_block(8192)
        logits_traffic = 6 * F32 * n_pred * i if c.loss == "ce" else 0.0
        traffic = ws.steps * (adam_traffic(params) + 3 * F32 * params) + 3 * ws.padded * tr["act_bytes_per_token"] \
            + 3 * ws.square * tr["att_bytes_per_square"] + logits_traffic
        return EpochCost(flops=dense, dense_flops=dense, host_bytes=host, device_bytes=device, traffic_bytes=traffic,
                         steps=ws.steps, params=params,
                         terms={"blocks_linear": tr["linear"], "attention": tr["attention"], "output_softmax": out,
                                "padded_positions": ws.padded, "real_positions": ws.real,
                                "activation_bytes": act, "logits_traffic": logits_traffic})
