"""The model objects as scvi-tools objects: modes, state and registries around read-outs."""

import contextlib
import io
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Callback

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _cells():
    return dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )


def _spots():
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, cells_per_spot=(2, 6), seed=3)


def _build(which):
    """A small model of each class, its read-out, and what train needs."""
    if which == "zinbvae":
        adata = _cells()
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
        model = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=16)
        return model, model.get_latent_representation, {}
    if which == "cgmdvae":
        adata = _cells()
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
        model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=4, n_hidden=16)
        return model, model.get_latent_representation, {"mixture_init": "kmeans"}
    if which == "nmfdeconv":
        spots, ref = _spots()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # few shared genes
            model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
        return model, model.get_proportions, {}
    if which == "imputer":
        spots, ref = _spots()
        spots = ad.AnnData(
            X=spots[:, :-8].X.copy(),
            obs=pd.DataFrame(index=spots.obs_names),
            var=pd.DataFrame(index=spots.var_names[:-8]),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = dv.model.SpatialImputer.from_reference(
                spots, reference=ref, labels_key="cluster", design="latent", n_hidden=16
            )
        return model, model.impute, {}
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=45, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3, n_hidden=16)

    def weights():  # of spots given, through the encoder (the model's own are kept)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # archetypes merged
            return model.get_archetype_weights(mix.copy())

    return model, weights, {}


MODELS = ["zinbvae", "cgmdvae", "nmfdeconv", "imputer", "archetypes"]


def _train(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too few epochs to converge, clusters empty ...
        model.train(**{"max_epochs": 1, **kwargs}, **TRAIN)


@pytest.mark.parametrize("which", MODELS)
def test_a_read_out_of_a_module_in_training_mode_runs_in_eval_mode_and_changes_nothing(which):
    """A read-out of a model whose module is in training mode (a Lightning callback reading
    it while it trains on, or model.module.train()) gives the eval-mode result, leaves every
    parameter and BatchNorm statistic as it was, and the module in training mode: ZINBVAE's
    and SpatialImputer's read with dropout and moved BatchNorm's statistics; CGMDVAE's,
    NMFDeconv's and Archetypes' left the module in eval mode."""
    model, read, kwargs = _build(which)
    _train(model, **kwargs)
    expected = np.asarray(read())
    model.module.train()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    np.testing.assert_allclose(np.asarray(read()), expected, rtol=1e-5, atol=1e-6)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(sub.training for sub in model.module.modules())


@pytest.mark.parametrize("which", ["cgmdvae", "nmfdeconv", "archetypes"])
def test_reading_results_in_a_callback_leaves_the_training_in_training_mode(which):
    """A user's callback reading results each epoch of a further run: the rest of the run
    trained without dropout, its BatchNorm frozen, after the first read-out."""
    model, read, kwargs = _build(which)
    _train(model, **kwargs)
    modes = []

    class Reads(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(model.module.training)

        def on_train_epoch_end(self, trainer, pl_module):
            read()

    _train(model, max_epochs=3, callbacks=[Reads()])
    assert len(modes) >= 3 and all(modes)
    assert not model.module.training  # read-outs after training run in eval mode


def test_the_archetypes_summary_counts_raw_archetypes_and_says_they_merge():
    """print(model) said "3 archetypes" while a trained model whose archetypes merged
    reported 2 (get_archetype_weights, archetype_names): the count is of raw archetypes."""
    mix = dv.datasets.convex_mixtures(n_spots=30, n_genes=45, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3, n_hidden=16)
    assert model.summary_string.startswith(
        "Archetypes: 3 raw archetypes (alike ones merge: archetype_names()), 30 spots"
    )


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_likelihood_parameters_and_gene_correlations_of_an_untrained_model_are_refused(which):
    """As get_normalized_expression and posterior_predictive_sample: scvi-tools answered them
    from the untrained networks without a word."""
    model, _, _ = _build(which)
    for call in (
        model.get_likelihood_parameters,
        lambda: model.get_feature_correlation_matrix(n_samples=2),
    ):
        with pytest.raises(RuntimeError, match="untrained model"):
            call()


def test_sample_factors_of_an_untrained_archetypes_model_are_refused():
    """Every other Archetypes read-out refuses an untrained model; get_sample_factors
    answered with the starting factors."""
    mix = dv.datasets.convex_mixtures(n_spots=30, n_genes=45, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3, n_hidden=16)
    with pytest.raises(RuntimeError, match="untrained model"):
        model.get_sample_factors()


def test_setup_warnings_point_at_the_users_line():
    """Warnings with a fixed stacklevel pointed one frame short once every public method was
    wrapped (closed backed files): setup's 'genes zero in every cell' named deltavae's
    _backing.py instead of the notebook line that called it."""
    adata = _cells()
    adata.X = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X)
    adata.X[:, 0] = 0
    for cls in (dv.model.ZINBVAE, dv.model.CGMDVAE):
        with pytest.warns(UserWarning, match="zero in every cell") as record:
            cls.setup_anndata(adata)
        assert {w.filename for w in record} == {__file__}


def test_setting_an_anndata_with_genes_in_another_order_reads_them_by_name(tmp_path):
    """scvi-tools' ``model.adata = other`` registered other's genes by position (after a
    warning that they were reordered) and made that order the model's training genes: every
    later read, of the training AnnData too, and the saved model misread them."""
    model, _, _ = _build("zinbvae")
    _train(model)
    adata = model.adata
    expected = model.get_latent_representation()
    genes = list(adata.var_names)
    reversed_genes = adata[:, ::-1].copy()
    with pytest.warns(UserWarning, match="genes in another order"):
        model.adata = reversed_genes
    np.testing.assert_allclose(model.get_latent_representation(), expected, atol=1e-5)
    assert list(model.registry_["field_registries"]["X"]["state_registry"]["column_names"]) == (
        genes
    )
    assert list(model.adata.var_names) == genes  # the copy read, in the training order
    model.adata = model.adata  # its own again: results still go to the AnnData set
    assert model.write_to_adata() == ["obsm/X_zinbvae"]
    np.testing.assert_allclose(reversed_genes.obsm["X_zinbvae"], expected, atol=1e-5)
    np.testing.assert_allclose(model.get_latent_representation(adata), expected, atol=1e-5)
    model.save(tmp_path / "m")
    loaded = dv.model.ZINBVAE.load(tmp_path / "m", adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), expected, atol=1e-5)


