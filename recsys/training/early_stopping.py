"""Best-state tracking with patience.

The best state is a *copy*: keeping ``model.state_dict()`` itself would alias the live
parameters, so the "best" weights would silently follow training (POSIT's upstream bug).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
from torch import nn

from recsys.errors import ConfigError


def snapshot(state: Any) -> Any:
    """Deep copy of a state (module, state_dict, nested dict/list of tensors), detached from autograd."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, Mapping):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    return copy.deepcopy(state)


def _copy_into(dst: Any, src: Any) -> bool:
    """Copy the tensors of `src` into the same-shaped tensors of `dst` in place; False (nothing
    copied) where the structures differ."""
    if isinstance(src, nn.Module):
        src = src.state_dict()
    if isinstance(dst, torch.Tensor) and isinstance(src, torch.Tensor):
        if dst.shape != src.shape or dst.dtype != src.dtype or dst.device != src.device:
            return False
        dst.copy_(src.detach())
        return True
    if isinstance(dst, Mapping) and isinstance(src, Mapping) and dst.keys() == src.keys():
        if not all(_same_layout(dst[k], src[k]) for k in src):
            return False
        return all(_copy_into(dst[k], src[k]) for k in src)
    return False


def _same_layout(dst: Any, src: Any) -> bool:
    if isinstance(src, nn.Module):
        src = src.state_dict()
    if isinstance(dst, torch.Tensor) and isinstance(src, torch.Tensor):
        return dst.shape == src.shape and dst.dtype == src.dtype and dst.device == src.device
    if isinstance(dst, Mapping) and isinstance(src, Mapping):
        return dst.keys() == src.keys() and all(_same_layout(dst[k], src[k]) for k in src)
    return False


class EarlyStopping:
    """Keep the best value, its epoch and a deep copy of its state; stop after `patience` epochs without gain.

    ``patience=None`` never stops (the best state is still tracked). NaN values never count
    as an improvement. An improvement must beat the best by more than ``min_delta``.
    """

    def __init__(self, patience: int | None = None, mode: str = "max", min_delta: float = 0.0) -> None:
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ConfigError(f"patience must be None or an integer >= 1, got {patience!r}")
        if mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}")
        if not min_delta >= 0:
            raise ConfigError(f"min_delta must be >= 0, got {min_delta!r}")
        self.patience, self.mode, self.min_delta = patience, mode, float(min_delta)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_state: Any = None
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best so far (by more than min_delta)."""
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        gain = value - self.best_value if self.mode == "max" else self.best_value - value
        return gain > self.min_delta

    def update(self, value: float, state: Any, epoch: int) -> bool:
        """Record one epoch's `value`; snapshot `state` if it is the best. Returns True when it is."""
        value = float(value)
        if self.improved(value):
            # in place where the structure matches: a fresh copy would hold two best states at once
            # (for the tail learner's I x I weights, 2 GB each at 23k items)
            if not _copy_into(self.best_state, state):
                self.best_state = snapshot(state)
            self.best_value, self.best_epoch = value, epoch
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs to resume the stopper (the best state is copied)."""
        # the best state by reference: a checkpoint writes it at once (a copy would double a large
        # model's memory while it is written)
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_state": self.best_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.bad_epochs, self.best_state = state["bad_epochs"], snapshot(state["best_state"])

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience
