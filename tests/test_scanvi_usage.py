"""CGMDVAE's supervised and semi-supervised calls as a user of scvi-tools' SCANVI writes them."""

import re

import numpy as np
import pandas as pd
import pytest
import scvi

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "train_size": 1.0}
SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 16}


def _cells(n_cells=120, seed=0):
    adata = dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=20, n_clusters=2, n_conditions=2, seed=seed
    )
    adata.obs["type"] = adata.obs["cluster"].map({"0": "B", "1": "T"}).astype(str)
    return adata


def _registered(model) -> dict:
    return model.registry_["field_registries"]["labels"]["state_registry"]


def test_a_mark_no_cell_carries_trains_supervised_as_scanvi():
    """SCANVI.setup_anndata requires unlabeled_category, and scArches' reference, every cell
    labelled, passes "Unknown" for the query to carry: CGMDVAE refused it ("does not occur in
    adata.obs['type'], so no cell is unlabelled")."""
    given, omitted = _cells(), _cells()
    dv.model.CGMDVAE.setup_anndata(given, labels_key="type", unlabeled_category="Unknown")
    dv.model.CGMDVAE.setup_anndata(omitted, labels_key="type")
    model = dv.model.CGMDVAE(given, **SMALL)
    # The same registration as with the mark left out: labels, then the mark last.
    assert _registered(model)["unlabeled_category"] == "Unknown"
    assert list(_registered(model)["categorical_mapping"]) == ["B", "T", "Unknown"]
    assert model.label_names == dv.model.CGMDVAE(omitted, **SMALL).label_names == ["B", "T"]
    # Integer labels with an integer mark, as SCANVI's -1.
    ints = _cells()
    ints.obs["code"] = ints.obs["cluster"].astype(int)
    dv.model.CGMDVAE.setup_anndata(ints, labels_key="code", unlabeled_category=-1)
    assert list(_registered(dv.model.CGMDVAE(ints, **SMALL))["categorical_mapping"]) == [0, 1, -1]
    # A label spelt like another mark would train as a cell type: still refused.
    given.obs["marked"] = given.obs["type"].where(given.obs_names != given.obs_names[0], "NA")
    with pytest.raises(ValueError, match="It holds 'NA': .* pass unlabeled_category='NA'"):
        dv.model.CGMDVAE.setup_anndata(given, labels_key="marked", unlabeled_category="Unknown")
    # The query carries the reference's mark, and every cell is predicted.
    dv.model.CGMDVAE.setup_anndata(given, labels_key="type", unlabeled_category="Unknown")
    model = dv.model.CGMDVAE(given, **SMALL)
    model.train(max_epochs=2, mixture_init_epoch=None, n_epochs_kl_warmup=None, **TRAIN)
    query = _cells(n_cells=40, seed=1)
    query.obs["type"] = "Unknown"
    with pytest.warns(UserWarning, match="nothing is left to learn"):
        predicted = dv.model.CGMDVAE.load_query_data(query, model).predict()
    assert len(predicted) == 40 and set(predicted) <= {"B", "T"}


