"""Per-stage cost model: each stage's formula checked at three synthetic sizes, then extrapolated.

    RECSYS_DATA_HOME=../shared/data python benchmarks/cost_model.py [--stages multvae,ease] \
        [--work /tmp/recsys_cost] [--budget-s 3000]

For every stage (a probe below: model, protocol, the config of one measured epoch, three
synthetic sizes growing x2):

1. a child process writes the seeded synthetic split of each size once (cached under --work);
2. another child loads it, trains one epoch (``fit_split(validate=False)``, the stage's real
   architecture), and reports its seconds, its peak RSS (``ru_maxrss``: the process only loaded
   the split before), and the FLOPs torch's ``FlopCounterMode`` counts in a second, counted epoch;
3. the parent sets these beside ``Model.epoch_cost`` (recsys/training/cost.py) for the same
   shape: counted / formula dense FLOPs, measured / formula peak RSS, the growth exponents of the
   measured seconds and RSS against the formula's; then one model of this machine fitted over
   every stage's fits (:func:`fit_machine`) and each stage's factor against it;
4. it extrapolates the formula to ML-20M, Netflix and MSD (the shapes after Liang et al.'s
   preprocessing and each stage's protocol): host and GPU memory, seconds per epoch on these
   cores (the machine model x the stage's factor) and on one H100 (estimated from the FLOPs and
   bytes, ``recsys.training.cost.H100``; never measured here).

Results: ``benchmarks/results/cost_model.json`` (rewritten after every measured size, so a run
stopped by --budget-s keeps what it measured; a rerun skips sizes already measured unless
--fresh) and a Markdown table on stdout.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cost_model.json"
GiB = 2 ** 30
H100_MEMORY = 80 * GiB
SEED = 20


@dataclass(frozen=True)
class Probe:
    stage: str
    model: str
    protocol: str
    config: dict
    sizes: tuple[tuple[int, int], ...]  # (users, items) of the synthetic table
    mean_items_per_user: float
    protocol_params: dict = field(default_factory=dict)
    real_config: dict = field(default_factory=dict)  # overrides for the real datasets' extrapolation
    full_size: str | None = None  # the stage of benchmarks/scale.py measured at the real shapes

    def split_params(self, n_users: int) -> dict:
        params = dict(self.protocol_params)
        if self.protocol == "strong_generalization":
            params.setdefault("n_heldout_users", n_users // 10)
        if self.protocol == "user_split":
            params.setdefault("n_test_users", n_users // 10)
        return params


ONE_EPOCH = {"epochs": 1, "patience": None, "progress": "off"}
RANDOM_SPLIT = {"fractions": [0.7, 0.1, 0.2], "k_core": 10, "seed": 0}
PROBES = {p.model: p for p in [
    Probe("Mult-VAE (600-200, batch 500)", "multvae", "strong_generalization", ONE_EPOCH,
          ((5_000, 4_000), (10_000, 8_000), (20_000, 16_000)), 30, full_size="multvae_epoch"),
    Probe("EASE (float32)", "ease", "strong_generalization", {"dtype": "float32"},
          ((10_000, 3_000), (10_000, 6_000), (10_000, 12_000)), 30, full_size="ease_float32"),
    Probe("TALL (100 experts)", "tall", "random_split", {**ONE_EPOCH, "n_experts": 100, "gate_source": "train_slice"},
          ((1_000, 500), (2_000, 1_000), (4_000, 2_000)), 30, RANDOM_SPLIT),
    Probe("LOCA (100 local Mult-VAEs)", "loca", "random_split", {**ONE_EPOCH, "n_local": 100, "chunk": 100},
          ((1_000, 500), (2_000, 1_000), (4_000, 2_000)), 30, RANDOM_SPLIT),
    Probe("WL", "wl", "random_split", {**ONE_EPOCH, "exponent": 1.5},
          ((4_000, 2_000), (8_000, 4_000), (16_000, 8_000)), 30, RANDOM_SPLIT),
    Probe("LFT (1 local epoch)", "lft", "random_split", {**ONE_EPOCH, "local_epochs": 1, "group": 64},
          ((250, 250), (500, 250), (500, 500)), 30, RANDOM_SPLIT),
    Probe("EnLFT (100 anchors, 1 local epoch)", "enlft", "random_split",
          {**ONE_EPOCH, "n_anchors": 100, "local_epochs": 1}, ((500, 500), (1_000, 500), (1_000, 1_000)), 30, RANDOM_SPLIT),
    Probe("POSIT learner (2bmlp2 adversary)", "tail_learner", "strong_generalization",
          {**ONE_EPOCH, "method": "posit", "ast": "2bmlp2", "batch_size": 1024},
          ((4_000, 2_000), (8_000, 4_000), (16_000, 8_000)), 30),
    Probe("SASRec (max length 200, CE)", "sasrec", "leave_one_out", ONE_EPOCH,
          ((2_000, 1_000), (4_000, 2_000), (8_000, 2_000)), 30),
    Probe("BERT4Rec (max length 200)", "bert4rec", "leave_one_out", ONE_EPOCH,
          ((2_000, 1_000), (4_000, 2_000), (8_000, 2_000)), 30),
    Probe("BaM / REMI (4 interests, 1280 negatives)", "remi", "leave_one_out", {**ONE_EPOCH, "steps_per_epoch": 100},
          ((4_000, 2_000), (8_000, 4_000), (16_000, 8_000)), 30, real_config={"steps_per_epoch": 1000}),
    Probe("MAML++ (BERT4Rec backbone)", "maml_pp", "user_split", {**ONE_EPOCH, "block": 5},
          ((2_000, 1_000), (4_000, 2_000), (8_000, 4_000)), 30, real_config={"block": 50}),
    Probe("MELO (adaptive loss)", "melo", "user_split", {**ONE_EPOCH, "block": 5},
          ((2_000, 1_000), (4_000, 2_000), (8_000, 4_000)), 30, real_config={"block": 50}),
]}

# Published shapes after Liang et al.'s preprocessing, and their held-out users.
DATASETS = {
    "ml-20m": {"n_users": 136_677, "n_items": 20_108, "n_interactions": 10_000_000, "heldout": 10_000},
    "netflix": {"n_users": 463_435, "n_items": 17_769, "n_interactions": 56_880_037, "heldout": 40_000},
    "msd": {"n_users": 571_355, "n_items": 41_140, "n_interactions": 33_633_450, "heldout": 50_000},
}


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what", "machine", "torch", "synthetic_seed", "datasets", "stages", "machine_model"}


def dataset_shape(name: str, protocol: str):
    """The training part's shape of a published dataset under `protocol`."""
    from recsys.training.cost import DataShape, counted_flops

    d = DATASETS[name]
    u, n = d["n_users"], d["n_interactions"]
    if protocol == "leave_one_out":  # every user trains on all but the last two items
        return DataShape(u, d["n_items"], n - 2 * u)
    if protocol == "random_split":  # every user, 70 % of the interactions
        return DataShape(u, d["n_items"], int(0.7 * n))
    train = u - 2 * d["heldout"] if protocol == "strong_generalization" else int(0.85 * (u - d["heldout"]))
    return DataShape(train, d["n_items"], int(n * train / u))


