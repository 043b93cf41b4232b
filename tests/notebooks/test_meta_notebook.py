"""Notebook tier: notebooks/meta.ipynb run by papermill with tiny params."""

from __future__ import annotations

import papermill as pm

from recsys.pipeline.notebook import read_records
from tests.conftest import REPO
from tests.flows.test_meta_flow import TINY, tiny_csv


def test_meta_notebook_tiny(tmp_path):
    overrides = {**TINY, "dataset": {"path": str(tiny_csv(tmp_path))}}
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "meta.ipynb"), str(out),
        parameters={"dataset": "csv", "backbones": "sasrec", "methods": "global_mean,basic,maml,melo", "seeds": "0,1",
                    "output_dir": str(tmp_path / "run"),
                    "overrides": {**overrides, "backbones": {"sasrec": {"hidden": 8, "n_heads": 2, "max_len": 8}}}},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )
    records = read_records(out)
    results, rows = records["results"], records["rows"]
    assert set(results) == {"global_mean/seed0", *(f"sasrec/{m}/seed{s}" for m in ("basic", "maml", "melo") for s in (0, 1))}
    assert [r["key"] for r in rows] == ["global_mean", "sasrec/basic", "sasrec/maml", "sasrec/melo"]
    assert rows[1]["seeds"] == [0, 1] and rows[1]["rmse_std"] >= 0
    melo = results["sasrec/melo/seed1"]
    assert melo["seed"] == 1 and melo["iterations"] == 4 and melo["tasks"]["n_query"] == 2
    assert records["stats"]["ratings"]["n_ratings"] > 0
    # the per-rating plot was drawn
    import nbformat

    nb = nbformat.read(str(out), as_version=4)
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
