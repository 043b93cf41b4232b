"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained with a cloze objective.

Written from the paper's description:

* Input: item embedding + learned absolute positional embedding, then LayerNorm and dropout.
  Tokens: 0 = PAD, item i -> i + 1, I + 1 = [MASK] (see :mod:`.sequences`).
* L blocks of post-norm transformer layers, as in the paper (Eq. 3-5):
  ``A = LN(H + Dropout(MultiHead(H)))``, ``H' = LN(A + Dropout(FFN(A)))``, FFN = GELU MLP
  with inner size 4d; attention is bidirectional (PAD keys are masked, nothing else).
* Output (Eq. 7): ``softmax(GELU(h W_P + b_P) E^T + b_O)`` with E the input item embedding
  table (tied) restricted to real items, so PAD and [MASK] are never scored. (BERT's own
  masked-LM head adds a LayerNorm after the GELU; the paper's equation has none, nor has this.)
* Training: each epoch has one row per user -- the user's training sequence (for a leave-one-out
  split ``seq[:-2]``), a random window of ``max_len`` items when it is longer (``window=
  "random"``; ``"last"`` always takes the most recent one) -- with ``mask_prob`` of its items
  replaced by [MASK] (at least one) and a full-softmax cross-entropy over all items computed at
  the masked positions only. A fraction ``last_mask_prob`` of rows masks only the last item
  (the paper's extra samples that match next-item inference). No prefixes are materialised:
  an epoch reads every training interaction at most once.
* Inference: the last ``max_len - 1`` history items followed by [MASK]; the logits at [MASK]
  rank all items (full ranking, no sampled negatives); history items are excluded by the caller
  (:func:`recsys.metrics.ranking.evaluate` ``exclude``) or by :meth:`BERT4Rec.recommend`.

Paper settings (experimental setup): d = 64, L = 2, h = 2, dropout 0.1, Adam lr 1e-4 with linear
decay, weight decay 0.01, gradient clipping at norm 5, batch 256; max length N = 200 for ML-1M /
ML-20M and 50 for Beauty / Steam; mask proportion rho = 0.2 for ML-1M / ML-20M, 0.4 Steam, 0.6
Beauty. Defaults follow the paper except: lr 1e-3 after a 100-step linear warm-up, then constant
(far fewer steps than the paper's 400k); early stopping on validation NDCG@10 (not described in the paper); ``last_mask_prob`` 0.1
(the paper gives no proportion); and batches of users of similar length, drawn from random
length-sorted pools (``length_pool``), so less padding is computed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.errors import ConfigError, DataError
from recsys.metrics.ranking import RankingResult, evaluate, topk
from recsys.models.base import Model, ModelConfig
from recsys.checks import check_choice, check_float, check_fraction, check_int
from recsys.models.sequential.sequences import (
    PAD,
    history_matrix,
    last_window_start,
    length_batches,
    mask_positions,
    random_window,
    target_matrix,
    to_indptr,
    window_tokens,
)
from recsys.training.early_stopping import EarlyStopping

log = logging.getLogger(__name__)

WINDOWS = ("random", "last")
STAGES = ("valid", "test")


@dataclass(frozen=True)
class BERT4RecConfig(ModelConfig):
    """Hyper-parameters (plus ``seed`` and ``device`` from :class:`ModelConfig`).

    Paper values per dataset: ``max_len`` 200 (ML-1M, ML-20M) or 50 (Beauty, Steam);
    ``mask_prob`` 0.2 (ML-1M, ML-20M), 0.4 (Steam), 0.6 (Beauty).
    """

    max_len: int = 200
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.1  # on the input, after attention and after the FFN
    attn_dropout: float = 0.1  # on the attention weights
    mask_prob: float = 0.2
    last_mask_prob: float = 0.1  # rows that mask only their last item (paper: "also" such samples)
    window: str = "random"  # which max_len window of a longer training sequence: "random" | "last"
    label_smoothing: float = 0.0
    lr: float = 1e-3
    warmup_steps: int = 100  # linear lr warm-up over the first optimiser steps (0 = none), as BERT's optimiser
    weight_decay: float = 0.01  # decoupled (AdamW), on weight matrices and embeddings only, as BERT
    grad_clip: float | None = 5.0
    batch_size: int = 256
    length_pool: int = 8  # batches per length-sorting pool (less padding); 1 = plain random batches
    epochs: int = 200
    patience: int = 20  # validations without gain before stopping (long: training starts on a plateau)
    eval_every: int = 1  # epochs between validations
    eval_ks: tuple[int, ...] = (10,)
    monitor: str = "ndcg@10"  # "<hit|ndcg>@k" with k in eval_ks
    eval_batch_size: int = 1024  # users per ranking batch ([B, n_items] scores), encoded batch_size at a time

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_ks", tuple(self.eval_ks))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        check_int("max_len", self.max_len, 2)
        for name in ("hidden", "n_blocks", "n_heads", "batch_size", "length_pool", "patience", "eval_every", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("epochs", self.epochs, 0)
        check_int("warmup_steps", self.warmup_steps, 0)
        if self.hidden % self.n_heads:
            raise ConfigError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        check_fraction("mask_prob", self.mask_prob)
        for name in ("dropout", "attn_dropout", "label_smoothing"):
            check_float(name, getattr(self, name), 0.0, 1.0, high_open=True)
        check_float("last_mask_prob", self.last_mask_prob, 0.0, 1.0)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, 0.0, low_open=True)
        check_choice("window", self.window, WINDOWS)
        if not self.eval_ks:
            raise ConfigError("eval_ks must hold at least one cut-off, got ()")
        for k in self.eval_ks:
            check_int("eval_ks", k, 1)
        metric, _, k = str(self.monitor).partition("@")
        if metric not in ("hit", "ndcg") or not k.isdigit() or int(k) not in self.eval_ks:
            raise ConfigError(f"monitor must be 'hit@k' or 'ndcg@k' with k in eval_ks={self.eval_ks}, got {self.monitor!r}")


class _Block(nn.Module):
    """Post-norm transformer layer: LN(x + drop(MHA(x))), then LN(a + drop(FFN(a)))."""

    def __init__(self, d: int, n_heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.n_heads, self.attn_dropout = n_heads, attn_dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, 4 * d)
        self.ff2 = nn.Linear(4 * d, d)
        self.ln2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        b, w, d = x.shape
        q, k, v = self.qkv(x).view(b, w, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        a = self.ln1(x + self.drop(self.out(att.transpose(1, 2).reshape(b, w, d))))
        return self.ln2(a + self.drop(self.ff2(F.gelu(self.ff1(a)))))


class BERT4RecNetwork(nn.Module):
    """Embeddings + encoder + tied output head; token ids as in :mod:`.sequences`, MASK = n_items + 1."""

    def __init__(self, n_items: int, cfg: BERT4RecConfig) -> None:
        super().__init__()
        self.n_items, self.max_len = n_items, cfg.max_len
        self.mask_token = n_items + 1
        d = cfg.hidden
        self.tok = nn.Embedding(n_items + 2, d, padding_idx=PAD)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads, cfg.dropout, cfg.attn_dropout) for _ in range(cfg.n_blocks))
        self.proj = nn.Linear(d, d)
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        for m in self.modules():  # BERT's initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.tok.weight[PAD].zero_()

    def encode(self, tokens: Tensor) -> Tensor:
        """Hidden states [B, W, d] of right-aligned tokens [B, W], W <= max_len.

        Positions count from the right end (the last column is position max_len - 1), so a
        batch trimmed of all-PAD columns on the left is encoded exactly as its padded form.
        """
        w = tokens.shape[1]
        pos = torch.arange(self.max_len - w, self.max_len, device=tokens.device)
        h = self.drop(self.ln(self.tok(tokens) + self.pos(pos)))
        pad = tokens == PAD
        # bool mask, True = may attend; None when there is no PAD so SDPA can pick a fused kernel
        key_mask = (~pad)[:, None, None, :] if bool(pad.any()) else None
        for block in self.blocks:
            h = block(h, key_mask)
        return h

    def logits(self, h: Tensor) -> Tensor:
        """Item logits [..., n_items] of hidden states [..., d] (PAD and MASK rows excluded)."""
        return F.gelu(self.proj(h)) @ self.tok.weight[1 : self.n_items + 1].T + self.out_bias


@dataclass
class _Sequences:
    """Ragged sequences, where each user's training part stops, and optional evaluation targets."""

    indptr: np.ndarray
    items: np.ndarray
    n_items: int
    train_stop: np.ndarray
    valid_target: np.ndarray | None = None
    test_target: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def stage(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(history stop, target) per user: valid -> seq[:-2] / seq[-2], test -> seq[:-1] / seq[-1]."""
        check_choice("stage", stage, STAGES)
        target = self.valid_target if stage == "valid" else self.test_target
        if target is None:
            raise DataError(f"these sequences have no {stage} targets; pass a leave-one-out split")
        return np.maximum(self.lengths - (2 if stage == "valid" else 1), 0), target


def _is_split(data) -> bool:
    return isinstance(getattr(data, "arrays", None), dict)


def _as_sequences(data, n_items: int | None = None) -> _Sequences:
    """A leave-one-out Split (arrays seq_indptr, seq_items, valid_target, test_target) or a list
    of item-id arrays (all of each sequence is training data)."""
    if sp.issparse(data):
        raise DataError("BERT4Rec needs time-ordered sequences: pass a leave_one_out Split or a list of item-id arrays, not a CSR matrix")
    if _is_split(data):
        arrays = data.arrays
        missing = [k for k in ("seq_indptr", "seq_items", "valid_target", "test_target") if k not in arrays]
        if missing:
            raise DataError(f"split ({getattr(data, 'protocol', '?')}) lacks arrays {missing}; use protocol leave_one_out")
        indptr = np.asarray(arrays["seq_indptr"], dtype=np.int64)
        seqs = _Sequences(
            indptr=indptr,
            items=np.asarray(arrays["seq_items"], dtype=np.int64),
            n_items=int(data.n_items),
            train_stop=np.maximum(np.diff(indptr) - 2, 0),
            valid_target=np.asarray(arrays["valid_target"], dtype=np.int64),
            test_target=np.asarray(arrays["test_target"], dtype=np.int64),
        )
    else:
        indptr, items = to_indptr(data)
        if n_items is None:
            n_items = int(items.max()) + 1 if items.size else 0
        seqs = _Sequences(indptr=indptr, items=items, n_items=int(n_items), train_stop=np.diff(indptr))
    if seqs.n_items <= 0:
        raise DataError("no items: the sequences are empty")
    if seqs.items.size and (seqs.items.min() < 0 or seqs.items.max() >= seqs.n_items):
        raise DataError(f"item ids must lie in 0..{seqs.n_items - 1}")
    return seqs


@dataclass
class _EvalSet:
    """What one validation / test pass needs: histories end at `stop`, one target per user."""

    seqs: _Sequences
    stop: np.ndarray
    target: sp.csr_matrix
    exclude: sp.csr_matrix

    @classmethod
    def build(cls, seqs: _Sequences, stop: np.ndarray, target: np.ndarray) -> "_EvalSet":
        if len(target) != len(stop):
            raise DataError(f"{len(target)} targets for {len(stop)} histories")
        if len(target) and target.max() >= seqs.n_items:
            raise DataError(f"target item ids must lie in 0..{seqs.n_items - 1} (negative = no target)")
        exclude = history_matrix(seqs.indptr, seqs.items, np.arange(len(stop)), stop, seqs.n_items)
        return cls(seqs, stop, target_matrix(target, seqs.n_items), exclude)


class BERT4Rec(Model):
    """BERT4Rec under the library's model contract.

    Unlike the bag-of-items models, input is *ordered*: ``fit``, ``score`` and ``evaluate`` take a
    leave-one-out Split (with a stage) or lists of item-id arrays, never CSR rows. Learned state:
    ``net_`` (:class:`BERT4RecNetwork`, weights of the best validation epoch), ``n_items_``,
    ``history_`` (per epoch: loss, seconds, validation metrics) and ``best_epoch_``.
    """

    name = "bert4rec"
    Config = BERT4RecConfig

    # ---- training ------------------------------------------------------------------------

    def fit(self, train, valid: tuple[Sequence[np.ndarray], np.ndarray] | None = None, *, n_items: int | None = None) -> "BERT4Rec":
        """Train on a leave-one-out Split -- sequences seq[:-2], validation on seq[-2] given
        seq[:-2] -- or on a list of item-id arrays (each whole sequence is training data), with
        `valid` = (histories, target item per history) to validate on, else all ``epochs`` run.
        Early stopping on ``config.monitor``; the best epoch's weights are kept. `n_items` is
        needed only for a list whose highest item ids never occur."""
        cfg = self.config
        seqs = _as_sequences(train, n_items)
        if _is_split(train):
            if valid is not None:
                raise ConfigError("a split carries its own validation targets; pass valid=None")
            val = _EvalSet.build(seqs, *seqs.stage("valid"))
        elif valid is not None:
            vseqs = _as_sequences(valid[0], seqs.n_items)
            val = _EvalSet.build(vseqs, vseqs.lengths, np.asarray(valid[1], dtype=np.int64))
        else:
            val = None
        users = np.flatnonzero(seqs.train_stop > 0)
        if not len(users):
            raise DataError("no user has a training item (under leave-one-out a sequence needs 3 or more items)")
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # seed locally, leave the caller's RNG alone
            torch.manual_seed(cfg.seed)
            rng = np.random.default_rng(cfg.seed)
            self.n_items_ = seqs.n_items
            self._init_modules()
            decay = [p for p in self.net_.parameters() if p.ndim >= 2]
            no_decay = [p for p in self.net_.parameters() if p.ndim < 2]  # LayerNorm and biases, as BERT
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
            )
            # post-norm transformers diverge at higher learning rates without a warm-up
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / (cfg.warmup_steps + 1)))
            stopper = EarlyStopping(cfg.patience, mode="max")
            self.history_: list[dict] = []
            for epoch in range(1, cfg.epochs + 1):
                t0 = time.perf_counter()
                record = {"epoch": epoch, "loss": self._train_epoch(seqs, users, opt, sched, rng)}
                record["train_seconds"] = time.perf_counter() - t0
                if val is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                    t1 = time.perf_counter()
                    means = self._evaluate(val, cfg.eval_ks, ("hit", "ndcg"), cfg.eval_batch_size).mean()
                    record.update({f"valid_{k}": v for k, v in means.items()})
                    record["eval_seconds"] = time.perf_counter() - t1
                    stopper.update(means[cfg.monitor], self.net_, epoch)
                self.history_.append(record)
                log.info("bert4rec %s", record)
                if stopper.should_stop:
                    break
            if stopper.best_state is not None:
                self.net_.load_state_dict(stopper.best_state)
            self.best_epoch_ = stopper.best_epoch if stopper.best_epoch is not None else len(self.history_)
        self.net_.eval()
        return self

    def _init_modules(self) -> None:
        self.net_ = BERT4RecNetwork(self.n_items_, self.config).to(self.device).eval()

    def _train_epoch(
        self, seqs: _Sequences, users: np.ndarray, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator
    ) -> float:
        """One pass, one row per user; returns the mean cross-entropy per masked position."""
        cfg, net = self.config, self.net_
        net.train()
        total, count = 0.0, 0
        for batch in length_batches(np.minimum(seqs.train_stop[users], cfg.max_len), cfg.batch_size, rng, cfg.length_pool):
            rows = users[batch]
            stop = seqs.train_stop[rows]
            if cfg.window == "random":
                start, stop = random_window(stop, cfg.max_len, rng)
            else:
                start = last_window_start(stop, cfg.max_len)
            tokens = window_tokens(seqs.indptr, seqs.items, rows, start, stop)
            masked = mask_positions(tokens, cfg.mask_prob, rng, cfg.last_mask_prob)
            labels = torch.from_numpy(tokens[masked] - 1).to(self.device)
            tokens[masked] = net.mask_token
            h = net.encode(torch.from_numpy(tokens).to(self.device))
            # logits only at the masked positions: [M, I] instead of [B, W, I]
            logits = net.logits(h[torch.from_numpy(masked).to(self.device)])
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item() * len(labels)
            count += len(labels)
        return total / count

    # ---- inference -----------------------------------------------------------------------

    @torch.no_grad()
    def _score_rows(self, seqs: _Sequences, rows: np.ndarray, stop: np.ndarray) -> Tensor:
        """Logits [len(rows), I] at a [MASK] appended after each row's last max_len - 1 items before `stop`."""
        net, size = self.net_, self.config.batch_size
        net.eval()
        start = last_window_start(stop, net.max_len - 1)
        # encode rows in chunks of similar history length (less padding), return them in input order
        order = np.argsort(stop - start, kind="stable")
        out = torch.empty(len(rows), net.n_items, device=self.device)
        for s in range(0, len(rows), size):
            o = order[s : s + size]
            hist = window_tokens(seqs.indptr, seqs.items, rows[o], start[o], stop[o])
            tokens = np.concatenate([hist, np.full((len(o), 1), net.mask_token, dtype=np.int64)], axis=1)
            out[torch.from_numpy(o).to(self.device)] = net.logits(net.encode(torch.from_numpy(tokens).to(self.device))[:, -1])
        return out

    def _histories(self, histories, stage: str | None, users) -> tuple[_Sequences, np.ndarray, np.ndarray]:
        """(sequences, rows, history stop) for a Split + stage, or a list of history arrays."""
        if _is_split(histories):
            if stage is None:
                raise ConfigError(f"stage must be one of {STAGES} when scoring a split")
            seqs = _as_sequences(histories)
            stop, _ = seqs.stage(stage)
            rows = np.arange(len(stop)) if users is None else np.asarray(users, dtype=np.int64)
            return seqs, rows, stop[rows]
        if stage is not None or users is not None:
            raise ConfigError("stage and users apply only when scoring a split; pass the histories alone")
        seqs = _as_sequences(histories, self.n_items_)
        return seqs, np.arange(len(seqs.lengths)), seqs.lengths

    def score(self, histories, stage: str | None = None, users: np.ndarray | None = None) -> Tensor:
        """Scores [B, I] (logits; history items not masked) on the model's device.

        `histories`: a list of item-id arrays (each user's history, oldest first), or a
        leave-one-out Split with ``stage`` "valid" (history seq[:-2]) or "test" (seq[:-1]) and
        optional ``users`` (row indices; default all).
        """
        self._check_fitted()
        return self._score_rows(*self._histories(histories, stage, users))

    def recommend(self, histories, k: int = 10, stage: str | None = None, users: np.ndarray | None = None) -> np.ndarray:
        """Top-k item ids [B, k], best first; never an item of the scored history."""
        self._check_fitted()
        seqs, rows, stop = self._histories(histories, stage, users)
        seen = history_matrix(seqs.indptr, seqs.items, rows, stop, self.n_items_)
        return topk(self._score_rows(seqs, rows, stop), k, seen, inplace=True).cpu().numpy()

    def _evaluate(self, ev: _EvalSet, ks: Iterable[int], metrics: Iterable[str], batch_size: int, keep_topk: bool = False) -> RankingResult:
        return evaluate(
            lambda rows: self._score_rows(ev.seqs, rows, ev.stop[rows]),
            np.arange(len(ev.stop)),
            ev.target,
            ev.exclude,
            ks=ks,
            metrics=metrics,
            recall_denominator="n",
            batch_size=batch_size,
            device=self.device,
            keep_topk=keep_topk,
        )

    def evaluate(
        self,
        split,
        stage: str = "test",
        *,
        ks: Iterable[int] = (10, 20),
        metrics: Iterable[str] = ("hit", "ndcg"),
        batch_size: int = 1024,
        keep_topk: bool = False,
    ) -> RankingResult:
        """Leave-one-out metrics with one target per user (seq[-1] given seq[:-1] for "test",
        seq[-2] given seq[:-2] for "valid"), full ranking with the history items excluded.
        ``.mean()`` gives ``{"hit@10": ..., "ndcg@10": ...}``. Replaces the base class's CSR version."""
        self._check_fitted()
        seqs = _as_sequences(split)
        return self._evaluate(_EvalSet.build(seqs, *seqs.stage(stage)), ks, metrics, batch_size, keep_topk)

    def item_embeddings(self) -> np.ndarray:
        """Input item embeddings [n_items, hidden] (PAD and MASK rows dropped), row i = item i."""
        self._check_fitted()
        return self.net_.tok.weight[1 : self.n_items_ + 1].detach().cpu().numpy().copy()
