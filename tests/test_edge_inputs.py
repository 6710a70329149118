"""Unusual but legitimate data and calls: a lone last cell, one gene, sparse arrays, labels
that are not names, pickling, tiny inputs, empty selections."""

import importlib.util
import pickle
import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse

import deltavae as dv

SMALL = {"n_hidden": 16, "n_latent": 4}


def _cells(n_cells=120, n_genes=20, seed=0):
    return dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=n_genes, n_clusters=2, n_conditions=2, seed=seed
    )


@pytest.mark.parametrize("keys", [pd.Index, np.array, pd.Series])
def test_keys_as_a_pandas_index_or_numpy_array_are_a_list(keys):
    """adata.obs.columns[...] or an array of names was refused as not naming obs columns
    (scvi-tools takes them), and kept as such in the saved setup arguments."""
    adata = _cells()
    adata.obs["plate"] = np.tile(["p1", "p2"], adata.n_obs // 2)
    dv.model.ZINBVAE.setup_anndata(adata, categorical_covariate_keys=keys(["plate"]))
    assert dv.model.ZINBVAE(adata, **SMALL).registry_["setup_args"][
        "categorical_covariate_keys"
    ] == ["plate"]
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=keys(["condition", "plate"]))
    model = dv.model.CGMDVAE(adata, **SMALL)
    assert model.registry_["setup_args"]["condition_key"] == ["condition", "plate"]
    assert model.condition_keys == ["condition", "plate"]


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
def test_a_lone_last_training_cell_does_not_stop_training(cls):
    adata = _cells(n_cells=129)  # 129 training cells, minibatches of 128: one left over
    cls.setup_anndata(adata)
    model = cls(adata, **SMALL)
    model.train(max_epochs=2, train_size=1.0)
    assert np.isfinite(model.history["elbo_train"].to_numpy()).all()


def test_a_numpy_batch_size_reads_results():
    """train took batch_size=np.int64(...), the read-outs failed in torch's sampler: "batch_size
    should be a positive integer value, but got batch_size=7"."""
    adata = _cells(n_cells=40)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, **SMALL)
    model.train(max_epochs=1, batch_size=np.int64(16))
    latent = model.get_latent_representation(batch_size=np.int64(7))
    np.testing.assert_allclose(latent, model.get_latent_representation(), atol=1e-5)
    assert model.get_normalized_expression(batch_size=np.int32(7)).shape == (40, 20)


def test_cgmdvae_trains_on_one_gene():
    counts = np.random.default_rng(0).poisson(5.0, size=(60, 1)).astype(np.float32)
    adata = ad.AnnData(counts)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=2, likelihood="nb", **SMALL)
    model.train(max_epochs=3, batch_size=32)
    assert model.get_latent_representation().shape == (60, 4)


def test_cgmdvae_trains_with_counts_in_one_gene_of_several():
    """Sparse counts in one gene of 5: after normalising every cell is alike, and the refit of
    the mixture at the end of training failed in ARPACK ("Starting vector is zero")."""
    counts = np.zeros((60, 5), dtype=np.float32)
    counts[:, 2] = 1 + np.random.default_rng(0).poisson(5.0, size=60)
    adata = ad.AnnData(sparse.csr_matrix(counts))
    with pytest.warns(UserWarning, match=r"^4 genes in adata.X are zero in every cell;"):
        dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=2, likelihood="nb", **SMALL)
    model.train(max_epochs=2, batch_size=32)
    assert np.isfinite(model.get_latent_representation()).all()


def test_translation_of_one_gene_averages_finite_responses():
    """With one gene the responses' similarity had no principal component: every weight was
    NaN and translate's default (observed responses averaged in) failed in torch.bernoulli."""
    counts = 1 + np.random.default_rng(0).poisson(5.0, size=(60, 1)).astype(np.float32)
    obs = pd.DataFrame({"condition": ["ctrl", "stim"] * 30}, index=[f"c{i}" for i in range(60)])
    adata = ad.AnnData(counts, obs=obs)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, likelihood="nb", **SMALL)
    model.train(max_epochs=2, batch_size=32)
    out = model.translate(adata, target_condition="ctrl", seed=0)
    assert out.uns["response_weight"] == 0.5
    assert np.isfinite(out.X).all() and np.isfinite(out.layers["counts"]).all()


def test_a_sparse_array_is_refused_with_the_conversion():
    adata = _cells()
    adata.X = sparse.csr_array(adata.X)
    for cls in (dv.model.ZINBVAE, dv.model.CGMDVAE):
        with pytest.raises(TypeError, match=r"scipy.sparse.csr_matrix\(adata.X\)"):
            cls.setup_anndata(adata)


def test_labels_that_are_not_names_say_how_to_make_them_names():
    adata = _cells()
    codes = adata.obs["cluster"].astype(int).to_numpy()
    adata.obs["flags"] = codes.astype(bool)
    with pytest.raises(ValueError, match=r"\.astype\(str\)"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="flags")
    adata.obs["typed"] = pd.Categorical(codes)  # said "holds category values"
    with pytest.raises(ValueError, match=r"'typed'\] holds int64 values, read as label names"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="typed", unlabeled_category="Unknown")
    mixed = codes.astype(object)
    mixed[::3] = "Unknown"
    adata.obs["mixed"] = mixed
    with pytest.raises(ValueError, match="mixes strings with other values"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="mixed")
    marked = codes.copy()
    marked[::3] = -1
    adata.obs["marked"] = marked
    with pytest.raises(ValueError, match="pass it as it is there, unlabeled_category=-1"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="marked", unlabeled_category="-1")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="marked", unlabeled_category=-1)
    assert sorted(dv.model.CGMDVAE(adata, **SMALL).label_names) == ["0", "1"]
    # Integer labels with missing values are floats; filled with -1 they hold -1.0, which
    # was said not to occur ("so no cell is unlabelled").
    adata.obs["filled"] = pd.Series(codes, index=adata.obs_names).where(marked >= 0).fillna(-1)
    with pytest.raises(ValueError, match=r"as floats .*\.astype\(int\)"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="filled", unlabeled_category=-1)


