"""The dataset registry, file resolution, every loader format and every bad-input error.

Format and error tests run on tiny files written under tmp_path. The real-data tests read the
shared files under $RECSYS_DATA_HOME and are skipped when it is not set.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import (DEFAULT_DATASET, Dataset, get_info, list_datasets, load_dataset, make_synthetic,
                         resolve_data_dir)
from recsys.data import loaders, registry
from recsys.data.download import EMBEDDED_DIR
from recsys.errors import ConfigError, DataError

REAL_HOME = os.environ.get("RECSYS_DATA_HOME")  # read before the autouse fixture unsets it
requires_data = pytest.mark.skipif(
    not (REAL_HOME and Path(REAL_HOME).is_dir()),
    reason="RECSYS_DATA_HOME is not set: the real-data checks read the shared data folder "
           "(CI sets it to ../shared/data)")

FILE_DATASETS = ["amazon-beauty", "amazon-cds", "amazon-digital-music", "amazon-toys", "ml-100k", "ml-10m",
                 "ml-1m", "ml-20m", "msd", "netflix", "yelp"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No data home, a private cache, and never a download."""
    monkeypatch.delenv("RECSYS_DATA_HOME", raising=False)
    monkeypatch.setenv("RECSYS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECSYS_OFFLINE", "1")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_zip(path: Path, members: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def rows(ds: Dataset, *cols: str) -> list[tuple]:
    return list(ds.df[list(cols)].itertuples(index=False, name=None))


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_dataset_with_complete_info():
    assert list_datasets() == sorted(FILE_DATASETS + ["csv", "synthetic"])
    assert DEFAULT_DATASET == "amazon-digital-music" and get_info(DEFAULT_DATASET).embedded
    for name in list_datasets():
        info = get_info(name)
        assert info.name == name and info.kind in ("ratings", "implicit", "sequence")
        assert info.title and info.format and info.licence and info.how_to_get
        if name in FILE_DATASETS:
            assert info.files and info.folders and info.citation.lstrip().startswith("@")
            readable = {f for f in info.files if not f.endswith(".zip")}
            assert readable == set(loaders._FORMATS[name]), name
        if info.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)


def test_movielens_downloads_are_pinned():
    for name in ("ml-100k", "ml-1m", "ml-10m", "ml-20m"):
        info = get_info(name)
        assert info.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert info.sha256 is not None and f"{name}.zip" in info.files
    assert get_info("ml-1m").sha256 == "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"


def test_unknown_dataset_names_the_value_and_suggests():
    with pytest.raises(ConfigError) as err:
        get_info("ml-1mm")
    message = str(err.value)
    assert "'ml-1mm'" in message and "Did you mean 'ml-1m'" in message and "amazon-digital-music" in message
    with pytest.raises(ConfigError, match="movielens"):
        load_dataset("movielens")


def test_unknown_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"ml-100k: unknown option\(s\) \['dowload'\]; valid options: \['download'\]"):
        load_dataset("ml-100k", data_dir=tmp_path, dowload=False)
    with pytest.raises(ConfigError, match="valid options: .*'header'.*'path'"):
        load_dataset("csv", path="x.csv", delimiter=";")
    with pytest.raises(ConfigError, match="n_users"):
        load_dataset("synthetic", users=10)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("where", ["u.data", "u.data.gz", "ml-100k.zip"])
def test_ml100k_plain_gzip_and_zip(tmp_path, where):
    text = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
    if where.endswith(".zip"):
        write_zip(tmp_path / where, {"ml-100k/u.item": "x", "ml-100k/u.data": text})
    else:
        write(tmp_path / where, text)
    ds = load_dataset("ml-100k", data_dir=tmp_path)
    assert list(ds.df.columns) == ["user", "item", "rating", "timestamp"]
    assert ds.df.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "float64"]
    assert rows(ds, "user", "item", "rating", "timestamp") == [(196, 242, 3.0, 881250949.0),
                                                                (186, 302, 3.0, 891717742.0)]
    assert ds.source == tmp_path / where and ds.unknown_rating_max is None and ds.info.name == "ml-100k"


