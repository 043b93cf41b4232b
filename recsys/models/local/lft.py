"""LFT and EnLFT (Zhu & Caverlee, WSDM 2022): local fine-tuning of the global WL model.

* Neighbourhoods: smooth each user's row with its Jaccard neighbours' mean row (alpha 0.7,
  Jaccard > 0.1, at least 10), then cosine similarity of the smoothed rows; u's local set =
  users with cosine > t = 0.2 (u included; at least 10, at most 2000).
* Fine-tuning: a copy of the base model (WL, or the plain VAE), Adam 1e-3, weight decay 0.01,
  beta fixed 0.2, 30 epochs of batches of 128 over the local set.
* **LFT**: one copy per user, which then scores only that user. Only what evaluation reads is
  kept: the user's ``keep_top`` best items outside its training items (see :class:`LFT`).
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
from typing import ClassVar, Iterable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError, DataError
from recsys.checks import check_float, check_int
from recsys.metrics.ranking import topk
from recsys.models.local.bank import BankAdam, ExpertBank, bank_kl, bank_nll, bank_params, weighted_mean
from recsys.models.local.common import REPORT_KS, REPORT_METRICS, BankConfig, LocalModel, bank_scores
from recsys.models.local.neighbourhoods import enlft_anchors, local_sets, smoothed_rows
from recsys.models.local.wl import WL
from recsys.training.batches import SparseRows
from recsys.training.cost import (ADAM_STATE, CUDA_CONTEXT_BYTES, F32, DataShape, EpochCost, adam_traffic,
                                  dense_layer_flops, sparse_input_flops)
from recsys.training.loop import Job
from recsys.training.progress import WorkProgress
from recsys.training.seed import seed_everything
from recsys.models.registry import register_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LFTConfig(BankConfig):
    """Fine-tuning settings (LFT / EnLFT's scripts); the base model's own settings are the
    inherited BankConfig fields plus ``base_exponent`` (1.5: WL as in LFT; 0: the plain VAE).

    ``keep_top`` (LFT only; EnLFT keeps no per-user scores): how many items LFT keeps per user,
    the user's best logits outside its training items (int32 index + float32 logit each, 8 bytes,
    instead of a dense [U, I] float32 table). Metrics at k are exactly the dense table's for every
    k <= keep_top (evaluation excludes the training items only); asking for more raises."""

    _uses_keep_top: ClassVar[bool] = True

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
    keep_top: int = 500

    def validate(self) -> None:
        super().validate()
        check_int("keep_top", self.keep_top, 1)
        if self._uses_keep_top and self.keep_top < max(self.eval_ks):
            raise ConfigError(f"keep_top={self.keep_top} is below the largest of eval_ks={list(self.eval_ks)}: "
                              f"LFT keeps each user's keep_top best items, so it could not rank that far")
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
    _uses_keep_top: ClassVar[bool] = False  # the anchors' bank scores every user: nothing kept per user

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
    def fit_cost(cls, config, shape: DataShape, epochs: float | None = None) -> EpochCost:
        """One fit: the one-off phases (the base WL's ``epochs`` epochs included) plus `epochs`
        (default ``local_epochs``) local epochs of the fine-tuned copies."""
        return super().fit_cost(config, shape, config.local_epochs if epochs is None else epochs)

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


@register_model
class LFT(_FineTuned):
    """Learned state adds ``base_`` (the WL bank), ``smoothed_``, and per user what evaluation
    reads of its own fine-tuned copy's logits: ``top_items_`` [U, M] int32 and ``top_scores_``
    [U, M] float32, the user's M = min(keep_top, I) best items with their logits, best first
    (ties: lower item index, as :func:`recsys.metrics.ranking.topk`), training items excluded
    (-inf padding where a user has fewer than M other items); ``top_items_`` rows of -1 are users
    not fine-tuned yet.

    Why this is exact: :meth:`evaluate_users` ranks all items with the user's training items
    excluded (LFT / TALL's evaluator; the test stage does not exclude the validation items), so
    its top-k, k <= M, is the first k of the kept list whatever the other items' logits were;
    :meth:`score_users` rebuilds rows with one floor value below the kept logits everywhere else
    (the evaluation sets the training items to -inf itself). A dense [U, I] table
    (11 GB on ML-20M, 94 GB on MSD) is never built on the host: each fine-tuned group's logits
    are reduced to their top-M on the device."""

    name = "lft"
    Config = LFTConfig

    def _init_modules(self) -> None:
        self.base_ = self._new_bank(1)
        if hasattr(self, "scores_"):  # a file saved with the dense [U, I] scores: keep their top-M
            dense = self.__dict__.pop("scores_")
            done = ~np.isnan(dense[:, 0])
            for start in range(0, len(dense), 1024):
                part = np.arange(start, min(start + 1024, len(dense)))
                part = part[done[part]]
                if len(part):
                    self.set_scores(part, dense[part])

    @property
    def kept(self) -> int:
        """M: how many items are kept per user (``keep_top``, at most the number of items)."""
        return min(self.config.keep_top, self.n_items_)

    @classmethod
    def epoch_cost(cls, config: LFTConfig, shape: DataShape, local_size: float | None = None) -> EpochCost:
        """One local epoch of every user's fine-tuned copy (:func:`finetune_epoch_cost`; a fit runs
        ``local_epochs`` of them after :meth:`one_off_cost`). Dominated by the decoders over the
        padded groups, 6 U ceil(s / B) B H I. Host: the process, the data, one group's bank with
        Adam and three [group, B, I] blocks, the local sets (8 U s bytes) -- and the kept scores,
        ``scores_bytes`` = 2 x 8 U M, M = min(keep_top, I) (int32 item + float32 logit): the
        state, plus the shards' top-M outputs as ``merge_shards`` receives them (the pipeline
        loads every shard's file at once: U x M x 8 in all; a one-process ``fit`` writes straight
        into the state, so this bounds it). No |U| x |I| host term."""
        cost = finetune_epoch_cost(config, shape, shape.n_users, local_size, keep_banks=False)
        m = min(config.keep_top, shape.n_items)
        scores = 2 * (4 + F32) * shape.n_users * m
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

    def _finetuned_groups(self, users: np.ndarray):
        """Fine-tune one copy per user in `users`, ``group`` at a time; yields (positions in
        `users`, their logits [len, I] on the device) group by group."""
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
            yield pick, bank(rows, grouped=True)[0][:, 0]
            progress.step(len(pick))

    @torch.no_grad()
    def finetune_users(self, users: np.ndarray) -> np.ndarray:
        """Fine-tune one copy per user in `users` and return their full logits [len(users), I]
        (for inspection and tests; a shard keeps only :meth:`finetune_top`)."""
        users = self._users(users)
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        for pick, logits in self._finetuned_groups(users):
            out[pick] = logits.cpu().numpy()
        return out

    def _top(self, users: np.ndarray, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Each row's M best items outside the user's training items (best first) and their logits."""
        logits = logits.to(self.device, torch.float32)
        idx = topk(logits, self.kept, self.train_[users], inplace=True)  # training items -> -inf
        return idx.to(torch.int32).cpu(), logits.gather(1, idx).cpu()

    @torch.no_grad()
    def finetune_top(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A shard's work: fine-tune one copy per user in `users`; returns their kept items
        [len(users), M] int32 and logits [len(users), M] float32 (see :class:`LFT`). Host memory:
        8 M bytes per user; the [group, I] logits stay on the device."""
        users = self._users(users)
        items = np.empty((len(users), self.kept), dtype=np.int32)
        scores = np.empty((len(users), self.kept), dtype=np.float32)
        for pick, logits in self._finetuned_groups(users):
            i, s = self._top(users[pick], logits)
            items[pick], scores[pick] = i.numpy(), s.numpy()
        return items, scores

    @classmethod
    def shard_units(cls, config, n_users: int) -> int:
        return n_users  # one fine-tuned copy per user

    def fit_shard(self, valid, units: np.ndarray) -> dict:
        items, scores = self.finetune_top(units)
        return {"top_items": torch.from_numpy(items), "top_scores": torch.from_numpy(scores), "items": units,
                "history": self.history_}

    def take_shard(self, part: dict) -> None:
        """Take one shard's output (``fit_shard``'s payload; also files of the dense [users, I]
        ``scores`` older versions wrote) into the kept scores."""
        if "top_items" in part:
            self.set_top(part["items"], np.asarray(part["top_items"]), np.asarray(part["top_scores"]))
        else:
            self.set_scores(part["items"], np.asarray(part["scores"]))

    def merge_shards(self, parts: list[dict]) -> None:
        for p in parts:
            self.history_ += p["history"]
            self.take_shard(p)
        self.best_epoch_ = None

    def _empty_top(self) -> None:
        if not hasattr(self, "top_items_"):
            n, m = self.train_.shape[0], self.kept
            self.top_items_ = np.full((n, m), -1, dtype=np.int32)  # -1: not fine-tuned yet
            self.top_scores_ = np.full((n, m), np.nan, dtype=np.float32)

    def set_top(self, users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> None:
        """Store kept items / logits [len(users), M] (as :meth:`finetune_top` returns them)."""
        users = self._users(users)
        self._empty_top()
        shape = (len(users), self.top_items_.shape[1])
        if items.shape != shape or scores.shape != shape:
            raise DataError(f"kept items / scores must be {shape} (keep_top={self.config.keep_top}, "
                            f"{self.n_items_} items), got {items.shape} / {scores.shape}")
        if (items < 0).any() or (items >= self.n_items_).any():
            raise DataError(f"kept item ids must be in 0..{self.n_items_ - 1}")
        self.top_items_[users], self.top_scores_[users] = items, scores

    def set_scores(self, users: np.ndarray, scores: np.ndarray) -> None:
        """Store full logits [len(users), I] of these users' copies: only their top-M is kept."""
        users = self._users(users)
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(users), self.n_items_):
            raise DataError(f"scores must be [{len(users)}, {self.n_items_}], got {scores.shape}")
        for start in range(0, len(users), 1024):  # bounded device memory
            part = users[start:start + 1024]
            items, kept = self._top(part, torch.from_numpy(scores[start:start + 1024]))
            self.set_top(part, items.numpy(), kept.numpy())

    def fit(self, train: sp.csr_matrix, valid=None, base_model: WL | None = None) -> "LFT":
        self.prepare(train, valid, base_model)
        for name in ("top_items_", "top_scores_"):  # a refit starts empty
            self.__dict__.pop(name, None)
        self.top_items_, self.top_scores_ = self.finetune_top(np.arange(train.shape[0]))  # every user: no row unset
        self.best_epoch_ = None
        return self

    def score_users(self, users: np.ndarray) -> Tensor:
        """Rows [len(users), I]: each user's kept logits, and everywhere else (its training items,
        the items past its M best) one finite floor value below all of them (scores stay finite,
        as every scorer's). Any ranking that excludes at least the training items and looks at
        its top k is exact while (further excluded items of the user) + k <= M, or when the user
        has at most M other items. :meth:`evaluate_users` (which excludes the training items only)
        refuses k > M; a caller that excludes more items than the training ones must keep that
        bound itself: past the M kept items every score is the same floor value."""
        users = self._users(users)
        if not hasattr(self, "top_items_") or (self.top_items_[users, 0] < 0).any():
            raise DataError("some of these users have not been fine-tuned (run fit / fit_shard + merge_shards, "
                            "or set_scores / set_top for them)")
        idx = torch.from_numpy(self.top_items_[users].astype(np.int64)).to(self.device)
        vals = torch.from_numpy(self.top_scores_[users]).to(self.device)
        finite = torch.isfinite(vals)  # -inf: a training item padding a short row
        low = torch.where(finite, vals, float("inf")).min(1).values
        low = torch.where(torch.isfinite(low), low, 0.0)
        floor = (low - (1.0 + low.abs()))[:, None]  # strictly below every kept logit
        out = floor.expand(len(users), self.n_items_).clone()
        return out.scatter_(1, idx, torch.where(finite, vals, floor))

    def evaluate_users(self, target: sp.csr_matrix, users: np.ndarray | None = None, *,
                       ks: Iterable[int] = REPORT_KS, metrics: Iterable[str] = REPORT_METRICS,
                       recall_denominator: str = "n", keep_topk: bool = False):
        """As :meth:`UserScorer.evaluate_users` (training items excluded), from the kept top-M:
        exact for k <= M = min(keep_top, I); a larger k raises instead of ranking the floor."""
        self._check_fitted()
        ks = tuple(ks)
        big = max((int(k) for k in ks), default=0)
        if big > self.kept and self.kept < self.n_items_:
            raise ConfigError(f"k={big} exceeds keep_top={self.config.keep_top}: LFT kept each user's "
                              f"{self.kept} best items only; refit with keep_top >= {big} to rank that far")
        return super().evaluate_users(target, users, ks=ks, metrics=metrics, recall_denominator=recall_denominator,
                                      keep_topk=keep_topk)


@register_model
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

