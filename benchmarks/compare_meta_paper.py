"""MELO against MAML++ (and basic) per backbone on the paper-length meta runs, paired over test
users (issue 34 item 1, with the statistics of recsys.metrics.significance).

For each dataset and backbone, the seeds where every compared method has a finished row of
``benchmarks/results/meta_<dataset>_paper.json``: each test user's squared error of the last
rating, averaged over those seeds, per method; RMSE = sqrt of the mean, with a bootstrap interval
over users; MELO and basic against MAML++ (the reference) with the paired randomization and
Wilcoxon tests on the per-user squared errors, Holm-adjusted across the comparisons of a dataset.
With three seeds a test over seeds alone cannot reach p < 0.25 (2 of 8 sign patterns), so the
users are the unit. Writes ``benchmarks/results/meta_paper_comparison.json``.

    python benchmarks/compare_meta_paper.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = ("ml-100k", "amazon-digital-music")
BACKBONES = ("gru4rec", "narm", "sasrec", "bert4rec")
REFERENCE, METHODS = "maml_pp", ("melo", "basic")


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"reference", "unit", "alpha", "correction", "tests", "datasets"}


def squared_errors(run: dict) -> tuple[np.ndarray, np.ndarray]:
    per = run["test_per_user"]
    return np.asarray(per["users"]), (np.asarray(per["pred"]) - np.asarray(per["target"])) ** 2


def compare_dataset(runs: dict, n_resamples: int) -> dict:
    from recsys.metrics.significance import against_reference, bootstrap_ci, holm

    out, pending = {}, []
    for bb in BACKBONES:
        methods = (REFERENCE, *METHODS)
        seeds = sorted({int(k.rsplit("seed", 1)[1]) for k in runs if k.startswith(f"{bb}/")})
        seeds = [s for s in seeds if all(f"{bb}/{m}/seed{s}" in runs for m in methods)]
        if not seeds:
            continue
        scores, users = {}, None
        for m in methods:
            per_seed = []
            for s in seeds:
                u, se = squared_errors(runs[f"{bb}/{m}/seed{s}"])
                if users is None:
                    users = u
                if not np.array_equal(u, users):
                    raise SystemExit(f"{bb}/{m}/seed{s}: other test users than the first run; the tasks must match")
                per_seed.append(se)
            scores[m] = np.mean(per_seed, axis=0)
        # lower squared error is better: compare the negated errors so a positive difference = better
        tests = against_reference({m: -v for m, v in scores.items()}, REFERENCE, n_resamples=n_resamples)
        rows = {}
        for m in methods:
            mean, low, high = bootstrap_ci(scores[m], n_resamples=n_resamples)
            rows[m] = {"rmse": math.sqrt(mean), "rmse_ci": [math.sqrt(low), math.sqrt(high)],
                       "mse": mean, "n_users": int(scores[m].size)}
        for m, t in tests.items():
            rows[m].update({"vs": REFERENCE, "mse_diff": -t["mean_diff"], "relative_mse_diff": -t["relative"],  # of -error
                            "p_randomization": t["p_randomization"], "p_wilcoxon": t["p_wilcoxon"]})
            pending.append((bb, m))
        out[bb] = {"seeds": seeds, "methods": rows}
    # Holm across every comparison of the dataset (backbones x methods), both tests
    for key in ("p_randomization", "p_wilcoxon"):
        for (bb, m), p in zip(pending, holm([out[bb]["methods"][m][key] for bb, m in pending])):
            out[bb]["methods"][m][f"{key}_holm"] = p
    for bb, m in pending:
        r = out[bb]["methods"][m]
        r["significant"] = bool(r["p_randomization_holm"] < 0.05 and r["p_wilcoxon_holm"] < 0.05)
        r["verdict"] = ("better" if r["mse_diff"] < 0 else "worse") if r["significant"] else "no significant difference"
    return out


def main(n_resamples: int = 10_000) -> dict:
    from recsys.io import write_json

    result = {"reference": REFERENCE, "unit": "test user (squared error of the last rating, mean over the seeds "
              "all compared methods finished)", "alpha": 0.05, "correction": "Holm over the comparisons of a dataset",
              "tests": "paired sign-flip randomization (10,000 resamples) and Wilcoxon signed-rank; significant = both",
              "datasets": {}}
    for ds in DATASETS:
        path = REPO / "benchmarks" / "results" / f"meta_{ds}_paper.json"
        if path.is_file():
            result["datasets"][ds] = compare_dataset(json.loads(path.read_text())["runs"], n_resamples)
    write_json(REPO / "benchmarks" / "results" / "meta_paper_comparison.json", result)
    for ds, bbs in result["datasets"].items():
        for bb, r in bbs.items():
            cells = ", ".join(f"{m} RMSE {v['rmse']:.4f} [{v['rmse_ci'][0]:.4f}, {v['rmse_ci'][1]:.4f}]"
                              + (f" ({v['verdict']} vs {REFERENCE}, p_holm {v['p_wilcoxon_holm']:.3g})" if "verdict" in v else "")
                              for m, v in r["methods"].items())
            print(f"{ds} {bb} seeds {r['seeds']}: {cells}")
    return result


if __name__ == "__main__":
    main()
