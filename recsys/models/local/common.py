"""What the local-stage models share: the typed config, per-user scoring of the training users,
evaluation, and one training loop for a bank of independently early-stopped experts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError, DataError
from recsys.metrics.ranking import METRICS, as_bool_rows, rank_metrics
from recsys.models.autoencoders.multvae import UPSTREAM_NOISE_STD, beta_at
from recsys.models.base import IterativeConfig, IterativeModel, UserScorer
from recsys.checks import check_bool, check_float, check_int
from recsys.models.local.bank import BankAdam, ExpertBank, bank_kl, bank_nll, weighted_mean
from recsys.training.batches import SparseRows, as_csr, iterate_rows
from recsys.training.cost import CUDA_CONTEXT_BYTES, DataShape, EpochCost
from recsys.training.checkpoints import tensor_digest
from recsys.training.loop import ExpertStopping, Job
from recsys.training.seed import seed_everything

# cut-offs and metrics of LFT / TALL's evaluation (recall denominator |test|)
REPORT_KS = (1, 5, 10, 20)
REPORT_METRICS = ("precision", "recall", "ndcg")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BankConfig(IterativeConfig):
    """A single-hidden-layer Mult-VAE I -> hidden -> I and how it is trained (LFT's base model).

    ``select``: the validation metrics whose mean over ``eval_ks`` picks the best epoch (LFT:
    NDCG; TALL: precision, recall and NDCG). ``noise_std_upstream``: eps ~ N(0, 0.01^2) as every
    upstream port of this family, instead of N(0, 1).
    """

    hidden: int = 100
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 512
    epochs: int = 100
    anneal_cap: float = 0.2
    total_anneal_steps: int = 0
    patience: int | None = 10
    eval_ks: tuple[int, ...] = REPORT_KS
    select: tuple[str, ...] = ("ndcg",)
    eval_batch_size: int = 1024
    noise_std_upstream: bool = False

    def validate(self) -> None:
        super().validate()
        check_int("hidden", self.hidden, 1)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_int("batch_size", self.batch_size, 1)
        check_int("epochs", self.epochs, 1)
        check_float("anneal_cap", self.anneal_cap, 0.0)
        check_int("total_anneal_steps", self.total_anneal_steps, 0)
        if self.patience is not None:
            check_int("patience", self.patience, 1)
        ks = tuple(self.eval_ks) if isinstance(self.eval_ks, (list, tuple)) else None
        if not ks:
            raise ConfigError(f"eval_ks must be a non-empty list of cut-offs, got {self.eval_ks!r}")
        for k in ks:
            check_int("each of eval_ks", k, 1)
        object.__setattr__(self, "eval_ks", tuple(int(k) for k in ks))
        sel = tuple(self.select) if isinstance(self.select, (list, tuple)) else None
        if not sel or any(m not in METRICS for m in sel):
            raise ConfigError(f"select must be a non-empty list of metrics from {METRICS}, got {self.select!r}")
        object.__setattr__(self, "select", sel)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        check_bool("noise_std_upstream", self.noise_std_upstream)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["eval_ks"], out["select"] = list(self.eval_ks), list(self.select)
        return out

    @property
    def noise_std(self) -> float:
        return UPSTREAM_NOISE_STD if self.noise_std_upstream else 1.0


def check_valid(train: sp.csr_matrix, valid: Any, what: str = "valid") -> sp.csr_matrix | None:
    """The validation target aligned with `train` (a CSR, or the (inputs, target) pair other models take)."""
    if valid is None:
        return None
    if isinstance(valid, (tuple, list)):
        if len(valid) != 2:
            raise DataError(f"{what} must be the validation target matrix or a pair (inputs, target)")
        valid = valid[1]
    valid = as_csr(valid, what)
    if valid.shape != train.shape:
        raise DataError(f"{what} has shape {valid.shape}; it must align with train {train.shape} (same users, items)")
    return valid


class LocalModel(IterativeModel, UserScorer):
    """Base of the local-stage models: :class:`~recsys.models.base.UserScorer` s, they score the
    *training users* (the random split's protocol evaluates the same users on held-out items):
    ``score_users(users)``. WL and LOCA also score new histories (``score(rows)``, ItemScorer).

    Learned state shared by all: ``train_`` (the training rows, CSR), ``n_items_``,
    ``history_``, ``best_epoch_``.
    """

    Config = BankConfig
    config: BankConfig

    def _start_fit(self, train: sp.csr_matrix, valid: Any) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        train = as_csr(train, "train")
        if train.nnz == 0:
            raise DataError(f"train has shape {train.shape} and no interactions; nothing to fit")
        valid = check_valid(train, valid)
        if valid is None and self.config.patience is not None:
            raise ConfigError(f"patience={self.config.patience} needs validation data: pass valid=<target matrix>")
        seed_everything(self.config.seed)
        self.train_ = train
        self.n_items_ = int(train.shape[1])
        self.history_: list[dict[str, float]] = []
        return train, valid

    # ---- what the local stage's pipeline calls (no branching on model names there) -------------
    sharded: ClassVar[bool] = False  # trained in parts (anchors / users) that run as separate tasks
    uses_validation_labels: ClassVar[bool] = False  # scoring reads the validation items (TALL's paper gate)

    @classmethod
    def start_method(cls, config: "BankConfig") -> str | None:
        """The base method ("vae" / "wl") this model starts from, trained in the stage's base step."""
        return None

    def fit_local(self, train: sp.csr_matrix, valid: sp.csr_matrix | None, ms: np.ndarray) -> "LocalModel":
        """Fit on the random split's training rows; `ms`: the users' mainstream scores (for WL)."""
        return self.fit(train, valid)

    @classmethod
    def shard_units(cls, config: "BankConfig", n_users: int) -> int:
        """How many independent units (local models, anchors, users) the training splits into."""
        raise NotImplementedError

    def prepare_from(self, train: sp.csr_matrix, valid: sp.csr_matrix | None, start: "LocalModel") -> "LocalModel":
        """The work every shard shares, from the fitted start model."""
        raise NotImplementedError

    def fit_shard(self, valid: sp.csr_matrix | None, units: np.ndarray) -> dict:
        """Train the units of one shard; returns tensors to save (``merge_shards`` reads them)."""
        raise NotImplementedError

    def merge_shards(self, parts: list[dict]) -> None:
        """Take the shards' saved outputs into this prepared model."""
        raise NotImplementedError

    def _merge_banks(self, parts: list[dict]) -> None:
        banks = []
        for p in parts:
            bank = self._new_bank(len(p["items"]))
            bank.load_state_dict(p["bank"])
            banks.append(bank)
        self.local_ = ExpertBank.concat(banks)
        self.history_ += [h for p in parts for h in p["history"]]
        self.best_epoch_ = None

    # ---- cost formulas (recsys.training.cost) ----------------------------------------------
    @classmethod
    def one_off_cost(cls, config: "BankConfig", shape: DataShape) -> EpochCost:
        """The work of ``fit`` outside the main loop's epochs (a base / global model's training for
        ``config.epochs`` epochs, neighbourhoods, anchors, final scoring); none by default. A fit of
        n main-loop epochs costs ``one_off_cost + epoch_cost.times(n)``; ``epoch_cost``'s terms
        repeat its FLOPs as ``one_off_flops`` / ``one_off_dense_flops``."""
        from recsys.models.base import BASE_PROCESS_BYTES

        return EpochCost(0.0, 0.0, BASE_PROCESS_BYTES, CUDA_CONTEXT_BYTES, 0.0, 0, 0)

    @classmethod
    def fit_cost(cls, config: "BankConfig", shape: DataShape, epochs: float | None = None) -> EpochCost:
        """One fit: the one-off phases plus `epochs` (default the config's) main-loop epochs."""
        n = config.epochs if epochs is None else epochs
        return cls.one_off_cost(config, shape) + cls.epoch_cost(config, shape).times(n)

    @staticmethod
    def _with_one_off(cost: EpochCost, one_off: EpochCost) -> EpochCost:
        from dataclasses import replace

        return replace(cost, terms={**cost.terms, "one_off_flops": one_off.flops,
                                    "one_off_dense_flops": one_off.dense_flops,
                                    "one_off_host_bytes": one_off.host_bytes, **{
                                        f"one_off_{k}": v for k, v in one_off.terms.items()}})

    def _new_bank(self, n_experts: int) -> ExpertBank:
        c = self.config
        return ExpertBank(n_experts, self.n_items_, c.hidden, c.dropout, c.noise_std).to(self.device)

    def _n_items(self) -> int:
        return self.n_items_

    # ---- training a bank of independently early-stopped experts ------------------------------
    def _fit_bank(self, bank: ExpertBank, train: sp.csr_matrix, valid: sp.csr_matrix | None,
                  weights: Tensor, candidates: Tensor | None = None, tag: str = "") -> ExpertBank:
        """Train every expert e on the users with weights[e, u] > 0 (loss sum_u w NLL / sum_u w +
        beta * mean KL over those users); each expert early-stops on its own validation score, the
        mean of ``select`` @ ``eval_ks`` over its `candidates` users ([E, U] bool; default: its
        training users), and gets its best epoch's weights back."""
        c = self.config
        E = bank.n_experts
        weights = weights.to(self.device, torch.float32)
        if weights.shape != (E, train.shape[0]):
            raise DataError(f"weights must be [{E}, {train.shape[0]}], got {tuple(weights.shape)}")
        if candidates is None:
            candidates = weights > 0
        opt = BankAdam(bank, c.lr, c.weight_decay)
        rng = np.random.default_rng(c.seed)
        counters = {"update": 0}
        stopper = ExpertStopping(E, ExpertBank.EXPERT_AXIS, c.patience, self.device)

        def epoch_fn(epoch: int) -> dict:
            bank.train()
            total = torch.zeros((), device=self.device)
            for idx, rows in iterate_rows(train, c.batch_size, self.device, shuffle=True, rng=rng):
                w = weights[:, torch.from_numpy(idx).to(self.device)]
                active = (w.sum(1) > 0) & ~stopper.stopped
                if not bool(active.any()):
                    continue
                beta = beta_at(counters["update"], c.anneal_cap, c.total_anneal_steps)
                logits, mu, logvar = bank(rows)
                per_expert = weighted_mean(bank_nll(logits, rows), w) + beta * weighted_mean(
                    bank_kl(mu, logvar), (w > 0).float())
                del logits  # the loss keeps its own buffer; free the logits before backward
                loss = per_expert[active].sum()
                opt.zero_grad()
                loss.backward()
                opt.step(active)
                counters["update"] += 1
                total += loss.detach()
            return {"loss": float(total) / max(E, 1), "beta": beta_at(counters["update"], c.anneal_cap, c.total_anneal_steps)}

        def validate_fn(epoch: int):
            per_user = self._bank_criterion(bank, train, valid)  # [E, U]
            mask = candidates & ~torch.isnan(per_user)
            crit = torch.where(mask, per_user.nan_to_num(0.0), 0.0).sum(1) / mask.sum(1).clamp_min(1)
            return crit, {"valid": float(crit.mean())}

        job = Job(epoch_fn, validate_fn if valid is not None else None, weights={"bank": bank},
                  state={"optimizer": opt, "rng": rng, "counters": counters})
        result = self._train(job, monitor="valid", stopper=stopper, tag=tag,
                             data={"train": train.shape, "nnz": train.nnz, "experts": E,
                                   "weights": tensor_digest(weights)})
        self.history_ += [{f"{tag}{k}" if k != "epoch" else k: v for k, v in r.items()} for r in result.history]
        self._best_epochs = stopper.best_epochs.cpu().numpy() if valid is not None else np.full(E, len(result.history))
        bank.eval()
        return bank

    @torch.no_grad()
    def _bank_criterion(self, bank: ExpertBank, train: sp.csr_matrix, valid: sp.csr_matrix,
                        budget: int = 1 << 25) -> Tensor:
        """[E, U]: each expert's per-user validation score (mean of ``select`` @ ``eval_ks``; NaN
        for users without validation items), training items excluded."""
        c = self.config
        bank.eval()
        E = bank.n_experts
        keys = [f"{m}@{k}" for m in c.select for k in c.eval_ks]
        out = torch.full((E, train.shape[0]), float("nan"), device=self.device)
        chunk = max(1, min(c.eval_batch_size, budget // max(1, E * self.n_items_)))
        for idx, rows in iterate_rows(train, chunk, self.device):
            logits = bank(rows)[0].reshape(E * len(idx), -1)
            shape = (len(idx), self.n_items_)
            res = rank_metrics(logits, as_bool_rows(valid[idx], shape, self.device, "valid").repeat(E, 1),
                               ks=c.eval_ks, metrics=c.select, recall_denominator="n",
                               exclude=as_bool_rows(train[idx], shape, self.device, "train").repeat(E, 1))
            out[:, torch.from_numpy(idx).to(self.device)] = torch.stack([res[k] for k in keys]).mean(0).view(
                E, len(idx)).float()
        bank.train()
        return out


@torch.no_grad()
def bank_scores(bank: ExpertBank, rows, device: torch.device) -> Tensor:
    """Logits [E, B, I] of every expert for CSR `rows` (mean code, no dropout)."""
    bank.eval()
    return bank(SparseRows.from_csr(rows, device))[0]
