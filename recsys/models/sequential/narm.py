"""NARM (Li et al., CIKM 2017): neural attentive session-based recommendation.

Written from the paper's description (Sec. 3):

* Encoder: item embedding -> dropout -> GRU (``n_layers`` of ``gru_hidden`` units) over the
  sequence, states h_1..h_t.
* Global encoder: ``c_g = h_t``. Local encoder: ``c_l = sum_{j<=t} alpha_tj h_j`` with
  ``alpha_tj = v^T sigmoid(A1 h_t + A2 h_j)`` (no softmax, as in the paper).
* Decoder: ``c_t = [c_g; c_l]`` (dropout), scores ``S_i = emb_i^T B c_t`` -- a bilinear map B
  (2H -> d) against the item embeddings. Here ``encode`` returns ``B c_t`` [B, W, d] and the
  logits are its dot products with the item table.
* Training: one row per user (its training sequence, a random window of ``max_len + 1`` items
  when longer); ``train_positions="all"`` (default): every position t predicts item t + 1 from its
  own prefix (the local attention is causal: j <= t), which is the paper's training on all
  prefixes of a session, computed in one pass; ``"last"``: only the last position (one
  prediction per row, as a prefix-materialising trainer sees it for the newest prefix).
  Cross-entropy over all items. The local attention costs O(W^2 H) per row: it is computed in
  chunks of query positions, recomputed in the backward pass, so memory stays bounded.

Defaults (RecBole's NARM): d = 64, 128 GRU units, 1 layer, dropouts 0.25 (embeddings) and 0.5
(c_t), Adam lr 1e-3, batch 256, max length 50 (the paper's sessions are short; the quadratic
local attention makes 200 costly). Because alpha is not normalised, c_l grows with the number of
items attended (a batch of long rows after many short ones can give logits in the thousands), so
gradients are clipped at norm 5 by default (``grad_clip``). MELO's rating backbone: 1 layer,
hidden 32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from recsys.checks import check_choice, check_float, check_int
from recsys.models.sequential.core import SequentialConfig, SequentialModel
from recsys.models.sequential.gru4rec import init_recurrent
from recsys.models.sequential.layers import RatingHead, SequenceNetwork, align_left, align_right, full_softmax_ce
from recsys.models.sequential.sequences import PAD
from recsys.models.registry import register_model

POSITIONS = ("all", "last")
_CHUNK_ELEMENTS = 1 << 24  # elements of one [B, chunk, W, H] attention block


@dataclass(frozen=True)
class NARMConfig(SequentialConfig):
    """Hyper-parameters (plus those of :class:`SequentialConfig`); ``hidden`` = embedding size d."""

    max_len: int = 50
    gru_hidden: int = 128
    n_layers: int = 1
    dropout: float = 0.25  # on the item embeddings
    ct_dropout: float = 0.5  # on [c_g; c_l]
    train_positions: str = "all"
    grad_clip: float | None = 5.0  # the unnormalised local attention grows with the length: keep steps sane

    def validate(self) -> None:
        super().validate()
        check_int("gru_hidden", self.gru_hidden, 1)
        check_int("n_layers", self.n_layers, 1)
        check_float("ct_dropout", self.ct_dropout, 0.0, 1.0, high_open=True)
        check_choice("train_positions", self.train_positions, POSITIONS)


class NARMNetwork(SequenceNetwork):
    def __init__(self, n_items: int, cfg: NARMConfig) -> None:
        super().__init__()
        self.n_items, self.max_len = n_items, cfg.max_len
        d, h = cfg.hidden, cfg.gru_hidden
        self.emb = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, h, cfg.n_layers, batch_first=True)
        self.a1 = nn.Linear(h, h, bias=False)  # on the query state h_t
        self.a2 = nn.Linear(h, h, bias=False)  # on the key states h_j
        self.v = nn.Linear(h, 1, bias=False)
        self.ct_drop = nn.Dropout(cfg.ct_dropout)
        self.b = nn.Linear(2 * h, d, bias=False)
        init_recurrent(self)
        self.rating_head = RatingHead(d)

    def _states(self, tokens: Tensor) -> Tensor:
        left, n = align_left(tokens)
        out, _ = self.gru(self.emb_drop(self.emb(left)))
        return align_right(out, n)

    def _local(self, hs: Tensor, keys: Tensor, queries: Tensor, valid: Tensor, t0: int) -> Tensor:
        """c_l [B, c, H] for query positions t0 .. t0 + c - 1 (keys: A2 h_j, queries: A1 h_t)."""
        w, c = hs.shape[1], queries.shape[1]
        alpha = self.v(torch.sigmoid(queries[:, :, None, :] + keys[:, None, :, :])).squeeze(-1)  # [B, c, W]
        t = torch.arange(t0, t0 + c, device=hs.device)
        allowed = (torch.arange(w, device=hs.device)[None, :] <= t[:, None])[None] & valid[:, None, :]
        return (alpha * allowed) @ hs

    def _decode(self, hs: Tensor, tokens: Tensor, t0: int) -> Tensor:
        """B [c_g; c_l] for query positions t0 .. W-1."""
        b, w, h = hs.shape
        valid = tokens != PAD
        keys, queries = self.a2(hs), self.a1(hs[:, t0:])
        chunk = max(1, _CHUNK_ELEMENTS // max(1, b * w * h))
        parts = []
        for s in range(0, w - t0, chunk):
            q = queries[:, s : s + chunk]
            if torch.is_grad_enabled() and chunk < w - t0:
                parts.append(checkpoint(self._local, hs, keys, q, valid, t0 + s, use_reentrant=False))
            else:
                parts.append(self._local(hs, keys, q, valid, t0 + s))
        local = torch.cat(parts, 1) if parts else hs[:, t0:]
        return self.b(self.ct_drop(torch.cat([hs[:, t0:], local], -1)))

    def encode(self, tokens: Tensor) -> Tensor:
        return self._decode(self._states(tokens), tokens, 0)

    def encode_last(self, tokens: Tensor) -> Tensor:
        return self._decode(self._states(tokens), tokens, tokens.shape[1] - 1)[:, 0]

    def item_table(self) -> Tensor:
        return self.emb.weight[1 : self.n_items + 1]


@register_model
class NARM(SequentialModel):
    """NARM under the library's sequential contract (:class:`SequentialModel`)."""

    name = "narm"
    Config = NARMConfig

    def _network(self) -> NARMNetwork:
        return NARMNetwork(self.n_items_, self.config)

    def _next_item_loss(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, int]:
        if self.config.train_positions == "all":
            return super()._next_item_loss(tokens, rng)
        net = self.net_
        inp = torch.from_numpy(tokens[:, :-1]).to(self.device)
        labels = torch.from_numpy(tokens[:, -1] - 1).to(self.device)  # rows hold >= 2 items: never PAD
        return full_softmax_ce(net.encode_last(inp), net.item_table(), labels), len(labels)
