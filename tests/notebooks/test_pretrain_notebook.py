"""Notebook tier: notebooks/pretrain.ipynb executed by papermill with tiny parameters."""

from __future__ import annotations

import papermill as pm

from recsys.pipeline.notebook import read_records
from tests.conftest import REPO


def test_pretrain_notebook_tiny(tmp_path):
    overrides = {"protocols": {"random_split": {
        "params": {"k_core": 10}, "artifacts": {"scores": False},
        "models": {"multvae": {"epochs": 2, "enc_dims": [32, 8], "patience": 2}}}}}
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "pretrain.ipynb"), str(out),
        parameters={"dataset": "amazon-digital-music", "models": "mostpop,multvae",
                    "output_dir": str(tmp_path / "run"), "overrides": overrides},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )
    results = read_records(out)["results"]
    assert set(results) == {"mostpop", "multvae"}
    assert results["multvae"]["epochs"] == 2 and len(results["multvae"]["curve"]) == 2
    assert results["multvae"]["test"]["ndcg@20"] > 0
