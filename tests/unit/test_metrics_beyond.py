"""Beyond-accuracy metrics: hand cases, edge cases, pure-Python and scipy references, bad input."""

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
import torch

from recsys.errors import ConfigError, DataError
from recsys.metrics.beyond import (
    BEYOND_METRICS,
    aplt,
    average_recommended_popularity,
    beyond_accuracy,
    catalogue_coverage,
    exposure_counts,
    exposure_entropy,
    gini_index,
    item_popularity,
    long_tail_items,
    novelty,
)
from recsys.metrics.coverage import catalog_coverage, distributional_coverage

# ---------------------------------------------------------------- hand case
# 5 items, 3 users, top-2 lists {0,1}, {0,2}, {0,1}
# exposure@2: c = [3, 2, 1, 0, 0] (sum 6 = 3 users * 2); exposure@1: c = [3, 0, 0, 0, 0]
# training matrix, 4 users: u0 {0,1,2}, u1 {0,1}, u2 {0}, u3 {3} -> pop = [3, 2, 1, 1, 0], N = 4

TOP = np.array([[0, 1], [0, 2], [0, 1]])
N_ITEMS = 5


def hand_train():
    rows, cols = [0, 0, 0, 1, 1, 2, 3], [0, 1, 2, 0, 1, 0, 3]
    return sp.csr_matrix((np.ones(7), (rows, cols)), shape=(4, N_ITEMS))


def test_exposure_and_popularity_hand_case():
    np.testing.assert_array_equal(exposure_counts(TOP, 2, N_ITEMS), [3, 2, 1, 0, 0])
    np.testing.assert_array_equal(exposure_counts(TOP, 1, N_ITEMS), [3, 0, 0, 0, 0])
    pop, n_train = item_popularity(hand_train())
    np.testing.assert_array_equal(pop, [3, 2, 1, 1, 0])
    assert n_train == 4


def test_coverage_hand_case():
    assert catalogue_coverage(TOP, 2, N_ITEMS) == pytest.approx(3 / 5)  # {0, 1, 2}
    assert catalogue_coverage(TOP, 1, N_ITEMS) == pytest.approx(1 / 5)  # {0}


def test_gini_hand_case():
    # k=2: x = [0, 0, 1, 2, 3], weights 2j - n - 1 = [-4, -2, 0, 2, 4] -> 0 + 0 + 0 + 4 + 12 = 16;
    # n * sum x = 5 * 6 = 30 -> 16/30
    assert gini_index(TOP, 2, N_ITEMS) == pytest.approx(16 / 30)
    # k=1: x = [0, 0, 0, 0, 3] -> 4 * 3 / (5 * 3) = 0.8 (= 1 - k/n, one item takes everything)
    assert gini_index(TOP, 1, N_ITEMS) == pytest.approx(0.8)


def test_entropy_hand_case():
    # k=2: p = [3/6, 2/6, 1/6] -> ½ ln 2 + ⅓ ln 3 + ⅙ ln 6 = 0.34657 + 0.36620 + 0.29863 = 1.0114043
    assert exposure_entropy(TOP, 2, N_ITEMS) == pytest.approx(1.0114042647073518)
    assert exposure_entropy(TOP, 2, N_ITEMS, normalise=True) == pytest.approx(1.0114042647073518 / math.log(5))
    assert exposure_entropy(TOP, 1, N_ITEMS) == 0.0  # p = [1]: one item, 0 ln 0 terms dropped


def test_arp_hand_case():
    # pop = [3, 2, 1, 1, 0]: u0 (3+2)/2 = 2.5, u1 (3+1)/2 = 2, u2 2.5 -> 7/3
    assert average_recommended_popularity(TOP, 2, hand_train()) == pytest.approx(7 / 3)
    assert average_recommended_popularity(TOP, 1, hand_train()) == pytest.approx(3.0)  # item 0 for all


