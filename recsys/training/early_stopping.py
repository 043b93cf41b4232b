"""Best-state tracking with patience.

The best state is a *copy*: keeping ``model.state_dict()`` itself would alias the live
parameters, so the "best" weights would silently follow training (POSIT's upstream bug).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from recsys.errors import ConfigError, DataError


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
            self._keep(state, epoch)
            self.best_value, self.best_epoch = value, epoch
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    def _keep(self, state: Any, epoch: int) -> None:
        """Hold `state` as the best one."""
        # in place where the structure matches: a fresh copy would hold two best states at once
        # (for the tail learner's I x I weights, 2 GB each at 23k items)
        if not _copy_into(self.best_state, state):
            self.best_state = snapshot(state)

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


class SpilledEarlyStopping(EarlyStopping):
    """:class:`EarlyStopping` that keeps the best weights in a file, not in memory.

    For models whose weights are a large share of the host (the tail learner's I x I matrix:
    2 GB at 23k items, a third of its peak): at each new best the state (name -> tensor) is
    streamed to ``<folder>/best-e<epoch>.bin`` in row blocks (no copy in memory; a sha256
    computed on the way), and :meth:`restore_into` streams it back into the live tensors. Its
    ``state_dict`` names the file and its checksum instead of holding the tensors, so a checkpoint
    does not hold them either; the two newest files are kept (a checkpoint one generation old
    still finds its best). `folder`: the model's checkpoint folder when it has one, else a private
    temporary one removed with the stopper.
    """

    BLOCK = 1 << 26  # bytes per read / write (64 MB)

    def __init__(self, patience: int | None = None, mode: str = "max", min_delta: float = 0.0,
                 folder: str | os.PathLike | None = None) -> None:
        super().__init__(patience, mode, min_delta)
        self._tmp = None if folder is not None else tempfile.TemporaryDirectory(prefix="recsys-best-")
        self.folder = Path(folder if folder is not None else self._tmp.name)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _keep(self, state: Any, epoch: int) -> None:
        self.best_state = self._write(state, self.folder / f"best-e{epoch:06d}.bin")
        keep = sorted(self.folder.glob("best-e*.bin"))[-2:]
        for old in self.folder.glob("best-e*.bin"):
            if old not in keep:
                old.unlink(missing_ok=True)

    def _write(self, state: Mapping[str, Any], path: Path) -> dict:
        from recsys.io import atomic_path

        digest, layout = hashlib.sha256(), []
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            for name, t in state.items():
                if not isinstance(t, torch.Tensor):
                    raise TypeError(f"SpilledEarlyStopping keeps tensors only; {name!r} is {type(t).__name__}")
                flat = t.detach().reshape(-1)
                step = max(1, self.BLOCK // max(1, flat.element_size()))
                for start in range(0, flat.numel(), step):
                    raw = flat[start:start + step].cpu().contiguous().numpy().tobytes() if flat.is_cuda \
                        else memoryview(flat[start:start + step].contiguous().numpy()).cast("B")
                    digest.update(raw)
                    fh.write(raw)
                layout.append((name, list(t.shape), str(t.dtype).replace("torch.", "")))
        return {"__spilled__": str(path), "sha256": digest.hexdigest(), "layout": layout}

    def restore_into(self, targets: Mapping[str, Any]) -> None:
        """Copy the best state back into the live tensors `targets` (name -> tensor), block by block."""
        spilled = self.best_state
        path = Path(spilled["__spilled__"])
        digest = hashlib.sha256()
        with open(path, "rb") as fh, torch.no_grad():
            for name, shape, dtype in spilled["layout"]:
                dst = targets[name]
                flat = dst.view(-1) if dst.is_contiguous() else None
                if flat is None or list(dst.shape) != shape or str(dst.dtype).replace("torch.", "") != dtype:
                    raise DataError(f"{path}: best weights {name!r} {shape} {dtype} do not fit the live tensor "
                                    f"{list(dst.shape)} {dst.dtype}")
                step = max(1, self.BLOCK // dst.element_size())
                for start in range(0, flat.numel(), step):
                    n = min(step, flat.numel() - start)
                    raw = fh.read(n * dst.element_size())
                    digest.update(raw)
                    flat[start:start + n].copy_(torch.frombuffer(bytearray(raw), dtype=dst.dtype))
        if digest.hexdigest() != spilled["sha256"]:
            raise DataError(f"checksum mismatch for {path}: the best weights were modified or corrupted after "
                            f"they were written; train again (delete the checkpoint folder {path.parent})")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # the state names a file: no snapshot
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.bad_epochs, self.best_state = state["bad_epochs"], state["best_state"]
        if self.best_state is not None and not Path(self.best_state["__spilled__"]).is_file():
            raise DataError(f"the checkpoint's best weights {self.best_state['__spilled__']} are missing; "
                            f"delete the checkpoint folder to train again")
