"""Every bad input gets a clear error before training and leaves the AnnData unchanged."""

import os
import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _snapshot(adata):
    return (
        list(adata.obs.columns),
        sorted(adata.uns.keys()),
        sorted(adata.obsm.keys()),
        adata.X.copy(),
    )


def _assert_unchanged(adata, snap):
    cols, uns, obsm, X = snap
    assert list(adata.obs.columns) == cols
    assert sorted(adata.uns.keys()) == uns
    assert sorted(adata.obsm.keys()) == obsm
    np.testing.assert_array_equal(_dense(adata.X), _dense(X))


def _setup_fails(adata, exc, match, **kwargs):
    snap = _snapshot(adata)
    with pytest.raises(exc, match=match):
        dv.model.ZINBVAE.setup_anndata(adata, **kwargs)
    _assert_unchanged(adata, snap)


def test_missing_layer(counts_adata):
    _setup_fails(counts_adata, KeyError, "layer 'raw' is not in adata.layers", layer="raw")
    hint = r"available layers: \['counts'\] \(did you mean 'counts'\?\)"
    _setup_fails(counts_adata, KeyError, hint, layer="count")
    # ...and the ValueError scvi-tools' setup raises, which code written for SCVI catches.
    _setup_fails(counts_adata, ValueError, "layer 'raw' is not in adata.layers", layer="raw")
    # A reference's missing layer stays that error (its ValueErrors are reworded).
    with pytest.raises(KeyError, match="^\"layer 'raw' is not in reference.layers"):
        dv.model.NMFDeconv.signatures_from_reference(counts_adata, "cluster", layer="raw")
    # The matrix passed for its name: numpy's "unhashable type: 'csr_matrix'".
    matrix = counts_adata.layers["counts"]
    _setup_fails(counts_adata, TypeError, "a name in adata.layers, not a csr_matrix", layer=matrix)


@pytest.mark.parametrize("with_raw", [False, True])
def test_a_counts_layer_stored_without_a_copy_is_named(counts_adata, with_raw):
    """adata.layers['counts'] = adata.X (float32 counts, as sc.read_10x_h5 gives), then
    sc.pp.normalize_total and sc.pp.log1p: the layer changed with X, and the refusal said
    "Pass the raw counts, in X or in a layer (layer='counts')", which the user had done."""
    import scanpy as sc

    adata = counts_adata.copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    if with_raw:
        adata.raw = adata.copy()
    adata.layers["counts"] = adata.X  # no .copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    copy = re.escape("adata.layers['counts'] = adata.X.copy()")
    raw = re.escape("adata.raw holds raw counts, it seems: adata.layers['counts'] = adata.raw[")
    fix = raw if with_raw else f"read them again from their file .*{copy}"
    _setup_fails(
        adata,
        ValueError,
        r"adata.layers\['counts'\] holds the same values as adata.X: most likely it was "
        rf"stored without a copy .*; {fix}",
        layer="counts",
    )
    # A copy of the AnnData made since holds two equal matrices: named alike.
    with pytest.raises(ValueError, match="holds the same values as adata.X"):
        dv.model.ZINBVAE.setup_anndata(adata.copy(), layer="counts")


@pytest.mark.parametrize("model", ["ZINBVAE", "CGMDVAE"])
@pytest.mark.parametrize("counts_in", ["nowhere", "X", "raw", "layer"])
def test_a_missing_counts_layer_says_where_the_counts_are(counts_adata, model, counts_in):
    """A scanpy session that normalized and log-transformed X without keeping the counts,
    then set up with layer='counts' as the README does, was told only "layer 'counts' is not
    in adata.layers; available layers: []": nothing of where the counts are, or what to do."""
    import scanpy as sc

    adata = ad.AnnData(sp.csr_matrix(counts_adata.X, dtype=np.float32), obs=counts_adata.obs)
    if counts_in == "raw":
        adata.raw = adata.copy()
    if counts_in == "layer":
        adata.layers["umi"] = adata.X.copy()
    if counts_in != "X":
        sc.pp.normalize_total(adata)
        sc.pp.log1p(adata)
    fix = {
        "nowhere": r"adata holds no raw counts: not in X \(values such as [0-9.]+: normalized\?\), "
        r"its layers or adata.raw\. Read them again .*counts\[adata\.obs_names, "
        r"adata\.var_names\]\.X .*adata\.layers\['counts'\] = adata\.X\.copy\(\) before "
        r"sc\.pp\.normalize_total",
        "X": r"adata\.X holds raw counts, it seems: pass layer=None",
        "raw": r"adata\.raw holds raw counts, it seems: adata\.layers\['counts'\] = "
        r"adata\.raw\[:, adata\.var_names\]\.X\.copy\(\)",
        "layer": r"adata\.layers\['umi'\] holds raw counts, it seems: pass layer='umi'",
    }[counts_in]
    snap = _snapshot(adata)
    with pytest.raises(KeyError, match=r"layer 'counts' is not in adata\.layers; .*" + fix):
        getattr(dv.model, model).setup_anndata(adata, layer="counts")
    _assert_unchanged(adata, snap)


@pytest.mark.parametrize("model", ["ZINBVAE", "CGMDVAE", "NMFDeconv", "Archetypes"])
def test_setup_of_a_view_or_a_matrix_says_what_to_pass(counts_adata, model):
    cls = getattr(dv.model, model)
    parent = _snapshot(counts_adata)
    with pytest.raises(ValueError, match=r"adata is a view .* adata\[mask\]\.copy\(\)"):
        cls.setup_anndata(counts_adata[:20])
    _assert_unchanged(counts_adata, parent)
    # The view of the highly variable genes, as scanpy sessions make it: the fix given was
    # adata = adata[mask].copy(), which reads the genes' mask as cells (an IndexError).
    hvg = counts_adata[:, np.arange(counts_adata.n_vars) < 20]
    with pytest.raises(ValueError, match=r"adata is a view .*: adata = adata\.copy\(\) "):
        cls.setup_anndata(hvg)
    with pytest.raises(TypeError, match="must be an AnnData .* got ndarray of shape"):
        cls.setup_anndata(_dense(counts_adata.X))
    covariate = {"Archetypes": "sample_key", "ZINBVAE": "batch_key", "CGMDVAE": "condition_key"}
    if model in covariate:  # Archetypes read adata.obs first: an AttributeError
        with pytest.raises(TypeError, match="must be an AnnData .* got ndarray of shape"):
            cls.setup_anndata(_dense(counts_adata.X), **{covariate[model]: "condition"})


