"""Per-user arrays kept beside results, and the intervals and paired tests every table carries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from recsys.errors import DataError
from recsys.metrics import significance as sig
from recsys.pipeline import evidence as ev
from recsys.pipeline.evidence import Metric


def _result(out_dir, users, values, seed=None, groups=None, name="per_user.npz", **test):
    record = ev.save_per_user(out_dir, users, {"ndcg@20": values}, groups=groups, name=name)
    return {"seed": seed, "test": {"ndcg@20": float(np.mean(values)), **test}, "per_user": record}


def test_per_user_file_round_trips_sorted_by_user_and_refuses_a_changed_file(tmp_path):
    rec = ev.save_per_user(tmp_path, [3, 1, 2], {"ndcg@20": [0.3, 0.1, 0.2]}, groups=["c", "a", "b"])
    pu = ev.load_per_user(rec)
    assert pu.users.tolist() == [1, 2, 3]
    assert pu.metrics["ndcg@20"].tolist() == [0.1, 0.2, 0.3]
    assert pu.groups.tolist() == ["a", "b", "c"]
    ev.save_per_user(tmp_path, [1, 2, 3], {"ndcg@20": [0.0, 0.0, 0.0]})  # overwritten behind the record's back
    with pytest.raises(DataError, match=r"per_user.npz has sha256 .* the result records .*re-run"):
        ev.load_per_user(rec)
    with pytest.raises(DataError, match="2 values for 3 users"):
        ev.save_per_user(tmp_path, [1, 2, 3], {"x": [1, 2]})


def test_one_seed_gives_a_bootstrap_interval_and_paired_user_tests(tmp_path):
    rng = np.random.default_rng(0)
    users = np.arange(300)
    base = rng.random(300)
    results = {"ref": _result(tmp_path / "r", users, base),
               "better": _result(tmp_path / "b", users, base + 0.05 + 0.01 * rng.standard_normal(300)),
               "same": _result(tmp_path / "s", users, base + 0.01 * rng.standard_normal(300))}
    out = ev.comparison(results, [Metric("ndcg@20")], "ref", n_resamples=999)
    table = out["metrics"]["ndcg@20"]
    assert table["ref"]["vs"] is None and table["ref"]["ci_over"] == "users"
    m, low, high = sig.bootstrap_ci(base, n_resamples=999)
    assert table["ref"]["ci"] == pytest.approx([low, high]) and table["ref"]["mean"] == pytest.approx(m)
    better, same = table["better"]["vs"], table["same"]["vs"]
    assert better["significant"] and better["better"] and better["diff"] == pytest.approx(0.05, abs=0.005)
    assert not same["significant"]
    # Holm over the two comparisons of the table, on scipy's Wilcoxon p-values
    raw = [stats.wilcoxon(np.asarray(ev.load_per_user(results[m]["per_user"]).metrics["ndcg@20"]) - base).pvalue
           for m in ("better", "same")]
    assert [better["p_wilcoxon_holm"], same["p_wilcoxon_holm"]] == pytest.approx(sig.holm(raw))
    assert "p_seeds" not in better  # one seed: no test over seeds


def test_three_seeds_give_a_t_interval_and_a_paired_t_test_over_seeds(tmp_path):
    users = np.arange(50)
    results = {}
    ref_means, new_means = [0.20, 0.22, 0.21], [0.25, 0.28, 0.26]
    for s in range(3):
        results[("ref", s)] = _result(tmp_path / f"r{s}", users, np.full(50, ref_means[s]), seed=s)
        results[("new", s)] = _result(tmp_path / f"n{s}", users, np.full(50, new_means[s]), seed=s)
    table = ev.comparison(results, [Metric("ndcg@20")], "ref", n_resamples=199)["metrics"]["ndcg@20"]
    # hand-computed Student t interval over the three seed means
    a = np.array(new_means)
    half = stats.t.ppf(0.975, 2) * a.std(ddof=1) / math.sqrt(3)
    assert table["new"]["ci_over"] == "seeds"
    assert table["new"]["ci"] == pytest.approx([a.mean() - half, a.mean() + half])
    d = a - np.array(ref_means)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert table["new"]["vs"]["p_seeds"] == pytest.approx(2 * stats.t.sf(abs(t), 2))
    assert table["new"]["vs"]["n_seeds"] == 3


def test_group_metrics_use_only_that_groups_users_and_repeated_rows_are_averaged(tmp_path):
    users = np.array([0, 1, 2, 3])
    groups = np.array(["low", "low", "high", "high"])
    results = {"ref": _result(tmp_path / "r", users, [0.1, 0.2, 0.5, 0.5], groups=groups),
               "new": _result(tmp_path / "n", users, [0.3, 0.4, 0.5, 0.5], groups=groups)}
    table = ev.comparison(results, [Metric("ndcg@20", group="low")], "ref", n_resamples=99)["metrics"]["ndcg@20 (low)"]
    assert table["new"]["mean"] == pytest.approx(0.35) and table["new"]["vs"]["diff"] == pytest.approx(0.2)
    # meta tasks: several rows of one user are that user's mean; RMSE's interval is sqrt of the squared errors'
    rec = ev.save_per_user(tmp_path / "m", [5, 5, 6], {"se": [1.0, 3.0, 4.0]})
    se = Metric("se", label="RMSE", lower_better=True, transform=math.sqrt)
    entry = ev.comparison({"m": {"test": {}, "per_user": rec}}, [se], None, n_resamples=99)["metrics"]["RMSE"]["m"]
    assert entry["n_users"] == 2 and entry["mean"] == pytest.approx(math.sqrt((2.0 + 4.0) / 2))
    low, high = entry["ci"]
    assert math.sqrt(2.0) - 1e-9 <= low <= high <= 2.0 + 1e-9


def test_a_reference_without_seeds_is_tested_with_a_one_sample_t_and_cells_say_so(tmp_path):
    users = np.arange(40)
    results = {"mostpop": _result(tmp_path / "p", users, np.full(40, 0.1))}
    for s, v in enumerate([0.30, 0.31, 0.29]):
        results[("vae", s)] = _result(tmp_path / f"v{s}", users, np.full(40, v) + 0.01 * np.sin(users + s), seed=s)
    out = ev.comparison(results, [Metric("ndcg@20")], "mostpop", n_resamples=199)
    vs = out["metrics"]["ndcg@20"]["vae"]["vs"]
    assert vs["n_seeds"] == 3 and vs["significant"]
    headers, cells = ev.columns(out, ["mostpop", "vae"])
    assert headers == ["ndcg@20 [95% CI]", "vs mostpop"]
    assert cells[0][1] == "ref" and cells[1][1].endswith(" *") and cells[1][1].startswith("+0.2")
    assert cells[1][0].startswith("0.300") and "[" in cells[1][0]
    assert "Holm" in ev.footnote(out)


def test_run_arrays_gather_every_task_and_read_back_by_method_and_seed(tmp_path):
    results = {("a", 0): _result(tmp_path / "a0", [2, 1], [0.2, 0.1], seed=0, groups=["x", "y"]),
               "b": _result(tmp_path / "b", [1, 2], [0.5, 0.6])}
    rec = ev.write_run_arrays(tmp_path / "run", results)
    back = ev.read_run_arrays(rec["path"], rec["sha256"])
    assert set(back) == {("a", 0), ("b", None)}
    assert back[("a", 0)].users.tolist() == [1, 2] and back[("a", 0)].groups.tolist() == ["y", "x"]
    assert back[("b", None)].metrics["ndcg@20"].tolist() == [0.5, 0.6]
    same = ev.comparison(results, [Metric("ndcg@20")], "b", arrays=back, n_resamples=99)
    assert same == ev.comparison(results, [Metric("ndcg@20")], "b", n_resamples=99)
    with pytest.raises(DataError, match="sha256"):
        ev.read_run_arrays(rec["path"], "0" * 64)


def test_a_model_that_ignores_its_seed_gets_an_interval_over_users(tmp_path):
    users = np.arange(60)
    values = np.linspace(0.0, 0.5, 60)
    results = {("mostpop", s): _result(tmp_path / f"p{s}", users, values, seed=s) for s in range(3)}
    entry = ev.comparison(results, [Metric("ndcg@20")], None, n_resamples=199)["metrics"]["ndcg@20"]["mostpop"]
    assert entry["ci_over"] == "users" and entry["ci"][0] < entry["mean"] < entry["ci"][1]
