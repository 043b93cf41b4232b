"""POSIT's training body (Xu, Shivaswamy, Zhang; ``../shared/reference/algorithms.md`` section D).

One linear item-item learner, score(x_u) = x_u U with U [I, I] dense and its diagonal forced to
zero before every forward (EASE's constraint, learned by SGD instead of solved in closed form),
trained under one of four methods:

- ``ease``: squared (or BCE) reconstruction loss, the per-item mean over the batch x ``loss_scale``.
- ``ipw``: the same per-item loss weighted by exp(-ipw_alpha * count_i), normalised to mean 1
  (the popularity tail).
- ``cvar``: tail optimisation on the per-entry loss, a + (1/beta) * relu(loss - a), with a
  learnable threshold a (= ``threshold / cvar_scale``) on its own learning rate.
- ``posit``: an adversary reads each item's column of the training matrix and outputs a weight
  sigmoid(nstd * o); learner and adversary step together. The learner minimises the per-item loss
  weighted by the adversary's previous weights (mean 1, x ``lam``); the adversary maximises
  sum_i w_i * (-advantage_i) / mean|advantage|, where an item's advantage is its moving average of
  hits in the top-``adv_k`` of the learner's predictions on the training rows (``recall``: raw
  hits; ``recall_dist``: hits / min(k, |x_u|)), divided by the moving count of the batch size, or
  of the item's positives with ``ones``. Its small width and BatchNorm keep it smooth over items,
  so it can only promote groups of similar ("semantic") items.

The training matrix stays sparse; a batch is densified on the device only where the loss needs it;
the learner's forward and backward are sparse-row products (``embedding_bag``), O(nnz x I).

Upstream bugs, fixed by default, each with a switch for bug-compatible runs:
``upstream_lr_override`` (upstream silently replaces the learner's lr with 0.05, 0.08 for MSD),
``upstream_best_is_last`` (upstream's "best" checkpoint aliases the live weights, so the final
model is the last epoch's, not the best validation epoch's) and ``upstream_adv_zero_init``
(upstream's zero-initialised first adversary layer feeds BatchNorm a zero-variance batch: the first
step is ~1e5 times too large and later steps cannot move the weights, which freeze after one step).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.errors import ConfigError
from recsys.models.base import IterativeConfig, IterativeModel, ItemScorer, check_fit_inputs
from recsys.checks import check_bool, check_choice, check_float, check_int
from recsys.training.batches import SparseRows, iterate_rows
from recsys.training.cost import CUDA_CONTEXT_BYTES, F32, DataShape, EpochCost
from recsys.training.early_stopping import SpilledEarlyStopping
from recsys.training.loop import Job
from recsys.training.seed import seed_everything
from recsys.models.registry import register_model

SPILL_ITEMS = 16384  # from here on the best U goes to disk (best_weights: auto)

METHODS = ("ease", "ipw", "cvar", "posit")
LOSSES = ("l2", "bce")
ADVANTAGES = ("recall", "recall_dist")
_STRUCTURE = re.compile(r"linear|2(b?)mlp([1-9]\d*)")
# BCE logits are shifted down so that an all-zero U starts at sigmoid(-4) ~ 0.018 (upstream)
BCE_OFFSET = 4.0


@dataclass(frozen=True)
class TailConfig(IterativeConfig):
    """Settings of the tail-promotion trainer; the defaults are POSIT's ML-20M values where it has them.

    Learner: ``lr`` / ``momentum`` / ``weight_decay`` (SGD, cosine schedule over ``epochs``),
    ``batch_size`` users per step, ``loss`` l2 | bce, ``loss_scale`` (x1000 upstream), ``lam``.
    Early stopping on validation NDCG@``eval_k`` with ``patience`` (None: never stop early).
    POSIT: ``alr`` / ``awd`` (adversary SGD lr and weight decay, no momentum), ``ast`` (structure
    ``linear``, ``2mlpN``, ``2bmlpN``), ``nstd``, ``aloss``, ``ones``, ``adv_k``, ``adv_momentum``,
    ``adv_warmup`` (epochs during which the advantage is tracked but the adversary is not yet
    trained and every weight is 1; 0 = upstream. At the start U = 0 and every score ties, so the
    first advantages are arbitrary; the adversary otherwise spends its first steps fitting them).
    IPW: ``ipw_alpha``. CVaR: ``cvar_beta`` (worst ratio), ``cvar_lr``, ``cvar_scale``.
    """

    method: str = "posit"
    loss: str = "l2"
    lr: float = 2.0
    momentum: float = 0.9
    weight_decay: float = 8e-6
    epochs: int = 50
    batch_size: int = 1024
    loss_scale: float = 1000.0
    lam: float = 1.0
    patience: int | None = 10
    eval_k: int = 100
    eval_batch_size: int = 1024
    alr: float = 1.0
    awd: float = 0.0
    nstd: float = 1.5
    ast: str = "2bmlp2"
    aloss: str = "recall_dist"
    ones: bool = False
    adv_k: int = 100
    adv_momentum: float = 0.9
    adv_warmup: int = 0
    ipw_alpha: float = 1e-3
    cvar_beta: float = 0.5
    cvar_lr: float = 0.1
    cvar_scale: float = 1e4
    upstream_lr_override: float | None = None
    upstream_best_is_last: bool = False
    upstream_adv_zero_init: bool = False
    fused_sgd: bool = True
    # where the best validation epoch's U waits for the restore: "memory" (a third I x I matrix),
    # "disk" (streamed to a file in the checkpoint folder, or a temporary one), "auto": disk from
    # SPILL_ITEMS items on (a 1 GiB float32 matrix), where it is a third of the task's peak
    best_weights: str = "auto"

    def spills_best(self, n_items: int) -> bool:
        return self.best_weights == "disk" or (self.best_weights == "auto" and n_items >= SPILL_ITEMS)

    def validate(self) -> None:
        super().validate()
        check_choice("method", self.method, METHODS)
        check_choice("loss", self.loss, LOSSES)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("loss_scale", self.loss_scale, 0.0, low_open=True)
        check_float("lam", self.lam, 0.0, low_open=True)
        if self.patience is not None:
            check_int("patience", self.patience, 1)
        check_int("eval_k", self.eval_k, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        check_float("alr", self.alr, 0.0)
        check_float("awd", self.awd, 0.0)
        check_float("nstd", self.nstd, 0.0, low_open=True)
        if not (isinstance(self.ast, str) and _STRUCTURE.fullmatch(self.ast)):
            raise ConfigError(f"ast (adversary structure) must be 'linear', '2mlpN' or '2bmlpN' (N >= 1 hidden units), "
                              f"got {self.ast!r}")
        check_choice("aloss", self.aloss, ADVANTAGES)
        check_bool("ones", self.ones)
        check_int("adv_k", self.adv_k, 1)
        check_float("adv_momentum", self.adv_momentum, 0.0, 1.0, high_open=True)
        check_int("adv_warmup", self.adv_warmup, 0)
        check_float("ipw_alpha", self.ipw_alpha, 0.0)
        check_float("cvar_beta", self.cvar_beta, 0.0, 1.0, low_open=True)
        check_float("cvar_lr", self.cvar_lr, 0.0)
        check_float("cvar_scale", self.cvar_scale, 0.0, low_open=True)
        if self.upstream_lr_override is not None:
            check_float("upstream_lr_override", self.upstream_lr_override, 0.0, low_open=True)
        check_bool("upstream_best_is_last", self.upstream_best_is_last)
        check_bool("upstream_adv_zero_init", self.upstream_adv_zero_init)
        check_bool("fused_sgd", self.fused_sgd)
        check_choice("best_weights", self.best_weights, ("auto", "memory", "disk"))

    @property
    def effective_lr(self) -> float:
        """The learner's learning rate actually used (the upstream override wins when set)."""
        return self.upstream_lr_override if self.upstream_lr_override is not None else self.lr


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


