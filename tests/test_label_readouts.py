"""CGMDVAE's label and condition read-outs as a user's columns hold them: integer labels,
the condition of predicted cells, the cells of a test split, and the advice of
predict_perturbation's refusals."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scvi

import deltavae as dv

SMALL = {"n_hidden": 16, "n_latent": 4}
FAST = {"enable_progress_bar": False, "mixture_init": "kmeans"}


def _cells(n_conditions=2, n_cells=120):
    return dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=20, n_clusters=2, n_conditions=n_conditions, seed=0
    )


def _integer_labelled_model():
    """Cells with integer labels 1 and 2, a third unlabelled (-1, as for scANVI), and a
    CGMDVAE trained one epoch on them."""
    adata = _cells()
    codes = adata.obs["cluster"].cat.codes.to_numpy().astype(int) + 1
    adata.obs["semi"] = np.where(np.arange(adata.n_obs) % 3 == 0, -1, codes)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="semi", unlabeled_category=-1)
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, **FAST)
    return adata, model


def test_integer_labels_are_integers_in_every_read_out_and_may_all_be_labelled():
    """With integer labels (-1 unlabelled, as for scANVI), predict_labels gave 1, 2 but
    write_to_adata's cluster column and sample's gave '1', '2', which never equal the user's
    column; and integer labels without unlabelled cells (supervised) were refused."""
    adata, model = _integer_labelled_model()
    model.write_to_adata()
    clusters, labels = adata.obs["cgmdvae_cluster"], model.predict_labels()["label"]
    assert labels.cat.categories.tolist() == [c for c in [1, 2] if c in set(labels)]
    assert clusters.cat.categories.dtype.kind == "i"  # those that hold cells: 1, 2 or both
    assert (clusters.to_numpy() == labels.to_numpy()).all()
    assert model.sample(4, seed=0).obs["cluster"].cat.categories.dtype.kind == "i"
    # An integer cluster names the label: cluster=1 drew label 2's cells (index 1).
    assert (model.sample(4, cluster=1, seed=0).obs["cluster"] == 1).all()
    with pytest.raises(ValueError, match=r"cluster=0 is not one of the clusters \['1', '2'\]"):
        model.sample(4, cluster=0)
    codes = adata.obs["cluster"].cat.codes.to_numpy().astype(int) + 1
    adata.obs["full"] = codes  # every cell labelled: supervised
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="full")
    full = dv.model.CGMDVAE(adata, **SMALL)
    state = full.registry_["field_registries"]["labels"]["state_registry"]
    assert full.label_names == ["1", "2"] and state["unlabeled_category"] == -1
    adata.obs["minus"] = np.where(codes == 1, -1, 2)  # -1 as a label: a look-alike mark
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="minus")
    with pytest.warns(UserWarning, match=r"labels hold -1, .*unlabeled_category=-1 to setup"):
        dv.model.CGMDVAE(adata, **SMALL)


def test_condition_key_refused_for_translate_names_the_default_and_what_to_pass():
    """predict_perturbation(condition_key=...) without method said condition_key applies to
    latent_shift or nearest_response only, not that translate was the method it ran."""
    adata = _cells()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    ctrl = adata[adata.obs["condition"] == "ctrl"]
    with pytest.raises(
        ValueError,
        match=r"CGMDVAE's default method is 'translate'\. Pass method='latent_shift' or "
        r"'nearest_response' to use condition_key, .*target_condition=\{'condition': 'stim'\}",
    ):
        model.predict_perturbation(ctrl, "stim", condition_key="condition")
    with pytest.raises(ValueError, match=r"only; not to method='latent_shift'\. Pass method="):
        model.predict_perturbation(ctrl, "stim", method="latent_shift", residual=True)


def test_the_cells_of_a_test_split_count_as_untrained_everywhere(tmp_path):
    """A condition held out whole in the test split (external_indexing) was recorded as
    trained, so its cells were read with an untrained condition; and translate's observed
    responses, counting test cells, failed ('use method="translate"', to translate) where
    the target's cells were all held out, instead of translating by the model alone."""
    adata = _cells(n_conditions=3)
    held = np.flatnonzero(adata.obs["condition"] == "c2")
    rest = np.flatnonzero(adata.obs["condition"] != "c2")
    split = {"external_indexing": [rest[:-10], rest[-10:], held]}
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, datasplitter_kwargs=split, **FAST)
    with pytest.raises(ValueError, match=r"holds \['c2'\]: .*validation and test cells do not"):
        model.get_latent_representation(adata[held])
    # Trained on every condition, then trained on with c2's cells held out of the fit.
    model.train(max_epochs=1, **FAST)
    model.save(tmp_path / "m")
    again = dv.model.CGMDVAE.load(tmp_path / "m", adata=adata.copy())
    again.train(max_epochs=1, mixture_init_epoch=None, datasplitter_kwargs=split, **FAST)
    c0 = adata[adata.obs["condition"] == "c0"].copy()
    with pytest.warns(UserWarning, match=r"translate's default \(response_weight=None.*'c2'"):
        out = again.translate(c0, "c2", seed=0)
    assert out.uns["response_weight"] == 0.0 and (out.obs["condition"] == "c2").all()


