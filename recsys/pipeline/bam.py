"""Multi-interest stage (BaM): MIND, ComiRec-SA and REMI x {hard, BaM_p, BaM_l} on one leave-one-out
split, against most-popular (and any other sequence baseline configured). ``flows/bam_flow.py`` and
``notebooks/bam.ipynb`` call these functions (the stage contract's methods, :class:`BamStage`)::

    settings = load_settings(dataset, override)
    specs = task_specs(settings, models, selections, tau=..., linear_size=..., multi_loss=..., seed=...)
    prepared = prepare(dataset, settings, output_dir=...)           # the split, saved
    baselines = run_baselines(prepared.path, settings)              # most-popular, ...
    result = run_task(prepared.path, key, specs[key], out_dir)      # one (model, selection)
    rows = table_rows(results, baselines)

Metrics (test: seq[-1] given seq[:-1]; one target per user): Recall@{10,20} (= hit rate) and
NDCG@{10,20}, full ranking over all items, item score = max over interests, history items excluded
(``upstream.history_zero_upstream: true``: scored 0 instead, as BaM's code does; every result also
carries the test metrics under the other history rule). Interest balance per task: the share of
test targets each interest is *selected* for (the task's selection rule), is the *best* (highest
scoring) interest for, and the share of test hits (top-20) each interest produces, with entropies.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recsys.checks import unknown_key_error
from recsys.errors import ConfigError
from recsys.pipeline.catalog import BAM_BASELINES, BAM_MODELS, BAM_SELECTIONS
from recsys.pipeline.report import write_task_result
from recsys.pipeline.preprocess import figure_png
from recsys.pipeline.settings import comma_list
from recsys.pipeline.evidence import Metric, beyond_metrics, method_of, save_per_user
from recsys.pipeline.catalog import STAGE_REFERENCES
from recsys.pipeline.stage import Stage, Task, parse_seeds

MODELS = BAM_MODELS
SELECTIONS = BAM_SELECTIONS
PROTOCOL = "leave_one_out"
KS = (10, 20)
TABLE_KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
SELECTION_NAMES = {"hard": "hard (prior work)", "p": "BaM_p", "l": "BaM_l"}
DEFINITIONS = {
    "recall@k": "1 if the user's held-out item is in the top-k, else 0 (= HR@k with one target); mean over users",
    "ndcg@k": "1 / log2(rank + 1) of the held-out item if it is in the top-k, else 0; mean over users",
    "ranking": "all items ranked by max over interests of <interest, item>; history items excluded "
               "(history_zero_upstream: scored 0, as BaM's code)",
    "balance": "selected: share of test targets the selection rule assigns to each interest; best: share for "
               "which each interest scores the target highest; hit_share@20: share of top-20 hits each "
               "interest produces; entropies in nats, ln K = perfect balance",
}
_KEYS = {"protocol", "threshold", "params", "dataset", "models", "selections", "seed", "train", "per_model",
         "per_selection", "upstream", "baselines", "device", "balance_k", "reference"}
_UPSTREAM = ("history_zero_upstream", "valid_resample", "accidental_hits_upstream", "positions_upstream")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_bool(name: str, value: Any) -> bool | None:
    """A flag given on a command line: True / False, or None for "" / "auto" (the params file's value).

    Strict, unlike BaM's ``argparse type=bool`` (where ``--multi_loss False`` is True)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false (or auto: the params file's value), got {value!r}")


def _names(value: Any, accepted: tuple[str, ...], what: str, default: list[str]) -> list[str]:
    items = comma_list(value) if isinstance(value, str) else list(value or [])
    items = items or list(default)
    for item in items:
        if item not in accepted:
            raise unknown_key_error(str(item), accepted, what)
    if not items:
        raise ConfigError(f"no {what}s to run; choose from {', '.join(accepted)}")
    return list(dict.fromkeys(items))


