"""The stage contract: settings -> a plan of tasks -> ``run_task`` -> ``aggregate`` over seeds ->
``report``. Every stage (preprocess, pretrain, local, tail, meta, BaM, data-parallel) is one
subclass of :class:`Stage`; its module exposes the instance as ``STAGE`` and, for the flows and
notebooks, the instance's methods under their usual names (``tail.load_settings`` is
``tail.STAGE.load_settings``). A flow step is a few calls into it::

    stage = tail.STAGE
    settings = stage.load_settings(dataset, override)        # params/<stage>_<dataset>.yaml + --config
    tasks = stage.plan(settings, methods=..., seeds=...)      # bad names and values stop here
    prepared = stage.prepare(dataset, settings, output_dir=...)
    results = {t.result_key: stage.run_task(prepared.path, t, stage.task_dir(run_dir, t)) for t in tasks}
    rows = stage.aggregate(results)
    stage.report(run_dir, rows=rows, results=..., title=...)  # report.html, plot.png, results.json

What differs between methods (a closed-form model with no seed, a baseline with no device) is an
attribute of the model class (:mod:`recsys.models.base`); which model a method is, the registry of
stages (:mod:`recsys.pipeline.catalog`). Adding a stage: docs/training.md, "Adding a stage".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from recsys.errors import ConfigError
from recsys.pipeline.settings import comma_list, default_output_root, load_stage_settings


@dataclass(frozen=True)
class Task:
    """One unit of a stage's work: a method (``key``, e.g. ``"sasrec/melo"``) with one training
    seed (None where the seed sits in the config or the model draws no random numbers), its
    ``spec`` (``{"model": registered name, "config": {...}}`` plus the stage's own fields) and,
    where the stage estimates it, the host bytes it will hold."""

    key: str
    seed: int | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)
    memory_bytes: int | None = None

    @property
    def result_key(self):
        """How the stage's ``results`` mapping names this task's result: (key, seed) or key."""
        return self.key if self.seed is None else (self.key, self.seed)

    @property
    def label(self) -> str:
        return self.key if self.seed is None else f"{self.key} seed {self.seed}"


def parse_seeds(value: Any) -> list[int]:
    """Seeds from '0,1,2', an int or a list; each a non-negative integer."""
    items = comma_list(value) if isinstance(value, str) else list(value if isinstance(value, (list, tuple)) else [value])
    seeds = []
    for item in items:
        try:
            seed = int(item)
        except (TypeError, ValueError):
            seed = -1
        if seed < 0 or str(item).strip() != str(seed):
            raise ConfigError(f"seeds must be non-negative integers like '0,1,2', got {value!r}")
        seeds.append(seed)
    if not seeds:
        raise ConfigError(f"no seeds given (got {value!r}); pass e.g. --seeds 0,1,2")
    return seeds


class Stage:
    """Base of the stages. A subclass names itself and its protocol, and writes ``plan``,
    ``run_task``, ``aggregate`` and ``table`` (``plot_png`` and ``summary`` where it has them);
    settings, the split, the run folder, the one-process run and the report are written here."""

    name: ClassVar[str]             # params/<name>_<dataset>.yaml; outputs/<name>/<dataset>/<run id>
    label: ClassVar[str]            # in messages: "the tail stage"
    protocol: ClassVar[str]         # the split protocol it evaluates on
    whose: ClassVar[str] = ""       # whose protocol it is ("POSIT's"), for the wrong-protocol message
    keys: ClassVar[frozenset[str]] = frozenset()      # top-level settings keys
    mappings: ClassVar[tuple[str, ...]] = ("methods",)  # settings sections that must be mappings
    required: ClassVar[str] = "methods"                # the section a settings file must have
    reference: ClassVar[str | None] = None             # the method the table tests others against

    # ---- settings ---------------------------------------------------------------------------------
    def load_settings(self, dataset: str, override: Mapping[str, Any] | None = None) -> dict:
        """``params/<name>_<dataset>.yaml`` (or the stage's default profile) deep-merged with
        `override` (``--config cfg FILE``); unknown keys and a wrong protocol stop here."""
        settings = load_stage_settings(dataset, self.label, self.name, self.protocol, self.whose, set(self.keys),
                                       self.mappings, override, required=self.required)
        return self.check_settings(settings)

    def check_settings(self, settings: dict) -> dict:
        """The stage's own checks of loaded settings (none by default)."""
        return settings

    def require(self, where: str, model: str, contract: type) -> type:
        """The class of registered `model`, or one ConfigError naming the contract the stage needs
        and the ones the model keeps (a model of the wrong contract stops in the first step)."""
        from recsys.models.registry import get_model

        klass = get_model(model)
        if not issubclass(klass, contract):
            raise ConfigError(f"{where}: model {model!r} keeps the {' / '.join(klass.contracts())} contract; the {self.label} "
                              f"stage runs {contract.__name__} models")
        if self.protocol and klass.protocols is not None and self.protocol not in klass.protocols:
            raise ConfigError(f"{where}: model {model!r} trains on {' / '.join(klass.protocols)} splits; the "
                              f"{self.label} stage evaluates on {self.protocol}")
        return klass

    # ---- data -------------------------------------------------------------------------------------
    def prepare(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir=None):
        """Make and save the stage's split (the preprocessing code); a
        :class:`~recsys.pipeline.preprocess.PreparedSplit`."""
        from recsys.pipeline.splits import prepare_split

        return prepare_split(dataset, self.protocol, data_dir=data_dir, threshold=settings.get("threshold"),
                             dataset_options=settings.get("dataset") or {},
                             protocol_params=settings.get("params") or {}, output_dir=output_dir)

    def default_run_dir(self, dataset: str, run_id: str) -> Path:
        return default_output_root() / self.name / dataset / str(run_id)

    def task_dir(self, run_dir, task: Task) -> Path:
        """Where a task writes ``model.pt`` and ``result.json``: ``<key>/seed<s>`` under `run_dir`."""
        out = Path(run_dir) / task.key.replace("/", "_")
        return out if task.seed is None else out / f"seed{task.seed}"

    # ---- work -------------------------------------------------------------------------------------
    def plan(self, settings: Mapping[str, Any], **choices: Any) -> list[Task]:
        """The tasks of a run, each config built once so that a bad name or value stops before training."""
        raise NotImplementedError

    def run_task(self, split_path, task: Task, out_dir, **options: Any) -> dict:
        """Fit and evaluate one task; its files go under `out_dir`; returns the JSON-able result."""
        raise NotImplementedError

    def summary(self, result: Mapping[str, Any]) -> str:
        """One line of a finished task's headline metrics (progress output)."""
        return ""

    # ---- results ----------------------------------------------------------------------------------
    def aggregate(self, results: Mapping[Any, Mapping[str, Any]]) -> list[dict]:
        """One row per method (mean and spread over seeds where the stage has seeds)."""
        raise NotImplementedError

    def table(self, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
        """(headers, cells) for a card, a notebook or the README."""
        raise NotImplementedError

    # ---- intervals and tests ------------------------------------------------------------------------
    def evidence_metrics(self, settings: Mapping[str, Any], results: Mapping[Any, Mapping[str, Any]]) -> list:
        """The :class:`~recsys.pipeline.evidence.Metric` columns the table tests (none by default)."""
        return []

    def reference_of(self, settings: Mapping[str, Any] | None, results: Mapping[Any, Any] | None = None):
        """The reference method: the settings' ``reference`` (or the stage's default) when it is in
        `results`; a stage may map each method to its own (BaM: the model's hard selection)."""
        from recsys.pipeline.evidence import method_of

        ref = (settings or {}).get("reference") or self.reference
        methods = {method_of(k) for k in (results or {})}
        if results is not None and ref not in methods:
            return None
        return ref

    def evidence(self, results: Mapping[Any, Mapping[str, Any]], settings: Mapping[str, Any] | None = None,
                 **options: Any) -> dict | None:
        """Intervals and paired tests of every method against the reference
        (:func:`recsys.pipeline.evidence.comparison`); None when the stage tests nothing."""
        from recsys.pipeline.evidence import comparison

        metrics = self.evidence_metrics(settings or {}, results)
        if not metrics or not results:
            return None
        return comparison(results, metrics, self.reference_of(settings, results), **options)

    def row_method(self, row: Mapping[str, Any]) -> str:
        """The method a table row is about (the key its evidence is filed under)."""
        return str(row.get("key") or row.get("method") or row.get("model"))

    def table_with_evidence(self, rows: list[dict], evidence: Mapping[str, Any] | None
                            ) -> tuple[list[str], list[list[str]]]:
        """The stage's table with two columns per tested metric: mean [95% CI], and the difference
        to the reference with its Holm-adjusted p (``*`` significant)."""
        from recsys.pipeline.evidence import columns

        headers, cells = self.table(rows)
        extra_h, extra = columns(evidence, [self.row_method(r) for r in rows])
        return headers + extra_h, [list(c) + e for c, e in zip(cells, extra)]

    def format_table(self, rows: list[dict], evidence: Mapping[str, Any] | None = None) -> str:
        """The table aligned for a terminal (with the evidence columns when given)."""
        from recsys.pipeline.evidence import footnote
        from recsys.pipeline.report import text_table

        text = text_table(*self.table_with_evidence(rows, evidence))
        note = footnote(evidence)
        return f"{text}\n{note}" if note else text

    def plot_png(self, rows: list[dict], **context: Any) -> bytes | None:
        """The stage's figure as PNG bytes (None: it has none)."""
        return None

    def report(self, run_dir, *, rows: list[dict], results: Any, title: str, intro: str = "",
               png: bytes | None = None, evidence: Mapping[str, Any] | None = None,
               tasks: Mapping[Any, Mapping[str, Any]] | None = None, dataset: str | None = None,
               split_sha256: str | None = None, provenance: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """``report.html``, ``plot.png`` and ``results.json`` under `run_dir`, the table printed;
        with `tasks` (the task results by result key) also ``per_user.npz`` (every task's per-user
        arrays) and ``evidence.json`` (the intervals and tests, the split's checksum, the per-seed
        test metrics: what ``flows/compare_flow.py`` reads)."""
        from recsys.pipeline.evidence import footnote
        from recsys.pipeline.report import publish

        headers, cells = self.table_with_evidence(rows, evidence)
        note = footnote(evidence)
        if png is None:
            png = self.plot_png(rows, results=results, evidence=evidence)
        if provenance and isinstance(results, Mapping):
            results = {**results, "provenance": dict(provenance)}
        files = publish(run_dir, title=title, intro=f"{intro} {note}".strip(), headers=headers, cells=cells,
                        results=results, png=png)
        if note:
            print(note)
        if tasks:
            files["evidence"] = self.write_evidence(run_dir, tasks, evidence, dataset=dataset,
                                                    split_sha256=split_sha256, provenance=provenance)
            print(f"evidence: {files['evidence']}")
        return files

    def write_evidence(self, run_dir, tasks: Mapping[Any, Mapping[str, Any]], evidence: Mapping[str, Any] | None,
                       *, dataset: str | None = None, split_sha256: str | None = None,
                       provenance: Mapping[str, Any] | None = None) -> Path:
        """``per_user.npz`` and ``evidence.json`` of a finished run (see :meth:`report`)."""
        from recsys.io import write_json
        from recsys.pipeline.evidence import method_of, seed_of, write_run_arrays

        arrays = write_run_arrays(run_dir, tasks)
        runs = [{"method": method_of(k), "seed": seed_of(k, r), "model": r.get("model"),
                 "test": {m: v for m, v in (r.get("test") or {}).items() if isinstance(v, (int, float))},
                 "train_seconds": r.get("train_seconds"), "files": r.get("files")}
                for k, r in tasks.items()]
        path = Path(run_dir) / "evidence.json"
        write_json(path, {"stage": self.name, "dataset": dataset, "split_sha256": split_sha256,
                          "per_user": arrays, "runs": runs, "evidence": evidence,
                          "provenance": dict(provenance or {})})
        return path

    # ---- the whole stage in one process -------------------------------------------------------------
    def run_all(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir,
                progress: Callable[[str], Any] = print, **choices: Any) -> dict:
        """The notebook's path: the same calls the flow runs as steps."""
        out = Path(output_dir)
        tasks = self.plan(settings, **choices)
        prepared = self.prepare(dataset, settings, data_dir=data_dir, output_dir=out / "split")
        results = self.run_tasks(prepared.path, tasks, out, settings, progress=progress)
        return {"split": str(prepared.path), "split_sha256": prepared.sha256, "stats": prepared.stats,
                "specs": {t.key: dict(t.spec) for t in tasks}, "results": results, "rows": self.aggregate(results),
                "evidence": self.evidence(results, settings)}

    def run_tasks(self, split_path, tasks: Sequence[Task], run_dir, settings: Mapping[str, Any], *,
                  progress: Callable[[str], Any] = print) -> dict:
        results = {}
        for task in tasks:
            start = time.perf_counter()
            result = self.run_task(split_path, task, self.task_dir(run_dir, task), **self.task_options(settings))
            results[task.result_key] = result
            progress(f"{task.label}: {self.summary(result)} ({time.perf_counter() - start:.1f} s)")
        return results

    def task_options(self, settings: Mapping[str, Any]) -> dict:
        """Keyword arguments ``run_all`` passes to every ``run_task`` (none by default)."""
        return {}