def test_predicted_conditions_take_the_models_categories_and_the_users_dtype(tmp_path):
    """A model loaded onto its controls alone (a file of their own, one category) typed
    translate's condition over that category plus the target (['hi', 'lo'], the training
    column's ['lo', 'mid', 'hi'] lost); loaded with its saved AnnData, whose strings h5ad
    made categories, it gave categorical conditions for the user's strings."""
    adata = _cells(n_conditions=3)
    names = {"c0": "lo", "c1": "mid", "c2": "hi"}
    adata.obs["dose"] = pd.Categorical(adata.obs["condition"].map(names), ["lo", "mid", "hi"])
    adata.obs["plate"] = np.tile(["p1", "p2"], adata.n_obs // 2)  # strings, as a user holds them
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=["dose", "plate"])
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    model.train(max_epochs=1, **FAST)
    model.save(tmp_path / "m", save_anndata=True)
    hi = adata[adata.obs["dose"] == "hi"].copy()
    hi.obs["dose"] = hi.obs["dose"].cat.remove_unused_categories()
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata=hi)
    out = loaded.translate(hi, {"dose": "lo"}, response_weight=0, seed=0)
    assert out.obs["dose"].cat.categories.tolist() == ["lo", "mid", "hi"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the saved AnnData's own notes
        saved = dv.model.CGMDVAE.load(tmp_path / "m")
    assert isinstance(saved.adata.obs["plate"].dtype, pd.CategoricalDtype)  # h5ad's
    sampled = saved.sample(6, seed=0)
    assert sampled.obs["plate"].dtype == object
    assert sampled.obs["dose"].cat.categories.tolist() == ["lo", "mid", "hi"]
    moved = saved.translate(hi, {"plate": "p1"}, response_weight=0, seed=0)
    assert moved.obs["plate"].dtype == object and (moved.obs["plate"] == "p1").all()


def test_cluster_probabilities_read_an_integer_as_an_integer_labels_name():
    """With integer labels 1, 2 (the cluster column's values), clusters=[1] drew label 2's
    probability, column 1, as sample(cluster=1) drew its cells."""
    import anndata as ad
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((20, 2), dtype=np.float32))
    adata.obsm["cgmdvae_cluster_probs"] = rng.dirichlet([1, 1, 1], 20).astype(np.float32)
    adata.obsm["X_umap"] = rng.normal(size=(20, 2))
    adata.uns["cgmdvae"] = {"cluster_names": np.array(["1", "2", "novel_0"], dtype=object)}
    axes = dv.pl.cluster_probabilities(adata, clusters=[1, "novel_0"], show=False)
    assert [ax.get_title() for ax in axes[1:]] == ["P(cluster 1)", "P(cluster novel_0)"]
    shown = np.asarray(axes[1].collections[0].get_array())
    np.testing.assert_allclose(np.sort(shown), np.sort(adata.obsm["cgmdvae_cluster_probs"][:, 0]))
    with pytest.raises(KeyError, match=r"cluster 0 is not one of the clusters"):
        dv.pl.cluster_probabilities(adata, clusters=[0], show=False)
    plt.close("all")


def test_integer_labels_with_missing_values_are_advised_an_integer_mark():
    """Integer ids with NaN (floats after a merge) were told to become strings with NaN as
    'Unknown': labels '1.0', '2.0', which no prediction equals; now an integer mark."""
    adata = _cells()
    ids = adata.obs["cluster"].cat.codes.to_numpy().astype(float) + 1
    ids[::3] = np.nan
    adata.obs["ids"] = ids
    fix = r"\.astype\(float\)\.fillna\(-1\)\.astype\(int\), and pass unlabeled_category=-1"
    with pytest.raises(ValueError, match=r"40 missing values \(NaN\) among integer labels.*" + fix):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="ids")
    adata.obs["ids"] = adata.obs["ids"].astype(float).fillna(-1).astype(int)  # as advised
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="ids", unlabeled_category=-1)
    assert dv.model.CGMDVAE(adata, **SMALL).label_names == ["1", "2"]


