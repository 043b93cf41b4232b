"""One leaderboard across runs: every ranking model of several finished runs (pretrain, tall,
tail, BaM, ...) in one table per metric and user group, with 95 % intervals and paired tests
against the best, recomputed from the per-user arrays each run kept (``per_user.npz`` and
``evidence.json`` beside its ``results.json``, :meth:`recsys.pipeline.stage.Stage.report`).

    runs = [load_run(resolve_run(spec)) for spec in "PretrainFlow/12,TallFlow/13".split(",")]
    board = leaderboard(runs)              # refuses runs over different splits
    headers, cells = board_table(board, "ndcg@20")

A comparison is only fair on the same test users and held-out items, so every run must have
evaluated the same saved split (its sha256); the refusal names the runs that differ.
``flows/compare_flow.py`` and ``notebooks/compare.ipynb`` call these functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from recsys.errors import ConfigError, DataError
from recsys.pipeline.evidence import ALPHA, TABLE_RESAMPLES, Metric, PerUser, comparison, read_run_arrays

EVIDENCE_FILE = "evidence.json"


@dataclass
class RunEvidence:
    """What one finished run kept for comparisons."""

    name: str                    # how the leaderboard names the run (its pathspec or folder)
    folder: Path
    stage: str
    dataset: str | None
    split_sha256: str | None
    runs: list[dict]             # {"method", "seed", "model", "test"} per task
    arrays: dict[tuple[str, int | None], PerUser] = field(default_factory=dict)


def resolve_run(spec: str) -> tuple[str, Path]:
    """(name, run folder) of a Metaflow run pathspec (``TallFlow/1234``: its ``run_dir``
    artifact) or of a run folder (one holding ``evidence.json``)."""
    spec = str(spec).strip()
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return spec, folder
    if spec.count("/") == 1 and not folder.exists():
        from metaflow import Run, namespace
        from metaflow.exception import MetaflowNotFound

        namespace(None)
        try:
            run = Run(spec)
        except MetaflowNotFound:
            raise ConfigError(f"run {spec!r}: no such Metaflow run (list them with `python flows/<flow>.py "
                              f"list-runs`) and no such folder") from None
        if not run.successful:
            raise ConfigError(f"run {spec!r} did not finish; compare finished runs only")
        try:
            return spec, Path(run.data.run_dir)
        except AttributeError:
            raise ConfigError(f"run {spec!r} has no run_dir artifact: it is not a training flow's run") from None
    raise ConfigError(f"run {spec!r}: not a folder and not a Metaflow run pathspec like TallFlow/1234")


def load_run(name_and_folder: tuple[str, Path] | str) -> RunEvidence:
    """A run's ``evidence.json`` and its per-user arrays (sha256 checked)."""
    name, folder = resolve_run(name_and_folder) if isinstance(name_and_folder, str) else name_and_folder
    path = Path(folder) / EVIDENCE_FILE
    if not path.is_file():
        raise DataError(f"run {name}: {path} is missing; it was made before runs kept their per-user arrays, "
                        f"or by a stage that writes none (preprocess): re-run it")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"run {name}: {path} is not valid JSON ({exc}); re-run it") from None
    record = doc.get("per_user") or {}
    if not record:
        raise DataError(f"run {name}: {path} records no per-user arrays; nothing to compare")
    arrays = read_run_arrays(Path(folder) / Path(record["path"]).name
                             if not Path(record["path"]).is_file() else record["path"], record.get("sha256"))
    return RunEvidence(name, Path(folder), doc.get("stage", "?"), doc.get("dataset"), doc.get("split_sha256"),
                       list(doc.get("runs") or []), arrays)


def check_same_split(runs: Sequence[RunEvidence]) -> str:
    """The one split sha256 all `runs` evaluated, or one ConfigError naming the runs that differ."""
    if not runs:
        raise ConfigError("no runs to compare: pass --runs PretrainFlow/<id>,TallFlow/<id>")
    by_split: dict[str | None, list[str]] = {}
    for r in runs:
        by_split.setdefault(r.split_sha256, []).append(r.name)
    if len(by_split) > 1 or None in by_split:
        parts = "; ".join(f"{', '.join(names)}: split {str(sha)[:12]}" for sha, names in by_split.items())
        raise ConfigError(f"the runs evaluated different splits ({parts}); compare runs over one saved split "
                          f"(pass the first run's split folder to the others with --split-dir)")
    return next(iter(by_split))


def _label(run: RunEvidence, method: str, taken: set[str]) -> str:
    label = f"{run.stage}:{method}"
    return label if label not in taken else f"{run.name}:{method}"


