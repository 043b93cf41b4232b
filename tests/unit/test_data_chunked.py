"""Delimited files are read in chunks (loaders._CHUNK_ROWS rows at a time): the result and every
error must be those of reading the file in one go, wherever the chunk boundaries fall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data import load_dataset, loaders
from recsys.data import preprocess as pre
from recsys.data.schema import ITEM, USER
from recsys.errors import DataError
from recsys.protocols import make_split


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


def test_strong_generalization_min_user_leaving_nothing():
    df = pd.DataFrame({USER: [1, 1, 2], ITEM: [1, 2, 3], "rating": 1.0, "timestamp": 0.0})
    with pytest.raises(DataError, match=r"filter_min_count\(min_user=5, min_item=0\) left 0 interactions"):
        make_split("strong_generalization", df, n_heldout_users=1)
