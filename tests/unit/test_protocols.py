"""Unit tests of recsys.protocols: leakage, per-protocol guarantees, determinism, save/load, errors.

The real-data tests read the shared raw files directly with pandas (no loader dependency) and
skip when $RECSYS_DATA_HOME is unset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.data import preprocess as pre
from recsys.data.schema import ITEM, ORDER, RATING, TIMESTAMP, USER
from recsys.errors import ConfigError, DataError
from recsys.protocols import (
    FORMAT_VERSION,
    PROTOCOLS,
    Split,
    leave_k_out_by_time,
    leave_one_out,
    make_split,
    random_split,
    strong_generalization,
    user_split,
)
from recsys.protocols.protocols import per_user_holdout
from tests.conftest import data_home, requires_data


def synthetic(n_users: int = 150, n_items: int = 80, seed: int = 0, str_ids: bool = False) -> pd.DataFrame:
    """Users with 6..30 rows over popularity-skewed items, some repeated pairs, day-resolution times."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(6, 31, n_users)
    users = np.repeat(np.arange(n_users) + 1000, sizes)
    p = 1.0 / np.arange(1, n_items + 1)
    items = rng.choice(np.arange(n_items) + 1, size=len(users), p=p / p.sum())
    df = pd.DataFrame({
        USER: users,
        ITEM: items,
        RATING: rng.integers(1, 6, len(users)).astype(np.float64),
        TIMESTAMP: (rng.integers(0, 40, len(users)) * 86400).astype(np.float64),  # many ties
    })
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)  # file order != time order
    if str_ids:
        df[USER] = "u" + df[USER].astype(str)
        df[ITEM] = "i" + df[ITEM].astype(str)
    return df


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return synthetic()


def original_pairs(split: Split, name: str, rows: np.ndarray | None = None) -> set[tuple]:
    """(original user, original item) pairs of a matrix; ``rows`` maps matrix rows to internal users."""
    coo = split[name].tocoo()
    users = coo.row if rows is None else rows[coo.row]
    return set(zip(split.id_map.users[users].tolist(), split.id_map.items[coo.col].tolist()))


def all_pairs(df: pd.DataFrame) -> set[tuple]:
    return set(zip(df[USER].tolist(), df[ITEM].tolist()))


def saved_bytes(split: Split, path: Path) -> dict[str, bytes]:
    split.save(path)
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


# ----------------------------------------------------------------- strong generalization


def test_strong_generalization_no_leakage_and_item_restriction(df):
    s = strong_generalization(df, n_heldout_users=20, seed=1)
    a = s.arrays
    tr, va, te = a["train_users"], a["valid_users"], a["test_users"]
    assert len(va) == len(te) == 20 and len(tr) == df[USER].nunique() - 40
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    assert np.array_equal(np.concatenate([tr, va, te]), np.arange(s.n_users))
    assert s["train"].shape == (len(tr), s.n_items) and s["valid_fold_in"].shape == (20, s.n_items)
    # every item is a training item
    assert (np.asarray(s["train"].sum(axis=0)).ravel() > 0).all()
    train_users_orig = set(s.id_map.users[tr].tolist())
    assert {u for u, _ in original_pairs(s, "train", tr)} == train_users_orig
    for stage, users in (("valid", va), ("test", te)):
        fold_in, hold = s[f"{stage}_fold_in"], s[f"{stage}_holdout"]
        assert fold_in.multiply(hold).nnz == 0  # a held-out target is never an input
        # held-out users' pairs = their deduped pairs on training items
        orig = s.id_map.users[users]
        expected = {(u, i) for u, i in all_pairs(df) if u in set(orig.tolist()) and i in set(s.id_map.items.tolist())}
        assert original_pairs(s, f"{stage}_fold_in", users) | original_pairs(s, f"{stage}_holdout", users) == expected
        n = np.diff(fold_in.indptr) + np.diff(hold.indptr)
        expected_hold = np.where(n >= 5, np.floor(np.round(0.2 * n, 9)), 0)
        assert np.array_equal(np.diff(hold.indptr), expected_hold)
    assert s.stats["n_interactions"] == sum(s.stats["nnz"].values())
    assert s.meta["recall_denominator"] == "min(k, n)"
    assert s.params == {"n_heldout_users": 20, "heldout_fraction": None, "fold_in": 0.8, "min_user": 5, "seed": 1}