def test_cells_without_a_label_are_unlabelled_not_a_label_nan(tmp_path):
    """New cells whose label is missing (NaN) were warned of as carrying a label 'nan' the
    model was not trained with, and a load refused them the same way."""
    adata = _cells()
    types = adata.obs["cluster"].astype(str).to_numpy().astype(object)
    types[::3] = "Unknown"
    adata.obs["type"] = types
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, **FAST)
    new = adata.copy()
    new.obs["type"] = new.obs["type"].where(np.arange(new.n_obs) % 2 == 0)  # half missing
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read as unlabelled, with nothing to warn of
        predicted = model.predict_labels(new)
    np.testing.assert_array_equal(predicted["label"], model.predict_labels()["label"])
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"holds 60 missing labels \(NaN\)\. Mark those cells"):
        dv.model.CGMDVAE.load(tmp_path / "m", adata=new)


def test_whole_float_labels_are_advised_to_become_integers():
    """Labels 1.0, 2.0 (floats, no NaN) were told astype(str): labels '1.0', '2.0'."""
    adata = _cells()
    adata.obs["ids"] = adata.obs["cluster"].cat.codes.to_numpy().astype(float) + 1
    with pytest.raises(ValueError, match=r"make them integers, adata.obs\['ids'\] = .*\(int\)"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="ids")
    adata.obs["ids"] = adata.obs["ids"].astype(int)  # as advised: supervised integer labels
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="ids")
    assert dv.model.CGMDVAE(adata, **SMALL).label_names == ["1", "2"]


def test_predict_as_scanvi_labels_in_the_columns_type_and_soft_as_predict_labels():
    """SCANVI users call model.predict(adata, indices, soft, batch_size): CGMDVAE had only
    predict_labels (AttributeError). predict gives a numpy array of labels, integers for
    integer labels (comparable with the user's column) and strings once novel clusters are
    among them; soft=True the table of predict_labels(soft=True)."""
    adata, model = _integer_labelled_model()
    hard = model.predict()
    assert isinstance(hard, np.ndarray) and hard.dtype == np.int64 and set(hard) <= {1, 2}
    # trained_labels_ said ['1', '2'] of labels predict gives as 1, 2.
    assert model.trained_labels_ == [1, 2] and type(model.trained_labels_[0]) is int
    np.testing.assert_array_equal(hard, model.predict_labels()["label"].to_numpy())
    assert (hard == adata.obs["semi"].to_numpy()).any()  # compares with the user's column
    soft = model.predict(adata, indices=[5, 2], soft=True, batch_size=16)
    pd.testing.assert_frame_equal(soft, model.predict_labels(soft=True).iloc[[5, 2]])
    assert list(soft.index) == ["cell_5", "cell_2"] and list(soft.columns) == [1, 2]
    with pytest.raises(ValueError, match=r"use_posterior_mean=False: CGMDVAE predicts at"):
        model.predict(use_posterior_mean=False)
    for call in (model.predict, model.predict_labels, model.predict_clusters):
        with pytest.raises(ValueError, match=r"soft must be True or False, got 'False'"):
            call(soft="False")  # was read as True: probabilities for labels
    # predict_clusters/predict_labels take predict's order (adata, indices, soft, batch_size):
    # predict_clusters(adata, [5, 2]) said 'soft must be True or False, got [5, 2]'.
    probs = model.predict_clusters(soft=True)
    np.testing.assert_array_equal(model.predict_clusters(adata, [5, 2], True), probs[[5, 2]])
    pd.testing.assert_frame_equal(model.predict_labels(adata, [5, 2], True, 8), soft)
    with pytest.warns(FutureWarning, match=r"predict_clusters takes indices right after adata"):
        np.testing.assert_allclose(model.predict_clusters(adata, True, 16), probs, rtol=1e-5)
    with pytest.warns(FutureWarning, match=r"old order \(batch_size\).* pass batch_size=16 by"):
        pd.testing.assert_frame_equal(model.predict_labels(adata, 16), model.predict_labels())
    novel = dv.model.CGMDVAE(adata, n_clusters=3, **SMALL)
    novel.train(max_epochs=1, **FAST)
    labels = novel.predict(indices=np.arange(10))
    assert labels.dtype == object and set(labels) <= {"1", "2", "novel_0"}
    # Names as an object array, not <U as wide as the labels predicted: "uncertain" was "u".
    np.testing.assert_array_equal(labels, novel.predict_labels()["label"].to_numpy()[:10])
    labels[:2] = "uncertain"
    assert list(labels[:2]) == ["uncertain", "uncertain"]
    assert novel.predict(indices=[0]).dtype == object
    assert list(novel.predict(soft=True).columns) == ["1", "2", "novel_0"]
    assert novel.trained_labels_ == ["1", "2"]  # as predict names them beside novel_0
    query = adata[:20].copy()
    query.obs["semi"] = -1
    with pytest.warns(UserWarning, match="nothing is left to learn"):  # the same conditions
        mapped = dv.model.CGMDVAE.load_query_data(query, model)
    assert set(mapped.predict()) <= {1, 2} and mapped.predict(soft=True).shape == (20, 2)


