"""LOCA's coverage anchors without the [candidates, U] cover matrix: the lazy greedy picks exactly
the anchors of the plain greedy over the full matrix (kept here as the reference), on seeded
embedding sets with ties, with everyone covered before the last anchor, with uncoverable users,
and when a row recomputed alone differs from its row inside a block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.errors import ConfigError
from recsys.models.local import neighbourhoods
from recsys.models.local.neighbourhoods import angular_distance, kernel, select_anchors

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(embeddings, n_anchors, bandwidth=0.4, kind="epanechnikov", stride=10, block=2048):
    """The previous implementation: a dense bool [n_candidates, U] cover matrix."""
    n_users = embeddings.shape[0]
    cand = torch.arange(0, n_users, stride)
    if len(cand) < n_anchors:
        cand = torch.arange(n_users)
    covers = torch.cat([
        kernel(angular_distance(embeddings[cand[i : i + block]], embeddings), bandwidth, kind) > 0
        for i in range(0, len(cand), block)
    ])
    uncovered = torch.ones(n_users, dtype=torch.bool)
    used = torch.zeros(len(cand), dtype=torch.bool)
    anchors = []
    for _ in range(n_anchors):
        gain = (covers & uncovered).sum(1).masked_fill(used, -1)
        j = int(torch.argmax(gain))
        used[j] = True
        uncovered &= ~covers[j]
        anchors.append(int(cand[j]))
    return np.asarray(anchors, dtype=np.int64), bool(uncovered.any())


def _clustered(seed, n_users=1500, dim=16, n_clusters=12, noise=0.5):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_clusters, dim, generator=gen)
    assign = torch.randint(n_clusters, (n_users,), generator=gen)
    return centers[assign] + noise * torch.randn(n_users, dim, generator=gen)


def _tied(seed, n_users=1200, dim=6, n_points=15):
    """Few distinct points, each repeated: many candidates with identical cover sets."""
    gen = torch.Generator().manual_seed(seed)
    points = torch.randint(-2, 3, (n_points, dim), generator=gen).float()
    return points[torch.randint(n_points, (n_users,), generator=gen)]


def _check(emb, n_anchors, **kw):
    want, _ = _reference(emb, n_anchors, **kw)
    got = select_anchors(emb, n_anchors, "coverage", **kw)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64 and len(set(got.tolist())) == n_anchors


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["epanechnikov", "uniform", "triangular"])
def test_same_anchors_as_dense_greedy(seed, kind):
    emb = _clustered(seed)
    bandwidth = (0.15, 0.25, 0.4)[seed % 3]
    _check(emb, 40, bandwidth=bandwidth, kind=kind, block=(2048, 37, 64)[seed % 3])


@pytest.mark.parametrize("seed", range(4))
def test_ties_between_identical_candidates(seed):
    emb = _tied(seed)
    _check(emb, 30, bandwidth=0.2)
    _check(emb, 30, bandwidth=0.2, stride=7, block=16)


@pytest.mark.parametrize("seed", range(3))
def test_everyone_covered_before_the_last_anchor(seed):
    emb = _clustered(seed, n_clusters=4, noise=0.2)
    _, left = _reference(emb, 60, bandwidth=0.5)
    assert not left  # the case under test: the rest are the lowest-index unused candidates
    _check(emb, 60, bandwidth=0.5)
    _check(_tied(seed), 100, bandwidth=0.6, stride=5, block=50)


def test_fewer_candidates_than_anchors_and_stride_one():
    emb = _clustered(7, n_users=120, dim=5)
    _check(emb, 20, stride=10)  # 12 candidates < 20 anchors: every user is a candidate
    _check(emb, 30, stride=1, block=25)
    _check(emb, 120, stride=1, bandwidth=0.3)  # every user an anchor


def test_uncoverable_users_and_random_gaussian():
    emb = _clustered(3, n_users=800)
    emb[::7] = 0.0  # zero embeddings: distance 1 to everyone, covered by no one, not even themselves
    _check(emb, 50, bandwidth=0.3)
    _check(torch.randn(900, 40, generator=torch.Generator().manual_seed(1)), 25, bandwidth=0.45)


def test_row_recomputed_alone_differing_from_its_block_falls_back_to_the_block(monkeypatch):
    """If a row recomputed outside its block came out different (BLAS blocking), the fingerprint
    catches it and the row is taken from its whole block recomputed: the anchors do not change."""
    emb = _clustered(11, n_users=1000)
    block = 20  # 100 candidates: 5 full blocks; recomputed batches of any other size are perturbed
    want, _ = _reference(emb, 30, bandwidth=0.3, block=block)
    covered = neighbourhoods._covered

    def perturbed(a_unit, b_unit, bandwidth):  # a few borderline users flip to covered
        return covered(a_unit, b_unit, bandwidth if a_unit.shape[0] == block else bandwidth * 1.03)

    monkeypatch.setattr(neighbourhoods, "_covered", perturbed)
    got = select_anchors(emb, 30, bandwidth=0.3, block=block)
    np.testing.assert_array_equal(got, want)
    stats = neighbourhoods._last_coverage_stats
    assert stats["block_fallbacks"] > 0 and stats["recomputed_rows"] > 0


def test_bad_kernel_settings_still_raise():
    emb = _clustered(0, n_users=50)
    with pytest.raises(ConfigError, match="kernel must be one of"):
        select_anchors(emb, 3, kind="gaussian")
    with pytest.raises(ConfigError, match="bandwidth must be > 0"):
        select_anchors(emb, 3, bandwidth=0.0)


def test_lazy_greedy_recomputes_few_rows():
    emb = _clustered(5, n_users=3000, dim=16, n_clusters=40)
    _check(emb, 40, bandwidth=0.25)
    stats = neighbourhoods._last_coverage_stats
    assert stats["recomputed_rows"] < 300 * 40  # far fewer than the dense greedy's candidates x anchors


@pytest.mark.parametrize("kind", ["epanechnikov", "uniform", "triangular"])
def test_in_place_cover_test_is_the_kernel_test_bit_for_bit(kind):
    gen = torch.Generator().manual_seed(2)
    a = neighbourhoods._unit_rows(torch.randn(40, 8, generator=gen))
    b = neighbourhoods._unit_rows(torch.randn(300, 8, generator=gen))
    d = neighbourhoods._angular(a, b)
    # bandwidths at actual distances and their float neighbours: u lands on, just under and over 1
    picks = d.flatten()[torch.randint(d.numel(), (12,), generator=gen)]
    bands = torch.cat([picks, torch.nextafter(picks, torch.ones_like(picks)), torch.nextafter(picks, torch.zeros_like(picks))])
    for h in bands.tolist() + [0.05, 0.4, 1.0, 3.0]:
        want = kernel(d, h, kind) > 0
        assert torch.equal(neighbourhoods._covered(a, b, h), want), h
