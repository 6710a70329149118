"""Spot models: warnings about what the data support, platform level, results of spots left out."""

import numpy as np
import pytest

import deltavae as dv
from deltavae.model._nmf_results import warn_idle_factors

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def four_types():
    cells = dv.datasets.synthetic_counts(
        n_cells=600, n_genes=80, n_clusters=4, n_conditions=1, seed=1
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=150, cells_per_spot=(2, 8), seed=3)


def test_reference_free_nmf_warns_about_factors_the_spots_do_not_support(four_types):
    spots = four_types[0].copy()
    dv.model.NMFDeconv.setup_anndata(spots)
    model = dv.model.NMFDeconv(spots, n_components=8)
    with pytest.warns(UserWarning, match=r"4 of the 8 factors .* Fit fewer, e.g. n_components=4"):
        model.train(max_epochs=30, **TRAIN)
    right = dv.model.NMFDeconv(spots, n_components=4)
    right.train(max_epochs=30, **TRAIN)  # no warning at the right number of factors


def test_idle_factors_are_named_with_their_share():
    props = np.array([[0.7, 0.25, 0.05]] * 30 + [[0.2, 0.75, 0.05]] * 30)
    with pytest.warns(UserWarning, match=r"1 of the 3 factors .* F2 \(5.0%, 0 spots\)"):
        warn_idle_factors(props, ["F0", "F1", "F2"])
    warn_idle_factors(props[:, :2] / props[:, :2].sum(1, keepdims=True), ["F0", "F1"])
