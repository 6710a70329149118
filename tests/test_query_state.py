"""What a model carries from one fit to another: a query model (load_query_data) and its
reference's training run, and a model trained twice (model/_query.py, _condition_counts.py,
train/_runner.py)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from _poison import InterruptAt

import deltavae as dv

FAST = {"batch_size": 64}


def _split(seed=0):
    adata = dv.datasets.synthetic_counts(
        n_cells=150, n_genes=20, n_clusters=2, n_conditions=3, seed=seed
    )
    new = adata.obs["condition"] == adata.obs["condition"].cat.categories[2]
    return adata[~new].copy(), adata[new].copy()


def _reference(cls, ref, epochs=2):
    if cls is dv.model.CGMDVAE:
        cls.setup_anndata(ref, condition_key="condition")
        model = cls(ref, n_latent=3, n_hidden=16, n_clusters=2)
    else:
        cls.setup_anndata(ref, batch_key="condition")
        model = cls(ref, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs: not converged, said elsewhere
        model.train(max_epochs=epochs, **FAST)
    return model


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
def test_a_query_model_keeps_no_record_of_its_references_training(cls):
    """scvi-tools copies the reference's attributes into the query model: an untrained query
    model ("Training status: Not Trained") showed the reference's 3 epochs in model.history,
    dv.pl.history plotted them, and best_epoch_ and train_args_ were the reference's; a
    query fit interrupted after its first epoch said 'interrupted after -1 of its 4 epochs'
    (its epochs counted from the reference's). Its convergence verdict was the reference's
    too: a query with nothing to learn printed "Training status: Trained. Training ran 1
    epoch on the full ELBO ...: too few to converge", of a training it never had."""
    ref, query = _split()
    reference = _reference(cls, ref)
    reference.deltavae_version_ = "0.0.1"  # built by an earlier release
    model = cls.load_query_data(query, reference)
    assert model.deltavae_version_ == dv.__version__  # the query model is this release's
    assert not model.is_trained_
    assert model.history is None and model.best_epoch_ is None and model.train_args_ is None
    assert model.split_cells_ is None and model.train_indices is None
    with pytest.raises(ValueError, match="has not trained since load_query_data"):
        dv.pl.history(model, show=False)
    with pytest.warns(UserWarning, match="nothing is left to learn"):
        same = cls.load_query_data(ref[:40].copy(), reference)
    assert same.is_trained_ and same.history is None and same.train_args_ is None
    assert reference.convergence_ is not None  # "Training ran 1 epoch ...": the reference's
    assert model.convergence_ is None and same.convergence_ is None
    assert same.summary_string.splitlines()[1] == "Training status: Trained"
    with pytest.raises(ValueError, match="adds no new condition category"):
        dv.pl.history(same, show=False)
    # The reference's own record is untouched.
    assert len(reference.history["elbo_train"]) == 2 and reference.train_args_["max_epochs"] == 2
    assert set(model.trained_categories_["condition"]) == {"c0", "c1"}
    with pytest.raises(KeyboardInterrupt, match="interrupted after 1 of its 4 epochs"):
        model.train(max_epochs=4, callbacks=[InterruptAt(1)], **FAST)
    assert model.history["elbo_train"].index.tolist() == [0]
    assert model.train_args_["max_epochs"] == 4
    assert set(model.trained_categories_["condition"]) == {"c0", "c1", "c2"}


def test_a_query_fit_that_completed_no_epoch_leaves_the_query_model_untrained():
    """A query fit stopped before its first epoch (max_time) learnt nothing: the check
    compared its epochs with the reference's 2 and marked the query model trained, so its
    read-outs ran on weights whose new columns never trained."""
    ref, query = _split()
    model = dv.model.ZINBVAE.load_query_data(query, _reference(dv.model.ZINBVAE, ref))
    with pytest.warns(dv.train.NotConvergedWarning, match="completed no epoch"):
        model.train(max_epochs=4, max_time={"seconds": 0}, **FAST)
    assert not model.is_trained_
    with pytest.raises(RuntimeError, match="query model has not trained"):
        model.get_latent_representation()


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
def test_an_untrained_query_model_is_told_to_train_as_a_query(cls):
    """A query model read out before training raised scvi-tools' "Trying to query inferred
    values from an untrained model. Please train the model first.", which does not say that
    the reference is fine and the query model is what must train."""
    ref, query = _split()
    model = cls.load_query_data(query, _reference(cls, ref))
    calls = [model.get_latent_representation]
    if cls is dv.model.CGMDVAE:
        calls += [model.predict_labels, model.write_to_adata]
    for call in calls:
        with pytest.raises(RuntimeError, match=r"query model has not trained.*\.train\(max_"):
            call()


def test_a_query_model_trains_and_reads_minibatches_of_one_cell():
    """A query model keeps BatchNorm frozen in eval mode (load_query_data), yet train refused
    batch_size=1 ("BatchNorm layers need at least 2 cells per minibatch") and dropped a last
    minibatch of one cell each epoch. That last cell trained, under scvi-tools' advice to
    change batch_size "to avoid errors during model training": none happens, none is said."""
    ref, query = _split()
    model = dv.model.ZINBVAE.load_query_data(query[:9].copy(), _reference(dv.model.ZINBVAE, ref))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model.train(max_epochs=1, batch_size=1, train_size=1.0)
        assert model.trainer.global_step == 9
        model.train(max_epochs=1, batch_size=2, train_size=1.0)
        assert model.trainer.global_step == 5  # 9 = 4 x 2 + 1: the last cell trains too
    others = [str(w.message) for w in said if w.category is not dv.train.NotConvergedWarning]
    assert not others, others
    one = model.get_latent_representation(batch_size=1)
    np.testing.assert_allclose(one, model.get_latent_representation(), atol=1e-5)


def _cgmdvae(adata):
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    return dv.model.CGMDVAE(adata, n_latent=3, n_hidden=16, n_clusters=2)


def test_a_condition_an_earlier_fit_trained_is_still_accepted_after_a_fit_that_validated_it():
    """Trained on every cell, then again with one condition's cells all held out for
    validation: the second fit did not warn (an earlier fit had trained it), and then
    translate and sample refused it as 'never seen in training' (condition_counts_ follow the
    last split, trained_categories_ every fit's)."""
    adata = dv.datasets.synthetic_counts(n_cells=150, n_genes=20, n_conditions=3, seed=0)
    model = _cgmdvae(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs: not converged
        model.train(max_epochs=2, train_size=1.0, **FAST)
        held = np.flatnonzero(adata.obs["condition"] == "c2")
        rest = np.setdiff1d(np.arange(adata.n_obs), held)
        model.train(max_epochs=2, datasplitter_kwargs={"external_indexing": [rest, held]}, **FAST)
    # The last fit's split, what sample draws from; the categories of every fit.
    assert set(model.condition_counts_["condition"]) == {"c0", "c1"}
    assert model.condition_counts_with_validation_["condition"]["c2"] == len(held)
    assert model.trained_categories_["condition"] == ["c0", "c1", "c2"]
    # One history, the second fit's epochs numbered on; its record and restored epoch.
    assert model.history["elbo_train"].index.tolist() == [0, 1, 2, 3]
    assert model.history["elbo_validation"].index.tolist() == [2, 3]
    assert model.train_args_["train_size"] == 0.9 and model.best_epoch_ in (2, 3)
    ctrl = adata[adata.obs["condition"] == "c0"].copy()
    assert set(model.translate(ctrl, "c2", seed=0).obs["condition"]) == {"c2"}
    assert set(model.sample(10, condition="c2", seed=0).obs["condition"]) == {"c2"}


def test_a_model_loaded_onto_its_cells_and_trained_on_counts_them_once(tmp_path):
    """Saved, loaded onto the same cells and trained on: its cells were added again to the
    counts (140 'stim' cells counted as trained, twice the 70 that trained), which train()
    twice no longer did."""
    adata = dv.datasets.synthetic_counts(n_cells=120, n_genes=20, n_conditions=2, seed=0)
    model = _cgmdvae(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **FAST)
        model.save(tmp_path / "m")
        loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata)
        loaded.train(max_epochs=1, **FAST)
    conditions = adata.obs["condition"].astype(str)
    trained = conditions.iloc[loaded.train_indices].value_counts().to_dict()
    assert loaded.condition_counts_["condition"] == trained
    assert (
        loaded.condition_counts_with_validation_["condition"] == conditions.value_counts().to_dict()
    )
    assert sum(loaded.condition_combinations_.values()) == len(loaded.train_indices)


def test_a_query_models_library_sizes_are_its_reference_and_query_cells(tmp_path):
    """sample() on a trained query model drew the conditions of the reference's and the
    query's training cells but the library sizes of the query's alone: a query sequenced 4
    times deeper gave the reference's conditions' samples 4 times their libraries (log mean
    8.17 against the reference's 6.72)."""
    ref, query = _split()
    query.X = query.X * 4
    model = dv.model.CGMDVAE.load_query_data(query, _reference(dv.model.CGMDVAE, ref))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **FAST)
    logs = np.log(np.r_[np.asarray(ref.X.sum(1)).ravel(), np.asarray(query.X.sum(1)).ravel()])
    both = (logs.mean(), logs.std())
    np.testing.assert_allclose(model.library_log_stats_, both, rtol=1e-6)
    # Saved, loaded onto its query and trained on: the query's cells are not joined twice.
    model.save(tmp_path / "q")
    loaded = dv.model.CGMDVAE.load(tmp_path / "q", query)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded.train(max_epochs=1, **FAST)
    np.testing.assert_allclose(loaded.library_log_stats_, both, rtol=1e-6)
    assert loaded.condition_counts_with_validation_ == model.condition_counts_with_validation_