# ----------------------------------------------------------------------------- children


def split_dir(work: Path, probe: Probe, size: tuple[int, int]) -> Path:
    return work / f"{probe.protocol}_{size[0]}x{size[1]}_m{probe.mean_items_per_user:g}_s{SEED}"


def child_make_split(work: Path, model: str, index: int) -> dict:
    from recsys.data import make_synthetic
    from recsys.protocols import make_split

    probe = PROBES[model]
    size = probe.sizes[index]
    out = split_dir(work, probe, size)
    if not (out / "split.json").exists():
        df = make_synthetic(n_users=size[0], n_items=size[1], seed=SEED,
                            mean_items_per_user=probe.mean_items_per_user).df
        make_split(probe.protocol, df, **probe.split_params(size[0])).save(out)
    return {"path": str(out)}


def train_matrix(split):
    """The rows a stage's formula reads: the training part, or for user_split (the meta stage,
    whose tasks are cut from every user's history) all interactions."""
    if "train" in split.matrices:
        return split["train"]
    return split["interactions"]



def child_measure(work: Path, model: str, index: int) -> dict:
    import torch

    import recsys.pipeline.preprocess  # noqa: F401  (a flow step's imports: pandas, scipy; BASE_PROCESS_BYTES counts them)
    from recsys.models.registry import build
    from recsys.protocols import Split
    from recsys.training.cost import DataShape, counted_flops

    probe = PROBES[model]
    split = Split.load(split_dir(work, probe, probe.sizes[index]))
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    m = build(model, **probe.config)
    t0 = time.perf_counter()
    m.fit_split(split, validate=False)
    wall = time.perf_counter() - t0
    seconds = wall  # the whole fit: one epoch, plus one-off phases the formula counts too (measured_fit_cost)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    s = DataShape.from_csr(train_matrix(split))  # the catalogue the model saw (sequential models index their own)
    shape = DataShape(s.n_users, int(getattr(m, "n_items_", s.n_items)), s.nnz, s.len_sq_sum)
    m = build(model, **probe.config)
    with counted_flops() as counter:
        m.fit_split(split, validate=False)
    return {"shape": shape.__dict__, "seconds": seconds, "fit_wall_seconds": wall, "peak_rss_bytes": peak,
            "rss_after_load_bytes": rss_loaded, "counted_dense_flops": float(counter.get_total_flops()),
            "torch_threads": torch.get_num_threads()}


