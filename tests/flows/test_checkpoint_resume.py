"""Checkpoints in flows: a training task killed mid-training goes on from its last epoch checkpoint,
on ``@retry`` and on ``resume``, and ends with the metrics of an uninterrupted run.

The kill comes from ``RECSYS_TEST_KILL_AT_CHECKPOINT`` (flows/flow_support.py): attempt i of a
training task is SIGKILLed right after the loop wrote the checkpoint of the i-th listed epoch.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import REPO, run_flow

FLOW = str(REPO / "flows" / "tail_flow.py")
EPOCHS = 4
TINY = {
    "params": {"n_heldout_users": 100, "seed": 1},
    "seeds": [0],
    "learner": {"lr": 0.01, "weight_decay": 0.01, "epochs": EPOCHS, "batch_size": 64, "patience": None,
                "adv_k": 20},
    "methods": {"posit": {"alr": 1.0, "ast": "2bmlp2", "nstd": 1.5}},
    "threshold": None,
}
PROGRESS = re.compile(rf"\[tail_learner\] epoch (\d+)/{EPOCHS}\b")


def _flow_support():
    spec = importlib.util.spec_from_file_location("flow_support", REPO / "flows" / "flow_support.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(tmp_path: Path) -> str:
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=300, n_items=120, seed=3).df.to_csv(path, index=False)
    return yaml.safe_dump({**TINY, "dataset": {"path": str(path)}}, sort_keys=False)


def _attempt_log(task, attempt: int) -> str:
    from metaflow import Task

    return Task(task.pathspec, attempt=attempt, _namespace_check=False).stderr


def _epochs(log: str) -> list[int]:
    return [int(e) for e in PROGRESS.findall(log)]


def _comparable(result: dict) -> dict:
    """What must not depend on the kill: test metrics, best epoch, the history less its timings."""
    history = [{k: v for k, v in h.items() if not k.endswith("_seconds")} for h in result["history"]]
    return {"test": result["test"], "best_epoch": result["best_epoch"], "epochs": result["epochs"],
            "history": history}


def _folder(env: dict, run_id: str) -> Path:
    return Path(env["RECSYS_OUTPUT_DIR"]) / "checkpoints" / "TailFlow" / str(run_id) / "train" / "posit.seed0"


def test_a_task_killed_after_an_epoch_checkpoint_resumes_on_retry(metaflow_env, tmp_path):
    cfg = _cfg(tmp_path)
    killed = run_flow(FLOW, {**metaflow_env, "RECSYS_TEST_KILL_AT_CHECKPOINT": "2"}, tmp_path, cfg,
                      dataset="csv", methods="posit")
    task = killed["train"].task
    assert task.current_attempt == 1  # the first attempt died, @retry ran a second
    first, second = _attempt_log(task, 0), _attempt_log(task, 1)
    assert _epochs(first) == [1, 2] and "killing the task after the checkpoint of epoch 2" in first
    folder = _folder(metaflow_env, killed.id)
    assert f"recsys.training: tail_learner: resumed after epoch 2 from {folder / 'fit'}" in second
    assert _epochs(second) == [3, 4]
    assert not folder.exists()  # a finished model's checkpoints are removed
    assert not folder.parent.parent.exists()  # and the join pruned the run's empty folders

    plain = run_flow(FLOW, metaflow_env, tmp_path, cfg, dataset="csv", methods="posit")
    assert plain["train"].task.current_attempt == 0 and _epochs(plain["train"].task.stderr) == [1, 2, 3, 4]
    resumed = killed["end"].task["results"].data["posit/seed0"]
    uninterrupted = plain["end"].task["results"].data["posit/seed0"]
    assert resumed["epochs"] == EPOCHS
    assert _comparable(resumed) == _comparable(uninterrupted)


def test_resume_of_a_failed_run_goes_on_from_its_checkpoint(metaflow_env, tmp_path):
    from metaflow import Runner

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(_cfg(tmp_path))
    # both attempts die: after epoch 2, then (resumed) after epoch 3; the run fails
    with Runner(FLOW, show_output=False, pylint=False, cwd=str(tmp_path), config=[("cfg", str(cfg_path))],
                env={**metaflow_env, "RECSYS_TEST_KILL_AT_CHECKPOINT": "2,3"}).run(
                    max_workers=2, dataset="csv", methods="posit") as running:
        assert running.status == "failed"
        origin = running.run.id
    folder = _folder(metaflow_env, origin)
    assert sorted(p.name for p in (folder / "fit").glob("epoch-*.pt")) == ["epoch-000002.pt", "epoch-000003.pt"]

    # `resume` takes the origin run's configuration; it cannot be given --config
    with Runner(FLOW, show_output=False, pylint=False, cwd=str(tmp_path), env=metaflow_env).resume(
            origin_run_id=origin, max_workers=2) as running:
        run = running.run
        assert running.status == "successful", "\n".join(t.stderr for s in run for t in s if not t.successful)
    assert run.id != origin
    log = run["train"].task.stderr
    assert f"tail_learner: resumed after epoch 3 from {folder / 'fit'}" in log  # the origin run's folder
    assert _epochs(log) == [4]
    assert run["end"].task["results"].data["posit/seed0"]["epochs"] == EPOCHS
    assert not folder.exists()


def _has_metaflow_checkpoint() -> bool:
    try:
        return importlib.util.find_spec("metaflow_extensions.obcheckpoint") is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.skipif(not _has_metaflow_checkpoint(),
                    reason="the optional metaflow-checkpoint extension is not installed")
def test_metaflow_checkpoint_brings_checkpoints_to_a_clean_machine_on_retry_and_resume(metaflow_env, tmp_path):
    """With RECSYS_TEST_WIPE_CHECKPOINTS the local folder is deleted before each kill, as if the
    retry, and later the resumed run, ran on another machine: only the datastore has the epochs."""
    from metaflow import Runner

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(_cfg(tmp_path))
    env = {**metaflow_env, "RECSYS_METAFLOW_CHECKPOINT": "1"}
    with Runner(FLOW, show_output=False, pylint=False, cwd=str(tmp_path), config=[("cfg", str(cfg_path))],
                env={**env, "RECSYS_TEST_KILL_AT_CHECKPOINT": "2,3", "RECSYS_TEST_WIPE_CHECKPOINTS": "1"}).run(
                    max_workers=2, dataset="csv", methods="posit") as running:
        assert running.status == "failed"
        origin = running.run.id
        second = _attempt_log(running.run["train"].task, 1)
    assert f"restored @checkpoint of TailFlow/{origin}/train/" in second and "attempt 0 (epoch 2)" in second
    assert "resumed after epoch 2" in second and _epochs(second) == [3]
    assert not _folder(metaflow_env, origin).exists()  # wiped before the second kill

    with Runner(FLOW, show_output=False, pylint=False, cwd=str(tmp_path), env=env).resume(
            origin_run_id=origin, max_workers=2) as running:
        assert running.status == "successful"
        log = running.run["train"].task.stderr
    assert f"restored @checkpoint of TailFlow/{origin}/train/" in log and "attempt 1 (epoch 3)" in log
    assert "resumed after epoch 3" in log and _epochs(log) == [4]


# ---- the folder, without running a flow -----------------------------------------------------------

def _current(run_id, origin=None, retry=0, step="train"):
    return SimpleNamespace(flow_name="TailFlow", run_id=run_id, origin_run_id=origin, step_name=step,
                           retry_count=retry, get=lambda key, default=None: default)


def test_checkpoint_root_is_the_same_for_retries_and_resumed_runs(tmp_path, monkeypatch):
    fs = _flow_support()
    monkeypatch.setattr(fs, "_show_training_log", lambda: None)
    monkeypatch.delenv("RECSYS_CHECKPOINT_ROOT", raising=False)
    monkeypatch.delenv("RECSYS_TEST_KILL_AT_CHECKPOINT", raising=False)
    monkeypatch.setenv("RECSYS_OUTPUT_DIR", str(tmp_path / "out"))
    origins = {"300": "200", "200": "100", "100": None}  # 300 resumed 200, which resumed 100
    monkeypatch.setattr(fs, "_origin_of", lambda flow, rid: origins[rid])

    def root(run_id, origin=None, retry=0, flow=None):
        monkeypatch.setattr(fs, "current", _current(run_id, origin, retry))
        return fs.checkpoint_root(flow)

    first = root("100")
    assert first == tmp_path / "out" / "checkpoints" / "TailFlow" / "100" / "train" and first.is_dir()
    assert root("100", retry=1) == first
    assert root("200", origin="100") == first  # python flow.py resume
    assert root("300", origin="200") == first  # a resume of that resume
    assert root("400") != first  # a fresh run starts afresh

    flow = SimpleNamespace(output_dir=str(tmp_path / "given"))  # the flow's --output-dir
    assert root("100", flow=flow) == tmp_path / "given" / "checkpoints" / "TailFlow" / "100" / "train"
    monkeypatch.setenv("RECSYS_CHECKPOINT_ROOT", str(tmp_path / "shared"))
    assert root("200", origin="100", flow=flow) == tmp_path / "shared" / "TailFlow" / "100" / "train"


def test_lineage_stops_at_loops_and_unreachable_metadata():
    fs = _flow_support()
    assert fs.lineage("F", "5", None) == ["5"]
    assert fs.lineage("F", "5", "4", lambda f, r: {"4": "3", "3": None}[r]) == ["5", "4", "3"]
    assert fs.lineage("F", "5", "4", lambda f, r: {"4": "3", "3": "4"}[r]) == ["5", "4", "3"]

    def broken(flow, rid):
        raise ConnectionError("metadata service down")

    assert fs.lineage("F", "5", "4", broken) == ["5", "4"]


def test_flow_support_goes_into_the_code_package(metaflow_env, tmp_path):
    """Remote tasks (Kubernetes, Batch, Argo) import flow_support from the code package."""
    out = subprocess.run([sys.executable, FLOW, "--no-pylint", "package", "list"], cwd=tmp_path,
                         env={**os.environ, **metaflow_env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(REPO / "flows" / "flow_support.py") in out.stdout + out.stderr


def test_two_runs_of_one_flow_at_once_write_separate_run_folders_and_both_finish(metaflow_env, tmp_path):
    """Two users (or a schedule and a user) starting the same flow together: each run gets its own
    run folder under the output root, neither overwrites the other, both end successfully."""
    import subprocess
    import sys

    from recsys.data import make_synthetic

    data = tmp_path / "tiny.csv"
    make_synthetic(n_users=150, n_items=60, seed=3).df.to_csv(data, index=False)
    cmd = [sys.executable, str(REPO / "flows" / "pretrain_flow.py"), "--no-pylint", "run", "--dataset", "csv",
           "--data-path", str(data), "--protocol", "random_split", "--models", "mostpop,ease", "--max-workers", "1"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, **metaflow_env}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    runs = sorted((tmp_path / "outputs" / "pretrain" / "csv" / "random_split").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert (run / "results.json").is_file() and (run / "ease" / "model.pt.sha256").is_file()
