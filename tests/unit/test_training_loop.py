"""The one training loop: early stopping and restore, budgets, progress, checkpoints and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from recsys.errors import ConfigError
from recsys.models.autoencoders import MultVAE
from recsys.training.checkpoints import Checkpoints
from recsys.training.loop import ExpertStopping, Job, LoopSettings, run


def _toy_job(values, seen=None):
    """A job whose 'weights' are one tensor set to the epoch number, validated by `values`."""
    w = torch.zeros(1)
    opt_state = {"calls": 0}

    def epoch_fn(epoch):
        w.fill_(float(epoch))
        opt_state["calls"] += 1
        if seen is not None:
            seen.append(epoch)
        return {"loss": 1.0 / epoch}

    def validate_fn(epoch):
        return values[epoch - 1], {"valid": values[epoch - 1]}

    return Job(epoch_fn, validate_fn, weights={"w": w}, state={"counters": opt_state}), w


def test_early_stopping_restores_the_best_weights_and_records_history():
    values = [0.1, 0.3, 0.2, 0.25, 0.1, 0.05, 0.9]
    job, w = _toy_job(values)
    res = run(job, LoopSettings(name="toy", epochs=7, patience=3, progress="off"))
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4, 5]  # 3 validations without gain after epoch 2
    assert res.best_epoch == 2 and res.best_value == 0.3 and res.stop_reason == "patience"
    assert float(w) == 2.0  # the best epoch's weights, not the last ones
    assert all({"loss", "valid", "train_seconds", "eval_seconds"} <= set(h) for h in res.history)


def test_eval_every_validates_on_schedule_and_on_the_last_epoch():
    job, _ = _toy_job([0.1] * 7)
    res = run(job, LoopSettings(name="toy", epochs=7, eval_every=3, progress="off"))
    assert [h["epoch"] for h in res.history if "valid" in h] == [3, 6, 7]


def test_restore_best_off_keeps_the_last_weights():
    job, w = _toy_job([0.5, 0.1, 0.1])
    run(job, LoopSettings(name="toy", epochs=3, restore_best=False, progress="off"))
    assert float(w) == 3.0


def test_max_seconds_stops_cleanly_with_the_best_weights():
    w = torch.zeros(1)

    def epoch_fn(epoch):
        time.sleep(0.05)
        w.fill_(float(epoch))
        return {"loss": 0.0}

    res = run(Job(epoch_fn, lambda e: (-abs(e - 2), {}), weights={"w": w}),
              LoopSettings(name="toy", epochs=100, max_seconds=0.12, progress="off"))
    assert res.stop_reason == "max_seconds" and 2 <= len(res.history) <= 3
    assert float(w) == 2.0


def test_progress_prints_one_line_per_epoch_with_what_is_left(capsys):
    job, _ = _toy_job([0.1, 0.2, 0.3])
    run(job, LoopSettings(name="toy", epochs=3, progress="lines", monitor="valid"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[toy] epoch 1/3") and "left <=" in lines[0]
    assert "valid 0.3000 (best 0.3000 @ 3)" in lines[2]


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(epochs=3, patience=0), dict(epochs=3, progress="loud"),
                                 dict(epochs=3, max_seconds=0), dict(epochs=3, mode="up")])
def test_bad_loop_settings_are_clear_errors(bad):
    with pytest.raises(ConfigError):
        LoopSettings(name="toy", **bad)


def test_expert_stopping_keeps_each_experts_best_epoch():
    bank = {"w": torch.zeros(3, 2)}
    stopper = ExpertStopping(3, {"w": 0}, patience=2, device=torch.device("cpu"))
    scores = [[0.1, 0.5, 0.2], [0.2, 0.4, 0.3], [0.3, 0.3, 0.1], [0.4, 0.2, 0.0], [0.5, 0.1, 0.0]]
    for epoch, vals in enumerate(scores, start=1):
        bank["w"].fill_(float(epoch))
        stopper.update(torch.tensor(vals), {"bank": bank}, epoch)
    assert stopper.best_epochs.tolist() == [5, 1, 2]
    assert stopper.best_state["w"][:, 0].tolist() == [5.0, 1.0, 2.0]
    assert stopper.stopped.tolist() == [False, True, True] and not stopper.should_stop


# ---- checkpoints and resume ------------------------------------------------------------------


def _data(n_users=300, n_items=120, seed=0):
    rng = np.random.default_rng(seed)
    x = sp.random(n_users, n_items, density=0.08, format="csr", random_state=rng, dtype=np.float32)
    x.data[:] = 1.0
    return x


def _vae(**kw):
    cfg = dict(enc_dims=[32, 8], epochs=6, batch_size=64, lr=3e-3, patience=None, eval_k=20, progress="off",
               total_anneal_steps=20)
    cfg.update(kw)
    return MultVAE(**cfg)


def _fit_scores(model, train, valid):
    model.fit(train, valid)
    return model.score(train[:50]).numpy(), [h["loss"] for h in model.history_]


def test_a_crashed_fit_resumes_from_its_checkpoint_to_identical_results(tmp_path):
    train, valid = _data(), (_data(seed=1), _data(seed=2))
    ref_scores, ref_loss = _fit_scores(_vae(), train, valid)

    class Crash(Exception):
        pass

    model = _vae().checkpoints(tmp_path / "ckpt")
    import recsys.models.autoencoders.multvae as mv

    real = mv.vae_loss
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 12:  # in epoch 3 (5 batches an epoch)
            raise Crash()
        return real(*a, **k)

    mv.vae_loss = crashing
    try:
        with pytest.raises(Crash):
            model.fit(train, valid)
    finally:
        mv.vae_loss = real
    assert sorted(p.name for p in (tmp_path / "ckpt" / "fit").glob("*.pt")) == ["epoch-000001.pt", "epoch-000002.pt"]
    scores, loss = _fit_scores(_vae().checkpoints(tmp_path / "ckpt"), train, valid)
    np.testing.assert_array_equal(scores, ref_scores)
    assert loss == ref_loss


def test_a_corrupt_checkpoint_is_reported_and_the_previous_one_used(tmp_path):
    train, valid = _data(), (_data(seed=1), _data(seed=2))
    ref_scores, _ = _fit_scores(_vae(epochs=4), train, valid)
    # a run cut by its time budget after epoch 1, then resumed to the end (checkpoints 3 and 4 kept)
    _fit_scores(_vae(epochs=4, max_seconds=1e-9).checkpoints(tmp_path), train, valid)
    _fit_scores(_vae(epochs=4).checkpoints(tmp_path), train, valid)
    newest = tmp_path / "fit" / "epoch-000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.warns(RuntimeWarning, match="epoch-000004.pt is unusable .*using the previous one"):
        scores, loss = _fit_scores(_vae(epochs=4).checkpoints(tmp_path), train, valid)
    np.testing.assert_array_equal(scores, ref_scores)


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    train = _data()
    _vae(epochs=2).checkpoints(tmp_path).fit(train)
    with pytest.raises(ConfigError, match="holds a run with other settings .*lr"):
        _vae(epochs=2, lr=1e-2).checkpoints(tmp_path).fit(train)


def test_an_option_added_later_at_its_neutral_value_keeps_old_checkpoints(tmp_path):
    old = {"model": "m", "config": {"lr": 0.1, "backbone": {"config": {"hidden": 8}}}}
    Checkpoints(tmp_path, old).save(1, {"x": 1})
    new = {"model": "m", "config": {"lr": 0.1, "backbone": {"config": {"hidden": 8, "min_updates": 0}}}}
    assert Checkpoints(tmp_path, new).latest()["x"] == 1
    changed = {"model": "m", "config": {"lr": 0.1, "backbone": {"config": {"hidden": 8, "min_updates": 500}}}}
    with pytest.raises(ConfigError, match="other settings"):
        Checkpoints(tmp_path, changed).latest()


def test_checkpoints_keep_the_newest_two_with_checksums(tmp_path):
    ck = Checkpoints(tmp_path, {"a": 1})
    for e in range(1, 5):
        ck.save(e, {"x": e})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-000003.pt", "epoch-000003.sha256", "epoch-000004.pt", "epoch-000004.sha256"]
    assert ck.latest()["x"] == 4
    (tmp_path / "epoch-000004.sha256").unlink()  # a kill between the two writes
    with pytest.warns(RuntimeWarning, match="no readable checksum"):
        assert ck.latest()["x"] == 3


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np, scipy.sparse as sp, torch
    torch.set_num_threads(1)
    from recsys.models.autoencoders import MultVAE
    rng = np.random.default_rng(0)
    def data(seed):
        x = sp.random(3000, 800, density=0.03, format="csr", random_state=np.random.default_rng(seed), dtype=np.float32)
        x.data[:] = 1.0
        return x
    train, valid = data(0), (data(1), data(2))
    model = MultVAE(enc_dims=[200, 50], epochs=12, batch_size=100, lr=1e-3, patience=None, eval_k=20,
                    progress="lines").checkpoints(sys.argv[1])
    model.fit(train, valid)
    res = model.evaluate(*valid, recall_denominator="min", ks=(20,), metrics=("ndcg", "recall")).mean()
    json.dump({"metrics": res, "loss": [h["loss"] for h in model.history_]}, open(sys.argv[2], "w"))
""")


