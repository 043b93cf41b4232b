"""Data-parallel Mult-VAE / Mult-DAE / TALL over several machines: the functions ``flows/ddp_flow.py``
calls around metaflow-torchrun's ``@torchrun`` step.

    prepared = prepare(dataset, protocol, output_dir=...)       # the split, saved once, in start
    args = entrypoint_args(split_path, model, config, out_dir)  # what every node's torchrun runs
    current.torch.run(entrypoint=ENTRYPOINT, torchrun_args=TORCHRUN_ARGS, entrypoint_args=args)
    result = read_result(out_dir)                               # on the control node (rank 0)

Each of the ``nodes x nproc_per_node`` processes is one rank of :mod:`recsys.pipeline.ddp_fit`:
every batch is split over the ranks, gradients are all-reduced, and rank 0 writes ``model.pt``
(with its sha256 sidecar) and ``result.json``. ``out_dir`` must be a folder rank 0 can write and
the next steps can read (the run folder locally; a shared volume, ``RECSYS_OUTPUT_DIR``, in the
cloud).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from recsys.errors import ConfigError
from recsys.io import write_json
from recsys.pipeline.ddp_fit import check_model
from recsys.pipeline.stage import Stage, Task

ENTRYPOINT = "recsys.pipeline.ddp_fit"
TORCHRUN_ARGS = {"module": ""}  # run ENTRYPOINT as a module (torchrun --module)


def check_request(model: str, nodes: int, config: Mapping[str, Any]) -> None:
    check_model(model)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ConfigError(f"--nodes must be an integer >= 1, got {nodes!r}")
    if not isinstance(config, Mapping):
        raise ConfigError(f"--model-config must be a JSON object of {model} settings, got {config!r}")
    from recsys.models.registry import build

    build(model, **config)  # a bad key or value stops here, before any machine starts


def prepare(dataset: str, protocol: str, *, model: str, output_dir, data_dir: str | None = None, split_dir: str = ""):
    """The split (made with the pretraining profile's protocol parameters, or reused from `split_dir`);
    `model` must train on that protocol (TALL: random_split)."""
    from recsys.pipeline import pretrain as pt
    from recsys.pipeline.preprocess import load_saved_split

    if split_dir:  # the split says its protocol; --protocol, when given, must match it
        return load_saved_split(split_dir, protocol or None, dataset)
    settings = pt.load_settings(dataset)
    section = pt.protocol_settings(settings, protocol or None, model)  # the protocol, its parameters, the model's check
    return pt.prepare(dataset, section, data_dir=data_dir, output_dir=output_dir)


def entrypoint_args(split_path, model: str, config: Mapping[str, Any], out_dir) -> dict:
    """``--split --model --config FILE --out`` for every rank. The config travels as a file:
    metaflow-torchrun strips quotes from argument values, which would break inline JSON."""
    out = Path(out_dir)
    config_file = out / "config.json"
    write_json(config_file, dict(config))
    return {"split": str(split_path), "model": model, "config": str(config_file), "out": str(out)}


def read_result(out_dir) -> dict:
    path = Path(out_dir) / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: rank 0 wrote no result; see the train step's log")
    return json.loads(path.read_text())



class DataParallelStage(Stage):
    """One data-parallel fit of a registered model whose class says ``data_parallel``, on the
    pretraining profile's split of a protocol (or a saved one): one task, run by every rank of
    ``torchrun`` (:mod:`recsys.pipeline.ddp_fit`); ``flows/ddp_flow.py`` launches them."""

    name = label = "ddp"
    protocol = None  # the pretraining profile's, or the saved split's

    def load_settings(self, dataset: str, override: Mapping[str, Any] | None = None) -> dict:
        from recsys.pipeline import pretrain as pt

        return pt.load_settings(dataset, override)

    def prepare(self, dataset: str, settings: Mapping[str, Any], *, data_dir=None, output_dir=None):
        return prepare(dataset, settings.get("protocol", ""), model=settings["model"], output_dir=output_dir,
                       data_dir=data_dir, split_dir=settings.get("split_dir", ""))

    def plan(self, settings: Mapping[str, Any], *, model: str, nodes: int = 1, config=None) -> list[Task]:
        check_request(model, nodes, dict(config or {}))
        return [Task(model, None, {"model": model, "config": dict(config or {}), "nodes": nodes})]

    def run_task(self, split_path, task: Task, out_dir, **options: Any) -> dict:
        """One rank's fit in this process (world size 1 unless torchrun set the group up)."""
        from recsys.pipeline.ddp_fit import main

        args = entrypoint_args(split_path, task.spec["model"], task.spec["config"], out_dir)
        main([f"--{k}={v}" for k, v in args.items()])
        return read_result(out_dir)

    def aggregate(self, results):
        return [{"model": k, "world_size": r["world_size"], "best_epoch": r["best_epoch"]} for k, r in results.items()]

    def table(self, rows):
        from recsys.pipeline.report import dict_rows_table

        return dict_rows_table(rows)


STAGE = DataParallelStage()
