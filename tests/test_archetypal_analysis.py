"""Classical archetypal analysis (numpy): a monotone explained-variance curve, and no archetype
on a lone outlying point once points are smoothed over their neighbours."""

import warnings

import numpy as np
import pytest

from deltavae.model._archetypal_analysis import (
    archetype_curve,
    carriers,
    convex_archetypes,
    elbow,
    smooth_points,
    start_archetypes,
)

# Explained variance of 2 to 15 archetypes (Archetypes(n_archetypes="auto", max_archetypes=15),
# scvi seed 0): the olfactory bulb (genes in 10 spots or more) and the hypothalamus MERFISH slice.
BULB = [0.448, 0.727, 0.79, 0.863, 0.878, 0.915, 0.923, 0.929, 0.931, 0.934, 0.936, 0.938]
BULB += [0.941, 0.941]
SLICE = [0.197, 0.358, 0.49, 0.538, 0.58, 0.668, 0.725, 0.747, 0.786, 0.814, 0.842, 0.86]
SLICE += [0.866, 0.881]


def _triangle_with_outlier(seed=0):
    """300 noisy mixtures of 3 corners, and one point far outside the triangle."""
    rng = np.random.default_rng(seed)
    corners = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    X = rng.dirichlet([0.4] * 3, size=300) @ corners + rng.normal(0, 0.3, size=(300, 3))
    return np.vstack([X, [[3.0, 3.0, 9.0]]])


def test_explained_variance_never_falls_with_more_archetypes():
    X = np.random.default_rng(1).normal(size=(120, 6))
    fresh = [convex_archetypes(X, k, seed=0)[2] for k in range(2, 9)]
    curve = archetype_curve(X, range(2, 9), seed=0)
    ev = np.array([curve[k][2] for k in range(2, 9)])
    assert np.all(np.diff(ev) >= 0), ev
    assert np.all(ev >= np.array(fresh) - 1e-12)  # never worse than a fresh start


def test_a_nested_start_keeps_the_previous_archetypes_fit():
    X = _triangle_with_outlier()
    W2, B2, ev2 = convex_archetypes(X, 2)
    W3, B3, ev3 = convex_archetypes(X, 3, init_B=B2)
    assert ev3 >= ev2
    assert np.allclose(B3.sum(axis=1), 1.0) and np.allclose(W3.sum(axis=1), 1.0)


def test_a_lone_outlier_is_an_archetype_unless_points_are_smoothed():
    X = _triangle_with_outlier()
    W, B, _ = convex_archetypes(X, 4)
    assert carriers(W).min() <= 2  # the outlier holds an archetype of its own
    S = smooth_points(X, 10)
    W, B, _ = convex_archetypes(S @ X, 4)
    assert carriers(W).min() >= 10
    B_spots = np.asarray((S.T @ B.T).T)  # archetypes as mixtures of the original points
    assert np.allclose(B_spots.sum(axis=1), 1.0) and (B_spots >= 0).all()
    assert B_spots[:, -1].max() <= 0.1 + 1e-9  # the outlier weighs at most its share, 1/10


def test_points_that_coincide_are_explained_without_a_division_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, explained = convex_archetypes(np.ones((10, 3)), 2)
    assert explained == 1.0


def test_merging_by_similarity_keeps_at_least_two_archetypes():
    from deltavae.model._archetype_results import merge_groups

    rng = np.random.default_rng(0)
    mean = np.full(20, 0.05)
    direction = rng.random(20)
    profiles = np.stack([mean + 0.01 * (1 + 0.02 * i) * direction for i in range(4)])
    profiles[:, 0] += 0.0005 * np.arange(4)  # directions differ slightly
    weights = rng.dirichlet(np.ones(4), size=200)
    with pytest.warns(UserWarning, match="would merge every archetype into one"):
        groups, _, _ = merge_groups(profiles, mean, weights, merge_threshold=0.5, min_spots=1)
    assert len(np.unique(groups)) == 2


@pytest.mark.parametrize(("curve", "chosen"), [(BULB, 5), (SLICE, 4)])
def test_the_auto_count_does_not_move_with_max_archetypes(curve, chosen):
    """The largest gap above the chord of 2..max_archetypes moved with the range's end: the
    bulb got 3 archetypes with max_archetypes=8 and 5 with 10, the slice 4 with 12 and 8 with
    15. Each more archetype now must explain 7% of what 2 leave: the same count from every
    range that passes it, and the range's end from one that does not."""
    ks = np.arange(2, 16)
    for most in range(4, 16):
        got = int(ks[elbow(ks[: most - 1], np.array(curve[: most - 1]))])
        assert got == min(chosen, most), (most, got)


def test_auto_finds_the_corners_of_mixtures_whatever_the_range():
    """Noisy mixtures of 4 and 6 corners: 'auto' chooses the number of corners with
    max_archetypes 7 and 10, and says the rule stopped inside the range."""
    rng = np.random.default_rng(0)
    for n_corners in (4, 6):
        corners = 6 * np.eye(8)[:n_corners]
        X = rng.dirichlet([0.3] * n_corners, size=120) @ corners + rng.normal(0, 0.2, (120, 8))
        for most in (7, 10):
            _, summary = start_archetypes(X, "auto", most, smooth_neighbors=5, seed=0)
            assert summary["chosen"] == n_corners and summary["stopped"], (n_corners, most)
            assert summary["min_gain"] == 0.07
