"""Named, seeded evaluation protocols of the reproduced papers; each returns one :class:`Split`.

Every protocol takes an interaction table (binarised by the caller where the paper does, see
:func:`recsys.data.preprocess.binarize`), applies its paper's filters, remaps ids and splits.
Randomness comes only from ``numpy.random.Generator(PCG64(seed))``, so a fixed table and seed
give the same split (and byte-identical saved files).

``split.params`` records every parameter, ``split.stats`` the counts after each filter and the
nnz of every matrix, ``split.meta`` the evaluation conventions: the recall denominator and,
per evaluation stage, which matrix is the model input, which the target and which items are
masked (set to -inf) before ranking.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data import preprocess as pre
from recsys.data.preprocess import IdMap
from recsys.data.schema import ITEM, ORDER, RATING, USER
from recsys.checks import check_bool, check_fraction, check_int
from recsys.errors import ConfigError
from recsys.protocols.split import Split

_TRAIN, _VALID, _TEST = 0, 1, 2
_MIN_ITEMS_TO_SPLIT = 5  # vae_cf: held-out users with fewer items keep them all as fold-in


# --------------------------------------------------------------------------- parameter checks


def _seed(seed) -> int:
    return check_int("seed", seed, 0, 2**32 - 1)


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


# --------------------------------------------------------------------------- vectorised helpers


def _rank_within(groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """0-based rank of every element inside its group by ascending key."""
    order = np.lexsort((keys, groups))
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(g)])
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = np.arange(len(g)) - np.repeat(starts, sizes)
    return rank


def _csr(users: np.ndarray, items: np.ndarray, n_rows: int, n_items: int) -> sp.csr_matrix:
    """Binary float32 CSR, as :func:`recsys.data.preprocess.to_csr`, straight from the id arrays."""
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_rows, n_items),
                      dtype=np.float32)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _index_dtype(n: int) -> type:
    """The narrowest of int32 / int64 that holds 0..n (and -1)."""
    return np.int32 if n < 2**31 - 1 else np.int64


def _finish(protocol: str, seed: int, params: dict, id_map: IdMap, matrices: dict, arrays: dict,
            stats: dict, meta: dict) -> Split:
    """Add the common counts (users, items, unique pairs, nnz per matrix) and build the Split."""
    stats.update(
        n_users=id_map.n_users,
        n_items=id_map.n_items,
        nnz={name: int(m.nnz) for name, m in matrices.items()},
    )
    return Split(protocol=protocol, seed=seed, params=params, id_map=id_map, matrices=matrices,
                 arrays=arrays, stats=stats, meta=meta)


def _core_and_dedupe(df: pd.DataFrame, stats: dict, k: int, count_duplicates: bool) -> pd.DataFrame:
    """Iterative k-core (k=0: none) and dedupe; the core first when repeated rows should count."""
    steps = [("dedupe", pre.dedupe)]
    if k:
        core = ("k_core", lambda d: pre.k_core(d, k, k))
        steps = [core] + steps if count_duplicates else steps + [core]
    for key, fn in steps:
        df = _filtered(df, stats, key, fn(df))
    return df


def _filtered(df: pd.DataFrame, stats: dict, key: str, out: pd.DataFrame) -> pd.DataFrame:
    """Record the rows (and users) left after a filter under ``rows_after_<key>``."""
    stats[f"rows_after_{key}"] = int(len(out))
    stats[f"users_after_{key}"] = int(out[USER].nunique())
    return out


def _deduped_user_codes(df: pd.DataFrame, min_user: int, stats: dict):
    """pre.dedupe then pre.filter_min_count(min_user=...) on integer codes (no filtered copy of the
    table is made; the matrices are built once from the codes of the rows kept): (user codes
    0..n-1 of the kept users, item codes, the kept users' ids, every item id), with the counts in
    `stats`."""
    codes, uniques = pd.factorize(df[USER], sort=True, use_na_sentinel=False)
    item_codes, item_ids = pd.factorize(df[ITEM], use_na_sentinel=False)
    codes, item_codes = codes.astype(_index_dtype(len(uniques))), item_codes.astype(_index_dtype(len(item_ids)))
    pairs = pre.combine_codes(codes, item_codes, len(item_ids))
    if pre.has_repeats(pairs):
        rows = pre.latest_rows(df, pairs, "dedupe")
        codes, item_codes = codes[rows], item_codes[rows]
        del rows
    del pairs
    known = ~np.asarray(pd.isna(uniques), dtype=bool)  # NaN ids count as no user, as value_counts
    count = np.bincount(codes, minlength=len(uniques))
    stats["rows_after_dedupe"], stats["users_after_dedupe"] = int(len(codes)), int(((count > 0) & known).sum())
    kept_user = (count >= min_user) & known
    if not kept_user.all():
        sel = kept_user[codes]
        codes, item_codes = codes[sel], item_codes[sel]
        del sel
    pre._nonempty(codes, f"filter_min_count(min_user={min_user}, min_item=0)")
    stats["rows_after_min_user"], stats["users_after_min_user"] = int(len(codes)), int(kept_user.sum())
    codes = (np.cumsum(kept_user, dtype=np.int64) - 1).astype(codes.dtype)[codes]
    uniques = np.asarray(uniques)[kept_user]
    return codes, item_codes, uniques, item_ids


def _holdout_rows(users: np.ndarray, n_users: int, holdout_share: float, rng: np.random.Generator):
    """vae_cf's ``split_train_test_proportion``: which rows of a held-out part are held out (a
    random ``floor(holdout_share * n)`` of each user's n items, none for users with fewer than
    ``_MIN_ITEMS_TO_SPLIT``), and each user's held-out count."""
    size = np.bincount(users, minlength=n_users)
    # floor((1 - fold_in) * n) as vae_cf's int(0.2 * n); rounding first absorbs 1 - 0.8 = 0.19999...
    n_hold = np.where(size >= _MIN_ITEMS_TO_SPLIT, np.floor(np.round(holdout_share * size, 9)), 0)
    return _rank_within(users, rng.random(len(users))) < n_hold[users], n_hold


