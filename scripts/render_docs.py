"""Write the numbers of README.md and docs/ from benchmarks/results/*.json into their marked blocks.

A block is the text between ``<!-- rendered: NAME -->`` and ``<!-- /rendered -->``; NAME is one
of :data:`RENDERERS`, each a function of the results files. Nothing inside a block is typed by
hand: edit the renderer or re-run the benchmark that writes its file, then

    python scripts/render_docs.py            # rewrite the blocks
    python scripts/render_docs.py --check    # exit 1 naming every block that differs (the test)

``tests/unit/test_rendered_docs.py`` runs the check in the default test run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- rendered: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /rendered -->)", re.S)
DOCS = ("README.md", "docs")


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _ci(entry: dict | None, digits: int = 4) -> str:
    if not entry or not entry.get("ci"):
        return "-" if not entry else f"{entry['mean']:.{digits}f}"
    low, high = entry["ci"]
    return f"{entry['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _vs(entry: dict | None) -> str:
    if not entry:
        return "-"
    vs = entry.get("vs")
    if not vs:
        return "reference"
    ps = [vs[k] for k in ("p_wilcoxon_holm", "p_randomization_holm", "p_seeds_holm") if k in vs]
    p = f", p = {max(ps):.2g}" if ps else ""
    return f"{vs['diff']:+.4f}{p}{' **significant**' if vs.get('significant') else ''}"


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{s} s"


MAIN_LABELS = {"vae": "VAE", "wl": "WL", "loca": "LOCA", "lft": "LFT", "enlft": "EnLFT", "tall": "**TALL** (validation gate)",
               "tall_train_slice": "TALL, label-free gate (`train_slice`)"}


def main_job_time() -> str:
    d = _load("main_job.json")
    busy = d["load_average_before"][0]
    why = (" (a busy machine: background runs held the cores; on idle cores it is shorter)"
           if busy > 0.5 * d["cpu_cores"] else "")
    disk = d.get("run_folder_bytes_by_entry") or {}
    mb = {k: v / 1e6 for k, v in disk.items()}
    size = (f"; the run folder keeps {d['run_folder_bytes'] / 1e6:.0f} MB, of which the assembled models "
            f"(`models/`, every method whole, what a later stage or a recommendation reads) are "
            f"{mb.get('models', 0):.0f} MB and the split {mb.get('split', 0):.1f} MB") if disk else ""
    return (f"{_minutes(d['wall_seconds'])} on {d['cpu_cores']} CPU cores from launch to the printed table, "
            f"load average {busy:.1f} when it started{why}{size} (`benchmarks/main_job.py` → "
            f"`benchmarks/results/main_job.json`).\n")


def main_job_table() -> str:
    d = _load("main_job.json")
    tables = d["evidence"]["metrics"]
    ref = d["evidence"]["reference"]
    lines = ["| method | seeds | NDCG@20 [95% CI] | low [95% CI] | med-low | medium | med-high | high [95% CI] | "
             f"vs {ref}: overall | vs {ref}: low | vs {ref}: high | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = list(MAIN_LABELS)
    for r in sorted(d["rows"], key=lambda r: order.index(r["method"]) if r["method"] in order else len(order)):
        m = r["method"]
        overall, low, high = (tables.get(k, {}).get(m) for k in ("ndcg@20", "ndcg@20 (low)", "ndcg@20 (high)"))
        lines.append(f"| {MAIN_LABELS.get(m, m)} | {r.get('seeds', 1)} | {_ci(overall)} | {_ci(low)} | "
                     f"{r['med-low']:.4f} | {r['medium']:.4f} | {r['med-high']:.4f} | {_ci(high)} | {_vs(overall)} | "
                     f"{_vs(low)} | {_vs(high)} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def claims_table() -> str:
    d = _load("claims.json")
    lines = ["| claim | metric | ours [95% CI] | reference [95% CI] | difference | Holm-adjusted p | unit | at 0.05 | claim |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in d["claims"]:
        ours = _ci({"mean": c["mean"], "ci": c["ci"]}) if c["metric"] != "coverage@100" else \
            f"{c['mean']:.1f} [{c['ci'][0]:.1f}, {c['ci'][1]:.1f}]" if c.get("ci") else f"{c['mean']:.1f}"
        ref = _ci({"mean": c["reference_mean"], "ci": c.get("reference_ci")}) if c["metric"] != "coverage@100" else \
            (f"{c['reference_mean']:.1f} [{c['reference_ci'][0]:.1f}, {c['reference_ci'][1]:.1f}]"
             if c.get("reference_ci") else f"{c['reference_mean']:.1f}")
        ps = ", ".join(f"{k.replace('p_', '').replace('_holm', '')} {v:.2g}" for k, v in c["p_holm"].items()) or "-"
        n = f"{c['n_users']} users" if c.get("n_users") else ""
        n += (", " if n and c.get("n_seeds") else "") + (f"{c['n_seeds']} seeds" if c.get("n_seeds") else "")
        lines.append(f"| {c['claim']} | {c['metric']} | {ours} | {c['reference']}: {ref} | {c['diff']:+.4f} | {ps} | "
                     f"{n} | {'significant' if c['significant'] else 'not significant'} | **{c['verdict']}** |")
    for p in d.get("pending", []):
        lines.append(f"| pending: `{p['run']}` | | | | | | | not yet run | |")
    return "\n".join(lines) + "\n"


def _melo_best_range(dataset: str) -> tuple[int, int, int, int]:
    """(shortest, longest) meta-iterations run and (earliest, latest) best iteration of the
    finished meta-learning rows (MAML++ and MELO) of a paper-length rows file."""
    d = _load(f"meta_{dataset}_paper.json")
    block = d["settings"]["meta"]["block"]
    runs = [r for r in d["runs"].values() if r["method"] != "basic" and r.get("iterations")]
    its = [r["iterations"] for r in runs]
    best = [r["best_epoch"] * block for r in runs]
    return min(its), max(its), min(best), max(best)


def melo_status() -> str:
    d = _load("meta_paper_status.json")
    m, a = d["ml-100k"], d["amazon-digital-music"]
    per = m["per_method"]
    lo, hi, blo, bhi = _melo_best_range("ml-100k")
    amazon = (f"{a['done']} of Amazon's {a['planned']}" if a["done"] else f"none of Amazon's {a['planned']} yet")
    hours = (f"about {m['hours_left_estimate']} h of one thread remain for ML-100K" if m["left"]
             else "ML-100K is complete")
    ratio = d["amazon_over_ml100k_per_block"]
    return (f"*The plan* (`benchmarks/repro_meta_status.py` → `benchmarks/results/meta_paper_status.json`): "
            f"{m['planned']} runs per dataset. {m['done']} of ML-100K's {m['planned']} are done and {amazon}, at "
            f"{per['maml_pp']['mean_seconds']:.0f} s per MAML++ run and {per['melo']['mean_seconds']:.0f} s per MELO "
            f"run (basic: {per['basic']['mean_seconds']:.0f} s), so {hours}; the cost model puts one Amazon block at "
            f"{ratio['sasrec']}x (SASRec) / {ratio['bert4rec']}x (BERT4Rec) of an ML-100K block (windows of 9.5 items "
            f"on average against 30), with 1.5x the iterations and 9x the validation tasks, so Amazon's runs are of "
            f"the same order again. Every meta-learning run so far stopped by patience at {lo}-{hi} iterations with "
            f"its best validation RMSE at iteration {blo}-{bhi}: ML-100K has 632 training users, so one block of 50 "
            f"iterations x 16 tasks passes over them 1.3 times, where the paper's 2,000 iterations pass over ML-1M's "
            f"roughly 4,300 training users about 7 times.\n")


NAMES = {"gru4rec": "GRU4Rec", "narm": "NARM", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}


def melo_comparison() -> str:
    d = _load("meta_paper_comparison.json")
    lines = ["| dataset | backbone | seeds | MELO RMSE [95% CI] | MAML++ RMSE [95% CI] | basic RMSE | "
             "MELO vs MAML++: Holm p (Wilcoxon / randomization) | at 0.05 |", "|---|---|---|---|---|---|---|---|"]
    for dataset, backbones in d["datasets"].items():
        for b, e in backbones.items():
            ms = e["methods"]
            melo, ref, basic = ms.get("melo"), ms.get("maml_pp"), ms.get("basic")
            if not melo or "p_wilcoxon_holm" not in melo:
                continue
            seeds = ", ".join(str(s) for s in e.get("seeds") or [])
            lines.append(f"| {dataset} | {NAMES.get(b, b)} | {seeds} | {_ci({'mean': melo['rmse'], 'ci': melo['rmse_ci']})} | "
                         f"{_ci({'mean': ref['rmse'], 'ci': ref['rmse_ci']})} | "
                         f"{basic['rmse']:.4f} | {melo['p_wilcoxon_holm']:.2g} / {melo['p_randomization_holm']:.2g} | "
                         f"{'**significant**' if melo['significant'] else 'not significant'} |")
    return "\n".join(lines) + "\n"


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f} %".replace("-", "−")


def _claims(prefix: str) -> list[dict]:
    return [c for c in _load("claims.json")["claims"] if c["claim"].startswith(prefix)]


def _headline_pretrain() -> str:
    m = _load("strong_generalization_ml1m.json")["models"]
    order = sorted(m, key=lambda k: -m[k]["test"]["ndcg@100"])
    names = {"ease": "EASE", "multdae": "Mult-DAE", "multvae": "Mult-VAE", "mostpop": "most-popular"}
    return "ML-1M strong generalization NDCG@100: " + ", ".join(
        f"{names.get(k, k)} {m[k]['test']['ndcg@100']:.4f}" for k in order)


def _headline_sequential() -> str:
    d = _load("seq_ml1m.json")
    s, pop = d["models"]["sasrec"], d["models"]["mostpop"]
    return (f"ML-1M HR@10 / NDCG@10: SASRec (CE) {s['test']['hit@10']:.4f} / {s['test']['ndcg@10']:.4f} "
            f"(best epoch {s['best_epoch']} of {s['epochs']}; published SASRec+ 0.3152 / 0.1821), most-popular "
            f"{pop['test']['hit@10']:.4f} / {pop['test']['ndcg@10']:.4f}")


def _headline_local() -> str:
    r = _load("tall_ml1m.json")["results"]
    names = {"loca": "LOCA", "tall": "TALL", "enlft": "EnLFT", "vae": "VAE", "wl": "WL"}
    keep = [k for k in ("loca", "tall", "enlft", "vae") if k in r and (r[k].get("groups") or {}).get("low")]
    keep.sort(key=lambda k: -r[k]["groups"]["low"])
    text = "ML-1M low-mainstream NDCG@20: " + ", ".join(f"{names[k]} {r[k]['groups']['low']:.4f}" for k in keep)
    tall = _claims("TALL beats EnLFT")
    return text + (f"; TALL vs EnLFT there: {tall[0]['verdict']}" if tall else
                   " (TALL with the paper's validation gate; its paired test vs EnLFT is pending)")


def _headline_tail() -> str:
    cov, ndcg = _claims("POSIT raises Coverage@100"), _claims("POSIT keeps")
    if not cov:
        return "ML-1M: POSIT vs EASE pending"
    c, n = cov[0], ndcg[0]
    n_test = "significant" if n["significant"] else "no significant difference"
    return (f"ML-1M, {c['n_seeds']} seeds: POSIT Coverage@100 {c['mean']:.0f} vs EASE (SGD) {c['reference_mean']:.0f} "
            f"({_pct(c['mean'], c['reference_mean'])}, p {max(c['p_holm'].values()):.2g}: "
            f"{c['verdict'].split(' (')[0]}) at NDCG@100 {n['mean']:.4f} vs {n['reference_mean']:.4f} "
            f"({_pct(n['mean'], n['reference_mean'])}, {n_test})")


def _headline_meta() -> str:
    rows = _claims("MELO beats MAML++")
    status = _load("meta_paper_status.json")["ml-100k"]
    supported = [r for r in rows if r["verdict"] == "supported"]
    return (f"ML-100K at the paper's length ({status['done']} of {status['planned']} runs so far): MELO vs MAML++ "
            f"test RMSE supported on {len(supported)} of {len(rows)} backbones "
            + "(" + ", ".join(f"{NAMES.get(r['claim'].split(', ')[-1].rstrip(')'), '')} {r['mean']:.3f} vs {r['reference_mean']:.3f}"
                              for r in rows) + ")")


def _headline_bam() -> str:
    runs = _load("bam_ml-1m.json")["runs"]
    def r20(k):
        return runs[k]["test"]["recall@20"]
    return (f"ML-1M REMI Recall@20 with upstream's switches: BaM_p {r20('remi/p/upstream'):.4f}, BaM_l "
            f"{r20('remi/l/upstream'):.4f} (published 0.3290 / 0.3354); our corrected defaults: BaM_p "
            f"{r20('remi/p/ours'):.4f}, BaM_l {r20('remi/l/ours'):.4f}, hard {r20('remi/hard/ours'):.4f}")


STAGE_ROWS = (
    ("preprocessing", "every protocol of the five papers (strong generalization, random split, leave-k-out by time, "
     "leave-one-out, user split)", lambda: "splits saved with checksums, statistics card",
     "python flows/preprocess_flow.py run --dataset ml-1m --protocol random_split", "[preprocess](docs/stages/preprocess.md)"),
    ("pretraining", "most-popular, EASE, Mult-VAE / DAE; BERT4Rec, SASRec, GRU4Rec, NARM", _headline_pretrain,
     "python flows/pretrain_flow.py run --dataset ml-1m --protocol strong_generalization", "[pretrain](docs/stages/pretrain.md)"),
    ("sequential (pretraining, leave-one-out)", "BERT4Rec, SASRec, GRU4Rec, NARM (next-item and per-position rating heads)",
     _headline_sequential, "python flows/pretrain_flow.py run --dataset ml-1m --protocol leave_one_out --models "
     "sasrec,gru4rec,narm,bert4rec", "[reproduction](docs/reproduction.md)"),
    ("local / mixture of experts (main job)", "VAE, WL, LOCA, LFT, EnLFT, TALL", _headline_local,
     "python flows/tall_flow.py run", "[local](docs/stages/local.md)"),
    ("adversarial tail", "POSIT vs EASE (closed form, SGD), IPW, CVaR, most-popular", _headline_tail,
     "python flows/tail_flow.py run --dataset ml-1m", "[tail](docs/stages/tail.md)"),
    ("meta (cold start)", "global mean, basic, MAML, MAML++, MELO over GRU4Rec / NARM / SASRec / BERT4Rec rating heads",
     _headline_meta, "python flows/meta_flow.py run", "[meta](docs/stages/meta.md)"),
    ("multi-interest (BaM)", "MIND, ComiRec-SA, REMI x hard / BaM_p / BaM_l selection", _headline_bam,
     "python flows/bam_flow.py run", "[bam](docs/stages/bam.md)"),
    ("leaderboard across runs", "every ranking model of several finished runs over one saved split",
     lambda: "one table per metric and user group, 95 % intervals, paired tests against the best (no retraining: "
             "from each run's kept per-user arrays); runs over other splits refused",
     "python flows/compare_flow.py run --runs PretrainFlow/<id>,TallFlow/<id>",
     "[metrics](docs/metrics.md#across-runs-the-leaderboard)"),
)


def stage_table() -> str:
    lines = ["| stage | methods | headline result | run it | page |", "|---|---|---|---|---|"]
    lines += [f"| {stage} | {methods} | {headline()} | `{cmd}` | {page} |" for stage, methods, headline, cmd, page in STAGE_ROWS]
    return "\n".join(lines) + "\n"


def leaderboard_ml1m() -> str:
    d = _load("leaderboard_ml1m.json")
    lines = []
    for title, table in d["tables"].items():
        lines += [f"| {title}: rank | method (stage:method) | mean [95% CI] | over | vs best ({table['best']}) |",
                  "|---|---|---|---|---|"]
        for rank, m in enumerate(table["order"], 1):
            e = table["entries"][m]
            lines.append(f"| {rank} | {m} | {_ci(e)} | {e['ci_over'] or '-'} | "
                         f"{'best' if m == table['best'] else _vs(e)} |")
        lines.append("")
    refused = d["refused"]["message"] or "(no refusal recorded)"
    return "\n".join(lines) + f"The same command with a run over another split: `{refused}`\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "stage-table": stage_table,
    "leaderboard-ml1m": leaderboard_ml1m,
    "melo-status": melo_status,
    "melo-comparison": melo_comparison,
    "main-job-time": main_job_time,
    "main-job-table": main_job_table,
    "claims": claims_table,
}


def files() -> list[Path]:
    out = []
    for name in DOCS:
        p = REPO / name
        out += sorted(p.rglob("*.md")) if p.is_dir() else [p]
    return out


def render(text: str, where: str) -> tuple[str, list[str]]:
    """`text` with every block re-rendered, and the names of the blocks that changed."""
    changed = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"{where}: unknown rendered block {name!r}; known: {', '.join(RENDERERS)}")
        body = RENDERERS[name]()
        if body != m.group("body"):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(sub, text), changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    a = ap.parse_args(argv)
    stale = []
    for path in files():
        text = path.read_text()
        new, changed = render(text, str(path.relative_to(REPO)))
        stale += [f"{path.relative_to(REPO)}: {name}" for name in changed]
        if changed and not a.check:
            path.write_text(new)
    if a.check and stale:
        print("blocks that differ from their results files (run python scripts/render_docs.py):\n  "
              + "\n  ".join(stale))
        return 1
    print(("rewrote " if stale and not a.check else "up to date: ") + (", ".join(stale) or "every block"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
