"""Model contracts, by what a model outputs.

* :class:`Model`: a frozen, validated config dataclass; learned state in attributes ending with
  ``_`` (what ``save`` writes); ``save(path)`` / ``Model.load(path)``; and the split-level contract
  the pipeline calls without knowing the model -- ``fit_split(split)``, ``evaluate_split(split,
  stage, ...)``, ``exports(split)`` (arrays later stages read).
* :class:`ItemScorer`: ``fit(train, valid)`` on CSR user rows, ``score(rows) -> [B, n_items]``.
* :class:`SequenceScorer`: ``fit`` on time-ordered sequences (a leave-one-out split),
  ``score(histories) -> [B, n_items]``, ``item_embeddings()``.
* :class:`UserScorer`: ``score_users(users) -> [B, n_items]`` for the users it was fitted on (the
  local models: per-user state, a ``random_split``).
* :class:`SequenceRater`: one rating per sequence position (the meta stage's backbones).
* :class:`TaskRater`: a cold-start user's rating after adapting to the user's support data
  (``predict_tasks``; the meta stage's learners).
* :class:`InterestModel`: K interest vectors per user (multi-interest models).
* :class:`IterativeModel`: trains through :mod:`recsys.training.loop` (early stopping, restore,
  checkpoints, progress, ``max_seconds``); ``checkpoints(folder)`` makes ``fit`` resumable.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from recsys.checks import check_choice, check_float, check_int, unknown_key_error
from recsys.errors import ConfigError, DataError, RecsysError
from recsys.io import atomic_path
from recsys.metrics.ranking import RankingResult, evaluate
from recsys.models.registry import get_model, model_of_config
from recsys.training.batches import as_csr
from recsys.training.device import keep_freed_cpu_memory, pick_device
from recsys.training.compile import COMPILE
from recsys.training.compile import resolve as resolve_compile
from recsys.training.cost import DataShape, EpochCost
from recsys.training.loop import Job, LoopResult, LoopSettings
from recsys.training.progress import PROGRESS
from recsys.training.loop import run as run_loop

FORMAT_VERSION = 1
BASE_PROCESS_BYTES = 450 << 20  # python + torch + numpy / scipy / pandas, measured RSS before fitting
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_fit_inputs(train, valid, patience: int | None):
    """`train` as non-empty CSR and `valid` as an aligned (input rows, target rows) CSR pair or None;
    early stopping (`patience` not None) needs `valid`."""
    train = as_csr(train, "train")
    if train.nnz == 0:
        raise DataError(f"train has shape {train.shape} and no interactions; nothing to fit")
    if valid is not None:
        if not isinstance(valid, (tuple, list)) or len(valid) != 2:
            raise DataError("valid must be a pair (input rows, target rows) of CSR matrices")
        valid = (as_csr(valid[0], "valid inputs"), as_csr(valid[1], "valid target"))
        for m in valid:
            if m.shape[1] != train.shape[1]:
                raise DataError(f"valid matrices have {m.shape[1]} items, train has {train.shape[1]}")
    if valid is None and patience is not None:
        raise ConfigError(f"patience={patience} needs validation data: pass valid=(inputs, target) to fit, "
                          f"or patience=None")
    return train, valid


@dataclass(frozen=True)
class ModelConfig:
    """Settings every model has. Subclasses add fields and extend ``validate``.

    A field may hold another model's config (a meta-learner's backbone): ``to_dict`` writes it as
    ``{"model": name, "config": {...}}`` and ``from_dict`` builds it back through the registry.
    """

    seed: int = 0
    device: str | None = None  # None / "auto": CUDA if available, else CPU

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int("seed", self.seed, 0, 2**32 - 1)
        # syntax only: whether CUDA exists is checked when a model is built on this machine
        if self.device is not None and not (isinstance(self.device, str) and _DEVICE.fullmatch(self.device)):
            raise ConfigError(f"device must be None, 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], model: str = "model") -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        for key in values:
            if key not in names:
                raise unknown_key_error(key, names, f"{model} config key")
        values = {k: _nested_config(v, f"{model}.{k}") for k, v in values.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = _config_entry(value) if isinstance(value, ModelConfig) else asdict(self)[f.name]
        return out


def _config_entry(config: ModelConfig) -> dict[str, Any]:
    return {"model": model_of_config(type(config)), "config": config.to_dict()}


def _nested_config(value: Any, where: str) -> Any:
    """``{"model": name, "config": {...}}`` -> that model's config object; anything else unchanged."""
    if isinstance(value, Mapping) and set(value) == {"model", "config"} and isinstance(value["model"], str):
        klass = get_model(value["model"])
        return klass.Config.from_dict(dict(value["config"] or {}), f"{where} ({value['model']})")
    return value


