"""Notebook tier: notebooks/tall.ipynb executed by papermill with tiny parameters."""

from __future__ import annotations

import papermill as pm

from recsys.pipeline.notebook import read_records
from tests.conftest import REPO
from tests.flows.test_tall_flow import TINY


def test_tall_notebook_tiny(tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=120, n_items=60, seed=3).df.to_csv(path, index=False)
    overrides = {**TINY, "dataset": {"path": str(path)}, "params": {"k_core": 3, "seed": 0}}
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "tall.ipynb"), str(out),
        parameters={"dataset": "csv", "methods": "vae,loca,tall", "output_dir": str(tmp_path / "run"),
                    "overrides": overrides},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )
    results = read_records(out)["results"]
    assert set(results) == {"vae", "loca", "tall"}  # the VAE LOCA needs is trained, WL is not
    assert all(0 <= r["test"]["ndcg@20"] <= 1 and len(r["groups"]) == 5 for r in results.values())
    assert results["loca"]["shards"] == 2
