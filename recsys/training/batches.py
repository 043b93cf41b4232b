"""Sparse user rows in batches, moved to the device as non-zeros only.

A dense |U| x |I| matrix never exists on the host: each batch travels as its CSR
non-zeros, and a model either consumes them directly (``F.embedding_bag`` is a sparse
row-times-matrix product) or densifies the batch on the device with one ``index_put_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.errors import ConfigError, DataError


def as_csr(matrix, what: str = "matrix") -> sp.csr_matrix:
    """`matrix` as float32 CSR; a dense array is refused (it is the copy this module avoids)."""
    if not sp.issparse(matrix):
        raise DataError(f"{what} must be a scipy.sparse matrix (users x items), got {type(matrix).__name__}")
    return sp.csr_matrix(matrix, dtype=np.float32)


@dataclass(frozen=True)
class SparseRows:
    """A batch of CSR rows on a device, in ``F.embedding_bag`` layout.

    indices[j], values[j]: column and value of stored entry j; row_ids[j]: its row in the
    batch; offsets[b]: where row b starts in `indices`.
    """

    indices: Tensor
    values: Tensor
    offsets: Tensor
    row_ids: Tensor
    shape: tuple[int, int]

    @classmethod
    def from_csr(cls, rows: sp.csr_matrix, device: torch.device | str) -> "SparseRows":
        rows = as_csr(rows, "rows")
        device = torch.device(device)
        indptr = torch.from_numpy(rows.indptr.astype(np.int64)).to(device)
        counts = indptr[1:] - indptr[:-1]
        return cls(
            indices=torch.from_numpy(rows.indices.astype(np.int64)).to(device),
            values=torch.from_numpy(rows.data).to(device),
            offsets=indptr[:-1],
            row_ids=torch.repeat_interleave(torch.arange(rows.shape[0], device=device), counts),
            shape=(int(rows.shape[0]), int(rows.shape[1])),
        )

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to_dense(self) -> Tensor:
        """Dense [B, I] float32 on the batch's device (one scatter, no per-row loop)."""
        out = torch.zeros(self.shape, dtype=self.values.dtype, device=self.device)
        out.index_put_((self.row_ids, self.indices), self.values, accumulate=True)
        return out

    def l2_normalised_values(self) -> Tensor:
        """`values` divided by their row's L2 norm (Mult-VAE's input normalisation; empty rows stay empty)."""
        norms = self.row_reduce(self.values * self.values).sqrt().clamp_min(1e-12)
        return self.values / norms[self.row_ids]

    def row_reduce(self, per_entry: Tensor) -> Tensor:
        """Sum of `per_entry` (one value per stored entry) within each row -> [B]."""
        out = per_entry.new_zeros(self.shape[0])
        return out.index_add(0, self.row_ids, per_entry)


def iterate_rows(
    matrix: sp.csr_matrix,
    batch_size: int,
    device: torch.device | str,
    *,
    rows: np.ndarray | None = None,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[np.ndarray, SparseRows]]:
    """Yield ``(row_ids, SparseRows)`` for `rows` (default: all) of `matrix`, `batch_size` rows at a time.

    With `shuffle`, the order is a permutation drawn from `rng` (required, so runs are reproducible).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    matrix = as_csr(matrix)
    order = np.arange(matrix.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if shuffle:
        if rng is None:
            raise ConfigError("shuffle=True needs rng=np.random.default_rng(seed) for a reproducible order")
        order = rng.permutation(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, SparseRows.from_csr(matrix[idx], device)
