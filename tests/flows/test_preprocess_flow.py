"""Flow smoke tests: the preprocessing flow end to end through Metaflow's Runner API."""

from __future__ import annotations

import json

from tests.conftest import REPO, failed_start_log, requires_data, run_flow

FLOW = str(REPO / "flows" / "preprocess_flow.py")


def card_payload(html: str) -> str:
    """The JSON a Metaflow card embeds (base64) in its HTML."""
    import base64
    import re

    blob = re.search(r'__MF_DATA__\["[^"]+"\] = "([^"]+)"', html).group(1)
    return base64.b64decode(blob).decode()


def tiny_csv(tmp_path):
    from recsys.data import make_synthetic

    df = make_synthetic(n_users=120, n_items=80, seed=3).df
    path = tmp_path / "tiny.csv"
    df[["user", "item", "rating", "timestamp"]].to_csv(path, index=False)
    return path


def test_tiny_csv_random_split(metaflow_env, tmp_path):
    path = tiny_csv(tmp_path)
    params = json.dumps({"datasets": {"csv": {"dataset": {"path": str(path)},
                                              "protocol": {"k_core": 2}}}})
    run = run_flow(FLOW, metaflow_env, tmp_path, params, dataset="csv", protocol="random_split")
    end = run["end"].task
    stats = end["stats"].data
    assert stats["protocol"] == "random_split" and stats["dataset"] == "csv"
    assert 0 < stats["n_users"] <= 120 and 0 < stats["n_items"] <= 80
    from recsys.protocols import Split

    split = Split.load(end["split_path"].data)
    total = sum(split[n].nnz for n in ("train", "valid", "test"))
    assert total == stats["n_interactions"]
    # The card exists and carries the statistics table and the degree plot.
    from metaflow.cards import get_cards

    cards = get_cards(run["split"].task, id="stats")
    assert len(cards) == 1
    content = card_payload(cards[0].get())
    assert "n_interactions" in content and '"type": "image"' in content


def test_bad_protocol_stops_before_reading(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, protocol="random-split")
    assert "unknown protocol 'random-split'" in log and "Did you mean 'random_split'" in log


@requires_data
def test_ml1m_random_split_counts(metaflow_env, tmp_path):
    """The issue's acceptance numbers: official ML-1M under LFT/TALL's iterative 10-core."""
    run = run_flow(FLOW, metaflow_env, tmp_path, dataset="ml-1m", protocol="random_split")
    stats = run["end"].task["stats"].data
    assert (stats["n_users"], stats["n_items"], stats["n_interactions"]) == (6040, 3260, 998539)


@requires_data
def test_amusic_loca_population(metaflow_env, tmp_path):
    """LOCA's AMusic setting: 4,964 users with >= 10 ratings, 97,439 rating rows."""
    run = run_flow(FLOW, metaflow_env, tmp_path, dataset="amazon-digital-music", protocol="leave_k_out_by_time")
    stats = run["end"].task["stats"].data
    assert stats["users_after_min_user"] == 4964 and stats["rows_after_min_user"] == 97439
    # Repeated reviews collapsed; the 18 users left with <= 5 distinct items cannot give 5 test
    # items and a training item (LOCA keeps them with test items that also sit in training).
    assert stats["n_users"] == 4946 and stats["n_interactions"] == 83158
