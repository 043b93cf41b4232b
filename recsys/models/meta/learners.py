"""The MAML family over any sequential backbone with a rating head: MAML, MAML++ and MELO
(the cold-start contract and the baselines are in :mod:`.cold_start`).

* ``maml``: second-order MAML (Finn et al. 2017): a fixed inner learning rate, the query loss
  after the last inner step, Adam on the meta-parameters (``first_order=True``: FOMAML).
* ``maml_pp``: MAML++ as MELO runs it (its "MAML" column): learnable per-layer, per-step inner
  learning rates (LSLR, init 1e-3), the multi-step query loss annealed toward the last step over
  the first ``msl_iterations`` (1,000), outer Adam 1e-3 cosine-annealed to 1e-4, gradient
  clipping at norm 5.
* ``melo``: ``maml_pp`` plus MELO's adaptive weighted inner loss (:mod:`.weighting`).

The meta learners train through the one loop: an "epoch" is a block of ``block`` meta-iterations
(MELO validates every 50), validation every block (``eval_every``), early stopping / restore on
validation RMSE (``mode="min"``), ``max_seconds``, checkpoints. The inner loop is batched and
functional (:mod:`.functional`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recsys.checks import check_choice, check_float, check_int
from recsys.errors import ConfigError
from recsys.models.base import IterativeModel
from recsys.models.meta.functional import (
    RANDOMNESS,
    InnerLoop,
    item_table_name,
    prepare_batch,
    rating_parameters,
    step_importance,
)
from recsys.models.meta.weighting import TaskStateLSTM
from recsys.protocols.meta_tasks import Tasks, build_tasks
from recsys.models.meta.cold_start import (
    ColdStartConfig,
    ColdStartRater,
    _backbone_name,
    _eligible,
    _fork_devices,
    _init_backbone,
    _new_backbone,
    _task_order,
    _train_mean,
    check_rating_split,
)
from recsys.models.registry import register_model
from recsys.training.loop import Job


@dataclass(frozen=True)
class MetaConfig(ColdStartConfig):
    """Meta-learning settings (defaults: MAML++ as MELO runs it; see the module docstring).

    ``inner_steps`` (3), ``inner_lr`` (the fixed rate, or the LSLR initial value when
    ``learn_inner_lr``), ``first_order``; ``multi_step_loss`` over the first ``msl_iterations``;
    ``meta_batch`` tasks per meta-iteration, ``block`` meta-iterations per loop epoch (``epochs``
    blocks in all); outer Adam ``outer_lr`` cosine-annealed to ``outer_lr_min`` over all
    iterations (None: constant), ``grad_clip`` (None: off). ``adaptive_loss``: MELO's weighting
    LSTM (``weight_embed`` x ``weight_hidden``; Adam ``weight_lr`` cosine-annealed to
    ``weight_lr_min``). ``randomness``: dropout masks per task ("different") or shared ("same")
    under vmap; ``bucket_overhead`` / ``max_groups``: padding trimming (see :mod:`.functional`).
    """

    inner_steps: int = 3
    inner_lr: float = 1e-3
    learn_inner_lr: bool = True
    first_order: bool = False
    multi_step_loss: bool = True
    msl_iterations: int = 1000
    meta_batch: int = 16
    block: int = 50
    epochs: int = 60
    outer_lr: float = 1e-3
    outer_lr_min: float | None = 1e-4
    grad_clip: float | None = 5.0
    adaptive_loss: bool = False
    weight_embed: int = 16
    weight_hidden: int = 32
    weight_lr: float = 0.1
    weight_lr_min: float | None = 1e-2
    randomness: str = "different"
    bucket_overhead: float | None = 512.0
    max_groups: int = 4

    def validate(self) -> None:
        super().validate()
        check_int("inner_steps", self.inner_steps, 0)
        check_float("inner_lr", self.inner_lr, 0.0)
        check_int("msl_iterations", self.msl_iterations, 0)
        for name in ("meta_batch", "block", "weight_embed", "weight_hidden", "max_groups"):
            check_int(name, getattr(self, name), 1)
        for name in ("outer_lr", "weight_lr"):
            check_float(name, getattr(self, name), 0.0, low_open=True)
        for name in ("outer_lr_min", "weight_lr_min", "grad_clip", "bucket_overhead"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), 0.0)
        for name in ("learn_inner_lr", "first_order", "multi_step_loss", "adaptive_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_choice("randomness", self.randomness, RANDOMNESS)


@dataclass(frozen=True)
class MAMLConfig(MetaConfig):
    """Plain second-order MAML: fixed inner rate 0.01 (Finn et al.'s regression setting), the last
    step's query loss, constant Adam 1e-3, no clipping."""

    inner_lr: float = 1e-2
    learn_inner_lr: bool = False
    multi_step_loss: bool = False
    outer_lr_min: float | None = None
    grad_clip: float | None = None


@dataclass(frozen=True)
class MELOConfig(MetaConfig):
    """MAML++ plus the adaptive weighted inner loss."""

    adaptive_loss: bool = True


# ---- MAML / MAML++ / MELO ------------------------------------------------------------------------


class InnerRates(nn.Module):
    """MAML++'s LSLR: one learnable inner learning rate per adapted parameter and inner step."""

    def __init__(self, n_params: int, steps: int, init: float) -> None:
        super().__init__()
        self.rates = nn.Parameter(torch.full((n_params, max(steps, 1)), float(init)))


def _cosine(opt: torch.optim.Optimizer, total: int, low: float | None, base: float):
    if low is None:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    ratio = low / base

    def factor(step: int) -> float:
        t = min(step, total) / max(total, 1)
        return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class MetaLearner(ColdStartRater, IterativeModel):
    """MAML-family meta-learner over a sequential backbone (see the module docstring).

    Learned state: ``backbone_`` (the backbone model, its network holding the meta-learned
    initialisation), ``adapted_`` (names of the adapted parameters), ``lslr_`` (learned inner
    rates, or None), ``weight_net_`` (MELO's LSTM, or None), ``history_``, ``best_epoch_``,
    ``stop_reason_``, ``iterations_``, ``pretrained_``.
    """

    meta_learned = True

    name = "maml_pp"
    Config = MetaConfig

    # ---- modules -------------------------------------------------------------------------------
    def _init_modules(self) -> None:
        c = self.config
        self.lslr_ = InnerRates(len(self.adapted_), c.inner_steps, c.inner_lr).to(self.device) if c.learn_inner_lr else None
        self.weight_net_ = None
        if c.adaptive_loss:
            with torch.random.fork_rng(devices=_fork_devices(self.device)):  # leaves the main stream as MAML++'s
                torch.manual_seed(c.seed + 0x4D45)
                self.weight_net_ = TaskStateLSTM(c.weight_embed, c.weight_hidden).to(self.device)

    def _loop(self) -> InnerLoop:
        c = self.config
        net = self.backbone_.net_
        return InnerLoop(net, self.adapted_, item_table_name(net), c.inner_steps, c.first_order, c.randomness)

    def _rates(self):
        return self.config.inner_lr if self.lslr_ is None else self.lslr_.rates

    def inner_rates(self) -> np.ndarray:
        """The inner learning rates [n_adapted, steps] (constant for MAML)."""
        self._check_fitted()
        if self.lslr_ is None:
            return np.full((len(self.adapted_), max(self.config.inner_steps, 1)), self.config.inner_lr)
        return self.lslr_.rates.detach().cpu().numpy().copy()

    def _weights(self, batch) -> Tensor | None:
        if self.weight_net_ is None:
            return None
        r = batch.support_ratings
        return self.weight_net_(r.reshape(-1, r.shape[-1])).view(r.shape)

    def _batch(self, tasks: Tasks):
        c = self.config
        return prepare_batch(tasks, self.device, bucket_overhead=c.bucket_overhead, max_groups=c.max_groups)

    # ---- one meta-iteration ------------------------------------------------------------------------
    def meta_loss(self, tasks: Tasks, iteration: int = 0) -> tuple[Tensor, Tensor]:
        """(the meta-objective, per-task query losses [T, n]) of `tasks` at meta-iteration
        `iteration` (which sets the multi-step weights); differentiable w.r.t. every meta-parameter."""
        c = self.config
        batch = self._batch(tasks)
        record = c.multi_step_loss and c.inner_steps > 1 and iteration < c.msl_iterations
        losses = self._loop().losses(batch, self._rates(), self._weights(batch), record_steps=record)
        imp = step_importance(c.inner_steps, iteration, c.msl_iterations) if record else [1.0]
        weights = torch.tensor(imp, dtype=losses.dtype, device=losses.device)
        return (losses * weights).sum(1).mean(), losses

    def _meta_parameters(self) -> list[Tensor]:
        params = dict(self.backbone_.net_.named_parameters())
        out = [params[k] for k in self.adapted_]
        return out + ([self.lslr_.rates] if self.lslr_ is not None else [])

    # ---- cost model ---------------------------------------------------------------------------------
    @classmethod
    def epoch_cost(cls, config: MetaConfig, shape):
        """One loop epoch = ``block`` meta-iterations of ``meta_batch`` tasks (one training user
        each: a window of min(L, max_len) items, ``n_support`` random contiguous sub-windows of it
        and ``n_query`` suffixes). Per task and inner step, the backbone's forward and backward over
        the support rows (length buckets: ~1.95 x the real positions, measured); then the query
        forward after each step (multi-step loss) or the last. Second order (default): the outer
        backward runs through every inner gradient -- each inner step costs ~9 support forwards
        (forward, backward, and the backward of both) and each query loss 3; first order: 3 and 3.
        The item table adapts per task on its [K, d] slice, so nothing scales with the item count
        but the weights' memory and Adam's pass over the [I, d] table every iteration. Transformer
        backbones (SASRec / BERT4Rec) only: the work is their token positions."""
        from recsys.models.base import BASE_PROCESS_BYTES
        from recsys.models.sequential.core import length_model, transformer_params
        from recsys.training.cost import ADAM_STATE, CUDA_CONTEXT_BYTES, F32, EpochCost, adam_traffic

        c, bb = config, config.backbone
        name = _backbone_name(bb)
        if name not in ("sasrec", "bert4rec"):
            raise NotImplementedError(f"the meta stage's cost formula covers transformer backbones, not {name!r}")
        d, blocks = bb.hidden, bb.n_blocks
        ffn = 4 * d if name == "bert4rec" else (getattr(bb, "ffn", None) or d)
        per_pos = 2.0 * blocks * (4 * d * d + 2 * d * ffn) + 2.0 * d  # linear layers + rating head, forward
        per_sq = 4.0 * blocks * d  # attention QK^T and PV, forward, per (query, key) pair
        wins = np.minimum(np.maximum(np.rint(length_model(shape)[0]), c.min_sub_window + 1), c.max_len)
        sub_mean = sub_sq = 0.0
        for w in np.unique(wins):  # random contiguous sub-windows of length >= min_sub_window of w - 1 items
            m = int(w) - 1
            ls = np.arange(c.min_sub_window, m + 1, dtype=float)
            if not len(ls):
                continue
            pw = (m - ls + 1) / (m - ls + 1).sum()
            share = float((wins == w).mean())
            sub_mean += share * float((ls * pw).sum())
            sub_sq += share * float((ls * ls * pw).sum())
        # padded / real support positions: the sub-windows are sorted into a few length buckets, each
        # trimmed to its longest row; 1.95 measured by FlopCounterMode on synthetic tasks (not derived)
        pad = 1.95
        w_mean, w_sq = float(wins.mean()), float((wins * wins).mean())
        f_support = c.n_support * pad * (per_pos * sub_mean + per_sq * pad * sub_sq)
        f_query = 1.1 * c.n_query * (per_pos * w_mean + per_sq * w_sq)  # + the all-PAD placeholder rows (measured)
        k = c.inner_steps
        n_query_losses = k if (c.multi_step_loss and k > 1 and c.msl_iterations > 0) else 1
        a_support = 3.0 if c.first_order else 9.0
        tasks = c.block * c.meta_batch
        support = tasks * k * a_support * f_support
        query = tasks * n_query_losses * 3.0 * f_query
        dense = support + query
        i = shape.n_items
        tok_rows = i + (2 if name == "bert4rec" else 1)
        backbone = tok_rows * d + bb.max_len * d + transformer_params(d, ffn, blocks) + 2 * d + d + 1
        backbone += d * d + d + i if name == "bert4rec" else 0
        adapted_extra = 0
        lslr = 0  # learned inner rates: one per adapted tensor and step (a few dozen numbers)
        if c.learn_inner_lr:
            n_tensors = 6 + 12 * blocks  # every backbone tensor but BERT4Rec's next-item head
            lslr = n_tensors * max(k, 1)
        wnet = 0
        if c.adaptive_loss:
            wnet = sum(p.numel() for p in TaskStateLSTM(c.weight_embed, c.weight_hidden).parameters())
        params = backbone + lslr + wnet + adapted_extra
        weights = (ADAM_STATE + 1) * F32 * params
        graph = F32 * c.meta_batch * k * (3 if not c.first_order else 1) * c.n_support * pad * sub_mean \
            * blocks * (14 * d + 3 * ffn)
        data = 40 * shape.nnz + 48 * shape.n_users
        host = BASE_PROCESS_BYTES + weights + graph + data
        device = CUDA_CONTEXT_BYTES + weights + graph
        steps = c.block
        traffic = steps * (adam_traffic(params) + 3 * F32 * params + 3 * graph)
        return EpochCost(flops=dense, dense_flops=dense, host_bytes=host, device_bytes=device, traffic_bytes=traffic,
                         steps=steps, params=params,
                         terms={"support_inner_steps": support, "query_losses": query, "tasks": tasks,
                                "support_forward_per_task": f_support, "query_forward_per_task": f_query,
                                "graph_bytes": graph})

    # ---- training -----------------------------------------------------------------------------------
    def fit(self, split, validate: bool = True) -> "MetaLearner":
        check_rating_split(split)
        c = self.config
        settings = self.task_settings()
        train_users = _eligible(split, "train", settings)
        valid = self.stage_tasks(split, "valid") if validate else None
        total = c.epochs * c.block
        with torch.random.fork_rng(devices=_fork_devices(self.device)):
            torch.manual_seed(c.seed)
            rng = np.random.default_rng(c.seed)
            self.n_items_ = split.n_items
            backbone = _new_backbone(c, self.device)
            self.pretrained_ = _init_backbone(backbone, split, _train_mean(split), c)
            self.backbone_ = backbone
            self.adapted_ = rating_parameters(backbone.net_)
            self._init_modules()
            opt = torch.optim.Adam(self._meta_parameters(), lr=c.outer_lr)
            sched = _cosine(opt, total, c.outer_lr_min, c.outer_lr)
            state: dict[str, Any] = {"opt": opt, "sched": sched, "rng": rng, "counter": {"iteration": 0}}
            wopt = wsched = None
            if self.weight_net_ is not None:
                wopt = torch.optim.Adam(self.weight_net_.parameters(), lr=c.weight_lr)
                wsched = _cosine(wopt, total, c.weight_lr_min, c.weight_lr)
                state.update(wopt=wopt, wsched=wsched)
            counter = state["counter"]
            net = backbone.net_

            def epoch_fn(epoch: int) -> dict[str, float]:
                net.train()
                total_loss = 0.0
                for _ in range(c.block):
                    users = rng.choice(train_users, size=min(c.meta_batch, len(train_users)), replace=False)
                    tasks = build_tasks(split, "train", settings, rng, users=np.sort(users))
                    objective, losses = self.meta_loss(tasks, counter["iteration"])
                    opt.zero_grad(set_to_none=True)
                    if wopt is not None:
                        wopt.zero_grad(set_to_none=True)
                    objective.backward()
                    if c.grad_clip is not None:
                        nn.utils.clip_grad_norm_(self._meta_parameters(), c.grad_clip)
                        if wopt is not None:
                            nn.utils.clip_grad_norm_(self.weight_net_.parameters(), c.grad_clip)
                    opt.step()
                    sched.step()
                    if wopt is not None:
                        wopt.step()
                        wsched.step()
                    counter["iteration"] += 1
                    total_loss += float(losses[:, -1].detach().mean())
                record = {"loss": total_loss / c.block, "iteration": counter["iteration"], "outer_lr": sched.get_last_lr()[0]}
                if self.lslr_ is not None:
                    record["inner_lr_mean"] = float(self.lslr_.rates.detach().mean())
                return record

            validate_fn = None
            if valid is not None:
                def validate_fn(epoch: int):
                    ev = self.evaluate_tasks(valid)
                    return ev["rmse"], {"valid_rmse": ev["rmse"], "valid_mae": ev["mae"]}

            weights = {"backbone": net}
            if self.lslr_ is not None:
                weights["lslr"] = self.lslr_
            if self.weight_net_ is not None:
                weights["weight_net"] = self.weight_net_
            job = Job(epoch_fn, validate_fn, weights=weights, state=state)
            data = {"n_users": split.n_users, "n_items": split.n_items,
                    "n_interactions": int(len(split.arrays["seq_items"])),
                    "rating_sum": float(np.nansum(split.arrays["seq_ratings"])), "split_seed": split.seed}
            result = self._train(job, monitor="valid_rmse", mode="min", data=data,
                                 patience=c.patience if validate else None)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch or len(self.history_)
        self.stop_reason_ = result.stop_reason
        self.iterations_ = int(counter["iteration"])
        net.eval()
        return self

    # ---- prediction ---------------------------------------------------------------------------------
    def predict_tasks(self, tasks: Tasks) -> np.ndarray:
        """Adapt to each task's support set (the learned inner rates and weights, dropout off),
        then predict its query rows' last rating; in chunks of ``eval_batch`` similar tasks."""
        self._check_fitted()
        net = self.backbone_.net_
        was = net.training
        net.eval()
        if self.weight_net_ is not None:
            self.weight_net_.eval()
        loop = self._loop()
        out = np.empty(len(tasks))
        order = _task_order(tasks)
        step = self.config.eval_batch
        try:
            with torch.no_grad():  # the inner gradients (torch.func.grad) still run; nothing outer is recorded
                for s in range(0, len(tasks), step):
                    rows = order[s:s + step]
                    batch = self._batch(tasks.select(rows))
                    pred = loop.predict(batch, self._rates(), self._weights(batch))
                    out[rows] = self._query_mean(pred, batch.query_real)
        finally:
            net.train(was)
        return out


@register_model
class MAML(MetaLearner):
    """Second-order MAML (``first_order=True``: FOMAML) with a fixed inner learning rate."""

    name = "maml"
    Config = MAMLConfig


@register_model
class MAMLPlusPlus(MetaLearner):
    """MAML++ as MELO runs it (LSLR, multi-step loss, cosine outer schedule, clipping)."""

    name = "maml_pp"
    Config = MetaConfig


@register_model
class MELO(MetaLearner):
    """MAML++ with MELO's adaptive weighted inner loss."""

    name = "melo"
    Config = MELOConfig


METHOD_MODELS: dict[str, str] = {
    "global_mean": "global_mean",
    "basic": "meta_basic",
    "maml": "maml",
    "maml_pp": "maml_pp",
    "melo": "melo",
}
