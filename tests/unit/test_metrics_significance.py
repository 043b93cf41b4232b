"""Intervals and paired tests: hand-computed cases, and statsmodels / scipy as independent
implementations on the same inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from recsys.errors import DataError
from recsys.metrics import significance as sig


def test_exact_randomization_test_by_hand():
    # d = (1, 2, 3): of the 8 sign patterns only +++ and --- reach |mean| 2 -> p = 2 / 8
    assert sig.randomization_test([1, 2, 3], [0, 0, 0]) == pytest.approx(0.25)
    # d = (1, -1): every pattern has |mean| 0 or 1; |mean| >= 0 always -> p = 1
    assert sig.randomization_test([1, 0], [0, 1]) == 1.0
    assert sig.randomization_test([0.3, 0.3], [0.3, 0.3]) == 1.0  # no difference at all


def test_exact_randomization_equals_full_enumeration_written_out():
    rng = np.random.default_rng(0)
    a, b = rng.random(10), rng.random(10)
    d = a - b
    flips = [abs(np.dot(s, d)) / 10 for s in itertools.product((1, -1), repeat=10)]
    assert sig.randomization_test(a, b) == pytest.approx(np.mean(np.array(flips) >= abs(d.mean()) - 1e-12))


def test_monte_carlo_randomization_agrees_with_scipys_permutation_test():
    rng = np.random.default_rng(1)
    a = rng.normal(0.30, 0.1, 400)
    b = a - rng.normal(0.012, 0.05, 400)
    ours = sig.randomization_test(a, b, n_resamples=20_000, seed=3)
    theirs = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                    n_resamples=20_000, random_state=4).pvalue
    assert 0 < ours < 0.05 and ours == pytest.approx(theirs, abs=0.01)
    assert sig.randomization_test(a, b, n_resamples=2000, seed=5) == sig.randomization_test(a, b, n_resamples=2000, seed=5)


def test_wilcoxon_by_hand_and_against_scipy():
    # all five differences positive: exact two-sided p = 2 / 2^5
    assert sig.wilcoxon_test([2, 3, 4, 5, 6], [1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    rng = np.random.default_rng(2)
    a, b = rng.random(60), rng.random(60)
    assert sig.wilcoxon_test(a, b) == pytest.approx(stats.wilcoxon(a - b).pvalue)
    assert sig.wilcoxon_test([1, 2], [1, 2]) == 1.0


def test_holm_by_hand_and_against_statsmodels():
    from statsmodels.stats.multitest import multipletests

    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert sig.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    rng = np.random.default_rng(3)
    p = rng.random(12) ** 3
    np.testing.assert_allclose(sig.holm(p), multipletests(p, method="holm")[1])
    assert sig.holm([0.9, 0.8]) == [1.0, 1.0]


def test_seed_interval_by_hand_and_against_statsmodels():
    from statsmodels.stats.weightstats import DescrStatsW

    x = [0.40, 0.42, 0.44]
    mean, low, high = sig.seed_ci(x)
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)  # sd of (0.40, 0.42, 0.44) is 0.02
    assert (mean, low, high) == pytest.approx((0.42, 0.42 - half, 0.42 + half))
    np.testing.assert_allclose((low, high), DescrStatsW(np.array(x)).tconfint_mean(alpha=0.05))
    m, lo, hi = sig.seed_ci([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)


def test_bootstrap_interval_covers_the_mean_is_seeded_and_narrows_with_more_users():
    rng = np.random.default_rng(4)
    small, large = rng.random(50), rng.random(5000)
    mean, low, high = sig.bootstrap_ci(small, seed=1)
    assert low < mean < high and mean == pytest.approx(small.mean())
    assert sig.bootstrap_ci(small, seed=1) == (mean, low, high)
    _, low2, high2 = sig.bootstrap_ci(large, seed=1)
    assert high2 - low2 < (high - low) / 5  # ~ 1 / sqrt(100) of the width
    # the standard error of the mean, 1.96 sd / sqrt(n), is what the percentile interval approximates
    assert (high2 - low2) / 2 == pytest.approx(1.96 * large.std() / math.sqrt(large.size), rel=0.1)
    assert sig.bootstrap_ci([0.2] * 10) == (0.2, 0.2, 0.2)


def test_effect_sizes_by_hand():
    e = sig.effect_size([3, 4, 6], [1, 2, 3])  # d = 2, 2, 3
    assert e["mean_diff"] == pytest.approx(7 / 3) and e["relative"] == pytest.approx((7 / 3) / 2)
    assert e["cohen_dz"] == pytest.approx((7 / 3) / np.std([2, 2, 3], ddof=1))
    assert e["rank_biserial"] == 1.0
    assert sig.effect_size([1, 2], [2, 1])["rank_biserial"] == 0.0
    # negated scores (errors compared as -error): the relative difference keeps the sign of the difference
    neg = sig.effect_size([-1.0, -1.0], [-2.0, -2.0])
    assert neg["mean_diff"] == 1.0 and neg["relative"] == 0.5


def test_pairs_with_a_missing_score_are_dropped_and_mismatched_units_refused():
    a, b = [1.0, np.nan, 3.0, 4.0], [0.0, 2.0, np.nan, 3.0]
    assert sig.compare(a, b, n_resamples=200)["n"] == 2
    with pytest.raises(DataError, match="same units"):
        sig.compare([1, 2, 3], [1, 2])
    with pytest.raises(DataError, match="no unit has a finite score"):
        sig.compare([np.nan], [1.0])


def test_against_a_reference_adjusts_across_the_table():
    rng = np.random.default_rng(5)
    ref = rng.random(300)
    scores = {"ref": ref, "better": ref + 0.05 + rng.normal(0, 0.05, 300), "same": ref + rng.normal(0, 0.05, 300)}
    out = sig.against_reference(scores, "ref", n_resamples=2000)
    assert set(out) == {"better", "same"}
    assert out["better"]["significant"] and not out["same"]["significant"]
    raw = [out["better"]["p_wilcoxon"], out["same"]["p_wilcoxon"]]
    assert [out["better"]["p_wilcoxon_holm"], out["same"]["p_wilcoxon_holm"]] == pytest.approx(sig.holm(raw))
    with pytest.raises(DataError, match="reference method 'nope'"):
        sig.against_reference(scores, "nope")


def test_the_meta_comparison_pairs_users_across_methods_and_finds_a_real_gain():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("compare_meta_paper", REPO / "benchmarks" / "compare_meta_paper.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(6)
    users, target = np.arange(200), rng.integers(1, 6, 200).astype(float)
    noise = {"maml_pp": 1.0, "melo": 0.6, "basic": 1.0}
    runs = {f"gru4rec/{m}/seed{s}": {"test_per_user": {"users": users.tolist(), "target": target.tolist(),
                                                        "pred": (target + rng.normal(0, sd, 200)).tolist()}}
            for m, sd in noise.items() for s in (0, 1)}
    runs["gru4rec/melo/seed2"] = runs["gru4rec/melo/seed0"]  # a seed the reference lacks is not used
    out = mod.compare_dataset(runs, n_resamples=2000)["gru4rec"]
    assert out["seeds"] == [0, 1]
    melo, basic = out["methods"]["melo"], out["methods"]["basic"]
    assert melo["verdict"] == "better" and melo["rmse"] < out["methods"]["maml_pp"]["rmse"]
    assert basic["verdict"] == "no significant difference"
    assert melo["rmse_ci"][0] < melo["rmse"] < melo["rmse_ci"][1]
