"""The Parameters the flows share are declared once, in ``flows/flow_base.py``, and every flow's
command line still offers them as users type them.

* ``run --help`` of each flow (a subprocess, as a user types it; all seven side by side) lists the
  shared options that flow reads, and ``ddp_flow.py`` none of ``--data-path / --columns / --sep``;
* one subprocess imports the seven flow modules and reports each Parameter's name, default, type,
  help and the class that holds it: the shared ones come from ``DatasetFlow`` / ``CsvDatasetFlow``,
  or, where a flow words their help itself (``_output_under`` / ``_help``), from the base's
  ``__init_subclass__`` with the one default and type;
* no flow file constructs a shared Parameter itself;
* ``flow_base.py`` goes into the code package, as ``flow_support.py`` does (remote tasks import it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

FLOWS = REPO / "flows"
BASE = ("dataset", "data_dir", "output_dir")
CSV = ("data_path", "columns", "sep")
OPTION = {"dataset": "--dataset", "data_dir": "--data-dir", "output_dir": "--output-dir",
          "data_path": "--data-path", "columns": "--columns", "sep": "--sep"}
# flow file -> (class, base class, where --output-dir's help says the files go)
CASES = {
    "preprocess_flow.py": ("PreprocessFlow", "CsvDatasetFlow", "splits/<dataset>/<protocol>/<run id>"),
    "pretrain_flow.py": ("PretrainFlow", "CsvDatasetFlow", "pretrain/<dataset>/<protocol>/<run id>"),
    "tall_flow.py": ("TallFlow", "CsvDatasetFlow", "tall/<dataset>/<run id>"),
    "tail_flow.py": ("TailFlow", "CsvDatasetFlow", "tail/<dataset>/<run id>"),
    "meta_flow.py": ("MetaFlow", "CsvDatasetFlow", "meta/<dataset>/<run id>"),
    "bam_flow.py": ("BamFlow", "CsvDatasetFlow", "bam/<dataset>/<run id>"),
    "ddp_flow.py": ("DataParallelFlow", "DatasetFlow", "ddp/<dataset>/<run id>"),
}
TIMEOUT = 180

# Run in a subprocess: importing ddp_flow.py patches metaflow-torchrun and PATH (torchrun_compat).
INSPECT = r"""
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
from metaflow import FlowSpec
out = {}
for file in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location(file[:-3], f"{sys.argv[1]}/{file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = next(c for c in vars(module).values() if isinstance(c, type) and issubclass(c, FlowSpec)
               and c.__module__ == module.__name__)
    params = {}
    for var, p in cls._get_parameters():
        owner = next(k for k in cls.__mro__ if var in vars(k))
        if not p.IS_CONFIG_PARAMETER:
            p.init()  # what the command line gets: default, type, help
        params[var] = {"name": p.name, "config": p.IS_CONFIG_PARAMETER, "owner": owner.__name__,
                       "owner_module": owner.__module__, "default": p.kwargs.get("default"),
                       "type": getattr(p.kwargs.get("type"), "__name__", None), "help": p.kwargs.get("help")}
    out[file] = {"class": cls.__name__, "bases": [b.__name__ for b in cls.__mro__],
                 "hook_made": sorted(set(vars(cls).get("_help", {}))
                                     | ({"output_dir"} if vars(cls).get("_output_under") else set())),
                 "params": params}
