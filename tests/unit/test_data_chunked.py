"""Delimited files are read in chunks (loaders._CHUNK_ROWS rows at a time): the result and every
error must be those of reading the file in one go, wherever the chunk boundaries fall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.checks import check_fraction, check_int
from recsys.data import load_dataset, loaders
from recsys.data import preprocess as pre
from recsys.data.preprocess import IdMap
from recsys.data.schema import ITEM, USER
from recsys.errors import ConfigError, DataError
from recsys.protocols import make_split
from recsys.protocols import protocols as _p


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_DATA_HOME", raising=False)
    monkeypatch.setenv("RECSYS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECSYS_OFFLINE", "1")


def _rows(n: int, sep: str, ids=lambda k: k, rating=lambda k: 1 + k % 5, ts=lambda k: 978300760 + k) -> str:
    return "".join(f"{ids(k % 7)}{sep}{ids(k % 11 + 100)}{sep}{rating(k)}{sep}{ts(k)}\n" for k in range(n))


CASES = {
    "ml-100k tabs": ("ml-100k", "u.data", {}, _rows(23, "\t")),
    "ml-1m '::'": ("ml-1m", "ratings.dat", {}, _rows(23, "::")),
    "ml-20m header, half stars": ("ml-20m", "ratings.csv", {},
                                  "userId,movieId,rating,timestamp\n" + _rows(23, ",", rating=lambda k: k % 10 / 2)),
    "msd string ids": ("msd", "train_triplets.txt", {},
                       "".join(f"u{k % 5}x\tS{k % 9}\t{k + 1}\n" for k in range(23))),
    "ml-1m partial, missing optional columns": (
        "ml-1m", "ratings_partial.csv", {},
        "user_id,movie_id,rating,timestamp,chrono_rank\n"
        + "".join(f"{k % 4},{k},{'' if k % 3 else 4},{'' if k % 3 else 978300000 + k},{k // 4}\n" for k in range(23))),
    "csv ISO dates, no rating": ("csv", "d.csv", {},
                                 "user,item,timestamp\n" + "".join(f"{k % 3},{k},2020-01-{k % 28 + 1:02d}\n" for k in range(23))),
    "csv ids numbers then strings": ("csv", "m.csv", {},
                                     "user,item,rating\n" + "".join(f"{k if k < 12 else f'u{k}'},{k},1\n" for k in range(23))),
    "csv ids ints then floats": ("csv", "f.csv", {},
                                 "user,item,rating\n" + "".join(f"{k if k < 12 else k + 0.5},{k},1\n" for k in range(23))),
    "ratings and times beyond float32 / int32": (
        "ml-100k", "u.data", {}, _rows(23, "\t", ids=lambda k: 2**40 + k, rating=lambda k: 0.1 * k - 1.0,
                                       ts=lambda k: -0.0 if k == 13 else 2**33 + k / 4)),
}


def _load(tmp_path, case, chunk_rows, monkeypatch):
    name, file, options, text = CASES[case]
    path = tmp_path / file
    path.write_text(text)
    monkeypatch.setattr(loaders, "_CHUNK_ROWS", chunk_rows)
    if name == "csv":
        return load_dataset("csv", path=path, **options).df
    return load_dataset(name, data_dir=tmp_path, **options).df


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for col in a.columns:  # bit for bit (-0.0, NaN) where numeric
        if a[col].dtype.kind in "if":
            assert np.array_equal(a[col].to_numpy().view(np.uint8), b[col].to_numpy().view(np.uint8)), col


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk_rows", [1, 3, 10])
def test_chunked_read_equals_one_read(tmp_path, monkeypatch, case, chunk_rows):
    whole = _load(tmp_path, case, 10**9, monkeypatch)
    assert len(whole) == 23
    _same(_load(tmp_path, case, chunk_rows, monkeypatch), whole)


def test_mixed_id_chunks_take_the_common_type(tmp_path, monkeypatch):
    strings = _load(tmp_path, "csv ids numbers then strings", 3, monkeypatch)
    assert strings[USER].tolist()[10:14] == ["10", "11", "u12", "u13"]
    floats = _load(tmp_path, "csv ids ints then floats", 3, monkeypatch)
    assert floats[USER].tolist()[10:14] == ["10.0", "11.0", "12.5", "13.5"]


BAD_LATER = [  # (dataset, file, text, message): the fault lies several chunks into the file
    ("ml-100k", "u.data", _rows(9, "\t") + "1\t3\tx\t5\n" + _rows(5, "\t"),
     "ml-100k u.data line 10: rating must be a number, got 'x'"),
    ("ml-100k", "u.data", _rows(9, "\t") + "\n\n1\t3\t4\n" + _rows(5, "\t"),
     "ml-100k u.data line 12: expected 4 fields separated by tabs, got 3: '1\\t3\\t4'"),
    ("ml-100k", "u.data", _rows(9, "\t") + "1\t3\t4\t5\t6\n", "ml-100k u.data line 10: expected 4 fields separated by tabs, got 5"),
    ("ml-1m", "ratings.dat", _rows(9, "::") + "1:2:3:4\n", "ml-1m ratings.dat line 10: expected 4 fields separated by '::', got 1"),
    ("ml-1m", "ratings.dat", _rows(9, "::") + "1::2::::4\n", "ml-1m ratings.dat line 10: rating is empty"),
    ("ml-20m", "ratings.csv", "userId,movieId,rating,timestamp\n" + _rows(9, ",") + "u1,2,3,4\n",
     "ml-20m ratings.csv line 11: user must be an integer, got 'u1'"),
    ("ml-1m", "ratings_partial.csv", "user_id,movie_id,rating,timestamp,chrono_rank\n" + "1,2,,,0\n" * 9 + "1,2,,,\n",
     "ml-1m ratings_partial.csv line 11: order is empty"),
]


@pytest.mark.parametrize("name, file, text, message", BAD_LATER)
def test_bad_line_in_a_later_chunk_is_named_by_its_number(tmp_path, monkeypatch, name, file, text, message):
    (tmp_path / file).write_text(text)
    monkeypatch.setattr(loaders, "_CHUNK_ROWS", 2)
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir=tmp_path)
    assert message in str(err.value)


def test_bad_date_in_a_later_chunk(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"1,{k},2020-01-0{k + 1}\n" for k in range(8)) + "1,9,soon\n")
    monkeypatch.setattr(loaders, "_CHUNK_ROWS", 3)
    with pytest.raises(DataError, match="line 10: timestamp must be a number or an ISO-8601 date, got 'soon'"):
        load_dataset("csv", path=path)


@pytest.mark.parametrize("values", [
    np.array([1, 2, 3], np.int64), np.array([2**40, -5], np.int64), np.array([1.0, 4.5, np.nan], np.float64),
    np.array([0.1, 3.0]), np.array([978300760.0, -0.0]), np.array([2.0**33, 7.0]), np.array([], np.float64),
])
def test_packing_gives_back_every_bit(values):
    parts = [loaders._pack(pd.Series(values)), loaders._pack(pd.Series(values[::-1]))]
    out = loaders._unpack(parts).to_numpy()
    expected = np.concatenate([values, values[::-1]])
    assert out.dtype == values.dtype and parts == []
    assert np.array_equal(out.view(np.uint8), expected.view(np.uint8))


def _dedupe_by_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """dedupe as it was written before it ran on codes: pandas' duplicated on the two columns."""
    pos = np.arange(len(df))
    by_time = np.lexsort((pos, df["timestamp"].to_numpy()))
    latest = ~df.iloc[by_time].duplicated([USER, ITEM], keep="last").to_numpy()
    return df.iloc[np.sort(by_time[latest])].reset_index(drop=True)