# --------------------------------------------------------------------------- protocols


def strong_generalization(
    df: pd.DataFrame,
    n_heldout_users: int | None = None,
    heldout_fraction: float | None = None,
    fold_in: float = 0.8,
    min_user: int = 5,
    seed: int = 98765,
) -> Split:
    """Held-out users with fold-in (Liang et al., WWW 2018, ``dawenl/vae_cf``; POSIT uses the same).

    Dedupe, keep users with >= ``min_user`` items, shuffle the users with ``seed`` and take the
    last ``n_heldout_users`` as test users, the ``n_heldout_users`` before them as validation
    users (``heldout_fraction`` instead gives that share of the users to each), the rest train.
    Items = items of training users only (ids by first appearance, as vae_cf); held-out users'
    rows on other items are dropped, and held-out users left with nothing are dropped (both
    counted in stats). Each held-out user with >= 5 items gets ``floor((1 - fold_in) * n)``
    random items as held-out target and the rest as fold-in input; users with < 5 items keep all
    as fold-in and have an empty holdout row (vae_cf's ``split_train_test_proportion``).

    Users are numbered train, then validation, then test. Matrices ``train`` (n_train x I),
    ``valid_fold_in``, ``valid_holdout`` (n_valid x I), ``test_fold_in``, ``test_holdout``;
    arrays ``train_users``, ``valid_users``, ``test_users`` (internal user id of each row).
    """
    params = dict(n_heldout_users=n_heldout_users, heldout_fraction=heldout_fraction, fold_in=fold_in,
                  min_user=min_user, seed=seed)
    seed = _seed(seed)
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
    codes, item_codes, uniques, item_ids = _deduped_user_codes(df, min_user, stats)
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
    rng = _rng(seed)
    perm = rng.permutation(n)  # vae_cf: train = perm[:-2h], validation = perm[-2h:-h], test = perm[-h:]
    user_part = np.empty(n, dtype=np.int8)
    user_part[perm[: n - 2 * n_h]] = _TRAIN
    user_part[perm[n - 2 * n_h: n - n_h]] = _VALID
    user_part[perm[n - n_h:]] = _TEST
    row_part = user_part[codes]

    train_items = pd.unique(item_codes[row_part == _TRAIN])  # by first appearance, as vae_cf
    items = np.asarray(item_ids)[train_items]
    position = np.full(len(item_ids), -1, dtype=_index_dtype(len(train_items)))
    position[train_items] = np.arange(len(train_items))
    item_idx = position[item_codes]
    del item_codes
    keep = (row_part == _TRAIN) | (item_idx >= 0)
    stats["heldout_rows_dropped_unseen_items"] = int((~keep).sum())
    has_rows = np.bincount(codes[keep], minlength=n) > 0
    blocks = {p: perm[user_part[perm] == p] for p in (_TRAIN, _VALID, _TEST)}
    for p, name in ((_VALID, "valid"), (_TEST, "test")):
        stats[f"{name}_users_dropped_no_train_items"] = int((~has_rows[blocks[p]]).sum())
        blocks[p] = blocks[p][has_rows[blocks[p]]]
    user_order = np.concatenate([blocks[_TRAIN], blocks[_VALID], blocks[_TEST]])
    new_user = np.full(n, -1, dtype=_index_dtype(n))
    new_user[user_order] = np.arange(len(user_order))
    id_map = IdMap(users=uniques[user_order], items=items)
    n_items = id_map.n_items
    if keep.all():
        u, i, part = new_user[codes], item_idx, row_part
    else:
        u, i, part = new_user[codes[keep]], item_idx[keep], row_part[keep]
    del codes, item_idx, row_part, keep

    n_train, n_valid = len(blocks[_TRAIN]), len(blocks[_VALID])
    offsets = {_TRAIN: 0, _VALID: n_train, _TEST: n_train + n_valid}
    sel = part == _TRAIN
    matrices = {"train": _csr(u[sel], i[sel], n_train, n_items)}
    arrays = {"train_users": np.arange(n_train, dtype=np.int64)}
    for p, name in ((_VALID, "valid"), (_TEST, "test")):
        sel = part == p
        pu, pi, n_p = u[sel] - offsets[p], i[sel], len(blocks[p])
        hold, n_hold = _holdout_rows(pu, n_p, holdout_share, rng)
        matrices[f"{name}_fold_in"] = _csr(pu[~hold], pi[~hold], n_p, n_items)
        matrices[f"{name}_holdout"] = _csr(pu[hold], pi[hold], n_p, n_items)
        arrays[f"{name}_users"] = offsets[p] + np.arange(n_p, dtype=np.int64)
        stats[f"{name}_users_without_holdout"] = int((n_hold == 0).sum())
    stats["n_train_users"], stats["n_valid_users"], stats["n_test_users"] = n_train, n_valid, len(blocks[_TEST])
    stats["n_interactions"] = int(len(u))

    meta = {
        "paper": "Liang et al., Variational Autoencoders for Collaborative Filtering, WWW 2018 (dawenl/vae_cf); "
                 "POSIT (Xu et al., KDD-EAI 2024) uses the same split",
        "recall_denominator": "min(k, n)",
        "ndcg": "binary gains, IDCG over min(k, n) positions",
        "min_items_to_split": _MIN_ITEMS_TO_SPLIT,
        "evaluation": {
            stage: {"users": f"{stage}_users", "input": [f"{stage}_fold_in"], "target": f"{stage}_holdout",
                    "mask": [f"{stage}_fold_in"]}
            for stage in ("valid", "test")
        },
        "note": "rows of held-out users with < 5 items have an empty holdout; metrics skip users without targets",
    }
    return _finish("strong_generalization", seed, params, id_map, matrices, arrays, stats, meta)


