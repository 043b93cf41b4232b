"""The synthetic generator: schema, determinism, and the structure it promises."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from recsys.data import load_dataset, make_synthetic
from recsys.data.synthetic import _BLOCK
from recsys.errors import ConfigError


@pytest.fixture(scope="module")
def ds():
    return make_synthetic()


def test_schema_ids_ratings_and_time(ds):
    df = ds.df
    assert ds.name == "synthetic" and ds.info.name == "synthetic" and ds.source is None
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert df.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "float64"]
    assert df["user"].between(0, 499).all() and df["item"].between(0, 299).all()
    assert set(df["user"]) == set(range(500))
    assert df["rating"].isin([1.0, 2.0, 3.0, 4.0, 5.0]).all() and df["rating"].nunique() == 5
    assert (np.diff(df["user"]) >= 0).all()  # grouped by user ...
    same_user = np.diff(df["user"]) == 0
    assert (np.diff(df["timestamp"])[same_user] > 0).all()  # ... in strictly increasing time
    sizes = df.groupby("user").size()
    assert sizes.min() >= 3 and abs(sizes.mean() - 30) < 5
    assert not df.duplicated(["user", "item"]).any()


def test_ground_truth_arrays(ds):
    extra = ds.extra
    assert extra["is_niche"].shape == (500,) and extra["is_niche"].dtype == bool
    assert extra["is_niche"].sum() == 100  # niche_fraction 0.2
    assert (extra["user_group"] >= 0).tolist() == extra["is_niche"].tolist()
    assert extra["item_cluster"].shape == (300,) and set(extra["item_cluster"]) == {-1, 0, 1, 2, 3}
    assert (extra["item_cluster"] == -1).sum() == 60  # head_fraction 0.2
    assert np.isclose(extra["item_popularity"].sum(), 1.0)


def test_same_seed_same_data_other_seed_other_data(ds):
    again = make_synthetic()
    pd.testing.assert_frame_equal(ds.df, again.df)
    for key in ds.extra:
        np.testing.assert_array_equal(ds.extra[key], again.extra[key])
    assert not ds.df.equals(make_synthetic(seed=1).df)
    assert load_dataset("synthetic", seed=0).df.equals(ds.df)


def test_long_tail(ds):
    counts = ds.df["item"].value_counts().to_numpy()  # sorted, most popular first
    share_top10 = counts[: len(counts) // 10].sum() / counts.sum()
    assert share_top10 > 0.3  # 3x what a uniform catalogue gives
    assert counts[0] > 10 * counts[-1]
    # mainstream users follow the popularity weights (ranks: the head saturates, one item per user)
    mainstream = ds.df[~ds.extra["is_niche"][ds.df["user"]]]
    observed = mainstream["item"].value_counts().reindex(range(300), fill_value=0)
    rank_corr = np.corrcoef(observed.rank(), pd.Series(ds.extra["item_popularity"]).rank())[0, 1]
    assert rank_corr > 0.75


def test_niche_users_consume_their_cluster_and_less_popular_items(ds):
    df = ds.df
    niche = ds.extra["is_niche"][df["user"]]
    popularity = df["item"].map(df["item"].value_counts())
    assert popularity[niche].mean() < 0.7 * popularity[~niche].mean()
    own = (ds.extra["item_cluster"][df["item"]] == ds.extra["user_group"][df["user"]]) & niche
    assert own[niche].mean() > 0.6
    assert df["rating"][own].mean() > df["rating"][niche & ~own].mean() + 0.3


def _hit_rate(ds, scores_for) -> np.ndarray:
    """Per user: is one random held-out item in the top 10 of ``scores_for(train matrix)``?"""
    held_out = ds.df.groupby("user").sample(1, random_state=0)
    train = ds.df.drop(held_out.index)
    x = np.zeros((500, 300))
    x[train["user"], train["item"]] = 1
    scores = scores_for(x)
    scores[x > 0] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    return (top[held_out["user"]] == held_out["item"].to_numpy()[:, None]).any(axis=1)


def test_user_item_structure_beats_most_popular(ds):
    def popular(x):
        return np.tile(x.sum(0), (len(x), 1))

    def ease(x, reg=50.0):
        p = np.linalg.inv(x.T @ x + reg * np.eye(x.shape[1]))
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0)
        return x @ b

    niche = ds.extra["is_niche"]  # held-out rows come one per user, in user order
    hits_pop, hits_ease = _hit_rate(ds, popular), _hit_rate(ds, ease)
    assert hits_ease.mean() > 1.3 * hits_pop.mean()
    assert hits_ease[niche].mean() > 2 * hits_pop[niche].mean()  # most-popular fails niche users


def test_histories_drift_along_the_release_order(ds):
    df = ds.df
    position = df.groupby("user").cumcount()
    release = ds.extra["item_release"][df["item"]]
    assert np.corrcoef(position, release)[0, 1] > 0.5


def test_repeat_interactions_on_request():
    df = make_synthetic(duplicate_fraction=0.1).df
    assert 0.05 < df.duplicated(["user", "item"]).mean() < 0.15
    same_user = np.diff(df["user"]) == 0
    assert (np.diff(df["timestamp"])[same_user] > 0).all()


def test_vectorised_and_blockwise_for_larger_settings(monkeypatch):
    """No per-user Python work: the generator executes about as many Python lines for 1,900 users
    as for 200 (one user block each) and a bounded number more per extra block; it draws its noise
    in user blocks of at most ``_BLOCK`` score cells, so memory stays bounded for large settings.
    (Counts, not timings: speed is for benchmarks, not tests.)"""
    settings = dict(n_items=1_000, mean_items_per_user=20, seed=3)
    step = _BLOCK // 1_000  # users per block: 2,000
    assert 1_900 <= step < 4_500 // 2  # the premise: 200 and 1,900 users in one block, 4,500 in three
    one_block_small, one_block_large = (_lines(make_synthetic, n_users=n, **settings) for n in (200, 1_900))
    three_blocks = _lines(make_synthetic, n_users=4_500, **settings)
    assert abs(one_block_large - one_block_small) < 500  # a line per user in a loop would add >= 1,700
    assert 0 < three_blocks - one_block_large < 2 * 500  # two more blocks, a bounded cost each

    real_rng = np.random.default_rng
    noise_shapes = []

    class Recording:  # the real generator (same stream), noting the shape of each noise draw
        def __init__(self, seed):
            self._rng = real_rng(seed)

        def __getattr__(self, name):
            return getattr(self._rng, name)

        def standard_exponential(self, size, **kwargs):
            noise_shapes.append(size)
            return self._rng.standard_exponential(size, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", Recording)
    big = make_synthetic(n_users=4_500, **settings)  # several blocks
    monkeypatch.undo()
    assert noise_shapes == [(min(step, 4_500 - lo), 1_000) for lo in range(0, 4_500, step)]
    assert all(rows * cols <= _BLOCK for rows, cols in noise_shapes)
    assert big.df["user"].nunique() == 4_500 and not big.df.duplicated(["user", "item"]).any()
    assert big.df.equals(make_synthetic(n_users=4_500, **settings).df)


def _lines(fn, **kwargs) -> int:
    """Python lines executed while ``fn(**kwargs)`` runs (sys.settrace 'line' events, every frame):
    a Python loop executes lines per iteration, a numpy operation over a whole array does not."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        count += event == "line"
        return trace

    before = sys.gettrace()
    sys.settrace(trace)
    try:
        fn(**kwargs)
    finally:
        sys.settrace(before)
    return count


@pytest.mark.parametrize("kwargs, message", [
    ({"n_users": 0}, "n_users must be >= 1"),
    ({"n_items": 2}, "n_items must be >= 3"),
    ({"niche_fraction": 1.5}, r"niche_fraction must be in \[0, 1\]"),
    ({"mean_items_per_user": 400}, r"mean_items_per_user must be in \[3, n_items=300\]"),
    ({"n_groups": 300}, "cannot fill n_groups=300 clusters"),
    ({"popularity_exponent": -1}, "popularity_exponent must be >= 0"),
])
def test_bad_arguments_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_synthetic(**kwargs)