@pytest.mark.parametrize("name", ["ZINBVAE", "CGMDVAE"])
def test_cell_models_load_onto_a_view_as_the_spot_models_do(counts_adata, tmp_path, name):
    """ZINBVAE.load(dir, adata[:20]) and CGMDVAE.load refused a view (setup_anndata's
    message, naming load) while every spot model's load copied one (test_spot_api.py), and
    these models' own load copied a view whose genes were in another order. Each copies it
    now (scvi-tools' load refuses a view, its read-outs copy one): the view and its parent
    are unchanged, the model reads what a copy gives, and write_to_adata() asks for the
    AnnData to write into."""
    cls = getattr(dv.model, name)
    kwargs = {"condition_key": "condition"} if name == "CGMDVAE" else {}
    cls.setup_anndata(counts_adata, **kwargs)
    model = cls(counts_adata, n_latent=3, n_hidden=8)
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "model")
    view = counts_adata[:20]
    obs, columns = view.obs.copy(), list(counts_adata.obs.columns)
    loaded = cls.load(tmp_path / "model", view)
    assert view.is_view and not loaded.adata.is_view and loaded.adata.n_obs == 20
    pd.testing.assert_frame_equal(view.obs, obs)  # no setup column written into the view
    assert list(counts_adata.obs.columns) == columns
    expected = cls.load(tmp_path / "model", counts_adata[:20].copy())
    np.testing.assert_allclose(
        loaded.get_latent_representation(), expected.get_latent_representation(), rtol=1e-5
    )
    with pytest.raises(ValueError, match=r"is a view \(adata\[mask\]\).*adata\[mask\]\.copy"):
        loaded.write_to_adata()
    sub = view.copy()
    keys = loaded.write_to_adata(sub)
    assert keys and all(key.split("/")[1] in getattr(sub, key.split("/")[0]) for key in keys)


@pytest.mark.parametrize("name", ["ZINBVAE", "CGMDVAE"])
def test_cell_models_refuse_loading_onto_no_cells(counts_adata, tmp_path, name):
    """load(dir, adata[:0]) failed with scvi-tools' "adata or registry must be provided" (an
    AnnData of no cells is falsy there), a copy of one too."""
    cls = getattr(dv.model, name)
    kwargs = {"condition_key": "condition"} if name == "CGMDVAE" else {}
    cls.setup_anndata(counts_adata, **kwargs)
    model = cls(counts_adata, n_latent=3, n_hidden=8)
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "model")
    for empty in (counts_adata[:0], counts_adata[:0].copy()):
        with pytest.raises(ValueError, match=r"adata holds no cells .* adata=None for the"):
            cls.load(tmp_path / "model", empty)


@pytest.mark.parametrize("model", ["ZINBVAE", "CGMDVAE", "NMFDeconv", "Archetypes"])
@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("cells.h5ad", r"got the path 'cells.h5ad'. Read it first: .*\(adata, \.\.\.\)"),
        (pd.DataFrame(np.ones((3, 2))), r"got DataFrame of shape \(3, 2\)\. Wrap .* anndata"),
    ],
)
def test_a_model_built_on_a_path_or_a_table_is_told_to_read_it(model, given, match):
    """ZINBVAE("cells.h5ad") failed in scvi-tools with "'str' object has no attribute 'uns'"
    (a DataFrame: no attribute 'uns' either), naming neither the argument nor the fix."""
    with pytest.raises(TypeError, match=rf"^adata must be an AnnData .*{match}"):
        getattr(dv.model, model)(given)


def test_a_path_for_an_anndata_or_arguments_swapped_are_named(counts_adata, tmp_path):
    """load(adata, path) failed in os.fspath ("expected str, bytes or os.PathLike object, not
    AnnData"), load(path, "cells.h5ad") and prepare_query_anndata(path, adata) with
    AttributeErrors ('str' object has no attribute 'var_names' / 'is_view')."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=3, n_hidden=8)
    model.train(max_epochs=1, enable_progress_bar=False)
    path = tmp_path / "vae"
    model.save(path)
    ZINBVAE = dv.model.ZINBVAE
    with pytest.raises(TypeError, match=r"then the AnnData: ZINBVAE.load\(dir_path, adata\)"):
        ZINBVAE.load(counts_adata, path)
    with pytest.raises(TypeError, match=r"model.save\(dir_path\); got an AnnData as dir_path"):
        model.save(counts_adata)
    file = str(tmp_path / "cells.h5ad")
    with pytest.raises(TypeError, match=r"got the path '.*cells.h5ad'. Read it first: adata ="):
        ZINBVAE.load(path, file)
    with pytest.raises(TypeError, match=r"got the path .* anndata.read_h5ad\(path\)"):
        ZINBVAE.setup_anndata(file)
    with pytest.raises(TypeError, match=r"folder .*vae', which holds a saved model. Pass the"):
        ZINBVAE.prepare_query_anndata(str(path), counts_adata)
    with pytest.raises(TypeError, match=r"as adata: ZINBVAE.load_query_data\(adata, reference"):
        ZINBVAE.load_query_data(str(path), counts_adata)
    with pytest.raises(TypeError, match=r"The query comes first: ZINBVAE.load_query_data\(adata"):
        ZINBVAE.load_query_data(counts_adata, counts_adata)
    assert ZINBVAE.load(path, counts_adata).adata is counts_adata


@pytest.mark.parametrize("model", ["ZINBVAE", "CGMDVAE", "NMFDeconv", "Archetypes"])
def test_repeated_gene_names_are_refused_at_setup(counts_adata, model):
    """Results name genes and new data are matched by name: ZINBVAE and CGMDVAE trained on
    repeated names and failed only when new data came (the spot models refused at setup)."""
    names = list(counts_adata.var_names)
    names[3] = names[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's own, about the names
        counts_adata.var_names = names
    snap = _snapshot(counts_adata)
    with pytest.raises(ValueError, match=r"not unique \(repeated: \['gene_1'\]\).*make_unique"):
        getattr(dv.model, model).setup_anndata(counts_adata)
    _assert_unchanged(counts_adata, snap)


@pytest.mark.parametrize("model", ["ZINBVAE", "CGMDVAE", "NMFDeconv", "Archetypes"])
def test_missing_gene_names_are_refused_at_setup(counts_adata, model):
    """Gene symbols mapped from IDs, some without one (NaN): setup read NaN as the text 'nan'
    and trained; load onto the same AnnData then said its genes were "in another order (0
    moved)" and save_anndata=True failed in anndata ("Can't implicitly convert non-string
    objects to strings")."""
    names = list(counts_adata.var_names.astype(object))
    names[3] = np.nan
    counts_adata.var_names = pd.Index(names, dtype=object)
    snap = _snapshot(counts_adata)
    fix = r"1 missing gene name\(s\) \(NaN, at position 3\).*var_names\.astype\(str\)"
    with pytest.raises(ValueError, match=r"adata\.var_names has " + fix):
        getattr(dv.model, model).setup_anndata(counts_adata)
    _assert_unchanged(counts_adata, snap)
    if model == "NMFDeconv":  # a reference with a missing name, named as the reference
        spots = counts_adata[:20].copy()
        spots.var_names = spots.var_names.astype(str)
        with pytest.raises(ValueError, match=r"reference\.var_names has " + fix):
            dv.model.NMFDeconv.from_reference(spots, counts_adata, "cluster")
    # the fix it names works
    counts_adata.var_names = counts_adata.var_names.astype(str)
    counts_adata.var_names_make_unique()
    getattr(dv.model, model).setup_anndata(counts_adata)


