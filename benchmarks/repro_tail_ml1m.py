"""Reproduce the tail stage on ML-1M (README table): every method x 3 seeds on the strong
generalisation split of ``params/tail_ml-1m.yaml``; mean +- std over seeds.

    RECSYS_DATA_HOME=../shared/data python benchmarks/repro_tail_ml1m.py [--methods ease,posit] [--device cuda]

Writes ``benchmarks/results/tail_ml1m.json`` (every run's metrics, config, curve and the
protocol) and prints the Markdown table. About 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.io import json_default, write_json  # noqa: E402
from recsys.pipeline import tail  # noqa: E402


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"dataset", "stats", "rows", "runs", "seconds"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=None)
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--output-dir", default=str(ROOT / "outputs" / "repro" / "tail_ml1m"))
    ap.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "tail_ml1m.json"))
    args = ap.parse_args()
    override = {"device": args.device} if args.device else {}
    settings = tail.load_settings("ml-1m", override)
    start = time.perf_counter()
    out = tail.run_all("ml-1m", settings, methods=args.methods, seeds=args.seeds, output_dir=args.output_dir,
                       progress=lambda s: print(s, flush=True))
    path = Path(args.result)
    previous = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    runs = {**previous.get("runs", {}), **{f"{m}/seed{s}": r for (m, s), r in out["results"].items()}}
    rows = tail.aggregate({(r["method"], r["seed"]): r for r in runs.values()})
    write_json(path, json.loads(json.dumps({"dataset": "ml-1m", "stats": out["stats"], "rows": rows, "runs": runs,
                                            "seconds": time.perf_counter() - start}, default=json_default)))
    print(tail.format_table(rows))


if __name__ == "__main__":
    main()
