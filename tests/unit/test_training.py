"""recsys.training: device choice, seeding, early stopping (deep-copied best state), sparse batches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from recsys.errors import ConfigError, DataError
from recsys.training.batches import SparseRows, iterate_rows
from recsys.training.device import pick_device
from recsys.training.early_stopping import EarlyStopping, snapshot
from recsys.training.seed import seed_everything


def _matrix(n_users=23, n_items=11, density=0.3, seed=0) -> sp.csr_matrix:
    x = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = 1.0
    return x


# ---- device --------------------------------------------------------------------------------


@pytest.mark.gpu  # takes the CUDA branch where CUDA is present (passes on CPU too)
def test_pick_device_defaults_to_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        pick_device("cuda")


@pytest.mark.parametrize("bad", ["tpu", "gpu0", 3.5])
def test_pick_device_rejects_unknown_devices(bad):
    with pytest.raises(ConfigError, match="device must be"):
        pick_device(bad)


# ---- seeding ---------------------------------------------------------------------------------


def test_seed_everything_makes_draws_repeatable():
    seed_everything(7)
    a = (np.random.rand(3), torch.rand(3))
    seed_everything(7)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ConfigError, match="seed"):
        seed_everything(bad)


# ---- early stopping ----------------------------------------------------------------------------


def test_early_stopping_keeps_a_copy_of_the_best_state_not_the_live_weights():
    model = nn.Linear(3, 2)
    stopper = EarlyStopping(patience=2)
    values = [0.1, 0.5, 0.2, 0.3]
    states = []
    for epoch, value in enumerate(values):
        with torch.no_grad():
            model.weight.add_(1.0)  # "training" changes the live weights in place
        states.append(snapshot(model))
        stopper.update(value, model, epoch)
        if stopper.should_stop:
            break
    assert stopper.best_epoch == 1 and stopper.best_value == 0.5
    assert epoch == 3  # two epochs without gain after the best
    assert torch.equal(stopper.best_state["weight"], states[1]["weight"])
    assert not torch.equal(stopper.best_state["weight"], model.weight)  # no aliasing


def test_early_stopping_without_patience_never_stops_and_ignores_nan():
    stopper = EarlyStopping(patience=None, mode="min")
    for epoch, value in enumerate([3.0, float("nan"), 2.0, 4.0, 5.0, 6.0]):
        stopper.update(value, {"w": torch.tensor(float(epoch))}, epoch)
    assert not stopper.should_stop
    assert stopper.best_epoch == 2 and stopper.best_state["w"].item() == 2.0


def test_early_stopping_min_delta():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    stopper.update(0.5, {}, 0)
    assert not stopper.update(0.55, {}, 1)  # not better by more than 0.1
    assert stopper.should_stop and stopper.best_epoch == 0


@pytest.mark.parametrize("kwargs", [dict(patience=0), dict(patience=1.5), dict(mode="up"), dict(min_delta=-1)])
def test_early_stopping_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        EarlyStopping(**kwargs)


def test_snapshot_deep_copies_nested_state():
    t = torch.ones(2)
    state = {"a": t, "b": [t, {"c": t}], "n": 3}
    copy = snapshot(state)
    t.add_(1)
    assert copy["a"].tolist() == [1, 1] and copy["b"][1]["c"].tolist() == [1, 1] and copy["n"] == 3


# ---- batches ------------------------------------------------------------------------------------


def test_iterate_rows_yields_batch_sized_sparse_rows_covering_every_row_once():
    x = _matrix()
    seen = []
    for rows, batch in iterate_rows(x, 5, "cpu", shuffle=True, rng=np.random.default_rng(0)):
        assert isinstance(batch, SparseRows)
        assert batch.shape == (len(rows), x.shape[1]) and len(rows) <= 5
        assert batch.values.numel() == x[rows].nnz  # only the non-zeros travel
        assert np.array_equal(batch.to_dense().numpy(), x[rows].toarray())
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(x.shape[0]))
    assert seen != list(range(x.shape[0]))  # shuffled


def test_iterate_rows_order_is_reproducible_and_subsettable():
    x = _matrix()
    a = [r.tolist() for r, _ in iterate_rows(x, 4, "cpu", shuffle=True, rng=np.random.default_rng(3))]
    b = [r.tolist() for r, _ in iterate_rows(x, 4, "cpu", shuffle=True, rng=np.random.default_rng(3))]
    assert a == b
    subset = [r.tolist() for r, _ in iterate_rows(x, 4, "cpu", rows=np.array([5, 1, 9]))]
    assert subset == [[5, 1, 9]]


def test_sparse_rows_row_reduce_and_empty_rows():
    x = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [0, 3, 0]], dtype=np.float32))
    batch = SparseRows.from_csr(x, "cpu")
    assert batch.row_reduce(batch.values).tolist() == [3.0, 0.0, 3.0]
    assert batch.offsets.tolist() == [0, 2, 2]


def test_iterate_rows_refuses_dense_input_and_bad_arguments():
    with pytest.raises(DataError, match="scipy.sparse"):
        next(iterate_rows(np.ones((3, 3)), 2, "cpu"))
    with pytest.raises(ConfigError, match="rng"):
        next(iterate_rows(_matrix(), 2, "cpu", shuffle=True))
    with pytest.raises(ConfigError, match="batch_size"):
        next(iterate_rows(_matrix(), 0, "cpu"))


_MALLOC_PROBE = """
import ctypes, sys
import numpy as np
from recsys.training.device import keep_freed_cpu_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "model":
    from recsys.models.local import TALL
    TALL(device="cpu")
    tuned = keep_freed_cpu_memory()
else:
    tuned = keep_freed_cpu_memory()
before = libc.mallinfo2().hblkhd
a = np.ones(50_000_000 // 8)  # 50 MB: above glibc's default mmap threshold
print(tuned, libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.parametrize("how, env, expect_tuned", [("call", {}, True), ("model", {}, True),
                                                    ("call", {"RECSYS_MALLOC_TUNING": "0"}, False)])
def test_keep_freed_cpu_memory_keeps_large_blocks_in_the_heap(how, env, expect_tuned):
    import ctypes
    import os
    import subprocess
    import sys

    try:
        ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33")
    out = subprocess.run([sys.executable, "-c", _MALLOC_PROBE, how], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True).stdout.split()
    tuned, mapped = out[0] == "True", int(out[1])
    assert tuned is expect_tuned
    # by default glibc serves a 50 MB block with its own mmap (unmapped again on free); tuned, it
    # comes from the heap, where a freed block stays for the next batch
    assert (mapped < 50_000_000) is expect_tuned
