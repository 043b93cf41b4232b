"""MELO's task-state weighting network: one non-negative loss weight per support position.

An LSTM reads each support sequence's ratings as integers (0 = padding, 1..5; a 7-row embedding
as MELO's, row 6 unused) from a learnable initial state and maps every hidden state to
``|w . h_t + b|``. The inner-loop loss of a task becomes ``sum(w_t * err_t * known_t) / #known``,
so adaptation can lean on rarely seen rating values instead of the dominant one. Its parameters are
meta-parameters, trained in the outer loop by their own optimiser (MELO: Adam, lr 0.1 cosine-annealed
to 0.01); the gradient reaches them only through the second-order path (first-order MAML gives
them none).

The LSTM runs on all support rows of a meta-batch as one reshaped batch ([T * S, L]) outside the
``vmap`` of the inner loop: its input (the ratings) does not depend on the adapted parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

N_VALUES = 7  # rating values 0 (padding) .. 5, plus one spare row, as MELO's embedding table


class TaskStateLSTM(nn.Module):
    """ratings [N, L] (long, 0..5) -> weights [N, L] (>= 0)."""

    def __init__(self, embed: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(N_VALUES, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(1, 1, hidden))
        self.c0 = nn.Parameter(torch.zeros(1, 1, hidden))
        self.out = nn.Linear(hidden, 1)

    def forward(self, ratings: Tensor) -> Tensor:
        n = ratings.shape[0]
        h0 = self.h0.expand(1, n, -1).contiguous()
        c0 = self.c0.expand(1, n, -1).contiguous()
        h, _ = self.lstm(self.embed(ratings.clamp(0, N_VALUES - 1)), (h0, c0))
        return self.out(h).squeeze(-1).abs()
