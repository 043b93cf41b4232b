"""The meta stage's models (recsys.models.meta): the functional vmapped inner loop against a
deep-copy reference, zero-step and first/second-order identities, MELO with unit weights = MAML++,
every method against the global mean on held-out ML-100K users, persistence, pretrained
embeddings, resumption and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from recsys.errors import ConfigError, DataError
from recsys.models.meta import MELO, MetaLearner, backbone_config
from recsys.models.meta.functional import (
    InnerLoop,
    item_table_name,
    layer_norm_forward,
    prepare_batch,
    rating_parameters,
    reference_losses,
    step_importance,
)
from recsys.models.registry import build
from recsys.protocols import user_split
from recsys.protocols.meta_tasks import TaskSettings, build_tasks
from tests.conftest import data_home, requires_data

pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONES = ("gru4rec", "narm", "sasrec", "bert4rec")
TINY_BB = {"hidden": 8, "max_len": 8, "dropout": 0.0}
TINY_EXTRA = {"gru4rec": {"gru_hidden": 8}, "narm": {"gru_hidden": 8, "ct_dropout": 0.0},
              "sasrec": {"n_heads": 2, "attn_dropout": 0.0}, "bert4rec": {"n_heads": 2, "attn_dropout": 0.0}}
TASKS = {"max_len": 8, "n_support": 5, "n_query": 2}


def tiny_split(n_users=60, n_items=30, seed=0, nan=False):
    """Users with a rating bias, items with a quality: ratings 1..5 that carry some signal."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n_items)
    rows = []
    for u in range(n_users):
        bias = rng.normal(0, 1)
        for t in range(int(rng.integers(4, 14))):
            i = int(rng.integers(0, n_items))
            rows.append((u, i, float(np.clip(np.rint(3.5 + bias + quality[i] + rng.normal(0, 0.5)), 1, 5)), t))
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    if nan:
        df.loc[5, "rating"] = np.nan
    return user_split(df, n_test_users=10, valid_fraction=0.2, seed=seed)


def tiny_backbone(name, split, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = build(name, **{**TINY_BB, **TINY_EXTRA[name]})
    model.n_items_ = split.n_items
    model._init_modules()
    net = model.net_.to(dtype)
    with torch.no_grad():  # a non-zero head, so every layer gets a gradient
        net.rating_head.weight.normal_(0, 0.5)
        net.rating_head.bias.fill_(1.0)
    net.eval()
    return model


def train_tasks(split, n=6, seed=0):
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(split.arrays["train_users"], n, replace=False))
    return build_tasks(split, "train", TaskSettings(**TASKS), rng, users=users)


def meta_grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