@pytest.mark.parametrize("ids", ["int", "str"])
def test_dedupe_and_strong_generalization_on_codes_match_the_table_path(ids):
    rng = np.random.default_rng(3)
    n = 4000
    df = pd.DataFrame({USER: rng.integers(0, 150, n), ITEM: rng.integers(0, 60, n), "rating": 1.0,
                       "timestamp": rng.integers(0, 50, n).astype(float)})  # many repeats and time ties
    if ids == "str":
        df[USER], df[ITEM] = "u" + df[USER].astype(str), "i" + df[ITEM].astype(str)
    deduped = _dedupe_by_pairs(df)
    pd.testing.assert_frame_equal(pre.dedupe(df), deduped)
    a = make_split("strong_generalization", df, n_heldout_users=20, min_user=12, seed=5)
    b = make_split("strong_generalization", deduped, n_heldout_users=20, min_user=12, seed=5)
    assert a.stats["rows_after_dedupe"] == len(deduped) < n
    for key in ("rows_after_min_user", "users_after_min_user", "n_interactions", "n_users", "n_items"):
        assert a.stats[key] == b.stats[key], key
    assert a.id_map.users.tolist() == b.id_map.users.tolist() and a.id_map.items.tolist() == b.id_map.items.tolist()
    for name, m in a.matrices.items():
        assert (m != b.matrices[name]).nnz == 0, name
    _same_split(a, _old_strong_generalization(df, n_heldout_users=20, min_user=12, seed=5))  # the old table path


