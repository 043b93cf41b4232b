"""Reproduction checks against docs/reproduction.md: marked `slow`, excluded from the default run.

    bash scripts/test.sh -m slow

Two kinds of test:

* one per row of docs/reproduction.md that compares our result with a published value, states a
  tolerance, a ratio or an ordering: it reads the stored JSON in `benchmarks/results/` that the
  row is built from and asserts exactly what the row says (fast, no data needed);
* a few short re-runs (minutes each, need $RECSYS_DATA_HOME) that run a `benchmarks/repro_*.py`
  script into a temporary file and check the target it reproduces.

Published values are constants below with their source: the doc itself or
`../shared/reference/algorithms.md` (its reproduction-number table, row ids A-5, B-8 ... D-3).
A row whose text and JSON disagree is an `xfail(strict=True)` test that says how.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache

import pytest

from tests.conftest import REPO, requires_data

pytestmark = pytest.mark.slow

RESULTS = REPO / "benchmarks" / "results"
GROUPS = ("low", "med-low", "medium", "med-high", "high")
ALPHA = 0.05


@lru_cache(maxsize=None)
def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def results(name: str) -> dict:
    """A stored results file of benchmarks/results/ (read once per session)."""
    return _load(name)


def results_if_written(name: str) -> dict:
    """A results file that a benchmark writes later: skip the test until it exists."""
    if not (RESULTS / name).exists():
        pytest.skip(f"benchmarks/results/{name} is not written yet")
    return _load(name)


def shown(value: float, text: float, digits: int) -> bool:
    """`value` is what the doc prints as `text` with `digits` decimals."""
    return abs(value - text) <= 0.5 * 10 ** -digits + 1e-12


def pct(value: float, reference: float) -> float:
    """Relative difference in percent."""
    return (value / reference - 1.0) * 100.0


def run_script(name: str, out, *args: str) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--out", str(out), *args],
                   check=True, env=env, cwd=REPO)
    return json.loads(out.read_text())


# ---- Headline claims (rendered from claims.json) ---------------------------------------------------

def test_claims_significant_iff_every_holm_p_below_alpha():
    """"Significant = every applicable test below 0.05 after Holm's correction": a claim marked
    significant has every Holm p below 0.05, one not marked has at least one at or above."""
    doc = results("claims.json")
    assert doc["alpha"] == ALPHA
    assert doc["claims"], "claims.json holds no claim"
    for c in doc["claims"]:
        ps = list(c["p_holm"].values())
        if c["significant"]:
            assert ps and all(p < ALPHA for p in ps), (c["claim"], c["p_holm"])
        else:
            assert any(p >= ALPHA for p in ps), (c["claim"], c["p_holm"])


# ---- Mult-VAE, seed 004's setting (algorithms.md A-5) -----------------------------------------------

SEED004_PUBLISHED = {"precision@100": 0.0890, "recall@100": 0.4147, "ndcg@100": 0.2523}  # A-5, seed 004 README
SEED004_PUBLISHED_EPOCHS = (9, 59)  # best epoch / epochs, seed 004's log (the doc's "published" row)


def test_multvae_seed004_stored_run_within_3_percent_of_published():
    """Row "ours, upstream switches on": 0.0866 (−2.6 %) / 0.4156 (+0.2 %) / 0.2506 (−0.7 %), 9 / 59,
    within 3 % of seed 004's 0.0890 / 0.4147 / 0.2523; the correct defaults score higher."""
    runs = results("multvae_seed004_ml1m.json")["runs"]
    upstream = runs["a_upstream_switches_on"]
    stated = {"precision@100": -2.6, "recall@100": +0.2, "ndcg@100": -0.7}
    for key, target in SEED004_PUBLISHED.items():
        ours = upstream["metrics_at_best_epoch"][key]
        assert abs(ours - target) <= 0.03 * target, (key, ours, target)
        assert shown(pct(ours, target), stated[key], 1), (key, pct(ours, target))
    assert (upstream["best_epoch"], upstream["epochs_run"]) == SEED004_PUBLISHED_EPOCHS
    correct = runs["b_correct_defaults"]["metrics_at_best_epoch"]
    assert correct["ndcg@100"] > upstream["metrics_at_best_epoch"]["ndcg@100"]


