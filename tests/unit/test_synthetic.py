"""The synthetic generator: schema, determinism, and the structure it promises."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from recsys.data import load_dataset, make_synthetic
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


def test_fast_and_blockwise_for_larger_settings():
    make_synthetic()  # warm-up
    best = min(_timed(make_synthetic) for _ in range(3))
    assert best < 0.2
    big = make_synthetic(n_users=4_500, n_items=1_000, mean_items_per_user=20, seed=3)  # several blocks
    assert big.df["user"].nunique() == 4_500 and not big.df.duplicated(["user", "item"]).any()
    assert big.df.equals(make_synthetic(n_users=4_500, n_items=1_000, mean_items_per_user=20, seed=3).df)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
