"""BaM reproduction runs: (dataset, model, selection, switches) each trained to early stop (or its
time budget), written to ``benchmarks/results/bam_<dataset>.json``.

    OMP_NUM_THREADS=1 RECSYS_DATA_HOME=../shared/data nohup python benchmarks/repro_bam.py \\
        --dataset ml-1m --models remi --selections p,l,hard --switches upstream --max-seconds 1400 \\
        --threads 1 > /tmp/bam_repro.log 2>&1 &
    python benchmarks/repro_bam.py --dataset amazon-beauty --models mind,comirec,remi --selections hard,p,l \\
        --switches ours --max-seconds 900

Settings: ``params/bam_<dataset>.yaml`` (split, per-model / per-selection training settings; ML-1M:
all 1,000,209 interactions, no k-core). ``--switches upstream`` turns BaM's own behaviours on
(history items scored 0 at evaluation, validation users redrawn with replacement at every
validation, a sampled negative equal to the positive kept in the softmax, learned positions counted
from the oldest item of a left-aligned window, a stop after more than 15 validations without gain); ``ours`` turns them off (history excluded, one fixed seeded validation set). Every
run also reports its test metrics under the other history rule, so each trained model shows both.

Resumable: a run already in the file with the same configuration is skipped; a run killed mid-way
resumes from its last checkpoint (``--checkpoints``, one folder per run) and ends with the metrics
of an uninterrupted one; a run stopped by its time budget keeps its checkpoints, so the same
command with a larger ``--max-seconds`` continues it where it stopped. The JSON is rewritten atomically after every run. ``--max-seconds`` bounds
each run's training + validation seconds (the loop stops after the validation that crosses it and
keeps the best validation's weights); the record says why each run stopped.

Published targets (BaM's released ML-1M logs, REMI, τ = 1; ``runs/ml1m/BaM_{p,l}_T1/log.txt``):
BaM_p Recall@10/20 0.2331 / 0.3290, NDCG@10/20 0.1254 / 0.1496 (50,000 iterations, best at 34,000);
BaM_l 0.2377 / 0.3354, 0.1317 / 0.1564 (88,000 iterations, best at 72,000).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {
    "ml-1m": {
        "source": "snudatalab/BaM runs/ml1m/BaM_{p,l}_T1/log.txt (REMI backbone, tau = 1, multi-interest loss)",
        "remi/p": {"recall@10": 0.2331, "recall@20": 0.3290, "ndcg@10": 0.1254, "ndcg@20": 0.1496,
                   "iterations": 50000},
        "remi/l": {"recall@10": 0.2377, "recall@20": 0.3354, "ndcg@10": 0.1317, "ndcg@20": 0.1564,
                   "iterations": 88000},
    },
}
# upstream's loop stops when more than `patience` validations in a row did not improve (16 for its 15)
SWITCHES = {"upstream": {"history_zero_upstream": True, "valid_resample": True, "accidental_hits_upstream": True,
                         "positions_upstream": True, "patience": 16},
            "ours": {"history_zero_upstream": False, "valid_resample": False, "accidental_hits_upstream": False,
                     "positions_upstream": False}}
KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def compare(test: dict, target: dict) -> dict:
    """Relative gap to the published value per metric and whether it is within 5 %."""
    out = {}
    for k in KEYS:
        if k in target:
            gap = test[k] / target[k] - 1.0
            out[k] = {"ours": test[k], "published": target[k], "relative_gap": gap, "within_5pct": abs(gap) <= 0.05}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--models", default="remi")
    ap.add_argument("--selections", default="p,l,hard")
    ap.add_argument("--switches", default="upstream", help="comma list of upstream, ours")
    ap.add_argument("--max-seconds", type=float, default=1400.0, help="per run (training + validation)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tau", type=float, default=None)
    ap.add_argument("--baselines", default="mostpop",
                    help="comma list: mostpop and any baseline of the params file (sasrec), trained after the BaM runs")
    ap.add_argument("--out", default=None, help="default benchmarks/results/bam_<dataset>.json")
    ap.add_argument("--checkpoints", default="/tmp/bam_repro_checkpoints")
    ap.add_argument("--progress", default="lines")
    ap.add_argument("--override", default="{}", help='JSON merged into every run\'s config, e.g. \'{"epochs": 2}\'')
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from recsys.io import write_json
    from recsys.models.registry import build
    from recsys.pipeline import bam
    from recsys.pipeline.settings import comma_list

    settings = bam.load_settings(args.dataset)
    out_path = Path(args.out or ROOT / "benchmarks" / "results" / f"bam_{args.dataset}.json")
    doc = json.loads(out_path.read_text()) if out_path.is_file() else {}
    doc.setdefault("runs", {})
    t = time.perf_counter()
    prepared = bam.prepare(args.dataset, settings, output_dir=Path(args.checkpoints) / args.dataset / "split")
    split = prepared.split
    print(f"{args.dataset}: {split.n_users:,} users, {split.n_items:,} items, {split.stats['n_interactions']:,} "
          f"interactions ({time.perf_counter() - t:.1f} s)", flush=True)
    doc.update({
        "what": "BaM (balanced multi-interest learning) reproduction: leave-one-out, full ranking, "
                "item score = max over interests; test = each user's last item given the rest",
        "dataset": args.dataset,
        "protocol": {"name": split.protocol, "params": split.params, "stats": split.stats},
        "published": PUBLISHED.get(args.dataset, {}),
        "switches": SWITCHES,
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "definitions": bam.DEFINITIONS,
    })
    if "baselines" not in doc:
        doc["baselines"] = bam.run_baselines(prepared.path, {**settings, "baselines": {"mostpop": {}}})
        write_json(out_path, doc)
    print("mostpop", {k: round(v, 4) for k, v in doc["baselines"]["mostpop"]["test"].items()}, flush=True)
    sequence_baselines = [b for b in comma_list(args.baselines) if b != "mostpop"]

    for switch in comma_list(args.switches):
        if switch not in SWITCHES:
            raise SystemExit(f"unknown --switches value {switch!r}; choose from {sorted(SWITCHES)}")
        overrides = {**SWITCHES[switch], "max_seconds": args.max_seconds, "progress": args.progress,
                     "device": args.device, **json.loads(args.override)}
        specs = bam.task_specs(settings, args.models, args.selections, tau=args.tau, overrides=overrides)
        for key, spec in specs.items():
            run_key = f"{key}/{switch}"
            prev = doc["runs"].get(run_key)
            model = build(spec["model"], **spec["config"])
            if prev and prev.get("config") == json.loads(json.dumps(model.config.to_dict())):
                print(f"{run_key}: done already (Recall@20 {prev['test']['recall@20']:.4f}), skipped", flush=True)
                continue
            folder = Path(args.checkpoints) / args.dataset / run_key.replace("/", ".")
            model.checkpoints(folder)
            print(f"{run_key}: training (max {args.max_seconds:.0f} s)", flush=True)
            start = time.perf_counter()
            model.fit(split)
            wall = time.perf_counter() - start
            by_rule = {rule: model.evaluate(split, "test", history_zero=rule == "zero").mean()
                       for rule in ("masked", "zero")}
            test = by_rule["zero" if model.config.history_zero_upstream else "masked"]
            record = {
                "model": spec["model"], "selection": spec["selection"], "switches": switch,
                "config": model.config.to_dict(), "test": test, "test_by_history_rule": by_rule,
                "valid_all_users": model.evaluate(split, "valid").mean(),
                "balance": model.interest_balance(split, "test", k=20, seed=model.config.seed),
                "steps": model.steps_, "best_step": model.best_epoch_ * model.config.steps_per_epoch,
                "stop_reason": model.stop_reason_, "wall_seconds": wall,
                "seconds_per_step": sum(h["train_seconds"] for h in model.history_) / max(model.steps_, 1),
                "curve": [{k: h.get(k) for k in ("epoch", "loss", "valid_recall@10", "valid_ndcg@10",
                                                 "train_interest_entropy", "train_seconds", "eval_seconds")}
                          for h in model.history_],
            }
            target = (PUBLISHED.get(args.dataset) or {}).get(key)
            if target:
                record["vs_published"] = compare(test, target)
            doc["runs"][run_key] = record
            write_json(out_path, doc)
            bal = record["balance"]
            print(f"{run_key}: {record['steps']:,} steps ({record['stop_reason']}, best {record['best_step']:,}) "
                  f"test {', '.join(f'{k} {v:.4f}' for k, v in test.items())}; H(selected) "
                  f"{bal['entropy_selected']:.3f} H(best) {bal['entropy_best']:.3f} ({wall:.0f} s)", flush=True)
            if model.stop_reason_ != "max_seconds":  # a budget-stopped run keeps its checkpoints:
                shutil.rmtree(folder, ignore_errors=True)  # rerun with a larger --max-seconds to go on

    for name in sequence_baselines:  # e.g. SASRec on the same split, with the same time budget
        config = {**dict((settings.get("baselines") or {}).get(name) or {}), "max_seconds": args.max_seconds,
                  "progress": args.progress, "device": args.device}
        prev = (doc["baselines"].get(name) or {}).get("config", {})
        if prev and all(prev.get(k) == v for k, v in config.items()):
            print(f"{name}: done already, skipped", flush=True)
            continue
        print(f"{name}: training (max {args.max_seconds:.0f} s)", flush=True)
        doc["baselines"].update(bam.run_baselines(prepared.path, {"baselines": {name: config}}))
        write_json(out_path, doc)
        print(name, {k: round(v, 4) for k, v in doc["baselines"][name]["test"].items()}, flush=True)


if __name__ == "__main__":
    main()