def test_numbers_as_cell_names_are_refused_where_a_model_subsets(counts_adata):
    """Cell names held as integers (a table's index): anndata cannot subset such an AnnData,
    and NMFDeconv.from_reference (its marker genes), translate and predict_perturbation
    failed inside anndata with "Don't call _normalize_index with non-categorical/string
    names and non-range index" and the whole index printed."""
    cells = counts_adata[:120, :20].copy()
    cells.obs["cell_type"] = [f"T{c}" for c in cells.obs["cluster"]]
    spots, reference = dv.datasets.pseudo_spots(cells, "cell_type", n_spots=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's own, about the names
        reference.obs_names = pd.Index(np.arange(reference.n_obs) * 2)
    fix = r"obs_names are numbers \(int64, e.g. \[0, 2, 4\]\).*obs_names\.astype\(str\)"
    with pytest.raises(ValueError, match="reference." + fix):
        dv.model.NMFDeconv.from_reference(spots, reference, "cell_type")
    reference.obs_names = reference.obs_names.astype(str)  # the fix it names
    dv.model.NMFDeconv.from_reference(spots, reference, "cell_type")

    dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition")
    model = dv.model.CGMDVAE(cells, n_latent=2, n_latent_w=2, n_hidden=8, n_clusters=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one epoch: too few, it says
        model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    new = counts_adata[120:150, :20].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        new.obs_names = pd.Index(np.arange(new.n_obs) * 2)
    for call in (model.translate, model.predict_perturbation):
        with pytest.raises(ValueError, match="adata." + fix):
            call(new, "stim")
    new.obs_names = new.obs_names.astype(str)
    assert model.translate(new, "stim", seed=0).n_obs == new.n_obs


def test_numbered_spots_with_tables_in_obsm_are_refused_with_the_fix(counts_adata):
    """Spots named by numbers (spots.obs.index = range(n)) while obsm holds tables (pseudo_spots'
    proportions_true): anndata reads no obsm of them, and every setup, model and from_reference
    failed inside anndata ("value.index does not match parent's obs names"). SpatialImputer's
    from_reference failed on integer names alone ("Don't call _normalize_index"), and so did a
    read-out of cells whose genes are in another order. Each is refused first, naming the fix."""
    cells = counts_adata[:120, :20].copy()
    cells.obs["cell_type"] = [f"T{c}" for c in cells.obs["cluster"]]
    spots, reference = dv.datasets.pseudo_spots(cells, "cell_type", n_spots=20)
    assert any(isinstance(v, pd.DataFrame) for v in spots.obsm.values())
    partial = spots[:, 4:].copy()  # genes left to impute
    fix = r"obs_names are numbers \(int64, e\.g\. \[0, 1, 2\]\).*rows too: \w+\.obs_names = "
    for data in (spots, partial):
        data.obs.index = pd.RangeIndex(data.n_obs)
    calls = {
        "spots": (
            lambda: dv.model.NMFDeconv.from_reference(spots, reference, "cell_type"),
            lambda: dv.model.SpatialImputer.from_reference(partial, reference, "cell_type"),
        ),
        "adata": (
            lambda: dv.model.NMFDeconv.setup_anndata(spots),
            lambda: dv.model.ZINBVAE.setup_anndata(spots),
        ),
    }
    for who, tried in calls.items():
        for call in tried:
            with pytest.raises(ValueError, match=f"{who}\\.{fix}"):
                call()
    for data in (spots, partial):
        data.obs_names = data.obs_names.astype(str)  # the fix it names
    dv.model.NMFDeconv.from_reference(spots, reference, "cell_type")
    dv.model.SpatialImputer.from_reference(partial, reference, "cell_type")
    # Integer names alone: SpatialImputer subsets the spots, a read-out reorders the genes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's own, about the names
        partial.obs_names = pd.Index(np.arange(partial.n_obs) * 2)
    with pytest.raises(ValueError, match=r"spots\.obs_names are numbers \(int64, e\.g\. \[0, 2"):
        dv.model.SpatialImputer.from_reference(partial, reference, "cell_type")
    dv.model.ZINBVAE.setup_anndata(cells)
    vae = dv.model.ZINBVAE(cells, n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one epoch: too few, it says
        vae.train(max_epochs=1, **TRAIN)
    new = cells[:, ::-1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        new.obs_names = pd.Index(np.arange(new.n_obs) * 2)
    with pytest.raises(ValueError, match=r"adata\.obs_names are numbers \(int64, e\.g\. \[0, 2"):
        vae.get_latent_representation(new)
    new.obs_names = new.obs_names.astype(str)
    with pytest.warns(UserWarning, match="order"):
        assert vae.get_latent_representation(new).shape == (new.n_obs, 2)


def test_a_measurement_as_a_category_column_is_refused(counts_adata):
    """nUMI or a score as batch_key / condition_key made one category per value (a one-hot
    of hundreds of columns); doses and integer ids are categories and stay accepted."""
    adata = counts_adata
    adata.obs["nUMI"] = np.asarray(adata.X.sum(1)).ravel()
    adata.obs["score"] = np.random.default_rng(0).normal(size=adata.n_obs)
    adata.obs["dose"] = np.resize([0.1, 1.0, 10.0], adata.n_obs)
    adata.obs["donor_id"] = np.arange(adata.n_obs) % 4
    _setup_fails(adata, ValueError, r"batch_key='nUMI'.*looks like a measurement", batch_key="nUMI")
    snap = _snapshot(adata)
    with pytest.raises(ValueError, match=r"'score'.* 300 distinct non-integer numbers"):
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="score")
    _assert_unchanged(adata, snap)
    with pytest.raises(ValueError, match="labels_key='dose'.*looks like a measurement"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="dose")
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose")
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="donor_id")
    adata.obs["sf"] = adata.obs["nUMI"] / adata.obs["nUMI"].mean()  # a measurement, rightly
    dv.model.ZINBVAE.setup_anndata(adata, size_factor_key="sf")


def test_a_category_column_mixing_strings_and_numbers_is_refused(counts_adata):
    """Donors named 'd1' and 2 (anndata's concat of differently typed obs) failed in numpy
    inside scvi-tools' registration: "'<' not supported between instances of 'str' and
    'int'", with obs["_scvi_batch"] already written."""
    adata = counts_adata
    adata.obs["donor"] = [2, "d1"] * (adata.n_obs // 2)
    fix = r"mixes strings with other values \(e.g. 'd1' and 2\).*\.astype\(str\)"
    _setup_fails(adata, ValueError, "batch_key='donor': .*" + fix, batch_key="donor")
    assert "_scvi_batch" not in adata.obs
    adata.obs["donor"] = adata.obs["donor"].astype("category")
    with pytest.raises(ValueError, match="condition_key='donor': .*" + fix):
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="donor")


def test_one_column_arguments_given_a_list_or_a_tuple(counts_adata):
    """batch_key=["condition"] failed inside scvi-tools ("unhashable type: 'list'"), and a
    tuple of categorical_covariate_keys was read as one column name (KeyError of the tuple)
    after obs["_scvi_batch"] was written."""
    one = r"batch_key names one obs column \(a string\); got \['condition'\]. For several, join"
    _setup_fails(counts_adata, TypeError, one, batch_key=["condition"])
    dv.model.ZINBVAE.setup_anndata(
        counts_adata, categorical_covariate_keys=("condition", "cluster")
    )
    model = dv.model.ZINBVAE(counts_adata, n_hidden=8)
    assert model.summary_stats["n_extra_categorical_covs"] == 2


def test_a_column_s_values_given_as_its_name_are_not_listed_whole(counts_adata):
    """A column's values passed for its name (condition_key=adata.obs["condition"]) were
    quoted whole in the refusal: about 8 characters per cell, megabytes for an atlas."""
    n = counts_adata.n_obs
    for cls, arg in [(dv.model.CGMDVAE, "condition_key"), (dv.model.ZINBVAE, "batch_key")]:
        with pytest.raises((TypeError, ValueError)) as err:
            cls.setup_anndata(counts_adata, **{arg: counts_adata.obs["condition"]})
        assert len(str(err.value)) < 300 and f"({n} items)" in str(err.value)


def test_missing_obs_keys(counts_adata):
    _setup_fails(counts_adata, KeyError, "batch_key='donor'", batch_key="donor")
    # A pandas AttributeError ('DataFrame' object has no attribute 'cat') after obsm was written.
    twice = "categorical_covariate_keys=.*names a column more than once"
    _setup_fails(counts_adata, ValueError, twice, categorical_covariate_keys=["cluster"] * 2)
    with pytest.raises(ValueError, match="condition_key=.*names a column more than once"):
        dv.model.CGMDVAE.setup_anndata(counts_adata, condition_key=["condition", "condition"])
    assert not counts_adata.obsm
    _setup_fails(
        counts_adata,
        KeyError,
        "categorical_covariate_keys='age'",
        categorical_covariate_keys=["condition", "age"],
    )


def test_a_covariate_changed_after_setup_is_refused(counts_adata):
    """scvi-tools reads the codes written at setup: the model trained on the old values."""
    adata, before = counts_adata, counts_adata.obs["condition"].copy()
    dv.model.ZINBVAE.setup_anndata(
        adata, batch_key="condition", categorical_covariate_keys=["cluster"]
    )
    adata.obs["condition"] = "ctrl"  # every cell, after setup
    with pytest.raises(
        ValueError, match=r"obs\['condition'\] changed after setup_anndata: 1\d\d of"
    ):
        dv.model.ZINBVAE(adata)
    adata.obs["condition"] = before
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cluster")
    model = dv.model.CGMDVAE(adata)
    swap = {"0": "1", "1": "0"}
    adata.obs["cluster"] = adata.obs["cluster"].astype(str).replace(swap)
    with pytest.raises(ValueError, match=r"obs\['cluster'\] changed after setup_anndata"):
        model.train(max_epochs=1, **TRAIN)
    assert not model.is_trained_


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1.0, "negative values"),
        (0.5, "non-integer values such as 0.5"),
        (np.nan, "NaN"),
        (np.inf, "infinite"),
    ],
)
@pytest.mark.parametrize("sparse", [True, False])
def test_bad_count_values(counts_adata, value, match, sparse):
    X = counts_adata.X.toarray()
    X[3, 4] = value
    counts_adata.X = sp.csr_matrix(X) if sparse else X
    _setup_fails(counts_adata, ValueError, match)


