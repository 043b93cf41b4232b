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
and for LFT evaluates the users done so far against WL (``lft_partial``): an earlier partial
evaluation in ``--out`` of other shards (another session whose shard files are not here) is kept
under ``per_run`` and combined with this one by user counts (exact: every mean is over users);
an earlier one of shards evaluated again now is dropped. Published NDCG@20 (LFT's notebooks) is printed
beside ours.

Every entry this script computes records its ``command`` (this invocation), the non-sharded ones
their ``valid_curve`` (validation mean per validated epoch), the LFT partial its ``machine``
(``--machine``, default the cores and vector extension found and the date). ``NOTES`` hold remarks
on recorded runs; each is written into its method's entry while that entry is the run it describes
(same ``train_seconds``), so a rerun drops it. ``--annotate-only`` writes them into ``--out``
without running anything. Every key the script writes is declared in ``WRITES``
(``benchmarks/check_results_keys.py`` checks the results file against it).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _provenance

PUBLISHED = {  # NDCG@20: overall, then low -> high mainstream (algorithms.md B-8..B-12)
    "vae": (0.3153, [0.2056, 0.2666, 0.2915, 0.3563, 0.4566]),
    "wl": (0.3190, [0.2312, 0.2731, 0.2916, 0.3535, 0.4456]),
    "loca": (0.3230, [0.2405, 0.2767, 0.2915, 0.3514, 0.4549]),
    "lft": (0.3372, [0.2548, 0.2882, 0.3055, 0.3671, 0.4706]),
    "enlft": (0.3328, [0.2537, 0.2836, 0.3023, 0.3622, 0.4625]),
}
# Remarks on recorded runs: written into the method's entry while it is that run (its train_seconds)
NOTES = {
    "loca": {"train_seconds": 9334.366, "fields": {
        "note": "train_seconds includes about 1610 s during which the run was paused (kill -STOP) for other "
                "measurements, and about 15 min of running beside the test suite; 2 CPU cores, 2026-11-30",
        "paused_seconds": 1610}},
    "tall_train_slice": {"train_seconds": 4437.166, "fields": {
        "note": "2 CPU cores, nothing else running, 2026-11-30; run from a clone with --run-dir outputs/repro. "
                "Validation mean (P/R/NDCG@1,5,10,20, slice gate) rose to 0.1483 at epoch 40 and 0.1500 at epoch 42 "
                "(best); with the adaptive weights on from epoch 41 the weighted training loss went from 803 to "
                "1,350-1,980 and validation fell to 0.142-0.146; early stop at epoch 57 (patience 15)."}},
}
# fields of a partial LFT evaluation that must agree for two sessions' evaluations to be combined
PARTIAL_SAME = ("method", "start", "of_users", "n_shards", "protocol", "split_seed", "metric")
PARTIAL_RUN = ("users", "group_sizes", "shard_seconds", "shards_done", "command", "machine")
COMBINED = "means combined by user counts (exact: every mean is over users)"

# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
SCORES = {"ndcg@20", "groups"}
ENTRY = ({"method", "model", "seed", "config", "protocol", "split_seed", "split_params", "recall_denominator",
          "metric_definitions", "test", "valid", "groups", "group_sizes", "overall_ndcg@20",
          "gate_uses_validation_labels", "epochs", "best_epoch", "train_seconds", "device", "per_user",
          "files", "shards", "command", "valid_curve"}
         | {k for n in NOTES.values() for k in n["fields"]})
COMPARED = {"lft*": SCORES, "vae": SCORES, "wl": SCORES}  # the LFT method's and its start's scores, by name
PARTIAL = {**{k: None for k in PARTIAL_SAME + PARTIAL_RUN + ("full_run_seconds_estimate",)},
           "per_run": {"*": {**{k: None for k in PARTIAL_RUN}, **COMPARED}}, **COMPARED}
WRITES = {"dataset": None, "protocol": None, "settings_file": None, "published_ndcg20": None,
          "wall_seconds_this_run": None, "results": {"*_partial": PARTIAL, "*": ENTRY}}


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
    ap.add_argument("--machine", default=None,
                    help="the machine, for lft_partial (default: cores and vector extension found, and the date)")
    ap.add_argument("--annotate-only", action="store_true",
                    help="write NOTES into the entries of --out they describe; run nothing")
    args = ap.parse_args()
    from _provenance import invocation, machine_line

    out = Path(args.out)
    if args.annotate_only:
        from recsys.io import write_json

        doc = json.loads(out.read_text())
        doc["results"] = _annotate(doc["results"])
        write_json(out, doc)
        print(f"notes written into {out}: {sorted(n for n in NOTES if _describes(doc['results'], n))}")
        return
    command = invocation()
    machine = args.machine or f"{machine_line()}, {time.strftime('%Y-%m-%d')}"
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # per-epoch progress
    if not os.environ.get("RECSYS_DATA_HOME"):
        sys.exit("set RECSYS_DATA_HOME to the folder holding ml-1m/")

    settings = lc.select_methods(lc.load_settings("ml-1m", {"shards": args.shards}), args.methods)
    run = Path(args.run_dir)
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
    for name, r in base["results"].items():  # trained now: this invocation wrote them
        results[name] = {**r, "command": command, **_curve(base["models"].get(name))}
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
                now = lc.evaluate_lft_partial(split_path, base, name, outs, settings)
                results[name + "_partial"] = combine_partial(results.get(name + "_partial"), now, command, machine)
                _save(out, results, settings, t0)
                print(json.dumps(results[name + "_partial"], indent=1), flush=True)
            continue
        results.pop(name + "_partial", None)
        results[name] = {**lc.assemble(split_path, base, name, outs, settings, run / "models"), "command": command}
        if not lc.is_sharded(settings["methods"][name]):
            results[name].update(_curve(outs[0]["path"]))
        _save(out, results, settings, t0)
        print(_row(name, results[name]), flush=True)
    for name in results:
        if not name.endswith("_partial"):
            print(_row(name, results[name]))


def _curve(model_path) -> dict:
    """``{"valid_curve": {epoch: validation mean}}`` from a saved model's training history (4
    decimals; the mean the loop selects on), or {} when it has none."""
    if model_path is None:
        return {}
    from recsys.models.base import Model

    history = getattr(Model.load(model_path, device="cpu"), "history_", None) or []
    curve = {str(h["epoch"]): round(float(h["valid"]), 4) for h in history
             if "epoch" in h and isinstance(h.get("valid"), (int, float))}
    return {"valid_curve": curve} if curve else {}


def _describes(results: dict, name: str) -> bool:
    return name in results and results[name].get("train_seconds") == NOTES[name]["train_seconds"]


def _annotate(results: dict) -> dict:
    """`results` with each of ``NOTES`` written into the entry of the run it describes."""
    return {name: ({**r, **NOTES[name]["fields"]} if name in NOTES and _describes(results, name) else r)
            for name, r in results.items()}


def _shards_of(label: str, run: dict) -> set[int]:
    if run.get("shards_done") is not None:
        return {int(s) for s in run["shards_done"]}
    return {int(s) for s in label.split(" ", 1)[1].split(",")}  # "shards 1,2" (entries written before shards_done)


def _label(shards) -> str:
    return "shards " + ",".join(str(s) for s in sorted(shards))


def combine_partial(earlier: dict | None, now: dict, command: str, machine: str) -> dict:
    """The LFT partial evaluation of this session (`now`, from ``evaluate_lft_partial``) merged with
    an `earlier` one from ``--out``: earlier sessions' evaluations of other shards (whose shard
    files are not in this run dir) are kept and combined with this one by user counts (overall)
    and group sizes (per group), which is exact since every mean is over users; earlier ones of
    shards evaluated again now are dropped; an earlier evaluation with other settings is replaced."""
    models = (now["method"], now["start"])
    run = {k: now[k] for k in ("users", "group_sizes", "shard_seconds", "shards_done", *models)}
    run.update(command=command, machine=machine)
    mine = set(run["shards_done"])
    runs = {}
    if earlier and all(earlier.get(k) == now[k] for k in PARTIAL_SAME):
        before = earlier.get("per_run") or {_label(earlier["shards_done"]): earlier}
        for label, r in before.items():
            theirs = _shards_of(label, r)
            if theirs <= mine:
                continue  # evaluated again now
            if theirs & mine:
                sys.exit(f"{now['method']}: shards {sorted(theirs & mine)} are in this evaluation and in the earlier "
                         f"'{label}' of {sorted(theirs)}; evaluate those shards together in one run dir")
            runs[label] = {k: r[k] for k in (*PARTIAL_RUN, *models) if k in r}
    elif earlier:
        print(f"{now['method']}_partial: the earlier evaluation has other settings; replaced", flush=True)
    runs[_label(mine)] = run
    runs = dict(sorted(runs.items(), key=lambda kv: min(_shards_of(*kv))))
    out = {k: now[k] for k in PARTIAL_SAME}
    if len(runs) == 1:
        return {**out, **{k: v for k, v in run.items()},
                "full_run_seconds_estimate": now["full_run_seconds_estimate"]}
    parts = list(runs.values())
    users = sum(r["users"] for r in parts)
    groups = list(dict.fromkeys(g for r in parts for g in r["group_sizes"]))
    sizes = {g: sum(r["group_sizes"].get(g, 0) for r in parts) for g in groups}
    for m in models:
        out[m] = {"ndcg@20": sum(r["users"] * r[m]["ndcg@20"] for r in parts) / users,
                  "groups": {g: sum(r["group_sizes"].get(g, 0) * r[m]["groups"][g] for r in parts
                                    if g in r[m]["groups"]) / sizes[g] for g in groups if sizes[g]}}
    seconds = [s for r in parts for s in r["shard_seconds"]]
    out.update(users=users, group_sizes=sizes, shard_seconds=seconds,
               shards_done=sorted(s for label, r in runs.items() for s in _shards_of(label, r)),
               full_run_seconds_estimate=round(sum(seconds) * out["of_users"] / users, 0),
               command="; then ".join(r.get("command") or label for label, r in runs.items()) + "; " + COMBINED,
               machine="; ".join(dict.fromkeys(r["machine"] for r in parts if r.get("machine"))) or machine,
               per_run=runs)
    return out


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
                     "published_ndcg20": PUBLISHED, "results": _annotate(results),
                     "wall_seconds_this_run": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
