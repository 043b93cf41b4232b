"""Composable preprocessing of an interaction table (see :mod:`recsys.data.schema`).

Every function takes a DataFrame and returns a new one (the input is never mutated), with a
fresh 0..n-1 index and rows kept in their input (file) order unless the function says
otherwise. Filters that leave nothing raise :class:`~recsys.errors.DataError` naming the
filter and its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.schema import ITEM, ORDER, RATING, TIMESTAMP, USER
from recsys.errors import ConfigError, DataError

IdOrder = Literal["first", "sorted", "popularity"]
_ID_ORDERS = ("first", "sorted", "popularity")
# With copy-on-write (always on from pandas 3) a shallow copy shares columns until either side
# writes, so a function that replaces columns need not copy the others first.
_SHALLOW_COPY_IS_SAFE = int(pd.__version__.split(".")[0]) >= 3


# --------------------------------------------------------------------------- checks


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{where}: the interaction table has no column(s) {missing}; it has {list(df.columns)}. "
            f"Loaders return columns {USER!r}, {ITEM!r}, {RATING!r}, {TIMESTAMP!r} (and optionally {ORDER!r})."
        )


def _nonempty(df, call: str):
    """`df` (a table, or the rows / codes a filter kept) unless it is empty: then one DataError
    naming the filter `call`."""
    if len(df) == 0:
        raise DataError(f"{call} left 0 interactions: lower the thresholds or check the input")
    return df


def _float_column(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    try:
        return df[col].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: column {col!r} must be numeric (NaN = unknown); {err}") from None


def _time_key(df: pd.DataFrame, where: str) -> np.ndarray | None:
    """Per-row time key: ``order`` if present, else ``timestamp``; None when file order is time order.

    A key that is unknown for only some rows cannot order those rows against the others, so it
    is refused rather than guessed.
    """
    col = ORDER if ORDER in df.columns else TIMESTAMP if TIMESTAMP in df.columns else None
    if col is None:
        return None
    key = _float_column(df, col, where)
    unknown = np.isnan(key)
    if not unknown.any():
        return key
    if unknown.all():
        return None  # e.g. sequence files: rows are already in time order
    raise DataError(
        f"{where}: {int(unknown.sum()):,} of {len(key):,} rows have no {col!r}, so their time order "
        f"against the other rows is unknown. Add an {ORDER!r} column (0-based position in the "
        f"user's history) or drop those rows first."
    )


def _time_sorted_positions(df: pd.DataFrame, where: str) -> np.ndarray:
    """Row positions sorted by (user, time key, file position); stable, ties by file position."""
    user_codes, _ = pd.factorize(df[USER], sort=True)
    pos = np.arange(len(df))
    key = _time_key(df, where)
    if key is None:
        return np.lexsort((pos, user_codes))
    return np.lexsort((pos, key, user_codes))


# --------------------------------------------------------------------------- ratings


def binarize(df: pd.DataFrame, threshold: float | None = None, *, unknown_max: float | None = None) -> pd.DataFrame:
    """Keep rows with ``rating >= threshold`` and set every rating to 1.0 (implicit feedback).

    ``threshold=None`` keeps every row ("all ratings are implicit feedback", LOCA, LFT, BaM).
    Unknown (NaN) ratings are kept with ``threshold=None``; with a threshold they are decidable
    only when the source bounds them: pass ``unknown_max`` (every unknown rating is
    ``<= unknown_max``) and ``threshold > unknown_max`` drops them exactly. Otherwise DataError.
    ML-1M's shared partial file has ``unknown_max=3``: ``threshold >= 4`` or None are exact.
    """
    _require_columns(df, (USER, ITEM, RATING), "binarize")
    out = df.copy(deep=not _SHALLOW_COPY_IS_SAFE)
    if threshold is None:
        out[RATING] = 1.0
        return out.reset_index(drop=True)
    ratings = _float_column(out, RATING, "binarize")
    unknown = np.isnan(ratings)
    if unknown.any() and not (unknown_max is not None and threshold > unknown_max):
        exact = "threshold=None (every interaction is a positive)"
        if unknown_max is not None:
            exact += f" or threshold > {unknown_max:g} (every unknown rating is <= {unknown_max:g})"
        else:
            exact += ", or pass unknown_max=<largest possible unknown rating> if the source bounds them"
        raise DataError(
            f"binarize(threshold={threshold:g}): {int(unknown.sum()):,} of {len(ratings):,} ratings are "
            f"unknown, so whether they reach the threshold cannot be decided. Exact choices: {exact}."
        )
    out = out.loc[ratings >= threshold]  # NaN compares False: unknown rows (all <= unknown_max) drop
    out[RATING] = 1.0
    return _nonempty(out.reset_index(drop=True), f"binarize(threshold={threshold:g})")


def require_known_ratings(df: pd.DataFrame, purpose: str) -> pd.DataFrame:
    """Return ``df`` unchanged if every rating is known, else DataError (rating-regression uses, MELO)."""
    _require_columns(df, (RATING,), "require_known_ratings")
    n_unknown = int(df[RATING].isna().sum())
    if n_unknown:
        raise DataError(
            f"{n_unknown:,} of {len(df):,} rows have no rating; {purpose} needs the rating of every row. "
            f"The shared ML-1M file only knows ratings >= 4 and the most recent 20%: use the official "
            f"ratings.dat (see README) or an implicit protocol"
        )
    return df


# --------------------------------------------------------------------------- filters


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item): keep the latest (by ``order``, else ``timestamp``, else file position).

    The kept rows stay in file order. ``order`` values are not renumbered (see :func:`time_order`).
    """
    _require_columns(df, (USER, ITEM), "dedupe")
    pairs = pair_codes(df)
    if not has_repeats(pairs):
        return df.reset_index(drop=True)
    return df.iloc[latest_rows(df, pairs, "dedupe")].reset_index(drop=True)