@dataclass(frozen=True)
class IterativeConfig(ModelConfig):
    """Settings of models trained by :mod:`recsys.training.loop`.

    ``epochs`` (or blocks of iterations), ``patience`` (validations without gain; None = never stop
    early), ``eval_every`` (epochs between validations), ``max_seconds`` (wall-clock budget of
    training + validation; the loop stops after the epoch that crosses it, with the best weights),
    ``progress`` ("auto": a bar in a terminal, else one line per epoch; "bar", "lines", "off"),
    ``compile`` ("auto" | "on" | "off": the model's marked kernels as ``torch.compile`` kernels;
    auto = on for CUDA with Triton, off on CPU; see :mod:`recsys.training.compile`).
    """

    epochs: int = 100
    patience: int | None = None
    eval_every: int = 1
    max_seconds: float | None = None
    progress: str = "auto"
    compile: str = "auto"

    def validate(self) -> None:
        super().validate()
        check_int("epochs", self.epochs, 0)
        if self.patience is not None:
            check_int("patience", self.patience, 1)
        check_int("eval_every", self.eval_every, 1)
        if self.max_seconds is not None:
            check_float("max_seconds", self.max_seconds, 0.0, low_open=True)
        check_choice("progress", self.progress, PROGRESS)
        check_choice("compile", self.compile, COMPILE)


# Settings that may change between a run and its resumption without invalidating a checkpoint
# (not epochs: learning-rate schedules are laid out over them).
_RESUMABLE_CHANGES = ("device", "max_seconds", "progress", "compile")


class NotFittedError(RecsysError):
    """A model was asked to score before it was fitted or loaded."""