class Adversary(nn.Module):
    """Item weights w_i = sigmoid(nstd * o_i) from each item's column of the training matrix.

    ``linear``: o = <c_i, a> + b. ``2mlpN``: o = BN(Linear_N->1(tanh(BN(c_i A)))); ``2bmlpN`` scales
    by nstd before the tanh. A (users x N) starts at zero as upstream; BatchNorm (no affine, batch
    = all items) is always in training mode, so o is standardised over the catalogue.
    """

    def __init__(self, n_users: int, structure: str, nstd: float, zero_init: bool = False) -> None:
        super().__init__()
        m = _STRUCTURE.fullmatch(structure)
        if m is None:
            raise ConfigError(f"unknown adversary structure {structure!r}; use 'linear', '2mlpN' or '2bmlpN'")
        self.nstd = float(nstd)
        width = 1 if structure == "linear" else int(m.group(2))
        self.first = nn.Parameter(torch.zeros(n_users, width))  # [U, N]: read as an embedding table
        if not zero_init and structure != "linear":
            nn.init.normal_(self.first, std=n_users ** -0.5)
        if structure == "linear":
            self.bias = nn.Parameter(torch.zeros(1))
            self.head = None
        else:
            self.bias = None
            self.head = nn.Sequential(
                nn.BatchNorm1d(width, affine=False),
                _Scale(self.nstd) if m.group(1) else nn.Identity(),
                nn.Tanh(),
                nn.Linear(width, 1, bias=False),
                nn.BatchNorm1d(1, affine=False),
            )

    def forward(self, columns: SparseRows) -> Tensor:
        """Weights [I] for the items whose user columns are the rows of `columns`."""
        o = F.embedding_bag(columns.indices, self.first, columns.offsets, mode="sum", per_sample_weights=columns.values)
        o = o + self.bias if self.head is None else self.head(o)
        return torch.sigmoid(self.nstd * o.squeeze(1))


