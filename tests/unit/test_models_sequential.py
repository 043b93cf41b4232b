"""The sequential models (BERT4Rec, SASRec, GRU4Rec, NARM): one contract suite over all four, the
networks' masking properties, checkpoint resume, the rating head and the pretraining glue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.errors import ConfigError, DataError
from recsys.models import registry
from recsys.models.base import NotFittedError, SequenceRater, SequenceScorer
from recsys.models.baselines import MostPopular
from recsys.models.sequential import SASRec, SequentialModel
from recsys.models.sequential.layers import align_left, align_right, full_softmax_ce, rating_mse
from recsys.protocols import leave_one_out
from tests.unit.test_models_bert4rec import markov_df

pytestmark = pytest.mark.usefixtures("one_thread")

COMMON = dict(max_len=16, hidden=32, dropout=0.0, lr=5e-3, batch_size=32, epochs=20, patience=5, device="cpu",
              progress="off")
FAST = {
    "bert4rec": dict(COMMON, n_heads=2, attn_dropout=0.0, mask_prob=0.3, epochs=30, patience=10),
    "sasrec": dict(COMMON, n_heads=2, attn_dropout=0.0),
    "gru4rec": dict(COMMON, gru_hidden=32),
    "narm": dict(COMMON, gru_hidden=32, ct_dropout=0.0),
}
BAD = {  # (setting, value) -> ConfigError naming the setting
    "bert4rec": ("mask_prob", 1.0),
    "sasrec": ("loss", "hinge"),
    "gru4rec": ("n_layers", 0),
    "narm": ("train_positions", "middle"),
}
MODELS = list(FAST)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(markov_df(), k_core=0)


@pytest.fixture(scope="module")
def popular(split):
    train_valid = (split["train"] + split["valid"]).tocsr()
    return MostPopular(device="cpu").fit(train_valid).evaluate(
        train_valid, split["test"], ks=(10,), metrics=("hit", "ndcg"), recall_denominator="n").mean()


_FITTED: dict[str, SequentialModel] = {}


@pytest.fixture
def fitted(split):
    def get(name: str) -> SequentialModel:
        if name not in _FITTED:
            _FITTED[name] = registry.build(name, **FAST[name]).fit(split)
        return _FITTED[name]
    return get


def sequences_of(split) -> list[np.ndarray]:
    ptr, items = split.arrays["seq_indptr"], split.arrays["seq_items"]
    return [items[ptr[u] : ptr[u + 1]] for u in range(len(ptr) - 1)]


# ---- the contract, for every model -----------------------------------------------------------


def test_every_sequential_model_is_registered_and_in_the_suite():
    names = sorted(n for n, k in registry.MODELS.items() if issubclass(k, SequentialModel))
    assert names == sorted(MODELS)
    for name in names:
        klass = registry.get_model(name)
        assert issubclass(klass, SequenceScorer) and issubclass(klass, SequenceRater)
        assert klass.protocols == ("leave_one_out",) and klass.name == name


@pytest.mark.parametrize("name", MODELS)
def test_bad_config_is_one_clear_error(name):
    key, value = BAD[name]
    for bad in ({key: value}, {"objective": "ranking"}, {"window": "middle"}, {"monitor": "ndcg@20"},
                {"eval_ks": []}, {"batch_size": 0}, {"betas": (0.9,)}):
        field = next(iter(bad))
        with pytest.raises(ConfigError, match=field):
            registry.build(name, **bad)
    with pytest.raises(ConfigError, match="no_such_setting"):
        registry.build(name, no_such_setting=1)


@pytest.mark.parametrize("name", MODELS)
def test_learns_the_sequential_signal_and_beats_most_popular(name, split, fitted, popular):
    model = fitted(name)
    ours = model.evaluate(split, "test", ks=(10,)).mean()
    se = math.sqrt(0.25 / split.n_users)  # largest standard error of a hit rate over n users
    assert ours["hit@10"] > popular["hit@10"] + 8 * se, (ours, popular)
    assert ours["ndcg@10"] > popular["ndcg@10"] + 8 * se, (ours, popular)
    h = model.history_
    assert 1 <= model.best_epoch_ <= len(h) and h[-1]["loss"] < h[0]["loss"]
    assert h[model.best_epoch_ - 1]["valid_ndcg@10"] == max(r["valid_ndcg@10"] for r in h)


@pytest.mark.parametrize("name", MODELS)
def test_scores_recommend_save_load(name, split, fitted, tmp_path):
    model = fitted(name)
    with pytest.raises(NotFittedError):
        registry.build(name, **FAST[name]).score([np.array([1, 2])])
    scores = model.score(split, stage="valid", users=np.array([0, 5, 7]))
    assert scores.shape == (3, split.n_items) and torch.isfinite(scores).all()
    seqs = sequences_of(split)
    assert torch.allclose(scores, model.score([seqs[0][:-2], seqs[5][:-2], seqs[7][:-2]]), atol=1e-6)
    top = model.recommend(split, k=10, stage="test")
    assert top.shape == (split.n_users, 10)
    assert all(not set(row) & set(seqs[u][:-1]) for u, row in enumerate(top))
    loaded = type(model).load(model.save(tmp_path / "m.pt"))
    assert loaded.config == model.config and loaded.history_ == model.history_ and loaded.best_epoch_ == model.best_epoch_
    assert torch.equal(loaded.score(split, stage="test"), model.score(split, stage="test"))
    emb = loaded.item_embeddings()
    assert emb.shape == (split.n_items, 32) and np.array_equal(emb, model.item_embeddings())
    assert model.exports(split)["item_embeddings"].shape == (split.n_items, 32)
    with pytest.raises(DataError, match="sequences"):
        model.score(split["train"])
    with pytest.raises(ConfigError, match="stage"):
        model.score(split)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_model(name, split):
    cfg = dict(FAST[name], epochs=2, dropout=0.1)
    a, b = registry.build(name, **cfg).fit(split), registry.build(name, **cfg).fit(split)
    assert [r["loss"] for r in a.history_] == [r["loss"] for r in b.history_]
    assert torch.equal(a.score(split, stage="test"), b.score(split, stage="test"))
    c = registry.build(name, **cfg, seed=1).fit(split)
    assert not torch.equal(a.score(split, stage="test"), c.score(split, stage="test"))


@pytest.mark.parametrize("name", MODELS)
def test_left_padding_changes_nothing(name):
    """PAD is masked (attention) or read after the real items (GRUs), positions count from the
    right: left padding leaves every real position's hidden state unchanged."""
    model = registry.build(name, **dict(FAST[name], max_len=12, dropout=0.1))
    model.n_items_ = 30
    model._init_modules()
    net = model.net_.eval()
    tokens = torch.randint(1, 31, (4, 5))
    padded = torch.cat([torch.zeros(4, 7, dtype=torch.long), tokens], 1)
    with torch.no_grad():
        assert torch.allclose(net.encode(tokens), net.encode(padded)[:, 7:], atol=1e-5)
        assert torch.allclose(net.encode_last(padded), net.encode(padded)[:, -1], atol=1e-5)
        mixed = padded.clone()
        mixed[0, :9] = 0  # rows of different lengths in one batch
        assert torch.allclose(net.encode(mixed)[0, 9:], net.encode(mixed[:1, 9:])[0], atol=1e-5)


