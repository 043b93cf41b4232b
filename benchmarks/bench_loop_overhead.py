"""What the shared training loop costs: MultVAE epochs on ML-1M through ``MultVAE.fit`` with this
checkout's code against the same fit from another source tree (the commit before the loop), in
alternating child processes of one run, so machine noise hits both alike.

    RECSYS_DATA_HOME=../shared/data python benchmarks/bench_loop_overhead.py --before-src /tmp/base [--rounds 3]

Each child loads ML-1M (all 1,000,209 ratings as implicit feedback, 6,040 x 3,706), warms up with one
epoch, then times ``fit`` of `epochs` epochs (I-600-200-600-I, batch 500, validation every epoch on
600 users' rows so the loop's validation path is timed too); it prints seconds per epoch. With
``--checkpoints`` the current code also writes a checkpoint every epoch (its cost is reported apart).
Writes ``benchmarks/results/loop_overhead_ml1m.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "loop_overhead_ml1m.json"

CHILD = r"""
import json, sys, time
import numpy as np, scipy.sparse as sp, torch
torch.set_num_threads(int(sys.argv[2]))
from recsys.data import load_dataset
from recsys.models.autoencoders import MultVAE
df = load_dataset("ml-1m").df
u = df["user"].astype("category").cat.codes.to_numpy(); i = df["item"].astype("category").cat.codes.to_numpy()
x = sp.csr_matrix((np.ones(len(df), np.float32), (u, i)))
valid = (x[:600], x[600:1200])
epochs, ckpt = int(sys.argv[1]), sys.argv[3]
MultVAE(epochs=1, patience=None, device="cpu").fit(x, valid)  # warm-up
m = MultVAE(epochs=epochs, patience=None, device="cpu", **({"progress": "off"} if hasattr(MultVAE.Config, "max_seconds") else {}))
if ckpt != "-":
    m.checkpoints(ckpt)
t = time.perf_counter(); m.fit(x, valid); total = time.perf_counter() - t
print(json.dumps({"seconds_per_epoch": total / epochs, "loss": m.history_[-1]["loss"]}))
"""


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what", "epochs_per_child", "threads", "rounds", "median_seconds_per_epoch", "median_after_over_before",
          "same_final_loss", "runs"}


def child(src: Path, epochs: int, threads: int, ckpt: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(epochs), str(threads), ckpt], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before-src", type=Path, required=True, help="a checkout of the commit before the loop")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoints", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    from recsys.io import write_json

    rows = {"before": [], "after": [], "after_checkpoints": []}
    for r in range(a.rounds):
        rows["before"].append(child(a.before_src, a.epochs, a.threads, "-"))
        rows["after"].append(child(ROOT, a.epochs, a.threads, "-"))
        if a.checkpoints:
            with tempfile.TemporaryDirectory() as d:
                rows["after_checkpoints"].append(child(ROOT, a.epochs, a.threads, d))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['seconds_per_epoch']:.2f} s/epoch" for k, v in rows.items() if v),
              flush=True)
    med = {k: statistics.median(x["seconds_per_epoch"] for x in v) for k, v in rows.items() if v}
    ratios = [b["seconds_per_epoch"] / f["seconds_per_epoch"] for b, f in zip(rows["after"], rows["before"])]
    result = {"what": "MultVAE fit on ML-1M (6,040 x 3,706), validation each epoch, before vs after the shared loop",
              "epochs_per_child": a.epochs, "threads": a.threads, "rounds": a.rounds,
              "median_seconds_per_epoch": med, "median_after_over_before": statistics.median(ratios),
              "same_final_loss": all(b["loss"] == f["loss"] for b, f in zip(rows["after"], rows["before"])),
              "runs": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    write_json(a.out, result, indent=1)


if __name__ == "__main__":
    main()