def test_strong_generalization_drops_unseen_items_and_empty_heldout_users():
    # user 9 only rated items 95..99, which no other user has: held out, it has nothing left
    base = synthetic(60, 30, seed=4)
    extra = pd.DataFrame({USER: 9, ITEM: [95, 96, 97, 98, 99], RATING: 1.0, TIMESTAMP: np.arange(5.0)})
    df = pd.concat([base, extra], ignore_index=True)
    dropped = 0
    for seed in range(6):
        s = strong_generalization(df, heldout_fraction=0.2, seed=seed)
        st = s.stats
        dropped += st["valid_users_dropped_no_train_items"] + st["test_users_dropped_no_train_items"]
        if 9 not in set(s.id_map.users.tolist()):
            assert st["heldout_rows_dropped_unseen_items"] >= 5
        assert len(s.arrays["valid_users"]) + st["valid_users_dropped_no_train_items"] == 12
    assert dropped > 0  # user 9 was held out at least once and then removed


def test_strong_generalization_small_users_keep_everything_as_fold_in():
    rows = [(u, i) for u in range(40) for i in range(8)] + [(100, 0), (100, 1), (100, 2), (100, 3)]
    df = pd.DataFrame(rows, columns=[USER, ITEM]).assign(**{RATING: 1.0, TIMESTAMP: np.nan})
    s = strong_generalization(df, n_heldout_users=10, min_user=4, seed=0)
    for stage in ("valid", "test"):
        sizes = np.diff(s[f"{stage}_fold_in"].indptr) + np.diff(s[f"{stage}_holdout"].indptr)
        assert np.array_equal(np.diff(s[f"{stage}_holdout"].indptr), np.where(sizes >= 5, 1, 0))


# ----------------------------------------------------------------- random split


def test_random_split_guarantees_and_no_leakage(df):
    s = random_split(df, k_core=5, seed=3)
    tr, va, te = s["train"], s["valid"], s["test"]
    assert tr.multiply(va).nnz == tr.multiply(te).nnz == va.multiply(te).nnz == 0
    for m in (tr, va, te):
        assert (np.diff(m.indptr) >= 1).all()  # every user has >= 1 train, valid and test item
    core = pre.k_core(pre.dedupe(df), 5, 5)
    assert original_pairs(s, "train") | original_pairs(s, "valid") | original_pairs(s, "test") == all_pairs(core)
    n = len(core)
    assert s.stats["n_interactions"] == n == tr.nnz + va.nnz + te.nnz
    # the random draw has exactly int(f * n) rows; the guarantee then moves a few from train
    assert s.stats["users_redealt"] == 0
    assert va.nnz == int(0.1 * n) + s.stats["moved_to_valid"] and te.nnz == int(0.2 * n) + s.stats["moved_to_test"]
    assert abs(va.nnz / n - 0.1) < 0.05 and abs(te.nnz / n - 0.2) < 0.05
    assert s.meta["recall_denominator"] == "n"


def test_random_split_users_with_three_items_get_one_of_each():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(300), 3)
    items = np.concatenate([rng.choice(50, 3, replace=False) for _ in range(300)])
    df = pd.DataFrame({USER: users, ITEM: items, RATING: 1.0, TIMESTAMP: np.nan})
    df = pd.concat([df, pd.DataFrame({USER: [999, 999], ITEM: [1, 2], RATING: 1.0, TIMESTAMP: np.nan})])
    s = random_split(df, k_core=0, seed=0)
    for name in ("train", "valid", "test"):
        assert (np.diff(s[name].indptr) == 1).all()
    assert s.stats["users_redealt"] > 0 and s.stats["users_after_min_user_3"] == 300  # 999 dropped


# ----------------------------------------------------------------- leave-k-out by time


def reference_last_k(df: pd.DataFrame, k: int, min_user: int) -> dict:
    """Independent reference: LOCA's row count filter, keep-latest dedupe, stable time sort."""
    d = df.assign(pos=np.arange(len(df)))
    d = d[d[USER].map(d[USER].value_counts()) >= min_user]
    d = d.sort_values([TIMESTAMP, "pos"], kind="stable").drop_duplicates([USER, ITEM], keep="last")
    return {u: g[ITEM].tolist() for u, g in d.groupby(USER)}


