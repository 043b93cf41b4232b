"""Mult-VAE and Mult-DAE (Liang, Krishnan, Hoffman, Jebara; WWW 2018), written from the paper.

Network (enc_dims = [600, 200] gives I-600-200-600-I):
  x -> L2-normalise row -> dropout -> encoder (tanh between layers; the last layer outputs
  2K = (mu, logvar) for the VAE, K for the DAE) -> z -> decoder (mirror, tanh between layers,
  no output activation) -> logits over all items.

* VAE: z = mu + eps * exp(logvar / 2) while training, z = mu at inference.
  DAE: deterministic code z = tanh(encoder(x)), as in the authors' notebook, no KL.
* Loss per user: -sum_i x_ui log softmax(logits)_i; averaged over the batch (or weighted,
  ``sum_u w_u NLL_u / sum_u w_u``, for local / weighted-loss models), + beta * KL with
  KL = 0.5 * sum_k(-logvar + exp(logvar) + mu^2 - 1) averaged over the batch (unweighted).
* beta annealing: ``beta = min(anneal_cap, update_count / total_anneal_steps)``, where
  update_count is the number of gradient updates made *before* the current one (the first
  batch has beta = 0). beta therefore reaches the cap after ``anneal_cap * total_anneal_steps``
  updates, not after ``total_anneal_steps`` (vae-cf-pytorch#6). ``total_anneal_steps = 0``
  means beta = anneal_cap from the start.
* DAE regularisation: ``l2_reg * sum(W^2)`` over weight matrices (not biases) is added to the
  batch loss; ``l2_reg=None`` resolves to 0.01 / batch_size for the DAE (the authors' setting)
  and 0 for the VAE.

The input layer is a sparse product (``F.embedding_bag`` over the batch's non-zeros), so no
dense batch of inputs is built and the I x H first layer costs O(nnz * H), not O(B * I * H).

Upstream-compatibility switches (default off):
* ``noise_std_upstream``: eps ~ N(0, 0.01^2) as in the PyTorch ports (seed 004, LOCA, LFT,
  TALL) instead of N(0, 1).
* ``unmasked_fold_in_upstream``: fold-in / input items are *not* excluded when ranking, as in
  seed 004, whose non-in-place ``masked_fill`` discarded the mask. Implemented by passing
  ``exclude=None`` to the metrics in ``evaluate`` (validation during ``fit`` included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.errors import ConfigError, DataError
from recsys.models.base import IterativeConfig, IterativeModel, ItemScorer, check_fit_inputs
from recsys.checks import check_bool, check_float, check_int
from recsys.training import distributed
from recsys.training.batches import SparseRows, as_csr, iterate_rows
from recsys.training.cost import (ADAM_STATE, CUDA_CONTEXT_BYTES, F32, DataShape, EpochCost, adam_traffic,
                                  dense_layer_flops, sparse_input_flops)
from recsys.training.sparse_input import grouped_bag_matmul
from recsys.training.loop import Job
from recsys.training.seed import seed_everything
from recsys.models.registry import register_model

UPSTREAM_NOISE_STD = 0.01


@dataclass(frozen=True)
class MultVAEConfig(IterativeConfig):
    """Mult-VAE / Mult-DAE hyper-parameters (paper defaults; seed 004 uses enc_dims=[200], lr=0.01)."""

    enc_dims: tuple[int, ...] = (600, 200)
    dropout: float = 0.5
    lr: float = 1e-3
    batch_size: int = 500
    epochs: int = 200
    anneal_cap: float = 0.2
    total_anneal_steps: int = 200_000
    weight_decay: float = 0.0
    l2_reg: float | None = None
    patience: int | None = None
    eval_k: int = 100
    eval_batch_size: int = 1024
    variational: bool = True
    noise_std_upstream: bool = False
    unmasked_fold_in_upstream: bool = False

    def validate(self) -> None:
        super().validate()
        if isinstance(self.enc_dims, (str, bytes)) or not hasattr(self.enc_dims, "__iter__"):
            raise ConfigError(f"enc_dims must be a non-empty list of positive integers, got {self.enc_dims!r}")
        dims = tuple(self.enc_dims)
        if not dims:
            raise ConfigError("enc_dims must be a non-empty list of positive integers (e.g. [600, 200]), got []")
        for d in dims:
            check_int("each of enc_dims", d, 1)
        object.__setattr__(self, "enc_dims", tuple(int(d) for d in dims))
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_int("batch_size", self.batch_size, 1)
        check_int("epochs", self.epochs, 1)
        check_float("anneal_cap", self.anneal_cap, 0.0)
        check_int("total_anneal_steps", self.total_anneal_steps, 0)
        check_float("weight_decay", self.weight_decay, 0.0)
        if self.l2_reg is not None:
            check_float("l2_reg", self.l2_reg, 0.0)
        check_int("eval_k", self.eval_k, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        for flag in ("variational", "noise_std_upstream", "unmasked_fold_in_upstream"):
            check_bool(flag, getattr(self, flag))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["enc_dims"] = list(self.enc_dims)
        return out

    @property
    def resolved_l2_reg(self) -> float:
        """l2_reg, or its default: 0.01 / batch_size for the DAE (authors' notebook), 0 for the VAE."""
        if self.l2_reg is not None:
            return self.l2_reg
        return 0.0 if self.variational else 0.01 / self.batch_size


@dataclass(frozen=True)
class MultDAEConfig(MultVAEConfig):
    """Mult-DAE: I-200-I, deterministic code, no KL, L2 0.01 / batch_size."""

    enc_dims: tuple[int, ...] = (200,)
    variational: bool = False


def beta_at(update_count: int, anneal_cap: float, total_anneal_steps: int) -> float:
    """KL weight before gradient update number `update_count` (0-based); see module docstring."""
    if total_anneal_steps == 0:
        return anneal_cap
    return min(anneal_cap, update_count / total_anneal_steps)


class SparseLinear(nn.Module):
    """``x @ W + b`` for sparse rows x, as one ``embedding_bag`` whose backward is one sparse-dense
    product (W is stored [in, out]; :mod:`recsys.training.sparse_input`)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, rows: SparseRows, values: Tensor) -> Tensor:
        return grouped_bag_matmul(self.weight, rows.row_ids, rows.indices, rows.offsets, values, rows.shape[0], 1,
                                  rows.shape[1]) + self.bias


class MultVAENet(nn.Module):
    """Encoder / decoder of Mult-VAE (``variational=True``) or Mult-DAE, on sparse input rows."""

    def __init__(
        self, n_items: int, enc_dims: tuple[int, ...], dropout: float, variational: bool, noise_std: float = 1.0
    ) -> None:
        super().__init__()
        self.variational, self.dropout, self.noise_std = variational, dropout, noise_std
        self.latent_dim = enc_dims[-1]
        enc_out = [*enc_dims[:-1], self.latent_dim * (2 if variational else 1)]
        self.input_layer = SparseLinear(n_items, enc_out[0])
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc_out[:-1], enc_out[1:]))
        dec = [self.latent_dim, *reversed(enc_dims[:-1]), n_items]
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:]))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier (Glorot) normal weights as the PyTorch ports (vae_cf's TF default is Glorot uniform),
        # biases ~ N(0, 0.001^2) as in vae_cf
        for name, p in self.named_parameters():
            if name.endswith("weight"):
                nn.init.xavier_normal_(p)
            else:
                nn.init.normal_(p, std=0.001)

    def weight_matrices(self) -> list[Tensor]:
        return [p for name, p in self.named_parameters() if name.endswith("weight")]

    def encode(self, rows: SparseRows) -> tuple[Tensor, Tensor | None]:
        """(mu, logvar) for the VAE, (code, None) for the DAE."""
        values = F.dropout(rows.l2_normalised_values(), self.dropout, self.training)
        h = self.input_layer(rows, values)
        for layer in self.encoder:
            h = layer(torch.tanh(h))
        if not self.variational:
            return torch.tanh(h), None
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """z = mu + eps * sigma with eps ~ N(0, noise_std^2) (noise_std 1, or 0.01 upstream)."""
        return mu + torch.randn_like(mu) * self.noise_std * torch.exp(0.5 * logvar)

    def decode(self, z: Tensor) -> Tensor:
        for i, layer in enumerate(self.decoder):
            z = layer(torch.tanh(z) if i else z)
        return z

    def forward(self, rows: SparseRows) -> tuple[Tensor, Tensor, Tensor | None]:
        """(logits, mu, logvar); z is sampled only in training mode."""
        mu, logvar = self.encode(rows)
        z = self.reparameterize(mu, logvar) if self.variational and self.training else mu
        return self.decode(z), mu, logvar


def multinomial_nll(logits: Tensor, rows: SparseRows) -> Tensor:
    """Per-user -sum_i x_ui log softmax(logits)_i, from the non-zeros of x (no dense x)."""
    # -sum_i x_i (l_i - lse) = lse * sum_i x_i - sum_i x_i l_i
    picked = rows.row_reduce(logits[rows.row_ids, rows.indices] * rows.values)
    return torch.logsumexp(logits, dim=1) * rows.row_reduce(rows.values) - picked


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-user KL(N(mu, exp(logvar)) || N(0, I))."""
    return 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1).sum(dim=1)


