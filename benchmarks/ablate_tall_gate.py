"""TALL ablation: gate source (validation items / a slice of the training items) x adaptive weights on / off.

    RECSYS_DATA_HOME=../shared/data python benchmarks/ablate_tall_gate.py [--dataset amazon-digital-music]
        [--out benchmarks/results/tall_gate_ablation_<dataset>.json] [--output-dir outputs/ablate_tall_gate]

Four TALL runs with the dataset's ``tall`` settings from ``params/tall_<dataset>.yaml``, on the
same split (the file's protocol and seed), differing only in ``gate_source`` and ``adaptive``.
Prints NDCG@20 overall and per mainstream group and writes every result (config, protocol,
best epoch) to ``--out``. About 5 minutes on 2 CPU cores for the embedded dataset; on ML-1M
(100 experts) each run takes 1-2 h.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name -> the switches changed from the dataset's `tall` entry
    "tall": {"gate_source": "valid", "adaptive": True},
    "tall_no_adaptive": {"gate_source": "valid", "adaptive": False},
    "tall_train_slice": {"gate_source": "train_slice", "adaptive": True},
    "tall_train_slice_no_adaptive": {"gate_source": "train_slice", "adaptive": False},
}


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"dataset", "settings_file", "variants", "results", "stats", "wall_seconds"}


def variant_settings(dataset: str) -> dict:
    """The dataset's stage settings with its ``tall`` entry copied into the four VARIANTS (checked)."""
    from recsys.pipeline import local as lc

    settings = lc.load_settings(dataset)
    tall = dict(settings["methods"].get("tall") or {})
    tall.pop("model", None)
    settings["methods"] = {name: {**tall, "model": "tall", **switches} for name, switches in VARIANTS.items()}
    return lc.select_methods(settings, ",".join(VARIANTS))


def main() -> None:
    from recsys.io import write_json
    from recsys.pipeline import local as lc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="amazon-digital-music")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/tall_gate_ablation_<dataset>.json")
    ap.add_argument("--output-dir", default=str(ROOT / "outputs" / "ablate_tall_gate"))
    args = ap.parse_args()

    settings = variant_settings(args.dataset)
    t0 = time.perf_counter()
    run = lc.run_all(args.dataset, settings, output_dir=Path(args.output_dir) / args.dataset)
    results = run["results"]
    print(lc.format_table(lc.group_table(results)))
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"tall_gate_ablation_{args.dataset}.json")
    write_json(out, {"dataset": args.dataset, "settings_file": f"params/tall_{args.dataset}.yaml",
                     "variants": VARIANTS, "results": results, "stats": run["stats"],
                     "wall_seconds": round(time.perf_counter() - t0, 1)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