def test_ml1m_official_file_wins_over_partial(tmp_path):
    write(tmp_path / "ratings_partial.csv.gz",
          "user_id,movie_id,rating,timestamp,chrono_rank\n1,1193,5,978300760,1\n1,661,,,0\n")
    partial = load_dataset("ml-1m", data_dir=tmp_path)
    assert partial.unknown_rating_max == 3.0
    assert partial.df["order"].dtype == np.int64 and partial.df["order"].tolist() == [1, 0]
    assert partial.df["rating"].isna().tolist() == [False, True]
    assert partial.df["timestamp"].isna().tolist() == [False, True]

    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    official = load_dataset("ml-1m", data_dir=tmp_path)
    assert official.source.name == "ratings.dat" and official.unknown_rating_max is None
    assert "order" not in official.df and official.df["rating"].tolist() == [5.0, 3.0]


def test_ml10m_zip_folder_and_half_stars(tmp_path, monkeypatch):
    write_zip(tmp_path / "zip" / "ml-10m.zip", {"ml-10M100K/ratings.dat": "1::122::5::838985046\n2::185::4.5::838983525\n"})
    assert load_dataset("ml-10m", data_dir=tmp_path / "zip").df["rating"].tolist() == [5.0, 4.5]
    write(tmp_path / "home" / "ml-10M100K" / "ratings.dat", "7::8::0.5::9\n")  # unzipped into the data home
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tmp_path / "home"))
    assert rows(load_dataset("ml-10m"), "user", "item", "rating") == [(7, 8, 0.5)]