def task_specs(settings: Mapping[str, Any], models: Any = None, selections: Any = None, *, tau: float | None = None,
               linear_size: int | None = None, multi_loss: bool | None = None, seed: int | None = None,
               overrides: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """``{"remi/p": {"model": "remi", "selection": "p", "config": {...}}, ...}``: every requested
    (model, selection), each config built once here so that a bad value stops before training.

    Config = ``train`` < ``per_model[model]`` < ``per_selection[selection]`` < ``upstream`` <
    the explicit arguments (``tau``, ``linear_size``, ``multi_loss``, ``seed``) < `overrides`."""
    from recsys.models.registry import build

    models = _names(models, MODELS, "BaM model", settings.get("models") or list(MODELS))
    selections = _names(selections, SELECTIONS, "BaM selection", settings.get("selections") or list(SELECTIONS))
    explicit = {k: v for k, v in (("tau", tau), ("linear_size", linear_size), ("multi_loss", multi_loss),
                                  ("seed", seed if seed is not None else settings.get("seed"))) if v is not None}
    out = {}
    for model in models:
        for selection in selections:
            config = {**dict(settings.get("train") or {}),
                      **dict((settings.get("per_model") or {}).get(model) or {}),
                      **dict((settings.get("per_selection") or {}).get(selection) or {}),
                      **dict(settings.get("upstream") or {}),
                      **explicit, **dict(overrides or {}), "selection": selection}
            if settings.get("device"):
                config.setdefault("device", settings["device"])
            key = f"{model}/{selection}"
            try:
                build(model, **config)
            except ConfigError as exc:
                raise ConfigError(f"BaM task {key!r}: {exc}") from None
            out[key] = {"model": model, "selection": selection, "config": config}
    return out


def _protocol(split) -> dict:
    return {"name": split.protocol, "split_seed": split.seed, "params": split.params, "n_users": split.n_users,
            "n_items": split.n_items, "n_interactions": split.stats.get("n_interactions")}


def run_baselines(split_path, settings: Mapping[str, Any], *, device: str | None = None,
                  out_dir=None) -> dict[str, dict]:
    """Each configured baseline (default most-popular) fitted on the training part and evaluated on
    the test stage with the same metrics; sequence models (SASRec, ...) validate on seq[-2]. With
    `out_dir`, each baseline's test users' values go to ``<out_dir>/<name>.per_user.npz``."""
    from recsys.models.registry import build, get_model
    from recsys.protocols import Split

    split = Split.load(split_path)
    out = {}
    for name, config in (settings.get("baselines") or BAM_BASELINES).items():
        config = dict(config or {})
        if device is not None and get_model(name).uses_device:
            config["device"] = device
        start = time.perf_counter()
        model = build(name, **config)
        model.fit_split(split)
        # with one held-out item per user, recall@k (denominator n = 1) is HR@k
        res = model.evaluate_split(split, "test", ks=KS, metrics=("recall", "ndcg"), recall_denominator="n",
                                   keep_topk=True)
        out[name] = {"model": name, "config": model.config.to_dict(),
                     "test": {**res.mean(), **beyond_metrics(res, split["train"], KS)},
                     "train_seconds": time.perf_counter() - start, "protocol": _protocol(split),
                     "per_user": None if out_dir is None else save_per_user(
                         out_dir, res.users, res.per_user, name=f"{name}.per_user.npz")}
    return out


def run_task(split_path, key: str, spec: Mapping[str, Any], out_dir, *, device: str | None = None,
             save_model: bool = True, checkpoint_dir=None, balance_k: int = 20) -> dict:
    """Fit one (model, selection), evaluate it (valid and test, both history rules), measure its
    interest balance; write ``model.pt`` and ``result.json`` under `out_dir` (atomically)."""
    import torch

    from recsys.models.registry import build
    from recsys.pipeline.checkpoints import task_checkpoints
    from recsys.protocols import Split

    split = Split.load(split_path)
    config = dict(spec["config"])
    if device is not None:
        config["device"] = device
    model = build(spec["model"], **config)
    start = time.perf_counter()
    tag = key.replace("/", ".") + (f".seed{spec['seed']}" if spec.get("seed") is not None else "")
    with task_checkpoints(model, checkpoint_dir, tag):
        model.fit(split)
    seconds = time.perf_counter() - start
    t = time.perf_counter()
    hz = model.config.history_zero_upstream
    evaluated = {rule: model.evaluate(split, "test", ks=KS, history_zero=rule == "zero", keep_topk=True)
                 for rule in ("masked", "zero")}
    by_rule = {rule: {**res.mean(), **beyond_metrics(res, split["train"], KS)} for rule, res in evaluated.items()}
    chosen = evaluated["zero" if hz else "masked"]
    eval_seconds = time.perf_counter() - t
    result = {
        "key": key, "model": spec["model"], "selection": spec["selection"], "seed": spec.get("seed"),
        "config": model.config.to_dict(),
        "test": by_rule["zero" if hz else "masked"],
        "test_by_history_rule": by_rule,
        "valid": model.evaluate(split, "valid", ks=KS).mean(),
        "balance": model.interest_balance(split, "test", k=balance_k, seed=model.config.seed),
        "train_seconds": seconds, "test_eval_seconds": eval_seconds,
        "steps": model.steps_, "epochs": len(model.history_), "best_epoch": model.best_epoch_,
        "best_step": model.best_epoch_ * model.config.steps_per_epoch, "stop_reason": model.stop_reason_,
        "history": model.history_, "device": str(model.device), "protocol": _protocol(split),
        "definitions": DEFINITIONS, "torch": torch.__version__,
        "per_user": save_per_user(out_dir, chosen.users, chosen.per_user),
    }
    return write_task_result(out_dir, result, model if save_model else None)


def table_rows(results: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]] | None = None
               ) -> list[dict]:
    """One row per baseline, then per (model, selection) in MODELS x SELECTIONS order."""
    rows = []
    for name, b in (baselines or {}).items():
        rows.append({"method": name, **{k: b["test"].get(k, math.nan) for k in TABLE_KEYS},
                     "train_seconds": b.get("train_seconds", math.nan)})
    order = {f"{m}/{s}": i for i, (m, s) in enumerate((m, s) for m in MODELS for s in SELECTIONS)}
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for key, r in results.items():  # keys "<model>/<selection>", or (that, seed) with --seeds
        by_key.setdefault(method_of(key), []).append(r)

    def mean(runs, get):
        vals = [get(r) for r in runs]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else math.nan

    for key, runs in sorted(by_key.items(), key=lambda kv: order.get(kv[0], 99)):
        bal = lambda r: r.get("balance") or {}
        row = {"method": key, **{k: mean(runs, lambda r: r["test"].get(k, math.nan)) for k in TABLE_KEYS},
               **{k: mean(runs, lambda r: bal(r).get(k, math.nan))
                  for k in ("entropy_selected", "entropy_best", "entropy_hit_share")},
               "steps": runs[0].get("steps") if len(runs) == 1 else mean(runs, lambda r: r.get("steps")),
               "best_step": runs[0].get("best_step") if len(runs) == 1 else mean(runs, lambda r: r.get("best_step")),
               "train_seconds": mean(runs, lambda r: r.get("train_seconds", math.nan))}
        if len(runs) > 1:
            row["seeds"] = len(runs)
        rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):,}"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) for a card, a notebook or the README."""
    headers = ["method", *TABLE_KEYS, "H(selected)", "H(best)", "H(hits)", "steps", "best step", "train s"]
    cells = []
    for r in rows:
        cells.append([r["method"], *[_fmt(r.get(k)) for k in TABLE_KEYS],
                      *[_fmt(r.get(k)) for k in ("entropy_selected", "entropy_best", "entropy_hit_share")],
                      _fmt(r.get("steps")), _fmt(r.get("best_step")), f"{r.get('train_seconds', math.nan):.1f}"])
    return headers, cells


