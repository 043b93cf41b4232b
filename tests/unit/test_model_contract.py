"""One contract suite per model contract (LensKit's BasicComponentTests pattern), each run over
every registered model that claims the contract, so a model is covered by registering it:

* ItemScorer (``score(rows)``), UserScorer (``score_users(users)``), SequenceScorer
  (``score(histories)``; InterestModel adds ``interests``), SequenceRater (``predict_ratings``),
  TaskRater (``predict_tasks``): fit through the split-level contract, output shape, save / load
  round trip, determinism by seed, not-fitted error, bad config as one clear error, and
  ``evaluate_split`` on the contract's protocol;
* every model trained by the loop and cut by its time budget resumes from its checkpoint to
  exactly the uninterrupted result (bag-of-items and local models here; the sequential,
  multi-interest and meta families test it beside their own numerics).

No ``isinstance`` escapes: a suite asks only what its contract promises. Each model's own
numeric tests (it learns, it matches the paper's formulas) live beside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.synthetic import make_synthetic
from recsys.errors import ConfigError
from recsys.models import registry
from recsys.models.base import (
    InterestModel,
    IterativeModel,
    ItemScorer,
    NotFittedError,
    SequenceRater,
    SequenceScorer,
    TaskRater,
    UserScorer,
)
from recsys.models.meta import backbone_config
from recsys.protocols import leave_one_out, random_split
from tests.unit.test_models_meta import TASKS, TINY_BB, TINY_EXTRA, tiny_split

pytestmark = pytest.mark.usefixtures("one_thread")

CONTRACTS = (ItemScorer, UserScorer, SequenceScorer, SequenceRater, TaskRater)
QUICK = dict(device="cpu", seed=0)
BANK = dict(hidden=16, lr=1e-2, weight_decay=0.0, batch_size=64, epochs=4, patience=None, **QUICK)
SEQ = dict(max_len=12, hidden=16, dropout=0.0, lr=5e-3, batch_size=64, epochs=2, patience=None, progress="off", **QUICK)
MI = dict(seq_len=12, hidden=16, n_interests=3, n_negatives=32, batch_size=64, steps_per_epoch=5, epochs=2,
          patience=None, valid_users=0, progress="off", linear_size=8, **QUICK)
META_BB = {"model": "sasrec", "config": backbone_config("sasrec", {**TINY_BB, **TINY_EXTRA["sasrec"]}).to_dict()}
META = dict(backbone=META_BB, **TASKS, epochs=2, block=2, meta_batch=4, valid_tasks=6, progress="off", **QUICK)

# name -> (a small config, a bad setting whose ConfigError names it)
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
    "bert4rec": (dict(SEQ, n_heads=2, attn_dropout=0.0, mask_prob=0.3), {"mask_prob": 1.0}),
    "sasrec": (dict(SEQ, n_heads=2, attn_dropout=0.0), {"loss": "hinge"}),
    "gru4rec": (dict(SEQ, gru_hidden=16), {"n_layers": 0}),
    "narm": (dict(SEQ, gru_hidden=16, ct_dropout=0.0), {"train_positions": "middle"}),
    "mind": (dict(MI), {"n_interests": 0}),
    "comirec": (dict(MI, selection="p"), {"selection": "soft"}),
    "remi": (dict(MI, selection="l"), {"tau": -1.0}),
    "global_mean": ({"device": "cpu"}, {"seed": -1}),
    "meta_basic": (dict(backbone=META_BB, **TASKS, epochs=2, progress="off", **QUICK), {"epochs": -1}),
    "maml": (dict(META), {"meta_batch": 0}),
    "maml_pp": (dict(META), {"inner_steps": -1}),
    "melo": (dict(META), {"block": 0}),
}


def claiming(contract) -> list[str]:
    return [n for n, k in registry.MODELS.items() if issubclass(k, contract)]


def _build(name, **extra):
    return registry.build(name, **{**CASES[name][0], **extra})


# ---- the registry ---------------------------------------------------------------------------------


def test_every_registered_model_keeps_a_contract_and_has_a_case():
    assert sorted(CASES) == sorted(registry.MODELS)
    for name, klass in registry.MODELS.items():
        assert klass.name == name
        assert any(issubclass(klass, c) for c in (ItemScorer, UserScorer, SequenceScorer, TaskRater)), name


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
def test_every_model_of_a_contract_implements_what_it_promises(contract):
    promised = {ItemScorer: ("fit", "score"), UserScorer: ("fit", "score_users"),
                SequenceScorer: ("fit", "score", "item_embeddings"), SequenceRater: ("predict_ratings",),
                TaskRater: ("fit", "predict_tasks", "evaluate_split")}[contract]
    for name in claiming(contract):
        klass = registry.get_model(name)
        for method in promised:
            assert getattr(klass, method) is not getattr(contract, method, None), f"{name} lacks {method}"
    if contract is SequenceScorer:
        for name in claiming(InterestModel):
            assert registry.get_model(name).interests is not InterestModel.interests


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_is_one_clear_error(name):
    bad = CASES[name][1]
    with pytest.raises(ConfigError, match=next(iter(bad))):
        _build(name, **bad)
    with pytest.raises(ConfigError, match="no_such_setting"):
        _build(name, no_such_setting=1)


# ---- data -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_split():
    return random_split(make_synthetic(n_users=200, n_items=80, seed=3).df, k_core=3, seed=0)


@pytest.fixture(scope="module")
def sequence_split():
    return leave_one_out(make_synthetic(n_users=150, n_items=60, mean_items_per_user=15, seed=4).df, k_core=0)


@pytest.fixture(scope="module")
def rating_split():
    return tiny_split(seed=2)


def _histories(split, n=12):
    ptr, items = split.arrays["seq_indptr"], split.arrays["seq_items"]
    return [items[ptr[u] : ptr[u + 1] - 1] for u in range(n)]


# ---- ItemScorer -----------------------------------------------------------------------------------


def _fit_rows(model, data):
    tr, va = data["train"], data["valid"]
    return model.fit(tr, (tr, va)) if model.takes_validation else model.fit(tr)


@pytest.mark.parametrize("name", claiming(ItemScorer))
def test_item_scorer_fit_score_save_load_and_determinism(name, matrix_split, tmp_path):
    model = _build(name)
    rows = matrix_split["train"][:20]
    with pytest.raises(NotFittedError):
        model.score(rows)
    _fit_rows(model, matrix_split)
    s = model.score(rows).cpu().numpy()
    assert s.shape == (20, matrix_split.n_items) and np.isfinite(s).all()
    loaded = type(model).load(model.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(loaded.score(rows).cpu().numpy(), s)
    np.testing.assert_array_equal(_fit_rows(_build(name), matrix_split).score(rows).cpu().numpy(), s)


# ---- UserScorer -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", claiming(UserScorer))
def test_user_scorer_fit_split_score_users_evaluate_save_load_and_determinism(name, matrix_split, tmp_path):
    users = np.arange(20)
    model = _build(name)
    with pytest.raises(NotFittedError):
        model.score_users(users)
    assert model.fit_split(matrix_split) is model
    s = model.score_users(users).cpu().numpy()
    assert s.shape == (20, matrix_split.n_items) and np.isfinite(s).all()
    res = model.evaluate_split(matrix_split, "test", ks=(5, 20), metrics=("ndcg",))
    same = model.evaluate_users(matrix_split["test"], ks=(5, 20), metrics=("ndcg",))
    assert set(res.mean()) == {"ndcg@5", "ndcg@20"} and res.mean() == same.mean()
    loaded = type(model).load(model.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(loaded.score_users(users).cpu().numpy(), s)
    np.testing.assert_array_equal(_build(name).fit_split(matrix_split).score_users(users).cpu().numpy(), s)
    with pytest.raises(Exception, match="training users"):
        model.score_users(np.array([matrix_split["train"].shape[0]]))


@pytest.mark.parametrize("name", [n for n in sorted(set(claiming(ItemScorer)) | set(claiming(UserScorer)))
                                  if issubclass(registry.get_model(n), IterativeModel)])
def test_a_run_cut_short_resumes_from_its_checkpoint_to_the_same_model(name, matrix_split, tmp_path):
    full = _build(name).fit_split(matrix_split)
    cut = _build(name, max_seconds=1e-9).checkpoints(tmp_path)
    cut.fit_split(matrix_split)  # stops after its first epoch (of each sub-fit), checkpointed
    assert list(tmp_path.rglob("epoch-*.pt"))
    resumed = _build(name).checkpoints(tmp_path).fit_split(matrix_split)
    res = {m: m.evaluate_split(matrix_split, "test", ks=(20,), metrics=("ndcg",)) for m in (full, resumed)}
    np.testing.assert_array_equal(res[resumed].per_user["ndcg@20"], res[full].per_user["ndcg@20"])


# ---- SequenceScorer (and InterestModel) -------------------------------------------------------------


_SEQ_FITTED: dict[str, SequenceScorer] = {}


def _seq_fitted(name, split):
    if name not in _SEQ_FITTED:
        _SEQ_FITTED[name] = _build(name).fit_split(split)
    return _SEQ_FITTED[name]


@pytest.mark.parametrize("name", claiming(SequenceScorer))
def test_sequence_scorer_fit_split_score_evaluate_save_load_and_determinism(name, sequence_split, tmp_path):
    hist = _histories(sequence_split)
    with pytest.raises(NotFittedError):
        _build(name).score(hist)
    model = _seq_fitted(name, sequence_split)
    s = model.score(hist).cpu().numpy()
    assert s.shape == (len(hist), sequence_split.n_items) and np.isfinite(s).all()
    emb = model.item_embeddings()
    assert emb.shape[0] == sequence_split.n_items and set(model.exports(sequence_split)) == {"item_embeddings"}
    res = model.evaluate_split(sequence_split, "test", ks=(10,), metrics=("ndcg",))
    assert set(res.mean()) == {"ndcg@10"} and 0.0 <= res.mean()["ndcg@10"] <= 1.0
    loaded = type(model).load(model.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(loaded.score(hist).cpu().numpy(), s)
    np.testing.assert_array_equal(_build(name).fit_split(sequence_split).score(hist).cpu().numpy(), s)


@pytest.mark.parametrize("name", claiming(InterestModel))
def test_interest_model_scores_are_the_max_over_its_interests(name, sequence_split):
    model = _seq_fitted(name, sequence_split)
    hist = _histories(sequence_split)
    v = model.interests(hist)
    assert v.shape[:2] == (len(hist), model.config.n_interests)
    items = torch.as_tensor(model.item_embeddings(), device=v.device)
    expected = torch.einsum("bkd,id->bki", v, items).amax(1)
    torch.testing.assert_close(model.score(hist), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", claiming(SequenceRater))
def test_sequence_rater_gives_one_rating_per_position_on_the_rating_scale(name, sequence_split, rating_split,
                                                                          tmp_path):
    own = {"leave_one_out": sequence_split, "user_split": rating_split}[registry.get_model(name).protocols[0]]
    with pytest.raises(NotFittedError):
        _build(name).predict_ratings(torch.ones(1, 3, dtype=torch.long))
    model = _seq_fitted(name, own)
    tokens = torch.zeros(4, 6, dtype=torch.long)
    tokens[:, 2:] = torch.arange(1, 17).view(4, 4)  # right-aligned, PAD on the left
    r = model.predict_ratings(tokens)
    assert r.shape == (4, 6) and bool(((r >= 0.5) & (r <= 5.5)).all())
    torch.testing.assert_close(model.predict_ratings(tokens), r)  # evaluation mode: no dropout
    loaded = type(model).load(model.save(tmp_path / "m.pt"))
    torch.testing.assert_close(loaded.predict_ratings(tokens), r)


# ---- TaskRater ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", claiming(TaskRater))
def test_task_rater_fit_split_predict_evaluate_save_load_and_determinism(name, rating_split, tmp_path):
    model = _build(name)
    with pytest.raises(NotFittedError):
        model.evaluate_split(rating_split, "test")
    assert model.fit_split(rating_split) is model
    tasks = model.stage_tasks(rating_split, "test")
    pred = model.predict_tasks(tasks)
    assert pred.shape == (len(tasks),) and bool(((pred >= 0.5) & (pred <= 5.5)).all())
    ev = model.evaluate_split(rating_split, "test")
    assert ev["n"] == len(tasks) and ev["rmse"] >= ev["mae"] > 0
    with pytest.raises(ConfigError, match="predicts ratings: evaluate_split gives RMSE / MAE"):
        model.evaluate_split(rating_split, "test", ks=(10,), metrics=("ndcg",))
    np.testing.assert_array_equal(ev["pred"], pred)
    loaded = type(model).load(model.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(loaded.predict_tasks(tasks), pred)
    np.testing.assert_array_equal(_build(name).fit_split(rating_split).predict_tasks(tasks), pred)
