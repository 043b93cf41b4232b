"""What a person sees of a training run: one line per epoch in logs (Metaflow, papermill, CI), a
bar in a terminal, one line per block of non-epoch work."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Mapping

import numpy as np
from torch import Tensor

PROGRESS = ("auto", "bar", "lines", "off")


# ---- progress ----------------------------------------------------------------------------------

def _fmt_seconds(sec: float) -> str:
    sec = int(round(sec))
    if sec < 60:
        return f"{sec}s"
    if sec < 3600:
        return f"{sec // 60}m{sec % 60:02d}s"
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m"


class WorkProgress:
    """One line per block of non-epoch work (LFT's groups of fine-tuned copies, EnLFT's anchors)
    with the seconds so far and an estimate of what is left, on stderr like the epoch lines;
    silent with ``progress="off"``."""

    def __init__(self, name: str, total: int, unit: str, progress: str = "auto") -> None:
        self.name, self.total, self.unit, self.on = name, int(total), unit, progress != "off"
        self.done, self.t0 = 0, time.perf_counter()

    def step(self, n: int, what: str = "") -> None:
        self.done += int(n)
        if not self.on:
            return
        spent = time.perf_counter() - self.t0
        left = spent / max(self.done, 1) * max(self.total - self.done, 0)
        print(f"[{self.name}] {self.done}/{self.total} {self.unit}{(' ' + what) if what else ''}  "
              f"{spent:.1f}s  left ~ {_fmt_seconds(left)}", file=sys.stderr, flush=True)


class _Progress:
    """A tqdm bar where stderr is a terminal, else one line per epoch (Metaflow logs, notebooks run
    by papermill, CI); ``progress="off"`` is silent (the history still records everything)."""

    def __init__(self, s, start_epoch: int) -> None:
        self.s, self.start = s, start_epoch
        mode = s.progress
        if mode == "auto":
            mode = "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "lines"
        self.mode, self.bar = mode, None
        if mode == "bar" and s.epochs:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=s.epochs, initial=start_epoch - 1, desc=s.name, unit="epoch", leave=True)
            except ImportError:  # tqdm comes with papermill; lines where it is missing
                self.mode = "lines"
        self.epoch_seconds: list[float] = []

    def epoch(self, record: Mapping[str, Any], stopper, elapsed: float) -> None:
        if self.mode == "off":
            return
        s = self.s
        self.epoch_seconds.append(record["train_seconds"] + record.get("eval_seconds", 0.0))
        left = (s.epochs - record["epoch"]) * float(np.mean(self.epoch_seconds[-5:]))
        if s.max_seconds is not None:
            left = min(left, max(0.0, s.max_seconds - elapsed))
        parts = [f"loss {record['loss']:.4g}"] if isinstance(record.get("loss"), (int, float)) else []
        best = stopper.best_value
        if isinstance(best, Tensor):  # an expert bank: each expert has its own best
            if record.get("experts_running") is not None:
                parts.append(f"{record['experts_running']} experts running")
        elif best is not None and not math.isinf(best):
            now = record.get(s.monitor, record.get(f"valid_{s.monitor}"))
            now = f"{now:.4f} " if "eval_seconds" in record and isinstance(now, (int, float)) else ""
            parts.append(f"{s.monitor} {now}(best {best:.4f} @ {stopper.best_epoch})")
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(parts), refresh=False)
            self.bar.update(1)
            return
        line = (f"[{s.name}] epoch {record['epoch']}/{s.epochs}  " + "  ".join(parts)
                + f"  {self.epoch_seconds[-1]:.1f}s  left <= {_fmt_seconds(left)}")
        print(line, file=sys.stderr, flush=True)

    def close(self, reason: str, epoch: int) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.mode != "off" and reason != "epochs":
            why = "no gain in patience validations" if reason == "patience" else "max_seconds reached"
            print(f"[{self.s.name}] stopped after epoch {epoch}: {why}", file=sys.stderr, flush=True)
