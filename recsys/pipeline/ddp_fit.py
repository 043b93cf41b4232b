"""Entry point for data-parallel fits under ``torchrun`` (or metaflow-torchrun's ``@torchrun``,
which calls the same thing on each node)::

    torchrun --nproc_per_node 2 -m recsys.pipeline.ddp_fit --split SPLIT_DIR --model multvae \\
        --config '{"epochs": 20}' --out OUT_DIR

Each process joins the group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``; gloo on CPU, NCCL where CUDA is present), fits the model on its
share of every batch (:mod:`recsys.training.distributed`), and rank 0 writes ``model.pt`` (with its
sha256 sidecar) and ``result.json`` (loss curve, validation curve, world size) under ``--out``.
Models that take part are those whose class says ``data_parallel = True`` (Mult-VAE, Mult-DAE,
TALL); others are refused. This is a pipeline entry point (it builds models from the registry and
loads splits), so it sits beside :mod:`recsys.pipeline.ddp`, above the training layer it calls.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from recsys.errors import ConfigError

def data_parallel_models() -> list[str]:
    """The registered models whose class trains data-parallel (``Model.data_parallel``)."""
    from recsys.models.registry import registered_models

    return [name for name, klass in registered_models().items() if klass.data_parallel]


def check_model(model: str) -> None:
    """ConfigError unless `model` is a registered model that trains data-parallel."""
    from recsys.models.registry import get_model

    if not get_model(model).data_parallel:
        raise ConfigError(f"--model {model!r}: data-parallel training is implemented for "
                          f"{', '.join(data_parallel_models())}")


def main(argv: list[str] | None = None) -> dict | None:
    import torch
    import torch.distributed as dist

    from recsys.io import write_json
    from recsys.models.registry import build
    from recsys.protocols import Split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", required=True)
    ap.add_argument("--model", required=True, help="a registered model that trains data-parallel")
    ap.add_argument("--config", default="{}", help="JSON overriding the model's defaults, or a .json file holding it")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    check_model(args.model)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    config = json.loads(Path(args.config).read_text()) if args.config.endswith(".json") else json.loads(args.config)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        config.setdefault("device", f"cuda:{local}")
    try:
        split = Split.load(args.split)
        model = build(args.model, **config).fit_split(split)
        result = {"model": args.model, "world_size": world, "backend": backend if world > 1 else None,
                  "config": model.config.to_dict(), "history": model.history_, "best_epoch": model.best_epoch_}
        if rank == 0:
            out = Path(args.out)
            model.save(out / "model.pt")
            write_json(out / "result.json", result)
        if dist.is_initialized():
            dist.barrier()  # no rank tears the group down while another still uses it
        return result
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
