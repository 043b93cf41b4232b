"""The BaM stage's pipeline functions: settings, task specs, strict flags, tables and the plot."""

from __future__ import annotations

import pytest

from recsys.errors import ConfigError
from recsys.pipeline import bam


@pytest.mark.parametrize("dataset", ["ml-1m", "amazon-beauty", "amazon-toys", "amazon-digital-music"])
def test_every_params_file_builds_all_nine_tasks(dataset):
    settings = bam.load_settings(dataset)
    specs = bam.task_specs(settings)
    assert list(specs) == [f"{m}/{s}" for m in bam.MODELS for s in bam.SELECTIONS]
    remi_p, hard = specs["remi/p"]["config"], specs["comirec/hard"]["config"]
    assert (remi_p["beta"], remi_p["rr_lambda"], remi_p["multi_loss"], remi_p["tau"], remi_p["seed"]) == \
        (0.01, 100.0, True, 1.0, 2021)
    assert hard["multi_loss"] is False and "beta" not in hard
    assert remi_p["n_interests"] == 4 and remi_p["hidden"] == 64 and remi_p["n_negatives"] == 1280
    assert settings["upstream"] == {"history_zero_upstream": False, "valid_resample": False,
                                    "accidental_hits_upstream": False, "positions_upstream": False}


def test_ml1m_uses_the_papers_settings():
    settings = bam.load_settings("ml-1m")
    assert settings["params"] == {"k_core": 0}  # all 1,000,209 interactions
    specs = bam.task_specs(settings, "mind,remi", "l")
    assert specs["mind/l"]["config"]["seq_len"] == 100 and specs["remi/l"]["config"]["seq_len"] == 200
    c = specs["remi/l"]["config"]
    assert (c["patience"], c["steps_per_epoch"], c["valid_users"], c["linear_size"], c["batch_size"]) == \
        (15, 1000, 1000, 16, 128)


def test_explicit_arguments_beat_the_params_file():
    settings = bam.load_settings("amazon-digital-music", {"upstream": {"history_zero_upstream": True}})
    specs = bam.task_specs(settings, ["remi"], ["hard", "l"], tau=0.5, linear_size=8, multi_loss=True, seed=3)
    for spec in specs.values():
        c = spec["config"]
        assert (c["tau"], c["linear_size"], c["multi_loss"], c["seed"], c["history_zero_upstream"]) == \
            (0.5, 8, True, 3, True)
    assert specs["remi/hard"]["selection"] == "hard"


def test_parse_bool_is_strict():
    assert bam.parse_bool("--multi-loss", "False") is False  # BaM's argparse reads this as True
    assert bam.parse_bool("--multi-loss", "true") is True and bam.parse_bool("--multi-loss", "auto") is None
    assert bam.parse_bool("--multi-loss", "") is None and bam.parse_bool("--multi-loss", True) is True
    with pytest.raises(ConfigError, match="--multi-loss must be true or false"):
        bam.parse_bool("--multi-loss", "Flase")


@pytest.mark.parametrize("call,message", [
    (lambda s: bam.task_specs(s, "remy"), "unknown BaM model 'remy'. Did you mean 'remi'?"),
    (lambda s: bam.task_specs(s, None, "hrad"), "unknown BaM selection 'hrad'. Did you mean 'hard'?"),
    (lambda s: bam.task_specs(s, "remi", "p", tau=-2.0), "BaM task 'remi/p': tau must be a finite number"),
    (lambda s: bam.task_specs(s, "mind", "l", linear_size=0), "BaM task 'mind/l': selection='l' (BaM_l) needs"),
    (lambda s: bam.task_specs(s, "remi", "p", overrides={"multi_loss": "False"}),
     "multi_loss must be True or False, got 'False'"),
])
def test_bad_options_stop_before_training(call, message):
    settings = bam.load_settings("amazon-digital-music")
    with pytest.raises(ConfigError) as err:
        call(settings)
    assert message in str(err.value)


def test_bad_settings_files_are_refused():
    with pytest.raises(ConfigError, match="unknown key"):
        bam.load_settings("amazon-digital-music", {"trian": {}})
    with pytest.raises(ConfigError, match="unknown upstream switch 'history_zero'"):
        bam.load_settings("amazon-digital-music", {"upstream": {"history_zero": True}})
    with pytest.raises(ConfigError, match="leave_one_out"):
        bam.load_settings("amazon-digital-music", {"protocol": "random_split"})