def random_split(
    df: pd.DataFrame,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    k_core: int = 10,
    count_duplicates: bool = True,
    seed: int = 0,
) -> Split:
    """Global random split of interactions (LFT, Zhu & Caverlee WSDM 2022; TALL reuses it).

    Iterative ``k_core`` on users and items (0 disables) and dedupe — in that order when
    ``count_duplicates`` (repeated rows of a pair count towards the core, as the papers' code
    reads raw rating rows: the embedded Amazon Digital Music 10-core keeps 1,102 users and 1,040
    items; ML-1M has no repeats), else dedupe first. Then drop users with < 3
    interactions (they cannot get one of each part; counted, none with ``k_core >= 3``). Then a
    random permutation of ALL interactions: the first ``int(valid * n)`` are validation, the next
    ``int(test * n)`` test, the rest train (LFT draws the same sizes without replacement).
    Guarantees, as LFT's notebook: every user without a validation item gets one random train
    item moved to validation, then every user without a test item gets one moved to test —
    only while the user keeps >= 1 train item. A user still missing a part after that (possible
    only when the random draw left < 2 train items) is re-dealt: one random item to validation,
    one to test, the rest to train (counted as ``users_redealt``).

    Matrices ``train``, ``valid``, ``test``, each |U| x |I|; ids by first appearance (as LFT).
    """
    params = dict(fractions=tuple(fractions) if isinstance(fractions, (list, tuple)) else fractions,
                  k_core=k_core, count_duplicates=count_duplicates, seed=seed)
    seed = _seed(seed)
    if not isinstance(fractions, (list, tuple)) or len(fractions) != 3:
        raise ConfigError(f"fractions={fractions!r}: expected three numbers (train, valid, test), e.g. (0.7, 0.1, 0.2)")
    f_train, f_valid, f_test = (check_fraction(f"fractions[{j}]", f) for j, f in enumerate(fractions))
    if not math.isclose(f_train + f_valid + f_test, 1.0, abs_tol=1e-9):
        raise ConfigError(
            f"fractions={tuple(fractions)!r} sum to {f_train + f_valid + f_test:g}; they must sum to 1, "
            f"e.g. (0.7, 0.1, 0.2)"
        )
    k = check_int("k_core", k_core, 0)
    check_bool("count_duplicates", count_duplicates)

    stats: dict = {"rows_in": int(len(df))}
    df = _core_and_dedupe(df, stats, k, count_duplicates)
    df = _filtered(df, stats, "min_user_3", pre.filter_min_count(df, min_user=3))
    df, id_map = pre.remap_ids(df)
    u = df[USER].to_numpy()
    n, n_users = len(df), id_map.n_users

    rng = _rng(seed)
    perm = rng.permutation(n)
    n_valid, n_test = int(f_valid * n), int(f_test * n)
    part = np.full(n, _TRAIN, dtype=np.int8)
    part[perm[:n_valid]] = _VALID
    part[perm[n_valid: n_valid + n_test]] = _TEST
    keys = rng.random(n)  # one random priority per row decides which train item moves

    def counts() -> np.ndarray:
        return np.bincount(u * 3 + part, minlength=3 * n_users).reshape(n_users, 3)

    for p, name in ((_VALID, "valid"), (_TEST, "test")):
        c = counts()
        need = (c[:, p] == 0) & (c[:, _TRAIN] >= 2)
        cand = np.flatnonzero((part == _TRAIN) & need[u])
        moved = cand[_rank_within(u[cand], keys[cand]) == 0]
        part[moved] = p
        stats[f"moved_to_{name}"] = int(len(moved))
    bad = (counts() == 0).any(axis=1)
    rows = np.flatnonzero(bad[u])
    rank = _rank_within(u[rows], keys[rows])
    part[rows] = np.select([rank == 0, rank == 1], [_VALID, _TEST], _TRAIN)
    stats["users_redealt"] = int(bad.sum())

    i = df[ITEM].to_numpy()
    matrices = {name: _csr(u[part == p], i[part == p], n_users, id_map.n_items)
                for p, name in ((_TRAIN, "train"), (_VALID, "valid"), (_TEST, "test"))}
    stats["n_interactions"] = int(n)
    stats["realised_fractions"] = [round(float((part == p).mean()), 6) for p in (_TRAIN, _VALID, _TEST)]
    meta = {
        "paper": "Zhu & Caverlee, Fighting Mainstream Bias in Recommender Systems via Local Fine Tuning, "
                 "WSDM 2022 (LFT/EnLFT); TALL (Pan et al., ECIR 2024) uses the same split",
        "recall_denominator": "n",
        "ndcg": "binary gains, IDCG over min(k, n) positions",
        "evaluation": {
            "valid": {"input": ["train"], "target": "valid", "mask": ["train"]},
            "test": {"input": ["train"], "target": "test", "mask": ["train"]},
        },
        "note": "LFT's evaluator masks only training items, also at test time; the notebook is unseeded",
    }
    return _finish("random_split", seed, params, id_map, matrices, {}, stats, meta)


