"""Spatial deconvolution on the inputs a new user brings: integer labels, repeated gene or
spot names, empty spots and cells, negative predictions, a reloaded model with a gene panel."""

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import deltavae as dv
from deltavae.metrics import deconvolution_scores, imputation_scores, jsd

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def split():
    cells = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=60, cells_per_spot=(2, 6), seed=3)


# ----------------------------------------------------------------------------- references
def test_a_reference_without_x_is_told_the_argument_of_its_layer(split):
    """'pass the layer with the data' to from_reference, which takes the spots' layer and
    the reference's: layer='counts' named the spots'."""
    spots, ref = split
    ref = ref.copy()
    ref.layers["counts"] = ref.X.copy()
    ref.X = None
    for build in (dv.model.NMFDeconv.from_reference, dv.model.SpatialImputer.from_reference):
        with pytest.raises(ValueError, match=r"X is empty .* e.g. reference_layer='counts'"):
            build(spots, reference=ref, labels_key="cluster")


def test_missing_labels_are_refused_with_the_line_that_drops_them(split):
    """'N missing labels; drop those cells first' gave no way to do it: the message's own
    line is the one that works (both spot models share the check)."""
    spots, ref = split
    ref = ref.copy()
    ref.obs["cluster"] = ref.obs["cluster"].astype(object)
    ref.obs.iloc[:4, ref.obs.columns.get_loc("cluster")] = np.nan
    said = r"4 missing labels \(NaN\); drop .*: reference = reference\[reference.obs\['cluster'\]"
    said += r"\.notna\(\)\]\.copy\(\)\."
    panel = spots[:, :30].copy()  # the imputer's spots measure fewer genes
    for build, measured in [
        (dv.model.NMFDeconv.from_reference, spots),
        (dv.model.SpatialImputer.from_reference, panel),
    ]:
        with warnings.catch_warnings(), pytest.raises(ValueError, match=said):
            warnings.simplefilter("ignore")  # few shared genes: said elsewhere
            build(measured, reference=ref, labels_key="cluster")
    reference = ref
    reference = reference[reference.obs["cluster"].notna()].copy()  # the message's line
    assert dv.model.NMFDeconv.signatures_from_reference(reference, "cluster").shape[0] == 3


def test_from_reference_refuses_a_table_for_an_anndata(split):
    """A signature table passed as the reference failed with pandas' AttributeError
    ('DataFrame' object has no attribute 'obs')."""
    spots, ref = split
    table = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    with pytest.raises(
        TypeError, match=r"reference must be an AnnData; got DataFrame.*signatures="
    ):
        dv.model.NMFDeconv.from_reference(spots, reference=table, labels_key="cluster")
    with pytest.raises(TypeError, match="spots must be an AnnData; got DataFrame"):
        dv.model.NMFDeconv.from_reference(spots.to_df(), reference=ref, labels_key="cluster")


@pytest.mark.parametrize("n_markers", [5, None])
def test_integer_labels_work_like_names(split, n_markers):
    """Integer cluster ids crashed inside scanpy (IndexError) or signatures ('0' not in list)."""
    spots, ref = split
    ref = ref.copy()
    ref.obs["cluster_id"] = pd.Categorical(ref.obs["cluster"]).codes  # int64
    before = ref.obs["cluster_id"].copy()
    model = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster_id", n_markers=n_markers
    )
    assert list(model.cell_types_) == ["0", "1", "2"]
    pd.testing.assert_series_equal(ref.obs["cluster_id"], before)  # the user's column is kept
    sig = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster_id")
    named = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    np.testing.assert_allclose(sig.to_numpy(), named.to_numpy())


def test_signatures_of_a_log_normalised_reference_are_refused(split):
    """signatures_from_reference averaged log-normalised values without a word: signatures
    of another scale, which NMFDeconv(spots, signatures=...) took as counts."""
    _, ref = split
    ref = ref.copy()
    ref.layers["counts"] = ref.X.copy()
    ref.X = np.log1p(ref.X)
    with pytest.raises(ValueError, match=r"reference.X must hold raw counts.*layer='counts'"):
        dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    assert dv.model.NMFDeconv.signatures_from_reference(ref, "cluster", layer="counts").shape[0]


def test_spots_that_are_not_counts_are_named_as_spots(split):
    """The refusal of log-normalised spots said where by 'cells 1-60' while every other
    message about spots speaks of spots."""
    spots, ref = split
    spots = spots.copy()
    spots.X = np.log1p(spots.X)
    with pytest.raises(ValueError, match=r"non-integer values such as .* in spots 1-60\)"):
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    with pytest.raises(ValueError, match=r" in spots 1-60\)"):
        dv.model.Archetypes.setup_anndata(spots)


@pytest.mark.parametrize("which", ["spots", "reference"])
def test_duplicated_gene_names_are_refused_by_name(split, which):
    spots, ref = (a.copy() for a in split)
    target = spots if which == "spots" else ref
    names = list(target.var_names)
    names[1] = names[0]
    target.var_names = names
    # The fix names the AnnData at fault ({which}.var_names_make_unique()), not an "adata".
    expected = (
        rf"Gene names in {which} are not unique \(repeated: \['gene_0'\]\).*"
        rf"\({which}\.var_names_make_unique\(\)\)"
    )
    with pytest.raises(ValueError, match=expected):
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    with pytest.raises(ValueError, match=expected):
        dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
    if which == "reference":  # a table of profiles: no var_names to make unique
        profiles = pd.DataFrame(np.ones((2, ref.n_vars)), columns=ref.var_names)
        dv.model.SpatialImputer.setup_anndata(spots)
        with pytest.raises(ValueError, match=r"reference are not unique.*groupby\(level=0\)"):
            dv.model.SpatialImputer(spots, profiles)


def test_archetypes_refuses_duplicated_gene_names():
    spots = dv.datasets.convex_mixtures(n_spots=40, n_genes=40, n_archetypes=3, n_markers=5)
    names = list(spots.var_names)
    names[2] = names[0]
    spots.var_names = names
    with pytest.raises(ValueError, match=r"Gene names in adata are not unique.*make_unique"):
        dv.model.Archetypes.setup_anndata(spots)


def _with_empty_rows(adata, n: int):
    """A dense copy of ``adata`` whose first ``n`` rows hold no counts."""
    adata = adata.copy()
    X = np.asarray(adata.X.todense()) if hasattr(adata.X, "todense") else adata.X
    X[:n] = 0
    adata.X = X
    return adata


