"""What CGMDVAE's condition arguments mean for the cells given, labels a model has not seen,
and models that read their counts from disk (model/_cgmdvae_mixins.py, _labels.py,
_matrices.py)."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi

import deltavae as dv

SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 16}


def _with_donors(seed=0):
    adata = dv.datasets.synthetic_counts(
        n_cells=240, n_genes=40, n_clusters=2, n_conditions=2, seed=seed
    )
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 3 == 0, "d1", "d2")
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    return adata


@pytest.fixture(scope="module")
def two_keys():
    scvi.settings.seed = 0
    adata = _with_donors()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=["condition", "donor"])
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=4, batch_size=64)
    return model, adata


def _ctrl(adata):
    return _ctrl_of(adata, "condition")


def _ctrl_of(adata, key):
    return adata[adata.obs[key] == "ctrl"].copy()


def test_a_condition_left_out_keeps_each_cells_own(two_keys):
    model, adata = two_keys
    ctrl = _ctrl(adata)
    partial = model.translate(ctrl, {"condition": "stim"})
    assert (partial.obs["donor"] == ctrl.obs["donor"]).all()
    assert set(partial.obs["condition"]) == {"stim"}
    for donor in ("d1", "d2"):
        rows = (ctrl.obs["donor"] == donor).to_numpy()
        full = model.translate(ctrl[rows].copy(), {"condition": "stim", "donor": donor})
        np.testing.assert_allclose(partial.X[rows], full.X, rtol=1e-5, atol=1e-5)
    none = model.translate(ctrl, {"condition": "stim", "donor": None})
    np.testing.assert_allclose(none.X, partial.X, rtol=1e-5, atol=1e-5)
    # The same for z moved to a condition.
    moved = model.get_latent_representation(ctrl, condition={"condition": "stim"})
    for donor in ("d1", "d2"):
        rows = (ctrl.obs["donor"] == donor).to_numpy()
        full = model.get_latent_representation(
            ctrl[rows].copy(), condition={"condition": "stim", "donor": donor}
        )
        np.testing.assert_allclose(moved[rows], full, rtol=1e-5, atol=1e-5)


def test_a_request_that_moves_nothing_is_refused(two_keys):
    model, adata = two_keys
    with pytest.raises(ValueError, match="names no value to move the cells to"):
        model.translate(_ctrl(adata), {"donor": None})
    with pytest.raises(ValueError, match="names no value"):
        model.get_latent_representation(condition={})
    with pytest.raises(ValueError, match="The condition None names no value"):  # was "{}"
        model.translate(_ctrl(adata), None)


def test_the_predicted_condition_column_is_typed_like_the_training_one():
    scvi.settings.seed = 0
    adata = _with_donors()
    adata.obs["dose"] = (adata.obs["condition"] == "stim").astype(np.int64)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=64)
    ctrl = adata[adata.obs["dose"] == 0].copy()
    out = model.translate(ctrl, 1)
    assert out.obs["dose"].dtype == np.int64 and set(out.obs["dose"]) == {1}
    for same in (1.0, True, np.int64(1)):  # the same dose, written another way
        np.testing.assert_allclose(model.translate(ctrl, same).X, out.X, rtol=1e-5)
    shifted = model.predict_perturbation(ctrl, 1, method="latent_shift")
    assert shifted.obs["dose"].dtype == np.int64
    both = ad.concat([ctrl, out], index_unique="-")
    assert both.obs["dose"].dtype == np.int64


def test_a_condition_of_integer_categories_is_predicted_without_warnings():
    """A categorical condition of integer categories (doses, donor numbers): translate and
    sample gave the column its categories through a pandas FutureWarning (an empty object
    Index appended to int64 categories), an error where warnings are errors."""
    scvi.settings.seed = 0
    adata = _with_donors()
    adata.obs["dose"] = pd.Categorical((adata.obs["condition"] == "stim").astype(np.int64))
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    ctrl = adata[adata.obs["dose"] == 0].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = model.translate(ctrl, 1)
        sampled = model.sample(10, seed=0)
    for obs in (out.obs, sampled.obs):
        assert list(obs["dose"].cat.categories) == [0, 1]
        assert obs["dose"].cat.categories.dtype == np.int64
    assert set(out.obs["dose"]) == {1}


def test_a_whole_float_names_an_integer_condition_in_every_method():
    """translate read 1.0 as dose 1; transform_batch=1.0 (scvi-tools' code for batch 1) was
    called "a category without training cells", and latent_shift "never seen in training"."""
    scvi.settings.seed = 0
    adata = _with_donors()
    adata.obs["dose"] = (adata.obs["condition"] == "stim").astype(np.int64)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    assert model.get_normalized_expression(transform_batch=1.0).shape == adata.shape
    # "1" names dose 1, as condition="1" does (tests/test_readout_consistency.py); an unknown
    # dose is refused with the categories as the column holds them (not "[np.int64(0), ...").
    with pytest.raises(ValueError, match=r"'7' is not a category.*its categories: \[0, 1\]"):
        model.get_normalized_expression(transform_batch="7")
    ctrl = adata[adata.obs["dose"] == 0].copy()
    shifted = model.predict_perturbation(ctrl, 1.0, method="latent_shift", seed=0)
    assert set(shifted.obs["dose"]) == {1}


def test_a_nullable_integer_condition_stays_nullable_and_writable(tmp_path):
    """A condition of pandas' nullable Int64 (metadata read with missing values): translate
    and sample wrote it as an object column of numpy integers, which h5ad refused to write
    ("Can't implicitly convert non-string objects to strings")."""
    scvi.settings.seed = 0
    adata = _with_donors()
    adata.obs["dose"] = pd.array((adata.obs["condition"] == "stim").astype(int), dtype="Int64")
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    ctrl = adata[adata.obs["dose"] == 0].copy()
    out, sampled = model.translate(ctrl, 1), model.sample(10, seed=0)
    assert out.obs["dose"].dtype == "Int64" and set(out.obs["dose"]) == {1}
    assert sampled.obs["dose"].dtype == "Int64"
    both = ad.concat([ctrl, out], index_unique="-")
    assert both.obs["dose"].dtype == "Int64"
    both.write_h5ad(tmp_path / "both.h5ad")
    sampled.write_h5ad(tmp_path / "sampled.h5ad")


def test_an_ordered_condition_stays_ordered_and_concatenates():
    """An ordered categorical condition (time points, doses): translate, latent_shift,
    nearest_response and sample wrote it unordered, and concatenated with the real cells it
    became an object column."""
    scvi.settings.seed = 0
    adata = _with_donors()
    adata.obs["condition"] = adata.obs["condition"].astype("category").cat.as_ordered()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    ctrl = _ctrl(adata)
    shifted = model.predict_perturbation(ctrl, "stim", method="latent_shift")
    for out in (model.translate(ctrl, "stim"), model.sample(10, seed=0), shifted):
        assert out.obs["condition"].dtype == adata.obs["condition"].dtype
        both = ad.concat([adata, out], index_unique="-")
        assert both.obs["condition"].dtype == adata.obs["condition"].dtype


def test_a_model_loaded_onto_string_conditions_samples_them_ordered_as_trained(tmp_path):
    """The model kept an ordered condition's dtype as its name, "category": loaded onto
    cells whose column is strings (read from a table), sample wrote it unordered."""
    scvi.settings.seed = 0
    adata = _with_donors()
    order = pd.CategoricalDtype(["stim", "ctrl"], ordered=True)
    adata.obs["condition"] = adata.obs["condition"].astype(str).astype(order)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    model.save(tmp_path / "m")
    strings = adata.copy()
    strings.obs["condition"] = strings.obs["condition"].astype(str).astype(object)
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata=strings)
    sampled = loaded.sample(10, seed=0).obs["condition"]
    assert sampled.dtype.ordered and list(sampled.cat.categories) == ["stim", "ctrl"]


def test_labels_the_model_has_not_seen_are_read_as_unlabelled():
    scvi.settings.seed = 0
    adata = _with_donors()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=64)
    new = _ctrl(adata)
    new.obs["cell_type"] = new.obs["cell_type"].replace({"0": "Monocyte-like"})
    before = new.obs.copy()
    with pytest.warns(UserWarning, match="labels the model was not trained with"):
        z = model.get_latent_representation(new)
    pd.testing.assert_frame_equal(new.obs, before)
    unlabelled = new.copy()
    unlabelled.obs["cell_type"] = "Unknown"
    np.testing.assert_allclose(z, model.get_latent_representation(unlabelled), rtol=1e-6)
    with pytest.warns(UserWarning, match="not trained with"):
        out = model.translate(new, "stim")
    assert "Monocyte-like" in set(out.obs["cell_type"])  # the caller's labels are kept


def test_de_over_the_condition_refuses_to_correct_for_it(two_keys):
    model, _ = two_keys
    with pytest.raises(ValueError, match="batch_correction=False"):
        model.differential_expression(
            groupby="condition", group1="stim", group2="ctrl", batch_correction=True
        )
    # The same split written as idx1/idx2 (stim against ctrl), as a mask and as a query.
    stim = (model.adata.obs["condition"] == "stim").to_numpy()
    with pytest.raises(ValueError, match="idx1 and idx2 share no category"):
        model.differential_expression(idx1=stim, idx2=~stim, batch_correction=True)
    with pytest.raises(ValueError, match="idx1 and idx2 share no category"):
        model.differential_expression(
            idx1="condition == 'stim'", idx2="condition == 'ctrl'", batch_correction=True
        )


def test_a_model_reading_counts_from_disk_predicts_samples_and_tests(tmp_path):
    scvi.settings.seed = 0
    adata = _with_donors()
    adata.write_h5ad(tmp_path / "cells.h5ad")
    with pytest.warns(UserWarning, match="read_lazy keeps only X"):  # its counts layer
        lazy = dv.read_lazy(tmp_path / "cells.h5ad")
    dv.model.CGMDVAE.setup_anndata(lazy, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(lazy, **SMALL)
    model.train(max_epochs=2, batch_size=64)
    ctrl = _ctrl(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        translated = model.translate(ctrl, "stim")
        nearest = model.predict_perturbation(ctrl, "stim", method="nearest_response")
    assert translated.shape == ctrl.shape and np.isfinite(translated.X).all()
    assert nearest.shape == ctrl.shape
    sampled = model.sample(5, condition="stim", seed=0)
    assert sampled.shape == (5, adata.n_vars)
    de = model.differential_expression(groupby="cell_type", group1="0", group2="1")
    assert set(de.index) == set(adata.var_names)
    # Cells given backed predict as in memory.
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    ctrl_backed = backed[backed.obs["condition"] == "ctrl"]
    in_file = model.predict_perturbation(ctrl_backed, "stim", method="nearest_response")
    np.testing.assert_allclose(in_file.X, nearest.X, rtol=1e-5)
    # Cells of both conditions: each source's rows were copied, which anndata refuses backed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = model.translate(backed, "stim", seed=0)
        np.testing.assert_allclose(both.X, model.translate(adata, "stim", seed=0).X, rtol=1e-5)


def test_translate_reads_a_backed_anndata_of_both_conditions(tmp_path):
    # The observed responses are averaged per source condition on a subset of the cells:
    # anndata refused to copy that subset of a backed AnnData ("pass a filename").
    adata = _with_donors()
    adata.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    scvi.settings.seed = 0
    dv.model.CGMDVAE.setup_anndata(backed, condition_key="condition")
    model = dv.model.CGMDVAE(backed, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_file = model.translate(backed, "stim", seed=0)
        in_memory = model.translate(adata, "stim", seed=0)
    assert in_file.uns["response_weight"] == in_memory.uns["response_weight"] > 0
    np.testing.assert_allclose(in_file.X, in_memory.X, rtol=1e-5)
    np.testing.assert_array_equal(in_file.layers["counts"], in_memory.layers["counts"])


def test_a_query_model_translates_to_a_condition_its_cells_lack():
    scvi.settings.seed = 0
    adata = _with_donors()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=64)
    query = _ctrl(adata)
    query.obs["condition"] = pd.Categorical(query.obs["condition"].astype(str))  # only 'ctrl'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nothing is left to learn
        mapped = dv.model.CGMDVAE.load_query_data(query, model)
    with pytest.warns(UserWarning, match="seen under both 'ctrl' and 'stim'.*response_weight=0"):
        out = mapped.translate(query, "stim")
    assert set(out.obs["condition"]) == {"stim"}
    assert out.uns["response_weight"] == 0.0  # no reference cells to take responses from
    assert list(query.obs["condition"].cat.categories) == ["ctrl"]  # the query as it was


def test_sample_draws_every_condition_by_default(two_keys):
    """condition=None is documented as drawn from the training frequencies; with two keys it
    raised 'Give one value per condition as a dict'."""
    model, _ = two_keys
    cells = model.sample(200, seed=0)
    assert set(cells.obs["condition"]) == {"ctrl", "stim"}
    assert set(cells.obs["donor"]) == {"d1", "d2"}
    np.testing.assert_array_equal(cells.X, model.sample(200, condition={}, seed=0).X)


def test_each_prediction_says_on_which_scale_its_x_is():
    """translate and latent_shift give expected counts, and nearest_response (which gave
    log-normalized data) too: the output says how each got them (a user's trial compared
    them as they were)."""
    adata = dv.datasets.synthetic_counts(
        n_cells=160, n_genes=30, n_clusters=2, n_conditions=2, seed=0
    )
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, mixture_init="kmeans", enable_progress_bar=False)
    source, target = list(adata.obs["condition"].cat.categories)
    ctrl = adata[adata.obs["condition"] == source].copy()
    scales = {}
    for method in ("translate", "latent_shift", "nearest_response"):
        record = model.predict_perturbation(ctrl, target, method=method).uns["prediction"]
        assert record["method"] == method and record["target"] == target
        scales[method] = record["X"]
    # translate's default adds the change to the observed counts (latent_shift decodes).
    assert scales["translate"].startswith("each cell's observed counts plus the model's change")
    assert scales["latent_shift"].startswith("expected counts")
    assert scales["nearest_response"].startswith("expected counts")
    assert "layers['log_normalized']" in scales["nearest_response"]


def test_a_model_loaded_onto_its_controls_keeps_the_conditions_it_trained_on(two_keys, tmp_path):
    """Loaded onto its ctrl cells alone, a model read the conditions from them: translating
    them to stim was refused as "never seen in training", and sample drew ctrl only (and its
    cells' library sizes from the ctrl cells)."""
    model, adata = two_keys
    model.save(tmp_path / "m")
    ctrl = _ctrl(adata)
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", ctrl)
    np.testing.assert_array_equal(
        loaded.translate(ctrl, {"condition": "stim"}, seed=0).X,
        model.translate(ctrl, {"condition": "stim"}, seed=0).X,
    )
    drawn, again = loaded.sample(n_cells=50, seed=0), model.sample(n_cells=50, seed=0)
    np.testing.assert_array_equal(drawn.X, again.X)
    drawn = drawn.obs
    pd.testing.assert_frame_equal(drawn, again.obs)
    assert set(drawn["condition"]) == {"ctrl", "stim"}
    conditions = adata.obs["condition"].astype(str)
    counts = conditions.iloc[model.train_indices].value_counts().to_dict()  # training cells
    assert loaded.condition_counts_["condition"] == counts  # saved with the model
    every = loaded.condition_counts_with_validation_["condition"]
    assert every == conditions.value_counts().to_dict()  # and with the validation cells


def test_sampled_clusters_are_kept_beside_a_condition_named_cluster():
    """A condition named "cluster" overwrote sample's obs["cluster"]: the cells of cluster=1
    were listed under their drawn condition values, and their cluster was lost."""
    scvi.settings.seed = 0
    adata = _with_donors()
    adata.obs["cluster"] = adata.obs["condition"].astype(str)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="cluster")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=120)
    cells = model.sample(20, cluster=1, condition="stim", seed=0)
    assert set(cells.obs["cgmdvae_cluster"]) == {"1"} and set(cells.obs["cluster"]) == {"stim"}


