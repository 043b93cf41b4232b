"""Meta-learning stage (MELO): cold-start rating prediction on held-out users, every
(backbone, method, seed) on one user_split. ``flows/meta_flow.py`` and ``notebooks/meta.ipynb``
call these functions (the stage contract's methods, :class:`MetaStage`)::

    settings = load_settings(dataset, override)
    specs = run_specs(settings, backbones, methods, pretrained)   # every config checked before training
    prepared = prepare(dataset, settings, output_dir=...)          # the split, its rating statistics
    result = run_one(prepared.path, key, specs[key], seed, out_dir)
    rows = aggregate({(key, seed): result, ...})                   # mean +- std over seeds

Methods: ``global_mean`` (one row, no backbone), ``basic`` (the backbone trained on the rating
objective), ``maml``, ``maml_pp`` (MAML++ as MELO runs it: the paper's "MAML" column), ``melo``;
backbones ``gru4rec``, ``narm``, ``sasrec``, ``bert4rec`` (MELO's sizes, see
:mod:`recsys.models.meta.backbones`). Metrics: RMSE and MAE of the test users' last ratings, overall
and per true rating value 1..5, each test user being one task (its most recent window; the
prediction is the mean over its query suffixes of the last position's rating, after adaptation
to its support set for the meta-learners).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recsys.checks import unknown_key_error
from recsys.errors import ConfigError, DataError
from recsys.pipeline.catalog import META_BACKBONES, META_METHODS
from recsys.pipeline.report import write_task_result
from recsys.pipeline.checkpoints import task_checkpoints
from recsys.pipeline.preprocess import default_output_root, figure_png
from recsys.pipeline.settings import comma_list
from recsys.pipeline.evidence import Metric, save_per_user
from recsys.pipeline.catalog import STAGE_REFERENCES
from recsys.pipeline.stage import Stage, Task, parse_seeds

METHODS = tuple(META_METHODS)
BACKBONES = META_BACKBONES
RATING_VALUES = (1, 2, 3, 4, 5)
NO_BACKBONE = "-"
_KEYS = {"protocol", "dataset", "dedupe", "params", "tasks", "evaluation", "seeds", "device", "backbones", "meta",
         "methods", "pretrained", "reference"}
# tested per user on the squared / absolute errors of the test tasks (RMSE's interval is the
# square root of the squared errors' one), against the same backbone's reference method
EVIDENCE = (Metric("se", label="RMSE", lower_better=True, transform=math.sqrt, scalar=lambda r: r["test"]["rmse"]),
            Metric("ae", label="MAE", lower_better=True, scalar=lambda r: r["test"]["mae"]))
_MAPPINGS = ("methods", "backbones", "meta", "tasks", "evaluation", "params", "dataset")
DEFINITIONS = {
    "task": "one held-out user: the most recent window (<= max_len items); support = sub-windows of the window "
            "without its last item, query = suffixes ending at the last item",
    "prediction": "mean over the task's query suffixes of the rating predicted at their last position "
                  "(meta-learners: after adapting to the support set); 5 * (0.1 + sigmoid), not clipped",
    "rmse": "sqrt(mean((pred - last rating)^2)) over test users",
    "mae": "mean(|pred - last rating|) over test users",
    "per_rating": "the same errors over the test users whose last rating is 1, 2, 3, 4 or 5",
}


# ---- settings --------------------------------------------------------------------------------


def parse_names(value: Any, allowed: tuple[str, ...], what: str, default: list[str]) -> list[str]:
    """Names from 'a,b', a list or None (`default`), each one of `allowed`."""
    names = comma_list(value) if isinstance(value, str) else list(value or [])
    names = names or list(default)
    for name in names:
        if name not in allowed:
            raise unknown_key_error(name, allowed, what)
    if not names:
        raise ConfigError(f"no {what}s to run (allowed: {', '.join(allowed)})")
    return list(dict.fromkeys(names))


def _section(settings: Mapping[str, Any], key: str) -> dict:
    return dict(settings.get(key) or {})


def run_specs(settings: Mapping[str, Any], backbones: Any = None, methods: Any = None,
              pretrained: str | None = None) -> dict[str, dict]:
    """``{key: {"backbone", "method", "model", "config"}}`` for every run of the stage, key
    ``"<backbone>/<method>"`` (``"global_mean"`` alone: it has no backbone). Each model is built
    here once, so an unknown name or a bad value stops before any training."""
    from recsys.models.meta.backbones import backbone_config
    from recsys.models.registry import build, get_model

    configured = _section(settings, "methods")
    methods = parse_names(methods, METHODS, "meta method", list(configured))
    bb_settings = _section(settings, "backbones")
    backbones = parse_names(backbones, BACKBONES, "backbone", list(bb_settings) or list(BACKBONES))
    tasks, evaluation, meta = _section(settings, "tasks"), _section(settings, "evaluation"), _section(settings, "meta")
    pretrained = pretrained or settings.get("pretrained") or None
    device = settings.get("device")
    out: dict[str, dict] = {}
    for method in methods:
        own = dict(configured.get(method) or {})
        model = META_METHODS[method]
        klass = get_model(model)
        for backbone in (backbones if klass.has_backbone else [NO_BACKBONE]):
            if not klass.has_backbone:
                config = {**tasks, **{k: v for k, v in evaluation.items() if k in ("task_seed", "valid_tasks", "eval_batch")},
                          **own}
            else:
                own_bb = dict(own.get("backbone") or {})
                try:
                    bb = backbone_config(backbone, {**dict(bb_settings.get(backbone) or {}), **own_bb})
                except ConfigError as exc:
                    raise ConfigError(f"backbone {backbone!r}: {exc}") from None
                config = {**tasks, **evaluation, **(meta if klass.meta_learned else {}),
                          **{k: v for k, v in own.items() if k != "backbone"},
                          "backbone": {"model": backbone, "config": bb.to_dict()}}
                if pretrained:
                    config["pretrained"] = str(pretrained)
                if device:
                    config.setdefault("device", device)
            try:
                build(model, **config)
            except ConfigError as exc:
                raise ConfigError(f"meta method {method!r} ({backbone}): {exc}") from None
            key = f"{backbone}/{method}" if klass.has_backbone else method
            out[key] = {"backbone": backbone, "method": method, "model": model, "config": config}
    return out


def run_list(specs: Mapping[str, Mapping[str, Any]], seeds: list[int]) -> list[tuple[str, int]]:
    """(key, seed) per training task; a model whose fit draws no random numbers (the global mean)
    runs once, with the first seed."""
    from recsys.models.registry import get_model

    return [(key, seed) for key, spec in specs.items()
            for seed in (seeds if get_model(spec["model"]).seeded else seeds[:1])]


# ---- data ------------------------------------------------------------------------------------


@dataclass
class PreparedMeta:
    split: Any
    path: Path
    sha256: str
    stats: dict


def load_ratings(dataset: str, settings: Mapping[str, Any], data_dir=None):
    """The dataset's interaction table with every rating known (one clear DataError otherwise),
    deduplicated when ``dedupe`` is set."""
    from recsys.data import load_dataset
    from recsys.data import preprocess as pre

    ds = load_dataset(dataset, data_dir=data_dir or None, **_section(settings, "dataset"))
    if ds.info.kind != "ratings":
        raise DataError(f"dataset {dataset!r} has no ratings ({ds.info.kind} data): cold-start rating prediction needs "
                        f"explicit ratings; use amazon-digital-music, ml-100k or a csv with a rating column")
    df = pre.require_known_ratings(ds.df, "cold-start rating prediction (the meta stage)")
    bad = ~np.isin(np.rint(df["rating"].to_numpy()), RATING_VALUES) | (df["rating"].to_numpy() % 1 != 0)
    if bad.any():
        raise DataError(f"dataset {dataset!r}: {int(bad.sum()):,} ratings are not integers 1..5 (e.g. "
                        f"{df['rating'].to_numpy()[bad][:3].tolist()}); MELO's tasks and weighting read ratings 1..5")
    rows_loaded = len(df)
    if settings.get("dedupe"):
        df = pre.dedupe(df)
    return df, rows_loaded


def prepare(dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir=None) -> PreparedMeta:
    """Load the ratings, make and save the user_split, and describe its ratings
    (:func:`recsys.protocols.meta_tasks.rating_stats`: histogram, shares, MELO's balance score)."""
    from recsys.io import sha256_dir
    from recsys.protocols import user_split
    from recsys.protocols.meta_tasks import rating_stats

    from recsys.pipeline.preprocess import adapt_to_data

    df, rows_loaded = load_ratings(dataset, settings, data_dir)
    split = user_split(df, **adapt_to_data(_section(settings, "params"), df))
    out = Path(output_dir) if output_dir else default_output_root() / "splits" / dataset / "user_split"
    path = split.save(out)
    stats = dict(split.stats)
    stats.update(dataset=dataset, protocol=split.protocol, seed=split.seed, n_rows_loaded=int(rows_loaded),
                 dedupe=bool(settings.get("dedupe")), ratings=rating_stats(split))
    from recsys.pipeline.splits import data_summary

    print(data_summary(stats), flush=True)
    return PreparedMeta(split=split, path=Path(path), sha256=sha256_dir(path), stats=stats)


# ---- one run -----------------------------------------------------------------------------------


def _errors(ev: Mapping[str, Any]) -> dict:
    per = {str(v): ev["per_rating"].get(str(v)) for v in RATING_VALUES}
    return {"rmse": ev["rmse"], "mae": ev["mae"], "n": ev["n"],
            "per_rating": {k: v for k, v in per.items() if v is not None}}


def _per_user(ev: Mapping[str, Any]) -> dict:
    """``{"users", "pred", "target"}`` lists, one entry per evaluated task, sorted by user id."""
    users = np.asarray(ev.get("users", []), dtype=np.int64)
    order = np.argsort(users, kind="stable")
    return {"users": users[order].tolist(),
            "pred": [round(float(v), 6) for v in np.asarray(ev["pred"], dtype=np.float64)[order]],
            "target": [float(v) for v in np.asarray(ev["target"], dtype=np.float64)[order]]}


def _per_user_file(out_dir, ev: Mapping[str, Any]) -> dict:
    """``per_user.npz``: squared and absolute error of every test task, by user."""
    pred, target = np.asarray(ev["pred"], dtype=np.float64), np.asarray(ev["target"], dtype=np.float64)
    return save_per_user(out_dir, np.asarray(ev.get("users", []), dtype=np.int64),
                         {"se": (pred - target) ** 2, "ae": np.abs(pred - target)})


def run_one(split_path, key: str, spec: Mapping[str, Any], seed: int, out_dir, *, device: str | None = None,
            save_model: bool = True, checkpoint_dir=None) -> dict:
    """Fit one (backbone, method) with one seed, evaluate on the validation and test tasks,
    write ``model.pt`` and ``result.json`` under `out_dir` (atomically); returns the result."""
    import torch

    from recsys.models.registry import build, get_model
    from recsys.protocols import Split

    split = Split.load(split_path)
    config = {**dict(spec["config"]), "seed": int(seed)}
    if device is not None and get_model(spec["model"]).uses_device:
        config["device"] = device
    model = build(spec["model"], **config)
    start = time.perf_counter()
    with task_checkpoints(model, checkpoint_dir, f"{key.replace('/', '.')}.seed{seed}"):
        model.fit(split)
    train_seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    test = model.evaluate(split, "test")
    valid = model.evaluate(split, "valid")
    eval_seconds = time.perf_counter() - t0
    c = model.config
    result = {
        "key": key, "backbone": spec["backbone"], "method": spec["method"], "model": spec["model"], "seed": int(seed),
        "config": c.to_dict(),
        "test": _errors(test), "valid": _errors(valid),
        # per test user (ordered by user id): what a paired test over users needs, without retraining
        "test_per_user": _per_user(test),
        "per_user": _per_user_file(out_dir, test),
        "train_seconds": round(train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
        "epochs": len(getattr(model, "history_", []) or []) or None,
        "best_epoch": getattr(model, "best_epoch_", None),
        "stop_reason": getattr(model, "stop_reason_", None),
        "iterations": getattr(model, "iterations_", None),
        "history": getattr(model, "history_", []) or [],
        "pretrained": getattr(model, "pretrained_", None),
        "device": str(model.device),
        "protocol": {"name": split.protocol, "split_seed": split.seed, "params": split.params,
                     "n_users": split.n_users, "n_items": split.n_items,
                     "n_test_users": int(len(split.arrays["test_users"])),
                     "n_valid_users": int(len(split.arrays["valid_users"]))},
        "tasks": {**model.task_settings().to_dict(), "task_seed": split.seed if c.task_seed is None else c.task_seed,
                  "valid_tasks": getattr(c, "valid_tasks", None)},
        "definitions": DEFINITIONS,
        "torch": torch.__version__,
    }
    return write_task_result(out_dir, result, model if save_model else None)


# ---- tables and plots -------------------------------------------------------------------------------


def _order(key: str) -> tuple:
    method = key.split("/")[-1]
    backbone = key.split("/")[0] if "/" in key else ""
    return (0 if "/" not in key else 1,  # a method without a backbone (the global mean) first
            BACKBONES.index(backbone) if backbone in BACKBONES else 9,
            METHODS.index(method) if method in METHODS else 9)


def _stat(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def aggregate(results: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[dict]:
    """One row per (backbone, method): mean and sample std over seeds of test RMSE / MAE,
    overall and per true rating value (``rmse@4`` ...), with the counts per value."""
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for (key, _seed), r in sorted(results.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1])):
        by_key.setdefault(key, []).append(r)
    rows = []
    for key, runs in by_key.items():
        row: dict[str, Any] = {"key": key, "backbone": runs[0]["backbone"], "method": runs[0]["method"],
                               "seeds": [r["seed"] for r in runs]}
        for metric in ("rmse", "mae"):
            row[metric], row[f"{metric}_std"] = _stat([r["test"][metric] for r in runs])
            for v in RATING_VALUES:
                vals = [r["test"]["per_rating"][str(v)][metric] for r in runs if str(v) in r["test"]["per_rating"]]
                if vals:
                    row[f"{metric}@{v}"], row[f"{metric}@{v}_std"] = _stat(vals)
        row["n_test"] = int(runs[0]["test"]["n"])
        row["n_per_rating"] = {str(v): runs[0]["test"]["per_rating"].get(str(v), {}).get("n", 0) for v in RATING_VALUES}
        row["valid_rmse"] = float(np.mean([r["valid"]["rmse"] for r in runs]))
        row["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
        rows.append(row)
    return rows


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells): RMSE and MAE (mean ± std) and RMSE per true rating value."""
    headers = ["backbone", "method", "RMSE", "MAE", *[f"RMSE@{v}" for v in RATING_VALUES], "seeds", "train s"]
    cells = []
    for r in rows:
        cell = lambda k: f"{r[k]:.4f} ± {r[k + '_std']:.4f}" if k in r else "-"
        cells.append([r["backbone"], r["method"], cell("rmse"), cell("mae"),
                      *[f"{r[f'rmse@{v}']:.3f}" if f"rmse@{v}" in r else "-" for v in RATING_VALUES],
                      str(len(r["seeds"])), f"{r['train_seconds']:.1f}"])
    return headers, cells


def rating_table(stats: Mapping[str, Any]) -> str:
    """The split's rating distribution and balance as one markdown line."""
    r = stats["ratings"]
    shares = ", ".join(f"{k}: {float(v) * 100:.1f}%" for k, v in r["share"].items())
    return (f"{r['n_ratings']:,} ratings ({shares}); balance {r['balance']:.3f} (entropy / log 5); "
            f"mean length {r['mean_length']:.1f}")


def per_rating_plot_png(rows: list[dict], stats: Mapping[str, Any] | None = None) -> bytes:
    """Test RMSE (left) and MAE (right) per true rating value, one line per (backbone, method),
    with the share of each rating value among the test targets as grey bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.array(RATING_VALUES)
    for ax, metric in zip(axes, ("rmse", "mae")):
        if rows:
            counts = np.array([rows[0]["n_per_rating"].get(str(v), 0) for v in RATING_VALUES], dtype=float)
            twin = ax.twinx()
            twin.bar(x, counts / max(counts.sum(), 1), color="0.85", width=0.6, zorder=0)
            twin.set_ylabel("share of test targets")
            twin.set_ylim(0, 1)
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
        for r in rows:
            ys = [r.get(f"{metric}@{v}", np.nan) for v in RATING_VALUES]
            errs = [r.get(f"{metric}@{v}_std", 0.0) for v in RATING_VALUES]
            alone = r["backbone"] == NO_BACKBONE  # the global mean: a baseline line
            style = "k--" if alone else "o-"
            label = r["method"] if alone else f"{r['backbone']} / {r['method']}"
            ax.errorbar(x, ys, yerr=errs, fmt=style, capsize=2, ms=3, lw=1, label=label)
        ax.set_xticks(x)
        ax.set_xlabel("true rating")
        ax.set_ylabel(f"test {metric.upper()}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    if stats is not None:
        fig.suptitle(f"{stats.get('dataset', '')}: errors per true rating value (balance "
                     f"{stats['ratings']['balance']:.2f})")
    fig.tight_layout()
    return figure_png(fig)


# ---- the whole stage in one process --------------------------------------------------------------------


def results_by_name(results: Mapping[tuple[str, int], Any]) -> dict[str, Any]:
    """``{"<key>/seed<s>": result}`` (JSON keys)."""
    return {f"{key}/seed{seed}": r for (key, seed), r in results.items()}


class MetaStage(Stage):
    """Every (backbone, method) x seed on one user_split (MELO's protocol). Settings layout::

        protocol: user_split
        dataset: {}                       # loader options (csv: path, columns, ...)
        dedupe: true                      # one row per (user, item), the latest (Amazon repeats reviews)
        params: {n_test_users: 1000, valid_fraction: 0.15, min_item: 10, min_user: 5, seed: 0}
        tasks: {max_len: 30, n_support: 25, n_query: 3, min_sub_window: 2}
        evaluation: {valid_tasks: 500, eval_batch: 128}    # task_seed too (default: the split seed)
        seeds: [0, 1, 2]
        backbones: {gru4rec: {}, narm: {}, sasrec: {}, bert4rec: {}}   # over MELO's sizes
        meta: {epochs: 60, block: 50, patience: 10, meta_batch: 16, inner_steps: 3}  # maml / maml_pp / melo
        methods: {global_mean: {}, basic: {epochs: 30, patience: 5, backbone: {batch_size: 128}}, maml: {},
                  maml_pp: {}, melo: {}}
        pretrained: null                  # a pretrain run's item_embeddings.npy
    """

    name = label = "meta"
    protocol, whose = "user_split", "MELO's"
    keys = frozenset(_KEYS)
    mappings = _MAPPINGS
    reference = STAGE_REFERENCES["meta"]

    def evidence_metrics(self, settings, results):
        return list(EVIDENCE)

    def reference_of(self, settings, results=None):
        """Each method against the reference method of its own backbone (``sasrec/maml_pp``)."""
        from recsys.pipeline.evidence import method_of

        ref = (settings or {}).get("reference") or self.reference
        keys = {method_of(k) for k in (results or {})}

        def of(key: str) -> str | None:
            backbone = key.split("/")[0] if "/" in key else None
            target = f"{backbone}/{ref}" if backbone else None
            return target if target in keys else None

        return of

    def check_settings(self, settings: dict) -> dict:
        unknown = [m for m in settings["methods"] if m not in METHODS]
        if unknown:
            raise unknown_key_error(unknown[0], METHODS, "meta method")
        return settings

    def prepare(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir=None) -> "PreparedMeta":
        return prepare(dataset, settings, data_dir=data_dir, output_dir=output_dir)

    def plan(self, settings: Mapping[str, Any], *, backbones=None, methods=None, seeds=None,
             pretrained=None) -> list[Task]:
        specs = run_specs(settings, backbones, methods, pretrained)
        seeds = parse_seeds(seeds if seeds is not None else settings.get("seeds", [0]))
        return [Task(key, seed, specs[key]) for key, seed in run_list(specs, seeds)]

    def run_task(self, split_path, task: Task, out_dir, **options: Any) -> dict:
        return run_one(split_path, task.key, task.spec, task.seed, out_dir, **options)

    def summary(self, result: Mapping[str, Any]) -> str:
        return f"test RMSE {result['test']['rmse']:.4f}, MAE {result['test']['mae']:.4f}"

    def aggregate(self, results):
        return aggregate(results)

    def table(self, rows):
        return table(rows)

    def plot_png(self, rows, **context):
        return per_rating_plot_png(rows, context.get("stats"))


STAGE = MetaStage()
# the stage's methods under the names the flow, the notebook and the benchmarks call
load_settings, default_run_dir, format_table, run_all = (STAGE.load_settings, STAGE.default_run_dir,
                                                         STAGE.format_table, STAGE.run_all)