def test_setting_a_per_spot_models_spots_keeps_each_spot_its_own_parameters():
    """A per-spot fit's spots in another order are put back in the fitted order (as load
    does) on the copy the model reads, its read-outs in the order set; other spots are
    refused: their parameters belong to the fitted spots."""
    model, read, _ = _build("nmfdeconv")
    spots = model.adata.copy()
    dv.model.NMFDeconv.setup_anndata(spots, spot_index=True)
    model = dv.model.NMFDeconv(spots, n_components=3, inference="per_spot")
    _train(model, max_epochs=2)
    expected = model.get_proportions()
    backwards = spots[::-1].copy()
    del backwards.obs["_indices"]
    with pytest.warns(UserWarning, match="spots in another order"):
        model.adata = backwards
    pd.testing.assert_frame_equal(model.get_proportions(), expected.loc[backwards.obs_names])
    with pytest.raises(ValueError, match=r"its 40 spots.*got 10 spots, a subset of them.*indices="):
        model.adata = spots[:10].copy()


def test_view_registry_prints_the_models_setup(capsys):
    """scvi-tools 1.4's view_registry of a model (SCVI's too) failed with AttributeError:
    "'ZINBVAE' object has no attribute '_registry'"."""
    model, _, _ = _build("zinbvae")
    model.view_registry(hide_state_registries=True)
    out = capsys.readouterr().out
    assert "Setup via `ZINBVAE.setup_anndata`" in out and "'batch_key': 'condition'" in out