def test_a_query_marked_by_a_word_onto_integer_labels_is_told_the_reference_mark():
    """A query marking its unlabelled cells 'Unknown' onto a reference of integer labels was
    told `query.obs['code'] = query.obs['code'].astype(int)`, which fails on 'Unknown'."""
    reference = _cells()
    reference.obs["code"] = reference.obs["cluster"].astype(int)
    dv.model.CGMDVAE.setup_anndata(reference, labels_key="code", condition_key="condition")
    model = dv.model.CGMDVAE(reference, condition_alignment=0, **SMALL)
    model.train(max_epochs=1, mixture_init_epoch=None, n_epochs_kl_warmup=None, **TRAIN)
    query = _cells(n_cells=40, seed=1)
    codes = query.obs["cluster"].astype(int).to_numpy().astype(object)
    codes[::2] = "Unknown"
    query.obs["code"] = codes
    with pytest.raises(ValueError, match="marks unlabelled cells 'Unknown'") as err:
        dv.model.CGMDVAE.load_query_data(query, model)
    advice = str(err.value).split(": ")[-1].rstrip(".")
    column = "query.obs['code']"
    masked = f"{column}.astype(object).mask({column}.isin(['Unknown']), -1)"
    assert advice == f"{column} = {masked}.astype(int)"
    exec(advice, {"query": query})  # the line runs, and the query maps
    with pytest.warns(UserWarning, match="nothing is left to learn"):
        mapped = dv.model.CGMDVAE.load_query_data(query, model)
    assert mapped.predict().dtype == np.int64


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda a: dv.model.CGMDVAE(a, linear_classifier=True), "linear_classifier"),
        (lambda a: dv.model.CGMDVAE(a).train(n_samples_per_label=100), "n_samples_per_label"),
        (
            lambda a: dv.model.CGMDVAE(a).train(plan_kwargs={"classification_ratio": 50}),
            "classification_ratio",
        ),
    ],
)
def test_scanvi_arguments_are_told_cgmdvae_s_classifier_weight(call, named):
    """SCANVI's classifier settings were refused with CGMDVAE's own list of arguments, none
    of which looked like them: each now names classifier_weight, the weight of the labelled
    cells' term."""
    adata = _cells()
    labels = adata.obs["type"].to_numpy().astype(object)
    labels[::2] = "Unknown"
    adata.obs["type"] = pd.Categorical(labels)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category="Unknown")
    with pytest.raises(TypeError, match=f"{named}.*SCANVI.*classifier_weight"):
        call(adata)


def test_scanvi_history_names_are_told_cgmdvae_s():
    """history['validation_accuracy'] was answered "did you mean 'validation_loss'?", and
    SCANVI's classification loss had no pointer to CGMDVAE's classifier term."""
    adata = _cells()
    labels = adata.obs["type"].to_numpy().astype(object)
    labels[::2] = "Unknown"
    adata.obs["type"] = labels
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, mixture_init_epoch=None, n_epochs_kl_warmup=None, **TRAIN)
    with pytest.raises(KeyError, match=r"read history\['classifier_train'\]") as err:
        model.history["train_classification_loss"]
    with pytest.raises(KeyError, match="CGMDVAE does not: compare model.predict()") as err:
        model.history["validation_accuracy"]
    assert "did you mean" not in str(err.value)
    assert model.history["classifier_train"].shape == (1, 1)


def test_scanvi_s_start_from_scvi_starts_from_a_zinbvae():
    """SCANVI.from_scvi_model(vae, "Unknown"), ported, was an AttributeError naming nothing
    to do; scvi-tools' minified_data_type, which code written for its models reads, was one
    too. A ZINBVAE (deltavae's scVI) now starts the CGMDVAE as from_zinbvae does; scvi-tools'
    own SCVI is refused naming from_zinbvae and the setup to train from scratch."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=20, n_clusters=2, seed=0)
    adata.obs["type"] = adata.obs["cluster"].astype(str)
    adata.obs.loc[adata.obs_names[::2], "type"] = "Unknown"
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with pytest.raises(ValueError, match="has not been trained"):  # from_zinbvae's own check
        dv.model.CGMDVAE.from_scvi_model(vae, "Unknown", labels_key="type")
    vae.train(max_epochs=2, **TRAIN)
    started = dv.model.CGMDVAE.from_scvi_model(vae, "Unknown", labels_key="type")
    assert started.pretrained_from_ == "ZINBVAE"
    assert started.adata_manager.registry["setup_args"]["labels_key"] == "type"
    other = adata.copy()
    scvi.model.SCVI.setup_anndata(other)
    with pytest.raises(
        NotImplementedError, match=r"not from SCVI.*from_zinbvae.*unlabeled_category='Unknown'"
    ):
        dv.model.CGMDVAE.from_scvi_model(scvi.model.SCVI(other, n_latent=2), "Unknown")
    assert vae.minified_data_type is None
    dv.model.CGMDVAE.setup_anndata(other)
    assert dv.model.CGMDVAE(other, 2, n_latent=2, n_hidden=8).minified_data_type is None


def test_scanvi_predict_s_other_arguments():
    """SCANVI.predict's ig_interpretability, ig_args and dataloader were Python's bare
    "unexpected keyword argument" (ig_interpretability=False, SCANVI's default, too)."""
    adata = _cells()
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category="Unknown")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=1, mixture_init_epoch=None, n_epochs_kl_warmup=None, **TRAIN)
    hard = model.predict()
    assert (model.predict(ig_interpretability=False, ig_args={"n_steps": 5}) == hard).all()
    with pytest.raises(NotImplementedError, match="integrated gradients.*differential_expr"):
        model.predict(ig_interpretability=True)
    # A loader's minibatches, in their order: the same labels and probabilities.
    loader = model._make_data_loader(adata, indices=[7, 3, 11], batch_size=2)
    assert list(model.predict(dataloader=loader)) == list(hard[[7, 3, 11]])
    soft = model.predict(dataloader=loader, soft=True)
    by_name = model.predict(indices=[7, 3, 11], soft=True)
    assert list(soft.columns) == list(by_name.columns) and list(soft.index) == [0, 1, 2]
    np.testing.assert_allclose(soft.to_numpy(), by_name.to_numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="does not read batch_size with dataloader="):
        model.predict(dataloader=loader, batch_size=4)
    with pytest.raises(ValueError, match="adata or dataloader=, not both"):
        model.predict(adata, dataloader=loader)


