"""A seeded synthetic interaction table with the structure the project's methods target.

* Item popularity is Zipf-like (long tail); the most popular ``head_fraction`` of items is the
  "head", the rest is split into ``n_groups`` niche clusters.
* Mainstream users pick items by popularity; niche users (``niche_fraction``) pick mostly from
  their own group's cluster (``niche_focus``), so the consumed-item popularity separates the
  groups and most-popular serves niche users badly.
* Every user also has a low-rank taste over all items, so a model that learns user-item
  structure beats most-popular for everyone.
* Each item has a release position; users consume items roughly in that order, so a user's
  history drifts along the timeline (and, for niche users, through their cluster): sequence
  models have a next-item signal to learn.
* Ratings 1-5 follow taste, and niche users rate their own cluster's items higher.

Sampling without replacement is the Gumbel-top-k trick over user-blocks of the score matrix:
no per-user Python loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.registry import Dataset, get_info
from recsys.data.schema import ITEM, RATING, TIMESTAMP, USER
from recsys.errors import ConfigError

_TASTE_DIM = 8
_TASTE_WEIGHT = 2.0  # strength of the low-rank taste in item choice (log-odds per unit)
_MIN_ITEMS = 3  # every user gets at least this many interactions (enough for leave-one-out)
_BLOCK = 2_000_000  # score-matrix cells per user block: bounds memory for large settings
_START = 1_577_836_800  # 2020-01-01 UTC
_DAY = 86_400.0


def _check(n_users: int, n_items: int, n_groups: int, niche_fraction: float, mean_items_per_user: float,
           popularity_exponent: float, head_fraction: float, niche_focus: float,
           duplicate_fraction: float) -> int:
    """ConfigError on a bad argument; returns the number of head items."""
    problems = []
    if n_users < 1:
        problems.append(f"n_users must be >= 1, got {n_users}")
    if n_items < _MIN_ITEMS:
        problems.append(f"n_items must be >= {_MIN_ITEMS}, got {n_items}")
    if n_groups < 1:
        problems.append(f"n_groups must be >= 1, got {n_groups}")
    for name, value in (("niche_fraction", niche_fraction), ("head_fraction", head_fraction),
                        ("niche_focus", niche_focus), ("duplicate_fraction", duplicate_fraction)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name} must be in [0, 1], got {value}")
    if not _MIN_ITEMS <= mean_items_per_user <= n_items:
        problems.append(f"mean_items_per_user must be in [{_MIN_ITEMS}, n_items={n_items}], "
                        f"got {mean_items_per_user}")
    if popularity_exponent < 0:
        problems.append(f"popularity_exponent must be >= 0, got {popularity_exponent}")
    n_head = max(1, round(head_fraction * n_items))
    if n_items - n_head < n_groups:
        problems.append(f"the {n_items - n_head} non-head items cannot fill n_groups={n_groups} clusters; "
                        "lower head_fraction or n_groups")
    if problems:
        raise ConfigError("make_synthetic: " + "; ".join(problems))
    return n_head


def _cumsum_by_user(users: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Running sum of ``gaps`` restarting at each new user (rows grouped by user)."""
    total = np.cumsum(gaps)
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    before = total[starts] - gaps[starts]
    return total - np.repeat(before, np.diff(np.r_[starts, len(users)]))


