"""Local / mixture-of-experts stage: the batched expert bank against separate modules, its
optimiser, hand-made cases for weights, kernels, anchors, the TALL gate and adaptive weights,
and that every method beats most-popular on held-out data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.data.synthetic import make_synthetic
from recsys.errors import ConfigError, DataError
from recsys.models.autoencoders.multvae import multinomial_nll
from recsys.models.base import Model
from recsys.models.baselines import MostPopular
from recsys.models.local import LFT, LOCA, TALL, WL, AdaptiveWeights, BankAdam, EnLFT, ExpertBank, wl_weights
from recsys.models.local.bank import bank_kl, bank_nll
from recsys.models.local.neighbourhoods import (
    angular_distance, enlft_anchors, kernel, local_sets, select_anchors, smoothed_rows,
)
from recsys.models.local.tall import train_slice
from recsys.models.registry import build
from recsys.protocols import random_split
from recsys.training.batches import SparseRows

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(n_users=6, n_items=9, seed=0, density=0.4) -> sp.csr_matrix:
    x = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = 1.0
    return x


# ---- the bank is E independent Mult-VAEs ---------------------------------------------------------


def _single_logits(bank: ExpertBank, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e as a plain dense Mult-VAE forward at its mean (the reference: one module alone)."""
    xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    h = xn @ bank.w_in[e] + bank.b_in[e]
    return h[:, : bank.hidden] @ bank.w_out[e] + bank.b_out[e]


def test_bank_matches_separate_modules_in_shared_and_grouped_layouts():
    torch.manual_seed(0)
    bank = ExpertBank(3, 9, 4).eval()
    x = _rows()
    dense = torch.from_numpy(x.toarray())
    logits = bank(SparseRows.from_csr(x, "cpu"))[0]
    for e in range(3):
        torch.testing.assert_close(logits[e], _single_logits(bank, e, dense), atol=1e-5, rtol=1e-5)
    # grouped: expert e reads its own rows (here rows 2e, 2e+1)
    grouped = bank(SparseRows.from_csr(x, "cpu"), grouped=True)[0]
    for e in range(3):
        torch.testing.assert_close(grouped[e], _single_logits(bank, e, dense[2 * e: 2 * e + 2]), atol=1e-5, rtol=1e-5)


def test_bank_losses_equal_the_single_model_losses():
    torch.manual_seed(1)
    bank = ExpertBank(2, 9, 4).eval()
    x = _rows(seed=3)
    rows = SparseRows.from_csr(x, "cpu")
    logits, mu, logvar = bank(rows)
    nll = bank_nll(logits, rows)
    for e in range(2):
        torch.testing.assert_close(nll[e], multinomial_nll(logits[e], rows))
    kl = bank_kl(mu, logvar)
    expected = 0.5 * (-logvar[1] + logvar[1].exp() + mu[1] ** 2 - 1).sum(1)
    torch.testing.assert_close(kl[1], expected)


