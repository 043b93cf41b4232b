"""Run each implementation of a side-by-side benchmark in its own child process, so that each
one's peak RSS is its own: the child calls ``child_result``, the parent ``run_children``."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any, Callable


def child_result(load: Callable[[], Any], run: Callable[..., dict], device: str, *args) -> None:
    """In the child: load the inputs, run ``run(inputs, *args, device)`` and print its result with
    the peak RSS (and peak CUDA memory) as one ``RESULT {json}`` line. ``BENCH_THREADS`` sets the
    torch threads."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    inputs = load()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = run(inputs, *args, device)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["rss_after_load_gb"] = base / 2**20
    if device.startswith("cuda"):
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps(out))


def run_children(script: str, impls: tuple[str, ...], args: list[str],
                 show: Callable[[str, dict], None]) -> dict[str, dict]:
    """In the parent: run ``script --child IMPL *args`` for each implementation in turn, calling
    ``show(impl, result)`` as each finishes; a failed child stops with its stderr."""
    results = {}
    for impl in impls:
        proc = subprocess.run([sys.executable, script, "--child", impl, *args], capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{impl} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results[impl] = json.loads(line[len("RESULT "):])
        show(impl, results[impl])
    return results
