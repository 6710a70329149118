"""The three spot models' public API as one: the same argument forms for the same meaning
(spots passed to get_proportions and load), and messages a user can read."""

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import deltavae as dv

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def split():
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, cells_per_spot=(2, 6), seed=3)


def _imputer(split, **kwargs):
    spots, ref = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few shared genes
        model = dv.model.SpatialImputer.from_reference(
            spots[:, :30], reference=ref, labels_key="cluster", profiles="type", **kwargs
        )
        model.train(**TRAIN)
    return model


@pytest.fixture(scope="module")
def archetypes():
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3, min_spots=1)
    # One epoch left an archetype no spot leads; so did 20 in some test orders (the draws
    # follow the tests run before in the worker: `-k float64` alone, `-n 2` over the file),
    # whose read-outs then warn. 40 lead all three alone, in the file and under `-n 2`.
    model.train(**{**TRAIN, "max_epochs": 40})
    return model, mix


def test_imputer_proportions_of_some_spots_as_nmfdeconvs(split):
    """SpatialImputer.get_proportions(spots) failed with Python's bare TypeError ('takes 1
    positional argument'), where NMFDeconv.get_proportions(adata) takes the spots."""
    spots, _ = split
    model = _imputer(split)
    whole = model.get_proportions()
    some = spots[spots.obs_names[[7, 2, 30]]]  # any genes, any order, a view
    part = model.get_proportions(some)
    assert list(part.index) == list(some.obs_names)
    pd.testing.assert_frame_equal(part, whole.loc[some.obs_names])
    pd.testing.assert_frame_equal(model.get_proportions(adata=spots), whole)
    other = spots.copy()
    other.obs_names = [f"new_{i}" for i in range(other.n_obs)]
    with pytest.raises(ValueError, match=r"Proportions are of the model's spots.*40 spots it"):
        model.get_proportions(other)
    with pytest.raises(ValueError, match=r"For other spots, fit a model on them \(SpatialImputer"):
        model.impute(adata=other)
    with pytest.raises(TypeError, match="adata must be an AnnData of the model's spots"):
        model.get_proportions(spots.to_df())
    with pytest.raises(ValueError, match=r"needs design='deconvolution' \(the default\).*no"):
        _imputer(split, design="latent").get_proportions(spots)


def test_archetype_counts_name_an_anndata_by_type_and_say_what_they_count(archetypes):
    """get_markers(spots) and get_anchors(spots) printed the AnnData's whole repr, many lines,
    in 'must be a positive integer'."""
    model, mix = archetypes
    for method, name, meaning in (
        ("get_markers", "n_genes", "genes kept per archetype"),
        ("get_anchors", "n_anchors", "spots kept per archetype"),
    ):
        with pytest.raises(ValueError) as err:
            getattr(model, method)(mix)
        message = str(err.value)
        assert message == (
            f"{name} must be a positive integer ({meaning}); got AnnData of shape (40, 60). "
            f"{method} reads the fitted archetypes and takes no spots."
        )
    with pytest.raises(ValueError, match=r"n_genes must be a positive integer .*; got 0\.$"):
        model.get_markers(0)


def test_short_repr_of_an_anndata_or_a_table_is_its_type_and_shape(archetypes):
    _, mix = archetypes
    from deltavae._checks import short_repr

    assert short_repr(mix) == "AnnData of shape (40, 60)"
    assert short_repr(pd.DataFrame(np.zeros((40, 3)))) == "DataFrame of shape (40, 3)"
    assert short_repr("x" * 300) == repr("x" * 300) and short_repr(3) == "3"


def test_a_short_list_of_long_names_is_written_out_not_called_list():
    """A list of at most n names over 200 characters in all was replaced by its type name:
    a misspelled cell type of the hippocampus pair's 17 was told "['CA2'] are not columns
    of obsm['proportions']: list.", and a reference's 8 long obs columns "available
    columns: list."."""
    from deltavae._checks import short_repr

    names = [f"Microglia_Macrophages_{i}" for i in range(17)]
    assert short_repr(names, n=20) == repr(names)
    assert short_repr(tuple(names), n=20) == repr(tuple(names))
    assert short_repr(names, n=5).endswith(", ...] (17 items)")
    spots = ad.AnnData(np.zeros((3, 1)), obs=pd.DataFrame(index=["s1", "s2", "s3"]))
    spots.obsm["spatial"] = np.arange(6.0).reshape(3, 2)
    spots.obsm["proportions"] = pd.DataFrame(0.0, index=spots.obs_names, columns=names)
    with pytest.raises(KeyError, match=r"are not columns of obsm\['proportions'\]: \['Micro"):
        dv.pl.spatial_proportions(spots, columns=["CA2"], show=False)