def test_blocked_cross_entropy_equals_the_plain_one():
    torch.manual_seed(0)
    h = torch.randn(37, 8, requires_grad=True)
    base = torch.randn(21, 8, requires_grad=True)
    labels = torch.randint(0, 20, (37,))
    plain = F.cross_entropy(h @ base[1:].T, labels)
    g_plain = torch.autograd.grad(plain, [h, base])
    blocked = full_softmax_ce(h, base[1:], labels, chunk=5)  # a table that is a view, as the models pass
    g_blocked = torch.autograd.grad(blocked, [h, base])
    assert torch.allclose(plain, blocked, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_plain, g_blocked))
    assert torch.autograd.gradcheck(lambda x, t: full_softmax_ce(x, t, labels[:6], chunk=4),
                                    (h[:6].detach().double().requires_grad_(), base[1:].detach().double().requires_grad_()))


def test_align_left_and_right_are_inverse():
    tokens = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]])
    left, n = align_left(tokens)
    assert left.tolist() == [[3, 4, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]] and n.tolist() == [2, 4, 0]
    assert torch.equal(align_right(left[..., None].float(), n)[..., 0].long(), tokens)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "narm"])
def test_causal_models_never_look_ahead(name):
    """Changing a later item changes no earlier position's hidden state (SASRec's causal mask;
    the GRUs and NARM's local attention by construction), but it does change its own."""
    model = registry.build(name, **dict(FAST[name], max_len=12))
    model.n_items_ = 30
    model._init_modules()
    net = model.net_.eval()
    tokens = torch.tensor([[0, 0, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8]])
    changed = tokens.clone()
    changed[:, 5] = 20
    with torch.no_grad():
        a, b = net.encode(tokens), net.encode(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


def test_narm_chunked_local_attention_matches_the_whole(monkeypatch):
    """NARM computes its O(W^2 H) local attention in chunks of query positions, recomputed in the
    backward pass: the values and the gradients equal the one-block computation."""
    import recsys.models.sequential.narm as narm

    model = registry.build("narm", **dict(FAST["narm"], max_len=12))
    model.n_items_ = 30
    model._init_modules()
    net = model.net_.eval()
    tokens = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9, 10, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])

    def run():
        net.zero_grad()
        h = net.encode(tokens)
        h.square().sum().backward()
        return h.detach(), net.a1.weight.grad.clone()

    whole = run()
    monkeypatch.setattr(narm, "_CHUNK_ELEMENTS", 2 * 10 * 32 * 3)  # 3 query positions per chunk
    chunked = run()
    assert torch.allclose(whole[0], chunked[0], atol=1e-6) and torch.allclose(whole[1], chunked[1], atol=1e-6)


