"""The README's main job, timed, into a results file: ``python flows/tall_flow.py run`` on the
embedded Amazon Digital Music data (the command ``scripts/run.sh`` runs), its wall-clock time from
launch to the printed table, the group table and the intervals and tests the run's
``evidence.json`` holds. The README's main-job table and time are rendered from the file
(``scripts/render_docs.py``); the machine's load while it ran is recorded beside the time, since a
busy machine makes it slower.

    python benchmarks/main_job.py            # writes benchmarks/results/main_job.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "main_job.json"
COMMAND = ["flows/tall_flow.py", "--no-pylint", "run", "--max-workers", "2"]


def main() -> None:
    from recsys.io import write_json

    env = {**os.environ}
    env.setdefault("USERNAME", "recsys")
    with tempfile.TemporaryDirectory(prefix="main_job_") as tmp:
        out = Path(tmp) / "run"
        load_before = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *COMMAND, "--output-dir", str(out)], cwd=REPO, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        if proc.returncode != 0:
            sys.exit(f"the main job failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        results = json.loads((out / "results.json").read_text())
        evidence = json.loads((out / "evidence.json").read_text())
        disk = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
                for p in out.iterdir()}
    from recsys.pipeline.local import group_table

    write_json(RESULT, {
        "command": "python " + " ".join(COMMAND),
        "dataset": "amazon-digital-music", "settings": "params/tall_amazon-digital-music.yaml",
        "wall_seconds": round(wall, 1), "cpu_cores": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "rows": group_table({k: v for k, v in results.items() if k != "provenance"}),
        "seeds": {k: v.get("seed") for k, v in results.items() if k != "provenance"},
        "provenance": results.get("provenance"),
        "run_folder_bytes": sum(disk.values()), "run_folder_bytes_by_entry": disk,
        "evidence": evidence["evidence"], "split_sha256": evidence["split_sha256"],
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    print(f"main job: {wall:.1f} s (load {load_before[0]:.2f} -> {load_after[0]:.2f}); wrote {RESULT}")


if __name__ == "__main__":
    main()
