"""Sequential backbones on an Amazon S3-Rec dataset (Beauty or Toys): leave-one-out, full ranking
with the history masked, HR / NDCG @10 and @20, against most-popular on the same split.

    RECSYS_DATA_HOME=../shared/data python benchmarks/repro_seq_amazon.py --dataset amazon-beauty \
        --models sasrec,gru4rec,narm --max-seconds 600

Settings: the leave_one_out section of params/pretrain_amazon-digital-music.yaml (the quick
profile: length 50; SASRec dropout 0.5), each model with a wall-clock budget (``max_seconds``; the
loop keeps the best validation epoch). Writes ``benchmarks/results/seq_<dataset>.json`` atomically,
one record per model (rerunning skips finished models with the same settings).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"dataset": None, "protocol": None, "stats": None, "threads": None, "torch": None,
          "models": {"*": {"config_in", "test", "valid", "epochs", "best_epoch", "train_seconds", "wall_seconds"}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="amazon-beauty", choices=["amazon-beauty", "amazon-toys"])
    ap.add_argument("--models", default="sasrec,gru4rec,narm")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from recsys.io import write_json

    import torch

    torch.set_num_threads(a.threads)
    from recsys.pipeline import pretrain as pt
    from recsys.pipeline.settings import merged_settings

    settings = merged_settings(ROOT / "params" / "pretrain_amazon-digital-music.yaml", None)
    section = pt.protocol_settings(settings, "leave_one_out", "mostpop," + a.models)
    out_dir = ROOT / "outputs" / "repro" / f"seq_{a.dataset}"
    prepared = pt.prepare(a.dataset, section, output_dir=out_dir / "split")
    path = ROOT / "benchmarks" / "results" / f"seq_{a.dataset}.json"
    record = json.loads(path.read_text()) if path.exists() else {"models": {}}
    record.update(dataset=a.dataset, protocol="leave_one_out (k_core 5), full ranking, history masked",
                  stats=prepared.stats, threads=a.threads, torch=torch.__version__)
    for name, cfg in section["models"].items():
        cfg = {**cfg, "device": "cpu"} | ({"max_seconds": a.max_seconds, "progress": "lines"} if name != "mostpop" else {})
        old = record["models"].get(name)
        if old and old.get("config_in") == cfg:
            print(f"{name}: done before, skipped")
            continue
        t = time.perf_counter()
        r = pt.train_and_evaluate(prepared.path, name, cfg, out_dir / name)
        record["models"][name] = {"config_in": cfg, "test": r["test"], "valid": r["valid"], "epochs": r["epochs"],
                                  "best_epoch": r["best_epoch"], "train_seconds": r["train_seconds"],
                                  "wall_seconds": round(time.perf_counter() - t, 1)}
        print(f"{name}: test {r['test']}  epochs {r['epochs']} best {r['best_epoch']}", flush=True)
        write_json(path, record, indent=1)


if __name__ == "__main__":
    main()