def test_a_column_removed_after_setup_is_named_before_training():
    """Removing the labels column after setup_anndata trained silently on scvi-tools' copy of
    the removed labels; removing a condition failed in training with a bare KeyError."""
    adata = _cells()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cluster")
    model = dv.model.CGMDVAE(adata, **SMALL)
    labels = adata.obs.pop("cluster")
    removed = r"adata.obs lacks 'cluster', which CGMDVAE.setup_anndata registered: it was rem"
    with pytest.raises(ValueError, match=removed):
        model.train(max_epochs=1, **FAST)
    adata.obs["cluster"] = labels
    del adata.obs["condition"]
    with pytest.raises(ValueError, match=r"lacks 'condition', .* Restore it, or call CGMDVAE"):
        model.train(max_epochs=1, **FAST)


def test_written_cluster_names_are_typed_as_the_cluster_column_and_soft_predictions(tmp_path):
    """With integer labels, write_to_adata's uns cluster_names (the names of the columns of
    obsm cluster_probs) were strings '1', '2' while obs cgmdvae_cluster and
    predict_labels(soft=True) held the integers 1, 2: a table built from them matched none."""
    import anndata as ad

    adata, model = _integer_labelled_model()
    model.write_to_adata()
    names = adata.uns["cgmdvae"]["cluster_names"]
    assert names.tolist() == [1, 2] and names.dtype.kind == "i"
    assert names.tolist() == model.predict_labels(soft=True).columns.tolist()
    assert set(adata.obs["cgmdvae_cluster"].cat.categories) <= set(names.tolist())
    adata.write_h5ad(tmp_path / "cells.h5ad")
    written = ad.read_h5ad(tmp_path / "cells.h5ad").uns["cgmdvae"]
    assert written["cluster_names"].tolist() == [1, 2]
    assert len(written["empty_clusters"]) == (written["cluster_sizes"] == 0).sum()


def test_a_list_of_unlabelled_marks_is_told_to_become_one_mark():
    """unlabeled_category=['Unknown'] was said not to occur in the labels, though it did."""
    adata = _cells()
    adata.obs["type"] = np.where(np.arange(adata.n_obs) % 3 == 0, "Unknown", "B")
    with pytest.raises(ValueError, match=r"unlabeled_category=\['Unknown'\] is one value, .*"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category=["Unknown"])


def test_a_label_none_of_whose_cells_trained_is_warned_of():
    """A label of one cell that fell in the validation split kept a cluster of its name that
    learned no cell of it, and predictions named cells after it, without a word."""
    adata = _cells()
    types = np.where(np.arange(adata.n_obs) % 3 == 0, "Unknown", adata.obs["cluster"].astype(str))
    types[1] = "rare"
    # 'Mono', a category no cell carries, was said to have "all fallen in the validation
    # split" too (setup_anndata warns of it as unused).
    adata.obs["type"] = pd.Categorical(types, categories=[*np.unique(types), "Mono"])
    with pytest.warns(UserWarning, match=r"fewer than 3 cells .*'rare' \(1\)"):
        with pytest.warns(UserWarning, match=r"categories no cell carries \(\['Mono'\]\)"):
            dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    validation = np.array([1, 4, 7])
    train = np.setdiff1d(np.arange(adata.n_obs), validation)
    splits = {"external_indexing": [train, validation]}
    with pytest.warns(UserWarning, match=r"No labelled cell of 'rare' \(1 cell\) trained: "):
        # Cells predicted as 'Mono' are said to be a cluster given its name (one epoch: all).
        with pytest.warns(UserWarning, match=r"predicted as 'Mono': a label no cell of"):
            model.train(max_epochs=1, datasplitter_kwargs=splits, **FAST)