CHILDREN = {"split": child_make_split, "measure": child_measure}


def run_child(kind: str, work: Path, model: str, index: int, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--work", str(work), "--stages", model,
                           "--index", str(index)], capture_output=True, text=True, timeout=timeout)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"{kind} {model} size {index} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


# ----------------------------------------------------------------------------- analysis


def measured_fit_cost(klass, config, shape):
    """The formula of what a probe's fit runs: one main-loop epoch (one local epoch for LFT /
    EnLFT), plus the one-off phases of models that have them (base models, anchors, scoring)."""
    if hasattr(klass, "fit_cost"):
        return klass.fit_cost(config, shape, 1)
    return klass.epoch_cost(config, shape)


def analyse(model: str, measured: list[dict]) -> dict:
    """Formula beside measurement at each size, fitted growth and rate, extrapolation."""
    from recsys.models.registry import get_model
    from recsys.training.cost import H100, DataShape, estimate_seconds, growth_exponent

    probe = PROBES[model]
    klass = get_model(model)
    config = klass.Config.from_dict(probe.config, model) if probe.config else klass.Config()
    rows = []
    for m in measured:
        shape = DataShape(**m["shape"])
        cost = measured_fit_cost(klass, config, shape)
        rows.append({**m, "formula": cost.to_dict(),
                     "counted_over_formula_dense": (m["counted_dense_flops"] / cost.dense_flops
                                                    if cost.dense_flops and m["counted_dense_flops"] else None),
                     "measured_over_formula_rss": m["peak_rss_bytes"] / cost.host_bytes})
    out = {"stage": probe.stage, "protocol": probe.protocol, "config": probe.config, "sizes": rows}
    if len(rows) >= 2:
        scale = [r["shape"]["n_users"] * r["shape"]["n_items"] for r in rows]  # any monotone size works
        flops = [r["formula"]["flops"] for r in rows]
        out["growth"] = {
            "size_variable": "n_users x n_items of the training part",
            "formula_flops": growth_exponent(scale, flops),
            "measured_seconds": growth_exponent(scale, [r["seconds"] for r in rows]),
            "formula_host_bytes": growth_exponent(scale, [r["formula"]["host_bytes"] for r in rows]),
            "measured_rss": growth_exponent(scale, [r["peak_rss_bytes"] for r in rows]),
        }
    real = klass.Config.from_dict({**probe.config, **probe.real_config}, model) if probe.config or probe.real_config \
        else klass.Config()
    out["extrapolated"] = {}
    for name in DATASETS:
        shape = dataset_shape(name, probe.protocol)
        cost = klass.epoch_cost(real, shape)
        one_off = klass.one_off_cost(real, shape) if hasattr(klass, "one_off_cost") else None
        host = max(cost.host_bytes, one_off.host_bytes if one_off else 0)
        device = max(cost.device_bytes, one_off.device_bytes if one_off else 0)
        entry = {"shape": shape.__dict__, "formula": cost.to_dict(), "host_bytes": host, "device_bytes": device,
                 "h100_seconds_estimated": estimate_seconds(cost, H100),
                 "fits_24_gib_host": host <= 24 * GiB, "fits_h100_80gb": device <= H100_MEMORY}
        if one_off is not None:
            entry["one_off"] = one_off.to_dict()
            entry["one_off_h100_seconds_estimated"] = estimate_seconds(one_off, H100)
        scale = ROOT / "benchmarks" / "results" / f"scale_{name}.json"
        if probe.full_size and scale.exists():  # the same stage run at the real shape (benchmarks/scale.py)
            full = json.loads(scale.read_text())["stages"].get(probe.full_size)
            if full and "seconds" in full:
                entry["measured_full_size"] = {"seconds": full["seconds"], "peak_rss_bytes": full["peak_rss_gib"] * GiB,
                                               "source": f"benchmarks/results/{scale.name}"}
        out["extrapolated"][name] = entry
    return out


