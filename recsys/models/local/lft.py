"""LFT and EnLFT (Zhu & Caverlee, WSDM 2022): local fine-tuning of the global WL model.

* Neighbourhoods: smooth each user's row with its Jaccard neighbours' mean row (alpha 0.7,
  Jaccard > 0.1, at least 10), then cosine similarity of the smoothed rows; u's local set =
  users with cosine > t = 0.2 (u included; at least 10, at most 2000).
* Fine-tuning: a copy of the base model (WL, or the plain VAE), Adam 1e-3, weight decay 0.01,
  beta fixed 0.2, 30 epochs of batches of 128 over the local set.
* **LFT**: one copy per user, which then scores only that user.
* **EnLFT**: 100 central-but-diverse anchors (:func:`enlft_anchors`), one copy per anchor; a
  user's scores are the similarity-weighted mean of the anchors' logits (similarities below t
  set to 0, except for users with none above t, who keep the raw ones).

Thousands of copies are never thousands of processes: ``group`` copies are fine-tuned together as
one :class:`ExpertBank` with grouped input rows; each copy runs its own batches and optimiser
steps (:class:`BankAdam`), exactly as it would alone.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError, DataError
from recsys.checks import check_float, check_int
from recsys.models.local.bank import BankAdam, ExpertBank, bank_kl, bank_nll, bank_params, weighted_mean
from recsys.models.local.common import BankConfig, LocalModel, bank_scores
from recsys.models.local.neighbourhoods import enlft_anchors, local_sets, smoothed_rows
from recsys.models.local.wl import WL
from recsys.training.batches import SparseRows
from recsys.training.cost import (ADAM_STATE, CUDA_CONTEXT_BYTES, F32, DataShape, EpochCost, adam_traffic,
                                  dense_layer_flops, sparse_input_flops)
from recsys.training.loop import Job, WorkProgress
from recsys.training.seed import seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LFTConfig(BankConfig):
    """Fine-tuning settings (LFT / EnLFT's scripts); the base model's own settings are the
    inherited BankConfig fields plus ``base_exponent`` (1.5: WL as in LFT; 0: the plain VAE)."""

    base_exponent: float = 1.5
    alpha: float = 0.7
    jaccard_threshold: float = 0.1
    min_neighbours: int = 10
    t: float = 0.2
    min_local: int = 10
    max_local: int = 2000
    local_epochs: int = 30
    local_batch_size: int = 128
    local_lr: float = 1e-3
    local_weight_decay: float = 0.01
    local_beta: float = 0.2
    local_dropout: float = 0.0
    group: int = 64

    def validate(self) -> None:
        super().validate()
        check_float("base_exponent", self.base_exponent, 0.0)
        check_float("alpha", self.alpha, 0.0, 1.0)
        check_float("jaccard_threshold", self.jaccard_threshold, 0.0, 1.0)
        check_int("min_neighbours", self.min_neighbours, 0)
        check_float("t", self.t, -1.0, 1.0)
        check_int("min_local", self.min_local, 1)
        check_int("max_local", self.max_local, 1)
        if self.max_local < self.min_local:
            raise ConfigError(f"max_local={self.max_local} is below min_local={self.min_local}")
        check_int("local_epochs", self.local_epochs, 1)
        check_int("local_batch_size", self.local_batch_size, 1)
        check_float("local_lr", self.local_lr, 0.0, low_open=True)
        check_float("local_weight_decay", self.local_weight_decay, 0.0)
        check_float("local_beta", self.local_beta, 0.0)
        check_float("local_dropout", self.local_dropout, 0.0, 1.0, high_open=True)
        check_int("group", self.group, 1)


@dataclass(frozen=True)
class EnLFTConfig(LFTConfig):
    n_anchors: int = 100
    diversity: float = 1.5

    def validate(self) -> None:
        super().validate()
        check_int("n_anchors", self.n_anchors, 1)
        check_float("diversity", self.diversity, 0.0)


class _FineTuned(LocalModel):
    """Shared machinery: base model, neighbourhoods, batched fine-tuning."""

    config: LFTConfig
    sharded = True

    @classmethod
    def start_method(cls, config) -> str:
        """WL (LFT's paper) unless ``base_exponent: 0`` asks for the plain VAE."""
        return "vae" if float(config.base_exponent) == 0 else "wl"

    def prepare_from(self, train, valid, start) -> "_FineTuned":
        return self.prepare(train, valid, base_model=start)

    def prepare(self, train: sp.csr_matrix, valid=None, base_model: WL | None = None) -> "_FineTuned":
        """Train (or take) the base model and compute the smoothed rows the neighbourhoods use."""
        c = self.config
        train, valid = self._start_fit(train, valid)
        if base_model is None:
            base_model = self._sub_model(WL.like(c, exponent=c.base_exponent), "base").fit(train, valid)
        self.base_ = base_model.bank_
        self.smoothed_ = smoothed_rows(train, alpha=c.alpha, threshold=c.jaccard_threshold,
                                       min_neighbours=c.min_neighbours, device=self.device)
        return self

    def local_sets(self, users: np.ndarray) -> list[np.ndarray]:
        c = self.config
        return local_sets(self.smoothed_, users, t=c.t, min_size=c.min_local, max_size=c.max_local, device=self.device)

    def finetune(self, sets: list[np.ndarray]) -> ExpertBank:
        """One copy of the base model per local set, ``group`` copies at a time -> one bank."""
        c = self.config
        banks = []
        progress = WorkProgress(self.name, len(sets), "local copies fine-tuned", c.progress)
        for start in range(0, len(sets), c.group):
            banks.append(self._finetune_group(sets[start:start + c.group], seed=c.seed + start))
            progress.step(len(sets[start:start + c.group]))
        return ExpertBank.concat(banks)

    def _finetune_group(self, sets: list[np.ndarray], seed: int) -> ExpertBank:
        c = self.config
        G, B = len(sets), c.local_batch_size
        bank = ExpertBank(G, self.n_items_, c.hidden, c.local_dropout, c.noise_std).to(self.device)
        bank.replicate_from(self.base_)
        opt = BankAdam(bank, c.local_lr, c.local_weight_decay)
        rng = np.random.default_rng(seed)
        n_users = self.train_.shape[0]
        padded = sp.vstack([self.train_, sp.csr_matrix((1, self.n_items_), dtype=np.float32)]).tocsr()
        sizes = np.array([len(s) for s in sets])
        steps = int(np.ceil(sizes.max() / B))
        start = time.perf_counter()

        def epoch_fn(epoch: int) -> dict:
            bank.train()
            order = np.full((G, steps * B), n_users, dtype=np.int64)  # n_users = the empty padding row
            for g, s in enumerate(sets):
                order[g, : len(s)] = rng.permutation(s)
            total = torch.zeros((), device=self.device)
            for step in range(steps):
                idx = order[:, step * B:(step + 1) * B]  # [G, B]
                real = torch.from_numpy(idx != n_users).to(self.device).float()
                active = real.sum(1) > 0
                rows = SparseRows.from_csr(padded[idx.reshape(-1)], self.device)
                logits, mu, logvar = bank(rows, grouped=True)
                per_expert = weighted_mean(bank_nll(logits, rows, grouped=True), real) + c.local_beta * weighted_mean(
                    bank_kl(mu, logvar), real)
                del logits  # the loss keeps its own buffer; free the logits before backward
                opt.zero_grad()
                loss = per_expert[active].sum()
                loss.backward()
                opt.step(active)
                total += loss.detach()
            return {"loss": float(total) / (G * max(steps, 1))}

        # fixed epochs, no validation (LFT fine-tunes each copy for local_epochs); thousands of
        # groups would flood a log with epoch lines, so one line per group is written below instead;
        # no checkpoints: a group is minutes of work, a shard's finished users are its records
        self._train(Job(epoch_fn, weights={"bank": bank}, state={"optimizer": opt, "rng": rng}),
                    monitor="loss", epochs=c.local_epochs, patience=None, progress="off", tag=f"group{seed}_",
                    max_seconds=None, checkpoint=False)
        self.history_.append({"group_size": G, "steps_per_epoch": steps, "finetune_seconds": time.perf_counter() - start})
        log.info("%s: fine-tuned %d copies (local sets of %d..%d users, %d steps per epoch) in %.1f s", self.name, G,
                 sizes.min(), sizes.max(), steps, self.history_[-1]["finetune_seconds"])
        bank.eval()
        return bank


def finetune_epoch_cost(config: LFTConfig, shape: DataShape, n_copies: int, local_size: float | None,
                        keep_banks: bool) -> EpochCost:
    """One local epoch of `n_copies` fine-tuned copies, ``group`` at a time (grouped layout): each
    copy runs ceil(s / B) steps of B = ``local_batch_size`` rows (padding rows included) over its
    local set of s users (default: the cap, min(max_local, U)). Dense FLOPs: decoder 6 B H I per
    copy-step, and the encoder's batched dense backward 2 B I 2H where a step's rows are at least
    1 % dense (a last, short step usually is not: sparse). `keep_banks`: EnLFT keeps the finished
    copies (and concatenates them at the end)."""
    from recsys.models.base import BASE_PROCESS_BYTES

    c, n, I, H, B = config, shape.n_users, shape.n_items, config.hidden, config.local_batch_size
    s = min(c.max_local, n) if local_size is None else float(local_size)
    s = max(min(s, n), min(c.min_local, n))
    full, rem = divmod(int(math.ceil(s)), B)
    per_copy_steps = full + (rem > 0)
    L = shape.mean_len
    enc_dense = enc_sparse = 0.0
    for rows, k in ((B, full), (rem, 1 if rem else 0)):
        d, sp_ = sparse_input_flops(rows * L, B, I, 2 * H)
        enc_dense, enc_sparse = enc_dense + k * d, enc_sparse + k * sp_
    decoder = dense_layer_flops(B * per_copy_steps, H, I)
    C = int(n_copies)
    G = min(c.group, C)
    groups = math.ceil(C / max(G, 1))
    p1 = bank_params(1, I, H)
    block = F32 * G * B * I
    state = ADAM_STATE * F32 * G * p1
    step_bytes = state + 3 * block + F32 * G * B * 2 * H * 4 + 40 * G * B * L
    data = 48 * shape.nnz + 12 * shape.nnz + 16 * n  # the split's matrices and the padded copy of train
    sets = 8 * C * s
    kept = F32 * 2 * C * p1 if keep_banks else 0.0
    host = BASE_PROCESS_BYTES + data + F32 * p1 + sets + max(step_bytes + kept / 2, kept)
    traffic = C * per_copy_steps * (8 * F32 * B * I + adam_traffic(p1) + 3 * F32 * H * I + 2 * F32 * I * 2 * H)
    return EpochCost(flops=C * (decoder + enc_dense + enc_sparse), dense_flops=C * (decoder + enc_dense),
                     host_bytes=host, device_bytes=CUDA_CONTEXT_BYTES + F32 * p1 + step_bytes + kept,
                     traffic_bytes=traffic, steps=groups * per_copy_steps, params=(C + 1) * p1,
                     terms={"decoder_flops": C * decoder, "encoder_dense_flops": C * enc_dense,
                            "encoder_sparse_flops": C * enc_sparse, "local_size": s, "steps_per_copy": per_copy_steps,
                            "logits_block_bytes": block, "group_state_bytes": state, "local_sets_bytes": sets})


def finetune_one_off(config: LFTConfig, shape: DataShape, query_users: int, anchors: int = 0) -> EpochCost:
    """The base model (WL, ``epochs`` epochs, its mainstream scores), the smoothed rows (Jaccard of
    every user pair, sparse), the cosine similarities of the smoothed rows for the `query_users`
    whose local sets are built (and, for EnLFT, every user's row sum and each anchor's column).
    The smoothed matrix's fill is estimated as (1 + min_neighbours) x nnz, at most U x I."""
    from recsys.models.local.wl import mainstream_cost

    c, n = config, shape.n_users
    base = WL.like(c, exponent=c.base_exponent)
    phase = WL.one_off_cost(base.config, shape) + WL.epoch_cost(base.config, shape).times(c.epochs)
    nnz_s = min(float(n) * shape.n_items, (1 + c.min_neighbours) * shape.nnz)
    smooth = mainstream_cost(shape)
    cosine = 2.0 * nnz_s * (query_users + (n + anchors if anchors else 0))
    blocks = 3 * F32 * min(1024, n) * n + 12 * nnz_s + F32 * n * anchors * 3
    extra = EpochCost(smooth.flops + cosine, 0.0, smooth.host_bytes + blocks, smooth.device_bytes + blocks,
                      traffic_bytes=smooth.traffic_bytes + 3 * F32 * n * query_users, steps=0, params=0,
                      terms={"smoothing_sparse_flops": smooth.flops, "cosine_sparse_flops": cosine, "smoothed_nnz": nnz_s})
    return replace(phase, terms={"base_flops": phase.flops, "base_dense_flops": phase.dense_flops}) + extra


class LFT(_FineTuned):
    """Learned state adds ``base_`` (the WL bank), ``smoothed_`` and ``scores_`` [U, I] float32
    (each user's logits from its own fine-tuned copy; NaN rows for users not fine-tuned yet)."""

    name = "lft"
    Config = LFTConfig

    def _init_modules(self) -> None:
        self.base_ = self._new_bank(1)

    @classmethod
    def epoch_cost(cls, config: LFTConfig, shape: DataShape, local_size: float | None = None) -> EpochCost:
        """One local epoch of every user's fine-tuned copy (:func:`finetune_epoch_cost`; a fit runs
        ``local_epochs`` of them after :meth:`one_off_cost`). Dominated by the decoders over the
        padded groups, 6 U ceil(s / B) B H I. Host: the process, the data, one group's bank with
        Adam and three [group, B, I] blocks, the local sets (8 U s bytes) -- and at the end of fit
        the scores: ``scores_`` and the shard's output, 2 x U x I float32 (a |U| x |I| host term)."""
        cost = finetune_epoch_cost(config, shape, shape.n_users, local_size, keep_banks=False)
        scores = 2 * F32 * shape.n_users * shape.n_items
        cost = replace(cost, host_bytes=cost.host_bytes + scores, terms={**cost.terms, "scores_bytes": scores})
        return cls._with_one_off(cost, cls.one_off_cost(config, shape))

    @classmethod
    def one_off_cost(cls, config: LFTConfig, shape: DataShape) -> EpochCost:
        """:func:`finetune_one_off` for every user, plus the final scoring of each user by its copy
        (2 U H I dense FLOPs: one decoder row per copy)."""
        phase = finetune_one_off(config, shape, shape.n_users)
        score = 2.0 * shape.n_users * config.hidden * shape.n_items
        return replace(phase, flops=phase.flops + score, dense_flops=phase.dense_flops + score,
                       terms={**phase.terms, "scoring_flops": score})

    @torch.no_grad()
    def finetune_users(self, users: np.ndarray) -> np.ndarray:
        """Fine-tune one copy per user in `users` and return their logits [len(users), I] (a shard's work)."""
        users = self._users(users)
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        c = self.config
        sets = self.local_sets(users)  # one similarity pass for the whole shard
        # A group runs as many steps as its largest local set needs (the others pad), so users
        # are grouped by local-set size: on ML-1M (sets of 10..2000 users, half at the cap) this
        # cuts the padded work of groups of 64 by 1.38x with all users in one shard, 1.35x in 4.
        order = np.argsort([len(s) for s in sets], kind="stable")
        progress = WorkProgress(self.name, len(users), "users' copies fine-tuned", c.progress)
        for start in range(0, len(users), c.group):
            pick = order[start:start + c.group]
            # seeded by (seed, the group's first user): a group's copies do not depend on the
            # groups before it, and with group=1 a copy depends on its user alone
            seed = int(np.random.SeedSequence([c.seed, int(users[pick[0]])]).generate_state(1)[0])
            seed_everything(seed)
            with torch.enable_grad():
                bank = self._finetune_group([sets[j] for j in pick], seed=seed)
            rows = SparseRows.from_csr(self.train_[users[pick]], self.device)
            out[pick] = bank(rows, grouped=True)[0][:, 0].cpu().numpy()
            progress.step(len(pick))
        return out

    @classmethod
    def shard_units(cls, config, n_users: int) -> int:
        return n_users  # one fine-tuned copy per user

    def fit_shard(self, valid, units: np.ndarray) -> dict:
        return {"scores": torch.from_numpy(self.finetune_users(units)), "items": units, "history": self.history_}

    def merge_shards(self, parts: list[dict]) -> None:
        for p in parts:
            self.history_ += p["history"]
            self.set_scores(p["items"], p["scores"].numpy())
        self.best_epoch_ = None

    def set_scores(self, users: np.ndarray, scores: np.ndarray) -> None:
        if not hasattr(self, "scores_"):
            self.scores_ = np.full((self.train_.shape[0], self.n_items_), np.nan, dtype=np.float32)
        self.scores_[np.asarray(users)] = scores

    def fit(self, train: sp.csr_matrix, valid=None, base_model: WL | None = None) -> "LFT":
        self.prepare(train, valid, base_model)
        users = np.arange(train.shape[0])
        self.set_scores(users, self.finetune_users(users))
        self.best_epoch_ = None
        return self

    def score_users(self, users: np.ndarray) -> Tensor:
        users = self._users(users)
        out = self.scores_[users]
        if np.isnan(out[:, 0]).any():
            raise DataError("some of these users have not been fine-tuned (run finetune_users / set_scores for them)")
        return torch.from_numpy(out).to(self.device)


class EnLFT(_FineTuned):
    """Learned state adds ``anchors_``, ``weights_`` [U, n_anchors] and ``local_`` (the anchors' bank)."""

    name = "enlft"
    Config = EnLFTConfig
    config: EnLFTConfig

    def _init_modules(self) -> None:
        self.base_ = self._new_bank(1)
        self.local_ = self._new_bank(len(self.anchors_))

    def prepare(self, train, valid=None, base_model=None) -> "EnLFT":
        super().prepare(train, valid, base_model)
        c = self.config
        if c.n_anchors > self.train_.shape[0]:
            raise ConfigError(f"n_anchors={c.n_anchors} exceeds the {self.train_.shape[0]} users")
        self.anchors_, sim = enlft_anchors(self.smoothed_, c.n_anchors, diversity=c.diversity, device=self.device)
        w = np.where(sim < c.t, 0.0, sim)
        none = w.sum(1) == 0
        w[none] = sim[none]  # users near no anchor keep the raw similarities
        self.weights_ = w.astype(np.float32)
        return self

    @classmethod
    def shard_units(cls, config, n_users: int) -> int:
        return config.n_anchors

    def fit_shard(self, valid, units: np.ndarray) -> dict:
        return {"bank": self.fit_anchors(units).state_dict(), "items": units, "history": self.history_}

    def merge_shards(self, parts: list[dict]) -> None:
        self._merge_banks(parts)

    @classmethod
    def epoch_cost(cls, config: EnLFTConfig, shape: DataShape, local_size: float | None = None) -> EpochCost:
        """One local epoch of the ``n_anchors`` anchors' copies (:func:`finetune_epoch_cost`; a fit
        runs ``local_epochs`` of them after :meth:`one_off_cost`): 6 A ceil(s / B) B H I decoder
        FLOPs. Host: one group's bank with Adam, the finished copies and their concatenation."""
        cost = finetune_epoch_cost(config, shape, min(config.n_anchors, shape.n_users), local_size, keep_banks=True)
        return cls._with_one_off(cost, cls.one_off_cost(config, shape))

    @classmethod
    def one_off_cost(cls, config: EnLFTConfig, shape: DataShape) -> EpochCost:
        """:func:`finetune_one_off` for the anchors (anchor selection: every user's similarity row sum)."""
        a = min(config.n_anchors, shape.n_users)
        return finetune_one_off(config, shape, a, anchors=a)

    def fit_anchors(self, which: np.ndarray | None = None) -> ExpertBank:
        """Fine-tune the copies of anchors ``anchors_[which]`` (default all): a shard's work."""
        which = np.arange(len(self.anchors_)) if which is None else np.asarray(which, dtype=np.int64)
        seed_everything(self.config.seed)  # as right after prepare(), also when the prepared model was loaded
        return self.finetune(self.local_sets(self.anchors_[which]))

    def fit(self, train, valid=None, base_model: WL | None = None) -> "EnLFT":
        self.prepare(train, valid, base_model)
        self.local_ = self.fit_anchors()
        self.best_epoch_ = None
        return self

    @torch.no_grad()
    def score_users(self, users: np.ndarray, budget: int = 1 << 25) -> Tensor:
        users = self._users(users)
        a = len(self.anchors_)
        out = []
        step = max(1, budget // max(1, a * self.n_items_))
        for start in range(0, len(users), step):
            part = users[start:start + step]
            w = torch.from_numpy(self.weights_[part]).to(self.device).T  # [A, B]
            logits = bank_scores(self.local_, self.train_[part], self.device)
            out.append(torch.einsum("ab,abi->bi", w, logits) / w.sum(0).clamp_min(1e-12)[:, None])
        return torch.cat(out)

