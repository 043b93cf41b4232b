"""Rating-regression errors (MELO): RMSE, MAE, and both per true rating value."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from torch import Tensor

from recsys.errors import DataError

Array = Union[np.ndarray, Tensor, Sequence[float]]


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    """Float64 numpy copies of (pred, true), checked: same shape, non-empty, no NaN."""
    p, t = (
        np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64).ravel() for a in (pred, true)
    )
    if p.shape != t.shape:
        raise DataError(f"pred has {p.size} values but true has {t.size}")
    if p.size == 0:
        raise DataError("no ratings to evaluate")
    if np.isnan(t).any():
        raise DataError(f"true ratings contain {int(np.isnan(t).sum())} NaN value(s); drop unrated entries first")
    if np.isnan(p).any():
        raise DataError(f"predictions contain {int(np.isnan(p).sum())} NaN value(s); the model diverged")
    return p, t


def rmse(pred: Array, true: Array) -> float:
    """sqrt(mean((pred − true)²))."""
    p, t = _pair(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred: Array, true: Array) -> float:
    """mean(|pred − true|)."""
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


def per_rating_report(pred: Array, true: Array) -> dict:
    """RMSE / MAE / count per distinct true rating value (keys like "4" or "3.5") and
    "overall" — MELO's view of errors on rare vs frequent rating values. JSON-serialisable."""
    p, t = _pair(pred, true)
    values, inverse = np.unique(t, return_inverse=True)
    n = np.bincount(inverse)
    sq = np.bincount(inverse, weights=(p - t) ** 2) / n
    ab = np.bincount(inverse, weights=np.abs(p - t)) / n
    report = {
        f"{v:g}": {"n": int(c), "rmse": float(np.sqrt(s)), "mae": float(a)} for v, c, s, a in zip(values, n, sq, ab)
    }
    report["overall"] = {"n": int(t.size), "rmse": float(np.sqrt(np.mean((p - t) ** 2))), "mae": float(np.mean(np.abs(p - t)))}
    return report
