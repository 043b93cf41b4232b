"""Intervals and paired tests for saying whether one recommender beats another.

Every function takes per-unit scores (one value per user, or per training seed) of the same units
for the methods compared, so a test is *paired*: the same users (or seeds) under both methods.
Pairs where either score is NaN (a user without a held-out item) are dropped.

* :func:`bootstrap_ci`: mean and percentile-bootstrap interval over users (one seed);
* :func:`seed_ci`: mean and Student-t interval over seeds (three or more seeds);
* :func:`randomization_test`: two-sided paired sign-flip test of the mean difference (exact for up
  to 16 pairs, else seeded Monte Carlo with the (count + 1) / (R + 1) estimate);
* :func:`wilcoxon_test`: Wilcoxon signed-rank test of the paired differences (``scipy.stats``);
* :func:`holm`: Holm's step-down adjustment over the comparisons of one table;
* :func:`effect_size`: mean difference, relative difference, Cohen's d_z (mean / sd of the
  differences) and the matched-pairs rank-biserial correlation;
* :func:`compare`: all of the above for one pair of methods; :func:`against_reference`: every method
  against a reference, Holm-adjusted.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np

from recsys.errors import DataError

LEVEL = 0.95
RESAMPLES = 10_000
EXACT_MAX = 16  # pairs up to which the randomization test enumerates all 2^n sign flips
_BLOCK = 1 << 22  # sign draws per block of the Monte Carlo test (memory stays ~4 MB)


def _finite(values, what: str = "values") -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise DataError(f"{what}: no finite values to summarise")
    return a


def paired(a, b, what: str = "paired scores") -> tuple[np.ndarray, np.ndarray]:
    """The pairs of `a` and `b` where both are finite (same length required)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise DataError(f"{what}: {a.size} and {b.size} values; a paired comparison needs the same units (users "
                        f"or seeds) in the same order")
    keep = np.isfinite(a) & np.isfinite(b)
    if not keep.any():
        raise DataError(f"{what}: no unit has a finite score under both methods")
    return a[keep], b[keep]


def bootstrap_ci(values, *, level: float = LEVEL, n_resamples: int = RESAMPLES, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean over units, `n_resamples`
    resamples drawn with a seeded generator (the same seed gives the same interval)."""
    a = _finite(values)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, _BLOCK // a.size)
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        means[start:stop] = a[rng.integers(0, a.size, size=(stop - start, a.size))].mean(1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(a.mean()), float(low), float(high)


def seed_ci(values, *, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean over seeds; (mean, nan, nan) for one seed."""
    from scipy import stats

    a = _finite(values, "seed scores")
    if a.size < 2:
        return float(a.mean()), math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), float(a.mean() - half), float(a.mean() + half)


def randomization_test(a, b, *, n_resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip test: under the null each difference a - b is as
    likely to have the other sign, so the observed |mean difference| is compared with the means of
    the differences under random sign flips (all 2^n of them for n <= 16)."""
    x, y = paired(a, b)
    d = x - y
    n = d.size
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if not np.any(d):
        return 1.0
    if n <= EXACT_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ d) / n >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    step = max(1, _BLOCK // n)
    for start in range(0, n_resamples, step):
        rows = min(n_resamples, start + step) - start
        signs = rng.integers(0, 2, size=(rows, n), dtype=np.int8) * 2 - 1
        hits += int((np.abs(signs @ d) / n >= observed - tol).sum())
    return (hits + 1) / (n_resamples + 1)


def wilcoxon_test(a, b) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of a - b (zero differences dropped,
    ``scipy.stats.wilcoxon``'s default; exact for small samples); 1.0 when every difference is 0."""
    from scipy import stats

    x, y = paired(a, b)
    d = x - y
    if not np.any(d):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the k-th smallest p times (m - k + 1),
    made monotone and capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def effect_size(a, b) -> dict[str, float]:
    """``mean_diff`` (a - b), ``relative`` (mean_diff / |mean of b|: same sign as mean_diff), ``cohen_dz`` (mean / sd of the
    differences) and ``rank_biserial`` (matched pairs: (R+ - R-) / (R+ + R-) of the signed ranks)."""
    from scipy import stats

    x, y = paired(a, b)
    d = x - y
    sd = d.std(ddof=1) if d.size > 1 else math.nan
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    total = ranks.sum()
    return {"mean_diff": float(d.mean()),
            "relative": float(d.mean() / abs(y.mean())) if y.mean() != 0 else math.nan,
            "cohen_dz": float(d.mean() / sd) if sd and sd > 0 else math.nan,
            "rank_biserial": float((ranks[nz > 0].sum() - ranks[nz < 0].sum()) / total) if total > 0 else 0.0}


def compare(a, b, *, seed: int = 0, n_resamples: int = RESAMPLES) -> dict[str, float]:
    """One method (`a`) against another (`b`) on the same units: both means with their intervals
    (bootstrap over the units), the effect sizes, and both tests' p-values."""
    x, y = paired(a, b)
    mean_a, low_a, high_a = bootstrap_ci(x, seed=seed, n_resamples=n_resamples)
    mean_b, low_b, high_b = bootstrap_ci(y, seed=seed, n_resamples=n_resamples)
    diff, low_d, high_d = bootstrap_ci(x - y, seed=seed, n_resamples=n_resamples)
    return {"n": int(x.size), "mean": mean_a, "ci": [low_a, high_a], "reference_mean": mean_b,
            "reference_ci": [low_b, high_b], "diff_ci": [low_d, high_d], **effect_size(x, y),
            "p_randomization": randomization_test(x, y, seed=seed, n_resamples=n_resamples),
            "p_wilcoxon": wilcoxon_test(x, y)}


def against_reference(scores: Mapping[str, Sequence[float]], reference: str, *, alpha: float = 0.05,
                      seed: int = 0, n_resamples: int = RESAMPLES) -> dict[str, dict[str, float]]:
    """Every method of `scores` (name -> per-unit scores, same units) against `reference`, with
    both tests Holm-adjusted across these comparisons and ``significant`` when the adjusted
    randomization and Wilcoxon p-values are both below `alpha`."""
    if reference not in scores:
        raise DataError(f"reference method {reference!r} has no scores; methods: {', '.join(scores)}")
    others = [m for m in scores if m != reference]
    out = {m: compare(scores[m], scores[reference], seed=seed, n_resamples=n_resamples) for m in others}
    for key in ("p_randomization", "p_wilcoxon"):
        for m, p in zip(others, holm([out[m][key] for m in others])):
            out[m][f"{key}_holm"] = p
    for m in others:
        out[m]["significant"] = bool(out[m]["p_randomization_holm"] < alpha and out[m]["p_wilcoxon_holm"] < alpha)
        out[m]["reference"] = reference
    return out
