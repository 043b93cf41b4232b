"""Full-ranking top-k metrics, batched on the device, all computed from one top-k.

For a user with relevant (held-out) set R, n = |R|, and rel_r = 1 if the item at rank r
(1-based) of the top-k list is in R:

* precision@k = sum_{r<=k} rel_r / k
* recall@k    = sum_{r<=k} rel_r / D, with D chosen explicitly (no default):
  ``"min"``: D = min(k, n) -- MultVAE / dawenl/vae_cf ``Recall_at_k_batch`` / POSIT, reaches 1;
  ``"n"``:   D = n         -- LOCA / LFT / TALL and recsys-metrics ``recall``.
* ndcg@k      = DCG / IDCG, binary gains, DCG = sum_{r<=k} rel_r / log2(r+1),
  IDCG = sum_{r<=min(k,n)} 1 / log2(r+1) -- vae_cf ``NDCG_binary_at_k_batch``.
* map@k       = sum_{r<=k} rel_r * precision@r / min(k, n) -- RecBole's ``MAP``.
* mrr@k       = 1 / (rank of the first relevant item) if it is within k, else 0.
* hit@k       = 1 if any relevant item is within k, else 0.

Ranking rules: excluded items (training / fold-in) are set to -inf before the top-k and are
never hits (they still count in n); NaN scores raise; ties are broken by the lower item
index, on every device (``torch.topk`` alone leaves tie order unspecified).

recsys-metrics 0.0.4 is a *test oracle only*: its precision, NDCG, MRR and hit rate agree
with ours (tested), its ``recall`` divides by n (our ``"n"``), its ``mean_average_precision``
divides by the number of hits in the top-k (one hit at rank 1 of 3 relevant -> 1.0, RecBole
1/3), and every call re-runs ``topk`` over the dense target; we run one top-k for all metrics
and ks and never densify more than a batch, so production code does not call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError, DataError
from recsys.training.device import pick_device

METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit")
RECALL_DENOMINATORS = ("min", "n")


def _csr_coords(rows: sp.spmatrix, device: torch.device) -> tuple[Tensor, Tensor]:
    """(row, col) index tensors of the stored non-zero entries of a sparse batch."""
    rows = sp.csr_matrix(rows)
    r = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    nz = rows.data != 0  # explicit zeros are not entries; filtered here so the caller's matrix is untouched
    return torch.from_numpy(r[nz]).to(device), torch.from_numpy(rows.indices[nz].astype(np.int64)).to(device)


def as_bool_rows(rows: "sp.spmatrix | Tensor", shape: tuple[int, int], device: torch.device, what: str) -> Tensor:
    """Dense bool [B, I] on `device` from CSR rows (stored non-zeros = True) or a tensor."""
    if sp.issparse(rows):
        if rows.shape != shape:
            raise DataError(f"{what} has shape {rows.shape}, scores have {shape}; pass the batch's rows")
        out = torch.zeros(shape, dtype=torch.bool, device=device)
        out[_csr_coords(rows, device)] = True
        return out
    if not isinstance(rows, Tensor) or tuple(rows.shape) != shape:
        raise DataError(f"{what} must be a scipy.sparse matrix or a tensor of shape {shape}")
    return rows.to(device=device, dtype=torch.bool)


def _mask(scores: Tensor, exclude: "sp.spmatrix | Tensor") -> None:
    """Set excluded entries of `scores` to -inf in place."""
    shape = tuple(scores.shape)
    if sp.issparse(exclude):
        if exclude.shape != shape:
            raise DataError(f"exclude has shape {exclude.shape}, scores have {shape}; pass the batch's rows")
        # index_put from the sparse coordinates: no dense [B, I] mask is built
        scores[_csr_coords(exclude, scores.device)] = float("-inf")
    else:
        scores.masked_fill_(as_bool_rows(exclude, shape, scores.device, "exclude"), float("-inf"))


def topk(scores: Tensor, k: int, exclude: "sp.spmatrix | Tensor | None" = None, *, inplace: bool = False) -> Tensor:
    """Indices [B, k] of the k highest scores per row, best first.

    `exclude` (CSR rows or bool tensor aligned with `scores`) is set to -inf first, on a
    copy unless `inplace=True`. Ties are broken by the lower item index: the top-k set is
    repaired on the rows whose k-th value is tied with items outside it, then each list is
    ordered by (score desc, index asc). NaN scores raise DataError.
    """
    if scores.ndim != 2:
        raise DataError(f"scores must be [batch, n_items], got shape {tuple(scores.shape)}")
    n_items = scores.shape[1]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 < k <= n_items:
        raise ConfigError(f"k must be an integer in 1..{n_items} (the number of items), got {k!r}")
    k = int(k)
    if not scores.is_floating_point():
        scores = scores.float()
    elif not inplace and exclude is not None:
        scores = scores.clone()
    if torch.isnan(scores).any():
        raise DataError("scores contain NaN; the model produced invalid scores")
    if exclude is not None:
        _mask(scores, exclude)
    vals, idx = scores.topk(k, dim=1)
    kth = vals[:, -1:]
    # the set is ambiguous only where the k-th value also occurs outside the top-k
    ambiguous = (scores == kth).sum(1) != (vals == kth).sum(1)
    if ambiguous.any():
        rows = ambiguous.nonzero().squeeze(1)
        s, kv = scores[rows], kth[rows]
        tied = s == kv
        need = k - (s > kv).sum(1, keepdim=True)
        keep = (s > kv) | (tied & (tied.cumsum(1) <= need))
        idx[rows] = keep.nonzero()[:, 1].view(-1, k)
    idx = idx.sort(dim=1).values
    order = scores.gather(1, idx).argsort(dim=1, descending=True, stable=True)
    return idx.gather(1, order)


# ---- per-user metrics from hits [B, k] (hit at each rank) and n_rel [B] -----------------
# Metrics divided by n (recall, ndcg, map) are NaN for users with n_rel == 0 (undefined);
# evaluate() skips those users instead of scoring them 0 as recsys-metrics does.


def _ranks(hits: Tensor) -> Tensor:
    return torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)


def precision_from_hits(hits: Tensor, n_rel: Tensor) -> Tensor:
    """sum(hits) / k."""
    return hits.sum(1, dtype=torch.float64) / hits.shape[1]


def recall_from_hits(hits: Tensor, n_rel: Tensor, *, denominator: str) -> Tensor:
    """sum(hits) / min(k, n) for ``"min"``, sum(hits) / n for ``"n"``."""
    if denominator not in RECALL_DENOMINATORS:
        raise ConfigError(f"recall denominator must be one of {RECALL_DENOMINATORS}, got {denominator!r}")
    n = n_rel.clamp(max=hits.shape[1]) if denominator == "min" else n_rel
    return hits.sum(1, dtype=torch.float64) / n.to(torch.float64)


def ndcg_from_hits(hits: Tensor, n_rel: Tensor) -> Tensor:
    """sum(hits_r / log2(r+1)) / sum_{r<=min(k,n)} 1/log2(r+1)."""
    disc = 1.0 / torch.log2(_ranks(hits) + 1.0)
    dcg = (hits.to(torch.float64) * disc).sum(1)
    # idcg[m] = sum of the first m discounts; idcg[0] = 0 -> NaN for n_rel == 0
    idcg = torch.cat([disc.new_zeros(1), disc.cumsum(0)])[n_rel.clamp(max=hits.shape[1])]
    return dcg / idcg


def map_from_hits(hits: Tensor, n_rel: Tensor) -> Tensor:
    """sum_r hits_r * precision@r / min(k, n)  (RecBole; not recsys-metrics' / #hits)."""
    h = hits.to(torch.float64)
    ap = (h * h.cumsum(1) / _ranks(hits)).sum(1)
    return ap / n_rel.clamp(max=hits.shape[1]).to(torch.float64)


def mrr_from_hits(hits: Tensor, n_rel: Tensor) -> Tensor:
    """1 / rank of the first hit within k, 0 when there is none."""
    first = hits.to(torch.int8).argmax(1).to(torch.float64) + 1.0
    return hits.any(1).to(torch.float64) / first


def hit_from_hits(hits: Tensor, n_rel: Tensor) -> Tensor:
    """1 if any hit within k."""
    return hits.any(1).to(torch.float64)


_FUNCS: dict[str, Callable[..., Tensor]] = {
    "precision": precision_from_hits,
    "ndcg": ndcg_from_hits,
    "map": map_from_hits,
    "mrr": mrr_from_hits,
    "hit": hit_from_hits,
}


def definitions(ks: Iterable[int], metrics: Iterable[str], recall_denominator: str) -> dict[str, str]:
    """Text definition of every ``"<metric>@<k>"`` key, to record beside the numbers."""
    text = {
        "precision": "|top-{k} ∩ R| / {k}",
        "recall": (
            "|top-{k} ∩ R| / min({k}, |R|) (MultVAE/vae_cf/POSIT convention)"
            if recall_denominator == "min"
            else "|top-{k} ∩ R| / |R| (LOCA/LFT/TALL convention)"
        ),
        "ndcg": "DCG/IDCG, binary gains, DCG = Σ_{{r≤{k}}} rel_r/log2(r+1), IDCG over min({k}, |R|) ranks (vae_cf)",
        "map": "Σ_{{r≤{k}}} rel_r·precision@r / min({k}, |R|) (RecBole MAP; recsys-metrics divides by #hits)",
        "mrr": "1/rank of the first relevant item within top-{k}, else 0",
        "hit": "1 if any relevant item is within top-{k}, else 0",
    }
    common = (
        "; R = user's held-out items; full ranking over all items with excluded (seen) items masked, "
        "ties broken by lower item index; mean over users with |R| ≥ 1"
    )
    return {f"{m}@{k}": text[m].format(k=k) + common for m in metrics for k in ks}


def _check(ks: Iterable[int], metrics: Iterable[str], recall_denominator: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    ks, metrics = tuple(ks), tuple(metrics)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0 for k in ks):
        raise ConfigError(f"ks must be positive integers, got {ks!r}")
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ConfigError(f"unknown metric(s) {bad or metrics!r}; choose from {METRICS}")
    if recall_denominator not in RECALL_DENOMINATORS:
        raise ConfigError(
            f"recall_denominator must be 'min' (MultVAE/POSIT: min(k, |R|)) or 'n' (LOCA/LFT/TALL: |R|), "
            f"got {recall_denominator!r}"
        )
    return tuple(int(k) for k in ks), metrics


def _metrics_from_topk(
    idx: Tensor, relevant: Tensor, n_rel: Tensor, ks: tuple[int, ...], metrics: tuple[str, ...], recall_denominator: str
) -> dict[str, Tensor]:
    hits = relevant.gather(1, idx)
    out = {}
    for k in ks:
        h = hits[:, :k]
        for m in metrics:
            fn = _FUNCS.get(m)
            out[f"{m}@{k}"] = fn(h, n_rel) if fn else recall_from_hits(h, n_rel, denominator=recall_denominator)
    return out


def _rank_batch(
    scores: Tensor,
    target: "sp.spmatrix | Tensor",
    exclude: "sp.spmatrix | Tensor | None",
    ks: tuple[int, ...],
    metrics: tuple[str, ...],
    recall_denominator: str,
    inplace: bool,
) -> tuple[dict[str, Tensor], Tensor]:
    """Per-user metrics and the top-max(ks) indices of one batch."""
    shape = tuple(scores.shape)
    relevant = as_bool_rows(target, shape, scores.device, "target")
    n_rel = relevant.sum(1)
    if exclude is not None:
        exclude = as_bool_rows(exclude, shape, scores.device, "exclude")
        # an excluded item is never a hit, even when the top-k has to reach the -inf items
        relevant = relevant & ~exclude  # not in place: `relevant` may be the caller's tensor
    idx = topk(scores, max(ks), exclude, inplace=inplace)
    return _metrics_from_topk(idx, relevant, n_rel, ks, metrics, recall_denominator), idx


def rank_metrics(
    scores: Tensor,
    target: "sp.spmatrix | Tensor",
    ks: Iterable[int] = (20, 50, 100),
    metrics: Iterable[str] = METRICS,
    *,
    recall_denominator: str,
    exclude: "sp.spmatrix | Tensor | None" = None,
) -> dict[str, Tensor]:
    """Per-user metrics ``{"<metric>@<k>": Tensor[B]}`` from one top-k at max(ks).

    `target` / `exclude`: CSR rows or bool tensors aligned with `scores` [B, I]. Users with no
    relevant item get NaN for recall/ndcg/map (see module docstring). `scores` is not modified.
    """
    ks, metrics = _check(ks, metrics, recall_denominator)
    return _rank_batch(scores, target, exclude, ks, metrics, recall_denominator, inplace=False)[0]


@dataclass
class RankingResult:
    """Per-user ranking metrics of one evaluation, with the conventions used.

    per_user[key][j] is the metric of row users[j]; users with no relevant item are not in
    `users` but in `skipped_users` (recsys-metrics would score them 0 and dilute the mean).
    topk (if kept) is [len(users), max(ks)] item indices, best first, for coverage / item recall.
    """

    per_user: dict[str, np.ndarray]
    users: np.ndarray
    skipped_users: np.ndarray
    ks: tuple[int, ...]
    metrics: tuple[str, ...]
    recall_denominator: str
    topk: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_skipped(self) -> int:
        return int(len(self.skipped_users))

    def mean(self) -> dict[str, float]:
        """Mean over evaluated users (NaN when there are none)."""
        return {key: float(v.mean()) if len(v) else float("nan") for key, v in self.per_user.items()}

    def definitions(self) -> dict[str, str]:
        return definitions(self.ks, self.metrics, self.recall_denominator)

    def summary(self) -> dict:
        """JSON-serialisable record: means, counts, conventions and definitions."""
        return {
            "mean": self.mean(),
            "n_users": int(len(self.users)),
            "n_skipped": self.n_skipped,
            "skipped_note": "users with no held-out item are skipped, not scored 0",
            "recall_denominator": self.recall_denominator,
            "definitions": self.definitions(),
        }


@torch.no_grad()
def evaluate(
    score_fn: Callable[[np.ndarray], Tensor],
    users: np.ndarray,
    target: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    *,
    ks: Iterable[int] = (20, 50, 100),
    metrics: Iterable[str] = METRICS,
    recall_denominator: str,
    batch_size: int = 1024,
    device: "torch.device | str | None" = None,
    keep_topk: bool = False,
) -> RankingResult:
    """Score `users` (rows of `target` / `exclude`) in batches and rank on the device.

    ``score_fn(rows) -> Tensor[len(rows), n_items]`` receives the batch's row indices; its
    output is masked in place. Only the batch's target / exclude rows are densified, on the
    device. Rows with an empty target are skipped before scoring.
    """
    ks, metrics = _check(ks, metrics, recall_denominator)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = pick_device(device)
    target = sp.csr_matrix(target)
    if (target.data == 0).any():  # stored zeros are not relevant items; work on a copy
        target = target.copy()
        target.eliminate_zeros()
    exclude = sp.csr_matrix(exclude) if exclude is not None else None
    if exclude is not None and exclude.shape != target.shape:
        raise DataError(f"exclude has shape {exclude.shape} but target has {target.shape}")
    users = np.asarray(users, dtype=np.int64)
    has_target = np.diff(target.indptr)[users] > 0
    kept, skipped = users[has_target], users[~has_target]

    per_user: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for m in metrics for k in ks}
    tops = []
    for start in range(0, len(kept), batch_size):
        rows = kept[start : start + batch_size]
        scores = score_fn(rows)
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (len(rows), target.shape[1]):
            raise DataError(f"score_fn must return a tensor of shape ({len(rows)}, {target.shape[1]})")
        scores = scores.to(device)
        out, idx = _rank_batch(
            scores, target[rows], exclude[rows] if exclude is not None else None, ks, metrics, recall_denominator, inplace=True
        )
        for key, v in out.items():
            per_user[key].append(v.cpu().numpy())
        if keep_topk:
            tops.append(idx.cpu().numpy())
    return RankingResult(
        per_user={key: np.concatenate(v) if v else np.zeros(0) for key, v in per_user.items()},
        users=kept,
        skipped_users=skipped,
        ks=ks,
        metrics=metrics,
        recall_denominator=recall_denominator,
        topk=(np.concatenate(tops) if tops else np.zeros((0, max(ks)), dtype=np.int64)) if keep_topk else None,
    )
