"""The seed papers' headline claims restated with their tests (issue 31, docs/reproduction.md
"Headline claims"): each says significant or not at 0.05 after Holm's correction.

* TALL vs EnLFT on ML-1M low-mainstream users, NDCG@20 paired over those users;
* POSIT vs EASE (the same SGD learner) Coverage@100 on ML-1M over 5 seeds (t over seeds), and its
  NDCG@100 cost (over users and seeds);
* BaM_p / BaM_l vs hard selection on ML-1M (REMI), Recall@20 paired over users;
* MELO vs MAML++ per backbone (the paper-length meta rows, ``meta_paper_comparison.json``).

The first three read the ``evidence.json`` of the flow runs ``benchmarks/claims_runs.sh`` made
(under ``--runs-dir``, default /work/claims); the tests are recomputed from their per-user arrays
(checksums checked) with :func:`recsys.pipeline.evidence.comparison`. A claim whose run has not
finished is written as pending, never guessed. Writes ``benchmarks/results/claims.json``.

    python benchmarks/claims.py [--runs-dir /work/claims]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULT = REPO / "benchmarks" / "results" / "claims.json"
RESAMPLES = 10_000


def _entries(run_dir: Path, stage, metrics, reference, methods):
    """The comparison of `methods` against `reference` on `metrics`, from a run's kept arrays."""
    from recsys.pipeline.evidence import comparison
    from recsys.pipeline.leaderboard import load_run

    run = load_run((run_dir.name, run_dir))
    results = {}
    for r in run.runs:
        if r["method"] in methods or r["method"] == reference:
            key = r["method"] if r.get("seed") is None else (r["method"], r["seed"])
            results[key] = {"seed": r.get("seed"), "test": r["test"]}
    arrays = {k: v for k, v in run.arrays.items() if k[0] in methods or k[0] == reference}
    out = comparison(results, metrics, reference, arrays=arrays, n_resamples=RESAMPLES)
    return out, run


def verdict(row: dict) -> str:
    """What the test says about the claim: a "higher" / "lower" claim is supported by a significant
    difference in its direction; a "parity" claim is contradicted by any significant difference."""
    if row["expects"] == "parity":
        return "contradicted (significant difference)" if row["significant"] else "consistent (no significant difference)"
    if not row["significant"]:
        return "not supported (no significant difference)"
    right = (row["diff"] > 0) == (row["expects"] == "higher")
    return "supported" if right else "contradicted (significant, other direction)"


def _row(claim: str, metric: str, table: dict, method: str, run, unit: str, expects: str = "higher") -> dict:
    e = table[method]
    vs = e["vs"] or {}
    ref = table[vs.get("reference")] if vs else {}
    ps = {k: vs[k] for k in ("p_wilcoxon_holm", "p_randomization_holm", "p_seeds_holm") if k in vs}
    return {"claim": claim, "metric": metric, "method": method, "reference": vs.get("reference"),
            "mean": e["mean"], "ci": e["ci"], "ci_over": e["ci_over"], "reference_mean": ref.get("mean"),
            "reference_ci": ref.get("ci"), "diff": vs.get("diff"), "relative": vs.get("relative"),
            "n_users": vs.get("n_users"), "n_seeds": vs.get("n_seeds"), "p_holm": ps,
            "significant": bool(vs.get("significant")), "expects": expects, "unit": unit, "run": str(run.folder),
            "split_sha256": run.split_sha256, "dataset": run.dataset}


def tall_claim(runs_dir: Path) -> list[dict]:
    from recsys.pipeline.evidence import Metric
    from recsys.pipeline.local import STAGE

    metric = Metric("ndcg@20", group="low")
    out, run = _entries(runs_dir / "tall_ml-1m", STAGE, [metric], "enlft", {"tall"})
    return [_row("TALL beats EnLFT on low-mainstream users (ML-1M)", metric.title, out["metrics"][metric.title],
                 "tall", run, "low-mainstream test user (one seed; Wilcoxon and randomization over users)")]


