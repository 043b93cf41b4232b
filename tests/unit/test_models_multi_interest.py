"""Multi-interest models (MIND, ComiRec-SA, REMI) and BaM's training pieces, on tiny synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.errors import ConfigError
from recsys.models.base import InterestModel
from recsys.models.multi_interest import MIND, REMI, ComiRecSA, ComiRecSAEncoder, MINDEncoder
from recsys.models.multi_interest.networks import max_interest_scores, squash
from recsys.models.multi_interest.objectives import (
    gather_interest,
    multi_interest_logits,
    routing_regularization,
    sampled_softmax_loss,
    select_interest,
)
from recsys.models.registry import build, get_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(seq_len=20, hidden=16, n_interests=4, n_negatives=64, batch_size=64, steps_per_epoch=100, epochs=3,
            patience=None, valid_users=0, progress="off", linear_size=8, seed=3)


@pytest.fixture(scope="module")
def split():
    from recsys.data import make_synthetic
    from recsys.protocols import leave_one_out

    df = make_synthetic(n_users=500, n_items=150, mean_items_per_user=25, seed=5).df
    return leave_one_out(df, k_core=0)


# ---- encoders -------------------------------------------------------------------------------------

def test_routing_and_attention_shapes_and_padding():
    torch.manual_seed(0)
    tokens = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 7]])
    emb = torch.randn(3, 5, 8)
    v, att = MINDEncoder(8, 4, seq_len=10, routing_iters=3)(emb, tokens)
    assert v.shape == (3, 4, 8) and att is None
    assert (v.norm(dim=-1) < 1).all()  # squashed capsules have length < 1
    enc = ComiRecSAEncoder(8, 4, seq_len=10)
    v, att = enc(emb, tokens)
    assert v.shape == (3, 4, 8) and att.shape == (3, 4, 5)
    assert torch.allclose(att.sum(-1), torch.ones(3, 4), atol=1e-6)
    assert (att[0, :, :2] == 0).all() and (att[2, :, :4] == 0).all()  # padding gets no attention
    assert torch.allclose(v[2], emb[2, 4].expand(4, 8), atol=1e-6)  # one item: every head is that item
    # padding content never matters, for either encoder
    emb2 = emb.clone()
    emb2[0, :2] = 100.0
    assert torch.allclose(enc(emb2, tokens)[0][0], v[0], atol=1e-5)
    mind = MINDEncoder(8, 4, seq_len=10)
    assert torch.allclose(mind(emb2, tokens)[0][0], mind(emb, tokens)[0][0], atol=1e-5)


def test_squash_keeps_direction_and_bounds_length():
    s = torch.tensor([[3.0, 4.0]])
    v = squash(s)
    assert torch.allclose(v, s / 5 * 25 / 26)


# ---- selection ------------------------------------------------------------------------------------

def test_hard_picks_the_argmax():
    corr = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, 2.9, 0.0, 0.0], [-5.0, -4.0, -6.0, -4.5]])
    idx, probs = select_interest(corr, "hard")
    assert idx.tolist() == [1, 0, 1] and probs is None


def test_p_with_large_tau_is_hard_and_with_zero_tau_is_uniform():
    torch.manual_seed(0)
    corr = torch.randn(2000, 4)
    gen = torch.Generator().manual_seed(1)
    idx, _ = select_interest(corr, "p", tau=1e6, generator=gen)
    assert torch.equal(idx, select_interest(corr, "hard")[0])
    # tau = 0: uniform whatever the scores (chi-square, 3 dof, p = 0.001 critical value 16.27)
    skewed = torch.tensor([[10.0, 0.0, -10.0, 5.0]]).repeat(8000, 1)
    idx, probs = select_interest(skewed, "p", tau=0.0, generator=gen)
    assert torch.allclose(probs, torch.full_like(probs, 0.25))
    counts = torch.bincount(idx, minlength=4).double()
    chi2 = float(((counts - 2000) ** 2 / 2000).sum())
    assert chi2 < 16.27, counts
    # tau = 1: the draws follow softmax(corr)
    row = torch.tensor([[1.0, 0.0, 0.0, -1.0]])
    idx, probs = select_interest(row.repeat(20000, 1), "p", tau=1.0, generator=gen)
    share = torch.bincount(idx, minlength=4).double() / 20000
    assert torch.allclose(share, torch.softmax(row[0], 0).double(), atol=0.015)


def test_straight_through_passes_gradient_only_when_asked():
    v = torch.randn(3, 4, 5, requires_grad=True)
    corr = torch.randn(3, 4, requires_grad=True)
    idx, probs = select_interest(corr, "p", tau=1.0, generator=torch.Generator().manual_seed(0))
    plain = gather_interest(v, idx, probs, straight_through=False)
    st = gather_interest(v, idx, probs, straight_through=True)
    assert torch.allclose(plain, st)
    st.sum().backward()
    assert corr.grad is not None and corr.grad.abs().sum() > 0


# ---- losses ---------------------------------------------------------------------------------------

def test_sampled_softmax_log_q_cancels_and_accidental_hits_are_removed():
    pos, neg = torch.tensor([2.0]), torch.tensor([[1.0, 0.5, 2.0]])
    loss = sampled_softmax_loss(pos, neg, n_items=10)
    expected = math.log(math.exp(2) + math.exp(1) + math.exp(0.5) + math.exp(2)) - 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the third negative is the positive item itself: removed
    loss = sampled_softmax_loss(pos, neg, n_items=10, neg_items=torch.tensor([4, 5, 7]), pos_items=torch.tensor([7]))
    assert loss.item() == pytest.approx(math.log(math.exp(2) + math.exp(1) + math.exp(0.5)) - 2, rel=1e-6)


def test_accidental_hits_kept_only_with_the_upstream_switch(split, monkeypatch):
    """Upstream's sampler keeps a negative equal to the positive; ours removes it. With every
    negative forced to be the row's positive, ours leaves only the positive (loss 0 before the
    multi-interest term), upstream's counts it N + 1 times (loss ln(N + 1))."""
    for upstream, expected in ((False, 0.0), (True, math.log(TINY["n_negatives"] + 1))):
        m = build("comirec", **{**TINY, "epochs": 1, "accidental_hits_upstream": upstream}).fit(split, validate=False)
        target = torch.full((8,), 5)
        tokens = torch.zeros((8, TINY["seq_len"]), dtype=torch.long)
        tokens[:, -3:] = torch.tensor([1, 2, 3])
        monkeypatch.setattr(torch, "randint", lambda n, size, device=None: torch.full(size, 5))
        loss, _ = m.batch_loss(tokens, target)
        monkeypatch.undo()
        assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_remi_hard_negative_weights():
    pos, neg = torch.tensor([0.5]), torch.tensor([[1.0, -1.0]])
    assert sampled_softmax_loss(pos, neg, n_items=5, beta=0.0).item() == pytest.approx(
        sampled_softmax_loss(pos, neg, n_items=5).item())
    beta = 2.0
    w = 2 * torch.softmax(beta * neg[0], 0)  # N * softmax(beta * s)
    expected = math.log(math.exp(0.5) + float((w * neg[0].exp()).sum())) - 0.5
    assert sampled_softmax_loss(pos, neg, n_items=5, beta=beta).item() == pytest.approx(expected, rel=1e-6)


