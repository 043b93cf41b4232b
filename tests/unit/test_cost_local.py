"""Cost formulas of the local-stage models (LOCA, LFT, EnLFT, TALL, WL) and the tail learner:
dense FLOPs against what FlopCounterMode counts over one fit of one epoch, parameter counts
against the fitted networks, and how the terms grow."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recsys.data import make_synthetic
from recsys.models.registry import build, get_model
from recsys.models.tail.learner import Adversary
from recsys.protocols import make_split
from recsys.training.cost import DataShape

# Every formula below matches the count exactly on these splits (the dense products are the
# decoder baddbmm / bmm, TALL's mixture einsums, LOCA's angular distances, the grouped dense
# backward, POSIT's adversary head); 5 % is the tolerance the cost model promises.
TOL = 0.05
ONE = dict(epochs=1, patience=None, progress="off")


@pytest.fixture(scope="module")
def random_split():
    df = make_synthetic(n_users=300, n_items=200, seed=1, mean_items_per_user=25).df
    return make_split("random_split", df)


@pytest.fixture(scope="module")
def sg_split():
    df = make_synthetic(n_users=600, n_items=300, seed=1, mean_items_per_user=25).df
    return make_split("strong_generalization", df, n_heldout_users=60)


def count(model, split):
    torch.manual_seed(0)
    with FlopCounterMode(display=False) as fc:
        model.fit_split(split, validate=False)
    return fc.get_total_flops()


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def formula(model, split, **kw):
    return type(model).epoch_cost(model.config, DataShape.from_csr(split["train"]), **kw)


def fitted_dense(cost):
    """The counted fit is one main-loop epoch plus the one-off phases (base / global model etc.)."""
    return cost.dense_flops + cost.terms.get("one_off_dense_flops", 0.0)


LFT_SMALL = dict(local_epochs=1, t=-1.0, max_local=80, group=16, local_batch_size=32)  # t=-1: every set at the cap


@pytest.mark.parametrize("name, config", [
    ("wl", dict(exponent=1.5)),
    ("tall", dict(n_experts=4, gate_source="train_slice")),
    ("loca", dict(n_local=5, chunk=2)),
    ("lft", LFT_SMALL),
    ("enlft", dict(LFT_SMALL, n_anchors=10)),
])
def test_local_dense_flops_match_the_count(random_split, name, config):
    model = build(name, **ONE, **config)
    counted = count(model, random_split)
    cost = formula(model, random_split)
    assert fitted_dense(cost) == pytest.approx(counted, rel=TOL)
    assert cost.flops > cost.dense_flops > 0
    assert cost.host_bytes > cost.terms.get("logits_block_bytes", 0) and cost.device_bytes > 0 and cost.steps > 0
    if name in ("wl", "tall"):
        fitted = n_params(model.bank_)
    elif name == "loca":
        fitted = n_params(model.global_, model.local_)
    elif name == "enlft":
        fitted = n_params(model.base_, model.local_)
    else:  # LFT keeps its copies' scores, not the copies: U copies of the base model were trained
        fitted = n_params(model.base_) * (random_split["train"].shape[0] + 1)
    assert cost.params == fitted


@pytest.mark.parametrize("method", ["posit", "ease", "cvar", "ipw"])
def test_tail_learner_dense_flops_and_params(sg_split, method):
    model = build("tail_learner", **ONE, method=method)
    counted = count(model, sg_split)
    cost = formula(model, sg_split)
    assert cost.dense_flops == pytest.approx(counted, rel=TOL, abs=1.0)  # ease / ipw / cvar: no dense product
    expected = model.U_.numel() + (n_params(Adversary(sg_split["train"].shape[0], model.config.ast, 1.0))
                                   if method == "posit" else 0) + (method == "cvar")
    assert cost.params == expected
    assert cost.flops > 2 * cost.terms["forward_sparse_flops"] * 0.99
    assert cost.host_bytes == get_model("tail_learner").peak_memory(model.config, *sg_split["train"].shape,
                                                                    sg_split["train"].nnz)


SHAPE = DataShape(20_000, 5_000, 600_000)


def test_growth():
    tall = get_model("tall").Config
    a = get_model("tall").epoch_cost(tall(n_experts=10), SHAPE)
    b = get_model("tall").epoch_cost(tall(n_experts=20), SHAPE)
    for key in ("decoder_flops", "encoder_sparse_flops", "mixture_flops", "bank_state_bytes", "logits_block_bytes"):
        assert b.terms[key] == pytest.approx(2 * a.terms[key])
    assert b.params == 2 * a.params

    loca = get_model("loca")
    a, b = loca.epoch_cost(loca.Config(n_local=10, chunk=5), SHAPE), loca.epoch_cost(loca.Config(n_local=20, chunk=5), SHAPE)
    assert b.dense_flops == pytest.approx(2 * a.dense_flops) and b.steps == 2 * a.steps
    covers = [loca.one_off_cost(loca.Config(n_local=10), DataShape(u, SHAPE.n_items, 30 * u)).terms["cover_bytes"]
              for u in (SHAPE.n_users, 4 * SHAPE.n_users)]
    assert covers[1] < 5 * covers[0]  # coverage anchors hold O(U) (one block of rows), no U x U / stride matrix

    enlft = get_model("enlft")
    a, b = (enlft.epoch_cost(enlft.Config(n_anchors=k), SHAPE) for k in (50, 100))
    assert b.dense_flops == pytest.approx(2 * a.dense_flops)
    lft = get_model("lft")
    a = lft.epoch_cost(lft.Config(), SHAPE)
    b = lft.epoch_cost(lft.Config(), DataShape(40_000, 5_000, 1_200_000))
    assert b.terms["decoder_flops"] == pytest.approx(2 * a.terms["decoder_flops"])
    assert b.terms["scores_bytes"] == 2 * a.terms["scores_bytes"]  # the U x I scores
    assert lft.epoch_cost(lft.Config(), SHAPE, local_size=300).dense_flops < a.dense_flops  # smaller local sets

    tail = get_model("tail_learner")
    a = tail.epoch_cost(tail.Config(method="ease"), SHAPE)
    b = tail.epoch_cost(tail.Config(method="ease"), DataShape(20_000, 10_000, 600_000))
    assert b.terms["square_bytes"] == 4 * a.terms["square_bytes"] and b.params == 4 * a.params
    assert b.terms["forward_sparse_flops"] == 2 * a.terms["forward_sparse_flops"]