def test_expression_refuses_keywords_scvi_tools_would_ignore():
    """scvi-tools took unknown keywords as importance weighting's and ignored them with the
    default weights: a misspelt n_sample=10 gave one draw, seed=0 draws that do not repeat."""
    model, _, _ = _build("zinbvae")
    _train(model)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_sample'"):
        model.get_normalized_expression(n_sample=10)
    with pytest.raises(TypeError, match=r"'seed'; .*torch.manual_seed"):
        model.get_normalized_expression(seed=0)
    assert model.get_normalized_expression(n_samples=2).shape == (120, 30)


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_read_outs_name_themselves_for_a_keyword_they_do_not_take(which):
    """scvi-tools hands keywords its read-outs do not name to torch's DataLoader or to the
    module: get_latent_representation(give_meen=True) failed with "DataLoader.__init__() got
    an unexpected keyword argument", get_elbo(n_samples=3) with "DeltaPyroModule.forward()
    ...", naming neither the read-out nor what it takes."""
    model, _, _ = _build(which)
    _train(model)
    with pytest.raises(TypeError, match=r"get_latent_representation\(\) got .* 'give_meen'"):
        model.get_latent_representation(give_meen=True)
    with pytest.raises(TypeError, match=r"^get_elbo\(\) got .* 'n_samples' .*forward\(\)"):
        model.get_elbo(n_samples=3)
    with pytest.raises(TypeError, match=r"^get_reconstruction_error\(\) got .* 'foo'"):
        model.get_reconstruction_error(foo=1)
    with pytest.raises(TypeError, match=r"^get_marginal_ll\(\) got .* 'bar'"):
        model.get_marginal_ll(n_mc_samples=2, bar=1)
    with pytest.raises(TypeError, match=r"^get_elbo\(\) got .* 'foo' .*data loader"):
        model.get_elbo(data_loader_kwargs={"foo": 2})
    # What the loader does take still reaches it (scvi-tools' read-out; CGMDVAE's names its own).
    if which == "zinbvae":
        assert model.get_latent_representation(num_workers=0).shape[0] == model.adata.n_obs
    assert np.isfinite(model.get_marginal_ll(n_mc_samples=2))


def test_per_cell_marginal_likelihood_comes_to_the_cpu(monkeypatch):
    """get_marginal_ll(return_mean=False) returned scvi-tools' tensor as it was, on the
    module's device (a GPU's), where get_elbo and get_reconstruction_error bring theirs to
    the CPU: every result of HostResultsMixin goes through _on_host."""
    from deltavae.model import _host_results

    model, _, _ = _build("zinbvae")
    _train(model)
    brought = []

    def on_host(value):
        brought.append(value)
        return value

    monkeypatch.setattr(_host_results, "_on_host", on_host)
    per_cell = model.get_marginal_ll(n_mc_samples=2, return_mean=False)
    assert len(brought) == 1 and brought[0] is per_cell and per_cell.shape == (120,)


def test_a_model_unpickled_in_another_process_knows_its_anndata(capsys):
    """joblib and multiprocessing unpickle a model in a process whose scvi-tools store (kept
    in the class) never saw it: view_anndata_setup failed there with "Unable to find instance
    specific manager store" (and get_anndata_manager found none)."""
    import pickle

    model, _, _ = _build("zinbvae")
    blob = pickle.dumps(model)
    del type(model)._per_instance_manager_store[model.id]  # as in a fresh process
    clone = pickle.loads(blob)
    assert clone.get_anndata_manager(clone.adata) is clone.adata_manager
    clone.view_anndata_setup(hide_state_registries=True)
    assert "Setup via `ZINBVAE.setup_anndata`" in capsys.readouterr().out


def test_a_copy_of_a_model_leaves_the_users_anndata_its_setup():
    """copy.deepcopy or a pickle loaded in the session kept the model's id, under which
    scvi-tools keeps the AnnDatas registered: the copy's replaced the original's, reading
    both gave the user's AnnData a new id, and a model built on it since was refused ('set
    up with a different model'), its setup unchanged."""
    import copy
    import pickle

    model, _, _ = _build("zinbvae")
    model.is_trained_ = True  # its starting weights serve
    adata, before = model.adata, model.adata.uns["_scvi_uuid"]
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.id != model.id
        np.testing.assert_allclose(
            clone.get_latent_representation(), model.get_latent_representation(), rtol=1e-5
        )
    assert adata.uns["_scvi_uuid"] == before
    assert dv.model.ZINBVAE(adata, n_latent=2).adata is adata
    # A copy of the AnnData set up (it kept uns['_scvi_uuid']): its setup replaced the
    # original's, and a model built on the original was refused ("a copy of it was set up").
    copied = adata.copy()
    dv.model.ZINBVAE.setup_anndata(copied)
    assert copied.uns["_scvi_uuid"] != before == adata.uns["_scvi_uuid"]
    assert dv.model.ZINBVAE(adata, n_latent=2).summary_stats.n_batch == 2