def vae_loss(
    logits: Tensor,
    rows: SparseRows,
    mu: Tensor,
    logvar: Tensor | None,
    beta: float,
    user_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, nll, kl): weighted-mean NLL + beta * batch-mean KL (KL = 0 for the DAE)."""
    nll_u = multinomial_nll(logits, rows)
    if user_weights is None:
        nll = nll_u.mean()
    else:
        if user_weights.shape != nll_u.shape:
            raise DataError(f"user_weights must have shape {tuple(nll_u.shape)}, got {tuple(user_weights.shape)}")
        nll = (user_weights * nll_u).sum() / user_weights.sum()
    kl = kl_divergence(mu, logvar).mean() if logvar is not None else nll.new_zeros(())
    return nll + beta * kl, nll, kl


def adam(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam, fused where supported: one kernel for all parameters, ~3x faster steps on CPU (torch >= 2.4)."""
    fused = device.type == "cuda" or tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)


@register_model
class MultVAE(IterativeModel, ItemScorer):
    """Mult-VAE^PR (``variational=True``) / Mult-DAE.

    Learned state: ``net_``, ``n_items_``, ``history_`` (one record per epoch), ``best_epoch_``,
    ``update_count_``.
    """

    data_parallel = True  # recsys.training.distributed: each rank its share of every batch

    name = "multvae"
    Config = MultVAEConfig
    config: MultVAEConfig

    def _init_modules(self) -> None:
        c = self.config
        noise = UPSTREAM_NOISE_STD if c.noise_std_upstream else 1.0
        self.net_ = MultVAENet(self.n_items_, c.enc_dims, c.dropout, c.variational, noise).to(self.device)

    def _mask_inputs(self) -> bool:
        return not self.config.unmasked_fold_in_upstream

    def beta(self, update_count: int) -> float:
        """KL weight before gradient update `update_count` (0 for the DAE)."""
        c = self.config
        return beta_at(update_count, c.anneal_cap, c.total_anneal_steps) if c.variational else 0.0

    def fit(self, train: sp.csr_matrix, valid: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> "MultVAE":
        """Train on the CSR rows of `train` (users x items).

        `valid` = (input rows, target rows), aligned: the fold-in / held-out matrices of
        strong generalisation, or (training rows, validation items) of the same users in a
        random / per-user split. Each epoch it scores NDCG@eval_k and Recall@eval_k (input
        items excluded, recall denominator min(k, |target|)); the loop keeps the best epoch's
        weights (a copy) and restores them at the end; ``patience`` epochs without gain stop training.
        """
        c = self.config
        train, valid = check_fit_inputs(train, valid, c.patience)
        seed_everything(c.seed)
        rng = np.random.default_rng(c.seed)
        self.n_items_ = int(train.shape[1])
        self._init_modules()
        net = self.net_
        optimizer = adam(net.parameters(), c.lr, c.weight_decay, self.device)
        l2_reg = c.resolved_l2_reg
        counters = {"update_count": 0}
        k = min(c.eval_k, self.n_items_)

        _, world = distributed.rank_and_world()

        def epoch_fn(epoch: int) -> dict:
            net.train()
            total = torch.zeros((), device=self.device)
            beta = self.beta(counters["update_count"])
            for idx, rows in iterate_rows(train, c.batch_size, self.device, shuffle=True, rng=rng):
                beta = self.beta(counters["update_count"])
                share = 1.0
                if world > 1:  # data parallel: this rank's rows of the global batch (recsys.training.distributed)
                    mine = distributed.my_rows(idx)
                    share = len(mine) / len(idx)
                    rows = SparseRows.from_csr(train[mine], self.device)
                logits, mu, logvar = net(rows)
                loss, _, _ = vae_loss(logits, rows, mu, logvar, beta)
                loss = loss * share  # the ranks' losses sum to the global batch's mean loss
                if l2_reg:
                    loss = loss + (l2_reg / world) * sum(w.pow(2).sum() for w in net.weight_matrices())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.all_reduce_grads(net.parameters())
                optimizer.step()
                counters["update_count"] += 1
                total += loss.detach() * len(idx)  # detached: no autograd graph outlives its batch
            distributed.all_reduce_sum(total)
            return {"loss": float(total) / train.shape[0], "beta": beta}  # float(): includes a device sync

        def validate_fn(epoch: int):
            means = self.evaluate(*valid, recall_denominator="min", ks=(k,), metrics=("ndcg", "recall"),
                                  batch_size=c.eval_batch_size).mean()
            return means[f"ndcg@{k}"], means

        job = Job(epoch_fn, validate_fn if valid is not None else None, weights={"net": net},
                  state={"optimizer": optimizer, "rng": rng, "counters": counters})
        result = self._train(job, monitor=f"ndcg@{k}", data={"train": train.shape, "nnz": train.nnz})
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch if result.best_epoch is not None else len(self.history_)
        self.update_count_ = counters["update_count"]
        return self

    @classmethod
    def epoch_cost(cls, config: MultVAEConfig, shape: DataShape) -> EpochCost:
        """Every training user once, in batches: the sparse input layer (I x d1), the dense encoder
        and decoder layers, and the [batch, I] logits with their log-softmax; Adam over all weights.
        Host / device peak: the weights with gradient, two moments and the loop's best copy, about
        four [batch, I] float32 blocks (logits, their gradient, the softmax, the densified batch of
        the dense backward), and the CSR data."""
        from recsys.models.base import BASE_PROCESS_BYTES

        c, n, i = config, shape.n_users, shape.n_items
        enc_out = [*c.enc_dims[:-1], c.enc_dims[-1] * (2 if c.variational else 1)]
        dec = [c.enc_dims[-1], *reversed(c.enc_dims[:-1]), i]
        layers = list(zip(enc_out[:-1], enc_out[1:])) + list(zip(dec[:-1], dec[1:]))
        params = (i + 1) * enc_out[0] + sum((a + 1) * b for a, b in layers)
        steps = math.ceil(n / c.batch_size)
        inp_dense, inp_sparse = sparse_input_flops(shape.nnz, n, i, enc_out[0])
        hidden = sum(dense_layer_flops(n, a, b) for a, b in layers)
        block = F32 * min(c.batch_size, n) * i
        weights = (ADAM_STATE + 1) * F32 * params  # + the best epoch's copy
        host = BASE_PROCESS_BYTES + weights + 4 * block + 12 * shape.nnz + 8 * n
        device = CUDA_CONTEXT_BYTES + weights + 4 * block
        traffic = steps * (adam_traffic(params) + 3 * F32 * params) + 8 * F32 * n * i
        return EpochCost(flops=inp_dense + inp_sparse + hidden, dense_flops=inp_dense + hidden, host_bytes=host,
                         device_bytes=device, traffic_bytes=traffic, steps=steps, params=params,
                         terms={"input_layer": inp_dense + inp_sparse, "dense_layers": hidden,
                                "logits_block_bytes": block})

    def _rows(self, rows: sp.csr_matrix) -> SparseRows:
        return SparseRows.from_csr(self._fitted_rows(rows), self.device)

    @torch.no_grad()
    def score(self, rows: sp.csr_matrix) -> Tensor:
        """Logits [B, n_items] from the mean code (the fold-in items are not masked here)."""
        batch = self._rows(rows)
        self.net_.eval()
        mu, _ = self.net_.encode(batch)
        return self.net_.decode(mu)

    def exports(self, split) -> dict[str, np.ndarray]:
        """LOCA's user embedding: the encoder mean of each user's training row."""
        return {"user_embeddings": self.user_embeddings(split["train"])}

    @torch.no_grad()
    def user_embeddings(self, rows: sp.csr_matrix, batch_size: int = 4096) -> np.ndarray:
        """Encoder mean mu [B, K] (the DAE's code) for each CSR row, as float32 numpy (LOCA's user embedding)."""
        self._check_fitted()
        rows = as_csr(rows, "rows")
        self.net_.eval()
        out = [self.net_.encode(self._rows(rows[i : i + batch_size]))[0].cpu() for i in range(0, rows.shape[0], batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.net_.latent_dim), dtype=np.float32)


@register_model
class MultDAE(MultVAE):
    """Mult-DAE (I-200-I, deterministic tanh code, no KL, L2 0.01 / batch_size by default)."""

    name = "multdae"
    Config = MultDAEConfig
