"""Flow smoke test: the local / mixture-of-experts flow (the main job) end to end, tiny settings."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, failed_start_log, run_flow

FLOW = str(REPO / "flows" / "tall_flow.py")

TINY = {"shards": 2, "methods": {
    "vae": {"exponent": 0.0, "epochs": 3, "patience": None, "batch_size": 64, "hidden": 16},
    "wl": {"exponent": 1.5, "epochs": 3, "patience": None, "batch_size": 64, "hidden": 16},
    "loca": {"n_local": 4, "epochs": 2, "patience": None, "batch_size": 64, "hidden": 16, "coverage_stride": 1},
    "lft": {"local_epochs": 1, "max_local": 20, "group": 50, "hidden": 16, "epochs": 1, "patience": None},
    "enlft": {"local_epochs": 1, "max_local": 20, "n_anchors": 3, "hidden": 16, "epochs": 1, "patience": None},
    "tall": {"n_experts": 3, "epochs": 3, "gap": 1, "window": 2, "batch_size": 64, "hidden": 16},
}}


def test_tall_flow_on_tiny_csv(metaflow_env, tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=120, n_items=60, seed=3).df.to_csv(path, index=False)
    cfg = {**TINY, "dataset": {"path": str(path)}, "params": {"k_core": 3, "seed": 0}}
    import yaml

    run = run_flow(FLOW, metaflow_env, tmp_path, yaml.safe_dump(cfg, sort_keys=False), dataset="csv")  # the cfg file is YAML
    results = run["end"].task["results"].data
    assert list(results) == ["vae", "wl", "loca", "lft", "enlft", "tall"]
    for name, r in results.items():
        beyond = {f"{m}@{k}" for m in ("catalog_coverage", "gini", "entropy", "arp", "aplt", "novelty") for k in (10, 20)}
        assert set(r["test"]) == {f"{m}@{k}" for m in ("precision", "recall", "ndcg") for k in (1, 5, 10, 20)} | beyond
        assert list(r["groups"]) == ["low", "med-low", "medium", "med-high", "high"]
        assert r["protocol"] == "random_split" and r["recall_denominator"] == "n"
    assert results["tall"]["gate_uses_validation_labels"] is True
    assert results["loca"]["shards"] == 2 and results["lft"]["shards"] == 2
    assert Path(results["loca"]["files"]["model"]["path"]).is_file()
    # one foreach: base -> train (2 shards each for loca / lft / enlft, 1 for tall) -> join
    assert len(list(run["train"])) == 7
    assert [s.id for s in run] == ["end", "join", "train", "base", "start"]


def test_unknown_method_stops_in_start(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, methods="tal")
    assert "unknown method 'tal'" in log
