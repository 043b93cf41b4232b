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
    return (f"{_minutes(d['wall_seconds'])} on {d['cpu_cores']} CPU cores from launch to the printed table "
            f"(load average {d['load_average_before'][0]:.1f} when it started; `benchmarks/main_job.py`, "
            f"`benchmarks/results/main_job.json`)\n")


def main_job_table() -> str:
    d = _load("main_job.json")
    tables = d["evidence"]["metrics"]
    ref = d["evidence"]["reference"]
    lines = ["| method | seeds | NDCG@20 [95% CI] | low [95% CI] | med-low | medium | med-high | high [95% CI] | "
             f"vs {ref}: overall | vs {ref}: low | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        m = r["method"]
        overall, low, high = (tables.get(k, {}).get(m) for k in ("ndcg@20", "ndcg@20 (low)", "ndcg@20 (high)"))
        lines.append(f"| {MAIN_LABELS.get(m, m)} | {r.get('seeds', 1)} | {_ci(overall)} | {_ci(low)} | "
                     f"{r['med-low']:.4f} | {r['medium']:.4f} | {r['med-high']:.4f} | {_ci(high)} | {_vs(overall)} | "
                     f"{_vs(low)} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def claims_table() -> str:
    d = _load("claims.json")
    lines = ["| claim | metric | ours [95% CI] | reference [95% CI] | difference | Holm-adjusted p | unit | at 0.05 |",
             "|---|---|---|---|---|---|---|---|"]
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
                     f"{n} | {'**significant**' if c['significant'] else 'not significant'} |")
    for p in d.get("pending", []):
        lines.append(f"| pending: `{p['run']}` | | | | | | | not yet run |")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
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