def test_bank_adam_equals_torch_adam_and_leaves_idle_experts_alone():
    torch.manual_seed(2)
    bank = ExpertBank(2, 9, 4)
    single = ExpertBank(1, 9, 4)
    single.load_state_dict({k: v for k, v in bank.select([0]).state_dict().items()})
    idle_before = {n: p.detach()[1].clone() for n, p in bank.named_parameters()}
    bank.eval(), single.eval()  # mean codes: no sampling noise, so both see the same gradients
    opt = BankAdam(bank, lr=0.01, weight_decay=0.1)
    ref = torch.optim.Adam(single.parameters(), lr=0.01, weight_decay=0.1)
    rows = SparseRows.from_csr(_rows(seed=5), "cpu")
    for _ in range(3):
        opt.zero_grad()
        ref.zero_grad()
        bank_nll(bank(rows)[0], rows).sum().backward()
        bank_nll(single(rows)[0], rows).sum().backward()
        opt.step(torch.tensor([True, False]))
        ref.step()
    for n, p in bank.named_parameters():
        torch.testing.assert_close(p.detach()[0], getattr(single, n).detach()[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(p.detach()[1], idle_before[n])


# ---- hand-made cases -------------------------------------------------------------------------------


def test_wl_weights_hand_computed():
    w = wl_weights(np.array([0.1, 0.2, 0.3]), exponent=1.5)
    raw = np.array([1.0, 0.5 ** 1.5, 0.0])
    np.testing.assert_allclose(w, raw / raw.mean())
    np.testing.assert_allclose(wl_weights(np.array([0.1, 0.2, 0.3]), exponent=0), 1.0)
    np.testing.assert_allclose(wl_weights(np.array([0.2, 0.2])), 1.0)


def test_angular_distance_and_kernels_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    d = angular_distance(a[:1], a)
    torch.testing.assert_close(d, torch.tensor([[0.0, 1.0, 2.0]]), atol=1e-3, rtol=0)
    dist = torch.tensor([0.0, 0.4, 0.8, 1.0])
    torch.testing.assert_close(kernel(dist, 0.8), torch.tensor([0.75, 0.5625, 0.0, 0.0]))
    torch.testing.assert_close(kernel(dist, 0.8, "uniform"), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(kernel(dist, 0.8, "triangular"), torch.tensor([1.0, 0.5, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="kernel must be one of"):
        kernel(dist, 0.8, "gaussian")


def test_coverage_anchors_take_the_biggest_uncovered_cluster_first():
    # three direction clusters of sizes 2, 5, 3 (angles far apart: a narrow kernel covers one cluster)
    angles = [0.0] * 2 + [1.6] * 5 + [3.2] * 3
    emb = torch.tensor([[math.cos(t), math.sin(t)] for t in angles])
    anchors = select_anchors(emb, 3, "coverage", bandwidth=0.2, stride=1)
    assert [angles[a] for a in anchors] == [1.6, 3.2, 0.0]
    assert list(anchors) == [2, 7, 0]  # ties: lowest index
    rnd = select_anchors(emb, 4, "random", seed=1)
    assert len(set(rnd)) == 4
    km = select_anchors(emb, 3, "kmeans", seed=0)
    assert sorted({angles[a] for a in km}) == [0.0, 1.6, 3.2]
    with pytest.raises(ConfigError, match="number of anchors"):
        select_anchors(emb, 11)


def test_enlft_anchors_central_then_diverse():
    # users 0-3 share items 0-2 (a dense centre), users 4-5 share items 5-6 (a separate niche)
    x = sp.csr_matrix(np.array([
        [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1, 1]], dtype=np.float32))
    anchors, sim = enlft_anchors(x, 2)
    assert anchors[0] in (0, 1, 3) and anchors[1] in (4, 5)
    np.testing.assert_allclose(sim[anchors[1], 1], 1.0, atol=1e-6)
    sets = local_sets(x, np.array([4]), t=0.5, min_size=1)
    assert sorted(sets[0]) == [4, 5]
    assert len(local_sets(x, np.array([4]), t=0.5, min_size=3)[0]) == 3


def test_smoothed_rows_mix_in_jaccard_neighbours():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float32))
    s = smoothed_rows(x, alpha=0.5, threshold=0.5, min_neighbours=1).toarray()
    # user 0's only neighbour above 0.5 is user 1 (Jaccard 2/3): 0.5 * x0 + 0.5 * x1
    np.testing.assert_allclose(s[0], [1.0, 1.0, 0.5])


def test_tall_gate_hand_computed():
    logits = torch.tensor([[[2.0, 1.0, 0.0]], [[0.0, 0.0, 3.0]]])  # [E=2, B=1, I=3]
    rows = SparseRows.from_csr(sp.csr_matrix(np.array([[1, 0, 0]], dtype=np.float32)), "cpu")
    gate_rows = SparseRows.from_csr(sp.csr_matrix(np.array([[0, 1, 0]], dtype=np.float32)), "cpu")
    loss = TALL.gate_loss(logits, rows, gate_rows)
    # expert 0: item 0's logit zeroed -> softmax over [0, 1, 0]; item 1's loss = -log(e / (2 + e))
    l0 = -math.log(math.e / (2 + math.e))
    l1 = -math.log(1 / (2 + math.exp(3)))
    torch.testing.assert_close(loss[:, 0], torch.tensor([l0, l1]))
    gate = TALL(n_experts=2).gate(logits, rows, gate_rows)
    expected = torch.softmax(torch.tensor([1 / l0, 1 / l1]), 0)
    torch.testing.assert_close(gate[:, 0], expected)
    assert gate[0, 0] > gate[1, 0]  # the expert that predicts the gate item better weighs more


def test_adaptive_weights_gap_window_and_formula():
    aw = AdaptiveWeights(3, gap=2, window=2, alpha=0.1)
    for losses in ([5.0, 5.0, 5.0], [4.0, 5.0, 5.0], [3.0, 4.0, 5.0], [3.0, 3.0, 5.0]):
        aw.record(np.array(losses))
    np.testing.assert_allclose(aw.weights(2), 1.0)  # inside the gap
    d = np.array([0.5, 1.0, 0.0])  # mean decrease over the last two epochs
    expected = np.maximum((d - d.mean() + 0.2) / 0.2, 1e-8)
    np.testing.assert_allclose(aw.weights(3), expected)
    assert aw.weights(3)[2] == 1e-8  # a user whose loss stopped falling is switched off


def test_train_slice_keeps_an_input_item_and_partitions_the_rows():
    x = _rows(20, 15, seed=4, density=0.3)
    inp, sl = train_slice(x, 0.2, seed=0)
    assert (inp + sl != x).nnz == 0 and inp.multiply(sl).nnz == 0
    n = np.diff(x.indptr)
    assert (np.diff(inp.indptr)[n >= 1] >= 1).all()
    np.testing.assert_array_equal(np.diff(sl.indptr), np.where(n >= 2, np.minimum(np.ceil(0.2 * n), n - 1), 0))


# ---- each method learns ------------------------------------------------------------------------------

QUICK = dict(hidden=32, lr=1e-2, weight_decay=0.0, batch_size=128, epochs=30, patience=8, device="cpu", seed=0)


@pytest.fixture(scope="module")
def data():
    return random_split(make_synthetic(n_users=400, n_items=120, seed=5).df, k_core=3, seed=0)


@pytest.fixture(scope="module")
def base(data):
    return WL(exponent=1.5, **QUICK).fit(data["train"], data["valid"])


def _ndcg(model, data) -> float:
    if isinstance(model, MostPopular):
        return model.evaluate(data["train"], data["test"], recall_denominator="n", ks=(20,),
                              metrics=("ndcg",)).mean()["ndcg@20"]
    return model.evaluate_users(data["test"], ks=(20,), metrics=("ndcg",)).mean()["ndcg@20"]


@pytest.mark.parametrize("name", ["vae", "wl", "loca", "lft", "enlft", "tall", "tall_train_slice"])
def test_each_method_beats_most_popular(data, base, name):
    tr, va = data["train"], data["valid"]
    if name == "vae":
        model = WL(exponent=0.0, **QUICK).fit(tr, va)
    elif name == "wl":
        model = base
    elif name == "loca":
        model = LOCA(n_local=4, coverage_stride=1, **{**QUICK, "total_anneal_steps": 0}).fit(tr, va)
    elif name == "lft":
        model = LFT(local_epochs=3, max_local=100, group=200, **QUICK).fit(tr, va, base_model=base)
    elif name == "enlft":
        model = EnLFT(local_epochs=3, max_local=100, n_anchors=8, **QUICK).fit(tr, va, base_model=base)
    else:
        gate = "valid" if name == "tall" else "train_slice"
        model = TALL(n_experts=4, gap=5, window=3, gate_source=gate,
                     **{**QUICK, "weight_decay": 1e-5, "total_anneal_steps": 0, "epochs": 40, "patience": 10}).fit(tr, va)
    pop = _ndcg(MostPopular(device="cpu").fit(tr), data)
    assert _ndcg(model, data) > 1.2 * pop, name


def test_tall_early_stops_and_records_adaptive_weights(data):
    model = TALL(n_experts=3, gap=2, window=2, **{**QUICK, "epochs": 6, "patience": None}).fit(data["train"], data["valid"])
    h = model.history_
    assert len(h) == 6 and all(r["weight_min"] == r["weight_max"] == 1.0 for r in h[:2])
    assert h[-1]["weight_max"] > h[-1]["weight_min"]  # adaptive weights switched on after the gap
    assert 1 <= model.best_epoch_ <= 6


def test_local_models_save_and_load(tmp_path, data, base):
    loca = LOCA(n_local=2, coverage_stride=1, **{**QUICK, "epochs": 2}).fit(data["train"], data["valid"])
    for model in (base, loca):
        path = model.save(tmp_path / f"{model.name}.pt")
        again = Model.load(path)
        users = np.arange(10)
        torch.testing.assert_close(again.score_users(users), model.score_users(users))


def test_bad_input_stops_with_clear_errors(data):
    with pytest.raises(ConfigError, match="unknown tall config key 'n_expert'"):
        build("tall", n_expert=3)
    with pytest.raises(ConfigError, match="gate_source must be one of"):
        TALL(gate_source="test")
    with pytest.raises(ConfigError, match="needs valid="):
        TALL(patience=None).fit(data["train"])
    with pytest.raises(DataError, match="must align with train"):
        WL(**QUICK).fit(data["train"], data["valid"][:10])
    with pytest.raises(ConfigError, match="n_local=9999 exceeds"):
        LOCA(n_local=9999, **QUICK).fit(data["train"], data["valid"])
    with pytest.raises(DataError, match="user ids must be in"):
        WL(**{**QUICK, "epochs": 1}).fit(data["train"], data["valid"]).score_users([10**6])


def test_gate_loss_matches_the_plain_formula_and_its_gradient():
    torch.manual_seed(4)
    logits = (3 * torch.randn(3, 5, 8, dtype=torch.float64)).requires_grad_()
    x, v = _rows(5, 8, seed=6, density=0.3), _rows(5, 8, seed=7, density=0.2)
    v = v - v.multiply(x)  # gate items are never input items
    v.eliminate_zeros()
    rows, gate_rows = SparseRows.from_csr(x, "cpu"), SparseRows.from_csr(sp.csr_matrix(v), "cpu")
    mask = torch.from_numpy(x.toarray()).double()
    target = torch.from_numpy(sp.csr_matrix(v).toarray()).double()

    def plain(lg):  # TALL's code: -log(exp(l) / sum exp(l * (1 - x))) summed over the gate items
        return (-(lg - torch.logsumexp(lg * (1 - mask), dim=2, keepdim=True)) * target).sum(2)

    torch.testing.assert_close(TALL.gate_loss(logits, rows, gate_rows), plain(logits))
    assert torch.autograd.gradcheck(lambda lg: TALL.gate_loss(lg, rows, gate_rows), (logits,))


def test_loca_with_one_local_over_everyone_is_the_global_vae(data):
    # a uniform kernel wider than any distance: one local model trained on every user with weight 1,
    # from the same seed, is exactly the global VAE (bank training, BankAdam and the ensemble agree)
    cfg = {**QUICK, "epochs": 5, "patience": None}
    vae = WL(exponent=0.0, **cfg).fit(data["train"], data["valid"])
    loca = LOCA(n_local=1, kernel="uniform", train_h=10.0, test_h=10.0, total_anneal_steps=0, dropout=0.2,
                weight_decay=0.0, **{k: v for k, v in cfg.items() if k not in ("weight_decay",)})
    loca.fit(data["train"], data["valid"], global_model=vae)
    users = np.arange(50)
    torch.testing.assert_close(loca.score_users(users), vae.score_users(users), atol=1e-5, rtol=1e-5)


def test_lft_groups_users_by_local_set_size_and_keeps_each_users_copy(data, base):
    """Grouping is by local-set size (less padding) and a user's copy depends only on the user:
    fine-tuned alone (group=1) it is the same whichever users share the shard, in any order."""
    tr, va = data["train"], data["valid"]
    cfg = dict(local_epochs=2, min_local=2, max_local=400, t=0.5, local_batch_size=16, **QUICK)
    model = LFT(group=1, **cfg).prepare(tr, va, base_model=base)
    users = np.array([7, 3, 150, 42])
    together = model.finetune_users(users)
    for j in (2, 0):
        alone = model.finetune_users(users[j:j + 1])
        np.testing.assert_allclose(together[j], alone[0], rtol=1e-5, atol=1e-5)
    # groups of 4: any order of the same users gives each user the same copy and its own row
    four = LFT(group=4, **cfg).prepare(tr, va, base_model=base)
    some = np.array([5, 60, 7, 200, 33, 3, 150, 42])
    assert len({len(s) for s in four.local_sets(some)}) == len(some)  # no ties: one grouping
    perm = np.array([3, 7, 0, 5, 1, 6, 2, 4])
    np.testing.assert_allclose(four.finetune_users(some[perm]), four.finetune_users(some)[perm], rtol=1e-5, atol=1e-5)
    sizes = np.array([len(s) for s in model.local_sets(np.arange(64))])
    natural = sum(int(np.ceil(sizes[g:g + 8].max() / 16)) for g in range(0, 64, 8))
    grouped = LFT(group=8, **cfg).prepare(tr, va, base_model=base)
    grouped.finetune_users(np.arange(64))
    steps = [h["steps_per_epoch"] for h in grouped.history_ if "steps_per_epoch" in h]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    # hand-computed: groups of the sorted sizes
    assert steps == [int(np.ceil(g.max() / 16)) for g in np.sort(sizes).reshape(8, 8)]
    assert sum(steps) < natural


@pytest.mark.parametrize("grouped", [False, True])
def test_bank_nll_value_and_gradient_match_logsumexp(grouped):
    """The fused loss against the plain formula (logsumexp minus the gathered targets), with
    non-binary values and an empty row."""
    torch.manual_seed(3)
    x = _rows(n_users=6, n_items=9, seed=4, density=0.5)
    x.data[:] = np.arange(1, x.nnz + 1) % 3 + 1.0
    x = sp.vstack([x[:5], sp.csr_matrix((1, 9), dtype=np.float32)]).tocsr()  # row 5 empty
    rows = SparseRows.from_csr(x, "cpu")
    E = 3 if grouped else 2
    B = 2 if grouped else 6
    logits = (3 * torch.randn(E, B, 9, dtype=torch.float64)).requires_grad_()
    dense = torch.from_numpy(x.toarray()).double()
    target = dense.view(E, B, 9) if grouped else dense[None].expand(E, B, 9)
    expected = torch.logsumexp(logits, 2) * target.sum(2) - (logits * target).sum(2)
    got = bank_nll(logits, rows, grouped)
    torch.testing.assert_close(got, expected.to(got.dtype))
    w = torch.randn(E, B, dtype=torch.float64)
    (g1,) = torch.autograd.grad((expected * w).sum(), logits)
    (g2,) = torch.autograd.grad((got * w).sum(), logits)
    torch.testing.assert_close(g2, g1)
    # large logits: exp overflows without the max shift (float32, as in training)
    big = (logits.detach() + 1e3).float().requires_grad_()
    got = bank_nll(big, rows, grouped)
    exact = big.detach().double().requires_grad_()  # the reference in float64
    expected = torch.logsumexp(exact, 2) * target.sum(2) - (exact * target).sum(2)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-3)
    (g1,) = torch.autograd.grad((expected * w).sum(), exact)
    (g2,) = torch.autograd.grad((got * w.float()).sum(), big)
    torch.testing.assert_close(g2.double(), g1, rtol=1e-4, atol=1e-5)


def test_lft_and_enlft_report_progress_per_group_of_copies(capsys):
    """Fine-tuning is not epochs: one line per group of copies, with seconds and what is left."""
    X = sp.random(60, 30, density=0.3, format="csr", random_state=np.random.default_rng(0), dtype=np.float32)
    X.data[:] = 1.0
    wl = WL(epochs=1, patience=None, progress="off", hidden=8).fit(X)
    LFT(group=16, local_epochs=1, patience=None, progress="lines", hidden=8).fit(X, base_model=wl)
    EnLFT(group=4, n_anchors=8, local_epochs=1, patience=None, progress="lines", hidden=8).fit(X, base_model=wl)
    lines = capsys.readouterr().err.splitlines()
    lft = [line for line in lines if line.startswith("[lft]")]
    assert [line.split()[1] for line in lft] == ["16/60", "32/60", "48/60", "60/60"] and "left ~" in lft[0]
    assert [line.split()[1] for line in lines if line.startswith("[enlft]")] == ["4/8", "8/8"]
    LFT(group=16, local_epochs=1, patience=None, progress="off", hidden=8).fit(X, base_model=wl)
    assert "[lft]" not in capsys.readouterr().err


def test_tall_fused_mixture_head_equals_gate_plus_einsum_in_value_and_gradient():
    """The fused head (gate + mixture in one autograd function) against the composed reference,
    float64, with a user without gate items and input items inside the gate's softmax."""
    import scipy.sparse as sp
    import torch

    from recsys.models.local.tall import TALL, _MixtureHead
    from recsys.training.batches import SparseRows

    gen = torch.Generator().manual_seed(0)
    E, B, I = 3, 5, 11
    x = sp.random(B, I, density=0.3, format="csr", random_state=1, dtype=np.float32)
    gv = sp.random(B, I, density=0.2, format="csr", random_state=2, dtype=np.float32).tolil()
    gv[2] = 0  # a user with no gate items: uniform gate
    rows, gate_rows = SparseRows.from_csr(x, "cpu"), SparseRows.from_csr(gv.tocsr(), "cpu")
    logits = torch.randn(E, B, I, dtype=torch.float64, generator=gen).requires_grad_(True)
    w_out, w_gate = torch.randn(B, I, dtype=torch.float64, generator=gen), torch.randn(E, B, dtype=torch.float64, generator=gen)

    out, gate = _MixtureHead.apply(logits, rows.row_ids, rows.indices, gate_rows.row_ids, gate_rows.indices)
    ours = torch.autograd.grad((out * w_out).sum() + (gate * w_gate).sum(), logits)[0]
    ref_gate = TALL.gate(TALL, logits, rows, gate_rows)  # gate() only calls the static gate_loss
    ref_out = torch.einsum("eb,ebi->bi", ref_gate, logits)
    theirs = torch.autograd.grad((ref_out * w_out).sum() + (ref_gate * w_gate).sum(), logits)[0]
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gate, ref_gate, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-10)
    assert torch.allclose(gate[:, 2], torch.full((E,), 1.0 / E, dtype=torch.float64))