def test_training_again_on_the_same_cells_counts_them_once():
    """A second train() (the advice of NotConvergedWarning) added the same cells again to
    condition_counts_, doubling every count."""
    scvi.settings.seed = 0
    adata = _with_donors()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=["condition", "donor"])
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=120)
    counts, combos = model.condition_counts_, model.condition_combinations_
    model.train(max_epochs=1, batch_size=120)
    assert model.condition_counts_ == counts and model.condition_combinations_ == combos
    trained = adata.obs["condition"].astype(str).iloc[model.train_indices]
    assert counts["condition"] == trained.value_counts().to_dict()


def test_a_model_of_two_condition_keys_takes_translates_dict_in_every_method(two_keys):
    """translate needs {'condition': 'stim'} on a model of two condition keys; the same
    target given to latent_shift or nearest_response said "Condition
    condition=\"{'condition': 'stim'}\" was never seen in training"."""
    model, adata = two_keys
    ctrl = _ctrl(adata)
    for method in ("latent_shift", "nearest_response"):
        named = model.predict_perturbation(ctrl, {"condition": "stim"}, method=method, seed=0)
        keyed = model.predict_perturbation(
            ctrl, "stim", method=method, condition_key="condition", seed=0
        )
        np.testing.assert_array_equal(named.X, keyed.X)
        assert set(named.obs["condition"]) == {"stim"}
    with pytest.raises(ValueError, match="name one"):
        model.predict_perturbation(ctrl, {"condition": "stim", "donor": "d1"}, "latent_shift")
    with pytest.raises(ValueError, match=r"e\.g\. \{'condition': 'stim'\}"):
        model.translate(ctrl, "stim")


