"""LOCA (Choi et al., WSDM 2021), with Mult-VAE local models, as TALL's baseline runs it.

1. A global Mult-VAE (:class:`WL` with exponent 0) gives each user an embedding: the encoder
   mean of the training row.
2. Anchors (``coverage`` greedy by default, or ``random`` / ``kmeans``); around anchor j a train
   kernel (bandwidth ``train_h``) weights the users' losses and a narrower test kernel
   (``test_h``) says whom the local model serves. Distance: normalised angular distance.
3. One *fresh* Mult-VAE per anchor, trained on every user with a non-zero train weight with the
   kernel-weighted multinomial loss; each local model early-stops on its own test-kernel users'
   validation score. All locals are one :class:`ExpertBank` (``chunk`` of them at a time), not
   q processes.
4. Prediction = sum_j w_test_j(u) * logits_j(u) / sum_j w_test_j(u); users no local model covers
   get the global model's logits.

Differences from LOCA's code, on purpose: early stopping uses the validation split, never the
test set (LOCA's own protocol has no validation split); a local model trains on batches of
*all* users in which the users outside its neighbourhood have weight 0 (LOCA drops them from the
batch: same gradient, fewer steps per epoch for small neighbourhoods are then skipped rather
than merged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError
from recsys.checks import check_choice, check_float, check_int
from recsys.models.base import ItemScorer
from recsys.models.local.bank import ExpertBank, bank_params, shared_bank_epoch
from recsys.training.cost import CUDA_CONTEXT_BYTES, F32, DataShape, EpochCost
from recsys.models.local.common import BankConfig, LocalModel, bank_scores, check_valid
from recsys.models.local.neighbourhoods import ANCHOR_METHODS, KERNELS, angular_distance, kernel, select_anchors
from recsys.models.local.wl import WL
from recsys.training.seed import seed_everything
from recsys.models.registry import register_model


@dataclass(frozen=True)
class LOCAConfig(BankConfig):
    """Defaults: TALL's ``LOCA_VAE.cfg`` (100 locals, coverage anchors, Epanechnikov, train_h 1,
    test_h 0.8, enc [100], dropout 0, reg 1e-3, beta annealed to 0.2 over 200k updates)."""

    n_local: int = 100
    anchor: str = "coverage"
    kernel: str = "epanechnikov"
    train_h: float = 1.0
    test_h: float = 0.8
    coverage_stride: int = 10
    chunk: int = 100
    dropout: float = 0.0
    weight_decay: float = 1e-3
    total_anneal_steps: int = 200_000

    def validate(self) -> None:
        super().validate()
        check_int("n_local", self.n_local, 1)
        check_choice("anchor", self.anchor, ANCHOR_METHODS)
        check_choice("kernel", self.kernel, KERNELS)
        check_float("train_h", self.train_h, 0.0, low_open=True)
        check_float("test_h", self.test_h, 0.0, low_open=True)
        check_int("coverage_stride", self.coverage_stride, 1)
        check_int("chunk", self.chunk, 1)


@register_model
class LOCA(LocalModel, ItemScorer):
    """Learned state adds ``global_`` (one-expert bank), ``embeddings_`` [U, H], ``anchors_`` [q]
    and ``local_`` (a q-expert bank)."""

    name = "loca"
    Config = LOCAConfig
    config: LOCAConfig

    def _init_modules(self) -> None:
        self.global_ = self._new_bank(1)
        self.local_ = self._new_bank(len(self.anchors_))

    # ---- the three stages, callable separately so a flow can shard step 3 -----------------
    def prepare(self, train: sp.csr_matrix, valid=None, global_model: WL | None = None) -> "LOCA":
        """Global model, embeddings and anchors (trains the global VAE unless one is given)."""
        c = self.config
        train, valid = self._start_fit(train, valid)
        if c.n_local > train.shape[0]:
            raise ConfigError(f"n_local={c.n_local} exceeds the {train.shape[0]} users")
        if global_model is None:
            global_model = self._sub_model(WL.like(c, exponent=0.0), "global").fit(train, valid)
        self.global_ = global_model.bank_
        self.embeddings_ = global_model.user_embeddings(train)
        emb = torch.from_numpy(self.embeddings_).to(self.device)
        self.anchors_ = select_anchors(emb, c.n_local, c.anchor, bandwidth=c.test_h, kind=c.kernel,
                                       stride=c.coverage_stride, seed=c.seed)
        return self

    sharded = True

    @classmethod
    def start_method(cls, config) -> str:
        return "vae"  # the global model and user embeddings: the plain VAE (WL with exponent 0)

    @classmethod
    def shard_units(cls, config, n_users: int) -> int:
        return config.n_local

    def prepare_from(self, train, valid, start) -> "LOCA":
        return self.prepare(train, valid, global_model=start)

    def fit_shard(self, valid, units: np.ndarray) -> dict:
        return {"bank": self.fit_locals(valid, units).state_dict(), "items": units, "history": self.history_}

    def merge_shards(self, parts: list[dict]) -> None:
        self._merge_banks(parts)

    def kernels(self, anchors: np.ndarray, bandwidth: float, emb: Tensor | None = None) -> Tensor:
        """Kernel weights [len(anchors), U] of every user (or of `emb` rows) around the anchors."""
        if emb is None:
            emb = torch.from_numpy(self.embeddings_).to(self.device)
        d = angular_distance(torch.from_numpy(self.embeddings_[np.asarray(anchors)]).to(self.device), emb)
        return kernel(d, bandwidth, self.config.kernel)

    def fit_locals(self, valid=None, which: np.ndarray | None = None) -> ExpertBank:
        """Train the local models of anchors ``anchors_[which]`` (default all), ``chunk`` at a time;
        `valid`: the validation target each local model early-stops on."""
        c = self.config
        valid = check_valid(self.train_, valid)
        seed_everything(c.seed)  # as right after prepare(), also when the prepared model was loaded
        which = np.arange(len(self.anchors_)) if which is None else np.asarray(which, dtype=np.int64)
        banks = []
        for start in range(0, len(which), c.chunk):
            anchors = self.anchors_[which[start:start + c.chunk]]
            bank = self._new_bank(len(anchors))
            train_w = self.kernels(anchors, c.train_h)
            serve = self.kernels(anchors, c.test_h) > 0
            banks.append(self._fit_bank(bank, self.train_, valid, train_w, serve, tag=f"chunk{start}_"))
        return ExpertBank.concat(banks)

    def fit(self, train: sp.csr_matrix, valid=None, global_model: WL | None = None) -> "LOCA":
        self.prepare(train, valid, global_model)
        self.local_ = self.fit_locals(valid)
        self.best_epoch_ = None
        return self

    # ---- cost formulas (recsys.training.cost) ----------------------------------------------
    @classmethod
    def epoch_cost(cls, config: LOCAConfig, shape: DataShape) -> EpochCost:
        """One epoch of every local model: the q = ``n_local`` locals train ``chunk`` at a time as an
        E-expert bank, each chunk passing once over *all* training users (users outside a local's
        kernel weigh 0 but are computed), BankAdam each step. Dominated by the decoders,
        6 q n H I dense FLOPs. Host peak: the training chunk's bank with Adam, the finished chunks'
        weights, the [chunk, U] kernels; at the end the concatenated bank (twice q locals' weights)."""
        from recsys.models.base import BASE_PROCESS_BYTES

        c, n, I, H = config, shape.n_users, shape.n_items, config.hidden
        q = min(c.n_local, n)
        chunks = [min(c.chunk, q - s) for s in range(0, q, c.chunk)]
        parts = [shared_bank_epoch(e, n, shape.nnz, I, H, c.batch_size) for e in chunks]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        p1 = bank_params(1, I, H)
        resident = BASE_PROCESS_BYTES + 48 * shape.nnz + F32 * (p1 + n * H)  # global bank, embeddings
        host = resident + max(part.host_bytes + F32 * (sum(chunks[:j]) * p1 + 2 * e * n) for j, (part, e) in
                              enumerate(zip(parts, chunks)))
        host = max(host, resident + 2 * F32 * q * p1)  # ExpertBank.concat of the chunks
        cost = replace(total, host_bytes=host, device_bytes=CUDA_CONTEXT_BYTES + host - BASE_PROCESS_BYTES - 36 * shape.nnz,
                       params=(q + 1) * p1, terms={**total.terms, "n_chunks": len(chunks)})
        return cls._with_one_off(cost, cls.one_off_cost(config, shape))

    @classmethod
    def one_off_cost(cls, config: LOCAConfig, shape: DataShape) -> EpochCost:
        """The global VAE (``epochs`` epochs of WL with exponent 0), the users' embeddings, the
        coverage anchors (angular distance of every ``coverage_stride``-th user with every user:
        2 (U / stride) U H dense FLOPs; lazy greedy in O(U) host bytes: one block of <= 2048
        candidate rows (float distances + bools) while the gains are counted, the normalised
        embeddings, 24 B / user fingerprint weights, <= 128 cached and <= 64 recomputed rows, 41 B
        per candidate; no [U / stride, U] cover matrix) and each local's train / test kernels
        (4 q U H)."""
        from recsys.models.base import BASE_PROCESS_BYTES

        c, n, H = config, shape.n_users, config.hidden
        q = min(c.n_local, n)
        glob = WL.epoch_cost(WL.like(c, exponent=0.0).config, shape)
        glob = replace(glob.times(c.epochs), terms={})
        cand = 0
        if c.anchor == "coverage":
            cand = math.ceil(n / c.coverage_stride)
            cand = cand if cand >= q else n
        anchors = 2.0 * cand * n * H
        kernels = 4.0 * q * n * H
        embed = 2.0 * shape.nnz * 2 * H
        cover = 3 * F32 * n  # random / kmeans: as before
        if cand:  # neighbourhoods._coverage_anchors: pass 1 (a block of rows) or pass 2 (cached + recomputed rows)
            rows = max((F32 + 1) * min(2048, cand) * n + 8 * 64 * n, (128 + 64 * (F32 + 2) + 1) * n)
            cover = F32 * n * H + 24 * n + 41 * cand + rows
        host = BASE_PROCESS_BYTES + 48 * shape.nnz + F32 * (4 * bank_params(1, shape.n_items, H) + n * H) + cover
        phase = EpochCost(anchors + kernels + embed, anchors + kernels, host, CUDA_CONTEXT_BYTES + cover,
                          traffic_bytes=3 * F32 * cand * n, steps=0, params=0,
                          terms={"anchor_flops": anchors, "kernel_flops": kernels, "cover_bytes": cover,
                                 "global_flops": glob.flops, "global_dense_flops": glob.dense_flops})
        return glob + phase

    # ---- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, rows: sp.csr_matrix, budget: int = 1 << 25) -> Tensor:
        """Kernel-weighted ensemble of the local models' logits; the global model where no local covers."""
        from recsys.training.batches import SparseRows

        rows = self._fitted_rows(rows)
        c, q = self.config, len(self.anchors_)
        out = []
        step = max(1, budget // max(1, q * self.n_items_))
        for start in range(0, rows.shape[0], step):
            part = rows[start:start + step]
            batch = SparseRows.from_csr(part, self.device)
            self.global_.eval()
            emb = self.global_.encode(batch)[0][0]
            w = self.kernels(self.anchors_, c.test_h, emb)  # [q, B]
            local = bank_scores(self.local_, part, self.device)  # [q, B, I]
            num = torch.einsum("qb,qbi->bi", w, local)
            den = w.sum(0)
            glob = self.global_.decode(emb[None])[0]
            out.append(torch.where(den[:, None] > 0, num / den.clamp_min(1e-12)[:, None], glob))
        return torch.cat(out)

    def score_users(self, users: np.ndarray) -> Tensor:
        users = self._users(users)  # first: a model that is not fitted has no train_
        return self.score(self.train_[users])
