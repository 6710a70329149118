"""A user's AnnData as a notebook treats it: scvi-tools' bookkeeping in it dropped, several
models set up on it, inputs of every kind; a model reads the same numbers, or says why not."""

import numpy as np
import pandas as pd
import pytest
import scvi

import deltavae as dv

SMALL = {"n_hidden": 8, "n_latent": 2}
TRAIN = {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False}


def _cells():
    adata = dv.datasets.synthetic_counts(
        n_cells=90, n_genes=16, n_clusters=3, n_conditions=2, seed=0
    )
    adata.obs["donor"] = pd.Categorical(np.array(["d2", "d1", "d3"])[np.arange(90) % 3])
    adata.obs["label"] = adata.obs["cluster"].astype(str)
    return adata


@pytest.fixture(scope="module")
def trained():
    scvi.settings.seed = 0
    zinb, cgmd = _cells(), _cells()
    dv.model.ZINBVAE.setup_anndata(zinb, batch_key="condition", categorical_covariate_keys="donor")
    first = dv.model.ZINBVAE(zinb, **SMALL)
    first.train(**TRAIN)
    dv.model.CGMDVAE.setup_anndata(cgmd, condition_key=["condition", "donor"], labels_key="label")
    second = dv.model.CGMDVAE(cgmd, n_clusters=3, **SMALL)
    second.train(**TRAIN)
    return (first, zinb), (second, cgmd)


DROPS = {
    "obs codes": lambda a: [a.obs.pop(k) for k in list(a.obs) if k.startswith("_scvi")],
    "obsm codes": lambda a: a.obsm.pop("_scvi_extra_categorical_covs"),
    "obs replaced": lambda a: setattr(a, "obs", a.obs[["condition", "donor", "label"]].copy()),
    "uns ids": lambda a: [a.uns.pop(k) for k in list(a.uns) if k.startswith("_scvi")],
}


@pytest.mark.parametrize("drop", DROPS)
@pytest.mark.parametrize("which", [0, 1])
def test_scvi_tools_bookkeeping_dropped_is_registered_again(trained, which, drop):
    """A user who dropped what scvi-tools wrote at setup (obs['_scvi_batch'], ...; adata.obs
    replaced by a frame of their columns; the _scvi ids stripped from uns) keeps the columns
    it was made from; the model answered "_scvi_batch is not a valid column in adata.obs", or
    that another model had been set up on the AnnData since. Now it sets its own setup up
    again from those columns, with the codes it was trained under."""
    model, adata = trained[which]
    before = model.get_latent_representation()
    kept = (adata.obs.copy(), dict(adata.obsm), dict(adata.uns))
    try:
        DROPS[drop](adata)
        np.testing.assert_array_equal(model.get_latent_representation(), before)
        assert "_scvi_batch" in adata.obs and "_scvi_manager_uuid" in adata.uns
    finally:
        adata.obs = kept[0]
        adata.obsm.update(kept[1])
        adata.uns.update(kept[2])
    np.testing.assert_array_equal(model.get_latent_representation(), before)


def test_bookkeeping_dropped_with_the_users_column_names_both(trained):
    (model, adata), _ = trained
    before = model.get_latent_representation()
    kept = adata.obs.copy()
    adata.obs = adata.obs[["donor"]].copy()  # "condition", the batch, gone too
    try:
        with pytest.raises(ValueError) as err:
            model.get_latent_representation()
        message = str(err.value)
        assert "obs['_scvi_batch'], which scvi-tools wrote at setup, was removed since" in message
        assert "Restore what the model was set up with (batch_key='condition'" in message
        assert "another model" not in message
    finally:
        adata.obs = kept
    np.testing.assert_array_equal(model.get_latent_representation(), before)


@pytest.mark.parametrize("drop", ["obs codes", "uns ids"])
@pytest.mark.parametrize("which", [0, 1])
def test_new_cells_read_before_and_stripped_since_are_read_again(trained, which, drop):
    """New cells read once keep scvi-tools' registration of them; their codes or ids dropped
    since, the next read failed: "_scvi_batch is not a valid column in adata.obs", or a bare
    KeyError: '_scvi_manager_uuid'."""
    model, _ = trained[which]
    new = _cells()[::2].copy()
    before = model.get_latent_representation(new)
    DROPS[drop](new)
    np.testing.assert_array_equal(model.get_latent_representation(new), before)


