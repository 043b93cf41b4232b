"""EASE^R (Steck, WWW 2019): a closed-form item-item model with a zero diagonal.

    P = (X^T X + lam * I)^-1,   B = I - P diag(1 / diag(P))   (so B_ii = 0),   score(x_u) = x_u B.

``lam`` defaults to 500, the paper's value for ML-20M (Netflix 1000, MSD 200; LOCA's repo
uses 100 globally). The Gram matrix is formed sparse on the host (item x item, never user x
item dense), the inverse is computed with ``torch.linalg`` on the chosen device in the chosen
dtype (float64 is the safe choice for large catalogues; float32 is faster on GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from recsys.errors import DataError
from recsys.models.base import ItemScorer, ModelConfig
from recsys.checks import check_choice, check_float
from recsys.training.batches import SparseRows, as_csr
from recsys.training.cost import CUDA_CONTEXT_BYTES, DataShape, EpochCost
from recsys.models.registry import register_model

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _ease_weights_in_place(g: np.ndarray, lam: float, dtype: str, block: int = 1024) -> np.ndarray:
    """B = I - P diag(1 / diag(P)) with P = (G + lam I)^-1, overwriting the C-ordered symmetric
    Gram matrix `g`: LAPACK's Cholesky factorisation and inverse run in place on its transposed
    (Fortran-ordered) view, the inverse's triangle is mirrored block by block, and the scaling is
    in place, so the host holds one I x I matrix (2.2 GB in float32 at 23k items) instead of four."""
    from scipy.linalg import lapack

    g = np.ascontiguousarray(g)  # its transpose must be the Fortran-ordered array LAPACK overwrites
    potrf, potri = (lapack.spotrf, lapack.spotri) if dtype == "float32" else (lapack.dpotrf, lapack.dpotri)
    g[np.diag_indices_from(g)] += lam
    f = g.T  # Fortran-ordered view of the same memory (g is symmetric)
    c, info = potrf(f, lower=1, overwrite_a=1, clean=0)
    if info != 0 or not np.shares_memory(c, g):
        raise DataError(f"EASE: X^T X + lam I is not positive definite in {dtype} (LAPACK info {info}); "
                        f"raise lam or use dtype float64")
    c, info = potri(c, lower=1, overwrite_c=1)
    if info != 0 or not np.shares_memory(c, g):
        raise DataError(f"EASE: inverting X^T X + lam I failed in {dtype} (LAPACK info {info}); raise lam")
    # the view's lower triangle is g's upper one: copy it below the diagonal, one row block at a time
    n = g.shape[0]
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        g[r0:r1, :r0] = g[:r0, r0:r1].T
        d = g[r0:r1, r0:r1]
        d[np.tril_indices(r1 - r0, -1)] = d.T[np.tril_indices(r1 - r0, -1)]
    diag = g.diagonal().copy()
    g /= -diag[None, :]
    g[np.diag_indices_from(g)] = 0.0
    return g


@dataclass(frozen=True)
class EASEConfig(ModelConfig):
    """lam: L2 weight (> 0); dtype: "float32" or "float64" for the solve and the stored B."""

    lam: float = 500.0
    dtype: str = "float64"

    def validate(self) -> None:
        super().validate()
        check_float("lam", self.lam, 0.0, low_open=True)
        check_choice("dtype", self.dtype, DTYPES)


@register_model
class EASE(ItemScorer):
    """EASE^R; learned state ``B_`` [n_items, n_items] on the model's device."""

    seeded = False  # closed form

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def fit(self, train: sp.csr_matrix, valid: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> "EASE":
        """Closed-form fit on `train` (users x items); `valid` is accepted for the common signature and unused."""
        train = as_csr(train, "train")
        dtype = DTYPES[self.config.dtype]
        # co-occurrence counts are integers, exact in float32 up to 2^24 users
        gram = (train.T @ train).astype(np.float32 if dtype == torch.float32 else np.float64)
        if self.device.type == "cpu":
            self.B_ = torch.from_numpy(_ease_weights_in_place(gram.toarray(order="C"), self.config.lam, self.config.dtype))
            return self
        g = torch.from_numpy(gram.toarray()).to(self.device, dtype)
        g.diagonal().add_(self.config.lam)
        try:
            # G + lam I is symmetric positive definite for lam > 0: Cholesky is faster and stabler than inv
            p = torch.cholesky_inverse(torch.linalg.cholesky(g))
        except torch.linalg.LinAlgError as exc:
            raise DataError(
                f"EASE: X^T X + lam I is not positive definite in {self.config.dtype}; raise lam or use float64"
            ) from exc
        b = p / (-p.diagonal()).unsqueeze(0)
        b.diagonal().zero_()
        self.B_ = b
        return self

    @classmethod
    def peak_memory(cls, config, n_users: int, n_items: int, nnz: int) -> int:
        """:meth:`epoch_cost`'s host peak for data of these sizes."""
        return int(cls.epoch_cost(config, DataShape(n_users, n_items, nnz)).host_bytes)

    @classmethod
    def epoch_cost(cls, config: EASEConfig, shape: DataShape) -> EpochCost:
        """The one fit: the sparse Gram matrix (2 FLOPs per co-occurring pair of a user's items),
        Cholesky factorisation (I^3 / 3) and inverse from it (2 I^3 / 3) in place, one scaling pass.
        Host peak: the interpreter, the CSR data, and the larger of (the Gram's product and its
        dtype copy) and (the Gram beside the dense I x I it becomes; the solve is in place). The
        Gram's entries are bounded by min(I^2, co-occurring pairs), an upper bound: pairs repeat
        across users. On a GPU: the Gram, factor and inverse (3 I x I)."""
        from recsys.models.base import BASE_PROCESS_BYTES

        i = shape.n_items
        width = 4 if config.dtype == "float32" else 8
        dense = float(i) ** 3
        sparse = 2.0 * shape.pairs
        gram = (4 + width) * min(float(i) * i, shape.pairs)  # CSR: int32 column + value per entry
        host = BASE_PROCESS_BYTES + 12 * shape.nnz + max(2 * gram, width * i * i + gram)
        return EpochCost(flops=dense + sparse, dense_flops=dense, host_bytes=host,
                         device_bytes=CUDA_CONTEXT_BYTES + 3 * width * i * i,
                         traffic_bytes=6.0 * width * i * i, steps=1, params=i * i,
                         terms={"gram": sparse, "cholesky_and_inverse": dense, "gram_bytes_bound": gram})

    def _n_items(self) -> int:
        return self.B_.shape[0]

    @torch.no_grad()
    def score(self, rows: sp.csr_matrix) -> Tensor:
        """x_u B for each CSR row, as a sparse-row product (O(nnz * I), no dense x)."""
        rows = self._fitted_rows(rows)
        r = SparseRows.from_csr(rows, self.device)
        return F.embedding_bag(r.indices, self.B_, r.offsets, mode="sum", per_sample_weights=r.values.to(self.B_.dtype))

