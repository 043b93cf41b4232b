"""One leaderboard across stages on ML-1M (issue 31 item 3): the tail stage's run (most-popular, EASE,
POSIT over 5 seeds; ``benchmarks/claims_runs.sh``) and a pretrain run of Mult-VAE, EASE (closed
form) and most-popular trained on *that run's saved split* (``--split-dir``), compared by
``flows/compare_flow.py``; then the same comparison with a pretrain run over another split (split
seed 1), which must be refused. Writes ``benchmarks/results/leaderboard_ml1m.json``: the
leaderboard's tables, the refusal's message, the runs and commands.

    python benchmarks/leaderboard_ml1m.py [--runs-dir /work/claims]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "leaderboard_ml1m.json"
WRITES = {"command", "runs", "tables", "split_sha256", "refused", "written", "what"}


def flow(args: list[str], log: Path) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.setdefault("USERNAME", "recsys")
    with open(log, "w") as fh:
        return subprocess.run([sys.executable, *args], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", default="/work/claims")
    a = ap.parse_args()
    runs = Path(a.runs_dir)
    tail = runs / "tail_ml-1m"
    if not (tail / "evidence.json").is_file():
        sys.exit(f"{tail}/evidence.json is missing: run benchmarks/claims_runs.sh first")
    pretrain, other = runs / "pretrain_sg_ml-1m", runs / "pretrain_sg_ml-1m_seed1"
    common = ["flows/pretrain_flow.py", "--no-pylint"]
    if not (pretrain / "evidence.json").is_file():
        proc = flow([*common, "run", "--dataset", "ml-1m", "--protocol", "strong_generalization",
                     "--models", "mostpop,ease,multvae", "--split-dir", str(tail / "split"),
                     "--output-dir", str(pretrain)], runs / "pretrain_sg_ml-1m.log")
        if proc.returncode:
            sys.exit(f"pretrain on the tail split failed: see {runs / 'pretrain_sg_ml-1m.log'}")
    if not (other / "evidence.json").is_file():
        cfg = runs / "split_seed1.yaml"
        cfg.write_text("protocols:\n  strong_generalization:\n    params: {n_heldout_users: 1000, seed: 1}\n")
        proc = flow(["flows/pretrain_flow.py", "--no-pylint", "--config", "cfg", str(cfg), "run", "--dataset", "ml-1m",
                     "--protocol", "strong_generalization", "--models", "mostpop", "--output-dir", str(other)],
                    runs / "pretrain_sg_ml-1m_seed1.log")
        if proc.returncode:
            sys.exit(f"pretrain over another split failed: see {runs / 'pretrain_sg_ml-1m_seed1.log'}")
    out = runs / "compare_ml-1m"
    proc = flow(["flows/compare_flow.py", "--no-pylint", "run", "--runs", f"{tail},{pretrain}", "--metrics",
                 "ndcg@100,recall@100", "--output-dir", str(out)], runs / "compare_ml-1m.log")
    if proc.returncode:
        sys.exit(f"compare failed: see {runs / 'compare_ml-1m.log'}")
    board = json.loads((out / "leaderboard.json").read_text())
    refused = flow(["flows/compare_flow.py", "--no-pylint", "run", "--runs", f"{tail},{other}"],
                   runs / "compare_refused.log")
    lines = [ln for ln in (runs / "compare_refused.log").read_text().splitlines() if "different splits" in ln]
    from recsys.io import write_json

    write_json(RESULT, {
        "what": "leaderboard over the ML-1M tail run and a pretrain run on its saved split; a run over another "
                "split refused",
        "command": "python benchmarks/leaderboard_ml1m.py", "runs": board["runs"],
        "split_sha256": board["split_sha256"],
        "tables": {t: {"best": v["best"], "order": v["order"],
                       "entries": {m: {k: e.get(k) for k in ("mean", "ci", "ci_over", "n_seeds", "n_users", "vs")}
                                   for m, e in v["entries"].items()}}
                   for t, v in board["tables"].items()},
        "refused": {"exit_code": refused.returncode, "message": lines[-1].strip() if lines else None},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