def test_round_off_of_counts_is_shown_not_printed_whole(counts_adata):
    """float64 counts off by 1e-12 were refused 'found non-integer values such as 2': the
    value printed to 8 digits read as a whole number."""
    X = counts_adata.X.toarray().astype(np.float64)
    X[X > 0] *= 1 + 1e-12
    counts_adata.X = X
    with pytest.raises(ValueError, match=r"such as \d+\.0000000000\d+ .*float round-off"):
        dv.model.ZINBVAE.setup_anndata(counts_adata)


@pytest.mark.parametrize("sparse", [True, False])
def test_rounding_advice_names_the_layer_holding_the_counts(counts_adata, sparse):
    """Round-off in layers['counts'] was met with 'X.data = np.rint(X.data)', which rounds the
    log-normalized X of a scanpy user instead of the counts."""
    X = counts_adata.X.toarray().astype(np.float32)
    X[X > 0] += 1e-5
    counts_adata.layers["counts"] = sp.csr_matrix(X) if sparse else X
    counts_adata.X = np.log1p(counts_adata.X.toarray())
    fix = (
        r"adata.layers\['counts'\].data = np.rint\(adata.layers\['counts'\].data\)\."
        if sparse
        else r"adata.layers\['counts'\] = np.rint\(adata.layers\['counts'\]\)\."
    )
    _setup_fails(
        counts_adata, ValueError, r"float round-off .*round them first: " + fix, layer="counts"
    )


def test_bad_values_in_a_layer_are_named(counts_adata):
    counts_adata.layers["log"] = np.log1p(counts_adata.X.toarray())
    _setup_fails(
        counts_adata, ValueError, r"adata.layers\['log'\] must hold raw counts", layer="log"
    )


def _empty_first_cell_and_second_gene(adata) -> np.ndarray:
    X = adata.X.toarray()
    X[0] = 0
    X[:, 1] = 0
    adata.X = sp.csr_matrix(X)
    return X


def test_empty_cells_and_genes_warn(counts_adata):
    _empty_first_cell_and_second_gene(counts_adata)
    with pytest.warns(UserWarning) as record:
        dv.model.ZINBVAE.setup_anndata(counts_adata)
    messages = " ".join(str(r.message) for r in record)
    assert "1 cells" in messages and counts_adata.obs_names[0] in messages
    assert "1 genes" in messages


def _gene_notes(record) -> list[str]:
    return [str(r.message) for r in record if "zero in every cell" in str(r.message)]


def test_silent_genes_are_named_once_and_not_again_on_load(counts_adata, tmp_path):
    """CGMDVAE's setup and constructor each warned; a model loaded later repeated it."""
    X = counts_adata.X.toarray()
    X[:, 1] = 0
    counts_adata.X = sp.csr_matrix(X)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dv.model.CGMDVAE.setup_anndata(counts_adata)
        model = dv.model.CGMDVAE(counts_adata, n_clusters=3, n_latent=3, n_hidden=16)
    assert len(_gene_notes(record)) == 1
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "m")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dv.model.CGMDVAE.load(tmp_path / "m", adata=counts_adata.copy())
    assert _gene_notes(record) == []


def test_empty_cells_and_genes_of_non_negative_x_get_scanpys_filters(counts_adata):
    """CGMDVAE's setup does not know the likelihood yet: its advice for counts in X (and for
    other non-negative values, e.g. log-normalised) was a boolean mask, where scanpy's
    filters are right and read more easily; signed values keep the mask (scanpy counts only
    positive entries)."""
    X = _empty_first_cell_and_second_gene(counts_adata)
    with pytest.warns(UserWarning) as record:
        dv.model.CGMDVAE.setup_anndata(counts_adata)
    messages = " ".join(str(r.message) for r in record)
    assert "sc.pp.filter_cells(adata, min_genes=1)" in messages
    assert "sc.pp.filter_genes(adata, min_cells=1)" in messages
    counts_adata.X = sp.csr_matrix(np.log1p(X) - (X > 0) * 2.0)  # signed real values
    with pytest.warns(UserWarning) as record:
        dv.model.CGMDVAE.setup_anndata(counts_adata)
    messages = " ".join(str(r.message) for r in record)
    assert "np.asarray(abs(adata.X).sum(0)).ravel() > 0" in messages
    assert "filter_genes" not in messages


