"""Flow smoke test: the meta-learning flow end to end on a tiny CSV (two backbones, global mean,
basic and MELO), plus the stops in ``start`` (an unknown backbone, ML-1M's partial ratings)."""

from __future__ import annotations

import yaml

from tests.conftest import REPO, failed_start_log, requires_data, run_flow
from tests.flows.test_preprocess_flow import card_payload

FLOW = str(REPO / "flows" / "meta_flow.py")

TINY = {
    "params": {"n_test_users": 30, "valid_fraction": 0.2, "min_item": 0, "min_user": 5, "seed": 1},
    "tasks": {"max_len": 8, "n_support": 4, "n_query": 2},
    "evaluation": {"valid_tasks": 20},
    "seeds": [0, 1],
    "backbones": {"gru4rec": {"hidden": 8, "gru_hidden": 8, "max_len": 8},
                  "bert4rec": {"hidden": 8, "n_heads": 2, "max_len": 8}},
    "meta": {"epochs": 2, "block": 2, "meta_batch": 4, "progress": "lines"},
    "methods": {"global_mean": {}, "basic": {"epochs": 2, "progress": "lines"}, "maml": {}, "maml_pp": {}, "melo": {}},
}


def tiny_csv(tmp_path, n_users=200, seed=3):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=n_users, n_items=50, seed=seed).df.to_csv(path, index=False)
    return path


def test_meta_flow_on_tiny_csv(metaflow_env, tmp_path):
    cfg = {**TINY, "dataset": {"path": str(tiny_csv(tmp_path))}}
    run = run_flow(FLOW, metaflow_env, tmp_path, yaml.safe_dump(cfg, sort_keys=False), dataset="csv",
                   methods="global_mean,basic,melo", seeds="0")
    end = run["end"].task
    results, rows = end["results"].data, end["rows"].data
    assert sorted(results) == sorted(["global_mean/seed0"] + [f"{b}/{m}/seed0" for b in ("gru4rec", "bert4rec")
                                                              for m in ("basic", "melo")])
    assert [r["key"] for r in rows] == ["global_mean", "gru4rec/basic", "gru4rec/melo", "bert4rec/basic",
                                        "bert4rec/melo"]
    one = results["bert4rec/melo/seed0"]
    assert one["protocol"]["name"] == "user_split" and one["protocol"]["split_seed"] == 1 and one["seed"] == 0
    assert one["tasks"]["max_len"] == 8 and one["tasks"]["n_support"] == 4 and one["tasks"]["task_seed"] == 1
    assert one["iterations"] == 4 and len(one["history"]) == 2 and one["config"]["adaptive_loss"] is True
    for r in results.values():
        assert r["test"]["n"] == 30 and r["test"]["rmse"] > 0 and r["test"]["mae"] > 0
        assert set(r["test"]["per_rating"]) <= {"1", "2", "3", "4", "5"}
        assert sum(v["n"] for v in r["test"]["per_rating"].values()) == 30
    stats = end["stats"].data
    assert 0 < stats["ratings"]["balance"] <= 1 and sum(stats["ratings"]["counts"].values()) == stats["ratings"]["n_ratings"]
    assert len(list(run["train"])) == 5
    from metaflow.cards import get_cards

    cards = get_cards(end, id="meta")
    assert len(cards) == 1
    content = card_payload(cards[0].get())
    assert "RMSE@1" in content and "bert4rec" in content and '"type": "image"' in content


def test_unknown_backbone_stops_in_start(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, backbones="bert4rec,gru4recc")
    assert "unknown backbone 'gru4recc'" in log and "Did you mean 'gru4rec'" in log


@requires_data
def test_ml1m_stops_in_start_because_its_ratings_are_partial(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, dataset="ml-1m")
    assert "318,218 of 1,000,209 rows have no rating" in log