def test_a_label_an_earlier_fit_trained_is_not_said_to_be_untrained():
    """Trained on every cell, then again with the one 'rare' cell in the validation split:
    the second fit said 'No labelled cell of 'rare' trained', though the first had trained
    it (a condition's cells validated after an earlier fit trained them are not warned of)."""
    adata = _cells()
    types = np.where(np.arange(adata.n_obs) % 3 == 0, "Unknown", adata.obs["cluster"].astype(str))
    types[1] = "rare"
    adata.obs["type"] = types
    with pytest.warns(UserWarning, match="fewer than 3 cells"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        model.train(max_epochs=1, train_size=1.0, **FAST)
    assert model.trained_labels_ == ["0", "1", "rare"]
    validation = np.array([1, 4, 7])
    splits = {"external_indexing": [np.setdiff1d(np.arange(adata.n_obs), validation), validation]}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.train(max_epochs=1, datasplitter_kwargs=splits, **FAST)
    assert not [w for w in record if "No labelled cell" in str(w.message)]
    assert model.trained_labels_ == ["0", "1", "rare"]


def test_the_default_split_trains_a_cell_of_every_label_as_scanvis_does():
    """One labelled cell per type (scANVI's few-labels use): the default split validated a
    type's only cell (10% a cell), and its cluster learned no cell of it; scvi-tools'
    SemiSupervisedDataSplitter keeps such cells in training. Sizes and cells stay."""
    from deltavae.train import DeltaDataSplitter

    adata = _cells(n_cells=200)
    types = np.full(adata.n_obs, "Unknown", dtype=object)
    types[:20] = [f"t{i}" for i in range(20)]  # 20 labels of one cell each
    adata.obs["type"] = types
    with pytest.warns(UserWarning, match="fewer than 3 cells"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=20, **SMALL)
    splitter = DeltaDataSplitter(model.adata_manager, train_size=0.5, validation_size=0.3)
    splitter.split()
    train, val, test = splitter.train_idx, splitter.val_idx, splitter.test_idx
    assert (len(train), len(val), len(test)) == (100, 60, 40)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(200))
    assert set(range(20)) <= set(train.tolist())
    # Swapped with unlabelled cells of their conditions: each condition's share is scvi-tools'.
    plain = np.random.RandomState(seed=0).permutation(200)[60:160]
    condition = adata.obs["condition"].to_numpy()
    assert (
        pd.Series(condition[train])
        .value_counts()
        .equals(pd.Series(condition[plain]).value_counts())
    )
    # Every cell labelled: a label's only cell swaps with a cell of the largest label.
    adata.obs["all"] = np.where(np.arange(adata.n_obs) == 0, "rare", "common")
    with pytest.warns(UserWarning, match="fewer than 3 cells"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="all")
    model = dv.model.CGMDVAE(adata, **SMALL)
    for seed in range(3):
        splitter = DeltaDataSplitter(model.adata_manager, train_size=0.1)
        scvi.settings.seed = seed  # conftest sets it back to 0 for the next test
        splitter.split()
        assert 0 in splitter.train_idx and len(splitter.train_idx) == 20


def test_labels_filled_in_with_predictions_after_training_leave_read_outs_working():
    """adata.obs[labels_key] = model.predict() (scANVI's way of filling in the labels) made
    every read-out of the trained model refuse its AnnData ("changed after setup_anndata"),
    though read-outs do not read the labels; training on still says so."""
    adata = _cells()
    adata.obs["type"] = np.where(np.arange(adata.n_obs) % 3 == 0, "Unknown", adata.obs["cluster"])
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, **FAST)
    latent, predicted = model.get_latent_representation(), model.predict()
    adata.obs["type"] = predicted
    np.testing.assert_array_equal(model.get_latent_representation(), latent)
    np.testing.assert_array_equal(model.predict(), predicted)
    assert "obs/cgmdvae_cluster" in model.write_to_adata()
    with pytest.raises(ValueError, match=r"obs\['type'\] changed after setup_anndata"):
        model.train(max_epochs=1, **FAST)


