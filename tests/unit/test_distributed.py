"""Data-parallel training: 2 gloo processes give the 1-process model (Mult-DAE without dropout:
the same gradients up to float summation order), and Mult-VAE's loss curve within noise."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.synthetic import make_synthetic
from recsys.models.registry import build
from recsys.protocols import strong_generalization
from recsys.training import distributed


def _train():
    split = strong_generalization(make_synthetic(n_users=400, n_items=120, seed=2).df, n_heldout_users=50, seed=1)
    return split["train"], (split["valid_fold_in"], split["valid_holdout"])


def fit_losses(name: str, config: dict) -> dict:
    """Fit on the synthetic split; the loss curve and the validation NDCG (picklable, for spawn)."""
    train, valid = _train()
    model = build(name, **config).fit(train, valid)
    return {"loss": [h["loss"] for h in model.history_], "ndcg": [h["ndcg@100"] for h in model.history_],
            "world": distributed.rank_and_world()[1]}


DAE = dict(epochs=3, batch_size=64, dropout=0.0, patience=None, progress="off", seed=0, enc_dims=[32])
VAE = dict(epochs=4, batch_size=64, patience=None, progress="off", seed=0, enc_dims=[64, 16], total_anneal_steps=20)


def test_two_gloo_processes_give_the_one_process_model_without_noise():
    one = fit_losses("multdae", DAE)
    two = distributed.spawn(fit_losses, 2, "multdae", DAE)
    assert one["world"] == 1 and two["world"] == 2
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["ndcg"], one["ndcg"], atol=1e-4)


def test_two_gloo_processes_follow_the_vae_loss_curve_within_its_noise():
    one = fit_losses("multvae", VAE)
    two = distributed.spawn(fit_losses, 2, "multvae", VAE)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=0.03)  # each rank draws its own dropout / noise
    assert two["loss"][-1] < two["loss"][0]


def test_outside_a_process_group_every_row_is_this_ranks():
    idx = np.arange(10)
    assert distributed.rank_and_world() == (0, 1) and (distributed.my_rows(idx) == idx).all()


def test_torchrun_entry_point_with_two_processes_matches_one(tmp_path):
    """``torchrun --nproc_per_node 2 -m recsys.pipeline.ddp_fit`` (what metaflow-torchrun runs on
    each node) against the same entry point in one process."""
    import json
    import os
    import subprocess
    import sys

    train_split = strong_generalization(make_synthetic(n_users=400, n_items=120, seed=2).df, n_heldout_users=50,
                                        seed=1).save(tmp_path / "split")
    config = json.dumps(DAE)
    base = ["-m", "recsys.pipeline.ddp_fit", "--split", str(train_split), "--model", "multdae", "--config", config]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *base, "--out", str(tmp_path / "one")], check=True, env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *base,
                    "--out", str(tmp_path / "two")], check=True, env=env, timeout=300, capture_output=True)
    one, two = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert one["world_size"] == 1 and two["world_size"] == 2 and two["backend"] == "gloo"
    np.testing.assert_allclose([h["loss"] for h in two["history"]], [h["loss"] for h in one["history"]], rtol=1e-5)
    assert (tmp_path / "two" / "model.pt.sha256").is_file()


TALL = dict(n_experts=3, hidden=8, epochs=3, batch_size=64, dropout=0.0, noise_std_upstream=True, patience=None,
            progress="off", seed=0, gap=1, window=1)


def fit_tall(config: dict) -> dict:
    """TALL on a synthetic random split (picklable, for spawn): loss curve and test scores."""
    from recsys.protocols import random_split

    split = random_split(make_synthetic(n_users=300, n_items=80, seed=4).df, k_core=0, seed=0)
    model = build("tall", **config).fit(split["train"], split["valid"])
    scores = model.score_users(np.arange(split["train"].shape[0])).numpy()
    return {"loss": [h["loss"] for h in model.history_], "scores": scores, "world": distributed.rank_and_world()[1]}


def test_two_gloo_processes_train_the_one_process_tall():
    """TALL's mixture data-parallel: each rank its share of every batch, the adaptive weights'
    per-user losses gathered. Each rank draws its own VAE noise (std 0.01 here), so the curves
    agree to that noise: tightly while every weight is 1, within 1 % once the adaptive weights
    (which amplify small loss differences) take over."""
    flat = {**TALL, "gap": 100}
    one, two = fit_tall(flat), distributed.spawn(fit_tall, 2, flat)
    assert one["world"] == 1 and two["world"] == 2
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4)
    np.testing.assert_allclose(two["scores"], one["scores"], rtol=1e-3, atol=1e-3)
    one, two = fit_tall(TALL), distributed.spawn(fit_tall, 2, TALL)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-2)