def fit_machine(record: dict) -> dict:
    """This machine as five costs fitted over every stage's measured sizes (non-negative least
    squares on relative errors): seconds = dense FLOPs / R_dense + sparse FLOPs / R_sparse + bytes
    moved / R_bytes + steps x s_step + s_fit. One model for all stages, so a memory-bound stage (the
    POSIT learner's passes over I x I, REMI's Adam over the item table) is timed by its traffic and
    a many-step one by its per-step cost (Python, kernel launches), not by FLOPs alone. Each stage
    then keeps its own factor, measured / model at its largest size (the one nearest the real
    shapes: small sizes run the BLAS below its rate)."""
    import numpy as np
    from scipy.optimize import nnls

    rows = []
    for res in record["stages"].values():
        for r in res.get("analysis", {}).get("sizes", []):
            f, t = r["formula"], r["seconds"]
            rows.append([f["dense_flops"] / t, (f["flops"] - f["dense_flops"]) / t, f["traffic_bytes"] / t,
                         f["steps"] / t, 1.0 / t])
    coef, _ = nnls(np.asarray(rows), np.ones(len(rows)))
    inv = dict(zip(MACHINE_TERMS, (float(c) for c in coef)))
    rates = {"dense_flops_per_s": inv["dense"], "sparse_flops_per_s": inv["sparse"], "bytes_per_s": inv["bytes"]}
    return {"seconds_per_unit": inv, "rates": {k: (1.0 / v if v > 0 else None) for k, v in rates.items()},
            "seconds_per_step": inv["step"], "seconds_per_fit": inv["fit"], "points": len(rows)}


MACHINE_TERMS = ("dense", "sparse", "bytes", "step", "fit")


def machine_seconds(machine: dict, cost: dict, per_fit: bool = True) -> float:
    inv = machine["seconds_per_unit"]
    return (inv["dense"] * cost["dense_flops"] + inv["sparse"] * (cost["flops"] - cost["dense_flops"])
            + inv["bytes"] * cost["traffic_bytes"] + inv["step"] * cost["steps"] + (inv["fit"] if per_fit else 0.0))