def test_labels_held_as_numpy_strings_are_names():
    """Labels as np.str_ (names taken from an array one by one) were refused as "object
    values, read as label names", and with some Python strings as "mixing" str and str_."""
    adata = _cells()
    names = np.array(["B", "T", "Unknown"])
    codes = np.where(np.arange(adata.n_obs) % 3 == 0, 2, adata.obs["cluster"].astype(int))
    held = [names[c] if i % 2 else str(names[c]) for i, c in enumerate(codes)]
    adata.obs["type"] = pd.Series(held, index=adata.obs_names, dtype=object)
    assert {type(v) for v in adata.obs["type"]} == {str, np.str_}
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    assert dv.model.CGMDVAE(adata, **SMALL).label_names == ["B", "T"]


@pytest.mark.parametrize("mark", [0, ""])
def test_a_falsy_unlabelled_mark_marks_the_unlabelled_cells(mark):
    """unlabeled_category=0 (integer labels 1, 2 with 0 unassigned) failed in scvi-tools
    ("Expected categories: ['0' '1' '2' 'Unknown']"), and "" was trained as a label of its
    own: both were read as the default, "Unknown"."""
    adata = _cells()
    codes = adata.obs["cluster"].astype(int).to_numpy() + 1
    codes[::3] = 0
    adata.obs["type"] = codes if mark == 0 else np.where(codes == 0, "", codes.astype(str))
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category=mark)
    model = dv.model.CGMDVAE(adata, **SMALL)
    assert model.label_names == ["1", "2"]
    assert model.cluster_names == ["1", "2"]


@pytest.mark.parametrize("which", ["cgmdvae", "zinbvae covariate"])
def test_conditions_listed_in_another_order_keep_each_cells_condition(which, tmp_path):
    """A categorical condition column with the training categories in another order (stim
    first) was coded by position: stim cells read as ctrl (latent off by 0.12, 16% of the
    clusters changed, translate's counts by up to 125), on the trained and the loaded model."""
    adata = _cells()
    adata.obs["condition"] = adata.obs["condition"].astype("category")
    if which == "cgmdvae":
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
        model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
        model.train(max_epochs=2, mixture_init="kmeans", enable_progress_bar=False)
    else:
        dv.model.ZINBVAE.setup_anndata(adata, categorical_covariate_keys=["condition"])
        model = dv.model.ZINBVAE(adata, **SMALL)
        model.train(max_epochs=2, enable_progress_bar=False)
    z = model.get_latent_representation()
    other = adata.copy()
    other.obs["condition"] = other.obs["condition"].cat.reorder_categories(["stim", "ctrl"])
    np.testing.assert_allclose(model.get_latent_representation(other), z, atol=1e-5)
    assert list(other.obs["condition"].cat.categories) == ["stim", "ctrl"]  # obs untouched
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m", adata=other)
    np.testing.assert_allclose(loaded.get_latent_representation(other), z, atol=1e-5)


