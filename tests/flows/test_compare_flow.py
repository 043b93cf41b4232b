"""Flow smoke test: the leaderboard across runs (compare_flow.py) over two pretrain runs on one
saved split, and its refusal of a run over another split."""

from __future__ import annotations

import json

from tests.conftest import REPO, failed_start_log, run_flow

PRETRAIN = str(REPO / "flows" / "pretrain_flow.py")
COMPARE = str(REPO / "flows" / "compare_flow.py")


def _compare(env, tmp_path, **parameters):
    """compare_flow.py through the Runner (it has no --config, so no ``config=`` argument)."""
    from metaflow import Runner

    with Runner(COMPARE, show_output=False, pylint=False, env=env, cwd=str(tmp_path)).run(**parameters) as running:
        assert running.status == "successful", "\n".join(t.stderr for s in running.run for t in s if not t.successful)
        return running.run


def _cfg(path, seed=0):
    return json.dumps({"default_protocol": "random_split", "protocols": {"random_split": {
        "dataset": {"path": str(path)}, "params": {"k_core": 3, "seed": seed},
        "models": {"mostpop": {}, "ease": {"lam": 50.0}}}}})


def test_one_leaderboard_over_runs_of_one_split_and_a_refusal_for_another(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=300, n_items=80, seed=3).df.to_csv(path, index=False)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    a = run_flow(PRETRAIN, metaflow_env, tmp_path / "a", _cfg(path), dataset="csv", models="mostpop",
                 output_dir=str(tmp_path / "run_a"))
    split_dir = a["end"].task["split_path"].data
    b = run_flow(PRETRAIN, metaflow_env, tmp_path / "b", _cfg(path), dataset="csv", models="ease",
                 split_dir=split_dir, output_dir=str(tmp_path / "run_b"))
    assert (tmp_path / "run_b" / "per_user.npz").is_file() and (tmp_path / "run_b" / "evidence.json").is_file()
    # provenance in the results file and the evidence: data, split, code, versions, machine, the run
    prov = json.loads((tmp_path / "run_b" / "results.json").read_text())["provenance"]
    assert prov == json.loads((tmp_path / "run_b" / "evidence.json").read_text())["provenance"]
    assert prov["dataset"] == "csv" and prov["split"]["sha256"] == a["end"].task["split_sha256"].data
    assert prov["split"]["n_users"] > 0 and prov["run"] == f"PretrainFlow/{b.id}" and prov["resumed_from"] is None
    assert set(prov["versions"]) >= {"python", "torch", "numpy", "scipy", "pandas", "metaflow"}
    assert ("commit" in prov["code"] or "package" in prov["code"]) and prov["host"]["cpu_cores"] >= 1
    assert prov["wall_seconds"] > 0
    board = _compare(metaflow_env, tmp_path, runs=f"PretrainFlow/{a.id},{tmp_path / 'run_b'}",
                     output_dir=str(tmp_path / "cmp"))["end"].task["board"].data
    table = board["tables"]["ndcg@20"]
    assert table["order"] == ["pretrain:ease", "pretrain:mostpop"] and table["best"] == "pretrain:ease"
    assert table["entries"]["pretrain:mostpop"]["vs"]["significant"]  # EASE beats most-popular on 300 users
    assert (tmp_path / "cmp" / "leaderboard.json").is_file() and (tmp_path / "cmp" / "report.html").is_file()
    # a run over another split (split seed 1) is refused with one line naming the runs
    run_flow(PRETRAIN, metaflow_env, tmp_path / "c", _cfg(path, seed=1), dataset="csv", models="mostpop",
             output_dir=str(tmp_path / "run_c"))
    log = failed_start_log(COMPARE, metaflow_env, tmp_path, runs=f"{tmp_path / 'run_a'},{tmp_path / 'run_c'}")
    assert "the runs evaluated different splits" in log and "run_c" in log and "run_a" in log