def leave_k_out_by_time(
    df: pd.DataFrame,
    k: int = 5,
    min_user: int = 10,
    n_valid: int = 0,
    count_duplicates: bool = True,
    seed: int = 0,
) -> Split:
    """Last ``k`` interactions of every user by time are the test set (LOCA, Choi et al. WSDM 2021).

    Drop users with < ``min_user`` rows — counting repeated rows of a pair when
    ``count_duplicates`` (LOCA counts raw rating rows; AMusic keeps 4,964 users / 97,439 rows) —
    then dedupe (keeping the latest row of a pair, so a pair cannot be both train and test),
    drop users left with < ``k + n_valid + 1`` distinct items (counted), order each user by time
    (ties by file position, like LOCA's stable sort). The last ``k`` items are test, the
    ``n_valid`` before them validation (0 = LOCA, which has no validation split), the rest
    train. Items ids by descending popularity as LOCA; users by ascending original id.
    Deterministic: ``seed`` is recorded only. Matrices ``train``, ``test`` (and ``valid``).
    """
    params = dict(k=k, min_user=min_user, n_valid=n_valid, count_duplicates=count_duplicates, seed=seed)
    seed = _seed(seed)
    k = check_int("k", k, 1)
    min_user = check_int("min_user", min_user, 0)
    n_valid = check_int("n_valid", n_valid, 0)
    check_bool("count_duplicates", count_duplicates)

    stats: dict = {"rows_in": int(len(df))}
    steps = [("min_user", lambda d: pre.filter_min_count(d, min_user=min_user)), ("dedupe", pre.dedupe)]
    for key, fn in steps if count_duplicates else steps[::-1]:
        df = _filtered(df, stats, key, fn(df))
    need = k + n_valid + 1
    df = _filtered(df, stats, "min_distinct", pre.filter_min_count(df, min_user=need))
    df = pre.time_order(df)
    df, id_map = pre.remap_ids(df, items_by="popularity")
    u, i, order = (df[c].to_numpy() for c in (USER, ITEM, ORDER))
    from_end = np.bincount(u)[u] - 1 - order  # 0 = the user's latest interaction
    parts = {"train": from_end >= k + n_valid, "test": from_end < k}
    if n_valid:
        parts["valid"] = (from_end >= k) & (from_end < k + n_valid)
    matrices = {name: _csr(u[sel], i[sel], id_map.n_users, id_map.n_items) for name, sel in parts.items()}
    stats["n_interactions"] = int(len(df))
    stages = {"test": {"input": ["train"], "target": "test", "mask": ["train"]}}
    if n_valid:
        stages["valid"] = {"input": ["train"], "target": "valid", "mask": ["train"]}
    meta = {
        "paper": "Choi et al., Local Collaborative Autoencoders, WSDM 2021 (jin530/LOCA)",
        "recall_denominator": "n",
        "ndcg": "binary gains, IDCG over min(k, n) positions",
        "evaluation": stages,
        "note": "LOCA has no validation split and early-stops on the test set; use n_valid > 0 to avoid that",
    }
    return _finish("leave_k_out_by_time", seed, params, id_map, matrices, {}, stats, meta)