def test_multi_interest_loss_by_hand():
    # K = 2 interests, d = 2, one negative item
    v = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    e_pos = torch.tensor([[1.0, 1.0]])  # <v1, e+> = 1, <v2, e+> = 2
    e_neg = torch.tensor([[2.0, -1.0]])  # <v1, e-> = 2, <v2, e-> = -2
    pos, neg = multi_interest_logits(v, e_pos, e_neg)
    s_pos, s_neg = math.log(math.e + math.e ** 2), math.log(math.e ** 2 + math.e ** -2)
    assert pos.item() == pytest.approx(s_pos) and neg.item() == pytest.approx(s_neg)
    loss = sampled_softmax_loss(pos, neg, n_items=3)
    assert loss.item() == pytest.approx(math.log(math.exp(s_pos) + math.exp(s_neg)) - s_pos, rel=1e-6)


def test_routing_regularization_penalises_collapsed_attention():
    tokens = torch.tensor([[0, 1, 2, 3, 4]])
    uniform = torch.tensor([[[0.0, 0.25, 0.25, 0.25, 0.25]]])
    collapsed = torch.tensor([[[0.0, 1.0, 0.0, 0.0, 0.0]]])
    assert routing_regularization(uniform, tokens, hidden=4).item() == pytest.approx(0.0, abs=1e-12)
    # centred over the 4 valid positions: (0.75² + 3 · 0.25²) / d = 0.75 / 4, squared
    assert routing_regularization(collapsed, tokens, hidden=4).item() == pytest.approx((0.75 / 4) ** 2)


