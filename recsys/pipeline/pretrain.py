"""Pretraining stage: train the global models of a split, evaluate them under the split's own
protocol, and write what later stages read (checkpoints, MultVAE user embeddings and score
files for LOCA, BERT4Rec item embeddings for the meta stage).

Settings come from ``params/pretrain_<dataset>.yaml`` (see :class:`PretrainStage`, the stage
contract's subclass); the flow and the notebook call :func:`prepare`, :func:`train_and_evaluate`
and :func:`comparison`.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recsys.errors import ConfigError
from recsys.io import sha256_file
from recsys.pipeline.preprocess import default_output_root, figure_png
from recsys.pipeline.checkpoints import task_checkpoints
from recsys.pipeline.settings import check_dataset, comma_list, merged_settings, stage_params_file
from recsys.pipeline.evidence import beyond_metrics, save_per_user
from recsys.pipeline.catalog import STAGE_REFERENCES
from recsys.pipeline.stage import Stage, Task, parse_seeds

_PROTOCOL_KEYS = {"threshold", "dataset", "params", "models", "artifacts", "seeds", "reference"}
# Cut-offs and metrics each protocol's papers report.
REPORT = {
    "strong_generalization": {"ks": (20, 50, 100), "metrics": ("precision", "recall", "ndcg")},
    "per_user_holdout": {"ks": (100,), "metrics": ("precision", "recall", "ndcg")},
    "random_split": {"ks": (1, 5, 10, 20), "metrics": ("precision", "recall", "ndcg")},
    "leave_k_out_by_time": {"ks": (10, 20, 50, 100), "metrics": ("precision", "recall", "ndcg")},
    "leave_one_out": {"ks": (10, 20), "metrics": ("hit", "ndcg")},
}


def protocol_settings(settings: Mapping[str, Any], protocol: str | None, models: str | None) -> dict:
    """The section of one protocol, with the models narrowed to ``models`` (comma list)."""
    protocol = protocol or settings.get("default_protocol")
    if protocol not in REPORT:
        raise ConfigError(f"protocol '{protocol}' has no ranking evaluation for pretraining; "
                          f"use one of {', '.join(sorted(REPORT))}")
    sections = _mapping(settings["protocols"], "protocols")
    if protocol not in sections:
        raise ConfigError(
            f"no pretraining settings for protocol '{protocol}'; configured: {', '.join(sorted(sections))}"
        )
    section = _mapping(copy.deepcopy(sections[protocol]) or {}, f"protocols.{protocol}")
    bad = set(section) - _PROTOCOL_KEYS
    if bad:
        raise ConfigError(f"pretrain settings, protocols.{protocol}: unknown key(s) {sorted(bad)}; "
                          f"expected some of {sorted(_PROTOCOL_KEYS)}")
    configured = _mapping(section.get("models") or {}, f"protocols.{protocol}.models")
    for name, cfg in configured.items():
        _mapping(cfg or {}, f"protocols.{protocol}.models.{name}")
    threshold = section.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ConfigError(f"protocols.{protocol}.threshold={threshold!r}: expected a number or null")
    wanted = comma_list(models) or list(configured)
    from recsys.models.registry import get_model

    for name in wanted:
        klass = get_model(name)  # ConfigError naming the valid models
        if klass.protocols is not None and protocol not in klass.protocols:
            raise ConfigError(f"model '{name}' ({' / '.join(klass.contracts())}) trains on "
                              f"{' / '.join(klass.protocols)} splits only, not '{protocol}': "
                              f"pass --protocol {klass.protocols[0]}")
    if not wanted:
        raise ConfigError(f"no models to train for protocol '{protocol}': list them under protocols.{protocol}.models")
    section["models"] = {name: dict(configured.get(name) or {}) for name in wanted}
    section["protocol"] = protocol
    return section


def train_and_evaluate(split_path: str | os.PathLike, model_name: str, config: Mapping[str, Any],
                       out_dir: str | os.PathLike, *, artifacts: Mapping[str, Any] | None = None,
                       device: str | None = None, checkpoint_dir=None, seed: int | None = None) -> dict:
    """Fit ``model_name`` on the saved split, evaluate on validation and test, write files.
    `seed` (a ``--seeds`` task) replaces the config's seed.

    Returns a JSON-serialisable dict: test and validation metrics, the validation curve, epochs,
    train seconds, the protocol's metric definitions, ``per_user`` (the test users' metric values,
    a checksummed ``per_user.npz``) and ``files`` (path and sha256 of every file written under
    ``out_dir``).
    """
    from recsys.models.base import ItemScorer
    from recsys.models.registry import build
    from recsys.protocols import Split

    split = Split.load(split_path)
    config = dict(config)
    if device is not None:
        config.setdefault("device", device)
    if seed is not None:
        config["seed"] = int(seed)
    model = build(model_name, **config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = REPORT.get(split.protocol, REPORT["random_split"])
    denominator = "min" if str(split.meta.get("recall_denominator", "n")).startswith("min") else "n"
    stages = split.meta["evaluation"]

    start = time.perf_counter()
    with task_checkpoints(model, checkpoint_dir, model_name):
        model.fit_split(split)
    train_seconds = time.perf_counter() - start

    results: dict[str, Any] = {}
    per_user = None
    for stage in ("valid", "test"):
        if stage in stages:
            res = model.evaluate_split(split, stage, ks=report["ks"], metrics=report["metrics"],
                                       recall_denominator=denominator, keep_topk=stage == "test")
            results[stage] = res.summary()
            if stage == "test":
                per_user = save_per_user(out, res.users, res.per_user)
                # beyond accuracy from the same top-k: coverage, exposure, popularity, novelty
                results[stage]["mean"].update(beyond_metrics(res, split["train"], report["ks"]))

    files = {"model": model.save(out / "model.pt")}
    for name, array in model.exports(split).items():
        files[name] = _save_npy(out / f"{name}.npy", array)
    if (artifacts or {}).get("scores") and isinstance(model, ItemScorer):
        files["scores"] = _save_scores(out / "scores.npy", model, split["train"])

    history = getattr(model, "history_", None) or []
    return {
        "model": model_name,
        "seed": seed,
        "config": model.config.to_dict(),
        "protocol": split.protocol,
        "split_seed": split.seed,
        "split_params": split.params,
        "recall_denominator": denominator,
        "test": results.get("test", {}).get("mean", {}),
        "valid": results.get("valid", {}).get("mean", {}),
        "evaluation": results,
        "per_user": per_user,
        "curve": [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in history],
        "epochs": len(history),
        "best_epoch": getattr(model, "best_epoch_", None),
        "train_seconds": round(train_seconds, 3),
        "device": str(model.device),
        "files": {k: {"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for k, p in files.items()},
    }


def comparison(results: Mapping[Any, Mapping[str, Any]]) -> list[dict]:
    """One row per model: test metrics (the mean over seeds where ``--seeds`` gave several),
    epochs and train seconds (the card's and notebook's table); keys are model names or
    (model, seed)."""
    from recsys.pipeline.evidence import method_of

    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for key, r in results.items():
        by_model.setdefault(method_of(key), []).append(r)
    rows = []
    for name, runs in by_model.items():
        row: dict[str, Any] = {"model": name}
        row.update({k: round(float(np.mean([r["test"][k] for r in runs])), 4) for k in runs[0]["test"]})
        row.update(epochs=runs[0]["epochs"] if len(runs) == 1 else round(float(np.mean([r["epochs"] for r in runs])), 1),
                   best_epoch=runs[0]["best_epoch"] if len(runs) == 1 else None,
                   train_seconds=round(float(np.mean([r["train_seconds"] for r in runs])), 3))
        if len(runs) > 1:
            row["seeds"] = len(runs)
        rows.append(row)
    return rows


def evidence_metrics(protocol: str) -> list:
    """What the pretrain table tests: NDCG and the protocol's recall-like metric at its largest cut-off."""
    from recsys.pipeline.evidence import Metric

    report = REPORT.get(protocol, REPORT["random_split"])
    k = max(report["ks"])
    return [Metric(f"{m}@{k}") for m in report["metrics"] if m in ("ndcg", "recall", "hit")]


