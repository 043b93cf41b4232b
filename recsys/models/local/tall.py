"""TALL (Pan et al., arXiv 2404.08887): end-to-end adaptive local learning.

* 100 Mult-VAE experts I -> 100 -> I trained jointly (one :class:`ExpertBank`, one Adam, weight
  decay = reg / n_experts: 1e-3 / 100 on ML-1M).
* Loss-driven gate, no gating network: for user u and expert k, L_k(u) = sum over u's gate items
  of -log softmax(l_k with the input items' logits set to 0); gate_k = softmax_k(1 / L_k(u)).
  Output = sum_k gate_k * logits_k; KL = sum_k gate_k * KL_k. Gradients flow through the gate.
* Adaptive per-user weights (:class:`AdaptiveWeights`): each epoch the training pass records each
  user's gate-item loss of the mixture output; after ``gap`` epochs, w_u = max((d_u - mean d + 2
  alpha) / (2 alpha), 1e-8) with d_u the user's mean loss decrease over the last ``window``
  epochs. Training loss = sum_u w_u NLL_u / sum_u w_u + beta * KL.
* Early stopping on the mean of P / R / NDCG @ {1, 5, 10, 20} on validation, patience 15.

Gate items (``gate_source``):
* ``"valid"`` (paper, default for reproduction): the user's *validation* items, in training and at
  test time, so validation labels shape test predictions. Flagged in every result.
* ``"train_slice"``: a fixed random ``gate_fraction`` of each user's training items is taken out
  of the model's input and used as gate items instead; no validation label reaches the model.

Upstream switch ``kl_batch_sum_upstream``: TALL's code sums the gate-weighted batch-mean KL over
the users of the batch (``(gate @ kl_per_expert).sum()``), i.e. the KL term is B times larger
than the per-user mean used here by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recsys.errors import ConfigError
from recsys.models.autoencoders.multvae import adam, beta_at, multinomial_nll
from recsys.checks import check_bool, check_choice, check_float, check_fraction, check_int
from recsys.models.local.bank import bank_kl, shared_bank_epoch
from recsys.training.cost import CUDA_CONTEXT_BYTES, DataShape, EpochCost
from recsys.models.local.common import REPORT_KS, BankConfig, LocalModel
from recsys.training.compile import exp_shifted_sum
from recsys.training import distributed
from recsys.training.batches import SparseRows, iterate_rows
from recsys.training.loop import Job
from recsys.models.registry import register_model

GATE_SOURCES = ("valid", "train_slice")
log = logging.getLogger(__name__)


def _gate_loss_terms(logits: Tensor, in_rows: Tensor, in_items: Tensor, gate_rows: Tensor, gate_items: Tensor):
    """Forward of the gate loss L[e, b] = n_b * lse_b(l_e with input items set to 0) - sum_{i in
    gate_b} l_ebi: (L, the exponentials e, the masked sums, n_gate, flat input / gate indices).

    Written out (rather than clone + index_put + logsumexp + gather) because on [E, B, I] = 100 x
    512 x 3,260 every elementwise pass costs as much as a tenth of the decoder matmul: max, exp and
    sum over one buffer. The input items' terms are removed from the exponential sum by subtracting
    the gathered terms (the same float32 values, so they cancel to rounding) and adding 1 each.
    (row, item) pairs are gathered as row * I + item: 1-D gathers, 4x the 2-D indexing.
    """
    E, B, I = logits.shape
    in_flat, gate_flat = in_rows * I + in_items, gate_rows * I + gate_items
    shift = logits.amax(dim=2).clamp_min(0.0)  # >= the masked row's max (masked entries are 0)
    e, total = exp_shifted_sum(logits, shift[..., None])
    inside = e.new_zeros(E, B).index_add_(1, in_rows, e.view(E, -1).index_select(1, in_flat))
    n_in = torch.bincount(in_rows, minlength=B).to(e.dtype)
    masked = ((total - inside).clamp_min(0.0) + n_in * torch.exp(-shift)).clamp_min(torch.finfo(e.dtype).tiny)
    n_gate = torch.bincount(gate_rows, minlength=B).to(e.dtype)
    picked = e.new_zeros(E, B).index_add_(1, gate_rows, logits.reshape(E, -1).index_select(1, gate_flat))
    return n_gate * (shift + torch.log(masked)) - picked, e, masked, n_gate, in_flat, gate_flat


def _gate_loss_corrections_(g: Tensor, grad: Tensor, gate_rows: Tensor, in_flat: Tensor, gate_flat: Tensor) -> Tensor:
    """The sparse part of dL/dlogits, in place on `g` (the rescaled softmax, n_b x softmax x grad):
    input items have constant 0 logits in the masked softmax, gate items subtract grad."""
    flat = g.view(g.shape[0], -1)
    flat.scatter_(1, in_flat.expand(flat.shape[0], -1), 0.0)
    flat.index_add_(1, gate_flat, -grad[:, gate_rows])  # (row, item) pairs of a CSR are unique
    return g


class _GateLoss(torch.autograd.Function):
    """The gate loss (:func:`_gate_loss_terms`) with a backward that rescales the saved buffer and
    scatters the sparse corrections."""

    @staticmethod
    def forward(ctx, logits, in_rows, in_items, gate_rows, gate_items):
        loss, e, masked, n_gate, in_flat, gate_flat = _gate_loss_terms(logits, in_rows, in_items, gate_rows, gate_items)
        ctx.save_for_backward(e, masked, n_gate, in_flat, gate_rows, gate_flat)
        return loss

    @staticmethod
    def backward(ctx, grad):
        e, masked, n_gate, in_flat, gate_rows, gate_flat = ctx.saved_tensors
        g = e * (grad * n_gate / masked)[..., None]  # softmax of the masked row, times n_b
        return _gate_loss_corrections_(g, grad, gate_rows, in_flat, gate_flat), None, None, None, None


class _MixtureHead(torch.autograd.Function):
    """(out [B, I], gate [E, B]) from the experts' logits [E, B, I]: gate = softmax_e(1 / L_e) with
    L the gate loss, out = sum_e gate_e * logits_e -- the gate and the mixture in one function, so
    that backward writes the logits' gradient once.

    Autograd would add two [E, B, I] gradients (the mixture's gate * grad_out, built as a
    batched outer product, and the gate loss's rescaled softmax) and copy between them: five
    passes over a buffer as large as a decoder matmul's output. Here backward rescales the saved
    exponentials in place, applies the sparse corrections and adds gate * grad_out into the same
    buffer (``addcmul_``): two passes, plus the one read of the logits that grad(gate) needs.
    Same values as gate() + einsum to float rounding.
    """

    @staticmethod
    def forward(ctx, logits, in_rows, in_items, gate_rows, gate_items):
        loss, e, masked, n_gate, in_flat, gate_flat = _gate_loss_terms(logits, in_rows, in_items, gate_rows, gate_items)
        has = (n_gate > 0)[None, :].expand_as(loss)
        live = has & (loss > 1e-12)  # where 1 / clamp(L, 1e-12) depends on L
        inv = torch.where(has, 1.0 / loss.clamp_min(1e-12), 0.0)
        gate = torch.softmax(inv, dim=0)
        out = torch.einsum("eb,ebi->bi", gate, logits)
        ctx.save_for_backward(logits, e, masked, n_gate, loss, live, gate, in_flat, gate_rows, gate_flat)
        return out, gate

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_gate):
        logits, e, masked, n_gate, loss, live, gate, in_flat, gate_rows, gate_flat = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        g_gate = torch.einsum("ebi,bi->eb", logits, grad_out)  # d out / d gate
        if grad_gate is not None:
            g_gate = g_gate + grad_gate
        g_inv = gate * (g_gate - (gate * g_gate).sum(dim=0, keepdim=True))  # softmax over experts
        g_loss = torch.where(live, -g_inv / loss.square(), 0.0)
        g = e.mul_((g_loss * n_gate / masked)[..., None])  # the masked softmax times n_b; e not needed again
        _gate_loss_corrections_(g, g_loss, gate_rows, in_flat, gate_flat)
        g.addcmul_(gate[..., None], grad_out[None])  # the mixture's own path
        return g, None, None, None, None


class AdaptiveWeights:
    """TALL's per-user loss weights from the recent decrease of each user's loss."""

    def __init__(self, n_users: int, gap: int = 40, window: int = 10, alpha: float = 0.08) -> None:
        self.n_users, self.gap, self.window, self.alpha = n_users, gap, window, alpha
        self.prev: np.ndarray | None = None
        self.changes: list[np.ndarray] = []

    def record(self, losses: np.ndarray) -> None:
        """Losses of one epoch (one per user); keeps the last `window` epoch-to-epoch decreases."""
        losses = np.asarray(losses, dtype=np.float64)
        if self.prev is not None:
            self.changes.append(self.prev - losses)
            self.changes = self.changes[-self.window:]
        self.prev = losses

    def state_dict(self) -> dict:
        return {"prev": None if self.prev is None else self.prev.copy(), "changes": [c.copy() for c in self.changes]}

    def load_state_dict(self, state: dict) -> None:
        self.prev, self.changes = state["prev"], list(state["changes"])

    def weights(self, epoch: int) -> np.ndarray:
        """Weights for 1-based `epoch`: 1 during the first `gap` epochs, then from the recorded decreases."""
        if epoch <= self.gap or not self.changes:
            return np.ones(self.n_users)
        d = np.mean(self.changes, axis=0)
        return np.maximum((d - d.mean() + 2 * self.alpha) / (2 * self.alpha), 1e-8)


@dataclass(frozen=True)
class TALLConfig(BankConfig):
    """Defaults: TALL on ML-1M (100 experts, enc [100], dropout 0, weight decay 1e-3 / 100,
    batch 512, beta to 0.2 over 200k updates, gap 40, window 10, alpha 0.08, patience 15)."""

    n_experts: int = 100
    dropout: float = 0.0
    weight_decay: float = 1e-5
    total_anneal_steps: int = 200_000
    epochs: int = 300
    patience: int | None = 15
    select: tuple[str, ...] = ("precision", "recall", "ndcg")
    gap: int = 40
    window: int = 10
    alpha: float = 0.08
    adaptive: bool = True
    gate_source: str = "valid"
    gate_fraction: float = 0.2
    kl_batch_sum_upstream: bool = False

    def validate(self) -> None:
        super().validate()
        check_int("n_experts", self.n_experts, 1)
        check_int("gap", self.gap, 0)
        check_int("window", self.window, 1)
        check_float("alpha", self.alpha, 0.0, low_open=True)
        check_choice("gate_source", self.gate_source, GATE_SOURCES)
        check_fraction("gate_fraction", self.gate_fraction)
        for flag in ("adaptive", "kl_batch_sum_upstream"):
            check_bool(flag, getattr(self, flag))


def train_slice(train: sp.csr_matrix, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(input, slice): ceil(fraction * n) random items of each user with n >= 2 move to the slice,
    leaving at least one item as input."""
    train = sp.csr_matrix(train)
    rng = np.random.default_rng(seed)
    n = np.diff(train.indptr)
    take = np.where(n >= 2, np.minimum(np.ceil(fraction * n), n - 1), 0).astype(np.int64)
    keys = rng.random(train.nnz)
    rows = np.repeat(np.arange(train.shape[0]), n)
    order = np.lexsort((keys, rows))  # within each row, a random order
    rank = np.empty(train.nnz, dtype=np.int64)
    rank[order] = np.arange(train.nnz) - np.repeat(train.indptr[:-1], n)
    in_slice = rank < take[rows]
    coo = train.tocoo()
    mk = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=train.shape, dtype=np.float32)  # noqa: E731
    return mk(~in_slice), mk(in_slice)