# ---- the functional inner loop ----------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_zero_inner_steps_meta_loss_is_the_backbones_plain_query_loss(name):
    split = tiny_split()
    model = tiny_backbone(name, split)
    net, tasks = model.net_, train_tasks(split)
    loop = InnerLoop(net, rating_parameters(net), item_table_name(net), steps=0)
    ours = loop.losses(prepare_batch(tasks), 0.1)[:, 0]
    plain = []
    for t in range(len(tasks)):
        nq = tasks.query_n[t]
        r = torch.from_numpy(tasks.query_ratings[t, :nq]).float()
        r[r == 0] = float("nan")  # the backbone's convention: NaN = no rating
        plain.append(model.rating_loss(torch.from_numpy(tasks.query_items[t, :nq]), r))
    torch.testing.assert_close(ours, torch.stack(plain), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", BACKBONES)
def test_vmapped_inner_loop_equals_a_deep_copy_per_task_reference(name):
    split = tiny_split(seed=1)
    net = tiny_backbone(name, split, dtype=torch.float64).net_
    tasks = train_tasks(split, seed=1)
    adapted = rating_parameters(net)
    loop = InnerLoop(net, adapted, item_table_name(net), steps=2)
    rates = torch.full((len(adapted), 2), 0.3, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(tasks.support_items.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights.requires_grad_(True)
    params = list(loop.meta_parameters().values()) + [rates, weights]
    # per-task item tables, length buckets and task groups are all on (the defaults)
    ours = loop.losses(prepare_batch(tasks, max_groups=3, bucket_overhead=0.0, group_overhead=0.0), rates, weights,
                       record_steps=True)
    ref = reference_losses(net, tasks, adapted, rates, 2, weights=weights, record_steps=True)
    assert ours.shape == ref.shape == (len(tasks), 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    for a, b in zip(meta_grads(ours.sum(), params), meta_grads(ref.sum(), params)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # predictions: the adapted parameters' last-position rating of every query row
    with torch.no_grad():
        pred = loop.predict(prepare_batch(tasks), rates, weights)
    assert pred.shape == tasks.query_items.shape[:2] and torch.isfinite(pred).all()


def test_first_and_second_order_gradients_agree_only_without_inner_steps():
    split = tiny_split(seed=2)
    net = tiny_backbone("sasrec", split, dtype=torch.float64).net_
    batch = prepare_batch(train_tasks(split, seed=2))
    adapted = rating_parameters(net)

    def grads(steps, first_order):
        loop = InnerLoop(net, adapted, item_table_name(net), steps=steps, first_order=first_order)
        return meta_grads(loop.losses(batch, 0.05).mean(), list(loop.meta_parameters().values()))

    for a, b in zip(grads(0, False), grads(0, True)):
        assert torch.equal(a, b)
    second, first = grads(2, False), grads(2, True)
    diff = max(float((a - b).abs().max()) for a, b in zip(second, first))
    scale = max(float(a.abs().max()) for a in second)
    assert diff > 1e-4 * scale  # the second-order terms are there
    assert diff < scale  # ... and a correction, not a different gradient


def test_layer_norm_used_under_vmap_gives_true_second_order_gradients():
    """F.layer_norm's double backward under vmap is wrong in torch 2.13; the meta stage's LayerNorm
    (layer_norm_forward) matches the per-task reference."""
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(6).double()
    x, y = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 4, 6, dtype=torch.float64)
    w = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)

    def adapted_loss(w, x, y):
        inner = lambda w: ((layer_norm_forward(ln, x @ w) - y) ** 2).sum()
        return inner(w - 0.1 * grad(inner)(w))

    ours = torch.autograd.grad(vmap(adapted_loss, in_dims=(None, 0, 0))(w, x, y).sum(), w)[0]
    ref = 0
    for t in range(3):
        inner = lambda w: ((F.layer_norm(x[t] @ w, (6,), ln.weight, ln.bias) - y[t]) ** 2).sum()
        g = torch.autograd.grad(inner(w), w, create_graph=True)[0]
        ref = ref + inner(w - 0.1 * g)
    torch.testing.assert_close(ours, torch.autograd.grad(ref, w)[0], rtol=0, atol=1e-9)


def test_multi_step_loss_importance_anneals_to_the_last_step():
    assert step_importance(3, 0, 1000) == pytest.approx([1 / 3] * 3)
    mid = step_importance(3, 500, 1000)
    assert mid[0] == mid[1] < 1 / 3 < mid[2] and sum(mid) == pytest.approx(1)
    assert step_importance(3, 999, 1000)[0] == pytest.approx(0.01)  # the 0.03 / N floor
    assert step_importance(3, 1000, 1000) == [0.0, 0.0, 1.0]
    assert step_importance(1, 0, 1000) == [1.0]


# ---- the meta-learners ----------------------------------------------------------------------------

META = dict(backbone={"model": "sasrec", "config": backbone_config("sasrec", {**TINY_BB, **TINY_EXTRA["sasrec"],
                                                                               "dropout": 0.1}).to_dict()},
            **TASKS, epochs=2, block=2, meta_batch=4, valid_tasks=6, progress="off", device="cpu")


def test_melo_with_the_weighting_net_fixed_at_one_is_maml_pp_exactly():
    split = tiny_split(seed=3)
    pp = build("maml_pp", **META).fit(split)
    melo = build("melo", **META)
    original = MetaLearner._weights

    def unit_weights(self, batch):
        w = original(self, batch)
        return None if w is None else torch.ones_like(w)

    MELO._weights = unit_weights
    try:
        melo.fit(split)
    finally:
        del MELO._weights
    assert melo.weight_net_ is not None
    a, b = pp.backbone_.net_.state_dict(), melo.backbone_.net_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(pp.lslr_.rates, melo.lslr_.rates)
    assert [h["loss"] for h in pp.history_] == [h["loss"] for h in melo.history_]


def test_meta_learner_trains_in_blocks_through_the_loop_and_round_trips(tmp_path):
    split = tiny_split(seed=4)
    model = build("melo", **{**META, "epochs": 3})
    model.fit(split)
    assert [h["iteration"] for h in model.history_] == [2, 4, 6] and model.iterations_ == 6
    assert all("valid_rmse" in h for h in model.history_) and model.best_epoch_ in (1, 2, 3)
    assert model.inner_rates().shape == (len(model.adapted_), 3)
    ev = model.evaluate(split, "test")
    assert ev["n"] == len(split.arrays["test_users"]) and set(ev["per_rating"]) >= {"overall"}
    path = model.save(tmp_path / "melo.pt")
    loaded = MetaLearner.load(path)
    assert isinstance(loaded, MELO) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.evaluate(split, "test")["pred"], ev["pred"])
    assert loaded.config.backbone == model.config.backbone  # the nested backbone config


def test_a_finished_run_resumes_from_its_checkpoints_with_the_same_result(tmp_path):
    split = tiny_split(seed=5)
    first = build("maml_pp", **META).checkpoints(tmp_path / "ck").fit(split)
    again = build("maml_pp", **META).checkpoints(tmp_path / "ck").fit(split)
    a, b = first.backbone_.net_.state_dict(), again.backbone_.net_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and again.history_ == first.history_


@requires_data
def test_every_method_beats_the_global_mean_on_held_out_ml100k_users():
    from recsys.data import load_dataset

    df = load_dataset("ml-100k", data_dir=data_home() / "ml-100k").df
    split = user_split(df, n_test_users=250, min_item=50, min_user=5, seed=0)
    tasks = dict(max_len=10, n_support=8, n_query=2)
    bb = {"model": "sasrec", "config": backbone_config("sasrec", {"hidden": 16, "n_heads": 2, "max_len": 10}).to_dict()}
    meta = dict(backbone=bb, **tasks, epochs=5, block=8, outer_lr=3e-3, valid_tasks=100, progress="off", device="cpu")
    runs = {"global_mean": ("global_mean", tasks), "basic": ("meta_basic", dict(backbone=bb, **tasks, epochs=4, progress="off")),
            "maml": ("maml", meta), "maml_pp": ("maml_pp", meta), "melo": ("melo", meta)}
    rmse = {name: build(model, **cfg).fit(split).evaluate(split, "test")["rmse"] for name, (model, cfg) in runs.items()}
    base = rmse.pop("global_mean")
    assert all(v < base - 0.02 for v in rmse.values()), (base, rmse)


# ---- pretrained item embeddings ---------------------------------------------------------------------


def test_pretrained_embeddings_are_matched_by_original_item_id(tmp_path):
    split = tiny_split(seed=6)
    # a pretrain run over other users: its own item numbering, a split folder next to the table
    other = tiny_split(seed=7)
    run = tmp_path / "run"
    other.save(run / "split")
    table = np.random.default_rng(0).normal(size=(other.n_items, 8)).astype(np.float32)
    (run / "sasrec").mkdir(parents=True)
    np.save(run / "sasrec" / "item_embeddings.npy", table)
    model = build("maml_pp", **{**META, "epochs": 1, "block": 1, "pretrained": str(run / "sasrec" / "item_embeddings.npy")})
    model.fit(split, validate=False)
    assert model.pretrained_["matched"] > 0 and "original item id" in model.pretrained_["how"]
    # initial values: rebuild the backbone the same way and read its item table before training
    from recsys.models.meta.cold_start import _init_backbone, _new_backbone, _train_mean

    b = _new_backbone(model.config, torch.device("cpu"))
    _init_backbone(b, split, _train_mean(split), model.config)
    emb = b.net_.item_table().detach().numpy()
    ids = other.id_map.items.tolist()
    for i, orig in enumerate(split.id_map.items.tolist()):
        if orig in ids:
            np.testing.assert_array_equal(emb[i], table[ids.index(orig)])


def test_pretrained_embeddings_of_the_wrong_shape_stop_with_a_clear_error(tmp_path):
    split = tiny_split(seed=6)
    np.save(tmp_path / "rows.npy", np.zeros((split.n_items + 3, 8), np.float32))
    with pytest.raises(DataError, match=r"rows but this split has .* items, and no item id map"):
        build("maml_pp", **{**META, "pretrained": str(tmp_path / "rows.npy")}).fit(split)
    np.save(tmp_path / "wide.npy", np.zeros((split.n_items, 5), np.float32))
    with pytest.warns(RuntimeWarning, match="no pretrain split"), \
            pytest.raises(DataError, match="are 5 wide but the backbone's item embeddings are 8"):
        build("melo", **{**META, "pretrained": str(tmp_path / "wide.npy")}).fit(split)


# ---- clear errors -----------------------------------------------------------------------------------


def test_bad_inputs_stop_with_one_clear_error():
    with pytest.raises(DataError, match="have no rating"):
        build("maml_pp", **META).fit(tiny_split(nan=True))
    with pytest.raises(ConfigError, match=r"unknown model 'gru4recc'.*Did you mean 'gru4rec'"):
        build("melo", backbone="gru4recc")
    with pytest.raises(ConfigError, match="has no rating head"):
        build("maml", backbone="ease")
    with pytest.raises(ConfigError, match="max_len=2 is shorter than min_sub_window"):
        build("melo", max_len=2, min_sub_window=2)
    with pytest.raises(ConfigError, match="backbone's max_len=8 is shorter than the task window max_len=30"):
        build("maml_pp", backbone={"model": "gru4rec", "config": backbone_config("gru4rec", {"max_len": 8}).to_dict()})
    with pytest.raises(ConfigError, match="inner_steps"):
        build("maml", inner_steps=-1)
    from recsys.protocols import leave_one_out

    loo = leave_one_out(pd.DataFrame({"user": [0] * 6 + [1] * 6, "item": list(range(6)) * 2,
                                      "rating": [4.0] * 12, "timestamp": list(range(12))}), k_core=1)
    with pytest.raises(DataError, match="trains on a user_split"):
        build("global_mean").fit(loo)