def apply_machine(record: dict) -> None:
    """Per stage: its factor against the machine model and its extrapolated seconds on 2 cores."""
    machine = record["machine_model"] = fit_machine(record)
    for res in record["stages"].values():
        a = res.get("analysis")
        if not a or not a.get("sizes"):
            continue
        ratios = [r["seconds"] / max(machine_seconds(machine, r["formula"]), 1e-12) for r in a["sizes"]]
        a["machine_factor"] = ratios[-1]
        a["machine_ratios"] = ratios
        for e in a["extrapolated"].values():
            e["cpu_seconds"] = a["machine_factor"] * machine_seconds(machine, e["formula"], per_fit=False)
            if "one_off" in e:
                e["one_off_cpu_seconds"] = a["machine_factor"] * machine_seconds(machine, e["one_off"], per_fit=False)


def table(record: dict) -> str:
    """One Markdown row per stage and dataset."""
    lines = ["| stage | dataset | host memory | GPU memory | s / epoch, 2 CPU cores | s / epoch, H100 (est.) | steps |",
             "|---|---|---|---|---|---|---|"]
    for model, res in _in_order(record):
        for name, e in res.get("analysis", {}).get("extrapolated", {}).items():
            f = e["formula"]
            cpu = f"{e['cpu_seconds']:,.0f}" if "cpu_seconds" in e else "-"
            h100 = f"{e['h100_seconds_estimated']:.2f}"
            if "one_off" in e:
                cpu += f" (+{e.get('one_off_cpu_seconds', float('nan')):,.0f} once)"
                h100 += f" (+{e['one_off_h100_seconds_estimated']:.2f} once)"
            lines.append(f"| {res['analysis']['stage']} | {name} | {e['host_bytes'] / GiB:.1f} GiB | "
                         f"{e['device_bytes'] / GiB:.1f} GiB | {cpu} | {h100} | {f['steps']:,} |")
    return "\n".join(lines)


def _in_order(record: dict) -> list[tuple[str, dict]]:
    """Stages in the probes' order (the pipeline's), then any others the JSON holds."""
    stages = record["stages"]
    return [(m, stages[m]) for m in PROBES if m in stages] + [(m, r) for m, r in stages.items() if m not in PROBES]


def _secs(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:,.0f}"


