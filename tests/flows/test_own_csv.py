"""A user's own file through the flows with no settings file: --dataset csv --data-path FILE
--columns ... --sep ..., the stage's default profile, and the settings it used printed."""

from __future__ import annotations

from tests.conftest import REPO, failed_start_log, run_flow


def _users_file(tmp_path):
    from recsys.data import make_synthetic

    df = make_synthetic(n_users=150, n_items=60, seed=3).df
    df = df.rename(columns={"user": "uid", "item": "sku", "rating": "stars", "timestamp": "ts"})
    path = tmp_path / "my interactions.tsv"
    df.to_csv(path, index=False, sep="\t")
    return path


COLUMNS = "user=uid,item=sku,rating=stars,timestamp=ts"


def test_own_file_through_preprocess_pretrain_and_tall_flows(metaflow_env, tmp_path):
    path = _users_file(tmp_path)
    common = dict(dataset="csv", data_path=str(path), columns=COLUMNS, sep="tab")
    run = run_flow(str(REPO / "flows" / "preprocess_flow.py"), metaflow_env, tmp_path, protocol="random_split",
                   **common)
    assert run["end"].task["stats"].data["n_users"] > 100
    run = run_flow(str(REPO / "flows" / "pretrain_flow.py"), metaflow_env, tmp_path, models="mostpop,ease",
                   protocol="random_split", **common)
    assert set(run["end"].task["results"].data) == {"mostpop", "ease"}
    assert "using the default profile" in run["start"].task.stdout
    run = run_flow(str(REPO / "flows" / "tall_flow.py"), metaflow_env, tmp_path, methods="vae,tall", **common)
    results = run["end"].task["results"].data
    assert list(results) == ["vae", "tall"] and results["tall"]["test"]["ndcg@20"] > 0
    assert "using the default profile" in run["start"].task.stdout


def test_a_wrong_column_map_stops_in_start_naming_the_columns(metaflow_env, tmp_path):
    path = _users_file(tmp_path)
    log = failed_start_log(str(REPO / "flows" / "tall_flow.py"), metaflow_env, tmp_path, dataset="csv",
                           data_path=str(path), sep="tab")
    assert "missing column" in log and "uid" in log and "Traceback" not in log