@pytest.mark.parametrize("trained_as", [int, str, bool])
def test_conditions_of_another_type_are_named_with_the_conversion(trained_as):
    """Categories 5/6 trained as integers and read as strings (or the other way) passed the
    check, which compares as strings, and scvi-tools then said the category was missing and
    suggested extend_categories."""
    adata = _cells()
    values = [True, False] if trained_as is bool else [6, 5]
    adata.obs["condition"] = pd.Categorical(
        np.where(adata.obs["condition"] == "stim", *values).astype(trained_as)
    )
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(adata, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    other = adata.copy()
    other.obs["condition"] = other.obs["condition"].astype(str if trained_as is not str else int)
    advice = {int: r"astype\(int\)", str: r"astype\(str\)", bool: r"map\(\{\"True\": True"}
    with pytest.raises(ValueError, match="another type.*" + advice[trained_as]):
        model.get_latent_representation(other)
    cells = _cells()
    dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition")
    with pytest.raises(ValueError, match="condition_alignment must be a number of 0 or more"):
        dv.model.CGMDVAE(cells, condition_alignment="Auto")  # "could not convert string"


def test_whole_floats_for_integer_conditions_are_named_with_the_conversion():
    """Plates 0/1 trained as integers and read as floats (after a merge or fillna) were "new
    categories" to map with load_query_data, and the query mapped them so: its categories
    became floats, and it then refused the reference's own integer cells as new."""
    adata = _cells()
    adata.obs["plate"] = (adata.obs["condition"] == "stim").astype(int)
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="plate")
    model = dv.model.ZINBVAE(adata, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    other = adata.copy()
    other.obs["plate"] = other.obs["plate"].astype(float)
    with pytest.raises(ValueError, match=r"another type.*astype\(int\)"):
        model.get_latent_representation(other)
    with pytest.raises(ValueError, match=r"query.obs\['plate'\].*another type.*astype\(int\)"):
        dv.model.ZINBVAE.load_query_data(other, model)
    for new in (other.obs["plate"] + 0.5, "P7"):  # new categories, not another type
        other.obs["plate"] = new
        with pytest.raises(ValueError, match="not trained with"):
            model.get_latent_representation(other)


def test_cgmdvae_arguments_its_setup_leaves_unused_are_said_to_be_ignored():
    """classifier_weight without labels, condition_alignment or condition_in_prior without a
    condition: the model trained as if they were never given, without a word."""
    cells = _cells()
    dv.model.CGMDVAE.setup_anndata(cells)
    ignored = r"ignores classifier_weight=10.*no labels_key.*condition_alignment: it acts on"
    with pytest.warns(UserWarning, match=ignored + r" conditions.*condition_in_prior"):
        dv.model.CGMDVAE(
            cells, classifier_weight=10, condition_alignment=5, condition_in_prior=False, **SMALL
        )
    cells = _cells()
    dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # used: no warning
        dv.model.CGMDVAE(cells, condition_alignment=5, condition_in_prior=False, **SMALL)


def test_a_column_both_labels_and_condition_is_refused():
    """Accepted before: the classifier learned the condition the alignment removed from z."""
    cells = _cells()
    with pytest.raises(ValueError, match="'condition' is both labels_key and a condition_key"):
        dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition", labels_key="condition")
    assert not [c for c in cells.obs if c.startswith("_scvi")]


def test_labels_of_one_type_on_every_cell_are_refused_before_training():
    """labels_key naming a column of one value on every cell (a subset of one cell type, a
    column that is not the labels): supervised, every cell was put in that label's cluster,
    so training found nothing and predict_labels gave the label to every cell; the one word
    said after training was that n_clusters=3 had two empty clusters, 'n_clusters=2 fits'."""
    cells = _cells()
    cells.obs["type"] = "T cell"
    with pytest.raises(ValueError, match=r"holds one label, 'T cell', and every cell carr.*"):
        dv.model.CGMDVAE.setup_anndata(cells, labels_key="type")
    assert not [c for c in cells.obs if c.startswith("_scvi")] and "_scvi_uuid" not in cells.uns
    cells.obs["type"] = 3  # integer labels alike
    with pytest.raises(
        ValueError, match=r"one label, 3, .*unlabelled \(-1, passing unlabeled_category=-1\)"
    ):
        dv.model.CGMDVAE.setup_anndata(cells, labels_key="type")
    cells.obs.loc[cells.obs_names[::2], "type"] = -1  # one type among unlabelled cells: taken
    dv.model.CGMDVAE.setup_anndata(cells, labels_key="type", unlabeled_category=-1)


def test_labels_keep_their_column_order_whatever_the_unlabelled_mark_sorts_to():
    adata = _cells()
    labels = adata.obs["cluster"].astype(str).to_numpy().astype(object)
    labels[::4] = "Unknown"
    adata.obs["label"] = pd.Categorical(labels, categories=["Unknown", "1", "0"])
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    model = dv.model.CGMDVAE(adata, **SMALL)
    # scvi-tools swapped the mark with the last label, giving ["0", "1"]; each code must still
    # name its own label.
    assert model.label_names == ["1", "0"]
    mapping = model.adata_manager.get_state_registry("labels").categorical_mapping
    codes = model.adata_manager.get_from_registry("labels").ravel()
    np.testing.assert_array_equal(np.asarray(mapping)[codes], labels.astype(str))


def test_label_categories_without_cells_and_rare_labels_are_named_once():
    adata = _cells()
    labels = adata.obs["cluster"].astype(str).to_numpy().astype(object)
    labels[2:] = np.where(labels[2:] == "1", "1", "Unknown")
    labels[:2] = "0"  # two labelled cells of '0'
    adata.obs["lab"] = pd.Categorical(labels, categories=["0", "1", "Unknown", "Platelet"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="lab")
        dv.model.CGMDVAE(adata, **SMALL)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "_scvi_labels" in m]
    assert sum("adata.obs['lab']: '0' (2)" in m for m in messages) == 1
    assert sum("categories no cell carries (['Platelet'])" in m for m in messages) == 1


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
def test_a_trained_model_pickles_and_keeps_training(cls):
    scvi.settings.seed = 0
    adata = _cells()
    cls.setup_anndata(adata)
    model = cls(adata, **SMALL)
    model.train(max_epochs=2, batch_size=64)
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(
        copy.get_latent_representation(), model.get_latent_representation()
    )
    copy.train(max_epochs=1, batch_size=64)
    assert copy.is_trained


def test_a_model_pickled_on_a_gpu_unpickles_on_a_machine_without_one():
    """The pickled module is a CPU copy that names its device; where that device is missing
    the model stays on the CPU and reads out as before."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=64)
    state = model.__getstate__()
    assert {p.device.type for p in state["module"].parameters()} == {"cpu"}
    assert state["_pickled_device"] == "cpu"
    state["_pickled_device"] = "cuda:3"  # as a model on a GPU pickles
    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has a fourth GPU")
    copy = object.__new__(dv.model.ZINBVAE)
    copy.__setstate__(state)
    assert "_pickled_device" not in copy.__dict__
    assert copy.module.device.type == "cpu"
    np.testing.assert_array_equal(
        copy.get_latent_representation(), model.get_latent_representation()
    )


def test_small_inputs_to_a_trained_model_are_not_warned_about_training(counts_adata):
    dv.model.CGMDVAE.setup_anndata(counts_adata, condition_key="condition")
    model = dv.model.CGMDVAE(counts_adata, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    few = counts_adata[[0, 1, 150, 151]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.get_latent_representation(few)
    assert not [w for w in caught if "fewer than 3 cells" in str(w.message)]
    with pytest.raises(ValueError, match="indices selects no cell"):
        model.get_latent_representation(indices=[])


def test_empty_cluster_advice_can_be_followed(counts_adata, monkeypatch):
    dv.model.CGMDVAE.setup_anndata(counts_adata)
    model = dv.model.CGMDVAE(counts_adata, n_clusters=3, **SMALL)
    monkeypatch.setattr(model, "predict_clusters", lambda *a, **k: np.zeros(300, dtype=int))
    with pytest.warns(UserWarning, match="2 of 3 clusters are empty") as record:
        model._warn_if_clusters_empty(10)
    assert "n_clusters=2 fits them" in str(record[0].message)  # never n_clusters=1
    counts_adata.obs["lab"] = counts_adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="lab")
    labelled = dv.model.CGMDVAE(counts_adata, **SMALL)
    monkeypatch.setattr(labelled, "predict_clusters", lambda *a, **k: np.zeros(300, dtype=int))
    with pytest.warns(UserWarning, match="Each label keeps its cluster") as record:
        labelled._warn_if_clusters_empty(10)
    assert "n_clusters=" not in str(record[0].message)
    # Once the labelled cells trained, a label's cluster holds them: a 2-epoch run with every
    # cell labelled called a label whose 3 cells trained "empty", too few labelled cells.
    labelled.train_indices = np.arange(300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labelled._warn_if_clusters_empty(2)
    (said,) = [str(w.message) for w in caught]
    held = counts_adata.obs["lab"].value_counts()
    assert said.startswith(
        f"2 of 3 labels are never predicted after training ('1' ({held['1']} labelled cells), "
        f"'2' ({held['2']} labelled cells)): their labelled cells trained in their clusters, "
        "but q(y | z, c) puts every cell, those too, in other clusters."
    ), said
    assert "above this run's 2" in said and "empty" not in said


def test_a_label_predicted_for_almost_no_cell_is_said_after_training(counts_adata, monkeypatch):
    """A label whose labelled cells trained, predicted for 2 cells of all (fewer than a third
    of its own labelled ones), was said nothing of: only labels predicted for no cell were."""
    counts_adata.obs["lab"] = counts_adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="lab")
    model = dv.model.CGMDVAE(counts_adata, **SMALL)
    model.train_indices = np.arange(300)
    held = counts_adata.obs["lab"].value_counts()
    clusters = np.where(counts_adata.obs["lab"].to_numpy() == "2", 2, 0)
    clusters[np.flatnonzero(counts_adata.obs["lab"].to_numpy() == "1")[:2]] = 1  # 2 cells
    monkeypatch.setattr(model, "predict_clusters", lambda *a, **k: clusters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model._warn_if_clusters_empty(10)
    (said,) = [str(w.message) for w in caught]
    assert said.startswith(
        f"1 of 3 labels are barely predicted after training ('1' ({held['1']} labelled cells, "
        "2 predicted)): q(y | z, c) puts most of their labelled cells"
    ), said
    # A third of its labelled cells or more: nothing said.
    clusters[np.flatnonzero(counts_adata.obs["lab"].to_numpy() == "1")] = 1
    clusters[np.flatnonzero(counts_adata.obs["lab"].to_numpy() == "1")[held["1"] // 3 + 1 :]] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._warn_if_clusters_empty(10)


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(),
    reason="a GPU is there ('gpu' is Apple's on a Mac)",
)
def test_load_and_query_mapping_asking_for_a_missing_gpu_say_so(tmp_path):
    # As train does: Lightning's own error ("No supported gpu backend found!") names no fix.
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, **SMALL)
    model.save(tmp_path / "m")
    for accelerator in ("gpu", "cuda"):
        with pytest.raises(ValueError, match=f"accelerator='{accelerator}' asks for a GPU"):
            dv.model.ZINBVAE.load(tmp_path / "m", adata, accelerator=accelerator)
        with pytest.raises(ValueError, match=f"accelerator='{accelerator}' asks for a GPU"):
            dv.model.ZINBVAE.load_query_data(adata.copy(), model, accelerator=accelerator)
    # Lightning: "`devices` selected with `CPUAccelerator` should be an int > 0".
    for device, said in ((0, "is not a number"), ([0], "picks GPUs"), ("cuda:0", "names a torch")):
        with pytest.raises(ValueError, match=rf"^device={re.escape(repr(device))} {said}"):
            dv.model.ZINBVAE.load(tmp_path / "m", adata, device=device)
        with pytest.raises(ValueError, match=rf"^device={re.escape(repr(device))} {said}"):
            dv.model.ZINBVAE.load_query_data(adata.copy(), model, device=device)


def test_training_arguments_that_would_be_ignored_or_fail_late_are_refused():
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, **SMALL)
    with pytest.raises(ValueError, match="validation_size=0.0 holds out no cell of 120"):
        model.train(max_epochs=1, train_size=0.9, validation_size=0.0, early_stopping=True)
    with pytest.raises(ValueError, match="restore_best=True .* train_size < 1"):
        model.train(max_epochs=1, train_size=1.0, restore_best=True)
    with pytest.raises(ValueError, match="check_val_every_n_epoch=5 .* max_epochs=3"):
        model.train(max_epochs=3, early_stopping=True, check_val_every_n_epoch=5)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="accelerator='gpu' asks for a GPU.*'cpu'"):
            model.train(max_epochs=1, accelerator="gpu")
    if not torch.backends.mps.is_available():  # Lightning's MisconfigurationException
        with pytest.raises(ValueError, match="accelerator='mps' asks for Apple's GPU.*'cpu'"):
            model.train(max_epochs=1, accelerator="mps")
    # "no" (a string: true) shuffled the split; torch's "cuda:1" failed in Lightning, whose
    # "`devices` selected with `CPUAccelerator` should be an int > 0" named no fix.
    with pytest.raises(ValueError, match="shuffle_set_split must be True or False, got 'no'"):
        model.train(max_epochs=1, shuffle_set_split="no")
    said = r"devices='cuda:1' names a torch device; .* accelerator='gpu', devices=\[1\]"
    with pytest.raises(ValueError, match=said):
        model.train(max_epochs=1, devices="cuda:1")
    with pytest.raises(ValueError, match=r"device='cpu' names .* pass accelerator='cpu'\.$"):
        model.train(max_epochs=1, device="cpu")
    # Lightning's AttributeErrors: "'str' object has no attribute 'on_exception'" ...
    from lightning.pytorch.callbacks import EarlyStopping

    for wrong, said in (
        ({"callbacks": "foo"}, r"callbacks takes one Lightning callback .*got 'foo'"),
        ({"callbacks": [EarlyStopping]}, r"pass an instance, EarlyStopping\(\.\.\.\)"),
        ({"logger": "csv"}, r"logger='csv': Lightning takes a logger object"),
        ({"max_time": 60}, r"max_time=60 is no duration .*'DD:HH:MM:SS'"),
        ({"max_steps": 0}, r"max_steps=0 trains no step"),
        ({"shuffle_block_size": 60}, r"shuffle_block_size=60 leaves the 108 training cells fewer"),
        ({"min_epochs": 5}, r"min_epochs=5 is more than max_epochs=1"),
    ):
        with pytest.raises(ValueError, match=said):
            model.train(max_epochs=1, **wrong)
    # Lightning: "invalid accelerator name" for "cuda:0"; ModuleNotFoundError for a TPU.
    said = r"accelerator='cuda:0' names a torch device; .* accelerator='gpu', device=\[0\]"
    with pytest.raises(ValueError, match=said):
        model.train(max_epochs=1, accelerator="cuda:0")
    # Lightning: "invalid accelerator name ... Available names are: auto, tpu, cuda, mps, cpu".
    for wrong, meant in (("CPU", "cpu"), ("Auto", "auto"), ("cpuu", "cpu")):
        said = (
            rf"accelerator='{wrong}' is not an accelerator Lightning knows: did you mean '{meant}'"
        )
        with pytest.raises(ValueError, match=said):
            model.train(max_epochs=1, accelerator=wrong)
    # Lightning: "`devices` selected with `CPUAccelerator` should be an int > 0"; True: 1.
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"devices=\[0\] picks GPUs, .* leave devices out"):
            model.train(max_epochs=1, accelerator="cpu", devices=[0])
    for wrong in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"device={wrong} is not a number of devices"):
            model.train(max_epochs=1, device=wrong)
    if importlib.util.find_spec("torch_xla") is None:
        with pytest.raises(ValueError, match=r"accelerator='tpu' .*torch_xla.* not installed"):
            model.train(max_epochs=1, accelerator="tpu")
    assert not model.is_trained_
    # CGMDVAE keeps the best epoch only where there are validation cells ("auto").
    dv.model.CGMDVAE.setup_anndata(adata)
    cgm = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    with pytest.raises(ValueError, match="'y_term_validation' or 'z_term_validation'"):
        cgm.train(max_epochs=2, early_stopping=True, early_stopping_monitor="y_trm_validation")
    # "10": "unsupported operand type(s) for //"; 0 blamed mixture_init_epoch=0.
    for wrong in ({"max_epochs": "10"}, {"max_epochs": 0, "mixture_init_epoch": 0}):
        with pytest.raises(ValueError, match=r"max_epochs must be a positive integer, got "):
            cgm.train(**wrong)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dv.train.NotConvergedWarning)
        # A term of the model's own is a metric it logs (found on two cells before training).
        cgm.train(
            max_epochs=2, train_size=1.0, early_stopping=True, early_stopping_monitor="d_term_train"
        )
    assert cgm.is_trained_ and cgm.best_epoch_ is None
    assert "d_term_train" in cgm.history
    # Early stopping on a training metric needs no validation cells.
    model.train(
        max_epochs=2, train_size=1.0, early_stopping=True, early_stopping_monitor="elbo_train"
    )
    assert model.is_trained_


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_several_devices_that_find_no_gpu_are_said_to_run_as_cpu_processes():
    """devices=2 with accelerator='auto' on a machine without a GPU ran two CPU processes
    (DDP over gloo) without a word; accelerator='cpu' says that is meant."""
    from deltavae.model._device_args import resolved_accelerator

    said = r"devices=2 found no GPU .* runs as that many CPU processes .* accelerator='cpu'"
    with pytest.warns(UserWarning, match=said):
        assert resolved_accelerator("auto", 2, "devices") == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolved_accelerator("cpu", 2, "devices") == "cpu"
        assert resolved_accelerator("auto", 1) == "cpu"


def test_training_without_a_logger_says_what_it_loses():
    """logger=False (benchmarks/transfer.py had it) silently dropped the history, best_epoch_
    and the convergence check: a run still improving passed as converged."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, **SMALL)
    dv.model.CGMDVAE.setup_anndata(adata)
    cgm = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    for m in (model, cgm):
        with pytest.warns(UserWarning, match="logger=False keeps no training history") as seen:
            m.train(max_epochs=2, logger=False, enable_progress_bar=False)
        assert seen[0].filename == __file__  # the warning points at the user's call
        assert m.is_trained_


def test_load_names_how_to_put_reordered_genes_in_order(tmp_path):
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.save(tmp_path / "vae")
    backwards = adata[:, ::-1].copy()
    # In memory, read on a copy in the training order (as model.adata = backwards reads it).
    with pytest.warns(UserWarning, match=r"another order \(20 moved.*reads a copy"):
        reordered = dv.model.ZINBVAE.load(tmp_path / "vae", backwards)
    np.testing.assert_array_equal(
        reordered.get_latent_representation(), model.get_latent_representation()
    )
    reordered.write_to_adata()  # into the AnnData given
    np.testing.assert_array_equal(backwards.obsm["X_zinbvae"], model.get_latent_representation())
    assert list(backwards.var_names) == list(adata.var_names[::-1])
    # A pathlib.Path, as save and load take: scvi-tools read it as a model ('PosixPath' object
    # has no attribute '_get_user_attributes').
    fixed = dv.model.ZINBVAE.prepare_query_anndata(backwards, tmp_path / "vae", inplace=False)
    # scvi-tools reordered the given AnnData in place too, inplace=False or not.
    assert list(backwards.var_names) == list(adata.var_names[::-1])
    loaded = dv.model.ZINBVAE.load(tmp_path / "vae", fixed)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), rtol=1e-5
    )
    with pytest.raises(ValueError, match="pass the training genes .*load_query_data"):
        dv.model.ZINBVAE.load(tmp_path / "vae", adata[:, 1:].copy())
    # A backed file: prepare_query_anndata cannot copy it (anndata's "pass a filename"); a
    # backed copy in the saved order stays on disk.
    backwards.write_h5ad(tmp_path / "backwards.h5ad")
    on_disk = ad.read_h5ad(tmp_path / "backwards.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"adata\[:, torch.load.*\['var_names'\]\].copy\(filen"):
        dv.model.ZINBVAE.load(tmp_path / "vae", on_disk)
    with pytest.raises(ValueError, match=r"adata is backed: .*copy\(filename="):
        dv.model.ZINBVAE.prepare_query_anndata(on_disk, str(tmp_path / "vae"), inplace=False)
    # inplace=True (the default) failed inside anndata ('To copy an AnnData object in backed
    # mode, pass a filename'; with genes missing 'scipy.sparse does not support dtype object').
    with pytest.raises(ValueError, match=r"backed and its genes are in another order.*load_qu"):
        dv.model.ZINBVAE.prepare_query_anndata(on_disk, tmp_path / "vae")
    adata[:, 2:].copy().write_h5ad(tmp_path / "fewer.h5ad")
    fewer = ad.read_h5ad(tmp_path / "fewer.h5ad", backed="r")
    for inplace in (True, False):
        with pytest.raises(ValueError, match=r"lacks 2 of the reference's 20 genes.*to_memory"):
            dv.model.ZINBVAE.prepare_query_anndata(fewer, tmp_path / "vae", inplace=inplace)
    fewer.file.close()
    adata.write_h5ad(tmp_path / "same.h5ad")  # the reference's genes: nothing to do in place
    same = ad.read_h5ad(tmp_path / "same.h5ad", backed="r")
    assert dv.model.ZINBVAE.prepare_query_anndata(same, tmp_path / "vae") is None
    with pytest.raises(ValueError, match=r"already the reference's, in its order.*load_query"):
        dv.model.ZINBVAE.prepare_query_anndata(same, tmp_path / "vae", inplace=False)
    same.file.close()
    genes = torch.load(tmp_path / "vae" / "model.pt", weights_only=False)["var_names"]
    ordered = on_disk[:, list(genes)].copy(filename=tmp_path / "ordered.h5ad")
    assert ordered.isbacked
    np.testing.assert_allclose(
        dv.model.ZINBVAE.load(tmp_path / "vae", ordered).get_latent_representation(),
        model.get_latent_representation(),
        rtol=1e-5,
    )


@pytest.mark.filterwarnings("ignore::UserWarning")  # two epochs: archetypes merged, on load too
def test_reordered_genes_advice_works_for_the_spot_models(tmp_path):
    """NMFDeconv and Archetypes were told to call prepare_query_anndata, which they lack."""
    import torch

    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=30, n_clusters=3, seed=0)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=1)
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes=3)
    model.train(max_epochs=2, enable_progress_bar=False)
    model.save(tmp_path / "arch")
    backwards = spots[:, ::-1].copy()
    with pytest.warns(UserWarning, match=r"in another order \(30 moved"):  # in memory: a copy
        dv.model.Archetypes.load(tmp_path / "arch", backwards)
    backwards.write_h5ad(tmp_path / "backwards.h5ad")
    on_disk = ad.read_h5ad(tmp_path / "backwards.h5ad", backed="r")
    advice = r"adata = (adata\[:, torch\.load\(.*\]\]\.copy\(filename=.*\))\."
    with pytest.raises(ValueError, match=advice) as err:
        dv.model.Archetypes.load(tmp_path / "arch", on_disk)
    assert "prepare_query_anndata" not in str(err.value)
    line = re.search(advice, str(err.value)).group(1)  # the advice, run as given
    line = line.replace("'in_training_order.h5ad'", repr(str(tmp_path / "ordered.h5ad")))
    loaded = dv.model.Archetypes.load(
        tmp_path / "arch", eval(line, {"torch": torch, "adata": on_disk})
    )
    np.testing.assert_allclose(
        loaded.get_archetype_profiles(), model.get_archetype_profiles(), rtol=1e-6
    )


