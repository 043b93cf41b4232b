"""The tail-promotion trainer (POSIT, EASE-SGD, IPW, CVaR): hand-made cases for its pieces, the
adversary's direction on a constructed case, learning on held-out synthetic users, the upstream
switches and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.data.synthetic import make_synthetic
from recsys.errors import ConfigError
from recsys.models.baselines import MostPopular
from recsys.models.registry import build
from recsys.models.tail import Adversary, TailConfig, TailLearner, ipw_weights, topk_hits
from recsys.models.tail.learner import mean_one
from recsys.protocols import strong_generalization
from recsys.training.batches import SparseRows

pytestmark = pytest.mark.usefixtures("one_thread")

# synthetic data: 200 items, batch 128 -> the per-item mean loss needs a smaller lr than ML-1M's 0.05
FAST = dict(lr=0.01, weight_decay=0.01, epochs=12, batch_size=128, eval_k=20, adv_k=20, patience=None, device="cpu")


@pytest.fixture(scope="module")
def split():
    return strong_generalization(make_synthetic(n_users=1000, n_items=200, seed=0).df, n_heldout_users=200, seed=1)


def _valid(split):
    return split["valid_fold_in"], split["valid_holdout"]


def _test_ndcg(model, split) -> float:
    return model.evaluate(split["test_fold_in"], split["test_holdout"], recall_denominator="min", ks=(20,),
                          metrics=("ndcg",)).mean()["ndcg@20"]


# ---- pieces, by hand --------------------------------------------------------------------------


def test_topk_hits_counts_each_users_hits_in_its_top_k():
    pred = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.9, 0.8]])
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    # top-2: user 0 -> {0, 1}, hit item 0; user 1 -> {2, 3}, hits items 2 and 3
    assert topk_hits(pred, x, 2, dist=False).tolist() == [1.0, 0.0, 1.0, 1.0]
    # recall_dist divides each hit by min(k, |x_u|): user 0 by min(2, 2) = 2, user 1 by min(2, 3) = 2
    assert topk_hits(pred, x, 2, dist=True).tolist() == [0.5, 0.0, 0.5, 0.5]
    # a user with a single item divides by 1
    assert topk_hits(pred[:1], torch.tensor([[1.0, 0.0, 0.0, 0.0]]), 2, dist=True).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_ipw_weights_are_exp_minus_alpha_count_with_mean_one_and_do_not_underflow():
    w = ipw_weights(np.array([0, 1, 2]), alpha=np.log(2))
    expected = np.array([1.0, 0.5, 0.25]) / np.mean([1.0, 0.5, 0.25])
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    # counts in the tens of thousands would make exp(-alpha * count) all zero without the shift
    big = ipw_weights(np.array([50_000, 50_001, 60_000]), alpha=1.0)
    assert torch.isfinite(big).all() and abs(float(big.mean()) - 1.0) < 1e-6 and big[0] > big[1] > big[2]


def test_mean_one_normalises_with_a_detached_mean():
    w = torch.tensor([1.0, 3.0], requires_grad=True)
    out = mean_one(w)
    assert out.tolist() == [0.5, 1.5]
    out[0].backward()
    assert w.grad.tolist() == [0.5, 0.0]  # the mean is a constant to autograd (upstream)


@pytest.mark.parametrize("structure", ["linear", "2mlp2", "2bmlp2", "2mlp8"])
def test_adversary_moves_weight_to_the_low_advantage_group_of_similar_items(structure):
    # two groups of items with disjoint audiences: items 0-19 are watched by users 0-149, items
    # 20-39 by users 150-299. Group A has low advantage (few hits), group B high: the adversary,
    # which only sees each item's column of users, must move weight to group A.
    rng = np.random.default_rng(0)
    x = np.zeros((300, 40), dtype=np.float32)
    x[:150, :20] = rng.random((150, 20)) < 0.3
    x[150:, 20:] = rng.random((150, 20)) < 0.3
    columns = SparseRows.from_csr(sp.csr_matrix(x).T.tocsr(), "cpu")
    advantage_loss = torch.cat([torch.full((20,), -0.05), torch.full((20,), -0.6)])  # = -hit rate
    torch.manual_seed(0)
    adversary = Adversary(300, structure, nstd=1.5)
    adversary.train()
    opt = torch.optim.SGD(adversary.parameters(), lr=0.05)
    learner = TailLearner(device="cpu")
    first = None
    for _ in range(60):
        opt.zero_grad()
        raw = adversary(columns)
        loss = learner._adversary_loss(raw, advantage_loss)
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    w = mean_one(adversary(columns).detach())
    assert float(loss.detach()) < first
    assert w[:20].mean() > 2 * w[20:].mean(), (structure, w[:20].mean(), w[20:].mean())
    # the group moves, not a few of its items
    assert (w[:20] > w[20:].median()).float().mean() >= 0.8, (structure, w)


def test_adversary_rejects_an_unknown_structure():
    with pytest.raises(ConfigError, match="3mlp2"):
        Adversary(10, "3mlp2", 1.0)
    with pytest.raises(ConfigError, match="ast"):
        TailConfig(ast="mlp")


# ---- learning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ease", "ipw", "cvar", "posit"])
def test_each_method_beats_most_popular_on_held_out_users(split, method):
    extra = {"ipw_alpha": 0.01} if method == "ipw" else {}
    model = TailLearner(method=method, **FAST, **extra).fit(split["train"], _valid(split))
    pop = _test_ndcg(MostPopular(device="cpu").fit(split["train"]), split)
    ours = _test_ndcg(model, split)
    assert ours > 1.2 * pop, (method, ours, pop)
    assert torch.count_nonzero(model.U_.diagonal()) == 0
    assert abs(float(model.item_weight_.mean()) - 1.0) < 1e-5


def test_posit_item_weights_favour_items_the_learner_serves_badly(split):
    model = TailLearner(method="posit", **FAST).fit(split["train"], _valid(split))
    train = split["train"]
    hits = topk_hits(model.score(train), torch.from_numpy(train.toarray()), 20, dist=False).numpy()
    counts = np.asarray(train.sum(0)).ravel()
    rate = hits / np.maximum(counts, 1)  # each item's share of its training users with it in their top-20
    w = model.item_weight_.numpy()
    assert np.corrcoef(w, rate)[0, 1] < -0.2, np.corrcoef(w, rate)[0, 1]


def test_posit_spreads_recommendations_more_than_ease(split):
    from recsys.metrics.coverage import coverage_at_k

    def coverage(model):
        r = model.evaluate(split["test_fold_in"], split["test_holdout"], recall_denominator="min", ks=(20,),
                           metrics=("ndcg",), keep_topk=True)
        return coverage_at_k(r.topk, 10, 100)

    ease = TailLearner(method="ease", **FAST).fit(split["train"], _valid(split))
    posit = TailLearner(method="posit", **FAST).fit(split["train"], _valid(split))
    assert coverage(posit) > coverage(ease)


def test_training_is_reproducible_for_a_seed(split):
    a = TailLearner(method="posit", **{**FAST, "epochs": 2}).fit(split["train"])
    b = TailLearner(method="posit", **{**FAST, "epochs": 2}).fit(split["train"])
    assert torch.equal(a.U_, b.U_) and torch.equal(a.item_weight_, b.item_weight_)


# ---- upstream switches ---------------------------------------------------------------------------------


def test_best_checkpoint_is_a_copy_unless_the_upstream_aliasing_switch_is_on(split):
    # on this small data the learner overfits after a few epochs: the best epoch is not the last one
    cfg = {**FAST, "method": "ease"}
    fixed = TailLearner(**cfg).fit(split["train"], _valid(split))
    buggy = TailLearner(**cfg, upstream_best_is_last=True).fit(split["train"], _valid(split))
    assert fixed.best_epoch_ < len(fixed.history_)
    assert buggy.best_epoch_ == len(buggy.history_)
    val = lambda m: m.evaluate(*_valid(split), recall_denominator="min", ks=(20,), metrics=("ndcg",)).mean()["ndcg@20"]
    assert val(fixed) == pytest.approx(fixed.history_[fixed.best_epoch_ - 1]["ndcg@20"], abs=1e-6)
    assert val(buggy) == pytest.approx(buggy.history_[-1]["ndcg@20"], abs=1e-6)
    assert val(fixed) > val(buggy)


def test_upstream_lr_override_replaces_the_learning_rate(split):
    model = TailLearner(**{**FAST, "epochs": 1, "lr": 0.5}, upstream_lr_override=0.003).fit(split["train"])
    assert model.history_[0]["lr"] == 0.003
    assert TailConfig(lr=0.5).effective_lr == 0.5


# ---- errors and persistence --------------------------------------------------------------------------------


def test_divergence_stops_with_a_clear_error(split):
    with pytest.raises(ConfigError, match="diverged.*lower lr"):
        TailLearner(**{**FAST, "lr": 50.0, "epochs": 3}).fit(split["train"])


@pytest.mark.parametrize("bad, match", [({"method": "ppo"}, "method"), ({"loss": "xent"}, "loss"),
                                        ({"lr": 0.0}, "lr"), ({"aloss": "ndcg"}, "aloss"),
                                        ({"cvar_beta": 0.0}, "cvar_beta"), ({"upstream_lr_override": -1.0}, "override")])
def test_bad_settings_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        TailLearner(**bad)


def test_patience_without_validation_data_is_refused(split):
    with pytest.raises(ConfigError, match="validation"):
        TailLearner(**{**FAST, "patience": 3}).fit(split["train"])


def test_save_and_load_round_trip(split, tmp_path):
    model = TailLearner(method="ipw", **{**FAST, "epochs": 2}, ipw_alpha=0.01).fit(split["train"])
    loaded = build("tail_learner").load(model.save(tmp_path / "m.pt"))
    rows = split["test_fold_in"][:5]
    assert torch.equal(model.score(rows), loaded.score(rows))


@pytest.mark.parametrize("method", ["ease", "ipw", "cvar", "posit"])
@pytest.mark.parametrize("loss", ["l2", "bce"])
def test_fused_in_place_sgd_equals_autograd_sgd_to_float_tolerance(method, loss):
    x = sp.random(400, 90, density=0.06, format="csr", random_state=0, dtype=np.float32)
    x.data[:] = 1.0
    cfg = dict(method=method, loss=loss, epochs=3, batch_size=64, lr=0.05, patience=None, device="cpu",
               progress="off")
    a = TailLearner(fused_sgd=False, **cfg).fit(x)
    b = TailLearner(fused_sgd=True, **cfg).fit(x)
    # posit's adversary reads top-k hits: a float-level difference may flip a tie, so it is looser
    tol = 1e-3 if (method, loss) == ("posit", "bce") else 1e-6
    assert (a.U_ - b.U_).abs().max() <= tol * a.U_.abs().max()


def test_early_stopping_updates_its_best_state_in_place():
    from recsys.training.early_stopping import EarlyStopping

    w = torch.zeros(3)
    stopper = EarlyStopping(patience=None)
    stopper.update(0.1, {"w": w}, 1)
    kept = stopper.best_state["w"]
    w.fill_(2.0)
    stopper.update(0.2, {"w": w}, 2)
    assert stopper.best_state["w"] is kept and kept.tolist() == [2.0, 2.0, 2.0]
    w.fill_(3.0)
    assert kept.tolist() == [2.0, 2.0, 2.0]  # a copy, not the live tensor


# ---- best weights on disk (large item counts) -------------------------------------------------------


def test_best_weights_on_disk_restore_the_same_model_as_in_memory(split, tmp_path):
    cfg = {**FAST, "method": "posit", "patience": 4}
    memory = TailLearner(**cfg, best_weights="memory").fit(split["train"], _valid(split))
    assert memory.best_epoch_ < len(memory.history_)  # the restore matters here
    disk = TailLearner(**cfg, best_weights="disk").fit(split["train"], _valid(split))
    assert disk.best_epoch_ == memory.best_epoch_
    assert torch.equal(disk.U_, memory.U_) and torch.equal(disk.item_weight_, memory.item_weight_)
    # with checkpoints: the file sits in the model's folder, the two newest kept; a cut run resumes
    cut = TailLearner(**cfg, best_weights="disk", max_seconds=1e-9).checkpoints(tmp_path)
    cut.fit(split["train"], _valid(split))
    assert [p.name for p in (tmp_path / "best").glob("best-e*.bin")] == ["best-e000001.bin"]
    resumed = TailLearner(**cfg, best_weights="disk").checkpoints(tmp_path).fit(split["train"], _valid(split))
    assert torch.equal(resumed.U_, memory.U_)
    assert len(list((tmp_path / "best").glob("best-e*.bin"))) <= 2


def test_a_corrupt_best_weights_file_is_detected_by_its_checksum(split, tmp_path):
    from recsys.errors import DataError
    from recsys.training.early_stopping import SpilledEarlyStopping

    stopper = SpilledEarlyStopping(patience=2, folder=tmp_path)
    live = {"U": torch.arange(12.0).reshape(3, 4), "w": torch.ones(3)}
    stopper.update(0.5, live, epoch=1)
    live["U"].zero_()
    stopper.restore_into(live)
    assert torch.equal(live["U"], torch.arange(12.0).reshape(3, 4))
    path = tmp_path / "best-e000001.bin"
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        stopper.restore_into(live)


def test_auto_keeps_the_best_weights_on_disk_from_16k_items_and_the_estimate_says_so():
    small, large = TailConfig(method="ease"), TailConfig(method="ease")
    assert not small.spills_best(16383) and large.spills_best(16384)
    per = 4 * 20000 ** 2
    auto = TailLearner.peak_memory(TailConfig(method="ease"), 30000, 20000, 300000)
    memory = TailLearner.peak_memory(TailConfig(method="ease", best_weights="memory"), 30000, 20000, 300000)
    assert memory - auto == per
