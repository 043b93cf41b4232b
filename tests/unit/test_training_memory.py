"""Memory known before training: limits, estimates, the ledger that refuses or queues, heartbeats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.models.baselines import EASE
from recsys.models.tail import TailLearner
from recsys.training.memory import (GiB, Heartbeat, MemoryBudgetError, MemoryLedger, host_limit, last_heartbeat,
                                    parse_bytes)


def test_limit_comes_from_the_setting_then_the_machine(monkeypatch):
    monkeypatch.setenv("RECSYS_MEMORY_LIMIT", "1.5G")
    assert host_limit() == int(1.5 * GiB)
    monkeypatch.delenv("RECSYS_MEMORY_LIMIT")
    assert host_limit() > 256 << 20
    assert parse_bytes("512M") == 512 << 20 and parse_bytes("7") == 7
    with pytest.raises(ConfigError, match="expected a size such as 6G"):
        parse_bytes("lots")


def test_tail_learner_estimate_is_three_square_matrices_plus_blocks():
    """U, its momentum and the best U in memory; from 16k items (best_weights: auto) the best U
    waits on disk and the estimate is two square matrices plus the blocks."""
    square = 4 * 23_242**2
    cfg = TailLearner.Config(batch_size=1024, best_weights="memory")
    est = TailLearner.peak_memory(cfg, 27_341, 23_242, 280_706)
    assert 3 * square < est < 3 * square + 2 * GiB
    auto = TailLearner.peak_memory(TailLearner.Config(batch_size=1024), 27_341, 23_242, 280_706)
    assert auto == est - square
    assert TailLearner.peak_memory(TailLearner.Config(fused_sgd=False, best_weights="memory"), 27_341, 23_242,
                                   280_706) > est + 4 * GiB
    assert EASE.peak_memory(EASE.Config(dtype="float32"), 27_341, 23_242, 280_706) < auto


def test_a_task_that_can_never_fit_is_refused_in_one_line(tmp_path):
    ledger = MemoryLedger(tmp_path, limit=1 * GiB)
    with pytest.raises(MemoryBudgetError) as err:
        with ledger.reserve("tail task posit seed 0", 3 * GiB):
            pytest.fail("must not start")
    msg = str(err.value)
    assert "\n" not in msg and "posit seed 0" in msg and "3.0 GB" in msg and "1.0 GB" in msg
    assert "--max-workers 1" in msg


def test_tasks_that_fit_only_alone_run_one_after_another(tmp_path, capsys):
    ledger = MemoryLedger(tmp_path, limit=10 * GiB, poll=0.02)
    order = []

    def task(name):
        with ledger.reserve(name, 6 * GiB):
            order.append(f"{name} start")
            time.sleep(0.2)
            order.append(f"{name} end")

    first = threading.Thread(target=task, args=("a",))
    first.start()
    time.sleep(0.05)
    task("b")  # same process, other task key: waits for "a"
    first.join()
    assert order == ["a start", "a end", "b start", "b end"]
    assert "waiting for them (these tasks fit only one after another)" in capsys.readouterr().err


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped: no process has it (barring reuse)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_reservations_of_dead_processes_are_dropped(tmp_path):
    """A killed task's 9 GB no longer count: 6 GB more fit under 10 GB at once (a regression
    waits and the timeout turns it into a MemoryBudgetError instead of a hang)."""
    dead = _dead_pid()
    ledger_file = tmp_path / "memory-ledger.json"
    ledger_file.write_text(json.dumps({f"{dead}:x": {"bytes": 9 * GiB, "pid": dead, "task": "x"}}))
    ledger = MemoryLedger(tmp_path, limit=10 * GiB, poll=0.01)
    mine = {f"{os.getpid()}:y": {"bytes": 6 * GiB, "pid": os.getpid(), "task": "y"}}
    with ledger.reserve("y", 6 * GiB, timeout=2):
        assert json.loads(ledger_file.read_text()) == mine  # the dead pid's entry is gone, ours held
        with ledger._locked() as book:
            assert book == mine
    assert json.loads(ledger_file.read_text()) == {}  # released on exit


def test_a_live_holder_and_a_request_too_big_beside_it_time_out_with_the_holders(tmp_path, capsys):
    ledger = MemoryLedger(tmp_path, limit=10 * GiB, poll=0.01)
    with ledger.reserve("tail task posit seed 0", 6 * GiB):
        with pytest.raises(MemoryBudgetError) as err:
            with ledger.reserve("tail task ease seed 1", 5 * GiB, timeout=0.1):
                pytest.fail("must not start beside a holder it does not fit with")
        book = json.loads((tmp_path / "memory-ledger.json").read_text())
        assert [v["task"] for v in book.values()] == ["tail task posit seed 0"]  # the refused one never held
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("tail task ease seed 1: waited 0.1 s for 5.0 GB")
    assert f"{5 * GiB} bytes" in msg and "limit 10.0 GB" in msg
    assert f"held by tail task posit seed 0 (pid {os.getpid()}, 6.0 GB)" in msg and "--max-workers 1" in msg
    assert "waiting for them" in capsys.readouterr().err
    assert json.loads((tmp_path / "memory-ledger.json").read_text()) == {}


def test_a_killed_attempt_is_named_with_its_last_memory(tmp_path):
    beat = tmp_path / "hb.json"
    with Heartbeat(beat, "tail task ease seed 0", every=0.01):
        x = np.ones((2000, 2000))  # noqa: F841 (some memory to see)
        time.sleep(0.05)
    assert last_heartbeat(beat) is None  # ended normally
    data = json.loads(beat.read_text())
    data["done"] = False  # as a SIGKILL leaves it
    beat.write_text(json.dumps(data))
    msg = last_heartbeat(beat)
    assert "killed from outside" in msg and "tail task ease seed 0" in msg and "last measured memory" in msg


def test_run_one_stops_before_training_when_the_estimate_exceeds_the_limit(tmp_path, monkeypatch):
    from recsys.data.synthetic import make_synthetic
    from recsys.pipeline import tail
    from recsys.protocols import strong_generalization

    split = strong_generalization(make_synthetic(n_users=300, n_items=120, seed=0).df, n_heldout_users=50, seed=0)
    path = split.save(tmp_path / "split")
    spec = {"model": "tail_learner", "config": {"method": "ease", "epochs": 2, "batch_size": 64, "progress": "off"}}
    monkeypatch.setenv("RECSYS_MEMORY_LIMIT", "1M")
    with pytest.raises(MemoryBudgetError, match="tail task ease seed 0: needs about"):
        tail.run_one(path, "ease", spec, 0, tmp_path / "out", memory_dir=tmp_path / "mem")
    assert not (tmp_path / "out" / "result.json").exists()
    with pytest.raises(MemoryBudgetError, match="tail task ease: needs about .* items"):
        tail.memory_plan(path, {"ease": spec}, log=lambda *_: None)