def _saved(model, path):
    model.save(path)
    return path


def test_spot_models_load_onto_a_view_as_from_reference_takes_one(split, archetypes, tmp_path):
    """NMFDeconv.load(dir, spots[mask]) and Archetypes.load refused a view (setup_anndata's
    message) while SpatialImputer.load copied it. Each now copies it (the view and its parent
    unchanged), gives the results of the copy, and write_to_adata() without an AnnData is
    told to take a copy rather than anndata turning the view into one with a warning."""
    spots, ref = split
    nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    nmf.train(**TRAIN)
    mix = archetypes[1]
    cases = (
        (dv.model.NMFDeconv, _saved(nmf, tmp_path / "nmf"), spots, "get_proportions"),
        (dv.model.SpatialImputer, _saved(_imputer(split), tmp_path / "imp"), spots, "impute"),
        (dv.model.Archetypes, _saved(archetypes[0], tmp_path / "arc"), mix, "get_markers"),
    )
    for cls, path, data, read in cases:
        view = data[np.arange(data.n_obs)]
        obs = view.obs.copy()
        model = cls.load(path, view)
        assert view.is_view and not model.adata.is_view
        pd.testing.assert_frame_equal(view.obs, obs)  # no setup column written into the view
        assert "_indices" not in data.obs and "_scvi_batch" not in data.obs
        expected = getattr(cls.load(path, data.copy()), read)()
        if isinstance(expected, dict):
            assert list(getattr(model, read)()["names"]) == list(expected["names"])
        else:
            pd.testing.assert_frame_equal(getattr(model, read)(), expected)
        with pytest.raises(ValueError, match=r"is a view \(adata\[mask\]\).*adata\[mask\]\.copy"):
            model.write_to_adata()
        sub = view.copy()
        assert model.write_to_adata(sub)


def test_both_from_reference_take_the_spots_as_spots(split):
    """NMFDeconv.from_reference named its spots ``spots``, SpatialImputer's ``spatial``:
    spots= raised 'unexpected keyword' on the imputer. Both take spots=; spatial= still works,
    with a FutureWarning (it was taken without a word, as if both names were current)."""
    spots, ref = split
    args = {"reference": ref, "labels_key": "cluster", "profiles": "type"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few shared genes
        by_name = dv.model.SpatialImputer.from_reference(spots=spots[:, :30], **args)
        with pytest.warns(FutureWarning, match="spatial is now named spots.*pass spots="):
            earlier = dv.model.SpatialImputer.from_reference(spatial=spots[:, :30], **args)
        with pytest.raises(TypeError, match=r"pass the spots once: spots="):
            dv.model.SpatialImputer.from_reference(spots, spatial=spots, **args)
    assert (
        list(by_name.adata.var_names) == list(earlier.adata.var_names) == list(spots.var_names[:30])
    )
    nmf = dv.model.NMFDeconv.from_reference(spots=spots.copy(), reference=ref, labels_key="cluster")
    assert nmf.adata.n_obs == by_name.adata.n_obs == spots.n_obs


def test_a_table_for_the_spots_is_refused_by_type(split, archetypes):
    """A DataFrame passed for the spots failed with pandas' AttributeError ('DataFrame' object
    has no attribute 'obs' / 'is_view') in every read-out and write_to_adata."""
    spots, ref = split
    nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    nmf.train(**TRAIN)
    model, mix = archetypes
    calls = (
        lambda: nmf.get_proportions(spots.to_df()),
        lambda: nmf.get_abundance(spots.to_df()),
        lambda: nmf.write_to_adata(spots.to_df()),
        lambda: model.get_archetype_weights(mix.to_df()),
        lambda: model.write_to_adata(mix.X),
        lambda: _imputer(split).write_to_adata(spots.to_df()),
    )
    for call in calls:
        with pytest.raises(
            TypeError, match=r"adata must be an AnnData .*; got (DataFrame|csr_matrix) of shape"
        ):
            call()


def test_imputer_refuses_no_spots_as_nmfdeconv(split):
    """SpatialImputer.get_proportions(spots[:0]) returned a 0-row table where NMFDeconv's
    read-outs refuse an AnnData with no spots."""
    spots, _ = split
    with pytest.raises(ValueError, match=r"adata holds no spots \(0 observations\)"):
        _imputer(split).get_proportions(spots[:0])


def test_spot_read_outs_refuse_a_bad_batch_size_by_name(split, archetypes):
    """Archetypes.get_archetype_weights(batch_size=0) served its cached weights of the training
    spots, and NMFDeconv gave torch's message (or, fitted per spot, ignored it): both refuse
    it up front, as train does."""
    model, mix = archetypes
    model.get_archetype_weights()  # cached
    spots, ref = split
    nmf = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster", inference="per_spot"
    )
    for bad, shown in ((0, "0"), (2.5, "2.5"), (True, "True"), ("8", "'8'")):
        message = rf"^batch_size must be a positive integer, got {re.escape(shown)}\.$"
        for call in (model.get_archetype_weights, nmf.get_proportions, nmf.get_abundance):
            with pytest.raises(ValueError, match=message):
                call(batch_size=bad)
        with pytest.raises(ValueError, match=message):
            model.get_archetype_weights(mix, batch_size=bad)