def make_synthetic(
    n_users: int = 500,
    n_items: int = 300,
    n_groups: int = 4,
    niche_fraction: float = 0.2,
    mean_items_per_user: float = 30,
    popularity_exponent: float = 1.5,
    head_fraction: float = 0.2,
    niche_focus: float = 0.8,
    duplicate_fraction: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Generate a :class:`Dataset` named ``synthetic``; the same arguments give the same data.

    Ids are 0..n-1 (int64); rows are grouped by user in time order with strictly increasing
    timestamps. ``duplicate_fraction`` adds that share of repeat interactions (a user
    re-consuming an item later); by default every (user, item) pair is unique.
    ``ds.extra`` holds the ground truth: ``is_niche`` and ``user_group`` (-1 = mainstream) per
    user id, ``item_cluster`` (-1 = head item), ``item_popularity`` (the popularity part of
    mainstream users' choice weights) and ``item_release`` (timeline position) per item id.
    """
    n_head = _check(n_users, n_items, n_groups, niche_fraction, mean_items_per_user,
                    popularity_exponent, head_fraction, niche_focus, duplicate_fraction)
    rng = np.random.default_rng(seed)

    rank = rng.permutation(n_items)  # 0 = most popular; ids carry no popularity information
    popularity = (rank + 1.0) ** -popularity_exponent
    popularity /= popularity.sum()
    item_cluster = np.full(n_items, -1, dtype=np.int64)
    tail = rng.permutation(np.flatnonzero(rank >= n_head))
    item_cluster[tail] = np.arange(len(tail)) % n_groups
    cluster_size = np.bincount(item_cluster[tail], minlength=n_groups)
    release = rng.random(n_items)

    user_group = np.full(n_users, -1, dtype=np.int64)
    niche_users = rng.choice(n_users, round(niche_fraction * n_users), replace=False)
    user_group[niche_users] = rng.integers(n_groups, size=len(niche_users))
    is_niche = user_group >= 0

    sigma = 0.5  # lognormal activity: a few heavy users, many light ones
    counts = rng.lognormal(np.log(mean_items_per_user) - sigma**2 / 2, sigma, n_users)
    counts = np.clip(np.rint(counts), _MIN_ITEMS, n_items).astype(np.int64)

    user_taste = rng.normal(size=(n_users, _TASTE_DIM))
    item_taste = rng.normal(size=(_TASTE_DIM, n_items)) / np.sqrt(_TASTE_DIM)
    # Choice log-weights per group (row g) and for mainstream users (last row, index -1).
    own_cluster = item_cluster[None, :] == np.arange(n_groups)[:, None]
    with np.errstate(divide="ignore"):  # log(0) = -inf: ranked after every item with a weight
        log_weight = np.log(np.vstack([(1 - niche_focus) * popularity
                                       + niche_focus * own_cluster / cluster_size[:, None],
                                       popularity])).astype(np.float32)

    users, items, ratings = [], [], []
    step = max(1, _BLOCK // n_items)
    for lo in range(0, n_users, step):
        block = slice(lo, min(lo + step, n_users))
        taste = user_taste[block] @ item_taste
        # Gumbel-top-k: the k largest log w + Gumbel noise are a weighted draw without replacement
        # (-log of an Exp(1) draw is Gumbel noise).
        # float32 keys: half the memory traffic of the dominant passes, ample precision for ranking.
        noise = rng.standard_exponential(taste.shape, dtype=np.float32)
        noise = np.log(np.maximum(noise, np.finfo(np.float32).tiny, out=noise), out=noise)  # no log(0)
        keys = log_weight[user_group[block]] + _TASTE_WEIGHT * taste.astype(np.float32) - noise
        k = int(counts[block].max())  # only the top k keys per row need sorting
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < n_items else np.arange(n_items)[None, :]
        top = np.broadcast_to(top, (len(keys), k))
        by_key = np.argsort(-np.take_along_axis(keys, top, 1), axis=1, kind="stable")
        ranked = np.take_along_axis(top, by_key, 1)
        rows, cols = np.nonzero(np.arange(k)[None, :] < counts[block][:, None])
        chosen = ranked[rows, cols]
        group = user_group[block][rows]
        own = (item_cluster[chosen] == group) & (group >= 0)
        score = 3.4 + 0.8 * taste[rows, chosen] + 1.0 * own + rng.normal(0, 0.7, len(rows))
        users.append(rows + lo)
        items.append(chosen)
        ratings.append(np.clip(np.rint(score), 1, 5))
    user, item, rating = (np.concatenate(a) for a in (users, items, ratings))

    time_key = release[item] + rng.normal(0, 0.05, len(item))
    n_repeat = round(duplicate_fraction * len(user))
    if n_repeat:
        again = rng.choice(len(user), n_repeat, replace=n_repeat > len(user))
        user, item, rating = (np.r_[a, a[again]] for a in (user, item, rating))
        time_key = np.r_[time_key, time_key[again] + rng.exponential(0.1, n_repeat)]
    order = np.lexsort((time_key, user))
    user, item, rating = user[order], item[order], rating[order]

    gaps = np.ceil(rng.exponential(2 * _DAY, len(user))) + 1  # >= 1 s: strictly increasing times
    start = _START + np.floor(rng.random(n_users) * 365 * _DAY)
    timestamp = start[user] + _cumsum_by_user(user, gaps)

    df = pd.DataFrame({USER: user.astype(np.int64), ITEM: item.astype(np.int64),
                       RATING: rating.astype(np.float64), TIMESTAMP: timestamp.astype(np.float64)})
    extra = {"is_niche": is_niche, "user_group": user_group, "item_cluster": item_cluster,
             "item_popularity": popularity, "item_release": release}
    return Dataset("synthetic", df, get_info("synthetic"), extra=extra)