# ---- scoring and masking --------------------------------------------------------------------------

def test_max_over_interests_scoring_on_hand_made_vectors():
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two orthogonal interests
    table = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, -1.0]])
    assert max_interest_scores(v, table).tolist() == [[2.0, 3.0, 1.0, -1.0]]


def _hand_split():
    """Two users over items 0..5: u0 = [3, 0, 1, 2, 5] (test 5 given [3, 0, 1, 2]), u1 = [4, 1, 0, 2]."""
    import pandas as pd

    from recsys.protocols import leave_one_out

    rows = [(0, i, t) for t, i in enumerate([3, 0, 1, 2, 5])] + [(1, i, t) for t, i in enumerate([4, 1, 0, 2])]
    return leave_one_out(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), k_core=0)


def _hand_model(split, monkeypatch, **cfg):
    """A ComiRec whose vectors are set by hand: through interests 0, 2, 3 item i scores -i (item 3:
    -100); through interest 1 item 3 scores +5, every other item -1000."""
    m = build("comirec", **{**TINY, "epochs": 0, **cfg}).fit(split, validate=False)
    table = torch.zeros(split.n_items, TINY["hidden"])
    table[:, 0] = -torch.arange(split.n_items, dtype=torch.float32)
    table[:, 1] = -1000.0
    table[3, 0], table[3, 1] = -100.0, 5.0
    with torch.no_grad():
        m.net_.emb.weight[1:] = table
    v = torch.zeros(1, 4, TINY["hidden"])
    v[0, [0, 2, 3], 0] = 1.0  # interests 0, 2 and 3 alike
    v[0, 1, 1] = 1.0
    monkeypatch.setattr(m, "_interest_rows", lambda seqs, rows, stop: v.expand(len(rows), -1, -1).clone())
    return m


def test_history_is_masked_to_minus_inf_or_zeroed_upstream(monkeypatch):
    split = _hand_split()
    m = _hand_model(split, monkeypatch)
    seqs = [np.array([3, 0, 1]), np.array([5, 4])]
    scores = m.score(seqs)
    assert scores[0].tolist() == [0.0, -1.0, -2.0, 5.0, -4.0, -5.0]  # max over the two interests
    assert m.recommend(seqs, k=3).tolist() == [[2, 4, 5], [3, 0, 1]]  # never a history item
    # u0: masked, 4 (-4) then the target 5 (-5): rank 2; zeroed, history items 3, 0, 1, 2 score 0 first: rank 6
    # u1: masked, 3 (+5) then the target 2 (-2): rank 2; zeroed, 3 then history 0, 1, 4 (0) first: rank 5
    masked = m.evaluate(split, "test", ks=(1, 2, 6), metrics=("recall", "ndcg")).per_user
    assert masked["recall@1"].tolist() == [0, 0] and masked["recall@2"].tolist() == [1, 1]
    assert masked["ndcg@2"] == pytest.approx([1 / math.log2(3)] * 2)
    zero = m.evaluate(split, "test", ks=(2, 6), metrics=("recall",), history_zero=True).per_user
    assert zero["recall@2"].tolist() == [0, 0] and zero["recall@6"].tolist() == [1, 1]
    # the config switch is the default of evaluate
    up = _hand_model(split, monkeypatch, history_zero_upstream=True)
    assert up.evaluate(split, "test", ks=(2,), metrics=("recall",)).per_user["recall@2"].tolist() == [0, 0]


