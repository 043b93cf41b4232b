"""The loop's compile switch: resolution, a clear error without a compiler, and a compiled fit
that equals the eager one to float rounding with its compile time reported apart."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from recsys.errors import ConfigError
from recsys.models.registry import build
from recsys.training import compile as tc


def test_resolution_and_missing_compiler(monkeypatch):
    assert tc.resolve("off", "cpu") is False
    assert tc.resolve("auto", "cpu") is False  # CPU: only on request (see the module docstring)
    with pytest.raises(ConfigError, match="compile must be one of"):
        tc.resolve("yes", "cpu")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="compile='on' needs a compiler for cpu: no C\\+\\+ compiler"):
        tc.resolve("on", "cpu")
    with pytest.raises(ConfigError, match="compile must be one of"):
        build("tall", compile="fast")


def test_kernel_runs_eager_outside_the_loop_and_compiled_inside():
    x = torch.randn(3, 4, 50)
    shift = x.amax(-1, keepdim=True)
    e0, t0 = tc.exp_shifted_sum(x, shift)
    assert torch.equal(e0, torch.sub(x, shift).exp_()) and torch.equal(t0, e0.sum(-1))
    if tc.compiler_missing("cpu"):
        pytest.skip("no C++ compiler here")
    before = tc.compile_seconds()
    with tc.compiling(True):
        e1, t1 = tc.exp_shifted_sum(x, shift)
        first = tc.compile_seconds()
        tc.exp_shifted_sum(x, shift)  # same signature: no new compile
    assert first > before and tc.compile_seconds() == first
    torch.testing.assert_close(e1, e0, rtol=1e-6, atol=0)
    torch.testing.assert_close(t1, t0, rtol=1e-6, atol=0)


def test_compiled_tall_fit_equals_eager_and_reports_compile_seconds():
    if tc.compiler_missing("cpu"):
        pytest.skip("no C++ compiler here")
    from recsys.data import make_synthetic
    from recsys.protocols import random_split

    split = random_split(make_synthetic(n_users=120, n_items=60, mean_items_per_user=12, seed=1).df, k_core=0, seed=0)
    cfg = dict(n_experts=4, hidden=8, epochs=2, batch_size=64, patience=None, seed=0, progress="off", device="cpu")
    eager = build("tall", **cfg, compile="off").fit(split["train"], split["valid"])
    compiled = build("tall", **cfg, compile="on").fit(split["train"], split["valid"])
    assert "compile_seconds" not in eager.history_[0]
    assert compiled.history_[0]["compile_seconds"] > 0
    np.testing.assert_allclose([h["loss"] for h in compiled.history_], [h["loss"] for h in eager.history_], rtol=1e-5)
    users = np.arange(split["train"].shape[0])
    torch.testing.assert_close(compiled.score_users(users), eager.score_users(users), rtol=1e-4, atol=1e-4)