def test_long_tail_and_aplt_hand_case():
    pop = np.array([3, 2, 1, 1, 0])
    # popularity order, ties to the lower index: 0, 1, 2, 3, 4
    # 0.8: tail = floor(4.0) = 4 items, head = {0}
    np.testing.assert_array_equal(long_tail_items(pop, 0.8), [False, True, True, True, True])
    # 0.6: tail = floor(3.0) = 3, head = {0, 1}
    np.testing.assert_array_equal(long_tail_items(pop, 0.6), [False, False, True, True, True])
    # 0.5: tail = floor(2.5) = 2, head = ceil(2.5) = 3 = {0, 1, 2}: items 2 and 3 tie at pop 1,
    # the lower index (2) goes to the head
    np.testing.assert_array_equal(long_tail_items(pop, 0.5), [False, False, False, True, True])
    # 0.8 on 10 items: 0.8 * 10 must give a tail of 8 (float 1 - 0.8 = 0.19999... must not matter)
    assert long_tail_items(np.arange(10), 0.8).sum() == 8
    assert long_tail_items(np.arange(10), 0.7).sum() == 7

    train = hand_train()
    # 0.8 (tail {1,2,3,4}): every user has exactly one tail item of 2 -> 0.5
    assert aplt(TOP, 2, train) == pytest.approx(0.5)
    # 0.6 (tail {2,3,4}): u0 0, u1 1/2, u2 0 -> 1/6
    assert aplt(TOP, 2, train, tail_fraction=0.6) == pytest.approx(1 / 6)
    assert aplt(TOP, 2, train, tail_fraction=0.5) == 0.0
    assert aplt(TOP, 1, train) == 0.0  # item 0 is the head


def test_novelty_hand_case():
    # self-information log2((N+1)/(pop+1)), N = 4: item 0 log2(5/4) = 0.32193,
    # item 1 log2(5/3) = 0.73697, item 2 log2(5/2) = 1.32193;
    # u0 (0.32193 + 0.73697)/2 = 0.52945, u1 (0.32193 + 1.32193)/2 = 0.82193, u2 0.52945
    # -> mean 0.6269406
    assert novelty(TOP, 2, hand_train()) == pytest.approx(0.6269405946469769)
    # a never-trained item (4, pop 0) is finite: log2(5) = 2.32193; item 3 (pop 1): log2(5/2)
    assert novelty(np.array([[4], [3]]), 1, hand_train()) == pytest.approx((math.log2(5) + math.log2(2.5)) / 2)
    # an item every training user has gets 0 bits
    everyone = sp.csr_matrix(np.array([[1, 0], [1, 1]]))
    assert novelty(np.array([[0]]), 1, everyone) == 0.0


def test_beyond_accuracy_hand_case():
    out = beyond_accuracy(TOP, hand_train(), ks=(1, 2))
    assert set(out) == {f"{m}@{k}" for m in BEYOND_METRICS for k in (1, 2)}
    expected = {
        "coverage@2": 3 / 5, "gini@2": 16 / 30, "entropy@2": 1.0114042647073518,
        "arp@2": 7 / 3, "aplt@2": 0.5, "novelty@2": 0.6269405946469769,
        "coverage@1": 1 / 5, "gini@1": 0.8, "entropy@1": 0.0,
        "arp@1": 3.0, "aplt@1": 0.0, "novelty@1": math.log2(5 / 4),
    }
    assert out == pytest.approx(expected)
    assert all(type(v) is float for v in out.values())
    out = beyond_accuracy(TOP, hand_train(), ks=(2,), n_items=5, tail_fraction=0.6)
    assert out["aplt@2"] == pytest.approx(1 / 6)


# ---------------------------------------------------------------- edge cases


def test_everyone_gets_the_same_list():
    n, k = 6, 3
    top = np.tile([2, 0, 1], (4, 1))
    # c = [4, 4, 4, 0, 0, 0]: coverage k/n; gini sum_{j=4..6}(2j-7)*4 / (6*12) = (1+3+5)*4/72 = 1 - k/n
    assert catalogue_coverage(top, k, n) == pytest.approx(k / n)
    assert gini_index(top, k, n) == pytest.approx(1 - k / n)
    assert gini_index(top, 1, n) == pytest.approx(1 - 1 / n)
    assert exposure_entropy(top, k, n) == pytest.approx(math.log(k))


def test_perfectly_even_exposure():
    n, k = 8, 3
    top = (np.arange(n)[:, None] + np.arange(k)) % n  # cyclic shifts: every item in exactly k lists
    np.testing.assert_array_equal(exposure_counts(top, k, n), np.full(n, k))
    assert gini_index(top, k, n) == pytest.approx(0.0, abs=1e-12)
    assert exposure_entropy(top, k, n) == pytest.approx(math.log(n))
    assert exposure_entropy(top, k, n, normalise=True) == pytest.approx(1.0)
    assert catalogue_coverage(top, k, n) == 1.0


def test_single_item_catalogue():
    top = np.zeros((3, 1), dtype=np.int64)
    assert gini_index(top, 1, 1) == 0.0
    assert exposure_entropy(top, 1, 1) == 0.0
    with pytest.raises(ConfigError, match="n_items >= 2"):
        exposure_entropy(top, 1, 1, normalise=True)