def test_write_to_adata_names_its_own_n_anchors(archetypes):
    """write_to_adata(n_anchors=spots) said 'get_anchors reads the fitted archetypes and takes
    no spots', a method the user did not call: it names write_to_adata and where the spots go."""
    model, mix = archetypes
    with pytest.raises(ValueError) as err:
        model.write_to_adata(mix.copy(), n_anchors=mix)
    assert str(err.value) == (
        "n_anchors must be a positive integer (spots kept per archetype); got AnnData of shape "
        "(40, 60). write_to_adata takes the spots as adata, its first argument."
    )
    with pytest.raises(ValueError, match=r"n_anchors must be a positive integer .*; got 0\.$"):
        model.write_to_adata(mix.copy(), n_anchors=0)


def test_cell_model_read_outs_refuse_a_bad_batch_size_by_name():
    """ZINBVAE's and CGMDVAE's read-outs gave torch's sampler message for batch_size=0
    (naming no argument of ours), as the spot models did."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=15, n_clusters=2, seed=0)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    model.train(max_epochs=3, batch_size=32)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            model.get_latent_representation(batch_size=bad)
    assert model.get_latent_representation(batch_size=np.int64(16)).shape == (60, 2)


def test_imputer_abundance_and_batch_size_as_nmfdeconvs(split):
    """SpatialImputer had no get_abundance (NMFDeconv's cells' worth per spot, which its
    deconvolution fits too) and its read-outs took no batch_size= (TypeError), where
    NMFDeconv's and Archetypes' do; impute took no spots (adata=), get_proportions does."""
    spots, _ = split
    model = _imputer(split)
    abundance = model.get_abundance()
    assert abundance.name == "cell_abundance" and abundance.dtype == np.float64
    assert abundance.index.equals(spots.obs_names) and (abundance > 0).all()
    log_abundance = model.module.log_abundance.detach().numpy()
    np.testing.assert_allclose(abundance, np.exp(log_abundance), rtol=1e-6)
    some = spots[spots.obs_names[[7, 2, 30]]]
    pd.testing.assert_series_equal(
        model.get_abundance(some, batch_size=8), abundance.iloc[[7, 2, 30]]
    )
    imputed = model.impute()
    pd.testing.assert_frame_equal(model.impute(adata=some, batch_size=7), imputed.iloc[[7, 2, 30]])
    pd.testing.assert_frame_equal(model.get_proportions(batch_size=3), model.get_proportions())
    for call in (model.impute, model.get_proportions, model.get_abundance):
        with pytest.raises(ValueError, match=r"^batch_size must be a positive integer, got 0\.$"):
            call(batch_size=0)
    latent = _imputer(split, design="latent")
    with pytest.raises(ValueError, match=r"get_abundance needs design='deconvolution'"):
        latent.get_abundance()


def test_spot_results_are_float64_tables_named_as_the_model_names_them(split, archetypes):
    """NMFDeconv's signatures and technology factor came as float32 beside float64
    proportions, abundances, weights, profiles and imputed values of the spot models."""
    spots, ref = split
    nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    nmf.train(**TRAIN)
    model, _ = archetypes
    tables = [nmf.get_signatures(), nmf.get_proportions(), model.get_archetype_profiles()]
    tables += [model.get_archetype_weights(), _imputer(split).impute()]
    assert all((t.dtypes == np.float64).all() for t in tables)
    assert nmf.get_technology_factor().dtype == nmf.get_abundance().dtype == np.float64


def test_write_to_adata_takes_adata_batch_size_key_added_in_every_model(split, archetypes):
    """write_to_adata's second argument was batch_size (ZINBVAE, CGMDVAE, NMFDeconv),
    n_anchors (Archetypes) or genes (SpatialImputer): batch_size= was refused by the last
    two. Every model now takes (adata, batch_size, key_added); a positional n_anchors or
    genes still works, with a FutureWarning."""
    import inspect

    models = [dv.model.ZINBVAE, dv.model.CGMDVAE, dv.model.NMFDeconv]
    for cls in [*models, dv.model.Archetypes, dv.model.SpatialImputer]:
        signature = inspect.signature(cls.write_to_adata)
        assert list(signature.parameters)[:4] == ["self", "adata", "batch_size", "key_added"], cls
        # The same annotations everywhere (NMFDeconv's were missing: help() showed none).
        assert signature.return_annotation == "list[str]", cls
        assert signature.parameters["key_added"].annotation in ("str", "str | None"), cls
        # What key_added does, said where it differs: the cell models replace their name
        # (key_added="seed1": obsm/X_seed1), the spot models prefix their keys.
        text = " ".join(cls.write_to_adata.__doc__.split())
        says = "replaces the name rather than prefixing it" if cls in models[:2] else "Prefix of"
        assert says in text, cls
    model, mix = archetypes
    target = mix.copy()
    with pytest.warns(FutureWarning, match=r"second argument is batch_size.*n_anchors=2 by"):
        assert model.write_to_adata(target, 2, "k")[0] == "obsm/k_archetype_weights"
    assert target.obs["k_archetype_anchor"].value_counts().max() <= 2
    assert (
        model.write_to_adata(mix.copy(), batch_size=8, n_anchors=2)[1] == "varm/archetype_profiles"
    )
    assert model.write_to_adata(mix.copy(), None, "n")[0] == "obsm/n_archetype_weights"
    imputer, (spots, _) = _imputer(split), split
    target = spots.copy()
    with pytest.warns(FutureWarning, match=r"read as genes .* genes=\['gene_35'\] by name"):
        imputer.write_to_adata(target, ["gene_35"])
    assert list(target.obsm["imputed"].columns) == ["gene_35"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an integer is batch_size: no warning
        assert imputer.write_to_adata(target, 16, "b")[0] == "obsm/b_imputed"
    pd.testing.assert_frame_equal(target.obsm["b_imputed"], imputer.impute())


def test_get_normalized_expression_of_a_spot_model_names_its_own_read_outs(split, archetypes):
    """scvi-tools' get_normalized_expression on a spot model said only 'not implemented for
    NMFDeconv', not where the model's expression is."""
    model, _ = archetypes
    with pytest.raises(NotImplementedError, match=r"not a VAE of cells: get_archetype_profiles"):
        model.get_normalized_expression()
    with pytest.raises(NotImplementedError, match=r"for SpatialImputer, .*: impute\(\) gives"):
        _imputer(split).get_normalized_expression()


def test_every_spot_model_refuses_loading_onto_no_spots(split, archetypes, tmp_path):
    """load(dir, spots[:0]) (an empty selection) failed with scvi-tools' "adata or registry
    must be provided" (an AnnData of no rows is falsy there)."""
    spots, ref = split
    nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    nmf.train(**TRAIN)
    cases = (
        (dv.model.NMFDeconv, _saved(nmf, tmp_path / "nmf"), spots),
        (dv.model.SpatialImputer, _saved(_imputer(split), tmp_path / "imp"), spots),
        (dv.model.Archetypes, _saved(archetypes[0], tmp_path / "arc"), archetypes[1]),
    )
    for cls, path, data in cases:
        with pytest.raises(ValueError, match=r"adata holds no spots .* empty selection"):
            cls.load(path, data[:0])


