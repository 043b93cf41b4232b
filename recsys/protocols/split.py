"""The result of an evaluation protocol: sparse matrices, index arrays, counts and an id map.

On disk a split is a directory::

    <name>.npz     one per matrix (scipy.sparse.load_npz reads it)
    arrays.npz     the index arrays (numpy.load reads it)
    split.json     protocol, seed, params, stats, meta, id_map, format version, sha256 of each file

Files are written byte-for-byte reproducibly (fixed zip entry dates, canonical CSR), so the
same data and seed give identical files, and atomically (:func:`recsys.io.atomic_dir`).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.data.preprocess import IdMap
from recsys.errors import DataError
from recsys.io import atomic_dir, sha256_file

FORMAT_VERSION = 1
_META_FILE = "split.json"
_ARRAYS_FILE = "arrays.npz"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so identical content gives identical bytes


@dataclass(eq=False)
class Split:
    """One split of one dataset under one protocol (see :mod:`recsys.protocols.protocols`).

    ``matrices`` are float32 CSR in internal ids (``id_map``); ``arrays`` are per-user index
    arrays; ``stats`` are counts; ``meta`` holds the evaluation conventions (recall denominator,
    which matrix is the input, target and mask).
    """

    protocol: str
    seed: int
    params: dict
    id_map: IdMap
    matrices: dict[str, sp.csr_matrix]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.id_map.n_users

    @property
    def n_items(self) -> int:
        return self.id_map.n_items

    def __getitem__(self, name: str) -> sp.csr_matrix:
        try:
            return self.matrices[name]
        except KeyError:
            raise KeyError(
                f"split ({self.protocol}) has no matrix {name!r}; matrices: {sorted(self.matrices)}, "
                f"arrays (split.arrays): {sorted(self.arrays)}"
            ) from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={m.shape[0]}x{m.shape[1]}/{m.nnz}" for k, m in self.matrices.items())
        return f"Split({self.protocol}, seed={self.seed}, users={self.n_users}, items={self.n_items}, {shapes})"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split directory atomically. An existing split there is replaced whole; any
        other non-empty directory is refused, so a mistyped path never wipes a user's files."""
        path = Path(path)
        if path.is_dir() and any(path.iterdir()) and not (path / _META_FILE).is_file():
            raise DataError(f"{path} is a non-empty directory that holds no saved split; refusing to replace it. "
                            f"Give a new or empty directory (or an older split's) for the split")
        reserved = {Path(_ARRAYS_FILE).stem, Path(_META_FILE).stem}
        if reserved & set(self.matrices):
            raise ValueError(f"matrix names {sorted(reserved)} are reserved for the split's own files")
        with atomic_dir(path) as tmp:
            files = {}
            for name, m in sorted(self.matrices.items()):
                files[f"{name}.npz"] = _write_npz(tmp / f"{name}.npz", _csr_arrays(m))
            files[_ARRAYS_FILE] = _write_npz(tmp / _ARRAYS_FILE, self.arrays)
            doc = {
                "format_version": FORMAT_VERSION,
                "protocol": self.protocol,
                "seed": self.seed,
                "params": self.params,
                "stats": self.stats,
                "meta": self.meta,
                "matrices": sorted(self.matrices),
                "arrays": sorted(self.arrays),
                "files": files,
                "id_map": self.id_map.to_dict(),
            }
            (tmp / _META_FILE).write_text(json.dumps(_jsonable(doc), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Split":
        """Read a split directory, checking the format version and every file's sha256."""
        path = Path(path)
        meta_path = path / _META_FILE
        if not meta_path.is_file():
            raise DataError(f"{path} is not a saved split: {_META_FILE} is missing (write one with Split.save)")
        try:
            doc = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{meta_path} is corrupt ({err}); re-create the split") from None
        version = doc.get("format_version") if isinstance(doc, dict) else None
        if version != FORMAT_VERSION:
            raise DataError(
                f"{meta_path}: split format version {version!r}, this code reads version {FORMAT_VERSION}; "
                f"re-create the split with this version of recsys"
            )
        for name, digest in doc["files"].items():
            f = path / name
            if not f.is_file():
                raise DataError(f"{f} is missing from the saved split; re-create the split")
            if sha256_file(f) != digest:
                raise DataError(
                    f"checksum mismatch for {f}: the file was modified or corrupted after it was saved; "
                    f"re-create the split"
                )
        try:
            matrices = {name: sp.csr_matrix(sp.load_npz(path / f"{name}.npz")) for name in doc["matrices"]}
            with np.load(path / _ARRAYS_FILE, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in doc["arrays"]}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: cannot read the split files ({err}); re-create the split") from None
        return cls(
            protocol=doc["protocol"],
            seed=doc["seed"],
            params=doc["params"],
            id_map=IdMap.from_dict(doc["id_map"]),
            matrices=matrices,
            arrays=arrays,
            stats=doc["stats"],
            meta=doc["meta"],
        )


def _csr_arrays(m: sp.spmatrix) -> dict[str, np.ndarray]:
    """The arrays scipy.sparse.save_npz stores, from a canonical float32 CSR."""
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()  # also sorts indices
    return {
        "indices": m.indices,
        "indptr": m.indptr,
        "format": np.array(b"csr"),
        "shape": np.array(m.shape, dtype=np.int64),
        "data": m.data,
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """numpy .npz with fixed entry dates (np.savez stamps the current time); returns its sha256."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)
    return sha256_file(path)


def _jsonable(obj):
    """Plain JSON types: numpy scalars/arrays to Python, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
