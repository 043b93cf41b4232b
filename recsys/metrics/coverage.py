"""Item-side metrics from stored top-k lists: POSIT's Item Recall@k and Coverage@k.

All functions take ``topk_idx`` [n_users, >=k] (e.g. ``RankingResult.topk`` from
``evaluate(..., keep_topk=True)``, rows aligned with ``RankingResult.users``) and use its
first k columns.

recsys-metrics' ``catalog_coverage`` / ``distributional_coverage`` recompute the top-k from a
dense score matrix of *all* users at once, which batched evaluation never holds, so they are
used only as test oracles for ``catalog_coverage`` / ``distributional_coverage`` here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError, DataError

ITEM_RECALL_DENOMINATORS = ("none", "min", "n")


def _topk_array(topk_idx: "np.ndarray | Tensor", k: int) -> np.ndarray:
    idx = topk_idx.detach().cpu().numpy() if isinstance(topk_idx, Tensor) else np.asarray(topk_idx)
    if idx.ndim != 2:
        raise DataError(f"topk_idx must be [n_users, k], got shape {idx.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 < k <= idx.shape[1]:
        raise ConfigError(f"k must be an integer in 1..{idx.shape[1]} (the stored top-k width), got {k!r}")
    return idx[:, :k].astype(np.int64, copy=False)


@dataclass
class ItemRecall:
    """Per-item advantage of POSIT.

    hits[i]   = Σ over (user u, held-out item i) pairs of 1[i ∈ top-k(u)] / D_u, with
                D_u = 1 ("none"), min(k, n_u) ("min", POSIT's ``recall_dist``) or n_u ("n");
                summing hits over items gives the users' summed Recall@k.
    counts[i] = number of held-out occurrences of item i (users holding it out).
    """

    hits: np.ndarray
    counts: np.ndarray
    k: int
    denominator: str

    def per_item(self) -> np.ndarray:
        """hits / counts, NaN for items never held out."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.hits / np.maximum(self.counts, 1), np.nan)

    def mean(self) -> float:
        """Item Recall@k: mean of hits / counts over items with >= 1 held-out occurrence.

        With denominator "none" this is the fraction of an item's held-out occurrences ranked
        in the top-k, averaged over items (POSIT's reported Item Recall@k; POSIT's own
        aggregation also averages in never-held-out items as 0, which this does not).
        """
        seen = self.counts > 0
        return float((self.hits[seen] / self.counts[seen]).mean()) if seen.any() else float("nan")


def item_recall_at_k(
    topk_idx: "np.ndarray | Tensor", target: sp.spmatrix, n_items: int, k: int, *, denominator: str
) -> ItemRecall:
    """Per-item hit sums and held-out counts (see ``ItemRecall``), fully vectorised.

    `target` rows are aligned with `topk_idx` rows (e.g. ``target[result.users]``); its
    stored non-zeros are the held-out items.
    """
    if denominator not in ITEM_RECALL_DENOMINATORS:
        raise ConfigError(f"denominator must be one of {ITEM_RECALL_DENOMINATORS}, got {denominator!r}")
    idx = _topk_array(topk_idx, k)
    target = sp.csr_matrix(target)
    if target.shape != (idx.shape[0], n_items):
        raise DataError(f"target has shape {target.shape}, expected ({idx.shape[0]}, {n_items}) aligned with topk_idx")
    coo = target.tocoo()
    nz = coo.data != 0
    u, i = coo.row[nz].astype(np.int64), coo.col[nz].astype(np.int64)
    # membership of each (u, i) pair in u's top-k via one key space u * n_items + item
    in_top = np.isin(u * n_items + i, (np.arange(idx.shape[0])[:, None] * n_items + idx).ravel())
    n_u = np.bincount(u, minlength=idx.shape[0])[u]
    denom = {"none": np.ones_like(n_u), "min": np.minimum(n_u, k), "n": n_u}[denominator]
    return ItemRecall(
        hits=np.bincount(i, weights=in_top / denom, minlength=n_items),
        counts=np.bincount(i, minlength=n_items),
        k=int(k),
        denominator=denominator,
    )


def _distinct_per_row(rows: Tensor) -> Tensor:
    """Number of distinct values in each row."""
    s = rows.sort(dim=1).values
    return 1 + (s[:, 1:] != s[:, :-1]).sum(1)


def coverage_at_k(topk_idx: "np.ndarray | Tensor", k: int, block_size: int = 100) -> float:
    """POSIT's Coverage@k: distinct items in the union of the top-k lists of each block of
    `block_size` consecutive users (in the given order), averaged over blocks.

    Only full blocks count, as in POSIT (its ``coverage`` asserts whole blocks and its
    evaluation loop drops the trailing partial batch): a partial last block would see fewer
    lists and bias the mean down. Fewer users than one block raises ConfigError.
    """
    idx = _topk_array(topk_idx, k)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
    n_blocks = idx.shape[0] // block_size
    if n_blocks == 0:
        raise ConfigError(f"coverage needs at least block_size={block_size} users, got {idx.shape[0]}; lower block_size")
    blocks = torch.from_numpy(np.ascontiguousarray(idx[: n_blocks * block_size])).view(n_blocks, -1)
    return float(_distinct_per_row(blocks).double().mean())


def catalog_coverage(topk_idx: "np.ndarray | Tensor", k: int, n_items: int) -> float:
    """|∪_u top-k(u)| / n_items."""
    idx = _topk_array(topk_idx, k)
    return float(np.count_nonzero(np.bincount(idx.ravel(), minlength=n_items)) / n_items)


def distributional_coverage(topk_idx: "np.ndarray | Tensor", k: int, n_items: int) -> float:
    """Entropy of how often each item is recommended, / ln(n_items) (1 = uniform)."""
    idx = _topk_array(topk_idx, k)
    p = np.bincount(idx.ravel(), minlength=n_items) / idx.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(n_items))
