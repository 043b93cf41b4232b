"""Unit tests of recsys.data.preprocess on small hand-made interaction tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.data import preprocess as pre
from recsys.data.schema import ITEM, ORDER, RATING, TIMESTAMP, USER
from recsys.errors import ConfigError, DataError


def frame(users, items, ratings=None, timestamps=None, order=None) -> pd.DataFrame:
    n = len(users)
    df = pd.DataFrame({
        USER: users,
        ITEM: items,
        RATING: np.asarray(ratings if ratings is not None else [np.nan] * n, dtype=np.float64),
        TIMESTAMP: np.asarray(timestamps if timestamps is not None else [np.nan] * n, dtype=np.float64),
    })
    if order is not None:
        df[ORDER] = np.asarray(order, dtype=np.int64)
    return df


def pairs(df: pd.DataFrame) -> list[tuple]:
    return list(zip(df[USER].tolist(), df[ITEM].tolist()))


# ----------------------------------------------------------------- binarize / require_known_ratings


def test_binarize_threshold_none_keeps_every_row_including_unknown_ratings():
    df = frame([1, 1, 2], [10, 11, 10], ratings=[1, np.nan, 5])
    out = pre.binarize(df)
    assert len(out) == 3 and (out[RATING] == 1.0).all()
    assert df[RATING].isna().sum() == 1  # input untouched


def test_binarize_threshold_keeps_ratings_at_or_above():
    df = frame([1, 1, 2, 2], [10, 11, 10, 12], ratings=[3.5, 4, 5, 1])
    out = pre.binarize(df, 4)
    assert pairs(out) == [(1, 11), (2, 10)]
    assert (out[RATING] == 1.0).all() and list(out.index) == [0, 1]


def test_binarize_unknown_ratings_raise_unless_bounded_below_threshold():
    df = frame([1, 1, 2, 2], [10, 11, 10, 12], ratings=[5, np.nan, 4, np.nan])
    with pytest.raises(DataError, match=r"2 of 4 ratings are unknown.*threshold=None"):
        pre.binarize(df, 4)
    with pytest.raises(DataError, match=r"threshold > 3"):  # 3 >= threshold: not decidable
        pre.binarize(df, 3, unknown_max=3)
    out = pre.binarize(df, 4, unknown_max=3)  # ML-1M partial file: unknown ratings are all <= 3
    assert pairs(out) == [(1, 10), (2, 10)]


def test_binarize_empty_result_and_non_numeric_rating_are_data_errors():
    with pytest.raises(DataError, match=r"binarize\(threshold=6\) left 0 interactions"):
        pre.binarize(frame([1], [1], ratings=[5]), 6)
    bad = pd.DataFrame({USER: [1], ITEM: [1], RATING: ["good"], TIMESTAMP: [1.0]})
    with pytest.raises(DataError, match="'rating' must be numeric"):
        pre.binarize(bad, 4)
    with pytest.raises(DataError, match=r"no column\(s\) \['rating'\]"):
        pre.binarize(pd.DataFrame({USER: [1], ITEM: [1]}), 4)


def test_require_known_ratings():
    df = frame([1, 1, 2, 3, 3], [1, 2, 1, 1, 2], ratings=[5, np.nan, 3, np.nan, 1])
    with pytest.raises(DataError, match=r"2 of 5 rows have no rating; MELO rating regression needs"):
        pre.require_known_ratings(df, "MELO rating regression")
    known = df.dropna()
    assert pre.require_known_ratings(known, "x") is known


# ----------------------------------------------------------------- dedupe


def test_dedupe_keeps_latest_by_timestamp_in_file_order():
    df = frame([1, 1, 2, 1, 2], [10, 11, 10, 10, 10], ratings=[1, 2, 3, 4, 5], timestamps=[5, 1, 9, 3, 2])
    out = pre.dedupe(df)
    # (1,10): ts 5 (row 0) beats ts 3 (row 3); (2,10): ts 9 (row 2) beats ts 2 (row 4)
    assert out[RATING].tolist() == [1, 2, 3]
    assert len(df) == 5


def test_dedupe_order_column_is_the_authority_and_ties_go_to_the_later_row():
    df = frame([1, 1, 1], [10, 10, 10], ratings=[1, 2, 3], timestamps=[9, 1, 1], order=[0, 2, 1])
    assert pre.dedupe(df)[RATING].tolist() == [2]
    no_time = frame([1, 1, 2], [10, 10, 10], ratings=[1, 2, 3])
    assert pre.dedupe(no_time)[RATING].tolist() == [2, 3]  # file position decides
    tie = frame([1, 1], [10, 10], ratings=[1, 2], timestamps=[4, 4])
    assert pre.dedupe(tie)[RATING].tolist() == [2]


def test_dedupe_refuses_partially_unknown_time():
    df = frame([1, 1], [10, 10], timestamps=[1, np.nan])
    with pytest.raises(DataError, match="1 of 2 rows have no 'timestamp'"):
        pre.dedupe(df)


# ----------------------------------------------------------------- count filters


def core_chain() -> pd.DataFrame:
    """Users x, y on items p, q are a 2-core; a (q, r) and b (r) fall only after two rounds."""
    return frame(["x", "x", "y", "y", "a", "a", "b"], ["p", "q", "p", "q", "q", "r", "r"])


def test_filter_min_count_is_one_pass_and_counts_rows():
    df = core_chain()
    out = pre.filter_min_count(df, min_user=2, min_item=2)  # items first: nothing; users: b goes
    assert sorted(set(out[USER])) == ["a", "x", "y"]
    dup = frame([1, 1, 2], [5, 5, 5])
    assert pre.filter_min_count(dup, min_user=2)[USER].tolist() == [1, 1]  # repeated rows count
    with pytest.raises(DataError, match=r"filter_min_count\(min_user=9, min_item=0\) left 0 interactions"):
        pre.filter_min_count(dup, min_user=9)


def test_k_core_iterates_until_stable():
    df = core_chain()
    one_pass = pre.filter_min_count(pre.filter_min_count(df, min_user=2), min_item=2)
    assert "a" in set(one_pass[USER])  # one user+item pass is not enough ...
    out = pre.k_core(df, min_user=2, min_item=2)
    assert sorted(pairs(out)) == [("x", "p"), ("x", "q"), ("y", "p"), ("y", "q")]  # ... the core is
    assert pairs(out) == [p for p in pairs(df) if p in set(pairs(out))]  # file order kept


def test_k_core_matches_a_naive_fixpoint_on_random_data():
    rng = np.random.default_rng(3)
    df = frame(rng.integers(0, 60, 600), rng.zipf(1.6, 600) % 80)
    out = pre.k_core(df, 5, 4)
    ref = df
    while True:
        uc, ic = ref[USER].value_counts(), ref[ITEM].value_counts()
        nxt = ref[ref[USER].map(uc).ge(5) & ref[ITEM].map(ic).ge(4)]
        if len(nxt) == len(ref):
            break
        ref = nxt
    assert pairs(out) == pairs(ref)
    assert out[USER].value_counts().min() >= 5 and out[ITEM].value_counts().min() >= 4


def test_k_core_empty_names_the_filter():
    with pytest.raises(DataError, match=r"k_core\(min_user=10, min_item=10\) left 0 interactions: lower"):
        pre.k_core(core_chain())


# ----------------------------------------------------------------- time_order


def test_time_order_sorts_users_then_time_with_stable_ties():
    df = frame([2, 1, 2, 1, 2], [1, 2, 3, 4, 5], timestamps=[7, 3, 5, 3, 5])
    out = pre.time_order(df)
    assert pairs(out) == [(1, 2), (1, 4), (2, 3), (2, 5), (2, 1)]  # ties 3/3 and 5/5 in file order
    assert out[ORDER].tolist() == [0, 1, 0, 1, 2]
    assert ORDER not in df.columns


def test_time_order_uses_order_column_over_timestamps_and_file_order_without_time():
    df = frame([1, 1, 1], [1, 2, 3], timestamps=[1, 2, 3], order=[2, 0, 1])
    assert pre.time_order(df)[ITEM].tolist() == [2, 3, 1]
    assert pre.time_order(frame([1, 1, 1], [3, 1, 2]))[ITEM].tolist() == [3, 1, 2]
    with pytest.raises(DataError, match="no 'timestamp'"):
        pre.time_order(frame([1, 1], [1, 2], timestamps=[1, np.nan]))


# ----------------------------------------------------------------- ids


@pytest.mark.parametrize("how, items", [
    ("first", [30, 10, 20]),
    ("sorted", [10, 20, 30]),
    ("popularity", [10, 20, 30]),  # 10 and 20 twice (tie -> smaller id first), 30 once
])
def test_remap_ids_orders(how, items):
    df = frame(["b", "a", "b", "a", "c"], [30, 10, 20, 20, 10])
    out, id_map = pre.remap_ids(df, items_by=how)
    assert id_map.items.tolist() == items
    assert id_map.users.tolist() == ["b", "a", "c"]
    assert out[USER].dtype == np.int64 and out[ITEM].dtype == np.int64
    assert id_map.items[out[ITEM]].tolist() == df[ITEM].tolist()
    assert id_map.users[out[USER]].tolist() == df[USER].tolist()


def test_remap_ids_popularity_puts_most_frequent_first_and_rejects_unknown_order():
    df = frame([1, 2, 3, 1, 2], [7, 9, 9, 8, 9])
    _, id_map = pre.remap_ids(df, items_by="popularity", users_by="sorted")
    assert id_map.items.tolist() == [9, 7, 8] and id_map.users.tolist() == [1, 2, 3]
    with pytest.raises(ConfigError, match="items_by='pop'"):
        pre.remap_ids(df, items_by="pop")


@pytest.mark.parametrize("users, items", [([5, 3, 5], [1, 2, 2]), (["u5", "u3", "u5"], ["i1", "i2", "i2"])])
def test_id_map_json_round_trip_keeps_id_types_and_looks_up(users, items):
    _, id_map = pre.remap_ids(frame(users, items))
    back = pre.IdMap.from_dict(json.loads(json.dumps(id_map.to_dict())))
    assert back.users.tolist() == id_map.users.tolist() and type(back.users[0]) is type(id_map.users[0])
    assert back.n_users == 2 and back.n_items == 2
    assert back.user_index(users[1]) == 1
    assert back.item_index(items[:2]).tolist() == [0, 1]
    with pytest.raises(KeyError, match="unknown original user id"):
        back.user_index(users[0] * 2)


# ----------------------------------------------------------------- matrices and summaries


def test_to_csr_binary_clips_duplicates_and_values_sum():
    df = pd.DataFrame({USER: [0, 0, 1, 0], ITEM: [1, 1, 2, 0], RATING: [2.0, 3.0, 4.0, 1.0]})
    m = pre.to_csr(df, 3, 4)
    assert m.dtype == np.float32 and m.shape == (3, 4) and m.has_sorted_indices
    assert m.toarray().tolist() == [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert pre.to_csr(df, 3, 4, values=RATING)[0, 1] == 5.0


def test_describe_counts():
    df = frame([1, 1, 2, 2], [1, 1, 1, 3], ratings=[5, np.nan, 4, 2])
    d = pre.describe(df)
    assert d == {"n_users": 2, "n_items": 2, "n_interactions": 4, "n_unique_pairs": 3,
                 "density": 0.75, "n_ratings_known": 3}


def test_no_function_mutates_its_input():
    df = frame([2, 1, 2, 1], [1, 2, 1, 3], ratings=[5, 4, 3, 2], timestamps=[4, 3, 2, 1])
    before = df.copy()
    for out in (pre.binarize(df, 3), pre.dedupe(df), pre.filter_min_count(df, 2, 1), pre.k_core(df, 1, 1),
                pre.time_order(df), pre.remap_ids(df)[0]):
        assert out is not df
    pd.testing.assert_frame_equal(df, before)
