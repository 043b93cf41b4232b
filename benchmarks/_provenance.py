"""Where a results entry came from, for the ``command`` / ``machine`` fields the benchmark scripts
write beside what they measure (``check_results_keys.py`` checks that every key of a results file
is one its script declares in ``WRITES``)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def invocation(argv: list[str] | None = None) -> str:
    """``python benchmarks/<script>.py <args>`` as this process was started (paths relative to the
    repository where they lie inside it)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        name = str(script.relative_to(ROOT))
    except ValueError:
        name = argv[0]
    return "python " + shlex.join([name, *argv[1:]])


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def vector_isa() -> str:
    """The widest x86 vector extension the CPU reports ("AVX-512", "AVX2"), else the machine type."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    import platform

    return platform.machine() or "unknown ISA"


def machine_line() -> str:
    """E.g. ``2 CPU cores (AVX2)``: the cores this process may run on and their vector extension."""
    n = cpu_cores()
    return f"{n} CPU core{'s' if n != 1 else ''} ({vector_isa()})"
