"""Coverage, item recall, mainstream scores and group reports."""

import json

import numpy as np
import pytest
import recsys_metrics as rm
import scipy.sparse as sp
import torch

from recsys.errors import ConfigError, DataError
from recsys.metrics import (
    catalog_coverage,
    coverage_at_k,
    distributional_coverage,
    evaluate,
    group_report,
    item_recall_at_k,
    mainstream_groups,
    mainstream_scores,
    rank_metrics,
    topk,
)

# ---------------------------------------------------------------- coverage


def test_coverage_two_blocks_hand_case():
    top = np.array([[0, 1], [1, 2], [3, 4], [4, 3], [5, 6]])
    # block 0 = users 0, 1: {0, 1, 2} -> 3; block 1 = users 2, 3: {3, 4} -> 2;
    # user 4 is a partial block and is dropped (POSIT counts whole blocks only)
    assert coverage_at_k(top, k=2, block_size=2) == pytest.approx((3 + 2) / 2)
    # k = 1 uses the first column only: {0, 1} -> 2, {3, 4} -> 2
    assert coverage_at_k(torch.from_numpy(top), k=1, block_size=2) == pytest.approx(2.0)


def test_coverage_bad_parameters():
    top = np.zeros((3, 4), dtype=np.int64)
    with pytest.raises(ConfigError, match="block_size"):
        coverage_at_k(top, k=2, block_size=5)  # fewer users than one block
    with pytest.raises(ConfigError):
        coverage_at_k(top, k=5, block_size=1)  # k wider than the stored lists
    with pytest.raises(ConfigError):
        coverage_at_k(top, k=2, block_size=0)


def test_catalog_and_distributional_coverage_match_recsys_metrics():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.standard_normal((50, 40)).astype(np.float32))
    indexes = torch.arange(40).expand(50, 40).contiguous()
    for k in (1, 5, 12):
        top = topk(scores, k)
        assert catalog_coverage(top, k, 40) == pytest.approx(rm.catalog_coverage(scores, indexes, k=k).item(), rel=1e-6)
        assert distributional_coverage(top, k, 40) == pytest.approx(
            rm.distributional_coverage(scores, indexes, k=k).item(), rel=1e-5
        )
    # hand case: 2 users, top-2 = {0,1} and {0,2}: 3 of 4 items; counts 2,1,1 over 4 slots
    top = np.array([[0, 1], [0, 2]])
    assert catalog_coverage(top, 2, 4) == pytest.approx(3 / 4)
    p = np.array([2, 1, 1]) / 4
    assert distributional_coverage(top, 2, 4) == pytest.approx(-(p * np.log(p)).sum() / np.log(4))


# ---------------------------------------------------------------- item recall


def hand_item_case():
    top = np.array([[0, 1], [2, 3], [0, 2]])
    # held out: u0 {0, 2, 3} (n=3), u1 {0} (n=1), u2 {0, 2} (n=2); 5 items
    rows, cols = [0, 0, 0, 1, 2, 2], [0, 2, 3, 0, 0, 2]
    target = sp.csr_matrix((np.ones(6), (rows, cols)), shape=(3, 5))
    return top, target


def test_item_recall_hand_case():
    top, target = hand_item_case()
    # pairs hit: (u0, 0) yes, (u0, 2) no, (u0, 3) no, (u1, 0) no, (u2, 0) yes, (u2, 2) yes
    r = item_recall_at_k(top, target, 5, 2, denominator="none")
    np.testing.assert_array_equal(r.counts, [3, 0, 2, 1, 0])
    np.testing.assert_allclose(r.hits, [2, 0, 1, 0, 0])
    np.testing.assert_allclose(r.per_item(), [2 / 3, np.nan, 1 / 2, 0, np.nan])
    assert r.mean() == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # items never held out are left out
    # "min": divide each pair by min(k=2, n_u): u0 -> 2, u1 -> 1, u2 -> 2
    r = item_recall_at_k(top, target, 5, 2, denominator="min")
    np.testing.assert_allclose(r.hits, [1 / 2 + 1 / 2, 0, 1 / 2, 0, 0])
    # "n": divide by n_u: u0 -> 3, u2 -> 2
    r = item_recall_at_k(top, target, 5, 2, denominator="n")
    np.testing.assert_allclose(r.hits, [1 / 3 + 1 / 2, 0, 1 / 2, 0, 0])
    # k = 1 uses the first column: only (u0, 0) and (u2, 0) hit
    np.testing.assert_allclose(item_recall_at_k(top, target, 5, 1, denominator="none").hits, [2, 0, 0, 0, 0])