def test_differential_abundance_of_a_spot_model_names_what_compares_its_samples(split, archetypes):
    """Every spot model inherited scvi-tools' differential_abundance, undocumented, whose
    NotImplementedError said only "differential_abundance is not implemented for this
    model". It names what compares the spots across samples, and that read-out answers."""
    spots, ref = split
    nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    nmf.train(**TRAIN)
    cases = (
        (
            nmf,
            r"NMFDeconv: .* cell-type shares .* model\.get_proportions\(\)\.groupby",
            "get_proportions",
        ),
        (_imputer(split), r"SpatialImputer: .*model\.get_proportions\(\)", "get_proportions"),
        (archetypes[0], r"Archetypes: .*model\.get_archetype_weights\(\)", "get_archetype_weights"),
    )
    for model, told, read in cases:
        assert "Not a spot model" in type(model).differential_abundance.__doc__  # documented
        with pytest.raises(NotImplementedError, match=told + r".*dv.model.ZINBVAE or CGMDVAE"):
            model.differential_abundance(sample_key="sample")
        assert len(getattr(model, read)()) == model.adata.n_obs  # the read-out named answers


def test_get_latent_representation_of_a_spot_model_names_its_representation(split, archetypes):
    """NMFDeconv and Archetypes had no get_latent_representation, which an scvi-tools user
    calls first: Python said only that the attribute does not exist. It names the spots'
    representation, and that read-out answers; SpatialImputer keeps its own latent."""
    spots, ref = split
    nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    nmf.train(**TRAIN)
    cases = (
        (nmf, r"NMFDeconv, which is not a VAE of cells: get_proportions\(\)", "get_proportions"),
        (archetypes[0], r"Archetypes, .*: get_archetype_weights\(\)", "get_archetype_weights"),
    )
    for model, told, read in cases:
        with pytest.raises(NotImplementedError, match=told + r".*use_rep="):
            model.get_latent_representation()
        assert len(getattr(model, read)()) == model.adata.n_obs  # the read-out named answers
    imputer = _imputer(split)
    assert "Not NMFDeconv's" not in type(imputer).get_latent_representation.__doc__


