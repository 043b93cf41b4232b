"""Making and loading the saved split a stage trains on: :func:`prepare_split` (dataset ->
binarise -> protocol -> saved :class:`~recsys.protocols.Split`, with its statistics) and
:func:`load_saved_split` (a split an earlier run saved, checksums checked)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from recsys.errors import ConfigError, DataError
from recsys.io import sha256_dir
from recsys.pipeline.settings import default_output_root


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
    params = adapt_to_data(protocol_params or {}, df)
    try:
        split = make_split(protocol, df, **params)
    except DataError as exc:
        if "left 0 interactions" not in str(exc):
            raise
        raise DataError(emptied_message(dataset, ds.source, protocol, params, df, str(exc))) from None
    out = Path(output_dir) if output_dir else default_output_root() / "splits" / dataset / protocol
    path = split.save(out)
    stats = split_stats(split, dataset=dataset, threshold=threshold, n_rows_loaded=len(ds.df))
    print(data_summary(stats), flush=True)  # what the filters removed, before any training
    return PreparedSplit(split=split, path=Path(path), sha256=sha256_dir(path), stats=stats)


def emptied_message(dataset: str, source, protocol: str, params: Mapping[str, Any], df, error: str) -> str:
    """One line for an input its filters emptied: the file, the step and its setting as the user
    sees it, what the data holds, and what to change."""
    from recsys.data.schema import ITEM, USER

    rows = len(df)
    pairs = int(len(df[[USER, ITEM]].drop_duplicates())) if rows else 0
    per_user = df[[USER, ITEM]].drop_duplicates().groupby(USER)[ITEM].size() if rows else None
    most = int(per_user.max()) if per_user is not None and len(per_user) else 0
    where = f"{dataset} ({source})" if source else dataset
    step = error.split(" left 0 interactions")[0]
    dup = (f" the file repeats its (user, item) pairs: {rows:,} rows are {pairs:,} distinct pairs, and duplicates "
           f"are dropped (dedupe);" if pairs < rows else "")
    k = params.get("k_core")
    core = (f" k_core={k} (params.k_core in the stage's params file, or --config) keeps only users and items with "
            f"{k}+ interactions: lower it;" if k else "")
    need = (f" the user with the most distinct items has {most}, fewer than {protocol} needs per user;"
            if step.startswith("filter_min_count") else "")
    return (f"{where}: nothing is left to split under {protocol} after {step}:{dup}{need}{core} or check that "
            f"the file's user and item columns are the right ones")


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


def data_summary(stats: Mapping[str, Any]) -> str:
    """One line of what the loading and the protocol's filters did, in their order: rows read, then
    per step (``rows_after_<step>`` / ``users_after_<step>`` in the split's stats) the rows and users
    kept and removed, then the split's size."""
    parts = [f"{int(stats['rows_in']):,} rows read"] if "rows_in" in stats else []
    rows, users = stats.get("rows_in"), None
    for key, value in stats.items():
        if not key.startswith("rows_after_"):
            continue
        step = key[len("rows_after_"):]
        kept_users = stats.get(f"users_after_{step}")
        text = f"{step}: {int(value):,} rows kept"
        if rows is not None and value != rows:
            text += f" ({int(rows) - int(value):,} removed)"
        if kept_users is not None:
            text += f", {int(kept_users):,} users" + (f" ({int(users) - int(kept_users):,} removed)"
                                                     if users is not None and kept_users != users else "")
        parts.append(text)
        rows, users = value, kept_users if kept_users is not None else users
    size = [f"{int(stats[k]):,} {w}" for k, w in (("n_users", "users"), ("n_items", "items"),
                                                   ("n_interactions", "interactions")) if k in stats]
    if size:
        parts.append("split: " + " x ".join(size[:2]) + (f", {size[2]}" if len(size) > 2 else ""))
    return "data: " + "; ".join(parts)
