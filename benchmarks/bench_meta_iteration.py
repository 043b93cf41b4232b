"""One meta-iteration of the meta stage against an upstream-style implementation, in the same run.

A meta-iteration = 16 training tasks of the embedded Amazon Digital Music data (MELO's task
sizes: window 30, 25 support and 3 query sequences), 3 inner steps, second order, MAML++'s
multi-step query loss, forward + meta-gradient (no optimiser step). Backbones BERT4Rec and GRU4Rec
at MELO's sizes (hidden 32), dropout on (training mode).

* ``ours``: :class:`recsys.models.meta.functional.InnerLoop` -- ``vmap`` over tasks of
  ``torch.func.grad``, per-task item tables, length buckets and task groups;
* ``ours_plain``: the same vmapped loop with the shortcuts off (full item table, every row padded
  to the window, one group) -- what batching alone gives;
* ``reference``: the usual MAML code (and MELO's): a Python loop over the tasks, a
  ``copy.deepcopy`` of the backbone per task, ``torch.autograd.grad(create_graph=True)`` per inner
  step, each task's real rows padded to the window, the whole item table adapted
  (:func:`recsys.models.meta.functional.reference_losses`).

Both compute the same meta-loss and meta-gradient: checked first (eval mode, float32, atol 1e-5).
Times: the best of ``--repeats`` interleaved runs, CPU seconds of this process (robust to other
jobs on a shared machine) and wall seconds. Peak memory of one meta-iteration for 1, 3, 5 inner
steps, second and first order: each in a fresh child process (peak resident memory during the
iteration above the value before it, sampled every 2 ms, on CPU; ``torch.cuda.max_memory_allocated`` on CUDA).

Run: OMP_NUM_THREADS=1 python benchmarks/bench_meta_iteration.py [--device cpu] [--threads 1]
Writes benchmarks/results/meta_iteration_<device>.json.
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.io import write_json  # noqa: E402
from recsys.models.meta.backbones import backbone_config  # noqa: E402
from recsys.models.meta.functional import (  # noqa: E402
    InnerLoop,
    item_table_name,
    prepare_batch,
    rating_parameters,
    reference_losses,
    step_importance,
)
from recsys.training.device import pick_device  # noqa: E402

BACKBONES = ("bert4rec", "gru4rec")
TASKS = 16


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"device": None, "threads": None, "torch": None, "machine": None, "cpu_count": None, "load_average": None,
          "setting": None,
          "backbones": {"*": {"check", "seconds", "ratio_cpu", "ratio_wall", "ratio_cpu_plain_vmap", "memory"}}}


def load(seed: int = 0):
    from recsys.pipeline import meta
    from recsys.protocols import user_split
    from recsys.protocols.meta_tasks import TaskSettings, build_tasks

    settings = meta.load_settings("amazon-digital-music")
    df, _ = meta.load_ratings("amazon-digital-music", settings)
    split = user_split(df, **settings["params"])
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(split.arrays["train_users"], TASKS, replace=False))
    tasks = build_tasks(split, "train", TaskSettings(max_len=30, n_support=25, n_query=3), rng, users=users)
    return split, tasks


def backbone(name: str, split, device):
    from recsys.models.registry import get_model

    cfg = backbone_config(name)
    model = get_model(name)(cfg)
    torch.manual_seed(0)
    model.n_items_ = split.n_items
    model._init_modules()
    net = model.net_.to(device)
    net.rating_head.start_at(4.5)
    with torch.no_grad():
        net.rating_head.weight.normal_(0, 0.3)
    return net


class Iteration:
    """One meta-iteration of either implementation on fixed tasks."""

    def __init__(self, net, tasks, steps: int, first_order: bool, device) -> None:
        self.net, self.tasks, self.steps, self.device = net, tasks, steps, device
        self.adapted = rating_parameters(net)
        self.loop = InnerLoop(net, self.adapted, item_table_name(net), steps, first_order)
        self.first_order = first_order
        self.rates = torch.full((len(self.adapted), max(steps, 1)), 1e-2, device=device, requires_grad=True)
        self.imp = torch.tensor(step_importance(steps, 0, 1000), device=device)
        self.params = list(self.loop.meta_parameters().values()) + [self.rates]

    def ours(self, plain: bool = False):
        batch = prepare_batch(self.tasks, self.device, local_table=not plain, bucket_overhead=None if plain else 512.0)
        losses = self.loop.losses(batch, self.rates, record_steps=self.steps > 1)
        return self._grad(losses)

    def reference(self):
        losses = reference_losses(self.net, self.tasks, self.adapted, self.rates, self.steps,
                                  first_order=self.first_order, record_steps=self.steps > 1, device=self.device)
        return self._grad(losses)

    def _grad(self, losses):
        w = self.imp if losses.shape[1] > 1 else torch.ones(1, device=losses.device)
        loss = (losses * w).sum(1).mean()
        return loss, torch.autograd.grad(loss, self.params, allow_unused=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    c, w = time.process_time(), time.perf_counter()
    fn()
    sync(device)
    return time.process_time() - c, time.perf_counter() - w


def check(it: Iteration) -> dict:
    it.net.eval()
    la, ga = it.ours()
    lb, gb = it.reference()
    la, lb = la.detach(), lb.detach()
    it.net.train()
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(ga, gb) if a is not None)
    scale = max(float(b.abs().max()) for b in gb if b is not None)
    return {"loss_diff": abs(float(la - lb)), "max_grad_diff": grad_diff, "max_grad": scale,
            "equal_to_1e-5": bool(abs(float(la - lb)) < 1e-5 and grad_diff < 1e-5 * max(1.0, scale))}


# ---- memory: one child per (backbone, impl, steps, order) ------------------------------------------


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssPeak:
    """Peak resident memory above the value at entry, sampled every 2 ms by a thread."""

    def __enter__(self):
        import threading

        self.base = self.peak = current_rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, current_rss_mb())
                self._stop.wait(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mb())
        self.above = self.peak - self.base


def child(args) -> None:
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    split, tasks = load()
    net = backbone(args.backbone, split, device)
    net.train()
    it = Iteration(net, tasks, args.steps, args.first_order, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fn = it.reference if args.impl == "reference" else it.ours
    with RssPeak() as rss:
        cpu, wall = timed(fn, device)
    out = {"peak_rss_above_start_mb": rss.above, "rss_start_mb": rss.base,
           "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_s": cpu, "wall_s": wall}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out))


def memory(args, name: str, impl: str, steps: int, first_order: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--backbone", name, "--impl", impl, "--steps", str(steps),
           "--device", args.device or "auto", "--threads", str(args.threads)] + (["--first-order"] if first_order else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        return {"error": proc.stderr[-1500:]}
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--backbone", default="bert4rec")
    ap.add_argument("--impl", default="ours")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--first-order", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    split, tasks = load()
    lens = (tasks.support_items > 0).sum(-1)
    report = {"device": str(device), "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "setting": {"tasks": TASKS, "max_len": 30, "n_support": 25, "n_query": 3, "inner_steps": 3,
                          "second_order": True, "multi_step_loss": True, "dropout": "on (train mode)",
                          "real_support_positions": int(lens.sum()),
                          "padded_positions_reference": int(tasks.support_n.sum() * 30)},
              "backbones": {}}
    for name in BACKBONES:
        net = backbone(name, split, device)
        it = Iteration(net, tasks, 3, False, device)
        entry = {"check": check(it)}
        net.train()
        best = {k: [np.inf, np.inf] for k in ("reference", "ours", "ours_plain")}
        for _ in range(args.repeats):
            for impl, fn in (("reference", it.reference), ("ours", it.ours), ("ours_plain", lambda: it.ours(plain=True))):
                cpu, wall = timed(fn, device)
                best[impl] = [min(best[impl][0], cpu), min(best[impl][1], wall)]
        entry["seconds"] = {k: {"cpu": v[0], "wall": v[1]} for k, v in best.items()}
        entry["ratio_cpu"] = best["reference"][0] / best["ours"][0]
        entry["ratio_wall"] = best["reference"][1] / best["ours"][1]
        entry["ratio_cpu_plain_vmap"] = best["reference"][0] / best["ours_plain"][0]
        print(f"{name}: reference {best['reference'][0]:.3f} s CPU ({best['reference'][1]:.3f} wall), "
              f"ours {best['ours'][0]:.3f} s ({best['ours'][1]:.3f}), vmap only {best['ours_plain'][0]:.3f} s -> "
              f"ratio {entry['ratio_cpu']:.2f}x CPU, {entry['ratio_wall']:.2f}x wall "
              f"(vmap only {entry['ratio_cpu_plain_vmap']:.2f}x); same result: {entry['check']}", flush=True)
        if not args.no_memory:
            mem = {}
            for impl in ("ours", "reference"):
                for order in ("second", "first"):
                    for steps in (1, 3, 5):
                        r = memory(args, name, impl, steps, order == "first")
                        mem[f"{impl}/{order}/{steps}"] = r
                        peak = r.get("peak_cuda_mb", r.get("peak_rss_above_start_mb"))
                        print(f"  memory {name} {impl:9s} {order}-order {steps} steps: "
                              f"{'error' if peak is None else f'{peak:.0f} MB'}", flush=True)
            entry["memory"] = mem
        report["backbones"][name] = entry
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"meta_iteration_{device.type}.json"
    write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