print("JSON" + json.dumps(out))
"""


def _flow_base():
    spec = importlib.util.spec_from_file_location("flow_base", FLOWS / "flow_base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """``run --help`` of every flow and the inspection, all started at once; (returncode, output)."""
    root = tmp_path_factory.mktemp("flow_params")
    (root / ".metaflow").mkdir()
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root), "METAFLOW_DEFAULT_DATASTORE": "local",
           "METAFLOW_DEFAULT_METADATA": "local", "METAFLOW_HOME": str(root / "mfhome"),
           "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "100"}
    commands = {file: [sys.executable, str(FLOWS / file), "--no-pylint", "run", "--help"] for file in CASES}
    commands["inspect"] = [sys.executable, "-c", INSPECT, str(FLOWS), *CASES]
    procs = {k: subprocess.Popen(c, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k, c in commands.items()}
    return {k: (p.wait(TIMEOUT), p.communicate()[0]) for k, p in procs.items()}


@pytest.fixture(scope="module")
def inspected(outputs):
    code, out = outputs["inspect"]
    assert code == 0, out
    return json.loads(out[out.index("JSON") + 4:])


@pytest.mark.parametrize("file", list(CASES))
def test_run_help_lists_the_shared_options_the_flow_reads(outputs, file):
    code, out = outputs[file]
    assert code == 0, out
    listed = set(re.findall(r"^\s+(--[\w-]+)", out, flags=re.M))
    shared = BASE + (CSV if CASES[file][1] == "CsvDatasetFlow" else ())
    assert {OPTION[v] for v in shared} <= listed, out
    # a flow never gains a shared option it cannot use
    assert not {OPTION[v] for v in set(OPTION) - set(shared)} & listed, out


@pytest.mark.parametrize("file", list(CASES))
def test_shared_parameters_come_from_the_base_class(inspected, file):
    flow_base = _flow_base()
    cls, base, under = CASES[file]
    info = inspected[file]
    assert info["class"] == cls and base in info["bases"]
    shared = BASE + (CSV if base == "CsvDatasetFlow" else ())
    params = info["params"]
    assert set(OPTION) & set(params) == set(shared)
    for var in shared:
        p = params[var]
        name, default, text = flow_base._SPECS[var]
        assert (p["name"], p["default"], p["type"], p["config"]) == (name, default, "str", False), (var, p)
        if var in info["hook_made"]:
            # its own help, made by DatasetFlow.__init_subclass__ from the one specification
            assert p["owner"] == cls and p["help"] != text, (var, p)
        else:
            assert (p["owner_module"], p["help"]) == ("flow_base", text), (var, p)
            assert p["owner"] in ("DatasetFlow", "CsvDatasetFlow"), (var, p)
    assert params["dataset"]["default"] == "amazon-digital-music"
    assert under in params["output_dir"]["help"]
    # the flow's own Parameters and its cfg Config stay in the flow
    assert params["cfg"]["config"] and params["cfg"]["owner"] == cls
    assert all(p["owner"] == cls for v, p in params.items() if v not in OPTION)


def test_meta_says_its_dataset_needs_ratings(inspected):
    assert "with ratings" in inspected["meta_flow.py"]["params"]["dataset"]["help"]
    assert "ratings" not in inspected["tall_flow.py"]["params"]["dataset"]["help"]


def test_no_flow_file_declares_a_shared_parameter():
    names = "|".join(re.escape(n) for n in ("dataset", "data-dir", "output-dir", "data-path", "columns", "sep"))
    declared = re.compile(rf"Parameter\(\s*[\"']({names})[\"']")
    for file in CASES:
        text = (FLOWS / file).read_text()
        assert not declared.search(text), file
        # no class attribute of that name either (class body: four spaces in)
        assert not re.search(r"^    (dataset|data_dir|output_dir|data_path|columns|sep)\s*=", text, flags=re.M), file


def test_help_for_a_parameter_the_base_lacks_is_refused():
    flow_base = _flow_base()
    with pytest.raises(TypeError, match="data_path"):
        type("NoFileFlow", (flow_base.DatasetFlow,), {"_help": {"data_path": "a file"}})
    flow = type("OwnWordsFlow", (flow_base.CsvDatasetFlow,), {"_output_under": "x/<dataset>", "_help": {"sep": "s"}})
    flow.output_dir.init()
    assert "x/<dataset>" in flow.output_dir.kwargs["help"]
    assert flow.sep.name == "sep" and flow.sep is not flow_base.CsvDatasetFlow.sep
    assert "output_dir" not in vars(type("PlainFlow", (flow_base.CsvDatasetFlow,), {}))


def test_flow_base_goes_into_the_code_package(metaflow_env, tmp_path):
    """Remote tasks (Kubernetes, Batch, Argo) import flow_base from the code package."""
    out = subprocess.run([sys.executable, str(FLOWS / "tall_flow.py"), "--no-pylint", "package", "list"],
                         cwd=tmp_path, env={**os.environ, **metaflow_env}, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert str(FLOWS / "flow_base.py") in out.stdout + out.stderr
