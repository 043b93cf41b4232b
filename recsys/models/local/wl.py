"""WL (Zhu & Caverlee, WSDM 2022): one global Mult-VAE I -> 100 -> I whose per-user loss is
weighted up for niche (low-mainstream) users. ``exponent = 0`` gives the plain VAE baseline."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import DataError
from recsys.metrics.groups import mainstream_scores
from recsys.checks import check_float
from recsys.models.base import ItemScorer
from recsys.models.local.bank import shared_bank_epoch
from recsys.models.local.common import BankConfig, LocalModel, bank_scores
from recsys.training.cost import CUDA_CONTEXT_BYTES, F32, DataShape, EpochCost
from recsys.models.registry import register_model


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


def mainstream_cost(shape: DataShape, block: int = 1024) -> EpochCost:
    """Cost of :func:`recsys.metrics.groups.jaccard_blocks` over all users (mainstream scores, LFT's
    smoothing): X [U, I] sparse times a dense [I, block] batch per block, 2 nnz U sparse FLOPs,
    about five [block, U] float32 blocks and the dense batch."""
    from recsys.models.base import BASE_PROCESS_BYTES

    n, b = shape.n_users, min(block, shape.n_users)
    work = 2.0 * shape.nnz * n
    blocks = 5 * F32 * b * n + F32 * b * shape.n_items
    return EpochCost(work, 0.0, BASE_PROCESS_BYTES + 48 * shape.nnz + blocks, CUDA_CONTEXT_BYTES + blocks + 12 * shape.nnz,
                     traffic_bytes=5 * F32 * n * n, steps=0, params=0, terms={"jaccard_sparse_flops": work})


@dataclass(frozen=True)
class WLConfig(BankConfig):
    """LFT's base model settings; ``exponent``: 1.5 in LFT, 1.2 in TALL's copy, 0 = unweighted VAE."""

    exponent: float = 1.5

    def validate(self) -> None:
        super().validate()
        check_float("exponent", self.exponent, 0.0)


@register_model
class WL(LocalModel, ItemScorer):
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
        rows = self._fitted_rows(rows)  # NotFittedError before any learned state is read
        return bank_scores(self.bank_, rows, self.device)[0]

    def score_users(self, users: np.ndarray) -> Tensor:
        users = self._users(users)  # first: a model that is not fitted has no train_
        return self.score(self.train_[users])

    @classmethod
    def epoch_cost(cls, config: WLConfig, shape: DataShape) -> EpochCost:
        """Every training user once in batches through the one-expert bank (sparse encoder, dense
        decoder, softmax over [batch, I]), BankAdam each step: Mult-VAE I -> H -> I. Host: the
        process, the split's CSR matrices and the bank's weights, gradient and moments."""
        from recsys.models.base import BASE_PROCESS_BYTES

        c = config
        bank = shared_bank_epoch(1, shape.n_users, shape.nnz, shape.n_items, c.hidden, c.batch_size)
        cost = replace(bank, host_bytes=BASE_PROCESS_BYTES + bank.host_bytes + 48 * shape.nnz + 16 * shape.n_users,
                       device_bytes=CUDA_CONTEXT_BYTES + bank.device_bytes)
        return cls._with_one_off(cost, cls.one_off_cost(c, shape))

    @classmethod
    def one_off_cost(cls, config: WLConfig, shape: DataShape) -> EpochCost:
        """The mainstream scores (exponent > 0): Jaccard of every user with every user, X_b Xᵀ in
        blocks of 1,024 users (2 nnz U sparse FLOPs, a few [1024, U] float32 blocks)."""
        from recsys.models.base import BASE_PROCESS_BYTES

        if not config.exponent:
            return super().one_off_cost(config, shape)
        return mainstream_cost(shape)

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
