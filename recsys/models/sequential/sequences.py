"""Vectorised batching of ragged item sequences for the sequential models.

Sequences are stored CSR-style: ``items[indptr[u]:indptr[u + 1]]`` is user u's time-ordered
sequence (internal item ids 0..I-1), as in the ``seq_indptr`` / ``seq_items`` arrays of a
leave-one-out split. A *window* of a user is the slice ``[start, stop)`` of that sequence.

Token convention shared by the sequential models: 0 = PAD, item i -> token i + 1, and models
that need more special tokens (BERT4Rec's MASK) put them after the items (I + 1, ...).
Batches are **right-aligned** (padding on the left), so the most recent item always sits in
the last column; with positions counted from the right end, trimming all-PAD columns from the
left changes nothing the model sees.

Containers shared by the models: :class:`Sequences` (ragged sequences with where each user's
training part stops, optional evaluation targets and per-interaction ratings) built by
:func:`as_sequences` from a leave-one-out Split or a list of item-id arrays, and
:class:`EvalSet` (one ranking pass: histories, one target per user, the items to exclude).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from recsys.checks import check_choice
from recsys.errors import ConfigError, DataError

PAD = 0
ITEM_OFFSET = 1  # token = item id + ITEM_OFFSET
STAGES = ("valid", "test")


def to_indptr(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) from a list of per-user item-id arrays."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    indptr = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.zeros(0, np.int64)
    return indptr, items


def last_window_start(stop: np.ndarray, max_len: int) -> np.ndarray:
    """Start of the most recent window of at most `max_len` items ending at `stop`."""
    return np.maximum(np.asarray(stop, dtype=np.int64) - max_len, 0)


def random_window(stop: np.ndarray, max_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of a uniformly drawn window of min(stop, max_len) items inside ``[0, stop)``.

    Sequences no longer than `max_len` are taken whole; a longer one yields a different
    contiguous window each call, so over epochs every interaction is trained on.
    """
    stop = np.asarray(stop, dtype=np.int64)
    slack = np.maximum(stop - max_len, 0)
    start = rng.integers(0, slack + 1)
    return start, np.minimum(start + max_len, stop)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 8) -> list[np.ndarray]:
    """Row indices of a random epoch's batches, grouping rows of similar length.

    Rows are shuffled, cut into pools of ``pool * batch_size``, sorted by length inside each
    pool and cut into batches, whose order is shuffled again. Batches stay random draws of the
    data while padding shrinks (ML-1M at max_len 200: ~47 % of a random batch is PAD, ~10 %
    with pool 8). ``pool=1`` gives plain random batches.
    """
    order = rng.permutation(len(lengths))
    size = pool * batch_size
    batches = []
    for s in range(0, len(order), size):
        chunk = order[s : s + size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def window_tokens(
    indptr: np.ndarray,
    items: np.ndarray,
    users: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    width: int | None = None,
) -> np.ndarray:
    """Right-aligned token matrix [B, width] of each user's window ``[start, stop)``.

    Tokens are item id + 1, PAD (0) on the left. `width` defaults to the longest window in
    the batch (dynamic trimming: no column is all PAD). Pure numpy fancy indexing.
    """
    users = np.asarray(users, dtype=np.int64)
    start = np.asarray(start, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    n = stop - start
    if (n < 0).any() or (start < 0).any() or (stop > indptr[users + 1] - indptr[users]).any():
        raise DataError("a window [start, stop) must lie within the user's sequence")
    if width is None:
        width = int(n.max()) if len(n) else 0
    if (n > width).any():
        raise DataError(f"a window of {int(n.max())} items does not fit in width {width}")
    cols = np.arange(width, dtype=np.int64)
    offset = cols[None, :] - (width - n)[:, None]  # position inside the window; < 0 on padding
    valid = offset >= 0
    flat = indptr[users][:, None] + start[:, None] + np.where(valid, offset, 0)
    if items.size == 0:
        return np.zeros((len(users), width), dtype=np.int64)
    return np.where(valid, items[np.minimum(flat, items.size - 1)] + ITEM_OFFSET, PAD)


def window_values(
    indptr: np.ndarray,
    values: np.ndarray,
    users: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    width: int | None = None,
    fill: float = np.nan,
) -> np.ndarray:
    """Right-aligned float matrix [B, width] of per-interaction `values` (ratings) over each user's
    window ``[start, stop)``, aligned with :func:`window_tokens` (same arguments); `fill` on padding."""
    users = np.asarray(users, dtype=np.int64)
    start = np.asarray(start, dtype=np.int64)
    n = np.asarray(stop, dtype=np.int64) - start
    if width is None:
        width = int(n.max()) if len(n) else 0
    cols = np.arange(width, dtype=np.int64)
    offset = cols[None, :] - (width - n)[:, None]
    valid = offset >= 0
    if values.size == 0:
        return np.full((len(users), width), fill, dtype=np.float64)
    flat = indptr[users][:, None] + start[:, None] + np.where(valid, offset, 0)
    return np.where(valid, values[np.minimum(flat, values.size - 1)], fill).astype(np.float64)


def mask_positions(
    tokens: np.ndarray,
    mask_prob: float,
    rng: np.random.Generator,
    last_only_prob: float = 0.0,
) -> np.ndarray:
    """Bool [B, W]: positions to hide for a cloze (masked-item) objective.

    Each non-PAD position is masked with probability `mask_prob`; a row that drew none gets
    its lowest-draw non-PAD position masked, so every non-empty row contributes to the loss.
    With probability `last_only_prob` a row instead masks only its last (most recent) item,
    the BERT4Rec paper's way of matching training to next-item inference. PAD is never masked.
    """
    valid = tokens != PAD
    draw = rng.random(tokens.shape)
    masked = (draw < mask_prob) & valid
    empty = ~masked.any(1) & valid.any(1)
    if empty.any():
        fallback = np.where(valid[empty], draw[empty], np.inf).argmin(1)
        masked[np.flatnonzero(empty), fallback] = True
    if last_only_prob > 0 and tokens.shape[1]:
        last = (rng.random(len(tokens)) < last_only_prob) & valid[:, -1]
        masked[last] = False
        masked[last, -1] = True
    return masked


def history_matrix(
    indptr: np.ndarray, items: np.ndarray, users: np.ndarray, stop: np.ndarray, n_items: int
) -> sp.csr_matrix:
    """CSR [len(users), I], row j holding a 1 for every item in ``seq[users[j]][:stop[j]]``
    (the items a user has seen, to exclude from ranking)."""
    users = np.asarray(users, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    rows = np.repeat(np.arange(len(users)), stop)
    first = np.repeat(indptr[users], stop)
    pos = np.arange(len(rows)) - np.repeat(np.cumsum(stop) - stop, stop)  # 0..stop[j]-1 within row j
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, items[first + pos])), shape=(len(users), n_items))
    m.sum_duplicates()
    m.data[:] = 1.0  # a repeated item is one exclusion, not a count
    return m