# ---- training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,selection", [("mind", "p"), ("comirec", "l"), ("remi", "hard")])
def test_each_backbone_beats_most_popular(split, name, selection):
    from recsys.models.baselines import MostPopular

    pop = MostPopular().fit_split(split).evaluate_split(split, "test", ks=(10,), metrics=("recall",)).mean()
    m = build(name, **{**TINY, "selection": selection, "multi_loss": selection != "hard", "lr": 5e-3, "epochs": 6,
                       "patience": 3, "valid_users": 200})
    m.fit(split)
    assert isinstance(m, InterestModel)
    got = m.evaluate(split, "test", ks=(10,)).mean()
    assert got["recall@10"] > 2 * pop["recall@10"], (got, pop)
    assert m.interests(split, stage="test", users=np.arange(5)).shape == (5, 4, TINY["hidden"])
    h = m.history_[-1]
    assert sum(h["train_interest_share"]) == pytest.approx(1.0) and "valid_recall@10" in h


def test_bam_l_projections_stay_random_unless_straight_through(split):
    m = build("comirec", **{**TINY, "selection": "l", "epochs": 1}).fit(split, validate=False)
    assert m.net_.proj_interest.bias.abs().sum() == 0 and m.net_.proj_item.bias.abs().sum() == 0
    st = build("comirec", **{**TINY, "selection": "l", "epochs": 1, "straight_through": True}).fit(split, validate=False)
    assert st.net_.proj_interest.bias.abs().sum() > 0


def test_fit_is_deterministic_and_save_load_round_trips(split, tmp_path):
    cfg = {**TINY, "selection": "p", "epochs": 1, "multi_loss": True}
    a = build("remi", **cfg).fit(split)
    b = build("remi", **cfg).fit(split)
    assert a.history_[0]["loss"] == b.history_[0]["loss"]
    path = a.save(tmp_path / "remi.pt")
    c = REMI.load(path)
    assert torch.allclose(a.score(split, stage="test"), c.score(split, stage="test"))
    mind = build("mind", **cfg).fit(split, validate=False)
    d = MIND.load(mind.save(tmp_path / "mind.pt"))
    assert torch.allclose(mind.score(split, stage="test"), d.score(split, stage="test"))
    assert torch.equal(mind.net_.encoder.routing_init, d.net_.encoder.routing_init)


def test_a_stopped_run_resumes_to_the_result_of_an_uninterrupted_one(split, tmp_path):
    cfg = {**TINY, "selection": "p", "multi_loss": True, "epochs": 3, "valid_users": 100, "valid_resample": True}
    full = build("remi", **cfg).fit(split)
    first = build("remi", **{**cfg, "max_seconds": 1e-6}).checkpoints(tmp_path / "ck").fit(split)
    assert first.stop_reason_ == "max_seconds" and len(first.history_) == 1
    resumed = build("remi", **cfg).checkpoints(tmp_path / "ck").fit(split)
    keys = ("loss", "valid_recall@10", "train_interest_share")
    assert [[h[k] for k in keys] for h in resumed.history_] == [[h[k] for k in keys] for h in full.history_]
    assert resumed.steps_ == full.steps_ == 300
    assert torch.equal(resumed.score(split, stage="test"), full.score(split, stage="test"))


def test_validation_users_fixed_or_redrawn_upstream(split):
    from recsys.models.sequential.sequences import EvalSet, as_sequences

    seqs = as_sequences(split)
    ev = EvalSet.build(seqs, *seqs.stage("valid"))
    m = build("comirec", **{**TINY, "valid_users": 100})
    rng = np.random.default_rng(0)
    fixed = m._valid_users(ev, np.random.default_rng(1), replace=False)
    assert len(fixed) == 100 and len(set(fixed)) == 100
    a, b = m._valid_users(ev, rng, replace=True), m._valid_users(ev, rng, replace=True)
    assert len(a) == 100 and not np.array_equal(a, b)


