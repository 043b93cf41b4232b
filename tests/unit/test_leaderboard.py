"""The leaderboard across runs: per-user arrays kept by each run, one split, tests against the best."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import ConfigError, DataError
from recsys.pipeline import leaderboard as lb
from recsys.pipeline.evidence import save_per_user
from recsys.pipeline.tail import STAGE as TAIL
from recsys.pipeline.local import STAGE as LOCAL


def _run(folder, stage, methods, sha="abc", groups=None):
    """A finished run's evidence as the stage writes it: {method: per-user ndcg@20 values}."""
    tasks = {}
    for m, values in methods.items():
        rec = save_per_user(folder / m, np.arange(len(values)), {"ndcg@20": values, "recall@20": values},
                            groups=groups)
        tasks[m] = {"model": m, "test": {"ndcg@20": float(np.mean(values))}, "per_user": rec}
    stage.write_evidence(folder, tasks, None, dataset="toy", split_sha256=sha)
    return lb.load_run((folder.name, folder))


def test_methods_of_several_runs_rank_against_the_best_with_groups_matched_by_user(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random(200)
    groups = np.where(np.arange(200) < 100, "low", "high")
    a = _run(tmp_path / "a", LOCAL, {"vae": base, "tall": base + 0.1}, groups=groups)
    b = _run(tmp_path / "b", TAIL, {"ease": base + 0.002 * rng.standard_normal(200)})
    board = lb.leaderboard([a, b], metrics=["ndcg@20"], n_resamples=499)
    table = board["tables"]["ndcg@20"]
    assert table["best"] == "tall:tall" and table["order"][0] == "tall:tall"
    assert table["entries"]["tail:ease"]["vs"]["significant"] and table["entries"]["tall:vae"]["vs"]["significant"]
    assert set(board["tables"]) == {"ndcg@20", "ndcg@20 (low)", "ndcg@20 (high)"}  # the tail run got tall's groups
    assert board["tables"]["ndcg@20 (low)"]["entries"]["tail:ease"]["n_users"] == 100
    headers, cells = lb.board_table(board, "ndcg@20")
    assert headers[-1] == "vs best (tall:tall)" and cells[0][-1] == "best" and cells[1][-1].endswith("*")
    assert lb.board_png(board)[:4] == b"\x89PNG"


def test_runs_over_other_splits_missing_files_and_unshared_metrics_are_refused(tmp_path):
    a = _run(tmp_path / "a", LOCAL, {"vae": np.ones(5)}, sha="s1")
    b = _run(tmp_path / "b", TAIL, {"ease": np.ones(5)}, sha="s2")
    with pytest.raises(ConfigError, match=r"different splits \(a: split s1; b: split s2\)"):
        lb.leaderboard([a, b])
    with pytest.raises(DataError, match="evidence.json is missing"):
        lb.load_run(("empty", tmp_path))
    with pytest.raises(ConfigError, match="metric\\(s\\) hit@10 not kept by every run.*share: ndcg@20, recall@20"):
        lb.leaderboard([a], metrics=["hit@10"])
    with pytest.raises(ConfigError, match="not a folder and not a Metaflow run pathspec"):
        lb.resolve_run(str(tmp_path / "nowhere" / "x" / "y"))
