"""Peak host memory of each tail-stage method at 12k and 23k items (issue: a 23k-item dataset
killed two tail tasks at ~13 GB each on a 24 GB machine).

    python benchmarks/bench_tail_memory.py [--items 12000 23242] [--epochs 1]

Each (method, size) runs in its own child process on a synthetic dataset shaped like the one in
the report (27,341 training users, ~280k interactions, long-tailed item popularity; 1,000 + 1,000
held-out users), with the tail stage's quick-profile learner settings; a thread samples the child's
RSS every 10 ms. Prints peak RSS, the I^2 x 4 B unit, their ratio and seconds; writes
``benchmarks/results/tail_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "tail_memory.json"
METHODS = ("mostpop", "ease_closed_form", "ease", "ipw", "cvar", "posit")

CHILD = r"""
import json, sys, threading, time
import numpy as np, scipy.sparse as sp, torch
torch.set_num_threads(int(sys.argv[4]))
from recsys.models.registry import build
n_items, method, epochs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
peak, done = [0], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
rng = np.random.default_rng(0)
def rows(n_users, nnz):
    items = (rng.zipf(1.2, size=nnz) - 1) % n_items
    m = sp.csr_matrix((np.ones(nnz, np.float32), (rng.integers(0, n_users, nnz), items)), shape=(n_users, n_items))
    m.data[:] = 1.0
    return m
train, fold_in, held_out = rows(27341, 280706), rows(1000, 10000), rows(1000, 2500)
start_rss = rss()
learner = dict(lr=0.3, weight_decay=0.003, momentum=0.9, epochs=epochs, batch_size=1024, patience=3, loss="l2",
               progress="off", device="cpu")
spec = {"mostpop": ("mostpop", {}), "ease_closed_form": ("ease", {"lam": 50.0, "dtype": "float32"}),
        "ease": ("tail_learner", {**learner, "method": "ease"}), "ipw": ("tail_learner", {**learner, "method": "ipw"}),
        "cvar": ("tail_learner", {**learner, "method": "cvar"}),
        "posit": ("tail_learner", {**learner, "method": "posit", "ast": "2bmlp2", "nstd": 1.5, "alr": 1.0})}[method]
t = time.perf_counter()
model = build(spec[0], **spec[1])
model.fit(train, (fold_in, held_out)) if spec[0] == "tail_learner" else model.fit(train)
res = model.evaluate(fold_in, held_out, recall_denominator="min", ks=(100,), metrics=("ndcg",))
done[0] = True
print(json.dumps({"peak_rss_gib": peak[0] / 2**30, "start_rss_gib": start_rss / 2**30, "seconds": time.perf_counter() - t}))
"""


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what", "epochs", "threads", "rows"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[12000, 23242])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    from recsys.io import write_json

    rows = []
    for n in a.items:
        for m in a.methods:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), m, str(a.epochs), str(a.threads)],
                                 capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
            if out.returncode:
                rows.append({"items": n, "method": m, "error": out.stderr.strip().splitlines()[-1:]})
                print(f"{n:>6} items  {m:<17} failed: {rows[-1]['error']}", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            unit = n * n * 4 / 2**30
            rows.append({"items": n, "method": m, **r, "i2_gib": unit, "peak_over_i2": r["peak_rss_gib"] / unit})
            print(f"{n:>6} items  {m:<17} peak RSS {r['peak_rss_gib']:.2f} GiB = {r['peak_rss_gib'] / unit:.2f} x I^2*4B "
                  f"({unit:.2f} GiB)  {r['seconds']:.0f} s", flush=True)
    result = {"what": "peak host RSS per tail method, synthetic 27,341 x I, 280,706 interactions, quick-profile "
                      "learner (batch 1024), fused in-place SGD", "epochs": a.epochs, "threads": a.threads, "rows": rows}
    write_json(a.out, result, indent=1)


if __name__ == "__main__":
    main()