def test_item_recall_sums_to_user_recall():
    # Σ_items hits ("min") = Σ_users Recall@k (min): the per-item decomposition of POSIT
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.standard_normal((30, 25)).astype(np.float32))
    target = sp.random(30, 25, density=0.2, format="csr", random_state=6)
    target.data[:] = 1
    result = evaluate(
        lambda rows: scores[torch.from_numpy(rows)].clone(), np.arange(30), target, None,
        ks=(4,), metrics=("recall",), recall_denominator="min", device="cpu", keep_topk=True,
    )
    for den, key in (("min", "min"), ("n", "n")):
        ir = item_recall_at_k(result.topk, target[result.users], 25, 4, denominator=den)
        user = rank_metrics(scores[result.users], target[result.users], ks=(4,), metrics=("recall",), recall_denominator=key)
        assert ir.hits.sum() == pytest.approx(user["recall@4"].sum().item())
    assert item_recall_at_k(result.topk, target[result.users], 25, 4, denominator="none").counts.sum() == target.nnz


def test_item_recall_bad_parameters():
    top, target = hand_item_case()
    with pytest.raises(ConfigError):
        item_recall_at_k(top, target, 5, 2, denominator="max")
    with pytest.raises(DataError):
        item_recall_at_k(top, target, 6, 2, denominator="min")  # n_items disagrees with target
    with pytest.raises(ConfigError):
        item_recall_at_k(top, target, 5, 3, denominator="min")


# ---------------------------------------------------------------- mainstream scores and groups


def brute_force_ms(x):
    """Dense |U| x |U| Jaccard, self excluded, mean over the other |U| - 1 users."""
    b = x.toarray() != 0
    inter = (b[:, None, :] & b[None, :, :]).sum(-1)
    union = (b[:, None, :] | b[None, :, :]).sum(-1)
    jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.fill_diagonal(jac, 0.0)
    return jac.sum(1) / (len(b) - 1)


def test_mainstream_scores_match_brute_force():
    x = sp.random(23, 17, density=0.3, format="lil", random_state=7)
    x[4, :] = 0  # an empty user scores 0
    x = x.tocsr()
    x.data = np.ceil(x.data * 5)  # ratings 1..5: only the item sets matter
    expected = brute_force_ms(x)
    for bs in (1, 7, 1024):
        np.testing.assert_allclose(mainstream_scores(x, batch_size=bs, device="cpu"), expected, rtol=1e-6, atol=1e-12)
    assert mainstream_scores(x, device="cpu")[4] == 0.0


def test_mainstream_scores_hand_case():
    # users {0,1}, {1,2}, {3}: J(0,1) = 1/3, J(0,2) = J(1,2) = 0; mean over 2 others
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]))
    np.testing.assert_allclose(mainstream_scores(x, device="cpu"), [1 / 6, 1 / 6, 0.0])


def test_mainstream_groups_equal_size_and_order():
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.3, 0.7, 0.2, 0.8, 0.0, 0.6, 0.4, 0.3])
    g = mainstream_groups(scores, n_groups=5)
    # 12 users -> sizes 3, 3, 2, 2, 2 (np.array_split of the sorted order)
    np.testing.assert_array_equal(np.bincount(g), [3, 3, 2, 2, 2])
    # sorted ascending (ties 0.3 at users 3, 4, 11 by index): 8, 1, 6 | 3, 4, 11 | 10, 0 | 9, 5 | 7, 2
    np.testing.assert_array_equal(g, [2, 0, 4, 1, 1, 3, 0, 4, 0, 3, 2, 1])
    # group means increase with the group id
    means = [scores[g == j].mean() for j in range(5)]
    assert means == sorted(means)


def test_mainstream_groups_bad_parameters():
    with pytest.raises(ConfigError):
        mainstream_groups(np.arange(3.0), n_groups=4)
    with pytest.raises(ConfigError):
        mainstream_groups(np.arange(3.0), n_groups=0)


def test_group_report():
    groups = np.array([0, 0, 1, 1, 2, 2])  # one group id per user id
    users = np.array([5, 0, 2, 1])  # evaluated users; group 2 has user 5 only ...
    per_user = {"ndcg@20": np.array([0.9, 0.1, 0.4, 0.3])}
    rep = group_report(per_user, groups, users, names=("low", "medium", "high"))
    assert rep["groups"]["low"] == {"n_users": 2, "ndcg@20": pytest.approx((0.1 + 0.3) / 2)}  # users 0, 1
    assert rep["groups"]["medium"] == {"n_users": 1, "ndcg@20": pytest.approx(0.4)}  # user 2
    assert rep["groups"]["high"] == {"n_users": 1, "ndcg@20": pytest.approx(0.9)}  # user 5
    assert rep["overall"] == {"n_users": 4, "ndcg@20": pytest.approx(1.7 / 4)}
    json.dumps(rep, allow_nan=False)
    # an empty group reports None; default names cover 5 groups
    rep = group_report({"hit@10": np.array([1.0, 0.0])}, np.array([0, 4]))
    assert rep["groups"]["medium"] == {"n_users": 0, "hit@10": None}
    assert list(rep["groups"]) == ["low", "med-low", "medium", "med-high", "high"]
    with pytest.raises(ConfigError):
        group_report(per_user, groups, users, names=("a", "b"))
    with pytest.raises(DataError):
        group_report(per_user, groups, users[:3], names=("a", "b", "c"))