def leave_one_out(df: pd.DataFrame, k_core: int = 5, count_duplicates: bool = True, seed: int = 0) -> Split:
    """Sequences: last item = test target, second-to-last = validation target (BERT4Rec, BaM).

    Iterative ``k_core`` on users and items (0 disables) and dedupe keeping the latest row of a
    pair (core first when ``count_duplicates``, as in :func:`random_split`), drop users with < 3
    items (counted), order each user by time. Arrays ``seq_indptr`` (n_users + 1) and
    ``seq_items`` hold every user's full time-ordered sequence (user u is
    ``seq_items[seq_indptr[u]:seq_indptr[u + 1]]``); ``valid_target`` / ``test_target`` are the
    second-to-last / last item; ``seq_ratings`` (float64, NaN where unknown), aligned with
    ``seq_items``, when the table has a rating column. Matrices ``train`` (items of ``seq[:-2]``), ``valid`` and
    ``test`` (one-hot targets). Validation scores from ``seq[:-2]``; test scores from
    ``seq[:-1]`` (validation target included) and masks those items. Metrics: HR@k (= Recall@k
    with one target) and NDCG@k. Deterministic: ``seed`` is recorded only. Ids: users and items
    by ascending original id.
    """
    params = dict(k_core=k_core, count_duplicates=count_duplicates, seed=seed)
    seed = _seed(seed)
    k = check_int("k_core", k_core, 0)
    check_bool("count_duplicates", count_duplicates)

    stats: dict = {"rows_in": int(len(df))}
    df = _core_and_dedupe(df, stats, k, count_duplicates)
    df = _filtered(df, stats, "min_user_3", pre.filter_min_count(df, min_user=3))
    df = pre.time_order(df)
    df, id_map = pre.remap_ids(df, items_by="sorted", users_by="sorted")
    u, i = df[USER].to_numpy(), df[ITEM].to_numpy()
    n_users, n_items = id_map.n_users, id_map.n_items
    indptr = np.r_[0, np.cumsum(np.bincount(u, minlength=n_users))].astype(np.int64)
    from_end = indptr[u + 1] - 1 - np.arange(len(u))
    users = np.arange(n_users, dtype=np.int64)
    arrays = {
        "seq_indptr": indptr,
        "seq_items": i.astype(np.int64),
        "valid_target": i[indptr[1:] - 2].astype(np.int64),
        "test_target": i[indptr[1:] - 1].astype(np.int64),
    }
    if RATING in df.columns:  # the sequential models' rating heads read it (NaN = unknown rating)
        arrays["seq_ratings"] = df[RATING].to_numpy(dtype=np.float64, na_value=np.nan)
    matrices = {
        "train": _csr(u[from_end >= 2], i[from_end >= 2], n_users, n_items),
        "valid": _csr(users, arrays["valid_target"], n_users, n_items),
        "test": _csr(users, arrays["test_target"], n_users, n_items),
    }
    stats["n_interactions"] = int(len(u))
    meta = {
        "paper": "BERT4Rec (Sun et al., CIKM 2019) / BaM (Lee, Yun & Kang, IEEE BigData 2024) leave-one-out",
        "recall_denominator": "n",
        "metrics": "HR@k (= Recall@k with one target) and NDCG@k, full ranking",
        "evaluation": {
            "valid": {"history": "seq[:-2]", "input": ["train"], "target": "valid", "mask": ["train"]},
            "test": {"history": "seq[:-1]", "input": ["train", "valid"], "target": "test", "mask": ["train", "valid"]},
        },
        "note": "BaM sets history scores to 0 rather than -inf before top-k; mask with -inf to rank only unseen items",
    }
    return _finish("leave_one_out", seed, params, id_map, matrices, arrays, stats, meta)


