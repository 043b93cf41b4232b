"""Cold-start rating tasks (MELO): windows, query suffixes, support sub-windows, padding, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.errors import ConfigError, DataError
from recsys.protocols import user_split
from recsys.protocols.meta_tasks import TaskSettings, build_tasks, eval_tasks, rating_stats


def _split(lengths=(12, 8, 40, 6, 9, 15, 7, 5), seed=0, nan=False):
    rows = []
    for u, n in enumerate(lengths):
        for t in range(n):
            rows.append((u, (u * 7 + t) % 50, float(1 + (u + t) % 5), t))
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    if nan:
        df.loc[3, "rating"] = np.nan
    return user_split(df, n_test_users=2, valid_fraction=0.2, seed=seed)


def _real(items_row):
    return items_row[items_row > 0]


def test_support_never_holds_the_query_target_and_everything_is_left_padded():
    split = _split()
    s = TaskSettings(max_len=10, n_support=25, n_query=3)
    tasks = eval_tasks(split, "test", s, seed=0)
    indptr, items, ratings = (split.arrays[k] for k in ("seq_indptr", "seq_items", "seq_ratings"))
    for t, u in enumerate(tasks.users):
        seq = items[indptr[u]:indptr[u + 1]] + 1
        rat = ratings[indptr[u]:indptr[u + 1]]
        window = seq[-10:]  # test users: the most recent window
        last = len(window) - 1
        for j in range(tasks.query_n[t]):
            q = _real(tasks.query_items[t, j])
            assert len(q) >= 2 and np.array_equal(q, window[-len(q):])  # a suffix ending at the last item
            assert tasks.query_ratings[t, j, -1] == rat[-1]
        assert len({len(_real(tasks.query_items[t, j])) for j in range(tasks.query_n[t])}) == tasks.query_n[t]
        subs = set()
        for j in range(tasks.support_n[t]):
            row = tasks.support_items[t, j]
            k = int((row > 0).sum())
            assert k >= 2 and (row[:-k] == 0).all() and (tasks.support_ratings[t, j, :-k] == 0).all()
            # a contiguous sub-window of the window without its last item
            hits = [a for a in range(last - k + 1) if np.array_equal(window[a:a + k], row[-k:])]
            assert hits, "support row is not a sub-window of window[:-1]"
            subs.add(tuple(row))
        assert len(subs) == tasks.support_n[t]  # distinct
        m = len(window) - 1
        assert tasks.support_n[t] == min(25, m * (m - 1) // 2)
        assert (tasks.support_items[t, tasks.support_n[t]:] == 0).all()


def test_tasks_are_seeded_and_training_windows_are_random():
    split = _split()
    s = TaskSettings(max_len=10)
    a, b = eval_tasks(split, "valid", s, seed=3), eval_tasks(split, "valid", s, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values()))
    draws = {tuple(build_tasks(split, "train", s, np.random.default_rng(i)).query_items[:, 0, -1]) for i in range(8)}
    assert len(draws) > 1  # long training users get different windows


def test_bad_task_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="max_len=2 is shorter than min_sub_window"):
        TaskSettings(max_len=2, min_sub_window=2)
    with pytest.raises(DataError, match="have no rating"):
        eval_tasks(_split(nan=True), "test", TaskSettings(), seed=0)
    with pytest.raises(ConfigError, match="training tasks are drawn afresh"):
        eval_tasks(_split(), "train", TaskSettings(), seed=0)


def test_rating_stats_balance_is_entropy_over_its_maximum():
    stats = rating_stats(_split())
    assert sum(stats["counts"].values()) == stats["n_ratings"]
    p = np.array(list(stats["share"].values()))
    assert 0.99 < stats["balance"] <= 1.0 and abs(p.sum() - 1) < 1e-3