def usage_plot_png(results: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Interest-usage histograms, one column per selection: top, the share of test targets each
    interest is selected for; bottom, the share of top-k hits each interest produces; one bar
    group per interest, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {method_of(k): r for k, r in results.items()}  # with --seeds: the last seed's usage
    selections = [s for s in SELECTIONS if any(r["selection"] == s for r in results.values())]
    models = [m for m in MODELS if any(r["model"] == m for r in results.values())]
    fig, axes = plt.subplots(2, max(len(selections), 1), figsize=(4.2 * max(len(selections), 1), 6), squeeze=False)
    for j, sel in enumerate(selections):
        for i, (what, label) in enumerate((("selected", "share of test targets selected"),
                                           (None, "share of test hits produced"))):
            ax = axes[i][j]
            width = 0.8 / max(len(models), 1)
            for m_i, model in enumerate(models):
                r = results.get(f"{model}/{sel}")
                if r is None:
                    continue
                bal = r["balance"]
                share = bal[what] if what else bal[f"hit_share@{bal['k']}"]
                x = np.arange(len(share)) + (m_i - (len(models) - 1) / 2) * width
                ax.bar(x, share, width, label=f"{model} (H={bal['entropy_' + (what or 'hit_share')]:.2f})")
            ax.set_xlabel("interest")
            ax.set_ylabel(label)
            ax.set_title(SELECTION_NAMES[sel])
            ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the bars
            ax.legend(fontsize=7, loc="upper center", ncol=min(len(models), 3))
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


class BamStage(Stage):
    """Every (model, selection) on one leave-one-out split, beside the baselines; one training seed
    (the settings' ``seed``), as the BaM paper runs it. Settings layout::

        protocol: leave_one_out
        threshold: null                  # every interaction is a positive
        params: {k_core: 0}              # leave_one_out parameters
        models: [mind, comirec, remi]    # run by default
        selections: [hard, p, l]
        seed: 2021
        train: {seq_len: 200, n_interests: 4, hidden: 64, n_negatives: 1280, batch_size: 128, lr: 0.001,
                steps_per_epoch: 1000, epochs: 1000, patience: 15, valid_users: 1000, tau: 1.0, linear_size: 16}
        per_model: {mind: {seq_len: 100}, remi: {beta: 0.01, rr_lambda: 100.0}}
        per_selection: {hard: {multi_loss: false}, p: {multi_loss: true}, l: {multi_loss: true}}
        upstream: {history_zero_upstream: false, valid_resample: false, accidental_hits_upstream: false,
                   positions_upstream: false}
        baselines: {mostpop: {}}
    """

    name, label = "bam", "BaM"
    protocol, whose = PROTOCOL, "BaM's"
    keys = frozenset(_KEYS)
    mappings = ("train", "per_model", "per_selection", "upstream", "baselines", "params", "dataset")
    required = "models"

    def check_settings(self, settings: dict) -> dict:
        for key in settings.get("upstream") or {}:
            if key not in _UPSTREAM:
                raise unknown_key_error(key, _UPSTREAM, "upstream switch")
        return settings

    reference = STAGE_REFERENCES["bam"]

    def plan(self, settings: Mapping[str, Any], *, models=None, selections=None, tau=None, linear_size=None,
             multi_loss=None, seed=None, seeds=None) -> list[Task]:
        """One task per (model, selection); with `seeds` (``--seeds 0,1,2``) one per seed too."""
        from recsys.models.base import Model

        for name in settings.get("baselines") or BAM_BASELINES:  # any model that trains on this split
            self.require(f"baseline {name!r}", name, Model)
        specs = task_specs(settings, models, selections, tau=tau, linear_size=linear_size, multi_loss=multi_loss,
                           seed=seed)
        if seeds in (None, "", []):
            return [Task(key, None, spec) for key, spec in specs.items()]
        return [Task(key, s, {**spec, "seed": s, "config": {**spec["config"], "seed": s}})
                for key, spec in specs.items() for s in parse_seeds(seeds)]

    def evidence_metrics(self, settings, results):
        return [Metric("recall@20"), Metric("ndcg@20")]

    def reference_of(self, settings, results=None):
        """Each (model, selection) against the same model's hard selection."""
        from recsys.pipeline.evidence import method_of

        ref = (settings or {}).get("reference") or self.reference
        keys = {method_of(k) for k in (results or {})}

        def of(key: str) -> str | None:
            target = f"{key.split('/')[0]}/{ref}" if "/" in key else None
            return target if target in keys else None

        return of

    def run_task(self, split_path, task: Task, out_dir, **options: Any) -> dict:
        return run_task(split_path, task.key, task.spec, out_dir, **options)

    def task_options(self, settings: Mapping[str, Any]) -> dict:
        return {"balance_k": int(settings.get("balance_k", 20))}

    def summary(self, result: Mapping[str, Any]) -> str:
        return (f"Recall@20 {result['test']['recall@20']:.4f}, NDCG@20 {result['test']['ndcg@20']:.4f}, "
                f"H(selected) {result['balance']['entropy_selected']:.3f}")

    def aggregate(self, results):
        return table_rows(results)

    def table(self, rows):
        return table(rows)

    def plot_png(self, rows, **context):
        return usage_plot_png(context["results"]) if context.get("results") else None

    def run_all(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir, progress=print,
                **choices: Any) -> dict:
        """The notebook's path: the same calls the flow runs as steps (baselines first)."""
        out = Path(output_dir)
        tasks = self.plan(settings, **choices)
        prepared = self.prepare(dataset, settings, data_dir=data_dir, output_dir=out / "split")
        baselines = run_baselines(prepared.path, settings, out_dir=out / "baselines")
        results = self.run_tasks(prepared.path, tasks, out, settings, progress=progress)
        return {"split": str(prepared.path), "split_sha256": prepared.sha256, "stats": prepared.stats,
                "specs": {t.key: dict(t.spec) for t in tasks}, "baselines": baselines, "results": results,
                "rows": table_rows(results, baselines), "evidence": self.evidence({**baselines, **results}, settings)}


STAGE = BamStage()
# the stage's methods under the names the flow, the notebook and the benchmarks call
load_settings, prepare, default_run_dir, format_table, run_all = (
    STAGE.load_settings, STAGE.prepare, STAGE.default_run_dir, STAGE.format_table, STAGE.run_all)
