"""Cost formulas (recsys.training.cost) of the sequential, meta and multi-interest stages against
FlopCounterMode over one training epoch on small synthetic splits.

Two counting fixes, both for what torch 2.13's FlopCounterMode misses on the CPU (the formulas
count the real work): scaled-dot-product attention runs on its math kernel (the CPU flash kernel
has no flop formula), and the in-place ``addmm_`` of the blocked cross-entropy's backward
(the item-table gradient) gets the addmm formula: both in ``recsys.training.cost.counted_flops``.
"""

import pytest
import torch

from recsys.data import make_synthetic
from recsys.models.registry import build
from recsys.protocols import make_split
from recsys.training.cost import DataShape, counted_flops


def _count(model, split):
    with counted_flops() as fc:
        model.fit_split(split, validate=False)
    return fc.get_total_flops()


@pytest.fixture(scope="module")
def loo():
    df = make_synthetic(n_users=2000, n_items=1000, seed=1, mean_items_per_user=30).df
    return make_split("leave_one_out", df)


@pytest.fixture(scope="module")
def users():
    df = make_synthetic(n_users=1000, n_items=500, seed=1, mean_items_per_user=30).df
    return make_split("user_split", df, n_test_users=100)


def _shape(split, key, n_items):
    s = DataShape.from_csr(split[key])
    return DataShape(s.n_users, n_items, s.nnz, s.len_sq_sum)


# Sequential models: the padded batch widths come from a log-normal length model (the data's mean
# and second moment), the widest batch from an order statistic; 5 % covers the draw of the pools.
@pytest.mark.parametrize("name,overrides", [
    ("sasrec", {}),
    ("sasrec", {"loss": "bce", "n_heads": 2, "max_len": 50}),
    ("bert4rec", {}),
])
def test_sequential_dense_flops_match_the_count(loo, name, overrides):
    torch.set_num_threads(1)
    m = build(name, epochs=1, patience=None, progress="off", **overrides)
    counted = _count(m, loo)
    cost = type(m).epoch_cost(m.config, _shape(loo, "train", m.n_items_))
    assert cost.dense_flops == pytest.approx(counted, rel=0.05)
    assert cost.params == sum(p.numel() for p in m.net_.parameters())
    assert cost.steps > 0 and cost.host_bytes > cost.params * 4


@pytest.mark.parametrize("name", ["remi", "comirec", "mind"])
def test_multi_interest_dense_flops_match_the_count(loo, name):
    torch.set_num_threads(1)
    m = build(name, epochs=1, patience=None, progress="off", steps_per_epoch=30)
    counted = _count(m, loo)
    cost = type(m).epoch_cost(m.config, _shape(loo, "train", m.n_items_))
    assert cost.dense_flops == pytest.approx(counted, rel=0.05)
    assert cost.params == sum(p.numel() for p in m.net_.parameters())
    assert cost.steps == 30


# Meta learners: the support rows' bucket padding (1.95 x the real positions) is a measured
# constant, not derived, so the tolerance is 10 %.
@pytest.mark.parametrize("name,overrides", [
    ("maml", {"inner_steps": 1}),
    ("maml", {"inner_steps": 2, "first_order": True}),
    ("maml_pp", {}),
    ("melo", {}),
])
def test_meta_dense_flops_match_the_count(users, name, overrides):
    torch.set_num_threads(1)
    m = build(name, epochs=1, patience=None, progress="off", block=2, meta_batch=4, **overrides)
    counted = _count(m, users)
    cost = type(m).epoch_cost(m.config, DataShape.from_csr(users["interactions"]))
    assert cost.dense_flops == pytest.approx(counted, rel=0.10)
    nets = [m.backbone_.net_, m.lslr_, m.weight_net_]
    assert cost.params == sum(p.numel() for n in nets if n is not None for p in n.parameters())
    assert cost.steps == 2


def test_formulas_grow_as_they_should():
    from recsys.models.registry import get_model

    base = DataShape(10_000, 5_000, 300_000, 2 * 10_000 * 30.0 ** 2)
    more_items = DataShape(10_000, 10_000, 300_000, 2 * 10_000 * 30.0 ** 2)
    more_users = base.scaled(20_000, 5_000, 600_000)
    sas = get_model("sasrec")
    c = sas.Config()
    a, b, u = (sas.epoch_cost(c, s) for s in (base, more_items, more_users))
    assert b.terms["output_softmax"] == pytest.approx(2 * a.terms["output_softmax"])
    assert b.terms["blocks_linear"] == pytest.approx(a.terms["blocks_linear"])
    assert u.dense_flops == pytest.approx(2 * a.dense_flops, rel=0.02)
    assert sas.epoch_cost(sas.Config(loss="bce"), base).dense_flops < a.dense_flops
    bert = get_model("bert4rec")
    lo, hi = (bert.epoch_cost(bert.Config(mask_prob=p), base) for p in (0.2, 0.4))
    assert hi.terms["masked_positions"] > 1.5 * lo.terms["masked_positions"]
    remi = get_model("remi")
    r1, r2 = (remi.epoch_cost(remi.Config(n_negatives=n), base) for n in (1280, 2560))
    assert r2.terms["sampled_softmax"] == pytest.approx(2 * r1.terms["sampled_softmax"])
    maml = get_model("maml")
    so, fo = (maml.epoch_cost(maml.Config(first_order=f), base) for f in (False, True))
    assert so.terms["support_inner_steps"] == pytest.approx(3 * fo.terms["support_inner_steps"])
    assert maml.epoch_cost(maml.Config(), more_items).dense_flops == pytest.approx(so.dense_flops)