@requires_data
def test_multvae_seed004_within_3_percent(tmp_path):
    """Row A-5 re-run: P/R/NDCG@100 0.0890 / 0.4147 / 0.2523 with the upstream switches on."""
    result = run_script("repro_multvae_seed004.py", tmp_path / "s004.json")
    upstream = result["runs"]["a_upstream_switches_on"]["metrics_at_best_epoch"]
    for key, target in SEED004_PUBLISHED.items():
        assert abs(upstream[key] - target) <= 0.03 * target, (key, upstream[key], target)
    correct = result["runs"]["b_correct_defaults"]["metrics_at_best_epoch"]
    assert correct["ndcg@100"] > upstream["ndcg@100"]  # masking seen items is what the fix buys


# ---- Strong generalization on ML-1M (no published ML-1M numbers: ratios and orderings) -------------

def test_strong_generalization_ndcg_ratios_over_most_popular():
    """"By NDCG@100, Mult-VAE is 1.81x most-popular, Mult-DAE 1.92x and EASE 1.93x"."""
    models = results("strong_generalization_ml1m.json")["models"]
    pop = models["mostpop"]["test"]["ndcg@100"]
    for name, ratio in {"multvae": 1.81, "multdae": 1.92, "ease": 1.93}.items():
        ours = models[name]["test"]["ndcg@100"] / pop
        assert shown(ours, ratio, 2), (name, ours, ratio)


def test_strong_generalization_multvae_trails_multdae_and_ease_by_about_3_se():
    """"Mult-VAE trails Mult-DAE and EASE here by about 3 standard errors" (the table's ± over the
    600 test users; "about 3" read as 2.5 to 4 of the larger of the two standard errors)."""
    models = results("strong_generalization_ml1m.json")["models"]
    vae = models["multvae"]
    for name in ("multdae", "ease"):
        gap = models[name]["test"]["ndcg@100"] - vae["test"]["ndcg@100"]
        se = max(models[name]["test_stderr"]["ndcg@100"], vae["test_stderr"]["ndcg@100"])
        assert 2.5 <= gap / se < 4.0, (name, gap, se)


@requires_data
def test_strong_generalization_models_far_above_most_popular(tmp_path):
    result = run_script("repro_strong_generalization_ml1m.py", tmp_path / "sg.json")["models"]
    pop = result["mostpop"]["test"]["ndcg@100"]
    for name in ("multvae", "multdae", "ease"):
        assert result[name]["test"]["ndcg@100"] > 1.5 * pop, (name, result[name]["test"], pop)


# ---- SASRec, GRU4Rec, NARM -----------------------------------------------------------------------

BERT4REC_ML1M_PUBLISHED = {  # HR@10 / NDCG@10, docs/reproduction.md (BERT4Rec table and SASRec paragraph)
    "Klenitskiy & Vasilev 2023": {"hit@10": 0.2843, "ndcg@10": 0.1537},
    "Petrov & Macdonald 2022": {"hit@10": 0.2821, "ndcg@10": 0.1516},
}


def test_sasrec_ml1m_reaches_published_bert4rec_level():
    """"SASRec ... reaches the published BERT4Rec level (0.2843 / 0.1537; 0.2821 / 0.1516) ... with
    NDCG@10 above and HR@10 just below it" ("just below" read as less than 0.01 under); its budget
    stopped it five epochs after its best epoch, with the last five below it on validation."""
    doc = results("seq_ml1m.json")
    assert doc["published"]["bert4rec"] == BERT4REC_ML1M_PUBLISHED
    sasrec = doc["models"]["sasrec"]
    ours = sasrec["test"]
    assert shown(ours["hit@10"], 0.2788, 4) and shown(ours["ndcg@10"], 0.1547, 4), ours
    for source, pub in BERT4REC_ML1M_PUBLISHED.items():
        assert ours["ndcg@10"] > pub["ndcg@10"], (source, ours, pub)
        assert pub["hit@10"] - 0.01 < ours["hit@10"] < pub["hit@10"], (source, ours, pub)
    assert (sasrec["epochs"], sasrec["best_epoch"], sasrec["stopped_by"]) == (71, 66, "max_seconds")
    valid = {c["epoch"]: c["valid_ndcg@10"] for c in sasrec["curve"] if "valid_ndcg@10" in c}
    assert all(valid[e] < valid[66] for e in range(67, 72)), valid