def test_a_second_model_on_the_same_anndata_trains_on_its_own_setup():
    """Two models set up on one AnnData with different batch columns: a read call of the first
    writes its codes into the registered columns (scvi-tools' transfer); the second must train
    on its own (before: 5 batch codes read by a model of 2, a crash in one_hot; the other way
    round, silently the first model's batches)."""
    adata = _cells()
    adata.obs["five"] = pd.Categorical(np.arange(adata.n_obs) % 5)
    adata.obs["two"] = pd.Categorical(np.arange(adata.n_obs) % 2)
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="five")
    first = dv.model.ZINBVAE(adata, **SMALL)
    first.train(max_epochs=1, batch_size=64)
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="two")
    second = dv.model.ZINBVAE(adata, **SMALL)
    first.get_latent_representation()  # registers the AnnData for the first model again
    assert adata.obs["_scvi_batch"].nunique() == 5
    second.train(max_epochs=1, batch_size=64)
    np.testing.assert_array_equal(adata.obs["_scvi_batch"], adata.obs["two"].cat.codes)
    latent = first.get_latent_representation()
    assert latent.shape == (adata.n_obs, SMALL["n_latent"])
    # Registered again for the first: numpy's global draws left as they were (a seeded
    # differential expression drew other cells after another model's setup).
    second.get_latent_representation()
    np.random.seed(0)  # noqa: NPY002
    first.get_latent_representation()
    assert np.random.rand() == pytest.approx(0.5488135)  # noqa: NPY002 (seed 0's first)
    # Its categories reordered in place (the values kept): scvi-tools set the first up anew
    # from them, and it read each batch under another's code, silently.
    adata.obs["five"] = adata.obs["five"].cat.reorder_categories([4, 3, 2, 1, 0])
    second.get_latent_representation()
    np.testing.assert_allclose(first.get_latent_representation(), latent, rtol=1e-5)
    mapping = first.registry_["field_registries"]["batch"]["state_registry"]
    assert list(mapping["categorical_mapping"]) == [0, 1, 2, 3, 4]
    adata.obs["five"] = adata.obs["five"].cat.reorder_categories([0, 1, 2, 3, 4])
    # The first's column removed while the second held the AnnData: scvi-tools' KeyError,
    # then 'AnnData object not registered' at every later call, the column restored too.
    five = adata.obs.pop("five")
    second.get_latent_representation()
    with pytest.raises(ValueError, match=r"Restore what the model was set up with \(batch_key="):
        first.get_latent_representation()
    adata.obs["five"] = five
    np.testing.assert_allclose(first.get_latent_representation(), latent, rtol=1e-5)
    # Their latents into one AnnData by default keys: the first's replaced, said.
    first.write_to_adata()
    with pytest.warns(UserWarning, match=r"X_zinbvae'\], written before by another ZINBVAE"):
        second.write_to_adata()
    # A model built on it after scvi-tools' SCVI was set up on it (its codes in
    # obs['_scvi_batch']) was refused: "adata.obs['two'] changed after setup_anndata".
    scvi.model.SCVI.setup_anndata(adata, batch_key="five")
    third = dv.model.ZINBVAE(adata, **SMALL)
    np.testing.assert_array_equal(adata.obs["_scvi_batch"], adata.obs["two"].cat.codes)
    assert third.summary_stats.n_batch == 2


