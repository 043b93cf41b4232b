"""Initialising a backbone's item embeddings from a pretrain run (MELO's --load_pretrained_embedding).

A pretrain run exports ``item_embeddings.npy`` (row i = item i of *its* split, see
:mod:`recsys.pipeline.pretrain`). The meta stage's split numbers items its own way, so rows are
matched by **original item id** through the pretrain split's id map: the split folder given as
``pretrained_split``, else a ``split/`` folder next to the file or one level up (the pretrain
flow's layout ``<run>/split`` + ``<run>/<model>/item_embeddings.npy``). Items the pretrain run
never saw keep their random initialisation (the matched share is reported). Without an id map the
table must have exactly one row per item of the meta split (same ids assumed); any other shape,
a width other than the backbone's embedding size, or no common item stops with a DataError.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys.errors import DataError

SPLIT_FILE = "split.json"


def _find_split(path: Path, split_path: str | Path | None) -> Path | None:
    if split_path:
        p = Path(split_path)
        if not (p / SPLIT_FILE).is_file():
            raise DataError(f"pretrained_split={split_path!s} is not a saved split folder (no {SPLIT_FILE})")
        return p
    for cand in (path.parent / "split", path.parent.parent / "split"):
        if (cand / SPLIT_FILE).is_file():
            return cand
    return None


def pretrained_rows(path: str | Path, split, split_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(table [n_rows, d], row of each item of `split` in it (-1: not there), how items were matched)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pretrained embeddings {path} not found (expected a pretrain run's item_embeddings.npy)")
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a corrupt or non-npy file
        raise DataError(f"pretrained embeddings {path} are not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if table.ndim != 2:
        raise DataError(f"pretrained embeddings {path} have shape {table.shape}; expected [n_items, d]")
    found = _find_split(path, split_path)
    if found is not None:
        from recsys.protocols import Split

        ids = Split.load(found).id_map.items
        if len(ids) != table.shape[0]:
            raise DataError(f"pretrained embeddings {path} have {table.shape[0]:,} rows but their split {found} has "
                            f"{len(ids):,} items: the table and the split come from different runs")
        rows = pd.Index(ids).get_indexer(split.id_map.items)
        if not (rows >= 0).any():
            raise DataError(f"no item of this split occurs in the pretrain split {found}: the embeddings belong to "
                            f"another dataset")
        return table, rows.astype(np.int64), f"by original item id through {found}"
    if table.shape[0] != split.n_items:
        raise DataError(
            f"pretrained embeddings {path} have {table.shape[0]:,} rows but this split has {split.n_items:,} items, and "
            f"no item id map was found next to them (a pretrain run's split/ folder); pass pretrained_split=<that "
            f"folder> so items can be matched by id")
    warnings.warn(f"{path}: no pretrain split found next to it; rows are taken as this split's item ids "
                  f"(same number of items)", RuntimeWarning, stacklevel=3)
    return table, np.arange(split.n_items, dtype=np.int64), "by position (no id map; same number of items)"


def load_item_embeddings(net: nn.Module, table_name: str, path: str | Path, split,
                         split_path: str | Path | None = None) -> dict:
    """Copy the matched rows into the network's item table (token i + 1 = item i); returns a
    summary {"path", "matched", "coverage", "how"}."""
    table, rows, how = pretrained_rows(path, split, split_path)
    weight = dict(net.named_parameters())[table_name]
    if table.shape[1] != weight.shape[1]:
        raise DataError(f"pretrained embeddings {path} are {table.shape[1]} wide but the backbone's item embeddings "
                        f"are {weight.shape[1]}: set the backbone's hidden size to {table.shape[1]} or pretrain with "
                        f"hidden={weight.shape[1]}")
    hit = np.flatnonzero(rows >= 0)
    with torch.no_grad():
        weight[torch.from_numpy(hit + 1).to(weight.device)] = torch.from_numpy(
            np.ascontiguousarray(table[rows[hit]])).to(weight)
    return {"path": str(path), "matched": int(len(hit)), "coverage": float(len(hit) / max(split.n_items, 1)), "how": how}