def test_strong_generalization_min_user_leaving_nothing():
    df = pd.DataFrame({USER: [1, 1, 2], ITEM: [1, 2, 3], "rating": 1.0, "timestamp": 0.0})
    with pytest.raises(DataError, match=r"filter_min_count\(min_user=5, min_item=0\) left 0 interactions"):
        make_split("strong_generalization", df, n_heldout_users=1)


# --------------------------------------------------------------------------- strong_generalization,
# old (table) path as a reference. Copied verbatim, apart from names, from commit e933f56
# (recsys/protocols/protocols.py: strong_generalization, _csr; recsys/data/preprocess.py: dedupe,
# filter_min_count), before it was rewritten to work on integer codes. The helpers it also used
# (pre._require_columns, pre._time_key, pre._nonempty, pre.to_csr, _rank_within, _rng, _seed,
# _filtered, _finish, IdMap, Split) are unchanged since e933f56 and are imported.


def _old_dedupe(df: pd.DataFrame) -> pd.DataFrame:
    pre._require_columns(df, (USER, ITEM), "dedupe")
    if not df.duplicated([USER, ITEM]).any():
        return df.reset_index(drop=True)
    pos = np.arange(len(df))
    key = pre._time_key(df, "dedupe")
    by_time = pos if key is None else np.lexsort((pos, key))
    ranked = df.iloc[by_time]
    latest = ~ranked.duplicated([USER, ITEM], keep="last").to_numpy()
    return df.iloc[np.sort(by_time[latest])].reset_index(drop=True)


def _old_filter_min_count(df: pd.DataFrame, min_user: int = 0, min_item: int = 0) -> pd.DataFrame:
    pre._require_columns(df, (USER, ITEM), "filter_min_count")
    out = df
    if min_item > 0:
        counts = out[ITEM].value_counts()
        out = out[out[ITEM].isin(counts.index[counts >= min_item])]
    if min_user > 0:
        counts = out[USER].value_counts()
        out = out[out[USER].isin(counts.index[counts >= min_user])]
    return pre._nonempty(out.reset_index(drop=True), f"filter_min_count(min_user={min_user}, min_item={min_item})")


def _old_csr(users, items, n_rows, n_items):
    return pre.to_csr(pd.DataFrame({USER: users, ITEM: items}), n_rows, n_items)


