"""The cost model's arithmetic (recsys.training.cost) and the Mult-VAE / EASE formulas against
what torch counts and what the matrices weigh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.utils.flop_counter import FlopCounterMode

from recsys.models.registry import build, get_model
from recsys.training.cost import (H100, DataShape, Device, EpochCost, dense_layer_flops, estimate_seconds, fit_rate,
                                  growth_exponent, sparse_input_flops)


def _csr(n_users: int, n_items: int, per_user: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    cols = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    rows = np.repeat(np.arange(n_users), per_user)
    return sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items))


def test_growth_exponent_and_rate_recover_known_laws():
    sizes = [1.0, 2.0, 4.0]
    assert growth_exponent(sizes, [3 * s ** 3 for s in sizes]) == pytest.approx(3.0)
    assert growth_exponent(sizes, [5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert fit_rate([1e9, 2e9, 4e9], [0.5, 1.0, 2.0]) == pytest.approx(2e9)
    with pytest.raises(ValueError):
        growth_exponent([2.0, 2.0], [1.0, 3.0])


def test_data_shape_from_csr_counts_pairs():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32))
    s = DataShape.from_csr(x)
    assert (s.n_users, s.n_items, s.nnz, s.pairs) == (3, 3, 3, 5.0)  # 2^2 + 1^2 + 0
    assert DataShape(10, 5, 20).pairs == 2 * 10 * 2.0 ** 2  # default spread: coefficient of variation 1
    bigger = s.scaled(30, 3, 30)
    assert bigger.pairs == pytest.approx(5.0 / (3 * 1.0) * 30 * 1.0)


def test_epoch_cost_phases_add_work_and_keep_the_larger_peak():
    a = EpochCost(10.0, 6.0, 100, 50, 7.0, 2, 3, {"a": 1})
    b = EpochCost(1.0, 1.0, 300, 20, 1.0, 1, 9, {"b": 2})
    both = a + b
    assert (both.flops, both.dense_flops, both.host_bytes, both.device_bytes, both.steps) == (11.0, 7.0, 300, 50, 3)
    assert both.terms == {"a": 1, "b": 2}
    three = a.times(3)
    assert (three.flops, three.traffic_bytes, three.steps, three.host_bytes) == (30.0, 21.0, 6, 100)


def test_estimate_seconds_is_a_roofline():
    dev = Device("toy", dense_flops_per_s=1e9, sparse_flops_per_s=1e8, bytes_per_s=1e9, step_seconds=0.01)
    compute_bound = EpochCost(2e9, 1e9, 0, 0, traffic_bytes=1e8, steps=10, params=1)
    # 1e9 dense at 1e9/s + 1e9 sparse at 1e8/s = 11 s, above the 0.1 s memory time; + 10 steps x 0.01
    assert estimate_seconds(compute_bound, dev) == pytest.approx(11.1)
    memory_bound = EpochCost(1e6, 1e6, 0, 0, traffic_bytes=5e9, steps=0, params=1)
    assert estimate_seconds(memory_bound, dev) == pytest.approx(5.0)
    assert "estimated" in H100.name and not H100.measured


def test_dense_layer_and_sparse_input_flops():
    assert dense_layer_flops(10, 4, 3) == 2 * 10 * 4 * 3 * 3
    assert dense_layer_flops(10, 4, 3, input_grad=False) == 2 * 10 * 4 * 3 * 2
    # 2 % dense rows: batched dense backward (counted as dense), sparse forward
    assert sparse_input_flops(nnz=200, rows=10, n_items=1000, width=8) == (2 * 10 * 1000 * 8, 2 * 200 * 8)
    # 0.5 % dense: both directions sparse
    assert sparse_input_flops(nnz=50, rows=10, n_items=1000, width=8) == (0.0, 4 * 50 * 8)


@pytest.mark.parametrize("per_user,variational", [(40, True), (3, True), (40, False)])
def test_multvae_formula_equals_counted_flops(per_user, variational):
    """Dense rows (4 %: the batched dense backward of the input layer) and sparse rows (0.3 %)."""
    x = _csr(600, 1000, per_user)
    model = build("multvae", epochs=1, batch_size=128, enc_dims=(64, 16), variational=variational, progress="off")
    with FlopCounterMode(display=False) as counter:
        model.fit(x)
    cost = get_model("multvae").epoch_cost(model.config, DataShape.from_csr(x))
    assert counter.get_total_flops() == pytest.approx(cost.dense_flops, rel=1e-9)
    assert cost.params == sum(p.numel() for p in model.net_.parameters())
    assert cost.steps == math.ceil(600 / 128) == len(model.history_) * 5
    assert cost.flops > cost.dense_flops  # the embedding_bag forward is not a dense product


def test_multvae_cost_grows_with_users_times_items_and_memory_does_not():
    cfg = get_model("multvae").Config()
    small = get_model("multvae").epoch_cost(cfg, DataShape(10_000, 5_000, 200_000))
    big = get_model("multvae").epoch_cost(cfg, DataShape(40_000, 20_000, 800_000))
    # the I-wide output layer grows 16x, the hidden layers (600-400, 200-600) with users only: 4x
    assert 12 < big.dense_flops / small.dense_flops < 16
    # memory: weights grow with items, one [batch, I] block; never users x items
    assert big.host_bytes < 4 * small.host_bytes
    assert big.device_bytes - small.device_bytes < 40_000 * 20_000  # far below one dense U x I in bytes


def test_ease_formula_host_bound_and_cubic_work():
    x = _csr(500, 400, 20)
    cfg = get_model("ease").Config(dtype="float32")
    cost = get_model("ease").epoch_cost(cfg, DataShape.from_csr(x))
    gram = (x.T @ x).tocsr()
    assert cost.terms["gram_bytes_bound"] >= 8 * gram.nnz  # an upper bound on the Gram's CSR
    assert cost.dense_flops == 400 ** 3
    assert cost.host_bytes >= 4 * 400 * 400
    assert get_model("ease").peak_memory(cfg, 500, 400, x.nnz) == int(
        get_model("ease").epoch_cost(cfg, DataShape(500, 400, x.nnz)).host_bytes)


def test_models_without_a_formula_say_so():
    with pytest.raises(NotImplementedError, match="no cost formula"):
        get_model("mostpop").epoch_cost(get_model("mostpop").Config(), DataShape(10, 10, 10))


# Every stage of the scale issue has a formula, and none of them grows on the host with users x items.
STAGES = ("multvae", "ease", "sasrec", "bert4rec", "loca", "wl", "lft", "enlft", "tall", "tail_learner",
          "maml", "maml_pp", "melo", "remi", "comirec", "mind")


def _per_user_bytes(phase, cfg, n_users: int, n_items: int) -> float:
    """Host bytes one more user costs a phase (``epoch_cost`` / ``one_off_cost``) around `n_users`
    (50 interactions per user)."""
    a, b = (phase(cfg, DataShape(u, n_items, 50 * u)).host_bytes for u in (n_users, 2 * n_users))
    return (b - a) / n_users


@pytest.mark.parametrize("name", STAGES)
def test_stage_has_a_formula_and_no_users_times_items_host_term(name):
    klass = get_model(name)
    cfg = klass.Config()
    cost = klass.epoch_cost(cfg, DataShape(100_000, 20_000, 5_000_000))
    assert cost.flops >= cost.dense_flops > 0 and cost.host_bytes > 0 and cost.device_bytes > 0
    assert cost.steps >= 1 and cost.params > 0
    # what a user adds to the host must not grow with the catalogue (a U x I term: 4x the items,
    # 4x the bytes per user) nor with the number of users (a U^2 term); per-user state such as
    # the CSR data, TALL's adaptive weights or LFT's local sets is fine
    phases = [klass.epoch_cost] + ([klass.one_off_cost] if hasattr(klass, "one_off_cost") else [])
    for phase in phases:
        base = _per_user_bytes(phase, cfg, 100_000, 20_000)
        slack = 4096.0
        if name != "ease":  # EASE's Gram grows with users until it is I x I: the model's own size, not per user
            assert _per_user_bytes(phase, cfg, 100_000, 80_000) < 2 * base + slack, \
                f"{name} {phase.__name__}: a users x items host term"
        assert _per_user_bytes(phase, cfg, 400_000, 20_000) < 2 * base + slack, f"{name} {phase.__name__}: a users^2 host term"


@pytest.mark.parametrize("name", ["lft", "enlft"])
def test_fine_tuned_fit_runs_local_epochs_after_the_one_off_phase(name):
    klass = get_model(name)
    cfg = klass.Config(local_epochs=7)
    shape = DataShape(5_000, 2_000, 150_000)
    fit = klass.fit_cost(cfg, shape)
    expected = klass.one_off_cost(cfg, shape).flops + 7 * klass.epoch_cost(cfg, shape).flops
    assert fit.flops == pytest.approx(expected)
    assert klass.fit_cost(cfg, shape, 1).flops < fit.flops
