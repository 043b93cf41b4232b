"""What a finished run leaves for a person to open: an aligned terminal table, and the same table,
its plot and the results as files in the run folder (``report.html`` with the plot embedded,
``plot.png``, ``results.json``), written atomically, their paths printed by the flow's ``end``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from recsys.io import atomic_path, json_default


def _cell(value: Any) -> str:
    if isinstance(value, float):  # metrics to 4 decimals, seconds and counts to 1
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def _numeric(text: str) -> bool:
    t = text.replace(",", "").replace("±", "").replace("+-", "").replace(" ", "").replace("%", "")
    try:
        float(t.split("/")[0] or "x")
        return True
    except ValueError:
        return False


def text_table(headers: Sequence[str], cells: Sequence[Sequence[Any]]) -> str:
    """Columns as wide as their widest header or cell, numbers right-aligned, text left-aligned."""
    rows = [[_cell(v) for v in row] for row in cells]
    widths = [max([len(str(h))] + [len(r[j]) for r in rows if j < len(r)]) for j, h in enumerate(headers)]
    right = [all(_numeric(r[j]) for r in rows if j < len(r) and r[j]) and any(r[j] for r in rows if j < len(r))
             for j in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join((v.rjust(w) if right[j] else v.ljust(w)) for j, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([line([str(h) for h in headers]), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def dict_rows_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of a list of same-keyed dicts (floats to 4 decimals)."""
    headers = list(columns or (rows[0] if rows else []))
    return headers, [[_cell(r.get(c)) for c in headers] for r in rows]


def _html(title: str, intro: str, headers: Sequence[str], cells: Sequence[Sequence[Any]], png: bytes | None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in cells)
    img = (f'<p><img alt="plot" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>' if png else "")
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{img}"
            "<p>results.json holds every number with its protocol, split seed and metric definitions.</p>"
            "</body></html>\n")


def write_task_result(out_dir: str | Path, result: dict, model=None) -> dict:
    """A training task's files: ``model.pt`` (when `model` is given; its path and sha256 go into
    ``result["files"]``) and ``result.json``, each atomically; returns `result`."""
    from recsys.io import write_json
    from recsys.models.base import saved_sha256

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is not None:
        path = model.save(out / "model.pt")
        result["files"] = {"model": {"path": str(path), "sha256": saved_sha256(path)}}
    write_json(out / "result.json", result)
    return result


def write_report(run_dir: str | Path, *, title: str, headers: Sequence[str], cells: Sequence[Sequence[Any]],
                 results: Any, png: bytes | None = None, intro: str = "") -> dict[str, Path]:
    """``<run_dir>/report.html`` (table + embedded plot), ``plot.png`` (when given) and
    ``results.json``, each written atomically; returns their paths by kind."""
    run_dir = Path(run_dir)
    out: dict[str, Path] = {}
    with atomic_path(run_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, default=json_default, indent=1, sort_keys=True) + "\n")
    out["json"] = run_dir / "results.json"
    if png:
        with atomic_path(run_dir / "plot.png") as tmp:
            tmp.write_bytes(png)
        out["png"] = run_dir / "plot.png"
    with atomic_path(run_dir / "report.html") as tmp:
        tmp.write_text(_html(title, intro, headers, cells, png))
    out["html"] = run_dir / "report.html"
    return out


def publish(run_dir: str | Path, *, title: str, headers: Sequence[str], cells: Sequence[Sequence[Any]],
            results: Any, png: bytes | None = None, intro: str = "") -> dict[str, Path]:
    """What a flow's ``end`` does: :func:`write_report`, then print the aligned table and one line
    per file written."""
    files = write_report(run_dir, title=title, headers=headers, cells=cells, results=results, png=png, intro=intro)
    print(text_table(headers, cells))
    print_files(files)
    return files


def print_files(files: Mapping[str, str | Path]) -> None:
    """One line per file a run wrote, its kind first."""
    for kind, path in files.items():
        print(f"{kind:>4}: {path}")
