"""Ranking metrics: hand cases, vae_cf oracles, recsys-metrics agreement / known differences,
masking, ties, batching invariance, skipped users, bad parameters."""

import json

import numpy as np
import pytest
import recsys_metrics as rm
import scipy.sparse as sp
import torch

from recsys.errors import ConfigError, DataError
from recsys.metrics import METRICS, evaluate, rank_metrics, topk


def one_user(scores, relevant, n_items=None):
    """scores [1, I] tensor and a [1, I] CSR target from a list of relevant items."""
    s = torch.tensor([scores], dtype=torch.float32)
    t = sp.csr_matrix((np.ones(len(relevant)), ([0] * len(relevant), relevant)), shape=s.shape)
    return s, t


def random_case(n_users=40, n_items=60, seed=0, density=0.1):
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.standard_normal((n_users, n_items)).astype(np.float32))
    target = sp.random(n_users, n_items, density=density, format="csr", random_state=seed + 1)
    target.data[:] = 1
    exclude = sp.random(n_users, n_items, density=density, format="csr", random_state=seed + 2)
    exclude.data[:] = 1
    exclude = exclude - exclude.multiply(target)  # protocols keep fold-in and held-out disjoint
    exclude.eliminate_zeros()
    return scores, target.tocsr(), exclude.tocsr()


# ---------------------------------------------------------------- hand-computed cases


def test_hand_case_all_metrics():
    # ranking = items 0,1,2,3,4,5; relevant = {1, 3, 5} (n = 3)
    s, t = one_user([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 3, 5])
    out = rank_metrics(s, t, ks=(2, 4), recall_denominator="min")
    # k = 4: hits at ranks 2 and 4 -> [0, 1, 0, 1]
    assert out["precision@4"].item() == pytest.approx(2 / 4)
    assert out["recall@4"].item() == pytest.approx(2 / 3)  # / min(4, 3)
    dcg = 1 / np.log2(3) + 1 / np.log2(5)  # ranks 2 and 4 -> log2(rank + 1)
    idcg = 1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)  # min(4, 3) = 3 ideal positions
    assert out["ndcg@4"].item() == pytest.approx(dcg / idcg)  # 1.06161 / 2.13093 = 0.49819
    assert out["map@4"].item() == pytest.approx((1 / 2 + 2 / 4) / 3)  # P@2 + P@4 over min(4, 3)
    assert out["mrr@4"].item() == pytest.approx(1 / 2)
    assert out["hit@4"].item() == 1.0
    # k = 2: hits [0, 1]
    assert out["precision@2"].item() == pytest.approx(1 / 2)
    assert out["recall@2"].item() == pytest.approx(1 / 2)  # / min(2, 3)
    assert out["ndcg@2"].item() == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    assert out["map@2"].item() == pytest.approx((1 / 2) / 2)
    assert out["mrr@2"].item() == pytest.approx(1 / 2)
    out_n = rank_metrics(s, t, ks=(2,), metrics=("recall",), recall_denominator="n")
    assert out_n["recall@2"].item() == pytest.approx(1 / 3)  # / n = 3


def test_no_hit_gives_zero():
    s, t = one_user([0.9, 0.8, 0.1, 0.0], [3])
    out = rank_metrics(s, t, ks=(2,), recall_denominator="min")
    assert all(v.item() == 0.0 for v in out.values())


def test_recall_differs_from_recsys_metrics():
    # 2 hits of 5 relevant at k = 2
    s, t = one_user([9, 8, 7, 6, 5, 4, 3, 2], [0, 1, 4, 5, 6])
    lib = rm.recall(s, torch.from_numpy(t.toarray()), k=2).item()
    ours_min = rank_metrics(s, t, ks=(2,), metrics=("recall",), recall_denominator="min")["recall@2"].item()
    ours_n = rank_metrics(s, t, ks=(2,), metrics=("recall",), recall_denominator="n")["recall@2"].item()
    assert lib == pytest.approx(0.4)  # 2 / 5
    assert ours_min == pytest.approx(1.0)  # 2 / min(2, 5)
    assert ours_n == pytest.approx(0.4)  # 2 / 5, the library's convention


def test_map_differs_from_recsys_metrics():
    # one hit at rank 1 of 3 relevant, k = 3
    s, t = one_user([9, 8, 7, 6, 5], [0, 3, 4])
    lib = rm.mean_average_precision(s, torch.from_numpy(t.toarray()), k=3).item()
    ours = rank_metrics(s, t, ks=(3,), metrics=("map",), recall_denominator="min")["map@3"].item()
    assert lib == pytest.approx(1.0)  # library: (1 * P@1) / #hits(=1)
    assert ours == pytest.approx(1 / 3)  # RecBole: (1 * P@1) / min(3, 3)


# ---------------------------------------------------------------- oracles on random data