def test_sasrec_bce_and_narm_last_position_train(split, popular):
    se = math.sqrt(0.25 / split.n_users)
    bce = SASRec(**dict(FAST["sasrec"], loss="bce", epochs=15)).fit(split).evaluate(split, "test", ks=(10,)).mean()
    assert bce["hit@10"] > popular["hit@10"] + 8 * se, (bce, popular)
    last = registry.build("narm", **dict(FAST["narm"], train_positions="last", epochs=3, patience=None)).fit(split)
    assert len(last.history_) == 3 and last.history_[-1]["loss"] < last.history_[0]["loss"]


def test_fit_on_lists_with_optional_validation(split):
    seqs = sequences_of(split)
    train, hist, target = seqs[:200], [s[:-1] for s in seqs[200:]], np.array([s[-1] for s in seqs[200:]])
    cfg = dict(FAST["sasrec"], epochs=3)
    plain = SASRec(**cfg).fit(train, n_items=split.n_items)
    assert len(plain.history_) == 3 and "valid_ndcg@10" not in plain.history_[0]
    val = SASRec(**cfg).fit(train, valid=(hist, target), n_items=split.n_items)
    assert "valid_ndcg@10" in val.history_[-1]
    with pytest.raises(ConfigError, match="valid"):
        val.fit(split, valid=(hist, target))
    with pytest.raises(DataError, match="training item"):
        SASRec(**cfg).fit([np.array([1]), np.array([2])], n_items=5)


def test_a_run_cut_short_resumes_from_its_checkpoint_to_the_same_model(split, tmp_path):
    cfg = dict(FAST["sasrec"], epochs=6, patience=None, dropout=0.1)
    full = SASRec(**cfg).fit(split)
    cut = SASRec(**cfg, max_seconds=1e-9).checkpoints(tmp_path).fit(split)
    assert len(cut.history_) == 1 and list(tmp_path.rglob("epoch-*.pt"))
    resumed = SASRec(**cfg).checkpoints(tmp_path).fit(split)
    assert [r["loss"] for r in resumed.history_] == [r["loss"] for r in full.history_]
    assert resumed.best_epoch_ == full.best_epoch_
    assert torch.equal(resumed.score(split, stage="test"), full.score(split, stage="test"))


# ---- the rating head ---------------------------------------------------------------------------


def _rated_lists(split, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    seqs = sequences_of(split)[:n]
    return seqs, [rng.integers(1, 6, len(s)).astype(float) for s in seqs]


@pytest.mark.parametrize("name", MODELS)
def test_rating_head_api_and_functional_call(name, split):
    items, ratings = _rated_lists(split, 60)
    model = registry.build(name, **dict(FAST[name], objective="rating", epochs=2, patience=None))
    model.fit(items[:40], ratings=ratings[:40], n_items=split.n_items)
    assert len(model.history_) == 2 and "loss" in model.history_[0]
    tokens, r = model.rating_batch(items[40:], ratings[40:])
    assert tokens.shape == r.shape == (20, FAST[name]["max_len"]) and torch.isnan(r[tokens == 0]).all()
    pred = model.predict_ratings(tokens)
    assert pred.shape == tokens.shape and bool(((pred > 0.5) & (pred < 5.5)).all())
    # the meta stage's path: the same loss functionally, differentiable in the parameters
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.net_.named_parameters()}
    model.net_.eval()
    plain = model.rating_loss(tokens, r)
    functional = model.rating_loss(tokens, r, params=params)
    assert torch.allclose(plain, functional)
    assert torch.allclose(plain, rating_mse(pred / 5, r), atol=1e-6)
    grads = torch.autograd.grad(functional, [params["rating_head.weight"], params["rating_head.bias"]])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    errors = model.evaluate_ratings(items[40:], ratings=ratings[40:])
    assert errors["n"] == 20 and errors["rmse"] >= errors["mae"] > 0 and "overall" in errors["per_rating"]
    with pytest.raises(DataError, match="ratings"):
        model.fit_ratings(items[:40], n_items=split.n_items)  # no ratings given