def test_every_sequential_backbone_beats_most_popular_on_both_datasets():
    """"every backbone beats most-popular on both datasets" (ML-1M and Beauty, all four columns)."""
    for name in ("seq_ml1m.json", "seq_amazon-beauty.json"):
        models = results(name)["models"]
        pop = models["mostpop"]["test"]
        for backbone in ("sasrec", "gru4rec", "narm"):
            for metric in ("hit@10", "ndcg@10", "hit@20", "ndcg@20"):
                assert models[backbone]["test"][metric] > pop[metric], (name, backbone, metric)


# ---- The default profile on small data (ML-100K) ---------------------------------------------------

def test_default_profile_ml100k_stored_ratios_over_most_popular():
    """Table "x most-popular (NDCG@10)": GRU4Rec 1.76, NARM 2.06, SASRec 2.06, all "by far more than
    20 %"."""
    models = results("defaults_ml100k.json")["models"]
    pop = models["mostpop"]["test"]["ndcg@10"]
    for name, ratio in {"gru4rec": 1.76, "narm": 2.06, "sasrec": 2.06}.items():
        ours = models[name]["test"]["ndcg@10"] / pop
        assert shown(ours, ratio, 2), (name, ours, ratio)
        assert shown(models[name]["ndcg@10_over_mostpop"], ours, 3), name
        assert ours >= 1.2, (name, ours)


@requires_data
def test_default_profile_sequential_models_learn_on_ml100k(tmp_path):
    """Issue 34 item 5: with the default profile (budgets in updates), SASRec, GRU4Rec and NARM beat
    most-popular's NDCG@10 by at least 20 % on ML-100K leave-one-out."""
    models = run_script("repro_defaults_ml100k.py", tmp_path / "defaults.json")["models"]
    pop = models["mostpop"]["test"]["ndcg@10"]
    for name in ("sasrec", "gru4rec", "narm"):
        assert models[name]["test"]["ndcg@10"] >= 1.2 * pop, (name, models[name]["test"], pop)


# ---- MELO at the paper's length (rendered from meta_paper_comparison.json) -------------------------

def test_melo_comparison_significant_iff_both_holm_p_below_alpha_and_claims_agree():
    """"significant = sign-flip randomization and Wilcoxon both below 0.05"; "the verdicts are the
    MELO rows of the headline claims above": claims.json carries the same p values and verdicts."""
    doc = results("meta_paper_comparison.json")
    assert doc["alpha"] == ALPHA
    tested = {}
    for dataset, backbones in doc["datasets"].items():
        for backbone, entry in backbones.items():
            for method, m in entry["methods"].items():
                if "significant" not in m:
                    continue
                both = m["p_wilcoxon_holm"] < ALPHA and m["p_randomization_holm"] < ALPHA
                assert m["significant"] == both, (dataset, backbone, method, m)
                if method == "melo":
                    tested[f"MELO beats MAML++ ({dataset}, {backbone})"] = m
    claims = {c["claim"]: c for c in results("claims.json")["claims"] if c["claim"].startswith("MELO")}
    assert set(claims) == set(tested)
    for name, m in tested.items():
        assert claims[name]["significant"] == m["significant"], name
        assert claims[name]["p_holm"] == {k: m[k] for k in ("p_wilcoxon_holm", "p_randomization_holm")}, name


# ---- Local / mixture-of-experts: the main job on Amazon Digital Music ------------------------------