def _nmf(split, inference):
    spots, ref = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few shared genes
        model = dv.model.NMFDeconv.from_reference(
            spots.copy(), reference=ref, labels_key="cluster", inference=inference
        )
        model.train(**TRAIN)
    return model


def test_spot_read_outs_take_indices_as_the_cell_models(split, archetypes):
    """The spot models' read-outs took no indices=, where the single-cell models' (and
    scvi-tools' DestVI.get_proportions) do: now each takes positions, a boolean mask or a
    mask by name, of the spots of adata, in their order, refused as the cell models refuse."""
    spots, _ = split
    imputer, (arch, mix) = _imputer(split), archetypes
    mask = np.zeros(spots.n_obs, dtype=bool)
    mask[[9, 4]] = True
    by_name = pd.Series(mask, index=spots.obs_names)[::-1]  # a mask built in another order
    reads = [
        (_nmf(split, "amortized").get_proportions, spots),
        (_nmf(split, "per_spot").get_abundance, spots),
        (imputer.impute, spots),
        (imputer.get_proportions, spots),
        (arch.get_archetype_weights, mix),
    ]
    for read, data in reads:
        whole = read()
        pd.testing.assert_frame_equal(
            pd.DataFrame(read(indices=[3, 0, -1])), pd.DataFrame(whole.iloc[[3, 0, -1]])
        )
        expected = pd.DataFrame(whole.iloc[[4, 9]])
        pd.testing.assert_frame_equal(pd.DataFrame(read(indices=mask)), expected)
        pd.testing.assert_frame_equal(pd.DataFrame(read(adata=data, indices=by_name)), expected)
        with pytest.raises(ValueError, match="mask of 39 entries, but the AnnData has 40 spots"):
            read(indices=mask[1:])
        with pytest.raises(TypeError, match="holds names such as 'a'.*one entry per spot"):
            read(indices=["a"])
        with pytest.raises(ValueError, match="reach spot 40, but the AnnData has 40 spots"):
            read(indices=[40])
        with pytest.raises(ValueError, match="selects no spot"):
            read(indices=[])
        # "must be one-dimensional; got shape (). pass integer positions ..."
        one = r"one-dimensional; got shape \(\) \(one position, 3\): pass \[3\]"
        with pytest.raises(ValueError, match=one):
            read(indices=3)
    # indices select among the spots given, as the cell models' among their adata's cells.
    some = spots[spots.obs_names[[7, 2, 30]]]
    part = imputer.impute(adata=some, indices=[2, 0])
    assert list(part.index) == [spots.obs_names[30], spots.obs_names[7]]