def target_matrix(target: np.ndarray, n_items: int) -> sp.csr_matrix:
    """One-hot CSR [U, I] of one target item per user; users with target < 0 get an empty row."""
    target = np.asarray(target, dtype=np.int64)
    has = target >= 0
    rows = np.flatnonzero(has)
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, target[has])), shape=(len(target), n_items)
    )


# ---- containers ------------------------------------------------------------------------------


@dataclass
class Sequences:
    """Ragged time-ordered sequences (``items[indptr[u]:indptr[u + 1]]``), where each user's
    training part stops (``train_stop``), optional leave-one-out targets and optional
    per-interaction ``ratings`` (float64, aligned with ``items``, NaN = unknown)."""

    indptr: np.ndarray
    items: np.ndarray
    n_items: int
    train_stop: np.ndarray
    valid_target: np.ndarray | None = None
    test_target: np.ndarray | None = None
    ratings: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def stage(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(history stop, target item) per user: valid -> seq[:-2] / seq[-2], test -> seq[:-1] / seq[-1]."""
        check_choice("stage", stage, STAGES)
        target = self.valid_target if stage == "valid" else self.test_target
        if target is None:
            raise DataError(f"these sequences have no {stage} targets; pass a leave-one-out split")
        return np.maximum(self.lengths - (2 if stage == "valid" else 1), 0), target

    def rating_stage(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(stop, target rating) per user for rating regression: the window ends *with* the rated
        item (valid: seq[:-1], rating of seq[-2]; test: the whole sequence, rating of seq[-1])."""
        check_choice("stage", stage, STAGES)
        self.require_ratings()
        if self.valid_target is None:
            raise DataError(f"these sequences have no {stage} targets; pass a leave-one-out split")
        back = 1 if stage == "valid" else 0
        stop = self.lengths - back
        idx = self.indptr[1:] - 1 - back
        target = np.where(stop > 0, self.ratings[np.maximum(idx, 0)], np.nan)
        return np.maximum(stop, 0), target

    def require_ratings(self) -> np.ndarray:
        if self.ratings is None:
            raise DataError("these sequences carry no ratings: use a leave_one_out split of a table with a rating "
                            "column (array seq_ratings), or pass ratings=[...] aligned with the item arrays")
        return self.ratings


def is_split(data) -> bool:
    return isinstance(getattr(data, "arrays", None), dict)


def as_sequences(data, n_items: int | None = None, ratings: Sequence[np.ndarray] | None = None,
                 what: str = "sequential models") -> Sequences:
    """:class:`Sequences` of a leave-one-out Split (arrays seq_indptr, seq_items, valid_target,
    test_target and, when present, seq_ratings; training part seq[:-2]) or of a list of item-id
    arrays (all of each sequence is training data; `ratings` an aligned list of rating arrays)."""
    if sp.issparse(data):
        raise DataError(f"{what} need time-ordered sequences: pass a leave_one_out Split or a list of item-id "
                        f"arrays, not a CSR matrix")
    if is_split(data):
        arrays = data.arrays
        missing = [k for k in ("seq_indptr", "seq_items", "valid_target", "test_target") if k not in arrays]
        if missing:
            raise DataError(f"split ({getattr(data, 'protocol', '?')}) lacks arrays {missing}; use protocol leave_one_out")
        if ratings is not None:
            raise DataError("a split carries its own ratings (seq_ratings); pass ratings=None")
        indptr = np.asarray(arrays["seq_indptr"], dtype=np.int64)
        seq_ratings = arrays.get("seq_ratings")
        seqs = Sequences(
            indptr=indptr,
            items=np.asarray(arrays["seq_items"], dtype=np.int64),
            n_items=int(data.n_items),
            train_stop=np.maximum(np.diff(indptr) - 2, 0),
            valid_target=np.asarray(arrays["valid_target"], dtype=np.int64),
            test_target=np.asarray(arrays["test_target"], dtype=np.int64),
            ratings=None if seq_ratings is None else np.asarray(seq_ratings, dtype=np.float64),
        )
    else:
        indptr, items = to_indptr(data)
        if n_items is None:
            n_items = int(items.max()) + 1 if items.size else 0
        values = None
        if ratings is not None:
            if len(ratings) != len(data):
                raise DataError(f"{len(ratings)} rating arrays for {len(data)} sequences")
            r_ptr, values = to_indptr(ratings)
            values = values.astype(np.float64)
            if not np.array_equal(r_ptr, indptr):
                bad = int(np.flatnonzero(np.diff(r_ptr) != np.diff(indptr))[0])
                raise DataError(f"sequence {bad} has {len(data[bad])} items but {len(ratings[bad])} ratings")
        seqs = Sequences(indptr=indptr, items=items, n_items=int(n_items), train_stop=np.diff(indptr), ratings=values)
    if seqs.n_items <= 0:
        raise DataError("no items: the sequences are empty")
    if seqs.items.size and (seqs.items.min() < 0 or seqs.items.max() >= seqs.n_items):
        raise DataError(f"item ids must lie in 0..{seqs.n_items - 1}")
    return seqs


@dataclass
class EvalSet:
    """What one validation / test ranking pass needs: histories end at `stop`, one target per user
    (CSR one-hot), and the history items to exclude from the ranking."""

    seqs: Sequences
    stop: np.ndarray
    target: sp.csr_matrix
    exclude: sp.csr_matrix

    @classmethod
    def build(cls, seqs: Sequences, stop: np.ndarray, target: np.ndarray) -> "EvalSet":
        if len(target) != len(stop):
            raise DataError(f"{len(target)} targets for {len(stop)} histories")
        if len(target) and target.max() >= seqs.n_items:
            raise DataError(f"target item ids must lie in 0..{seqs.n_items - 1} (negative = no target)")
        exclude = history_matrix(seqs.indptr, seqs.items, np.arange(len(stop)), stop, seqs.n_items)
        return cls(seqs, stop, target_matrix(target, seqs.n_items), exclude)


def fit_inputs(train, valid, n_items: int | None, what: str, *, ratings=None,
               validate: bool = True) -> tuple[Sequences, EvalSet | None]:
    """What a next-item ``fit`` trains and validates on: a leave-one-out Split (training part
    seq[:-2], validation seq[-2] given seq[:-2]; `valid` must be None), or a list of item-id arrays
    with optional `valid` = (histories, one target item per history)."""
    seqs = as_sequences(train, n_items, ratings, what=what)
    if is_split(train):
        if valid is not None:
            raise ConfigError("a split carries its own validation targets; pass valid=None")
        return seqs, (EvalSet.build(seqs, *seqs.stage("valid")) if validate else None)
    if valid is not None and validate:
        vseqs = as_sequences(valid[0], seqs.n_items, what=what)
        return seqs, EvalSet.build(vseqs, vseqs.lengths, np.asarray(valid[1], dtype=np.int64))
    return seqs, None


def scored_rows(histories, stage: str | None, users, n_items: int, what: str):
    """(sequences, rows, history stop) of what a sequential model is asked to score: a leave-one-out
    Split with `stage` ("valid": seq[:-2], "test": seq[:-1]) and optional `users`, or a list of
    history arrays (each scored whole)."""
    from recsys.errors import ConfigError

    if is_split(histories):
        if stage is None:
            raise ConfigError(f"stage must be one of {STAGES} when scoring a split")
        seqs = as_sequences(histories, what=what)
        stop, _ = seqs.stage(stage)
        rows = np.arange(len(stop)) if users is None else np.asarray(users, dtype=np.int64)
        return seqs, rows, stop[rows]
    if stage is not None or users is not None:
        raise ConfigError("stage and users apply only when scoring a split; pass the histories alone")
    seqs = as_sequences(histories, n_items, what=what)
    return seqs, np.arange(seqs.n_users), seqs.lengths