def test_leave_k_out_test_items_are_the_last_k_by_time(df):
    s = leave_k_out_by_time(df, k=3, min_user=10)
    ref = reference_last_k(df, 3, 10)
    kept = {u: seq for u, seq in ref.items() if len(seq) >= 4}
    assert set(s.id_map.users.tolist()) == set(kept)
    test, train = s["test"], s["train"]
    assert train.multiply(test).nnz == 0
    for u, seq in kept.items():
        row = s.id_map.user_index(u)
        assert set(s.id_map.items[test[row].indices].tolist()) == set(seq[-3:])
        assert set(s.id_map.items[train[row].indices].tolist()) == set(seq[:-3])
    pop = np.asarray((train + test).sum(axis=0)).ravel()
    assert (np.diff(pop) <= 0).all()  # item ids by popularity
    assert s.stats["rows_after_min_user"] == int(df[USER].map(df[USER].value_counts()).ge(10).sum())


def test_leave_k_out_validation_and_duplicate_counting():
    rows = [(1, i, float(i)) for i in range(12)] + [(2, i % 6, float(i)) for i in range(10)]
    df = pd.DataFrame(rows, columns=[USER, ITEM, TIMESTAMP]).assign(**{RATING: 1.0})
    s = leave_k_out_by_time(df, k=2, n_valid=2, min_user=10)  # user 2: 10 rows, 6 distinct items
    assert s.stats["users_after_min_user"] == 2 and s.n_users == 2
    u1 = s.id_map.user_index(1)
    assert sorted(s.id_map.items[s["test"][u1].indices]) == [10, 11]
    assert sorted(s.id_map.items[s["valid"][u1].indices]) == [8, 9]
    u2 = s.id_map.user_index(2)  # user 2's latest rows are items 2, 3 (times 8, 9)
    assert sorted(s.id_map.items[s["test"][u2].indices]) == [2, 3]
    assert s["valid"].multiply(s["train"]).nnz == s["valid"].multiply(s["test"]).nnz == 0
    pairs_only = leave_k_out_by_time(df, k=2, min_user=10, count_duplicates=False)
    assert pairs_only.id_map.users.tolist() == [1]


# ----------------------------------------------------------------- leave-one-out


def test_leave_one_out_targets_are_the_last_two(df):
    s = leave_one_out(df, k_core=3)
    a = s.arrays
    ip, seq = a["seq_indptr"], a["seq_items"]
    assert len(ip) == s.n_users + 1 and ip[-1] == len(seq) == s.stats["n_interactions"]
    assert np.array_equal(a["test_target"], seq[ip[1:] - 1]) and np.array_equal(a["valid_target"], seq[ip[1:] - 2])
    train = s["train"]
    assert train.multiply(s["valid"]).nnz == train.multiply(s["test"]).nnz == s["valid"].multiply(s["test"]).nnz == 0
    assert np.array_equal(np.diff(train.indptr), np.diff(ip) - 2)
    ordered = pre.time_order(pre.k_core(pre.dedupe(df), 3, 3))
    for u in (0, s.n_users // 2, s.n_users - 1):
        orig = s.id_map.users[u]
        expected = ordered.loc[ordered[USER] == orig, ITEM].tolist()
        assert s.id_map.items[seq[ip[u]: ip[u + 1]]].tolist() == expected


def test_leave_one_out_uses_order_column_and_drops_short_users():
    df = pd.DataFrame({USER: [1, 1, 1, 1, 2, 2], ITEM: [10, 11, 12, 13, 10, 11], RATING: np.nan,
                       TIMESTAMP: [1.0, 2.0, 3.0, 4.0, 1.0, 2.0], ORDER: [3, 0, 2, 1, 0, 1]})
    s = leave_one_out(df, k_core=0)
    assert s.id_map.users.tolist() == [1] and s.stats["users_after_min_user_3"] == 1
    assert s.id_map.items[s.arrays["seq_items"]].tolist() == [11, 13, 12, 10]
    assert s.id_map.items[s.arrays["test_target"]].tolist() == [10]


# ----------------------------------------------------------------- user split


def test_user_split_users_partition_and_sequences(df):
    s = user_split(df, n_test_users=30, valid_fraction=0.2, min_item=20, min_user=5, seed=2)
    a = s.arrays
    tr, va, te = a["train_users"], a["valid_users"], a["test_users"]
    assert len(te) == 30 and len(va) == round(0.2 * (s.n_users - 30))
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(s.n_users))
    counts = df[ITEM].value_counts()
    kept = df[df[ITEM].map(counts) >= 20]
    kept = kept[kept[USER].map(kept[USER].value_counts()) >= 5]
    assert len(a["seq_items"]) == len(kept) == s.stats["n_rows"]  # no dedupe
    ordered = pre.time_order(kept)
    assert s.id_map.items[a["seq_items"]].tolist() == ordered[ITEM].tolist()
    assert np.array_equal(a["seq_ratings"], ordered[RATING].to_numpy())
    assert s["interactions"].nnz == len(pre.dedupe(kept))