def test_a_model_on_a_file_says_to_save_rather_than_pickle(tmp_path):
    """Pickling or copying a model that reads a backed or read_lazy AnnData failed inside
    h5py ('h5py objects cannot be pickled'), with nothing about save / load."""
    import copy

    adata = _cells()
    del adata.layers["counts"]  # X holds them: read_lazy keeps X on disk
    adata.write_h5ad(tmp_path / "cells.h5ad")
    lazy = dv.read_lazy(tmp_path / "cells.h5ad")
    dv.model.ZINBVAE.setup_anndata(lazy)
    model = dv.model.ZINBVAE(lazy, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    for copying in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match=r"reads its AnnData from a file .* model.save\(path\)"):
            copying(model)


@pytest.fixture(scope="module")
def conditional():
    adata = _cells()
    adata.obs["stim"] = adata.obs["condition"].astype(str) == adata.obs["condition"].iloc[0]
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="stim")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=2, mixture_init="kmeans")
    return model, adata


def test_indices_a_scanpy_user_passes_are_read_or_refused_by_name(conditional):
    """scvi-tools read a mask of another length as positions (other cells, no word); names,
    slices, np.where's tuple and an all-False mask ended in numpy, scipy or torch errors."""
    model, adata = conditional
    mask = (adata.obs["stim"]).to_numpy()
    np.testing.assert_allclose(
        model.get_latent_representation(indices=mask),
        model.get_latent_representation(indices=np.flatnonzero(mask)),
    )
    # A list of booleans ([s == "x" for s in ...]) over more cells than a minibatch failed
    # in scipy or numpy ("bool index 0 has shape (120,) instead of (16,)").
    listed = model.get_normalized_expression(indices=mask.tolist(), batch_size=16)
    assert listed.index.equals(adata.obs_names[mask])
    np.testing.assert_allclose(  # another minibatch size sums in another order: 1e-7 apart
        model.get_latent_representation(indices=mask.tolist(), batch_size=16),
        model.get_latent_representation(indices=mask),
        rtol=1e-5,
        atol=1e-6,
    )
    half = mask[: adata.n_obs // 2]
    for method in (model.get_latent_representation, model.get_normalized_expression):
        with pytest.raises(ValueError, match=r"boolean mask of 60 entries, but the AnnData has"):
            method(indices=half)
    with pytest.raises(ValueError, match="selects no cell"):
        model.get_latent_representation(indices=np.zeros(adata.n_obs, dtype=bool))
    refused = {
        "names such as 'cell_0'.*obs_names.get_indexer": list(adata.obs_names[:3]),
        r"np.where\(mask\)\[0\]": np.where(mask),
        "a slice": slice(0, 10),
        "float64 values": np.array([0.0, 1.0]),
    }
    for message, indices in refused.items():
        with pytest.raises(TypeError, match=message):
            model.get_latent_representation(indices=indices)


def test_the_aggregated_posteriors_indices_are_checked_as_every_read_outs(conditional):
    """get_aggregated_posterior read len(indices) before the read-outs' check: one position
    or a generator ended in "object of type 'int' has no len()". An empty selection (a mask
    that selects no cell, as positions) gave every cell's posterior, as in scvi-tools, where
    get_latent_representation(indices=[]) refuses it: refused here too."""
    model, adata = conditional
    for indices in (5, np.int64(3)):
        with pytest.raises(ValueError, match="indices must be one-dimensional; got shape"):
            model.get_aggregated_posterior(indices=indices)
    for empty in ([], np.flatnonzero(np.zeros(adata.n_obs, dtype=bool))):
        with pytest.raises(ValueError, match=r"indices selects no cell; .*\(or None for all\)"):
            model.get_aggregated_posterior(indices=empty)
    assert model.get_aggregated_posterior().mixture_distribution.logits.shape == (adata.n_obs,)
    assert model.get_aggregated_posterior(indices=[0, 2]).mixture_distribution.logits.shape == (2,)


def test_a_generator_or_a_set_of_indices_is_refused_by_type(conditional):
    """A generator (or a frozenset) was read as one position: "indices must be
    one-dimensional; got shape () (one position, <generator ...>): pass [<generator ...>]
    for that cell alone"; a set was told only what to pass instead."""
    model, _ = conditional
    for read in (model.get_latent_representation, model.get_aggregated_posterior):
        with pytest.raises(TypeError, match=r"got a generator, read once .* \(pass list\(ind"):
            read(indices=(i for i in range(3)))
        with pytest.raises(TypeError, match=r"got a map, read once and of no length"):
            read(indices=map(int, "012"))
        for unordered in ({1, 2}, frozenset({1, 2})):
            with pytest.raises(TypeError, match=r"which has no order \(pass sorted\(indices\)"):
                read(indices=unordered)


def test_sampled_conditions_keep_the_training_columns_type(conditional):
    model, adata = conditional
    drawn = model.sample(20, condition=True, seed=0)
    assert drawn.obs["stim"].dtype == bool and drawn.obs["stim"].all()
    both = model.sample(40, seed=0).obs["stim"]
    assert set(both) <= {True, False} and both.dtype == bool
    categorical = _cells()
    dv.model.CGMDVAE.setup_anndata(categorical, condition_key="condition")
    cat_model = dv.model.CGMDVAE(categorical, n_clusters=2, **SMALL)
    cat_model.train(max_epochs=1, mixture_init="kmeans")
    column = cat_model.sample(10, seed=0).obs["condition"]
    assert list(column.cat.categories) == list(categorical.obs["condition"].cat.categories)


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
def test_writing_into_a_view_is_refused_rather_than_lost(cls):
    adata = _cells()
    cls.setup_anndata(adata)
    model = cls(adata, **SMALL)
    model.train(max_epochs=1)
    view_cells = (adata.obs["condition"] == adata.obs["condition"].iloc[0]).to_numpy()
    view = adata[view_cells]
    with pytest.raises(ValueError, match=r"is a view .* sub = adata\[mask\].copy\(\)"):
        model.write_to_adata(view)
    assert not [k for k in adata.obsm if not k.startswith("_")]
    sub = view.copy()
    assert model.write_to_adata(sub) and len(sub.obsm)
    # The whole AnnData of a model trained on some of its genes (highly variable ones) was
    # refused ("genes it does not know"), and the view that refusal advised was refused next.
    extra = ad.AnnData(sparse.csr_matrix(np.ones((adata.n_obs, 1), dtype=np.float32)))
    extra.obs_names, extra.var_names = adata.obs_names, ["not_in_the_model"]
    whole = ad.concat([extra, adata], axis=1, merge="first")  # another gene order too
    keys = model.write_to_adata(sub)
    assert model.write_to_adata(whole) == keys
    assert whole.n_vars == adata.n_vars + 1
    for key in keys:
        slot, name = key.split("/", 1)
        if slot == "obsm":
            np.testing.assert_allclose(whole.obsm[name][view_cells], sub.obsm[name], atol=1e-5)
        elif slot == "obs":
            assert list(whole.obs[name][view_cells]) == list(sub.obs[name])
            assert whole.obs[name].dtype == sub.obs[name].dtype  # categorical kept
    with pytest.raises(ValueError, match=r"view of some genes .* Pass the whole AnnData"):
        model.write_to_adata(whole[:, model.adata.var_names])


def test_condition_categories_no_cell_carries_are_warned_at_setup():
    """Categories no cell carries (an order set for plots, pd.Categorical(values, categories=
    [...]), or a factor's levels in a file written from R; anndata's subsets drop them):
    setup registered them without a word, the networks grew a column for each (the latent
    differed from the same cells set up without them: 6.3 at most on Kang's 600 cells) and
    read-outs refused them only later, while a category of 1 or 2 cells was warned of."""
    first = _cells()
    names = list(first.obs["condition"].cat.categories)
    first.obs["condition"] = first.obs["condition"].cat.add_categories(["IFN-gamma"])
    plates = np.arange(first.n_obs) % 2
    first.obs["plate"] = pd.Categorical.from_codes(plates, ["p1", "p2", "p3"])
    line = r"Drop them before setup_anndata: adata.obs\['{0}'\] = adata.obs\['{0}'\]\.cat\."
    with pytest.warns(UserWarning, match="no cell carries") as record:
        dv.model.ZINBVAE.setup_anndata(
            first, batch_key="condition", categorical_covariate_keys="plate"
        )
    messages = [str(w.message) for w in record if "no cell carries" in str(w.message)]
    assert len(messages) == 2 and [w.filename for w in record][0] == __file__
    assert "adata.obs['condition'] has categories no cell carries (['IFN-gamma'])" in messages[0]
    assert re.search(line.format("condition"), messages[0])
    assert "(['p3'])" in messages[1] and re.search(line.format("plate"), messages[1])
    assert dv.model.ZINBVAE(first, **SMALL).summary_stats.n_batch == 3  # the empty one counted
    with pytest.warns(UserWarning, match=r"adata.obs\['condition'\] .* \(\['IFN-gamma'\]\)"):
        dv.model.CGMDVAE.setup_anndata(first, condition_key="condition")
    for key in ("condition", "plate"):  # the advice: set up again without a word
        first.obs[key] = first.obs[key].cat.remove_unused_categories()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dv.model.ZINBVAE.setup_anndata(
            first, batch_key="condition", categorical_covariate_keys="plate"
        )
    assert dv.model.ZINBVAE(first, **SMALL).summary_stats.n_batch == len(names)
    # A labels column's unused categories are named once, by the labels' own warning.
    first.obs["label"] = pd.Categorical(first.obs["cluster"].astype(str), ["0", "1", "gone"])
    with pytest.warns(UserWarning, match="no cell carries") as record:
        dv.model.CGMDVAE.setup_anndata(first, condition_key="condition", labels_key="label")
    assert len([w for w in record if "no cell carries" in str(w.message)]) == 1


def test_categories_that_are_one_name_typed_two_ways_are_warned_at_setup():
    """'ctrl' and 'Ctrl ' in one condition column (two sample sheets merged), 'B cell' and
    'B cell ' in the labels, '1' and '1.0' as batches: setup registered each as a category of
    its own without a word, so the model learned a condition effect, a batch or a cell type
    between two names of one. The unlabelled mark is left out; the line given merges them."""
    adata = _cells()
    adata.obs["stim"] = adata.obs["condition"].astype(str)
    adata.obs.loc[adata.obs_names[:5], "stim"] = "Ctrl "
    adata.obs["ct"] = np.where(adata.obs["cluster"].astype(str) == "0", "B cell", "T cell")
    adata.obs.loc[adata.obs_names[5:9], "ct"] = "B cell "
    adata.obs.loc[adata.obs_names[9:40], "ct"] = "Unknown"
    adata.obs.loc[adata.obs_names[40:45], "ct"] = "unknown"  # the mark's look-alike: its own
    adata.obs["plate"] = np.where(np.arange(adata.n_obs) % 3, "1", "1.0")
    with pytest.warns(UserWarning, match="differ only in case") as record:
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="stim", labels_key="ct")
    messages = [str(w.message) for w in record if "differ only in case" in str(w.message)]
    assert len(messages) == 2 and record[0].filename == __file__
    counts = adata.obs["stim"].value_counts()
    assert f"'Ctrl ' (5) beside 'ctrl' ({counts['ctrl']})" in messages[0]
    assert "'B cell ' (4) beside 'B cell'" in messages[1] and "unknown" not in messages[1]
    assert "a cell type of its own" in messages[1]
    before = adata.copy()
    exec(messages[0].split("before setup_anndata: ")[1].rstrip("."), {"adata": adata})
    assert adata.obs["stim"].value_counts()["ctrl"] == counts["ctrl"] + 5
    assert (before.obs["stim"] == "stim").equals(adata.obs["stim"] == "stim")
    with pytest.warns(UserWarning, match=r"'1\.0' \(40\) beside '1' \(80\)"):
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="plate")
    adata.obs["ct"] = adata.obs["ct"].str.strip()
    with warnings.catch_warnings():  # the advice followed: set up without a word of it
        warnings.simplefilter("error")
        dv.model.CGMDVAE.setup_anndata(
            adata, condition_key="stim", labels_key="ct", unlabeled_category="Unknown"
        )