def test_condition_keys_as_a_tuple_and_refit_mixture_named_as_a_flag():
    """A tuple of condition keys failed deep in scvi-tools (KeyError of the tuple);
    refit_mixture='False' was read as a truth value and refit the mixture."""
    adata = _with_donors()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=("condition", "donor"))
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    assert model.condition_keys == ["condition", "donor"]
    for flag in ("False", "no", None, 1):
        with pytest.raises(ValueError, match="refit_mixture must be True, False or 'auto'"):
            model.train(max_epochs=2, refit_mixture=flag)
    assert not model.is_trained_
    # No condition key (a list built from the columns present, empty): no conditions; the
    # model failed on AttributeError "'field_keys'".
    none = _with_donors()
    dv.model.CGMDVAE.setup_anndata(none, condition_key=[])
    model = dv.model.CGMDVAE(none, n_clusters=2, **SMALL)
    assert model.condition_keys == [] and model._n_cats_per_cov() == []


def test_sample_draws_only_combinations_of_conditions_that_trained():
    """Donors nested in the conditions (d1, d2 in control, d3 in stim): sample() drew each
    key on its own, so stimulated cells of control-only donors, never trained."""
    adata = _with_donors()
    stim = (adata.obs["condition"] == "stim").to_numpy()
    adata.obs["donor"] = np.where(stim, "d3", np.where(np.arange(adata.n_obs) % 2, "d1", "d2"))
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=["condition", "donor"])
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=128)
    cells = model.sample(200, seed=0)
    pairs = set(zip(cells.obs["condition"].astype(str), cells.obs["donor"], strict=True))
    assert pairs == {("ctrl", "d1"), ("ctrl", "d2"), ("stim", "d3")}
    given = model.sample(100, condition={"condition": "stim"}, seed=0)
    assert set(given.obs["donor"]) == {"d3"}
    given = model.sample(100, condition={"donor": "d1"}, seed=0)
    assert set(given.obs["condition"].astype(str)) == {"ctrl"}