def test_interest_balance_reports_shares_and_entropies(split):
    m = build("remi", **{**TINY, "selection": "p", "epochs": 1, "multi_loss": True}).fit(split, validate=False)
    bal = m.interest_balance(split, "test", k=20)
    for key in ("selected", "best", "hit_share@20"):
        assert len(bal[key]) == 4 and sum(bal[key]) == pytest.approx(1.0)
    assert 0 <= bal["entropy_selected"] <= bal["max_entropy"] + 1e-9
    hits = m.evaluate(split, "test", ks=(20,), metrics=("recall",)).per_user["recall@20"].sum()
    assert bal["n_hits"] == int(hits)
    hard = build("remi", **{**TINY, "selection": "hard", "epochs": 1}).fit(split, validate=False)
    hb = hard.interest_balance(split)
    assert hb["selected"] == hb["best"]  # hard selection is the best-scoring interest


# ---- options --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,message", [
    ({"multi_loss": "False"}, "multi_loss must be True or False, got 'False'"),
    ({"selection": "soft"}, "selection must be one of ('hard', 'p', 'l'), got 'soft'"),
    ({"tau": -1.0}, "tau must be a finite number in [0.0, inf), got -1.0"),
    ({"selection": "l", "linear_size": 0}, "selection='l' (BaM_l) needs linear_size >= 1"),
    ({"history_zero_upstream": 1}, "history_zero_upstream must be True or False"),
    ({"accidental_hits_upstream": "yes"}, "accidental_hits_upstream must be True or False"),
    ({"monitor": "ndcg@50"}, "monitor must be"),
    ({"n_interest": 4}, "unknown remi config key 'n_interest'. Did you mean 'n_interests'?"),
])
def test_bad_options_stop_with_one_clear_error(bad, message):
    with pytest.raises(ConfigError) as err:
        build("remi", **bad)
    assert message in str(err.value)


def test_registry_and_defaults():
    assert get_model("mind") is MIND and get_model("comirec") is ComiRecSA and get_model("remi") is REMI
    r, c = REMI(), ComiRecSA()
    assert (r.config.beta, r.config.rr_lambda) == (0.01, 100.0) and (c.config.beta, c.config.rr_lambda) == (0, 0)
    assert (r.config.n_interests, r.config.hidden, r.config.n_negatives, r.config.batch_size) == (4, 64, 1280, 128)
    assert r.config.patience == 15 and r.config.steps_per_epoch == 1000 and r.config.monitor == "recall@10"


def test_positions_count_from_the_newest_item_or_from_the_oldest_upstream(split):
    from recsys.models.multi_interest.networks import positions_from_left, positions_from_right

    tokens = torch.tensor([[0, 0, 7, 8, 9], [1, 2, 3, 4, 5]])
    assert positions_from_left(tokens).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert positions_from_right(5, 10, torch.device("cpu")).tolist() == [5, 6, 7, 8, 9]
    enc = ComiRecSAEncoder(4, 2, 10, positions_from_oldest=True)
    with torch.no_grad():
        enc.pos.weight.copy_(torch.arange(40.0).view(10, 4))
    emb = torch.zeros(2, 5, 4)
    # the same two-item history gets the same logits as its left-aligned twin (upstream's layout)
    short = torch.tensor([[0, 0, 0, 7, 8]])
    logits = enc.attention_logits(emb[:1], short)
    expected = enc.w2(torch.tanh(enc.w1(enc.pos.weight[:2])))  # positions 0, 1
    torch.testing.assert_close(logits[0, :, 3:], expected.t())
    m = build("remi", **{**TINY, "positions_upstream": True, "epochs": 1})
    assert m.fit(split, validate=False).net_.encoder.positions_from_oldest