def vaecf_ndcg(x_pred, heldout, k):
    """NDCG_binary_at_k_batch as described for dawenl/vae_cf."""
    b = np.arange(x_pred.shape[0])[:, None]
    part = np.argpartition(-x_pred, k, axis=1)[:, :k]
    top = part[b, np.argsort(-x_pred[b, part], axis=1)]
    tp = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (heldout[b, top] * tp).sum(1)
    idcg = np.array([tp[: min(int(n), k)].sum() for n in heldout.sum(1)])
    return dcg / idcg


def vaecf_recall(x_pred, heldout, k):
    """Recall_at_k_batch as described for dawenl/vae_cf: hits / min(k, n)."""
    b = np.arange(x_pred.shape[0])[:, None]
    pred = np.zeros_like(x_pred, dtype=bool)
    pred[b, np.argpartition(-x_pred, k, axis=1)[:, :k]] = True
    true = heldout > 0
    return (true & pred).sum(1) / np.minimum(k, true.sum(1))


@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_vaecf_formulas(k):
    scores, target, exclude = random_case(seed=k)
    keep = np.diff(target.indptr) > 0
    x = scores.numpy().copy()
    x[exclude.toarray() > 0] = -np.inf  # vae_cf masks fold-in items with -inf
    out = rank_metrics(scores, target, ks=(k,), metrics=("recall", "ndcg"), recall_denominator="min", exclude=exclude)
    held = target.toarray()[keep]
    np.testing.assert_allclose(out[f"ndcg@{k}"].numpy()[keep], vaecf_ndcg(x[keep], held, k), rtol=1e-6)
    np.testing.assert_allclose(out[f"recall@{k}"].numpy()[keep], vaecf_recall(x[keep], held, k), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 7, 30])
def test_agrees_with_recsys_metrics_where_it_is_right(k):
    scores, target, exclude = random_case(seed=10 + k)
    keep = np.diff(target.indptr) > 0
    masked = scores.clone()
    masked[torch.from_numpy(exclude.toarray() > 0)] = float("-inf")
    dense = torch.from_numpy(target.toarray()[keep] > 0)
    out = rank_metrics(scores, target, ks=(k,), recall_denominator="n", exclude=exclude)
    lib = {
        "precision": rm.precision,
        "ndcg": rm.normalized_dcg,
        "mrr": rm.mean_reciprocal_rank,
        "hit": rm.hit_rate,
        "recall": rm.recall,  # equals our denominator="n"
    }
    for name, fn in lib.items():
        expected = fn(masked[keep], dense, k=k, reduction="none").double().numpy()
        np.testing.assert_allclose(out[f"{name}@{k}"].numpy()[keep], expected, rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------- masking and ties


def test_excluded_relevant_item_never_counts():
    # item 0 is relevant, scored highest, and excluded
    s, t = one_user([9, 1, 2, 3], [0, 1])
    excl = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    out = rank_metrics(s, t, ks=(1, 4), recall_denominator="n", exclude=excl)
    # top-1 = item 3 (item 0 masked): no hit
    assert out["hit@1"].item() == 0.0
    # k = 4 reaches the -inf item 0 at rank 4, yet only item 1 (rank 3) counts: 1 hit of n = 2
    assert out["precision@4"].item() == pytest.approx(1 / 4)
    assert out["recall@4"].item() == pytest.approx(1 / 2)
    # a bool-tensor exclude behaves the same
    out_t = rank_metrics(s, t, ks=(1, 4), recall_denominator="n", exclude=torch.tensor([[True, False, False, False]]))
    assert all(torch.equal(out[key], out_t[key]) for key in out)


def test_topk_masks_on_a_copy_unless_inplace():
    s = torch.tensor([[3.0, 2.0, 1.0]])
    excl = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 3))
    assert topk(s, 2, excl).tolist() == [[1, 2]]
    assert s[0, 0].item() == 3.0
    topk(s, 2, excl, inplace=True)
    assert s[0, 0].item() == float("-inf")


def test_topk_ties_broken_by_lower_index():
    assert topk(torch.zeros(2, 6), 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    # the k-th value (2) is tied across the boundary: items 1, 2, 3, 5 hold it
    s = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0, 5.0]])
    assert topk(s, 3).tolist() == [[6, 1, 2]]
    # ties inside the top-k are ordered by index as well
    assert topk(torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]), 4).tolist() == [[1, 2, 4, 0]]


def test_nan_scores_raise():
    with pytest.raises(DataError, match="NaN"):
        topk(torch.tensor([[0.1, float("nan"), 0.3]]), 2)


# ---------------------------------------------------------------- evaluate()


def run_eval(scores, target, exclude, batch_size, **kw):
    return evaluate(
        lambda rows: scores[torch.from_numpy(rows)].clone(),
        np.arange(scores.shape[0]),
        target,
        exclude,
        ks=(3, 10),
        recall_denominator="min",
        batch_size=batch_size,
        device="cpu",
        keep_topk=True,
        **kw,
    )


