"""Most-popular and EASE: closed form, dtype agreement, ranking quality, persistence, registry errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.data.synthetic import make_synthetic
from recsys.errors import ConfigError
from recsys.models.base import Model, NotFittedError
from recsys.models.baselines import EASE, MostPopular
from recsys.models.registry import MODELS, build, get_model
from recsys.protocols import strong_generalization


@pytest.fixture(scope="module")
def split():
    return strong_generalization(make_synthetic(n_users=800, n_items=200, seed=0).df, heldout_fraction=0.2, seed=1)


@pytest.fixture
def tiny() -> sp.csr_matrix:
    x = sp.random(30, 8, density=0.4, format="csr", random_state=1, dtype=np.float32)
    x.data[:] = 1.0
    return x


def test_ease_matches_numpy_closed_form_with_zero_diagonal(tiny):
    lam = 3.0
    model = EASE(lam=lam, device="cpu").fit(tiny)
    x = tiny.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    expected = np.eye(x.shape[1]) - p / np.diag(p)  # I - P diag(1/diag(P))
    b = model.B_.numpy()
    assert np.allclose(b, expected, atol=1e-10)
    assert np.all(np.diag(b) == 0)
    assert np.allclose(model.score(tiny).numpy(), x @ expected, atol=1e-10)


def test_ease_float32_close_to_float64(tiny):
    b32 = EASE(lam=3.0, dtype="float32", device="cpu").fit(tiny).B_
    b64 = EASE(lam=3.0, dtype="float64", device="cpu").fit(tiny).B_
    assert b32.dtype == torch.float32 and b64.dtype == torch.float64
    assert torch.allclose(b32.double(), b64, atol=1e-5)


def test_mostpop_scores_are_training_counts_and_a_fresh_tensor(tiny):
    model = MostPopular(device="cpu").fit(tiny)
    scores = model.score(tiny[:3])
    counts = np.asarray((tiny != 0).sum(axis=0)).ravel()
    assert scores.shape == (3, tiny.shape[1])
    assert np.array_equal(scores[1].numpy(), counts)
    scores[0, 0] = -np.inf  # callers mask in place; the model must not see it
    assert model.counts_[0] == counts[0]


@pytest.mark.parametrize("metric", ["ndcg@20", "recall@20"])
def test_ease_beats_most_popular_on_held_out_users(split, metric):
    def test_metrics(model):
        model.fit(split["train"])
        result = model.evaluate(
            split["test_fold_in"], split["test_holdout"], recall_denominator="min", ks=(20,), metrics=("ndcg", "recall")
        )
        return result.mean()

    pop = test_metrics(MostPopular(device="cpu"))
    ease = test_metrics(EASE(lam=50.0, device="cpu"))
    assert ease[metric] > 1.1 * pop[metric], (ease, pop)


@pytest.mark.parametrize("name,config", [("ease", dict(lam=2.0, dtype="float32")), ("mostpop", {})])
def test_save_load_round_trip_gives_identical_scores(tmp_path, tiny, name, config):
    model = build(name, device="cpu", **config).fit(tiny)
    path = model.save(tmp_path / "m.pt")
    again = Model.load(path)
    assert type(again) is type(model) and again.config == model.config
    assert torch.equal(again.score(tiny), model.score(tiny))
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temporary file left behind


def test_load_checks_the_model_class(tmp_path, tiny):
    path = MostPopular(device="cpu").fit(tiny).save(tmp_path / "pop.pt")
    with pytest.raises(ConfigError, match="mostpop"):
        EASE.load(path)


def test_score_before_fit_is_an_error(tiny):
    with pytest.raises(NotFittedError, match="not fitted"):
        EASE().score(tiny)


def test_registry_names_and_build():
    assert set(MODELS) >= {"multvae", "multdae", "ease", "mostpop", "bert4rec"}
    assert get_model("ease") is EASE
    assert build("ease", lam=7.0).config.lam == 7.0
    assert EASE().config.lam == 500.0  # paper's ML-20M value


def test_unknown_model_name_suggests_the_closest_and_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model 'multvea'. Did you mean 'multvae'\?.*Valid names: .*ease.*mostpop"):
        get_model("multvea")


def test_unknown_config_key_names_the_key_and_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"unknown ease config key 'lamda'. Did you mean 'lam'\?.*Accepted: device, dtype, lam, seed"):
        build("ease", lamda=3.0)


@pytest.mark.parametrize(
    "config,match",
    [
        (dict(lam=0.0), r"lam must be a finite number in \(0.0, inf\), got 0.0"),
        (dict(lam=-1), "lam"),
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(seed=-3), "seed"),
        (dict(device=0), "device"),
        (dict(device="gpu"), r"device must be None, 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ],
)
def test_bad_baseline_values_are_config_errors(config, match):
    with pytest.raises(ConfigError, match=match):
        build("ease", **config)
