"""One contract suite every bag-of-items model passes (LensKit's BasicComponentTests pattern):
fit, score shape, save / load round trip, determinism by seed, bad config, not-fitted error; and
for every model trained by the loop, a run cut by its time budget and resumed from its checkpoint
ends exactly where an uninterrupted run ends. Each model's own numeric tests live beside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.synthetic import make_synthetic
from recsys.errors import ConfigError
from recsys.models import registry
from recsys.models.base import IterativeModel, ItemScorer, NotFittedError
from recsys.models.local.common import LocalModel
from recsys.protocols import random_split

QUICK = dict(device="cpu", seed=0)
BANK = dict(hidden=16, lr=1e-2, weight_decay=0.0, batch_size=64, epochs=4, patience=None, **QUICK)
CASES = {
    "mostpop": ({}, {"seed": -1}),
    "ease": ({"lam": 10.0}, {"lam": -1.0}),
    "multvae": (dict(enc_dims=[32, 8], epochs=4, batch_size=64, eval_k=20), {"dropout": 1.5}),
    "multdae": (dict(enc_dims=[16], epochs=4, batch_size=64, eval_k=20), {"enc_dims": []}),
    "wl": (dict(BANK, exponent=1.5), {"exponent": -1}),
    "loca": (dict(BANK, n_local=3, coverage_stride=1), {"n_local": 0}),
    "lft": (dict(BANK, local_epochs=2, max_local=60, group=200, min_local=2), {"local_epochs": -1}),
    "enlft": (dict(BANK, local_epochs=2, max_local=60, n_anchors=3, min_local=2), {"n_anchors": 0}),
    "tall": (dict(BANK, n_experts=3, gap=2, window=2), {"n_experts": 0}),
    "tail_learner": (dict(method="posit", epochs=4, batch_size=64, lr=0.05, patience=None, eval_k=20, **QUICK),
                     {"method": "magic"}),
}
ITEM_SCORERS = [n for n, k in registry.MODELS.items() if issubclass(k, ItemScorer)]


def test_every_bag_of_items_model_is_in_the_suite():
    assert sorted(ITEM_SCORERS) == sorted(CASES)


@pytest.fixture(scope="module")
def data():
    return random_split(make_synthetic(n_users=200, n_items=80, seed=3).df, k_core=3, seed=0)


def _build(name, **extra):
    cfg = {**CASES[name][0], **extra}
    cfg.setdefault("device", "cpu")
    return registry.build(name, **cfg)


def _fit(model, data):
    tr, va = data["train"], data["valid"]
    if isinstance(model, LocalModel):
        return model.fit(tr, va)
    if isinstance(model, IterativeModel):
        return model.fit(tr, (tr, va))
    return model.fit(tr)


def _scores(model, data) -> np.ndarray:
    if isinstance(model, LocalModel):
        return model.score_users(np.arange(20)).cpu().numpy()
    return model.score(data["train"][:20]).cpu().numpy()


@pytest.mark.parametrize("name", ITEM_SCORERS)
def test_fit_score_save_load_and_determinism(name, data, tmp_path):
    model = _build(name)
    with pytest.raises(NotFittedError):
        _scores(model, data)
    _fit(model, data)
    s = _scores(model, data)
    assert s.shape == (20, data.n_items) and np.isfinite(s).all()
    loaded = type(model).load(model.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(_scores(loaded, data), s)
    np.testing.assert_array_equal(_scores(_fit(_build(name), data), data), s)  # same seed, same model


@pytest.mark.parametrize("name", ITEM_SCORERS)
def test_bad_config_is_one_clear_error(name):
    bad = CASES[name][1]
    with pytest.raises(ConfigError, match=next(iter(bad))):
        _build(name, **bad)
    with pytest.raises(ConfigError, match="no_such_setting"):
        _build(name, no_such_setting=1)


@pytest.mark.parametrize("name", [n for n in ITEM_SCORERS if issubclass(registry.MODELS[n], IterativeModel)])
def test_a_run_cut_short_resumes_from_its_checkpoint_to_the_same_model(name, data, tmp_path):
    full = _scores(_fit(_build(name), data), data)
    cut = _build(name, max_seconds=1e-9).checkpoints(tmp_path)
    _fit(cut, data)  # stops after its first epoch (of each sub-fit), checkpointed
    assert list(tmp_path.rglob("epoch-*.pt"))
    resumed = _fit(_build(name).checkpoints(tmp_path), data)
    np.testing.assert_allclose(_scores(resumed, data), full, rtol=0, atol=0)
