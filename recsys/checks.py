"""Parameter checks shared by configs, protocols and pipelines: each error names the parameter,
the value it got and the range it accepts (one wording everywhere)."""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

import numpy as np

from recsys.errors import ConfigError


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high] (bools are not integers here)."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_float(
    name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> float:
    """`value` as a finite float in the interval low..high (open ends as asked)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open or high == math.inf else ']'}"
        raise ConfigError(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def check_fraction(name: str, value: Any, upper: float = 1.0) -> float:
    """`value` strictly between 0 and `upper` (a share of users, items or interactions)."""
    return check_float(name, value, 0.0, upper, low_open=True, high_open=True)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    return value


def unknown_key_error(key: str, accepted: Iterable[str], what: str) -> ConfigError:
    """The error for an unknown name, with the closest accepted one when there is one."""
    accepted = sorted(accepted)
    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {what} {key!r}.{hint} Accepted: {', '.join(accepted)}")