def test_imputer_latent_design_gives_its_joint_latent_space(split):
    """SpatialImputer's latent design maps spots and reference cells into one latent space
    but had no get_latent_representation (scvi-tools' GIMVI has one)."""
    spots, ref = split
    model = _imputer(split, design="latent", n_latent=3, n_hidden=8)
    z = model.get_latent_representation()
    assert z.shape == (spots.n_obs, 3) and z.dtype == np.float32
    x = torch.as_tensor(model.adata.X.toarray(), dtype=torch.float32)
    model.module.eval()
    with torch.no_grad():
        expected = model.module.inference(x, None)["z"].numpy()
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
    mean, var = model.get_latent_representation(return_dist=True)
    np.testing.assert_array_equal(mean, z)
    assert (var > 0).all() and var.shape == z.shape
    np.testing.assert_allclose(model.get_latent_representation(indices=[5, 1]), z[[5, 1]], 1e-5)
    cells = model.get_latent_representation(reference=True)
    assert cells.shape == (ref.n_obs, 3) and np.isfinite(cells).all()
    with pytest.raises(ValueError, match="reference=True reads the reference cells"):
        model.get_latent_representation(spots, reference=True)
    with pytest.raises(ValueError, match="needs design='latent': the deconvolution design"):
        _imputer(split).get_latent_representation()


def test_spot_models_load_spots_with_genes_in_another_order(split, archetypes, tmp_path):
    """NMFDeconv.load and Archetypes.load refused spots with the training genes in another
    order, with advice to reorder them through torch.load of
    model.pt, where model.adata = spots and every read-out read them by name."""
    spots, ref = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few shared genes
        nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    nmf.train(**TRAIN)
    arch, mix = archetypes
    for model, data, key in ((nmf, spots, "proportions"), (arch, mix, "archetype_weights")):
        expected = model.get_archetype_weights() if model is arch else model.get_proportions()
        model.save(tmp_path / key)
        given = data[:, ::-1].copy()
        with pytest.warns(
            UserWarning, match=r"genes in another order \(\d+ moved.*the model reads a copy"
        ):
            loaded = type(model).load(tmp_path / key, given)
        assert list(loaded.adata.var_names) == list(data.var_names)
        assert key in loaded.write_to_adata()[0]
        np.testing.assert_allclose(given.obsm[key].to_numpy(), expected.to_numpy(), atol=1e-6)


