"""Flow smoke test: the adversarial tail flow end to end on a tiny CSV, every method, two seeds."""

from __future__ import annotations

from pathlib import Path

import yaml

from recsys.models.tail.params import EXAMPLE
from tests.conftest import REPO, failed_start_log, run_flow

FLOW = str(REPO / "flows" / "tail_flow.py")

TINY = {
    "params": {"n_heldout_users": 100, "seed": 1},
    "seeds": [0, 1],
    "learner": {"lr": 0.01, "weight_decay": 0.01, "epochs": 2, "batch_size": 64, "patience": None, "adv_k": 20},
    "methods": {"mostpop": {}, "ease_closed_form": {"lam": 50.0}, "ease": {}, "ipw": {"ipw_alpha": 0.01},
                "cvar": {"cvar_beta": 0.5}, "posit": {"alr": 1.0, "ast": "2bmlp2", "nstd": 1.5}},
}


def test_tail_flow_on_tiny_csv(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=400, n_items=150, seed=3).df.to_csv(path, index=False)
    cfg = {**TINY, "threshold": None, "dataset": {"path": str(path)}}
    run = run_flow(FLOW, metaflow_env, tmp_path, yaml.safe_dump(cfg, sort_keys=False), dataset="csv")
    end = run["end"].task
    results, rows = end["results"].data, end["rows"].data
    assert sorted(results) == sorted(f"{m}/seed{s}" for m in TINY["methods"] for s in (0, 1))
    assert [r["method"] for r in rows] == ["mostpop", "ease_closed_form", "ease", "ipw", "cvar", "posit"]
    for r in rows:
        assert r["seeds"] == [0, 1]
        for key in ("ndcg@100", "recall@20", "recall@50", "recall@100", "item_recall@100", "coverage@20",
                    "coverage@100"):
            assert 0 <= r[key] and r[f"{key}_std"] >= 0, (r["method"], key)
    # the learner's seeds differ, so its runs differ; most-popular is deterministic
    assert results["posit/seed0"]["test"] != results["posit/seed1"]["test"]
    assert next(r for r in rows if r["method"] == "mostpop")["ndcg@100_std"] == 0.0
    one = results["posit/seed0"]
    assert one["protocol"]["name"] == "strong_generalization" and one["protocol"]["split_seed"] == 1
    assert "min(k" in one["definitions"]["recall@k"] and one["test"]["coverage_block"] == 100
    assert Path(one["files"]["model"]["path"]).is_file()
    assert len(list(run["train"])) == 12
    assert [s.id for s in run] == ["end", "join", "train", "start"]


def test_a_published_parameter_string_sets_the_posit_run(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=300, n_items=150, seed=4).df.to_csv(path, index=False)
    cfg = {**TINY, "seeds": [0], "threshold": None, "dataset": {"path": str(path)}}
    string = EXAMPLE.replace("lr2.00e+00", "lr1.00e-02").replace("ml20m", "tiny")
    run = run_flow(FLOW, metaflow_env, tmp_path, yaml.safe_dump(cfg, sort_keys=False), dataset="csv",
                   methods="posit", param_string=string)
    config = run["end"].task["results"].data["posit/seed0"]["config"]
    assert (config["lr"], config["weight_decay"], config["ast"], config["nstd"], config["aloss"]) == \
        (0.01, 8e-6, "2bmlp2", 1.5, "recall_dist")


def test_malformed_parameter_string_stops_in_start(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, methods="posit",
                           param_string=EXAMPLE.replace("_ast2bmlp2", "_ast3deep"))
    assert "field 'ast' is missing or invalid" in log


def test_unknown_method_stops_in_start(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, methods="ease,postit")
    assert "unknown tail method 'postit'" in log and "Did you mean 'posit'" in log


def test_a_task_that_cannot_fit_in_memory_stops_in_start_with_one_line(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=300, n_items=150, seed=4).df.to_csv(path, index=False)
    cfg = {**TINY, "seeds": [0], "threshold": None, "dataset": {"path": str(path)}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**metaflow_env, "RECSYS_MEMORY_LIMIT": "200M"}  # below the interpreter alone
    from metaflow import Runner

    with Runner(FLOW, show_output=False, pylint=False, env=env, cwd=str(tmp_path),
                config=[("cfg", str(tmp_path / "cfg.yaml"))]).run(dataset="csv", methods="ease") as running:
        assert running.status == "failed"
        log = running.run["start"].task.stderr
    assert "tail task ease: needs about" in log and "this machine grants 0.2 GB" in log and "--max-workers 1" in log
    assert not list(tmp_path.rglob("result.json"))  # nothing trained, nothing written


def test_tasks_that_fit_only_one_at_a_time_queue_and_finish(metaflow_env, tmp_path):
    """The limit holds one task's estimate but not two: with --max-workers 2 the start step says
    so, the tasks wait for each other in the run's memory ledger, and both finish."""
    from recsys.data import make_synthetic
    from recsys.models.base import BASE_PROCESS_BYTES

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=300, n_items=150, seed=4).df.to_csv(path, index=False)
    cfg = {**TINY, "seeds": [0], "threshold": None, "dataset": {"path": str(path)}}
    limit = int(BASE_PROCESS_BYTES * 1.5)  # each task's estimate is the interpreter plus a few MB
    run = run_flow(FLOW, {**metaflow_env, "RECSYS_MEMORY_LIMIT": str(limit)}, tmp_path,
                   yaml.safe_dump(cfg, sort_keys=False), dataset="csv", methods="ease,ipw")
    assert "ease, ipw fit only one at a time: those tasks will queue" in run["start"].task.stdout
    results = run["end"].task["results"].data
    assert sorted(results) == ["ease/seed0", "ipw/seed0"]
    (a0, a1), (b0, b1) = sorted(r["memory"]["held"] for r in results.values())
    assert a1 <= b0  # the second task trained only after the first had finished
    assert all(r["memory"]["estimate_bytes"] <= limit < 2 * r["memory"]["estimate_bytes"] for r in results.values())
