"""Sequential models on ML-1M 5-core leave-one-out, trained to early stop, against most-popular.

    OMP_NUM_THREADS=1 RECSYS_DATA_HOME=../shared/data python benchmarks/repro_seq_ml1m.py \\
        --models sasrec,gru4rec,narm --max-seconds 4800 --threads 1

Settings: the ``protocols.leave_one_out`` section of ``params/pretrain_ml-1m.yaml`` (split
parameters and each model's configuration), plus ``--max-seconds`` (each model's budget of
training + validation seconds; the loop stops after the epoch that crosses it and keeps the best
validation epoch's weights). Full ranking over all 3,416 items with the user's history excluded;
HR@10 / NDCG@10 (and @20) on the test item given seq[:-1].

Writes ``benchmarks/results/seq_ml1m.json`` atomically after each model: per model the config,
test metrics, epochs run, best epoch, wall seconds to the best epoch and in all, why training
stopped, the validation curve. Resumable: a model already in the file with the same settings is
skipped; a model killed mid-way resumes from its last epoch checkpoint (``--checkpoints``).

References: BERT4Rec on this split, HR@10 / NDCG@10 0.2821 / 0.1516 (Petrov & Macdonald, RecSys
2022) and 0.2843 / 0.1537 (Klenitskiy & Vasilev, RecSys 2023), who report SASRec trained with this
full-softmax CE loss ("SASRec+") clearly above BERT4Rec on ML-1M.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"bert4rec": {"Petrov & Macdonald 2022": {"hit@10": 0.2821, "ndcg@10": 0.1516},
                          "Klenitskiy & Vasilev 2023": {"hit@10": 0.2843, "ndcg@10": 0.1537}}}


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what": None, "protocol": None, "torch_threads": None, "published": None,
          "models": {"mostpop": {"test"},
                     "*": {"settings", "config", "test", "test_summary", "epochs", "best_epoch", "stopped_by",
                           "seconds_to_best_epoch", "train_and_eval_seconds", "wall_seconds_this_process",
                           "seconds_per_epoch", "curve"}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sasrec,gru4rec,narm")
    ap.add_argument("--max-seconds", type=float, default=4800.0, help="per model (training + validation)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--params", default=str(ROOT / "params" / "pretrain_ml-1m.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "seq_ml1m.json"))
    ap.add_argument("--checkpoints", default="/tmp/seq_ml1m_checkpoints")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch
    import yaml

    torch.set_num_threads(args.threads)
    from recsys.data import load_dataset
    from recsys.io import write_json
    from recsys.models.baselines import MostPopular
    from recsys.models.registry import build
    from recsys.protocols import leave_one_out

    section = yaml.safe_load(Path(args.params).read_text())["protocols"]["leave_one_out"]
    out_path = Path(args.out)
    import json

    doc = json.loads(out_path.read_text()) if out_path.is_file() else {}
    doc.setdefault("models", {})
    t = time.perf_counter()
    split = leave_one_out(load_dataset("ml-1m").df, **(section.get("params") or {}))
    print(f"ml-1m: {split.n_users:,} users, {split.n_items:,} items, {split.stats['n_interactions']:,} interactions "
          f"({time.perf_counter() - t:.1f} s)", flush=True)
    doc.update({
        "what": "sequential models, ML-1M leave-one-out (5-core), full ranking with the user's history excluded",
        "protocol": {"name": split.protocol, "params": split.params, "stats": split.stats, "meta": split.meta},
        "torch_threads": args.threads,
        "published": PUBLISHED,
    })

    history = (split["train"] + split["valid"]).tocsr()
    pop = MostPopular(device=args.device).fit(history)
    doc["models"]["mostpop"] = {"test": pop.evaluate(history, split["test"], recall_denominator="n", ks=(10, 20),
                                                     metrics=("hit", "ndcg")).mean()}
    write_json(out_path, doc)

    for name in [m for m in args.models.split(",") if m]:
        config = dict(section["models"].get(name) or {})
        config.update(max_seconds=args.max_seconds, device=args.device, progress="lines")
        settings = {"config": config, "threads": args.threads}
        done = doc["models"].get(name)
        if done and done.get("settings") == json.loads(json.dumps(settings)):
            print(f"{name}: already in {out_path} with these settings, skipped", flush=True)
            continue
        model = build(name, **config).checkpoints(Path(args.checkpoints) / name)
        start = time.perf_counter()
        model.fit(split)
        wall = time.perf_counter() - start
        test = model.evaluate(split, "test", ks=(10, 20))
        h = model.history_
        seconds = [r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in h]
        budget_used = sum(seconds)
        best = model.best_epoch_
        stopped = getattr(model, "stop_reason_", None)
        doc["models"][name] = {
            "settings": settings,
            "config": model.config.to_dict(),
            "test": test.mean(),
            "test_summary": test.summary(),
            "epochs": len(h),
            "best_epoch": best,
            "stopped_by": stopped,
            "seconds_to_best_epoch": round(sum(seconds[:best]), 1),
            "train_and_eval_seconds": round(budget_used, 1),
            "wall_seconds_this_process": round(wall, 1),
            "seconds_per_epoch": round(budget_used / max(len(h), 1), 1),
            "curve": [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in h],
        }
        write_json(out_path, doc)
        m = test.mean()
        print(f"{name}: HR@10 {m['hit@10']:.4f} NDCG@10 {m['ndcg@10']:.4f}; {len(h)} epochs (best {best}, "
              f"stopped by {stopped}), {sum(seconds[:best]) / 60:.1f} min to the best epoch; wrote {out_path}", flush=True)

    print("| model | HR@10 | NDCG@10 | HR@20 | NDCG@20 | epochs | best | min to best |\n|---|---|---|---|---|---|---|---|")
    for name, r in doc["models"].items():
        m = r["test"]
        extra = (f"{r['epochs']} | {r['best_epoch']} | {r['seconds_to_best_epoch'] / 60:.1f}" if "epochs" in r else " | | ")
        print(f"| {name} | {m['hit@10']:.4f} | {m['ndcg@10']:.4f} | {m['hit@20']:.4f} | {m['ndcg@20']:.4f} | {extra} |")

if __name__ == "__main__":
    main()
