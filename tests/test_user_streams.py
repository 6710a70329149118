"""A model set up, built and loaded leaves the user's global random streams where they were:
``np.random.seed(0)`` before any of these calls gives the numbers it gives without them."""

import warnings

import numpy as np
import pytest

import deltavae as dv


@pytest.fixture(scope="module")
def cells_and_spots():
    cells = dv.datasets.synthetic_counts(
        n_cells=240, n_genes=60, n_clusters=8, n_conditions=1, seed=0
    )
    spots, reference = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=0)
    return cells, spots, reference


def _setups(cells, spots, reference, tmp_path):
    """Every call that registers an AnnData with scvi-tools, by name."""

    def load():
        adata = cells.copy()
        dv.model.ZINBVAE.setup_anndata(adata)
        dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8).save(tmp_path / "zinbvae")
        return lambda: dv.model.ZINBVAE.load(tmp_path / "zinbvae", adata)

    return {
        "ZINBVAE.setup_anndata": lambda: dv.model.ZINBVAE.setup_anndata(cells.copy()),
        "Archetypes.setup_anndata": lambda: dv.model.Archetypes.setup_anndata(spots.copy()),
        "NMFDeconv.from_reference": lambda: dv.model.NMFDeconv.from_reference(
            spots.copy(), reference=reference, labels_key="cluster", nmf_max_iter=10
        ),
        "SpatialImputer.from_reference": lambda: dv.model.SpatialImputer.from_reference(
            spots[:, 5:].copy(), reference=reference, labels_key="cluster", n_states=3
        ),
        "ZINBVAE.load": load,
    }


@pytest.mark.parametrize(
    "name",
    [
        "ZINBVAE.setup_anndata",
        "Archetypes.setup_anndata",
        "NMFDeconv.from_reference",
        "SpatialImputer.from_reference",
        "ZINBVAE.load",
    ],
)
def test_registering_an_anndata_leaves_numpys_global_stream(cells_and_spots, tmp_path, name):
    """scvi-tools' count check at every registration draws the entries it reads from numpy's
    global generator: each setup_anndata (but CGMDVAE's, which checks no counts there),
    from_reference and load moved the user's stream on by some 20 to 50 numbers."""
    call = _setups(*cells_and_spots, tmp_path)[name]
    if name == "ZINBVAE.load":
        call = call()  # the model saved first; its load is the call judged
    np.random.seed(0)  # noqa: NPY002
    expected = np.random.random(3)  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call()
    np.testing.assert_array_equal(np.random.random(3), expected)  # noqa: NPY002
