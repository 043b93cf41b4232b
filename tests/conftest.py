"""Test-wide environment: an offline, isolated Metaflow with a valid user name."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Metaflow rejects 'root' and an unset user; the Runner builds its Client objects in this
# process, so the variable must be set here, not only in the child's env.
if os.environ.get("USERNAME", "root") == "root" and not os.environ.get("METAFLOW_USER"):
    os.environ["METAFLOW_USER"] = "ci"
    os.environ["USERNAME"] = "ci"
os.environ.setdefault("RECSYS_OFFLINE", "1")  # tests never download

# Metaflow's Runner loads its vendored (older) typing_extensions, which re-patches
# typing._collect_parameters & co. with versions that do not know the installed
# typing_extensions' TypeVar defaults; any torch module imported afterwards (torch._dynamo via
# Adam, torch.distributed.tensor via assert_close) then fails with "Type parameter ~_T1 without
# a default follows type parameter with a default". Load the vendored copy now and put the
# installed patches back, so the Runner tests and model tests can share one process.
def _isolate_metaflow_typing_extensions() -> None:
    import typing

    import typing_extensions  # noqa: F401  (the installed one patches typing first)

    names = ("_collect_parameters", "_collect_type_vars", "_check_generic")
    saved = {n: getattr(typing, n) for n in names if hasattr(typing, n)}
    import metaflow._vendor.typing_extensions  # noqa: F401

    for n, fn in saved.items():
        setattr(typing, n, fn)


_isolate_metaflow_typing_extensions()


# Tier markers by folder (tests/unit -> unit, ...), so `pytest -m unit` / `-m "flows or notebooks"`
# select a tier; tests/test_reproduction.py carries its own `slow` mark (see pytest.ini).
_TIERS = ("unit", "flows", "notebooks", "deploy")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    tests = REPO / "tests"
    for item in items:
        try:
            folder = Path(item.path).resolve().relative_to(tests).parts[0]
        except (ValueError, IndexError):
            continue
        if folder in _TIERS:
            item.add_marker(getattr(pytest.mark, folder))


def data_home() -> Path | None:
    """$RECSYS_DATA_HOME (../shared/data in CI) or None."""
    value = os.environ.get("RECSYS_DATA_HOME")
    return Path(value) if value and Path(value).is_dir() else None


requires_data = pytest.mark.skipif(
    data_home() is None, reason="RECSYS_DATA_HOME is not set (CI sets it to ../shared/data)")


@pytest.fixture
def metaflow_env(tmp_path, monkeypatch):
    """A private Metaflow datastore / metadata root and output folder for one test."""
    # The datastore root is the test's working directory too: metaflow 2.19 writes cards under
    # the cwd's .metaflow but reads them under the datastore root, so the two must agree.
    root = tmp_path
    (root / ".metaflow").mkdir()
    env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_HOME": str(tmp_path / "mfhome"),
        "RECSYS_OUTPUT_DIR": str(tmp_path / "outputs"),
        "USERNAME": os.environ["USERNAME"],
        "METAFLOW_USER": os.environ.get("METAFLOW_USER", os.environ["USERNAME"]),
        "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in sys.path if p]),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import metaflow

    monkeypatch.chdir(tmp_path)
    # metaflow read its config at import, before this fixture: point the Client at this root.
    metaflow.metadata(f"local@{root}")
    metaflow.namespace(None)
    return env


def run_flow(flow: str, env: dict, tmp_path: Path, cfg: str | None = None, **parameters):
    """Run `flow` through the Runner API (cfg: YAML/JSON text for its `cfg` Config); the Client
    Run of a successful run, else an assertion error carrying the failed tasks' logs."""
    from metaflow import Runner

    config = []
    if cfg is not None:
        path = tmp_path / "cfg.yaml"
        path.write_text(cfg)
        config = [("cfg", str(path))]
    with Runner(flow, show_output=False, pylint=False, env=env, config=config,
                cwd=str(tmp_path)).run(max_workers=2, **parameters) as running:
        run = running.run
        assert running.status == "successful", "\n".join(t.stderr for s in run for t in s if not t.successful)
        return run


def failed_start_log(flow: str, env: dict, tmp_path: Path, **parameters) -> str:
    """Run `flow` expecting its start step to fail; return that step's stderr."""
    from metaflow import Runner

    with Runner(flow, show_output=False, pylint=False, env=env, cwd=str(tmp_path)).run(**parameters) as running:
        assert running.status == "failed"
        task = running.run["start"].task
        assert task.successful is False
        return task.stderr