class Model:
    """Base class: config handling, the split-level contract, atomic save / load of the ``_`` attributes."""

    name: ClassVar[str] = "model"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    protocols: ClassVar[tuple[str, ...] | None] = None  # the split protocols it can train on (None: any)
    # trains with each rank taking its share of every batch (recsys.training.distributed; the ddp stage)
    data_parallel: ClassVar[bool] = False
    # fit_split hands it the split's validation stage (models that early-stop on it); closed-form and
    # counting models take none
    takes_validation: ClassVar[bool] = False
    # fit draws random numbers (False: a stage runs it once, with its first seed)
    seeded: ClassVar[bool] = True
    # computes on a torch device (False: a stage passes it no device setting)
    uses_device: ClassVar[bool] = True

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.Config.from_dict(overrides, self.name)
        elif not isinstance(config, self.Config):
            raise ConfigError(f"{self.name} expects a {self.Config.__name__}, got {type(config).__name__}")
        elif overrides:
            config = self.Config.from_dict({**config.to_dict(), **overrides}, self.name)
        self.config = config
        self.device = pick_device(config.device)
        if self.device.type == "cpu":
            keep_freed_cpu_memory()

    @classmethod
    def contracts(cls) -> list[str]:
        """The output contracts the class keeps (``ItemScorer``, ``UserScorer``, ...), for messages."""
        return [b.__name__ for b in cls.__mro__
                if b.__module__ == __name__ and b not in (Model, IterativeModel) and issubclass(b, Model)]

    # ---- the split-level contract (what recsys.pipeline calls) -------------------------------
    def fit_split(self, split, *, validate: bool = True) -> "Model":
        """Fit on a saved protocol split (its training part; its validation stage when `validate`)."""
        raise NotImplementedError

    def evaluate_split(self, split, stage: str, *, ks: Iterable[int], metrics: Iterable[str],
                       recall_denominator: str = "n", keep_topk: bool = False) -> RankingResult:
        """Ranking metrics on one evaluation stage ("valid" / "test") of `split`; `keep_topk` keeps
        each user's top-max(ks) items (for coverage and the other beyond-accuracy metrics)."""
        raise NotImplementedError

    def exports(self, split) -> dict[str, np.ndarray]:
        """Arrays later stages read (user / item embeddings); none by default."""
        return {}

    @classmethod
    def peak_memory(cls, config: ModelConfig, n_users: int, n_items: int, nnz: int) -> int:
        """Estimated peak host bytes of ``fit`` + evaluation on data of these shapes (used to refuse or
        serialise tasks before they start; :mod:`recsys.training.memory`). This default counts the
        interpreter with torch and a few copies of the sparse data; models with large dense state
        override it with their own formula."""
        return BASE_PROCESS_BYTES + 48 * int(nnz) + 8 * 4 * 1024 * int(n_items)

    @classmethod
    def epoch_cost(cls, config: ModelConfig, shape: DataShape) -> EpochCost:
        """FLOPs, bytes and steps of one training epoch (one fit for closed-form models) on data
        of `shape`, from the model's layer shapes (:mod:`recsys.training.cost`; checked against
        measured runs in ``benchmarks/cost_model.py``)."""
        raise NotImplementedError(f"{cls.__name__} has no cost formula (recsys.training.cost); "
                                  f"the stages with one are listed in docs/benchmarks.md")

    # ---- persistence ------------------------------------------------------------------------
    def _state_names(self) -> list[str]:
        return sorted(k for k in vars(self) if k.endswith("_") and not k.startswith("_"))

    def _check_fitted(self) -> None:
        if not self._state_names():
            raise NotFittedError(f"{self.name} is not fitted: call fit(train) or {type(self).__name__}.load(path) first")

    def _init_modules(self) -> None:
        """Rebuild the nn.Module attributes from config and plain state (before weights are loaded)."""

    def _payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "model": self.name,
            "config": self.config.to_dict(),
            "state": {k: _pack(getattr(self, k)) for k in self._state_names()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write config and learned state to one file, atomically (a reader never sees half a file),
        and its sha256 to ``<path>.sha256`` (checked by :meth:`load`: a corrupted file is detected)."""
        from recsys.io import sha256_file

        self._check_fitted()
        payload = self._payload()
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        with atomic_path(_digest_path(path)) as tmp:
            tmp.write_text(sha256_file(path) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "Model":
        """Load a model written by ``save``; `device` overrides the saved device setting."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no saved model at {path}")
        digest = _digest_path(path)
        if digest.is_file():  # files saved before the sidecar existed load unchecked
            from recsys.io import sha256_file

            if digest.read_text().strip() != sha256_file(path):
                raise DataError(f"checksum mismatch for {path}: the model file was modified or corrupted after it "
                                f"was saved ({digest.name} disagrees); save or train the model again")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated / not a torch file
            raise DataError(f"{path} is not a readable recsys model file ({type(exc).__name__}: {exc}); "
                            f"it may be truncated: save the model again") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise DataError(f"{path} is not a recsys model file (format {FORMAT_VERSION})")
        model = _from_payload(payload, device)
        if not isinstance(model, cls):
            raise ConfigError(f"{path} holds a {payload['model']!r} model, not a {cls.__name__}")
        return model


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def saved_sha256(path: str | os.PathLike) -> str:
    """The sha256 :meth:`Model.save` recorded beside the model file at `path`."""
    return _digest_path(Path(path)).read_text().strip()


def _from_payload(payload: Mapping[str, Any], device: str | None) -> Model:
    klass = get_model(payload["model"])
    config = dict(payload["config"])
    if device is not None:
        config["device"] = device
    model = klass(klass.Config.from_dict(config, klass.name))
    modules = {}
    for key, value in payload["state"].items():
        if isinstance(value, dict) and "__module__" in value:
            modules[key] = value["__module__"]
        else:
            setattr(model, key, _unpack(value, model.device))
    model._init_modules()
    for key, state_dict in modules.items():
        getattr(model, key).load_state_dict(state_dict)
    return model