def user_split(
    df: pd.DataFrame,
    n_test_users: int = 1000,
    valid_fraction: float = 0.15,
    min_item: int = 0,
    min_user: int = 5,
    seed: int = 0,
) -> Split:
    """Cold-start users as tasks (MELO, Kim et al. CIKM 2023): whole users are train, valid or test.

    One pass of filters: items with >= ``min_item`` rows (MELO: 50), then users with >=
    ``min_user`` rows (MELO: 5). No dedupe: a user's sequence is every rating event, time-ordered.
    ``n_test_users`` random users are test (MELO: 1,000 for ML-1M, 5,000 for Amazon); of the
    rest, ``round(valid_fraction * rest)`` random users are validation (MELO draws each with
    probability 0.15, unseeded) and the others train. Arrays ``train_users``, ``valid_users``,
    ``test_users`` (sorted), ``seq_indptr``, ``seq_items``, ``seq_ratings`` (float64; NaN where
    the rating is unknown — rating-regression callers must first call
    :func:`recsys.data.preprocess.require_known_ratings`). Matrix ``interactions`` (|U| x |I|,
    binary). The target of a task is its sequence's last rating.
    """
    params = dict(n_test_users=n_test_users, valid_fraction=valid_fraction, min_item=min_item,
                  min_user=min_user, seed=seed)
    seed = _seed(seed)
    n_test = check_int("n_test_users", n_test_users, 1)
    valid_fraction = check_fraction("valid_fraction", valid_fraction)
    min_item = check_int("min_item", min_item, 0)
    min_user = check_int("min_user", min_user, 2)

    stats: dict = {"rows_in": int(len(df))}
    df = _filtered(df, stats, "min_counts", pre.filter_min_count(df, min_user=min_user, min_item=min_item))
    df = pre.time_order(df)
    df, id_map = pre.remap_ids(df, items_by="sorted", users_by="sorted")
    n = id_map.n_users
    n_rest = n - n_test
    n_valid = int(round(valid_fraction * n_rest))
    if n_rest < 2 or not 1 <= n_valid < n_rest:
        raise ConfigError(
            f"user_split: n_test_users={n_test:,} and valid_fraction={valid_fraction:g} leave "
            f"{max(n_rest, 0):,} training and validation users of {n:,} ({n_valid:,} validation); "
            f"lower n_test_users (at most {max(n - 2, 0):,}) or change valid_fraction so both get >= 1 user"
        )
    perm = _rng(seed).permutation(n)
    u, i = df[USER].to_numpy(), df[ITEM].to_numpy()
    arrays = {
        "train_users": np.sort(perm[n_test + n_valid:]).astype(np.int64),
        "valid_users": np.sort(perm[n_test: n_test + n_valid]).astype(np.int64),
        "test_users": np.sort(perm[:n_test]).astype(np.int64),
        "seq_indptr": np.r_[0, np.cumsum(np.bincount(u, minlength=n))].astype(np.int64),
        "seq_items": i.astype(np.int64),
        "seq_ratings": df[RATING].to_numpy(dtype=np.float64, na_value=np.nan)
        if RATING in df.columns else np.full(len(df), np.nan),
    }
    matrices = {"interactions": _csr(u, i, n, id_map.n_items)}
    stats["n_interactions"] = int(matrices["interactions"].nnz)
    stats["n_rows"] = int(len(df))
    stats["n_ratings_unknown"] = int(np.isnan(arrays["seq_ratings"]).sum())
    stats["n_train_users"], stats["n_valid_users"], stats["n_test_users"] = n - n_test - n_valid, n_valid, n_test
    meta = {
        "paper": "Kim, Yang, Ryu & Kim, MELO: meta-learning with adaptive weighted loss for cold-start "
                 "rating prediction, CIKM 2023 (YangYongJin/MELO)",
        "recall_denominator": "n/a (rating regression)",
        "metrics": "RMSE and MAE of the last rating of each validation / test user's sequence",
        "evaluation": {
            stage: {"users": f"{stage}_users", "history": "seq[:-1]", "target": "seq_ratings[-1]"}
            for stage in ("valid", "test")
        },
    }
    return _finish("user_split", seed, params, id_map, matrices, arrays, stats, meta)


