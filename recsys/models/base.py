"""The Model contract: ``Model(config)``, ``fit(train, valid=None) -> self``, ``score(rows) -> Tensor``,
``save(path)`` / ``Model.load(path)``.

Hyper-parameters live in a frozen, validated config dataclass; learned state lives in
attributes ending with ``_`` (that is what ``save`` writes). ``score`` takes CSR rows of
user histories (the fold-in / training rows) and returns scores [B, n_items] on the model's
device.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from recsys.checks import check_int, unknown_key_error
from recsys.errors import ConfigError, DataError, RecsysError
from recsys.io import atomic_path
from recsys.metrics.ranking import RankingResult, evaluate
from recsys.training.batches import as_csr
from recsys.training.device import keep_freed_cpu_memory, pick_device

FORMAT_VERSION = 1
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
    """Settings every model has. Subclasses add fields and extend ``validate``."""

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
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotFittedError(RecsysError):
    """A model was asked to score before it was fitted or loaded."""


class Model:
    """Base class: config handling, evaluation, atomic save / load of the ``_`` attributes."""

    name: ClassVar[str] = "model"
    Config: ClassVar[type[ModelConfig]] = ModelConfig

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

    # ---- the contract --------------------------------------------------------------------
    def fit(self, train: sp.csr_matrix, valid: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> "Model":
        raise NotImplementedError

    def score(self, rows: sp.csr_matrix) -> Tensor:
        """Scores [B, n_items] (higher = better) for users whose histories are the CSR `rows`."""
        raise NotImplementedError

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

    # ---- persistence ------------------------------------------------------------------------
    def _state_names(self) -> list[str]:
        return sorted(k for k in vars(self) if k.endswith("_") and not k.startswith("_"))

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

    def _check_fitted(self) -> None:
        if not self._state_names():
            raise NotFittedError(f"{self.name} is not fitted: call fit(train) or {type(self).__name__}.load(path) first")

    def _init_modules(self) -> None:
        """Rebuild the nn.Module attributes from config and plain state (before weights are loaded)."""

    def save(self, path: str | os.PathLike) -> Path:
        """Write config and learned state to one file, atomically (a reader never sees half a file)."""
        self._check_fitted()
        payload = {
            "format": FORMAT_VERSION,
            "model": self.name,
            "config": self.config.to_dict(),
            "state": {k: _pack(getattr(self, k)) for k in self._state_names()},
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "Model":
        """Load a model written by ``save``; `device` overrides the saved device setting."""
        from recsys.models.registry import get_model

        path = Path(path)
        if not path.is_file():
            raise DataError(f"no saved model at {path}")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise DataError(f"{path} is not a recsys model file (format {FORMAT_VERSION})")
        klass = get_model(payload["model"])
        if not issubclass(klass, cls):
            raise ConfigError(f"{path} holds a {payload['model']!r} model, not a {cls.__name__}")
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


def _pack(value: Any) -> Any:
    """A learned attribute in a form ``torch.load(weights_only=True)`` accepts."""
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
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict) and "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    if isinstance(value, dict) and "__csr__" in value:
        v = value["__csr__"]
        return sp.csr_matrix((v["data"].numpy(), v["indices"].numpy(), v["indptr"].numpy()), shape=tuple(v["shape"]))
    return value
