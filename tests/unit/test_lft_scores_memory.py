"""LFT keeps each user's top-M items (``keep_top``) instead of a dense [U, I] score table: the
metrics equal the dense table's exactly (ties, short rows and the k > available-items case
included), a too large k raises, save / load and shard merging keep the same rows, and the cost
formula has no U x I host term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data import make_synthetic
from recsys.errors import ConfigError, DataError
from recsys.metrics.ranking import evaluate
from recsys.models.base import Model
from recsys.models.local import LFT, WL
from recsys.models.local.common import REPORT_KS, REPORT_METRICS
from recsys.protocols import make_split
from recsys.training.cost import DataShape

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(hidden=16, lr=1e-2, weight_decay=0.0, batch_size=64, epochs=3, patience=None, device="cpu", seed=0,
            progress="off")
LOCAL = dict(BASE, local_epochs=2, min_local=5, max_local=40, local_batch_size=16, group=32)


@pytest.fixture(scope="module")
def split():
    df = make_synthetic(n_users=150, n_items=90, seed=3, mean_items_per_user=20).df
    return make_split("random_split", df)


@pytest.fixture(scope="module")
def base(split):
    return WL(exponent=1.5, **BASE).fit(split["train"])


@pytest.fixture(scope="module")
def dense(split, base):
    """Every user's full logits from its own copy (what the old ``scores_`` [U, I] held)."""
    model = LFT(**LOCAL).prepare(split["train"], base_model=base)
    return model.finetune_users(np.arange(split["train"].shape[0]))


def dense_metrics(logits, split, stage, ks, metrics=REPORT_METRICS):
    """The old evaluation: the dense rows, training items excluded (LocalModel.evaluate_users)."""
    users = np.arange(logits.shape[0])
    return evaluate(lambda rows: torch.from_numpy(logits[rows].copy()), users, split[stage], split["train"],
                    ks=ks, metrics=metrics, recall_denominator="n", batch_size=64, device="cpu", keep_topk=True)


def assert_same(a, b):
    assert a.per_user.keys() == b.per_user.keys()
    np.testing.assert_array_equal(a.users, b.users)
    for key in a.per_user:
        np.testing.assert_array_equal(a.per_user[key], b.per_user[key], err_msg=key)
    np.testing.assert_array_equal(a.topk, b.topk)


def test_fit_keeps_only_top_m_and_metrics_equal_the_dense_table(split, base, dense):
    model = LFT(**LOCAL, keep_top=20).fit(split["train"], base_model=base)
    U, I = split["train"].shape
    assert not hasattr(model, "scores_")
    assert model.top_items_.shape == model.top_scores_.shape == (U, 20)
    assert model.top_items_.dtype == np.int32 and model.top_scores_.dtype == np.float32
    # training items are never kept, and the kept items are the user's best, best first
    train = split["train"].tocsr()
    for u in range(0, U, 17):
        assert not set(model.top_items_[u]) & set(train[u].indices)
        assert (np.diff(model.top_scores_[u]) <= 0).all()
    # rebuilt rows: finite, the kept logits as they were, one floor below them everywhere else
    rows = model.score_users(np.arange(U)).numpy()
    assert np.isfinite(rows).all()
    kept = np.take_along_axis(rows, model.top_items_.astype(np.int64), 1)
    np.testing.assert_array_equal(kept, np.take_along_axis(dense, model.top_items_.astype(np.int64), 1))
    others = rows.copy()
    np.put_along_axis(others, model.top_items_.astype(np.int64), np.inf, 1)
    assert (others.min(1) == np.where(np.isinf(others), -np.inf, others).max(1)).all()  # one value per row
    assert (others.min(1) < kept.min(1)).all()
    for stage in ("valid", "test"):
        assert_same(model.evaluate_users(split[stage], ks=REPORT_KS, metrics=REPORT_METRICS, keep_topk=True),
                    dense_metrics(dense, split, stage, REPORT_KS))


@pytest.mark.parametrize("keep_top, ks", [(20, REPORT_KS), (85, (1, 20, 50, 85)), (90, (1, 20, 60, 90)),
                                          (500, (10, 90))])
def test_ties_short_rows_and_deep_k_match_the_dense_table(split, base, dense, keep_top, ks):
    """Logits rounded to one decimal (many ties, also across the M-th item), M close to I (users
    with fewer than M non-training items: padded rows) and k past a user's non-training items
    (the top-k reaches the excluded items): all exactly as ranking the dense rows."""
    model = LFT(**LOCAL, keep_top=keep_top).prepare(split["train"], base_model=base)
    users = np.arange(split["train"].shape[0])
    for logits in (dense, np.round(dense, 1)):
        model.set_scores(users, logits)
        assert model.top_items_.shape[1] == min(keep_top, split["train"].shape[1])
        for stage in ("valid", "test"):
            assert_same(model.evaluate_users(split[stage], ks=ks, metrics=("precision", "recall", "ndcg", "mrr"),
                                             keep_topk=True),
                        dense_metrics(logits, split, stage, ks, metrics=("precision", "recall", "ndcg", "mrr")))