def test_main_job_tall_has_highest_mean_in_every_group():
    """"TALL with the paper's gate has the highest mean in every group"; "LOCA with 10 fresh local
    models trails the global VAE here"."""
    rows = {r["method"]: r for r in results_if_written("main_job.json")["rows"]}
    for column in ("ndcg@20", *GROUPS):
        best = max(rows, key=lambda m: rows[m][column])
        assert best == "tall", (column, best, {m: r[column] for m, r in rows.items()})
    assert rows["loca"]["ndcg@20"] < rows["vae"]["ndcg@20"]


def test_main_job_tall_vs_enlft_significant_overall_and_high_not_low():
    """"against EnLFT only its overall and high-mainstream gains are significant (the table's test
    columns): the low-mainstream group has about 220 test users"."""
    evidence = results_if_written("main_job.json")["evidence"]
    assert evidence["reference"] == "enlft"
    tables = evidence["metrics"]
    overall, low, high = (tables[k]["tall"] for k in ("ndcg@20", "ndcg@20 (low)", "ndcg@20 (high)"))
    assert overall["vs"]["significant"] and overall["vs"]["diff"] > 0
    assert high["vs"]["significant"] and high["vs"]["diff"] > 0
    assert not low["vs"]["significant"] and low["vs"]["diff"] > 0
    assert 200 <= low["n_users"] <= 240, low["n_users"]


# ---- Local / mixture-of-experts on ML-1M (algorithms.md B-8 ... B-12) ------------------------------

TALL_ML1M_PUBLISHED = {  # NDCG@20 overall, then low ... high; LFT's notebooks (algorithms.md B-8 to B-12)
    "vae": (0.3153, (0.2056, 0.2666, 0.2915, 0.3563, 0.4566)),    # B-8
    "wl": (0.3190, (0.2312, 0.2731, 0.2916, 0.3535, 0.4456)),     # B-9
    "loca": (0.3230, (0.2405, 0.2767, 0.2915, 0.3514, 0.4549)),   # B-10
    "lft": (0.3372, (0.2548, 0.2882, 0.3055, 0.3671, 0.4706)),    # B-11
    "enlft": (0.3328, (0.2537, 0.2836, 0.3023, 0.3622, 0.4625)),  # B-12
}
TALL_OVER_ENLFT_LOW_PUBLISHED = 0.10  # "≈ +10 % over EnLFT ... low-mainstream" (algorithms.md B-14)


def _ml1m(method: str) -> tuple[float, dict]:
    r = results("tall_ml1m.json")["results"][method]
    return r["overall_ndcg@20"], r["groups"]


def _published(method: str) -> tuple[float, dict]:
    overall, groups = TALL_ML1M_PUBLISHED[method]
    return overall, dict(zip(GROUPS, groups))


def test_tall_ml1m_stored_published_values_are_lfts_notebooks():
    stored = results("tall_ml1m.json")["published_ndcg20"]
    for method, (overall, groups) in TALL_ML1M_PUBLISHED.items():
        assert stored[method][0] == overall and tuple(stored[method][1]) == groups, method


def test_vae_wl_enlft_ml1m_within_0_01_of_published():
    """"VAE, WL and EnLFT land within 0.01 of the published overall NDCG@20 (+0.0021, −0.0020,
    −0.0023), and so does every group except VAE's low group (+0.014) and WL's med-low group
    (0.2609 against 0.2731, −0.0122)"."""
    overall_diff = {"vae": +0.0021, "wl": -0.0020, "enlft": -0.0023}
    exceptions = {("vae", "low"): (+0.014, 3), ("wl", "med-low"): (-0.0122, 4)}
    for method, stated in overall_diff.items():
        ours, groups = _ml1m(method)
        pub, pub_groups = _published(method)
        assert abs(ours - pub) <= 0.01 and shown(ours - pub, stated, 4), (method, ours, pub)
        for g in GROUPS:
            diff = groups[g] - pub_groups[g]
            if (method, g) in exceptions:
                text, digits = exceptions[(method, g)]
                assert abs(diff) > 0.01 and shown(diff, text, digits), (method, g, diff)
            else:
                assert abs(diff) <= 0.01, (method, g, diff)


