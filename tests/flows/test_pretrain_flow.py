"""Flow smoke test: the pretraining flow end to end through the Runner API, tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, failed_start_log, run_flow

FLOW = str(REPO / "flows" / "pretrain_flow.py")


def test_pretrain_flow_on_tiny_csv(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=200, n_items=90, seed=2).df.to_csv(path, index=False)
    cfg = json.dumps({"default_protocol": "random_split", "protocols": {"random_split": {
        "dataset": {"path": str(path)}, "params": {"k_core": 3},
        "models": {"mostpop": {}, "multvae": {"enc_dims": [32, 8], "epochs": 3, "batch_size": 64,
                                              "patience": 3, "eval_k": 10}}}}})
    run = run_flow(FLOW, metaflow_env, tmp_path, cfg, dataset="csv")
    results = run["end"].task["results"].data
    assert set(results) == {"mostpop", "multvae"}
    vae = results["multvae"]
    assert vae["epochs"] <= 3 and "ndcg@20" in vae["test"] and vae["train_seconds"] > 0
    assert Path(vae["files"]["model"]["path"]).is_file()
    assert Path(vae["files"]["user_embeddings"]["path"]).is_file()
    assert run["end"].task["split_path"].data.startswith(str(tmp_path))
    assert [s.id for s in run] == ["end", "join", "train", "start"]  # one foreach over models


def test_unknown_model_stops_in_start(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, models="multvea")
    assert "unknown model 'multvea'" in log and "Did you mean 'multvae'" in log


def test_pretrain_flow_trains_the_four_sequential_backbones(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=150, n_items=60, seed=2).df.to_csv(path, index=False)
    tiny = {"max_len": 20, "hidden": 16, "epochs": 2, "patience": 2, "batch_size": 64}
    cfg = json.dumps({"protocols": {"leave_one_out": {
        "dataset": {"path": str(path)}, "params": {"k_core": 3},
        "models": {m: dict(tiny) for m in ("sasrec", "gru4rec", "narm")} | {"bert4rec": {**tiny, "n_heads": 2}}}}})
    run = run_flow(FLOW, metaflow_env, tmp_path, cfg, dataset="csv", protocol="leave_one_out",
                   models="sasrec,gru4rec,narm,bert4rec")
    results = run["end"].task["results"].data
    assert set(results) == {"sasrec", "gru4rec", "narm", "bert4rec"}
    for name, r in results.items():
        assert set(r["test"]) >= {"hit@10", "ndcg@10"} and r["epochs"] <= 2, name
        assert Path(r["files"]["item_embeddings"]["path"]).is_file(), name
