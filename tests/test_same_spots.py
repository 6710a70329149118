"""Models whose results are of their own spots find them by name: another slide's spots of the
same names (Visium barcodes repeat across slides) are refused, not given the fitted slide's."""

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}

pytestmark = pytest.mark.filterwarnings("ignore::deltavae.train.NotConvergedWarning")


@pytest.fixture(scope="module")
def slides():
    cells = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    first, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=60, cells_per_spot=(2, 6))
    second, _ = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=60, cells_per_spot=(2, 6), seed=7
    )
    second.obs_names = first.obs_names  # the same barcodes, other tissue
    return first, second, ref


def _fitted(kind, first, ref):
    if kind == "per_spot":
        spots = first.copy()
        model = dv.model.NMFDeconv.from_reference(
            spots, reference=ref, labels_key="cluster", inference="per_spot"
        )
    else:
        spots = first[:, :30].copy()
        model = dv.model.SpatialImputer.from_reference(
            spots, reference=ref, labels_key="cluster", design=kind
        )
    model.train(max_epochs=3, **TRAIN)
    return model, spots


@pytest.mark.parametrize("kind", ["per_spot", "deconvolution", "latent"])
def test_another_slides_spots_of_the_same_names_are_refused(slides, kind):
    first, second, ref = slides
    model, spots = _fitted(kind, first, ref)
    read = model.impute if kind == "latent" else model.get_proportions
    own = read()
    other = second[:, spots.var_names].copy()
    with pytest.raises(ValueError, match=r"names of the model's spots but other data.*slide"):
        read(adata=other)
    with pytest.raises(ValueError, match="names of the model's spots but other data"):
        model.write_to_adata(other)
    assert not set(other.obsm) & {"proportions", "imputed"}
    # The model's own spots, copied, reordered, normalised and logged, a gene fewer, a view:
    # read as before.
    same = spots[::-1, 1:].copy()
    sc.pp.normalize_total(same, target_sum=1e4)
    sc.pp.log1p(same)
    again = read(adata=same)
    np.testing.assert_allclose(again.to_numpy(), own.to_numpy()[::-1], rtol=1e-5)
    np.testing.assert_allclose(read(adata=spots[5:9]).to_numpy(), own.to_numpy()[5:9], rtol=1e-5)
    dense = spots.copy()
    dense.X = sp.csr_matrix(dense.X).toarray().astype(np.int64)
    np.testing.assert_allclose(read(adata=dense).to_numpy(), own.to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("kind", ["per_spot", "deconvolution", "archetypes"])
def test_a_model_fitted_per_spot_refuses_to_load_onto_another_slides_spots(slides, kind, tmp_path):
    first, second, ref = slides
    if kind == "archetypes":
        spots = first.copy()
        dv.model.Archetypes.setup_anndata(spots)
        model = dv.model.Archetypes(spots, n_archetypes=2)
        model.train(max_epochs=3, **TRAIN)
    else:
        model, spots = _fitted(kind, first, ref)
    model.save(tmp_path / "m")
    cls = type(model)
    other = second[:, spots.var_names].copy()
    with pytest.raises(ValueError, match=r"names of the spots this \w+ was fitted on but other"):
        cls.load(tmp_path / "m", other)
    held = model.adata
    with pytest.raises(ValueError, match="fitted on but other counts"):
        model.adata = other
    assert model.adata is held
    # Its own spots, in another order, load (with the reordering's warning).
    with pytest.warns(UserWarning, match="in another order"):
        loaded = cls.load(tmp_path / "m", spots[::-1].copy())
    assert loaded.adata.n_obs == spots.n_obs
