"""Query mapping onto a reference, and the records predictions keep of how they were made
(model/_query.py, _genes.py, _latent_shift.py)."""

import re
import warnings

import anndata
import numpy as np
import pandas as pd
import pytest

import deltavae as dv

FAST = {"batch_size": 64}


def _counts(seed=0, **kwargs):
    return dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=2, n_conditions=2, seed=seed, **kwargs
    )


def _trained(cls, adata, **kwargs):
    model = cls(adata, n_latent=3, n_hidden=16, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged, said elsewhere
        model.train(max_epochs=1, **FAST)
    return model


def _reference(adata, n_clusters=2, **setup):
    """A CGMDVAE reference of ``adata``'s conditions, trained one epoch."""
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", **setup)
    return _trained(dv.model.CGMDVAE, adata, n_clusters=n_clusters)


def _query(adata, n_cells):
    """The first ``n_cells`` of ``adata``, as cells of a condition the reference lacks."""
    query = adata[:n_cells].copy()
    query.obs["condition"] = "new"
    return query


@pytest.mark.parametrize("likelihood", ["zinb", "nb"])
def test_a_count_predictions_record_says_what_its_x_holds(likelihood):
    """uns['prediction']['X'] said 'expected counts at each cell's library size' for every
    count prediction: a ZINB model's decoded X is the zero-inflated mean (dropout included,
    totals below the library size), and translate's default X is the observed counts plus
    the change, averaged with observed responses on log-normalized counts."""
    adata = _counts()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    g = _trained(dv.model.CGMDVAE, adata, n_clusters=2, likelihood=likelihood)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    library = np.asarray(ctrl.X.sum(1)).ravel()
    decoded = g.translate(ctrl, "stim", residual=False, seed=0)
    shifted = g.predict_perturbation(ctrl, "stim", method="latent_shift", seed=0)
    for out in (decoded, shifted):
        scale = out.uns["prediction"]["X"]
        assert scale.startswith("expected counts at each cell's library size")
        assert ("dropout included" in scale) == (likelihood == "zinb")
        ratio = np.median(out.X.sum(1) / library)
        assert ratio < 0.99 if likelihood == "zinb" else ratio == pytest.approx(1, abs=0.01)
    scale = g.translate(ctrl, "stim", seed=0).uns["prediction"]["X"]
    assert scale.startswith("each cell's observed counts plus the model's change")
    assert "averaged with the observed responses on log-normalized counts" in scale
    alone = g.translate(ctrl, "stim", response_weight=0, seed=0).uns["prediction"]["X"]
    assert alone.startswith("each cell's observed counts plus") and "averaged" not in alone


def test_a_latent_library_models_latent_shift_decodes_its_mean_library():
    """latent_shift decoded a latent-library ZINBVAE at one random draw of each cell's
    library: X (the expectation) changed with batch_size under one seed, and uns said 'at
    each cell's library size'."""
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = _trained(dv.model.ZINBVAE, adata, use_observed_lib_size=False)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    runs = [vae.predict_perturbation(ctrl, "stim", seed=0, batch_size=b) for b in (64, 7)]
    np.testing.assert_allclose(runs[0].X, runs[1].X, rtol=1e-5)
    assert "each cell's latent library size (its posterior mean)" in runs[0].uns["prediction"]["X"]


def test_a_query_of_the_references_empty_categories_is_refused_with_the_renaming(tmp_path):
    """A reference set up with unused categories in its batch column (a pandas Categorical
    subset) registered them: a query of those categories was told 'nothing is left to learn'
    and mapped through columns that never trained."""
    adata = dv.datasets.synthetic_counts(n_cells=150, n_genes=20, n_conditions=3, seed=2)
    names = list(adata.obs["condition"].cat.categories)
    ref = adata[adata.obs["condition"] != names[2]].copy()
    ref.obs["condition"] = pd.Categorical(ref.obs["condition"].astype(str), categories=names)
    query = adata[adata.obs["condition"] == names[2]].copy()
    with pytest.warns(UserWarning, match=rf"no cell carries \(\['{names[2]}'\]\)"):
        dv.model.ZINBVAE.setup_anndata(ref, batch_key="condition")  # said at setup too
    vae = _trained(dv.model.ZINBVAE, ref)
    vae.save(tmp_path / "ref")
    for reference in (vae, tmp_path / "ref"):
        with pytest.raises(ValueError, match=rf"holds \['{names[2]}'\]: categories of the ref"):
            dv.model.ZINBVAE.load_query_data(query, reference)
    query.obs["condition"] = (
        query.obs["condition"]
        .astype(object)
        .map(  # the advice
            lambda v: {names[2]: f"query_{names[2]}"}.get(v, v)
        )
    )
    q = dv.model.ZINBVAE.load_query_data(query, vae)
    assert q.query_mapping_["new_categories"] == {"condition": [f"query_{names[2]}"]}


def test_the_renaming_of_untrained_categories_runs_on_integer_conditions():
    """The advice for a query of the reference's categories without training cells,
    ``'query_' + query.obs[key].astype(str)``, renamed every value: on a reference of integer
    conditions the query was then refused as 'another type' (told to convert it back with
    astype(int), which fails on 'query_0'), and on string conditions the query's cells of
    trained categories became new categories too."""
    adata = dv.datasets.synthetic_counts(n_cells=150, n_genes=20, n_conditions=3, seed=2)
    codes = np.asarray(adata.obs["condition"].cat.codes, dtype=int)
    adata.obs["cond"] = codes
    ref, query = adata[codes < 2].copy(), adata.copy()  # the query holds 0, 1 and 2
    ref.obs["cond"] = pd.Categorical(codes[codes < 2], categories=[0, 1, 2])
    with pytest.warns(UserWarning, match=r"no cell carries"):
        dv.model.ZINBVAE.setup_anndata(ref, batch_key="cond")
    vae = _trained(dv.model.ZINBVAE, ref)
    with pytest.raises(ValueError, match=r"holds \['2'\]: categories of the ref") as refused:
        dv.model.ZINBVAE.load_query_data(query, vae)
    exec(re.search(r"e\.g\. (query\.obs.*?); set up", str(refused.value)).group(1))
    q = dv.model.ZINBVAE.load_query_data(query, vae)
    assert q.query_mapping_["new_categories"] == {"cond": ["3"]}  # 0 and 1 stay known
    assert (np.asarray(query.obs["cond"]) == np.where(codes == 2, 3, codes)).all()


def test_scvi_tools_third_argument_is_not_read_as_the_gene_overlap():
    """load_query_data(query, reference, False), scvi-tools' inplace_subset_query_vars, was
    read as min_gene_overlap=0: a query sharing no gene with the reference mapped as zeros."""
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = _trained(dv.model.ZINBVAE, adata)
    query = adata.copy()
    query.obs["condition"] = "new"
    query.var_names = [f"other{i}" for i in range(query.n_vars)]
    for flag in (False, True):
        with pytest.raises(TypeError, match=rf"got {flag}.*inplace_subset_query_vars"):
            dv.model.ZINBVAE.load_query_data(query, vae, flag)


def test_a_query_of_a_query_keeps_every_weight_of_its_reference_query(tmp_path):
    """A query mapped onto a saved query model learns only its own new columns: the first
    query's weights (its learned batch and covariate columns and dispersions included) stay
    bit-identical, and both earlier data sets keep their latent."""
    import torch

    adata = dv.datasets.synthetic_counts(n_cells=180, n_genes=20, n_conditions=3, seed=4)
    adata.obs["lane"] = np.where(np.arange(adata.n_obs) % 2, "L1", "L2")
    names = list(adata.obs["condition"].cat.categories)
    parts = [adata[adata.obs["condition"] == n].copy() for n in names]
    for i, part in enumerate(parts[1:], 1):  # a lane of its own, a condition of its own
        part.obs["lane"] = f"L{i + 2}"
    ref, first, second = parts  # the reference: one condition (no column), lanes L1, L2
    dv.model.ZINBVAE.setup_anndata(ref, batch_key="condition", categorical_covariate_keys="lane")
    vae = _trained(dv.model.ZINBVAE, ref, dispersion="gene-batch")
    q = dv.model.ZINBVAE.load_query_data(first, vae)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.train(max_epochs=1, **FAST)
    q.save(tmp_path / "q")
    qq = dv.model.ZINBVAE.load_query_data(second, tmp_path / "q")
    assert qq.query_mapping_["reference_sizes"] == [2, 3]  # condition c0, c1; lane L1-L3
    before = {k: v.clone() for k, v in q.module.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qq.train(max_epochs=2, **FAST)
    after = qq.module.state_dict()
    for key, old in before.items():
        new = after[key]
        if new.shape == old.shape:
            assert torch.equal(new, old), key
        elif key == "px_r":  # per condition: c0, c1 kept, c2 new
            assert torch.equal(new[:, :2], old), key
        else:  # inputs, then one-hot condition (2 -> 3) and lane (3 -> 4): old columns kept
            n_in = old.shape[1] - 5
            assert torch.equal(new[:, : n_in + 2], old[:, : n_in + 2]), key
            assert torch.equal(new[:, n_in + 3 : n_in + 6], old[:, n_in + 2 :]), key
    for cells in (ref, first):
        np.testing.assert_array_equal(
            qq.get_latent_representation(cells), q.get_latent_representation(cells)
        )


def test_predictions_on_the_observed_data_name_the_genes_a_query_lacks(tmp_path):
    """translate (residual) and nearest_response of a query that lacks some of the reference's
    genes added the change to the zeros the mapping filled them with, and returned those genes'
    near-zero values among the measured ones with nothing said."""
    adata = _counts()
    g = _reference(adata)
    query = adata[:, 3:].copy()  # genes gene_0..gene_2 missing
    query.obs["condition"] = np.where(adata.obs["condition"] == "ctrl", "ctrl", "new")
    with pytest.warns(UserWarning, match="3 of the reference's 20 genes are missing"):
        q = dv.model.CGMDVAE.load_query_data(query, g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.train(max_epochs=1, **FAST)
    new = query[query.obs["condition"] == "new"].copy()
    lacks = r"adata lacks 3 of the model's 20 genes \(\['gene_0', 'gene_1', 'gene_2'\]\)"
    learned = r"learned one from its query alone .*condition: 'new' -> 'ctrl'"
    with (
        pytest.warns(UserWarning, match=learned),
        pytest.warns(UserWarning, match=lacks + r".*residual=True adds the change.*zero"),
    ):
        out = q.translate(new, "ctrl", response_weight=0, seed=0)
    assert out.n_vars == 20  # the reference's genes, as documented
    with pytest.warns(UserWarning, match=lacks + r".*nearest_response.*method='latent_shift'"):
        q.predict_perturbation(new, "ctrl", method="nearest_response")
    with pytest.warns(UserWarning, match=learned) as said:
        q.translate(new, "ctrl", residual=False, seed=0)
    assert len(said) == 1  # decoded: every gene the model's own, nothing else to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q.predict_perturbation(new, "ctrl", method="latent_shift", seed=0)
        g.translate(adata[adata.obs["condition"] == "stim"].copy(), "ctrl", seed=0)
    # Saved with its aligned query and loaded without the query: its zeros are still named.
    q.save(tmp_path / "q", save_anndata=True)
    loaded = dv.model.CGMDVAE.load(tmp_path / "q")
    assert loaded.query_mapping_["genes_missing"] == ["gene_0", "gene_1", "gene_2"]
    with pytest.warns(UserWarning, match=learned), pytest.warns(UserWarning, match=lacks):
        loaded.translate(None, "ctrl", response_weight=0, seed=0)  # new_categories saved too


def test_a_query_of_fewer_cells_than_clusters_maps_trains_and_loads(tmp_path):
    """load_query_data of 2 cells (the fewest it takes) onto a 3-cluster reference was refused
    by the new model's own check, 'n_clusters=3 is more mixture components than the 2 cells
    to fit them to' (a query fits no mixture: its reference's is frozen), and so was a load of
    the saved reference, or of the query model, with fewer cells than clusters."""
    adata = _counts()
    g = _reference(adata, n_clusters=3)
    g.save(tmp_path / "ref")
    query = _query(adata, 2)
    q = dv.model.CGMDVAE.load_query_data(query, g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        q.train(max_epochs=1, train_size=1.0)
    z = q.get_latent_representation()
    q.save(tmp_path / "query")
    loaded = dv.model.CGMDVAE.load(tmp_path / "query", adata=query)
    np.testing.assert_array_equal(loaded.get_latent_representation(), z)
    few = adata[:2].copy()
    reloaded = dv.model.CGMDVAE.load(tmp_path / "ref", adata=few)
    np.testing.assert_array_equal(
        reloaded.get_latent_representation(), g.get_latent_representation(few)
    )
    with pytest.warns(UserWarning, match="Categories with fewer than 3 cells"):
        dv.model.CGMDVAE.setup_anndata(few, condition_key="condition")
    with pytest.raises(ValueError, match="n_clusters=3 is more mixture components than the 2"):
        dv.model.CGMDVAE(few, n_clusters=3)  # a new model still fits its mixture to its cells


def test_integer_labels_with_missing_values_get_advice_that_runs():
    """A query's integer labels column with NaN (floats, as pandas makes it) was told to
    convert it, query.obs['ct'].astype(int), which fails on the NaN."""
    adata = _counts()
    adata.obs["ct"] = adata.obs["cluster"].astype(int)
    g = _reference(adata, labels_key="ct")
    query = _query(adata, 40)
    query.obs["ct"] = query.obs["ct"].where(np.arange(40) >= 3)  # 3 NaN: floats
    fix = r"query.obs\['ct'\] = query.obs\['ct'\].fillna\(-1\).astype\(int\)"
    with pytest.raises(ValueError, match=r"holds 3 missing labels \(NaN\).*floats.*" + fix):
        dv.model.CGMDVAE.load_query_data(query, g)
    query.obs["ct"] = query.obs["ct"].fillna(-1).astype(int)  # the advice followed
    q = dv.model.CGMDVAE.load_query_data(query, g)
    assert q.query_mapping_["new_categories"] == {"condition": ["new"]}


def test_a_query_whose_counts_were_replaced_after_mapping_is_read_as_it_is_now(tmp_path):
    """A query model reads the user's query through an AnnData of its own (sharing the query's
    matrices, or a gene-aligned copy), and so does a model loaded onto genes in another order.
    After ``query.X = <other counts>``, a read of the query read that AnnData's old counts:
    ``get_latent_representation(query)`` gave the z of the counts replaced, and
    ``query.copy()`` another."""
    adata = _counts()
    g = _reference(adata)
    g.save(tmp_path / "ref")
    query = _query(adata, 60)
    reordered = query[:, ::-1].copy()
    q = dv.model.CGMDVAE.load_query_data(query, g)  # shares the query's X
    with pytest.warns(UserWarning, match="same genes in another order"):
        loaded = dv.model.CGMDVAE.load(tmp_path / "ref", adata=adata[:, ::-1].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        q.train(max_epochs=1, **FAST)
    with pytest.warns(UserWarning, match="nothing is left to learn"):
        qr = dv.model.CGMDVAE.load_query_data(reordered, q)  # a gene-aligned copy
    for model, cells in ((q, query), (qr, reordered), (loaded, loaded._query_adata)):
        before = model.get_latent_representation(cells)
        cells.X = cells.X * 3  # other counts, the same cells and genes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # genes in another order, said before
            now, copied = (model.get_latent_representation(a) for a in (cells, cells.copy()))
        assert np.abs(now - before).max() > 0.05
        np.testing.assert_array_equal(now, copied)
        # Counts changed in place in the AnnData it shares are read as they are, as before.
        if model is q:
            cells.X.data[:] = cells.X.data / 3
            np.testing.assert_array_equal(model.get_latent_representation(cells), before)


def test_a_query_named_by_other_identifiers_is_told_the_column_that_holds_the_references():
    """A query named by Ensembl IDs, the reference's symbols in a var column (as scanpy's 10x
    readers write them), was told only "use the same gene identifiers" by load_query_data, and
    "No reference var names found" by scvi-tools' prepare_query_anndata; NMFDeconv and
    SpatialImputer name the column. The line given runs, and the query then maps."""
    adata = _counts()
    g = _reference(adata)
    query = _query(adata, 40)
    query.var["gene_symbols"] = query.var_names.to_numpy()
    query.var_names = [f"ENSG{i:011d}" for i in range(query.n_vars)]
    fix = (
        r"query.var\['gene_symbols'\] holds 20 of the gene names of reference: .*"
        r"query.var_names = query.var\['gene_symbols'\].astype\(str\)"
    )
    with pytest.raises(ValueError, match=r"shares 0 of the reference's 20 genes.*" + fix):
        dv.model.CGMDVAE.load_query_data(query, g)
    with pytest.raises(ValueError, match=r"shares none of the reference's 20 genes.*" + fix):
        dv.model.CGMDVAE.prepare_query_anndata(query, g, inplace=False)
    query.var_names = query.var["gene_symbols"].astype(str)  # the advice followed
    query.var_names_make_unique()
    q = dv.model.CGMDVAE.load_query_data(query, g)
    assert q.query_mapping_["n_genes_missing"] == 0


def test_a_query_model_asked_about_a_condition_it_lacks_is_not_called_the_reference():
    """A query model read cells of a condition neither it nor its reference learned; it was
    told to "call q (the query model), not the reference model", which it was already."""
    adata = _counts()
    g = _reference(adata)
    query = _query(adata, 40)
    q = dv.model.CGMDVAE.load_query_data(query, g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        q.train(max_epochs=1, **FAST)
    other = query.copy()
    other.obs["condition"] = "newer"
    for model, told in (
        (g, r"call q \(the query model\), not the reference model, on them"),
        (q, r"call q \(a query model of this query model\) on them"),
    ):
        with pytest.raises(
            ValueError, match=r"\['newer'\].*load_query_data\(adata, model\).*" + told
        ):
            model.get_latent_representation(other)


def test_raw_counts_mapped_onto_a_reference_of_log_data_are_told_to_be_transformed_alike():
    """A query of raw counts mapped onto a likelihood='normal' reference of log-normalized data
    was told to "Use a count likelihood (the default, 'zinb')", which a query cannot choose,
    about "adata.X" (the user's is the query)."""
    import scanpy as sc

    adata = _counts()
    logged = adata.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    dv.model.CGMDVAE.setup_anndata(logged, condition_key="condition")
    g = _trained(dv.model.CGMDVAE, logged, n_clusters=2, likelihood="normal")
    query = _query(adata, 40)  # raw counts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dv.model.CGMDVAE.load_query_data(query, g)
    said = [str(w.message) for w in caught if "raw counts" in str(w.message)]
    assert len(said) == 1 and "count likelihood" not in said[0]
    assert said[0].startswith("query.X looks like raw counts (whole numbers")
    assert "sc.pp.normalize_total(query); sc.pp.log1p(query)" in said[0]
    sc.pp.normalize_total(query)
    sc.pp.log1p(query)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformed as the reference's: nothing to say
        dv.model.CGMDVAE.load_query_data(query, g)


def test_a_reference_whose_anndata_changed_in_place_still_saves_and_maps(tmp_path):
    """Log-normalizing the reference's AnnData in place after training (for plots) made
    save() and load_query_data fail ('The model's AnnData no longer holds raw counts'), which
    need only the weights (scvi-tools saves and maps): both scored the typicality record of
    the fit on those cells first. The record is left out, as for cells subset since, and said."""
    import scanpy as sc

    adata = _counts()
    adata.obs["ct"] = adata.obs["cluster"].astype(str)
    g = _reference(adata, labels_key="ct")
    query = _query(adata, 40)
    counts = adata.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    with pytest.warns(UserWarning, match=r"typicality .*NaN.*no longer holds raw counts"):
        q = dv.model.CGMDVAE.load_query_data(query, g)
    assert q.typicality_record_ is None and g.typicality_record_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        g.save(tmp_path / "ref")
    loaded = dv.model.CGMDVAE.load(tmp_path / "ref", counts)
    assert loaded.typicality_record_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        q.train(max_epochs=1, **FAST)
    assert q.predict_labels()["typicality"].isna().all()


def test_a_query_annotated_in_its_own_names_is_told_to_keep_them_under_another_column():
    """A query whose labels column holds its own annotation (names the reference does not use)
    was told only to set them to the unlabelled mark, overwriting the annotation it came with;
    the advice now keeps it under another name, a line that runs (partly known labels keep the
    advice to mark the unknown ones)."""
    adata = _counts()
    adata.obs["ct"] = adata.obs["cluster"].astype(str)
    g = _reference(adata, labels_key="ct")
    query = _query(adata, 40)
    query.obs["ct"] = np.where(np.arange(40) % 2, "T cell", "B cell")
    fix = r"query.obs\['ct_query'\] = query.obs.pop\('ct'\)"
    with pytest.raises(ValueError, match=r"does not know: \['B cell', 'T cell'\]\..*" + fix):
        dv.model.CGMDVAE.load_query_data(query, g)
    query.obs["ct_query"] = query.obs.pop("ct")  # the advice followed
    q = dv.model.CGMDVAE.load_query_data(query, g)
    assert q.query_mapping_["new_categories"] == {"condition": ["new"]}
    assert list(query.obs["ct_query"][:2]) == ["B cell", "T cell"]


def test_query_cells_without_counts_in_the_references_genes_are_named_as_such():
    """Query cells whose counts all lie in genes the reference lacks (the reference read a gene
    panel or its highly variable genes) are empty to the model; they were said to be "all
    zeros in adata.X" with sc.pp.filter_cells(adata, min_counts=1) as the fix, which leaves
    them in the query, where they are not all zeros."""
    from scipy import sparse

    adata = _counts()
    g = _reference(adata)
    extra = np.ones((40, 2), dtype=np.float32)
    counts = adata[:40].X.toarray()
    counts[:3] = 0  # cells 0-2: counts only in the genes the reference lacks
    query = anndata.AnnData(
        sparse.csr_matrix(np.hstack([counts, extra])),
        obs=adata[:40].obs.assign(condition="new"),
        var=pd.DataFrame(index=[*adata.var_names, "extra_0", "extra_1"]),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = dv.model.CGMDVAE.load_query_data(query, g)
    said = [str(w.message) for w in caught]
    assert not [s for s in said if "filter_cells" in s]
    named = [s for s in said if "no counts in the reference's genes" in s]
    assert len(named) == 1 and named[0].startswith("3 of the query's 40 cells (e.g. cell_0, ")
    keep = np.asarray(q.adata.X.sum(axis=1)).ravel() > 0  # the advice followed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dv.model.CGMDVAE.load_query_data(query[keep].copy(), g)


def test_a_query_of_versioned_ensembl_ids_is_told_to_take_the_versions_off():
    """GENCODE's Ensembl IDs carry a version (ENSG00000187608.5), Ensembl's and Cell Ranger's
    do not: a query named by one mapped onto a reference named by the other shared none of
    its genes and was told only to "use the same gene identifiers", which it does; a query
    versioned in part had those genes filled with zeros, the warning giving their number
    alone."""
    adata = _counts()
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    g = _reference(adata)
    query = _query(adata, 60)
    versioned = query.copy()
    versioned.var_names = [f"{name}.5" for name in query.var_names]
    with pytest.raises(ValueError, match=r"version suffixes.*share 20 genes") as err:
        dv.model.CGMDVAE.load_query_data(versioned, g)
    line = re.search(r"(adata\.var_names = .*?regex=True\))", str(err.value)).group(1)
    exec(line, {"adata": versioned})  # the line given runs and names the genes as the reference
    assert versioned.var_names.equals(query.var_names)
    partly = query.copy()
    partly.var_names = [f"{n}.2" if i < 8 else n for i, n in enumerate(query.var_names)]
    with pytest.warns(UserWarning, match=r"8 of the reference's 20 genes are missing.* 8 of them"):
        dv.model.CGMDVAE.load_query_data(partly, g, min_gene_overlap=0.1)
    # Symbols that end in a number are not read as versions.
    assert dv.model._gene_advice.version_only_matches(["RP11-34P13.7"], ["RP11-34P13.8"]).empty


def test_gene_names_with_spaces_around_them_are_told_to_be_stripped():
    """Gene names read from a table typed with a space ('gene_0 '): a query of them shared no
    gene with the reference and was told to "use the same gene identifiers", which it does;
    new cells so named were refused as lacking the genes without a word of why; a query
    spaced in part had those genes filled with zeros, said by their number alone."""
    adata = _counts()
    g = _reference(adata)
    query = _query(adata, 60)
    spaced = query.copy()
    spaced.var_names = [f"{name} " for name in query.var_names]
    with pytest.raises(ValueError, match=r"spaces around .* share 20 genes .*'gene_0 '") as err:
        dv.model.CGMDVAE.load_query_data(spaced, g)
    line = re.search(r"(adata\.var_names = .*?strip\(\))", str(err.value)).group(1)
    exec(line, {"adata": spaced})  # the line given runs and names the genes as the reference
    assert spaced.var_names.equals(query.var_names)
    cells = adata[:30].copy()
    cells.var_names = [f" {name}" for name in adata.var_names]
    with pytest.raises(ValueError, match=r"spaces around their names, adata holds 20") as err:
        g.get_latent_representation(cells)
    line = str(err.value).split("name them as the model does, ")[1].removesuffix(".")
    exec(line, {"model": g, "adata": cells})
    np.testing.assert_allclose(
        g.get_latent_representation(cells), g.get_latent_representation(adata[:30].copy())
    )
    partly = query.copy()
    partly.var_names = [f"{n} " if i < 8 else n for i, n in enumerate(query.var_names)]
    with pytest.warns(UserWarning, match=r"8 of the reference's 20 genes are missing.* 8 of them"):
        dv.model.CGMDVAE.load_query_data(partly, g, min_gene_overlap=0.1)
    with pytest.raises(ValueError, match=r"Without the spaces around their names"):
        g.get_normalized_expression(gene_list=["gene_1 ", "gene_2 "])


def test_a_query_category_that_is_the_references_but_for_case_or_spaces_is_warned_of():
    """A query's condition category written otherwise than the reference's ('ctrl ' with a
    trailing space, 'STIM', a donor 1015.0 for 1015) is a new category to load_query_data,
    learned from nothing and mapped apart from the reference's cells of the same condition,
    without a word; new categories unlike the reference's stay quiet."""
    adata = _counts()
    g = _reference(adata)
    known = [str(c) for c in adata.obs["condition"].cat.categories]
    query = adata[:60].copy()
    query.obs["condition"] = [f"{known[0]} ", known[1].upper(), "new"] * 20
    with pytest.warns(UserWarning, match="only in case, spaces or number format") as record:
        q = dv.model.CGMDVAE.load_query_data(query, g)
    message = next(str(w.message) for w in record if "number format" in str(w.message))
    assert f"{known[1].upper()!r} (the reference's {known[1]!r})" in message
    line = re.search(r"(query\.obs\[.*\}\))\.$", message).group(1)
    exec(line, {"query": query})  # the line given renames them to the reference's
    assert set(query.obs["condition"]) == {*known, "new"}
    assert len(q.query_mapping_["new_categories"]["condition"]) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dv.model.CGMDVAE.load_query_data(query, g)  # 'new' alone: nothing said of it


def test_a_query_model_in_training_mode_trains_on_minibatches_of_one_cell():
    """A query model's BatchNorm layers keep the reference's statistics in training mode too
    (ReferenceBatchNorm1d). Switched to training mode (``q.module.train()``, for dropout),
    it was taken to train BatchNorm: batch_size=1 was refused ('BatchNorm layers need at
    least 2 cells per minibatch') and a last minibatch of one cell was dropped."""
    from deltavae.model._train_steps import add_splitter_arguments
    from deltavae.model._training_checks import trains_batch_norm

    adata = _counts()
    g = _reference(adata)
    assert trains_batch_norm(g)
    q = dv.model.CGMDVAE.load_query_data(_query(adata, 5), g)
    q.module.train()
    assert not trains_batch_norm(q)
    kwargs = {}
    add_splitter_arguments(q, 4, None, 5, False, "auto", kwargs)  # 5 = 4 + 1: one left over
    assert "drop_last" not in kwargs.get("datasplitter_kwargs", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        q.train(max_epochs=1, train_size=1.0, batch_size=1)
    assert len(q.history["elbo_train"]) == 1 and q.is_trained_


def test_query_labels_that_are_the_references_but_for_spaces_are_told_to_be_renamed():
    """Query labels '0 ' and 'B' for a reference's '0' and 'b' (spaces, case) were refused as
    labels the reference does not know, with advice to move or unlabel them, and no word of
    what they most likely are, while query conditions written so were named. The refusal now
    names each with the reference's label and a line that renames them, which maps."""
    adata = _counts()
    adata.obs["ct"] = adata.obs["cluster"].astype(str).replace({"1": "b"})
    g = _reference(adata, labels_key="ct")
    query = _query(adata, 40)
    query.obs["ct"] = pd.Categorical(np.where(np.arange(40) % 2, "0 ", "B"))
    query.obs.loc[query.obs_names[:2], "ct"] = np.nan  # NaN stay NaN through the line
    with pytest.raises(ValueError, match="differ from the reference's labels only") as info:
        dv.model.CGMDVAE.load_query_data(query, g)
    message = str(info.value)
    assert "'0 ' (the reference's '0'), 'B' (the reference's 'b')" in message
    line = re.search(r"rename them: (query\.obs\[.*\}\))\. Otherwise", message).group(1)
    exec(line, {"query": query})
    assert query.obs["ct"].isna().sum() == 2
    query.obs["ct"] = query.obs["ct"].fillna("Unknown")
    q = dv.model.CGMDVAE.load_query_data(query, g)
    assert set(q.adata.obs["ct"]) == {"0", "b", "Unknown"}
