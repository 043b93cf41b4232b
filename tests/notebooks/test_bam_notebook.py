"""Notebook tier: notebooks/bam.ipynb (the BaM stage's notebook twin) run by papermill with tiny params."""

from __future__ import annotations

import papermill as pm

from recsys.pipeline.notebook import read_records
from tests.conftest import REPO
from tests.flows.test_bam_flow import TINY


def test_bam_notebook_tiny(tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=300, n_items=120, mean_items_per_user=20, seed=3).df.to_csv(path, index=False)
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "bam.ipynb"), str(out),
        parameters={"dataset": "csv", "model": "comirec", "selection": "hard,l", "T": 2.0, "linear_size": 4,
                    "multi_loss": "true", "seed": 7, "output_dir": str(tmp_path / "run"),
                    "overrides": {**TINY, "dataset": {"path": str(path)}}},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )
    records = read_records(out)
    results, rows = records["results"], records["rows"]
    assert set(results) == {"comirec/hard", "comirec/l"}
    cfg = results["comirec/l"]["config"]
    assert (cfg["tau"], cfg["linear_size"], cfg["multi_loss"], cfg["seed"], cfg["selection"]) == (2.0, 4, True, 7, "l")
    assert results["comirec/hard"]["config"]["multi_loss"] is True  # the explicit flag beats the per-selection value
    assert [r["method"] for r in rows] == ["mostpop", "comirec/hard", "comirec/l"]
    bal = results["comirec/l"]["balance"]
    assert len(bal["selected"]) == 4 and abs(sum(bal["selected"]) - 1) < 1e-9
    assert set(records["baselines"]) == {"mostpop"}