def format_table(rows: list[dict], protocol: str) -> str:
    """A plain-text table of the headline columns (largest cut-off of each metric)."""
    k = max(REPORT.get(protocol, REPORT["random_split"])["ks"])
    wanted = ["model"] + [c for c in rows[0] if c.endswith(f"@{k}") or c.endswith("@20")] + ["epochs", "train_seconds"]
    cols = list(dict.fromkeys(c for c in wanted if c in rows[0]))
    from recsys.pipeline.report import dict_rows_table, text_table

    return text_table(*dict_rows_table(rows, cols))


def curves_png(results: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """Validation curves (the metric each model early-stops on) of the models that have one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for name, r in results.items():
        # MultVAE records "ndcg@k", BERT4Rec "valid_ndcg@k" (every eval_every epochs): both validation NDCG.
        keys = sorted({k for h in r["curve"] for k in h if k.startswith(("ndcg@", "valid_ndcg@"))})
        if keys:
            points = [(h["epoch"], h[keys[0]]) for h in r["curve"] if keys[0] in h]
            series[name] = (keys[0], *zip(*points))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, (key, xs, ys) in series.items():
        ax.plot(xs, ys, label=f"{name} ({key})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def _mapping(value, where: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"pretrain settings, {where}: expected a mapping (key: value lines), got {value!r}")
    return dict(value)


def _save_npy(path: Path, array: np.ndarray) -> Path:
    from recsys.io import save_npy

    return save_npy(path, np.asarray(array, dtype=np.float32))


def _save_scores(path: Path, model, rows, batch_size: int = 1024) -> Path:
    """Full float32 score matrix of the training rows, written batch by batch (never whole in RAM)."""
    from recsys.io import atomic_path

    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=rows.shape)
        for i in range(0, rows.shape[0], batch_size):
            out[i:i + batch_size] = model.score(rows[i:i + batch_size]).float().cpu().numpy()
        out.flush()
        del out
    return path


class PretrainStage(Stage):
    """The global models of one split under the split's own protocol (any protocol with a ranking
    evaluation); one task per model. Settings layout (``params/pretrain_<dataset>.yaml``)::

        default_protocol: random_split
        protocols:
          random_split:
            threshold: null          # binarisation threshold (null: every interaction)
            dataset: {}              # loader options
            params: {k_core: 10}     # protocol parameters
            models: {mostpop: {}, ease: {lam: 500}, multvae: {...}}
            artifacts: {scores: true}   # also write the full score matrix (for LOCA)
    """

    name = label = "pretrain"
    protocol = None  # the settings choose (protocols.<name>); the section's protocol is the run's

    def load_settings(self, dataset: str, override: Mapping[str, Any] | None = None) -> dict:
        """``params/pretrain_<dataset>.yaml`` (if present) deep-merged with ``override`` (the flow's
        ``--config cfg FILE``)."""
        check_dataset(dataset)
        path = stage_params_file("pretrain", dataset, override=override, section="protocols")
        settings = merged_settings(path, override)
        if path.name.endswith("_default.yaml"):  # as every stage: say what a default profile ran with
            print(f"pretrain-stage settings used: {json.dumps(settings, sort_keys=True)}")
        if not settings.get("protocols"):
            raise ConfigError(
                f"no pretraining settings for dataset '{dataset}': write {path} or pass "
                f"--config cfg FILE with a 'protocols:' section (see params/pretrain_amazon-digital-music.yaml)"
            )
        unknown = set(settings) - {"default_protocol", "protocols"}
        if unknown:
            raise ConfigError(f"pretrain settings: unknown key(s) {sorted(unknown)}; expected default_protocol, protocols")
        return settings

    def prepare(self, dataset: str, section: Mapping[str, Any], *, data_dir=None, output_dir=None):
        """Make (and save) the split of one protocol section (:func:`protocol_settings`)."""
        from recsys.pipeline.splits import prepare_split

        return prepare_split(dataset, section["protocol"], data_dir=data_dir, threshold=section.get("threshold"),
                             dataset_options=section.get("dataset") or {},
                             protocol_params=section.get("params") or {}, output_dir=output_dir)

    def default_run_dir(self, dataset: str, run_id: str, protocol: str = "") -> Path:
        return default_output_root() / self.name / dataset / protocol / str(run_id)

    reference = STAGE_REFERENCES["pretrain"]

    def plan(self, section: Mapping[str, Any], *, seeds=None) -> list[Task]:
        """One task per model of a protocol section (:func:`protocol_settings` checked them); with
        `seeds` (``--seeds 0,1,2`` or the section's ``seeds:``) one per seed of every model that
        draws random numbers (EASE and most-popular once: seed None)."""
        from recsys.models.registry import get_model

        seeds = seeds if seeds not in (None, "", []) else section.get("seeds")
        if seeds in (None, "", []):
            return [Task(name, None, {"model": name, "config": dict(cfg)}) for name, cfg in section["models"].items()]
        seeds = parse_seeds(seeds)
        return [Task(name, seed, {"model": name, "config": dict(cfg)})
                for name, cfg in section["models"].items()
                for seed in (seeds if get_model(name).seeded else [None])]

    def run_task(self, split_path, task: Task, out_dir, **options: Any) -> dict:
        return train_and_evaluate(split_path, task.spec["model"], task.spec["config"], out_dir, seed=task.seed,
                                  **options)

    def evidence_metrics(self, settings, results):
        protocols = {r.get("protocol") for r in results.values()}
        return evidence_metrics(next(iter(protocols))) if len(protocols) == 1 else []

    def aggregate(self, results):
        return comparison(results)

    def table(self, rows):
        from recsys.pipeline.report import dict_rows_table

        columns = list(dict.fromkeys(c for r in rows for c in r))
        return dict_rows_table(rows, columns)

    def plot_png(self, rows, **context):
        return curves_png(context["results"]) if context.get("results") else None


STAGE = PretrainStage()
load_settings, prepare = STAGE.load_settings, STAGE.prepare


def params_file(dataset: str) -> Path:
    return stage_params_file("pretrain", dataset)


def default_run_dir(dataset: str, protocol: str, run_id: str) -> Path:
    return STAGE.default_run_dir(dataset, run_id, protocol)
