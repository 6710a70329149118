"""Every fit path of the package (the VAEs, the spot models, saving) says when a run
diverged or stopped short, and stays quiet on a normal run."""

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from _poison import PoisonAt

import deltavae as dv
from deltavae.train import TrainingDivergedError

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _cells(n_cells=120, n_genes=40, n_clusters=3, seed=1):
    return dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=n_genes, n_clusters=n_clusters, n_conditions=1, seed=seed
    )


def _nmf_reference():
    spots, ref = dv.datasets.pseudo_spots(_cells(), "cluster", n_spots=40, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spots and reference share only")
        return dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")


def _nmf_free():
    spots, _ = dv.datasets.pseudo_spots(_cells(), "cluster", n_spots=40, seed=3)
    dv.model.NMFDeconv.setup_anndata(spots)
    return dv.model.NMFDeconv(spots, n_components=3)


def _archetypes():
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    return dv.model.Archetypes(mix, n_archetypes=3, n_hidden=16)


def _imputer():
    spots, ref = dv.datasets.pseudo_spots(_cells(), "cluster", n_spots=40, seed=3)
    spatial = ad.AnnData(
        X=spots[:, :-10].X.copy(),
        obs=pd.DataFrame(index=spots.obs_names),
        var=pd.DataFrame(index=spots.var_names[:-10]),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spots and reference share only")
        return dv.model.SpatialImputer.from_reference(spatial, reference=ref, labels_key="cluster")


SPOT_MODELS = {
    "nmf_reference": _nmf_reference,
    "nmf_free": _nmf_free,
    "archetypes": _archetypes,
    "imputer": _imputer,
}


@pytest.mark.parametrize("which", SPOT_MODELS)
def test_spot_models_take_a_rate_from_plan_kwargs(which):
    """plan_kwargs={"lr": ...} alone was refused ("lr=0.005 and plan_kwargs['lr']=100
    disagree") against the default rate the spot model filled in for lr; a huge rate given
    there must train at that rate, and stop loudly."""
    model = SPOT_MODELS[which]()
    model.train(max_epochs=1, plan_kwargs={"optim_kwargs": {"lr": 0.01}}, **TRAIN)
    assert model.train_args_["lr"] == 0.01
    with pytest.raises(TrainingDivergedError, match=r"this run used lr=1e\+06"):
        model.train(max_epochs=5, plan_kwargs={"lr": 1e6}, **TRAIN)


def test_a_count_models_run_that_started_far_off_is_still_judged_on_its_elbos_size(monkeypatch):
    """A ZINBVAE at lr=1 (200 cells, 100 epochs): its first epoch's ELBO was 2.2e7, and its
    last 25 epochs fell from 2,252 to 1,056 (a good run ends near 180), yet it passed as
    converged: its falls were measured against a tenth of the first epoch's fall."""
    from deltavae.train._convergence import still_improving

    epochs = np.arange(100)
    elbo = 1000 + 2.2e7 * np.exp(-epochs / 4) + 4000 * np.exp(-epochs / 15)
    index = pd.RangeIndex(100, name="epoch")
    history = {"elbo_validation": pd.DataFrame({"elbo_validation": elbo}, index=index)}
    assert "still improving" in still_improving(history, 100, sized=True)
    # A count model's run is judged so; a Normal likelihood's ELBO near 0 is not (D5).
    adata = _cells(n_cells=60)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    seen = []
    monkeypatch.setattr(
        "deltavae.model._verdicts.still_improving", lambda *a, **kw: seen.append(kw["sized"])
    )
    model.train(max_epochs=1, **TRAIN)
    assert seen == [True]


def test_saving_a_diverged_model_warns_and_nan_parameters_are_refused(tmp_path):
    """A diverged model was saved without a word (only a read-out after loading said so),
    and NaN parameters were saved as they were."""
    adata = _cells(n_cells=60)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with pytest.raises(TrainingDivergedError):
        model.train(max_epochs=4, callbacks=[PoisonAt(1)], **TRAIN)
    said = r"Saving a model whose last training diverged \(the .* loss became nan"
    with pytest.warns(dv.train.NotConvergedWarning, match=said + ".*lower learning rate"):
        model.save(tmp_path / "diverged")
    with torch.no_grad():
        next(model.module.parameters())[0] = float("nan")
    with pytest.raises(ValueError, match=r"parameters \[.*\] hold NaN or infinite values"):
        model.save(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    # A model trained to the end saves quietly.
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    model.train(max_epochs=1, **TRAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save(tmp_path / "fine")


def test_empty_clusters_after_a_run_at_a_huge_rate_name_the_rate(monkeypatch):
    """CGMDVAE at lr=1 (200 cells, 60 epochs) ended with an empty cluster, and the note said
    only that training was too short: at 1,000 times the default rate more epochs do not help."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=30, n_clusters=3, n_conditions=2)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=2, n_hidden=8)
    model.train(max_epochs=1, lr=0.05, mixture_init_epoch=None, **TRAIN)
    monkeypatch.setattr(type(model), "predict_clusters", lambda self, *a, **k: np.array([0, 2]))
    note = r"training was too short.* learning rate \(lr=0\.05\) is 50 times the default"
    with pytest.warns(UserWarning, match=note):
        model._warn_if_clusters_empty(1)


def test_a_loss_not_finite_before_any_update_blames_no_learning_rate():
    """A count that overflows (3e38) made the very first loss NaN, from the starting
    parameters, and the error advised a lower learning rate (lr=0.0001), which cannot help."""
    adata = _cells(n_cells=60)
    counts = adata.X.toarray().astype(np.float32)
    counts[3, 4] = 3e38
    adata.X = counts
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with pytest.raises(TrainingDivergedError) as info:
        model.train(max_epochs=2, train_size=1.0, batch_size=64, **TRAIN)
    message = str(info.value)
    assert "at epoch 0, step 0 of 1, before any update" in message
    assert "No learning rate can help" in message and "lower learning rate" not in message
    assert "Check the data for values the likelihood cannot take" in message
    assert not model.is_trained_


@pytest.mark.parametrize(("rate", "advised"), [(0.03, "0.003"), (0.5, "0.02"), (1e-3, "0.0001")])
def test_diverged_advice_is_a_tenth_of_the_rate_or_the_models_default(rate, advised):
    """A spot model (NMFDeconv fitted per spot, default lr=0.02) diverged at lr=0.03 was told
    to train at lr=0.001, the VAEs' default, whatever its rate above 0.01: a tenth of the rate
    that diverged now, or the model's own default where that is lower."""
    spots, ref = dv.datasets.pseudo_spots(_cells(), "cluster", n_spots=20, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spots and reference share only")
        model = dv.model.NMFDeconv.from_reference(
            spots, reference=ref, labels_key="cluster", inference="per_spot"
        )
    with pytest.raises(TrainingDivergedError) as info:
        model.train(max_epochs=3, lr=rate, callbacks=[PoisonAt(1)], **TRAIN)
    assert f"e.g. train(lr={advised}) (this run used lr={rate:g})" in str(info.value)


@pytest.mark.parametrize("which", ["nmf_reference", "nmf_free"])
def test_a_deconvolution_whose_types_ran_off_at_a_high_rate_says_so(which):
    """NMFDeconv at 20 to 40 times its default rate put every spot on one type (the other
    types at the floor, 1e-5, everywhere), its ELBO flat 5-8% above the default rate's, and
    said nothing."""
    model = SPOT_MODELS[which]()
    with pytest.warns(dv.train.NotConvergedWarning) as record:
        model.train(max_epochs=20, lr=0.2, **TRAIN)
    (note,) = [str(w.message) for w in record if "no share" in str(w.message)]
    assert re.match(r"2 of 3 types have no share \(under 0\.001\) in any spot after training", note)
    assert "lr=0.2, 40 times the model's default 0.005" in note
    assert "Train again with the default rate (lr=0.005)" in note
    assert (model.get_proportions().max() < 1e-3).sum() == 2


def test_a_type_that_ran_off_at_ten_times_the_default_rate_is_said():
    """At lr=0.05 (10 times NMFDeconv's default, the imputer's default) a type ran off to no
    share in any spot, in silence: the check ran only above 10 times the default."""
    model = SPOT_MODELS["nmf_reference"]()
    with pytest.warns(dv.train.NotConvergedWarning, match=r"^1 of 3 types have no share"):
        model.train(max_epochs=40, lr=0.05, **TRAIN)
    assert (model.get_proportions().max() < 1e-3).sum() == 1


def test_a_deconvolution_at_its_default_rate_keeps_every_type_quietly():
    model = SPOT_MODELS["nmf_reference"]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=20, **TRAIN)
    assert not any("no share" in str(w.message) for w in caught)


def test_a_cgmdvae_run_that_diverged_says_so_once_in_its_error():
    """CGMDVAE (semi-supervised, lr=1: its validation loss NaN after the first epoch) warned
    "This model's last training diverged" right before raising TrainingDivergedError, which
    said the same: the records of the fit read its clusters, and the read-out warned. The error
    alone says it; the model's read-outs after it still do."""
    adata = _cells()
    adata.obs["label"] = adata.obs["cluster"].astype(str)
    adata.obs.loc[adata.obs_names[::2], "label"] = "Unknown"
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=2, n_hidden=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingDivergedError, match="keeps the last parameters"):
            model.train(max_epochs=3, callbacks=[PoisonAt(1)], **TRAIN)
    said = [str(w.message) for w in caught if "diverged" in str(w.message)]
    assert said == []
    assert model.library_log_stats_ is not None  # the fit's records were still kept
    with pytest.warns(dv.train.NotConvergedWarning, match="This model's last training diverged"):
        model.predict_clusters()


def test_a_run_that_went_unstable_is_not_told_its_empty_clusters_need_more_epochs():
    """CGMDVAE at lr=0.1 (200 cells, 20 epochs) warned that its validation ELBO ended far
    above its best (training went unstable: train again at a lower rate), then that 7 of 10
    clusters were empty, "if 10, training was too short. Train longer": advice the first
    warning had just refuted. The run's warning alone is said."""
    adata = dv.datasets.synthetic_counts(n_cells=200, n_genes=50, seed=0)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=20, lr=0.1, **TRAIN)
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("Training went unstable" in s for s in said), said
    assert not [s for s in said if "clusters are empty" in s], said
    assert len(np.unique(model.predict_clusters())) < model.module.n_clusters  # empty ones