@register_model
class TALL(LocalModel):
    """Learned state adds ``bank_`` (n_experts), ``inputs_`` (model input rows) and ``gate_rows_``
    (the gate items of each training user)."""

    data_parallel = True  # recsys.training.distributed: each rank its share of every batch

    name = "tall"
    Config = TALLConfig
    config: TALLConfig

    def _init_modules(self) -> None:
        self.bank_ = self._new_bank(self.config.n_experts)

    # ---- the mixture ---------------------------------------------------------------------
    def _mixture(self, rows: SparseRows, gate_rows: SparseRows) -> tuple[Tensor, Tensor, Tensor]:
        """(output logits [B, I], gate [E, B], kl [E, B])."""
        logits, mu, logvar = self.bank_(rows)
        if torch.is_grad_enabled() and logits.requires_grad:
            out, gate = _MixtureHead.apply(logits, rows.row_ids, rows.indices, gate_rows.row_ids, gate_rows.indices)
        else:
            gate = self.gate(logits, rows, gate_rows)
            out = torch.einsum("eb,ebi->bi", gate, logits)
        return out, gate, bank_kl(mu, logvar)

    @staticmethod
    def gate_loss(logits: Tensor, rows: SparseRows, gate_rows: SparseRows) -> Tensor:
        """L [E, B] (or [B] for [B, I] logits): -sum over gate items of log softmax(logits with the
        input items' logits set to 0) -- TALL's expert loss on the user's gate items."""
        squeeze = logits.ndim == 2
        out = _GateLoss.apply(logits[None] if squeeze else logits, rows.row_ids, rows.indices,
                              gate_rows.row_ids, gate_rows.indices)
        return out[0] if squeeze else out

    def gate(self, logits: Tensor, rows: SparseRows, gate_rows: SparseRows) -> Tensor:
        """softmax over experts of 1 / L_k(u); users without gate items get a uniform gate."""
        loss = self.gate_loss(logits, rows, gate_rows)
        has = (torch.bincount(gate_rows.row_ids, minlength=loss.shape[1]) > 0)[None]
        inv = torch.where(has, 1.0 / loss.clamp_min(1e-12), 0.0)
        return torch.softmax(inv, dim=0)

    # ---- training --------------------------------------------------------------------------
    def fit(self, train: sp.csr_matrix, valid=None) -> "TALL":
        """Train on `train` with `valid` (validation target aligned with it; needed for early
        stopping and, with ``gate_source='valid'``, for the gate)."""
        c = self.config
        train, valid = self._start_fit(train, valid)
        if c.gate_source == "valid":
            if valid is None:
                raise ConfigError("gate_source='valid' needs valid=<validation target>; or use gate_source='train_slice'")
            self.inputs_, self.gate_rows_ = train, valid
        else:
            self.inputs_, self.gate_rows_ = train_slice(train, c.gate_fraction, c.seed)
        self._init_modules()
        bank = self.bank_
        opt = adam(bank.parameters(), c.lr, c.weight_decay, self.device)
        rng = np.random.default_rng(c.seed)
        weights = AdaptiveWeights(train.shape[0], c.gap, c.window, c.alpha)
        n_users = train.shape[0]
        counters = {"update": 0}

        _, world = distributed.rank_and_world()
        if world > 1 and c.kl_batch_sum_upstream:
            raise ConfigError("kl_batch_sum_upstream=True is not data-parallel (its KL term is a mean over the "
                              "whole batch inside each expert); train it in one process")

        def epoch_fn(epoch: int) -> dict:
            bank.train()
            w_all = torch.from_numpy(weights.weights(epoch) if c.adaptive else np.ones(n_users)).float().to(self.device)
            user_loss = torch.zeros(n_users, device=self.device)
            total = torch.zeros((), device=self.device)
            for idx, rows in iterate_rows(self.inputs_, c.batch_size, self.device, shuffle=True, rng=rng):
                # data parallel (recsys.training.distributed): this rank's rows of the global batch;
                # every term below is this rank's part of the global batch's sum over its
                # denominator, so the all-reduced gradient is the one-process gradient
                batch = torch.from_numpy(idx).to(self.device)
                if world > 1:
                    idx = distributed.my_rows(idx)
                    rows = SparseRows.from_csr(self.inputs_[idx], self.device)
                mine = torch.from_numpy(idx).to(self.device)
                gate_rows = SparseRows.from_csr(self.gate_rows_[idx], self.device)
                beta = beta_at(counters["update"], c.anneal_cap, c.total_anneal_steps)
                out, gate, kl = self._mixture(rows, gate_rows)
                target = rows if c.gate_source == "valid" else SparseRows.from_csr(train[idx], self.device)
                nll = multinomial_nll(out, target)
                w = w_all[mine]
                if c.kl_batch_sum_upstream:
                    kl_term = (gate * kl.mean(dim=1, keepdim=True)).sum()
                else:
                    kl_term = (gate * kl).sum() / len(batch)
                loss = (w * nll).sum() / w_all[batch].sum().clamp_min(1e-12) + beta * kl_term
                opt.zero_grad(set_to_none=True)
                loss.backward()
                distributed.all_reduce_grads(bank.parameters())
                opt.step()
                counters["update"] += 1
                with torch.no_grad():
                    user_loss[mine] = self.gate_loss(out.detach(), rows, gate_rows)
                total += loss.detach() * len(batch)
            distributed.all_reduce_sum(total)
            distributed.all_reduce_sum(user_loss)  # each rank filled its own users' entries
            weights.record(user_loss.cpu().numpy())
            return {"loss": float(total) / n_users, "beta": beta,
                    "weight_max": float(w_all.max()), "weight_min": float(w_all.min())}

        def validate_fn(epoch: int):
            means = self.evaluate_users(valid, ks=c.eval_ks, metrics=c.select).mean()
            fields = {f"valid_{k}": v for k, v in means.items()}
            fields["valid"] = float(np.mean(list(means.values())))
            return fields["valid"], fields

        job = Job(epoch_fn, validate_fn if valid is not None else None, weights={"bank": bank},
                  state={"optimizer": opt, "rng": rng, "adaptive_weights": weights, "counters": counters})
        result = self._train(job, monitor="valid", data={"train": train.shape, "nnz": train.nnz})
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch if result.best_epoch is not None else len(self.history_)
        return self

    @classmethod
    def epoch_cost(cls, config: TALLConfig, shape: DataShape) -> EpochCost:
        """Every training user once in batches of ``batch_size`` through all E experts (shared
        layout: sparse encoder, decoder baddbmm -> [E, B, I] logits), the gate over those logits
        (max / exp / sum, 1 / L, softmax over experts) and the mixture einsum with its backward
        (4 E n I dense FLOPs), one Adam step over the whole bank. Dominated by the decoder
        (6 E n H I) and, in memory time, by about twelve passes over the [E, B, I] logits per step;
        host / device peak: the bank with Adam (4 x E (3 H I + 2 H + I) floats) and three
        [E, B, I] blocks (the logits, their exponentials, the mixture's scratch)."""
        from recsys.models.base import BASE_PROCESS_BYTES

        c = config
        nnz = shape.nnz
        if c.gate_source == "train_slice":  # ceil(fraction * n_u) of each user's items leave the input
            nnz = max(shape.nnz - (c.gate_fraction * shape.nnz + 0.5 * shape.n_users), shape.n_users)
        bank = shared_bank_epoch(c.n_experts, shape.n_users, nnz, shape.n_items, c.hidden, c.batch_size,
                                 head_dense_per_entry=4.0, passes=12.0, blocks=3.0)
        data = (48 + (64 if c.gate_source == "train_slice" else 0)) * shape.nnz + 16 * shape.n_users
        return replace(bank, host_bytes=BASE_PROCESS_BYTES + bank.host_bytes + data,
                       device_bytes=CUDA_CONTEXT_BYTES + bank.device_bytes,
                       terms={**bank.terms, "mixture_flops": bank.terms["head_flops"], "input_nnz": nnz,
                              "one_off_flops": 0.0, "one_off_dense_flops": 0.0})

    @property
    def uses_validation_labels(self) -> bool:
        """The paper's gate weighs the experts by their loss on each user's validation items."""
        return self.config.gate_source == "valid"

    @torch.no_grad()
    def score_users(self, users: np.ndarray, budget: int = 1 << 25) -> Tensor:
        """Mixture logits for training users, gated by their gate items (see ``gate_source``)."""
        users = self._users(users)
        self.bank_.eval()
        out = []
        step = max(1, budget // max(1, self.config.n_experts * self.n_items_))
        for start in range(0, len(users), step):
            part = users[start:start + step]
            rows = SparseRows.from_csr(self.inputs_[part], self.device)
            gate_rows = SparseRows.from_csr(self.gate_rows_[part], self.device)
            out.append(self._mixture(rows, gate_rows)[0])
        return torch.cat(out)


__all__ = ["AdaptiveWeights", "TALL", "TALLConfig", "train_slice", "GATE_SOURCES", "REPORT_KS"]
