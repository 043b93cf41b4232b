"""The sparse input layer's backward (one sparse-dense product) against embedding_bag's own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recsys.models.local.bank import ExpertBank
from recsys.training.batches import SparseRows
from recsys.training.sparse_input import bag_matmul


def _rows(n=40, items=30, density=0.2, seed=0, empty_row=True):
    x = sp.random(n, items, density=density, format="csr", random_state=seed, dtype=np.float32)
    if empty_row:
        x = x.tolil()
        x[3] = 0
        x = x.tocsr()
        x.eliminate_zeros()
    return SparseRows.from_csr(x, "cpu"), x


def test_bag_matmul_matches_dense_product_and_embedding_bag_gradient():
    rows, x = _rows()
    w = torch.randn(30, 7, dtype=torch.float64, requires_grad=True)
    vals = rows.values.double()
    out = bag_matmul(w, rows.indices, rows.offsets, vals, rows.row_ids)
    dense = torch.from_numpy(x.toarray()).double()
    torch.testing.assert_close(out, dense @ w.detach(), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, w, g)
    torch.testing.assert_close(grad, dense.t() @ g, rtol=1e-12, atol=1e-12)
    w2 = w.detach().clone().requires_grad_(True)
    F.embedding_bag(rows.indices, w2, rows.offsets, mode="sum", per_sample_weights=vals).backward(g)
    torch.testing.assert_close(grad, w2.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grouped", [False, True])
def test_expert_bank_gradients_equal_the_embedding_bag_backward(grouped, monkeypatch):
    rows, _ = _rows(n=40)
    rows = dataclasses.replace(rows, values=rows.values.double())
    torch.manual_seed(0)
    bank = ExpertBank(4, 30, 5).double()
    ref = ExpertBank(4, 30, 5).double()
    ref.load_state_dict(bank.state_dict())
    bank.eval(), ref.eval()  # no sampling: both see the same code

    def grads(b):
        mu, logvar = b.encode(rows, grouped=grouped)
        (mu.square().sum() + logvar.sin().sum()).backward()
        return b.w_in.grad.clone()

    ours = grads(bank)
    monkeypatch.setenv("RECSYS_SPARSE_BACKWARD", "embedding_bag")
    theirs = grads(ref)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert ours.abs().sum() > 0


def test_unknown_backward_is_refused(monkeypatch):
    rows, _ = _rows()
    monkeypatch.setenv("RECSYS_SPARSE_BACKWARD", "dense")
    with pytest.raises(ValueError, match="RECSYS_SPARSE_BACKWARD must be one of"):
        bag_matmul(torch.zeros(30, 2, requires_grad=True), rows.indices, rows.offsets, rows.values, rows.row_ids)


@pytest.mark.parametrize("density", [0.3, 0.004])  # dense backward / falls back to the sparse product
def test_grouped_bag_matmul_dense_or_sparse_backward_equals_embedding_bag(density):
    from recsys.training.sparse_input import grouped_bag_matmul

    rows, x = _rows(n=48, items=500, density=density, empty_row=False)
    vals = rows.values.double()
    for groups in (1, 4):
        w = torch.randn(groups * 500, 6, dtype=torch.float64, requires_grad=True)
        out = grouped_bag_matmul(w, rows.row_ids, rows.indices, rows.offsets, vals, 48, groups, 500)
        g = torch.randn_like(out)
        (ours,) = torch.autograd.grad(out, w, g)
        index = (rows.row_ids // (48 // groups)) * 500 + rows.indices
        w2 = w.detach().clone().requires_grad_(True)
        ref = F.embedding_bag(index, w2, rows.offsets, mode="sum", per_sample_weights=vals)
        ref.backward(g)
        torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours, w2.grad, rtol=1e-12, atol=1e-12)