class IterativeModel(Model):
    """A model trained by the one loop (:func:`recsys.training.loop.run`): its ``fit`` builds a
    :class:`~recsys.training.loop.Job` and calls :meth:`_train`."""

    Config: ClassVar[type[ModelConfig]] = IterativeConfig
    takes_validation: ClassVar[bool] = True
    _checkpoint_dir: Path | None = None

    def checkpoints(self, folder: str | os.PathLike | None) -> "IterativeModel":
        """Write a checkpoint each epoch under `folder` and resume from it (None: no checkpoints)."""
        self._checkpoint_dir = None if folder is None else Path(folder)
        return self

    def _sub_model(self, model: "IterativeModel", key: str) -> "IterativeModel":
        """A model this one trains on the way (LOCA's global VAE), checkpointed in ``key/``."""
        return model.checkpoints(None if self._checkpoint_dir is None else self._checkpoint_dir / key)

    def _train(self, job: Job, *, monitor: str, mode: str = "max", stopper: Any = None, tag: str = "",
               epochs: int | None = None, patience: Any = "config", progress: str | None = None,
               restore_best: bool = True, data: Mapping[str, Any] | None = None,
               max_seconds: Any = "config", checkpoint: bool = True) -> LoopResult:
        """Run `job` through the loop with the config's epochs / patience / eval_every /
        max_seconds / progress (each overridable); `tag` names a sub-fit (its own checkpoint
        folder); `data` (shapes, sizes) joins the checkpoint fingerprint."""
        c = self.config
        settings = LoopSettings(
            name=f"{self.name}{'/' + tag.rstrip('_') if tag else ''}",
            epochs=c.epochs if epochs is None else epochs,
            patience=getattr(c, "patience", None) if patience == "config" else patience,
            eval_every=getattr(c, "eval_every", 1),
            mode=mode, monitor=monitor,
            max_seconds=getattr(c, "max_seconds", None) if max_seconds == "config" else max_seconds,
            progress=progress or getattr(c, "progress", "auto"), restore_best=restore_best,
            compile=resolve_compile(getattr(c, "compile", "off"), self.device))
        folder = None
        if checkpoint and self._checkpoint_dir is not None:
            folder = self._checkpoint_dir / (tag.rstrip("_") or "fit")
        config = {k: v for k, v in c.to_dict().items() if k not in _RESUMABLE_CHANGES}
        fingerprint = {"model": self.name, "config": config, "tag": tag, "data": dict(data or {})}
        return run_loop(job, settings, checkpoint_dir=folder, fingerprint=fingerprint, stopper=stopper)


