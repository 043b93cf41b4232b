"""Unit tests of the pretraining stage's glue: settings, model checks, training and artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import ConfigError
from recsys.io import sha256_file
from recsys.pipeline import pretrain as pt
from tests.conftest import REPO

TINY = {
    "default_protocol": "random_split",
    "protocols": {
        "random_split": {
            "threshold": None, "params": {"k_core": 3}, "artifacts": {"scores": True},
            "models": {"mostpop": {}, "ease": {"lam": 50.0},
                       "multvae": {"enc_dims": [64, 16], "epochs": 40, "batch_size": 64, "patience": 40, "lr": 0.003,
                                   "eval_k": 10, "total_anneal_steps": 200, "dropout": 0.5}},
        },
        "leave_one_out": {"params": {"k_core": 2},
                          "models": {"mostpop": {}, "bert4rec": {"max_len": 20, "hidden": 16, "epochs": 2}}},
    },
}


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    from recsys.data import make_synthetic
    from recsys.protocols import random_split

    df = make_synthetic(n_users=300, n_items=120, seed=5).df
    return random_split(df, k_core=3, seed=0).save(tmp_path_factory.mktemp("split") / "s")


def test_shipped_params_files_are_valid():
    from recsys.data import list_datasets
    from recsys.protocols import PROTOCOLS

    for path in sorted((REPO / "params").glob("pretrain_*.yaml")):
        dataset = path.stem[len("pretrain_"):]
        if dataset == "default":  # the profile of datasets without their own file
            dataset = "csv"
        assert dataset in list_datasets(), path
        settings = pt.load_settings(dataset)
        for protocol in settings["protocols"]:
            assert protocol in PROTOCOLS
            assert pt.protocol_settings(settings, protocol, None)["models"]


def test_override_merges_over_the_dataset_file():
    s = pt.load_settings("amazon-digital-music",
                         {"protocols": {"random_split": {"models": {"multvae": {"epochs": 3}}}}})
    vae = s["protocols"]["random_split"]["models"]["multvae"]
    assert vae["epochs"] == 3 and vae["enc_dims"] == [600, 200]


@pytest.mark.parametrize("protocol, models, needle", [
    ("random_split", "multvea", "unknown model 'multvea'. Did you mean 'multvae'?"),
    ("random_split", "bert4rec", "bert4rec' (SequenceScorer / SequenceRater) trains on leave_one_out splits only"),
    ("strong_generalization", None, "no pretraining settings for protocol 'strong_generalization'"),
    ("user_split", None, "protocol 'user_split' has no ranking evaluation for pretraining"),
])
def test_bad_model_or_protocol_names(protocol, models, needle):
    with pytest.raises(ConfigError) as err:
        pt.protocol_settings(TINY, protocol, models)
    assert needle in str(err.value)


@pytest.mark.parametrize("section, needle", [
    ({"models": ["ease"]}, "protocols.random_split.models: expected a mapping"),
    ({"models": {"ease": 100}}, "protocols.random_split.models.ease: expected a mapping"),
    ({"threshold": "4", "models": {"ease": {}}}, "protocols.random_split.threshold='4': expected a number or null"),
])
def test_wrongly_typed_settings_name_the_section(section, needle):
    with pytest.raises(ConfigError) as err:
        pt.protocol_settings({"protocols": {"random_split": section}}, "random_split", None)
    assert needle in str(err.value)


def test_sequential_protocol_trains_bert4rec_and_draws_its_curve(tmp_path):
    from recsys.data import make_synthetic
    from recsys.protocols import leave_one_out

    split = leave_one_out(make_synthetic(n_users=120, n_items=60, seed=1).df, k_core=2).save(tmp_path / "s")
    section = pt.protocol_settings(TINY, "leave_one_out", None)
    results = {name: pt.train_and_evaluate(split, name, cfg, tmp_path / name) for name, cfg in section["models"].items()}
    b = results["bert4rec"]
    beyond = {f"{m}@{k}" for m in ("catalog_coverage", "gini", "entropy", "arp", "aplt", "novelty") for k in (10, 20)}
    assert set(b["test"]) == {"hit@10", "hit@20", "ndcg@10", "ndcg@20"} | beyond and b["recall_denominator"] == "n"
    assert 0 < b["test"]["catalog_coverage@20"] <= 1 and 0 <= b["test"]["gini@20"] < 1  # from the same top-k
    assert b["epochs"] == 2 and 1 <= b["best_epoch"] <= 2  # epochs are numbered from 1 for every model
    assert np.load(b["files"]["item_embeddings"]["path"]).shape == (60, 16)
    assert pt.curves_png(results)[:4] == b"\x89PNG"  # BERT4Rec's valid_ndcg@10 curve is drawn


def test_a_dataset_without_settings_uses_the_default_profile(capsys, monkeypatch, tmp_path):
    settings = pt.load_settings("csv")
    out = capsys.readouterr().out
    assert "using the default profile" in out and settings["protocols"]
    assert "pretrain-stage settings used: " in out and '"default_protocol": "random_split"' in out
    monkeypatch.setenv("RECSYS_PARAMS_DIR", str(tmp_path))  # no files at all: say where to put them
    with pytest.raises(ConfigError, match="pretrain_csv.yaml"):
        pt.load_settings("csv")


def test_bad_hyper_parameter_stops_with_its_name(tiny_split, tmp_path):
    with pytest.raises(ConfigError, match="lr"):
        pt.train_and_evaluate(tiny_split, "multvae", {"lr": -1.0}, tmp_path / "m")
    with pytest.raises(ConfigError, match="epoch"):
        pt.train_and_evaluate(tiny_split, "multvae", {"epoch": 3}, tmp_path / "m")


def test_models_learn_and_write_their_artifacts(tiny_split, tmp_path):
    section = pt.protocol_settings(TINY, "random_split", None)
    results = {name: pt.train_and_evaluate(tiny_split, name, cfg, tmp_path / name, artifacts=section["artifacts"])
               for name, cfg in section["models"].items()}
    pop = results["mostpop"]["test"]["ndcg@20"]
    for name in ("ease", "multvae"):
        assert results[name]["test"]["ndcg@20"] > 1.12 * pop, (name, results[name]["test"], pop)
    vae = results["multvae"]
    assert vae["recall_denominator"] == "n" and vae["protocol"] == "random_split"
    assert vae["epochs"] == len(vae["curve"]) and "ndcg@10" in vae["curve"][0]
    assert 1 <= vae["best_epoch"] <= vae["epochs"] and vae["curve"][0]["epoch"] == 1
    emb = np.load(vae["files"]["user_embeddings"]["path"])
    scores = np.load(vae["files"]["scores"]["path"])
    from recsys.protocols import Split

    split = Split.load(tiny_split)
    assert emb.shape == (split.n_users, 16) and scores.shape == (split.n_users, split.n_items)
    for f in vae["files"].values():
        assert f["sha256"] == sha256_file(f["path"])
    rows = pt.comparison(results)
    assert [r["model"] for r in rows] == ["mostpop", "ease", "multvae"]
    assert "ndcg@20" in pt.format_table(rows, "random_split")
    assert pt.curves_png(results)[:4] == b"\x89PNG"


def test_a_user_scorer_trains_on_its_own_protocol_and_is_refused_on_another_naming_its_contract(tiny_split, tmp_path):
    """TALL scores the users it was fitted on: through the pretrain stage on a random split it
    learns (beats most-popular on the test items); on a split of held-out users it is refused."""
    settings = {"protocols": {
        "random_split": {"params": {"k_core": 3}, "models": {"mostpop": {}, "tall": {
            "n_experts": 3, "hidden": 32, "epochs": 150, "batch_size": 64, "lr": 3e-3, "gap": 2, "window": 2,
            "patience": 20, "weight_decay": 0.0, "progress": "off"}}},
        "strong_generalization": {"params": {}, "models": {"mostpop": {}}}}}
    section = pt.protocol_settings(settings, "random_split", "mostpop,tall")
    results = {name: pt.train_and_evaluate(tiny_split, name, cfg, tmp_path / name)
               for name, cfg in section["models"].items()}
    assert results["tall"]["test"]["ndcg@20"] > 1.1 * results["mostpop"]["test"]["ndcg@20"]
    with pytest.raises(ConfigError, match=r"model 'tall' \(UserScorer\) trains on random_split splits only"):
        pt.protocol_settings(settings, "strong_generalization", "tall")


def test_seeds_give_one_task_per_seed_of_each_seeded_model_and_one_for_the_others():
    section = pt.protocol_settings(pt.load_settings("amazon-digital-music"), "random_split", "mostpop,ease,multvae")
    tasks = pt.STAGE.plan(section, seeds="0,1,2")
    assert [t.result_key for t in tasks] == ["mostpop", "ease", ("multvae", 0), ("multvae", 1), ("multvae", 2)]
    assert [t.result_key for t in pt.STAGE.plan(section)] == ["mostpop", "ease", "multvae"]
    with pytest.raises(ConfigError, match="seeds must be non-negative integers"):
        pt.STAGE.plan(section, seeds="0,x")