def test_predictions_keep_obs_columns_not_named_by_strings(two_keys):
    # A column named by a number (pandas allows it) is kept; reading "_scvi" off it crashed.
    model, adata = two_keys
    ctrl = _ctrl(adata)
    ctrl.obs[7] = np.arange(ctrl.n_obs)
    for method in ("translate", "latent_shift"):
        pred = model.predict_perturbation(ctrl, {"condition": "stim"}, method=method)
        np.testing.assert_array_equal(pred.obs[7].to_numpy(), np.arange(ctrl.n_obs))
    generated = model.translate(ctrl, target_condition={"condition": "stim"})
    np.testing.assert_array_equal(generated.obs[7].to_numpy(), np.arange(ctrl.n_obs))


def test_moving_cells_to_a_combination_of_conditions_that_never_trained_warns(tmp_path):
    """Cell type as a second condition key, T0 held out of drugA: translating T0's controls
    to drugA (and latent_shift, z moved, sample with both keys named) decoded a combination
    the model never saw, silently; a saved and loaded model names it too."""
    adata = dv.datasets.synthetic_counts(
        n_cells=180, n_genes=30, n_clusters=2, n_conditions=3, seed=0
    )
    adata.obs["cell_type"] = "T" + adata.obs["cluster"].astype(str)
    adata.obs["drug"] = adata.obs["condition"].map({"c0": "ctrl", "c1": "drugA", "c2": "drugB"})
    held = ((adata.obs["cell_type"] == "T0") & (adata.obs["drug"] == "drugA")).to_numpy()
    train = adata[~held].copy()
    dv.model.CGMDVAE.setup_anndata(train, condition_key=["drug", "cell_type"])
    model = dv.model.CGMDVAE(train, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=180, mixture_init_epoch=None)
    ctrl = _ctrl_of(train, "drug")
    named = r"drug='drugA', cell_type='T0' \(\d+ cells\)"
    with pytest.warns(UserWarning, match=named):
        model.translate(ctrl, {"drug": "drugA"})
    with pytest.warns(UserWarning, match=named):
        model.predict_perturbation(ctrl, {"drug": "drugA"}, method="latent_shift")
    with pytest.warns(UserWarning, match=named):
        model.get_latent_representation(ctrl, condition={"drug": "drugA"})
    with pytest.warns(UserWarning, match=r"drug='drugA', cell_type='T0' \(5 cells\)"):
        model.sample(5, condition={"drug": "drugA", "cell_type": "T0"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # trained combinations: quiet
        model.translate(ctrl, {"drug": "drugB"})
        model.sample(20, condition={"drug": "drugA"}, seed=0)
    model.save(tmp_path / "m")
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata=ctrl)
    with pytest.warns(UserWarning, match=named):
        loaded.translate(ctrl, {"drug": "drugA"})


def test_a_dose_of_floats_is_named_by_an_integer_in_every_method():
    """Doses 0.0, 1.0: translate(ctrl, 1) (and the other methods) said "dose=1 was never
    seen in training; conditions seen: ['0.0', '1.0']"; 1.0 and True for integers worked."""
    adata = _with_donors()
    adata.obs["dose"] = (adata.obs["condition"] == "stim").to_numpy().astype(float)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, batch_size=240, mixture_init_epoch=None)
    ctrl = adata[adata.obs["dose"] == 0].copy()
    for method in ("translate", "latent_shift", "nearest_response"):
        for dose in (1, np.int64(1)):
            out = model.predict_perturbation(ctrl, dose, method=method, seed=0)
            assert out.obs["dose"].dtype == np.float64 and set(out.obs["dose"]) == {1.0}


def test_a_translated_anndata_is_written_to_once_its_counts_are_in_x(two_keys):
    """write_to_adata of translate's output said to pass layer='counts', an argument it does
    not take; with the whole counts in X it writes the model's slots beside the target."""
    model, adata = two_keys
    pred = model.translate(_ctrl(adata), {"condition": "stim"}, seed=0)
    with pytest.raises(ValueError, match=r"pred\.X = pred\.layers\['counts'\]\.copy\(\)"):
        model.write_to_adata(pred)
    pred.X = pred.layers["counts"].copy()
    written = model.write_to_adata(pred, key_added="pred")
    assert written[:3] == ["obsm/X_pred", "obsm/X_pred_w", "obs/pred_cluster"]
    assert pred.obsm["X_pred"].shape == (pred.n_obs, SMALL["n_latent"])
    assert set(pred.obs["condition"]) == {"stim"}
