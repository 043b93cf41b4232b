"""Device choice: CUDA when present, CPU otherwise, or exactly what the caller asked for."""

from __future__ import annotations

import torch

from recsys.errors import ConfigError


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
