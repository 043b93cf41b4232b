"""ML-20M-sized data end to end on this machine: peak RSS and seconds of each stage.

    RECSYS_DATA_HOME=../shared/data python benchmarks/scale.py [--shape ml-20m] [--work /tmp/scale]

1. write a seeded synthetic interaction file with the published shape after Liang et al.'s
   preprocessing (ML-20M: 136,677 users x 20,108 items, 10.0M interactions; ``--shape netflix`` /
   ``msd`` for the others), long-tailed popularity, per-user lengths drawn around the mean;
2. load it as a user's ``csv`` and make the ``strong_generalization`` split (10k + 10k held-out
   users for ML-20M, as Liang et al.), saved;
3. one Mult-VAE epoch on the split's training users (the published 600-200 network, batch 500);
4. closed-form EASE in float32 on the training users (one I x I inverse on the CPU).

Each stage runs in its own subprocess (its peak RSS is its own, ``ru_maxrss``), one after another,
with the torch threads of the machine. Results: ``benchmarks/results/scale_<shape>.json`` (a run of
some stages keeps the other stages' last measurements). ``--before SRC`` runs each stage a second
time, just before its own run, with the library of another checkout (``PYTHONPATH=SRC``) on the same
files, and records its seconds and peak RSS inside the stage's entry under ``--before-label`` (with
that checkout's commit, ``--before-note`` and the ``command``); the later stages read what this
checkout wrote. Every key written is declared in ``WRITES`` (checked by
``benchmarks/check_results_keys.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHAPES = {  # after Liang et al. 2018's preprocessing (ratings >= 3.5 / 4, users >= 5)
    "ml-20m": {"n_users": 136_677, "n_items": 20_108, "n_interactions": 10_000_000, "heldout": 10_000},
    "netflix": {"n_users": 463_435, "n_items": 17_769, "n_interactions": 56_880_037, "heldout": 40_000},
    "msd": {"n_users": 571_355, "n_items": 41_140, "n_interactions": 33_633_450, "heldout": 50_000},
    "tiny": {"n_users": 3_000, "n_items": 500, "n_interactions": 60_000, "heldout": 300},  # a smoke run
}


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
STAGE = {"rows", "users", "items", "generate_seconds", "seconds", "bytes", "path", "n_users", "n_items",
         "n_interactions", "split", "train_users", "loss", "scores_shape", "peak_rss_gib", "wall_seconds",
         "failed", "stderr"}
BEFORE = {"seconds", "peak_rss_gib", "commit", "note", "command"}
WRITES = {"what": None, "shape": None, "target": None, "machine": None, "torch": None,
          "stages": {"*": {**dict.fromkeys(STAGE), "before*": BEFORE}}}


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def stage_generate(work: Path, shape: str) -> dict:
    from recsys.data import make_synthetic

    s = SHAPES[shape]
    t0 = time.perf_counter()
    df = make_synthetic(n_users=s["n_users"], n_items=s["n_items"], seed=20,
                        mean_items_per_user=s["n_interactions"] / s["n_users"]).df
    gen = time.perf_counter() - t0
    path = work / f"{shape}_synthetic.csv"
    tmp = path.with_suffix(".tmp")
    chunk = 1_000_000
    with open(tmp, "w") as fh:
        fh.write("user,item,rating,timestamp\n")
        for start in range(0, len(df), chunk):
            df.iloc[start:start + chunk].to_csv(fh, header=False, index=False)
    os.replace(tmp, path)
    return {"rows": int(len(df)), "users": int(df["user"].nunique()), "items": int(df["item"].nunique()),
            "generate_seconds": gen, "seconds": time.perf_counter() - t0, "bytes": path.stat().st_size,
            "path": str(path)}


def stage_split(work: Path, shape: str) -> dict:
    from recsys.pipeline.preprocess import prepare_split

    t0 = time.perf_counter()
    prepared = prepare_split("csv", "strong_generalization", dataset_options={"path": str(work / f"{shape}_synthetic.csv")},
                             threshold=None, protocol_params={"n_heldout_users": SHAPES[shape]["heldout"], "seed": 98765},
                             output_dir=work / "split")
    s = prepared.stats
    return {"seconds": time.perf_counter() - t0, "n_users": s["n_users"], "n_items": s["n_items"],
            "n_interactions": s["n_interactions"], "split": str(prepared.path)}


def stage_multvae(work: Path, shape: str) -> dict:
    from recsys.models.registry import build
    from recsys.protocols import Split

    split = Split.load(work / "split")
    model = build("multvae", epochs=1, patience=None, batch_size=500, progress="off")
    t0 = time.perf_counter()
    model.fit(split["train"])
    return {"seconds": time.perf_counter() - t0, "train_users": int(split["train"].shape[0]),
            "loss": model.history_[-1].get("loss")}


def stage_ease(work: Path, shape: str) -> dict:
    from recsys.models.registry import build
    from recsys.protocols import Split

    split = Split.load(work / "split")
    model = build("ease", lam=500.0, dtype="float32")
    t0 = time.perf_counter()
    model.fit(split["train"])
    seconds = time.perf_counter() - t0
    scores = model.score(split["test_fold_in"][:1000])
    return {"seconds": seconds, "items": int(split["train"].shape[1]), "scores_shape": list(scores.shape)}


STAGES = {"generate": stage_generate, "split": stage_split, "multvae_epoch": stage_multvae, "ease_float32": stage_ease}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="ml-20m", choices=sorted(SHAPES))
    ap.add_argument("--work", default="/tmp/recsys_scale")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # child: run one stage, print JSON
    ap.add_argument("--before", default=None, help="a checkout whose library each stage also runs with, just before")
    ap.add_argument("--before-label", default="before", help="its entry inside the stage's (before...)")
    ap.add_argument("--before-note", default=None, help="a remark recorded with it")
    args = ap.parse_args()
    if not args.before_label.startswith("before"):
        sys.exit(f"--before-label {args.before_label!r}: must start with 'before'")
    from recsys.io import write_json

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.stage:
        out = STAGES[args.stage](work, args.shape)
        out["peak_rss_gib"] = _peak_gib()
        print("RESULT " + json.dumps(out))
        return
    import torch

    record = {"what": f"{args.shape}-sized data end to end on this machine: peak RSS and seconds of each stage.",
              "shape": args.shape, "target": SHAPES[args.shape],
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform()}, "torch": torch.__version__, "stages": {}}
    out_path = RESULTS / f"scale_{args.shape}.json"
    if out_path.exists():  # a run of some stages keeps the other stages' last measurements
        record["stages"] = json.loads(out_path.read_text()).get("stages", {})
    for name in args.stages.split(","):
        # the other checkout first, so that the files the later stages read are this checkout's
        before = _run_before(args, work, name) if args.before else None
        if before is not None:
            print(f"{name} ({args.before_label}): {before}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--work", str(work), "--stage", name],
                              capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            record["stages"][name] = {"failed": proc.returncode, "stderr": proc.stderr[-2000:]}
            print(f"{name}: failed ({proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
            break
        result = json.loads(lines[-1][7:])
        result["wall_seconds"] = time.perf_counter() - t0
        record["stages"][name] = result
        print(f"{name}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_gib']:.2f} GiB  {result}", flush=True)
        if before is not None:
            result[args.before_label] = before
        write_json(out_path, record, indent=1)


def _run_before(args, work: Path, name: str) -> dict:
    """Stage `name` again with the library of ``--before`` on the same files: seconds, peak RSS."""
    env = {**os.environ, "PYTHONPATH": args.before + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--work", str(work), "--stage", name],
                          capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{name} with {args.before}: failed ({proc.returncode})\n{proc.stderr[-2000:]}")
    r = json.loads(lines[-1][7:])
    git = subprocess.run(["git", "-C", args.before, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else None
    note = args.before_note or f"the library of {args.before}, run just before this entry's own run on the same file"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _provenance import invocation

    return {"seconds": r["seconds"], "peak_rss_gib": r["peak_rss_gib"], "commit": commit, "note": note,
            "command": invocation()}


if __name__ == "__main__":
    main()