@pytest.mark.parametrize("which", MODELS)
def test_read_outs_of_a_double_module_read_their_batches_in_double(which):
    """model.module.double(): the loaders yield float32, so every read-out (latents,
    proportions, imputation, translate, latent_shift) failed with "mat1 and mat2 must have
    the same dtype"; the batches now take the module's dtype, and the results stay. Training
    such a module is refused, naming the fix."""
    model, read, kwargs = _build(which)
    _train(model, **kwargs)
    expected = np.asarray(read(), dtype=np.float64)
    model.module.double()
    np.testing.assert_allclose(np.asarray(read(), dtype=np.float64), expected, rtol=1e-4, atol=1e-5)
    # Training runs in float32: refused by name (it failed in its first step, mat1 and mat2).
    with pytest.raises(ValueError, match=r"float64 \(after model.module.double\(\)\?\).*float\(\)"):
        _train(model, **kwargs)
    if which == "cgmdvae":
        adata = model.adata
        source = adata[adata.obs["condition"] == adata.obs["condition"].cat.categories[0]]
        target = adata.obs["condition"].cat.categories[1]
        assert model.translate(adata, target).shape == adata.shape
        shifted = model.predict_perturbation(source, target, method="latent_shift", seed=0)
        values = shifted.X.toarray() if hasattr(shifted.X, "toarray") else shifted.X
        assert shifted.n_obs == source.n_obs and np.isfinite(values).all()


def test_print_model_says_cells_subset_in_place_since_setup():
    """sc.pp.filter_cells on the model's AnnData after setup: the model trains on the cells
    left (200 of 600 PBMCs), but print(model) still said "Data: 600 cells", those of setup."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=8)
    adata._inplace_subset_obs(np.arange(adata.n_obs) < 90)  # what sc.pp.filter_cells does
    assert "Data: 90 cells (120 at setup, subset in place since) x 30 genes" in str(model)
    with pytest.warns(dv.train.NotConvergedWarning):
        model.train(max_epochs=2, **TRAIN)
    assert model.get_latent_representation().shape == (90, 4)  # the cells it read


def test_print_model_says_data_keys_epochs_and_verdict(tmp_path):
    """print(model) said only the architecture and "Training status: Trained": not the data
    it was set up on, its registered keys, how long it trained or whether it converged."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=8)
    data = "Data: 120 cells x 30 genes; registered: batch_key='condition'"
    assert model.summary_string.endswith(f"Training status: Not Trained\n{data}")
    with pytest.warns(dv.train.NotConvergedWarning, match="too few to converge"):
        model.train(max_epochs=3, **TRAIN)
    status = (
        "Training status: Trained, 3 epochs. Training ran 2 epochs on the full ELBO (after "
        "the KL warm-up): too few to converge or to judge."
    )
    assert model.summary_string.endswith(f"{status}\n{data}")
    model.save(tmp_path / "m")
    assert dv.model.ZINBVAE.load(tmp_path / "m", adata).summary_string == model.summary_string
    model.convergence_ = "A [bracketed] verdict."  # rich markup: printed as it is
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert f"{model}" == model.summary_string  # str: the text, printing nothing
        assert not out.getvalue() and repr(model) == ""  # repr: printed, as scvi-tools
    assert "A [bracketed] verdict." in " ".join(out.getvalue().split())
    with pytest.warns(dv.train.NotConvergedWarning):  # one epoch: "1 epochs" before
        model.train(max_epochs=1, **TRAIN)
    assert "Training status: Trained, 4 epochs." in model.summary_string
    one = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=8)
    with pytest.warns(dv.train.NotConvergedWarning):
        one.train(max_epochs=1, **TRAIN)
    assert "Training status: Trained, 1 epoch." in one.summary_string
    spots, ref = _spots()  # a spot model's: spots, and no setup argument left at its default
    spot_model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    assert spot_model.summary_string.endswith("Not Trained\nData: 40 spots x 40 genes")
