"""Mainstream scores and per-group reports (LFT / TALL subgroup analysis)."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recsys.errors import ConfigError, DataError
from recsys.training.device import pick_device

GROUP_NAMES = ("low", "med-low", "medium", "med-high", "high")


def binary_rows(train: sp.spmatrix) -> sp.csr_matrix:
    """Item sets as a float32 CSR of ones (ratings and repeat counts do not matter), sorted indices."""
    x = sp.csr_matrix(train, dtype=np.float32, copy=True)
    x.sum_duplicates()  # also sorts the column indices
    x.eliminate_zeros()
    x.data[:] = 1.0
    return x


def sparse_csr_tensor(x: sp.csr_matrix, device: "torch.device") -> "torch.Tensor":
    """A scipy CSR as a torch sparse CSR tensor on `device` (CSR @ dense is ~15x faster than COO on CPU)."""
    with warnings.catch_warnings():  # "sparse CSR is beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(x.indptr.astype(np.int64)),
            torch.from_numpy(x.indices.astype(np.int64)),
            torch.from_numpy(x.data.astype(np.float32)),
            size=x.shape,
            check_invariants=False,  # built from a valid scipy CSR
        ).to(device)


@torch.no_grad()
def jaccard_blocks(x: sp.csr_matrix, batch_size: int = 1024, device: "torch.device | str | None" = None):
    """Yield ``(start, J)`` with J [b, U] the Jaccard similarity of users start..start+b-1 (rows of
    the binary matrix `x`, see :func:`binary_rows`) with every user, the self-similarity set to 0.

    Intersections come from X_b · Xᵀ (sparse X on the device times a dense batch of rows), unions
    from |I_u| + |I_v| − |I_u ∩ I_v|; only a [b, |U|] block exists at a time. An empty pair has
    Jaccard 0.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = pick_device(device)
    xt = sparse_csr_tensor(x, device)
    size = torch.from_numpy(np.diff(x.indptr).astype(np.float32)).to(device)
    n_users = x.shape[0]
    for start in range(0, n_users, batch_size):
        stop = min(start + batch_size, n_users)
        dense = torch.from_numpy(x[start:stop].toarray()).to(device)  # [b, I]
        inter = torch.sparse.mm(xt, dense.T).T  # [b, U]: |I_u ∩ I_v|
        union = size[start:stop, None] + size[None, :] - inter
        jac = torch.where(union > 0, inter / union.clamp(min=1), 0.0)
        rows = torch.arange(stop - start, device=device)
        jac[rows, start + rows] = 0.0  # drop the user's similarity with itself
        yield start, jac


@torch.no_grad()
def mainstream_scores(train: sp.spmatrix, batch_size: int = 1024, device: "torch.device | str | None" = None) -> np.ndarray:
    """MS_similarity (Zhu & Caverlee): for each user u,

        MS(u) = 1/(|U|-1) · Σ_{v≠u} |I_u ∩ I_v| / |I_u ∪ I_v|,

    the mean Jaccard similarity of u's item set (stored non-zeros of its row) with every
    other user's (:func:`jaccard_blocks`). Users with empty rows score 0.
    """
    x = binary_rows(train)
    n_users = x.shape[0]
    if n_users < 2:
        raise DataError(f"mainstream scores need at least 2 users, got {n_users}")
    out = np.empty(n_users)
    for start, jac in jaccard_blocks(x, batch_size, device):
        out[start:start + jac.shape[0]] = (jac.sum(1, dtype=torch.float64) / (n_users - 1)).cpu().numpy()
    return out


def mainstream_groups(scores: np.ndarray, n_groups: int = 5) -> np.ndarray:
    """Group id per user: users sorted by score ascending (stable, ties by lower user index),
    the sorted order cut into `n_groups` near-equal bins as ``np.array_split`` does (the
    first ``n % n_groups`` bins get one extra user); group 0 = lowest mainstream."""
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise DataError(f"scores must be one score per user, got shape {scores.shape}")
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or not 0 < n_groups <= len(scores):
        raise ConfigError(f"n_groups must be an integer in 1..{len(scores)} (the number of users), got {n_groups!r}")
    order = np.argsort(scores, kind="stable")
    sizes = [len(c) for c in np.array_split(order, n_groups)]
    groups = np.empty(len(scores), dtype=np.int64)
    groups[order] = np.repeat(np.arange(n_groups), sizes)
    return groups


def group_report(
    per_user: dict[str, np.ndarray],
    groups: np.ndarray,
    users: np.ndarray | None = None,
    names: Sequence[str] = GROUP_NAMES,
) -> dict:
    """Mean of each metric per group and overall, with group sizes; JSON-serialisable.

    `groups` holds one group id per user id (from ``mainstream_groups``); `users` gives the
    user id of each entry of the per-user arrays (``RankingResult.users``), or None when the
    arrays are already aligned with `groups`. An empty group reports None for its means.
    Returns ``{"groups": {name: {"n_users": .., metric: ..}}, "overall": {...}}``.
    """
    groups = np.asarray(groups)
    g = groups if users is None else groups[np.asarray(users)]
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if len(names) < n_groups:
        raise ConfigError(f"{n_groups} groups but only {len(names)} names: {list(names)}")
    for key, v in per_user.items():
        if len(v) != len(g):
            raise DataError(f"per_user[{key!r}] has {len(v)} values but {len(g)} users are given")

    def means(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        return {"n_users": n, **{key: float(np.mean(v[mask])) if n else None for key, v in per_user.items()}}

    return {
        "groups": {names[j]: means(g == j) for j in range(n_groups)},
        "overall": means(np.ones(len(g), dtype=bool)),
    }
