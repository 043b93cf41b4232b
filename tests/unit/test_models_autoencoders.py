"""Mult-VAE / Mult-DAE: quality vs most-popular, loss and network algebra, the upstream quirk
switches, beta annealing, best-state restore, persistence, config errors, no dense |U| x |I|."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from recsys.data.synthetic import make_synthetic
from recsys.errors import ConfigError
from recsys.models.autoencoders import MultDAE, MultVAE, MultVAENet, beta_at, kl_divergence, multinomial_nll, vae_loss
from recsys.models.base import Model, NotFittedError
from recsys.models.baselines import MostPopular
from recsys.models.registry import build
from recsys.protocols import random_split, strong_generalization
from recsys.training.batches import SparseRows
from recsys.training.early_stopping import snapshot

FAST = dict(enc_dims=[64], epochs=10, batch_size=64, lr=1e-2, total_anneal_steps=1000, device="cpu", seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split():
    return strong_generalization(make_synthetic(n_users=800, n_items=200, seed=0).df, heldout_fraction=0.2, seed=1)


@pytest.fixture(scope="module")
def vae(split):
    return MultVAE(**FAST).fit(split["train"], (split["valid_fold_in"], split["valid_holdout"]))


@pytest.fixture(scope="module")
def dae(split):
    return MultDAE(**FAST).fit(split["train"], (split["valid_fold_in"], split["valid_holdout"]))


def _test_metrics(model, split) -> dict[str, float]:
    return model.evaluate(
        split["test_fold_in"], split["test_holdout"], recall_denominator="min", ks=(20,), metrics=("ndcg", "recall")
    ).mean()


def _rows(n_users=6, n_items=9, seed=0) -> sp.csr_matrix:
    x = sp.random(n_users, n_items, density=0.4, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = 1.0
    return x


# ---- quality --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["vae", "dae"])
def test_autoencoders_beat_most_popular_on_held_out_users(split, which, request):
    model = request.getfixturevalue(which)
    pop = _test_metrics(MostPopular(device="cpu").fit(split["train"]), split)
    ours = _test_metrics(model, split)
    for metric in ("ndcg@20", "recall@20"):
        assert ours[metric] > 1.1 * pop[metric], (which, ours, pop)


def test_dae_beats_most_popular_with_training_rows_as_validation_inputs():
    s = random_split(make_synthetic(n_users=600, n_items=200, seed=2).df, seed=0)
    model = MultDAE(**FAST).fit(s["train"], (s["train"], s["valid"]))  # random-split style validation
    assert len(model.history_) > 1 and "ndcg@100" in model.history_[0]
    seen = s["train"] + s["valid"]

    def ndcg(m):
        return m.evaluate(seen, s["test"], recall_denominator="n", ks=(20,), metrics=("ndcg",)).mean()["ndcg@20"]

    assert ndcg(model) > 1.1 * ndcg(MostPopular(device="cpu").fit(s["train"]))


# ---- loss and network algebra -------------------------------------------------------------------


def test_multinomial_nll_matches_dense_log_softmax():
    x = _rows()
    logits = torch.randn(x.shape)
    dense = -(F.log_softmax(logits, 1) * torch.from_numpy(x.toarray())).sum(1)
    assert torch.allclose(multinomial_nll(logits, SparseRows.from_csr(x, "cpu")), dense, atol=1e-5)


def test_user_weights_give_a_weighted_mean_of_per_user_nll():
    x = _rows()
    rows = SparseRows.from_csr(x, "cpu")
    logits, mu, logvar = torch.randn(x.shape), torch.randn(6, 3), torch.randn(6, 3)
    nll_u = multinomial_nll(logits, rows)
    w = torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0, 1.0])
    _, nll, kl = vae_loss(logits, rows, mu, logvar, beta=0.3, user_weights=w)
    assert torch.allclose(nll, (w * nll_u).sum() / w.sum())
    loss_plain, nll_plain, _ = vae_loss(logits, rows, mu, logvar, beta=0.3)
    assert torch.allclose(nll_plain, nll_u.mean()) and torch.allclose(loss_plain, nll_plain + 0.3 * kl)


def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(kl_divergence(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1), atol=1e-5)


def test_sparse_network_equals_the_dense_formula():
    x = _rows()
    net = MultVAENet(9, (7, 4), dropout=0.5, variational=True).eval()
    logits, mu, logvar = net(SparseRows.from_csr(x, "cpu"))
    h = F.normalize(torch.from_numpy(x.toarray())) @ net.input_layer.weight + net.input_layer.bias
    h = net.encoder[0](torch.tanh(h))
    assert torch.allclose(mu, h[:, :4], atol=1e-6) and torch.allclose(logvar, h[:, 4:], atol=1e-6)
    expected = net.decoder[1](torch.tanh(net.decoder[0](h[:, :4])))  # z = mu at inference
    assert torch.allclose(logits, expected, atol=1e-6)


def test_dae_code_is_deterministic_and_has_no_kl():
    net = MultVAENet(9, (4,), dropout=0.0, variational=False).train()
    rows = SparseRows.from_csr(_rows(), "cpu")
    a, b = net(rows), net(rows)
    assert a[2] is None and torch.equal(a[0], b[0])
    assert MultDAE().config.resolved_l2_reg == pytest.approx(0.01 / 500)
    assert MultVAE().config.resolved_l2_reg == 0.0


# ---- upstream quirk switches ----------------------------------------------------------------------


@pytest.mark.parametrize("upstream,std", [(False, 1.0), (True, 0.01)])
def test_noise_std_switch_is_the_std_of_the_reparameterisation(upstream, std):
    model = MultVAE(**{**FAST, "epochs": 1}, noise_std_upstream=upstream).fit(_rows(20, 9))
    mu = torch.zeros(50_000, 2)
    z = model.net_.reparameterize(mu, torch.zeros_like(mu))  # sigma = 1, so z = eps
    assert z.std().item() == pytest.approx(std, rel=0.03)


def test_unmasked_fold_in_switch_lets_fold_in_items_into_the_top_k(vae, split):
    quirky = MultVAE(vae.config, unmasked_fold_in_upstream=True)
    quirky.n_items_, quirky.net_ = vae.n_items_, vae.net_  # same weights, only the switch differs
    fold_in = split["test_fold_in"]

    def run(model):
        res = model.evaluate(
            fold_in, split["test_holdout"], recall_denominator="min", ks=(20,), metrics=("ndcg",), keep_topk=True
        )
        in_fold = np.take_along_axis(fold_in[res.users].toarray(), res.topk, axis=1) > 0
        return res.mean()["ndcg@20"], in_fold.mean()

    ndcg_masked, share_masked = run(vae)
    ndcg_quirky, share_quirky = run(quirky)
    assert share_masked == 0.0  # fold-in items never ranked
    assert share_quirky > 0.2  # the trained model ranks its own inputs high
    assert ndcg_quirky < ndcg_masked  # which is why the bug depresses the reported scores


# ---- annealing, early stopping ------------------------------------------------------------------------


def test_beta_schedule_values():
    assert beta_at(0, 0.2, 1000) == 0.0
    assert beta_at(100, 0.2, 1000) == pytest.approx(0.1)
    assert beta_at(200, 0.2, 1000) == pytest.approx(0.2)  # cap reached after cap * total updates
    assert beta_at(10_000, 0.2, 1000) == 0.2
    assert beta_at(0, 0.2, 0) == 0.2  # no annealing


def test_history_records_beta_of_the_last_update_of_each_epoch(vae, split):
    steps = math.ceil(split["train"].shape[0] / FAST["batch_size"])
    for record in vae.history_:
        assert record["beta"] == pytest.approx(beta_at(record["epoch"] * steps - 1, 0.2, FAST["total_anneal_steps"]))
        assert record["loss"] > 0 and record["train_seconds"] > 0 and "recall@100" in record
    assert vae.update_count_ == steps * len(vae.history_)


def test_early_stopping_restores_the_best_not_the_latest_weights(split):
    model = MultVAE(**{**FAST, "epochs": 20}, patience=2)
    scripted = iter([0.1, 0.5, 0.2, 0.3, 0.9])
    states = []

    class Result:
        def __init__(self, value):
            self.value = value

        def mean(self):
            return {"ndcg@100": self.value, "recall@100": 0.0}

    def fake_evaluate(*args, **kwargs):  # called once per epoch, right after training it
        states.append(snapshot(model.net_))
        return Result(next(scripted))

    model.evaluate = fake_evaluate
    model.fit(split["train"], (split["valid_fold_in"], split["valid_holdout"]))
    assert len(model.history_) == 4 and model.best_epoch_ == 2  # 1-based; stopped two epochs after the best
    final = model.net_.state_dict()
    assert all(torch.equal(final[k], states[1][k]) for k in final)
    assert not torch.equal(final["decoder.0.weight"], states[-1]["decoder.0.weight"])


# ---- scoring, embeddings, persistence --------------------------------------------------------------


def test_score_and_user_embeddings(vae, split):
    rows = split["test_fold_in"][:7]
    assert vae.score(rows).shape == (7, split.n_items)
    emb = vae.user_embeddings(rows, batch_size=3)
    assert emb.shape == (7, 64) and emb.dtype == np.float32
    assert np.allclose(emb, vae.net_.encode(SparseRows.from_csr(rows, "cpu"))[0].detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("which", ["vae", "dae"])
def test_save_load_round_trip_gives_identical_scores(tmp_path, split, which, request):
    model = request.getfixturevalue(which)
    path = model.save(tmp_path / f"{which}.pt")
    for loader in (Model.load, type(model).load):
        again = loader(path)
        assert type(again) is type(model) and again.config == model.config
        assert again.history_ == model.history_ and again.best_epoch_ == model.best_epoch_
        assert torch.equal(again.score(split["test_fold_in"]), model.score(split["test_fold_in"]))


def test_score_before_fit_is_an_error():
    with pytest.raises(NotFittedError, match="multvae is not fitted"):
        MultVAE().score(_rows())


# ---- config errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,match",
    [
        (dict(lr=-0.1), r"lr must be a finite number in \(0.0, inf\), got -0.1"),
        (dict(dropout=1.0), r"dropout must be a finite number in \[0.0, 1.0\), got 1.0"),
        (dict(enc_dims=[]), "enc_dims must be a non-empty list"),
        (dict(enc_dims=[600, 0]), "each of enc_dims must be an integer >= 1, got 0"),
        (dict(anneal_cap=-1), "anneal_cap"),
        (dict(patience=0), "patience must be an integer >= 1"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(variational="yes"), "variational must be True or False"),
        (dict(dropuot=0.1), r"unknown multvae config key 'dropuot'. Did you mean 'dropout'\?.*Accepted: .*anneal_cap"),
    ],
)
def test_bad_multvae_config_is_a_config_error(config, match):
    with pytest.raises(ConfigError, match=match):
        build("multvae", **config)


def test_patience_without_validation_data_is_a_config_error():
    with pytest.raises(ConfigError, match="patience=3 needs validation data"):
        MultVAE(**FAST, patience=3).fit(_rows())


def test_config_defaults_follow_the_paper():
    vae, dae = MultVAE().config, MultDAE().config
    assert vae.enc_dims == (600, 200) and vae.variational and vae.anneal_cap == 0.2 and vae.total_anneal_steps == 200_000
    assert vae.lr == 1e-3 and vae.batch_size == 500 and vae.dropout == 0.5 and vae.epochs == 200
    assert not vae.noise_std_upstream and not vae.unmasked_fold_in_upstream
    assert dae.enc_dims == (200,) and not dae.variational
    assert build("multvae", enc_dims=[200]).config.to_dict()["enc_dims"] == [200]


# ---- memory ---------------------------------------------------------------------------------------------


class _LargestTensor(TorchFunctionMode):
    """Records the largest tensor any torch call returns (factories, ops, transfers)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_fit_and_evaluate_never_build_a_dense_user_item_matrix(monkeypatch):
    n_users, n_items = 10_000, 100
    x = sp.random(n_users, n_items, density=0.05, format="csr", random_state=0, dtype=np.float32)
    x.data[:] = 1.0
    target = _rows(n_users, n_items, seed=1)

    def refuse(*args, **kwargs):
        raise AssertionError("a sparse matrix was densified on the host")

    for cls in (sp.csr_matrix, sp.coo_matrix):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)
    model = MultVAE(enc_dims=[16], epochs=1, batch_size=500, eval_batch_size=1000, device="cpu")
    with _LargestTensor() as mode:
        model.fit(x, (x, target))
    assert 0 < mode.largest <= 1000 * n_items  # one evaluation batch; the full matrix is 10x more
