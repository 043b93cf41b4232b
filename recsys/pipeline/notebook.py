"""Notebook glue: record a value in a cell's output so tests and reports can read it back
(what scrapbook's ``glue`` did, without the dependency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys.io import json_default

RECORD_MIME = "application/vnd.recsys.record+json"


def record(name: str, value: Any) -> None:
    """Show ``value`` (JSON-serialisable) as a named record in the current cell's output."""
    from IPython.display import display

    payload = json.loads(json.dumps(value, default=json_default))
    display({RECORD_MIME: {"name": name, "value": payload}, "text/plain": f"{name} recorded"}, raw=True)


def read_records(notebook: str | Path | Any) -> dict[str, Any]:
    """All records of an executed notebook (a path or an nbformat node), by name."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    out: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            rec = output.get("data", {}).get(RECORD_MIME)
            if rec:
                out[rec["name"]] = rec["value"]
    return out


def params_path(name: str) -> Path:
    """A file under the repository's ``params/`` folder (notebooks run from any directory)."""
    from recsys.pipeline.settings import params_path as _params_path

    path = _params_path(name)
    if not path.exists():
        from recsys.errors import ConfigError

        raise ConfigError(f"params file not found: {path}; pass the path of your YAML explicitly")
    return path
