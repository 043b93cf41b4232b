"""The tail stage's pipeline helpers: settings, method configs, seeds, aggregation, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import ConfigError
from recsys.models.tail.params import EXAMPLE
from recsys.pipeline import tail

SETTINGS = {"learner": {"lr": 0.01, "epochs": 2}, "methods": {"mostpop": {}, "ease_closed_form": {"lam": 10.0},
                                                               "ease": {}, "posit": {"nstd": 1.0}}}


def test_method_configs_merge_learner_settings_and_the_parameter_string_only_into_posit():
    specs = tail.method_configs(SETTINGS, "ease,posit,ease_closed_form", EXAMPLE)
    assert specs["ease"] == {"model": "tail_learner", "config": {"lr": 0.01, "epochs": 2, "method": "ease"}}
    posit = specs["posit"]["config"]
    assert (posit["lr"], posit["alr"], posit["weight_decay"], posit["nstd"], posit["ast"], posit["aloss"],
            posit["ones"], posit["lam"], posit["loss"], posit["epochs"]) == \
        (2.0, 1.0, 8e-6, 1.5, "2bmlp2", "recall_dist", False, 1.0, "l2", 2)
    assert specs["ease_closed_form"] == {"model": "ease", "config": {"lam": 10.0}}
    assert list(tail.method_configs(SETTINGS)) == ["mostpop", "ease_closed_form", "ease", "posit"]


@pytest.mark.parametrize("methods, string, match", [
    ("ease,postit", None, r"unknown tail method 'postit'.*Did you mean 'posit'"),
    ("posit", EXAMPLE.replace("_lam1.00e+00", "_lamX"), "field 'lam' is missing or invalid"),
    ("posit", EXAMPLE.replace("itemarl_metric", "ipw"), "not POSIT's 'itemarl_metric'"),
])
def test_method_configs_stop_on_bad_requests(methods, string, match):
    with pytest.raises(ConfigError, match=match):
        tail.method_configs(SETTINGS, methods, string)


def test_a_bad_value_names_the_method_and_the_field():
    bad = {**SETTINGS, "methods": {"cvar": {"cvar_beta": 2.0}}}
    with pytest.raises(ConfigError, match=r"tail method 'cvar': .*cvar_beta must be"):
        tail.method_configs(bad)


def test_seeds_parse_from_text_lists_and_ints():
    assert tail.parse_seeds("0, 1,2") == [0, 1, 2] and tail.parse_seeds([3]) == [3] and tail.parse_seeds(4) == [4]
    for bad in ("a", "-1", "1.5", ""):
        with pytest.raises(ConfigError, match="seeds"):
            tail.parse_seeds(bad)


def test_load_settings_rejects_unknown_keys_and_other_protocols():
    with pytest.raises(ConfigError, match="unknown key"):
        tail.load_settings("ml-1m", {"learnr": {}})
    with pytest.raises(ConfigError, match="strong_generalization"):
        tail.load_settings("ml-1m", {"protocol": "random_split"})
    assert tail.load_settings("ml-1m")["methods"]["posit"]["ast"] == "2bmlp2"


def test_aggregate_is_mean_and_sample_std_over_seeds():
    runs = {("posit", s): {"seed": s, "test": {"ndcg@100": v, "coverage@100": c}, "train_seconds": 2.0}
            for s, v, c in [(0, 0.40, 1000.0), (1, 0.42, 1100.0), (2, 0.44, 1200.0)]}
    runs[("mostpop", 0)] = {"seed": 0, "test": {"ndcg@100": 0.2, "coverage@100": 200.0}, "train_seconds": 0.0}
    rows = tail.aggregate(runs)
    assert [r["method"] for r in rows] == ["mostpop", "posit"]
    assert rows[1]["ndcg@100"] == pytest.approx(0.42) and rows[1]["ndcg@100_std"] == pytest.approx(0.02)
    assert rows[1]["coverage@100_std"] == pytest.approx(100.0) and rows[0]["ndcg@100_std"] == 0.0
    assert "0.4200 ± 0.0200" in tail.format_table(rows) and "1100.0 ± 100.0" in tail.format_table(rows)
    assert tail.coverage_plot_png(rows)[:4] == b"\x89PNG"


def test_test_metrics_match_a_hand_computed_case_and_refuse_small_catalogues():
    from recsys.models.baselines import MostPopular
    from recsys.protocols import strong_generalization
    from recsys.data import make_synthetic

    split = strong_generalization(make_synthetic(n_users=600, n_items=150, seed=2).df, n_heldout_users=100, seed=0)
    model = MostPopular(device="cpu").fit(split["train"])
    m = tail.test_metrics(model, split)
    # most-popular: every test user's list is the same top items minus its fold-in items
    counts = np.asarray(split["train"].sum(0)).ravel()
    order = np.argsort(-counts, kind="stable")
    fold_in, target = split["test_fold_in"].tocsr(), split["test_holdout"].tocsr()
    lists = [[i for i in order if i not in set(fold_in[u].indices)][:20] for u in range(fold_in.shape[0])
             if target[u].nnz]
    assert m["coverage@20"] == pytest.approx(len(set().union(*lists[:100])))
    recall = [len(set(lst) & set(target[u].indices)) / min(20, target[u].nnz)
              for lst, u in zip(lists, [u for u in range(target.shape[0]) if target[u].nnz])]
    assert m["recall@20"] == pytest.approx(np.mean(recall))
    small = strong_generalization(make_synthetic(n_users=300, n_items=60, seed=2).df, n_heldout_users=50, seed=0)
    with pytest.raises(ConfigError, match="only .* items"):
        tail.test_metrics(MostPopular(device="cpu").fit(small["train"]), small)


def test_cloud_memory_advice_matches_the_flows_declared_resources():
    import re

    from tests.conftest import REPO

    assert tail.cloud_memory_mb(int(6.0 * 2**30)) == 7409  # 15 % headroom, in MB (10^6 bytes)
    text = (REPO / "flows" / "tail_flow.py").read_text()
    declared = re.search(r"@training_step\(gpu=1, memory=(\d+), cpu=\d+\)\n    def train", text)
    assert declared and int(declared.group(1)) == tail.DECLARED_MEMORY_MB
