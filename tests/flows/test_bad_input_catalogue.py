"""The bad-input catalogue, run through the real command line (``python flows/<flow>.py run ...``
in a subprocess, as a user types it).

Every case must: exit non-zero; end with one line ``error: <message>`` that names the file, field
or value at fault and the fix (the words each case lists); show no Python traceback; and leave
nothing under the run's output folder. Settings and data checks run in ``start``, before any
training, so each case costs one Metaflow start-up (a few seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO


@dataclass
class Case:
    name: str
    flow: str
    args: list[str]
    expect: list[str]  # words the last line must contain (case-insensitive)
    cfg: str | None = None  # YAML for --config cfg FILE
    files: dict[str, str] = field(default_factory=dict)  # name -> content, written in the test folder


GOOD = "user,item,rating,timestamp\n" + "".join(f"{u},{i},{1 + (u + i) % 5},{u * 100 + i}\n"
                                                 for u in range(40) for i in range(u % 7, 60, 3))

CASES = [
    Case("unknown dataset", "tall_flow.py", ["--dataset", "no-such-dataset"],
         ["unknown dataset", "no-such-dataset", "valid datasets", "amazon-digital-music"]),
    Case("missing file", "tall_flow.py", ["--dataset", "csv", "--data-path", "{tmp}/nowhere.csv"],
         ["nowhere.csv", "not found"]),
    Case("a folder where a file is expected", "tall_flow.py", ["--dataset", "csv", "--data-path", "{tmp}"],
         ["folder", "file"]),
    Case("wrong columns", "tall_flow.py", ["--dataset", "csv", "--data-path", "{tmp}/abc.csv"],
         ["missing column", "columns found", "--columns"], files={"abc.csv": "a,b,c\n1,2,3\n4,5,6\n"}),
    Case("header-only file", "tall_flow.py", ["--dataset", "csv", "--data-path", "{tmp}/header.csv"],
         ["header.csv", "no data rows"], files={"header.csv": "user,item,rating\n"}),
    Case("text in the rating column", "tall_flow.py", ["--dataset", "csv", "--data-path", "{tmp}/text.csv"],
         ["rating", "five"], files={"text.csv": "user,item,rating\n1,2,five\n2,3,4\n"}),
    Case("negative epochs", "tall_flow.py", ["--methods", "vae"], ["epochs", "-3"],
         cfg="methods: {vae: {epochs: -3}}\n"),
    Case("unknown method", "tall_flow.py", ["--methods", "vae,no_such_method"],
         ["no_such_method", "vae", "tall"]),
    Case("unknown protocol", "preprocess_flow.py", ["--protocol", "no_such_protocol"],
         ["unknown protocol", "no_such_protocol", "random_split", "leave_one_out"]),
    Case("unknown setting key", "tall_flow.py", [], ["bogus_key", "expected"], cfg="bogus_key: 1\n"),
    Case("wrong type", "tall_flow.py", ["--methods", "vae"], ["epochs", "ten"], cfg="methods: {vae: {epochs: ten}}\n"),
    Case("a k-core that removes every user", "preprocess_flow.py", ["--protocol", "random_split"],
         ["k_core", "1000"], cfg="defaults: {protocol: {k_core: 1000}}\n"),
    Case("a file without a header row", "tall_flow.py",
         ["--dataset", "csv", "--data-path", "{tmp}/noheader.csv"],
         ["noheader.csv", "first line looks like data", "--columns user=0,item=1"],
         files={"noheader.csv": GOOD.split("\n", 1)[1]}),
    Case("a file of duplicated rows only", "tall_flow.py", ["--dataset", "csv", "--data-path", "{tmp}/dups.csv"],
         ["dups.csv", "repeats its (user, item) pairs", "dedupe", "distinct items has 1", "k_core"],
         files={"dups.csv": "user,item\n" + "".join(f"u{u},i{(u * 7) % 30}\n" for u in range(60) for _ in range(12))}),
    Case("a fraction out of range", "preprocess_flow.py", ["--protocol", "random_split"],
         ["fractions", "1.5"], cfg="defaults: {protocol: {fractions: [1.5, 0.1, 0.2]}}\n"),
    Case("a rating stage on data without ratings", "meta_flow.py",
         ["--dataset", "csv", "--data-path", "{tmp}/clicks.csv"], ["no ratings", "rating column"],
         files={"clicks.csv": "user,item\n" + "".join(f"{u},{i}\n" for u in range(30) for i in range(u % 5, 40, 2))}),
    Case("a corrupt saved split", "pretrain_flow.py",
         ["--dataset", "csv", "--data-path", "{tmp}/good.csv", "--protocol", "random_split", "--split-dir",
          "{tmp}/saved_split"], ["checksum mismatch", "re-create the split"], files={"good.csv": GOOD}),
    Case("an output folder that cannot be written", "tall_flow.py", ["--output-dir", "{tmp}/a_file/run"],
         ["cannot write", "a_file", "--output-dir"], files={"a_file": "not a folder\n"}),
    Case("a split of another protocol", "pretrain_flow.py",
         ["--dataset", "csv", "--data-path", "{tmp}/good.csv", "--protocol", "random_split",
          "--split-dir", "{tmp}/saved_split"], ["leave_one_out", "random_split", "--protocol"], files={"good.csv": GOOD}),
]


def _corrupt_split(tmp: Path) -> None:
    """A random_split of good.csv saved in tmp/saved_split, then one of its files changed."""
    import pandas as pd

    from recsys.protocols import make_split

    df = pd.read_csv(tmp / "good.csv")
    if "another" in str(tmp):  # intact, but of another protocol
        make_split("leave_one_out", df, k_core=0, seed=0).save(tmp / "saved_split")
    else:
        path = make_split("random_split", df, fractions=[0.7, 0.1, 0.2], k_core=0, seed=0).save(tmp / "saved_split")
        victim = sorted(path.glob("*.npz"))[0]  # one flipped byte
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))


@pytest.mark.parametrize("case", CASES, ids=[c.name.replace(" ", "_") for c in CASES])
def test_bad_input_stops_with_one_clear_last_line(case, tmp_path):
    tmp = tmp_path / ("another" if "another" in case.name else "case")
    tmp.mkdir()
    for name, text in case.files.items():
        (tmp / name).write_text(text)
    if "--split-dir" in case.args:
        _corrupt_split(tmp)
    out = tmp / "out"
    out.mkdir()
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    if "--output-dir" not in args:
        args += ["--output-dir", str(out)]
    top = []
    if case.cfg is not None:
        (tmp / "cfg.yaml").write_text(case.cfg)
        top = ["--config", "cfg", str(tmp / "cfg.yaml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_DEBUG")}
    env.update(METAFLOW_DATASTORE_SYSROOT_LOCAL=str(tmp), METAFLOW_HOME=str(tmp / "mfhome"),
               RECSYS_OUTPUT_DIR=str(out), METAFLOW_DEFAULT_DATASTORE="local", METAFLOW_DEFAULT_METADATA="local")
    proc = subprocess.run([sys.executable, str(REPO / "flows" / case.flow), "--no-pylint", *top, "run",
                           "--max-workers", "1", *args],
                          cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout[-3000:]
    last = lines[-1]
    print(f"[{case.name}] {last}")  # shown with pytest -s: the catalogue as a user sees it
    assert last.startswith("error: "), proc.stdout[-3000:]
    for word in case.expect:
        assert word.lower() in last.lower(), f"{word!r} not in the last line: {last}"
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]
    left = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
    assert not left, f"files left under the output folder: {left}"