def test_empty_reference_cells_are_named_once_in_the_package_words(split):
    """scanpy's 'Some cells have zero counts' leaked from inside the call, unexplained."""
    spots, ref = split
    ref = _with_empty_rows(ref, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    messages = [str(w.message) for w in caught]
    assert not any("Some cells have zero counts" in m for m in messages)
    assert sum("2 reference cells have no counts in reference.X" in m for m in messages) == 1


def test_labels_are_checked_before_the_reference_counts_and_a_swap_is_named(split):
    """SpatialImputer.from_reference read and checked the reference's counts (a chunk of
    rows at a time on disk), and warned about its empty cells, before a labels_key typo or
    NaN labels were refused; and the single cells passed first (Tangram's pp_adatas order)
    got "the spots already measure every gene the reference counts" from the imputer and a
    bare "not a column of reference.obs" from NMFDeconv."""
    spots, ref = split
    ref = _with_empty_rows(ref, 2)  # its warning, an error under pytest, came first
    panel = spots[:, :30].copy()
    nan = ref.copy()
    nan.obs["cluster"] = nan.obs["cluster"].astype(object)
    nan.obs.iloc[5, nan.obs.columns.get_loc("cluster")] = np.nan
    imputer = dv.model.SpatialImputer.from_reference
    with pytest.raises(KeyError, match=r"labels_key='clusters' .*did you mean 'cluster'"):
        imputer(panel, reference=ref, labels_key="clusters")
    with pytest.raises(ValueError, match=r"1 missing labels \(NaN\)"):
        imputer(panel, reference=nan, labels_key="cluster")
    swapped = r"spots.obs holds 'cluster': were the single cells passed as spots\? .*"
    for build, name in [
        (dv.model.NMFDeconv.from_reference, "NMFDeconv"),
        (imputer, "SpatialImputer"),
    ]:
        call = re.escape(f"{name}.from_reference(spots, reference=cells, labels_key='cluster')")
        with pytest.raises(KeyError, match=swapped + call):
            build(ref, reference=spots, labels_key="cluster")
    # The latent design reads no labels: labels_key (its default too) is not checked.
    latent = imputer(panel, reference=ref[2:].copy(), labels_key="clusters", design="latent")
    assert latent.design_ == "latent"


# ----------------------------------------------------------------------------- results
def test_empty_spots_are_warned_when_proportions_are_read(split):
    """The amortised model gave (and wrote) the encoder's output for an all-zero input as
    the proportions of empty spots, a mixture like any other: now NaN rows, as write_to_adata
    leaves spots left out of a per-spot fit, in every read-out, counted in the warning."""
    spots, ref = split
    spots = _with_empty_rows(spots, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
        model.train(max_epochs=3, **TRAIN)
    with pytest.warns(UserWarning, match=r"^3 of 60 spots have no counts in the \d+ genes the"):
        props = model.get_proportions()
    assert props.iloc[:3].isna().all().all() and props.iloc[3:].notna().all().all()
    np.testing.assert_allclose(props.iloc[3:].sum(axis=1), 1)
    with pytest.warns(UserWarning, match=r"^1 of 2 spots .* abundance are missing \(NaN\)"):
        abundance = model.get_abundance(indices=[2, 3])
    assert np.isnan(abundance.iloc[0]) and abundance.iloc[1] > 0
    with pytest.warns(UserWarning, match=r"^3 of 60 .* proportions and abundance are missing"):
        model.write_to_adata(spots)
    written = spots.obsm["proportions"]
    pd.testing.assert_frame_equal(written, props)
    assert spots.obs["cell_abundance"].iloc[:3].isna().all()


def test_per_spot_empty_spots_are_counted_among_the_spots_asked_for(split):
    """Per spot, the warning counted the empty spots of every fitted spot: '3 of 2 spots'
    for indices=[0, 15], and a warning for spots 10-19, none of them empty."""
    spots, ref = split
    spots = _with_empty_rows(spots, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dv.model.NMFDeconv.from_reference(
            spots, reference=ref, labels_key="cluster", inference="per_spot"
        )
        model.train(max_epochs=2, **TRAIN)
    with pytest.warns(UserWarning, match=r"^1 of 2 spots have no counts"):
        model.get_proportions(indices=[0, 15])
    with pytest.warns(UserWarning, match=r"^2 of 3 spots have no counts"):
        props = model.get_proportions(spots[[30, 2, 1]].copy())
    assert props.isna().all(axis=1).tolist() == [False, True, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.get_proportions(indices=np.arange(10, 20))
        model.write_to_adata(spots[10:20].copy())


def test_load_with_only_the_genes_the_model_reads(split, tmp_path):
    """The live model maps a panel of its used genes; loading it with them was refused."""
    spots, ref = split
    spots = spots.copy()
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", n_markers=3
    )
    model.train(max_epochs=3, **TRAIN)
    model.save(tmp_path / "m")
    panel = spots[:, model.used_genes()[::-1]].copy()
    assert panel.n_vars < spots.n_vars
    with pytest.warns(UserWarning, match=r"adata lacks \d+ of the model's \d+ genes, none of"):
        loaded = dv.model.NMFDeconv.load(tmp_path / "m", adata=panel)
    assert panel.n_vars == len(model.used_genes())  # the user's AnnData is unchanged
    pd.testing.assert_frame_equal(loaded.get_proportions(), model.get_proportions())
    loaded.write_to_adata(panel)
    assert "proportions" in panel.obsm
    with pytest.raises(ValueError, match="genes differ"):
        dv.model.NMFDeconv.load(tmp_path / "m", adata=panel[:, 1:].copy())


@pytest.mark.parametrize("n_markers", [None, 3])
def test_amortised_model_does_not_depend_on_the_spots_gene_order(split, n_markers):
    """The model read the shared genes in the spots' order, so its encoder's first layer (drawn
    gene by gene) differed when the spots' genes were reordered (one spot 0.31 apart at 300
    epochs for the same seed): the model's genes are now in the reference's order."""
    import scvi

    spots, ref = split
    props = []
    for measured in (spots.copy(), spots[:, ::-1].copy()):
        scvi.settings.seed = 0
        model = dv.model.NMFDeconv.from_reference(
            measured, reference=ref, labels_key="cluster", n_markers=n_markers
        )
        model.train(max_epochs=1, **TRAIN)
        assert list(model.used_genes()) == [g for g in ref.var_names if g in model.used_genes()]
        props.append(model.get_proportions())
    pd.testing.assert_frame_equal(props[0], props[1])


def test_encoders_start_the_same_for_the_spots_genes_in_any_order():
    """Reference-free NMFDeconv and Archetypes read the spots' genes in their order, their
    encoders' first layer drawn gene by gene: reversed genes gave another fit for the same
    seed (20 epochs: proportions 0.20 apart, weights 0.22). Each gene now starts with the
    column drawn for its place in name order."""
    import scvi

    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=20, n_archetypes=2, n_markers=5, seed=0)
    results = {"nmf": [], "archetypes": []}
    for spots in (mix.copy(), mix[:, ::-1].copy()):
        scvi.settings.seed = 0
        dv.model.NMFDeconv.setup_anndata(spots)
        nmf = dv.model.NMFDeconv(spots, n_components=2)
        scvi.settings.seed = 0
        dv.model.Archetypes.setup_anndata(spots)
        archetypes = dv.model.Archetypes(spots, n_archetypes=2, min_spots=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a short run: not judged here
            nmf.train(max_epochs=5, **TRAIN)
            archetypes.train(max_epochs=20, **TRAIN)  # 5: an archetype led by no spot
        results["nmf"].append(nmf.get_proportions())
        results["archetypes"].append(archetypes.get_archetype_weights())
    for first, reversed_genes in results.values():
        np.testing.assert_allclose(first, reversed_genes, atol=1e-4)


def test_new_spots_without_the_registered_layer_are_named(split):
    """A panel of the used genes lacking the model's layer: a bare KeyError('counts')."""
    spots, ref = split
    spots = spots.copy()
    spots.layers["counts"] = spots.X.copy()
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", layer="counts", n_markers=3
    )
    model.train(max_epochs=1, **TRAIN)
    panel = spots[:, model.used_genes()].copy()
    del panel.layers["counts"]
    with pytest.raises(KeyError, match=r"layer 'counts' is not in adata.layers; available layers"):
        model.get_proportions(adata=panel)
    # get_proportions takes no layer: where the model reads the spots is said.
    with pytest.raises(
        KeyError, match=r"reads its data there: put them in adata.layers\['counts'\]"
    ):
        model.get_proportions(adata=panel)


# ----------------------------------------------------------------------------- metrics
def test_jsd_clips_negative_values_with_a_warning():
    true = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    pred = np.array([[-0.1, 1.0], [1.0, 3.0], [2.0, 2.0]])
    with pytest.warns(UserWarning, match=r"pred holds 1 negative values \(min -0.1\)"):
        scores = imputation_scores(true, pred)
    assert np.isfinite(scores["jsd"]).all() and (scores["jsd"].between(0, 1)).all()
    assert scores.loc[0, "pcc"] < 1  # the other scores use the values as given
    with pytest.warns(UserWarning, match="negative proportions"):
        values = jsd(true, pred)
    assert values.between(0, 1).all()
    with pytest.warns(UserWarning, match="negative proportions") as record:
        table = deconvolution_scores(true, pred)
    assert len(record) == 1 and table["jsd"].between(0, 1).all()


def test_scores_leave_out_the_nan_rows_spot_models_give_spots_without_counts():
    """The spot models give NaN rows to spots without counts: the scores refused the whole
    table ('pred contains NaN ... fill or drop them first'); they leave those spots out."""
    rng = np.random.default_rng(0)
    true = pd.DataFrame(rng.dirichlet([1, 1, 1], 30), columns=list("ABC"))
    pred = pd.DataFrame(rng.dirichlet([1, 1, 1], 30), columns=list("ABC"))
    pred.iloc[[0, 4]] = np.nan
    with pytest.warns(UserWarning, match=r"^2 of the 30 spots have no prediction .* other 28"):
        scores = deconvolution_scores(true, pred.iloc[::-1])  # aligned by name first
    kept = pred.index.difference([0, 4])
    expected = deconvolution_scores(true.loc[kept], pred.loc[kept])
    pd.testing.assert_frame_equal(scores, expected)
    with pytest.warns(UserWarning, match=r"^2 of the 30 spots have no prediction"):
        imputation_scores(true, pred)
    pred.iloc[[1, 2], 0] = np.nan  # a hole in a row is no spot without counts: refused
    # It said only 'fill or drop them first', without the rows or a way to drop them that
    # the scores take (pred.dropna() alone: then true and pred index different spots).
    hole = r"pred contains NaN .* in 1 cell types \(e.g. \['A'\]\) and 2 of its 28 spots \(e.g."
    with pytest.warns(UserWarning, match="no prediction"):
        with pytest.raises(ValueError, match=hole) as error:
            deconvolution_scores(true, pred)
    kept = pred.dropna().index  # as the message says
    assert "kept = pred.dropna().index, then pass true.loc[kept] and pred.loc[kept]" in str(
        error.value
    )
    assert len(deconvolution_scores(true.loc[kept], pred.loc[kept])) == 3


def test_a_perfect_prediction_is_at_js_distance_zero_not_nan():
    """scipy's divergence of two equal distributions rounds to just below 0 about half the
    time, and its square root was NaN (counted as a failed gene by imputation_scores)."""
    rng = np.random.default_rng(1)
    true = pd.DataFrame(rng.dirichlet([1, 1, 1, 1], 100), columns=list("ABCD"))
    scaled = [jsd(true, true * factor) for factor in rng.uniform(0.5, 5, size=50)]
    values = pd.concat(scaled)
    assert values.notna().all() and (values < 1e-6).all()
    assert (imputation_scores(true, 3 * true)["jsd"] < 1e-6).all()


def test_repeated_spot_names_in_another_order_are_refused():
    idx = ["AAAC-1", "AAAG-1", "AAAC-1", "AAAG-1"]
    true = pd.DataFrame([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.7, 0.3]], index=idx)
    true.columns = ["A", "B"]
    shuffled = true.iloc[[1, 0, 2, 3]]
    for scores in (deconvolution_scores, imputation_scores):
        with pytest.raises(ValueError, match="repeats spot names .* cannot be matched by name"):
            scores(true, shuffled)
    with pytest.warns(UserWarning, match="matched by position") as record:
        table = deconvolution_scores(true, true)
    assert len(record) == 1 and (table["rmse"] == 0).all()


# ----------------------------------------------------------------------------- archetypes
# A few epochs leave an archetype that no spot weighs most: merged, with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:.*raw archetype.*most similar archetype")


@pytest.fixture(scope="module")
def slides():
    """Archetypes on two slides, a few epochs: enough to read results, not to be right."""
    mix = dv.datasets.convex_mixtures(n_spots=80, n_genes=40, n_archetypes=3, n_markers=5, seed=0)
    mix.obs["slide"] = np.where(np.arange(mix.n_obs) % 2, "s1", "s2")
    dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    model = dv.model.Archetypes(mix, n_archetypes=3, min_spots=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=100, **TRAIN)  # 40: an archetype led by no spot yet
    assert len(model.archetype_names()) == 3
    return model, mix


def test_messages_about_the_model_s_rows_speak_of_spots(slides, tmp_path, monkeypatch):
    """A changed sample column, a model AnnData subset to nothing, new spots not counts or
    none, and compressed chunks on disk were told as '40 of 80 cells', 'holds no cells',
    '1 in cells 1-10', 'pass at least one cell' and 'chunks of about 40 cells', with
    get_latent_representation as the advice: spots, and the model's own read-out. The weights
    cached in training were served without the check of the changed column."""
    import h5py

    from deltavae.model import _backing

    model, mix = slides
    before = mix.obs["slide"].copy()
    mix.obs["slide"] = "s1"
    try:
        with pytest.raises(ValueError, match=r"40 of 80 spots hold another value") as e:
            model.get_archetype_weights()
    finally:
        mix.obs["slide"] = before
    assert "pass a copy as new spots (e.g. model.get_archetype_weights(adata.copy())" in str(
        e.value
    )
    new = mix[:10].copy()
    new.X = np.asarray(new.X.todense()) if hasattr(new.X, "todense") else new.X.copy()
    new.X[0, 0] = 0.5
    with pytest.raises(ValueError, match=r"non-integer values such as 0.5 \(1 in spots 1-10\)"):
        model.get_archetype_weights(new)
    with pytest.raises(ValueError, match=r"^adata holds no spots .* pass at least one spot"):
        model.get_archetype_weights(mix[:0].copy())
    monkeypatch.setattr(model, "_adata", mix[:0].copy())
    with pytest.raises(ValueError, match=r"holds no spots .* model.get_archetype_weights\(adata"):
        model.get_archetype_weights()
    monkeypatch.undo()

    class Manager:  # the counts of 400 spots on disk, gzip chunks of 40 spots
        def __init__(self, f):
            self.f = f

        def get_from_registry(self, key):
            return self.f["X"]

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("X", data=np.ones((400, 10)), chunks=(40, 10), compression="gzip")
        monkeypatch.setattr(_backing, "_AMPLIFIED_BYTES", 0)
        with pytest.warns(UserWarning, match=r"chunks of about 40 spots each.* read one spot: a"):
            _backing.warn_compressed_chunks(Manager(f), 8, None, model)


def test_archetypes_advice_names_what_archetypes_can_do(slides, tmp_path):
    """It pointed to load_query_data, which Archetypes does not have (on load too)."""
    model, mix = slides
    new = mix[:10].copy()
    new.obs["slide"] = "s3"
    with pytest.raises(ValueError, match=r"samples the model was not trained with: \['s3'\]") as e:
        model.get_archetype_weights(new)
    assert "load_query_data" not in str(e.value)
    assert "(Archetypes.setup_anndata(adata, sample_key='slide'))" in str(e.value)
    unnamed = new.copy()
    del unnamed.obs["slide"]  # was 'a condition column ... per cell'
    with pytest.raises(KeyError, match=r"the sample column \(sample_key\) .* per spot\)"):
        model.get_archetype_weights(unnamed)
    with pytest.raises(ValueError, match=r"5 of them missing.*model.adata.var_names") as e:
        model.get_archetype_weights(mix[:10, 5:].copy())
    assert "load_query_data" not in str(e.value)
    assert not hasattr(dv.model.Archetypes, "load_query_data")
    model.save(str(tmp_path / "a"))
    with pytest.raises(ValueError, match="Archetypes cannot learn a new slide") as e:
        dv.model.Archetypes.load(str(tmp_path / "a"), adata=new)
    assert "load_query_data" not in str(e.value)
    shuffled = mix[:10, ::-1].copy()  # the same genes in another order still map
    with pytest.warns(UserWarning, match="another order"):
        weights = model.get_archetype_weights(shuffled)
    np.testing.assert_allclose(weights, model.get_archetype_weights(mix[:10].copy()))


def test_archetypes_sample_key_with_missing_values_is_refused_early():
    mix = dv.datasets.convex_mixtures(n_spots=20, n_genes=30, n_archetypes=2, n_markers=5, seed=0)
    mix.obs["slide"] = np.where(np.arange(mix.n_obs) % 2, "s1", None)
    with pytest.raises(ValueError, match=r"sample_key='slide': .* 10 missing values.* spots\.$"):
        dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    assert "_scvi_manager_uuid" not in mix.uns


def test_archetypes_samples_of_few_spots_or_named_two_ways_are_said_in_the_users_words():
    """A slide of 1 spot was told as scvi-tools' "Category 2 in adata.obs['_scvi_batch'] has
    fewer than 3 cells", its code and internal column rather than the slide; and 'Slide1'
    beside 'slide1' was fitted as a slide of its own without a word."""
    mix = dv.datasets.convex_mixtures(n_spots=20, n_genes=30, n_archetypes=2, n_markers=5, seed=0)
    mix.obs["slide"] = np.where(np.arange(mix.n_obs) % 2, "slide1", "slide2")
    mix.obs.loc[mix.obs_names[0], "slide"] = "Slide1 "
    fresh = mix.copy()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    said = [str(w.message) for w in record]
    assert not [m for m in said if "_scvi_batch" in m], said
    assert any(
        "Categories with fewer than 3 spots (adata.obs['slide']: 'Slide1 ' (1))" in m
        and m.endswith("drop those spots.")
        for m in said
    ), said
    assert any("'Slide1 ' (1) beside 'slide1' (10)" in m for m in said), said
    with warnings.catch_warnings():  # made an error: the spots left unregistered
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="differ only in case"):
            dv.model.Archetypes.setup_anndata(fresh, sample_key="slide")
    assert "_scvi_manager_uuid" not in fresh.uns and "_scvi_batch" not in fresh.obs