def test_wl_ml1m_moves_ndcg_from_mainstream_to_niche_as_published():
    """"WL moves NDCG@20 from the mainstream to the niche groups as published (low +0.016, high
    −0.009 against our VAE)"."""
    (_, wl), (_, vae) = _ml1m("wl"), _ml1m("vae")
    (_, pub_wl), (_, pub_vae) = _published("wl"), _published("vae")
    assert shown(wl["low"] - vae["low"], +0.016, 3) and shown(wl["high"] - vae["high"], -0.009, 3)
    assert pub_wl["low"] > pub_vae["low"] and pub_wl["high"] < pub_vae["high"]


def test_loca_ml1m_within_0_01_of_published_but_low_group():
    """"LOCA lands at 0.3287, +0.0057 over the published 0.3230, and within 0.01 in every group but
    the low-mainstream one, where it is +0.025 (0.2659 against 0.2405)"; "LOCA's low-mainstream
    NDCG@20 is above EnLFT's (0.2582) and TALL's (0.2626) too; the paper's ranking, with TALL ahead,
    does not hold here"."""
    ours, groups = _ml1m("loca")
    pub, pub_groups = _published("loca")
    assert shown(ours - pub, +0.0057, 4)
    for g in GROUPS:
        diff = groups[g] - pub_groups[g]
        if g == "low":
            assert diff > 0.01 and shown(diff, +0.025, 3), diff
        else:
            assert abs(diff) <= 0.01, (g, diff)
    assert groups["low"] > _ml1m("enlft")[1]["low"] and groups["low"] > _ml1m("tall")[1]["low"]


def test_lft_partial_gains_over_wl_as_published():
    """LFT on shards 0-2 (756 users): "Fine-tuning helps every group ... (+0.020 overall, +0.025
    low), as in the paper, whose full-population gains over WL are +0.018 overall and +0.024 low;
    both halves of the sample agree (shard 0: +0.024 / +0.041; shards 1–2: +0.018 / +0.018)"."""
    part = results("tall_ml1m.json")["results"]["lft_partial"]
    assert part["users"] == 756 and sum(part["group_sizes"].values()) == 756
    lft, wl = part["lft"], part["wl"]
    for g in GROUPS:
        assert lft["groups"][g] > wl["groups"][g], g
    assert shown(lft["ndcg@20"] - wl["ndcg@20"], 0.020, 3)
    assert shown(lft["groups"]["low"] - wl["groups"]["low"], 0.025, 3)
    (pub_lft, pub_lft_g), (pub_wl, pub_wl_g) = _published("lft"), _published("wl")
    assert shown(pub_lft - pub_wl, 0.018, 3) and shown(pub_lft_g["low"] - pub_wl_g["low"], 0.024, 3)
    for run, (overall, low) in {"shards 0": (0.024, 0.041), "shards 1,2": (0.018, 0.018)}.items():
        r = part["per_run"][run]
        assert shown(r["lft"]["ndcg@20"] - r["wl"]["ndcg@20"], overall, 3), run
        assert shown(r["lft"]["groups"]["low"] - r["wl"]["groups"]["low"], low, 3), run


def test_lft_partial_helps_niche_users_most_relative_to_wl():
    """"helps every group, the niche users most relative to where WL leaves them ... in absolute
    terms med-high gains a little more"."""
    part = results("tall_ml1m.json")["results"]["lft_partial"]
    gain = {g: part["lft"]["groups"][g] - part["wl"]["groups"][g] for g in GROUPS}
    relative = {g: gain[g] / part["wl"]["groups"][g] for g in GROUPS}
    assert min(gain.values()) > 0 and max(relative, key=relative.get) == "low", relative
    assert max(gain, key=gain.get) == "med-high", gain


