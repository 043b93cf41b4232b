"""Where MELO's paper-length runs stand (issue 34 item 1): per dataset, the (backbone, method,
seed) rows ``benchmarks/repro_meta.py --tag _paper`` has written, the rows left, the measured
seconds per run by method and the hours the rest needs at that rate on one thread. Writes
``benchmarks/results/meta_paper_status.json`` and prints the plan docs/reproduction.md quotes.

    python benchmarks/repro_meta_status.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = ("ml-100k", "amazon-digital-music")
BACKBONES = ("gru4rec", "narm", "sasrec", "bert4rec")
METHODS = ("basic", "maml_pp", "melo")
SEEDS = (0, 1, 2)


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {**{ds: {"planned", "done", "left", "per_method", "hours_left_estimate", "estimate_basis"} for ds in DATASETS},
          "cost_model_block_flops": None, "amazon_over_ml100k_per_block": None}


def block_flops() -> dict:
    """The cost model's FLOPs of one block of MELO meta-iterations per dataset and transformer
    backbone (recsys.training.cost; the formula covers SASRec / BERT4Rec), at the paper settings."""
    import tempfile

    import yaml

    from recsys.models.registry import get_model
    from recsys.pipeline import meta
    from recsys.training.cost import DataShape

    out = {}
    for ds in DATASETS:
        settings = meta.load_settings(ds, yaml.safe_load((REPO / f"params/repro/meta_paper_{ds}.yaml").read_text()))
        with tempfile.TemporaryDirectory() as tmp:
            split = meta.prepare(ds, settings, output_dir=Path(tmp) / "split").split
        ptr, train = split.arrays["seq_indptr"], split.arrays["train_users"]
        shape = DataShape(len(train), split.n_items, int((ptr[train + 1] - ptr[train]).sum()))
        for bb in ("sasrec", "bert4rec"):
            config = get_model("melo").Config.from_dict(meta.run_specs(settings, bb, "melo")[f"{bb}/melo"]["config"])
            out[f"{ds}/{bb}"] = get_model("melo").epoch_cost(config, shape).flops
    return out


def status(results_dir: Path) -> dict:
    out = {}
    for ds in DATASETS:
        path = results_dir / f"meta_{ds}_paper.json"
        runs = json.loads(path.read_text())["runs"] if path.is_file() else {}
        planned = [f"{b}/{m}/seed{s}" for s in SEEDS for b in BACKBONES for m in METHODS]
        done = [k for k in planned if k in runs]
        per_method = {}
        for m in METHODS:
            secs = [runs[k]["train_seconds"] + runs[k].get("eval_seconds", 0.0) for k in done if f"/{m}/" in k]
            iters = [runs[k].get("iterations") or runs[k].get("epochs") for k in done if f"/{m}/" in k]
            per_method[m] = {"runs_done": len(secs), "mean_seconds": round(sum(secs) / len(secs), 1) if secs else None,
                             "iterations": iters,
                             "stop_reasons": sorted({runs[k].get("stop_reason") for k in done if f"/{m}/" in k} - {None})}
        left = [k for k in planned if k not in runs]
        known = [v["mean_seconds"] for v in per_method.values() if v["mean_seconds"]]
        fallback = max(known) if known else None
        left_seconds = sum((per_method[k.split("/")[1]]["mean_seconds"] or fallback or 0.0) for k in left)
        out[ds] = {"planned": len(planned), "done": len(done), "left": len(left), "per_method": per_method,
                   "hours_left_estimate": round(left_seconds / 3600, 1) if known else None,
                   "estimate_basis": "mean measured seconds per finished run of the same method (one thread, "
                                     "2-core machine shared with development); the other dataset's rate unused"}
    return out


if __name__ == "__main__":
    from recsys.io import write_json

    res = status(REPO / "benchmarks" / "results")
    flops = block_flops()
    res["cost_model_block_flops"] = flops
    res["amazon_over_ml100k_per_block"] = {bb: round(flops[f"amazon-digital-music/{bb}"] / flops[f"ml-100k/{bb}"], 3)
                                           for bb in ("sasrec", "bert4rec")}
    write_json(REPO / "benchmarks" / "results" / "meta_paper_status.json", res)
    print(f"cost model, one block on Amazon / on ML-100K: {res['amazon_over_ml100k_per_block']}")
    for ds in DATASETS:
        s = res[ds]
        rate = ", ".join(f"{m} {v['mean_seconds']} s ({v['runs_done']} runs)" for m, v in s["per_method"].items())
        print(f"{ds}: {s['done']}/{s['planned']} runs done; per run: {rate}; about {s['hours_left_estimate']} h left")