def test_batching_invariance():
    scores, target, exclude = random_case(n_users=37)
    results = [run_eval(scores, target, exclude, b) for b in (1, 7, 1024)]
    for r in results[1:]:
        np.testing.assert_array_equal(r.users, results[0].users)
        np.testing.assert_array_equal(r.topk, results[0].topk)
        for key in r.per_user:
            np.testing.assert_array_equal(r.per_user[key], results[0].per_user[key])
    # and it equals one rank_metrics call on the evaluated rows
    rows = results[0].users
    direct = rank_metrics(scores[rows], target[rows], ks=(3, 10), recall_denominator="min", exclude=exclude[rows])
    for key, v in direct.items():
        np.testing.assert_allclose(results[0].per_user[key], v.numpy())


def test_skipped_users_and_summary():
    scores, target, exclude = random_case(n_users=20)
    target = target.tolil()
    target[[2, 5], :] = 0  # users 2 and 5 have nothing held out
    target = target.tocsr()
    assert target.indptr[5] > target.indptr[4]
    target.data[target.indptr[4] : target.indptr[5]] = 0  # user 4: stored explicit zeros only
    nnz = target.nnz
    r = run_eval(scores, target, exclude, 8)
    assert target.nnz == nnz  # the caller's matrix is left alone
    assert r.n_skipped == 3 and set(r.skipped_users) == {2, 4, 5}
    assert len(r.users) == 17 and r.topk.shape == (17, 10)
    assert set(r.mean()) == set(r.per_user) == set(r.definitions())
    assert np.isfinite(list(r.mean().values())).all()
    summary = json.loads(json.dumps(r.summary()))
    assert summary["n_skipped"] == 3 and summary["recall_denominator"] == "min"
    assert "min(10, |R|)" in summary["definitions"]["recall@10"]


def test_evaluate_subset_of_users_and_score_fn_rows():
    scores, target, exclude = random_case(n_users=30)
    seen = []

    def score_fn(rows):
        seen.extend(rows.tolist())
        return scores[torch.from_numpy(rows)].clone()

    users = np.array([29, 3, 17, 8])
    users = users[np.diff(target.indptr)[users] > 0]
    r = evaluate(score_fn, users, target, exclude, ks=(5,), recall_denominator="n", batch_size=3, device="cpu")
    assert seen == users.tolist() and r.users.tolist() == users.tolist()


def test_evaluate_rejects_bad_score_shape():
    scores, target, exclude = random_case(n_users=5)
    with pytest.raises(DataError, match="shape"):
        evaluate(lambda rows: scores[:, :-1], np.arange(5), target, exclude, recall_denominator="min", ks=(5,), device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    scores, target, exclude = random_case(n_users=300, n_items=500)
    scores[:, :50] = 0.0  # ties across the k boundary must resolve the same way on both devices
    cpu = run_eval(scores, target, exclude, 64)
    gpu = evaluate(
        lambda rows: scores[torch.from_numpy(rows)].cuda(),
        np.arange(300), target, exclude, ks=(3, 10), recall_denominator="min", batch_size=64, device="cuda", keep_topk=True,
    )
    np.testing.assert_array_equal(cpu.topk, gpu.topk)
    for key in cpu.per_user:
        np.testing.assert_allclose(cpu.per_user[key], gpu.per_user[key], rtol=1e-12)


# ---------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    "kw",
    [
        dict(ks=(0,)),
        dict(ks=(-5,)),
        dict(ks=(2.5,)),
        dict(ks=(1000,)),  # more than the number of items
        dict(metrics=("ndcg", "auc")),
        dict(recall_denominator="k"),
        dict(recall_denominator=None),
    ],
)
def test_bad_parameters_raise_config_error(kw):
    s, t = one_user([3, 2, 1], [0])
    args = dict(ks=(2,), metrics=METRICS, recall_denominator="min") | kw
    with pytest.raises(ConfigError):
        rank_metrics(s, t, **args)


def test_recall_denominator_is_required():
    s, t = one_user([3, 2, 1], [0])
    with pytest.raises(TypeError):
        rank_metrics(s, t, ks=(2,))


def test_bad_batch_size():
    scores, target, exclude = random_case(n_users=5)
    with pytest.raises(ConfigError):
        run_eval(scores, target, exclude, 0)


def test_dense_tensor_inputs_equal_csr_inputs():
    scores, target, exclude = random_case(seed=4)
    sparse = rank_metrics(scores, target, ks=(5,), recall_denominator="min", exclude=exclude)
    dense_target = torch.from_numpy(target.toarray() > 0)
    before = dense_target.clone()
    dense = rank_metrics(
        scores, dense_target, ks=(5,), recall_denominator="min",
        exclude=torch.from_numpy(exclude.toarray() > 0),
    )
    for key in sparse:
        torch.testing.assert_close(sparse[key], dense[key], equal_nan=True)
    assert torch.equal(dense_target, before)  # the caller's target is not modified