def test_a_k_beyond_keep_top_raises_and_keep_top_is_validated(split, base, dense):
    model = LFT(**LOCAL, keep_top=20).prepare(split["train"], base_model=base)
    model.set_scores(np.arange(split["train"].shape[0]), dense)
    with pytest.raises(ConfigError, match="k=50 exceeds keep_top=20"):
        model.evaluate_users(split["test"], ks=(10, 50))
    with pytest.raises(ConfigError, match="keep_top"):
        LFT(keep_top=0)
    with pytest.raises(ConfigError, match="keep_top=10 is below the largest of eval_ks"):
        LFT(keep_top=10)  # default eval_ks reach 20
    LFT(keep_top=5, eval_ks=(1, 5))  # fine
    # users not fine-tuned yet are refused, as with the dense table's NaN rows
    fresh = LFT(**LOCAL, keep_top=20).prepare(split["train"], base_model=base)
    fresh.set_scores(np.arange(10), dense[:10])
    fresh.score_users(np.arange(10))
    with pytest.raises(DataError, match="not been fine-tuned"):
        fresh.score_users(np.arange(12))


def test_save_load_round_trip_and_old_dense_files(tmp_path, split, base, dense):
    model = LFT(**LOCAL, keep_top=25).prepare(split["train"], base_model=base)
    users = np.arange(split["train"].shape[0])
    model.set_scores(users, dense)
    again = Model.load(model.save(tmp_path / "lft.pt"))
    np.testing.assert_array_equal(again.top_items_, model.top_items_)
    np.testing.assert_array_equal(again.top_scores_, model.top_scores_)
    torch.testing.assert_close(again.score_users(users), model.score_users(users), rtol=0, atol=0)
    assert_same(again.evaluate_users(split["test"], keep_topk=True), dense_metrics(dense, split, "test", REPORT_KS))
    # a file written with the old dense [U, I] `scores_` loads into the kept top-M
    old = LFT(**LOCAL, keep_top=25).prepare(split["train"], base_model=base)
    old.scores_ = dense.copy()
    converted = Model.load(old.save(tmp_path / "old.pt"))
    assert not hasattr(converted, "scores_")
    np.testing.assert_array_equal(converted.top_items_, model.top_items_)
    np.testing.assert_array_equal(converted.top_scores_, model.top_scores_)


def test_shards_merged_equal_one_process(tmp_path, split, base):
    """As the pipeline runs it: the prepared model saved, each shard from a loaded copy, its
    payload through torch.save / load (top-M only, no [shard users, I] block), merged. With
    group=1 a user's copy depends on the user alone, so any sharding gives the same rows."""
    cfg = dict(LOCAL, group=1, keep_top=30)
    one = LFT(**cfg).fit(split["train"], base_model=base)
    prepared = LFT(**cfg).prepare(split["train"], base_model=base)
    path = prepared.save(tmp_path / "prepared.pt")
    U = split["train"].shape[0]
    parts = []
    for j, units in enumerate(np.array_split(np.arange(U), 3)):
        payload = Model.load(path).fit_shard(None, units)
        assert set(payload) == {"top_items", "top_scores", "items", "history"}
        assert tuple(payload["top_items"].shape) == tuple(payload["top_scores"].shape) == (len(units), 30)
        torch.save(payload, tmp_path / f"shard{j}.pt")
        parts.append(torch.load(tmp_path / f"shard{j}.pt", weights_only=False))
    merged = Model.load(path)
    merged.merge_shards(parts[::-1])  # any order
    np.testing.assert_array_equal(merged.top_items_, one.top_items_)
    np.testing.assert_array_equal(merged.top_scores_, one.top_scores_)
    for stage in ("valid", "test"):
        assert_same(merged.evaluate_users(split[stage], keep_topk=True), one.evaluate_users(split[stage], keep_topk=True))
    # an old shard file (dense scores) still merges to the same rows
    legacy = Model.load(path)
    legacy.merge_shards([{"scores": torch.from_numpy(legacy.finetune_users(np.arange(U))), "items": np.arange(U),
                          "history": []}])
    np.testing.assert_array_equal(legacy.top_items_, one.top_items_)


def test_cost_has_no_users_times_items_host_term():
    shape = DataShape(20_000, 5_000, 600_000)
    a = LFT.epoch_cost(LFT.Config(), shape)
    assert a.terms["scores_bytes"] == 2 * 8 * 20_000 * 500
    wide = LFT.epoch_cost(LFT.Config(), DataShape(20_000, 10_000, 600_000))
    assert wide.terms["scores_bytes"] == a.terms["scores_bytes"]  # more items: same kept scores
    assert LFT.epoch_cost(LFT.Config(keep_top=100), shape).terms["scores_bytes"] == 2 * 8 * 20_000 * 100
    assert LFT.epoch_cost(LFT.Config(), DataShape(1_000, 300, 30_000)).terms["scores_bytes"] == 2 * 8 * 1_000 * 300
