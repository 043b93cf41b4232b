"""Cold-start rating prediction over a user_split (MELO's protocol): what every predictor shares
(:class:`ColdStartRater`, the :class:`~recsys.models.base.TaskRater` contract over MELO's tasks,
and its configs) and the two baselines without meta-learning, the global mean and the plain
backbone ("basic"). The MAML family is in :mod:`.learners`.

Each user is a task (:mod:`recsys.protocols.meta_tasks`). Every model implements

* ``fit(split, validate=True)``: train on the split's training users; validation (RMSE of the
  validation tasks' targets) picks the best weights;
* ``predict_tasks(tasks) -> [T]``: the predicted rating (1..5 scale) of each task's last item --
  the mean, over the task's query suffixes, of the prediction at their last position (the meta
  learners first adapt to the task's support set);
* ``evaluate(split, stage="test")``: RMSE / MAE of the targets overall and per true rating value
  (MELO's per-rating report) on the fixed tasks of a stage (seeded by ``task_seed``, default the
  split's seed, so every method and training seed sees the same tasks).

Models (registry names):

* ``global_mean``: the mean training rating (MELO's ``--test_baseline``).
* ``meta_basic``: the backbone trained normally with the rating objective on the training users'
  sequences (random windows of the task length; MELO's ``train_original.py``), validated on the
  validation users' most recent windows, evaluated on the test tasks' query sets without
  adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor

from recsys.checks import check_int
from recsys.errors import ConfigError, DataError
from recsys.metrics.regression import mae, per_rating_report, rmse
from recsys.models.base import IterativeConfig, IterativeModel, Model, ModelConfig, SequenceRater, TaskRater
from recsys.models.meta.functional import item_table_name
from recsys.models.sequential.layers import RATING_SCALE
from recsys.models.sequential.sequences import PAD
from recsys.protocols.meta_tasks import TaskSettings, Tasks, build_tasks, check_ratings, eval_tasks, stage_users
from recsys.models.registry import get_model, model_of_config, register_model

TASK_FIELDS = ("max_len", "n_support", "n_query", "min_sub_window")


# ---- configs -------------------------------------------------------------------------------


def _check_tasks(c) -> None:
    """Task settings of a config (TaskSettings raises the clear ConfigError), task_seed, eval sizes."""
    TaskSettings(**{k: getattr(c, k) for k in TASK_FIELDS})
    if c.task_seed is not None:
        check_int("task_seed", c.task_seed, 0, 2**32 - 1)
    if c.valid_tasks is not None:
        check_int("valid_tasks", c.valid_tasks, 1)
    check_int("eval_batch", c.eval_batch, 1)


@dataclass(frozen=True)
class GlobalMeanConfig(ModelConfig):
    """Task settings (MELO's defaults: window 30, 25 support and 3 query sequences, sub-windows
    of >= 2 items) and the seed of the validation / test tasks (None: the split's seed)."""

    max_len: int = 30
    n_support: int = 25
    n_query: int = 3
    min_sub_window: int = 2
    task_seed: int | None = None
    valid_tasks: int | None = None
    eval_batch: int = 128

    def validate(self) -> None:
        super().validate()
        _check_tasks(self)


def _as_backbone(value: Any):
    """A backbone config from a config object, a registered name, {"model": name, "config": {...}}
    or None (MELO's BERT4Rec)."""
    from recsys.models.meta.backbones import backbone_config
    from recsys.models.sequential.core import SequentialConfig

    if value is None:
        return backbone_config("bert4rec")
    if isinstance(value, str):
        return backbone_config(value)
    if isinstance(value, Mapping) and set(value) == {"model", "config"}:
        return backbone_config(value["model"], value["config"])
    if isinstance(value, SequentialConfig):
        return value
    if isinstance(value, ModelConfig):
        raise ConfigError(f"backbone {model_of_config(type(value))!r} has no rating head; use one of "
                          f"gru4rec, narm, sasrec, bert4rec")
    raise ConfigError(f"backbone must be a model name or {{'model': name, 'config': {{...}}}}, got {value!r}")


@dataclass(frozen=True)
class ColdStartConfig(IterativeConfig):
    """Settings shared by the backbone-based predictors (plus the loop's ``epochs``,
    ``patience``, ``eval_every``, ``max_seconds``, ``progress``, ``seed``, ``device``).

    ``backbone``: a sequential model's config (nested: ``{"model": "gru4rec", "config": {...}}``,
    or a name for MELO's sizes). ``pretrained``: a pretrain run's ``item_embeddings.npy`` that
    initialises the backbone's item embeddings (``pretrained_split``: the split folder whose id map
    numbers its rows; default: found next to it; see :mod:`.pretrained`). Task settings as
    :class:`GlobalMeanConfig`.
    """

    backbone: Any = None
    max_len: int = 30
    n_support: int = 25
    n_query: int = 3
    min_sub_window: int = 2
    task_seed: int | None = None
    valid_tasks: int | None = None
    eval_batch: int = 128
    pretrained: str | None = None
    pretrained_split: str | None = None
    patience: int | None = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", _as_backbone(self.backbone))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        _check_tasks(self)
        if self.backbone.max_len < self.max_len:
            raise ConfigError(f"the backbone's max_len={self.backbone.max_len} is shorter than the task window "
                              f"max_len={self.max_len}; raise backbone.max_len or lower max_len")


# ---- shared task evaluation ------------------------------------------------------------------


def check_rating_split(split) -> None:
    """A user_split whose every rating is known (one clear error otherwise)."""
    if getattr(split, "protocol", None) != "user_split":
        raise DataError(f"the meta stage trains on a user_split split (cold-start users as tasks), got "
                        f"{getattr(split, 'protocol', type(split).__name__)!r}")
    check_ratings(split)


def _user_rows(split, users: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    indptr, items = split.arrays["seq_indptr"], split.arrays["seq_items"]
    ratings = np.asarray(split.arrays["seq_ratings"], dtype=np.float64)
    return ([items[indptr[u]:indptr[u + 1]] for u in users], [ratings[indptr[u]:indptr[u + 1]] for u in users])


def _eligible(split, stage: str, settings: TaskSettings) -> np.ndarray:
    """The stage's users with enough interactions for a task (>= min_sub_window + 1)."""
    users = stage_users(split, stage)
    n = np.diff(np.asarray(split.arrays["seq_indptr"]))[users]
    keep = users[n >= settings.min_sub_window + 1]
    if not len(keep):
        raise DataError(f"no {stage} user has the {settings.min_sub_window + 1} interactions a task needs")
    return keep


def _task_order(tasks: Tasks) -> np.ndarray:
    """Tasks by decreasing window length (evaluation chunks of similar length)."""
    return np.argsort(-(tasks.query_items[:, 0] != PAD).sum(-1) - (tasks.support_items != PAD).sum((1, 2)) / 1e4,
                      kind="stable")


class ColdStartRater(TaskRater, SequenceRater):
    """What every cold-start predictor shares (see the module docstring): the
    :class:`~recsys.models.base.TaskRater` contract over MELO's tasks."""

    has_backbone: ClassVar[bool] = True  # adapts a sequential backbone (its config names one)
    meta_learned: ClassVar[bool] = False  # trained by the outer loop (the meta section of a stage's settings)

    protocols = ("user_split",)

    def task_settings(self) -> TaskSettings:
        return TaskSettings(**{k: getattr(self.config, k) for k in TASK_FIELDS})

    def stage_tasks(self, split, stage: str) -> Tasks:
        """The fixed tasks of a stage ("valid" / "test"), seeded by task_seed (default the split's seed)."""
        c = self.config
        check_rating_split(split)
        seed = split.seed if c.task_seed is None else c.task_seed
        settings = self.task_settings()
        users = _eligible(split, stage, settings)
        tasks = eval_tasks_of(split, stage, settings, seed, users)
        if stage == "valid" and c.valid_tasks is not None and c.valid_tasks < len(tasks):
            pick = np.sort(np.random.default_rng([seed, 0x5641]).choice(len(tasks), c.valid_tasks, replace=False))
            tasks = tasks.select(pick)
        return tasks

    def predict_tasks(self, tasks: Tasks) -> np.ndarray:
        raise NotImplementedError

    def predict_ratings(self, tokens) -> Tensor:
        """The :class:`~recsys.models.base.SequenceRater` output before any adaptation: ratings
        [B, W] on the 1..5 scale at every position of right-aligned tokens (item i = token i + 1,
        PAD = 0) from the learned backbone -- for the meta learners its meta-learned initial
        weights, the prediction for a user of whom nothing is known yet (``predict_tasks`` adapts
        to a user's support data first)."""
        self._check_fitted()
        return self.backbone_.predict_ratings(tokens)

    def evaluate_tasks(self, tasks: Tasks) -> dict[str, Any]:
        """RMSE / MAE of the task targets, per true rating value too (the predictions under "pred",
        the targets under "target", the tasks' users under "users": per-user paired tests need them)."""
        self._check_fitted()
        pred = self.predict_tasks(tasks)
        target = np.asarray(tasks.targets, dtype=np.float64)
        return {"rmse": rmse(pred, target), "mae": mae(pred, target), "n": int(len(target)),
                "per_rating": per_rating_report(pred, target), "pred": pred, "target": target,
                "users": np.asarray(tasks.users)}

    def evaluate(self, split, stage: str = "test") -> dict[str, Any]:
        out = self.evaluate_tasks(self.stage_tasks(split, stage))
        out["stage"] = stage
        return out

    def fit_split(self, split, *, validate: bool = True):
        return self.fit(split, validate=validate)

    def evaluate_split(self, split, stage: str, *, ks=(), metrics=(), recall_denominator=None,
                       keep_topk: bool = False) -> dict[str, Any]:
        self._refuse_ranking(ks, metrics, keep_topk)
        return self.evaluate(split, stage)

    @staticmethod
    def _query_mean(pred: Tensor, real: Tensor) -> np.ndarray:
        """Per task: the mean of the predictions [T, Q] over its real query rows."""
        real = real.to(pred.dtype)
        return ((pred.nan_to_num(0.0) * real).sum(1) / real.sum(1).clamp_min(1)).double().cpu().numpy()


def eval_tasks_of(split, stage: str, settings: TaskSettings, seed: int, users: np.ndarray) -> Tasks:
    """:func:`~recsys.protocols.meta_tasks.eval_tasks` for the users able to form a task."""
    all_users = stage_users(split, stage)
    if len(users) == len(all_users):
        return eval_tasks(split, stage, settings, seed)
    from recsys.protocols.meta_tasks import STAGES

    return build_tasks(split, stage, settings, np.random.default_rng([int(seed), STAGES.index(stage), 0x4D454C4F]),
                       users=users)


def _train_mean(split) -> float:
    users = stage_users(split, "train")
    _, ratings = _user_rows(split, users)
    values = np.concatenate(ratings) if ratings else np.array([])
    if not values.size:
        raise DataError("the split has no training ratings")
    return float(values.mean())


# ---- the global mean -------------------------------------------------------------------------


@register_model
class GlobalMean(ColdStartRater, Model):
    """Predicts the mean training rating for everyone (MELO's baseline)."""

    seeded = False  # the mean training rating
    uses_device = False
    has_backbone = False

    name = "global_mean"
    Config = GlobalMeanConfig

    def fit(self, split, validate: bool = True) -> "GlobalMean":
        check_rating_split(split)
        self.mean_ = _train_mean(split)
        return self

    def predict_tasks(self, tasks: Tasks) -> np.ndarray:
        self._check_fitted()
        return np.full(len(tasks), float(self.mean_))

    def predict_ratings(self, tokens) -> Tensor:
        """The mean training rating at every position of `tokens` [B, W]."""
        self._check_fitted()
        return torch.full(tuple(torch.as_tensor(tokens).shape), float(self.mean_))


# ---- backbone helpers ----------------------------------------------------------------------------


def _backbone_name(cfg) -> str:
    return model_of_config(type(cfg))


def _new_backbone(config: ColdStartConfig, device: torch.device, **overrides):
    cfg = config.backbone
    klass = get_model(_backbone_name(cfg))
    values = {**cfg.to_dict(), "device": str(device), "seed": config.seed, "objective": "rating", **overrides}
    return klass(klass.Config.from_dict(values, klass.name))


def _init_backbone(model, split, mean: float, config: ColdStartConfig) -> dict | None:
    """Fresh network (under the caller's torch seed), rating head at the training mean, optional
    pretrained item embeddings; returns the pretrained summary (or None)."""
    model.n_items_ = split.n_items
    model._init_modules()
    model.net_.rating_head.start_at(mean)
    if not config.pretrained:
        return None
    from recsys.models.meta.pretrained import load_item_embeddings

    table = item_table_name(model.net_)
    if table is None:
        raise ConfigError(f"backbone {model.name} has no item embedding table to initialise")
    return load_item_embeddings(model.net_, table, config.pretrained, split, config.pretrained_split)


def _fork_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


# ---- basic: the backbone trained normally ----------------------------------------------------------


@register_model
class MetaBasic(ColdStartRater, IterativeModel):
    """The backbone trained on the rating objective without meta-learning (``basic``). Its loop
    settings (epochs, patience, eval_every, max_seconds, progress, seed, device) override the
    backbone config's; the backbone's own lr / batch_size apply."""

    name = "meta_basic"
    Config = ColdStartConfig

    def fit(self, split, validate: bool = True) -> "MetaBasic":
        check_rating_split(split)
        c = self.config
        settings = self.task_settings()
        train = _eligible(split, "train", settings)
        items, ratings = _user_rows(split, train)
        valid = None
        if validate:
            v_items, v_ratings = _user_rows(split, _eligible(split, "valid", settings))
            valid = (v_items, v_ratings)
        mean = _train_mean(split)
        model = _new_backbone(c, self.device, epochs=c.epochs, patience=c.patience if validate else None,
                              eval_every=c.eval_every, max_seconds=c.max_seconds, progress=c.progress,
                              max_len=c.backbone.max_len, window="random")
        self._sub_model(model, "backbone")
        self.pretrained_ = None
        if c.pretrained:
            with torch.random.fork_rng(devices=_fork_devices(self.device)):
                torch.manual_seed(c.seed)
                self.pretrained_ = _init_backbone(model, split, mean, c)
        model.fit_ratings(items, valid, n_items=split.n_items, ratings=ratings, validate=validate,
                          warm_start=bool(c.pretrained))
        model.checkpoints(None)
        self.backbone_ = model
        self.history_ = list(model.history_)
        self.best_epoch_ = model.best_epoch_
        self.stop_reason_ = model.stop_reason_
        return self

    @torch.no_grad()
    def predict_tasks(self, tasks: Tasks) -> np.ndarray:
        self._check_fitted()
        net = self.backbone_.net_
        net.eval()
        out = np.empty(len(tasks))
        step = self.config.eval_batch
        for s in range(0, len(tasks), step):
            sub = tasks.select(np.arange(s, min(s + step, len(tasks))))
            tok = sub.query_items.reshape(-1, sub.query_items.shape[-1]).copy()
            real = (tok != PAD).any(-1)
            tok[~real, -1] = 1  # placeholder for all-PAD rows (ignored)
            pred = RATING_SCALE * net(torch.from_numpy(tok).to(self.device))[:, -1]
            out[s:s + len(sub)] = self._query_mean(pred.view(len(sub), -1),
                                                   torch.from_numpy(real.reshape(len(sub), -1)).to(self.device))
        return out