def test_new_cells_set_up_by_another_model_since_keep_their_codes(trained):
    """New cells read by one model, then set up by another with their condition's categories
    in another order: the first reads them under its own codes again."""
    (first, _), (second, _) = trained
    new = _cells()[1::2].copy()
    before = first.get_latent_representation(new)
    new.obs["condition"] = new.obs["condition"].cat.reorder_categories(["stim", "ctrl"])
    second.get_latent_representation(new)
    dv.model.ZINBVAE.setup_anndata(new, batch_key="condition")
    np.testing.assert_array_equal(first.get_latent_representation(new), before)
    dv.model.ZINBVAE.setup_anndata(new, batch_key="donor")
    del new.obs["condition"]  # which the first set up again from
    with pytest.raises(ValueError, match=r"cannot read this AnnData: .*'condition'"):
        first.get_latent_representation(new)


def test_a_failed_take_back_leaves_the_model_able_to_read_new_cells(trained):
    """Its own AnnData set up by another model since and its batch column removed, a model
    refused it (as it should), but scvi-tools had emptied the batch's registry on the way: new
    cells read next failed with "KeyError: 'categorical_mapping'", and transform_batch lost
    the batch names."""
    (model, adata), _ = trained
    new = _cells()[::3].copy()
    own, on_new = model.get_latent_representation(), model.get_latent_representation(new)
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="donor")
    condition = adata.obs.pop("condition")
    try:
        with pytest.raises(ValueError, match=r"cannot read its AnnData: another model"):
            model.get_latent_representation()
        np.testing.assert_array_equal(model.get_latent_representation(new.copy()), on_new)
    finally:
        adata.obs["condition"] = condition
    np.testing.assert_array_equal(model.get_latent_representation(), own)


@pytest.mark.parametrize("which", [0, 1])
def test_new_cells_whose_condition_changed_in_place_are_read_with_it(trained, which):
    """New cells read once, then their condition column changed in place: the model read
    the codes scvi-tools wrote at the first read, silently the old conditions. They are read
    as a copy with the new values is."""
    model, _ = trained[which]
    new = _cells()[::2].copy()
    before = model.get_latent_representation(new)
    new.obs["condition"] = new.obs["condition"].map({"ctrl": "stim", "stim": "ctrl"})
    flipped = model.get_latent_representation(new.copy())
    assert not np.allclose(flipped, before)
    np.testing.assert_array_equal(model.get_latent_representation(new), flipped)


def test_too_few_clusters_for_labels_names_the_unused_ones():
    """Cells subset as scanpy does keep their labels' unused categories: CGMDVAE counted them
    as labels, "n_clusters=3 is smaller than the 4 labels", naming none as without cells."""
    adata = _cells()
    adata = adata[adata.obs["label"] != "2"].copy()  # "2" stays a category of no cell
    adata.obs["label"] = adata.obs["label"].astype("category")
    adata.obs["label"] = adata.obs["label"].cat.set_categories(["0", "1", "2"])
    with pytest.warns(UserWarning, match="categories no cell carries"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    with pytest.raises(ValueError) as err:
        dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    message = str(err.value)
    assert "smaller than the 3 labels in 'label' (0, 1, 2)" in message
    assert "1 of them no cell carries (2)" in message
    assert ".cat.remove_unused_categories()" in message


def test_a_trained_models_labels_relabelled_since_do_not_block_a_take_back(trained):
    """Once trained, a CGMDVAE reads no labels, and read its AnnData with its labels column
    relabelled (a clustering's names written over it) or removed; after another model's setup
    it refused it: "Category novel_1 not found in source registry ... Restore what the model
    was set up with". Its column is left as the user wrote it."""
    _, (model, adata) = trained
    before, kept = model.get_latent_representation(), adata.obs.copy()
    try:
        adata.obs["label"] = np.where(np.arange(adata.n_obs) % 2, "novel_1", "0")
        written = adata.obs.copy()
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="donor")
        np.testing.assert_array_equal(model.get_latent_representation(), before)
        pd.testing.assert_frame_equal(
            adata.obs.drop(columns=["_scvi_batch", "_scvi_labels"]),
            written.drop(columns=["_scvi_batch", "_scvi_labels"]),
        )
        del adata.obs["label"]
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="donor")
        np.testing.assert_array_equal(model.get_latent_representation(), before)
        assert "label" not in adata.obs
    finally:
        adata.obs = kept
    np.testing.assert_array_equal(model.get_latent_representation(), before)