def test_all_cells_empty_raises(counts_adata):
    counts_adata.X = sp.csr_matrix(counts_adata.shape, dtype=np.float32)
    _setup_fails(counts_adata, ValueError, "Every cell")


def test_fewer_than_two_cells(counts_adata):
    one = counts_adata[:1].copy()
    _setup_fails(one, ValueError, "At least 2 cells")


def test_batch_key_with_nan(counts_adata):
    counts_adata.obs["donor"] = ["a"] * 299 + [np.nan]
    _setup_fails(counts_adata, ValueError, "1 missing values", batch_key="donor")


def test_bad_size_factors(counts_adata):
    counts_adata.obs["sf"] = 1.0
    counts_adata.obs.loc[counts_adata.obs_names[2], "sf"] = 0.0
    _setup_fails(counts_adata, ValueError, "finite, positive", size_factor_key="sf")
    counts_adata.obs.loc[counts_adata.obs_names[2], "sf"] = np.nan  # not 'a value of their own'
    _setup_fails(counts_adata, ValueError, r"\(NaN\); fill them or drop", size_factor_key="sf")
    counts_adata.obs.loc[counts_adata.obs_names[2], "sf"] = np.inf  # it quoted the minimum, 1
    _setup_fails(counts_adata, ValueError, "1 cells hold inf", size_factor_key="sf")
    counts_adata.obs["sf"] = "high"  # numpy's bare "could not convert string to float"
    _setup_fails(
        counts_adata, ValueError, "size_factor_key='sf' .* cells hold 'high'", size_factor_key="sf"
    )
    for flags in (np.ones(300, bool), pd.array([True] * 300, dtype="boolean")):
        counts_adata.obs["sf"] = flags  # read as a size factor of 1 for every cell
        _setup_fails(counts_adata, ValueError, "booleans", size_factor_key="sf")


def test_bad_model_arguments(counts_adata):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    with pytest.raises(ValueError, match="^likelihood must be 'zinb' or 'nb', got 'poisson'"):
        dv.model.ZINBVAE(counts_adata, likelihood="poisson")
    with pytest.raises(ValueError, match="^dispersion must be 'gene' or 'gene-batch', got 'gene-"):
        dv.model.ZINBVAE(counts_adata, dispersion="gene-cell")


@pytest.fixture
def saved(counts_adata, tmp_path):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    path = tmp_path / "model"
    model.save(path)
    return model, path


def test_save_path_exists(saved):
    model, path = saved
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        model.save(path)
    model.save(path, overwrite=True)


def test_a_save_that_fails_leaves_no_directory_behind(saved):
    """save_anndata=True of an obs column h5py cannot write failed after adata.h5ad was begun:
    the directory held it alone, load failed on it and the next save said it existed."""
    model, path = saved
    model.adata.obs["lists"] = pd.Series([[1, 2]] * model.adata.n_obs, index=model.adata.obs_names)
    with pytest.raises(TypeError):
        model.save(path.parent / "again", save_anndata=True)
    assert not (path.parent / "again").exists()
    with pytest.raises(TypeError):  # a directory that was there stays, with its model
        model.save(path, overwrite=True, save_anndata=True)
    assert path.is_dir()
    # The half-written adata.h5ad beside it was left for load to read.
    assert not (path / "adata.h5ad").exists()
    with pytest.raises(ValueError, match="saved without its AnnData"):
        dv.model.ZINBVAE.load(path)


def test_load_with_different_genes(saved, counts_adata):
    _, path = saved
    fewer = counts_adata[:, 5:].copy()
    with pytest.raises(ValueError, match=r"5 of them missing \(e.g. \['gene_0'"):
        dv.model.ZINBVAE.load(path, adata=fewer)
    shuffled = counts_adata[:, ::-1].copy()
    # Named no gene: which ones moved, and where (read on a copy in the training order).
    moved = r"another order \(60 moved; e.g. position 0 holds 'gene_59', the model's gene there"
    with pytest.warns(UserWarning, match=f"adata has the same genes in {moved}"):
        dv.model.ZINBVAE.load(path, adata=shuffled)


def test_load_with_genes_in_another_order_advises_the_prefix_s_file(saved, counts_adata):
    """Saved with a prefix, the advice read model.pt (prepare_query_anndata reads no other):
    following it failed, the file is p_model.pt."""
    model, path = saved
    model.save(path, overwrite=True, prefix="p_")
    shuffled = counts_adata[:, ::-1].copy()
    shuffled.write_h5ad(path.parent / "shuffled.h5ad")
    backed = ad.read_h5ad(path.parent / "shuffled.h5ad", backed="r")  # in memory: reordered
    advice = r"adata = (adata\[:, torch.load\('.*/p_model.pt'.*\]\].copy\(filename=.*\))\."
    with pytest.raises(ValueError, match=advice) as refused:
        dv.model.ZINBVAE.load(path, adata=backed, prefix="p_")
    only = path.parent / "only_prefixed"
    model.save(only, prefix="p_")
    with pytest.raises(FileNotFoundError, match=r"ZINBVAE.load\('.*', adata=adata, prefix='p_'\)"):
        dv.model.ZINBVAE.load(only, adata=counts_adata)  # was load(...), a name dv lacks
    line = re.search(advice, str(refused.value)).group(1)  # the advice, run as given
    line = line.replace("'in_training_order.h5ad'", repr(str(path.parent / "ordered.h5ad")))
    ordered = eval(line, {"torch": torch, "adata": backed})
    loaded = dv.model.ZINBVAE.load(path, adata=ordered, prefix="p_")
    assert list(loaded.adata.var_names) == list(counts_adata.var_names)


def test_scvi_tools_readers_of_a_save_name_a_folder_they_cannot_read(saved, tmp_path, capsys):
    """view_setup_args and load_registry (scvi-tools' own) said 'Failed to load model file
    ... from <v0.15.0, please use convert_legacy_save' for a missing or prefixed save."""
    model, path = saved
    with pytest.raises(FileNotFoundError, match="No saved model at .*nope"):
        dv.model.ZINBVAE.view_setup_args(tmp_path / "nope")
    model.save(tmp_path / "prefixed", prefix="p_")
    with pytest.raises(
        FileNotFoundError, match=r"ZINBVAE.load_registry\('.*prefixed', prefix='p_'\)"
    ):
        dv.model.ZINBVAE.load_registry(tmp_path / "prefixed")
    registry = dv.model.ZINBVAE.load_registry(tmp_path / "prefixed", prefix="p_")
    assert registry["model_name"] == "ZINBVAE" and registry["setup_args"]["layer"] is None
    dv.model.ZINBVAE.view_setup_args(path)
    assert "ZINBVAE.setup_anndata" in capsys.readouterr().out


