"""Notebook tier: notebooks/preprocess.ipynb executed by papermill with tiny parameters."""

from __future__ import annotations

import papermill as pm

from recsys.pipeline.notebook import read_records
from tests.conftest import REPO


def test_preprocess_notebook_on_tiny_csv(tmp_path, monkeypatch):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=100, n_items=60, seed=1).df.to_csv(path, index=False)
    params = tmp_path / "params.yaml"
    params.write_text(f"datasets:\n  csv:\n    dataset: {{path: '{path}'}}\n")
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "preprocess.ipynb"), str(out),
        parameters={"dataset": "csv", "protocol": "leave_one_out", "params_file": str(params),
                    "output_dir": str(tmp_path / "split"), "overrides": {"k_core": 2}},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )
    records = read_records(out)
    stats = records["stats"]
    assert stats["protocol"] == "leave_one_out" and stats["n_users"] > 0
    from recsys.protocols import Split

    split = Split.load(records["split_path"])
    assert split["test"].nnz == split.n_users  # one test target per user
