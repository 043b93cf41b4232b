"""Do the default profile's sequential models learn on small data (issue 34 item 5)? ML-100K,
leave-one-out (k-core 5), the default profile (``params/pretrain_default.yaml``: ML-100K has no
params file of its own), most-popular, GRU4Rec, NARM and SASRec, test HR@10 / NDCG@10 (full
ranking, history masked), one torch thread. Writes ``benchmarks/results/defaults_ml100k.json``
(each model's row as it finishes) and prints each model's NDCG@10 against most-popular's.

    OMP_NUM_THREADS=1 python benchmarks/repro_defaults_ml100k.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODELS = "mostpop,gru4rec,narm,sasrec"


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"dataset": None, "profile": None, "protocol": None, "params": None, "threads": None, "torch": None,
          "load_average": None, "metrics": None, "stats": None,
          "models": {"*": {"config", "test", "epochs", "best_epoch", "seconds", "ndcg@10_over_mostpop"}}}


def main(models: str = MODELS, out_path: Path | None = None) -> dict:
    import torch

    from recsys.io import write_json
    from recsys.pipeline import pretrain as pt

    torch.set_num_threads(1)
    section = pt.protocol_settings(pt.load_settings("ml-100k"), "leave_one_out", models)
    out_path = out_path or REPO / "benchmarks" / "results" / "defaults_ml100k.json"
    doc = {"dataset": "ml-100k", "profile": "params/pretrain_default.yaml", "protocol": "leave_one_out",
           "params": section["params"], "threads": 1, "torch": torch.__version__, "load_average": os.getloadavg(),
           "metrics": "test HR@10 / NDCG@10 of seq[-1] given seq[:-1], full ranking, history masked", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pt.prepare("ml-100k", section, output_dir=Path(tmp) / "split")
        doc["stats"] = {k: prepared.stats[k] for k in ("n_users", "n_items", "n_interactions") if k in prepared.stats}
        for name, cfg in section["models"].items():
            start = time.perf_counter()
            r = pt.train_and_evaluate(prepared.path, name, cfg, Path(tmp) / name)
            doc["models"][name] = {"config": r["config"], "test": r["test"], "epochs": r["epochs"],
                                   "best_epoch": r["best_epoch"], "seconds": round(time.perf_counter() - start, 1)}
            pop = doc["models"].get("mostpop", {}).get("test", {}).get("ndcg@10")
            if pop:
                doc["models"][name]["ndcg@10_over_mostpop"] = round(r["test"]["ndcg@10"] / pop, 3)
            write_json(out_path, doc)
            print(f"{name}: NDCG@10 {r['test']['ndcg@10']:.4f} HR@10 {r['test']['hit@10']:.4f} "
                  f"({doc['models'][name].get('ndcg@10_over_mostpop')}x most-popular; {r['epochs']} epochs, "
                  f"best {r['best_epoch']}; {doc['models'][name]['seconds']} s)", flush=True)
    return doc


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/defaults_ml100k.json)")
    a = ap.parse_args()
    main(a.models, a.out)
