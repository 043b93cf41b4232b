"""Checkpoint folders for pipeline tasks.

A flow step passes one checkpoint root (stable across ``@retry`` attempts and ``resume``; see
``flows/flow_support.py``); each model a task trains checkpoints in its own sub-folder, keyed by
what the task trains (method, shard, seed), never by the task id, so a retry or a resumed run finds
it. When the model has finished, its checkpoints are deleted: the task's result files replace them.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def task_checkpoints(model, root, key: str) -> Iterator[Path | None]:
    """Point an iterative `model` at ``root/key`` for the block; remove the folder when the block
    succeeds. No-op (yields None) without a root or for a model that does not train iteratively."""
    from recsys.models.base import IterativeModel

    if root is None or not isinstance(model, IterativeModel):
        yield None
        return
    folder = Path(root) / key
    model.checkpoints(folder)
    yield folder
    model.checkpoints(None)
    shutil.rmtree(folder, ignore_errors=True)