def test_load_downloads_a_missing_model_file_from_backup_url(saved, counts_adata, tmp_path):
    """scvi-tools' load(backup_url=...) downloads a missing model file: deltavae's checks
    refused the folder first ('No saved model at ...'), for every model's load."""
    import functools
    import http.server
    import threading

    model, path = saved
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/model.pt"
        loaded = dv.model.ZINBVAE.load(tmp_path / "fresh", counts_adata, backup_url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "fresh" / "model.pt").read_bytes() == (path / "model.pt").read_bytes()
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


@pytest.mark.parametrize(
    "model", ["ZINBVAE", "CGMDVAE", "NMFDeconv", "Archetypes", "SpatialImputer"]
)
def test_load_names_a_file_name_or_swapped_arguments(model, counts_adata, tmp_path):
    """load(path, "cells.h5ad") failed with "'str' object has no attribute 'var_names'",
    load(adata, path) with "expected str, bytes or os.PathLike object, not AnnData"."""
    cls = getattr(dv.model, model)
    with pytest.raises(TypeError, match=r"got the path 'cells.h5ad'. Read it first: adata = "):
        cls.load(tmp_path / "m", "cells.h5ad")
    with pytest.raises(TypeError, match=rf"{model}.load\(dir_path, adata\); got an AnnData as"):
        cls.load(counts_adata, tmp_path / "m")
    with pytest.raises(TypeError, match="adata must be an AnnData .*got DataFrame"):
        cls.load(tmp_path / "m", counts_adata.to_df())
    # scvi-tools' datamodule: "ZINBVAE.__init__() got an unexpected keyword argument".
    with pytest.raises(TypeError, match=rf"{model}.load\(\) got an unexpected argument 'datam"):
        cls.load(tmp_path / "m", counts_adata, datamodule=object())


def test_save_refuses_a_keyword_it_would_ignore(saved, counts_adata):
    """Keywords scvi-tools' save does not name go to AnnData.write_h5ad, only when it writes
    the AnnData: save_anndate=True (a typo) saved the model without it, silently."""
    model, path = saved
    with pytest.raises(TypeError, match=r"'save_anndate' \(did you mean 'save_anndata'\?"):
        model.save(path.parent / "typo", save_anndate=True)
    assert not (path.parent / "typo").exists()
    model.save(path.parent / "gz", save_anndata=True, compression="gzip", prefix="p_")
    loaded = dv.model.ZINBVAE.load(path.parent / "gz", prefix="p_")
    assert loaded.adata.n_obs == counts_adata.n_obs


def test_prepare_query_anndata_names_a_save_it_cannot_read(saved, counts_adata, tmp_path):
    """A missing, empty or prefixed folder, or one of another model, was scvi-tools' 'Failed
    to load model file ... from <v0.15.0, please use convert_legacy_save' (or read as it was):
    load_query_data's refusals; the model file itself (not its folder) is named as such."""
    model, path = saved
    fewer = counts_adata[:, 5:].copy()
    with pytest.raises(FileNotFoundError, match="No saved reference model at .*nope"):
        dv.model.ZINBVAE.prepare_query_anndata(fewer, tmp_path / "nope")
    model.save(tmp_path / "prefixed", prefix="p_")
    with pytest.raises(FileNotFoundError, match=r"prefix='p_'\), then pass the loaded model"):
        dv.model.ZINBVAE.prepare_query_anndata(fewer, str(tmp_path / "prefixed"))
    with pytest.raises(ValueError, match="is a ZINBVAE model; use ZINBVAE.prepare_query_"):
        dv.model.CGMDVAE.prepare_query_anndata(fewer, path)
    with pytest.raises(FileNotFoundError, match=r"is the model file; pass the directory"):
        dv.model.ZINBVAE.load(path / "model.pt", counts_adata)
    with pytest.warns(UserWarning, match="5 of the reference's 60 genes are missing"):
        ready = dv.model.ZINBVAE.prepare_query_anndata(fewer, path, inplace=False)
    assert list(ready.var_names) == list(counts_adata.var_names)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_model_file(saved, counts_adata, damage):
    _, path = saved
    (pt,) = [p for p in os.listdir(path) if p.endswith(".pt")]
    data = (path / pt).read_bytes()
    (path / pt).write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupted or truncated"):
        dv.model.ZINBVAE.load(path, adata=counts_adata)


@pytest.mark.parametrize("content", [[1, 2], {}, {"foo": 1}])
def test_a_torch_file_of_something_else_is_not_a_model(saved, counts_adata, content):
    """A valid torch file holding something else gave AttributeError / TypeError."""
    import torch

    _, path = saved
    (pt,) = [p for p in os.listdir(path) if p.endswith(".pt")]
    torch.save(content, path / pt)
    with pytest.raises(ValueError, match="corrupted or truncated"):
        dv.model.ZINBVAE.load(path, adata=counts_adata)


def test_a_missing_parameter_and_a_damaged_saved_anndata_are_named(counts_adata, tmp_path):
    """torch's raw "Error(s) in loading state_dict", and h5py's OSError without the file's
    name, for a model.pt without a parameter and a truncated adata.h5ad."""
    import torch

    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.save(tmp_path / "m", save_anndata=True)
    saved = torch.load(tmp_path / "m" / "model.pt", weights_only=False)
    del saved["model_state_dict"]["px_r"]
    torch.save(saved, tmp_path / "m" / "model.pt")
    with pytest.raises(ValueError, match=r"not the ones saved \('px_r' is missing\)"):
        dv.model.ZINBVAE.load(tmp_path / "m", counts_adata)
    model.save(tmp_path / "m", save_anndata=True, overwrite=True)
    with open(tmp_path / "m" / "adata.h5ad", "r+b") as f:
        f.truncate(500)
    # Refused before h5py reads it: its checksum, saved with the model, differs.
    with pytest.raises(ValueError, match=r"AnnData saved with the model .* not the file saved"):
        dv.model.ZINBVAE.load(tmp_path / "m")
    saved = torch.load(tmp_path / "m" / "model.pt", weights_only=False)
    del saved["attr_dict"]["saved_anndata_digest_"]  # as saved before the digest was kept
    torch.save(saved, tmp_path / "m" / "model.pt")
    with pytest.raises(ValueError, match=r"AnnData saved with the model .* cannot be read"):
        dv.model.ZINBVAE.load(tmp_path / "m")


def test_a_weight_changed_after_saving_is_refused_by_name(saved, counts_adata):
    """torch reads a file whose weights were changed (a flipped byte, an edit) silently."""
    import torch

    model, path = saved
    stored = torch.load(path / "model.pt", weights_only=False)
    name = next(k for k in stored["model_state_dict"] if k.endswith("weight"))
    stored["model_state_dict"][name].view(-1)[0] += 1e-6
    torch.save(stored, path / "model.pt")
    with pytest.raises(ValueError, match=rf"not the ones saved \({name!r} differs\).*save the"):
        dv.model.ZINBVAE.load(path, adata=counts_adata)
    model.save(path, overwrite=True)
    loaded = dv.model.ZINBVAE.load(path, adata=counts_adata)
    for key, value in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)