def test_read_outs_take_indices_right_after_adata_as_scvi_tools(split, archetypes):
    """scvi-tools' read-outs take (adata, indices, ...) (get_latent_representation,
    SCANVI.predict): get_proportions(spots, [0, 1]) said 'batch_size must be a positive
    integer, got [0, 1]' (indices came third, or by keyword only). Every read-out takes indices
    right after adata now; the old order (batch_size second) still reads, with a FutureWarning."""
    import inspect

    reads = {
        dv.model.NMFDeconv: ("get_proportions", "get_abundance"),
        dv.model.SpatialImputer: (
            "get_proportions",
            "get_abundance",
            "impute",
            "get_latent_representation",
        ),
        dv.model.Archetypes: ("get_archetype_weights",),
        dv.model.CGMDVAE: (
            "predict",
            "predict_clusters",
            "predict_labels",
            "get_latent_representation",
        ),
        dv.model.ZINBVAE: ("get_latent_representation", "get_normalized_expression"),
    }
    for cls, names in reads.items():
        for name in names:
            params = list(inspect.signature(getattr(cls, name)).parameters)
            at = params.index("adata")
            assert params[at + 1] == "indices", f"{cls.__name__}.{name}{params}"
    model, mix = archetypes
    whole = model.get_archetype_weights()
    pd.testing.assert_frame_equal(model.get_archetype_weights(mix, [3, 0], 8), whole.iloc[[3, 0]])
    pd.testing.assert_frame_equal(model.get_archetype_weights(mix, [1]), whole.iloc[[1]])
    with warnings.catch_warnings():  # the new order with indices=None: no old-order reading
        warnings.simplefilter("error")
        pd.testing.assert_frame_equal(model.get_archetype_weights(mix, None, 8), whole)
    for old in ((8, [3, 0]), (None, [3, 0]), (np.int64(8), [3, 0])):
        message = rf"takes indices right after adata.*pass batch_size={old[0]}, indices=\[3, 0\]"
        with pytest.warns(FutureWarning, match=message):
            pd.testing.assert_frame_equal(
                model.get_archetype_weights(mix, *old), whole.iloc[[3, 0]]
            )
    with pytest.warns(FutureWarning, match=r"old order \(batch_size, indices\).* batch_size=8 by"):
        pd.testing.assert_frame_equal(model.get_archetype_weights(mix, 8), whole)
    with pytest.raises(TypeError, match="multiple values for 'batch_size'"):
        model.get_archetype_weights(mix, 8, batch_size=4)
    imputer = _imputer(split)
    imputed = imputer.impute()
    pd.testing.assert_frame_equal(imputer.impute(None, None, [2, 0], 16), imputed.iloc[[2, 0]])
    pd.testing.assert_frame_equal(imputer.impute(None, None, None, 16), imputed)
    # Python named the mixin defining the read-out ("ImputerResultsMixin.impute()").
    with pytest.raises(TypeError, match=r"^SpatialImputer.impute\(\) got an unexpected keyw"):
        imputer.impute(batch_sise=4)
    with pytest.warns(FutureWarning, match=r"SpatialImputer.impute takes indices right after"):
        pd.testing.assert_frame_equal(imputer.impute(None, None, 16, [2]), imputed.iloc[[2]])


def test_a_last_minibatch_of_one_spot_trains_where_no_batch_norm_needs_two(split):
    """9 spots in minibatches of 2: the last spot was dropped from every epoch of NMFDeconv
    and SpatialImputer too (4 steps), though neither has a BatchNorm layer for which one spot
    is too few; only Archetypes' encoder (BatchNorm) needs it dropped."""
    spots, ref = split
    spots = spots[:9].copy()
    args = {"batch_size": 2, "train_size": 1.0, **TRAIN}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nmf = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
        imputer = dv.model.SpatialImputer.from_reference(
            spots[:, :30].copy(), reference=ref, labels_key="cluster", profiles="type"
        )
        mix = dv.datasets.convex_mixtures(n_spots=9, n_genes=60, n_archetypes=3, seed=0)
        dv.model.Archetypes.setup_anndata(mix)
        archetypes = dv.model.Archetypes(mix, n_archetypes=3, min_spots=1)
        for model, steps in ((nmf, 5), (imputer, 5), (archetypes, 4)):
            model.train(**args)
            assert model.trainer.global_step == steps, type(model).__name__


def _draws(model, **kwargs) -> np.ndarray:
    """posterior_predictive_sample's draws as numpy, under scvi-tools' seed 0."""
    scvi.settings.seed = 0
    return model.posterior_predictive_sample(**kwargs).todense()


