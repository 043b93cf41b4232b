"""Cold-start rating tasks on a :func:`~recsys.protocols.user_split` (MELO, Kim et al. CIKM 2023).

Each user is one task. From the user's time-ordered (item, rating) sequence take a window of at
most ``max_len`` interactions -- a random one for training users (a new draw each time a task is
built), the most recent one for validation and test users -- and build

* **query**: up to ``n_query`` suffixes of the window, all ending at its last item, of distinct
  random lengths >= ``min_sub_window``; the target is the last item's rating;
* **support**: up to ``n_support`` distinct random contiguous sub-windows (length >=
  ``min_sub_window``) of the window *without* its last item, so the support never sees the
  query's target.

Every sequence is left-padded to ``max_len`` (token 0 = PAD, item i -> i + 1, as
:mod:`recsys.models.sequential.sequences`); ratings are the raw 1..5 values, 0 on padding. A loss
covers every non-padded position (history ratings and the target), as MELO's. A task with fewer
distinct sub-windows than ``n_support`` pads the missing rows with all-PAD sequences (``support_n``
says how many are real). Validation and test tasks depend on the split and the seed only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from recsys.checks import check_int
from recsys.errors import ConfigError, DataError

STAGES = ("train", "valid", "test")


@dataclass(frozen=True)
class TaskSettings:
    """MELO's defaults: window 30, 25 support and 3 query sequences, sub-windows of >= 2 items."""

    max_len: int = 30
    n_support: int = 25
    n_query: int = 3
    min_sub_window: int = 2

    def __post_init__(self) -> None:
        check_int("n_support", self.n_support, 1)
        check_int("n_query", self.n_query, 1)
        check_int("min_sub_window", self.min_sub_window, 1)
        check_int("max_len", self.max_len, 1)
        if self.max_len < self.min_sub_window + 1:
            raise ConfigError(
                f"max_len={self.max_len} is shorter than min_sub_window + 1 = {self.min_sub_window + 1}: a window "
                f"needs a support sub-window of {self.min_sub_window} items before its last (query) item; "
                f"raise max_len or lower min_sub_window")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Tasks:
    """A batch of T tasks as padded arrays (numpy; the meta-learner moves them to its device)."""

    users: np.ndarray            # [T] user ids of the split
    support_items: np.ndarray    # [T, S, L] int64 tokens
    support_ratings: np.ndarray  # [T, S, L] float32, 0 = PAD
    support_n: np.ndarray        # [T] real support rows
    query_items: np.ndarray      # [T, Q, L]
    query_ratings: np.ndarray    # [T, Q, L]
    query_n: np.ndarray          # [T]

    def __len__(self) -> int:
        return len(self.users)

    @property
    def targets(self) -> np.ndarray:
        """[T] the rating of each task's last item (the value evaluated)."""
        return self.query_ratings[:, 0, -1]

    def select(self, rows) -> "Tasks":
        return Tasks(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    def arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def stage_users(split, stage: str) -> np.ndarray:
    """The user ids of a user_split stage ("train", "valid" or "test")."""
    if split.protocol != "user_split":
        raise DataError(f"cold-start tasks need a user_split split, got {split.protocol!r}")
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
    return np.asarray(split.arrays[f"{stage}_users"], dtype=np.int64)


def check_ratings(split) -> None:
    """A clear error where the split has unknown ratings (the shared ML-1M: ratings 1-3 are missing)."""
    r = np.asarray(split.arrays["seq_ratings"])
    unknown = int(np.isnan(r).sum())
    if unknown:
        raise DataError(
            f"{unknown:,} of {len(r):,} interactions of this split have no rating; cold-start rating "
            f"prediction needs every rating. The shared ML-1M copy only knows ratings >= 4: use the official "
            f"ratings.dat, or a dataset with complete ratings (amazon-digital-music, ml-100k, a csv with a rating column)")


def build_tasks(split, stage: str, settings: TaskSettings, rng: np.random.Generator,
                users: np.ndarray | None = None) -> Tasks:
    """Tasks of `users` (default: all of `stage`), drawn with `rng`."""
    check_ratings(split)
    s = settings
    users = stage_users(split, stage) if users is None else np.asarray(users, dtype=np.int64)
    indptr = np.asarray(split.arrays["seq_indptr"])
    items = np.asarray(split.arrays["seq_items"])
    ratings = np.asarray(split.arrays["seq_ratings"], dtype=np.float32)
    T, L = len(users), s.max_len
    out = Tasks(
        users=users.copy(),
        support_items=np.zeros((T, s.n_support, L), np.int64),
        support_ratings=np.zeros((T, s.n_support, L), np.float32),
        support_n=np.zeros(T, np.int64),
        query_items=np.zeros((T, s.n_query, L), np.int64),
        query_ratings=np.zeros((T, s.n_query, L), np.float32),
        query_n=np.zeros(T, np.int64),
    )
    for t, u in enumerate(users):
        lo, hi = int(indptr[u]), int(indptr[u + 1])
        n = hi - lo
        if n < s.min_sub_window + 1:
            raise DataError(f"user {u} has {n} interactions; a task needs at least min_sub_window + 1 = "
                            f"{s.min_sub_window + 1} (raise the split's min_user)")
        w = min(n, L)
        start = lo + (int(rng.integers(0, n - w + 1)) if stage == "train" else n - w)
        win_items, win_ratings = items[start:start + w] + 1, ratings[start:start + w]
        # query: suffixes of distinct random lengths in [min_sub_window, w]
        lengths = np.arange(s.min_sub_window, w + 1)
        q = rng.choice(lengths, size=min(s.n_query, len(lengths)), replace=False)
        for j, length in enumerate(q):
            out.query_items[t, j, L - length:] = win_items[w - length:]
            out.query_ratings[t, j, L - length:] = win_ratings[w - length:]
        out.query_n[t] = len(q)
        # support: distinct (start, length) sub-windows of win[:-1] with length >= min_sub_window
        m = w - 1
        cand = [(a, ln) for ln in range(s.min_sub_window, m + 1) for a in range(0, m - ln + 1)]
        pick = rng.choice(len(cand), size=min(s.n_support, len(cand)), replace=False)
        for j, c in enumerate(pick):
            a, ln = cand[c]
            out.support_items[t, j, L - ln:] = win_items[a:a + ln]
            out.support_ratings[t, j, L - ln:] = win_ratings[a:a + ln]
        out.support_n[t] = len(pick)
    return out


def eval_tasks(split, stage: str, settings: TaskSettings, seed: int) -> Tasks:
    """The fixed validation / test tasks of a split: same split, settings and seed -> same tasks."""
    if stage == "train":
        raise ConfigError("training tasks are drawn afresh each meta-iteration; use build_tasks with an rng")
    stage_index = STAGES.index(stage)
    return build_tasks(split, stage, settings, np.random.default_rng([int(seed), stage_index, 0x4D454C4F]))


def rating_stats(split) -> dict:
    """Rating histogram (1..5), its share per value and the balance score (entropy / log 5) MELO reports."""
    r = np.asarray(split.arrays["seq_ratings"])
    r = r[~np.isnan(r)]
    values = np.arange(1, 6)
    counts = np.array([(np.rint(r) == v).sum() for v in values], dtype=np.int64)
    p = counts / max(counts.sum(), 1)
    nz = p[p > 0]
    return {"counts": dict(zip(values.tolist(), counts.tolist())),
            "share": dict(zip(values.tolist(), np.round(p, 4).tolist())),
            "balance": float(-(nz * np.log(nz)).sum() / np.log(len(values))),
            "n_ratings": int(len(r)),
            "mean_length": float(np.diff(np.asarray(split.arrays["seq_indptr"])).mean())}
