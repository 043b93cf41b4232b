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


def test_pretrain_notebook_sequential_backbones(tmp_path):
    tiny = {"max_len": 20, "hidden": 16, "epochs": 1, "patience": 1, "batch_size": 256}
    overrides = {"protocols": {"leave_one_out": {"models": {m: dict(tiny) for m in ("sasrec", "gru4rec", "narm")}}}}
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "pretrain.ipynb"), str(out),
        parameters={"dataset": "amazon-digital-music", "protocol": "leave_one_out", "models": "sasrec,gru4rec,narm",
                    "output_dir": str(tmp_path / "run"), "overrides": overrides},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )
    results = read_records(out)["results"]
    assert set(results) == {"sasrec", "gru4rec", "narm"}
    assert all(r["test"]["ndcg@10"] > 0 for r in results.values())
