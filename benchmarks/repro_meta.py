"""Reproduction runs of the meta stage (MELO): every backbone x {global mean, basic, MAML++,
MELO} (+ MAML for one backbone) x seeds, per dataset, mean ± std over seeds.

Settings: ``params/meta_<dataset>.yaml`` (the small-but-real profile; ``--config FILE`` merges a
YAML over it, ``--max-seconds`` caps each run's training + validation). Records: one per
(dataset, backbone, method, seed), written atomically to ``benchmarks/results/meta_<dataset>.json``
after each run; a rerun skips the records already there (same settings), so a killed run resumes
where it stopped. The split is rebuilt (deterministic) under ``--work-dir``.

    OMP_NUM_THREADS=1 nohup python benchmarks/repro_meta.py --datasets amazon-digital-music,ml-100k \\
        --threads 1 > /tmp/meta_repro.log 2>&1 &

MELO at the paper's length (params/repro/meta_paper_<dataset>.yaml; rows in meta_<dataset>_paper.json):

    OMP_NUM_THREADS=1 nohup python benchmarks/repro_meta.py --datasets ml-100k,amazon-digital-music \
        --methods basic,maml_pp,melo --maml-backbone '' --config 'params/repro/meta_paper_{dataset}.yaml' \
        --tag _paper --checkpoint-dir /tmp/meta_paper_ckpt > /tmp/meta_paper.log 2>&1 &
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMPACT_HISTORY = ("epoch", "loss", "valid_rmse", "valid_mae", "iteration", "inner_lr_mean", "train_seconds",
                   "eval_seconds")


def digest(obj) -> str:
    from recsys.training.checkpoints import without_added_fields

    obj = without_added_fields(obj)  # a later option at its neutral value keeps finished rows
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_records(path: Path, fingerprint: str) -> dict:
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        print(f"{path} is unreadable; starting it afresh", flush=True)
        return {}
    if doc.get("fingerprint") != fingerprint:
        print(f"{path} was written with other settings; starting it afresh (the old file is replaced)", flush=True)
        return {}
    return dict(doc.get("runs") or {})


def compact(result: dict) -> dict:
    keep = {k: v for k, v in result.items() if k not in ("history", "config", "definitions", "files")}
    keep["history"] = [{k: h[k] for k in COMPACT_HISTORY if k in h} for h in result.get("history") or []]
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="amazon-digital-music,ml-100k")
    ap.add_argument("--backbones", default="gru4rec,narm,sasrec,bert4rec")
    ap.add_argument("--methods", default="global_mean,basic,maml_pp,melo")
    ap.add_argument("--maml-backbone", default="bert4rec", help="the one backbone MAML also runs on ('' = none)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="cap of each run's training + validation seconds (default: the params files')")
    ap.add_argument("--config", default=None,
                    help="YAML merged over every dataset's params file ('{dataset}' in the path = the dataset)")
    ap.add_argument("--tag", default="", help="results file suffix: meta_<dataset><tag>.json (e.g. _paper)")
    ap.add_argument("--checkpoint-dir", default=None,
                    help="keep each run's loop checkpoints here, so a run killed mid-way resumes from its last block")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--work-dir", default="/tmp/meta_repro")
    a = ap.parse_args()

    import torch
    import yaml

    from recsys.io import write_json
    from recsys.pipeline import meta
    from recsys.pipeline.settings import comma_list, deep_merge

    torch.set_num_threads(a.threads)
    seeds = meta.parse_seeds(a.seeds)
    for dataset in comma_list(a.datasets):
        override = yaml.safe_load(Path(a.config.format(dataset=dataset)).read_text()) if a.config else {}
        settings = meta.load_settings(dataset, override)
        if a.max_seconds is not None:
            settings = deep_merge(settings, {"meta": {"max_seconds": a.max_seconds}})
            if "basic" in settings["methods"]:
                settings["methods"]["basic"] = {**(settings["methods"]["basic"] or {}), "max_seconds": a.max_seconds}
        methods = comma_list(a.methods) + (["maml"] if a.maml_backbone else [])
        specs = meta.run_specs(settings, a.backbones, methods)
        specs = {k: s for k, s in specs.items() if s["method"] != "maml" or s["backbone"] == a.maml_backbone}
        runs = meta.run_list(specs, seeds)
        # seed-major order: a partial file holds every configuration of the first seeds
        runs.sort(key=lambda ks: (ks[1], meta._order(ks[0])))
        out = Path(a.results_dir) / f"meta_{dataset}{a.tag}.json"
        fingerprint = digest({"settings": settings, "specs": specs, "device": a.device, "threads": a.threads})
        records = load_records(out, fingerprint)
        t0 = time.perf_counter()
        prepared = meta.prepare(dataset, settings, output_dir=Path(a.work_dir) / dataset / "split")
        print(f"[{dataset}] {prepared.stats['n_users']:,} users ({prepared.stats['n_test_users']} test), "
              f"{prepared.stats['n_items']:,} items; {meta.rating_table(prepared.stats)}; "
              f"{len(runs)} runs, {sum(f'{k}/seed{s}' in records for k, s in runs)} done", flush=True)

        def save(status: str) -> None:
            results = {(r["key"], r["seed"]): r for r in records.values()}
            write_json(out, {
                "dataset": dataset, "status": status, "fingerprint": fingerprint, "settings": settings,
                "stats": prepared.stats, "device": a.device, "threads": a.threads, "torch": torch.__version__,
                "load_average": os.getloadavg(), "definitions": meta.DEFINITIONS,
                "runs": records, "rows": meta.aggregate(results) if results else [],
                "command": " ".join(sys.argv),
            })

        for key, seed in runs:
            name = f"{key}/seed{seed}"
            if name in records:
                continue
            start = time.perf_counter()
            result = meta.run_one(prepared.path, key, specs[key], seed,
                                  Path(a.work_dir) / dataset / key.replace("/", "_") / f"seed{seed}",
                                  device=a.device, save_model=False,
                                  checkpoint_dir=Path(a.checkpoint_dir) / dataset if a.checkpoint_dir else None)
            records[name] = compact(result)
            save("running")
            print(f"[{dataset}] {name}: test RMSE {result['test']['rmse']:.4f} MAE {result['test']['mae']:.4f} "
                  f"(valid {result['valid']['rmse']:.4f}; {result.get('iterations') or result.get('epochs') or 0} "
                  f"iterations/epochs, stop {result.get('stop_reason')}; {time.perf_counter() - start:.0f} s)", flush=True)
        save("done")
        results = {(r["key"], r["seed"]): r for r in records.values()}
        print(f"[{dataset}] done in {time.perf_counter() - t0:.0f} s\n" + meta.format_table(meta.aggregate(results)),
              flush=True)


if __name__ == "__main__":
    main()
