"""Where a result came from: the record every run's ``results.json`` and ``evidence.json`` carry
(issue 36 item 6), so that a number can be traced to the data, the code and the machine.

``provenance(dataset=..., split_path=..., split_sha256=..., run=..., resumed_from=...)`` gives the
dataset name, the split's checksum and its data summary (rows read, users, items), the code
commit (``git`` in a checkout, with a flag for uncommitted changes; else the package version), the
versions of Python and the libraries, the device and the host's cores and threads, the time it was
written, and the Metaflow run (and the run it resumed, for ``python flow.py resume``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = ("torch", "numpy", "scipy", "pandas", "metaflow")


@lru_cache(maxsize=1)
def code_version() -> dict:
    """``{"commit", "dirty"}`` of the checkout the package runs from, else ``{"package": version}``."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {"package": version("recsys-pipelines")}
        except PackageNotFoundError:
            return {"package": "unknown"}


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def host() -> dict:
    import torch

    return {"platform": platform.platform(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def split_summary(split_path) -> dict:
    """The data side of a saved split: its protocol, seed, shape and the rows read / kept."""
    import json

    path = Path(split_path) / "split.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    stats = doc.get("stats") or {}
    keep = ("rows_in", "n_interactions", "n_users", "n_items")
    return {"protocol": doc.get("protocol"), "seed": doc.get("seed"), "params": doc.get("params"),
            **{k: stats[k] for k in keep if k in stats}}


def provenance(*, dataset: str | None = None, split_path=None, split_sha256: str | None = None,
               run: str | None = None, resumed_from: str | None = None, device: str | None = None,
               wall_seconds: float | None = None) -> dict[str, Any]:
    """The provenance record (module docstring); fields without a value are None."""
    return {"dataset": dataset, "split": {"path": None if split_path is None else str(split_path),
                                          "sha256": split_sha256, **(split_summary(split_path) if split_path else {})},
            "code": code_version(), "versions": library_versions(), "host": host(), "device": device,
            "run": run, "resumed_from": resumed_from, "wall_seconds": wall_seconds,
            "argv": list(sys.argv), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