def test_user_split_keeps_unknown_ratings_as_nan_for_the_caller_to_refuse(df):
    d = df.copy()
    d.loc[::7, RATING] = np.nan
    s = user_split(d, n_test_users=10)
    assert s.stats["n_ratings_unknown"] == int(np.isnan(s.arrays["seq_ratings"]).sum()) > 0
    with pytest.raises(DataError, match="rows have no rating"):
        pre.require_known_ratings(d, "MELO")


# ----------------------------------------------------------------- per-user holdout


def test_per_user_holdout_no_leakage_and_every_pair_kept(df):
    s = per_user_holdout(df, seed=4)
    tr, te = s["train"], s["test"]
    assert tr.shape == te.shape == (s.n_users, s.n_items)
    assert tr.multiply(te).nnz == 0
    assert original_pairs(s, "train") | original_pairs(s, "test") == all_pairs(df)
    assert s.stats["n_interactions"] == tr.nnz + te.nnz == len(pre.dedupe(df))
    assert s.meta["recall_denominator"] == "min(k, n)"
    assert "no validation split" in s.meta["note"]
    assert s.params == {"test_fraction": 0.2, "min_user": 1, "seed": 4}


def test_per_user_holdout_sizes_and_fraction():
    # users with 1..40 items (user 1: one item, kept in train), dense enough to check the share
    rows = [(u, i) for u in range(1, 41) for i in range(u)]
    d = pd.DataFrame(rows, columns=[USER, ITEM]).assign(**{RATING: 1.0, TIMESTAMP: np.nan})
    for fraction in (0.2, 0.5, 0.9):
        s = per_user_holdout(d, test_fraction=fraction, seed=1)
        n = np.diff(s["train"].indptr) + np.diff(s["test"].indptr)
        n_test = np.diff(s["test"].indptr)
        expected = np.where(n >= 2, np.clip(np.floor(np.round(fraction * n, 9)), 1, n - 1), 0)
        assert np.array_equal(n_test, expected)
        assert ((n_test >= 1) == (n >= 2)).all()  # >= 1 test item exactly for users with >= 2 items
        assert (np.diff(s["train"].indptr) >= 1).all()  # nobody loses all training items
        assert s.stats["users_without_test"] == 1
        assert abs(s.stats["realised_test_fraction"] - fraction) < 0.05
        assert s.stats["realised_test_fraction"] == round(s["test"].nnz / len(rows), 6)


def test_per_user_holdout_fraction_on_realistic_users(df):
    s = per_user_holdout(df, test_fraction=0.2, seed=0)
    # floor(0.2 * n) of ~12 items per user leans below 0.2; on ML-1M (>= 20 per user) it is ~0.19
    assert abs(s["test"].nnz / s.stats["n_interactions"] - 0.2) < 0.05
    m = per_user_holdout(df, min_user=20, seed=0)
    assert m.stats["users_after_min_user"] == int((pre.dedupe(df)[USER].value_counts() >= 20).sum()) == m.n_users