def test_archetypes_samples_without_spots_get_no_made_up_factors():
    """Spots subset to some slides keep the others as categories: each was registered as a
    sample and get_sample_factors gave it a column of factors near 1 that no spot fitted."""
    mix = dv.datasets.convex_mixtures(n_spots=20, n_genes=30, n_archetypes=2, n_markers=5, seed=0)
    slides = np.where(np.arange(mix.n_obs) % 2, "s1", "s2")
    mix.obs["slide"] = pd.Categorical(slides, categories=["s0", "s1", "s2"])
    with pytest.warns(UserWarning, match=r"categories no spot carries \(\['s0'\]\).*remove_unused"):
        dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    model = dv.model.Archetypes(mix, n_archetypes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too short to converge
        model.train(max_epochs=1, **TRAIN)
    factors = model.get_sample_factors()
    assert factors.columns.tolist() == ["s0", "s1", "s2"]
    assert factors["s0"].isna().all() and factors[["s1", "s2"]].notna().all().all()
    # Another model set up on the spots since (its codes in obs['_scvi_batch']): s2's
    # factors were NaN, read from them as a sample without spots.
    dv.model.ZINBVAE.setup_anndata(mix)
    pd.testing.assert_frame_equal(model.get_sample_factors(), factors)


def test_archetypes_warns_about_empty_spots_once(slides):
    """The encoder's output for an all-zero spot was given as its weights (a mixture like any
    other, warned): NaN rows now, as NMFDeconv's proportions."""
    model, mix = slides
    new = mix[:6].copy()
    new.X = np.asarray(new.X.todense()) if hasattr(new.X, "todense") else new.X.copy()
    new.X[[0, 2]] = 0  # two spots of one slide
    with pytest.warns(UserWarning, match=r"^2 of 6 spots have no counts .* are missing \(NaN\)"):
        weights = model.get_archetype_weights(new)
    assert weights.isna().all(axis=1).tolist() == [True, False, True, False, False, False]
    np.testing.assert_allclose(weights.dropna().sum(axis=1), 1)
    # Counted among the spots indices asks for ('2 of 6' for two spots, one of them empty).
    with pytest.warns(UserWarning, match=r"^1 of 2 spots have no counts"):
        model.get_archetype_weights(new, indices=[2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.get_archetype_weights(new, indices=[1, 3, 4])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.write_to_adata(mix.copy())
    assert not [w for w in caught if "no counts" in str(w.message)]  # the training spots have


def test_archetypes_training_spots_without_counts_get_nan_rows_once():
    """Training spots without counts got the encoder's output for an all-zero spot as their
    weights and a dominant archetype in write_to_adata, without a word: NaN rows (weights,
    dominant, anchor), said once; the profiles and markers read the other spots."""
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=20, n_archetypes=2, n_markers=5, seed=0)
    X = np.asarray(mix.X.todense()) if hasattr(mix.X, "todense") else mix.X.copy()
    X[:3] = 0
    mix.X = X
    with warnings.catch_warnings():  # spots all zeros: said at setup
        warnings.simplefilter("ignore", UserWarning)
        dv.model.Archetypes.setup_anndata(mix)
        model = dv.model.Archetypes(mix, n_archetypes=2, min_spots=1)
        model.train(max_epochs=2, **TRAIN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.write_to_adata(mix)
    said = [str(w.message) for w in caught if "no counts in the" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("3 of 40 spots"), said
    assert "weights (archetype_weights), dominant archetype" in said[0]
    written = mix.obsm["archetype_weights"]
    assert written.isna().all(axis=1).tolist() == [True] * 3 + [False] * 37
    assert mix.obs["archetype_dominant"].isna().tolist() == [True] * 3 + [False] * 37
    assert mix.obs["archetype_anchor"].iloc[:3].isna().all()
    assert "and anchor (archetype_anchor) are missing (NaN)" in said[0]
    assert mix.uns["archetypes"]["n_empty_spots"] == 3
    assert np.isfinite(mix.varm["archetype_profiles"]).all()
    # get_anchors said nothing of the spots it left out as empty (NaN, as "no anchor").
    with pytest.warns(UserWarning, match=r"^3 of 40 spots have no counts .* anchor no archetype"):
        anchors = model.get_anchors(5)
    assert anchors.attrs["empty_spots"] == list(mix.obs_names[:3])


def test_spots_mostly_without_counts_are_no_candidates():
    """With more than half the spots empty the median depth was 0: the shallow-spot rule kept
    every spot, the empty ones too, among the spots archetypes combine."""
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=20, n_archetypes=2, n_markers=5, seed=0)
    X = np.asarray(mix.X.todense()) if hasattr(mix.X, "todense") else mix.X.copy()
    X[:25] = 0
    X[25] = np.minimum(X[25], 1)  # a spot of a few reads: shallow
    mix.X = X
    with warnings.catch_warnings():  # spots all zeros: said at setup
        warnings.simplefilter("ignore", UserWarning)
        dv.model.Archetypes.setup_anndata(mix)
        model = dv.model.Archetypes(mix, n_archetypes=2, min_spots=1)
    assert np.asarray(model.candidate_rows_).min() == 26
    fits = r"but 14 of the 40 spots are deep enough: 15 have counts, .* Pass n_archetypes=14 or"
    with pytest.raises(ValueError, match=rf"n_archetypes=15 needs 15 candidate spots, {fits}"):
        dv.model.Archetypes(mix, n_archetypes=15, min_spots=1)  # of 14 candidates
    # One spot deep enough of 2 with counts: the advice said only to drop spots, and "auto"
    # failed in scikit-learn ("Found array with 0 feature(s)").
    X[:-2] = 0
    X[-2] = np.minimum(X[-2], 1)
    mix.X = X
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dv.model.Archetypes.setup_anndata(mix)
    one = r"but 1 of the 40 spots are deep enough: 2 have counts, and a candidate needs at least"
    for n in (2, "auto"):
        with pytest.raises(ValueError, match=rf"{one} .* No n_archetypes fits \(archetypes need"):
            dv.model.Archetypes(mix, n_archetypes=n, min_spots=1)
    X[:-1] = 0
    mix.X = X
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dv.model.Archetypes.setup_anndata(mix)
    with pytest.raises(ValueError, match=r"^1 of the 40 spots read .* have counts"):
        dv.model.Archetypes(mix, n_archetypes=2, min_spots=1)


def test_an_archetype_without_majority_spots_is_anchored_and_said():
    """After a short fit one archetype weighed no spot above 1/2 and got 0 anchors: the spots
    it weighs most anchor it now; one that no spot weighs most has none, listed and said."""
    from deltavae.model._archetype_results import anchors, warn_thin

    weights = pd.DataFrame(
        [[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.45, 0.25], [0.35, 0.4, 0.25], [np.nan] * 3],
        columns=["A0", "A1", "A2"],
    )
    out = anchors(weights, 10, "archetype_anchor")
    assert out.attrs == {"anchored_below_half": ["A1"], "no_spots": ["A2"]}
    assert out.astype(object).tolist() == ["A0", "A0", "A1", "A1", np.nan]
    # Two merged archetypes, one led by no spot: said so, not "the largest weight of only 0".
    raw = np.array([[0.6, 0.3, 0.1]] * 4)
    with pytest.warns(UserWarning, match="no spot weighs archetype A1 most, so it has no anch"):
        warn_thin([], 2, raw, np.array([0, 1, 1]))


def test_an_archetype_without_spots_is_said_by_the_read_outs(slides):
    """An archetype no spot weighs most (kept: merging stops at 2) was said once, by the
    cached merge: get_anchors and write_to_adata named it in attrs only, silently."""
    import copy

    model, mix = slides
    clone = copy.deepcopy(model)
    weights = model.get_archetype_weights()
    weights["A0"] += weights.pop("A2")
    weights["A2"] = 0.0  # no spot weighs A2 most
    clone.get_archetype_weights = lambda **kwargs: weights
    said = r"archetype A2 has no anchors and is the dominant archetype of no spot: no spot"
    for _ in range(2):  # every read says it, not the first only
        with pytest.warns(UserWarning, match=said):
            assert clone.get_anchors(5).attrs["no_spots"] == ["A2"]
    spots = mix.copy()
    model.write_to_adata(spots)  # every archetype with spots, coloured by scanpy
    colours = {"A0": "#000000", "A1": "#111111", "A2": "#222222"}
    spots.uns["archetype_dominant_colors"] = list(colours.values())
    # Left out of the obs columns, as CGMDVAE's empty clusters (the category without spots
    # made scanpy's rank_genes_groups and rank_genes_groups_dotplot of the markers fail).
    with pytest.warns(UserWarning, match=said + r"[\s\S]* write_to_adata leaves it out of the "):
        clone.write_to_adata(spots)
    assert spots.uns["archetypes"]["no_spots"].tolist() == ["A2"]
    for column in ("archetype_dominant", "archetype_anchor"):
        assert list(spots.obs[column].cat.categories) == ["A0", "A1"], column
    assert spots.uns["archetype_dominant_colors"] == ["#000000", "#111111"]  # by name
    logged = spots.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    sc.tl.rank_genes_groups(logged, groupby="archetype_dominant", key_added="scanpys")
    assert list(logged.uns["scanpys"]["names"].dtype.names) == ["A0", "A1"]
    model.write_to_adata(spots)  # none without spots: an empty list
    assert spots.uns["archetypes"]["no_spots"].tolist() == []
    assert list(spots.obs["archetype_dominant"].cat.categories) == ["A0", "A1", "A2"]
    # An archetype no spot weighs above 1/2 (a short fit) was listed in attrs alone.
    weights = model.get_archetype_weights().clip(upper=0.45)
    clone.get_archetype_weights = lambda **kwargs: weights
    said = r"archetypes A0, A1, A2 weigh no spot above 1/2 \(largest weight: A0 0.45, .*Train lo"
    with pytest.warns(UserWarning, match=said):
        assert clone.get_anchors(5).attrs["anchored_below_half"] == ["A0", "A1", "A2"]


def test_min_spots_never_merges_below_two_archetypes(slides):
    from deltavae.model._archetype_results import merge_thin

    weights = np.array([[0.9, 0.1, 0.0]] * 3 + [[0.1, 0.9, 0.0]] * 5 + [[0.0, 0.2, 0.8]] * 4)
    deviations = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.9]])
    labels, thin = merge_thin(np.arange(3), weights, deviations, 100)
    assert len(np.unique(labels)) == 2  # it collapsed to 1 archetype
    assert [raw for raw, _ in thin] == sorted({raw for raw, _ in thin})  # each raw one once
    model, _ = slides
    model.min_spots = 10**6
    try:
        with pytest.warns(UserWarning, match="min_spots=1000000 was not fully applied"):
            assert len(model.archetype_names()) == 2
    finally:
        model.min_spots = 1


