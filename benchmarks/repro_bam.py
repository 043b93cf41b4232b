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

``--switches upstream_v1`` is the first upstream set (``SWITCHES_V1``: history items scored 0 and
validation users redrawn only; a sampled negative equal to the positive removed and positions
counted from the newest item as in ours, patience 15), kept as a named variant: its runs are
``<model>/<selection>/upstream_v1``, each with ``note_v1``. ``--continue-as NAME`` resumes each
budget-stopped run ``<model>/<selection>/<switches>`` from its checkpoint (with a larger
``--max-seconds``) and records the result as ``<model>/<selection>/<switches>_NAME`` beside it
(with a ``note`` and ``continued_from``), e.g. ``--switches upstream_v1 --continue-as to_patience``.
The file is read first and only the runs computed now are replaced; every run records the
``command`` that wrote it. Every key written is declared in ``WRITES`` (checked by
``benchmarks/check_results_keys.py``).

Resumable: a run already in the file with the same configuration is skipped (config fields added
since it ran count as the same while they hold their default); a run killed mid-way
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
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _provenance
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
# the first upstream set (before accidental_hits_upstream / positions_upstream existed: both as ours;
# patience as ours); its rows stay comparable, so it stays a variant that can be rerun
SWITCHES_V1 = {"history_zero_upstream": True, "valid_resample": True}
NOTE_V1 = ("earlier upstream switches: history items scored 0 and validation users redrawn only; positions counted "
           "from the newest item and accidental hits removed as in our defaults, patience 15")
VARIANTS = {**SWITCHES, "upstream_v1": SWITCHES_V1}
KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")

# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
RUN = {"model", "selection", "switches", "config", "test", "test_by_history_rule", "valid_all_users", "balance",
       "steps", "best_step", "stop_reason", "wall_seconds", "seconds_per_step", "curve", "vs_published", "command"}
RUN_V1 = RUN | {"note_v1"}
CONTINUED = {"note", "continued_from"}
BASELINE = {"model", "config", "test", "train_seconds", "protocol", "per_user"}  # recsys.pipeline.bam.run_baselines
WRITES = {
    "what": None, "dataset": None, "protocol": None, "published": None, "switches": None, "switches_v1": None,
    "torch_threads": None, "torch": None, "definitions": None,
    "baselines": {"*": BASELINE},
    # <model>/<selection>/<variant>[_<continued as>]; the longer variant first (upstream_v1 before upstream)
    "runs": {pattern: spec for v in sorted(VARIANTS, key=len, reverse=True)
             for pattern, spec in ((f"*/*/{v}", RUN_V1 if v == "upstream_v1" else RUN),
                                   (f"*/*/{v}_*", (RUN_V1 if v == "upstream_v1" else RUN) | CONTINUED))},
}


def compare(test: dict, target: dict) -> dict:
    """Relative gap to the published value per metric and whether it is within 5 %."""
    out = {}
    for k in KEYS:
        if k in target:
            gap = test[k] / target[k] - 1.0
            out[k] = {"ours": test[k], "published": target[k], "relative_gap": gap, "within_5pct": abs(gap) <= 0.05}
    return out


def same_config(prev: dict, now: dict, defaults: dict) -> bool:
    """Whether a recorded run's config is `now`'s: a field of `now` the record lacks (added to the
    model since) counts as the same while it holds its default, the behaviour the run had."""
    missing = object()
    return prev == {k: v for k, v in now.items() if k in prev or defaults.get(k, missing) != v}


def config_defaults(model) -> dict:
    from dataclasses import MISSING, fields

    return json.loads(json.dumps({f.name: f.default for f in fields(type(model.config)) if f.default is not MISSING}))


def continued_note(base_key: str, prev: dict | None, max_seconds: float, stop_reason: str) -> str:
    start = f"its {prev['steps']:,}-step checkpoint" if prev and prev.get("steps") else "its last checkpoint"
    until = {"patience": "patience stopped it", "max_seconds": "its time budget stopped it"}.get(
        stop_reason, f"it stopped ({stop_reason})")
    return f"the {base_key} run resumed from {start} with --max-seconds {max_seconds:g} and trained until {until}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--models", default="remi")
    ap.add_argument("--selections", default="p,l,hard")
    ap.add_argument("--switches", default="upstream", help="comma list of upstream, ours, upstream_v1")
    ap.add_argument("--continue-as", default=None, metavar="NAME",
                    help="resume each <key>/<switches> run from its checkpoint and record it as <key>/<switches>_NAME")
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
    if args.continue_as is not None and not args.continue_as.replace("_", "").isalnum():
        raise SystemExit(f"--continue-as {args.continue_as!r}: letters, digits and _ only")
    for switch in [x.strip() for x in args.switches.split(",") if x.strip()]:
        if switch not in VARIANTS:
            raise SystemExit(f"unknown --switches value {switch!r}; choose from {sorted(VARIANTS)}")
        if args.continue_as is not None and f"{switch}_{args.continue_as}" in VARIANTS:
            raise SystemExit(f"--continue-as {args.continue_as}: {switch}_{args.continue_as} is a variant's name")

    import torch

    torch.set_num_threads(args.threads)
    from recsys.io import write_json
    from recsys.models.registry import build
    from recsys.pipeline import bam
    from recsys.pipeline.settings import comma_list

    from _provenance import invocation

    command = invocation()
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
        "switches": SWITCHES,  # upstream_v1's: switches_v1
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "definitions": bam.DEFINITIONS,
    })
    if "upstream_v1" in comma_list(args.switches) or any(k.split("/")[-1].startswith("upstream_v1") for k in doc["runs"]):
        doc["switches_v1"] = SWITCHES_V1
    if "baselines" not in doc:
        doc["baselines"] = bam.run_baselines(prepared.path, {**settings, "baselines": {"mostpop": {}}})
        write_json(out_path, doc)
    print("mostpop", {k: round(v, 4) for k, v in doc["baselines"]["mostpop"]["test"].items()}, flush=True)
    sequence_baselines = [b for b in comma_list(args.baselines) if b != "mostpop"]

    for switch in comma_list(args.switches):
        # a variant sets what it names; every other switch as ours (upstream_v1 predates two of them)
        overrides = {**SWITCHES["ours"], **VARIANTS[switch], "max_seconds": args.max_seconds,
                     "progress": args.progress, "device": args.device, **json.loads(args.override)}
        specs = bam.task_specs(settings, args.models, args.selections, tau=args.tau, overrides=overrides)
        for key, spec in specs.items():
            base_key = f"{key}/{switch}"  # its checkpoints: a continued run resumes from them
            run_key = base_key if args.continue_as is None else f"{base_key}_{args.continue_as}"
            prev = doc["runs"].get(run_key)
            model = build(spec["model"], **spec["config"])
            if prev and same_config(prev.get("config") or {}, json.loads(json.dumps(model.config.to_dict())),
                                    config_defaults(model)):
                print(f"{run_key}: done already (Recall@20 {prev['test']['recall@20']:.4f}), skipped", flush=True)
                continue
            folder = Path(args.checkpoints) / args.dataset / base_key.replace("/", ".")
            if args.continue_as is not None and not folder.is_dir():
                print(f"{run_key}: no checkpoint of {base_key} in {folder} to continue from, skipped", flush=True)
                continue
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
            record["command"] = command
            if switch == "upstream_v1":
                record["note_v1"] = NOTE_V1
            if args.continue_as is not None:
                record["continued_from"] = base_key
                record["note"] = continued_note(base_key, doc["runs"].get(base_key), args.max_seconds,
                                                model.stop_reason_)
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