def test_tall_ml1m_beats_enlft_on_low_mainstream_by_much_less_than_published():
    """"TALL's low-mainstream NDCG@20 is 0.2626 against EnLFT's 0.2582 (+0.0044, +1.7 %; the paper
    reports about +10 %), and +0.043 (+19.6 %) over the VAE ... med-low to high are 0.006–0.015
    below EnLFT and overall NDCG@20 is 0.3238 against 0.3305 (−2.0 %, still +0.0064 over the VAE)",
    with the validation items gating the test predictions."""
    r = results("tall_ml1m.json")["results"]["tall"]
    assert r["gate_uses_validation_labels"] is True
    tall, groups = _ml1m("tall")
    enlft, enlft_groups = _ml1m("enlft")
    vae, vae_groups = _ml1m("vae")
    gain = groups["low"] - enlft_groups["low"]
    assert shown(gain, 0.0044, 4) and shown(pct(groups["low"], enlft_groups["low"]), 1.7, 1)
    assert 0 < gain / enlft_groups["low"] < TALL_OVER_ENLFT_LOW_PUBLISHED
    assert shown(groups["low"] - vae_groups["low"], 0.043, 3) and shown(pct(groups["low"], vae_groups["low"]), 19.6, 1)
    for g in GROUPS[1:]:
        below = enlft_groups[g] - groups[g]
        assert 0.006 - 0.0005 <= below <= 0.015 + 0.0005, (g, below)
    assert shown(pct(tall, enlft), -2.0, 1) and shown(tall - vae, 0.0064, 4)
    assert (r["best_epoch"], r["epochs"]) == (79, 94)


def test_tall_ml1m_label_free_gate_falls_below_vae():
    """"The label-free gate ... gives NDCG@20 0.3001, low-mainstream 0.2060: −0.024 and −0.057 against
    TALL with the validation gate, and −0.017 / −0.014 against the plain VAE (0.3174 / 0.2196); only
    the high group (0.4414) matches TALL's" ("matches" read as within 0.001)."""
    r = results("tall_ml1m.json")["results"]["tall_train_slice"]
    assert r["gate_uses_validation_labels"] is False
    ours, groups = _ml1m("tall_train_slice")
    tall, tall_groups = _ml1m("tall")
    vae, vae_groups = _ml1m("vae")
    assert shown(ours - tall, -0.024, 3) and shown(groups["low"] - tall_groups["low"], -0.057, 3)
    assert shown(ours - vae, -0.017, 3) and shown(groups["low"] - vae_groups["low"], -0.014, 3)
    assert abs(groups["high"] - tall_groups["high"]) < 0.001
    for g in GROUPS[:-1]:
        assert groups[g] < tall_groups[g] - 0.005, g
    assert (r["best_epoch"], r["epochs"]) == (42, 57)


# ---- Ablation of the gate and the adaptive weights (Amazon Digital Music) --------------------------

def test_tall_gate_ablation_adaptive_weights_cost_accuracy_with_either_gate():
    """"the adaptive weights cost accuracy with either gate, in every group (medium is equal with the
    validation gate) including the low-mainstream one ... (−0.005 with the validation gate, −0.008
    with the slice)"."""
    r = results("tall_gate_ablation_amazon-digital-music.json")["results"]
    for with_w, without_w, low_cost in (("tall", "tall_no_adaptive", -0.005),
                                        ("tall_train_slice", "tall_train_slice_no_adaptive", -0.008)):
        assert r[with_w]["config"]["adaptive"] and not r[without_w]["config"]["adaptive"]
        a, b = r[with_w], r[without_w]
        assert a["overall_ndcg@20"] < b["overall_ndcg@20"], with_w
        for g in GROUPS:
            if (with_w, g) == ("tall", "medium"):
                assert round(a["groups"][g], 4) == round(b["groups"][g], 4), (with_w, g)  # equal as printed
            else:
                assert a["groups"][g] < b["groups"][g], (with_w, g)
        assert shown(a["groups"]["low"] - b["groups"]["low"], low_cost, 3), with_w


