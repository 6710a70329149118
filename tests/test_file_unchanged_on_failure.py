"""Results written into a file or store that fail midway leave it as it was
(_file_unchanged_on_failure.py): write_to_adata into an AnnData opened backed="r+" and
dv.write_results_to_store write each result in turn, an entry replaced by deleting it first."""

import h5py
import numpy as np
import pytest
import scvi
from _anndata_state import assert_unchanged, state

import deltavae as dv

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}


def _contents(path) -> dict:
    """Every group's members and attributes and every dataset's values in an .h5ad file."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, node):
            out[name + "@attrs"] = {k: repr(np.asarray(v).tolist()) for k, v in node.attrs.items()}
            if isinstance(node, h5py.Dataset):
                out[name] = repr(np.asarray(node[()]).tolist())
            else:
                out[name + "@members"] = sorted(node)

        f.visititems(visit)
    return out


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two CGMDVAEs on a backed .h5ad file, the first's results written into it (with the
    user's colours of its clusters), the file reopened for writing."""
    import anndata as ad

    path = tmp_path_factory.mktemp("backed") / "cells.h5ad"
    dv.datasets.synthetic_counts(n_cells=60, n_genes=12, n_clusters=2, seed=0).write_h5ad(path)
    adata = ad.read_h5ad(path, backed="r")
    dv.model.CGMDVAE.setup_anndata(adata)
    models = []
    for seed in (0, 1):
        scvi.settings.seed = seed
        model = dv.model.CGMDVAE(adata, n_clusters=2, n_hidden=8, n_latent=2, n_latent_w=2)
        model.train(**TRAIN)
        models.append(model)
    adata.file.close()
    adata.file.open(filemode="r+")
    models[0].write_to_adata()
    adata.uns["cgmdvae_cluster_colors"] = ["#ff0000", "#00ff00"]
    with h5py.File(path, "r+") as f:  # as sc.pl.umap(adata, color=...) and adata.write()
        f["uns"]["cgmdvae_cluster_colors"] = np.array(["#ff0000", "#00ff00"], dtype="S")
    return models, adata, path


def test_a_backed_write_failing_at_any_dataset_leaves_the_file_as_it_was(two_models, monkeypatch):
    """A write into a backed file failing after its first result (a full disk, an interrupt)
    left obsm["X_cgmdvae"] new and obsm["X_cgmdvae_w"] deleted, neither the old results nor
    the new, while the AnnData in memory was put back as it was. Each dataset the write
    creates fails in turn here: the file and the AnnData stay as they were every time."""
    models, adata, path = two_models
    before, kept = _contents(path), state(adata)
    create = h5py.Group.create_dataset
    for fail_at in range(1, 100):
        calls = []

        def failing(group, *args, _at=fail_at, _calls=calls, **kwargs):
            _calls.append(1)
            if len(_calls) == _at:
                raise OSError("No space left on device (injected)")
            return create(group, *args, **kwargs)

        monkeypatch.setattr(h5py.Group, "create_dataset", failing)
        try:
            models[1].write_to_adata()
        except OSError:
            assert adata.file["obs"].file.mode == "r+"
            adata.file["obs"].file.flush()
            assert _contents(path) == before, f"the file changed when dataset {fail_at} failed"
            assert_unchanged(kept, adata)
            continue
        finally:
            monkeypatch.undo()
        break  # no dataset left to fail: it wrote
    assert fail_at > 3  # the write creates several datasets, each was made to fail
    adata.file.close()
    import anndata as ad

    written = ad.read_h5ad(path)
    np.testing.assert_allclose(
        written.obsm["X_cgmdvae_w"],
        models[1].get_latent_representation(adata, representation="w"),
        atol=1e-6,
    )
    assert not any(k.startswith("__deltavae_undo") for k in written.uns)
    adata.file.open(filemode="r+")


@pytest.mark.parametrize("store", ["cells.h5ad", "cells.zarr"])
def test_results_to_a_store_failing_midway_leave_it_as_it_was(tmp_path, store, monkeypatch):
    """dv.write_results_to_store wrote each result in turn, as write_to_adata into a backed
    file: failing at the second left the first replaced and the second deleted."""
    import anndata as ad
    from _stores import read_store, write_store

    import deltavae._io as io
    import deltavae.model._backed as backed

    data = dv.datasets.synthetic_counts(n_cells=60, n_genes=12, n_clusters=2, seed=0)
    path = write_store(data, tmp_path / store)
    adata = read_store(path)
    dv.model.CGMDVAE.setup_anndata(adata)
    scvi.settings.seed = 0
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_hidden=8, n_latent=2, n_latent_w=2)
    model.train(**TRAIN)
    with pytest.warns(UserWarning, match="in memory only|read-only"):
        keys = model.write_to_adata()
    dv.write_results_to_store(adata, keys, path)
    read = ad.read_h5ad if store.endswith(".h5ad") else ad.read_zarr
    first = read(path)
    adata.obsm["X_cgmdvae_w"] = adata.obsm["X_cgmdvae_w"] + 1.0  # another model's, say
    adata.obsm["X_cgmdvae"] = adata.obsm["X_cgmdvae"] + 1.0
    real, calls = io.write_elem, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(io, "write_elem", failing)  # obs columns; a zarr store's entries
    monkeypatch.setattr(backed, "write_elem", failing)  # an .h5ad file's entries
    with pytest.raises(OSError, match="injected"):
        dv.write_results_to_store(adata, keys, path)
    monkeypatch.undo()
    after = read(path)
    assert list(after.obsm) == list(first.obsm) and list(after.uns) == list(first.uns)
    for key in first.obsm:
        np.testing.assert_array_equal(after.obsm[key], first.obsm[key])
    assert list(after.obs.columns) == list(first.obs.columns)
    dv.write_results_to_store(adata, keys, path)  # nothing failing: written
    np.testing.assert_allclose(read(path).obsm["X_cgmdvae_w"], adata.obsm["X_cgmdvae_w"])