def per_user_holdout(
    df: pd.DataFrame,
    test_fraction: float = 0.2,
    min_user: int = 1,
    seed: int = 0,
) -> Split:
    """Weak generalisation: a random share of every user's items is test (seed 004, MultVAE on ML-1M).

    Dedupe, keep users with >= ``min_user`` items, remap ids (users and items by first
    appearance). Every user with n >= 2 items gets ``max(1, floor(test_fraction * n))`` random
    items as test (never all of them: at least one stays in train); users with one item keep
    it in train and have an empty test row (counted). The same users train and test. Matrices
    ``train`` and ``test``, each |U| x |I|. There is no validation split: seed 004
    (khanhnamle1994/transfer-rec VAE-PyTorch) picks the best epoch on the test set.
    """
    params = dict(test_fraction=test_fraction, min_user=min_user, seed=seed)
    seed = _seed(seed)
    test_fraction = check_fraction("test_fraction", test_fraction)
    min_user = check_int("min_user", min_user, 1)

    stats: dict = {"rows_in": int(len(df))}
    df = _filtered(df, stats, "dedupe", pre.dedupe(df))
    df = _filtered(df, stats, "min_user", pre.filter_min_count(df, min_user=min_user))
    df, id_map = pre.remap_ids(df)
    u, i = df[USER].to_numpy(), df[ITEM].to_numpy()
    size = np.bincount(u, minlength=id_map.n_users)
    # floor as vae_cf's int(0.2 * n); rounding first absorbs float noise such as 0.2 * 5 = 1.0000000000000002
    n_test = np.floor(np.round(test_fraction * size, 9)).astype(np.int64)
    n_test = np.where(size >= 2, np.clip(n_test, 1, size - 1), 0)
    test = _rank_within(u, _rng(seed).random(len(u))) < n_test[u]
    matrices = {
        "train": _csr(u[~test], i[~test], id_map.n_users, id_map.n_items),
        "test": _csr(u[test], i[test], id_map.n_users, id_map.n_items),
    }
    stats["n_interactions"] = int(len(u))
    stats["users_without_test"] = int((n_test == 0).sum())
    stats["realised_test_fraction"] = round(float(test.mean()), 6) if len(u) else 0.0
    meta = {
        "paper": "seed 004: khanhnamle1994/transfer-rec Autoencoders-Experiments/VAE-PyTorch (MultVAE on ML-1M, "
                 "per-user random 80/20)",
        "recall_denominator": "min(k, n)",
        "ndcg": "binary gains, IDCG over min(k, n) positions",
        "evaluation": {"test": {"input": ["train"], "target": "test", "mask": ["train"]}},
        "note": "no validation split: seed 004 picks the best epoch on the test set; users with one item "
                "have no test item and are skipped by the metrics",
    }
    return _finish("per_user_holdout", seed, params, id_map, matrices, {}, stats, meta)


# --------------------------------------------------------------------------- registry

PROTOCOLS: dict[str, Callable[..., Split]] = {
    "strong_generalization": strong_generalization,
    "random_split": random_split,
    "leave_k_out_by_time": leave_k_out_by_time,
    "leave_one_out": leave_one_out,
    "user_split": user_split,
    "per_user_holdout": per_user_holdout,
}


def make_split(name: str, df: pd.DataFrame, **params) -> Split:
    """Run protocol ``name`` on ``df``; unknown names and parameters raise ConfigError."""
    if name not in PROTOCOLS:
        close = difflib.get_close_matches(str(name), list(PROTOCOLS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown protocol '{name}'.{hint} Valid protocols: {', '.join(sorted(PROTOCOLS))}")
    fn = PROTOCOLS[name]
    accepted = [p for p in inspect.signature(fn).parameters if p != "df"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"protocol '{name}' has no parameter(s) {unknown}.{hint} Accepted: {', '.join(accepted)}"
        )
    return fn(df, **params)
