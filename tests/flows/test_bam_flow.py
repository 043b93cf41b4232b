"""Flow smoke test: the BaM flow end to end on a tiny CSV (2 models x 2 selections, most-popular)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import REPO, failed_start_log, run_flow

FLOW = str(REPO / "flows" / "bam_flow.py")

# complete settings (a csv dataset has no params/bam_csv.yaml to merge over)
TINY = {
    "params": {"k_core": 0},
    "models": ["mind", "comirec", "remi"],
    "selections": ["hard", "p", "l"],
    "seed": 2021,
    "train": {"seq_len": 10, "hidden": 16, "n_interests": 4, "n_negatives": 32, "batch_size": 32, "lr": 0.005,
              "steps_per_epoch": 40, "epochs": 2, "patience": None, "valid_users": 100, "linear_size": 4,
              "eval_batch_size": 256, "progress": "off"},
    "per_model": {"mind": {"seq_len": 8}, "remi": {"beta": 0.01, "rr_lambda": 100.0}},
    "per_selection": {"hard": {"multi_loss": False}, "p": {"multi_loss": True}, "l": {"multi_loss": True}},
    "upstream": {"history_zero_upstream": False, "valid_resample": False},
    "baselines": {"mostpop": {}},
}


def test_bam_flow_on_tiny_csv(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=300, n_items=120, mean_items_per_user=20, seed=3).df.to_csv(path, index=False)
    cfg = {**TINY, "dataset": {"path": str(path)}}
    run = run_flow(FLOW, metaflow_env, tmp_path, yaml.safe_dump(cfg, sort_keys=False), dataset="csv",
                   model="mind,remi", selection="hard,p", t=2.0, multi_loss="auto", seed=5)  # --T is `t` in the Runner
    end = run["end"].task
    results, rows, baselines = end["results"].data, end["rows"].data, end["baselines"].data
    assert sorted(results) == ["mind/hard", "mind/p", "remi/hard", "remi/p"]
    assert [r["method"] for r in rows] == ["mostpop", "mind/hard", "mind/p", "remi/hard", "remi/p"]
    p = results["remi/p"]
    assert (p["config"]["tau"], p["config"]["seed"], p["config"]["multi_loss"], p["config"]["beta"]) == (2.0, 5, True, 0.01)
    assert results["remi/hard"]["config"]["multi_loss"] is False and results["mind/p"]["config"]["seq_len"] == 8
    for r in results.values():
        assert r["steps"] == 80 and r["protocol"]["name"] == "leave_one_out"
        beyond = {f"{m}@{k}" for m in ("catalog_coverage", "gini", "entropy", "arp", "aplt", "novelty") for k in (10, 20)}
        assert set(r["test"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"} | beyond
        assert abs(sum(r["balance"]["selected"]) - 1) < 1e-9 and Path(r["files"]["model"]["path"]).is_file()
    assert 0 < baselines["mostpop"]["test"]["recall@20"] < 1
    assert len(list(run["train"])) == 4
    assert [s.id for s in run] == ["end", "join", "train", "start"]


def test_unknown_model_stops_in_start(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, model="remy", multi_loss="False")
    assert "unknown BaM model 'remy'" in log and "Did you mean 'remi'" in log
