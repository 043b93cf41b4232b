"""A user's own file through the preprocess, pretrain and tall notebooks with no settings file:
``dataset="csv"``, ``data_path``, ``columns``, ``sep`` as papermill parameters, the stage's default
profile (the same file and parameters as tests/flows/test_own_csv.py)."""

from __future__ import annotations

import papermill as pm

from recsys.pipeline.notebook import read_records
from tests.conftest import REPO
from tests.flows.test_own_csv import COLUMNS, _users_file


def _run(name: str, tmp_path, **parameters) -> tuple[dict, str]:
    out = tmp_path / f"{name}.out.ipynb"
    nb = pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out), parameters=parameters,
                             kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream")
    return read_records(out), text


def test_own_file_through_preprocess_pretrain_and_tall_notebooks(tmp_path):
    path = _users_file(tmp_path)
    common = dict(dataset="csv", data_path=str(path), columns=COLUMNS, sep="tab")
    records, _ = _run("preprocess", tmp_path, protocol="random_split", output_dir=str(tmp_path / "split"), **common)
    assert records["stats"]["n_users"] > 100 and records["stats"]["dataset"] == "csv"
    records, text = _run("pretrain", tmp_path, models="mostpop,ease", protocol="random_split",
                         output_dir=str(tmp_path / "pretrain"), **common)
    assert set(records["results"]) == {"mostpop", "ease"}
    assert "using the default profile" in text
    assert records["split_path"].startswith(str(tmp_path / "pretrain"))
    records, text = _run("tall", tmp_path, methods="vae,tall", output_dir=str(tmp_path / "tall"), **common)
    assert set(records["results"]) == {"vae", "tall"} and records["results"]["tall"]["test"]["ndcg@20"] > 0
    assert "using the default profile" in text


def test_a_wrong_column_map_in_a_notebook_names_the_columns(tmp_path):
    path = _users_file(tmp_path)
    try:
        _run("tall", tmp_path, dataset="csv", data_path=str(path), sep="tab", output_dir=str(tmp_path / "tall"))
    except pm.PapermillExecutionError as exc:
        assert "missing column" in str(exc) and "uid" in str(exc)
    else:
        raise AssertionError("a file without user / item columns ran")