def tail_claim(runs_dir: Path) -> list[dict]:
    from recsys.pipeline.evidence import Metric
    from recsys.pipeline.tail import STAGE

    cov = Metric("coverage@100", scalar=lambda r: r["test"]["coverage@100"])
    ndcg = Metric("ndcg@100")
    out, run = _entries(runs_dir / "tail_ml-1m", STAGE, [cov, ndcg], "ease", {"posit"})
    return [_row("POSIT raises Coverage@100 over EASE (ML-1M)", "coverage@100", out["metrics"]["coverage@100"],
                 "posit", run, "training seed (paired t over seeds; coverage has no per-user value)"),
            _row("POSIT keeps EASE's NDCG@100 (ML-1M)", "ndcg@100", out["metrics"]["ndcg@100"], "posit", run,
                 "test user (seed-averaged) and training seed", expects="parity")]


def bam_claim(runs_dir: Path) -> list[dict]:
    from recsys.pipeline.evidence import Metric
    from recsys.pipeline.bam import STAGE

    metric = Metric("recall@20")
    rows = []
    for sel, name in (("p", "BaM_p"), ("l", "BaM_l")):
        out, run = _entries(runs_dir / "bam_ml-1m", STAGE, [metric], "remi/hard", {f"remi/{sel}"})
        rows.append(_row(f"{name} beats hard selection (ML-1M, REMI)", "recall@20", out["metrics"]["recall@20"],
                         f"remi/{sel}", run, "test user (one seed, as the paper; Holm over its two comparisons "
                                             "is applied below)"))
    if len(rows) == 2:  # the two selections are one family of comparisons
        from recsys.metrics.significance import holm

        for key in ("p_wilcoxon_holm", "p_randomization_holm"):
            if all(key in r["p_holm"] for r in rows):
                for r, p in zip(rows, holm([r["p_holm"][key] for r in rows])):
                    r["p_holm"][key] = p
        for r in rows:
            r["significant"] = bool(r["p_holm"]) and all(p < 0.05 for p in r["p_holm"].values())
    return rows


def melo_claim() -> list[dict]:
    path = REPO / "benchmarks" / "results" / "meta_paper_comparison.json"
    doc = json.loads(path.read_text())
    rows = []
    for dataset, backbones in doc["datasets"].items():
        for backbone, entry in backbones.items():
            melo, ref = entry["methods"].get("melo"), entry["methods"].get("maml_pp")
            if not melo or "significant" not in melo:
                continue
            rows.append({"claim": f"MELO beats MAML++ ({dataset}, {backbone})", "metric": "RMSE", "method": "melo",
                         "reference": "maml_pp", "mean": melo["rmse"], "ci": melo["rmse_ci"], "ci_over": "users",
                         "reference_mean": ref["rmse"], "reference_ci": ref["rmse_ci"],
                         "diff": melo["rmse"] - ref["rmse"], "n_users": melo["n_users"],
                         "n_seeds": len(entry.get("seeds") or []),
                         "p_holm": {"p_wilcoxon_holm": melo["p_wilcoxon_holm"],
                                    "p_randomization_holm": melo["p_randomization_holm"]},
                         "significant": bool(melo["significant"]), "expects": "lower", "unit": doc["unit"],
                         "run": str(path.name),
                         "dataset": dataset})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", default="/work/claims")
    a = ap.parse_args()
    runs_dir = Path(a.runs_dir)
    claims, pending = [], []
    for name, fn in (("tall_ml-1m", tall_claim), ("tail_ml-1m", tail_claim), ("bam_ml-1m", bam_claim)):
        if (runs_dir / name / "evidence.json").is_file():
            claims += fn(runs_dir)
        else:
            pending.append({"run": name, "why": f"{runs_dir / name}/evidence.json does not exist yet "
                                                f"(benchmarks/claims_runs.sh has not finished it)"})
    claims += melo_claim()
    for c in claims:
        c["verdict"] = verdict(c)
    from recsys.io import write_json

    write_json(RESULT, {"alpha": 0.05, "resamples": RESAMPLES, "command": "python benchmarks/claims.py",
                        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "significant_means": "every applicable Holm-adjusted p below alpha",
                        "claims": claims, "pending": pending})
    for c in claims:
        print(f"{c['claim']}: {c['mean']:.4f} vs {c['reference_mean']:.4f} ({c['verdict']})")
    for p in pending:
        print(f"pending: {p['run']}")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