def test_fit_ratings_warm_start_and_unrated_split(split):
    model = registry.build("gru4rec", **dict(FAST["gru4rec"], epochs=2, patience=None)).fit(split)
    items, ratings = _rated_lists(split, 60)
    before = model.item_embeddings()
    model.fit_ratings(items[:40], (items[40:], ratings[40:]), ratings=ratings[:40], warm_start=True)
    assert "valid_rmse" in model.history_[-1] and not np.array_equal(before, model.item_embeddings())
    unrated = leave_one_out(markov_df().drop(columns="rating"), k_core=0)
    assert "seq_ratings" not in unrated.arrays
    with pytest.raises(DataError, match="no ratings"):
        registry.build("gru4rec", **dict(FAST["gru4rec"], objective="rating")).fit(unrated)


def test_rating_objective_beats_the_global_mean_on_ml100k():
    from recsys.data import load_dataset

    try:
        df = load_dataset("ml-100k", download=False).df
    except Exception as exc:  # noqa: BLE001 - any missing-file error means: no data here
        pytest.skip(f"ML-100K not available under RECSYS_DATA_HOME ({type(exc).__name__})")
    split = leave_one_out(df, k_core=5)
    a = split.arrays
    ptr, r = a["seq_indptr"], a["seq_ratings"]
    assert r.shape == a["seq_items"].shape and np.isfinite(r).all()
    from_end = np.repeat(ptr[1:], np.diff(ptr)) - 1 - np.arange(len(r))
    mean = r[from_end >= 2].mean()  # the training ratings' global mean
    test = r[ptr[1:] - 1]
    baseline = float(np.sqrt(np.mean((test - mean) ** 2)))
    model = SASRec(objective="rating", max_len=50, hidden=32, dropout=0.1, attn_dropout=0.1, lr=5e-3, batch_size=64,
                   epochs=6, patience=3, device="cpu", progress="off").fit(split)
    ours = model.evaluate_ratings(split, "test")
    assert ours["n"] == split.n_users
    assert ours["rmse"] < baseline - 0.05, (ours["rmse"], baseline)
    assert model.history_[0]["valid_rmse"] > 0 and model.best_epoch_ >= 1


# ---- the pretraining stage ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "narm"])
def test_pretrain_stage_trains_the_sequential_models(name, tmp_path):
    from recsys.data import make_synthetic
    from recsys.pipeline import pretrain as pt

    split = leave_one_out(make_synthetic(n_users=120, n_items=60, seed=1).df, k_core=2).save(tmp_path / "s")
    cfg = {k: v for k, v in FAST[name].items() if k not in ("device", "progress")}
    out = pt.train_and_evaluate(split, name, dict(cfg, epochs=2), tmp_path / name)
    assert set(out["test"]) >= {"hit@10", "hit@20", "ndcg@10", "ndcg@20", "gini@20", "novelty@20"} and out["epochs"] == 2
    assert np.load(out["files"]["item_embeddings"]["path"]).shape == (60, 32)


def test_budgets_in_updates_raise_epochs_and_patience_on_data_with_few_users(split):
    model = registry.build("gru4rec", **{**FAST["gru4rec"], "epochs": 30, "patience": 5})
    assert model._budget(4) == (30, 5)  # off by default
    model = registry.build("gru4rec", **{**FAST["gru4rec"], "epochs": 30, "patience": 5, "min_updates": 1500,
                                         "patience_updates": 200})
    assert model._budget(4) == (375, 50) and model._budget(100) == (30, 5) and model._budget(7) == (215, 29)
    # a real fit: 300 users in batches of 128 = 3 updates an epoch, so 10 updates take 4 epochs
    cfg = {**FAST["gru4rec"], "epochs": 1, "patience": None, "batch_size": 128, "min_updates": 10}
    fitted = registry.build("gru4rec", **cfg).fit(split)
    assert len(fitted.history_) == 4
    with pytest.raises(ConfigError, match="min_updates"):
        registry.build("gru4rec", min_updates=-1)