def test_zero_spot_archetype_advice_can_be_followed():
    from deltavae.model._archetype_results import warn_thin

    weights = np.array([[0.9, 0.1, 0.0]] * 3 + [[0.1, 0.9, 0.0]] * 5)
    with pytest.warns(UserWarning, match="No spot weighs raw archetype 2 most") as record:
        warn_thin([(2, 0)], 1, weights, np.array([0, 1, 1]))
    assert "lower min_spots" not in str(record[0].message)
    assert "min_spots=1 or lower" not in str(record[0].message)


def test_signature_map_keeps_missing_signatures_through_h5ad(slides, tmp_path):
    model, mix = slides
    mix = mix.copy()
    table = model.match_signatures({"first": [mix.var_names[0], mix.var_names[1]]})
    assert table["signature"].isna().any()
    model.write_to_adata(mix)
    stored = mix.uns["archetypes"]["signature_map"]["signature"]
    assert stored.isna().tolist() == table["signature"].isna().tolist()  # not the text 'nan'
    mix.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["archetypes"]["signature_map"]["signature"]
    assert back.isna().tolist() == table["signature"].isna().tolist()
    assert "nan" not in back.astype(object).dropna().tolist()


def test_spot_models_call_their_rows_spots():
    spots = dv.datasets.synthetic_counts(n_cells=40, n_genes=20, n_clusters=2, seed=0)
    spots.X = spots.X.toarray() if hasattr(spots.X, "toarray") else spots.X
    spots.X[:3] = 0
    with pytest.warns(UserWarning, match="3 spots in adata.X are all zeros"):
        dv.model.Archetypes.setup_anndata(spots)
    # One gene: every spot's proportions are the same 1, and the start's PCA divided by 0.
    one = spots[np.asarray(spots.X[:, 0]).ravel() > 0, :1].copy()
    dv.model.Archetypes.setup_anndata(one)
    with pytest.raises(ValueError, match="Archetypes needs at least 2 genes; adata has 1"):
        dv.model.Archetypes(one, n_archetypes=2)


