"""GRU4Rec (Hidasi et al., ICLR 2016) trained on whole sequences, as the RecBole-style baselines.

Written from the paper's description and the usual sequence-training form of it:

* Network: item embedding -> dropout -> GRU (``n_layers`` layers of ``gru_hidden`` units) ->
  linear layer to the embedding size d; an item's score is the dot product of that output with
  the item's (shared) input embedding.
* Training: one row per user (its training sequence, a random window of ``max_len + 1`` items
  when longer); the GRU state after every item predicts the next one, full-softmax cross-entropy
  over all items at every position, in one pass (the paper's session-parallel mini-batches also
  predict at every step; the ranking losses BPR / TOP1 of the paper are not implemented).
* Right-aligned batches are left-aligned before the GRU (real items first, PAD after), so PAD
  never enters a real position's state; outputs are moved back afterwards.

Defaults (RecBole's GRU4Rec): d = 64, 128 GRU units, 1 layer, embedding dropout 0.3, Adam lr 1e-3,
batch 256. MELO's rating backbone: 2 layers, hidden 32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recsys.checks import check_int
from recsys.models.sequential.core import SequentialConfig, SequentialModel
from recsys.models.sequential.layers import RatingHead, SequenceNetwork, align_left, align_right
from recsys.models.sequential.sequences import PAD
from recsys.models.registry import register_model


@dataclass(frozen=True)
class GRU4RecConfig(SequentialConfig):
    """Hyper-parameters (plus those of :class:`SequentialConfig`); ``hidden`` = embedding size d."""

    gru_hidden: int = 128
    n_layers: int = 1
    dropout: float = 0.3  # on the item embeddings

    def validate(self) -> None:
        super().validate()
        check_int("gru_hidden", self.gru_hidden, 1)
        check_int("n_layers", self.n_layers, 1)


def init_recurrent(module: nn.Module) -> None:
    """Xavier-normal embeddings (PAD row zero), Xavier-uniform GRU and linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            nn.init.xavier_normal_(m.weight)
            with torch.no_grad():
                m.weight[PAD].zero_()
        elif isinstance(m, nn.GRU):
            for name, p in m.named_parameters():
                (nn.init.xavier_uniform_ if "weight" in name else nn.init.zeros_)(p)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class GRU4RecNetwork(SequenceNetwork):
    def __init__(self, n_items: int, cfg: GRU4RecConfig) -> None:
        super().__init__()
        self.n_items, self.max_len = n_items, cfg.max_len
        d = cfg.hidden
        self.emb = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, cfg.gru_hidden, cfg.n_layers, batch_first=True)
        self.dense = nn.Linear(cfg.gru_hidden, d)
        init_recurrent(self)
        self.rating_head = RatingHead(d)

    def encode(self, tokens: Tensor) -> Tensor:
        left, n = align_left(tokens)
        out, _ = self.gru(self.drop(self.emb(left)))
        return align_right(self.dense(out), n)

    def encode_last(self, tokens: Tensor) -> Tensor:
        left, n = align_left(tokens)
        out, _ = self.gru(self.drop(self.emb(left)))
        return self.dense(out[torch.arange(len(n), device=out.device), (n - 1).clamp_min(0)])

    def item_table(self) -> Tensor:
        return self.emb.weight[1 : self.n_items + 1]


@register_model
class GRU4Rec(SequentialModel):
    """GRU4Rec under the library's sequential contract (:class:`SequentialModel`)."""

    name = "gru4rec"
    Config = GRU4RecConfig

    def _network(self) -> GRU4RecNetwork:
        return GRU4RecNetwork(self.n_items_, self.config)