def _old_strong_generalization(df, n_heldout_users=None, heldout_fraction=None, fold_in=0.8, min_user=5,
                               seed=98765):
    _TRAIN, _VALID, _TEST, _filtered = _p._TRAIN, _p._VALID, _p._TEST, _p._filtered
    params = dict(n_heldout_users=n_heldout_users, heldout_fraction=heldout_fraction, fold_in=fold_in,
                  min_user=min_user, seed=seed)
    seed = _p._seed(seed)
    if (n_heldout_users is None) == (heldout_fraction is None):
        raise ConfigError(
            "strong_generalization: give exactly one of n_heldout_users (the number of validation "
            "users, and again of test users; Liang et al.: 10,000 for ML-20M, 40,000 Netflix, 50,000 MSD) "
            f"or heldout_fraction (share of users in each held-out set, e.g. 0.1); got "
            f"n_heldout_users={n_heldout_users!r}, heldout_fraction={heldout_fraction!r}"
        )
    if n_heldout_users is not None:
        check_int("n_heldout_users", n_heldout_users, 1)
    else:
        check_fraction("heldout_fraction", heldout_fraction, upper=0.5)
    holdout_share = 1.0 - check_fraction("fold_in", fold_in)
    min_user = check_int("min_user", min_user, 1)

    stats: dict = {"rows_in": int(len(df))}
    df = _filtered(df, stats, "dedupe", _old_dedupe(df))
    df = _filtered(df, stats, "min_user", _old_filter_min_count(df, min_user=min_user))
    codes, uniques = pd.factorize(df[USER], sort=True)
    n = len(uniques)
    n_h = n_heldout_users if n_heldout_users is not None else int(heldout_fraction * n)
    if n_h < 1:
        raise ConfigError(
            f"strong_generalization: heldout_fraction={heldout_fraction:g} of {n:,} users is 0 held-out "
            f"users; raise heldout_fraction to at least {1 / n:.3g} or give n_heldout_users"
        )
    if 2 * n_h >= n:
        raise ConfigError(
            f"strong_generalization: {n_h:,} validation + {n_h:,} test users leave no training users "
            f"among the {n:,} users with >= {min_user} items; use n_heldout_users between 1 and "
            f"{(n - 1) // 2:,} (or a smaller heldout_fraction)"
        )
    rng = _p._rng(seed)
    perm = rng.permutation(n)
    user_part = np.empty(n, dtype=np.int8)
    user_part[perm[: n - 2 * n_h]] = _TRAIN
    user_part[perm[n - 2 * n_h: n - n_h]] = _VALID
    user_part[perm[n - n_h:]] = _TEST
    row_part = user_part[codes]

    items = pd.unique(df[ITEM].to_numpy()[row_part == _TRAIN])
    item_idx = pd.Index(items).get_indexer(df[ITEM])
    keep = (row_part == _TRAIN) | (item_idx >= 0)
    stats["heldout_rows_dropped_unseen_items"] = int((~keep).sum())
    has_rows = np.bincount(codes[keep], minlength=n) > 0
    blocks = {p: perm[user_part[perm] == p] for p in (_TRAIN, _VALID, _TEST)}
    for p, name in ((_VALID, "valid"), (_TEST, "test")):
        stats[f"{name}_users_dropped_no_train_items"] = int((~has_rows[blocks[p]]).sum())
        blocks[p] = blocks[p][has_rows[blocks[p]]]
    user_order = np.concatenate([blocks[_TRAIN], blocks[_VALID], blocks[_TEST]])
    new_user = np.full(n, -1, dtype=np.int64)
    new_user[user_order] = np.arange(len(user_order))
    id_map = IdMap(users=np.asarray(uniques)[user_order], items=items)
    n_items = id_map.n_items
    u, i, part = new_user[codes[keep]], item_idx[keep].astype(np.int64), row_part[keep]

    n_train, n_valid = len(blocks[_TRAIN]), len(blocks[_VALID])
    offsets = {_TRAIN: 0, _VALID: n_train, _TEST: n_train + n_valid}
    sel = part == _TRAIN
    matrices = {"train": _old_csr(u[sel], i[sel], n_train, n_items)}
    arrays = {"train_users": np.arange(n_train, dtype=np.int64)}
    for p, name in ((_VALID, "valid"), (_TEST, "test")):
        sel = part == p
        pu, pi, n_p = u[sel] - offsets[p], i[sel], len(blocks[p])
        size = np.bincount(pu, minlength=n_p)
        n_hold = np.where(size >= _p._MIN_ITEMS_TO_SPLIT, np.floor(np.round(holdout_share * size, 9)), 0)
        hold = _p._rank_within(pu, rng.random(len(pu))) < n_hold[pu]
        matrices[f"{name}_fold_in"] = _old_csr(pu[~hold], pi[~hold], n_p, n_items)
        matrices[f"{name}_holdout"] = _old_csr(pu[hold], pi[hold], n_p, n_items)
        arrays[f"{name}_users"] = offsets[p] + np.arange(n_p, dtype=np.int64)
        stats[f"{name}_users_without_holdout"] = int((n_hold == 0).sum())
    stats["n_train_users"], stats["n_valid_users"], stats["n_test_users"] = n_train, n_valid, len(blocks[_TEST])
    stats["n_interactions"] = int(len(u))
    meta = {
        "paper": "Liang et al., Variational Autoencoders for Collaborative Filtering, WWW 2018 (dawenl/vae_cf); "
                 "POSIT (Xu et al., KDD-EAI 2024) uses the same split",
        "recall_denominator": "min(k, n)",
        "ndcg": "binary gains, IDCG over min(k, n) positions",
        "min_items_to_split": _p._MIN_ITEMS_TO_SPLIT,
        "evaluation": {
            stage: {"users": f"{stage}_users", "input": [f"{stage}_fold_in"], "target": f"{stage}_holdout",
                    "mask": [f"{stage}_fold_in"]}
            for stage in ("valid", "test")
        },
        "note": "rows of held-out users with < 5 items have an empty holdout; metrics skip users without targets",
    }
    return _p._finish("strong_generalization", seed, params, id_map, matrices, arrays, stats, meta)