def pair_codes(df: pd.DataFrame) -> np.ndarray:
    """One int64 per row, equal exactly where the rows' (user, item) pairs are equal (NaN ids too)."""
    users, _ = pd.factorize(df[USER], use_na_sentinel=False)
    items, item_ids = pd.factorize(df[ITEM], use_na_sentinel=False)
    return combine_codes(users, items, len(item_ids))


def combine_codes(user_codes: np.ndarray, item_codes: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 per (user code, item code) pair, item codes in 0..n_items-1."""
    return user_codes.astype(np.int64) * max(n_items, 1) + item_codes


def has_repeats(codes: np.ndarray) -> bool:
    """Whether any value occurs twice (a sort: faster and smaller than hashing for big arrays)."""
    ordered = np.sort(codes)
    return bool((ordered[1:] == ordered[:-1]).any())


def latest_rows(df: pd.DataFrame, pairs: np.ndarray, where: str) -> np.ndarray:
    """Ascending positions of the rows :func:`dedupe` keeps: per value of ``pairs``, the latest
    row by ``order``, else ``timestamp``, else file position (ties: the later file position)."""
    pos = np.arange(len(df))
    key = _time_key(df, where)
    by_time = pos if key is None else np.lexsort((pos, key))
    latest = ~pd.Series(pairs[by_time], copy=False).duplicated(keep="last").to_numpy()
    return np.sort(by_time[latest])


def filter_min_count(df: pd.DataFrame, min_user: int = 0, min_item: int = 0) -> pd.DataFrame:
    """One pass: drop items with < ``min_item`` rows, then users with < ``min_user`` rows.

    Counts rows (repeated (user, item) rows count each time; :func:`dedupe` first to count pairs).
    Items-then-users is the order of vae_cf's ``filter_triplets`` and MELO's ``filter_triplets``.
    """
    _require_columns(df, (USER, ITEM), "filter_min_count")
    out = df
    if min_item > 0:
        counts = out[ITEM].value_counts()
        out = out[out[ITEM].isin(counts.index[counts >= min_item])]
    if min_user > 0:
        counts = out[USER].value_counts()
        out = out[out[USER].isin(counts.index[counts >= min_user])]
    return _nonempty(out.reset_index(drop=True), f"filter_min_count(min_user={min_user}, min_item={min_item})")


def k_core(df: pd.DataFrame, min_user: int = 10, min_item: int = 10) -> pd.DataFrame:
    """Iterative core: repeat the user then item filter until every user has >= ``min_user`` rows
    and every item >= ``min_item`` (LFT/TALL's 10-core; the result does not depend on the order)."""
    _require_columns(df, (USER, ITEM), "k_core")
    out = df
    while True:
        user_counts = out[USER].value_counts()
        item_counts = out[ITEM].value_counts()
        keep = out[USER].map(user_counts).to_numpy() >= min_user
        keep &= out[ITEM].map(item_counts).to_numpy() >= min_item
        if keep.all():
            break
        out = out[keep]
        if len(out) == 0:
            break
    return _nonempty(out.reset_index(drop=True), f"k_core(min_user={min_user}, min_item={min_item})")


def time_order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by user, then time, with ``order`` (re)set to 0..n_u-1 per user.

    Time is the ``order`` column when present (it is the authority), else ``timestamp``; ties keep
    file order. When neither is known for any row the file order is taken as the time order; a
    key known for only some rows raises DataError.
    """
    _require_columns(df, (USER, ITEM), "time_order")
    out = df.iloc[_time_sorted_positions(df, "time_order")].reset_index(drop=True)
    out[ORDER] = out.groupby(USER, sort=False).cumcount().astype(np.int64)
    return out


# --------------------------------------------------------------------------- ids


@dataclass(eq=False)
class IdMap:
    """Internal contiguous ids -> original ids: ``users[u]`` is the original id of internal user u."""

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        self.users = _as_id_array(self.users)
        self.items = _as_id_array(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_index(self, original: Any) -> int | np.ndarray:
        """Internal id(s) of original user id(s); KeyError for an unknown id."""
        return _lookup(self.users, original, "user")

    def item_index(self, original: Any) -> int | np.ndarray:
        """Internal id(s) of original item id(s); KeyError for an unknown id."""
        return _lookup(self.items, original, "item")

    def to_dict(self) -> dict:
        """JSON-safe form; int ids stay ints and str ids stay strs."""
        return {"users": _to_json_list(self.users), "items": _to_json_list(self.items)}

    @classmethod
    def from_dict(cls, d: dict) -> "IdMap":
        return cls(users=_as_id_array(d["users"]), items=_as_id_array(d["items"]))


def _lookup(ids: np.ndarray, original: Any, what: str) -> int | np.ndarray:
    scalar = np.ndim(original) == 0
    query = _as_id_array(np.atleast_1d(original))
    idx = pd.Index(ids).get_indexer(query)
    if (idx < 0).any():
        missing = query[idx < 0][:5].tolist()
        raise KeyError(f"unknown original {what} id(s) {missing} (the map has {len(ids):,} {what}s)")
    return int(idx[0]) if scalar else idx.astype(np.int64)


def _as_id_array(values: Any) -> np.ndarray:
    """Ids as int64 when they are all integers, else as an object array (str ids stay str)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu" or (arr.dtype == object and pd.api.types.infer_dtype(arr, skipna=False) == "integer"):
        return arr.astype(np.int64)
    return arr.astype(object)


def _to_json_list(ids: np.ndarray) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in ids.tolist()]


def _id_order(col: pd.Series, how: IdOrder) -> np.ndarray:
    """Original ids in internal order."""
    if how == "first":
        return _as_id_array(pd.unique(col))
    codes, uniques = pd.factorize(col, sort=True)
    uniques = _as_id_array(uniques)
    if how == "sorted":
        return uniques
    # popularity: descending count; stable sort keeps ties in original-id order
    return uniques[np.argsort(-np.bincount(codes), kind="stable")]


def remap_ids(df: pd.DataFrame, items_by: IdOrder = "first", users_by: IdOrder = "first") -> tuple[pd.DataFrame, IdMap]:
    """Replace original ids with contiguous int64 ids 0..n-1 and return the :class:`IdMap`.

    Orders: ``"first"`` = order of first appearance in ``df``; ``"sorted"`` = ascending original
    id; ``"popularity"`` = descending row count, ties by ascending original id (LOCA orders ids
    by popularity).
    """
    _require_columns(df, (USER, ITEM), "remap_ids")
    for name, how in (("items_by", items_by), ("users_by", users_by)):
        if how not in _ID_ORDERS:
            raise ConfigError(f"remap_ids({name}={how!r}): expected one of {_ID_ORDERS}")
    id_map = IdMap(users=_id_order(df[USER], users_by), items=_id_order(df[ITEM], items_by))
    out = df.copy()
    out[USER] = pd.Index(id_map.users).get_indexer(df[USER]).astype(np.int64)
    out[ITEM] = pd.Index(id_map.items).get_indexer(df[ITEM]).astype(np.int64)
    return out.reset_index(drop=True), id_map


# --------------------------------------------------------------------------- matrices and summaries


def to_csr(df: pd.DataFrame, n_users: int, n_items: int, values: str | np.ndarray | None = None) -> sp.csr_matrix:
    """``n_users x n_items`` float32 CSR of internal ids (canonical: sorted indices, no duplicates).

    Binary by default (repeated pairs are summed, then clipped to 1); with ``values`` (a column
    name or an array) repeated pairs are summed.
    """
    _require_columns(df, (USER, ITEM), "to_csr")
    rows = df[USER].to_numpy(dtype=np.int64)
    cols = df[ITEM].to_numpy(dtype=np.int64)
    if values is None:
        data = np.ones(len(df), dtype=np.float32)
    else:
        data = np.asarray(df[values] if isinstance(values, str) else values, dtype=np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)
    m.sum_duplicates()
    if values is None:
        m.data[:] = 1.0
    return m


def describe(df: pd.DataFrame) -> dict:
    """Counts of an interaction table: users, items, rows, unique pairs, density, known ratings."""
    _require_columns(df, (USER, ITEM), "describe")
    n_users, n_items = int(df[USER].nunique()), int(df[ITEM].nunique())
    n_pairs = int((~df.duplicated([USER, ITEM])).sum())
    return {
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": int(len(df)),
        "n_unique_pairs": n_pairs,
        "density": n_pairs / (n_users * n_items) if n_users and n_items else 0.0,
        "n_ratings_known": int(df[RATING].notna().sum()) if RATING in df.columns else 0,
    }