def test_per_user_holdout_is_deterministic_by_seed(df):
    a, b, c = per_user_holdout(df, seed=7), per_user_holdout(df.copy(), seed=7), per_user_holdout(df, seed=8)
    assert (a["test"] != b["test"]).nnz == 0 and (a["train"] != b["train"]).nnz == 0
    assert (a["test"] != c["test"]).nnz > 0
    assert a["test"].nnz == c["test"].nnz  # the sizes depend on the counts only, not the seed


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, "0.2", True])
def test_per_user_holdout_bad_fraction(df, fraction):
    with pytest.raises(ConfigError, match=r"test_fraction must be a finite number in \(0.0, 1.0\), got "):
        make_split("per_user_holdout", df, test_fraction=fraction)


# ----------------------------------------------------------------- determinism, save / load

SMALL_PARAMS = {
    "strong_generalization": {"n_heldout_users": 15},
    "random_split": {"k_core": 5},
    "leave_k_out_by_time": {},
    "leave_one_out": {},
    "user_split": {"n_test_users": 20},
    "per_user_holdout": {},
}
RANDOM = {"strong_generalization", "random_split", "user_split", "per_user_holdout"}


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_fixed_seed_gives_byte_identical_files_and_another_seed_differs(df, tmp_path, name):
    a = saved_bytes(make_split(name, df, seed=5, **SMALL_PARAMS[name]), tmp_path / "a")
    b = saved_bytes(make_split(name, df.copy(), seed=5, **SMALL_PARAMS[name]), tmp_path / "b")
    assert a == b
    c = make_split(name, df, seed=6, **SMALL_PARAMS[name])
    c_bytes = saved_bytes(c, tmp_path / "c")
    changed = {f for f in a if f != "split.json" and a[f] != c_bytes[f]}
    assert bool(changed) == (name in RANDOM)
    assert c.seed == 6 and c.params["seed"] == 6


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_save_load_round_trip(tmp_path, name):
    d = synthetic(str_ids=True, seed=1)
    s = make_split(name, d, **SMALL_PARAMS[name])
    loaded = Split.load(s.save(tmp_path / name))
    assert (loaded.protocol, loaded.seed, loaded.n_users, loaded.n_items) == (s.protocol, s.seed, s.n_users, s.n_items)
    assert loaded.id_map.users.tolist() == s.id_map.users.tolist() and isinstance(loaded.id_map.users[0], str)
    assert loaded.id_map.items.tolist() == s.id_map.items.tolist()
    assert sorted(loaded.matrices) == sorted(s.matrices)
    for k, m in s.matrices.items():
        assert isinstance(loaded[k], sp.csr_matrix) and loaded[k].dtype == np.float32
        assert (loaded[k] != m).nnz == 0 and loaded[k].shape == m.shape
        assert (sp.load_npz(tmp_path / name / f"{k}.npz") != m).nnz == 0  # plain scipy reads it
    assert sorted(loaded.arrays) == sorted(s.arrays)
    for k, arr in s.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[k], arr)
        assert loaded.arrays[k].dtype == arr.dtype
    assert loaded.stats == s.stats and loaded.meta == s.meta
    assert loaded.params == {k: list(v) if isinstance(v, tuple) else v for k, v in s.params.items()}
    assert loaded.stats["n_users"] == s.n_users and loaded.stats["nnz"] == {k: m.nnz for k, m in s.matrices.items()}


