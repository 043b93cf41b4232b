"""The meta stage's pipeline glue (recsys.pipeline.meta): settings, run specs, the split and its
rating statistics, one run's result, aggregation, the table and the plot, and its clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.errors import ConfigError, DataError
from recsys.pipeline import meta
from tests.conftest import requires_data

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "params": {"n_test_users": 30, "valid_fraction": 0.2, "min_item": 0, "min_user": 5, "seed": 1},
    "tasks": {"max_len": 8, "n_support": 4, "n_query": 2},
    "evaluation": {"valid_tasks": 20},
    "backbones": {"sasrec": {"hidden": 8, "n_heads": 2, "max_len": 8}, "gru4rec": {"hidden": 8, "gru_hidden": 8, "max_len": 8}},
    "meta": {"epochs": 1, "block": 2, "meta_batch": 4, "progress": "off"},
    "methods": {"global_mean": {}, "basic": {"epochs": 1, "progress": "off"}, "maml": {"inner_lr": 0.05}, "melo": {}},
}


def csv_settings(tmp_path, df=None, **extra):
    from recsys.data import make_synthetic

    df = make_synthetic(n_users=150, n_items=40, seed=2).df if df is None else df
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    return meta.load_settings("csv", {**TINY, "dataset": {"path": str(path)}, **extra})


@pytest.mark.parametrize("dataset", ["amazon-digital-music", "ml-100k", "ml-1m"])
def test_every_params_file_gives_valid_runs(dataset):
    settings = meta.load_settings(dataset)
    specs = meta.run_specs(settings)
    assert set(meta.BACKBONES) == {s["backbone"] for s in specs.values() if s["backbone"] != meta.NO_BACKBONE}
    assert {s["method"] for s in specs.values()} == set(meta.METHODS)
    runs = meta.run_list(specs, meta.parse_seeds(settings["seeds"]))
    assert ("global_mean", 0) in runs and ("global_mean", 1) not in runs
    assert len(runs) == 1 + 4 * 4 * len(settings["seeds"])


def test_run_specs_compose_backbone_meta_and_method_settings():
    settings = meta.load_settings("amazon-digital-music", {"methods": {"maml": {"inner_lr": 0.02}},
                                                           "backbones": {"bert4rec": {"dropout": 0.2}}})
    specs = meta.run_specs(settings, "bert4rec", "maml,melo,basic", pretrained="/x/item_embeddings.npy")
    assert list(specs) == ["bert4rec/maml", "bert4rec/melo", "bert4rec/basic"]
    maml = specs["bert4rec/maml"]["config"]
    assert maml["inner_lr"] == 0.02 and maml["block"] == settings["meta"]["block"]
    bb = maml["backbone"]
    assert bb["model"] == "bert4rec" and bb["config"]["dropout"] == 0.2 and bb["config"]["hidden"] == 32
    assert bb["config"]["n_heads"] == 4 and bb["config"]["objective"] == "rating"  # MELO's sizes
    basic = specs["bert4rec/basic"]["config"]
    assert "block" not in basic and basic["backbone"]["config"]["batch_size"] == 128
    assert all(s["config"]["pretrained"] == "/x/item_embeddings.npy" for s in specs.values())


def test_bad_settings_stop_with_one_clear_error():
    with pytest.raises(ConfigError, match=r"unknown meta method 'mleo'.*Did you mean 'melo'"):
        meta.run_specs(meta.load_settings("amazon-digital-music"), methods="basic,mleo")
    with pytest.raises(ConfigError, match=r"unknown backbone 'sasrek'.*Did you mean 'sasrec'"):
        meta.run_specs(meta.load_settings("amazon-digital-music"), backbones="sasrek")
    with pytest.raises(ConfigError, match="unknown key"):
        meta.load_settings("amazon-digital-music", {"inner_steps": 3})
    with pytest.raises(ConfigError, match=r"meta method 'melo' \(sasrec\).*inner_steps"):
        meta.run_specs(meta.load_settings("amazon-digital-music", {"meta": {"inner_steps": -1}}), "sasrec", "melo")


def test_prepare_reports_the_rating_distribution_and_balance(tmp_path):
    settings = csv_settings(tmp_path)
    prepared = meta.prepare("csv", settings, output_dir=tmp_path / "split")
    r = prepared.stats["ratings"]
    assert sum(r["counts"].values()) == r["n_ratings"] == prepared.stats["n_rows"]
    assert sum(r["share"].values()) == pytest.approx(1, abs=1e-3) and 0 < r["balance"] <= 1
    assert prepared.split.protocol == "user_split" and prepared.stats["n_test_users"] == 30
    assert "balance" in meta.rating_table(prepared.stats)


def test_datasets_without_complete_integer_ratings_stop(tmp_path):
    from recsys.data import make_synthetic

    df = make_synthetic(n_users=60, n_items=40, seed=1).df
    path = tmp_path / "implicit.csv"
    df[["user", "item", "timestamp"]].to_csv(path, index=False)
    with pytest.raises(DataError, match="has no ratings"):
        meta.prepare("csv", meta.load_settings("csv", {**TINY, "dataset": {"path": str(path)}}), output_dir=tmp_path / "s")
    half = df.assign(rating=df["rating"] - 0.5)
    with pytest.raises(DataError, match="not integers 1..5"):
        meta.prepare("csv", csv_settings(tmp_path, half), output_dir=tmp_path / "s2")


def test_duplicates_are_dropped_when_asked(tmp_path):
    from recsys.data import make_synthetic

    df = make_synthetic(n_users=150, n_items=40, seed=2).df
    doubled = pd.concat([df, df.assign(timestamp=df["timestamp"] + 1)], ignore_index=True)
    a = meta.prepare("csv", csv_settings(tmp_path, doubled, dedupe=True), output_dir=tmp_path / "a")
    b = meta.prepare("csv", csv_settings(tmp_path, doubled), output_dir=tmp_path / "b")
    assert a.stats["n_rows"] * 2 == b.stats["n_rows"]


def test_one_run_then_aggregate_table_and_plot(tmp_path):
    settings = csv_settings(tmp_path)
    prepared = meta.prepare("csv", settings, output_dir=tmp_path / "split")
    specs = meta.run_specs(settings, "sasrec", "global_mean,basic,melo")
    results = {}
    for key, seed in meta.run_list(specs, [0, 1]):
        results[(key, seed)] = meta.run_one(prepared.path, key, specs[key], seed, tmp_path / key.replace("/", "_") / str(seed))
    r = results[("sasrec/melo", 1)]
    saved = json.loads((tmp_path / "sasrec_melo" / "1" / "result.json").read_text())
    assert saved["test"] == json.loads(json.dumps(r["test"]))
    assert r["protocol"]["split_seed"] == 1 and r["tasks"]["task_seed"] == 1 and r["seed"] == 1
    assert set(r["test"]) == {"rmse", "mae", "n", "per_rating"} and r["test"]["n"] == 30
    assert (tmp_path / "sasrec_melo" / "1" / "model.pt").is_file()
    rows = meta.aggregate(results)
    assert [row["key"] for row in rows] == ["global_mean", "sasrec/basic", "sasrec/melo"]
    melo = rows[2]
    assert melo["seeds"] == [0, 1]
    vals = [results[("sasrec/melo", s)]["test"]["rmse"] for s in (0, 1)]
    assert melo["rmse"] == pytest.approx(np.mean(vals)) and melo["rmse_std"] == pytest.approx(np.std(vals, ddof=1))
    assert rows[0]["rmse_std"] == 0.0 and sum(melo["n_per_rating"].values()) == 30
    headers, cells = meta.table(rows)
    assert headers[:4] == ["backbone", "method", "RMSE", "MAE"] and "RMSE@5" in headers and len(cells) == 3
    assert meta.format_table(rows).count("\n") == 4
    png = meta.per_rating_plot_png(rows, prepared.stats)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@requires_data
def test_ml1m_stops_because_its_ratings_are_partial(tmp_path):
    with pytest.raises(DataError, match="318,218 of 1,000,209 rows have no rating"):
        meta.prepare("ml-1m", meta.load_settings("ml-1m"), output_dir=tmp_path / "s")


def test_a_dataset_without_a_params_file_gets_the_default_profile(tmp_path, monkeypatch, capsys):
    settings = meta.load_settings("yelp")
    assert "using the default profile" in capsys.readouterr().out
    assert settings["methods"] and settings["params"]["n_test_users"] == "auto"
    monkeypatch.setenv("RECSYS_PARAMS_DIR", str(tmp_path))  # no params at all: one clear error
    with pytest.raises(ConfigError, match="no meta-stage settings for dataset 'yelp'"):
        meta.load_settings("yelp")