def test_the_imputer_names_the_spots_by_their_argument(split):
    """SpatialImputer's messages named the spots 'spatial', its argument's old name."""
    spots, ref = split
    with pytest.raises(ValueError, match=r"^spots \(3 genes, .* share 3 genes"):
        dv.model.SpatialImputer.from_reference(
            spots[:, :3].copy(), reference=ref, labels_key="cluster"
        )
    with pytest.raises(KeyError, match=r"not in spots\.layers"):
        dv.model.SpatialImputer.from_reference(spots, reference=ref, layer="count")


# ------------------------------------------------------ inputs a scanpy habit changes or mixes up
def test_spots_normalized_in_place_after_training_are_refused(split):
    """sc.pp.normalize_total / log1p on the training AnnData itself went unnoticed: results
    came from the changed values (a copy of the same object was refused)."""
    import scanpy as sc

    spots, ref = (a.copy() for a in split)
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    model.train(max_epochs=5, **TRAIN)
    assert model.get_proportions().shape == (spots.n_obs, 3)
    sc.pp.normalize_total(spots, target_sum=1e4)
    sc.pp.log1p(spots)
    expected = r"no longer holds raw counts: adata\.X has values such as .* in place"
    for call in (model.get_proportions, model.write_to_adata, lambda: model.train(max_epochs=1)):
        with pytest.raises(ValueError, match=expected):
            call()
    assert "proportions" not in spots.obsm


def test_normalized_spots_are_called_normalized_not_rounded(split):
    """normalize_total's output was asked whether it held ambient-corrected counts and told
    to round it, and spot users were pointed to CGMDVAE."""
    import scanpy as sc

    spots, ref = (a.copy() for a in split)
    sc.pp.normalize_total(spots, target_sum=1e4)
    with pytest.raises(ValueError, match=r"every spot sums to 10000, normalized data") as err:
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    assert "np.rint" not in str(err.value) and "CGMDVAE" not in str(err.value)


@pytest.mark.filterwarnings("ignore:spots and reference share only")
@pytest.mark.parametrize("column", ["n_counts", "score"])
def test_a_measurement_is_refused_as_cell_types(split, column):
    """labels_key='nUMI' built one 'cell type' per value (467 of them) with a warning that
    listed them all, and SpatialImputer took it silently."""
    spots, ref = (a.copy() for a in split)
    totals = np.asarray(ref.X.sum(axis=1)).ravel()
    ref.obs["n_counts"] = totals.astype(np.int64)
    ref.obs["score"] = totals / totals.max()
    match = rf"reference\.obs\['{column}'\] looks like a measurement, not cell types"
    with pytest.raises(ValueError, match=match):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key=column)
    with pytest.raises(ValueError, match=match):
        panel = spots[:, 5:].copy()  # the imputer needs genes to impute
        dv.model.SpatialImputer.from_reference(panel, reference=ref, labels_key=column)


@pytest.mark.parametrize("model", [dv.model.NMFDeconv, dv.model.SpatialImputer])
def test_cell_types_named_two_ways_are_warned_by_both_spot_models(split, model):
    """'1' and '1 ' (a label typed with a space in part of an annotation table): each became
    a cell type of its own, with its own signature taking a share of the spots, unsaid."""
    spots, ref = split
    ref = ref.copy()
    labels = ref.obs["cluster"].astype(str).to_numpy(dtype=object)
    labels[np.flatnonzero(labels == "1")[:6]] = "1 "
    ref.obs["typed"] = labels
    line = r"rename them before from_reference: reference\.obs\['typed'\] = reference\.obs"
    with pytest.warns(UserWarning, match=r"differ only in case.*'1 ' \(6\) beside '1'.*" + line):
        model.from_reference(spots[:, 5:].copy(), reference=ref, labels_key="typed")


@pytest.mark.parametrize("model", [dv.model.NMFDeconv, dv.model.SpatialImputer])
def test_labels_with_the_same_text_are_refused_by_both_spot_models(split, model):
    """1 and '1' in the reference's labels: NMFDeconv named them, SpatialImputer raised
    pandas' InvalidIndexError ('Reindexing only valid with uniquely valued Index objects')."""
    spots, ref = (a.copy() for a in split)
    labels = ref.obs["cluster"].astype(str).to_numpy(dtype=object)
    ones = np.flatnonzero(labels == "1")
    labels[ones[::2]] = 1  # half of type '1' as an integer
    ref.obs["mixed"] = labels
    with pytest.raises(ValueError, match=r"same text \(e\.g\. .*\.astype\(str\)\.$"):
        model.from_reference(spots[:, 5:].copy(), reference=ref, labels_key="mixed")


def test_a_float16_reference_of_deep_genes_is_read_without_overflow(split):
    """The imputer summed a float16 reference's genes in float16: numpy's 'overflow
    encountered in reduce' past 65504 counts a gene (an error under pytest's -W error)."""
    spots, ref = (a.copy() for a in split)
    ref.X = np.minimum(ref.X.toarray() * 40, 60000).astype(np.float16)
    assert ref.X.astype(np.float64).sum(0).max() > 65504
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = dv.model.SpatialImputer.from_reference(
            spots[:, 5:].copy(), reference=ref, labels_key="cluster"
        )
    assert len(model.reference_genes_) == ref.n_vars


def test_repeated_spot_names_are_refused(split):
    spots, ref = (a.copy() for a in split)
    spots.obs_names = ["s0", "s0", *spots.obs_names[2:]]
    with pytest.raises(ValueError, match=r"Spot names .* not unique \(repeated: \['s0'\]\)"):
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    with pytest.raises(ValueError, match=r"obs_names_make_unique"):
        dv.model.Archetypes.setup_anndata(spots)


@pytest.mark.filterwarnings("ignore:spots and reference share only")
def test_imputing_spots_without_counts_warns(split):
    spots, ref = (a.copy() for a in split)
    spots = spots[:, 5:].copy()  # the imputer needs genes to impute
    X = spots.X.toarray()
    X[:3] = 0
    spots.X = X
    said = r"3 spots in spots\.X are all zeros .* sc\.pp\.filter_cells\(spots, min_counts=1\)"
    with pytest.warns(UserWarning, match=said):  # named by the argument, as errors are
        model = dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
    model.train(max_epochs=3, **TRAIN)
    # NaN rows, as NMFDeconv's (they were the model's values for a spot without data).
    with pytest.warns(UserWarning, match=r"3 of 60 spots .* imputed values are missing \(NaN\)"):
        imputed = model.impute()
    assert imputed.isna().all(axis=1).tolist() == [True] * 3 + [False] * 57
    # Its proportions too, as NMFDeconv's (they were read without a word), counted among the
    # spots asked for; write_to_adata says it once, of every result.
    with pytest.warns(UserWarning, match=r"^3 of 60 spots .* their proportions are missing"):
        props = model.get_proportions()
    assert props.iloc[:3].isna().all().all() and np.isfinite(props.iloc[3:].to_numpy()).all()
    with pytest.warns(UserWarning, match=r"^2 of 3 spots .* their proportions are missing"):
        model.get_proportions(indices=[0, 2, 40])
    with pytest.warns(UserWarning, match=r"^1 of 2 spots .* their abundances are missing"):
        abundance = model.get_abundance(indices=[40, 1])
    assert np.isnan(abundance.iloc[1]) and abundance.iloc[0] > 0
    model.get_proportions(indices=[10, 20])  # none of them empty: no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.write_to_adata(spots)
    said = [str(w.message) for w in caught if "no counts in the" in str(w.message)]
    assert len(said) == 1 and "values, proportions and abundance are missing" in said[0], said
    pd.testing.assert_frame_equal(spots.obsm["proportions"], props)
    assert spots.obsm["imputed"].iloc[:3].isna().all().all()
    assert spots.obs["cell_abundance"].iloc[:3].isna().all()


