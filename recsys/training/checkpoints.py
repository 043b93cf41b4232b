"""Checkpoints of the one training loop: ``epoch-NNNNNN.pt`` files with sha256 sidecars, the RNG
states they carry, fingerprints that refuse a folder written with other settings, and listeners
called after each checkpoint (an orchestrator copying it to durable storage, a fault test)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from recsys.errors import ConfigError
from recsys.io import atomic_path

log = logging.getLogger("recsys.training")

CHECKPOINT_FORMAT = 1
_CHECKPOINT_LISTENERS: list[Callable[[Path, int], None]] = []


def add_checkpoint_listener(fn: Callable[[Path, int], None]) -> Callable[[], None]:
    """Call ``fn(path, epoch)`` after each checkpoint any loop writes (an orchestrator copying it to
    durable storage, a fault test); returns a function that removes the listener."""
    _CHECKPOINT_LISTENERS.append(fn)
    return lambda: _CHECKPOINT_LISTENERS.remove(fn) if fn in _CHECKPOINT_LISTENERS else None


# ---- RNG states --------------------------------------------------------------------------------

def _rng_states() -> dict[str, Any]:
    out = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---- checkpoints -------------------------------------------------------------------------------

class Checkpoints:
    """``epoch-000012.pt`` files, each with an ``.sha256`` sidecar, in one folder; the newest
    `keep` are kept. Both files are written atomically, the checksum last, so a checkpoint without a
    matching checksum is one a kill interrupted or a disk corrupted."""

    def __init__(self, folder: str | Path, fingerprint: Mapping[str, Any], keep: int = 2) -> None:
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.keep = keep

    def _files(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.glob("epoch-*.pt"):
            try:
                out.append((int(p.stem.split("-")[1]), p))
            except (IndexError, ValueError):
                continue
        return sorted(out, reverse=True)

    def save(self, epoch: int, payload: dict[str, Any]) -> Path:
        path = self.folder / f"epoch-{epoch:06d}.pt"
        payload = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "fingerprint": self.fingerprint, **payload}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
            digest = _sha256(tmp)
        with atomic_path(path.with_suffix(".sha256")) as tmp:
            tmp.write_text(json.dumps({"sha256": digest, "epoch": epoch}) + "\n")
        for _, old in self._files()[self.keep:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)
        for listener in list(_CHECKPOINT_LISTENERS):
            listener(path, epoch)
        return path

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint whose checksum matches; corrupt ones are reported and skipped."""
        for epoch, path in self._files():
            problem = self._check(path)
            if problem is None:
                payload = torch.load(path, map_location="cpu", weights_only=False)
                theirs = without_added_fields(payload.get("fingerprint") or {})
                ours = without_added_fields(self.fingerprint)
                if theirs != ours and _without_data(theirs) == _without_data(ours):
                    # same settings, other inputs (an upstream model that changed): stale, not wrong
                    msg = (f"checkpoint folder {self.folder} was written for other input data "
                           f"({_diff(theirs.get('data'), self.fingerprint.get('data'))}); starting from scratch")
                    warnings.warn(msg, RuntimeWarning, stacklevel=3)
                    log.warning(msg)
                    return None
                if theirs != ours:
                    raise ConfigError(
                        f"checkpoint folder {self.folder} holds a run with other settings "
                        f"({_diff(payload.get('fingerprint'), self.fingerprint)}); use another folder or delete it")
                return payload
            msg = f"checkpoint {path} is unusable ({problem}); "
            msg += "using the previous one" if epoch != self._files()[-1][0] else "starting from scratch"
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
        return None

    @staticmethod
    def _check(path: Path) -> str | None:
        side = path.with_suffix(".sha256")
        try:
            expected = json.loads(side.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"no readable checksum file {side.name}"
        actual = _sha256(path)
        if actual != expected:
            return f"sha256 {actual[:12]}... does not match the recorded {str(expected)[:12]}...: truncated or corrupt"
        return None


# Config fields added after checkpoints and committed result rows existed, each with the value
# that keeps the old behaviour. At that value a field is left out of every fingerprint
# comparison, so adding an option does not void a half-finished run or its finished rows.
ADDED_FIELDS: dict[str, Any] = {"min_updates": 0, "patience_updates": 0}


def without_added_fields(obj: Any) -> Any:
    """`obj` with every `ADDED_FIELDS` key that holds its neutral value removed, at any depth."""
    if isinstance(obj, Mapping):
        return {k: without_added_fields(v) for k, v in obj.items()
                if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
    if isinstance(obj, list):
        return [without_added_fields(v) for v in obj]
    return obj


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _without_data(fingerprint: Mapping[str, Any]) -> dict:
    return {k: v for k, v in fingerprint.items() if k != "data"}


def tensor_digest(t: Tensor) -> str:
    """A short sha256 of a tensor's values, for checkpoint fingerprints of derived inputs."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if keys:
            k = keys[0]
            return f"{k}: {a.get(k)!r} there, {b.get(k)!r} now"
    return "fingerprint differs"
