"""Atomic file and directory writes: a reader never sees half a result."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from recsys.errors import RecsysError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp / mkdtemp create private (0600 / 0700) entries; published results follow the umask.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


class OutputError(RecsysError, OSError):
    """A result cannot be written where it was asked to go."""


@contextlib.contextmanager
def _writable(path: Path) -> Iterator[None]:
    """Turn an OS error creating `path`'s folder or temporary sibling into one clear message."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err} ({err.filename or path.parent}); "
                          f"choose a folder you can write to (--output-dir, or RECSYS_OUTPUT_DIR)") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    with _writable(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            yield tmp
            if tmp.exists():
                os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
        except OSError as err:  # disk full, quota, I/O error: nothing is published, say where
            raise OutputError(f"writing {path} failed: {err.strerror or err}; nothing was written there "
                              f"(free space or choose another folder: --output-dir, or RECSYS_OUTPUT_DIR)") from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; swap it in for ``path`` only if the block succeeds.

    An existing directory at ``path`` is replaced whole, never merged.
    """
    path = Path(path)
    with _writable(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        for f in tmp.rglob("*"):
            os.chmod(f, _DIR_MODE if f.is_dir() else _FILE_MODE)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_dir(path: str | os.PathLike) -> str:
    """One digest over a directory's files (relative names and contents, in sorted order)."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def save_npy(path: str | os.PathLike, array) -> Path:
    """Write a numpy array as ``.npy`` atomically; returns the path."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    """Write JSON atomically (sorted keys, so files diff cleanly)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, default=json_default) + "\n")


def json_default(obj):
    """``json.dumps(default=...)`` for numpy scalars / arrays and paths."""
    import numpy as np

    if isinstance(obj, np.generic):  # numpy ints, floats, bools
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
