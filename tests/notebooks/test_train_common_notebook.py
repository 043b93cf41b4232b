"""Notebook tier: notebooks/train_common.ipynb (the tail trainer's notebook entry) run by papermill."""

from __future__ import annotations

import papermill as pm

from recsys.models.tail.params import EXAMPLE
from recsys.pipeline.notebook import read_records
from tests.conftest import REPO
from tests.flows.test_tail_flow import TINY


def test_train_common_notebook_tiny_with_a_parameter_string(tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=1000, n_items=150, seed=3).df.to_csv(path, index=False)
    overrides = {**TINY, "threshold": None, "dataset": {"path": str(path)},
                 "learner": {**TINY["learner"], "batch_size": 128}}
    # the published ML-20M string with a learning rate and weight decay for 150 items
    string = EXAMPLE.replace("lr2.00e+00", "lr1.00e-02").replace("wd8.00e-06", "wd1.00e-02").replace("ml20m", "tiny")
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "train_common.ipynb"), str(out),
        parameters={"dataset": "csv", "method": "mostpop,posit", "params": string, "epochs": 6, "seed": 1,
                    "output_dir": str(tmp_path / "run"), "overrides": overrides},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )
    records = read_records(out)
    results, rows = records["results"], records["rows"]
    assert set(results) == {"mostpop/seed1", "posit/seed1"}
    posit = results["posit/seed1"]
    assert posit["epochs"] == 6 and posit["config"]["lr"] == 0.01 and posit["config"]["nstd"] == 1.5
    assert [r["method"] for r in rows] == ["mostpop", "posit"]
    # the trained learner ranks held-out items better, and spreads its lists wider, than most-popular
    assert rows[1]["ndcg@100"] > rows[0]["ndcg@100"] and rows[1]["coverage@20"] > rows[0]["coverage@20"]
