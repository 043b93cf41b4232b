"""The sparse input layer: ``h = A @ W`` for sparse rows A, with a backward that is one sparse-dense
product.

Forward is ``F.embedding_bag`` (sum mode, per-entry weights): bag ``b`` of the output sums
``values[j] * W[index[j]]`` over its entries. PyTorch's embedding_bag backward sorts every index,
zero-fills a dense gradient as large as W and adds one row per entry; for TALL's shared layout
(100 experts x a 512-user batch: 5.9M entries into a 326,000 x 200 weight) that was a fifth of a
training step. Here the backward is ``grad_W = Aᵀ @ grad_h``: one CSR x dense product
(``torch.sparse.mm``; MKL on CPU, cuSPARSE on CUDA) whose result already has W's layout. Aᵀ comes
from the caller when its structure is known (the expert bank builds it from one small transpose of
the batch), else from one stable sort of the indices.

Rows at least 1 % dense (``DENSE_BACKWARD_DENSITY``: LFT's grouped copies and Mult-VAE on ML-1M)
instead take one batched dense product over the densified batch (:func:`grouped_bag_matmul`),
cheaper there than the sparse product whose output PyTorch zero-fills and copies.

The gradient is the same sum in a different order: equal to float32 rounding (1e-6 relative), not
bit for bit. ``RECSYS_SPARSE_BACKWARD=embedding_bag`` restores PyTorch's own backward (a switch
for comparing; results then match earlier releases bit for bit).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

BACKWARDS = ("spmm", "embedding_bag")
# Rows at least this dense (1 %: ML-1M 4.5 %, ML-20M 0.4 %) get the batched dense backward: up to
# 100x the sparse product's FLOPs, but at matmul speed and with no zero-fill / copy of the gradient.
DENSE_BACKWARD_DENSITY = 0.01


def backward_kind() -> str:
    kind = os.environ.get("RECSYS_SPARSE_BACKWARD", "spmm")
    if kind not in BACKWARDS:
        raise ValueError(f"RECSYS_SPARSE_BACKWARD must be one of {BACKWARDS}, got {kind!r}")
    return kind


def replaces_backward(weight: Tensor, values: Tensor) -> bool:
    """Whether this call records a gradient for `weight` (only) that our backward computes, rather
    than embedding_bag's own (no gradient recorded, gradients for the values, or the switch)."""
    return (weight.requires_grad and torch.is_grad_enabled() and not values.requires_grad
            and backward_kind() == "spmm")


def _csr(crow: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, val, size=shape, check_invariants=False)


def transpose_order(index: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """(crow of Aᵀ [n_rows + 1], the entries in Aᵀ's order): entry order[k] is Aᵀ's k-th stored
    entry, so Aᵀ = (crow, bag[order], values[order])."""
    order = torch.argsort(index, stable=True)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=index.device)
    torch.cumsum(torch.bincount(index, minlength=n_rows), 0, out=crow[1:])
    return crow, order


class _BagMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, index, offsets, values, t_crow, t_col, t_val, n_bags):
        ctx.save_for_backward(t_crow, t_col, t_val)
        ctx.shape = (weight.shape[0], n_bags)
        return F.embedding_bag(index, weight, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        t_crow, t_col, t_val = ctx.saved_tensors
        at = _csr(t_crow, t_col, t_val.to(grad.dtype), ctx.shape)
        return torch.sparse.mm(at, grad.contiguous()), None, None, None, None, None, None, None


def grouped_bag_matmul(weight: Tensor, rows: Tensor, items: Tensor, offsets: Tensor, values: Tensor,
                       n_rows: int, groups: int, n_items: int) -> Tensor:
    """[n_rows, d] for grouped rows: row r reads block r // (n_rows / groups) of `weight`
    ([groups * n_items, d]); see :class:`_GroupedDense`."""
    b = n_rows // groups
    index = (rows // b) * n_items + items if groups > 1 else items
    if not replaces_backward(weight, values):
        return F.embedding_bag(index, weight, offsets, mode="sum", per_sample_weights=values)
    if items.numel() < DENSE_BACKWARD_DENSITY * n_rows * n_items:  # too sparse: the dense product would waste
        return bag_matmul(weight, index, offsets, values, rows)
    return _GroupedDense.apply(weight, index, offsets, values, rows, items, groups, n_items, n_rows)


class _GroupedDense(torch.autograd.Function):
    """Grouped rows: backward as one batched dense product, ``grad W[g] = X_gᵀ @ grad h_g`` with
    the batch densified ([G, B, I]). For LFT's 64 groups of 128 rows that is 11 GFLOP at matmul
    speed and writes the gradient once, where the sparse product's output is first zero-filled
    and then copied (two extra passes over a 167 MB gradient, costing more than the product)."""

    @staticmethod
    def forward(ctx, weight, index, offsets, values, rows, items, groups, n_items, n_rows):
        ctx.save_for_backward(rows, items, values)
        ctx.dims = (groups, n_items, n_rows)
        return F.embedding_bag(index, weight, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        rows, items, values = ctx.saved_tensors
        groups, n_items, n_rows = ctx.dims
        x = grad.new_zeros(n_rows, n_items)
        x.index_put_((rows, items), values.to(grad.dtype), accumulate=True)
        b, d = n_rows // groups, grad.shape[1]
        out = torch.bmm(x.view(groups, b, n_items).transpose(1, 2), grad.contiguous().view(groups, b, d))
        return out.view(groups * n_items, d), None, None, None, None, None, None, None, None


def bag_matmul(weight: Tensor, index: Tensor, offsets: Tensor, values: Tensor, bag: Tensor | None,
               transpose: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """[n_bags, d] = A @ weight for the entries (bag[j], index[j], values[j]) in embedding_bag
    layout (`offsets`: where each bag starts). `transpose`: Aᵀ's CSR if the caller has it.
    Gradients reach `weight` only (the entry values are data). `bag` (each entry's bag) is needed
    only when gradients are recorded and `transpose` is not given."""
    if not replaces_backward(weight, values):
        return F.embedding_bag(index, weight, offsets, mode="sum", per_sample_weights=values)
    if transpose is None:
        crow, order = transpose_order(index, weight.shape[0])
        transpose = (crow, bag[order], values[order])
    return _BagMatmul.apply(weight, index, offsets, values, *transpose, int(offsets.numel()))
