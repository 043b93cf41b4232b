"""Preprocessing stage: dataset -> binarise -> protocol -> saved Split, plus its statistics."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.pipeline.settings import default_output_root  # noqa: F401  (where the flows import it from)
from recsys.pipeline.stage import Stage
# making and loading saved splits: recsys.pipeline.splits (every stage's split); named here too
from recsys.pipeline.splits import (  # noqa: F401
    PreparedSplit,
    adapt_to_data,
    check_request,
    load_saved_split,
    prepare_split,
    split_stats,
)

_SETTING_KEYS = {"threshold", "dataset", "protocol", "protocols"}


def resolve_settings(params: Mapping[str, Any] | None, dataset: str, protocol: str) -> dict:
    """Merge a params file (see params/preprocess.yaml) into the settings of one dataset and protocol.

    Returns ``{"threshold": float | None, "dataset": {...}, "protocol": {...}}``.
    """
    params = dict(params or {})
    unknown = set(params) - {"defaults", "datasets"}
    if unknown:
        raise ConfigError(
            f"params file: unknown top-level key(s) {sorted(unknown)}; expected 'defaults' and 'datasets'"
        )
    defaults = params.get("defaults") or {}
    per_dataset = (params.get("datasets") or {}).get(dataset) or {}
    layers = [
        defaults,
        (defaults.get("protocols") or {}).get(protocol) or {},
        per_dataset,
        (per_dataset.get("protocols") or {}).get(protocol) or {},
    ]
    out: dict = {"threshold": None, "dataset": {}, "protocol": {}}
    for where, layer in zip(("defaults", f"defaults.protocols.{protocol}", f"datasets.{dataset}",
                             f"datasets.{dataset}.protocols.{protocol}"), layers):
        bad = set(layer) - _SETTING_KEYS
        if bad:
            raise ConfigError(
                f"params file, section {where}: unknown key(s) {sorted(bad)}; "
                f"expected some of {sorted(_SETTING_KEYS - {'protocols'})}"
            )
        if "threshold" in layer:
            out["threshold"] = layer["threshold"]
        out["dataset"].update(copy.deepcopy(layer.get("dataset") or {}))
        out["protocol"].update(copy.deepcopy(layer.get("protocol") or {}))
    return out


def interaction_matrix(split) -> sp.csr_matrix:
    """All interactions of a split as one |U| x |I| binary matrix in the split's internal ids."""
    m, a = split.matrices, split.arrays
    if "interactions" in m:
        blocks = [(None, m["interactions"])]
    elif "train_users" in a and "valid_fold_in" in m:  # strong generalisation: one row block per user set
        blocks = [(a["train_users"], m["train"])]
        blocks += [(a[f"{s}_users"], m[f"{s}_{part}"]) for s in ("valid", "test") for part in ("fold_in", "holdout")]
    else:
        blocks = [(None, m[n]) for n in ("train", "valid", "test") if n in m]
    rows, cols = [], []
    for users, block in blocks:
        coo = block.tocoo()
        rows.append(coo.row if users is None else np.asarray(users)[coo.row])
        cols.append(coo.col)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    full = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(split.n_users, split.n_items))
    full.data[:] = 1.0  # duplicates were summed
    return full


def degree_plot_png(split, title: str = "") -> bytes:
    """Log-log degree distributions of users and items (counts of interactions per node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = interaction_matrix(split)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, deg, who in ((axes[0], np.diff(x.indptr), "users"),
                         (axes[1], np.bincount(x.indices, minlength=x.shape[1]), "items")):
        deg = deg[deg > 0]
        values, counts = np.unique(deg, return_counts=True)
        ax.loglog(values, counts, ".", ms=4)
        ax.set_xlabel(f"interactions per {who[:-1]}")
        ax.set_ylabel(f"number of {who}")
        ax.set_title(f"{who}: n={len(deg):,}, median degree {int(np.median(deg)) if len(deg) else 0}")
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (for cards and notebooks); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def stats_table(stats: Mapping[str, Any]) -> list[list[str]]:
    """Rows [name, value] for a card or notebook table; nested split counts flattened."""
    rows = []
    for key, value in stats.items():
        if isinstance(value, Mapping):
            for sub, v in value.items():
                rows.append([f"{key}.{sub}", _fmt(v)])
        else:
            rows.append([key, _fmt(value)])
    return rows


def _fmt(v) -> str:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)



class PreprocessStage(Stage):
    """Dataset -> binarise -> protocol -> saved split, with its statistics: the stage every other
    stage's split is made by. It trains nothing (no plan, no tasks); its report is the statistics
    table and the degree plot. Settings: ``params/preprocess.yaml`` (:func:`resolve_settings`)."""

    name, label = "splits", "preprocess"
    protocol = None  # any: the flow's --protocol

    def load_settings(self, dataset: str, override: Mapping[str, Any] | None = None, *,
                      protocol: str = "random_split") -> dict:
        """``params/preprocess.yaml`` (or `override`, the flow's ``--config``) resolved for one
        dataset and protocol: ``{"threshold", "dataset", "protocol"}``."""
        import yaml

        from recsys.pipeline.settings import params_path

        params = override if override else yaml.safe_load(params_path("preprocess.yaml").read_text())
        return {**resolve_settings(params, dataset, protocol), "protocol_name": protocol}

    def prepare(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir=None) -> PreparedSplit:
        return prepare_split(dataset, settings["protocol_name"], data_dir=data_dir, threshold=settings["threshold"],
                             dataset_options=settings["dataset"], protocol_params=settings["protocol"],
                             output_dir=output_dir)

    def default_run_dir(self, dataset: str, run_id: str, protocol: str = "") -> Path:
        return default_output_root() / self.name / dataset / protocol / str(run_id)

    def plan(self, settings: Mapping[str, Any]) -> list:
        return []  # it trains nothing

    def aggregate(self, results):
        return []

    def table(self, rows):
        return ["statistic", "value"], [list(r) for r in rows]

    def plot_png(self, rows, **context):
        return degree_plot_png(context["split"], context.get("title", "")) if context.get("split") else None


STAGE = PreprocessStage()
