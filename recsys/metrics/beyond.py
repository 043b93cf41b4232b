"""Beyond-accuracy metrics from stored top-k lists: coverage, exposure Gini / entropy, popularity bias, novelty.

Every function takes ``topk`` [n_users, K] (e.g. ``RankingResult.topk`` from
``evaluate(..., keep_topk=True)``: item indices, best first, one row per evaluated user) and
uses its first k columns; `k` must be in 1..K. Rows are taken to hold distinct items, as
``topk()`` returns them (a repeated item would count once per occurrence). Everything is
vectorised (``np.bincount`` / fancy indexing); nothing loops over users or items.

With U = n_users rows, I = n_items and c_i = number of the U top-k lists holding item i
(the exposure of i, ``exposure_counts``; sum_i c_i = U * k):

* coverage@k = |{i : c_i > 0}| / I
* gini@k     = sum_{j=1..I} (2j - I - 1) x_j / (I * sum_j x_j), x = c sorted ascending, over
  all I items (zero-exposure ones included); 0 = equal exposure, 1 - k/I when every user gets
  the same list, -> 1 as exposure concentrates on few items
* entropy@k  = -sum_i p_i ln p_i, p_i = c_i / (U k), 0 ln 0 = 0 (natural log; / ln I if normalised)

The popularity metrics use the training matrix ``train`` [n_train_rows, I] (scipy.sparse or a
2-D array; its stored non-zero entries are the interactions, values are ignored, duplicate
COO entries are summed first): pop_i = number of training interactions of item i = number of
training users with item i (one entry per user-item pair), N = number of training users
(rows with at least one interaction):

* arp@k     = mean_u mean_{i in top-k(u)} pop_i
* aplt@k    = mean_u |top-k(u) ∩ T| / k, T = long-tail items (``long_tail_items``)
* novelty@k = mean_u mean_{i in top-k(u)} -log2((pop_i + 1) / (N + 1)) (bits; add-one smoothing
  so never-trained items get log2(N + 1), not infinity; an item every user has gets 0)

As every row has exactly k items, each mean over users of a per-user mean equals the mean over
all U * k slots.

RecBole (``recbole.evaluator.metrics``) for comparison: ``ItemCoverage`` and ``GiniIndex`` use
the same formulas (its Gini pads the counts of never-recommended items as zeros, like ours), but
its ``data.num_items`` counts the padding id 0 as an item, i.e. one extra zero-exposure item
(a slightly lower coverage and higher Gini); its ``ShannonEntropy`` divides the entropy by the
number of distinct recommended items (ours does not; normalise by ln I instead); its
``AveragePopularity`` equals arp@k; its ``TailPercentage`` takes as tail the int(tail_ratio *
|items seen in training|) least popular *trained* items (default tail_ratio 0.1; never-trained
items are not in its tail), whereas our tail is every item outside the head (below), with
never-trained items included. RecBole has no novelty metric.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import scipy.sparse as sp
from torch import Tensor

from recsys.errors import ConfigError, DataError

BEYOND_METRICS = ("coverage", "gini", "entropy", "arp", "aplt", "novelty")


# ---------------------------------------------------------------- input checks


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_topk(topk: "np.ndarray | Tensor", n_items: int) -> np.ndarray:
    """topk as a non-empty 2-D int64 array with every index in 0..n_items-1."""
    idx = topk.detach().cpu().numpy() if isinstance(topk, Tensor) else np.asarray(topk)
    if idx.ndim != 2:
        raise DataError(f"topk must be a 2-D [n_users, k] array of item indices, got shape {idx.shape}")
    if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"topk must hold integer item indices, got dtype {idx.dtype}")
    if idx.size == 0:
        raise DataError(f"topk is empty (shape {idx.shape}); evaluate with keep_topk=True on at least one user")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= n_items:
        bad = lo if lo < 0 else hi
        raise DataError(f"topk holds item index {bad}, outside 0..{n_items - 1} (n_items={n_items})")
    return idx.astype(np.int64, copy=False)


def _check_k(k, width: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 < k <= width:
        raise ConfigError(f"k must be an integer in 1..{width} (the stored top-k width), got {k!r}")
    return int(k)


def _check_ks(ks: Iterable[int], width: int) -> tuple[int, ...]:
    ks = (ks,) if isinstance(ks, (int, np.integer)) else tuple(ks)
    if not ks:
        raise ConfigError("ks is empty; pass cut-offs such as (10, 20)")
    return tuple(_check_k(k, width) for k in ks)


def _check_tail_fraction(tail_fraction) -> float:
    if isinstance(tail_fraction, bool) or not isinstance(tail_fraction, (int, float, np.floating, np.integer)):
        raise ConfigError(f"tail_fraction must be a number in (0, 1), got {tail_fraction!r}")
    if not 0.0 < float(tail_fraction) < 1.0:
        raise ConfigError(
            f"tail_fraction must be in (0, 1) (the share of items in the long tail), got {tail_fraction!r}"
        )
    return float(tail_fraction)


def _train_csr(train, n_items: int | None = None) -> sp.csr_matrix:
    if sp.issparse(train):
        csr = sp.csr_matrix(train)
    else:
        arr = np.asarray(train)
        if arr.ndim != 2:
            raise DataError(f"train must be a 2-D [n_users, n_items] matrix, got shape {arr.shape}")
        csr = sp.csr_matrix(arr)
    if n_items is not None and csr.shape[1] != n_items:
        raise DataError(f"train has shape {csr.shape}: {csr.shape[1]} item columns, but n_items={n_items}")
    if not csr.has_canonical_format:  # duplicate entries of one pair are one interaction
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def item_popularity(train) -> tuple[np.ndarray, int]:
    """(pop, N): pop[i] = training interactions of item i (stored non-zeros of column i, values
    ignored, duplicates summed first), N = training users (rows with >= 1 interaction).

    A training matrix without any interaction raises DataError.
    """
    csr = _train_csr(train)
    nz = csr.data != 0
    if not nz.any():
        raise DataError(f"train (shape {csr.shape}) has no interactions; popularity is undefined")
    pop = np.bincount(csr.indices[nz], minlength=csr.shape[1]).astype(np.int64)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[nz]
    return pop, int(np.count_nonzero(np.bincount(rows, minlength=csr.shape[0])))


def long_tail_items(pop: np.ndarray, tail_fraction: float = 0.8) -> np.ndarray:
    """Bool mask [I] of the long tail: items sorted by popularity descending, ties by the lower
    item index first; the head is the first ceil((1 - tail_fraction) * I) items (at least one),
    the tail the other floor(tail_fraction * I) (never-trained items included).
    """
    tail_fraction = _check_tail_fraction(tail_fraction)
    pop = np.asarray(pop)
    n = len(pop)
    n_tail = math.floor(round(tail_fraction * n, 6))  # round: 0.8 * 10 must give 8, not 7.999...
    order = np.lexsort((np.arange(n), -pop))  # popularity desc, then item index asc
    tail = np.zeros(n, dtype=bool)
    tail[order[n - n_tail :]] = True
    return tail


# ---------------------------------------------------------------- exposure metrics (no training data)


def _exposure(idx: np.ndarray, k: int, n_items: int) -> np.ndarray:
    return np.bincount(idx[:, :k].ravel(), minlength=n_items)


def _gini(counts: np.ndarray) -> float:
    x = np.sort(counts).astype(np.float64)
    n = len(x)
    j = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * j - n - 1) * x).sum() / (n * x.sum()))


def _entropy(counts: np.ndarray, normalise: bool) -> float:
    p = counts[counts > 0] / counts.sum()
    h = float(-(p * np.log(p)).sum())
    if not normalise:
        return h
    if len(counts) < 2:
        raise ConfigError(f"normalised entropy needs n_items >= 2 (ln 1 = 0), got n_items={len(counts)}")
    return h / math.log(len(counts))


def exposure_counts(topk: "np.ndarray | Tensor", k: int, n_items: int) -> np.ndarray:
    """c [n_items]: c_i = number of top-k lists (rows of topk[:, :k]) holding item i."""
    n_items = _positive_int("n_items", n_items)
    idx = _check_topk(topk, n_items)
    return _exposure(idx, _check_k(k, idx.shape[1]), n_items)


def catalogue_coverage(topk: "np.ndarray | Tensor", k: int, n_items: int) -> float:
    """coverage@k = |∪_u top-k(u)| / n_items (RecBole's ItemCoverage)."""
    return float(np.count_nonzero(exposure_counts(topk, k, n_items)) / n_items)


def gini_index(topk: "np.ndarray | Tensor", k: int, n_items: int) -> float:
    """gini@k: Gini coefficient of the exposure counts c over all n_items items.

    G = sum_{j=1..n} (2j - n - 1) x_j / (n * sum_j x_j), x = c sorted ascending, n = n_items,
    zero-exposure items included. 0 = every item equally exposed; 1 - k/n when all users get
    the same list; -> 1 as exposure concentrates. Same formula as RecBole's GiniIndex (whose
    n counts its padding item too).
    """
    return _gini(exposure_counts(topk, k, n_items))


def exposure_entropy(topk: "np.ndarray | Tensor", k: int, n_items: int, *, normalise: bool = False) -> float:
    """entropy@k = -sum_i p_i ln p_i, p_i = c_i / (n_users * k), 0 ln 0 = 0 (nats).

    normalise=True divides by ln(n_items) (1 = even exposure; needs n_items >= 2; equals
    ``coverage.distributional_coverage``). RecBole's ShannonEntropy instead divides by the
    number of distinct recommended items.
    """
    return _entropy(exposure_counts(topk, k, n_items), normalise)


# ---------------------------------------------------------------- popularity metrics (need train)


def _pop_topk(topk, k: int, train) -> tuple[np.ndarray, np.ndarray, int]:
    """(top-k indices [U, k], pop, N) after checking topk against train's item count."""
    pop, n_train = item_popularity(train)
    idx = _check_topk(topk, len(pop))
    return idx[:, : _check_k(k, idx.shape[1])], pop, n_train


def average_recommended_popularity(topk: "np.ndarray | Tensor", k: int, train) -> float:
    """arp@k = mean over users of the mean pop_i of their top-k items, pop_i = training
    interactions of item i (``item_popularity``); equals RecBole's AveragePopularity."""
    idx, pop, _ = _pop_topk(topk, k, train)
    return float(pop[idx].mean(dtype=np.float64))


def aplt(topk: "np.ndarray | Tensor", k: int, train, tail_fraction: float = 0.8) -> float:
    """aplt@k = mean over users of |top-k(u) ∩ T| / k, T = ``long_tail_items(pop, tail_fraction)``
    (head = the ceil((1 - tail_fraction) * n_items) most popular items, ties to the lower index;
    tail = the rest, never-trained items included). See the module docstring for RecBole's
    TailPercentage, which defines the tail differently."""
    idx, pop, _ = _pop_topk(topk, k, train)
    return float(long_tail_items(pop, tail_fraction)[idx].mean(dtype=np.float64))


def novelty(topk: "np.ndarray | Tensor", k: int, train) -> float:
    """novelty@k = mean over users of the mean over their top-k of -log2((pop_i + 1) / (N + 1)),
    pop_i = training users with item i, N = training users (``item_popularity``); the add-one
    smoothing keeps never-trained items finite (log2(N + 1) bits)."""
    idx, pop, n_train = _pop_topk(topk, k, train)
    return float(_self_information(pop, n_train)[idx].mean(dtype=np.float64))


def _self_information(pop: np.ndarray, n_train: int) -> np.ndarray:
    return np.log2(n_train + 1.0) - np.log2(pop + 1.0)


# ---------------------------------------------------------------- all at once


def beyond_accuracy(
    topk: "np.ndarray | Tensor",
    train,
    ks: Iterable[int] = (10, 20),
    n_items: int | None = None,
    tail_fraction: float = 0.8,
) -> dict[str, float]:
    """``{"coverage@k", "gini@k", "entropy@k", "arp@k", "aplt@k", "novelty@k"}`` for each k in
    `ks` (definitions in the module docstring; entropy in nats, not normalised).

    `train` [n_train_rows, n_items] gives the popularity; n_items defaults to its column count
    and must equal it when given. topk is checked once for all cut-offs.
    """
    tail_fraction = _check_tail_fraction(tail_fraction)
    csr = _train_csr(train, None if n_items is None else _positive_int("n_items", n_items))
    pop, n_train = item_popularity(csr)
    n_items = len(pop)
    idx = _check_topk(topk, n_items)
    ks = _check_ks(ks, idx.shape[1])
    tail = long_tail_items(pop, tail_fraction)
    info = _self_information(pop, n_train)
    pop = pop.astype(np.float64)
    out: dict[str, float] = {}
    for k in ks:
        top = idx[:, :k]
        counts = _exposure(idx, k, n_items)
        out[f"coverage@{k}"] = float(np.count_nonzero(counts) / n_items)
        out[f"gini@{k}"] = _gini(counts)
        out[f"entropy@{k}"] = _entropy(counts, normalise=False)
        out[f"arp@{k}"] = float(pop[top].mean())
        out[f"aplt@{k}"] = float(tail[top].mean(dtype=np.float64))
        out[f"novelty@{k}"] = float(info[top].mean())
    return out
