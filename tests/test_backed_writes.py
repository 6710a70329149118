"""Every model's write_to_adata writes into a backed file (model/_backed.py, writes_backed).

The writing itself is tested on a backed .h5ad in tests/test_scale.py; here, that no model
class misses the decorator.
"""

import pytest

import deltavae as dv


@pytest.mark.parametrize("name", dv.model.__all__)
def test_every_model_decorates_its_write_to_adata(name):
    cls = getattr(dv.model, name)
    assert "write_to_adata" in vars(cls), f"{name} has no write_to_adata of its own"
    assert hasattr(cls.write_to_adata, "__wrapped__"), f"{name}.write_to_adata lacks @writes_backed"


def test_write_into_a_file_anndata_closed(tmp_path):
    """SpatialImputer.from_reference on spots opened backed="r+" read them with anndata's
    to_memory, which closes their file: write_to_adata(spots) then failed with h5py's
    'Unable to synchronously open object'."""
    import anndata as ad

    data = dv.datasets.synthetic_counts(n_cells=120, n_genes=80, n_clusters=2, seed=0)
    data.obs["cluster"] = data.obs["cluster"].astype(str)
    data[60:, :60].copy().write_h5ad(tmp_path / "spots.h5ad")
    spots = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r+")
    imputer = dv.model.SpatialImputer.from_reference(
        spots, reference=data[:60].copy(), labels_key="cluster", profiles="type"
    )
    imputer.train(max_epochs=2, enable_progress_bar=False, enable_model_summary=False)
    assert imputer.write_to_adata(spots) == ["obsm/imputed"]
    spots.file.close()
    assert ad.read_h5ad(tmp_path / "spots.h5ad").obsm["imputed"].shape == (60, 20)
