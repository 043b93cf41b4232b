"""Data-parallel flow: a @torchrun step over 2 nodes (2 gloo ranks on this machine) trains the same
Mult-VAE loss curve as one process, within tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, failed_start_log, run_flow

pytest.importorskip("metaflow_extensions.torchrun", reason="needs metaflow-torchrun: pip install -e '.[dev]'")

FLOW = str(REPO / "flows" / "ddp_flow.py")
CONFIG = {"enc_dims": [32, 8], "epochs": 3, "batch_size": 64, "dropout": 0.0, "seed": 0, "progress": "off"}


def test_two_nodes_train_the_one_process_curve(metaflow_env, tmp_path):
    from recsys.data import make_synthetic
    from recsys.models.base import stage_matrices
    from recsys.models.registry import build
    from recsys.protocols import Split, strong_generalization

    split = strong_generalization(make_synthetic(n_users=400, n_items=120, seed=3).df, n_heldout_users=60, seed=1)
    split_dir = split.save(tmp_path / "split")
    run = run_flow(FLOW, metaflow_env, tmp_path, split_dir=str(split_dir),
                   nodes=2, model="multvae",
                   model_config=json.dumps(CONFIG), output_dir=str(tmp_path / "out"))
    result = run["end"].task["result"].data
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert Path(tmp_path / "out" / "multvae" / "model.pt").is_file()
    assert len(list(run["train"])) == 2  # the control task and one worker node

    loaded = Split.load(split_dir)
    valid = stage_matrices(loaded, loaded.meta["evaluation"]["valid"])
    single = build("multvae", **CONFIG).fit(loaded["train"], valid)
    ours = [h["loss"] for h in result["history"]]
    alone = [h["loss"] for h in single.history_]
    assert len(ours) == len(alone) == 3
    for a, b in zip(ours, alone):
        assert a == pytest.approx(b, rel=0.03)  # each rank samples its own noise: same curve, not the same digits
    assert ours[-1] < ours[0]


def test_a_model_without_data_parallel_training_stops_in_start(metaflow_env, tmp_path):
    log = failed_start_log(FLOW, metaflow_env, tmp_path, model="ease")
    assert "data-parallel training is implemented for multvae, multdae, tall" in log
