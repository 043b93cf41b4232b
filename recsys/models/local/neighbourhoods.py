"""Who is local to whom: LOCA's kernels and anchors, LFT / EnLFT's smoothed-row similarities.

All user-user quantities are computed in blocks of users on the device; nothing |U| x |U| is
kept except where the method itself needs it (EnLFT's anchor columns: |U| x n_anchors).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError, DataError
from recsys.metrics.groups import binary_rows, jaccard_blocks, sparse_csr_tensor

KERNELS = ("epanechnikov", "uniform", "triangular")
ANCHOR_METHODS = ("coverage", "random", "kmeans")


# ---- LOCA ---------------------------------------------------------------------------------


def angular_distance(a: Tensor, b: Tensor) -> Tensor:
    """Normalised angular distance d = (2 / pi) * arccos(cos(a_i, b_j)) in [0, 1] -> [len(a), len(b)]."""
    return _angular(_unit_rows(a), _unit_rows(b))


def _unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-10)


def _angular(a_unit: Tensor, b_unit: Tensor) -> Tensor:
    return (2.0 / math.pi) * torch.arccos((a_unit @ b_unit.T).clamp(-1.0, 1.0))


def kernel(distance: Tensor, bandwidth: float, kind: str = "epanechnikov") -> Tensor:
    """Kernel weight of a distance: Epanechnikov 3/4 * max(1 - (d/h)^2, 0); uniform 1[d < h];
    triangular max(1 - d/h, 0)."""
    _check_kernel(bandwidth, kind)
    u = distance / bandwidth
    if kind == "epanechnikov":
        return 0.75 * (1 - u * u).clamp_min(0.0)
    if kind == "uniform":
        return (u < 1).to(distance.dtype)
    return (1 - u).clamp_min(0.0)


def _check_kernel(bandwidth: float, kind: str) -> None:
    if kind not in KERNELS:
        raise ConfigError(f"kernel must be one of {KERNELS}, got {kind!r}")
    if not bandwidth > 0:
        raise ConfigError(f"kernel bandwidth must be > 0, got {bandwidth!r}")


def _covered(a_unit: Tensor, b_unit: Tensor, bandwidth: float) -> Tensor:
    """``kernel(_angular(a_unit, b_unit), bandwidth, kind) > 0`` bit for bit, for every kind, with
    one float [len(a), len(b)] buffer instead of the kernel's temporaries: the same ops in place
    give u = d / bandwidth, and each kernel is > 0 exactly where float32 u < 1 (1 - u and
    1 - u*u round to > 0 iff u < 1; 0.75 x > 0 for every float32 x > 0)."""
    u = a_unit @ b_unit.T
    u.clamp_(-1.0, 1.0).arccos_().mul_(2.0 / math.pi).div_(bandwidth)
    return u < 1


def select_anchors(
    embeddings: Tensor,
    n_anchors: int,
    method: str = "coverage",
    *,
    bandwidth: float = 0.4,
    kind: str = "epanechnikov",
    stride: int = 10,
    seed: int = 0,
    block: int = 2048,
) -> np.ndarray:
    """Anchor users for LOCA.

    * ``coverage`` (paper default): greedy max coverage. Candidates are every `stride`-th user
      (LOCA's code uses 10 to save time); candidate c covers the users with a non-zero test
      kernel (`bandwidth`) around it. Repeatedly take the candidate covering most not-yet-covered
      users (ties: lowest index) and mark its users covered; once everyone is covered the rest
      are picked by the same rule, i.e. the lowest-index unused candidates. Memory is O(U +
      candidates) plus one `block` of candidate rows while the initial gains are counted: no
      candidates x U cover matrix is kept; the greedy is lazy (a candidate's gain only shrinks as
      users get covered, so a stale gain is an upper bound and only the leaders' rows are
      recomputed), and picks exactly the anchors of the plain greedy over the full matrix.
    * ``random``: `n_anchors` distinct users drawn with `seed`.
    * ``kmeans``: k-means (Lloyd, k-means++ init, `seed`) on the embeddings; the user nearest
      each centroid.
    """
    n_users = embeddings.shape[0]
    if not 0 < n_anchors <= n_users:
        raise ConfigError(f"number of anchors must be in 1..{n_users} (the number of users), got {n_anchors!r}")
    if method not in ANCHOR_METHODS:
        raise ConfigError(f"anchor selection must be one of {ANCHOR_METHODS}, got {method!r}")
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(n_users, size=n_anchors, replace=False))
    if method == "kmeans":
        return _kmeans_anchors(embeddings, n_anchors, seed)
    if not isinstance(stride, int) or stride < 1:
        raise ConfigError(f"coverage stride must be an integer >= 1, got {stride!r}")
    return _coverage_anchors(embeddings, n_anchors, bandwidth, kind, stride, block)


_FINGERPRINT_SEED = 0x10CA
_ROW_CACHE = 128  # candidate rows kept between lazy-greedy rounds (each U bools)
_last_coverage_stats: dict[str, int] = {}  # how lazy the last coverage greedy was (benchmarks, tests)


def _coverage_anchors(embeddings: Tensor, n_anchors: int, bandwidth: float, kind: str, stride: int,
                      block: int) -> np.ndarray:
    """Lazy greedy max coverage in O(U + candidates) memory (plus one block / a few rows).

    Pass 1 computes the candidates' cover rows `block` at a time, exactly as the plain greedy
    would (same slices, same ops), and keeps per candidate only its gain (number of users it
    covers) and a fingerprint of its cover set (two sums of random 31-bit integer weights of the
    covered users; exact in float64). Pass 2: `bound[c]` is c's gain when last computed; gains
    only shrink, so it bounds the current gain. Take the unused candidate with the largest bound
    (ties: lowest index, as torch.argmax); if its bound was computed against the current
    uncovered set it is the greedy's choice, else recompute it (and a few runners-up) and repeat.

    A row recomputed alone may differ in the last float bit from the same row inside a block
    (BLAS blocking), which could flip a borderline ``> 0``; a recomputed row whose fingerprint
    differs from pass 1's is therefore taken from its whole block recomputed as in pass 1, so
    the rows used are bit-identical to the plain greedy's.
    """
    _check_kernel(bandwidth, kind)
    n_users, device = embeddings.shape[0], embeddings.device
    cand = torch.arange(0, n_users, stride, device=device)
    if len(cand) < n_anchors:
        cand = torch.arange(n_users, device=device)
    n_cand = len(cand)
    unit = _unit_rows(embeddings)  # what angular_distance(., embeddings) computes for its second argument

    def rows_of(a: Tensor) -> Tensor:  # the plain greedy's kernel(angular_distance(a, embeddings)) > 0
        return _covered(_unit_rows(a), unit, bandwidth)

    gen = torch.Generator(device="cpu").manual_seed(_FINGERPRINT_SEED)
    weights = torch.ones(n_users, 3, dtype=torch.float64)
    # column 0 counts, 1-2 fingerprint; weights of 53 - ceil(log2(U + 1)) bits (31 at most), so a
    # sum over any set of users stays below 2^53 and is exact in float64
    bits = max(1, min(31, 53 - int(n_users).bit_length()))
    weights[:, 1:] = torch.randint(0, 1 << bits, (n_users, 2), generator=gen, dtype=torch.int64).to(torch.float64)
    weights = weights.to(device)

    def summary(rows: Tensor, chunk: int = 64) -> Tensor:  # [k, U] bool -> [k, 3] float64 (count, fp1, fp2)
        return torch.cat([rows[r : r + chunk].to(torch.float64) @ weights for r in range(0, len(rows), chunk)])

    summ = torch.cat([summary(rows_of(embeddings[cand[i : i + block]])) for i in range(0, n_cand, block)])
    bound = summ[:, 0].to(torch.int64)
    fingerprint = summ[:, 1:]
    stamp = torch.zeros(n_cand, dtype=torch.int64, device=device)  # anchors taken when bound[c] was computed
    used = torch.zeros(n_cand, dtype=torch.bool, device=device)
    uncovered = torch.ones(n_users, dtype=torch.bool, device=device)
    cache: dict[int, Tensor] = {}  # candidate -> its cover row (static), most recently used last
    stats = _last_coverage_stats
    stats.clear()
    stats.update(recomputed_rows=0, block_fallbacks=0, cache_hits=0)

    def exact_rows(idx: list[int]) -> list[Tensor]:
        """Cover rows of candidates `idx`, bit-identical to pass 1's."""
        out: dict[int, Tensor] = {}
        todo = [c for c in idx if c not in cache]
        stats["cache_hits"] += len(idx) - len(todo)
        if todo:
            rows = rows_of(embeddings[cand[torch.as_tensor(todo, device=device)]])
            stats["recomputed_rows"] += len(todo)
            ok = (summary(rows)[:, 1:] == fingerprint[todo]).all(1).tolist()
            for n, c in enumerate(todo):
                if ok[n]:
                    out[c] = rows[n].clone()  # not a view: a cached row must not pin its batch
            for start in sorted({c // block * block for n, c in enumerate(todo) if not ok[n]}):
                stats["block_fallbacks"] += 1
                whole = rows_of(embeddings[cand[start : start + block]])
                for n, c in enumerate(todo):
                    if not ok[n] and start <= c < start + block:
                        out[c] = whole[c - start].clone()
        for c in idx:
            row = cache.pop(c) if c in cache else out[c]
            cache[c] = row
        while len(cache) > _ROW_CACHE:
            cache.pop(next(iter(cache)))
        return [cache[c] for c in idx]

    anchors: list[int] = []
    width = 1
    while len(anchors) < n_anchors:
        t = len(anchors)
        score = bound.masked_fill(used, -1)
        j = int(torch.argmax(score))  # first maximum: the lowest index wins ties
        if int(score[j]) <= 0 or not bool(uncovered.any()):  # every gain is 0 from now on:
            rest = (~used).nonzero().squeeze(1)[: n_anchors - t]  # the lowest-index unused candidates
            anchors.extend(int(c) for c in cand[rest].tolist())
            break
        if int(stamp[j]) == t:  # its bound is its current gain, and no one else can beat it
            (row,) = exact_rows([j])
            used[j] = True
            uncovered &= ~row
            anchors.append(int(cand[j]))
            width = 1
            continue
        # refresh the leader and, the more rounds need refreshing, more runners-up with stale bounds
        top = torch.topk(score, min(width, n_cand - t)).indices
        stale = ((stamp[top] != t) & ~used[top]).tolist()  # one read back, not one per candidate
        idx = [j] + [c for c, s in zip(top.tolist(), stale) if c != j and s]
        rows = torch.stack(exact_rows(idx))
        idx_t = torch.as_tensor(idx, device=device)
        bound[idx_t] = (rows & uncovered).sum(1)
        stamp[idx_t] = t
        width = min(2 * width, 64)
    return np.asarray(anchors, dtype=np.int64)


def _kmeans_anchors(x: Tensor, k: int, seed: int, iters: int = 50) -> np.ndarray:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x.float()
    centers = [x[int(torch.randint(len(x), (1,), generator=gen))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++
        probs = (d2 / d2.sum()).cpu() if d2.sum() > 0 else torch.full((len(x),), 1.0 / len(x))
        c = x[int(torch.multinomial(probs, 1, generator=gen))]
        centers.append(c)
        d2 = torch.minimum(d2, ((x - c) ** 2).sum(1))
    c = torch.stack(centers)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        new = torch.where(counts[:, None] > 0, new / counts.clamp_min(1)[:, None], c)
        if torch.allclose(new, c):
            break
        c = new
    dist = torch.cdist(c, x)
    nearest = dist.argmin(1).cpu().numpy()
    # distinct users: a user nearest to two centroids is used once, the next nearest fills in
    out, taken = [], set()
    for j in range(k):
        order = torch.argsort(dist[j]).cpu().numpy()
        u = next(int(v) for v in order if int(v) not in taken) if int(nearest[j]) in taken else int(nearest[j])
        taken.add(u)
        out.append(u)
    return np.asarray(out, dtype=np.int64)


# ---- LFT / EnLFT ------------------------------------------------------------------------------


def smoothed_rows(train: sp.spmatrix, *, alpha: float = 0.7, threshold: float = 0.1, min_neighbours: int = 10,
                  device: torch.device | str = "cpu", block: int = 1024) -> sp.csr_matrix:
    """LFT's smoothed user rows: alpha * x_u + (1 - alpha) * mean of the rows of u's Jaccard
    neighbours (Jaccard > `threshold`, self excluded; fewer than `min_neighbours` -> the
    `min_neighbours` most similar users instead). Binary x; returns a sparse [U, I] matrix."""
    x = binary_rows(train)
    n_users = x.shape[0]
    if n_users < 2:
        raise DataError(f"LFT neighbourhoods need at least 2 users, got {n_users}")
    k = min(min_neighbours, n_users - 1)
    rows, cols, vals = [], [], []
    for start, jac in jaccard_blocks(x, block, device):  # the diagonal is 0: a user is not its own neighbour
        nb = jac > threshold
        few = nb.sum(1) < k
        if few.any() and k > 0:
            top = jac[few].topk(k, dim=1).indices
            nb[few] = False
            nb[few.nonzero().squeeze(1)[:, None], top] = True
        r, c = nb.nonzero(as_tuple=True)
        counts = nb.sum(1).to(torch.float32)
        rows.append((r + start).cpu().numpy())
        cols.append(c.cpu().numpy())
        vals.append((1.0 / counts[r]).cpu().numpy())
    neighbours = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(n_users, n_users), dtype=np.float32)
    return (alpha * x + (1 - alpha) * (neighbours @ x)).tocsr().astype(np.float32)


def local_sets(smoothed: sp.csr_matrix, users: np.ndarray | None = None, *, t: float = 0.2, min_size: int = 10,
               max_size: int = 2000, device: torch.device | str = "cpu", block: int = 1024) -> list[np.ndarray]:
    """LFT's local set of each user: users with cosine(smoothed rows) > t (the user itself
    included), at least the `min_size` and at most the `max_size` most similar."""
    n_users = smoothed.shape[0]
    want = np.arange(n_users) if users is None else np.asarray(users, dtype=np.int64)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(want)
    lo, hi = min(min_size, n_users), min(max_size, n_users)
    for start, cos in cosine_rows(smoothed, want, device, block):
        for j in range(cos.shape[0]):
            s = cos[j]
            n = int((s > t).sum())
            n = max(lo, min(hi, n))
            out[start + j] = torch.topk(s, n).indices.cpu().numpy().astype(np.int64)
    return out


def _unit(rows: sp.csr_matrix, device: torch.device) -> tuple[sp.csr_matrix, Tensor]:
    """Rows scaled to unit L2 norm, as CSR and as a sparse tensor on `device`."""
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(1)).ravel()).astype(np.float32)
    unit = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ rows, dtype=np.float32)
    return unit, sparse_csr_tensor(unit, device)


def cosine_rows(rows: sp.csr_matrix, users: np.ndarray, device: torch.device | str = "cpu", block: int = 1024,
                unit: tuple[sp.csr_matrix, Tensor] | None = None):
    """Yield (offset into `users`, cos [b, U]): cosine similarity of the given users' rows with every row."""
    device = torch.device(device)
    unit_csr, ut = unit if unit is not None else _unit(rows, device)
    for start in range(0, len(users), block):
        dense = torch.from_numpy(unit_csr[users[start : start + block]].toarray()).to(device)
        yield start, torch.sparse.mm(ut, dense.T).T


def enlft_anchors(smoothed: sp.csr_matrix, n_anchors: int, *, diversity: float = 1.5,
                  device: torch.device | str = "cpu", block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """EnLFT's central-but-diverse anchors and the similarity columns [U, n_anchors].

    Greedy, as EnLFT: with S the cosine similarity of smoothed rows and A the anchors so far,
    pick argmax_u  sum_{v not in A} S[u, v] / (|U| - |A|)  -  diversity * sum_{a in A} S[u, a] / |A|
    over users not yet chosen (the second term is absent for the first anchor).
    """
    n_users = smoothed.shape[0]
    if not 0 < n_anchors <= n_users:
        raise ConfigError(f"number of anchors must be in 1..{n_users}, got {n_anchors!r}")
    device = torch.device(device)
    unit = _unit(smoothed, device)
    row_sum = torch.zeros(n_users, dtype=torch.float64, device=device)
    for start, cos in cosine_rows(smoothed, np.arange(n_users), device, block, unit):
        row_sum[start : start + cos.shape[0]] = cos.sum(1, dtype=torch.float64)
    chosen: list[int] = []
    columns = torch.zeros(n_users, n_anchors, dtype=torch.float32, device=device)
    dissim = torch.zeros(n_users, dtype=torch.float64, device=device)
    taken = torch.zeros(n_users, dtype=torch.bool, device=device)
    for i in range(n_anchors):
        score = (row_sum - dissim) / (n_users - i)
        if i:
            score = score - diversity * dissim / i
        score = score.masked_fill(taken, -math.inf)
        u = int(torch.argmax(score))
        chosen.append(u)
        taken[u] = True
        col = next(cosine_rows(smoothed, np.array([u]), device, 1, unit))[1][0]
        columns[:, i] = col
        dissim += col.to(torch.float64)
    return np.asarray(chosen, dtype=np.int64), columns.cpu().numpy()