def test_ml20m_csv_with_header(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n")
    ds = load_dataset("ml-20m", data_dir=tmp_path)
    assert rows(ds, "user", "item", "rating") == [(1, 2, 3.5), (1, 29, 3.5)]


def test_amazon_digital_music_from_a_folder(tmp_path):
    write(tmp_path / "amusic.rating", "1,1,5,1370217600\n2,1,4,1412985600\n")
    ds = load_dataset("amazon-digital-music", data_dir=tmp_path)
    assert ds.source == tmp_path / "amusic.rating" and ds.df["rating"].tolist() == [5.0, 4.0]


@pytest.mark.parametrize("name, file", [("amazon-beauty", "Beauty.txt"), ("amazon-toys", "Toys_and_Games.txt.gz")])
def test_s3rec_sequences(tmp_path, name, file):
    write(tmp_path / file, "1 1 2 3\n2 6 7\n\n")
    ds = load_dataset(name, data_dir=tmp_path)
    assert rows(ds, "user", "item", "order") == [(1, 1, 0), (1, 2, 1), (1, 3, 2), (2, 6, 0), (2, 7, 1)]
    assert (ds.df["rating"] == 1.0).all() and ds.df["timestamp"].isna().all()
    assert ds.df["order"].dtype == np.int64 and ds.info.kind == "sequence"


def test_netflix_combined_files_and_training_set(tmp_path):
    write(tmp_path / "a" / "combined_data_1.txt", "1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n2:\n1488844,4,2005-09-07\n")
    write(tmp_path / "a" / "combined_data_2.txt.gz", "3:\n7,1,1999-12-31\n")
    ds = load_dataset("netflix", data_dir=tmp_path / "a")
    assert rows(ds, "user", "item", "rating") == [(1488844, 1, 3.0), (822109, 1, 5.0), (1488844, 2, 4.0), (7, 3, 1.0)]
    assert ds.df["timestamp"].iloc[0] == pd.Timestamp("2005-09-06", tz="UTC").timestamp()

    write(tmp_path / "b" / "training_set" / "mv_0000001.txt", "1:\n1488844,3,2005-09-06")  # no final newline
    write(tmp_path / "b" / "training_set" / "mv_0000002.txt", "2:\n822109,5,2005-05-13\n")
    ds = load_dataset("netflix", data_dir=tmp_path / "b")
    assert rows(ds, "user", "item", "rating") == [(1488844, 1, 3.0), (822109, 2, 5.0)]


def test_msd_triplets_keep_string_ids(tmp_path):
    write(tmp_path / "train_triplets.txt", "b80344d063b5ccb3\tSOAKIMP12A8C130995\t1\n0042\tSOAPDEY12A81C210A9\t3\n")
    ds = load_dataset("msd", data_dir=tmp_path)
    assert rows(ds, "user", "item", "rating") == [("b80344d063b5ccb3", "SOAKIMP12A8C130995", 1.0),
                                                  ("0042", "SOAPDEY12A81C210A9", 3.0)]
    assert ds.df["timestamp"].isna().all() and ds.info.kind == "implicit"


def test_yelp_json_lines_and_rating_file(tmp_path):
    write(tmp_path / "j" / "yelp_academic_dataset_review.json",
          '{"review_id": "r", "user_id": "u1", "business_id": "b1", "stars": 4, "date": "2016-07-12 20:12:45", "text": "ok"}\n'
          '{"user_id": "u2", "business_id": "b1", "stars": 5.0, "date": "2015-01-01"}\n')
    ds = load_dataset("yelp", data_dir=tmp_path / "j")
    assert rows(ds, "user", "item", "rating") == [("u1", "b1", 4.0), ("u2", "b1", 5.0)]
    assert ds.df["timestamp"].tolist() == [pd.Timestamp("2016-07-12 20:12:45", tz="UTC").timestamp(),
                                           pd.Timestamp("2015-01-01", tz="UTC").timestamp()]
    write(tmp_path / "r" / "yelp.rating", "0\t0\t5\t1354320000\n0\t1\t3\t1354406400\n")
    assert rows(load_dataset("yelp", data_dir=tmp_path / "r"), "user", "item") == [(0, 0), (0, 1)]


def test_amazon_cds_item_comes_first(tmp_path):
    write(tmp_path / "CDs_and_Vinyl.csv", "0001393774,A1H1DL4K669VQ9,5.0,1358553600\n")
    ds = load_dataset("amazon-cds", data_dir=tmp_path)
    assert rows(ds, "user", "item", "rating", "timestamp") == [("A1H1DL4K669VQ9", "0001393774", 5.0, 1358553600.0)]


def test_csv_defaults_to_our_column_names(tmp_path):
    path = tmp_path / "x.csv"
    make_synthetic(n_users=20, n_items=15, mean_items_per_user=4, seed=1).df.to_csv(path, index=False)
    ds = load_dataset("csv", path=path)
    pd.testing.assert_frame_equal(ds.df, make_synthetic(n_users=20, n_items=15, mean_items_per_user=4, seed=1).df)
    assert ds.name == "csv" and ds.info.files == ("x.csv",) and ds.source == path


def test_csv_names_positions_separators_dates_and_implicit(tmp_path):
    write(tmp_path / "named.tsv", "uid\tmovie\tscore\twhen\nu1\t10\t4\t2020-01-01\nu2\t11\t2.5\t2020-01-02T12:00:00\n")
    ds = load_dataset("csv", path="named.tsv", data_dir=tmp_path, sep="\t",
                      columns={"user": "uid", "item": "movie", "rating": "score", "timestamp": "when"})
    assert rows(ds, "user", "item", "rating") == [("u1", 10, 4.0), ("u2", 11, 2.5)]
    assert ds.df["timestamp"].tolist() == [1577836800.0, 1577966400.0]

    write(tmp_path / "positions.csv", "5;6;9\n7;8;9\n")
    ds = load_dataset("csv", path=tmp_path / "positions.csv", sep=";", columns={"user": 1, "item": 0})
    assert rows(ds, "user", "item", "rating") == [(6, 5, 1.0), (8, 7, 1.0)]
    assert ds.df["timestamp"].isna().all() and ds.info.kind == "implicit"


# --------------------------------------------------------------------------- bad input


def test_missing_file_lists_every_place_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tmp_path / "home"))
    with pytest.raises(DataError) as err:
        load_dataset("ml-1m")
    message = str(err.value)
    for expected in (str(tmp_path / "home" / "ml-1m"), str(tmp_path / "home"), str(tmp_path / "cache" / "ml-1m"),
                     "ratings.dat or ratings.dat.gz", "ml-1m.zip", "ratings_partial.csv",
                     get_info("ml-1m").format, get_info("ml-1m").how_to_get, "RECSYS_OFFLINE"):
        assert expected in message


def test_explicit_data_dir_is_the_only_place_searched(tmp_path, monkeypatch):
    write(tmp_path / "home" / "ml-100k" / "u.data", "1\t2\t3\t4\n")
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tmp_path / "home"))
    assert load_dataset("ml-100k").source == tmp_path / "home" / "ml-100k" / "u.data"
    with pytest.raises(DataError, match="data_dir was given, so no other place was searched") as err:
        load_dataset("ml-100k", data_dir=tmp_path / "elsewhere")
    assert str(tmp_path / "home") not in str(err.value)


