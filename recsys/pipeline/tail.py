"""Adversarial tail stage (POSIT): every method x seed on one strong-generalisation split,
evaluated on accuracy and on how widely the recommendations spread. ``flows/tail_flow.py`` and
``notebooks/train_common.ipynb`` call these functions (the stage contract's methods, :class:`TailStage`):

    settings = load_settings(dataset, override)
    prepared = prepare(dataset, settings, output_dir=...)
    configs = method_configs(settings, methods, params_string)   # checked before any training
    result = run_one(prepared.path, method, configs[method], seed, out_dir)
    rows = aggregate({(method, seed): result, ...})               # mean +- std over seeds

Metrics (test users, fold-in items excluded from the ranking): NDCG@100, Recall@{20,50,100} with
denominator min(k, |held-out|) (POSIT / Liang et al.), Item Recall@{20,50,100} (per item: share
of its held-out occurrences ranked in the top-k, averaged over items held out at least once) and
Coverage@{20,50,100} (distinct items in the union of the top-k lists of each block of 100 test
users, averaged over full blocks).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recsys.errors import ConfigError
from recsys.pipeline.report import write_task_result
from recsys.pipeline.catalog import TAIL_METHODS, TAIL_PARAM_STRING_METHOD
from recsys.pipeline.checkpoints import task_checkpoints
from recsys.training.memory import Heartbeat, MemoryLedger, last_heartbeat
from recsys.pipeline.settings import comma_list
from recsys.pipeline.preprocess import figure_png
from recsys.pipeline.evidence import Metric, beyond_metrics, save_per_user
from recsys.pipeline.catalog import STAGE_REFERENCES
from recsys.pipeline.stage import Stage, Task, parse_seeds

METHODS = tuple(TAIL_METHODS)
KS = (20, 50, 100)
COVERAGE_BLOCK = 100
TABLE_KEYS = ("ndcg@100", "recall@20", "recall@50", "recall@100", "item_recall@20", "item_recall@50",
              "item_recall@100", "coverage@20", "coverage@50", "coverage@100")
DEFINITIONS = {
    "ndcg@100": "NDCG@100 per test user, binary relevance, mean over users with a held-out item",
    "recall@k": "hits in the top-k / min(k, |held-out items|) per user (POSIT / Liang et al.)",
    "item_recall@k": "per item: share of its held-out occurrences ranked in that user's top-k; "
                     "mean over items held out at least once",
    "coverage@k": f"distinct items in the union of the top-k lists of each block of {COVERAGE_BLOCK} test users "
                  f"(in split order), mean over full blocks",
    "ranking": "fold-in items are excluded from every top-k",
    "beyond": "catalog_coverage@k, gini@k, entropy@k, arp@k, aplt@k, novelty@k of the test users' top-k lists, "
              "popularity from the training users (recsys/metrics/beyond.py; docs/metrics.md, Beyond accuracy)",
}
_KEYS = {"protocol", "threshold", "dataset", "params", "seeds", "device", "learner", "methods", "reference"}
# what the table tests against the reference (EASE, as in POSIT's paper): accuracy per user,
# coverage per seed (a set-level metric has no per-user value)
EVIDENCE = (Metric("ndcg@100"), Metric("recall@100"),
            Metric("coverage@100", scalar=lambda r: r["test"]["coverage@100"]))


def method_configs(settings: Mapping[str, Any], methods: str | list[str] | None = None,
                   params_string: str | None = None) -> dict[str, dict]:
    """Per method: ``{"model": registry name, "config": dict}``, each built once here so that an
    unknown method or a bad value stops the run before any training.

    `params_string`: a published POSIT parameter string; its fields override the ``posit``
    method's settings (and are ignored by the other methods).
    """
    from recsys.checks import unknown_key_error
    from recsys.models.registry import build, get_model
    from recsys.models.tail.params import ParamString

    configured = dict(settings.get("methods") or {})
    wanted = comma_list(methods) if isinstance(methods, str) else list(methods or configured)
    for name in wanted:
        if name not in METHODS:
            raise unknown_key_error(name, METHODS, "tail method")
    if not wanted:
        raise ConfigError("no methods to run: pass --methods or list them under 'methods:' in the params file")
    overrides = {}
    if params_string:
        p = ParamString.parse(params_string)
        if p.method_name != "posit":
            raise ConfigError(f"parameter string method {p.method!r} is not POSIT's 'itemarl_metric'")
        overrides = {"lr": p.lr, "alr": p.alr, "weight_decay": p.wd, "nstd": p.nstd, "awd": p.awd, "ast": p.ast,
                     "aloss": p.aloss, "ones": p.ones, "lam": p.lam, "loss": p.loss}
    out = {}
    for name in wanted:
        method = TAIL_METHODS[name]
        model = method.model
        shared = dict(settings.get(method.shared) or {}) if method.shared else {}
        config = {**shared, **dict(configured.get(name) or {}), **method.fixed}
        if name == TAIL_PARAM_STRING_METHOD:
            config.update(overrides)
        if settings.get("device") and get_model(model).uses_device:
            config.setdefault("device", settings["device"])
        try:
            build(model, **config)
        except ConfigError as exc:
            raise ConfigError(f"tail method {name!r}: {exc}") from None
        out[name] = {"model": model, "config": config}
    return out


def test_metrics(model, split, per_user: dict | None = None) -> dict[str, float]:
    """The stage's metrics (module docstring) of a fitted model on the split's test users; with
    `per_user` (a dict) also fills it with ``users`` and ``metrics`` (NDCG@100, Recall@k per user)."""
    from recsys.metrics.coverage import coverage_at_k, item_recall_at_k

    inputs, target = split["test_fold_in"], split["test_holdout"]
    ks = KS
    if split.n_items < max(ks):
        raise ConfigError(f"the tail stage reports metrics at k = {ks}, but the split has only {split.n_items} items; "
                          f"use a dataset with at least {max(ks)} items")
    result = model.evaluate(inputs, target, recall_denominator="min", ks=ks, metrics=("ndcg", "recall"),
                            keep_topk=True)
    mean = result.mean()
    out = {"ndcg@100": mean["ndcg@100"]}
    out.update({f"recall@{k}": mean[f"recall@{k}"] for k in ks})
    for k in ks:
        out[f"item_recall@{k}"] = item_recall_at_k(result.topk, target[result.users], split.n_items, k,
                                                   denominator="none").mean()
    block = min(COVERAGE_BLOCK, len(result.users))
    for k in ks:
        out[f"coverage@{k}"] = coverage_at_k(result.topk, k, block) if block else float("nan")
    out.update(beyond_metrics(result, split["train"], ks))
    out["n_test_users"] = int(len(result.users))
    out["coverage_block"] = int(block)
    if per_user is not None:
        per_user.update(users=result.users, metrics=dict(result.per_user))
    return out


def memory_plan(split_path, specs: Mapping[str, Mapping[str, Any]], *, limit: int | None = None,
                log=print) -> dict[str, int]:
    """Each method's estimated peak memory on this split, checked before any training starts: a
    method that can never fit stops the run here with one line (task, estimate, limit, fixes); the
    methods that fit only one at a time are named (their tasks then queue in the memory ledger)."""
    from recsys.models.registry import get_model
    from recsys.protocols import Split
    from recsys.training.memory import MemoryBudgetError, fixes, fmt, host_limit

    split = Split.load(split_path)
    shape, nnz = split["train"].shape, split["train"].nnz
    limit = host_limit() if limit is None else limit
    out = {}
    for method, spec in specs.items():
        klass = get_model(spec["model"])
        out[method] = int(klass.peak_memory(klass.Config.from_dict(dict(spec["config"]), spec["model"]), *shape, nnz))
        if out[method] > limit:
            raise MemoryBudgetError(f"tail task {method}: needs about {fmt(out[method])} of memory on this split "
                                    f"({shape[1]:,} items), this machine grants {fmt(limit)}; it cannot run here. "
                                    f"Fix: {fixes()}")
    big = sorted(out.values(), reverse=True)
    lone = [m for m, b in out.items() if len(big) > 1 and b + big[1 if b == big[0] else 0] > limit]
    log("memory per task (estimated): " + ", ".join(f"{m} {fmt(b)}" for m, b in out.items())
        + f"; limit {fmt(limit)}" + (f"; {', '.join(lone)} fit only one at a time: those tasks will queue" if lone else ""))
    need = cloud_memory_mb(max(out.values()))
    if need > DECLARED_MEMORY_MB:
        log(f"cloud runs: the train step declares @resources(memory={DECLARED_MEMORY_MB}); this split needs about "
            f"{need} MB per task: add --with kubernetes:memory={need} (or batch:memory={need})")
    return out


DECLARED_MEMORY_MB = 16000  # flows/tail_flow.py's @resources(memory=...) on the train step


def cloud_memory_mb(estimate_bytes: int) -> int:
    """A container size for a task estimated at `estimate_bytes`: 15 % headroom, in MB."""
    return int(math.ceil(estimate_bytes * 1.15 / 1e6))


def run_one(split_path, method: str, spec: Mapping[str, Any], seed: int, out_dir, *, device: str | None = None,
            save_model: bool = True, checkpoint_dir=None, memory_dir=None) -> dict:
    """Fit one method with one seed, evaluate on the test users, write ``model.pt`` and
    ``result.json`` under `out_dir` (atomically). Returns the JSON-serialisable result."""
    import torch

    from recsys.models.registry import build
    from recsys.protocols import Split

    split = Split.load(split_path)
    config = {**dict(spec["config"]), "seed": int(seed)}
    if device is not None:
        config["device"] = device
    model = build(spec["model"], **config)
    valid = (split["valid_fold_in"], split["valid_holdout"])
    out = Path(out_dir)
    task = f"tail task {method} seed {seed}"
    estimate = type(model).peak_memory(model.config, *split["train"].shape, split["train"].nnz)
    beat = out / "heartbeat.json"
    killed = last_heartbeat(beat)
    if killed:
        print(killed, file=sys.stderr, flush=True)
    start = time.perf_counter()
    # memory_dir: tasks of one run on one machine share its memory there (refuse what never fits,
    # queue what fits only alone); before any training starts
    ledger = MemoryLedger(memory_dir) if memory_dir is not None else None
    with (ledger.reserve(task, estimate) if ledger else contextlib.nullcontext()), \
            Heartbeat(beat, task) as hb, task_checkpoints(model, checkpoint_dir, f"{method}.seed{seed}"):
        held = [time.time()]  # wall-clock span the task held its memory (tasks queued one after another)
        model.fit(split["train"], valid if model.takes_validation else None)
        held.append(time.time())
    seconds = time.perf_counter() - start
    per_user: dict = {}
    metrics = test_metrics(model, split, per_user)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "method": method,
        "model": spec["model"],
        "seed": int(seed),
        "config": model.config.to_dict(),
        "test": metrics,
        "train_seconds": seconds,
        "memory": {"estimate_bytes": int(estimate), "peak_rss_bytes": int(hb.peak), "held": held},
        "epochs": len(getattr(model, "history_", [])) or None,
        "best_epoch": getattr(model, "best_epoch_", None),
        "history": getattr(model, "history_", []),
        "device": str(model.device),
        "protocol": {"name": split.protocol, "split_seed": split.seed, "params": split.params,
                     "n_users": split.n_users, "n_items": split.n_items},
        "definitions": DEFINITIONS,
        "torch": torch.__version__,
        # per test user: a paired comparison can be recomputed later without retraining
        "per_user": save_per_user(out, per_user["users"], per_user["metrics"]),
    }
    return write_task_result(out, result, model if save_model else None)


def aggregate(results: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[dict]:
    """One row per method: mean and std (sample std, 0 with one seed) of every test metric over seeds."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for (method, _seed), r in sorted(results.items(), key=lambda kv: (METHODS.index(kv[0][0])
                                                                      if kv[0][0] in METHODS else 99, kv[0][1])):
        by_method.setdefault(method, []).append(r)
    rows = []
    for method, runs in by_method.items():
        row: dict[str, Any] = {"method": method, "seeds": [r["seed"] for r in runs]}
        for key in TABLE_KEYS:
            vals = np.array([r["test"].get(key, np.nan) for r in runs], dtype=float)
            if np.isnan(vals).all():
                continue
            row[key] = float(vals.mean())
            row[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        row["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
        rows.append(row)
    return rows


def _cell(row: Mapping[str, Any], key: str) -> str:
    if key not in row:
        return "-"
    if key.startswith("coverage"):
        return f"{row[key]:.1f} ± {row[key + '_std']:.1f}"
    return f"{row[key]:.4f} ± {row[key + '_std']:.4f}"


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) for a card, a notebook or the README."""
    keys = [k for k in TABLE_KEYS if any(k in r for r in rows)]
    return ["method", *keys, "train s"], [[r["method"], *[_cell(r, k) for k in keys], f"{r['train_seconds']:.1f}"]
                                          for r in rows]


def coverage_plot_png(rows: list[dict], k: int = 100, evidence: Mapping[str, Any] | None = None) -> bytes:
    """Scatter of Coverage@k (x) against NDCG@100 (y) per method: with `evidence`
    (:meth:`TailStage.evidence`) its 95 % intervals as bars and ``*`` after a method whose
    difference to the reference is significant on that axis; else +-std bars over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cov, acc = f"coverage@{k}", "ndcg@100"
    tables = (evidence or {}).get("metrics", {})

    def bar(metric, r):
        e = tables.get(metric, {}).get(r["method"]) or {}
        if e.get("ci"):
            return [[max(0.0, r[metric] - e["ci"][0])], [max(0.0, e["ci"][1] - r[metric])]], \
                bool((e.get("vs") or {}).get("significant"))
        return r[f"{metric}_std"], False

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        (xerr, xsig), (yerr, ysig) = bar(cov, r), bar(acc, r)
        ax.errorbar(r[cov], r[acc], xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=r["method"])
        mark = (" *cov" if xsig else "") + (" *ndcg" if ysig else "")
        ax.annotate(r["method"] + mark, (r[cov], r[acc]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    bars = "95 % intervals; * significant vs the reference" if tables else "± std over seeds"
    ax.set_title(bars, fontsize=8)
    ax.set_xlabel(f"Coverage@{k} (distinct items per {COVERAGE_BLOCK} test users)")
    ax.set_ylabel(f"test {acc.upper()}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


class TailStage(Stage):
    """Every tail method x seed on one strong-generalisation split (POSIT's protocol)."""

    name = label = "tail"
    protocol, whose = "strong_generalization", "POSIT's"
    keys = frozenset(_KEYS)
    mappings = ("methods", "learner")
    reference = STAGE_REFERENCES["tail"]

    def evidence_metrics(self, settings, results):
        return list(EVIDENCE)

    def plan(self, settings: Mapping[str, Any], *, methods=None, params_string=None, seeds=None) -> list[Task]:
        """Method x seed, method-major (``method_configs`` checks every method first)."""
        specs = method_configs(settings, methods, params_string)
        seeds = parse_seeds(seeds if seeds is not None else settings.get("seeds", [0]))
        return [Task(method, seed, spec) for method, spec in specs.items() for seed in seeds]

    def run_task(self, split_path, task: Task, out_dir, **options: Any) -> dict:
        return run_one(split_path, task.key, task.spec, task.seed, out_dir, **options)

    def summary(self, result: Mapping[str, Any]) -> str:
        return (f"NDCG@100 {result['test'].get('ndcg@100', math.nan):.4f}, "
                f"Coverage@100 {result['test'].get('coverage@100', math.nan):.1f}")

    def aggregate(self, results):
        return aggregate(results)

    def table(self, rows):
        return table(rows)

    def plot_png(self, rows, **context):
        return coverage_plot_png(rows, evidence=context.get("evidence"))


STAGE = TailStage()
# the stage's methods under the names the flow, the notebook and the benchmarks call
load_settings, prepare, default_run_dir, format_table, run_all = (
    STAGE.load_settings, STAGE.prepare, STAGE.default_run_dir, STAGE.format_table, STAGE.run_all)
