"""The loop's ``compile`` switch: the memory-bound elementwise passes of a training step run as
``torch.compile`` kernels (inductor: fused C++ / OpenMP on CPU, Triton on CUDA) or eagerly.

A model marks such a pass with :func:`kernel`; the loop turns compilation on or off for the
epochs it runs (:func:`compiling`), so every model that trains through the loop obeys one
setting, ``compile: auto | on | off`` (``IterativeConfig.compile``):

* ``off``: eager PyTorch (bit for bit what earlier releases computed);
* ``on``: compiled kernels; refused with a clear error where the platform has no compiler
  (no C++ compiler on CPU, no Triton on CUDA);
* ``auto`` (default): on for CUDA where Triton is installed, off on CPU -- measured on 2 CPU cores
  (docs/benchmarks.md), a fused exp-and-sum saves about a tenth of the pass while the first call
  compiles for 5-10 s per kernel and shape, so only long CPU runs gain; ask with ``on``.

The first call of a compiled kernel for each input signature is timed and counted in
:func:`compile_seconds`; the loop records each epoch's share (``compile_seconds``) beside its
``train_seconds``, so the steady-state time is their difference. Compiled and eager kernels agree
to float32 rounding (the sums are reordered), not bit for bit.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from recsys.errors import ConfigError

COMPILE = ("auto", "on", "off")
_local = threading.local()
_seconds = [0.0]


def compiler_missing(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot build kernels for `device` here, or None when it can."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (pip install triton)"
        return None
    if device.type == "cpu":
        cxx = os.environ.get("CXX")
        if not any(shutil.which(c) for c in ([cxx] if cxx else []) + ["g++", "clang++", "c++"]):
            return "no C++ compiler on PATH (install g++ or set CXX)"
        return None
    return f"torch.compile kernels are not built for {device.type} here"


def resolve(mode: str, device: torch.device | str) -> bool:
    """Whether kernels are compiled for `mode` on `device` (see the module docstring)."""
    if mode not in COMPILE:
        raise ConfigError(f"compile must be one of {COMPILE}, got {mode!r}")
    if mode == "off":
        return False
    missing = compiler_missing(device)
    if mode == "on":
        if missing:
            raise ConfigError(f"compile='on' needs a compiler for {torch.device(device)}: {missing}; "
                              "or use compile='off'")
        return True
    return torch.device(device).type == "cuda" and missing is None


@contextmanager
def compiling(enabled: bool) -> Iterator[None]:
    """Kernels called inside run compiled (`enabled`) or eagerly."""
    before = getattr(_local, "on", False)
    _local.on = bool(enabled)
    try:
        yield
    finally:
        _local.on = before


def enabled() -> bool:
    return getattr(_local, "on", False)


def compile_seconds() -> float:
    """Seconds spent in first calls of compiled kernels in this process so far."""
    return _seconds[0]


def _signature(args: tuple) -> tuple:
    return tuple((a.shape, a.dtype, a.device, a.requires_grad) if isinstance(a, torch.Tensor) else repr(a)
                 for a in args)


def kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark `fn` (tensors in, tensors out, no Python-side effects) as a compilable pass."""
    compiled: list[Callable[..., Any]] = []
    seen: set[tuple] = set()

    @functools.wraps(fn)
    def call(*args):
        if not enabled():
            return fn(*args)
        if not compiled:
            compiled.append(torch.compile(fn, dynamic=False))
        key = _signature(args)
        if key in seen:
            return compiled[0](*args)
        t = time.perf_counter()
        out = compiled[0](*args)
        _seconds[0] += time.perf_counter() - t
        seen.add(key)
        return out

    call.eager = fn  # type: ignore[attr-defined]
    return call


@kernel
def exp_shifted_sum(logits: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exp(logits - shift), its sum over the last axis): one pass compiled, three eager."""
    e = torch.sub(logits, shift).exp_() if not torch.compiler.is_compiling() else torch.exp(logits - shift)
    return e, e.sum(dim=-1)
