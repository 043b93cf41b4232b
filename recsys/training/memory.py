"""Know a training task's memory before it starts, and share a machine's memory between tasks.

* :func:`host_limit` -- what this process may use: ``$RECSYS_MEMORY_LIMIT`` (``"6G"``, ``"512M"``,
  bytes) when set, else the container's cgroup limit, else the machine's ``MemTotal``.
* A model class estimates its peak from the data's shapes: ``Model.peak_memory(config, n_users,
  n_items, nnz)`` (bytes; the formulas sit with each model and are checked against measured peaks
  in ``benchmarks/bench_tail_memory.py``).
* :class:`MemoryLedger` -- tasks of one run on one machine reserve their estimate in a small file
  under the run folder (``flock``-protected). A task whose estimate exceeds the limit stops before
  training with one line naming the task, the estimate, the limit and the fixes; a task that fits
  only when fewer run beside it waits until enough is free (so parallel Metaflow tasks that would
  not fit together run one after another instead of being OOM-killed), saying so once.

A watchdog thread (:class:`Heartbeat`) writes the task's RSS to a file every second, so when a task
is killed from outside (SIGKILL, the OOM killer) the next attempt can name what happened
(:func:`last_heartbeat`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from recsys.errors import ConfigError, RecsysError

GiB = 1 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class MemoryBudgetError(RecsysError):
    """A task's estimated peak memory exceeds what the machine or container grants."""


def parse_bytes(text: str | int, what: str = "RECSYS_MEMORY_LIMIT") -> int:
    """'6G', '512M', '1.5G', '123456' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{what}={text!r}: expected a size such as 6G, 512M or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def host_limit() -> int:
    """Bytes this process may use (see the module docstring)."""
    env = os.environ.get("RECSYS_MEMORY_LIMIT")
    if env:
        return parse_bytes(env)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < (1 << 60):
            return min(int(value), _mem_total())
    return _mem_total()


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: no limit


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fmt(n: float) -> str:
    return f"{n / GiB:.1f} GB" if n >= GiB / 10 else f"{n / (1 << 20):.0f} MB"


def fixes(device_hint: bool = True) -> str:
    tips = ["--max-workers 1 (fewer tasks side by side)", "a smaller batch_size", "fewer items (a k-core)"]
    if device_hint:
        tips.append("a machine with more memory or a GPU (--with kubernetes / batch, @resources(memory=...))")
    return "; ".join(tips)


class MemoryLedger:
    """Reservations of the tasks of one run on one machine (a JSON file guarded by ``flock``)."""

    def __init__(self, folder: str | os.PathLike, limit: int | None = None, poll: float = 1.0) -> None:
        self.folder = Path(folder)
        self.limit = host_limit() if limit is None else int(limit)
        self.poll = poll
        self.path = self.folder / "memory-ledger.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "memory-ledger.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                book = json.loads(self.path.read_text()) if self.path.exists() else {}
            except ValueError:
                book = {}
            # drop reservations of processes that are gone (killed tasks free their share)
            book = {k: v for k, v in book.items() if _alive(v.get("pid", -1))}
            yield book
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(book))
            os.replace(tmp, self.path)

    @contextlib.contextmanager
    def reserve(self, task: str, estimate: int, *, timeout: float | None = None) -> Iterator[None]:
        """Hold `estimate` bytes for `task` while the block runs; refuse at once what can never fit,
        wait while other tasks hold too much -- without end by default, at most `timeout` seconds
        when given (then :class:`MemoryBudgetError` names the task, the bytes, the limit and the
        holders)."""
        if estimate > self.limit:
            raise MemoryBudgetError(
                f"{task}: needs about {fmt(estimate)} of memory, this machine grants {fmt(self.limit)}; "
                f"it cannot run here. Fix: {fixes()}")
        key = f"{os.getpid()}:{task}"
        said = False
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._locked() as book:
                used = sum(v["bytes"] for v in book.values())
                if used + estimate <= self.limit or not book:
                    book[key] = {"bytes": int(estimate), "pid": os.getpid(), "task": task}
                    break
                holders = ", ".join(f"{v['task']} (pid {v['pid']}, {fmt(v['bytes'])})"
                                    for v in sorted(book.values(), key=lambda v: v["task"]))
            if not said:
                others = ", ".join(sorted(v["task"] for v in book.values()))
                print(f"{task}: needs about {fmt(estimate)}; {fmt(used)} of {fmt(self.limit)} are held by "
                      f"{others}: waiting for them (these tasks fit only one after another)",
                      file=sys.stderr, flush=True)
                said = True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise MemoryBudgetError(
                    f"{task}: waited {timeout:g} s for {fmt(estimate)} ({int(estimate)} bytes) of memory; "
                    f"{fmt(used)} of the limit {fmt(self.limit)} stay held by {holders}. Fix: {fixes()}")
            time.sleep(self.poll if left is None else min(self.poll, left))
        try:
            yield
        finally:
            with self._locked() as book:
                book.pop(key, None)


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


class Heartbeat:
    """A daemon thread writing ``{"rss": bytes, "peak": bytes, "time": ..., "done": bool}`` to
    `path` every `every` seconds while the block runs; ``done`` is set on a normal exit, so a file
    left with ``done: false`` means the process was killed."""

    def __init__(self, path: str | os.PathLike, task: str, every: float = 1.0) -> None:
        self.path, self.task, self.every = Path(path), task, every
        self.peak = 0
        self._stop = threading.Event()

    def _write(self, done: bool) -> None:
        rss = rss_bytes()
        self.peak = max(self.peak, rss)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"task": self.task, "rss": rss, "peak": self.peak, "time": time.time(),
                                   "pid": os.getpid(), "done": done}))
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._write(False)

    def __enter__(self) -> "Heartbeat":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write(False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._write(True)


def last_heartbeat(path: str | os.PathLike) -> str | None:
    """A one-line account of a previous attempt that was killed (its heartbeat never said done),
    or None when there is none / it ended normally."""
    try:
        beat = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if beat.get("done"):
        return None
    when = time.strftime("%H:%M:%S", time.localtime(beat.get("time", 0)))
    return (f"the previous attempt of {beat.get('task')} was killed from outside (SIGKILL or the kernel's OOM "
            f"killer) at {when}; its last measured memory was {fmt(beat.get('rss', 0))} (peak {fmt(beat.get('peak', 0))}, "
            f"limit here {fmt(host_limit())}). Fix: {fixes()}")
