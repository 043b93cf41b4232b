"""WL (Zhu & Caverlee, WSDM 2022): one global Mult-VAE I -> 100 -> I whose per-user loss is
weighted up for niche (low-mainstream) users. ``exponent = 0`` gives the plain VAE baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import DataError
from recsys.metrics.groups import mainstream_scores
from recsys.checks import check_float
from recsys.models.local.common import BankConfig, LocalModel, bank_scores


def wl_weights(ms: np.ndarray, exponent: float = 1.5) -> np.ndarray:
    """Per-user loss weights from mainstream scores: s = -MS; w = ((s - min s) / max(s - min s))^exponent,
    scaled to mean 1. The most mainstream user gets 0 (as LFT / TALL's code); exponent 0 gives all 1."""
    ms = np.asarray(ms, dtype=np.float64)
    if ms.ndim != 1 or not len(ms):
        raise DataError(f"mainstream scores must be a non-empty vector, got shape {ms.shape}")
    if exponent == 0:
        return np.ones(len(ms))
    s = -ms - np.min(-ms)
    top = s.max()
    if top <= 0:  # every user equally mainstream
        return np.ones(len(ms))
    w = (s / top) ** exponent
    return w / w.mean()


@dataclass(frozen=True)
class WLConfig(BankConfig):
    """LFT's base model settings; ``exponent``: 1.5 in LFT, 1.2 in TALL's copy, 0 = unweighted VAE."""

    exponent: float = 1.5

    def validate(self) -> None:
        super().validate()
        check_float("exponent", self.exponent, 0.0)


class WL(LocalModel):
    """Global weighted-loss Mult-VAE. Learned state adds ``bank_`` (one expert) and ``weights_``."""

    name = "wl"
    Config = WLConfig
    config: WLConfig

    def _init_modules(self) -> None:
        self.bank_ = self._new_bank(1)

    def fit(self, train: sp.csr_matrix, valid=None, ms: np.ndarray | None = None) -> "WL":
        """Train on `train`; `valid` is the validation target aligned with it; `ms` the mainstream
        scores (computed from `train` when omitted and the exponent is not 0)."""
        train, valid = self._start_fit(train, valid)
        if self.config.exponent and ms is None:
            ms = mainstream_scores(train, device=self.device)
        w = wl_weights(ms, self.config.exponent) if self.config.exponent else np.ones(train.shape[0])
        if len(w) != train.shape[0]:
            raise DataError(f"ms has {len(w)} scores for {train.shape[0]} users")
        self.weights_ = w.astype(np.float32)
        self._init_modules()
        self._fit_bank(self.bank_, train, valid, torch.from_numpy(self.weights_)[None, :])
        self.best_epoch_ = int(self._best_epochs[0])
        return self

    def fit_local(self, train, valid, ms) -> "WL":
        return self.fit(train, valid, ms=ms)

    def score(self, rows: sp.csr_matrix) -> Tensor:
        """Logits [B, I] for any user rows (the model is inductive)."""
        return bank_scores(self.bank_, self._fitted_rows(rows), self.device)[0]

    def score_users(self, users: np.ndarray) -> Tensor:
        users = self._users(users)  # first: a model that is not fitted has no train_
        return self.score(self.train_[users])

    @classmethod
    def like(cls, config: BankConfig, exponent: float) -> "WL":
        """An unfitted WL with `config`'s network and training settings and `exponent`: the global
        VAE LOCA starts from (exponent 0) and the WL that LFT / EnLFT fine-tune."""
        settings = {k: v for k, v in config.to_dict().items() if k in cls.Config.__dataclass_fields__}
        return cls(cls.Config.from_dict({**settings, "exponent": exponent}, cls.name))

    @torch.no_grad()
    def user_embeddings(self, rows: sp.csr_matrix | None = None, batch_size: int = 4096) -> np.ndarray:
        """Encoder mean mu [B, hidden] of each row (default: the training rows): LOCA's user embedding."""
        from recsys.training.batches import SparseRows

        rows = self.train_ if rows is None else self._fitted_rows(rows)
        self.bank_.eval()
        out = [self.bank_.encode(SparseRows.from_csr(rows[i:i + batch_size], self.device))[0][0].cpu()
               for i in range(0, rows.shape[0], batch_size)]
        return torch.cat(out).numpy()
