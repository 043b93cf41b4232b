"""Training steps against their FLOP bound, ours before / after the fused kernels, in one run.

    RECSYS_DATA_HOME=../shared/data python benchmarks/bench_bound.py --before /tmp/recsys_before \\
        [--workloads tall,lft,multvae,sasrec,bert4rec] [--threads 2]

``--before``: a checkout of the commit before the fused kernels (``git worktree add /tmp/recsys_before
38e2b80``); without it the "before" column is skipped. Every (workload, variant) runs in its own
child process (``_children.py``) that first measures plain fp32 matmul GFLOP/s (a 2048^3 product
and the workload's largest product shape), warms up, times steady-state steps, and measures the
matmuls again: the bound is the workload's matmul FLOPs / the best matmul rate of that same child,
so load drift hits both sides (``x bound``: against the 2048^3 rate; ``x bound at workload shape``:
against the rate of the workload's own largest product, e.g. TALL's [100, 512, 100] x [100, 100,
3,260] batched decoder, which runs at half the square rate on this CPU). Variants: ``before`` (the old code), ``after`` (this checkout,
``compile: off``), ``after_compiled`` (``compile: on``; its first-call compile seconds are
reported apart and excluded from the steady state) and, for TALL, ``reference`` (upstream's
expert loop as ``bench_tall_epoch.py`` runs it, memory leak fixed; its x bound is against our
FLOP count, since its dense encoder does 70x more work than the sparse one). Upstream's own code
is not vendored: to time it, clone JP-25/end-To-end-Adaptive-Local-Leanring-TALL- and run its
loop; the reference here reproduces its per-expert structure.

Workloads (ML-1M; shapes from the papers' settings):

* ``tall``: one TALL batch, 100 experts I -> 100 -> I, batch 512 (10-core random 70/10/20 split,
  3,260 items): bank forward, gate + mixture, multinomial NLL + KL, backward, Adam.
  FLOPs = 3 x 2 E B H I (decoder, forward + two backward products) + 2 x 2 E nnz 2H (sparse
  encoder, forward + weight gradient).
* ``lft``: one LFT fine-tuning step of a group of 64 copies, batch 128 each (grouped rows).
  FLOPs = 3 x 2 G B H I + 2 x 2 nnz 2H.
* ``multvae``: one Mult-VAE epoch (600-200, batch 500, all 6,040 users, 3,706 items).
  FLOPs = per row 2 x 2 nnz 600 (sparse input) + 3 x 2 (600 x 400 + 200 x 600 + 600 x I).
* ``sasrec`` / ``bert4rec``: one epoch at length 200 (``bench_seq_epoch.py``'s settings and FLOP
  count), timed on the first ``--seq-batches`` batches and scaled.

Writes ``benchmarks/results/bound_cpu.json`` (or ``--out``), keeping what an earlier run measured
that this one does not: ``workloads.<workload>.<variant>`` per child (with the ``command`` that
measured it); ``--store-as before=before_rerun`` records a variant under another name
(``<variant>_<suffix>``) so that a second measurement stands beside the first. ``--pool`` measures
again and pools the step times of ``POOLED_VARIANTS`` with the earlier runs' instead of replacing
the entries: ``<workload>_pooled`` starts from the entries in the file (the earlier run's timed
steps) and gains this run's (its median over all of them, ``runs_steps`` and ``commands`` per run).
Top level: the last run's ``command``, ``machine`` (cores, vector extension, torch, threads per
child), ``before_commit`` (of ``--before``) and ``note`` (``--note``; kept from the file when not
given). Every key written is declared in ``WRITES`` (checked by
``benchmarks/check_results_keys.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKLOADS = ("tall", "lft", "multvae", "sasrec", "bert4rec")
NAMES = {"tall": "TALL", "lft": "LFT", "multvae": "Mult-VAE", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}
VARIANTS = ("before", "after", "after_compiled", "reference")  # reference: TALL only
POOLED_VARIANTS = ("before", "after")
POOLED_WHAT = ("{workload} step times of {n_runs} runs of this script ({steps} timed steps per variant): single runs "
               "scatter {after_low:.1f}-{after_high:.1f} s (after) and {before_low:.1f}-{before_high:.1f} s (before) "
               "per step on this machine")

# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
ENTRY = {"seconds", "seconds_all", "first_step_seconds", "compile_seconds", "flops", "shape", "matmul_gflops",
         "bound_seconds", "x_bound", "bound_seconds_at_workload_shape", "x_bound_at_workload_shape", "threads",
         "peak_rss_gb", "note", "flops_ours", "x_bound_of_ours_flops", "x_bound_at_workload_shape_of_ours_flops",
         "scaled_from_batches", "epoch_batches", "command"}
POOLED = {"median_seconds", "steps", "seconds_all"}
WRITES = {
    "what": None, "before": None, "command": None, "machine": None, "before_commit": None, "note": None,
    "workloads": {w: {**{v: ENTRY for v in VARIANTS}, **{f"{v}_*": ENTRY for v in VARIANTS}} for w in WORKLOADS},
    **{f"{w}_pooled": {"what": None, "runs_steps": None, "commands": None, "before_over_after": None,
                       **{v: POOLED for v in POOLED_VARIANTS}} for w in WORKLOADS},
}


# ---- in the child -----------------------------------------------------------------------------


def matmul_gflops(shapes: dict, seconds: float = 1.0) -> dict:
    import torch

    out = {}
    for label, (batch, m, k, n) in shapes.items():
        a, b = torch.randn(batch, m, k), torch.randn(batch, k, n)
        torch.bmm(a, b)
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            torch.bmm(a, b)
            reps += 1
        out[label] = 2.0 * batch * m * k * n * reps / (time.perf_counter() - t) / 1e9
    return out


def _timed_steps(step, warmup: int, steps: int) -> list[float]:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(warmup, warmup + steps):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    return times


def _compile_kw(variant: str) -> dict:
    return {"compile": "on"} if variant == "after_compiled" else ({"compile": "off"} if variant == "after" else {})


def bank_workload(name: str, variant: str, steps: int) -> dict:
    """TALL's batch or an LFT group step, through the model code of the checkout on sys.path."""
    import numpy as np
    import torch

    from recsys.data import load_dataset
    from recsys.models.autoencoders.multvae import adam, multinomial_nll
    from recsys.protocols import random_split
    from recsys.training.batches import SparseRows

    split = random_split(load_dataset("ml-1m").df, k_core=10, seed=0)
    train, valid = split["train"], split["valid"]
    n_users, n_items = train.shape
    rng = np.random.default_rng(0)
    compiled = variant == "after_compiled"
    ctx = None
    if compiled:
        from recsys.training.compile import compile_seconds, compiling

        ctx = compiling(True)
        ctx.__enter__()
    if name == "tall":
        from recsys.models.local import TALL

        E, B, H = 100, 512, 100
        m = TALL(n_experts=E, epochs=1, patience=None, batch_size=B, lr=1e-3, weight_decay=1e-5, device="cpu",
                 **_compile_kw(variant))
        m._start_fit(train, valid)
        m.inputs_, m.gate_rows_ = train, valid
        m._init_modules()
        bank = m.bank_
        opt = adam(bank.parameters(), 1e-3, 1e-5, m.device)
        order = rng.permutation(n_users)
        nnz = []

        def step(i: int) -> None:
            idx = order[(i % (n_users // B)) * B:(i % (n_users // B) + 1) * B]
            rows, gate_rows = SparseRows.from_csr(train[idx], "cpu"), SparseRows.from_csr(valid[idx], "cpu")
            nnz.append(rows.indices.numel())
            out, gate, kl = m._mixture(rows, gate_rows)
            loss = multinomial_nll(out, rows).mean() + 0.2 * (gate * kl).sum(0).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:  # lft: one group of G copies, each on its own users' rows
        from recsys.models.local.bank import BankAdam, ExpertBank, bank_kl, bank_nll, weighted_mean

        E, B, H = 64, 128, 100
        bank = ExpertBank(E, n_items, H, 0.5, 1.0)
        opt = BankAdam(bank, 1e-3, 0.0)
        nnz = []

        def step(i: int) -> None:
            idx = rng.integers(0, n_users, size=E * B)
            rows = SparseRows.from_csr(train[idx], "cpu")
            nnz.append(rows.indices.numel())
            bank.train()
            logits, mu, logvar = bank(rows, grouped=True)
            real = torch.ones(E, B)
            per_expert = weighted_mean(bank_nll(logits, rows, grouped=True), real) + 0.2 * weighted_mean(
                bank_kl(mu, logvar), real)
            del logits
            opt.zero_grad()
            loss = per_expert.sum()
            loss.backward()
            opt.step(torch.ones(E, dtype=torch.bool))

    c0 = compile_seconds() if compiled else 0.0
    t = time.perf_counter()
    step(0)  # compiles here when compiled
    first = time.perf_counter() - t
    times = _timed_steps(step, 1, steps)
    mean_nnz = float(np.mean(nnz[2:] or nnz))
    flops = 3 * 2.0 * E * B * H * n_items + 2 * 2.0 * (E if name == "tall" else 1) * mean_nnz * 2 * H
    if ctx is not None:
        ctx.__exit__(None, None, None)
    return {"seconds": float(np.median(times)), "seconds_all": times, "first_step_seconds": first,
            "compile_seconds": (compile_seconds() - c0) if compiled else None, "flops": flops,
            "shape": {"experts": E, "batch": B, "hidden": H, "items": n_items, "nnz_per_step": mean_nnz},
            "matmul_shape": (E, B, H, n_items)}


def tall_reference(steps: int) -> dict:
    """``bench_tall_epoch.py``'s reference-style TALL (upstream's MOE loop with its leak fixed):
    per-batch seconds = (time of 2 + steps batches - time of 2 batches) / steps, so its set-up
    (the dense matrices) cancels."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    import bench_tall_epoch as bt

    split = bt.load_split()
    short = bt.run_reference(split, 100, 2, "tuned", "cpu")["seconds"]
    long = bt.run_reference(split, 100, 2 + steps, "tuned", "cpu")["seconds"]
    train = split["train"]
    B, H, I = bt.BATCH, 100, train.shape[1]
    nnz = float(np.mean(np.diff(train.indptr))) * B
    dense_in = 3 * 2.0 * 100 * B * I * 2 * H  # its encoder is a dense I x 2H product per expert
    flops = 3 * 2.0 * 100 * B * H * I + dense_in
    return {"seconds": (long - short) / steps, "flops": flops, "compile_seconds": None,
            "note": "the bound here counts its dense encoder; x_bound_of_ours_flops compares with our FLOPs",
            "flops_ours": 3 * 2.0 * 100 * B * H * I + 2 * 2.0 * 100 * nnz * 2 * H,
            "shape": {"experts": 100, "batch": B, "hidden": H, "items": I}, "matmul_shape": (100, B, H, I)}


def multvae_workload(variant: str, steps: int) -> dict:
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from recsys.models.autoencoders.multvae import MultVAE

    df = pd.read_csv(Path(os.environ["RECSYS_DATA_HOME"]) / "ml-1m" / "ratings_partial.csv.gz",
                     usecols=["user_id", "movie_id"])
    u, i = pd.factorize(df["user_id"])[0], pd.factorize(df["movie_id"])[0]
    x = sp.csr_matrix((np.ones(len(df), np.float32), (u, i)))
    x.sum_duplicates()
    x.data[:] = 1.0
    hp = dict(enc_dims=(600, 200), dropout=0.5, lr=1e-3, batch_size=500, anneal_cap=0.2, total_anneal_steps=200_000)
    times, first, comp = [], None, None
    for r in range(steps + 1):
        model = MultVAE(epochs=1, seed=r, device="cpu", progress="off", **hp, **_compile_kw(variant)).fit(x)
        h = model.history_[0]
        if r == 0:
            first, comp = h["train_seconds"], h.get("compile_seconds")
        else:
            times.append(h["train_seconds"] - h.get("compile_seconds", 0.0))
    n, nnz, I = x.shape[0], x.nnz, x.shape[1]
    flops = 2 * 2.0 * nnz * 600 + 3 * 2.0 * n * (600 * 400 + 200 * 600 + 600 * I)
    return {"seconds": float(np.median(times)), "seconds_all": times, "first_step_seconds": first,
            "compile_seconds": comp, "flops": flops, "shape": {"users": n, "items": I, "nnz": nnz},
            "matmul_shape": (1, 500, 600, I)}


def seq_workload(name: str, variant: str, batches: int) -> dict:
    sys.path.insert(0, str(HERE))
    import bench_seq_epoch as bs

    from recsys.models.registry import build
    from recsys.models.sequential import core

    split = bs.load_split()
    original, full = core.length_batches, {}

    def first(*args, **kwargs):
        b = original(*args, **kwargs)
        full["n"] = len(b)
        return b[:batches]

    core.length_batches = first
    times = []
    for r in range(2):  # the first epoch warms up (and compiles, when compiled)
        model = build(name, **bs.CONFIGS[name], epochs=1, device="cpu", progress="off", seed=r,
                      **_compile_kw(variant)).fit(split, validate=False)
        h = model.history_[0]
        times.append(h["train_seconds"] - h.get("compile_seconds", 0.0))
    core.length_batches = original
    scale = full["n"] / min(batches, full["n"])
    L, positions = bs.our_rows(name, split, bs.CONFIGS[name])
    flops = bs.epoch_flops(name, L, split.n_items, bs.CONFIGS[name], out_positions=positions)
    return {"seconds": times[1] * scale, "first_step_seconds": times[0] * scale, "scaled_from_batches": batches,
            "epoch_batches": full["n"], "compile_seconds": None, "flops": flops,
            "shape": {"max_len": bs.MAX_LEN, "hidden": bs.HIDDEN, "items": split.n_items, "rows": int(len(L))},
            "matmul_shape": (1, 16384, bs.HIDDEN, split.n_items)}


def child(workload: str, variant: str, steps: int, seq_batches: int) -> None:
    import resource

    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    if variant == "reference":
        run = lambda: tall_reference(steps)  # noqa: E731
    elif workload in ("tall", "lft"):
        run = lambda: bank_workload(workload, variant, steps)  # noqa: E731
    elif workload == "multvae":
        run = lambda: multvae_workload(variant, max(2, steps // 2))  # noqa: E731
    else:
        run = lambda: seq_workload(workload, variant, seq_batches)  # noqa: E731
    probe = {"square_2048": (1, 2048, 2048, 2048)}
    g0 = matmul_gflops(probe)
    out = run()
    shape = out.pop("matmul_shape")
    probe["workload"] = tuple(shape)
    g1 = matmul_gflops(probe)
    out["matmul_gflops"] = [g0, g1]
    best = max(max(g.values()) for g in (g0, g1))
    out["bound_seconds"] = out["flops"] / (best * 1e9)
    out["x_bound"] = out["seconds"] / out["bound_seconds"]
    shaped = g1["workload"]  # the workload's largest product at its own shape: a bound it can reach
    out["bound_seconds_at_workload_shape"] = out["flops"] / (shaped * 1e9)
    out["x_bound_at_workload_shape"] = out["seconds"] / out["bound_seconds_at_workload_shape"]
    if "flops_ours" in out:
        out["x_bound_of_ours_flops"] = out["seconds"] / (out["flops_ours"] / (best * 1e9))
        out["x_bound_at_workload_shape_of_ours_flops"] = out["seconds"] / (out["flops_ours"] / (shaped * 1e9))
    out["threads"] = torch.get_num_threads()
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(out))


# ---- in the parent ----------------------------------------------------------------------------


def pool(report: dict, workload: str, measured: dict, command: str) -> dict:
    """``<workload>_pooled``: the timed steps of ``POOLED_VARIANTS`` over runs of this script, the
    file's entries first (when the pool starts) and then each ``--pool`` run's `measured`."""
    key = f"{workload}_pooled"
    old = report.get(key)
    if old is None:  # starts from the run whose entries are in the file
        entries = report["workloads"].get(workload, {})
        first = {v: entries[v]["seconds_all"] for v in POOLED_VARIANTS if "seconds_all" in entries.get(v, {})}
        old = {"runs_steps": [len(next(iter(first.values())))] if first else [], "commands": [report.get("command")],
               **{v: {"seconds_all": s} for v, s in first.items()}}
    steps = len(next(measured[v]["seconds_all"] for v in POOLED_VARIANTS if "seconds_all" in measured.get(v, {})))
    out = {"runs_steps": [*old.get("runs_steps", []), steps], "commands": [*old.get("commands", []), command]}
    for v in POOLED_VARIANTS:
        times = [*(old.get(v) or {}).get("seconds_all", []), *(measured.get(v) or {}).get("seconds_all", [])]
        if times:
            out[v] = {"median_seconds": statistics.median(times), "steps": len(times), "seconds_all": times}
    if all(v in out for v in POOLED_VARIANTS):
        out["before_over_after"] = out["before"]["median_seconds"] / out["after"]["median_seconds"]
        lo_hi = {f"{v}_{end}": f(out[v]["seconds_all"]) for v in POOLED_VARIANTS for end, f in (("low", min),
                                                                                              ("high", max))}
        out["what"] = POOLED_WHAT.format(workload=NAMES.get(workload, workload), n_runs=_count(len(out["runs_steps"])),
                                         steps=" + ".join(str(n) for n in out["runs_steps"]), **lo_hi)
    return out


def _count(n: int) -> str:
    return {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}.get(n, str(n))


def machine_description(threads: int) -> str:
    import torch

    from _provenance import machine_line

    return f"{machine_line()}, torch {torch.__version__}, {threads} threads per child"


def commit_of(checkout: str) -> str | None:
    proc = subprocess.run(["git", "-C", checkout, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--before", default=None, help="checkout of the code before the fused kernels")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per bank workload (Mult-VAE: epochs = steps / 2)")
    ap.add_argument("--seq-batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "bound_cpu.json"))
    ap.add_argument("--store-as", default="", metavar="VARIANT=NAME,...",
                    help="record a variant under another name, <variant>_<suffix> (e.g. before=before_rerun)")
    ap.add_argument("--pool", action="store_true",
                    help=f"pool the step times of {', '.join(POOLED_VARIANTS)} into <workload>_pooled instead of "
                         "replacing the entries")
    ap.add_argument("--note", default=None, help="a remark on the file's entries (top-level note)")
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from _provenance import invocation

    from recsys.io import write_json

    command = invocation()
    store_as = dict(x.split("=", 1) for x in a.store_as.split(",") if x)
    for v, name in store_as.items():
        if v not in VARIANTS or not name.startswith(v + "_") or name == v + "_":
            sys.exit(f"--store-as {v}={name}: expected a variant of {VARIANTS} = <variant>_<suffix>")
    if not os.environ.get("RECSYS_DATA_HOME"):
        sys.exit("set RECSYS_DATA_HOME to the folder holding ml-1m/")
    if a.threads:
        os.environ["BENCH_THREADS"] = str(a.threads)
    variants = [v for v in a.variants.split(",") if v and (v != "before" or a.before)]
    for v in variants:
        if v not in VARIANTS:
            sys.exit(f"unknown variant {v!r}; choose from {VARIANTS}")
    workloads = [w for w in a.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"unknown workload {w!r}; choose from {WORKLOADS}")
    report = {"what": __doc__.split("\n")[0], "before": a.before, "workloads": {}}
    if Path(a.out).is_file():  # resumable: keep what an earlier run measured
        report = {**json.loads(Path(a.out).read_text()), "before": a.before}
    import torch

    threads = int(os.environ.get("BENCH_THREADS", torch.get_num_threads()))
    if not a.pool:  # a pooling run adds to <workload>_pooled only: the entries keep their run's provenance
        report.update(command=command, machine=machine_description(threads))
        if a.before:
            report["before_commit"] = commit_of(a.before)
    if a.note is not None:
        report["note"] = a.note
    for w in workloads:
        measured = {}
        for v in variants:
            if v == "reference" and w != "tall":
                continue
            env = dict(os.environ)
            repo = a.before if v == "before" else str(ROOT)
            env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
            cmd = [sys.executable, __file__, "--child", w, v, str(a.steps), str(a.seq_batches)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{w}/{v} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            r = {**json.loads(line[len("RESULT "):]), "command": command}
            measured[v] = r
            if not a.pool:
                report["workloads"].setdefault(w, {})[store_as.get(v, v)] = r
                write_json(a.out, report, indent=1)
            comp = f", compile {r['compile_seconds']:.1f} s once" if r.get("compile_seconds") else ""
            print(f"{w:9s} {store_as.get(v, v):15s} {r['seconds']:8.3f} s  bound {r['bound_seconds']:7.3f} s  "
                  f"x{r['x_bound']:.2f}{comp}", flush=True)
        if a.pool and any("seconds_all" in measured.get(v, {}) for v in POOLED_VARIANTS):
            report[f"{w}_pooled"] = pool(report, w, measured, command)
            write_json(a.out, report, indent=1)
            print(f"{w} pooled: {report[f'{w}_pooled'].get('what', '')}", flush=True)
    print("\n| workload | bound s | " + " | ".join(f"{v} s (x bound)" for v in variants) + " | before / after |")
    print("|---|---|" + "---|" * len(variants) + "---|")
    for w in workloads:
        rs = report["workloads"][w]
        cells = [f"{rs[v]['seconds']:.3f} ({rs[v].get('x_bound_of_ours_flops', rs[v]['x_bound']):.2f})" if v in rs else ""
                 for v in variants]
        speed = (f"{rs['before']['seconds'] / rs['after']['seconds']:.2f}x" if "before" in rs and "after" in rs else "")
        print(f"| {w} | {rs['after']['bound_seconds']:.3f} | " + " | ".join(cells) + f" | {speed} |")


if __name__ == "__main__":
    main()