def test_load_detects_corruption_missing_files_and_version(df, tmp_path):
    s = make_split("leave_one_out", df)
    path = s.save(tmp_path / "s")
    raw = bytearray((path / "train.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (path / "train.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"checksum mismatch for .*train\.npz"):
        Split.load(path)
    s.save(path)  # replaces the directory whole
    Split.load(path)
    (path / "arrays.npz").unlink()
    with pytest.raises(DataError, match=r"arrays\.npz is missing"):
        Split.load(path)
    s.save(path)
    text = (path / "split.json").read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 99')
    (path / "split.json").write_text(text)
    with pytest.raises(DataError, match="format version 99"):
        Split.load(path)
    (path / "split.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        Split.load(path)
    with pytest.raises(DataError, match="not a saved split"):
        Split.load(tmp_path / "nowhere")


def test_getitem_lists_available_matrices(df):
    s = leave_k_out_by_time(df)
    with pytest.raises(KeyError, match=r"no matrix 'valid'; matrices: \['test', 'train'\]"):
        s["valid"]


# ----------------------------------------------------------------- bad parameters


def test_make_split_unknown_protocol_and_parameter(df):
    with pytest.raises(ConfigError, match=r"unknown protocol 'random_splt'. Did you mean 'random_split'\? Valid protocols: "):
        make_split("random_splt", df)
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['kcore'\]. Did you mean 'k_core'\? Accepted: fractions, k_core, count_duplicates, seed"):
        make_split("random_split", df, kcore=5)


@pytest.mark.parametrize("name, params, needle", [
    ("random_split", {"fractions": (0.7, 0.2, 0.2)}, "sum to 1.1; they must sum to 1"),
    ("random_split", {"fractions": (0.8, 0.0, 0.2)}, r"fractions\[1\] must be a finite number in \(0.0, 1.0\), got 0.0"),
    ("random_split", {"fractions": (0.5, 0.5)}, "expected three numbers"),
    ("random_split", {"k_core": -1}, "k_core must be an integer >= 0, got -1"),
    ("random_split", {"seed": -3}, r"seed must be an integer \[0, 4294967295\], got -3"),
    ("random_split", {"seed": 1.5}, "seed must be an integer .*, got 1.5"),
    ("strong_generalization", {}, "give exactly one of n_heldout_users"),
    ("strong_generalization", {"n_heldout_users": 5, "heldout_fraction": 0.1}, "give exactly one"),
    ("strong_generalization", {"n_heldout_users": 75}, r"leave no training users among the 150 users.*between 1 and 74"),
    ("strong_generalization", {"heldout_fraction": 0.5}, r"heldout_fraction must be a finite number in \(0.0, 0.5\), got 0.5"),
    ("strong_generalization", {"n_heldout_users": 5, "fold_in": 1.0}, "fold_in must be .*, got 1.0"),
    ("strong_generalization", {"n_heldout_users": True}, "n_heldout_users must be an integer >= 1, got True"),
    ("leave_k_out_by_time", {"k": 0}, "k must be an integer >= 1, got 0"),
    ("leave_k_out_by_time", {"n_valid": -1}, "n_valid must be an integer >= 0, got -1"),
    ("leave_k_out_by_time", {"count_duplicates": "yes"}, "count_duplicates must be True or False, got 'yes'"),
    ("leave_one_out", {"k_core": 2.5}, "k_core must be an integer >= 0, got 2.5"),
    ("user_split", {"n_test_users": 149}, r"n_test_users=149.*lower n_test_users \(at most 148\)"),
    ("user_split", {"valid_fraction": 1.2}, "valid_fraction must be .*, got 1.2"),
    ("user_split", {"min_user": 1}, "min_user must be an integer >= 2, got 1"),
    ("per_user_holdout", {"min_user": 0}, "min_user must be an integer >= 1, got 0"),
    ("per_user_holdout", {"seed": -1}, "seed must be an integer .*, got -1"),
])
def test_bad_parameters_raise_config_error_naming_the_value(df, name, params, needle):
    with pytest.raises(ConfigError, match=needle):
        make_split(name, df, **params)


def test_filters_that_empty_the_data_name_themselves(df):
    with pytest.raises(DataError, match=r"k_core\(min_user=1000, min_item=1000\) left 0 interactions"):
        random_split(df, k_core=1000)
    with pytest.raises(DataError, match=r"filter_min_count\(min_user=5, min_item=10000\) left 0"):
        user_split(df, min_item=10_000)


# ----------------------------------------------------------------- real data

DATA_HOME = data_home()
needs_data = requires_data


@pytest.fixture(scope="module")
def ml1m() -> pd.DataFrame:
    raw = pd.read_csv(Path(DATA_HOME) / "ml-1m" / "ratings_partial.csv.gz")
    return raw.rename(columns={"user_id": USER, "movie_id": ITEM, "chrono_rank": ORDER})


@needs_data
def test_ml1m_random_split_iterative_10_core(ml1m):
    s = random_split(pre.binarize(ml1m))
    assert (s.n_users, s.n_items, s.stats["n_interactions"]) == (6040, 3260, 998_539)
    assert all((np.diff(s[m].indptr) >= 1).all() for m in ("train", "valid", "test"))


@needs_data
def test_ml1m_leave_one_out_5_core(ml1m):
    s = leave_one_out(pre.binarize(ml1m), k_core=5)
    assert (s.n_users, s.n_items, s.stats["n_interactions"]) == (6040, 3416, 999_611)
    # chrono_rank is the authority: the test target is each user's chrono_rank-last kept movie
    kept = ml1m[ml1m[ITEM].isin(s.id_map.items)]
    last = kept.loc[kept.groupby(USER)[ORDER].idxmax()].set_index(USER)[ITEM]
    assert s.id_map.items[s.arrays["test_target"]].tolist() == last.loc[s.id_map.users].tolist()


@needs_data
def test_amusic_leave_5_out_counts_raw_rows():
    raw = pd.read_csv(Path(DATA_HOME) / "amazon-digital-music-loca" / "amusic.rating.gz", header=None,
                      names=[USER, ITEM, RATING, TIMESTAMP])
    s = leave_k_out_by_time(pre.binarize(raw), k=5, min_user=10)
    st = s.stats
    assert (st["users_after_min_user"], st["rows_after_min_user"]) == (4964, 97_439)  # LOCA README
    assert st["rows_after_dedupe"] == len(pre.dedupe(raw[raw[USER].map(raw[USER].value_counts()) >= 10]))
    assert (np.diff(s["test"].indptr) == 5).all()


def test_random_split_count_duplicates_decides_the_core():
    # User 0 reviewed item 1 twice: with a 2-core counted on rows (the papers' code) item 1 stays
    # and user 0 keeps 3 distinct items; counted on pairs, item 1 (one pair) goes, and user 0,
    # left with 2 items, cannot get a train, a validation and a test item.
    rows = [(0, 0), (0, 1), (0, 1), (0, 2)] + [(u, i) for u in (1, 2, 3) for i in (2, 3, 4)] + [(1, 0)]
    d = pd.DataFrame(rows, columns=[USER, ITEM]).assign(**{RATING: 1.0, TIMESTAMP: np.arange(len(rows), dtype=float)})
    with_repeats = random_split(d, k_core=2, count_duplicates=True, seed=0)
    without = random_split(d, k_core=2, count_duplicates=False, seed=0)
    assert 0 in with_repeats.id_map.users.tolist() and 1 in with_repeats.id_map.items.tolist()
    assert 0 not in without.id_map.users.tolist() and 1 not in without.id_map.items.tolist()
    assert with_repeats.stats["rows_after_k_core"] == len(rows)


@needs_data
def test_amusic_random_split_10_core_counts_raw_rows():
    """The embedded default under TALL's protocol: about 1,100 users and 1,040 items."""
    raw = pd.read_csv(Path(DATA_HOME) / "amazon-digital-music-loca" / "amusic.rating.gz", header=None,
                      names=[USER, ITEM, RATING, TIMESTAMP])
    s = random_split(pre.binarize(raw))
    assert (s.stats["users_after_k_core"], s.stats["rows_after_k_core"]) == (1102, 19_204)
    assert (s.n_users, s.n_items, s.stats["n_interactions"]) == (1098, 1038, 14_348)


@needs_data
def test_ml1m_per_user_holdout_all_ratings(ml1m):
    s = per_user_holdout(pre.binarize(ml1m), seed=0)
    assert (s.n_users, s.n_items, s.stats["n_interactions"]) == (6040, 3706, 1_000_209)
    assert s.stats["users_without_test"] == 0 and (np.diff(s["test"].indptr) >= 1).all()
    assert abs(s["test"].nnz / 1_000_209 - 0.2) < 0.005  # floor(0.2 n) of >= 20 items per user


def test_save_refuses_to_wipe_a_directory_that_holds_no_split(df, tmp_path):
    s = random_split(df, k_core=2, seed=0)
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="holds no saved split; refusing to replace it"):
        s.save(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    s.save(tmp_path / "split")
    s.save(tmp_path / "split")  # an older split is replaced
    assert Split.load(tmp_path / "split").protocol == "random_split"