def test_latent_takes_scvi_tools_data_loader_keywords():
    """SCANVI.get_latent_representation(num_workers=0) hands the keyword to its data loader;
    CGMDVAE's was Python's bare "unexpected keyword argument 'num_workers'"."""
    adata = _cells(n_cells=60)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, 2, **SMALL)
    model.train(max_epochs=1, mixture_init_epoch=None, n_epochs_kl_warmup=None, **TRAIN)
    np.testing.assert_array_equal(
        model.get_latent_representation(num_workers=0, pin_memory=False),
        model.get_latent_representation(),
    )
    with pytest.raises(TypeError, match="num_worker"):  # the loader's own check names it
        model.get_latent_representation(num_worker=0)


def test_integer_query_labels_onto_word_labels_are_told_to_map_them():
    """A query of integer labels 0, 1 onto a reference of 'B', 'T' was told
    `query.obs['type'] = query.obs['type'].astype(str)`, which makes them new labels '0', '1';
    the reverse was told astype(int), which fails on 'B'. Now told to map them."""
    reference = _cells()
    dv.model.CGMDVAE.setup_anndata(reference, labels_key="type", condition_key="condition")
    model = dv.model.CGMDVAE(reference, condition_alignment=0, **SMALL)
    model.train(max_epochs=1, mixture_init_epoch=None, n_epochs_kl_warmup=None, **TRAIN)
    query = _cells(n_cells=40, seed=1)
    query.obs["type"] = query.obs["cluster"].astype(int).to_numpy()
    with pytest.raises(ValueError, match="none of them the model's as text") as err:
        dv.model.CGMDVAE.load_query_data(query, model)
    assert "astype" not in str(err.value)
    template = r"query.obs\['type'\]\.map\(\{(\d): <the model's value for \1>, \.\.\.\}\)"
    assert re.search(template, str(err.value))  # a template that cannot run as it is
    assert "['B', 'T']" in str(err.value)  # the values to choose from
    # Labels '0', '1' of a reference of integers: astype stays the advice.
    query.obs["type"] = query.obs["cluster"].astype(str).to_numpy()
    reference.obs["type"] = reference.obs["cluster"].astype(int).to_numpy()
    dv.model.CGMDVAE.setup_anndata(reference, labels_key="type", condition_key="condition")
    model = dv.model.CGMDVAE(reference, condition_alignment=0, **SMALL)
    model.train(max_epochs=1, mixture_init_epoch=None, n_epochs_kl_warmup=None, **TRAIN)
    with pytest.raises(ValueError, match=r"query.obs\['type'\].astype\(int\)"):
        dv.model.CGMDVAE.load_query_data(query, model)
