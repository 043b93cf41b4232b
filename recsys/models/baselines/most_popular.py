"""Most-popular baseline: every user gets the items ranked by their number of training users."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.models.base import ItemScorer, ModelConfig
from recsys.training.batches import as_csr
from recsys.models.registry import register_model


@dataclass(frozen=True)
class MostPopularConfig(ModelConfig):
    """No hyper-parameters beyond seed / device."""


@register_model
class MostPopular(ItemScorer):
    """Score of item i = number of training rows with a non-zero in column i; learned state ``counts_``."""

    seeded = False  # counts
    uses_device = False

    name = "mostpop"
    Config = MostPopularConfig

    def fit(self, train: sp.csr_matrix, valid: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> "MostPopular":
        """Count item occurrences in `train`; `valid` is accepted for the common signature and unused."""
        train = as_csr(train, "train")
        counts = np.bincount(train.indices[train.data != 0], minlength=train.shape[1])
        self.counts_ = torch.from_numpy(counts.astype(np.float32)).to(self.device)
        return self

    def _n_items(self) -> int:
        return self.counts_.shape[0]

    @torch.no_grad()
    def score(self, rows: sp.csr_matrix) -> Tensor:
        rows = self._fitted_rows(rows)
        # a real copy, not an expanded view: callers mask seen items in place
        return self.counts_.repeat(rows.shape[0], 1)