def test_auto_archetypes_on_few_spots_stay_below_spots_over_min_spots():
    """12 spots: 'auto' chose 5 archetypes, then merged 3 of them away (each must lead in
    min_spots=5 spots) with a long note; it now tries no more than the spots can hold."""
    spots = dv.datasets.convex_mixtures(n_spots=12, n_genes=120, n_archetypes=4, seed=0)
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots)
    assert model.n_archetypes_raw_ == 2 and max(model.elbow_["n_archetypes"]) == 2
    model = dv.model.Archetypes(spots, min_spots=3)
    assert max(model.elbow_["n_archetypes"]) == 4


@pytest.mark.filterwarnings("ignore:spots and reference share only")
# 5 epochs: about half the starts leave an archetype without spots, which is said
@pytest.mark.filterwarnings("ignore:min_spots=5 was not fully applied")
@pytest.mark.filterwarnings("ignore:archetype A1 has no anchors")
def test_key_added_puts_spot_results_side_by_side(split):
    """The spot models wrote fixed keys: a second deconvolution (another reference, another
    setting) replaced the first."""
    spots, ref = (a.copy() for a in split)
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    model.train(max_epochs=5, **TRAIN)
    assert model.write_to_adata(spots) == ["obsm/proportions", "obs/cell_abundance"]
    keys = model.write_to_adata(spots, key_added="ref2")
    assert keys == ["obsm/ref2_proportions", "obs/ref2_cell_abundance"]
    pd.testing.assert_frame_equal(spots.obsm["ref2_proportions"], spots.obsm["proportions"])
    with pytest.raises(ValueError, match=r"key_added='a/b' holds '/'"):
        model.write_to_adata(spots, key_added="a/b")

    mixed = dv.datasets.convex_mixtures(n_spots=40, n_genes=120, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mixed)
    archetypes = dv.model.Archetypes(mixed, n_archetypes=3)
    archetypes.train(max_epochs=5, **TRAIN)
    plain, keyed = archetypes.write_to_adata(), archetypes.write_to_adata(key_added="k3")
    assert keyed == [key.replace("/", "/k3_") for key in plain]
    np.testing.assert_array_equal(
        mixed.varm["k3_archetype_profiles"], mixed.varm["archetype_profiles"]
    )

    panel = spots[:, 5:].copy()
    imputer = dv.model.SpatialImputer.from_reference(panel, reference=ref, labels_key="cluster")
    imputer.train(max_epochs=3, **TRAIN)
    keys = ["obsm/r1_imputed", "obsm/r1_proportions", "obs/r1_cell_abundance"]
    assert imputer.write_to_adata(panel, key_added="r1") == keys
    assert "imputed" not in panel.obsm and panel.obsm["r1_imputed"].shape == (60, 5)
    pd.testing.assert_frame_equal(panel.obsm["r1_proportions"], imputer.get_proportions(panel))
    # Into the spots NMFDeconv wrote into, by default keys: its results lost, said.
    replaced = r"replaced obsm\['proportions'\], obs\['cell_abundance'\], written before by"
    with pytest.warns(UserWarning, match=replaced + r" NMFDeconv: .* key_added="):
        imputer.write_to_adata(spots)
    imputer.write_to_adata(spots)  # over its own: no word
    # Another NMFDeconv of the same setup, from a reference of other cell types: said too.
    spots2 = split[0].copy()
    first = dv.model.NMFDeconv.from_reference(spots2, reference=ref, labels_key="cluster")
    first.train(max_epochs=1, **TRAIN)
    first.write_to_adata(spots2)
    fewer = ref[ref.obs["cluster"] != ref.obs["cluster"].iloc[0]].copy()
    second = dv.model.NMFDeconv.from_reference(spots2, reference=fewer, labels_key="cluster")
    second.train(max_epochs=1, **TRAIN)
    with pytest.warns(UserWarning, match=r"written before by another NMFDeconv"):
        second.write_to_adata(spots2)
    again = dv.model.NMFDeconv.from_reference(spots2, reference=fewer, labels_key="cluster")
    again.train(max_epochs=1, **TRAIN)
    again.write_to_adata(spots2)  # a cell run again: no word


@pytest.mark.parametrize(
    ("call", "kwargs", "match"),
    [
        ("NMFDeconv.from_reference", {"labels_kay": "cluster"}, "did you mean 'labels_key'"),
        ("NMFDeconv.from_reference", {"n_marker": 20}, "did you mean 'n_markers'"),
        ("SpatialImputer.from_reference", {"labels_kay": "cluster"}, "did you mean 'labels_key'"),
        ("SpatialImputer.cross_validate", {"trainkwargs": {}}, "did you mean 'train_kwargs'"),
        ("SpatialImputer.cross_validate", {"n_state": 3}, "did you mean 'n_states'"),
    ],
)
def test_a_misspelt_keyword_of_a_builder_is_named_before_the_reference_is_read(
    split, call, kwargs, match
):
    """A misspelling of from_reference's or cross_validate's own arguments reached the
    model's constructor once the reference was read: labels_kay left labels_key at its
    default ("labels_key='cell_type' is not a column"), n_marker was offered 'n_layers',
    trainkwargs no name at all, each as "SpatialImputer() got an unexpected keyword"."""
    spots, reference = split
    model, method = call.split(".")
    labels = {} if "labels_kay" in kwargs else {"labels_key": "cluster"}
    with pytest.raises(TypeError, match=rf"^{re.escape(call)}\(\) got .*{match}"):
        getattr(getattr(dv.model, model), method)(spots, reference, **labels, **kwargs)


def test_n_components_beside_signatures_is_said_to_be_ignored(split):
    """NMFDeconv.from_reference(..., n_components=5) fitted the reference's 3 types, as if
    n_components had not been given, without a word."""
    spots, reference = split
    with pytest.warns(UserWarning, match=r"n_components=5 is ignored: .* its 3 cell types"):
        model = dv.model.NMFDeconv.from_reference(
            spots.copy(), reference=reference, labels_key="cluster", n_components=5
        )
    assert len(model.cell_types_) == 3