def _result(model, selection, r20, selected):
    return {"model": model, "selection": selection, "steps": 1000, "best_step": 500, "train_seconds": 1.0,
            "test": {"recall@10": r20 / 2, "recall@20": r20, "ndcg@10": r20 / 4, "ndcg@20": r20 / 3},
            "balance": {"k": 20, "selected": selected, "hit_share@20": selected, "entropy_selected": 1.0,
                        "entropy_best": 0.9, "entropy_hit_share": 0.8}}


def test_table_and_usage_plot():
    results = {"remi/p": _result("remi", "p", 0.3, [0.25] * 4), "mind/hard": _result("mind", "hard", 0.2, [1, 0, 0, 0]),
               "remi/hard": _result("remi", "hard", 0.25, [0.5, 0.5, 0, 0])}
    baselines = {"mostpop": {"test": {"recall@10": 0.04, "recall@20": 0.07, "ndcg@10": 0.02, "ndcg@20": 0.027},
                             "train_seconds": 0.1}}
    rows = bam.table_rows(results, baselines)
    assert [r["method"] for r in rows] == ["mostpop", "mind/hard", "remi/hard", "remi/p"]
    headers, cells = bam.table(rows)
    assert cells[-1] == ["remi/p", "0.1500", "0.3000", "0.0750", "0.1000", "1.0000", "0.9000", "0.8000", "1,000", "500", "1.0"]
    text = bam.format_table(rows).splitlines()
    assert text[0].split() == headers[:5] + ["H(selected)", "H(best)", "H(hits)", "steps", "best", "step", "train", "s"]
    assert text[-1].split() == cells[-1]
    # aligned: every number column ends at the same character in every line
    ends = {line.rindex("0.1500") + 6 for line in text if "0.1500" in line}
    assert len(ends) == 1 and text[0].index("recall@10") + len("recall@10") == ends.pop()
    png = bam.usage_plot_png(results)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dataset_without_a_params_file_gets_the_default_profile(tmp_path, monkeypatch, capsys):
    settings = bam.load_settings("ml-20m")
    assert "using the default profile" in capsys.readouterr().out
    assert settings["models"] == ['mind', 'comirec', 'remi']
    monkeypatch.setenv("RECSYS_PARAMS_DIR", str(tmp_path))  # no params at all: one clear error
    with pytest.raises(ConfigError, match="no BaM-stage settings for dataset 'ml-20m'"):
        bam.load_settings("ml-20m")


def test_seeds_make_one_task_per_seed_and_each_selection_is_tested_against_its_models_hard_one(tmp_path):
    import numpy as np

    from recsys.pipeline.evidence import save_per_user

    settings = bam.load_settings("amazon-digital-music")
    tasks = bam.STAGE.plan(settings, models="remi", selections="hard,p", seeds="0,1")
    assert [(t.key, t.seed, t.spec["config"]["seed"]) for t in tasks] == [
        ("remi/hard", 0, 0), ("remi/hard", 1, 1), ("remi/p", 0, 0), ("remi/p", 1, 1)]
    rng = np.random.default_rng(0)
    hits = {"remi/hard": rng.random(400) < 0.2, "remi/p": rng.random(400) < 0.35}
    results = {}
    for t in tasks:
        values = hits[t.key].astype(float)
        rec = save_per_user(tmp_path / f"{t.key.replace('/', '_')}{t.seed}", np.arange(400),
                            {"recall@20": values, "ndcg@20": values / 2})
        results[t.result_key] = {**_result("remi", t.key.split("/")[1], float(values.mean()), [0.25] * 4),
                                 "seed": t.seed, "per_user": rec}
    rows = bam.table_rows(results)
    assert [r["method"] for r in rows] == ["remi/hard", "remi/p"] and rows[1]["seeds"] == 2
    evidence = bam.STAGE.evidence(results, settings)
    vs = evidence["metrics"]["recall@20"]["remi/p"]["vs"]
    assert vs["reference"] == "remi/hard" and vs["significant"] and vs["diff"] > 0.1
