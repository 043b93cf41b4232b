"""What every sequential model shares: :class:`SequentialConfig` and :class:`SequentialModel`.

A model supplies its network (a :class:`~recsys.models.sequential.layers.SequenceNetwork`:
right-aligned tokens [B, W] -> hidden states [B, W, d]) and its next-item training loss; this
module owns the rest:

* ``fit(split | item arrays, valid=None)`` through :mod:`recsys.training.loop` (one job: epochs,
  early stopping on validation ``monitor`` = NDCG@k / HR@k, best weights restored, ``max_seconds``,
  checkpoints via ``model.checkpoints(folder)``). An epoch has one row per user: its training
  sequence (seq[:-2] under leave-one-out), a random window of the model's span when longer
  (``window="random"``, ``"last"``: the most recent), rows of similar length batched together.
  No prefixes are materialised: an epoch reads every training interaction at most once.
* ``score(histories, stage=None, users=None) -> [B, n_items]``, ``recommend``,
  ``evaluate(split, stage, ks, metrics)`` (full ranking, history items excluded) and
  ``item_embeddings()``.
* The **rating head** (MELO, Kim et al. 2023; see :mod:`.layers`): ``predict_ratings(tokens)``
  gives ``5 * (0.1 + sigmoid(w . h_t + b))`` at every position t; ``objective="rating"`` (or
  :meth:`SequentialModel.fit_ratings`) trains backbone and head on the mean squared error of
  ``0.1 + sigmoid(.)`` against rating / 5 at every position with a known rating, validated by the
  RMSE of the held-out rating (the item at the last position, its rating unseen). The meta stage
  runs the backbone functionally: ``model.rating_loss(tokens, ratings, params=...)`` or
  ``torch.func.functional_call(model.net_, params, (tokens,))``.

Token convention (:mod:`.sequences`): PAD = 0, item i -> i + 1, right-aligned batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from recsys.checks import check_choice, check_float, check_int
from recsys.errors import ConfigError, DataError
from recsys.metrics.ranking import RankingResult, evaluate, topk
from recsys.metrics.regression import mae, per_rating_report, rmse
from recsys.models.base import IterativeConfig, IterativeModel, SequenceRater, SequenceScorer
from recsys.models.sequential.layers import RATING_SCALE, SequenceNetwork, full_softmax_ce, rating_mse
from recsys.models.sequential.sequences import (
    fit_inputs,
    scored_rows,
    PAD,
    EvalSet,
    Sequences,
    as_sequences,
    history_matrix,
    is_split,
    last_window_start,
    length_batches,
    random_window,
    window_tokens,
    window_values,
)
from recsys.training.loop import Job

WINDOWS = ("random", "last")
OBJECTIVES = ("next_item", "rating")


@dataclass(frozen=True)
class SequentialConfig(IterativeConfig):
    """Settings of every sequential model (plus ``seed``, ``device``, ``epochs``, ``patience``,
    ``eval_every``, ``max_seconds``, ``progress`` from :class:`IterativeConfig`).

    ``objective``: "next_item" (the model's own loss, early stopping on ``monitor``) or "rating"
    (the rating head's MSE, early stopping on validation RMSE; ``monitor`` is then unused).
    ``betas`` / ``weight_decay``: AdamW (decoupled decay on weight matrices and embeddings only;
    0 = Adam). ``warmup_steps``: linear learning-rate warm-up over the first optimiser steps.
    """

    objective: str = "next_item"
    max_len: int = 200
    hidden: int = 64
    dropout: float = 0.1
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    batch_size: int = 256
    length_pool: int = 8  # batches per length-sorting pool (less padding); 1 = plain random batches
    window: str = "random"  # which window of a longer training sequence: "random" | "last"
    epochs: int = 200
    patience: int | None = 20
    eval_ks: tuple[int, ...] = (10,)
    monitor: str = "ndcg@10"  # "<hit|ndcg>@k" with k in eval_ks
    eval_batch_size: int = 1024  # users per ranking batch ([B, n_items] scores), encoded batch_size at a time
    # budgets in optimiser updates, for data with few users (an epoch of 943 users is 4 updates):
    # epochs is raised to ceil(min_updates / updates per epoch), patience to ceil(patience_updates /
    # updates per epoch); 0 = off (the budget is epochs / patience as given)
    min_updates: int = 0
    patience_updates: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_ks", _int_tuple("eval_ks", self.eval_ks))
        if isinstance(self.betas, (list, tuple)):
            object.__setattr__(self, "betas", tuple(self.betas))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        check_choice("objective", self.objective, OBJECTIVES)
        check_int("max_len", self.max_len, 2)
        for name in ("hidden", "batch_size", "length_pool", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_int("min_updates", self.min_updates, 0)
        check_int("patience_updates", self.patience_updates, 0)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_float("lr", self.lr, 0.0, low_open=True)
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2):
            raise ConfigError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        for b in self.betas:
            check_float("betas", b, 0.0, 1.0, high_open=True)
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


def _int_tuple(name: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    raise ConfigError(f"{name} must be a list of integers, got {value!r}")


@dataclass
class _RatingSet:
    """Held-out ratings: the window of each user ends at `stop` with the rated item."""

    seqs: Sequences
    rows: np.ndarray
    stop: np.ndarray
    target: np.ndarray


class SequentialModel(IterativeModel, SequenceScorer, SequenceRater):
    """Base class of the sequential recommenders (see the module docstring).

    Learned state: ``net_`` (the network, weights of the best validation epoch), ``n_items_``,
    ``history_`` (per epoch: loss, seconds, validation metrics), ``best_epoch_`` and
    ``stop_reason_`` ("epochs", "patience", "max_seconds").

    A subclass sets ``name`` and ``Config`` and supplies :meth:`_network` and, unless the
    default shifted cross-entropy fits, :meth:`_next_item_loss`; :meth:`_train_span`,
    :meth:`_history_len` and :meth:`_query_tokens` say how training rows and inference inputs
    are cut (BERT4Rec appends a [MASK] token, the causal models read the history as is).
    """

    name = "sequential"
    Config = SequentialConfig
    protocols = ("leave_one_out",)
    min_train_items: ClassVar[int] = 2  # training items a user needs to give a training row

    # ---- what a subclass supplies ------------------------------------------------------------

    def _network(self) -> SequenceNetwork:
        raise NotImplementedError

    def _next_item_loss(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, int]:
        """(mean loss, number of predictions) of one batch of right-aligned training windows
        [B, W]. Default (causal models): the hidden state at every non-PAD position of
        ``tokens[:, :-1]`` predicts the next item, full-softmax cross-entropy over all items
        (blocked, :func:`~.layers.full_softmax_ce`: the logits of a batch are never stored)."""
        net = self.net_
        inp, labels, where = self._shifted(tokens)
        h = net.encode(inp)
        return full_softmax_ce(h[where], net.item_table(), labels), len(labels)

    def _train_span(self) -> int:
        """Items in one next-item training row: max_len inputs + the item the last one predicts."""
        return self.config.max_len + 1

    def _history_len(self) -> int:
        """History items an inference input holds."""
        return self.config.max_len

    def _query_tokens(self, hist: np.ndarray) -> np.ndarray:
        """Inference input from right-aligned history tokens; the last position is read."""
        if hist.shape[1] == 0:  # only empty histories in the chunk: one PAD column to read
            return np.zeros((len(hist), 1), dtype=np.int64)
        return hist

    # ---- shared helpers ----------------------------------------------------------------------

    def _shifted(self, tokens: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs [B, W-1] on the device, next-item labels at the non-PAD inputs, where-mask)."""
        inp = torch.from_numpy(tokens[:, :-1]).to(self.device)
        tgt = torch.from_numpy(tokens[:, 1:]).to(self.device)
        where = inp != PAD  # right-aligned: a non-PAD input is followed by a non-PAD target
        return inp, tgt[where] - 1, where

    def _init_modules(self) -> None:
        self.net_ = self._network().to(self.device).eval()

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        decay = [p for p in self.net_.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.net_.parameters() if p.ndim < 2]  # LayerNorm, biases, rating head
        return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)

    def _budget(self, updates_per_epoch: int) -> tuple[int, int | None]:
        """(epochs, patience) of a fit with `updates_per_epoch` batches: the config's, raised to
        ``min_updates`` / ``patience_updates`` worth of epochs where those are set."""
        c, per = self.config, max(1, updates_per_epoch)
        epochs = max(c.epochs, -(-c.min_updates // per)) if c.min_updates else c.epochs
        patience = c.patience
        if c.patience_updates and patience is not None:
            patience = max(patience, -(-c.patience_updates // per))
        return epochs, patience

    def _scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        warm = self.config.warmup_steps
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / (warm + 1)))

    # ---- training ----------------------------------------------------------------------------

    def fit(self, train, valid=None, *, n_items: int | None = None, ratings: Sequence[np.ndarray] | None = None,
            validate: bool = True) -> "SequentialModel":
        """Train on a leave-one-out Split -- sequences seq[:-2], validation on seq[-2] given
        seq[:-2] -- or on a list of item-id arrays (each whole sequence is training data) with
        `valid` = (histories, target item per history) to validate on, else all ``epochs`` run.
        Early stopping on ``config.monitor``; the best epoch's weights are kept. `n_items` is
        needed only for a list whose highest item ids never occur. With ``objective="rating"``
        this is :meth:`fit_ratings` (`ratings`: per-item rating arrays for a list)."""
        if self.config.objective == "rating":
            return self.fit_ratings(train, valid, n_items=n_items, ratings=ratings, validate=validate)
        return self._fit(*fit_inputs(train, valid, n_items, self.name, ratings=ratings, validate=validate), "next_item")

    def fit_ratings(self, train, valid=None, *, n_items: int | None = None, ratings: Sequence[np.ndarray] | None = None,
                    validate: bool = True, warm_start: bool = False) -> "SequentialModel":
        """Train backbone and rating head on the rating objective (whatever ``config.objective``).

        `train`: a leave-one-out Split with ``seq_ratings`` (training part seq[:-2]; validation:
        the rating of seq[-2] predicted at the last position of seq[:-1]) or a list of item-id
        arrays with `ratings` (aligned rating arrays, NaN = unknown; positions without a rating
        are inputs only) and optional `valid` = (item arrays, rating arrays): the rating of each
        validation sequence's last item is the target. `warm_start` keeps the current weights
        (e.g. after a next-item fit) instead of a fresh network. Early stopping on validation RMSE.
        """
        seqs = as_sequences(train, n_items, ratings, what=self.name)
        seqs.require_ratings()
        val = None
        if is_split(train):
            if valid is not None:
                raise ConfigError("a split carries its own validation targets; pass valid=None")
            if validate:
                val = self._rating_set(seqs, *seqs.rating_stage("valid"))
        elif valid is not None and validate:
            if not (isinstance(valid, (tuple, list)) and len(valid) == 2):
                raise DataError("valid must be a pair (item arrays, rating arrays) for fit_ratings")
            vseqs = as_sequences(valid[0], seqs.n_items, valid[1], what=self.name)
            val = self._rating_set(vseqs, vseqs.lengths, _last_values(vseqs))
        if warm_start:
            self._check_fitted()
            if self.n_items_ != seqs.n_items:
                raise DataError(f"warm_start: the model has {self.n_items_} items, the data {seqs.n_items}")
        return self._fit(seqs, val, "rating", warm_start=warm_start)

    def _fit(self, seqs: Sequences, val, objective: str, warm_start: bool = False) -> "SequentialModel":
        cfg = self.config
        need = 1 if objective == "rating" else self.min_train_items
        users = np.flatnonzero(seqs.train_stop >= need)
        if not len(users):
            lo = need + (2 if seqs.valid_target is not None else 0)
            raise DataError(f"no user has {need} training item(s) ({self.name} under leave-one-out needs sequences of "
                            f"{lo} or more items)")
        if objective == "rating":
            known = _training_ratings(seqs, users)
            if not known.size:
                raise DataError("no training position has a known rating (all NaN)")
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # seed locally, leave the caller's RNG alone
            torch.manual_seed(cfg.seed)
            rng = np.random.default_rng(cfg.seed)
            if not warm_start:
                self.n_items_ = seqs.n_items
                self._init_modules()
            if objective == "rating":
                self.net_.rating_head.start_at(float(known.mean()))
            opt = self._optimizer()
            sched = self._scheduler(opt)

            def epoch_fn(epoch: int) -> dict[str, float]:
                return {"loss": self._train_epoch(seqs, users, opt, sched, rng, objective)}

            validate_fn, monitor, mode = None, f"valid_{cfg.monitor}", "max"  # monitor: the record's key
            if val is not None and objective == "next_item":
                def validate_fn(epoch: int):
                    means = self._evaluate(val, cfg.eval_ks, ("hit", "ndcg"), cfg.eval_batch_size).mean()
                    return means[cfg.monitor], {f"valid_{k}": v for k, v in means.items()}
            elif val is not None:
                monitor, mode = "valid_rmse", "min"

                def validate_fn(epoch: int):
                    errors = self._rating_errors(val)
                    return errors["rmse"], {"valid_rmse": errors["rmse"], "valid_mae": errors["mae"]}

            job = Job(epoch_fn, validate_fn, weights={"net": self.net_}, state={"opt": opt, "sched": sched, "rng": rng})
            data = {"n_users": seqs.n_users, "n_items": seqs.n_items, "n_interactions": int(len(seqs.items)),
                    "objective": objective, "warm_start": warm_start}
            epochs, patience = self._budget(-(-len(users) // cfg.batch_size))
            result = self._train(job, monitor=monitor, mode=mode, tag="" if objective == "next_item" else "ratings",
                                 data=data, epochs=epochs, patience=patience)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch or len(self.history_)
        self.stop_reason_ = result.stop_reason  # "epochs", "patience" or "max_seconds"
        self.net_.eval()
        return self

    def _train_epoch(self, seqs: Sequences, users: np.ndarray, opt: torch.optim.Optimizer,
                     sched: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator, objective: str) -> float:
        """One pass, one row per user; returns the mean loss per prediction."""
        cfg, net = self.config, self.net_
        net.train()
        span = self._train_span() if objective == "next_item" else cfg.max_len
        total, count = 0.0, 0
        for batch in length_batches(np.minimum(seqs.train_stop[users], span), cfg.batch_size, rng, cfg.length_pool):
            rows = users[batch]
            stop = seqs.train_stop[rows]
            if cfg.window == "random":
                start, stop = random_window(stop, span, rng)
            else:
                start = last_window_start(stop, span)
            tokens = window_tokens(seqs.indptr, seqs.items, rows, start, stop)
            if objective == "next_item":
                loss, n = self._next_item_loss(tokens, rng)
            else:
                values = torch.from_numpy(window_values(seqs.indptr, seqs.ratings, rows, start, stop)).float().to(self.device)
                n = int(torch.isfinite(values).sum())
                loss = rating_mse(net.ratings(torch.from_numpy(tokens).to(self.device)), values)
            if n == 0:
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item() * n
            count += n
        return total / max(count, 1)

    def fit_split(self, split, *, validate: bool = True) -> "SequentialModel":
        return self.fit(split, validate=validate)

    # ---- ranking -----------------------------------------------------------------------------

    @torch.no_grad()
    def _score_rows(self, seqs: Sequences, rows: np.ndarray, stop: np.ndarray) -> Tensor:
        """Logits [len(rows), I] from each row's last history items before `stop`."""
        net, size = self.net_, self.config.batch_size
        net.eval()
        start = last_window_start(stop, self._history_len())
        # encode rows in chunks of similar history length (less padding), return them in input order
        order = np.argsort(stop - start, kind="stable")
        out = torch.empty(len(rows), net.n_items, device=self.device)
        for s in range(0, len(rows), size):
            o = order[s : s + size]
            tokens = self._query_tokens(window_tokens(seqs.indptr, seqs.items, rows[o], start[o], stop[o]))
            out[torch.from_numpy(o).to(self.device)] = net.logits(net.encode_last(torch.from_numpy(tokens).to(self.device)))
        return out

    def _histories(self, histories, stage: str | None, users) -> tuple[Sequences, np.ndarray, np.ndarray]:
        """(sequences, rows, history stop) for a Split + stage, or a list of history arrays."""
        return scored_rows(histories, stage, users, getattr(self, "n_items_", None), self.name)

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

    def _evaluate(self, ev: EvalSet, ks: Iterable[int], metrics: Iterable[str], batch_size: int,
                  keep_topk: bool = False) -> RankingResult:
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

    def evaluate(self, split, stage: str = "test", *, ks: Iterable[int] = (10, 20),
                 metrics: Iterable[str] = ("hit", "ndcg"), batch_size: int = 1024, keep_topk: bool = False) -> RankingResult:
        """Leave-one-out metrics with one target per user (seq[-1] given seq[:-1] for "test",
        seq[-2] given seq[:-2] for "valid"), full ranking with the history items excluded.
        ``.mean()`` gives ``{"hit@10": ..., "ndcg@10": ...}``."""
        self._check_fitted()
        seqs = as_sequences(split, what=self.name)
        return self._evaluate(EvalSet.build(seqs, *seqs.stage(stage)), ks, metrics, batch_size, keep_topk)

    def item_embeddings(self) -> np.ndarray:
        """Output item embeddings [n_items, d] (PAD and special tokens dropped), row i = item i."""
        self._check_fitted()
        return self.net_.item_table().detach().cpu().numpy().copy()

    # ---- rating head -------------------------------------------------------------------------

    def rating_batch(self, items: Sequence[np.ndarray], ratings: Sequence[np.ndarray] | None = None,
                     width: int | None = None) -> tuple[Tensor, Tensor | None]:
        """(tokens [B, W] long, ratings [B, W] float32 with NaN on PAD / unknown, or None) on the
        model's device: the last ``max_len`` items of each sequence, right-aligned. `width` (at
        most max_len) fixes the number of columns, keeping each row's last `width` items; default:
        the longest row."""
        max_len = self.config.max_len
        seqs = as_sequences(list(items), self.n_items_ if hasattr(self, "n_items_") else None, ratings, what=self.name)
        rows = np.arange(seqs.n_users)
        if width is not None:
            width = check_int("width", width, 1, max_len)
        start = last_window_start(seqs.lengths, width or max_len)
        tokens = window_tokens(seqs.indptr, seqs.items, rows, start, seqs.lengths, width)
        tok = torch.from_numpy(tokens).to(self.device)
        if ratings is None:
            return tok, None
        values = window_values(seqs.indptr, seqs.ratings, rows, start, seqs.lengths, tokens.shape[1])
        return tok, torch.from_numpy(values).float().to(self.device)

    def predict_ratings(self, tokens) -> Tensor:
        """Ratings [B, W] on the 1..5 scale, ``5 * (0.1 + sigmoid(w . h_t + b))`` (so 0.5..5.5),
        at every position of right-aligned tokens [B, W] (item i = token i + 1, PAD = 0): the
        rating of the item at position t given the items up to t (all items for BERT4Rec).
        Evaluation mode, no gradients; PAD positions hold values to ignore."""
        self._check_fitted()
        tokens = torch.as_tensor(tokens, dtype=torch.long).to(self.device)
        self.net_.eval()
        with torch.no_grad():
            return RATING_SCALE * self.net_.ratings(tokens)

    def rating_loss(self, tokens: Tensor, ratings: Tensor, params: Mapping[str, Tensor] | None = None,
                    weights: Tensor | None = None) -> Tensor:
        """The rating objective of one batch, differentiable: mean over known ratings (finite
        `ratings`, 1..5 scale) of ``weights * (0.1 + sigmoid(.) - rating / 5) ** 2``.

        With `params` (name -> tensor, e.g. adapted copies of ``dict(model.net_.named_parameters())``)
        the network runs functionally through ``torch.func.functional_call``, so an inner loop
        can differentiate through its updates. The caller sets ``net_.train()`` / ``.eval()``."""
        self._check_fitted()
        if params is None:
            pred = self.net_(tokens)
        else:
            pred = torch.func.functional_call(self.net_, dict(params), (tokens,))
        return rating_mse(pred, ratings, weights)

    def _rating_set(self, seqs: Sequences, stop: np.ndarray, target: np.ndarray) -> _RatingSet:
        rows = np.flatnonzero(np.isfinite(target) & (stop > 0))
        if not len(rows):
            raise DataError("no held-out position has a known rating")
        return _RatingSet(seqs, rows, stop[rows], target[rows])

    @torch.no_grad()
    def _rating_rows(self, seqs: Sequences, rows: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Predicted rating (1..5 scale) of the item at position stop - 1 of each row."""
        net, size = self.net_, self.config.batch_size
        net.eval()
        start = last_window_start(stop, self.config.max_len)
        order = np.argsort(stop - start, kind="stable")
        out = np.empty(len(rows), dtype=np.float64)
        for s in range(0, len(rows), size):
            o = order[s : s + size]
            tokens = torch.from_numpy(window_tokens(seqs.indptr, seqs.items, rows[o], start[o], stop[o])).to(self.device)
            out[o] = (RATING_SCALE * net.ratings(tokens)[:, -1]).double().cpu().numpy()
        return out

    def _rating_errors(self, rs: _RatingSet) -> dict[str, Any]:
        pred = self._rating_rows(rs.seqs, rs.rows, rs.stop)
        return {"rmse": rmse(pred, rs.target), "mae": mae(pred, rs.target), "n": int(len(rs.rows)), "pred": pred}

    def evaluate_ratings(self, data, stage: str = "test", *, ratings: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
        """RMSE / MAE (1..5 scale) of held-out ratings and MELO's per-true-rating report.

        A leave-one-out Split with ``seq_ratings``: "test" = the rating of seq[-1] given the whole
        sequence, "valid" = of seq[-2] given seq[:-1] (users whose target rating is unknown are
        skipped). A list of item arrays with aligned `ratings`: each sequence's last rating."""
        self._check_fitted()
        seqs = as_sequences(data, None if is_split(data) else self.n_items_, ratings, what=self.name)
        if is_split(data):
            rs = self._rating_set(seqs, *seqs.rating_stage(stage))
        else:
            rs = self._rating_set(seqs, seqs.lengths, _last_values(seqs))
        errors = self._rating_errors(rs)
        return {"rmse": errors["rmse"], "mae": errors["mae"], "n": errors["n"],
                "per_rating": per_rating_report(errors["pred"], rs.target)}


def _last_values(seqs: Sequences) -> np.ndarray:
    r = seqs.require_ratings()
    return np.where(seqs.lengths > 0, r[np.maximum(seqs.indptr[1:] - 1, 0)] if r.size else np.nan, np.nan)


def _training_ratings(seqs: Sequences, users: np.ndarray) -> np.ndarray:
    """Known ratings of the training parts of `users` (their mean starts the rating head)."""
    r = seqs.require_ratings()
    stop = seqs.train_stop[users]
    first = np.repeat(seqs.indptr[users], stop)
    pos = np.arange(int(stop.sum())) - np.repeat(np.cumsum(stop) - stop, stop)
    values = r[first + pos]
    return values[np.isfinite(values)]


# ---- cost model helpers (recsys.training.cost) ---------------------------------------------------


@dataclass(frozen=True)
class WindowStats:
    """What one epoch of right-aligned, length-pooled batches computes (see :func:`window_stats`):
    `rows` training rows, `real` = sum of window lengths, `padded` = sum over batches of rows x
    width, `square` = sum over batches of rows x width^2 (attention), `mask_rows` = expected
    [MASK] positions (BERT4Rec's cloze), `max_tokens` = rows x width of the widest batch."""

    rows: float
    steps: int
    real: float
    padded: float
    square: float
    max_tokens: float
    max_width: float
    widths: tuple[float, ...]


def length_model(shape, n: int = 4096):
    """Training lengths as `n` equally likely values: the quantiles of the log-normal distribution
    with the shape's mean history length and second moment (``DataShape.pairs``); ``ppf(q)`` its
    quantile function. Log-normal fits the long right tail of interaction counts (a gamma fit
    underestimates the longest row of a pool, which sets the widest batch)."""
    from scipy.special import ndtri

    mean = max(shape.mean_len, 1e-9)
    second = shape.pairs / max(shape.n_users, 1)
    sigma2 = math.log(max(second / mean ** 2, 1.0 + 1e-6))
    mu, sigma = math.log(mean) - sigma2 / 2, math.sqrt(sigma2)
    ppf = lambda q: float(np.exp(mu + sigma * ndtri(q)))
    grid = np.exp(mu + sigma * ndtri((np.arange(n) + 0.5) / n))
    return grid * (mean / grid.mean()), ppf


def window_stats(shape, span: int, batch_size: int, pool: int, offset: int = 0) -> WindowStats:
    """Padded work of one epoch of :meth:`SequentialModel._train_epoch`: one row per training user,
    its window ``min(L, span)`` (L = training length, :func:`length_model`), rows sorted by length
    inside pools of ``pool x batch_size`` and cut into batches padded to their longest row: batch j
    of a pool has the expected width of the order statistic at rank (j + 1) B of the pool. `offset` is
    subtracted from every width (SASRec's inputs drop the last item of the window)."""
    grid, ppf = length_model(shape)
    rows = float(shape.n_users)
    steps = math.ceil(rows / batch_size)
    real = rows * (float(np.minimum(grid, span).mean()) - offset)
    m = int(min(pool * batch_size, rows))
    widths = []
    from scipy.stats import beta

    v = (np.arange(64) + 0.5) / 64
    for j in range(math.ceil(m / batch_size)):
        b = min(batch_size, m - j * batch_size)
        r = j * batch_size + b  # the batch's longest row: order statistic r of the pool's m (Beta(r, m - r + 1) quantile)
        w = float(np.mean([min(math.ceil(ppf(u)), span) for u in beta.ppf(v, r, m - r + 1)])) - offset
        widths.append((b, max(w, 1.0)))
    scale = rows / m
    padded = max(scale * sum(b * w for b, w in widths), real)
    square = scale * sum(b * w * w for b, w in widths)
    return WindowStats(rows, steps, real, padded, square, max(b * w for b, w in widths),
                       max(w for _, w in widths), tuple(w for _, w in widths))


def transformer_cost(d: int, ffn: int, n_heads: int, n_blocks: int, padded: float, square: float) -> dict[str, float]:
    """Dense FLOPs (forward + backward) of `n_blocks` transformer layers over `padded` token
    positions: the qkv, output and two FFN products (inputs need gradients), and attention
    (QK^T and PV, 2 x 2 W^2 d forward per row, 3x with backward) over ``square`` = sum rows x W^2
    -- the full W x W square, as FlopCounterMode counts SDPA (causal or not). Also the bytes one
    position keeps for backward (LayerNorms, qkv, attention output, FFN activations, dropout masks)."""
    from recsys.training.cost import dense_layer_flops

    linear = n_blocks * (dense_layer_flops(padded, d, 3 * d) + dense_layer_flops(padded, d, d)
                         + dense_layer_flops(padded, d, ffn) + dense_layer_flops(padded, ffn, d))
    attention = n_blocks * 3 * 4.0 * square * d
    return {"linear": linear, "attention": attention,
            "act_bytes_per_token": 4.0 * n_blocks * (14 * d + 3 * ffn), "att_bytes_per_square": 4.0 * n_blocks * n_heads * 2}


def transformer_params(d: int, ffn: int, n_blocks: int) -> int:
    """Weights of `n_blocks` layers (qkv, output, two LayerNorms, two FFN products, with biases)."""
    return n_blocks * ((d + 1) * 3 * d + (d + 1) * d + 4 * d + (d + 1) * ffn + (ffn + 1) * d)