@pytest.mark.parametrize("name, file, text, message", [
    ("ml-1m", "ratings.dat", "foo,bar\n",
     "ml-1m ratings.dat line 1: expected 4 fields separated by '::', got 1: 'foo,bar'"),
    ("ml-1m", "ratings.dat", "1::2::3::4\n1:2:3:4\n",
     "ml-1m ratings.dat line 2: expected 4 fields separated by '::', got 1: '1:2:3:4'"),
    ("ml-100k", "u.data", "1\t2\t3\t4\n1\t3\t4\t5\n\n1\t4\t5\n",
     "ml-100k u.data line 4: expected 4 fields separated by tabs, got 3: '1\\t4\\t5'"),
    ("ml-100k", "u.data", "1\t2\t3\t4\n1\t3\t4\t5\t6\n",
     "ml-100k u.data line 2: expected 4 fields separated by tabs, got 5"),
    ("ml-100k", "u.data", "1,2,3,4\n", "ml-100k u.data line 1: expected 4 fields separated by tabs, got 1"),
    ("ml-1m", "ratings.dat.gz", "1::2::3::4\n1::3::x::5\n", "ml-1m ratings.dat.gz line 2: rating must be a number, got 'x'"),
    ("ml-100k", "u.data", "1\t2\t3\t4\nu7\t3\t4\t5\n", "ml-100k u.data line 2: user must be an integer, got 'u7'"),
    ("ml-20m", "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1\n1,3,,2\n", "ml-20m ratings.csv line 3: rating is empty"),
    ("amazon-digital-music", "amusic.rating", "1,1,5,yesterday\n",
     "amazon-digital-music amusic.rating line 1: timestamp must be a number, got 'yesterday'"),
    ("ml-1m", "ratings_partial.csv", "user_id,movie_id,rating,timestamp,chrono_rank\n1,2,,,\n",
     "ml-1m ratings_partial.csv line 2: order is empty"),
    ("ml-100k", "u.data", "", "ml-100k u.data has no data rows (the file is empty"),
    ("ml-20m", "ratings.csv", "userId,movieId,rating,timestamp\n", "ml-20m ratings.csv has no data rows"),
    ("ml-20m", "ratings.csv", "user,movie,rating,timestamp\n1,2,3,4\n",
     "ml-20m ratings.csv: missing column 'userId' (for 'user'), 'movieId' (for 'item'); "
     "columns found: ['user', 'movie', 'rating', 'timestamp']"),
    ("amazon-beauty", "Beauty.txt", "1 2 3\n2\n",
     "amazon-beauty Beauty.txt line 2: expected a user id followed by item ids separated by spaces, got '2'"),
    ("amazon-beauty", "Beauty.txt", "1 2 3\n2 4\n1 5\n",
     "amazon-beauty Beauty.txt: user 1 appears on lines 1 and 3; expected one line per user"),
    ("amazon-beauty", "Beauty.txt", "\n\n", "amazon-beauty Beauty.txt is empty"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n11,x,2005-05-13\n",
     "netflix combined_data_1.txt line 3: rating must be a number, got 'x'"),
    ("netflix", "combined_data_1.txt", "10,3,2005-09-06\n",
     "netflix combined_data_1.txt line 1: expected a 'MovieID:' line first"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n2\n11,3,2005-05-13\n",
     "netflix combined_data_1.txt line 3: expected 3 fields 'CustomerID,Rating,YYYY-MM-DD' separated by ',', got 1"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,06/09/2005\n", "netflix combined_data_1.txt line 2: date must be YYYY-MM-DD"),
    ("yelp", "yelp_academic_dataset_review.json", '{"user_id": "u", "stars": 4, "date": "2016-01-01"}\n',
     "yelp yelp_academic_dataset_review.json line 1: missing key(s) ['business_id']"),
    ("yelp", "yelp_academic_dataset_review.json",
     '{"user_id": "u", "business_id": "b", "stars": 4, "date": "2016-01-01"}\n{"user_id": "u", \n',
     "yelp yelp_academic_dataset_review.json line 2: not valid JSON"),
    ("yelp", "yelp_academic_dataset_review.json",
     '{"user_id": "u", "business_id": "b", "stars": "four", "date": "2016-01-01"}\n',
     "yelp yelp_academic_dataset_review.json line 1: stars must be a number, got 'four'"),
])
def test_bad_file_names_file_line_and_problem(tmp_path, name, file, text, message):
    path = write(tmp_path / file, text)
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir=tmp_path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [file]  # nothing written


def test_zip_without_the_expected_member(tmp_path):
    write_zip(tmp_path / "ml-1m.zip", {"ml-1m/movies.dat": "1::Toy Story::Animation\n"})
    with pytest.raises(DataError, match=r"holds none of \['ratings.dat', 'ratings_partial.csv'\]; its members are \['ml-1m/movies.dat'\]"):
        load_dataset("ml-1m", data_dir=tmp_path)
    (tmp_path / "ml-1m.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="is not a readable zip archive"):
        load_dataset("ml-1m", data_dir=tmp_path)


def test_csv_option_errors(tmp_path):
    path = write(tmp_path / "r.csv", "a,b,c\n1,2,x\n")
    with pytest.raises(ConfigError, match="the option path= is required"):
        load_dataset("csv")
    with pytest.raises(DataError, match="csv: file .*nope.csv not found"):
        load_dataset("csv", path=tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"missing column\(s\) \['user', 'item'\]; columns found: \['a', 'b', 'c'\]"):
        load_dataset("csv", path=path)
    with pytest.raises(DataError, match=r"missing column 'rating' \(for 'rating'\); columns found: \['a', 'b', 'c'\]"):
        load_dataset("csv", path=path, columns={"user": "a", "item": "b", "rating": "rating"})
    with pytest.raises(DataError, match="csv r.csv line 2: rating must be a number, got 'x'"):
        load_dataset("csv", path=path, columns={"user": "a", "item": "b", "rating": "c"})
    with pytest.raises(ConfigError, match="must map 'user' and 'item'"):
        load_dataset("csv", path=path, columns={"user": "a", "score": "c"})
    with pytest.raises(ConfigError, match="all column names or all 0-based positions"):
        load_dataset("csv", path=path, columns={"user": "a", "item": 1})
    with pytest.raises(ConfigError, match="needs header=True"):
        load_dataset("csv", path=path, columns={"user": "a", "item": "b"}, header=False)
    write(tmp_path / "d.csv", "user,item,timestamp\n1,2,2020-01-01\n1,3,soon\n")
    with pytest.raises(DataError, match="line 3: timestamp must be a number or an ISO-8601 date, got 'soon'"):
        load_dataset("csv", path=tmp_path / "d.csv")


# --------------------------------------------------------------------------- resolution, cache, download


def test_resolution_order_data_home_folder_then_home_then_cache(tmp_path, monkeypatch):
    home, cache = tmp_path / "home", tmp_path / "cache"
    monkeypatch.setenv("RECSYS_DATA_HOME", str(home))
    write(cache / "ml-100k" / "u.data", "3\t3\t3\t3\n")
    assert load_dataset("ml-100k").df["user"].tolist() == [3]
    write(home / "u.data", "2\t2\t2\t2\n")
    assert load_dataset("ml-100k").df["user"].tolist() == [2]
    write(home / "ml-100k" / "u.data.gz", "1\t1\t1\t1\n")
    assert load_dataset("ml-100k").df["user"].tolist() == [1]
    assert resolve_data_dir("ml-100k") == home / "ml-100k"
    with pytest.raises(ConfigError, match="has no files"):
        resolve_data_dir("csv")


def test_download_is_verified_cached_and_skipped_offline(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "remote" / "ml-100k.zip", {"ml-100k/u.data": "9\t8\t7\t6\n"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    info = dataclasses.replace(get_info("ml-100k"), url=archive.as_uri(), sha256=digest)
    monkeypatch.setitem(registry._REGISTRY, "ml-100k", info)
    with pytest.raises(DataError, match=r"Download skipped \(\$RECSYS_OFFLINE is set\)"):
        load_dataset("ml-100k")
    monkeypatch.delenv("RECSYS_OFFLINE")
    with pytest.raises(DataError, match=r"Download skipped \(download=False\)"):
        load_dataset("ml-100k", download=False)

    # file:// URLs exercise the whole download path without a network.
    ds = load_dataset("ml-100k")
    cache = tmp_path / "cache" / "ml-100k"
    assert ds.source == cache / "u.data" and rows(ds, "user", "item") == [(9, 8)]
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k.zip", "u.data"]
    archive.unlink()  # later loads use the cache
    assert rows(load_dataset("ml-100k"), "user", "item") == [(9, 8)]


def test_download_with_wrong_digest_or_no_network_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_OFFLINE")
    archive = write_zip(tmp_path / "remote" / "ml-100k.zip", {"ml-100k/u.data": "9\t8\t7\t6\n"})
    info = dataclasses.replace(get_info("ml-100k"), url=archive.as_uri(), sha256="0" * 64)
    monkeypatch.setitem(registry._REGISTRY, "ml-100k", info)
    with pytest.raises(DataError, match=f"has sha256 {hashlib.sha256(archive.read_bytes()).hexdigest()}, expected 0000"):
        load_dataset("ml-100k")
    cache = tmp_path / "cache" / "ml-100k"
    assert not cache.exists() or not any(cache.iterdir())
    info = dataclasses.replace(info, url=(tmp_path / "missing.zip").as_uri())
    monkeypatch.setitem(registry._REGISTRY, "ml-100k", info)
    with pytest.raises(DataError, match="Download of .*missing.zip failed"):
        load_dataset("ml-100k")


def test_embedded_default_needs_no_data_home(tmp_path):
    ds = load_dataset(DEFAULT_DATASET)
    assert ds.source == EMBEDDED_DIR / "amusic.rating.gz"
    assert (ds.n_users, ds.n_items, len(ds.df)) == (16_566, 11_797, 169_781)
    assert ds.df.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "float64"]
    assert ds.df["rating"].between(1, 5).all() and ds.df["timestamp"].notna().all()
    digest = hashlib.sha256((EMBEDDED_DIR / "amusic.rating.gz").read_bytes()).hexdigest()
    assert digest == "1cf259d3a89976126d6e76761afbbcb3374d7ca96ea239cc4e6ce1a979069d2a"
    assert digest in (EMBEDDED_DIR / "ATTRIBUTION.md").read_text()


# --------------------------------------------------------------------------- real shared data


@pytest.fixture
def real_home(monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_HOME", REAL_HOME)


@requires_data
def test_real_ml100k(real_home):
    ds = load_dataset("ml-100k")
    assert (len(ds.df), ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert ds.df["rating"].value_counts().sort_index().tolist() == [6_110, 11_370, 27_145, 34_174, 21_201]
    assert rows(ds, "user", "item", "rating", "timestamp")[0] == (196, 242, 3.0, 881250949.0)


@requires_data
def test_real_ml1m_partial(real_home):
    ds = load_dataset("ml-1m")
    df = ds.df
    assert (len(df), ds.n_users, ds.n_items) == (1_000_209, 6_040, 3_706)
    assert int(df["rating"].notna().sum()) == 681_991 and ds.unknown_rating_max == 3.0
    assert (df["rating"].isna() == df["timestamp"].isna()).all()
    assert int((df["rating"] >= 4).sum()) == 575_281
    # order is a complete 0..n-1 ranking inside every user's history
    size = df.groupby("user")["order"].transform("size")
    assert df["order"].between(0, size - 1).all() and not df.duplicated(["user", "order"]).any()
    assert rows(ds, "user", "item", "rating", "timestamp")[0] == (1, 1193, 5.0, 978300760.0)


@requires_data
def test_real_embedded_matches_the_shared_copy(real_home):
    shared = load_dataset(DEFAULT_DATASET)
    assert shared.source.parent.name == "amazon-digital-music-loca"
    pd.testing.assert_frame_equal(shared.df, pd.read_csv(EMBEDDED_DIR / "amusic.rating.gz", header=None,
                                                         names=["user", "item", "rating", "timestamp"],
                                                         dtype={"rating": float, "timestamp": float}))


@requires_data
@pytest.mark.parametrize("name, counts", [("amazon-beauty", (198_502, 22_363, 12_101)),
                                          ("amazon-toys", (167_597, 19_412, 11_924))])
def test_real_s3rec(real_home, name, counts):
    ds = load_dataset(name)
    assert (len(ds.df), ds.n_users, ds.n_items) == counts
    assert (ds.df.groupby("user")["order"].max() + 1 == ds.df.groupby("user").size()).all()
    assert ds.df.groupby("user").size().min() == 5


@pytest.mark.parametrize("name, filename", [("ml-1m", "ratings.dat.gz"), ("amazon-beauty", "Beauty.txt.gz"),
                                            ("netflix", "combined_data_1.txt.gz")])
@pytest.mark.parametrize("damage", ["not_gzip", "truncated"])
def test_damaged_archives_are_a_data_error(tmp_path, name, filename, damage):
    good = gzip.compress(("1::1::5::978300760\n" * 200).encode())
    path = tmp_path / filename
    path.write_bytes(b"this is not gzip data" if damage == "not_gzip" else good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot decompress it") as err:
        load_dataset(name, data_dir=tmp_path)
    assert filename in str(err.value)