def test_save_paths_a_user_types(saved, tmp_path, monkeypatch):
    """``~`` is the home folder, as in scanpy's and anndata's writers (a folder named "~" was
    made), and a file in the way is named."""
    model, _ = saved
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    model.save("~/vae")
    assert (tmp_path / "home" / "vae" / "model.pt").is_file()
    assert not os.path.exists("~")
    assert dv.model.ZINBVAE.load("~/vae", model.adata).is_trained_
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="is a file; save writes a directory"):
        model.save(tmp_path / "a_file", overwrite=True)
    assert (tmp_path / "a_file").read_text() == "x"


def test_a_model_loaded_on_other_cells_forgets_the_training_split(saved, counts_adata):
    """The split's positions were of the training cells: kept, they pointed past the end of
    a smaller AnnData (IndexError deep in the loader) or at other cells."""
    model, path = saved
    assert max(model.validation_indices) >= 30
    fewer = counts_adata[:30].copy()
    loaded = dv.model.ZINBVAE.load(path, adata=fewer)
    assert loaded.train_indices is None and loaded.validation_indices is None
    assert np.isfinite(loaded.get_elbo())
    with pytest.raises(ValueError, match="indices reach cell .* but the AnnData has 30 cells"):
        loaded.get_elbo(indices=model.validation_indices)
    same = dv.model.ZINBVAE.load(path, adata=counts_adata)
    np.testing.assert_array_equal(same.train_indices, model.train_indices)
    # As many cells in another order: the positions point at other cells (they were kept).
    shuffled = counts_adata[np.random.default_rng(0).permutation(counts_adata.n_obs)].copy()
    moved = dv.model.ZINBVAE.load(path, adata=shuffled)
    assert moved.train_indices is None and moved.validation_indices is None


def test_load_without_adata_when_none_was_saved(saved):
    _, path = saved
    with pytest.raises(ValueError, match="saved without its AnnData"):
        dv.model.ZINBVAE.load(path)


def test_missing_model_directory(tmp_path, counts_adata):
    with pytest.raises(FileNotFoundError, match="No saved model"):
        dv.model.ZINBVAE.load(tmp_path / "nope", adata=counts_adata)


def test_load_with_a_batch_the_model_never_saw(counts_adata, tmp_path):
    """Loading onto cells of an unknown batch points to query mapping, before scvi-tools'
    'Cannot transfer setup without extend_categories = True'."""
    reference = counts_adata[counts_adata.obs["condition"] == "ctrl"].copy()
    dv.model.ZINBVAE.setup_anndata(reference, batch_key="condition")
    model = dv.model.ZINBVAE(reference, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "model")
    other = counts_adata[counts_adata.obs["condition"] == "stim"].copy()
    snap = _snapshot(other)
    with pytest.raises(ValueError, match=r"\['stim'\]; known: \['ctrl'\].*load_query_data"):
        dv.model.ZINBVAE.load(tmp_path / "model", adata=other)
    _assert_unchanged(other, snap)


def test_unlabelled_cells_are_marked_as_the_model_reads_them(counts_adata):
    """The NaN message said "fill them (e.g. with 'unknown')", and 'unknown' then trained as a
    cell type of its own: the message names 'Unknown', and a look-alike is warned about."""
    labels = counts_adata.obs["cluster"].astype(str).to_numpy().astype(object)
    labels[::3] = np.nan
    counts_adata.obs["label"] = labels
    advice = r"\.astype\(str\)\.where\(adata\.obs\['label'\]\.notna\(\), 'Unknown'\)"
    with pytest.raises(ValueError, match=advice):
        dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="label")
    # Integer labels (floats with NaN) are advised an integer mark, and stay integers (the
    # advice above made them '0.0', '1.0', which no prediction equals).
    numeric = counts_adata.copy()
    numeric.obs["label"] = numeric.obs["cluster"].astype(int).astype(float).where(labels == labels)
    with pytest.raises(ValueError, match=r"\.fillna\(-1\)\.astype\(int\), and pass unlabeled_"):
        dv.model.CGMDVAE.setup_anndata(numeric, labels_key="label")
    numeric.obs["label"] = numeric.obs["label"].astype(float).fillna(-1).astype(int)
    dv.model.CGMDVAE.setup_anndata(numeric, labels_key="label", unlabeled_category=-1)
    # And on pandas' string dtype, whose pd.NA astype(str) made "<NA>", not "nan" (replace
    # left 1/3 of the cells as a label "<NA>").
    text = counts_adata.copy()
    text.obs["label"] = pd.Series(labels, index=text.obs_names, dtype="string")
    with pytest.raises(ValueError, match=advice):
        dv.model.CGMDVAE.setup_anndata(text, labels_key="label")
    text.obs["label"] = text.obs["label"].astype(str).where(text.obs["label"].notna(), "Unknown")
    dv.model.CGMDVAE.setup_anndata(text, labels_key="label")
    assert "<NA>" not in set(text.obs["label"]) and (text.obs["label"] == "Unknown").sum() == 100
    counts_adata.obs["label"] = counts_adata.obs["label"].fillna("unknown")
    dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="label")
    with pytest.warns(UserWarning, match="'unknown', which is trained as a cell type of its own"):
        dv.model.CGMDVAE(counts_adata, n_latent=3, n_hidden=16)
    counts_adata.obs["label"] = counts_adata.obs["label"].replace("unknown", "Unknown")
    dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="label")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = dv.model.CGMDVAE(counts_adata, n_latent=3, n_hidden=16)
    assert "Unknown" not in model.cluster_names and len(model.cluster_names) == 3


def test_a_subset_made_after_setup_is_told_to_be_set_up(counts_adata):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    subset = counts_adata[:, :40].copy()  # e.g. highly variable genes, after setup
    with pytest.raises(ValueError, match=r"copy or subset .* ZINBVAE.setup_anndata on it, then"):
        dv.model.ZINBVAE(subset)
    dv.model.ZINBVAE.setup_anndata(subset)
    assert dv.model.ZINBVAE(subset).adata is subset