def test_every_spot_model_draws_posterior_predictive_counts_around_its_expected_counts(
    split, archetypes
):
    """NMFDeconv, Archetypes and SpatialImputer had no posterior_predictive_sample (an
    AttributeError), which scvi-tools' PosteriorPredictiveCheck calls on every model: each
    draws counts whose mean over draws is the model's expected counts of the spots, on the
    genes it fits, as scvi-tools' sparse array (spots x genes x draws)."""
    spots, _ = split
    nmf, imputer, (arch, mix) = _nmf(split, "per_spot"), _imputer(split), archetypes
    # NMFDeconv: abundance x (proportions @ signatures) x technology factor.
    signatures, tech = nmf.get_signatures(), nmf.get_technology_factor()
    proportions, abundance = nmf.get_proportions(), nmf.get_abundance()
    nmf_mean = abundance.to_numpy()[:, None] * (proportions.to_numpy() @ signatures.to_numpy())
    nmf_mean = nmf_mean * tech.to_numpy()
    # SpatialImputer: its expected counts of the measured genes (impute reads them too).
    measured = list(imputer.adata.var_names)
    # Archetypes: each spot's total spread by its weights over the archetypes' profiles.
    totals = np.asarray(mix.X.sum(1)).ravel()
    weights, profiles = arch.get_archetype_weights(), arch.get_archetype_profiles()
    arch_mean = totals[:, None] * (weights.to_numpy() @ profiles.to_numpy().T)
    cases = (
        (nmf, nmf_mean, list(nmf.used_genes()), 0.03),
        (imputer, imputer.impute(genes=measured).to_numpy(), measured, 0.03),
        (arch, arch_mean, list(mix.var_names), 0.06),  # weights drawn, not the median's
    )
    for model, expected, genes, tol in cases:
        drawn = model.posterior_predictive_sample(n_samples=200)
        assert type(drawn).__name__ == "GCXS" and drawn.shape == (*expected.shape, 200)
        means = drawn.todense().mean(-1)
        # per gene over the spots: within tol of the expected counts
        ratio = means.sum(0) / expected.sum(0)
        assert np.abs(ratio - 1).max() < tol, (type(model).__name__, ratio)
        assert len(genes) == expected.shape[1]
        one = model.posterior_predictive_sample(indices=[3, 0])
        assert one.shape == (2, len(genes)) and (one.todense() % 1 == 0).all()


def test_spot_posterior_predictive_draws_are_seeded_and_in_gene_list_order(split, archetypes):
    """Under one scvi-tools seed the draws repeat, for any batch_size (each spot's numbers
    are drawn in spot order on the CPU); gene_list gives those genes' draws in its order;
    indices the spots in theirs (the spots' means of their draws as the whole's)."""
    imputer, (arch, _) = _imputer(split), archetypes
    for model in (imputer, arch):
        whole = _draws(model, n_samples=3)
        assert np.array_equal(whole, _draws(model, n_samples=3, batch_size=7))
        scvi.settings.seed = 1
        assert not np.array_equal(whole, model.posterior_predictive_sample(n_samples=3).todense())
        genes = model.adata.var_names
        picked = _draws(model, n_samples=3, gene_list=[genes[5], genes[0]])
        assert np.array_equal(picked, whole[:, [5, 0]])
        # spots are drawn in the order asked for: the first ones asked, the same numbers
        assert np.array_equal(_draws(model, n_samples=3, indices=[0, 1, 2]), whole[:3])
        totals = _draws(model, n_samples=50).mean(-1).sum(1)
        most, least = int(totals.argmax()), int(totals.argmin())
        some = _draws(model, n_samples=50, indices=[least, most]).mean(-1).sum(1)
        assert np.allclose(some, totals[[least, most]], rtol=0.1)
        assert _draws(model, gene_list=genes[2]).shape == (model.adata.n_obs, 1)  # a string


def test_spot_posterior_predictive_refuses_genes_it_does_not_fit_by_name(split):
    """A gene the model does not fit: an NMFDeconv's gene outside its markers, an imputer's
    unmeasured (imputed) gene, a gene of neither; and transform_batch, which no spot model
    has, and another slide's spots for a model fitted per spot."""
    spots, ref = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        nmf = dv.model.NMFDeconv.from_reference(
            spots.copy(), reference=ref, labels_key="cluster", n_markers=3
        )
        nmf.train(**TRAIN)
    unused = spots.var_names.difference(nmf.used_genes())[0]
    with pytest.raises(ValueError, match=rf"does not fit, e.g. \['{unused}'\]: NMFDeconv .*"):
        nmf.posterior_predictive_sample(gene_list=[nmf.used_genes()[0], unused])
    imputer = _imputer(split)
    with pytest.raises(ValueError, match=r"did not measure, e.g. \['gene_35'\].*model.impute"):
        imputer.posterior_predictive_sample(gene_list=["gene_35"])
    with pytest.raises(ValueError, match=r"does not have, e.g. \['nope'\]"):
        imputer.posterior_predictive_sample(gene_list=["gene_1", "nope"])
    with pytest.raises(ValueError, match="SpatialImputer, a model of spots, has no batch"):
        imputer.posterior_predictive_sample(transform_batch="0")
    other = spots[:, :30].copy()
    other.obs_names = "other_" + other.obs_names
    with pytest.raises(ValueError, match=r"draws for those spots only.*40 others"):
        imputer.posterior_predictive_sample(other)