def compact_table(record: dict) -> str:
    """One row per stage, one column per dataset: host / GPU memory, seconds per epoch on 2 cores
    and on an H100 (estimated)."""
    names = list(DATASETS)
    lines = ["| stage | " + " | ".join(f"{n}: host / GPU, s per epoch 2 cores / H100 (est.)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for model, res in _in_order(record):
        a = res.get("analysis")
        if not a:
            continue
        cells = []
        for n in names:
            e = a["extrapolated"][n]
            cpu = _secs(e["cpu_seconds"]) if "cpu_seconds" in e else "-"
            cells.append(f"{e['host_bytes'] / GiB:.1f} / {e['device_bytes'] / GiB:.1f} GiB, {cpu} / "
                         f"{_secs(e['h100_seconds_estimated'])} s")
        lines.append(f"| {a['stage']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def full_size_checks(record: dict) -> str:
    lines = ["| stage | dataset | s / epoch: predicted vs measured | peak RSS: formula vs measured |", "|---|---|---|---|"]
    for model, res in _in_order(record):
        for name, e in res.get("analysis", {}).get("extrapolated", {}).items():
            full = e.get("measured_full_size")
            if full and "cpu_seconds" in e:
                lines.append(f"| {res['analysis']['stage']} | {name} | {e['cpu_seconds']:,.0f} vs {full['seconds']:,.0f} | "
                             f"{e['formula']['host_bytes'] / GiB:.2f} vs {full['peak_rss_bytes'] / GiB:.2f} GiB |")
    return "\n".join(lines)


def checks(record: dict) -> str:
    lines = ["| stage | counted / formula dense FLOPs (3 sizes) | measured / formula peak RSS | growth: formula FLOPs vs measured s | measured / machine-model s |",
             "|---|---|---|---|---|"]
    for model, res in _in_order(record):
        a = res.get("analysis")
        if not a:
            continue
        fl = " / ".join(f"{r['counted_over_formula_dense']:.3f}" if r["counted_over_formula_dense"] else "n/a" for r in a["sizes"])
        rss = " / ".join(f"{r['measured_over_formula_rss']:.2f}" for r in a["sizes"])
        g = a.get("growth", {})
        growth = f"{g['formula_flops']:.2f} vs {g['measured_seconds']:.2f}" if g else "-"
        rate = " / ".join(f"{x:.2f}" for x in a.get("machine_ratios", [])) or "-"
        lines.append(f"| {a['stage']} | {fl} | {rss} | {growth} | {rate} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default=",".join(PROBES))
    ap.add_argument("--work", default="/tmp/recsys_cost")
    ap.add_argument("--budget-s", type=float, default=3600.0, help="stop starting new sizes after this many seconds")
    ap.add_argument("--sizes", type=int, default=3, help="measure only the first N sizes of each probe (a smoke run)")
    ap.add_argument("--fresh", action="store_true", help="measure again sizes the JSON already holds")
    ap.add_argument("--analyse-only", action="store_true", help="recompute formulas and tables from the JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.child:
        print("RESULT " + json.dumps(CHILDREN[args.child](work, args.stages, args.index)))
        return
    from recsys.io import write_json

    stages = args.stages.split(",")
    unknown = [s for s in stages if s not in PROBES]
    if unknown:
        sys.exit(f"--stages: unknown {unknown}; probes: {', '.join(PROBES)}")
    work.mkdir(parents=True, exist_ok=True)
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"stages": {}}
    import torch

    record.update({"what": __doc__.split("\n")[0], "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                   "platform": platform.platform()}, "torch": torch.__version__, "synthetic_seed": SEED,
                   "datasets": DATASETS})
    t_start = time.perf_counter()
    for model in stages:
        entry = record["stages"].setdefault(model, {"measured": []})
        done = {tuple(m["size"]) for m in entry["measured"]} if not args.fresh else set()
        if args.fresh:
            entry["measured"] = []
        for index, size in enumerate(PROBES[model].sizes[:args.sizes]):
            if args.analyse_only or tuple(size) in done:
                continue
            left = args.budget_s - (time.perf_counter() - t_start)
            if left <= 0:
                print(f"budget spent: {model} size {size} not measured", flush=True)
                break
            try:
                run_child("split", work, model, index, timeout=max(left, 60))
                m = run_child("measure", work, model, index, timeout=max(left, 60))
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                print(f"{model} {size}: {err}", flush=True)
                entry.setdefault("failed", []).append({"size": list(size), "error": str(err)[-2000:]})
                break
            m["size"] = list(size)
            entry["measured"] = sorted(entry["measured"] + [m], key=lambda r: r["size"])
            print(f"{model} {size}: {m['seconds']:.2f} s, peak RSS {m['peak_rss_bytes'] / GiB:.2f} GiB, "
                  f"counted {m['counted_dense_flops'] / 1e9:.1f} GFLOP", flush=True)
            entry["analysis"] = analyse(model, entry["measured"])
            write_json(RESULTS, record, indent=1)
        if entry["measured"]:
            entry["analysis"] = analyse(model, entry["measured"])
            write_json(RESULTS, record, indent=1)
    for model, entry in record["stages"].items():  # formulas may have changed since a stage was measured
        if entry.get("measured") and model in PROBES:
            entry["analysis"] = analyse(model, entry["measured"])
    apply_machine(record)
    write_json(RESULTS, record, indent=1)
    mm = record["machine_model"]
    print(f"machine model over {mm['points']} measured fits: "
          + ", ".join(f"{k} {v:.3g}" for k, v in mm["rates"].items() if v)
          + f", {mm['seconds_per_step'] * 1e3:.2f} ms per step, {mm['seconds_per_fit']:.2f} s per fit")
    print(checks(record))
    print()
    print(full_size_checks(record))
    print()
    print(table(record))
    print()
    print(compact_table(record))


if __name__ == "__main__":
    main()
