"""BERT4Rec: sequence utilities, masking, learning a sequential signal, determinism, persistence."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recsys.errors import ConfigError, DataError
from recsys.models import registry
from recsys.models.base import NotFittedError
from recsys.models.baselines import MostPopular
from recsys.models.sequential import BERT4Rec, BERT4RecConfig, BERT4RecNetwork
from recsys.models.sequential.sequences import (
    PAD,
    history_matrix,
    length_batches,
    mask_positions,
    random_window,
    to_indptr,
    window_tokens,
)
from recsys.protocols import leave_one_out

N_ITEMS = 60
# small and fast: no dropout, a high learning rate, short sequences
FAST = dict(max_len=16, hidden=32, n_heads=2, dropout=0.0, attn_dropout=0.0, mask_prob=0.3,
            lr=5e-3, batch_size=32, epochs=30, patience=10, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def markov_df(n_users: int = 300, n_items: int = N_ITEMS, p_next: float = 0.8, seed: int = 0) -> pd.DataFrame:
    """Each step goes to item (current + 1) mod I with probability p_next, else to a random item."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 26, n_users)
    cur = rng.integers(n_items, size=n_users)
    steps = []
    for _ in range(lengths.max()):
        steps.append(cur.copy())
        jump = rng.random(n_users) >= p_next
        cur = np.where(jump, rng.integers(n_items, size=n_users), (cur + 1) % n_items)
    items = np.stack(steps, 1)
    keep = np.arange(items.shape[1])[None, :] < lengths[:, None]
    users, t = np.nonzero(keep)
    return pd.DataFrame({"user": users, "item": items[users, t], "rating": 1.0, "timestamp": t.astype(float)})


@pytest.fixture(scope="module")
def split():
    return leave_one_out(markov_df(), k_core=0)


@pytest.fixture(scope="module")
def fitted(split):
    return BERT4Rec(BERT4RecConfig(**FAST)).fit(split)


def sequences_of(split) -> list[np.ndarray]:
    ptr, items = split.arrays["seq_indptr"], split.arrays["seq_items"]
    return [items[ptr[u] : ptr[u + 1]] for u in range(len(ptr) - 1)]


# ---- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(hidden=63, n_heads=2), "hidden"),
        (dict(max_len=1), "max_len"),
        (dict(mask_prob=0.0), "mask_prob"),
        (dict(mask_prob=1.0), "mask_prob"),
        (dict(dropout=1.0), "dropout"),
        (dict(window="middle"), "window"),
        (dict(monitor="ndcg@20"), "monitor"),
        (dict(batch_size=0), "batch_size"),
        (dict(warmup_steps=-1), "warmup_steps"),
    ],
)
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        BERT4RecConfig(**bad)
    with pytest.raises(ConfigError, match=field):
        BERT4Rec(**bad)


def test_paper_defaults():
    cfg = BERT4RecConfig()
    assert (cfg.max_len, cfg.hidden, cfg.n_blocks, cfg.n_heads, cfg.dropout, cfg.mask_prob) == (200, 64, 2, 2, 0.1, 0.2)
    assert cfg.batch_size == 256 and cfg.eval_ks == (10,) and cfg.monitor == "ndcg@10"


# ---- sequence utilities --------------------------------------------------------------------


def test_window_tokens_match_a_python_loop():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 50, n) for n in rng.integers(0, 30, 40)]
    indptr, items = to_indptr(seqs)
    users = rng.permutation(len(seqs))[:25]
    lengths = np.diff(indptr)[users]
    start, stop = random_window(lengths, 8, rng)
    got = window_tokens(indptr, items, users, start, stop)
    assert got.shape == (25, min(8, int(lengths.max())))
    for row, u, a, b in zip(got, users, start, stop):
        expect = seqs[u][a:b] + 1
        assert b - a == min(len(seqs[u]), 8)
        assert (row[len(row) - len(expect) :] == expect).all() and (row[: len(row) - len(expect)] == PAD).all()
    with pytest.raises(DataError):
        window_tokens(indptr, items, users[:1], [0], [int(lengths[0]) + 1])


def test_mask_positions_never_pad_and_at_least_one_per_row():
    rng = np.random.default_rng(0)
    tokens = np.zeros((500, 20), dtype=np.int64)
    n = rng.integers(1, 21, 500)
    tokens[np.arange(20)[None, :] >= 20 - n[:, None]] = 7
    masked = mask_positions(tokens, 0.2, rng)
    assert not (masked & (tokens == PAD)).any()
    assert masked.any(1).all()
    assert abs(masked.sum() / (tokens != PAD).sum() - 0.2) < 0.05  # ~mask_prob, plus the forced ones
    last = mask_positions(tokens, 0.2, rng, last_only_prob=1.0)
    assert (last.sum(1) == 1).all() and last[:, -1].all()


def test_length_batches_cover_every_row_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, 1000)
    batches = length_batches(lengths, 64, rng, pool=4)
    assert all(len(b) <= 64 for b in batches)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    # sorted inside pools: far less padding than random batches
    waste = sum(lengths[b].max() * len(b) for b in batches)
    plain = sum(lengths[b].max() * len(b) for b in length_batches(lengths, 64, rng, pool=1))
    assert waste < 0.8 * plain


def test_history_matrix():
    indptr, items = to_indptr([np.array([3, 1, 3, 2]), np.array([0, 4])])
    m = history_matrix(indptr, items, np.array([1, 0]), np.array([1, 3]), 5)
    assert m.toarray().tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 1, 0]]