def _ids_identical(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    if a.dtype.kind in "iuf":
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), what  # bit for bit (-0.0, NaN)
    else:  # object: same type and repr for every id (-0.0 vs 0.0, None vs NaN, 1 vs "1")
        assert [(type(x), repr(x)) for x in a.tolist()] == [(type(x), repr(x)) for x in b.tolist()], what


def _same_split(new, old) -> None:
    assert (new.protocol, new.seed, new.params) == (old.protocol, old.seed, old.params)
    assert new.stats == old.stats and new.meta == old.meta
    _ids_identical(new.id_map.users, old.id_map.users, "users")
    _ids_identical(new.id_map.items, old.id_map.items, "items")
    assert list(new.matrices) == list(old.matrices)
    for name, m in new.matrices.items():
        o = old.matrices[name]
        assert m.format == o.format == "csr" and m.shape == o.shape and m.dtype == o.dtype, name
        for attr in ("indptr", "indices", "data"):
            x, y = getattr(m, attr), getattr(o, attr)
            assert x.dtype == y.dtype and np.array_equal(x, y), (name, attr, x.dtype, y.dtype)
    assert list(new.arrays) == list(old.arrays)
    for name, a in new.arrays.items():
        assert a.dtype == old.arrays[name].dtype and np.array_equal(a, old.arrays[name]), name