def test_a_rare_label_is_told_it_can_be_unlabelled_not_only_dropped():
    """PBMC 3k with 5% of the labels kept: 'Platelet' (1 labelled cell) was told 'merge them
    into another category or drop those cells', then to relabel it 'Unknown', which with one
    labelled cell per type on purpose (few-label training) would unlabel every cell; a
    semi-supervised column is told what few labelled cells mean and how to check them. A
    rare condition, or a rare label of a fully labelled column, is told as before."""
    adata = _cells()
    types = np.where(np.arange(adata.n_obs) % 3 == 0, "Unknown", adata.obs["cluster"].astype(str))
    types[1] = "Platelet"
    adata.obs["type"] = types
    note = (
        r"^Labels with fewer than 3 cells labelled \(adata.obs\['type'\]: 'Platelet' \(1\)\): "
        r"few-label training learns each type from the unlabelled cells like its labelled "
        r"ones, .* Check the names \(model.predict\(\)\) and label a few more cells"
    )
    with pytest.warns(UserWarning, match=note) as record:
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    assert len(record) == 1
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) == 2, "d9", "d1")
    del adata.obs["type"]
    with pytest.warns(UserWarning, match=r"'d9' \(1\)\): .* drop those cells\.$"):
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="donor")
    # Integer labels, every cell labelled: the mark (-1) is one no cell carries, which a
    # later setup would not take for unlabelled unless it is named.
    adata.obs["code"] = np.where(np.arange(adata.n_obs) == 1, 7, adata.obs["cluster"].cat.codes)
    with pytest.warns(UserWarning, match=r"relabel those cells -1 and pass unlabeled_category=-1 "):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="code")