class ItemScorer(Model):
    """Scores items for users given as CSR rows of their interactions (bag-of-items models)."""

    def fit(self, train: sp.csr_matrix, valid: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> "Model":
        raise NotImplementedError

    def score(self, rows: sp.csr_matrix) -> Tensor:
        """Scores [B, n_items] (higher = better) for users whose histories are the CSR `rows`."""
        raise NotImplementedError

    # ---- the split-level contract ---------------------------------------------------------
    def fit_split(self, split, *, validate: bool = True) -> "ItemScorer":
        stages = split.meta["evaluation"]
        valid = stage_matrices(split, stages["valid"]) if validate and "valid" in stages else None
        return self.fit(split["train"], valid if self.takes_validation else None)

    def evaluate_split(self, split, stage: str, *, ks: Iterable[int], metrics: Iterable[str],
                       recall_denominator: str = "n", keep_topk: bool = False) -> RankingResult:
        inputs, target = stage_matrices(split, split.meta["evaluation"][stage])
        return self.evaluate(inputs, target, recall_denominator=recall_denominator, ks=ks, metrics=metrics,
                             keep_topk=keep_topk)

    # ---- evaluation -------------------------------------------------------------------------
    def _mask_inputs(self) -> bool:
        """Whether ranking excludes the input items (a model may switch it off to mimic upstream)."""
        return True

    @torch.no_grad()
    def evaluate(
        self,
        inputs: sp.csr_matrix,
        target: sp.csr_matrix,
        *,
        recall_denominator: str,
        ks: Iterable[int] = (20, 50, 100),
        metrics: Iterable[str] = ("precision", "recall", "ndcg"),
        batch_size: int = 1024,
        keep_topk: bool = False,
    ) -> RankingResult:
        """Rank all items for each row of `inputs` (input items excluded) against `target`.

        `recall_denominator` has no default on purpose ("min": MultVAE / POSIT, "n": LOCA / LFT
        / TALL; see :mod:`recsys.metrics.ranking`).
        """
        inputs, target = as_csr(inputs, "inputs"), as_csr(target, "target")
        if inputs.shape != target.shape:
            raise DataError(f"inputs have shape {inputs.shape} but target has {target.shape}; rows must align")
        return evaluate(
            lambda rows: self.score(inputs[rows]),
            np.arange(inputs.shape[0]),
            target,
            inputs if self._mask_inputs() else None,
            ks=ks,
            metrics=metrics,
            recall_denominator=recall_denominator,
            batch_size=batch_size,
            device=self.device,
            keep_topk=keep_topk,
        )

    def _n_items(self) -> int:
        """Number of items the fitted model scores."""
        return self.n_items_

    def _fitted_rows(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """`rows` as CSR, after checking the model is fitted and the rows have one column per item."""
        self._check_fitted()
        rows = as_csr(rows, "rows")
        n_items = self._n_items()
        if rows.shape[1] != n_items:
            raise DataError(f"rows have {rows.shape[1]} items, the model was fitted on {n_items}")
        return rows


class UserScorer(Model):
    """Scores items for the users it was fitted on, by their row ids in its training matrix
    (``train_``): models with per-user state, such as LFT's fine-tuned copies or TALL's gates, that
    cannot score a history they have not seen. ``fit(train, valid)``, ``score_users(users) ->
    [B, n_items]``, ``evaluate_users(target, users)``. Their protocol evaluates the training users
    on held-out items (``random_split``); the training items are excluded from every ranking."""

    protocols = ("random_split",)

    def fit(self, train: sp.csr_matrix, valid: sp.csr_matrix | None = None) -> "UserScorer":
        raise NotImplementedError

    def score_users(self, users: np.ndarray) -> Tensor:
        """Scores [len(users), n_items] (higher = better) for training users (row ids of ``train_``)."""
        raise NotImplementedError

    # ---- the split-level contract ---------------------------------------------------------
    def fit_split(self, split, *, validate: bool = True) -> "UserScorer":
        return self.fit(split["train"], split["valid"] if validate and self.takes_validation else None)

    def evaluate_split(self, split, stage: str, *, ks: Iterable[int], metrics: Iterable[str],
                       recall_denominator: str = "n", keep_topk: bool = False) -> RankingResult:
        target = split[split.meta["evaluation"][stage]["target"]]
        return self.evaluate_users(target, ks=ks, metrics=metrics, recall_denominator=recall_denominator,
                                   keep_topk=keep_topk)

    # ---- evaluation -------------------------------------------------------------------------
    def _users(self, users) -> np.ndarray:
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        n = self.train_.shape[0]
        if len(users) and (users.min() < 0 or users.max() >= n):
            raise DataError(f"user ids must be in 0..{n - 1} (the training users), got {users.min()}..{users.max()}")
        return users

    @torch.no_grad()
    def evaluate_users(self, target: sp.csr_matrix, users: np.ndarray | None = None, *,
                       ks: Iterable[int] = (1, 5, 10, 20), metrics: Iterable[str] = ("precision", "recall", "ndcg"),
                       recall_denominator: str = "n", keep_topk: bool = False,
                       batch_size: int | None = None) -> RankingResult:
        """Rank all items for the training users against `target` (aligned with ``train_``); the
        training items are excluded, as in LFT / TALL's evaluator."""
        self._check_fitted()
        target = as_csr(target, "target")
        if target.shape != self.train_.shape:
            raise DataError(f"target has shape {target.shape}; it must align with train {self.train_.shape}")
        users = np.arange(target.shape[0]) if users is None else self._users(users)
        batch = batch_size or getattr(self.config, "eval_batch_size", 1024)
        return evaluate(lambda rows: self.score_users(users[rows]), np.arange(len(users)),
                        target[users], self.train_[users], ks=ks, metrics=metrics,
                        recall_denominator=recall_denominator, batch_size=batch,
                        device=self.device, keep_topk=keep_topk)


def stage_matrices(split, stage: Mapping[str, Any]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(input rows, target rows) of one evaluation stage of a matrix split; the input is also the
    ranking mask."""
    inputs = sum(split[name] for name in stage["input"])
    return (inputs > 0).astype(np.float32).tocsr(), split[stage["target"]]


class SequenceScorer(Model):
    """Scores items for users given as time-ordered item sequences (a leave-one-out split, or
    lists of item-id arrays): ``score(histories) -> [B, n_items]``, ``evaluate(split, stage)``,
    ``item_embeddings() -> [n_items, d]``."""

    protocols = ("leave_one_out",)

    def fit_split(self, split, *, validate: bool = True) -> "SequenceScorer":
        return self.fit(split)

    def evaluate_split(self, split, stage: str, *, ks: Iterable[int], metrics: Iterable[str],
                       recall_denominator: str = "n", keep_topk: bool = False) -> RankingResult:
        return self.evaluate(split, stage, ks=ks, metrics=metrics, keep_topk=keep_topk)

    def item_embeddings(self) -> np.ndarray:
        raise NotImplementedError

    def exports(self, split) -> dict[str, np.ndarray]:
        return {"item_embeddings": self.item_embeddings()}


class SequenceRater(Model):
    """Predicts one rating per position of a time-ordered (item, rating) sequence:
    ``predict_ratings(items [B, W]) -> [B, W]`` on the 1..5 scale (the meta stage's backbones)."""

    def predict_ratings(self, tokens: Tensor) -> Tensor:
        raise NotImplementedError


class TaskRater(Model):
    """Predicts the rating of a cold-start user's last item from the user's few known ratings, one
    task per user (support sequences to adapt on, query sequences to predict; a ``user_split``):
    ``predict_tasks(tasks) -> [T]`` on the 1..5 scale; ``evaluate_split(split, stage)`` returns RMSE /
    MAE overall and per true rating value. Its prediction adapts to the user's support data; the
    meta stage's learners are also :class:`SequenceRater` s, whose ``predict_ratings`` is the
    prediction before any adaptation (for a user of whom nothing is known yet)."""

    protocols = ("user_split",)

    def predict_tasks(self, tasks) -> np.ndarray:
        raise NotImplementedError

    def evaluate_split(self, split, stage: str, *, ks: Iterable[int] = (), metrics: Iterable[str] = (),
                       recall_denominator: str | None = None, keep_topk: bool = False) -> dict[str, Any]:
        """RMSE / MAE of the stage's tasks; a ranking request (`ks`, `metrics`) is a ConfigError:
        a rater ranks nothing."""
        raise NotImplementedError

    def _refuse_ranking(self, ks, metrics, keep_topk: bool = False) -> None:
        if tuple(ks or ()) or tuple(metrics or ()) or keep_topk:
            raise ConfigError(f"{self.name} predicts ratings: evaluate_split gives RMSE / MAE, not ranking metrics "
                              f"(ks={tuple(ks or ())}, metrics={tuple(metrics or ())})")


class InterestModel(SequenceScorer):
    """Returns K interest vectors per user, ``interests(histories) -> [B, K, d]``; an item's score is
    the maximum over interests of ⟨interest, item embedding⟩."""

    def interests(self, histories) -> Tensor:
        raise NotImplementedError


def _pack(value: Any) -> Any:
    """A learned attribute in a form ``torch.load(weights_only=True)`` accepts (a model held by
    another model is packed whole, config included)."""
    if isinstance(value, Model):
        return {"__model__": value._payload()}
    if isinstance(value, nn.Module):
        return {"__module__": {k: v.detach().cpu() for k, v in value.state_dict().items()}}
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if sp.issparse(value):
        m = sp.csr_matrix(value)
        return {"__csr__": {"indptr": torch.from_numpy(m.indptr.astype(np.int64)),
                            "indices": torch.from_numpy(m.indices.astype(np.int64)),
                            "data": torch.from_numpy(np.ascontiguousarray(m.data)), "shape": list(m.shape)}}
    return value


def _unpack(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict) and "__model__" in value:
        return _from_payload(value["__model__"], str(device))
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict) and "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    if isinstance(value, dict) and "__csr__" in value:
        v = value["__csr__"]
        return sp.csr_matrix((v["data"].numpy(), v["indices"].numpy(), v["indptr"].numpy()), shape=tuple(v["shape"]))
    return value