def leaderboard(runs: Sequence[RunEvidence], *, metrics: Sequence[str] | None = None, alpha: float = ALPHA,
                n_resamples: int = TABLE_RESAMPLES) -> dict:
    """Every method of `runs` (``<stage>:<method>``) per metric the runs share (or `metrics`), overall
    and per user group where one run has groups (mainstream groups of the local stage, matched to
    the other runs' users by id), each against the best method of that table.

    Returns ``{"split_sha256", "runs", "methods": {label: {"run", "stage", "method"}}, "tables":
    {title: {"best", "order", "entries"}}}``."""
    sha = check_same_split(runs)
    results: dict[Any, dict] = {}
    arrays: dict[tuple[str, int | None], PerUser] = {}
    methods: dict[str, dict] = {}
    groups_by_user: dict[int, str] = {}
    for run in runs:
        for (method, seed), pu in run.arrays.items():
            if pu.groups is not None:
                groups_by_user.update(zip(pu.users.tolist(), pu.groups.tolist()))
    taken: set[str] = set()
    for run in runs:
        labels: dict[str, str] = {}
        for (method, seed), pu in sorted(run.arrays.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
            label = labels.setdefault(method, _label(run, method, taken))
            taken.add(label)
            methods[label] = {"run": run.name, "stage": run.stage, "method": method}
            test = next((r["test"] for r in run.runs if r["method"] == method and r.get("seed") == seed), {})
            results[(label, seed) if seed is not None else label] = {"seed": seed, "test": test}
            if groups_by_user and pu.groups is None:
                pu = PerUser(pu.users, pu.metrics, np.array([groups_by_user.get(int(u), "") for u in pu.users]))
            arrays[(label, seed)] = pu
    shared = set.intersection(*[set(pu.metrics) for pu in arrays.values()]) if arrays else set()
    wanted = list(metrics) if metrics else sorted(shared)
    missing = [m for m in wanted if m not in shared]
    if missing or not wanted:
        have = ", ".join(sorted(shared)) or "none"
        raise ConfigError(f"metric(s) {', '.join(missing) or '(none)'} not kept by every run's per-user arrays; "
                          f"the runs share: {have}")
    group_names = sorted({g for g in groups_by_user.values() if g}, key=_group_order)
    tables = {}
    for name in wanted:
        for group in [None, *group_names]:
            metric = Metric(name, group=group)
            means = comparison(results, [metric], None, arrays=arrays, n_resamples=n_resamples)
            entries = means["metrics"][metric.title]
            if not entries:
                continue
            best = max(entries, key=lambda m: entries[m]["mean"])
            tested = comparison(results, [metric], best, arrays=arrays, alpha=alpha, n_resamples=n_resamples)
            entries = tested["metrics"][metric.title]
            order = sorted(entries, key=lambda m: -entries[m]["mean"])
            tables[metric.title] = {"metric": name, "group": group, "best": best, "order": order, "entries": entries}
    return {"split_sha256": sha, "runs": [{"name": r.name, "folder": str(r.folder), "stage": r.stage,
                                           "dataset": r.dataset} for r in runs],
            "methods": methods, "alpha": alpha, "resamples": n_resamples, "tables": tables}


def _group_order(g: str) -> tuple:
    from recsys.metrics.groups import GROUP_NAMES

    return (GROUP_NAMES.index(g), "") if g in GROUP_NAMES else (99, g)


def board_table(board: Mapping[str, Any], title: str) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of one leaderboard table: rank, method, run, mean [95% CI], vs the best."""
    from recsys.pipeline.evidence import interval_cell, vs_cell

    table = board["tables"][title]
    headers = ["rank", "method", "run", "seeds", f"{title} [95% CI]", f"vs best ({table['best']})"]
    cells = []
    for rank, m in enumerate(table["order"], 1):
        e = dict(table["entries"][m])
        e["is_reference"] = m == table["best"]
        cells.append([str(rank), m, board["methods"][m]["run"], str(e.get("n_seeds") or 1), interval_cell(e),
                      "best" if m == table["best"] else vs_cell(e)])
    return headers, cells


def board_text(board: Mapping[str, Any]) -> str:
    """Every table of the leaderboard, aligned for a terminal."""
    from recsys.pipeline.report import text_table

    return "\n\n".join(f"{title}\n{text_table(*board_table(board, title))}" for title in board["tables"])


def board_png(board: Mapping[str, Any], title: str | None = None) -> bytes:
    """Horizontal bars of the first (or the named) table's means with their 95 % intervals;
    methods significantly below the best are drawn lighter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsys.pipeline.preprocess import figure_png

    title = title or next(iter(board["tables"]))
    table = board["tables"][title]
    order = table["order"][::-1]
    means = [table["entries"][m]["mean"] for m in order]
    ci = [table["entries"][m].get("ci") or [v, v] for m, v in zip(order, means)]
    err = np.array([[max(0.0, v - c[0]) for v, c in zip(means, ci)], [max(0.0, c[1] - v) for v, c in zip(means, ci)]])
    worse = [bool((table["entries"][m].get("vs") or {}).get("significant")) for m in order]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(order) + 1.2))
    ax.barh(np.arange(len(order)), means, xerr=err, capsize=3,
            color=["#9bbbd4" if w else "#2f6f9f" for w in worse])
    ax.set_yticks(np.arange(len(order)), order)
    ax.set_xlabel(f"{title} (95% CI; lighter: significantly below the best)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)