def test_label_and_cluster_columns_take_the_users_label_colours_by_name(tmp_path):
    """A model's clusters named after the labels (and a query model's label column) were
    drawn by scanpy in colours by position, not the user's uns['<labels_key>_colors']: the
    same cell type in one colour in the labels' plot and another in the clusters'."""
    import anndata as ad

    adata = _cells(n_conditions=1, n_cells=90)
    names = {"0": "T", "1": "B"}
    labels = adata.obs["cluster"].astype(str).map(names)
    adata.obs["kind"] = pd.Categorical(labels, categories=["T", "B"])  # not sorted
    adata.uns["kind_colors"] = ["#aa0000", "#0000aa"]
    by_name = {"T": "#aa0000", "B": "#0000aa"}
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="kind")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, **FAST)
    assert list(model.predict_labels(soft=True).columns) == ["T", "B"]  # the labels' order
    keys = model.write_to_adata()
    written = adata.obs["cgmdvae_cluster"].cat.categories.tolist()
    assert written == [c for c in ["T", "B"] if c in written]  # only used ones, in order
    assert "uns/cgmdvae_cluster_colors" in keys
    assert adata.uns["cgmdvae_cluster_colors"] == [by_name[c] for c in written]
    # Sampled cells: their cluster and labels columns in the labels' colours, not in those of
    # the training column named "cluster" (another clustering's).
    adata.uns["cluster_colors"] = ["#000000", "#ffffff"]
    drawn = model.sample(6, seed=0)
    for column in ("cluster", "kind"):
        categories = drawn.obs[column].cat.categories
        assert drawn.uns[f"{column}_colors"] == [by_name[c] for c in categories]
    # Colours the column has that cover it by name stand (scanpy's, or the user's own).
    adata.uns["cgmdvae_cluster_colors"] = ["#123456"] * len(written)
    assert "uns/cgmdvae_cluster_colors" not in model.write_to_adata()
    assert adata.uns["cgmdvae_cluster_colors"] == ["#123456"] * len(written)
    # A query model: its label and cluster columns take the query's own palette.
    query = adata[:30].copy()
    for key in [k for k in query.uns if k.startswith("cgmdvae")]:
        del query.uns[key]
    query.obs = query.obs[["condition", "kind"]]
    query.obs["kind"] = query.obs["kind"].cat.add_categories("Unknown")
    query.obs.iloc[::2, 1] = "Unknown"
    query.uns["kind_colors"] = ["#aa0000", "#0000aa", "#cccccc"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapped = dv.model.CGMDVAE.load_query_data(query, model)
    assert list(mapped.predict_labels(soft=True).columns) == ["T", "B"]
    path = tmp_path / "query.h5ad"
    query.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r+")
    mapped.write_to_adata(backed)
    backed.file.close()
    back = ad.read_h5ad(path)
    for column in ("cgmdvae_label", "cgmdvae_cluster"):
        categories = back.obs[column].cat.categories
        assert list(back.uns[f"{column}_colors"]) == [by_name[c] for c in categories]
    # A query without labels (no palette of its own) takes the reference's, as ingest does;
    # saved with the query model.
    del query.uns["kind_colors"], query.obs["kind"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapped = dv.model.CGMDVAE.load_query_data(query, model)
        # Built from the reference's saved directory: the same colours (it had none).
        model.save(tmp_path / "reference")
        from_saved = dv.model.CGMDVAE.load_query_data(query, tmp_path / "reference")
    mapped.save(tmp_path / "query_model")
    with pytest.warns(UserWarning, match=r"lacks 'kind', the labels column"):
        again = dv.model.CGMDVAE.load(tmp_path / "query_model", query)
    for each in (mapped, again, from_saved):
        each.write_to_adata()
        categories = query.obs["cgmdvae_label"].cat.categories
        assert query.uns["cgmdvae_label_colors"] == [by_name[c] for c in categories]
        del query.uns["cgmdvae_label_colors"], query.uns["cgmdvae_cluster_colors"]
    # Cells unknown_below marks: scanpy's grey of missing values, not a vivid new colour.
    mapped.write_to_adata(unknown_below=1.0)
    categories = query.obs["cgmdvae_label"].cat.categories
    assert "Unknown" in categories
    grey = {**by_name, "Unknown": "#d3d3d3"}
    assert query.uns["cgmdvae_label_colors"] == [grey[c] for c in categories]


def test_integer_labels_beside_novel_clusters_keep_the_users_colours_novel_ones_new():
    """Integer labels beside novel_j clusters are written as strings ('1'), which matched
    none of the user's colours (by the integers 1, 2), and a novel_j cluster holding cells
    has none: the columns got no colours at all. Labels keep theirs; novel ones get new
    colours none of the user's (scanpy's first, '#1f77b4', is the user's here)."""
    import types

    import anndata as ad

    from deltavae.model._label_colours import carry_label_colours

    obs = pd.DataFrame({"lab": pd.Categorical([-1, 1, 2])}, index=["a", "b", "c"])
    user = ["#cccccc", "#1f77b4", "#0000aa"]
    adata = ad.AnnData(np.zeros((3, 1), np.float32), obs=obs, uns={"lab_colors": user})
    model = types.SimpleNamespace(registry_={"setup_args": {"labels_key": "lab"}}, adata=None)
    written = pd.Categorical(["1", "novel_0", "2"], categories=["1", "2", "novel_0", "novel_1"])
    keys = carry_label_colours(model, adata, {"cgmdvae_cluster": written})
    assert keys == ["uns/cgmdvae_cluster_colors"]
    colours = adata.uns["cgmdvae_cluster_colors"]
    assert colours[:2] == ["#1f77b4", "#0000aa"]  # labels 1 and 2 by name
    assert colours[2:] == ["#ff7f0e", "#279e68"]  # scanpy's next, none of the user's


def test_ordered_labels_give_ordered_label_and_cluster_columns(tmp_path):
    """An ordered labels column (stages, grades): write_to_adata's cgmdvae_cluster, a query
    model's cgmdvae_label, predict_labels' label and sample's cluster and labels columns were
    unordered, so that comparisons and sorting by the stages failed on them."""
    from deltavae.model._labels import labels_of

    adata = _cells(n_conditions=1, n_cells=90)
    labels = adata.obs["cluster"].astype(str).map({"0": "late", "1": "early"})
    adata.obs["stage"] = pd.Categorical(labels, categories=["late", "early"], ordered=True)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="stage")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, **FAST)
    model.write_to_adata()
    drawn = model.sample(20, seed=0)
    columns = [adata.obs["cgmdvae_cluster"], model.predict_labels()["label"]]
    columns += [drawn.obs["cluster"], drawn.obs["stage"]]
    for column in columns:
        assert column.cat.ordered, column.name
        categories = list(column.cat.categories)
        assert categories == [c for c in ["late", "early"] if c in categories], column.name
    # A query model, its query without the labels column: the reference's order, as saved.
    query = adata[:30].copy()
    query.obs = query.obs[["condition"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(tmp_path / "reference")
        for reference in (model, tmp_path / "reference"):
            mapped = dv.model.CGMDVAE.load_query_data(query, reference)
            mapped.write_to_adata(unknown_below=0.5)
            label = query.obs["cgmdvae_label"]
            assert label.cat.ordered and list(label.cat.categories)[-1] == "Unknown"
            assert query.obs["cgmdvae_cluster"].cat.ordered
    # Beside novel clusters the categories are not the labels alone: not ordered.
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="stage")
    novel = dv.model.CGMDVAE(adata, n_clusters=3, **SMALL)
    clusters = labels_of(novel, np.array([0, 1, 2]))
    assert list(clusters.categories) == ["late", "early", "novel_0"] and not clusters.ordered


def test_ordered_label_and_cluster_columns_keep_their_scale_to_concatenate():
    """write_to_adata's cgmdvae_cluster and cgmdvae_label and predict_labels' label dropped
    the categories no cell of the AnnData held, ordered ones too: two parts written apart
    (cells predicted 'late', cells predicted 'early') had categories ['late'] and ['early'],
    and anndata.concat of them made the column object ('<' by name). An ordered column now
    keeps every label (and the mark with unknown_below), as sample's ordered columns do; an
    unordered one still holds the categories some cell holds alone."""
    import anndata as ad

    adata = _cells(n_conditions=1, n_cells=90)
    labels = adata.obs["cluster"].astype(str).map({"0": "late", "1": "early"})
    adata.obs["stage"] = pd.Categorical(labels, categories=["late", "early"], ordered=True)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="stage")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=10, **FAST)  # the two stages apart
    predicted = model.predict_labels()["label"].to_numpy()
    assert set(predicted) == {"late", "early"}
    part = adata[predicted == "late"].copy()  # cells of one predicted stage only
    scale = pd.CategoricalDtype(["late", "early"], ordered=True)
    assert model.predict_labels(part)["label"].dtype == scale
    model.write_to_adata(part)
    assert part.obs["cgmdvae_cluster"].dtype == scale
    rest = adata[predicted == "early"].copy()  # the other stage's cells
    model.write_to_adata(rest)
    both = ad.concat([part, rest])
    assert both.obs["cgmdvae_cluster"].dtype == scale
    query = part.copy()
    query.obs = query.obs[["condition"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapped = dv.model.CGMDVAE.load_query_data(query, model)
    mapped.write_to_adata(unknown_below=0.0)  # no cell under 0: the mark kept all the same
    assert query.obs["cgmdvae_label"].dtype == pd.CategoricalDtype(
        ["late", "early", "Unknown"], ordered=True
    )
    assert query.obs["cgmdvae_cluster"].dtype == scale
    assert (
        mapped.predict_labels(unknown_below=0.0)["label"].dtype == query.obs["cgmdvae_label"].dtype
    )
    # Unordered labels: the categories some cell holds alone, as before.
    adata.obs["stage"] = adata.obs["stage"].cat.as_unordered()
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="stage")
    plain = dv.model.CGMDVAE(adata, **SMALL)
    plain.train(max_epochs=1, **FAST)
    one = plain.predict_labels()["label"]
    cells = adata[(one == one.iloc[0]).to_numpy()].copy()
    plain.write_to_adata(cells)
    assert cells.obs["cgmdvae_cluster"].cat.categories.tolist() == [one.iloc[0]]


def test_sampled_ordered_columns_keep_the_training_columns_dtype_to_concatenate():
    """sample() dropped the categories no drawn cell held from ordered columns (a dose
    ['lo', 'mid', 'hi'] became ['hi']), so anndata.concat([adata, sampled]) made the column
    object: `both.obs['dose'] < 'hi'` compared names ('lo' < 'hi' False) and sorting
    followed the alphabet. Ordered labels and conditions now keep the training dtype."""
    import anndata as ad

    adata = _cells(n_conditions=3, n_cells=90)
    doses = adata.obs["condition"].map({"c0": "lo", "c1": "mid", "c2": "hi"})
    adata.obs["dose"] = pd.Categorical(doses, ["lo", "mid", "hi"], ordered=True)
    stage = adata.obs["cluster"].astype(str).map({"0": "late", "1": "early"}).astype(object)
    stage.iloc[::3] = "Unknown"
    adata.obs["stage"] = pd.Categorical(stage, ["Unknown", "late", "early"], ordered=True)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose", labels_key="stage")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, **FAST)
    drawn = model.sample(6, condition={"dose": "hi"}, cluster="late", seed=0)
    assert drawn.obs["dose"].dtype == adata.obs["dose"].dtype
    assert drawn.obs["stage"].dtype == adata.obs["stage"].dtype  # the user's order, mark first
    # The clusters, the labels' ordered scale: every label, as write_to_adata keeps them.
    assert drawn.obs["cluster"].cat.categories.tolist() == ["late", "early"]
    both = ad.concat([adata, drawn])
    for key in ("dose", "stage"):
        assert both.obs[key].dtype == adata.obs[key].dtype, key
    assert int((both.obs["dose"] < "hi").sum()) == int((adata.obs["dose"] != "hi").sum())
    # An unordered condition still holds the categories drawn alone (rank_genes_groups).
    adata.obs["dose"] = adata.obs["dose"].cat.as_unordered()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="dose")
    unordered = dv.model.CGMDVAE(adata, **SMALL)
    unordered.is_trained_ = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untrained model's notes
        lo = unordered.sample(4, condition={"dose": "lo"}, seed=0)
    assert lo.obs["dose"].cat.categories.tolist() == ["lo"]