def test_tall_gate_ablation_label_free_without_weights_above_vae():
    """"without them the label-free TALL is above the VAE overall (0.1149 against the main job's
    three-seed mean 0.1101) and level with it in the low group (0.0921 against 0.0927)": the VAE is
    the main job's (main_job.json); "level" = within 0.001."""
    slice_ = results("tall_gate_ablation_amazon-digital-music.json")["results"]["tall_train_slice_no_adaptive"]
    vae = {r["method"]: r for r in results_if_written("main_job.json")["rows"]}["vae"]
    assert shown(slice_["overall_ndcg@20"], 0.1149, 4) and shown(slice_["groups"]["low"], 0.0921, 4)
    assert shown(vae["ndcg@20"], 0.1101, 4) and shown(vae["low"], 0.0927, 4), vae
    assert slice_["overall_ndcg@20"] > vae["ndcg@20"] and abs(slice_["groups"]["low"] - vae["low"]) < 0.001


# ---- POSIT and its baselines on ML-1M (algorithms.md D-1, D-3) -------------------------------------

POSIT_ML20M_PUBLISHED = {  # ML-20M, POSIT README (algorithms.md D-1 NDCG@100, D-3 Coverage@100)
    "posit": {"ndcg@100": 0.4214, "coverage@100": 1793},
    "ease": {"ndcg@100": 0.4199, "coverage@100": 1461},
}


def _tail_rows() -> dict:
    return {r["method"]: r for r in results("tail_ml1m.json")["rows"]}


def test_posit_ml1m_claim_half_reproduced():
    """The paper: Coverage@100 1,793 vs EASE's 1,461 (+23 %), NDCG@100 .4214 vs .4199. Ours: "POSIT's
    Coverage@100 is 10.3 % above the SGD-trained EASE (1,097 vs 994; Coverage@50 +12 %, Coverage@20
    +12 %) and it has the best Item Recall@20, but its NDCG@100 is 4.6 % lower (.3956 vs .4145), not
    within 1 %"."""
    pub = POSIT_ML20M_PUBLISHED
    assert shown(pct(pub["posit"]["coverage@100"], pub["ease"]["coverage@100"]), 23, 0)
    assert abs(pct(pub["posit"]["ndcg@100"], pub["ease"]["ndcg@100"])) < 1
    rows = _tail_rows()
    posit, ease = rows["posit"], rows["ease"]
    for k, stated, digits in (("coverage@100", 10.3, 1), ("coverage@50", 12, 0), ("coverage@20", 12, 0)):
        assert shown(pct(posit[k], ease[k]), stated, digits), (k, pct(posit[k], ease[k]))
    assert max(rows, key=lambda m: rows[m]["item_recall@20"]) == "posit"
    assert shown(pct(posit["ndcg@100"], ease["ndcg@100"]), -4.6, 1)
    assert abs(pct(posit["ndcg@100"], ease["ndcg@100"])) > 1


def test_posit_ml1m_kept_models_are_early_epochs():
    """"early stopping keeps epochs 3, 4 and 5 of the three seeds ... (Coverage@100 945, 1,190 and
    1,157: the ± 133)"."""
    runs = results("tail_ml1m.json")["runs"]
    for seed, (epoch, coverage) in enumerate(((3, 945), (4, 1190), (5, 1157))):
        r = runs[f"posit/seed{seed}"]
        assert r["best_epoch"] == epoch and shown(r["test"]["coverage@100"], coverage, 0), (seed, r["test"])
    assert shown(_tail_rows()["posit"]["coverage@100_std"], 133.0, 1)


def test_cvar_ml1m_is_the_best_trade():
    """"CVaR is the best trade here (+8 % coverage for −0.2 % NDCG)" against the SGD-trained EASE."""
    rows = _tail_rows()
    cvar, ease = rows["cvar"], rows["ease"]
    assert shown(pct(cvar["coverage@100"], ease["coverage@100"]), 8, 0)
    assert shown(pct(cvar["ndcg@100"], ease["ndcg@100"]), -0.2, 1)
    for other in ("ipw", "posit"):  # every other coverage gain costs more NDCG
        assert rows[other]["ndcg@100"] < cvar["ndcg@100"], other
