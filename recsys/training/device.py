"""Device choice: CUDA when present, CPU otherwise, or exactly what the caller asked for."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from recsys.errors import ConfigError

_ALLOCATOR_TUNED: bool | None = None


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve ``None`` / ``"auto"`` to CUDA if available else CPU; honour ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Asking for CUDA on a machine without it is an error rather than a silent CPU fallback, so a
    run never reports GPU settings it did not use.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but CUDA is not available here; use 'cpu' or 'auto'")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def keep_freed_cpu_memory() -> bool:
    """Let glibc's malloc reuse freed large blocks instead of unmapping them (Linux, once per process).

    By default glibc serves every allocation above 32 MB with a fresh ``mmap`` and returns it with
    ``munmap`` on free, so each [experts x batch x items] tensor of a CPU training step is paid for
    again in page faults (measured: half the CPU time of a TALL batch on ML-1M was system time).
    Raising the mmap and trim thresholds to 2 GB keeps those pages in the heap for the next batch:
    TALL's batch 5.9 -> 3.3 s on 2 cores, identical losses, at the price of up to ~1.5 GB more peak
    RSS. Set ``RECSYS_MALLOC_TUNING=0`` to leave the allocator alone. Returns whether it is tuned.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is None:
        _ALLOCATOR_TUNED = False
        if sys.platform.startswith("linux") and os.environ.get("RECSYS_MALLOC_TUNING", "1") != "0":
            try:
                libc = ctypes.CDLL("libc.so.6")
                big = (1 << 31) - 1  # mallopt takes an int
                # M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2 (malloc.h)
                ok = libc.mallopt(-3, big) == 1 and libc.mallopt(-1, big) == 1
                _ALLOCATOR_TUNED = bool(ok and libc.mallopt(-2, 1 << 30) == 1)
            except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
                pass
    return _ALLOCATOR_TUNED