def test_sigkill_mid_training_then_restart_gives_exactly_the_uninterrupted_metrics(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    py = [sys.executable, str(script)]
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([*py, str(ckpt), str(tmp_path / "killed.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((ckpt / "fit").glob("epoch-*.sha256"))) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the child finished before it could be killed"
    done = sorted((ckpt / "fit").glob("epoch-*.pt"))
    assert done and int(done[-1].stem.split("-")[1]) < 12
    subprocess.run([*py, str(ckpt), str(tmp_path / "resumed.json")], env=env, check=True, capture_output=True)
    subprocess.run([*py, str(tmp_path / "fresh"), str(tmp_path / "fresh.json")], env=env, check=True,
                   capture_output=True)
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    fresh = json.loads((tmp_path / "fresh.json").read_text())
    assert resumed == fresh


def test_a_run_stopped_by_its_time_budget_resumes_with_more_time(tmp_path):
    train = _data()
    ref_scores, ref_loss = _fit_scores(_vae(epochs=5), train, None)
    model = _vae(epochs=5, max_seconds=1e-9).checkpoints(tmp_path)
    model.fit(train)
    assert len(model.history_) == 1
    scores, loss = _fit_scores(_vae(epochs=5).checkpoints(tmp_path), train, None)
    np.testing.assert_array_equal(scores, ref_scores)
    assert loss == ref_loss
    again, _ = _fit_scores(_vae(epochs=5).checkpoints(tmp_path), train, None)  # finished: nothing to train
    np.testing.assert_array_equal(again, ref_scores)
