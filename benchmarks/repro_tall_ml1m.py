"""Reproduce the local-stage table on ML-1M (LFT / TALL's protocol) with each method's published settings.

    RECSYS_DATA_HOME=/path/to/data python benchmarks/repro_tall_ml1m.py [--methods vae,wl,enlft,tall]
        [--out benchmarks/results/tall_ml1m.json] [--run-dir outputs/repro/tall_ml1m]
        [--shards N [--only-shards 0,1]]

Settings: ``params/tall_ml-1m.yaml``. Protocol: iterative 10-core, random 70/10/20 split of all
interactions (seed 0), every user >= 1 validation and test item; full ranking with training items
masked; P / R / NDCG @ {1, 5, 10, 20} with recall denominator |test|; NDCG@20 per mainstream group
(MS_similarity, 5 equal groups low -> high). Results are merged into ``--out`` after *each* method,
so a long run that is interrupted keeps what finished; within a sharded method (``--shards``)
every finished shard is kept too, and a rerun with the same settings reuses it; ``--only-shards``
runs some shards now (the rest in another session or on another machine with the same run dir),
and for LFT evaluates the users done so far against WL. Published
NDCG@20 (LFT's notebooks) is printed beside ours.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PUBLISHED = {  # NDCG@20: overall, then low -> high mainstream (algorithms.md B-8..B-12)
    "vae": (0.3153, [0.2056, 0.2666, 0.2915, 0.3563, 0.4566]),
    "wl": (0.3190, [0.2312, 0.2731, 0.2916, 0.3535, 0.4456]),
    "loca": (0.3230, [0.2405, 0.2767, 0.2915, 0.3514, 0.4549]),
    "lft": (0.3372, [0.2548, 0.2882, 0.3055, 0.3671, 0.4706]),
    "enlft": (0.3328, [0.2537, 0.2836, 0.3023, 0.3622, 0.4625]),
}


def main() -> None:
    from recsys.pipeline import local as lc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="vae,wl,enlft,tall,loca,lft,tall_train_slice")
    ap.add_argument("--out", default="benchmarks/results/tall_ml1m.json")
    ap.add_argument("--run-dir", default="outputs/repro/tall_ml1m")
    ap.add_argument("--shards", type=int, default=1, help="tasks per sharded method (run one after another here)")
    ap.add_argument("--only-shards", default=None,
                    help="comma list of shard numbers to run now (e.g. 0,1); the method is assembled once all "
                         "its shards are done. For LFT the finished users are compared with WL (lft_partial)")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # per-epoch progress
    if not os.environ.get("RECSYS_DATA_HOME"):
        sys.exit("set RECSYS_DATA_HOME to the folder holding ml-1m/")

    settings = lc.select_methods(lc.load_settings("ml-1m", {"shards": args.shards}), args.methods)
    run = Path(args.run_dir)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {}
    split_dir = run / "split"
    if (split_dir / "split.json").exists():
        split_path = split_dir
    else:
        split_path = lc.prepare("ml-1m", settings, output_dir=split_dir).path
    t0 = time.perf_counter()
    base_models = run / "models"
    # the base step trains the VAE and WL (when asked for or needed); reuse saved ones
    if all((base_models / f"{m}.pt").exists() for m in lc.BASE_METHODS if m in settings["methods"]):
        base = {"models": {m: str(base_models / f"{m}.pt") for m in lc.BASE_METHODS if m in settings["methods"]},
                "results": {}}
        base["prepared"] = lc.prepare_methods(split_path, base, settings, base_models)
    else:
        base = lc.train_base(split_path, settings, base_models)
    results = dict(done.get("results", {}))
    results.update(base["results"])
    _save(out, results, settings, t0)
    tasks = lc.plan(settings, _n_users(split_path))
    only = None if args.only_shards is None else {int(x) for x in lc.comma_list(args.only_shards)}
    for name in [m for m in settings["methods"] if m not in lc.BASE_METHODS]:
        mine = [t for t in tasks if t["method"] == name]
        pick = only if lc.is_sharded(settings["methods"][name]) else None  # TALL etc.: one task, run it
        if pick is not None and pick - {t["shard"] for t in mine}:
            sys.exit(f"--only-shards {args.only_shards}: {name} has shards 0..{len(mine) - 1}")
        outs = [_task(lc, split_path, base, t, settings, run / "shards") if pick is None or t["shard"] in pick
                else _finished(t, settings, run / "shards") for t in mine]
        outs = [o for o in outs if o is not None]  # shards not run now and not finished earlier
        if len(outs) < len(mine):
            print(f"{name}: {len(outs)} of {len(mine)} shards done; run the others (--only-shards) to assemble it",
                  flush=True)
            if settings["methods"][name]["model"] == "lft" and outs:
                results[name + "_partial"] = lc.evaluate_lft_partial(split_path, base, name, outs, settings)
                _save(out, results, settings, t0)
                print(json.dumps(results[name + "_partial"], indent=1), flush=True)
            continue
        results.pop(name + "_partial", None)
        results[name] = lc.assemble(split_path, base, name, outs, settings, run / "models")
        _save(out, results, settings, t0)
        print(_row(name, results[name]), flush=True)
    for name in results:
        if not name.endswith("_partial"):
            print(_row(name, results[name]))


def _task(lc, split_path, base: dict, task: dict, settings: dict, shard_dir: Path) -> dict:
    """Run one task, or reuse its finished output: each task's result is recorded beside its file
    with the method's settings, so an interrupted multi-hour run (LOCA, LFT in shards) resumes
    from the first unfinished shard. A changed setting or a missing file reruns the task."""
    from recsys.io import write_json

    done = _finished(task, settings, shard_dir)
    if done is not None:
        print(f"reusing {task['method']} shard {task['shard']} ({done['seconds']:.0f} s)", flush=True)
        return done
    out = lc.run_task(split_path, base, task, settings, shard_dir)
    write_json(_record(task, shard_dir), {"key": _key(task, settings), "out": out})
    return out


def _key(task: dict, settings: dict) -> dict:
    from recsys.io import json_default

    return json.loads(json.dumps({"task": task, "method": settings["methods"][task["method"]]}, default=json_default))


def _record(task: dict, shard_dir: Path) -> Path:
    return shard_dir / f"{task['method']}.shard{task['shard']}of{task['n_shards']}.done.json"


def _finished(task: dict, settings: dict, shard_dir: Path) -> dict | None:
    """The recorded output of a task run earlier with the same settings, or None."""
    record = _record(task, shard_dir)
    if not record.exists():
        return None
    done = json.loads(record.read_text())
    if done.get("key") == _key(task, settings) and Path(done["out"]["path"]).exists():
        return done["out"]
    return None


def _n_users(split_path) -> int:
    from recsys.protocols import Split

    return Split.load(split_path)["train"].shape[0]


def _row(name: str, r: dict) -> str:
    from recsys.metrics.groups import GROUP_NAMES

    ours = [r["test"]["ndcg@20"], *(r["groups"][g] for g in GROUP_NAMES if g in r["groups"])]
    pub = PUBLISHED.get(name)
    line = f"{name:>16}  ours " + " ".join(f"{v:.4f}" for v in ours) + f"  ({r['train_seconds']:.0f} s)"
    if pub:
        line += "   published " + " ".join(f"{v:.4f}" for v in [pub[0], *pub[1]])
    return line


def _save(out: Path, results: dict, settings: dict, t0: float) -> None:
    from recsys.io import write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"dataset": "ml-1m", "protocol": "random_split", "settings_file": "params/tall_ml-1m.yaml",
                     "published_ndcg20": PUBLISHED, "results": results,
                     "wall_seconds_this_run": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