def test_data_that_are_not_counts_point_to_where_the_counts_are(counts_adata):
    """X scaled or log-normalized, the counts in a layer or in .raw: the error says where."""
    scaled = counts_adata.copy()
    scaled.X = sp.csr_matrix(_dense(scaled.X) - 1.0)
    _setup_fails(scaled, ValueError, r"negative values .* layer='counts' \(layers: \['counts'\]\)")
    # The layer named is the one holding counts, not the first (a log-normalized one).
    both = ad.AnnData(sp.csr_matrix(np.log1p(_dense(counts_adata.X))), obs=counts_adata.obs.copy())
    both.layers["lognorm"], both.layers["counts"] = both.X.copy(), counts_adata.X.copy()
    _setup_fails(both, ValueError, r"e\.g\. layer='counts' \(layers: \['counts', 'lognorm'\]\)")
    logged = counts_adata.copy()
    del logged.layers["counts"]
    logged.raw = logged
    logged.X = sp.csr_matrix(np.log1p(_dense(logged.X)))
    fix = r"adata.layers\['counts'\] = adata.raw\[:, adata.var_names\].X; layer='counts'"
    _setup_fails(logged, ValueError, r"adata\.raw holds raw counts, it seems: copy them .*" + fix)
    logged.raw = logged  # scanpy's habit: .raw holds the log-normalized data
    # Not "if they are the raw counts, copy them into a layer": they are not (non-integer), and
    # the copy was refused again with the same advice.
    _setup_fails(
        logged,
        ValueError,
        r"adata\.raw holds no raw counts either \(values such as 1\.09.*Read the counts again"
        r".*adata\.layers\['counts'\] = adata\.X\.copy\(\)\), and pass layer='counts'",
    )


def test_new_cells_that_are_not_counts_are_told_where_the_model_reads_them(saved, counts_adata):
    """A trained model takes no layer: the advice to pass layer='counts' to
    get_latent_representation could not be followed (a TypeError)."""
    model, path = saved
    new = counts_adata.copy()
    new.X = sp.csr_matrix(np.log1p(_dense(new.X)))
    # The advice overwrote the user's log-normalized X: now the counts on their own.
    fix = r"reads raw counts from X; to keep adata.X as it is, pass the counts in an AnnData"
    fix += r" of their own: counts = anndata.AnnData\(adata.layers\['counts'\], obs="
    with pytest.raises(ValueError, match=fix):
        model.get_latent_representation(new)
    with pytest.raises(ValueError, match=fix):  # nor can load take a layer
        dv.model.ZINBVAE.load(path, adata=new)
    scanpy_like = ad.AnnData(new.X.copy(), obs=new.obs.copy(), var=new.var.copy())
    scanpy_like.raw = scanpy_like  # log-normalized too: not where the counts are
    with pytest.raises(ValueError, match=r"reads raw counts from X: put them there\.$"):
        model.get_latent_representation(scanpy_like)
    adata = new
    counts = ad.AnnData(adata.layers["counts"], obs=adata.obs.copy(), var=adata.var.copy())
    assert model.get_latent_representation(counts).shape == (new.n_obs, 3)
    loaded = dv.model.ZINBVAE.load(path, adata=counts)
    assert loaded.get_latent_representation().shape == (new.n_obs, 3)
    assert np.asarray(_dense(new.X)).max() < 10  # still log-normalized


def test_a_condition_edited_after_training_is_not_read_as_the_old_one(counts_adata):
    """Read-outs of the model's own AnnData used the batch codes registered at setup after
    the user changed adata.obs['condition']: results of the old values, without a word."""
    dv.model.ZINBVAE.setup_anndata(counts_adata, batch_key="condition")
    model = dv.model.ZINBVAE(counts_adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    z = model.get_latent_representation()
    kept = counts_adata.obs["condition"].copy()
    counts_adata.obs["condition"] = kept.iloc[::-1].to_numpy()  # every cell's another's
    for call in (model.get_latent_representation, model.write_to_adata):
        with pytest.raises(ValueError, match=r"obs\['condition'\] changed .* pass a copy"):
            call()
    swapped = model.get_latent_representation(counts_adata.copy())  # as the advice says
    assert np.abs(swapped - z).max() > 1e-3
    counts_adata.obs["condition"] = kept
    np.testing.assert_allclose(model.get_latent_representation(), z, rtol=1e-6)


def test_counts_normalized_in_place_after_training_are_refused(counts_adata):
    """The setup checked the counts once; normalize_total + log1p on the same object then
    went unnoticed, and latents and expression came from log-normalized input."""
    import scanpy as sc

    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=4, n_hidden=16)
    model.train(max_epochs=2, **TRAIN)
    z = model.get_latent_representation()
    sc.pp.normalize_total(counts_adata)
    sc.pp.log1p(counts_adata)
    with pytest.raises(ValueError, match=r"no longer holds raw counts.*layer='counts'.*ZINBVAE"):
        model.get_latent_representation()
    with pytest.raises(ValueError, match="no longer holds raw counts"):
        model.train(max_epochs=1, **TRAIN)
    # Counts restored: the model reads them as before.
    counts_adata.X = counts_adata.layers["counts"].copy()
    np.testing.assert_allclose(model.get_latent_representation(), z, rtol=1e-5, atol=1e-6)


def test_new_cells_without_x_are_told_to_put_the_data_in_x(saved, counts_adata):
    """New cells, a load or a query without X were told to pass the layer, which no read-out,
    load nor load_query_data takes."""
    model, path = saved
    new = counts_adata.copy()
    new.X = None
    fix = r"X is empty \(None\)\. The model reads its data from X: .* adata.X = adata.layers"
    with pytest.raises(ValueError, match=fix):
        model.get_latent_representation(new)
    with pytest.raises(ValueError, match=fix):
        dv.model.ZINBVAE.load(path, adata=new)
    with pytest.raises(ValueError, match=r"The reference read its data from X: .* query.X ="):
        dv.model.ZINBVAE.load_query_data(new, model)
    new.X = new.layers["counts"].copy()  # the advice followed
    assert model.get_latent_representation(new).shape == (new.n_obs, 3)


def test_a_cgmdvae_built_on_data_that_are_not_counts_names_setup_s_layer(counts_adata):
    """CGMDVAE(adata) checks the counts (its setup takes real values too) and advised
    layer='counts', which CGMDVAE() does not take (a TypeError): the layer is setup's."""
    logged = counts_adata.copy()
    logged.X = sp.csr_matrix(np.log1p(_dense(logged.X)))
    dv.model.CGMDVAE.setup_anndata(logged)
    fix = r"layer='counts' to CGMDVAE.setup_anndata, then build the CGMDVAE again"
    with pytest.raises(ValueError, match=fix):
        dv.model.CGMDVAE(logged, n_clusters=2)
    dv.model.CGMDVAE.setup_anndata(logged, layer="counts")  # the advice followed
    assert dv.model.CGMDVAE(logged, n_clusters=2).adata is logged


@pytest.mark.parametrize(
    ("model", "typo", "hint"),
    [
        ("ZINBVAE", "n_latents", "did you mean 'n_latent'"),
        ("CGMDVAE", "n_cluster", "did you mean 'n_clusters'?"),
        ("Archetypes", "n_archetype", "did you mean 'n_archetypes'"),
        ("NMFDeconv", "n_component", "did you mean 'n_components'?"),
    ],
)
def test_a_mistyped_model_keyword_names_the_closest(counts_adata, model, typo, hint):
    """Python's bare "__init__() got an unexpected keyword argument 'n_cluster'" named no
    keyword the model takes (setup_anndata and train name the closest)."""
    cls = getattr(dv.model, model)
    cls.setup_anndata(counts_adata)
    with pytest.raises(TypeError, match=rf"{model}\(\) got an .* '{typo}': {re.escape(hint)}"):
        cls(counts_adata, **{typo: 3})