def _table(seed: int, n: int = 600, n_users: int = 60, n_items: int = 40, times: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({USER: rng.integers(0, n_users, n), ITEM: rng.integers(0, n_items, n),
                         "rating": rng.integers(1, 6, n).astype(float),
                         "timestamp": rng.integers(0, times, n).astype(float)})


def _strs(df):
    return df.assign(**{USER: "u" + df[USER].astype(str), ITEM: "i" + df[ITEM].astype(str)})


SG_CASES = {  # name: (table, strong_generalization parameters)
    "int ids, repeats, time ties": (_table(0), dict(n_heldout_users=8)),
    "str ids, repeats, time ties": (_strs(_table(1)), dict(n_heldout_users=8)),
    "repeats, distinct times": (_table(2, times=10**6), dict(n_heldout_users=5, seed=3)),
    "repeats, all times tied": (_table(3, times=1), dict(n_heldout_users=5, seed=4)),
    "repeats, no timestamp (file order)": (_table(4).drop(columns="timestamp"), dict(n_heldout_users=6)),
    "repeats, unknown timestamps (file order)": (_table(5).assign(timestamp=np.nan), dict(n_heldout_users=6)),
    "order column with ties": (_table(6).assign(order=lambda d: d["timestamp"].astype(np.int64) % 4),
                               dict(n_heldout_users=6)),
    "no repeats": (_table(7, n=500).drop_duplicates([USER, ITEM]), dict(n_heldout_users=4, min_user=3)),
    "min_user drops users": (_table(8, n=500, n_users=120), dict(n_heldout_users=6, min_user=5)),
    "min_user drops most users, str": (_strs(_table(9, n=500, n_users=100)), dict(n_heldout_users=2, min_user=7)),
    "min_user=1, fold_in 0.5": (_table(10, n=300, n_users=100, n_items=200), dict(n_heldout_users=20, min_user=1,
                                                                                   fold_in=0.5)),
    "heldout_fraction": (_table(11), dict(heldout_fraction=0.2, seed=11)),
    "heldout_fraction, fold_in 0.95": (_table(12), dict(heldout_fraction=0.3, fold_in=0.95, seed=2)),
    "heldout_fraction, fold_in 0.05": (_table(13), dict(heldout_fraction=0.1, fold_in=0.05, seed=2)),
    "many unseen items for held-out users": (_table(14, n=300, n_users=40, n_items=250),
                                             dict(n_heldout_users=10, min_user=2)),
    "large sparse ids": (_table(15).assign(**{USER: lambda d: d[USER] * 2**40 - 7, ITEM: lambda d: -d[ITEM] * 2**35}),
                         dict(n_heldout_users=8)),
    "float ids": (_table(16).astype({USER: float, ITEM: float}).assign(**{ITEM: lambda d: d[ITEM] / 4}),
                  dict(n_heldout_users=8)),
    "NaN user id": (_table(17).astype({USER: float}).assign(**{USER: lambda d: d[USER].where(d[USER] % 9 != 0)}),
                    dict(n_heldout_users=8)),
    "NaN item id": (_table(18).astype({ITEM: float}).assign(**{ITEM: lambda d: d[ITEM].where(d[ITEM] % 7 != 0)}),
                    dict(n_heldout_users=8)),
    "None str ids": (_strs(_table(19)).assign(**{USER: lambda d: d[USER].where(d[USER] != "u3", None),
                                                  ITEM: lambda d: d[ITEM].where(d[ITEM] != "i3", None)}),
                     dict(n_heldout_users=8)),
}


def _signed_zero_dropped_by_dedupe(col: str) -> pd.DataFrame:
    """Float ids where the first row of id 0 spells it -0.0 and is an older repeat that dedupe drops."""
    df = _table(30).astype({USER: float, ITEM: float})
    first = pd.DataFrame({USER: [0.0], ITEM: [0.0], "rating": [1.0], "timestamp": [-1.0]})
    last = first.assign(timestamp=1e9)
    first[col] = -0.0
    return pd.concat([first, df, last], ignore_index=True)


def _none_and_nan_items() -> pd.DataFrame:
    df = _strs(_table(31)).astype({ITEM: object})
    df.loc[df[ITEM] == "i3", ITEM] = None
    df.loc[df[ITEM] == "i4", ITEM] = np.nan
    return df


# Known differences, none reachable from the loaders (their ids are int64 or str, never NaN or float).
_SIGNED_ZERO = "the new path names an id by its first row in the whole table (-0.0), the old by its first row after dedupe (0.0)"
SG_DIFFERENCES = {
    "-0.0 user id only in a row dedupe drops": (_signed_zero_dropped_by_dedupe(USER), dict(n_heldout_users=8),
                                                pytest.mark.xfail(strict=True, reason=_SIGNED_ZERO)),
    "-0.0 item id only in a row dedupe drops": (_signed_zero_dropped_by_dedupe(ITEM), dict(n_heldout_users=8),
                                                pytest.mark.xfail(strict=True, reason=_SIGNED_ZERO)),
    "None and NaN item ids in one object column": (_none_and_nan_items(), dict(n_heldout_users=8), pytest.mark.xfail(
        strict=True, raises=pd.errors.InvalidIndexError,
        reason="old path: pd.unique keeps None and NaN apart, so Index.get_indexer raises InvalidIndexError; "
               "the new path's factorize makes them one item")),
}
SG_CASES.update({name: case[:2] for name, case in SG_DIFFERENCES.items()})


@pytest.mark.parametrize("case", [pytest.param(name, marks=SG_DIFFERENCES[name][2]) if name in SG_DIFFERENCES
                                  else name for name in SG_CASES])
def test_strong_generalization_on_codes_equals_the_old_table_path(case):
    df, params = SG_CASES[case]
    before = df.copy()
    new = make_split("strong_generalization", df, **params)
    old = _old_strong_generalization(df, **params)
    pd.testing.assert_frame_equal(df, before)  # neither path writes to the caller's table
    _same_split(new, old)
    assert new.stats["rows_after_dedupe"] <= len(df)


SG_RAISES = {  # both paths raise the same error
    "min_user leaves nothing": (_table(20, n=50), dict(n_heldout_users=1, min_user=40)),
    "all user ids NaN": (_table(21).assign(**{USER: np.nan}), dict(n_heldout_users=1)),
    "some timestamps unknown": (_table(22).assign(timestamp=lambda d: d["timestamp"].where(d.index != 5)),
                                dict(n_heldout_users=2)),
    "too many held-out users after min_user": (_table(23, n=400, n_users=100), dict(n_heldout_users=10, min_user=6)),
    "heldout_fraction gives 0 users": (_table(24, n=200, n_users=20), dict(heldout_fraction=0.01)),
    "empty table": (_table(25).iloc[:0], dict(n_heldout_users=1)),
    "fold_in 1.0": (_table(26), dict(n_heldout_users=2, fold_in=1.0)),
    "no held-out size": (_table(27), dict()),
}


@pytest.mark.parametrize("case", list(SG_RAISES))
def test_strong_generalization_on_codes_raises_as_the_old_table_path(case):
    df, params = SG_RAISES[case]
    with pytest.raises((DataError, ConfigError)) as old:
        _old_strong_generalization(df, **params)
    with pytest.raises(old.type) as new:
        make_split("strong_generalization", df, **params)
    assert str(new.value) == str(old.value)