@torch.no_grad()
def fused_momentum_step(U: Tensor, buf: Tensor, rows: SparseRows, grad_pred: Tensor, *, lr: float, momentum: float,
                        weight_decay: float, chunk: int = 512) -> None:
    """``torch.optim.SGD``'s momentum step for ``pred = x U`` done in place:
    ``buf = momentum * buf + weight_decay * U + x^T grad_pred``, ``U -= lr * buf``.

    ``x^T grad_pred`` has non-zero rows only for the batch's items: it is added into `buf` one
    chunk of stored entries at a time (``chunk x I`` floats), never formed as an I x I gradient.
    """
    buf.mul_(momentum)
    if weight_decay:
        buf.add_(U, alpha=weight_decay)
    for s in range(0, rows.indices.numel(), chunk):
        e = slice(s, s + chunk)
        buf.index_add_(0, rows.indices[e], grad_pred[rows.row_ids[e]] * rows.values[e, None])
    U.add_(buf, alpha=-lr)


def mean_one(weights: Tensor) -> Tensor:
    """`weights` / mean(weights), the mean detached (upstream's normalisation)."""
    return weights / weights.mean().detach().clamp_min(1e-12)


def ipw_weights(counts: np.ndarray | Tensor, alpha: float) -> Tensor:
    """exp(-alpha * count_i) normalised to mean 1, computed as exp(-alpha * (count_i - min count))
    so that large counts do not underflow to an all-zero vector (the ratio is the same)."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    w = torch.exp(-alpha * (c - c.min()))
    return (w / w.mean()).float()


def topk_hits(pred: Tensor, x: Tensor, k: int, *, dist: bool) -> Tensor:
    """Per-item hits [I] of one batch: sum over users of 1[i in top-k(pred_u) and x_ui > 0],
    each divided by min(k, |x_u|) when `dist` (POSIT's ``recall_dist``)."""
    k = min(k, pred.shape[1])
    top = pred.topk(k, dim=1).indices
    hit = (x.gather(1, top) > 0).to(pred.dtype)
    if dist:
        hit = hit / (x > 0).sum(1, keepdim=True).clamp(min=1, max=k).to(pred.dtype)
    return torch.zeros(pred.shape[1], dtype=pred.dtype, device=pred.device).index_add_(0, top.reshape(-1), hit.reshape(-1))


@register_model
class TailLearner(IterativeModel, ItemScorer):
    """The linear learner under ``config.method``.

    Learned state: ``U_`` [I, I] (zero diagonal), ``n_items_``, ``item_weight_`` (the final
    per-item loss weights, mean 1: POSIT's promoted items have the large ones), ``history_``
    (one record per epoch: loss, adversary loss, NDCG@eval_k, seconds), ``best_epoch_``.
    """

    name = "tail_learner"
    Config = TailConfig
    config: TailConfig

    # ---- training ------------------------------------------------------------------------
    def fit(self, train: sp.csr_matrix, valid: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> "TailLearner":
        """SGD on the rows of `train`; `valid` = (fold-in rows, held-out rows) for early stopping."""
        c = self.config
        train, valid = check_fit_inputs(train, valid, c.patience)
        seed_everything(c.seed)
        rng = np.random.default_rng(c.seed)
        n_users, n_items = train.shape
        self.n_items_ = int(n_items)
        dev = self.device

        U = nn.Parameter(torch.zeros(n_items, n_items, device=dev))  # upstream starts from zero
        groups = [{"params": [U], "lr": c.effective_lr, "momentum": c.momentum, "weight_decay": c.weight_decay}]
        # fused_sgd: U's momentum step is done in place (momentum buffer += decay + the batch's
        # gradient, added row by row for the batch's items), so no I x I gradient, no decayed copy
        # of it, and U, its momentum and the best weights are the only I x I tensors (3 x I^2 x 4 B)
        momentum_buf = torch.zeros_like(U) if c.fused_sgd else None
        weight = torch.ones(n_items, device=dev)
        adversary = threshold = columns = None
        if c.method == "ipw":
            weight = ipw_weights(np.asarray((train != 0).sum(0)).ravel(), c.ipw_alpha).to(dev)
        elif c.method == "cvar":
            threshold = nn.Parameter(torch.zeros(1, device=dev))
            groups.append({"params": [threshold], "lr": c.cvar_lr, "momentum": 0.0, "weight_decay": 0.0})
        elif c.method == "posit":
            adversary = Adversary(n_users, c.ast, c.nstd, zero_init=c.upstream_adv_zero_init).to(dev)
            adversary.train()
            groups.append({"params": list(adversary.parameters()), "lr": c.alr, "momentum": 0.0, "weight_decay": c.awd})
            columns = SparseRows.from_csr(train.T.tocsr(), dev)  # item i's row = its users
            item_loss = torch.zeros(n_items, device=dev)
            loss_count = torch.full((n_items,), 1e-15, device=dev)
        optimizer = torch.optim.SGD(groups, lr=c.effective_lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.epochs)
        self.U_ = U.data  # scoring during validation reads the live weights
        n_batches = math.ceil(n_users / c.batch_size)
        k = min(c.eval_k, n_items)

        def epoch_fn(epoch: int) -> dict:
            total = torch.zeros((), device=dev)
            adv_total = torch.zeros((), device=dev)
            for _, rows in iterate_rows(train, c.batch_size, dev, shuffle=True, rng=rng):
                optimizer.zero_grad(set_to_none=True)
                if momentum_buf is None:
                    pred = self._forward(U, rows)
                else:  # the loss's gradient stops at pred; U's update is applied by hand below
                    with torch.no_grad():
                        pred = self._forward(U, rows)
                    pred.requires_grad_(True)
                x = rows.to_dense()
                per_entry = (pred - x).square() if c.loss == "l2" else F.binary_cross_entropy_with_logits(
                    pred - BCE_OFFSET, x, reduction="none")
                if c.method == "cvar":
                    a = threshold / c.cvar_scale
                    loss = c.lam * (a + F.relu(per_entry - a) / c.cvar_beta).mean() * c.loss_scale
                elif c.method == "ease":
                    loss = per_entry.mean() * c.loss_scale
                else:
                    per_item = per_entry.mean(0) * c.loss_scale
                    loss = c.lam * (per_item * mean_one(weight)).mean()
                loss.backward()
                if adversary is not None:
                    with torch.no_grad():
                        hits = topk_hits(pred.detach(), x, c.adv_k, dist=c.aloss == "recall_dist")
                        seen = (x > 0).sum(0).to(x.dtype) if c.ones else torch.full_like(hits, rows.shape[0])
                        item_loss.mul_(c.adv_momentum).sub_(hits)  # the advantage enters negated
                        loss_count.mul_(c.adv_momentum).add_(seen)
                    if epoch > c.adv_warmup:
                        raw = adversary(columns)
                        weight.copy_(raw.detach())
                        aloss = self._adversary_loss(raw, item_loss / loss_count)
                        aloss.backward()
                        adv_total += aloss.detach()
                optimizer.step()
                if momentum_buf is not None:
                    fused_momentum_step(U.data, momentum_buf, rows, pred.grad, lr=optimizer.param_groups[0]["lr"],
                                        momentum=c.momentum, weight_decay=c.weight_decay)
                total += loss.detach() * rows.shape[0]  # detached: no graph outlives its batch
            with torch.no_grad():
                U.diagonal().zero_()
            if not (torch.isfinite(total) and torch.isfinite(U.sum())):  # sum: no I x I bool temporary
                raise ConfigError(
                    f"{self.name} ({c.method}): training diverged in epoch {epoch} (loss or weights not finite) "
                    f"with lr={c.effective_lr}; lower lr (the gradient scales with loss_scale / (batch_size x n_items))")
            record = {"loss": float(total) / n_users, "lr": optimizer.param_groups[0]["lr"]}
            if adversary is not None:
                record["adversary_loss"] = float(adv_total) / n_batches
            if threshold is not None:
                record["cvar_threshold"] = float(threshold.detach()) / c.cvar_scale
            scheduler.step()
            return record

        def validate_fn(epoch: int):
            means = self.evaluate(*valid, recall_denominator="min", ks=(k,), metrics=("ndcg", "recall"),
                                  batch_size=c.eval_batch_size).mean()
            return means[f"ndcg@{k}"], means

        state = {"optimizer": optimizer, "scheduler": scheduler, "rng": rng, "weight": weight}
        if momentum_buf is not None:
            state["momentum"] = momentum_buf
        if adversary is not None:
            state.update(adversary=adversary, item_loss=item_loss, loss_count=loss_count)
        if threshold is not None:
            state["threshold"] = threshold
        job = Job(epoch_fn, validate_fn if valid is not None else None, weights={"U": U, "weight": weight},
                  state=state)
        stopper = None
        if c.spills_best(n_items) and valid is not None:
            folder = None if self._checkpoint_dir is None else self._checkpoint_dir / "best"
            stopper = SpilledEarlyStopping(c.patience, mode="max", folder=folder)
        result = self._train(job, monitor=f"ndcg@{k}", restore_best=not c.upstream_best_is_last,
                             data={"train": train.shape, "nnz": train.nnz}, stopper=stopper)
        self.history_ = result.history
        self.best_epoch_ = len(self.history_) if c.upstream_best_is_last or result.best_epoch is None \
            else result.best_epoch
        self.U_ = U.data.detach()
        self.item_weight_ = mean_one(weight).detach()
        return self

    @staticmethod
    def _forward(U: Tensor, rows: SparseRows) -> Tensor:
        """x_u U for the batch (the diagonal is zeroed first: EASE's constraint)."""
        with torch.no_grad():
            U.diagonal().zero_()  # EASE's constraint: no item predicts itself
        return F.embedding_bag(rows.indices, U, rows.offsets, mode="sum", per_sample_weights=rows.values)

    @staticmethod
    def _adversary_loss(raw: Tensor, advantage_loss: Tensor) -> Tensor:
        """-mean(w_i * L_i / mean|L|): minimising it moves weight to items with the least advantage."""
        normed = advantage_loss / advantage_loss.abs().mean().clamp_min(1e-12)
        return -(mean_one(raw) * normed.detach()).mean()

    @classmethod
    def peak_memory(cls, config, n_users: int, n_items: int, nnz: int) -> int:
        """U, its momentum and the best U (3 x I^2 float32; a fourth, the gradient, without
        fused_sgd; one fewer where the best U waits on disk, ``best_weights``), about sixteen
        [batch, I] float32 blocks per step and in evaluation, and the sparse data. Measured with the
        best U in memory (benchmarks/bench_tail_memory.py, 27,341 users x 23,242 items, batch 1024):
        7.8-7.9 GiB for ease / ipw / posit against 7.9 estimated, 8.8 GiB for cvar against 8.9."""
        from recsys.models.base import BASE_PROCESS_BYTES

        square = ((3 if config.fused_sgd else 5) - config.spills_best(n_items)) * 4 * n_items * n_items
        blocks = 28 if config.method == "cvar" else 16  # CVaR's hinge keeps more [batch, I] tensors for backward
        return BASE_PROCESS_BYTES + 48 * nnz + square + blocks * 4 * config.batch_size * n_items

    @classmethod
    def epoch_cost(cls, config: TailConfig, shape: DataShape) -> EpochCost:
        """Every training user once in batches of ``batch_size``: pred = x U as an embedding_bag over
        U's rows (2 nnz I sparse FLOPs), the loss on the densified [batch, I] block, and SGD with
        momentum on the I x I matrix -- with ``fused_sgd`` the batch's gradient x^T g is index_add-ed
        into the momentum buffer (2 nnz I sparse), without it embedding_bag's backward builds a dense
        I x I gradient. POSIT adds the adversary every step: an embedding_bag over *all* item columns
        (3 x 2 nnz N sparse) and its Linear N -> 1 on [I, N] (6 I N dense, the only FLOPs
        FlopCounterMode sees here); ease / ipw / cvar have no dense products at all. Memory time
        dominates: about eight passes over the I x I matrices per step (momentum decay, weight
        decay, the update). Host: :meth:`peak_memory` (U, momentum, best U: 3 x I^2 float32)."""
        from recsys.models.base import BASE_PROCESS_BYTES

        c, n, I, nnz = config, shape.n_users, shape.n_items, shape.nnz
        steps = math.ceil(n / c.batch_size)
        b = min(c.batch_size, n)
        forward = 2.0 * nnz * I
        update = 2.0 * nnz * I
        width, head = 0, False
        if c.method == "posit":
            m = _STRUCTURE.fullmatch(c.ast)
            head = c.ast != "linear"
            width = 1 if not head else int(m.group(2))
        adv_sparse = steps * 3 * 2.0 * nnz * width
        adv_dense = steps * 6.0 * I * width if head else 0.0
        params = I * I + (n * width + (width if head else 1) if c.method == "posit" else 0) + (c.method == "cvar")
        square_passes = (8 if c.weight_decay else 5) if c.fused_sgd else 11
        traffic = steps * (square_passes * F32 * I * I + 10 * F32 * b * I) + 4 * F32 * nnz * I + F32 * I * I \
            + steps * 4 * F32 * nnz * width
        host = cls.peak_memory(c, n, I, nnz)
        device = CUDA_CONTEXT_BYTES + host - BASE_PROCESS_BYTES - 36 * nnz
        return EpochCost(flops=forward + update + adv_sparse + adv_dense, dense_flops=adv_dense, host_bytes=host,
                         device_bytes=device, traffic_bytes=traffic, steps=steps, params=params,
                         terms={"forward_sparse_flops": forward, "update_sparse_flops": update,
                                "adversary_sparse_flops": adv_sparse, "adversary_dense_flops": adv_dense,
                                "square_bytes": F32 * I * I, "square_traffic_bytes": steps * square_passes * F32 * I * I})

    # ---- scoring --------------------------------------------------------------------------
    def _n_items(self) -> int:
        return self.U_.shape[0]

    @torch.no_grad()
    def score(self, rows: sp.csr_matrix) -> Tensor:
        """x_u U for each CSR row (a ranking score; BCE's constant offset is left out)."""
        r = SparseRows.from_csr(self._fitted_rows(rows), self.device)
        return F.embedding_bag(r.indices, self.U_, r.offsets, mode="sum", per_sample_weights=r.values)