def test_a_query_of_a_diverged_reference_says_so_after_it_trains(tmp_path):
    """A reference whose last training diverged hands its query model its frozen weights,
    that run's last finite ones: scvi-tools copied ``diverged_`` over, and the query's first
    fit reset it, so the query's read-outs stopped warning, though no query training changes
    those weights. They say it for good: after training, after save and load, and in a
    query model of the query."""
    ref, query = _split()
    reference = _reference(dv.model.ZINBVAE, ref)
    said = "the training loss became nan at epoch 1, step 0 of 2"
    reference.diverged_ = said  # as train() leaves a run that diverged after some steps
    model = dv.model.ZINBVAE.load_query_data(query, reference)
    assert model.diverged_ is None and model.reference_diverged_ == said  # not its own
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs: not converged
        model.train(max_epochs=1, **FAST)
    frozen = r"frozen weights of a reference whose last training diverged \(the training loss"
    with pytest.warns(dv.train.NotConvergedWarning, match=frozen + ".*new reference"):
        model.get_latent_representation()
    with pytest.warns(dv.train.NotConvergedWarning, match="Saving a query model whose ref"):
        model.save(tmp_path / "q")
    loaded = dv.model.ZINBVAE.load(tmp_path / "q", query)
    with pytest.warns(dv.train.NotConvergedWarning, match=frozen):
        loaded.get_latent_representation()
    again = query[:30].copy()
    again.obs["condition"] = "c9"
    assert dv.model.ZINBVAE.load_query_data(again, loaded).reference_diverged_ == said
    assert reference.reference_diverged_ is None  # the reference's read-outs: its own only


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
@pytest.mark.parametrize("reordered", [False, True])
def test_calls_without_an_anndata_read_the_query_as_it_is_after_an_in_place_change(cls, reordered):
    """A query model reads the user's query through an AnnData of its own. After the query
    was subset in place (sc.pp.filter_cells) or its counts replaced, calls without an AnnData
    read that copy's old cells and counts: get_latent_representation() gave 80 rows for a
    query of 40 cells (so the documented query.obsm[...] = model.get_latent_representation()
    failed), predict_labels() labelled cells the query no longer holds, and train() trained
    on them, while write_to_adata() wrote the 40. Passing the query changed registered the
    user's query itself (obs["_scvi_batch"], uns["_scvi_uuid"])."""
    ref, query = _split()
    model = _reference(cls, ref)
    if reordered:
        query = query[:, ::-1].copy()
    obs, uns = list(query.obs.columns), set(query.uns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # genes in another order, said elsewhere
        q = cls.load_query_data(query, model)
        q.train(max_epochs=1, **FAST)  # one epoch: not converged
    whole = q.get_latent_representation()
    keep = np.arange(query.n_obs) % 2 == 0
    query._inplace_subset_obs(keep)  # what scanpy's filter_cells does
    z = q.get_latent_representation()
    np.testing.assert_array_equal(z, whole[keep])
    if cls is dv.model.CGMDVAE:
        labels = q.predict_labels()
        assert labels.index.equals(query.obs_names)
    np.testing.assert_array_equal(q.get_latent_representation(query), z)
    assert list(query.obs.columns) == obs and set(query.uns) == uns  # the copy registered
    query.X = query.X * 3  # other counts, the same cells
    tripled = q.get_latent_representation()
    np.testing.assert_array_equal(tripled, q.get_latent_representation(query.copy()))
    assert np.abs(tripled - z).max() > 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        q.train(max_epochs=1, **FAST)
    assert q.adata.n_obs == query.n_obs
    q.write_to_adata()
    assert query.obsm[f"X_{cls.__name__.lower()}"].shape[0] == query.n_obs
    assert list(query.obs.columns)[: len(obs)] == obs and "_scvi_uuid" not in query.uns


def test_a_query_read_after_write_to_adata_is_not_taken_for_a_changed_one():
    """Reading the query copies the columns it gained since mapping (write_to_adata's labels,
    leiden) into the model's own AnnData. They were copied as numpy arrays, so the written
    categorical columns no longer equalled the query's: every later read took the query for
    one changed since mapping and registered it anew (the user's query itself, adding
    obs["_scvi_batch"] and uns["_scvi_uuid"], before the model's own AnnData was made again
    from it instead)."""
    ref, query = _split()
    model = _reference(dv.model.CGMDVAE, ref)
    query.obs["leiden"] = pd.Categorical(np.arange(query.n_obs) % 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        q = dv.model.CGMDVAE.load_query_data(query, model)
        q.train(max_epochs=1, **FAST)
    q.write_to_adata()
    labels = q.predict_labels(query)
    own = q.adata
    for _ in range(2):
        pd.testing.assert_frame_equal(q.predict_labels(query), labels)
        assert q.adata is own  # not made again: the query did not change
    assert not [c for c in query.obs if str(c).startswith("_scvi")]
