"""Local / mixture-of-experts stage: VAE, WL, LOCA, LFT, EnLFT and TALL on one random split,
evaluated overall and per mainstream group. The flow (``flows/tall_flow.py``) and the notebook
(``notebooks/tall.ipynb``) call these functions (the stage contract's methods, :class:`LocalStage`):

    settings = load_settings(dataset, override)
    prepared = prepare(dataset, settings, output_dir=...)              # split + mainstream groups
    base = train_base(prepared.path, settings, out_dir)                 # VAE and WL (+ their results)
    tasks = plan(settings, shards)                                      # (method, shard) work items
    outputs = [run_task(prepared.path, base, t, settings, out_dir) for t in tasks]
    results = {m: assemble(prepared.path, base, m, outs, settings, out_dir) ...}

Sharded methods: LOCA (anchors), LFT (users), EnLFT (anchors); TALL is one task (its experts are
trained jointly). Each task writes its tensors to files and returns only paths.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recsys.errors import ConfigError
from recsys.io import atomic_path, save_npy, sha256_file
from recsys.pipeline.settings import comma_list
from recsys.pipeline.preprocess import figure_png
from recsys.pipeline.stage import Stage, parse_seeds
from recsys.pipeline.catalog import (LOCAL_BASE_METHODS, LOCAL_FALLBACK_REFERENCE, LOCAL_METHODS, LOCAL_STAGE,
                                     STAGE_REFERENCES)
from recsys.pipeline.checkpoints import task_checkpoints

METHOD_MODELS = LOCAL_METHODS
BASE_METHODS = LOCAL_BASE_METHODS
REPORT_KS = (1, 5, 10, 20)
REPORT_METRICS = ("precision", "recall", "ndcg")
GROUP_METRIC = "ndcg@20"
_KEYS = {"protocol", "threshold", "dataset", "params", "shards", "device", "methods", "reference", "seeds",
         "seeded_methods", "keep_shards"}
SEEDED_DEFAULT = LOCAL_BASE_METHODS  # with seeds: the cheap global models run once per seed


def select_methods(settings: Mapping[str, Any], methods: str | None) -> dict:
    """Settings narrowed to the comma list `methods` (default all configured), each checked by
    building its model config (unknown names and bad values stop here, before any training)."""
    configured = settings["methods"]
    wanted = comma_list(methods) or list(configured)
    if not wanted:
        raise ConfigError("no methods to run: pass --methods vae,wl,loca,lft,enlft,tall")
    out = copy.deepcopy(dict(settings))
    chosen = {}
    for name in wanted:
        if name not in configured:
            raise ConfigError(f"unknown method {name!r}; configured for this dataset: {', '.join(configured)}")
        cfg = dict(configured[name] or {})
        model = cfg.pop("model", METHOD_MODELS.get(name))
        if model is None:
            raise ConfigError(f"method {name!r} needs 'model: <one of {sorted(set(METHOD_MODELS.values()))}>'")
        from recsys.models.base import UserScorer

        klass = STAGE.require(f"method {name!r}", model, UserScorer)
        where = name if name == model else f"{name} ({model})"
        try:
            klass.Config.from_dict(cfg, where)  # unknown keys name `where`
        except ConfigError as err:
            raise ConfigError(str(err) if str(err).startswith(where) else f"method {where}: {err}") from None
        chosen[name] = {"model": model, "config": cfg}
    # the base step also trains what the chosen methods start from (LOCA: the VAE; LFT / EnLFT: WL)
    needed = {_start_of(m) for m in chosen.values()} - {None}
    for name in BASE_METHODS:
        if name not in chosen and name in needed:
            cfg = dict(configured.get(name) or {})
            cfg.pop("model", None)
            chosen[name] = {"model": METHOD_MODELS[name], "config": cfg, "base_only": True}
    out["methods"] = chosen
    if out.get("seeds") not in (None, "", []):
        out["seeds"] = parse_seeds(out["seeds"])
        seeded = comma_list(out.get("seeded_methods")) if isinstance(out.get("seeded_methods"), str) else \
            list(out.get("seeded_methods") or SEEDED_DEFAULT)
        for name in seeded:
            if name in chosen and _model_class(chosen[name]).sharded:
                raise ConfigError(f"seeded_methods: {name!r} trains in shards from its start model and runs once; "
                                  f"seed the methods it starts from (vae, wl) or the whole ones (tall)")
        out["seeded_methods"] = seeded
    shards = out.get("shards", 1)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be an integer >= 1, got {shards!r}")
    return out


def _mainstream_dir(split_path) -> Path:
    """Mainstream scores / groups sit beside the split (the split folder itself is checksummed)."""
    return Path(split_path).parent / "mainstream"


def _load(split_path):
    from recsys.protocols import Split

    split = Split.load(split_path)
    groups = np.load(_mainstream_dir(split_path) / "mainstream_groups.npy")
    ms = np.load(_mainstream_dir(split_path) / "mainstream_scores.npy")
    return split, ms, groups


def method_seeds(settings: Mapping[str, Any], name: str) -> list[int | None]:
    """The training seeds of method `name`: the settings' ``seeds`` for the ``seeded_methods``
    (default VAE and WL: cheap, and what the table's intervals over seeds rest on), else one run
    at the config's own seed (None)."""
    seeds = settings.get("seeds")
    if seeds in (None, "", []) or name not in (settings.get("seeded_methods") or SEEDED_DEFAULT):
        return [None]
    return parse_seeds(seeds)


def result_key(name: str, seed: int | None):
    """How the stage's results name a method's run: the name, or (name, seed) for a seeded run."""
    return name if seed is None else (name, seed)


def _stem(name: str, seed: int | None) -> str:
    return name if seed is None else f"{name}.seed{seed}"


def _build(method: Mapping[str, Any], device: str | None, seed: int | None = None):
    from recsys.models.registry import build

    cfg = dict(method["config"])
    if device is not None:
        cfg.setdefault("device", device)
    if seed is not None:
        cfg["seed"] = int(seed)
    return build(method["model"], **cfg)


def train_base(split_path, settings: Mapping[str, Any], out_dir, *, checkpoint_dir=None) -> dict:
    """Train the VAE (WL with exponent 0) and WL; evaluate them; save both models; then run the
    sharded methods' shared preparation once (:func:`prepare_methods`).

    Returns ``{"models": {name: path}, "results": {name: result}, "prepared": {...}}`` (results
    only for the methods that were asked for). With `checkpoint_dir`, each model checkpoints
    every epoch under it (a retried or resumed step picks up where it stopped); the checkpoints of
    a finished model are removed."""
    split, ms, groups = _load(split_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, results = {}, {}
    for name in BASE_METHODS:
        if name not in settings["methods"]:
            continue
        method = settings["methods"][name]
        for i, seed in enumerate(method_seeds(settings, name)):
            start = time.perf_counter()
            model = _build(method, settings.get("device"), seed)
            with task_checkpoints(model, checkpoint_dir, _stem(name, seed)):
                model.fit_local(split["train"], split["valid"], ms)
            seconds = time.perf_counter() - start
            # the first seed's model is the one LOCA / LFT / EnLFT start from
            path = str(model.save(out / (f"{name}.pt" if i == 0 else f"{_stem(name, seed)}.pt")))
            models.setdefault(name, path)
            if not method.get("base_only"):
                result = evaluate_method(model, split, groups, name, method, seconds, out, seed=seed)
                result["files"] = {"model": {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}}
                results[result_key(name, seed)] = result
    base = {"models": models, "results": results}
    base["prepared"] = prepare_methods(split_path, base, settings, out)
    return base


def prepare_methods(split_path, base: Mapping[str, Any], settings: Mapping[str, Any], out_dir) -> dict:
    """For each sharded method (LOCA, LFT, EnLFT), the work every shard shares -- global / base
    model, embeddings and anchors, smoothed rows and EnLFT's anchors -- done once and saved.

    Returns ``{name: {"path": saved prepared model, "seconds": preparation time}}``; shards
    (:func:`run_task`) and :func:`assemble` load it instead of recomputing it."""
    split, _, _ = _load(split_path)
    device = settings.get("device")
    prepared = {}
    for name, method in settings["methods"].items():
        if not _model_class(method).sharded:
            continue
        start = time.perf_counter()
        model = _build(method, device)
        model.prepare_from(split["train"], split["valid"], _base_model(base, _start_of(method), device))
        path = model.save(Path(out_dir) / f"{name}.prepared.pt")
        prepared[name] = {"path": str(path), "seconds": time.perf_counter() - start}
    return prepared


def plan(settings: Mapping[str, Any], n_users: int) -> list[dict]:
    """The (method, shard) tasks after the base step: LOCA / LFT / EnLFT in ``shards`` parts, TALL whole."""
    tasks = []
    shards = int(settings.get("shards", 1))
    for name, method in settings["methods"].items():
        if name in BASE_METHODS:  # trained in the base step
            continue
        klass = _model_class(method)
        if klass.sharded:
            total = klass.shard_units(klass.Config.from_dict(method["config"], method["model"]), n_users)
            parts = np.array_split(np.arange(total), min(shards, total))
            tasks += [{"method": name, "shard": j, "n_shards": len(parts), "items": p.tolist()}
                      for j, p in enumerate(parts)]
        else:
            tasks += [{"method": name, "shard": 0, "n_shards": 1, "items": None, "seed": s}
                      for s in method_seeds(settings, name)]
    return tasks


def _base_model(base: Mapping[str, Any], name: str, device):
    from recsys.models.base import Model

    return Model.load(base["models"][name], device=device)


def run_task(split_path, base: Mapping[str, Any], task: Mapping[str, Any], settings: Mapping[str, Any], out_dir,
             *, checkpoint_dir=None) -> dict:
    """Do one task; its tensors go to a file under `out_dir`; returns the task with ``path`` and seconds."""
    split, ms, _ = _load(split_path)
    name = task["method"]
    method = settings["methods"][name]
    device = settings.get("device")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the shard count is in the name: rerunning with another --shards does not overwrite finished work
    seed = task.get("seed")
    path = out / f"{_stem(name, seed)}.shard{task['shard']}of{task['n_shards']}.pt"
    start = time.perf_counter()
    train, valid = split["train"], split["valid"]
    import torch

    items = np.asarray(task["items"], dtype=np.int64) if task["items"] is not None else None
    if _model_class(method).sharded:
        model = _prepared(base, name, device)
        with task_checkpoints(model, checkpoint_dir, f"{name}.shard{task['shard']}of{task['n_shards']}"):
            payload = model.fit_shard(valid, items)
    else:  # tall, or an extra wl variant: one whole model
        model = _build(method, device, seed)
        with task_checkpoints(model, checkpoint_dir, _stem(name, seed)):
            model.fit_local(train, valid, ms)
        model.save(path)
        return {**task, "path": str(path), "seconds": time.perf_counter() - start}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return {**task, "path": str(path), "seconds": time.perf_counter() - start}


def remove_shards(shard_dir, settings: Mapping[str, Any]) -> int:
    """Delete the shard-level model copies of a finished run (every method is assembled and saved
    whole under ``models/``); bytes freed. ``keep_shards: true`` keeps them."""
    import shutil

    folder = Path(shard_dir)
    if settings.get("keep_shards") or not folder.is_dir():
        return 0
    freed = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    shutil.rmtree(folder)
    return freed


def _prepared(base: Mapping[str, Any], name: str, device):
    from recsys.models.base import Model

    return Model.load(base["prepared"][name]["path"], device=device)


def _model_class(method: Mapping[str, Any]):
    from recsys.models.registry import get_model

    return get_model(method["model"])


def is_sharded(method: Mapping[str, Any]) -> bool:
    """Whether a method's model trains in shards (LOCA, LFT, EnLFT) rather than as one task."""
    return bool(getattr(_model_class(method), "sharded", False))


def _start_of(method: Mapping[str, Any]) -> str | None:
    """The base method a method starts from (LOCA: the VAE; LFT / EnLFT: WL unless ``base_exponent: 0``)."""
    klass = _model_class(method)
    return klass.start_method(klass.Config.from_dict(method["config"], method["model"]))


def _shard_parts(outputs: list[Mapping[str, Any]]) -> list[dict]:
    """The payloads :func:`run_task` saved for these shard outputs."""
    import torch

    return [torch.load(o["path"], map_location="cpu", weights_only=False) for o in outputs]


def _group_means(res, groups: np.ndarray, users: np.ndarray | None = None) -> dict:
    """NDCG@20 of a ranking result overall and per mainstream group, with group sizes; `users`
    maps the result's rows to user ids when it was evaluated on a subset."""
    from recsys.metrics.groups import group_report

    ids = res.users if users is None else np.asarray(users)[res.users]
    report = group_report({GROUP_METRIC: res.per_user[GROUP_METRIC]}, groups, users=ids)
    return {"overall": report["overall"][GROUP_METRIC],
            "groups": {g: v[GROUP_METRIC] for g, v in report["groups"].items()},
            "group_sizes": {g: v["n_users"] for g, v in report["groups"].items()}}


def assemble(split_path, base: Mapping[str, Any], name: str, outputs: list[Mapping[str, Any]],
             settings: Mapping[str, Any], out_dir) -> dict:
    """Put a method's shards (of one seed) together into one model, save it, evaluate it."""
    from recsys.models.base import Model

    split, ms, groups = _load(split_path)
    method = settings["methods"][name]
    device = settings.get("device")
    outputs = sorted(outputs, key=lambda o: o["shard"])
    seconds = sum(o["seconds"] for o in outputs)
    if _model_class(method).sharded:
        seconds += base["prepared"][name]["seconds"]
        model = _prepared(base, name, device)
        model.merge_shards(_shard_parts(outputs))
    else:
        model = Model.load(outputs[0]["path"], device=device)
    seed = outputs[0].get("seed")
    path = model.save(Path(out_dir) / f"{_stem(name, seed)}.pt")
    result = evaluate_method(model, split, groups, name, method, seconds, out_dir, seed=seed)
    result["files"] = {"model": {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}}
    result["shards"] = len(outputs)
    return result


def evaluate_lft_partial(split_path, base: Mapping[str, Any], name: str, outputs: list[Mapping[str, Any]],
                         settings: Mapping[str, Any]) -> dict:
    """LFT from some of its shards: test NDCG@20 of the fine-tuned users against the model LFT
    starts from (WL, or the VAE with ``base_exponent: 0``) on the *same* users, overall and per
    mainstream group, with the measured seconds and the full run extrapolated from them. A full
    LFT run takes hours on a CPU; this says, from a part of it, whether fine-tuning helps and what
    the rest costs. Shards split the users by index, so a shard is a sample of all groups."""
    from recsys.models.base import Model

    if not outputs:
        raise ConfigError(f"no finished {name} shards to evaluate")
    method = settings["methods"][name]
    from recsys.models.local import LFT

    if not issubclass(_model_class(method), LFT):
        raise ConfigError(f"{name!r} is a {method['model']} method; only LFT's shards are separate users")
    split, _, groups = _load(split_path)
    device = settings.get("device")
    lft = _prepared(base, name, device)
    parts = _shard_parts(outputs)
    for p in parts:
        lft.take_shard(p)
    users = np.concatenate([np.asarray(p["items"]) for p in parts])
    start_name = _start_of(method)
    start = Model.load(base["models"][start_name], device=device)
    out = {"method": name, "start": start_name, "users": int(len(users)), "of_users": int(split["train"].shape[0]),
           "shards_done": sorted(int(o["shard"]) for o in outputs), "n_shards": int(outputs[0]["n_shards"]),
           "protocol": split.protocol, "split_seed": split.seed, "metric": "ndcg@20, full ranking of the test items, training items masked"}
    for label, model in ((name, lft), (start_name, start)):
        means = _group_means(model.evaluate_users(split["test"], users, ks=(20,), metrics=("ndcg",)), groups, users)
        out[label] = {"ndcg@20": means["overall"], "groups": means["groups"]}
    out["group_sizes"] = means["group_sizes"]
    seconds = [float(o["seconds"]) for o in outputs]
    out["shard_seconds"] = [round(s, 1) for s in seconds]
    out["full_run_seconds_estimate"] = round(sum(seconds) * out["of_users"] / out["users"], 0)
    return out


def evaluate_method(model, split, groups: np.ndarray, name: str, method: Mapping[str, Any], seconds: float,
                    out_dir=None, *, seed: int | None = None) -> dict:
    """Test P / R / NDCG @ {1, 5, 10, 20} overall, NDCG@20 per mainstream group, and the protocol
    record; with `out_dir`, the test users' values and groups in ``<name>.per_user.npz``."""
    from recsys.metrics.groups import GROUP_NAMES
    from recsys.pipeline.evidence import save_per_user

    from recsys.pipeline.evidence import beyond_metrics

    res = model.evaluate_users(split["test"], ks=REPORT_KS, metrics=REPORT_METRICS, keep_topk=True)
    valid = model.evaluate_users(split["valid"], ks=REPORT_KS, metrics=REPORT_METRICS)
    means = _group_means(res, groups)
    cfg = model.config.to_dict()
    history = getattr(model, "history_", []) or []
    return {
        "method": name,
        "model": method["model"],
        "seed": seed,
        "config": cfg,
        "protocol": split.protocol,
        "split_seed": split.seed,
        "split_params": split.params,
        "recall_denominator": "n",
        "metric_definitions": res.definitions(),
        "test": {**res.mean(), **beyond_metrics(res, split["train"], (10, 20))},
        "valid": valid.mean(),
        "groups": means["groups"],
        "group_sizes": means["group_sizes"],
        "overall_" + GROUP_METRIC: means["overall"],
        "gate_uses_validation_labels": bool(getattr(model, "uses_validation_labels", False)),
        "epochs": len([h for h in history if "epoch" in h]),
        "best_epoch": getattr(model, "best_epoch_", None),
        "train_seconds": round(seconds, 3),
        "device": str(model.device),
        "per_user": None if out_dir is None else save_per_user(
            out_dir, res.users, {GROUP_METRIC: res.per_user[GROUP_METRIC], "recall@20": res.per_user["recall@20"]},
            groups=np.asarray(GROUP_NAMES)[groups[res.users]], name=f"{_stem(name, seed)}.per_user.npz"),
    }


def group_table(results: Mapping[Any, Mapping[str, Any]]) -> list[dict]:
    """One row per method: NDCG@20 overall and per mainstream group (low -> high), seconds; the
    mean over seeds for a seeded method (keys ``name`` or ``(name, seed)``)."""
    from recsys.pipeline.evidence import method_of

    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for key, r in results.items():  # a result names its method (JSON keys "vae/seed1" too)
        by_method.setdefault(r.get("method") or method_of(key), []).append(r)
    rows = []
    for name, runs in by_method.items():
        def mean(get):
            vals = [get(r) for r in runs]
            return None if any(v is None for v in vals) else round(float(np.mean(vals)), 4)

        row = {"method": name, "ndcg@20": mean(lambda r: r["test"][GROUP_METRIC])}
        row.update({g: mean(lambda r, g=g: r["groups"][g]) for g in runs[0]["groups"]})
        row["train_seconds"] = round(float(np.mean([r["train_seconds"] for r in runs])), 3)
        row["seeds"] = len(runs)
        rows.append(row)
    return rows


def ordered(results: Mapping[Any, Any], settings: Mapping[str, Any]) -> dict:
    """`results` in the settings' method order (seeds ascending within a method)."""
    from recsys.pipeline.evidence import method_of

    order = {m: i for i, m in enumerate(settings["methods"])}
    keys = sorted((k for k in results if method_of(k) in order),
                  key=lambda k: (order[method_of(k)], -1 if isinstance(k, str) else k[1]))
    return {k: results[k] for k in keys}


def by_name(results: Mapping[Any, Any]) -> dict[str, Any]:
    """Results under JSON keys: the method, ``<method>/seed<s>`` for a seeded run."""
    return {(k if isinstance(k, str) else f"{k[0]}/seed{k[1]}"): r for k, r in results.items()}


def group_plot_png(results: Mapping[Any, Mapping[str, Any]], evidence: Mapping[str, Any] | None = None) -> bytes:
    """Bar plot: NDCG@20 per mainstream group (x) per method (bars), the mean over seeds, with
    the 95 % intervals of `evidence` (:meth:`LocalStage.evidence`) as error bars where it has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = group_table(results)
    names = [r["method"] for r in rows]
    groups = list(next(iter(results.values()))["groups"])
    tables = (evidence or {}).get("metrics", {})
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(names))
    for j, row in enumerate(rows):
        vals = [row[g] or 0.0 for g in groups]
        err = np.zeros((2, len(groups)))
        for gi, g in enumerate(groups):
            ci = (tables.get(f"{GROUP_METRIC} ({g})", {}).get(row["method"]) or {}).get("ci")
            if ci:
                err[:, gi] = [max(0.0, vals[gi] - ci[0]), max(0.0, ci[1] - vals[gi])]
        ax.bar(np.arange(len(groups)) + j * width - 0.4 + width / 2, vals, width, label=row["method"],
               yerr=err if err.any() else None, capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("test NDCG@20")
    ax.set_xlabel("mainstream group (low -> high)")
    ax.legend(fontsize=8, ncol=min(len(names), 4))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


class LocalStage(Stage):
    """VAE, WL, LOCA, LFT, EnLFT and TALL on one random split, NDCG@20 per mainstream group. Its
    work is not method x seed but a base step (VAE and WL, the shared preparation of the sharded
    methods), then (method, shard) tasks (:func:`plan`), then each method assembled from its shards
    (:func:`assemble`); ``run_all`` runs those in one process. Settings layout::

        protocol: random_split
        threshold: null
        params: {fractions: [0.7, 0.1, 0.2], k_core: 10, seed: 0}
        shards: 2                     # LOCA / LFT / EnLFT work split into this many tasks
        methods:
          vae:  {exponent: 0, ...}    # WL with exponent 0
          wl:   {exponent: 1.5, ...}
          loca: {n_local: 100, ...}
          lft:  {...}
          enlft: {n_anchors: 100, ...}
          tall: {n_experts: 100, ...}
          tall_train_slice: {model: tall, gate_source: train_slice}   # extra variants name their model
    """

    name, label = LOCAL_STAGE, "local"
    protocol, whose = "random_split", "LFT / TALL's"
    keys = frozenset(_KEYS)
    reference = STAGE_REFERENCES[LOCAL_STAGE]

    def reference_of(self, settings, results=None):
        """EnLFT where the run has it, else the VAE (the global model every local method improves on)."""
        from recsys.pipeline.evidence import method_of

        methods = {method_of(k) for k in (results or {})}
        for ref in ((settings or {}).get("reference"), self.reference, LOCAL_FALLBACK_REFERENCE):
            if ref and (results is None or ref in methods):
                return ref
        return None

    def evidence_metrics(self, settings, results):
        """NDCG@20 over all test users and within the lowest and highest mainstream groups (the
        TALL paper's claim is about the low ones; the high ones show what it costs)."""
        from recsys.metrics.groups import GROUP_NAMES
        from recsys.pipeline.evidence import Metric

        return [Metric(GROUP_METRIC)] + [Metric(GROUP_METRIC, group=g) for g in GROUP_NAMES]

    def table_with_evidence(self, rows, evidence):
        """The group table with the intervals and tests of the overall, lowest and highest groups
        (every group's are in ``evidence.json``; the plot draws them all)."""
        from recsys.metrics.groups import GROUP_NAMES

        if evidence:
            keep = {GROUP_METRIC, f"{GROUP_METRIC} ({GROUP_NAMES[0]})", f"{GROUP_METRIC} ({GROUP_NAMES[-1]})"}
            evidence = {**evidence, "metrics": {k: v for k, v in evidence["metrics"].items() if k in keep}}
        return super().table_with_evidence(rows, evidence)

    def prepare(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir=None):
        """Make and save the random split, and the users' mainstream scores and groups next to it."""
        from recsys.metrics.groups import mainstream_groups, mainstream_scores

        prepared = super().prepare(dataset, settings, data_dir=data_dir, output_dir=output_dir)
        ms = mainstream_scores(prepared.split["train"])
        groups = mainstream_groups(ms)
        folder = _mainstream_dir(prepared.path)
        folder.mkdir(parents=True, exist_ok=True)
        save_npy(folder / "mainstream_scores.npy", ms)
        save_npy(folder / "mainstream_groups.npy", groups)
        return prepared

    def aggregate(self, results):
        return group_table(results)

    def table(self, rows):
        from recsys.pipeline.report import dict_rows_table

        return dict_rows_table(rows)

    def plot_png(self, rows, **context):
        return group_plot_png(context["results"], context.get("evidence")) if context.get("results") else None

    def run_all(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir,
                progress=print) -> dict:
        """The whole stage in one process (the notebook's path; the flow runs the same calls as steps);
        choose methods beforehand with :func:`select_methods`."""
        out = Path(output_dir)
        prepared = self.prepare(dataset, settings, data_dir=data_dir, output_dir=out / "split")
        base = train_base(prepared.path, settings, out / "models")
        results = dict(base["results"])
        tasks = plan(settings, prepared.split["train"].shape[0])
        outputs: dict[Any, list] = {}
        for task in tasks:
            outputs.setdefault(result_key(task["method"], task.get("seed")), []).append(
                run_task(prepared.path, base, task, settings, out / "shards"))
        for key, outs in outputs.items():
            results[key] = assemble(prepared.path, base, outs[0]["method"], outs, settings, out / "models")
        results = ordered(results, settings)
        remove_shards(out / "shards", settings)
        return {"stats": prepared.stats, "results": results, "split_path": str(prepared.path),
                "split_sha256": prepared.sha256, "evidence": self.evidence(results, settings)}


STAGE = LocalStage()
# the stage's methods under the names the flow, the notebook and the benchmarks call
load_settings, prepare, default_run_dir, format_table, run_all = (
    STAGE.load_settings, STAGE.prepare, STAGE.default_run_dir, STAGE.format_table, STAGE.run_all)
