"""What an scvi-tools user does, answered as they would expect: setup arguments a model does not
take, several devices, overwriting a save, loading onto new cells, K above the cells."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi
import torch

import deltavae as dv
import deltavae.model._train_steps as steps

SMALL = {"n_hidden": 16, "n_latent": 4}


@pytest.mark.parametrize(
    ("cls", "argument", "hint"),
    [
        (dv.model.ZINBVAE, {"continuous_covariate_keys": ["library_size"]}, "scvi.model.SCVI"),
        (dv.model.ZINBVAE, {"labels_key": "cluster"}, "CGMDVAE takes labels_key"),
        (dv.model.CGMDVAE, {"batch_key": "condition"}, "condition_key='donor'"),
        # The spot models passed them on to scvi-tools, which named none usefully, after
        # the spot index had been written into the user's obs.
        (dv.model.Archetypes, {"batch_key": "condition"}, "sample_key"),
        (dv.model.NMFDeconv, {"spot_index": True, "labels_key": "cluster"}, "from_reference"),
        (dv.model.SpatialImputer, {"labels_key": "cluster"}, "from_reference"),
        (dv.model.NMFDeconv, {"size_factor_key": "library_size"}, "takes no size factors"),
    ],
)
def test_setup_arguments_a_model_does_not_take_are_named(counts_adata, cls, argument, hint):
    columns = list(counts_adata.obs)
    unknown = next(key for key in argument if key != "spot_index")
    with pytest.raises(TypeError, match=f"unexpected argument '{unknown}'") as err:
        cls.setup_anndata(counts_adata, **argument)
    assert hint in str(err.value)
    assert list(counts_adata.obs) == columns


@pytest.mark.parametrize(
    ("cls", "argument", "hint"),
    [
        (dv.model.ZINBVAE, {"gene_likelihood": "nb"}, "ZINBVAE(adata, likelihood='nb')"),
        (dv.model.CGMDVAE, {"gene_likelihood": "nb"}, "CGMDVAE(adata, likelihood='nb')"),
        (dv.model.ZINBVAE, {"latent_distribution": "ln"}, "always normal"),
    ],
)
def test_scvi_constructor_arguments_a_model_names_otherwise(counts_adata, cls, argument, hint):
    cls.setup_anndata(counts_adata)
    with pytest.raises(TypeError, match=f"unexpected argument '{next(iter(argument))}'") as err:
        cls(counts_adata, **argument)
    assert hint in str(err.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_hiden'"):
        cls(counts_adata, n_hiden=16)  # a name scvi-tools lacks too: Python's own message


def test_several_devices_alone_train_with_ddp(counts_adata, monkeypatch):
    seen = {}

    def capture(strategy, accelerator, adata):
        seen["strategy"] = strategy
        raise RuntimeError("stop before training")

    monkeypatch.setattr(steps, "resolve_strategy", capture)
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    for devices in (2, 3):
        with pytest.raises(RuntimeError, match="stop"):
            model.train(max_epochs=1, accelerator="cpu", devices=devices)
        assert seen["strategy"] == "ddp", devices
    with pytest.raises(RuntimeError, match="stop"):
        model.train(max_epochs=1, accelerator="cpu")
    assert seen["strategy"] is None


def test_overwriting_a_save_never_pairs_the_model_with_old_data(counts_adata, tmp_path):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    first = dv.model.ZINBVAE(counts_adata, **SMALL)
    first.save(tmp_path / "m", save_anndata=True)
    small = counts_adata[:100].copy()
    dv.model.ZINBVAE.setup_anndata(small)
    second = dv.model.ZINBVAE(small, **SMALL)
    second.save(tmp_path / "m", overwrite=True)
    with pytest.raises(ValueError, match="saved without its AnnData"):
        dv.model.ZINBVAE.load(tmp_path / "m")
    loaded = dv.model.ZINBVAE.load(tmp_path / "m", small)
    assert loaded.adata.n_obs == 100


def test_loading_onto_cells_without_the_labels_column_says_what_to_do(counts_adata, tmp_path):
    counts_adata.obs["cell_type"] = counts_adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="cell_type")
    model = dv.model.CGMDVAE(counts_adata, **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.save(tmp_path / "g")
    new = counts_adata.copy()
    del new.obs["cell_type"]
    # Read as unlabelled cells, on a copy sharing new's matrices (as a query is mapped).
    with pytest.warns(UserWarning, match="lacks 'cell_type'.*every cell unlabelled \\('Unknown'"):
        loaded = dv.model.CGMDVAE.load(tmp_path / "g", new)
    assert "cell_type" not in new.obs and loaded.adata is not new
    assert (loaded.adata.obs["cell_type"] == "Unknown").all() and loaded.adata.X is new.X
    loaded.write_to_adata(new)
    assert "cgmdvae_cluster" in new.obs
    new.obs["cell_type"] = "Unknown"
    assert dv.model.CGMDVAE.load(tmp_path / "g", new).adata is new
    new.obs["cell_type"] = "Plasma"
    with pytest.raises(ValueError, match="not trained with: \\['Plasma'\\]"):
        dv.model.CGMDVAE.load(tmp_path / "g", new)


def test_more_clusters_than_cells_is_refused_before_anything_is_built(counts_adata):
    dv.model.CGMDVAE.setup_anndata(counts_adata)
    with pytest.raises(ValueError, match="more mixture components than the 300 cells"):
        dv.model.CGMDVAE(counts_adata, n_clusters=5000)
    # A large K no longer makes z as wide (full covariances cost K x n_latent^2).
    model = dv.model.CGMDVAE(counts_adata, n_clusters=200, n_hidden=16)
    assert model.module.n_latent == 64


def test_a_zinbvae_query_names_only_its_own_methods(counts_adata):
    scvi.settings.seed = 0
    dv.model.ZINBVAE.setup_anndata(counts_adata, batch_key="condition")
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    with pytest.warns(UserWarning, match="nothing is left to learn") as record:
        dv.model.ZINBVAE.load_query_data(counts_adata.copy(), model)
    message = " ".join(str(w.message) for w in record)
    assert "predict_labels" not in message and "get_latent_representation" in message


def test_non_integer_counts_name_the_cells_they_are_in(counts_adata):
    counts_adata.X = counts_adata.X.astype(np.float32)
    counts_adata.X[5, 3] = 2.5
    with pytest.raises(ValueError, match=r"2\.5 \(1 in cells 1-300\)"):
        dv.model.ZINBVAE.setup_anndata(counts_adata)


@pytest.mark.parametrize(
    ("scale", "said"),
    [
        (np.float32(1 + 1e-7), r"such as \d+\.\d{5,}.*within 0\.001 of whole numbers.*np\.rint"),
        (np.float32(0.93), r"ambient RNA \(e\.g\. SoupX\).*np\.rint"),
    ],
)
def test_counts_that_are_not_whole_get_the_fix_for_counts(counts_adata, scale, said):
    """Round-off of counts read "such as 1" (%g hid the fraction), and SoupX-corrected counts
    were only asked whether they were normalized."""
    x = counts_adata.X.toarray().astype(np.float32)
    x[0, 0] = 60.0  # counts of 50 and more: counts, not log-normalized values
    counts_adata.X = x * scale
    with pytest.raises(ValueError, match=said):
        dv.model.ZINBVAE.setup_anndata(counts_adata)


def test_the_classifier_term_is_logged_beside_the_elbo(counts_adata):
    counts_adata.obs["cell_type"] = counts_adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="cell_type")
    model = dv.model.CGMDVAE(counts_adata, **SMALL)
    model.train(max_epochs=3, batch_size=64)
    h = model.history
    for split in ("train", "validation"):
        assert np.isfinite(h[f"classifier_{split}"].to_numpy()).all()
    kl = h["kl_local_train"].iloc[:, 0].to_numpy()
    terms = [k for k in h if k.endswith("_train") and k.startswith(("z_", "w_", "y_", "d_"))]
    assert terms and np.allclose(kl, sum(h[k].iloc[:, 0].to_numpy() for k in terms), rtol=1e-4)


def test_elbo_history_is_the_elbo_and_the_losses_the_objective(counts_adata):
    """A labelled, condition-aligned CGMDVAE logged its objective (the ELBO plus 50 x the
    classifier term plus the alignment term) as elbo_*: 90-210 nats above the ELBO's own
    terms here. As in scvi-tools' SCANVI, elbo_* is the ELBO and *_loss the objective."""
    counts_adata.obs["cell_type"] = counts_adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(counts_adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(counts_adata, **SMALL)
    assert model.module.condition_alignment > 0 and model.module.classifier_weight > 0
    model.train(max_epochs=8, batch_size=64)
    h = {key: frame.iloc[:, 0].to_numpy(float) for key, frame in model.history.items()}
    terms = h["reconstruction_loss_validation"] + h["kl_local_validation"]
    # The terms come from another draw of z than the ELBO: a few nats apart, not a hundred.
    np.testing.assert_allclose(h["elbo_validation"], terms, atol=6.0)
    outside = h["validation_loss"] - h["elbo_validation"]
    assert (outside > 20).all()
    weighted = model.module.classifier_weight * h["classifier_validation"]
    weighted = weighted + model.module.condition_alignment * h["alignment_validation"]
    assert np.corrcoef(outside, weighted)[0, 1] > 0.5
    full = h["kl_weight"] == 1
    assert full.any() and (h["train_loss"][full] - h["elbo_train"][full] > 20).all()


def test_scvi_tools_arguments_decided_here_are_named_with_what_to_do(counts_adata):
    """SCVI's load_sparse_tensor reached Lightning's Trainer; use_batch_norm and the query's
    freezing switches gave Python's bare unexpected-keyword error."""
    dv.model.ZINBVAE.setup_anndata(counts_adata, batch_key="condition")
    with pytest.raises(TypeError, match=r"'use_batch_norm'.*n_hidden, n_layers"):
        dv.model.ZINBVAE(counts_adata, use_batch_norm="none")
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    with pytest.raises(TypeError, match=r"train\(\) got an unexpected argument 'load_sparse"):
        model.train(max_epochs=1, load_sparse_tensor=True)
    # A misspelled argument is named with the closest ones, before anything trains (it was
    # Lightning's "Trainer.__init__() got an unexpected keyword argument").
    for typo, meant in (("max_epoch", "max_epochs"), ("early_stoping", "early_stopping")):
        with pytest.raises(TypeError, match=f"ZINBVAE.train\\(\\) got an unexpected argument "
                           f"'{typo}': did you mean '{meant}'"):  # fmt: skip
            model.train(**{typo: 1})
    # scvi-tools' keyword before 1.0 says what takes its place (no name is close to it).
    with pytest.raises(TypeError, match="'use_gpu': scvi-tools before 1.0.*accelerator='gpu'"):
        model.train(max_epochs=1, use_gpu=True)
    # Names other libraries use: the closest of ours misled (learning_rate_monitor) or none.
    # Ours is named with the value given (it was "e.g. train(lr=1e-3)" whatever was given).
    for name, meant in (("learning_rate", "learning_rate= is lr= here (the optimiser's "
                                          "learning rate): ZINBVAE.train(..., lr=1)."),
                        ("seed", "scvi.settings.seed"),
                        ("random_state", "scvi.settings.seed"), ("use_cuda", "accelerator='gpu'"),
                        ("patience", "Lightning's EarlyStopping patience= is early_stopping_"
                                     "patience= here (with early_stopping=True): ZINBVAE.train"
                                     "(..., early_stopping_patience=1).")):  # fmt: skip
        with pytest.raises(TypeError, match=f"'{name}': .*{re.escape(meant)}"):
            model.train(max_epochs=1, **{name: 1})
    cgmdvae_adata = counts_adata.copy()
    dv.model.CGMDVAE.setup_anndata(cgmdvae_adata)
    with pytest.raises(TypeError, match="'mixture_int': did you mean 'mixture_init'"):
        dv.model.CGMDVAE(cgmdvae_adata, 3, **SMALL).train(mixture_int="kmeans")
    assert not model.is_trained
    model.train(max_epochs=1, load_sparse_tensor=False)  # SCVI's default, ported: a no-op
    assert model.is_trained
    # The read-outs' loaders too ("Sparse CSR tensors do not have is_contiguous").
    with pytest.raises(TypeError, match=r"expression\(\) got load_sparse_tensor=True: sparse"):
        model.get_normalized_expression(data_loader_kwargs={"load_sparse_tensor": True})
    query = counts_adata.copy()
    query.obs["condition"] = "new_" + query.obs["condition"].astype(str)
    # What would train other weights than the new categories' is refused...
    switches = ("unfrozen", "freeze_expression", "freeze_decoder_first_layer",
                "freeze_batchnorm_encoder", "freeze_classifier")  # fmt: skip
    for name, value in zip(switches, (True, False, False, False, False), strict=True):
        with pytest.raises(TypeError, match=rf"load_query_data\(\).*'{name}'.*frozen"):
            dv.model.ZINBVAE.load_query_data(query, model, **{name: value})
    with pytest.raises(TypeError, match=r"'transfer_batch': transfer_batch=False refuses a"):
        dv.model.ZINBVAE.load_query_data(query, model, transfer_batch=False)
    # ...scvi-tools' defaults that change nothing here run (unfrozen=False and freeze_dropout=
    # False were refused): scvi-tools' query trains in eval mode, without dropout, as here.
    for dropout in (False, True):
        ported = dv.model.ZINBVAE.load_query_data(
            query, model, unfrozen=False, freeze_dropout=dropout
        )
        assert ported.is_query_model and not ported.module.training
    # ...and scvi-tools 1.4's other defaults (refused before): its freeze_* switches at True
    # freeze what is frozen here; no BatchNorm decodes counts, so freeze_batchnorm_decoder's
    # default (False) is a no-op too; transfer_batch=True takes new batches, as here.
    defaults = {"freeze_expression": True, "freeze_decoder_first_layer": True,
                "freeze_batchnorm_encoder": True, "freeze_batchnorm_decoder": False,
                "freeze_classifier": True, "transfer_batch": True}  # fmt: skip
    ported = dv.model.ZINBVAE.load_query_data(query, model, **defaults)
    learning = {n for n, p in ported.module.named_parameters() if p.requires_grad}
    assert learning == {n for n, p in dv.model.ZINBVAE.load_query_data(query, model)
                        .module.named_parameters() if p.requires_grad}  # fmt: skip
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        dv.model.ZINBVAE.load_query_data(query, model, nonsense=True)
    # scvi-tools 1.4's datamodule route: Python's bare message before.
    with pytest.raises(TypeError, match=r"'registry'.*ZINBVAE.load_query_data\(query, ref"):
        dv.model.ZINBVAE.load_query_data(query, model, registry={})
    assert dv.model.ZINBVAE.load_query_data(query, model).is_query_model


def test_a_setup_subset_in_place_is_refused_at_the_model(counts_adata):
    """sc.pp.highly_variable_genes(subset=True) after setup_anndata keeps the object's setup
    id: the model was built for 60 genes and training failed on a matrix product."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    counts_adata._inplace_subset_var(np.arange(40))
    with pytest.raises(ValueError, match="set up with 60 genes and holds 40 now"):
        dv.model.ZINBVAE(counts_adata)
    dv.model.ZINBVAE.setup_anndata(counts_adata)  # set up again: a model of the 40 genes
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    assert model.summary_stats.n_vars == model.module.n_input == 40


def test_genes_subset_in_place_after_training_are_refused_by_name(counts_adata):
    """sc.pp.filter_genes on the model's AnnData after training: every read-out and training
    again failed in torch ("mat1 and mat2 shapes cannot be multiplied")."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.train(max_epochs=1)
    full = counts_adata.copy()
    counts_adata._inplace_subset_var(np.arange(40))
    for call in (model.get_latent_representation, model.write_to_adata, model.train):
        with pytest.raises(ValueError, match="holds 40 genes and the model was trained on 60"):
            call()
    assert model.write_to_adata(full) == ["obsm/X_zinbvae"]
    # train takes no AnnData: its advice is not write_to_adata(full).
    with pytest.raises(ValueError, match=r"trains on its own genes only.*ZINBVAE\.load\(path"):
        model.train(max_epochs=1)


def test_a_model_saved_after_its_genes_were_subset_loads_onto_them(counts_adata, tmp_path):
    """Saved after sc.pp.filter_genes on its AnnData: scvi-tools recorded the AnnData's 40
    genes, and loading onto the 60 it was trained on failed ("Expected: 60 Received: 40"), as
    did the way train's refusal names to train further."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.train(max_epochs=1)
    full = counts_adata.copy()
    counts_adata._inplace_subset_var(np.arange(40))
    with pytest.raises(ValueError, match="subset in place to 40 of its 60 genes since setup"):
        model.save(tmp_path / "with_data", save_anndata=True)
    model.save(tmp_path / "m")
    again = dv.model.ZINBVAE.load(tmp_path / "m", full)
    np.testing.assert_allclose(
        again.get_latent_representation(), model.get_latent_representation(full), atol=1e-6
    )
    again.train(max_epochs=1)
    assert again.history["elbo_train"].shape[0] == 2


def test_genes_subset_in_place_before_training_say_to_build_again(counts_adata):
    """Subset after the model was built, before train: the refusal said the model 'was
    trained on 60' and to pass an AnnData to write_to_adata, which train does not take."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    counts_adata._inplace_subset_var(np.arange(40))
    with pytest.raises(ValueError, match="holds 40 genes and the model was built for 60") as err:
        model.train(max_epochs=1)
    assert "Set up and build the model again on the subset" in str(err.value)
    assert "write_to_adata" not in str(err.value)


def test_cells_filtered_in_place_to_none_are_refused_by_name(counts_adata):
    """sc.pp.filter_cells on the model's AnnData keeping no cell: read-outs failed in
    scvi-tools with numpy's "zero-size array to reduction operation minimum"."""
    dv.model.ZINBVAE.setup_anndata(counts_adata, batch_key="condition")
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.train(max_epochs=1)
    full = counts_adata.copy()
    counts_adata._inplace_subset_obs(np.zeros(counts_adata.n_obs, dtype=bool))
    for call in (model.get_latent_representation, model.write_to_adata):
        with pytest.raises(ValueError, match=r"AnnData holds no cells .* subset in place"):
            call()
    assert model.write_to_adata(full) == ["obsm/X_zinbvae"]


def test_normal_data_scaled_in_place_after_training_are_refused(counts_adata):
    """sc.pp.scale on the log-normalized AnnData of a likelihood="normal" CGMDVAE after
    training: every read-out encoded the scaled values without a word (the latent moved)."""
    sc.pp.normalize_total(counts_adata)
    sc.pp.log1p(counts_adata)
    dv.model.CGMDVAE.setup_anndata(counts_adata, condition_key="condition")
    model = dv.model.CGMDVAE(counts_adata, n_clusters=3, likelihood="normal", **SMALL)
    model.train(max_epochs=1)
    latent = model.get_latent_representation()
    kept = counts_adata.copy()
    counts_adata.X = counts_adata.X.toarray()
    sc.pp.scale(counts_adata)
    for call in (model.get_latent_representation, model.write_to_adata, model.predict_clusters):
        with pytest.raises(ValueError, match=r"changed in place .* had no negative values"):
            call()
    np.testing.assert_allclose(model.get_latent_representation(kept), latent, atol=1e-5)
    counts_adata.X = kept.X  # put back: read as before
    np.testing.assert_allclose(model.get_latent_representation(), latent, atol=1e-5)


def test_transform_batch_without_batches_says_so(counts_adata):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.train(max_epochs=1)
    with pytest.raises(ValueError, match="set up without a batch_key.*leave transform_batch"):
        model.get_normalized_expression(transform_batch="ctrl")


def test_an_early_stop_before_convergence_advises_patience(counts_adata):
    """The note asked for a larger max_epochs although early stopping had ended the run."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    with pytest.warns(dv.train.NotConvergedWarning) as record:
        model.train(
            max_epochs=60,
            n_epochs_kl_warmup=1,
            early_stopping=True,
            early_stopping_patience=1,
            early_stopping_min_delta=1e6,  # no epoch counts as an improvement
        )
    message = str(record[0].message)
    stopped = len(model.history["elbo_validation"]) - 1
    assert stopped < 59 and f"after epoch {stopped}" in message
    assert "early_stopping_patience" in message and "max_epochs" not in message


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
@pytest.mark.parametrize(("method", "argument"), [("train", "max_epochs"), ("get_elbo", "indices")])
def test_help_shows_the_arguments_of_wrapped_methods(cls, method, argument):
    """help(ZINBVAE.train) showed (*args, **kwargs) and one line: the query check's wrapper."""
    import inspect

    function = getattr(cls, method)
    assert argument in inspect.signature(function).parameters
    assert argument in (function.__doc__ or "")


def test_latent_arguments_in_scvi_tools_order(counts_adata):
    """CGMDVAE had representation third, where scvi-tools has give_mean."""
    import inspect

    order = list(inspect.signature(scvi.model.SCVI.get_latent_representation).parameters)[:7]
    for cls in (dv.model.ZINBVAE, dv.model.CGMDVAE):
        assert list(inspect.signature(cls.get_latent_representation).parameters)[:7] == order
    dv.model.CGMDVAE.setup_anndata(counts_adata, condition_key="condition")
    model = dv.model.CGMDVAE(counts_adata, n_clusters=3, **SMALL)
    model.train(max_epochs=1, mixture_init="kmeans", enable_progress_bar=False)
    mean = model.get_latent_representation(None, None, True)
    draw = model.get_latent_representation(None, None, False)
    assert mean.shape == draw.shape and not np.allclose(mean, draw)


def _contract(value):
    """What a caller reads off a result: its type, shape, dtype, index and columns."""
    if isinstance(value, dict):
        return {key: _contract(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_contract(item) for item in value)
    if isinstance(value, pd.DataFrame):
        return ("frame", value.shape, set(value.dtypes), list(value.index), list(value.columns))
    if isinstance(value, torch.Tensor | np.ndarray):
        return ("array", tuple(value.shape), str(value.dtype).split(".")[-1])
    return type(value).__name__


def test_read_outs_keep_scvi_tools_contract():
    """Read-outs as SCVI's on the same cells: types, shapes, dtypes, rows and columns. A mean
    ELBO or reconstruction error came as a plain float, where SCVI's 0-d tensor (and its
    marginal ll's np.float64) have .item(): scvi-tools code calling it failed. A 0-d array or
    tensor as library_size was refused."""
    adata = dv.datasets.synthetic_counts(
        n_cells=150, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    batches = ["ctrl", "stim"]
    assert list(adata.obs["condition"].cat.categories) == batches
    genes = list(adata.var_names[[2, 5]])  # in adata's order: scvi-tools' order of gene_list
    calls = {
        "latent": lambda m: m.get_normalized_expression(library_size="latent", n_samples=3),
        "draws": lambda m: m.get_normalized_expression(n_samples=3, return_mean=False),
        "batches": lambda m: m.get_normalized_expression(transform_batch=batches, silent=True),
        "genes": lambda m: m.get_normalized_expression(library_size=10.0, gene_list=genes),
        # A 0-d array or tensor, as scvi-tools takes it (was refused as not a number).
        "0-d tensor": lambda m: m.get_normalized_expression(library_size=torch.tensor(10.0)),
        "z": lambda m: m.get_latent_representation(give_mean=False),
        "dist": lambda m: m.get_latent_representation(indices=[3, 1], return_dist=True),
        "params": lambda m: m.get_likelihood_parameters(give_mean=False, n_samples=2),
        "corr": lambda m: m.get_feature_correlation_matrix(correlation_type="spearman"),
        "mll": lambda m: m.get_marginal_ll(n_mc_samples=2, indices=[0, 4], return_mean=False),
        "de": lambda m: m.differential_expression(
            groupby="cluster", mode="change", delta=0.5, batch_correction=True, fdr_target=0.1
        ).loc[adata.var_names],
    }
    results = {}
    for cls in (scvi.model.SCVI, dv.model.ZINBVAE):
        data = adata.copy()
        cls.setup_anndata(data, batch_key="condition")
        scvi.settings.seed = 0
        model = cls(data, **SMALL)
        with warnings.catch_warnings():  # SCVI's: too few steps to log, DE draws
            if cls is scvi.model.SCVI:
                warnings.simplefilter("ignore")
            model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
            results[cls] = {key: _contract(call(model)) for key, call in calls.items()}
            means = {
                "elbo": model.get_elbo(),
                "rec": model.get_reconstruction_error()["reconstruction_loss"],
                "mll": model.get_marginal_ll(n_mc_samples=2),
            }
        for key, mean in means.items():
            assert np.isfinite(mean.item()), (cls, key)
        assert means["elbo"].item() < 0 < means["rec"].item()  # signs as scvi-tools'
    assert results[dv.model.ZINBVAE] == results[scvi.model.SCVI]
    per_10 = model.get_normalized_expression(library_size=np.array(10.0))  # float32, summing to 10
    assert per_10.dtypes.unique().tolist() == [np.float32]
    np.testing.assert_allclose(per_10.sum(axis=1), 10.0, rtol=1e-5)


def test_no_saved_model_is_the_error_scvi_tools_code_catches(counts_adata, tmp_path):
    """ "Load if saved, else train" written for SCVI (except ValueError: scvi-tools' "Failed to
    load model file") crashed on deltavae's FileNotFoundError for a folder without a model."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.save(tmp_path / "prefixed", prefix="p_")
    (tmp_path / "empty").mkdir()
    for folder in ("nope", "empty", "prefixed"):
        for error in (ValueError, FileNotFoundError):
            with pytest.raises(error, match="No saved model"):
                dv.model.ZINBVAE.load(tmp_path / folder, counts_adata)
    with pytest.raises(ValueError, match="is the model file; pass the directory"):
        dv.model.ZINBVAE.load(tmp_path / "prefixed" / "p_model.pt", counts_adata)


def test_scvi_tools_1_4_plan_and_trainer_configs_are_read(counts_adata):
    """scvi-tools 1.4's train(plan_config=..., trainer_config=...) was refused ("pass the
    training plan's settings as plan_kwargs"); they are read as the arguments they hold, with
    plan_kwargs and trainer keywords overriding them key by key, as in scvi-tools."""
    from scvi.train import TrainerConfig, TrainingPlanConfig

    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.train(
        plan_config={"lr": 2e-3, "weight_decay": 0.0},
        plan_kwargs={"weight_decay": 1e-5},
        trainer_config={"max_epochs": 2, "enable_progress_bar": True},
        enable_progress_bar=False,
    )
    assert len(model.history["elbo_train"]) == 2  # the config's max_epochs trained
    args = model.train_args_
    assert args["plan_kwargs"] == {"lr": 2e-3, "weight_decay": 1e-5}
    assert args["lr"] == 2e-3 and args["enable_progress_bar"] is False
    # scvi-tools' config objects: only the settings given (their defaults hold scvi-tools'
    # own, on_step among them, which deltavae's plan does not take).
    model.train(
        max_epochs=1,
        plan_config=TrainingPlanConfig(lr=5e-3),
        trainer_config=TrainerConfig(log_every_n_steps=3),
    )
    assert model.train_args_["plan_kwargs"] == {"lr": 5e-3}
    assert model.train_args_["log_every_n_steps"] == 3
    assert len(model.history["elbo_train"]) == 3
    # An argument of train's own in both: the call's, as in scvi-tools.
    model.train(max_epochs=1, trainer_config={"max_epochs": 2})
    assert len(model.history["elbo_train"]) == 4
    with pytest.raises(TypeError, match="plan_config must be a mapping"):
        model.train(max_epochs=1, plan_config=[("lr", 1e-3)])
    # With plan_config, a plan_kwargs of no dict failed with "'str' object is not a mapping".
    for plan in ("lr=1e-3", [("lr", 1e-3)]):
        with pytest.raises(TypeError, match=r"^plan_kwargs must be a dict of the training plan"):
            model.train(max_epochs=1, plan_config={"lr": 1e-3}, plan_kwargs=plan)
    assert len(model.history["elbo_train"]) == 4
    # CGMDVAE's train (its own arguments, the rest by **kwargs) reads them alike.
    dv.model.CGMDVAE.setup_anndata(counts_adata)
    cgm = dv.model.CGMDVAE(counts_adata, 3, **SMALL)
    cgm.train(plan_config={"lr": 2e-3}, trainer_config={"max_epochs": 2}, mixture_init="kmeans")
    assert cgm.train_args_["max_epochs"] == 2 and cgm.train_args_["plan_kwargs"] == {"lr": 2e-3}


def test_scanvi_train_arguments_at_their_defaults_are_no_ops(counts_adata):
    """SCANVI.train(n_samples_per_label=None, adversarial_classifier=False), its defaults
    written out, was refused; they switch nothing on and now run. A value that switches
    SCANVI's feature on is refused with what CGMDVAE does instead."""
    counts_adata.obs["labels"] = counts_adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(counts_adata, labels_key="labels")
    model = dv.model.CGMDVAE(counts_adata, 3, **SMALL)
    with pytest.raises(TypeError, match="'adversarial_classifier'.*condition_alignment"):
        model.train(max_epochs=2, adversarial_classifier=True)
    with pytest.raises(TypeError, match="'n_samples_per_label'.*classifier_weight"):
        model.train(max_epochs=2, n_samples_per_label=100)
    model.train(max_epochs=2, mixture_init="kmeans", n_samples_per_label=None,
                adversarial_classifier=False)  # fmt: skip
    assert model.is_trained


def test_batch_size_none_is_scvi_tools_setting(counts_adata, monkeypatch):
    """SCVI.train(batch_size=None) trains on scvi.settings.batch_size; deltavae refused it
    ("batch_size must be a positive integer, got None")."""
    monkeypatch.setattr(scvi.settings, "batch_size", 100)
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, **SMALL)
    model.train(max_epochs=1, batch_size=None, train_size=1.0)
    assert model.train_args_["batch_size"] == 100
    assert model.trainer.num_training_batches == 3  # 300 cells, 100 a minibatch
    dv.model.CGMDVAE.setup_anndata(counts_adata)
    cgm = dv.model.CGMDVAE(counts_adata, 3, **SMALL)
    cgm.train(max_epochs=2, batch_size=None, mixture_init="kmeans")
    assert cgm.train_args_["batch_size"] == 100


def test_scvi_setup_arguments_at_their_defaults_are_no_ops(counts_adata):
    """SCVI.setup_anndata(adata, labels_key=None, continuous_covariate_keys=None), scvi-tools'
    defaults written out (a wrapper passing every key), was refused by ZINBVAE ("unexpected
    argument 'labels_key'"); they register nothing there and now run. A value that would
    register a field is still refused with what to do instead."""
    dv.model.ZINBVAE.setup_anndata(
        counts_adata, batch_key=None, labels_key=None, continuous_covariate_keys=[]
    )
    assert "labels_key" not in dv.model.ZINBVAE(counts_adata, **SMALL).registry_["setup_args"]
    counts_adata.obs["pct"] = 0.5
    with pytest.raises(TypeError, match="'continuous_covariate_keys'.*regress them out"):
        dv.model.ZINBVAE.setup_anndata(counts_adata, continuous_covariate_keys=["pct"])
    dv.model.CGMDVAE.setup_anndata(counts_adata, batch_key=None, size_factor_key=None)
    with pytest.raises(TypeError, match="'batch_key'.*condition_key"):
        dv.model.CGMDVAE.setup_anndata(counts_adata, batch_key="pct")


def test_scvi_model_arguments_at_values_that_change_nothing_are_no_ops(counts_adata, tmp_path):
    """SCVI(adata, latent_distribution="normal"), train(datamodule=None), load(path,
    datamodule=None) and load_query_data(query, path, inplace_subset_query_vars=False), all
    what this package does anyway, were refused as "unexpected argument"; they now run. A
    value that would change something is still refused with what to do instead."""
    dv.model.ZINBVAE.setup_anndata(counts_adata, batch_key="condition")
    model = dv.model.ZINBVAE(
        counts_adata, latent_distribution="normal", batch_representation="one-hot", **SMALL
    )
    with pytest.raises(TypeError, match="'latent_distribution'.*always normal"):
        dv.model.ZINBVAE(counts_adata, latent_distribution="ln", **SMALL)
    with pytest.raises(TypeError, match="'datamodule'"):
        model.train(max_epochs=1, datamodule=object())
    model.train(max_epochs=1, datamodule=None, train_size=1.0)
    model.save(tmp_path / "m", save_anndata=True)
    assert dv.model.ZINBVAE.load(tmp_path / "m", datamodule=None).is_trained
    query = counts_adata[:50].copy()
    query.obs["condition"] = "new"
    mapped = dv.model.ZINBVAE.load_query_data(
        query, tmp_path / "m", inplace_subset_query_vars=False
    )
    assert mapped.adata.n_obs == 50
    with pytest.raises(TypeError, match="'inplace_subset_query_vars'"):
        dv.model.ZINBVAE.load_query_data(query, tmp_path / "m", inplace_subset_query_vars=True)


def test_a_query_of_a_decoder_with_batch_norm_refuses_to_let_it_learn(tmp_path):
    """freeze_batchnorm_decoder=False (scvi-tools' default) lets the decoder's BatchNorm
    weights learn: taken where no BatchNorm decodes (counts), refused for a CGMDVAE of a
    normal likelihood, whose decoder has BatchNorm that the query keeps frozen; True runs."""
    adata = dv.datasets.synthetic_blobs(
        n_cells=120, n_features=8, n_clusters=2, n_conditions=2, seed=0
    )
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, likelihood="normal", **SMALL)
    model.train(max_epochs=1)
    model.save(tmp_path / "ref")
    query = adata.copy()
    query.obs["condition"] = "new"
    for reference in (model, tmp_path / "ref"):
        with pytest.raises(ValueError, match=r"freeze_batchnorm_decoder=False\) lets the dec"):
            dv.model.CGMDVAE.load_query_data(query, reference, freeze_batchnorm_decoder=False)
    ported = dv.model.CGMDVAE.load_query_data(query, model, freeze_batchnorm_decoder=True)
    assert ported.is_query_model
