"""Multi-interest recommenders trained with BaM's balanced interest learning: :class:`MIND`,
:class:`ComiRecSA` and :class:`REMI` (registry names ``mind``, ``comirec``, ``remi``).

Each returns K interest vectors of size d from a user's last ``seq_len`` items
(:meth:`MultiInterestModel.interests` -> [B, K, d]); an item's score is the maximum over interests
of ⟨v_k, e_item⟩ (:meth:`score`). Written from BaM's description (Lee, Yun & Kang, IEEE BigData
2024) and the backbone papers; no upstream code is used.

**Training** (one job of the shared loop, :mod:`recsys.training.loop`; one loop "epoch" is
``steps_per_epoch`` iterations, 1,000 as in BaM, followed by one validation): each iteration draws
``batch_size`` (128) users without replacement among those with two or more training items, for
each a uniform target position t >= 1 of the training sequence (seq[:-2] under leave-one-out) and
the up-to-``seq_len`` items before it as history. The interests are encoded, the target interest is
selected (``selection``: ``hard`` / ``p`` / ``l``, temperature ``tau``, BaM_l projections of size
``linear_size``; :func:`~.objectives.select_interest`) and trained by a sampled softmax against
``n_negatives`` (1,280) uniform negatives shared by the batch, drawn on the device, with the log-q
correction and REMI's hard-negative weights (``beta``). ``multi_loss`` adds BaM's multi-interest
term (the same sampled softmax on log Σ_k exp⟨v_k, e⟩). REMI adds ``rr_lambda`` x the routing
regulariser on the attention matrices -- with ``rr_hard_only`` (default, BaM's choice) only when
``selection="hard"``. Adam, lr 1e-3, no weight decay. Early stopping on validation ``monitor``
(Recall@10) with ``patience`` validations (15); the best validation's weights are kept.

**Validation** ranks all items for ``valid_users`` users (1,000; 0 = every user) on seq[-2] given
seq[:-2]. Default: one fixed set drawn once with the model's seed, so successive validations are
comparable. ``valid_resample=True`` is upstream BaM: a fresh draw *with replacement* at every
validation (noisy early stopping).

**Evaluation** is full ranking over all items, item score = max over interests, the user's history
items at -inf (never recommended). ``history_zero_upstream=True`` is upstream BaM: history scores are
set to 0 instead, so a history item still outranks every item with a negative score.

**Negatives**: a sampled negative equal to the row's positive (an accidental hit) is removed from
that row's softmax. ``accidental_hits_upstream=True`` is upstream BaM: its sampler (per row, without
replacement, from all items) keeps such hits, so about N / I of the rows (a third on ML-1M) count
the positive in their own denominator as well -- a weaker, noisier gradient than the loss intends.

**Positions** (ComiRec-SA / REMI's learned position embeddings): counted from the most recent item
(the last history item always has the same position, whatever the history's length).
``positions_upstream=True`` is upstream BaM / ComiRec: histories are left-aligned and padded on the
right, so positions count from the oldest item of the window and the most recent item's position
depends on the history's length.

**Upstream differences worth knowing** (all switches here are typed: a bool setting given the
string "False" is refused, whereas BaM's ``argparse type=bool`` reads any non-empty string, "False"
included, as True -- ``--multi_loss False`` trains *with* the multi-interest loss there):

* BaM_l samples the interest, so no gradient reaches its projections: in the released ML-1M BaM_l
  checkpoint both projection biases are still exactly 0 after 88,000 Adam steps (the weights are
  still at their random initialisation). ``straight_through=False`` (default) reproduces that;
  ``True`` passes gradients to the selection probabilities (and BaM_l's projections) through a
  straight-through estimator of the sampled one-hot.
* The published ML-1M runs use the multi-interest loss: their training loss starts at about
  2 x ln(1 281), two sampled-softmax terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.checks import check_bool, check_choice, check_float, check_int
from recsys.errors import ConfigError, DataError
from recsys.metrics.ranking import RankingResult, evaluate, topk
from recsys.models.base import IterativeConfig, IterativeModel, InterestModel
from recsys.models.multi_interest.networks import (
    ComiRecSAEncoder,
    MINDEncoder,
    MultiInterestNetwork,
    max_interest_scores,
)
from recsys.models.multi_interest.objectives import (
    SELECTIONS,
    entropy,
    gather_interest,
    multi_interest_logits,
    routing_regularization,
    sampled_softmax_loss,
    select_interest,
)
from recsys.models.sequential.sequences import (
    fit_inputs,
    scored_rows,
    EvalSet,
    Sequences,
    as_sequences,
    history_matrix,
    last_window_start,
    window_tokens,
)
from recsys.training.cost import EpochCost
from recsys.training.loop import Job
from recsys.models.registry import register_model

METRICS = ("recall", "ndcg", "hit")
ENCODE_CHUNK = 256  # users encoded at once at inference (the attention MLP's activations bound memory)


@dataclass(frozen=True)
class MultiInterestConfig(IterativeConfig):
    """Settings of the multi-interest models (see the module docstring), plus ``seed``, ``device``,
    ``epochs`` (validations; x ``steps_per_epoch`` iterations), ``patience``, ``max_seconds``,
    ``progress`` of :class:`IterativeConfig`. ``routing_iters`` applies to MIND; ``attention_size``
    (None: 4 x hidden) and ``add_pos`` (learned positions) to ComiRec-SA / REMI."""

    n_interests: int = 4
    hidden: int = 64
    seq_len: int = 50
    selection: str = "hard"
    tau: float = 1.0
    linear_size: int = 16
    straight_through: bool = False
    multi_loss: bool = False
    n_negatives: int = 1280
    beta: float = 0.0
    rr_lambda: float = 0.0
    rr_hard_only: bool = True
    routing_iters: int = 3
    attention_size: int | None = None
    add_pos: bool = True
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    steps_per_epoch: int = 1000
    epochs: int = 1000
    patience: int | None = 15
    valid_users: int = 1000
    valid_resample: bool = False
    history_zero_upstream: bool = False
    accidental_hits_upstream: bool = False
    positions_upstream: bool = False
    eval_ks: tuple[int, ...] = (10, 20)
    monitor: str = "recall@10"
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if isinstance(self.eval_ks, list):
            object.__setattr__(self, "eval_ks", tuple(self.eval_ks))
        elif isinstance(self.eval_ks, int) and not isinstance(self.eval_ks, bool):
            object.__setattr__(self, "eval_ks", (self.eval_ks,))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        for name in ("n_interests", "hidden", "seq_len", "n_negatives", "routing_iters", "batch_size",
                     "steps_per_epoch", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_choice("selection", self.selection, SELECTIONS)
        check_float("tau", self.tau, 0.0)
        check_int("linear_size", self.linear_size, 0)
        if self.selection == "l" and self.linear_size < 1:
            raise ConfigError(f"selection='l' (BaM_l) needs linear_size >= 1, got {self.linear_size!r}")
        for name in ("straight_through", "multi_loss", "rr_hard_only", "add_pos", "valid_resample",
                     "history_zero_upstream", "accidental_hits_upstream", "positions_upstream"):
            check_bool(name, getattr(self, name))
        check_float("beta", self.beta, 0.0)
        check_float("rr_lambda", self.rr_lambda, 0.0)
        if self.attention_size is not None:
            check_int("attention_size", self.attention_size, 1)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_int("valid_users", self.valid_users, 0)
        if not isinstance(self.eval_ks, tuple) or not self.eval_ks:
            raise ConfigError(f"eval_ks must be a non-empty list of cut-offs, got {self.eval_ks!r}")
        for k in self.eval_ks:
            check_int("eval_ks", k, 1)
        metric, _, k = str(self.monitor).partition("@")
        if metric not in ("recall", "ndcg", "hit") or not k.isdigit() or int(k) not in self.eval_ks:
            raise ConfigError(f"monitor must be 'recall@k', 'ndcg@k' or 'hit@k' with k in eval_ks={self.eval_ks}, "
                              f"got {self.monitor!r}")


@dataclass(frozen=True)
class MINDConfig(MultiInterestConfig):
    """MIND: capsule routing (``routing_iters`` = 3)."""


@dataclass(frozen=True)
class ComiRecSAConfig(MultiInterestConfig):
    """ComiRec-SA: self-attentive heads with learned positions."""


@dataclass(frozen=True)
class REMIConfig(MultiInterestConfig):
    """REMI = ComiRec-SA + interest-aware hard negatives (β = 0.01) + routing regularisation (λ = 100)."""

    beta: float = 0.01
    rr_lambda: float = 100.0


class MultiInterestModel(IterativeModel, InterestModel):
    """Base class (see the module docstring). Learned state: ``net_``, ``n_items_``, ``history_``
    (per epoch: loss, seconds, training interest usage, validation metrics), ``best_epoch_``,
    ``stop_reason_`` and ``steps_`` (iterations run)."""

    name = "multi_interest"
    Config = MultiInterestConfig
    backbone: ClassVar[str] = "comirec"

    # ---- network -------------------------------------------------------------------------------

    def _network(self) -> MultiInterestNetwork:
        c = self.config
        if self.backbone == "mind":
            encoder = MINDEncoder(c.hidden, c.n_interests, c.seq_len, c.routing_iters)
        else:
            encoder = ComiRecSAEncoder(c.hidden, c.n_interests, c.seq_len, c.attention_size, c.add_pos,
                                       positions_from_oldest=c.positions_upstream)
        return MultiInterestNetwork(self.n_items_, c.hidden, encoder, c.linear_size if c.selection == "l" else 0)

    def _init_modules(self) -> None:
        self.net_ = self._network().to(self.device).eval()

    def _uses_rr(self) -> bool:
        c = self.config
        return (c.rr_lambda > 0 and self.backbone != "mind"
                and (c.selection == "hard" or not c.rr_hard_only))

    @classmethod
    def epoch_cost(cls, config: MultiInterestConfig, shape) -> EpochCost:
        """``steps_per_epoch`` iterations of ``batch_size`` (user, target position) draws: the item
        embeddings of each history (up to seq_len items), the encoder (ComiRec-SA / REMI: W2 tanh(W1 h)
        on the real positions and the interest read-out A E over the padded width; MIND: the bilinear
        map and the routing products), the target-interest selection and the sampled softmax against
        ``n_negatives`` shared negatives ([B, d] x [d, N], 3x with backward) -- which dominates with
        the default 1,280 negatives. Full Adam over the [I, d] item table every step: with many items
        the epoch is memory-bound on it."""
        return _multi_interest_cost(cls, config, shape)

    # ---- training ------------------------------------------------------------------------------

    def fit(self, train, valid=None, *, n_items: int | None = None, validate: bool = True) -> "MultiInterestModel":
        """Train on a leave-one-out Split (training part seq[:-2]; validation on seq[-2] given
        seq[:-2]) or on a list of item-id arrays (each whole sequence trains) with optional `valid` =
        (histories, one target item per history)."""
        return self._fit(*fit_inputs(train, valid, n_items, self.name, validate=validate))

    def fit_split(self, split, *, validate: bool = True) -> "MultiInterestModel":
        return self.fit(split, validate=validate)

    def _fit(self, seqs: Sequences, val: EvalSet | None) -> "MultiInterestModel":
        cfg = self.config
        users = np.flatnonzero(seqs.train_stop >= 2)
        if not len(users):
            raise DataError(f"no user has 2 training items ({self.name} trains on (history, next item) pairs; under "
                            f"leave-one-out sequences need 4 or more items)")
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # seed locally, leave the caller's RNG alone
            torch.manual_seed(cfg.seed)
            rng = np.random.default_rng(cfg.seed)
            self.n_items_ = seqs.n_items
            self._init_modules()
            opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            counters = {"steps": 0}
            fixed_valid = None
            if val is not None and not cfg.valid_resample:
                fixed_valid = self._valid_users(val, np.random.default_rng([cfg.seed, 1]), replace=False)

            def epoch_fn(epoch: int) -> dict[str, Any]:
                out = self._train_steps(seqs, users, opt, rng, cfg.steps_per_epoch)
                counters["steps"] += cfg.steps_per_epoch
                return out

            validate_fn = None
            if val is not None:
                def validate_fn(epoch: int):
                    rows = fixed_valid if fixed_valid is not None else self._valid_users(val, rng, replace=True)
                    means = self._evaluate(val, rows, cfg.eval_ks, ("recall", "ndcg"),
                                           cfg.history_zero_upstream).mean()
                    return means[cfg.monitor], {f"valid_{k}": v for k, v in means.items()}

            job = Job(epoch_fn, validate_fn, weights={"net": self.net_}, state={"opt": opt, "rng": rng,
                                                                                  "counters": counters})
            data = {"n_users": seqs.n_users, "n_items": seqs.n_items, "n_interactions": int(len(seqs.items)),
                    "validation": val is not None}
            result = self._train(job, monitor=cfg.monitor, data=data)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch or len(self.history_)
        self.stop_reason_ = result.stop_reason
        self.steps_ = int(counters["steps"])
        self.net_.eval()
        return self

    def _valid_users(self, val: EvalSet, rng: np.random.Generator, replace: bool) -> np.ndarray:
        has = np.flatnonzero(np.diff(val.target.indptr) > 0)
        n = self.config.valid_users
        if n == 0 or (not replace and n >= len(has)):
            return has
        return np.sort(rng.choice(has, size=n, replace=replace))

    def _batch(self, seqs: Sequences, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(right-aligned history tokens [B, W], target item ids [B]) of one training batch."""
        cfg = self.config
        b = cfg.batch_size
        rows = rng.choice(users, size=b, replace=b > len(users))
        stop = seqs.train_stop[rows]
        t = rng.integers(1, stop)  # target position in 1..stop-1
        start = np.maximum(t - cfg.seq_len, 0)
        tokens = window_tokens(seqs.indptr, seqs.items, rows, start, t)
        return tokens, seqs.items[seqs.indptr[rows] + t]

    def _train_steps(self, seqs: Sequences, users: np.ndarray, opt: torch.optim.Optimizer,
                     rng: np.random.Generator, n_steps: int) -> dict[str, Any]:
        net = self.net_
        net.train()
        total = torch.zeros((), device=self.device)
        usage = torch.zeros(self.config.n_interests, dtype=torch.long, device=self.device)
        for _ in range(n_steps):
            tokens, target = self._batch(seqs, users, rng)
            loss, idx = self.batch_loss(torch.from_numpy(tokens).to(self.device),
                                        torch.from_numpy(target).to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            usage += torch.bincount(idx, minlength=self.config.n_interests)
        net.eval()
        use = usage.double()
        return {"loss": float(total) / max(n_steps, 1), "train_interest_share": (use / use.sum()).tolist(),
                "train_interest_entropy": entropy(use)}

    def batch_loss(self, tokens: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(training loss of one batch, the selected interest of each row): history tokens [B, W]
        (right-aligned, PAD = 0) and target item ids [B], on the model's device."""
        cfg, net = self.config, self.net_
        interests, att = net.interests(tokens)
        pos_vec = net.item_vectors(target)
        soft = cfg.selection != "hard"
        grad = cfg.straight_through and soft
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            v, e = (interests, pos_vec) if grad else (interests.detach(), pos_vec.detach())
            corr = net.correlation(v, e, projected=cfg.selection == "l")
        idx, probs = select_interest(corr, cfg.selection, cfg.tau)
        user = gather_interest(interests, idx, probs, straight_through=grad)
        n_items = self.n_items_
        neg = torch.randint(n_items, (cfg.n_negatives,), device=tokens.device)
        neg_table = net.item_vectors(neg)
        # Upstream's sampler never removes a negative equal to the row's positive (with 1,280 of
        # ML-1M's 3,706 items, a third of the rows carry the positive again in the denominator).
        hits = None if cfg.accidental_hits_upstream else neg
        loss = sampled_softmax_loss((user * pos_vec).sum(-1), user @ neg_table.t(), n_items=n_items,
                                    neg_items=hits, pos_items=target, beta=cfg.beta).mean()
        if cfg.multi_loss:
            mp, mn = multi_interest_logits(interests, pos_vec, neg_table)
            loss = loss + sampled_softmax_loss(mp, mn, n_items=n_items, neg_items=hits, pos_items=target,
                                               beta=cfg.beta).mean()
        if att is not None and self._uses_rr():
            loss = loss + cfg.rr_lambda * routing_regularization(att, tokens, cfg.hidden)
        return loss, idx

    # ---- interests and scores ------------------------------------------------------------------

    @torch.no_grad()
    def _interest_rows(self, seqs: Sequences, rows: np.ndarray, stop: np.ndarray) -> Tensor:
        """Interests [len(rows), K, d] from each row's last ``seq_len`` items before `stop`."""
        net, size = self.net_, min(self.config.eval_batch_size, ENCODE_CHUNK)
        net.eval()
        start = last_window_start(stop, self.config.seq_len)
        order = np.argsort(stop - start, kind="stable")  # chunks of similar length: less padding
        out = torch.empty(len(rows), self.config.n_interests, self.config.hidden, device=self.device)
        for s in range(0, len(rows), size):
            o = order[s : s + size]
            tokens = window_tokens(seqs.indptr, seqs.items, rows[o], start[o], stop[o])
            if tokens.shape[1] == 0:
                tokens = np.zeros((len(o), 1), dtype=np.int64)
            out[torch.from_numpy(o).to(self.device)] = net.interests(torch.from_numpy(tokens).to(self.device))[0]
        return out

    @torch.no_grad()
    def _score_rows(self, seqs: Sequences, rows: np.ndarray, stop: np.ndarray) -> Tensor:
        return max_interest_scores(self._interest_rows(seqs, rows, stop), self.net_.item_table())

    def _histories(self, histories, stage: str | None, users) -> tuple[Sequences, np.ndarray, np.ndarray]:
        return scored_rows(histories, stage, users, getattr(self, "n_items_", None), self.name)

    def interests(self, histories, stage: str | None = None, users: np.ndarray | None = None) -> Tensor:
        """Interest vectors [B, K, d] of each history (a list of item-id arrays, oldest first, or a
        leave-one-out Split with ``stage`` "valid" / "test" and optional ``users``)."""
        self._check_fitted()
        return self._interest_rows(*self._histories(histories, stage, users))

    def score(self, histories, stage: str | None = None, users: np.ndarray | None = None) -> Tensor:
        """Scores [B, I] = max over interests of ⟨v_k, e_i⟩ (history items not masked)."""
        self._check_fitted()
        return self._score_rows(*self._histories(histories, stage, users))

    def recommend(self, histories, k: int = 10, stage: str | None = None, users: np.ndarray | None = None) -> np.ndarray:
        """Top-k item ids [B, k], best first; never an item of the scored history."""
        self._check_fitted()
        seqs, rows, stop = self._histories(histories, stage, users)
        seen = history_matrix(seqs.indptr, seqs.items, rows, stop, self.n_items_)
        return topk(self._score_rows(seqs, rows, stop), k, seen, inplace=True).cpu().numpy()

    def item_embeddings(self) -> np.ndarray:
        self._check_fitted()
        return self.net_.item_table().detach().cpu().numpy().copy()

    # ---- evaluation ----------------------------------------------------------------------------

    def _evaluate(self, ev: EvalSet, rows: np.ndarray, ks: Iterable[int], metrics: Iterable[str],
                  history_zero: bool, keep_topk: bool = False) -> RankingResult:
        def score_fn(batch: np.ndarray) -> Tensor:
            scores = self._score_rows(ev.seqs, batch, ev.stop[batch])
            if history_zero:  # upstream BaM: history items scored 0, not excluded
                zero_history(scores, ev.exclude[batch])
            return scores

        return evaluate(score_fn, rows, ev.target, None if history_zero else ev.exclude, ks=ks, metrics=metrics,
                        recall_denominator="n", batch_size=self.config.eval_batch_size, device=self.device,
                        keep_topk=keep_topk)

    def evaluate(self, split, stage: str = "test", *, ks: Iterable[int] = (10, 20),
                 metrics: Iterable[str] = ("recall", "ndcg"), history_zero: bool | None = None,
                 users: np.ndarray | None = None, keep_topk: bool = False) -> RankingResult:
        """Leave-one-out metrics, one target per user (seq[-1] given seq[:-1] for "test", seq[-2]
        given seq[:-2] for "valid"), full ranking, history excluded (or scored 0 with
        `history_zero`, default ``config.history_zero_upstream``). ``.mean()`` gives
        ``{"recall@10": ..., "ndcg@10": ...}`` (Recall@k = HR@k with one target)."""
        self._check_fitted()
        seqs = as_sequences(split, what=self.name)
        ev = EvalSet.build(seqs, *seqs.stage(stage))
        rows = np.arange(seqs.n_users) if users is None else np.asarray(users, dtype=np.int64)
        hz = self.config.history_zero_upstream if history_zero is None else check_bool("history_zero", history_zero)
        return self._evaluate(ev, rows, ks, metrics, hz, keep_topk)

    @torch.no_grad()
    def interest_balance(self, split, stage: str = "test", *, k: int = 20, seed: int = 0,
                         history_zero: bool | None = None) -> dict[str, Any]:
        """How the K interests share the held-out targets of `stage` (one per user):

        * ``selected``: share of users whose target the model's own selection rule assigns to each
          interest (hard: argmax of the correlation; p / l: one seeded draw from softmax(τ · corr));
        * ``best``: share for which each interest gives the target its (max-over-interests) score;
        * ``hit_share@k``: among users whose target is in their top-k, the share each interest
          produced (the interest that scored the target);
        * the entropy (nats) of each histogram and ``max_entropy`` = ln K (perfect balance).
        """
        self._check_fitted()
        cfg = self.config
        seqs = as_sequences(split, what=self.name)
        stop, target = seqs.stage(stage)
        rows = np.flatnonzero(target >= 0)
        hz = cfg.history_zero_upstream if history_zero is None else history_zero
        kk = cfg.n_interests
        gen = torch.Generator(device=self.device).manual_seed(seed)
        sel_counts = torch.zeros(kk, dtype=torch.long, device=self.device)
        best_counts = torch.zeros_like(sel_counts)
        hit_counts = torch.zeros_like(sel_counts)
        table = self.net_.item_table()
        for s in range(0, len(rows), cfg.eval_batch_size):
            r = rows[s : s + cfg.eval_batch_size]
            v = self._interest_rows(seqs, r, stop[r])
            t = torch.from_numpy(target[r]).to(self.device)
            e = self.net_.item_vectors(t)
            corr = self.net_.correlation(v, e, projected=cfg.selection == "l")
            sel, _ = select_interest(corr, cfg.selection, cfg.tau, generator=gen)
            per_interest = torch.einsum("bkd,bd->bk", v, e)
            best = per_interest.argmax(1)
            scores = max_interest_scores(v, table)
            seen = history_matrix(seqs.indptr, seqs.items, r, stop[r], self.n_items_)
            if hz:
                zero_history(scores, seen)
            else:
                scores[_coords(seen, self.device)] = float("-inf")
            mine = scores.gather(1, t.unsqueeze(1))
            ids = torch.arange(scores.shape[1], device=self.device)
            rank = ((scores > mine) | ((scores == mine) & (ids.unsqueeze(0) < t.unsqueeze(1)))).sum(1)
            hit = rank < k
            sel_counts += torch.bincount(sel, minlength=kk)
            best_counts += torch.bincount(best, minlength=kk)
            hit_counts += torch.bincount(best[hit], minlength=kk)
        out: dict[str, Any] = {"selection": cfg.selection, "stage": stage, "k": int(k), "n_users": int(len(rows)),
                               "n_hits": int(hit_counts.sum()), "max_entropy": float(np.log(kk))}
        for name, c in (("selected", sel_counts), ("best", best_counts), (f"hit_share@{k}", hit_counts)):
            c = c.double().cpu()
            out[name] = (c / c.sum().clamp_min(1)).tolist()
            out[f"entropy_{name.split('@')[0]}"] = entropy(c)
        return out


def _coords(m: sp.csr_matrix, device: torch.device) -> tuple[Tensor, Tensor]:
    m = sp.csr_matrix(m)
    r = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return torch.from_numpy(r).to(device), torch.from_numpy(m.indices.astype(np.int64)).to(device)


def zero_history(scores: Tensor, history: sp.csr_matrix) -> None:
    """Upstream BaM's history handling: set the history items' scores to 0 in place."""
    if history.nnz:
        scores[_coords(history, scores.device)] = 0.0


@register_model
class MIND(MultiInterestModel):
    """MIND (Li et al., CIKM 2019): dynamic-routing interest capsules, trained with BaM's scheme."""

    name = "mind"
    Config = MINDConfig
    backbone = "mind"


@register_model
class ComiRecSA(MultiInterestModel):
    """ComiRec-SA (Cen et al., KDD 2020): self-attentive interest heads, trained with BaM's scheme."""

    name = "comirec"
    Config = ComiRecSAConfig
    backbone = "comirec"


@register_model
class REMI(MultiInterestModel):
    """REMI (Xie et al., RecSys 2023): ComiRec-SA with interest-aware hard negatives (β) and routing
    regularisation (λ), trained with BaM's scheme."""

    name = "remi"
    Config = REMIConfig
    backbone = "comirec"


BACKBONES: Mapping[str, type[MultiInterestModel]] = {"mind": MIND, "comirec": ComiRecSA, "remi": REMI}


def _history_stats(config: MultiInterestConfig, shape) -> tuple[float, float]:
    """(mean history length, expected batch width) of a training batch: users uniform among those
    with 2+ training items (lengths: :func:`recsys.models.sequential.core.length_model`), target
    position t uniform in 1..L-1, history min(t, seq_len); the width is the batch's longest row."""
    from recsys.models.sequential.core import length_model

    lens = np.maximum(np.rint(length_model(shape)[0]), 2.0)
    s = config.seq_len
    x = np.arange(s + 1, dtype=float)
    cdf = np.minimum(x[None, :], lens[:, None] - 1) / (lens[:, None] - 1)  # P(t <= x | L)
    cdf[:, s] = 1.0
    cdf = cdf.mean(0)
    mean = float(np.sum(1 - cdf[:s]))
    width = float(np.sum(1 - cdf[:s] ** config.batch_size))
    return mean, width


def _multi_interest_cost(cls, config: MultiInterestConfig, shape) -> EpochCost:
    from recsys.models.base import BASE_PROCESS_BYTES
    from recsys.training.cost import ADAM_STATE, CUDA_CONTEXT_BYTES, F32, adam_traffic, dense_layer_flops

    c, i, d, k = config, shape.n_items, config.hidden, config.n_interests
    b, steps, n = c.batch_size, c.steps_per_epoch, c.n_negatives
    mean, width = _history_stats(c, shape)
    real, padded = steps * b * mean, steps * b * width
    if cls.backbone == "mind":
        encoder = dense_layer_flops(padded, d, d) + 2.0 * padded * k * d * (2 * c.routing_iters - 1 + 1)
        enc_params = d * d
    else:
        a = c.attention_size or 4 * d
        encoder = dense_layer_flops(real, d, a) + dense_layer_flops(real, a, k) + 3 * 2.0 * padded * k * d
        enc_params = a * d + a * k + (c.seq_len * d if c.add_pos else 0)
    select = 2.0 * steps * b * k * (c.linear_size if c.selection == "l" else d)
    loss = 3 * 2.0 * steps * b * d * n * (2 if c.multi_loss else 1)
    dense = encoder + select + loss
    params = (i + 1) * d + enc_params + (2 * (d + 1) * c.linear_size if c.selection == "l" else 0)
    weights = (ADAM_STATE + 1) * F32 * params
    act = F32 * b * width * (3 * d + (c.attention_size or 4 * d) * 2 + 4 * k) + 3 * F32 * b * n * (2 if c.multi_loss else 1)
    data = 32 * shape.nnz + 48 * shape.n_users
    host = BASE_PROCESS_BYTES + weights + act + data
    device = CUDA_CONTEXT_BYTES + weights + act
    traffic = steps * (adam_traffic(params) + 3 * F32 * params + 3 * act)
    return EpochCost(flops=dense, dense_flops=dense, host_bytes=host, device_bytes=device, traffic_bytes=traffic,
                     steps=steps, params=params,
                     terms={"encoder": encoder, "sampled_softmax": loss, "interest_selection": select,
                            "history_positions": real, "padded_positions": padded, "adam_traffic": steps * adam_traffic(params)})