def test_tensor_input_and_narrow_dtypes():
    t = torch.from_numpy(TOP)
    assert gini_index(t, 2, N_ITEMS) == pytest.approx(16 / 30)
    assert beyond_accuracy(t, hand_train(), ks=(2,)) == pytest.approx(beyond_accuracy(TOP, hand_train(), ks=(2,)))
    assert catalogue_coverage(TOP.astype(np.uint8), 2, N_ITEMS) == pytest.approx(3 / 5)


def test_train_conventions_duplicates_explicit_zeros_dense():
    # COO with (0,0) twice (one interaction), an explicit zero at (1,1) (no interaction), row 2 empty
    coo = sp.coo_matrix(([1.0, 1.0, 0.0, 1.0], ([0, 0, 1, 1], [0, 0, 1, 2])), shape=(3, 3))
    for train in (coo, coo.tocsr(), coo.toarray()):
        pop, n_train = item_popularity(train)
        np.testing.assert_array_equal(pop, [1, 0, 1])
        assert n_train == 2  # the empty row is not a training user
    # a non-canonical CSR (duplicate column in a row) is summed first, not counted twice
    dup = sp.csr_matrix((np.ones(3), np.array([0, 0, 1]), np.array([0, 2, 3])), shape=(2, 2))
    np.testing.assert_array_equal(item_popularity(dup)[0], [1, 1])
    # rating values are ignored: a 5-star entry is one interaction
    np.testing.assert_array_equal(item_popularity(np.array([[5.0, 0.0], [3.0, 1.0]]))[0], [2, 1])


# ---------------------------------------------------------------- pure-Python references


def ref_counts(lists, k, n):
    c = Counter(i for row in lists for i in row[:k])
    return [c.get(i, 0) for i in range(n)]


def ref_coverage(lists, k, n):
    return len({i for row in lists for i in row[:k]}) / n


def ref_gini(lists, k, n):
    """Mean-absolute-difference form: sum_ij |x_i - x_j| / (2 n^2 mean) (independent of sorting)."""
    x = ref_counts(lists, k, n)
    mean = sum(x) / n
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * mean)


def recbole_gini(lists, k, n):
    """RecBole's GiniIndex.get_gini, transcribed (with num_items = n, no padding item)."""
    sorted_count = sorted(Counter(i for row in lists for i in row[:k]).values())
    m, total = len(sorted_count), len(lists) * k
    return sum((2 * j - n - 1) * c for j, c in zip(range(n - m + 1, n + 1), sorted_count)) / total / n


def ref_entropy(lists, k, n):
    total = len(lists) * k
    return -sum(c / total * math.log(c / total) for c in ref_counts(lists, k, n) if c > 0)


def ref_popularity(train):
    coo = sp.coo_matrix(train)
    pairs = {(u, i) for u, i, v in zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist()) if v != 0}
    pop = [0] * train.shape[1]
    for _, i in pairs:
        pop[i] += 1
    return pop, len({u for u, _ in pairs})


def ref_arp(lists, k, train):
    pop, _ = ref_popularity(train)
    return sum(sum(pop[i] for i in row[:k]) / k for row in lists) / len(lists)


def ref_tail(train, tail_fraction):
    pop, _ = ref_popularity(train)
    n = len(pop)
    n_head = n - math.floor(Fraction(str(tail_fraction)) * n)  # = ceil((1 - f) * n), exactly
    order = sorted(range(n), key=lambda i: (-pop[i], i))
    return set(order[n_head:])


def ref_aplt(lists, k, train, tail_fraction):
    tail = ref_tail(train, tail_fraction)
    return sum(sum(i in tail for i in row[:k]) / k for row in lists) / len(lists)


def ref_novelty(lists, k, train):
    pop, n_users = ref_popularity(train)
    return sum(sum(-math.log2((pop[i] + 1) / (n_users + 1)) for i in row[:k]) / k for row in lists) / len(lists)