def test_signatures_a_model_cannot_read_are_refused_by_name(split):
    """A type silent in the spots' genes (a panel without its markers) took 15-19% of every
    spot; repeated type names were two columns of one name; repeated genes failed inside the
    module ("expected (types, 120)")."""
    spots, reference = split
    reference = reference.copy()
    reference.obs["type"] = "t" + reference.obs["cluster"].astype(str)
    spots = spots.copy()
    dv.model.NMFDeconv.setup_anndata(spots)
    sig = dv.model.NMFDeconv.signatures_from_reference(reference, "type")
    silent = sig.copy()
    silent.iloc[0] = 0.0
    first = str(sig.index[0])
    with pytest.raises(ValueError, match=rf"Cell types \['{first}'\] are \(almost\) silent"):
        dv.model.NMFDeconv(spots, signatures=silent)
    with pytest.raises(ValueError, match=r"repeat cell types .*groupby\(level=0\)"):
        dv.model.NMFDeconv(spots, signatures=sig.rename(index={sig.index[1]: first}))
    doubled = pd.concat([sig, sig.iloc[:, :3]], axis=1)
    with pytest.raises(ValueError, match=r"repeat genes .*columns.duplicated"):
        dv.model.NMFDeconv(spots, signatures=doubled)
    # From a reference whose extra type expresses only genes the spots lack.
    measured = list(spots.var_names[: spots.n_vars // 2])
    extra = reference[reference.obs["type"] == first].copy()
    extra.obs["type"] = "ghost"
    extra.obs_names = [f"ghost_{i}" for i in range(extra.n_obs)]
    X = np.asarray(extra.X.todense() if hasattr(extra.X, "todense") else extra.X)
    X[:, extra.var_names.isin(measured)] = 0
    extra.X = X
    both = ad.concat([reference, extra])
    both.obs["type"] = both.obs["type"].astype("category")
    with pytest.raises(ValueError, match=r"\['ghost'\] are \(almost\) silent"):
        dv.model.NMFDeconv.from_reference(spots[:, measured].copy(), both, "type")


@pytest.mark.parametrize("n_markers", [5, None])
def test_new_spots_with_more_genes_are_read_on_the_models_genes(split, n_markers):
    """A second section measuring more genes was refused (pointing to load_query_data) when
    the model read every shared gene, and read when it read markers."""
    spots, reference = split
    first = spots[:, 5:].copy()
    model = dv.model.NMFDeconv.from_reference(first, reference, "cluster", n_markers=n_markers)
    model.train(max_epochs=3, **TRAIN)
    wider = spots.copy()  # the same spots, 5 more genes
    np.testing.assert_allclose(
        model.get_proportions(wider).to_numpy(), model.get_proportions().to_numpy(), atol=1e-6
    )
    with pytest.raises(ValueError, match="lacks 1 of the"):
        model.get_proportions(first[:, 1:].copy())


def test_score_tables_with_text_or_extra_types_are_named():
    true = pd.DataFrame({"A": [0.2, 0.5, 0.9], "B": [0.8, 0.5, 0.1]}, index=list("xyz"))
    labelled = true.assign(region=["cortex", "cortex", "hilum"])
    with pytest.raises(TypeError, match=r"not numbers \(\['region'\]\).*drop\(columns="):
        deconvolution_scores(true, labelled)
    wider = pd.concat([true * 0.7, pd.DataFrame({"C": [0.3] * 3}, index=true.index)], axis=1)
    with pytest.warns(UserWarning, match=r"cell types true lacks \(\['C'\]\), 30.0% of each"):
        deconvolution_scores(true, wider)


def test_signatures_given_genes_by_types_are_told_to_transpose(split):
    """Signatures as genes x cell types (scanpy's var-first habit) were told only that they
    share no gene with the spots, naming the cell types as the signatures' genes."""
    spots, ref = split
    sig = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    spots = spots.copy()
    dv.model.NMFDeconv.setup_anndata(spots)
    with pytest.raises(KeyError, match=r"their rows are the spots' genes.*signatures=sig\.T"):
        dv.model.NMFDeconv(spots, signatures=sig.T)


def test_signatures_with_missing_values_or_other_case_say_what_to_do(split):
    """A signature table with NaN (a gene one type's source lacked) was refused with
    'signatures must be finite and non-negative', naming neither the value nor a fix; genes
    in another case only with 'use the same gene identifiers in both'."""
    spots, ref = split
    sig = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    spots = spots.copy()
    dv.model.NMFDeconv.setup_anndata(spots)
    holes = sig.copy()
    holes.iloc[1, 2] = np.nan
    where = rf"e.g. nan for cell type {str(sig.index[1])!r} and gene {sig.columns[2]!r}"
    with pytest.raises(ValueError, match=rf"1 values .* are not, {where}\. .*fillna\(0\)"):
        dv.model.NMFDeconv(spots, signatures=holes)
    with pytest.raises(ValueError, match=r"are not, e.g. -1 for .*not of scaled or centred data"):
        dv.model.NMFDeconv(spots, signatures=sig * 0 - 1.0)
    shouted = sig.set_axis(sig.columns.str.upper(), axis=1)
    with pytest.raises(KeyError, match=r"Ignoring case, they share \d+ genes"):
        dv.model.NMFDeconv(spots, signatures=shouted)


@pytest.mark.parametrize("minified", [True, False])
def test_a_reference_without_counts_is_refused_before_the_signatures(split, minified):
    """A reference minified by scvi-tools (counts zeroed) or without a count: NMFDeconv said
    'signatures share no gene (signatures e.g. [])' after scanpy's raw-count warning;
    SpatialImputer that the reference had no counts for 'the shared genes'."""
    spots, ref = split
    ref = ref.copy()
    ref.X = np.zeros(ref.shape, dtype=np.float32)
    if minified:
        ref.uns["_scvi_adata_minify_type"] = "latent_posterior_parameters"
    match = "reference was minified by scvi-tools" if minified else r"reference.X holds no counts"
    for build in (dv.model.NMFDeconv.from_reference, dv.model.SpatialImputer.from_reference):
        with pytest.raises(ValueError, match=match):
            build(spots, reference=ref, labels_key="cluster")


def test_a_reference_silent_on_the_shared_genes_is_named(split, capsys):
    spots, ref = split
    ref = ref.copy()
    ref.X = np.asarray(ref.X.todense() if hasattr(ref.X, "todense") else ref.X, dtype=np.float32)
    ref.X[:, :20] = 0
    with pytest.raises(ValueError, match="no counts for any of the 20 genes it shares"):
        dv.model.NMFDeconv.from_reference(spots[:, :20], reference=ref, labels_key="cluster")
    assert "raw count data" not in capsys.readouterr().err  # scanpy's, on counts we logged


def test_spot_models_refuse_a_split_in_spots():
    """Too few spots for a validation split were called 'cells' ('With 6 cells ...')."""
    spots = dv.datasets.synthetic_counts(n_cells=6, n_genes=20, n_clusters=2, seed=0)
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes=2)
    with pytest.raises(
        ValueError, match=r"of the spots .* of 6 spots that is none.* more spots\.$"
    ):
        model.train(max_epochs=1, train_size=0.9)
    with pytest.raises(ValueError, match=r"no spot is held out for it \(train_size=1.0\)"):
        model.train(max_epochs=1, train_size=1.0, early_stopping=True)


def test_merges_of_alike_then_thin_archetypes_name_the_final_count():
    """'5 raw archetypes were merged into 3' and then a thin one merged away: the count left
    (2) was said nowhere."""
    from deltavae.model._archetype_results import merge_groups, warn_thin

    directions = np.eye(4)[[0, 0, 1, 1, 2]]  # raw 0 and 1 alike, 2 and 3 alike
    weights = np.eye(5)[[0] * 5 + [2] * 5 + [4]]  # raw 4 weighs 1 spot most
    alike = r"^5 raw archetypes were merged into 3: raw archetypes \(0, 1\) and \(2, 3\)"
    thin = r"^1 raw archetype\(s\) were merged .*, so there are now 2 archetypes \(of 5 fitted\)"
    with pytest.warns(UserWarning, match=alike), pytest.warns(UserWarning, match=thin):
        groups, _, thin_ones = merge_groups(1 + directions, np.ones(4), weights, 0.9, 3)
        warn_thin(thin_ones, 3, weights, groups)  # as Archetypes._fresh_merge does
    assert groups.max() + 1 == 2


@pytest.mark.parametrize(
    "n, advice", [(1, r"Pass min_spots=1 to keep"), (3, r"min_spots=3 or lower \(down to 1\)")]
)
def test_thin_archetype_advice_names_a_valid_min_spots(n, advice):
    """'Pass min_spots=1 or lower' suggested values below min_spots' minimum of 1."""
    from deltavae.model._archetype_results import warn_thin

    weights = np.array([[0.9, 0.1, 0.0]] * 6 + [[0.1, 0.9, 0.0]] * 5)
    with pytest.warns(UserWarning, match=advice) as record:
        warn_thin([(2, n)], 5, weights, np.array([0, 1, 1]))
    assert "min_spots=1 or lower" not in str(record[0].message)


def test_latents_of_spots_without_counts_are_warned_once(split):
    """get_proportions and impute warned about spots without counts, the latent design's
    get_latent_representation read them without a word."""
    spots, ref = (a.copy() for a in split)
    spots = spots[:, 5:].copy()
    X = spots.X.toarray()
    X[:3] = 0
    spots.X = X
    with warnings.catch_warnings():  # few shared genes, empty spots: said at setup
        warnings.simplefilter("ignore", UserWarning)
        model = dv.model.SpatialImputer.from_reference(spots, reference=ref, design="latent")
    model.train(max_epochs=1, **TRAIN)
    with pytest.warns(UserWarning, match=r"^2 of 4 spots .* their latents are missing") as said:
        z = model.get_latent_representation(indices=[0, 2, 40, 50], batch_size=3)
    assert z.shape[0] == 4 and len(said) == 1
    assert np.isnan(z).all(axis=1).tolist() == [True, True, False, False]
    with pytest.warns(UserWarning, match=r"^1 of 2 spots .* their latents are missing"):
        _, var = model.get_latent_representation(indices=[1, 50], return_dist=True)
    assert np.isnan(var[0]).all() and (var[1] > 0).all()
    model.get_latent_representation(reference=True)  # the cells: no warning
    model.get_latent_representation(indices=[10, 20])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.write_to_adata(spots)
    said = [str(w.message) for w in caught if "no counts in the" in str(w.message)]
    assert len(said) == 1 and "imputed values and latents are missing" in said[0], said
    assert np.isnan(spots.obsm["X_spatialimputer"][:3]).all()


# ------------------------------------------------- notes on the reference's genes and labels
def _notes(build, *args, **kwargs) -> list[str]:
    """The warnings' texts of ``build(*args, **kwargs)`` (the result is dropped)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(*args, **kwargs)
    return [str(w.message) for w in caught]


def test_few_shared_genes_are_said_only_with_what_to_do(split):
    """'spots and reference share only 40 genes' was said (100 genes for NMFDeconv, 50 for
    SpatialImputer) though every gene of both was shared, and offered nothing to do."""
    from deltavae.model._shared_genes import FEW_SHARED_GENES

    spots, ref = split
    nmf, imputer = dv.model.NMFDeconv.from_reference, dv.model.SpatialImputer.from_reference
    kwargs = {"labels_key": "cluster", "n_markers": None}
    assert spots.n_vars < FEW_SHARED_GENES
    for build, measured, kw in [(nmf, spots, kwargs), (imputer, spots[:, :30], {})]:
        notes = _notes(build, measured.copy(), reference=ref, **{"labels_key": "cluster", **kw})
        assert not [n for n in notes if "share only" in n]  # the spots' whole panel: nothing to do
    cut = r"share only 30 genes; proportions .* holds only these 30 genes: pass it with all"
    with pytest.warns(UserWarning, match=cut):
        nmf(spots.copy(), reference=ref[:, :30].copy(), **kwargs)
    renamed = spots.copy()
    renamed.var_names = [*renamed.var_names[:-1], "GENE_X"]
    lacking = r"share only 39 genes; .* 1 of the spots' 40 genes are not in the reference "
    lacking += r"\(e\.g\. \['GENE_X'\]\)\. Check their names"
    with pytest.warns(UserWarning, match=lacking):
        nmf(renamed, reference=ref, **kwargs)
    sig = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    panel = renamed[:, :-1].copy()  # every gene with a signature: nothing to say
    dv.model.NMFDeconv.setup_anndata(panel)
    assert not [n for n in _notes(dv.model.NMFDeconv, panel, sig) if "share" in n]
    dv.model.NMFDeconv.setup_anndata(renamed)
    # Signatures are said as a reference is (warn_few_shared), in the same words.
    said = r"^spots and signatures share only 39 genes; proportions .* 1 of the spots' 40 genes "
    said += r"are not in the signatures \(e\.g\. \['GENE_X'\]\)\. Check their names against "
    with pytest.warns(UserWarning, match=said + r"signatures\.columns\.$"):
        dv.model.NMFDeconv(renamed, signatures=sig)
    cut = r"^spots and signatures share only 30 genes; .* The signatures hold only 30 of the "
    with pytest.warns(UserWarning, match=cut + r"spots' genes: give signatures of more, e\.g\. "):
        dv.model.NMFDeconv(renamed, signatures=sig.iloc[:, :30])


def test_float_coded_cell_types_are_refused_as_cgmdvae_refuses_them(split):
    """NMFDeconv named float-coded types '0.0', '1.0', ... where CGMDVAE refuses float labels
    and says to make them integers."""
    from deltavae._checks import check_labels

    spots, ref = split
    ref = ref.copy()
    ref.obs["f"] = pd.Categorical(ref.obs["cluster"]).codes.astype(float)
    said = r"reference.obs\['f'\] holds float64 values, read as cell-type names such as '0\.0'"
    said += r": make them integers, reference.obs\['f'\] = reference.obs\['f'\]\.astype\(int\)"
    with pytest.raises(ValueError, match=said):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="f")
    with pytest.raises(ValueError, match=said):
        dv.model.SpatialImputer.from_reference(spots[:, :30].copy(), ref, labels_key="f")
    ref.obs["f"] = ref.obs["f"].astype(int)  # the message's line
    assert list(check_labels(ref, "f").categories) == [0, 1, 2]


@pytest.mark.parametrize("mark", ["Unknown", "nan", ""])
def test_reference_cells_of_no_type_are_counted_and_kept(split, mark):
    """Reference cells labelled 'Unknown' (or 'nan', '') became a cell type without a word."""
    spots, ref = split
    ref = ref.copy()
    labels = ref.obs["cluster"].astype(str).to_numpy().copy()
    labels[:7] = mark
    ref.obs["u"] = labels
    said = rf"7 reference cells are labelled \['{mark}'\] in reference.obs\['u'\], which reads "
    said += rf"as no cell type.*reference\[~reference.obs\['u'\]\.isin\(\['{mark}'\]\)\]\.copy"
    with pytest.warns(UserWarning, match=said):
        model = dv.model.NMFDeconv.from_reference(spots.copy(), ref, labels_key="u", n_markers=5)
    assert mark in list(model.cell_types_)  # said, not dropped
    if mark == "Unknown":
        with pytest.warns(UserWarning, match=said):
            dv.model.SpatialImputer.from_reference(spots[:, :30].copy(), ref, labels_key="u")
    reference = ref
    reference = reference[~reference.obs["u"].isin([mark])].copy()  # the message's line
    assert reference.n_obs == ref.n_obs - 7


def test_from_reference_names_the_spots_by_their_argument(split):
    """Errors about the spots said adata.X (an argument the user never passed) where those
    about the reference say reference.X."""
    spots, ref = split
    negative = spots.copy()
    negative.X = -negative.X
    for build, measured in [
        (dv.model.NMFDeconv.from_reference, negative),
        (dv.model.SpatialImputer.from_reference, negative[:, :30].copy()),
    ]:
        with pytest.raises(ValueError, match=r"^spots\.X must hold raw counts: found negative"):
            build(measured, reference=ref, labels_key="cluster")


def test_true_false_matrices_are_refused_as_counts(split):
    """A True/False (detected or not) matrix was read as counts of 0 and 1 without a word."""
    spots, ref = split
    detected = spots.copy()
    detected.X = detected.X > 0
    said = r"^spots\.X must hold raw counts: found booleans .* spots\.X = spots\.X\.astype"
    with pytest.raises(ValueError, match=said):
        dv.model.NMFDeconv.from_reference(detected, reference=ref, labels_key="cluster")
    reference = ref.copy()
    reference.X = reference.X > 0
    with pytest.raises(ValueError, match=r"^reference\.X must hold raw counts: found booleans"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=reference, labels_key="cluster")
    with pytest.raises(ValueError, match=r"^adata\.X must hold raw counts: found booleans"):
        dv.model.Archetypes.setup_anndata(detected)
    detected.X = detected.X.astype(np.float32)  # the message's line, for counts of 0 and 1
    dv.model.Archetypes.setup_anndata(detected)


def _run_advised_renaming(model, spots, ref):
    """Run the ``adata.var_names = ...`` line that ``from_reference``'s refusal advises, on
    both the spots and the reference."""
    with pytest.raises(ValueError) as refused:
        getattr(dv.model, model).from_reference(spots, reference=ref, labels_key="cluster")
    line = re.search(r"adata\.var_names = (.*\)), on both", str(refused.value)).group(1)
    for adata in (spots, ref):
        adata.var_names = eval(line, {"adata": adata})


@pytest.mark.parametrize("model", ["NMFDeconv", "SpatialImputer"])
def test_ensembl_versions_on_one_side_are_named_with_the_line_that_strips_them(split, model):
    """Spots named by versioned Ensembl IDs (GENCODE's ENSG...16) and a reference by the bare
    IDs share no name: the error said 'use the same gene identifiers', which they were."""
    spots, ref = split
    spots, ref = spots.copy(), ref.copy()
    ids = [f"ENSMUSG{i:011d}" for i in range(ref.n_vars)]
    ref.var_names = ids
    spots.var_names = [f"{g}.{i % 7 + 1}" for i, g in enumerate(ids[: spots.n_vars])]
    with pytest.raises(ValueError, match=r"Without the version suffixes .*ENSMUSG00000000000\.1"):
        getattr(dv.model, model).from_reference(spots, reference=ref, labels_key="cluster")
    _run_advised_renaming(model, spots, ref)
    assert spots.var_names.isin(ref.var_names).all()
    assert ref.var_names.tolist() == ids  # bare IDs (and symbols) kept as they are


@pytest.mark.parametrize("model", ["NMFDeconv", "SpatialImputer"])
def test_reference_genes_with_spaces_around_their_names_are_told_to_be_stripped(split, model):
    """A reference whose gene names carry a space (' gene_0', a table typed so) shared no
    name with the spots: the error said 'use the same gene identifiers', which they were."""
    spots, ref = split
    spots, ref = spots[:, 5:].copy(), ref.copy()
    ref.var_names = [f" {g}" for g in ref.var_names]
    with pytest.raises(ValueError, match=r"Without the spaces around .*'gene_5' and ' gene_5'"):
        getattr(dv.model, model).from_reference(spots, reference=ref, labels_key="cluster")
    _run_advised_renaming(model, spots, ref)
    assert spots.var_names.isin(ref.var_names).all()


def test_imputer_spots_normalised_with_genes_the_reference_lacks_are_named_normalised(split):
    """SpatialImputer checked the spots' counts on the genes shared with the reference only,
    where rows scaled by sc.pp.normalize_total no longer share one total: the error advised
    rounding 'counts corrected for ambient RNA', after which they would read as counts."""
    spots, ref = split
    rng = np.random.default_rng(0)
    extra = ad.AnnData(
        rng.poisson(3.0, (spots.n_obs, 8)).astype(np.float32),
        obs=spots.obs[[]],
        var=pd.DataFrame(index=[f"panel_{i}" for i in range(8)]),
    )
    normalised = ad.concat([spots[:, 5:], extra], axis=1)  # 5 genes to impute
    normalised.X = normalised.to_df().to_numpy(dtype=np.float32)
    sc = pytest.importorskip("scanpy")
    sc.pp.normalize_total(normalised, target_sum=1e4)
    with pytest.raises(ValueError, match=r"spots\.X .*every spot sums to 10000, normalized") as e:
        dv.model.SpatialImputer.from_reference(normalised, reference=ref, labels_key="cluster")
    assert "round them" not in str(e.value) and "(layer='counts')" in str(e.value)
