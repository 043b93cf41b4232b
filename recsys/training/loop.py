"""The one training loop every iterative model runs through.

A model hands the loop a :class:`Job`: a function for one epoch (or one block of iterations), an
optional validation function, the weights to keep at their best, and the rest of its mutable
training state (optimisers, schedulers, random generators, counters). The loop owns everything
else -- the epoch budget, validation every ``eval_every`` epochs, early stopping with patience and
the restore of the best weights, the per-epoch history (loss, validation metric, seconds), progress
a person can follow (a bar in a terminal, one line per epoch in logs), a wall-clock budget
(``max_seconds``) and checkpoints that a killed run resumes from::

    job = Job(epoch_fn, validate_fn, weights={"net": net}, state={"opt": opt, "rng": rng})
    result = run(job, LoopSettings(name="multvae", epochs=200, patience=20, monitor="ndcg@100"),
                 checkpoint_dir="ckpt/")

With a checkpoint directory the loop writes an atomic, checksummed checkpoint after each epoch
(weights, job state, every RNG state, early-stopping state, history) and, when the directory
already holds one from the same settings, starts after it: a run killed and restarted ends with
exactly the metrics of an uninterrupted one (CPU, same seed). A corrupt or truncated checkpoint is
reported with a warning and the previous one is used. Checkpoint files: :mod:`.checkpoints`;
progress lines and bars: :mod:`.progress`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from recsys.checks import check_choice, check_float, check_int
from recsys.errors import ConfigError
from recsys.training.compile import compile_seconds, compiling
from recsys.training.checkpoints import Checkpoints, _rng_states, _set_rng_states
from recsys.training.early_stopping import EarlyStopping, snapshot
from recsys.training.progress import PROGRESS, _Progress

log = logging.getLogger("recsys.training")



@dataclass
class LoopSettings:
    """What the loop needs to know besides the job.

    ``patience`` counts validations without gain (None: never stop early; the best weights are
    still restored when there is validation). ``max_seconds`` bounds the training and validation
    seconds summed over the history (resumed epochs included); the loop stops cleanly after the
    epoch that crosses it and restores the best weights. ``restore_best=False`` keeps the last
    weights (an upstream behaviour some models switch on).
    """

    name: str
    epochs: int
    patience: int | None = None
    eval_every: int = 1
    mode: str = "max"
    monitor: str = "valid"  # the validation value's name, for progress lines only
    max_seconds: float | None = None
    progress: str = "auto"
    restore_best: bool = True
    checkpoint_every: int = 1
    compile: bool = False  # run the models' kernels compiled (recsys.training.compile)

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 0)
        if self.patience is not None:
            check_int("patience", self.patience, 1)
        check_int("eval_every", self.eval_every, 1)
        check_choice("mode", self.mode, ("max", "min"))
        if self.max_seconds is not None:
            check_float("max_seconds", self.max_seconds, 0.0, low_open=True)
        check_choice("progress", self.progress, PROGRESS)
        check_int("checkpoint_every", self.checkpoint_every, 1)


@dataclass
class Job:
    """A model's side of training.

    * ``epoch_fn(epoch) -> dict``: one epoch (1-based); returns its record fields ("loss", ...).
    * ``validate_fn(epoch) -> (value, fields)``: the early-stopping value (a float, or a tensor
      with one value per expert for an :class:`ExpertStopping`) and extra record fields; None when
      the model trains without validation.
    * ``weights``: name -> module or tensor; snapshotted at the best validation, restored at the end.
    * ``state``: name -> optimiser / scheduler / module (anything with ``state_dict``), numpy
      ``Generator``, tensor (restored in place) or plain dict (updated in place): everything else an
      epoch changes, so a checkpoint can resume it exactly.
    """

    epoch_fn: Callable[[int], Mapping[str, Any]]
    validate_fn: Callable[[int], tuple[Any, Mapping[str, Any]]] | None = None
    weights: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)

    def weight_state(self) -> dict[str, Any]:
        """Live references (not copies) to the weights: a stopper snapshots what it keeps."""
        return {k: (v.state_dict() if isinstance(v, nn.Module) else v) for k, v in self.weights.items()}

    def load_weights(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            for k, v in self.weights.items():
                if isinstance(v, nn.Module):
                    v.load_state_dict(state[k])
                else:
                    v.copy_(state[k])

    def state_dict(self) -> dict[str, Any]:
        """References, not copies: a checkpoint is written at once, and copies of a large model's
        optimiser state would double its memory while it is written."""
        return {k: _state_of(v) for k, v in self.state.items()}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        for k, v in self.state.items():
            _load_state(v, saved[k], k)


def _state_of(obj: Any) -> Any:
    if isinstance(obj, np.random.Generator):
        return {"__generator__": obj.bit_generator.state}
    if isinstance(obj, Tensor):
        return obj.detach()
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    if isinstance(obj, dict):
        return dict(obj)
    raise ConfigError(f"training state of type {type(obj).__name__} cannot be checkpointed")


def _load_state(obj: Any, saved: Any, name: str) -> None:
    if isinstance(obj, np.random.Generator):
        obj.bit_generator.state = saved["__generator__"]
    elif isinstance(obj, Tensor):
        with torch.no_grad():
            obj.copy_(saved)
    elif hasattr(obj, "load_state_dict"):
        obj.load_state_dict(saved)
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(saved)
    else:  # pragma: no cover - _state_of refused it already
        raise ConfigError(f"training state {name!r} cannot be restored")


class ExpertStopping:
    """Early stopping for a bank of E experts trained at once: each expert keeps its own best
    value, epoch and weights (merged along each weight's expert axis) and stops after `patience`
    validations without gain; training ends when every expert has stopped."""

    def __init__(self, n_experts: int, axes: Mapping[str, int], patience: int | None, device: torch.device) -> None:
        self.patience, self.axes = patience, dict(axes)
        self.best_value = torch.full((n_experts,), -float("inf"), device=device)
        self.best_epochs = torch.zeros(n_experts, dtype=torch.long, device=device)
        self.bad = torch.zeros(n_experts, dtype=torch.long, device=device)
        self.stopped = torch.zeros(n_experts, dtype=torch.bool, device=device)
        self.best_state: dict[str, Tensor] | None = None

    @property
    def best_epoch(self) -> int | None:
        return None if self.best_state is None else int(self.best_epochs.max())

    def update(self, values: Tensor, state: Mapping[str, Any], epoch: int) -> bool:
        ((self._key, params),) = state.items()  # one bank's parameters
        if self.best_state is None:
            self.best_state = {k: v.detach().clone() for k, v in params.items()}
        improved = (values > self.best_value) & ~self.stopped
        if bool(improved.any()):
            for name, p in params.items():
                shape = [1] * p.ndim
                shape[self.axes[name]] = -1
                self.best_state[name] = torch.where(improved.view(shape), p.detach(), self.best_state[name])
        self.best_value = torch.where(improved, values, self.best_value)
        self.best_epochs = torch.where(improved, epoch, self.best_epochs)
        self.bad = torch.where(improved, 0, self.bad + (~self.stopped).long())
        if self.patience is not None:
            self.stopped |= self.bad >= self.patience
        return bool(improved.any())

    @property
    def restorable(self) -> dict[str, Any] | None:
        return None if self.best_state is None else {self._key: self.best_state}

    _key = "bank"

    @property
    def should_stop(self) -> bool:
        return bool(self.stopped.all())

    def summary(self) -> dict[str, Any]:
        return {"experts_running": int((~self.stopped).sum())}

    def state_dict(self) -> dict[str, Any]:
        return snapshot({k: getattr(self, k) for k in ("best_value", "best_epochs", "bad", "stopped", "best_state", "_key")})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class LoopResult:
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_value: Any
    stop_reason: str  # "epochs", "patience", "max_seconds"
    resumed_from: int | None = None


def run(job: Job, settings: LoopSettings, *, checkpoint_dir: str | Path | None = None,
        fingerprint: Mapping[str, Any] | None = None, stopper: Any = None) -> LoopResult:
    """Train `job` under `settings`; see the module docstring.

    `fingerprint`: what identifies the run (model name, config, data shape); a checkpoint
    directory holding another run's checkpoints is refused rather than silently resumed.
    `stopper`: an :class:`ExpertStopping` for expert banks; default an :class:`EarlyStopping`.
    """
    s = settings
    stopper = stopper if stopper is not None else EarlyStopping(s.patience, mode=s.mode)
    ckpt = Checkpoints(checkpoint_dir, fingerprint or {"name": s.name}) if checkpoint_dir is not None else None
    history: list[dict[str, Any]] = []
    start_epoch, resumed, done, reason = 1, None, False, "epochs"
    if ckpt is not None:
        saved = ckpt.latest()
        if saved is not None:
            job.load_weights(saved["weights"])
            job.load_state_dict(saved["job"])
            stopper.load_state_dict(saved["stopper"])
            _set_rng_states(saved["rng"])
            history = saved["history"]
            start_epoch = resumed = saved["epoch"] + 1
            log.info("%s: resumed after epoch %d from %s", s.name, saved["epoch"], ckpt.folder)
    elapsed = sum(h.get("train_seconds", 0.0) + h.get("eval_seconds", 0.0) for h in history)
    if resumed is not None:
        # a finished run stays finished; one that ran out of epochs or of time goes on when
        # resumed with more of either
        reason = saved["stop_reason"]
        done = reason == "patience" or (reason == "max_seconds" and s.max_seconds is not None
                                        and elapsed >= s.max_seconds)
        reason = reason if done else "epochs"
    progress = _Progress(s, start_epoch)
    epoch = start_epoch - 1
    while not done and epoch < s.epochs:
        epoch += 1
        t0, c0 = time.perf_counter(), compile_seconds()
        with compiling(s.compile):
            record = {"epoch": epoch, **job.epoch_fn(epoch)}
        record["train_seconds"] = time.perf_counter() - t0
        if s.compile:  # first calls of compiled kernels: train_seconds - compile_seconds is steady state
            record["compile_seconds"] = compile_seconds() - c0
        if job.validate_fn is not None and (epoch % s.eval_every == 0 or epoch == s.epochs):
            t1 = time.perf_counter()
            with compiling(s.compile):
                value, fields = job.validate_fn(epoch)
            record.update(fields)
            stopper.update(value, job.weight_state(), epoch)
            if hasattr(stopper, "summary"):
                record.update(stopper.summary())
            record["eval_seconds"] = time.perf_counter() - t1
        history.append(record)
        elapsed += record["train_seconds"] + record.get("eval_seconds", 0.0)
        if stopper.should_stop:
            done, reason = True, "patience"
        elif s.max_seconds is not None and elapsed >= s.max_seconds and epoch < s.epochs:
            done, reason = True, "max_seconds"
        progress.epoch(record, stopper, elapsed)
        if ckpt is not None and (done or epoch == s.epochs or epoch % s.checkpoint_every == 0):
            ckpt.save(epoch, {"weights": job.weight_state(), "job": job.state_dict(), "stopper": stopper.state_dict(),
                              "rng": _rng_states(), "history": history, "stop_reason": reason})
    progress.close(reason, epoch)
    best = _restorable(stopper)
    if best is not None and s.restore_best:
        if hasattr(stopper, "restore_into"):  # best weights kept in a file: streamed back in place
            stopper.restore_into(job.weight_state())
        else:
            job.load_weights(best)
    return LoopResult(history, stopper.best_epoch, _plain(stopper.best_value), reason, resumed)


def _restorable(stopper) -> Any:
    if isinstance(stopper, ExpertStopping):
        return stopper.restorable
    return stopper.best_state


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, Tensor) else value
