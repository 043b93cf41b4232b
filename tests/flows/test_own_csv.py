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
    # the run's table, plot and results as files a person can open, their paths printed last
    import json
    from pathlib import Path

    run_dir = Path(run["start"].task["run_dir"].data)
    end_out = run["end"].task.stdout
    for name in ("report.html", "plot.png", "results.json"):
        assert (run_dir / name).is_file() and str(run_dir / name) in end_out
    assert json.loads((run_dir / "results.json").read_text())["tall"]["test"]["ndcg@20"] == results["tall"]["test"]["ndcg@20"]
    assert "<table>" in (run_dir / "report.html").read_text()


def test_a_wrong_column_map_stops_in_start_naming_the_columns(metaflow_env, tmp_path):
    path = _users_file(tmp_path)
    log = failed_start_log(str(REPO / "flows" / "tall_flow.py"), metaflow_env, tmp_path, dataset="csv",
                           data_path=str(path), sep="tab")
    assert "missing column" in log and "uid" in log and "Traceback" not in log


def test_own_ratings_file_through_the_meta_and_bam_flows_default_profiles(metaflow_env, tmp_path):
    """No ``methods:`` / ``models:`` in --config: params/meta_default.yaml and params/bam_default.yaml
    are used, the data-dependent sizes adapt (n_test_users: auto), the settings are printed."""
    import yaml

    path = _users_file(tmp_path)
    common = dict(dataset="csv", data_path=str(path), columns=COLUMNS, sep="tab")
    small = {"backbones": {"gru4rec": {"hidden": 8, "gru_hidden": 8}}}
    run = run_flow(str(REPO / "flows" / "meta_flow.py"), metaflow_env, tmp_path, yaml.safe_dump(small),
                   backbones="gru4rec", methods="global_mean,basic", seeds="0", **common)
    results = run["end"].task["results"].data
    assert sorted(results) == ["global_mean/seed0", "gru4rec/basic/seed0"]
    assert results["gru4rec/basic/seed0"]["test"]["n"] == 30  # auto: 150 users // 5
    assert "using the default profile" in run["start"].task.stdout
    quick = {"train": {"steps_per_epoch": 20, "epochs": 1, "n_negatives": 32, "valid_users": 50, "progress": "off"}}
    run = run_flow(str(REPO / "flows" / "bam_flow.py"), metaflow_env, tmp_path, yaml.safe_dump(quick),
                   model="mind", selection="hard", **common)
    results = run["end"].task["results"].data
    assert list(results) == ["mind/hard"] and results["mind/hard"]["steps"] == 20
    assert "using the default profile" in run["start"].task.stdout