def random_case(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, width, n_train = 40, 30, 12, 25
    # skewed scores: low item ids are recommended far more often
    scores = rng.standard_normal((n_users, n_items)) - 0.15 * np.arange(n_items)
    top = np.argsort(-scores, axis=1)[:, :width]
    prob = np.linspace(0.6, 0.0, n_items)  # the last items are never trained on
    train = sp.csr_matrix((rng.random((n_train, n_items)) < prob).astype(np.float32))
    return top, train, n_items


@pytest.mark.parametrize("seed", [0, 1])
def test_against_pure_python_references(seed):
    top, train, n = random_case(seed)
    lists = top.tolist()
    assert min(ref_popularity(train)[0]) == 0  # the case has never-trained items
    for k in (1, 5, 12):
        assert exposure_counts(top, k, n).tolist() == ref_counts(lists, k, n)
        assert catalogue_coverage(top, k, n) == pytest.approx(ref_coverage(lists, k, n))
        assert gini_index(top, k, n) == pytest.approx(ref_gini(lists, k, n))
        assert gini_index(top, k, n) == pytest.approx(recbole_gini(lists, k, n))
        h = exposure_entropy(top, k, n)
        assert h == pytest.approx(ref_entropy(lists, k, n))
        assert h == pytest.approx(scipy.stats.entropy(ref_counts(lists, k, n)))  # normalises counts, nats
        h_scipy = scipy.stats.entropy(ref_counts(lists, k, n))
        assert exposure_entropy(top, k, n, normalise=True) == pytest.approx(h_scipy / math.log(n))
        assert average_recommended_popularity(top, k, train) == pytest.approx(ref_arp(lists, k, train))
        assert novelty(top, k, train) == pytest.approx(ref_novelty(lists, k, train))
        for f in (0.8, 0.5, 0.7):
            assert aplt(top, k, train, tail_fraction=f) == pytest.approx(ref_aplt(lists, k, train, f))
    out = beyond_accuracy(top, train, ks=(5, 12), tail_fraction=0.7)
    for k in (5, 12):
        assert out[f"coverage@{k}"] == pytest.approx(ref_coverage(lists, k, n))
        assert out[f"gini@{k}"] == pytest.approx(ref_gini(lists, k, n))
        assert out[f"entropy@{k}"] == pytest.approx(ref_entropy(lists, k, n))
        assert out[f"arp@{k}"] == pytest.approx(ref_arp(lists, k, train))
        assert out[f"aplt@{k}"] == pytest.approx(ref_aplt(lists, k, train, 0.7))
        assert out[f"novelty@{k}"] == pytest.approx(ref_novelty(lists, k, train))


def test_agrees_with_coverage_module():
    top, _, n = random_case(2)
    for k in (1, 7):
        assert catalogue_coverage(top, k, n) == pytest.approx(catalog_coverage(top, k, n))
        assert exposure_entropy(top, k, n, normalise=True) == pytest.approx(distributional_coverage(top, k, n))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "top, match",
    [
        (np.array([0, 1, 2]), "2-D"),
        (np.zeros((2, 2, 2), dtype=np.int64), "2-D"),
        (np.array([[0.0, 1.0]]), "integer"),
        (np.array([[True, False]]), "integer"),
        (np.zeros((0, 2), dtype=np.int64), "empty"),
        (np.zeros((2, 0), dtype=np.int64), "empty"),
        (np.array([[0, 5]]), "item index 5"),
        (np.array([[-1, 0]]), "item index -1"),
    ],
)
def test_bad_topk_raises_data_error(top, match):
    for call in (
        lambda: catalogue_coverage(top, 1, N_ITEMS),
        lambda: gini_index(top, 1, N_ITEMS),
        lambda: novelty(top, 1, hand_train()),
        lambda: beyond_accuracy(top, hand_train(), ks=(1,)),
    ):
        with pytest.raises(DataError, match=match):
            call()


@pytest.mark.parametrize("k", [0, 3, -1, True, 1.0, "2"])
def test_bad_k_raises_config_error(k):
    with pytest.raises(ConfigError, match=r"k must be an integer in 1\.\.2"):
        gini_index(TOP, k, N_ITEMS)
    with pytest.raises(ConfigError, match=r"1\.\.2"):
        aplt(TOP, k, hand_train())
    with pytest.raises(ConfigError, match=r"1\.\.2"):
        beyond_accuracy(TOP, hand_train(), ks=(1, k))


def test_bad_train_and_settings():
    with pytest.raises(DataError, match="n_items=6"):
        beyond_accuracy(TOP, hand_train(), ks=(1,), n_items=6)  # train has 5 item columns
    with pytest.raises(DataError, match="item index 2"):
        # topk names items the 2-column train lacks
        average_recommended_popularity(TOP, 2, sp.csr_matrix(np.ones((2, 2))))
    with pytest.raises(DataError, match="2-D"):
        novelty(TOP, 1, np.ones(5))
    with pytest.raises(DataError, match="no interactions"):
        beyond_accuracy(TOP, sp.csr_matrix((3, 5)), ks=(1,))
    for f in (0, 1, 1.5, -0.2, True, "0.8"):
        with pytest.raises(ConfigError, match="tail_fraction"):
            beyond_accuracy(TOP, hand_train(), ks=(1,), tail_fraction=f)
    with pytest.raises(ConfigError, match="ks is empty"):
        beyond_accuracy(TOP, hand_train(), ks=())
    with pytest.raises(ConfigError, match="n_items"):
        catalogue_coverage(TOP, 1, 0)
