"""Preprocessing stage: dataset -> binarise -> protocol -> saved Split, plus its statistics."""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.io import sha256_dir

_SETTING_KEYS = {"threshold", "dataset", "protocol", "protocols"}


def default_output_root() -> Path:
    """Where stages write files: ``$RECSYS_OUTPUT_DIR`` or ``./outputs``."""
    return Path(os.environ.get("RECSYS_OUTPUT_DIR") or "outputs")


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


def check_request(dataset: str, protocol: str) -> None:
    """Fail fast, before any data is read, on an unknown dataset or protocol name."""
    from recsys.data import get_info
    from recsys.protocols import PROTOCOLS

    get_info(dataset)  # raises ConfigError with the valid names
    if protocol not in PROTOCOLS:
        import difflib

        close = difflib.get_close_matches(protocol, list(PROTOCOLS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"unknown protocol '{protocol}'.{hint} Valid protocols: {', '.join(sorted(PROTOCOLS))}"
        )


@dataclass
class PreparedSplit:
    split: Any  # recsys.protocols.Split
    path: Path
    sha256: str
    stats: dict


def prepare_split(
    dataset: str,
    protocol: str,
    *,
    data_dir: str | os.PathLike | None = None,
    threshold: float | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    protocol_params: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
) -> PreparedSplit:
    """Load ``dataset``, binarise at ``threshold``, apply ``protocol`` and save the Split.

    The split is written atomically to ``output_dir`` (default
    ``<output root>/splits/<dataset>/<protocol>``); nothing is written if any step fails.
    """
    from recsys.data import load_dataset
    from recsys.data.preprocess import binarize
    from recsys.protocols import make_split

    check_request(dataset, protocol)
    ds = load_dataset(dataset, data_dir=data_dir or None, **dict(dataset_options or {}))
    df = binarize(ds.df, threshold, unknown_max=ds.unknown_rating_max)
    split = make_split(protocol, df, **adapt_to_data(protocol_params or {}, df))
    out = Path(output_dir) if output_dir else default_output_root() / "splits" / dataset / protocol
    path = split.save(out)
    stats = split_stats(split, dataset=dataset, threshold=threshold, n_rows_loaded=len(ds.df))
    return PreparedSplit(split=split, path=Path(path), sha256=sha256_dir(path), stats=stats)


def load_saved_split(path: str | os.PathLike, protocol: str | None, dataset: str) -> PreparedSplit:
    """A split saved earlier (the preprocess flow's ``split`` folder) instead of a new one: every
    file's sha256 is checked (:meth:`recsys.protocols.Split.load`) and its protocol must be the
    stage's `protocol` (None: any protocol; the split's own is used)."""
    from recsys.errors import DataError
    from recsys.protocols import Split

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"--split-dir {path}: not a folder; pass the folder a preprocess run saved "
                        f"(it holds split.json), e.g. outputs/splits/<dataset>/<protocol>/<run id>")
    split = Split.load(path)
    if protocol is not None and split.protocol != protocol:
        raise DataError(f"--split-dir {path}: a {split.protocol} split, this run evaluates on {protocol}; "
                        f"pass --protocol {split.protocol} or a {protocol} split")
    stats = split_stats(split, dataset=dataset, threshold=split.meta.get("threshold"),
                        n_rows_loaded=int(split.stats.get("n_interactions", 0)))
    return PreparedSplit(split=split, path=path, sha256=sha256_dir(path), stats=stats)


def adapt_to_data(params: Mapping[str, Any], df) -> dict:
    """Protocol parameters with ``auto`` sizes resolved from the data (the default profiles use them
    for a user's file of any size): ``n_heldout_users: auto`` -> min(1000, users // 10) and
    ``n_test_users: auto`` (user_split) -> min(500, users // 5), each at least 1."""
    out = dict(params)
    for key, cap, share in (("n_heldout_users", 1000, 10), ("n_test_users", 500, 5)):
        if out.get(key) == "auto":
            n_users = int(df["user"].nunique())
            out[key] = max(1, min(cap, n_users // share))
            print(f"{key}: auto -> {out[key]} ({n_users:,} users)")
    return out


def split_stats(split, *, dataset: str, threshold: float | None, n_rows_loaded: int) -> dict:
    """The statistics a flow exposes: the protocol's own counts plus what was asked for."""
    stats = dict(split.stats)
    stats.update(
        dataset=dataset,
        protocol=split.protocol,
        seed=split.seed,
        threshold=threshold,
        n_rows_loaded=int(n_rows_loaded),
    )
    return stats


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