def test_padding_changes_nothing():
    """PAD keys are masked and positions count from the right: left padding leaves every real
    position's hidden state unchanged, so padding cannot leak into the loss or the scores."""
    torch.manual_seed(0)
    net = BERT4RecNetwork(N_ITEMS, BERT4RecConfig(max_len=12, hidden=16)).eval()
    tokens = torch.randint(1, N_ITEMS + 2, (4, 5))
    padded = torch.cat([torch.zeros(4, 7, dtype=torch.long), tokens], 1)
    with torch.no_grad():
        assert torch.allclose(net.encode(tokens), net.encode(padded)[:, 7:], atol=1e-5)


def test_output_head_scores_real_items_only():
    net = BERT4RecNetwork(N_ITEMS, BERT4RecConfig(max_len=12, hidden=16))
    assert net.tok.num_embeddings == N_ITEMS + 2 and net.mask_token == N_ITEMS + 1
    assert net.logits(torch.zeros(3, 16)).shape == (3, N_ITEMS)


# ---- model ---------------------------------------------------------------------------------


def test_beats_most_popular_by_a_margin_chance_cannot_explain(split, fitted):
    ours = fitted.evaluate(split, "test", ks=(10,)).mean()
    train_valid = (split["train"] + split["valid"]).tocsr()
    pop = MostPopular(device="cpu").fit(train_valid).evaluate(
        train_valid, split["test"], ks=(10,), metrics=("hit", "ndcg"), recall_denominator="n"
    ).mean()
    n = split.n_users
    se = math.sqrt(0.25 / n)  # largest standard error of a hit rate over n users
    assert ours["hit@10"] > pop["hit@10"] + 8 * se, (ours, pop)
    assert ours["ndcg@10"] > pop["ndcg@10"] + 8 * se, (ours, pop)
    assert ours["hit@10"] > 0.5


def test_history_and_early_stopping_record(fitted):
    h = fitted.history_
    assert 1 <= len(h) <= FAST["epochs"] and 1 <= fitted.best_epoch_ <= len(h)
    assert {"loss", "train_seconds", "valid_hit@10", "valid_ndcg@10"} <= set(h[0])
    assert h[-1]["loss"] < h[0]["loss"]
    best = max(r["valid_ndcg@10"] for r in h)
    assert h[fitted.best_epoch_ - 1]["valid_ndcg@10"] == best


def test_recommend_never_returns_history_or_special_tokens(split, fitted):
    top = fitted.recommend(split, k=10, stage="test")
    seqs = sequences_of(split)
    assert top.shape == (split.n_users, 10) and top.min() >= 0 and top.max() < split.n_items
    for u, row in enumerate(top):
        assert not set(row) & set(seqs[u][:-1])
    scores = fitted.score(split, stage="valid", users=np.array([0, 5]))
    assert scores.shape == (2, split.n_items)
    # a list of histories scores exactly like the split rows with the same histories
    again = fitted.score([seqs[0][:-2], seqs[5][:-2]])
    assert torch.allclose(scores, again)


def test_deterministic_with_a_fixed_seed(split):
    cfg = BERT4RecConfig(**{**FAST, "epochs": 2})
    a, b = BERT4Rec(cfg).fit(split), BERT4Rec(cfg).fit(split)
    assert [r["loss"] for r in a.history_] == [r["loss"] for r in b.history_]
    assert torch.equal(a.score(split, stage="test"), b.score(split, stage="test"))
    c = BERT4Rec(cfg, seed=1).fit(split)
    assert not torch.equal(a.score(split, stage="test"), c.score(split, stage="test"))


def test_save_load_round_trip(split, fitted, tmp_path):
    assert registry.get_model("bert4rec") is BERT4Rec
    path = fitted.save(tmp_path / "bert4rec.pt")
    loaded = BERT4Rec.load(path)
    assert loaded.config == fitted.config and loaded.history_ == fitted.history_
    assert loaded.best_epoch_ == fitted.best_epoch_
    assert torch.equal(loaded.score(split, stage="test"), fitted.score(split, stage="test"))
    emb = loaded.item_embeddings()
    assert emb.shape == (split.n_items, FAST["hidden"]) and emb.dtype == np.float32
    assert np.array_equal(emb, fitted.item_embeddings())


def test_fit_on_sequence_lists_with_optional_validation(split):
    seqs = sequences_of(split)
    train, hist, target = seqs[:200], [s[:-1] for s in seqs[200:]], np.array([s[-1] for s in seqs[200:]])
    cfg = BERT4RecConfig(**{**FAST, "epochs": 3})
    plain = BERT4Rec(cfg).fit(train, n_items=split.n_items)
    assert len(plain.history_) == 3 and "valid_ndcg@10" not in plain.history_[0]
    val = BERT4Rec(cfg).fit(train, valid=(hist, target), n_items=split.n_items)
    assert "valid_ndcg@10" in val.history_[-1]
    assert val.item_embeddings().shape == (split.n_items, FAST["hidden"])


def test_wrong_inputs_raise(split, fitted):
    with pytest.raises(NotFittedError):
        BERT4Rec(**FAST).score([np.array([1, 2])])
    with pytest.raises(DataError, match="sequences"):
        fitted.score(sp.csr_matrix((2, split.n_items)))
    with pytest.raises(ConfigError, match="stage"):
        fitted.score(split)
    with pytest.raises(DataError, match="item ids"):
        fitted.score([np.array([split.n_items])])
    with pytest.raises(ConfigError, match="valid"):
        fitted.fit(split, valid=([np.array([1])], np.array([2])))
