"""Early stopping and restore_best judge the same epochs (those on the full ELBO) by the
same quantity; the history names what it holds."""

import pickle
import warnings

import numpy as np
import pytest

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "batch_size": 32}


def _model(cls=dv.model.ZINBVAE, n_cells=120, **kwargs):
    adata = dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=20, n_clusters=2, n_conditions=1, seed=1
    )
    cls.setup_anndata(adata)
    return cls(adata, **kwargs)


def _train(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dv.train.NotConvergedWarning)
        model.train(**kwargs, **TRAIN)
    return model


def _stopper(model):
    from lightning.pytorch.callbacks import EarlyStopping

    (stop,) = [cb for cb in model.trainer.callbacks if isinstance(cb, EarlyStopping)]
    return stop


def test_early_stopping_counts_no_warm_up_epoch_and_watches_what_restore_best_keeps():
    """Early stopping watched elbo_validation from epoch 0, through the KL warm-up, while
    restore_best ranked validation_loss after it: an Archetypes run took its best at epoch 2
    of a 20-epoch warm-up, stopped on the warm-up floor at epoch 24 with its ELBO still
    falling, and the two could stop and keep by different quantities. Now the first epoch on
    the full ELBO sets the best, and the patience counts from there."""
    model = _train(
        _model(n_latent=3, n_hidden=16),
        max_epochs=30, n_epochs_kl_warmup=4, early_stopping=True, early_stopping_patience=2,
        early_stopping_min_delta=1e6, restore_best=True,  # no epoch improves on the first
    )  # fmt: skip
    history = model.history
    assert len(history["elbo_train"]) == 4 + 1 + 2  # epoch 4 sets the best, then 2 more
    stop = _stopper(model)
    assert stop.monitor == "validation_loss"
    loss = history["validation_loss"]["validation_loss"]
    assert float(stop.best_score) == pytest.approx(loss.loc[4])  # not a warm-up epoch's
    assert model.best_epoch_ == int(loss.loc[4:].idxmin())


def test_print_model_names_the_epoch_restore_best_kept():
    """print(model) said "Trained, 7 epochs" of a model holding epoch 4's parameters (CGMDVAE
    restores the best epoch by default: a PBMC 3k run of 30 epochs kept epoch 25's), as the
    CLI's report says and the Python summary did not."""
    import scvi

    scvi.settings.seed = 0
    model = _train(
        _model(n_latent=3, n_hidden=16),
        max_epochs=30, n_epochs_kl_warmup=4, early_stopping=True, early_stopping_patience=2,
        early_stopping_min_delta=1e6, restore_best=True,
    )  # fmt: skip
    best = model.best_epoch_
    assert best in (4, 5) and model.history["elbo_train"].index[-1] == 6  # not the last
    assert f"Trained, 7 epochs (parameters of epoch {best}, kept by restore_best)." in str(model)
    # The last epoch kept, or none restored: nothing said.
    model = _train(_model(n_latent=3, n_hidden=16), max_epochs=3, n_epochs_kl_warmup=None)
    assert model.best_epoch_ is None and "Trained, 3 epochs." in str(model)


def test_an_early_stopping_monitor_of_the_users_is_the_one_restore_best_keeps():
    """early_stopping_monitor='kl_local_validation' stopped on that metric while restore_best
    kept the epoch of the lowest validation_loss (epoch 11 of a run whose lowest KL was at
    epoch 13): as Keras' restore_best_weights, the epoch kept is the monitored metric's best."""
    model = _train(
        _model(n_cells=80, n_latent=4, n_hidden=16),
        max_epochs=14, n_epochs_kl_warmup=3, early_stopping=True, early_stopping_patience=3,
        early_stopping_monitor="kl_local_validation", restore_best=True,
    )  # fmt: skip
    assert _stopper(model).monitor == "kl_local_validation"
    kl = model.history["kl_local_validation"]["kl_local_validation"]
    assert model.best_epoch_ == int(kl.loc[3:].idxmin())
    assert model.best_epoch_ != int(model.history["validation_loss"].iloc[3:, 0].idxmin())
    # ... in its mode: the highest is kept where higher is better.
    model = _train(
        _model(n_cells=40, n_latent=2, n_hidden=8),
        max_epochs=4, n_epochs_kl_warmup=None, early_stopping=True, restore_best=True,
        early_stopping_monitor="validation_loss", early_stopping_mode="max",
    )  # fmt: skip
    assert model.best_epoch_ == int(model.history["validation_loss"].iloc[:, 0].idxmax())


def test_a_name_the_history_does_not_hold_lists_the_names_it_holds():
    """history["train_loss_epoch"] (scvi-tools' name before 1.x's 'train_loss') raised a bare
    KeyError('train_loss_epoch'); the history, saved and loaded, stays a dict."""
    model = _train(_model(n_cells=40, n_latent=2, n_hidden=8), max_epochs=1)
    history = model.history
    with pytest.raises(KeyError, match=r"has no 'train_loss_epoch': read history\['train_loss'\]"):
        history["train_loss_epoch"]
    with pytest.raises(KeyError, match=r"did you mean 'elbo_train'.*It holds \['elbo_train', "):
        history["elbo_trian"]
    assert history.get("train_loss_epoch") is None and "train_loss" in history
    assert model.history is history and isinstance(history, dict)
    assert type(pickle.loads(pickle.dumps(history))) is dict  # saved as scvi-tools saves it
    unvalidated = _train(_model(n_cells=40, n_latent=2, n_hidden=8), max_epochs=1, train_size=1.0)
    with pytest.raises(KeyError, match=r"no 'elbo_validation': no run validated .*train_size < 1"):
        unvalidated.history["elbo_validation"]


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"early_stopping_patience": "5"}, r"early_stopping_patience must be a whole number.*'5'"),
        ({"early_stopping_patience": -1}, r"early_stopping_patience must be .* got -1"),
        ({"early_stopping_min_delta": -0.5}, r"early_stopping_min_delta must be a number of 0"),
        ({"early_stopping_mode": "minimum"}, r"early_stopping_mode must be 'min' .* 'minimum'"),
    ],
)
def test_early_stopping_arguments_that_fail_late_or_read_otherwise_are_refused(given, match):
    """patience='5' trained an epoch and failed on "'>=' not supported between instances of
    'int' and 'str'"; patience=-1 stopped as 0 and min_delta=-0.5 took a worsening as an
    improvement, in silence."""
    model = _model(n_cells=40, n_latent=2, n_hidden=8)
    with pytest.raises(ValueError, match=match):
        model.train(max_epochs=3, n_epochs_kl_warmup=None, early_stopping=True, **given, **TRAIN)
    assert not model.is_trained_


def test_early_stopping_settings_without_early_stopping_are_said_to_be_ignored():
    """early_stopping_patience=0 (with a min_delta no epoch reaches) without
    early_stopping=True trained every epoch in silence, as scvi-tools does: the user who set
    them wanted the run to stop early. Said, with the argument to pass."""
    model = _model(n_cells=40, n_latent=2, n_hidden=8)
    said = (
        r"early_stopping_min_delta=1000000.0, early_stopping_patience=0 are ignored: early "
        r"stopping is off .* nothing stops the run on them: it trains up to max_epochs, "
        r"unless a callback \(EarlyStopping\) or max_time of your own ends it sooner\. "
        r"Pass early_stopping=True to stop early"
    )
    with pytest.warns(UserWarning, match=said):
        _train(model, max_epochs=3, n_epochs_kl_warmup=None, early_stopping_patience=0,
               early_stopping_min_delta=1e6)  # fmt: skip
    assert len(model.history["elbo_train"]) == 3  # early stopping would have stopped at 2


def test_early_stopping_on_a_training_metric_checks_every_epoch_without_validation_cells():
    """Without validation cells no validation ends an epoch: a training-cell monitor is
    checked at each epoch's end, and the run stops after its patience."""
    model = _train(
        _model(n_cells=40, n_latent=2, n_hidden=8),
        max_epochs=10, train_size=1.0, n_epochs_kl_warmup=None, early_stopping=True,
        early_stopping_monitor="elbo_train", early_stopping_patience=2,
        early_stopping_min_delta=1e6,
    )  # fmt: skip
    assert len(model.history["elbo_train"]) == 1 + 2


def test_check_val_every_n_epoch_validates_or_is_refused():
    """check_val_every_n_epoch=None (scvi-tools' default) under early_stopping=True never
    validated (held-out cells unused, the run never stopped), 0 did the same, -1 and True
    validated every epoch and 2.5 failed on Lightning's MisconfigurationException; numpy's
    integers were refused by Lightning too."""
    model = _train(
        _model(n_cells=40, n_latent=2, n_hidden=8),
        max_epochs=10, n_epochs_kl_warmup=None, early_stopping=True, early_stopping_patience=1,
        early_stopping_min_delta=1e6, check_val_every_n_epoch=None,
    )  # fmt: skip
    assert list(model.history["elbo_validation"].index) == [0, 1]
    _train(model, max_epochs=4, check_val_every_n_epoch=np.int64(2))
    assert list(model.history["elbo_validation"].index) == [0, 1, 3, 5]
    for wrong in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="check_val_every_n_epoch must be a whole number"):
            model.train(max_epochs=2, check_val_every_n_epoch=wrong, **TRAIN)


def test_a_per_spot_deconvolution_stops_early_on_its_training_elbo():
    """inference='per_spot' trains every spot (no validation), and early stopping on the
    training ELBO, which needs none, was refused as if it needed validation spots."""
    cells = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=20, n_clusters=2, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=20, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spots and reference share only")
        model = dv.model.NMFDeconv.from_reference(
            spots, reference=ref, labels_key="cluster", inference="per_spot"
        )
    with pytest.raises(ValueError, match="or stop early on the training ELBO"):
        model.train(max_epochs=5, early_stopping=True)
    _train(
        model, max_epochs=30, early_stopping=True, early_stopping_monitor="elbo_train",
        early_stopping_patience=2, early_stopping_min_delta=1e6,
    )  # fmt: skip
    assert len(model.history["elbo_train"]) == 1 + 2


def test_cgmdvae_stops_by_default_once_its_validation_loss_stops_improving():
    """CGMDVAE trained every epoch of max_epochs and kept the best full-ELBO one: on PBMC 3k
    (400 epochs) it kept epoch 204-209 while the validation ELBO rose for the 190 epochs after
    it and the training ELBO fell (overfitting), the clusters unchanged. Early stopping is now
    on by default where restore_best keeps an epoch: the run ends a patience after its best
    (here early_stopping_patience=3, which before was ignored with a warning) and keeps the
    epoch the full run's first epochs would have kept."""
    import scvi

    scvi.settings.seed = 0
    short = _model(dv.model.CGMDVAE, n_cells=60, n_clusters=2, n_latent=3, n_hidden=16)
    short.train(max_epochs=40, early_stopping_patience=3, **TRAIN)
    scvi.settings.seed = 0
    full = _model(dv.model.CGMDVAE, n_cells=60, n_clusters=2, n_latent=3, n_hidden=16)
    _train(full, max_epochs=40, early_stopping=False)
    ran = len(short.history["elbo_train"])
    assert ran < 40 and len(full.history["elbo_train"]) == 40
    assert short.train_args_["early_stopping"] is True
    assert ran == short.best_epoch_ + 3 + 1  # its best, then 3 validations without a better
    loss = full.history["validation_loss"]["validation_loss"]
    np.testing.assert_allclose(short.history["validation_loss"]["validation_loss"], loss[:ran])
    assert short.best_epoch_ == int(loss.loc[20 : ran - 1].idxmin())  # warm-up: 20 of 40 epochs
    # Without validation cells, or without a kept epoch, every epoch trains.
    for off in ({"train_size": 1.0}, {"restore_best": False}):
        scvi.settings.seed = 0
        model = _model(dv.model.CGMDVAE, n_cells=60, n_clusters=2, n_latent=3, n_hidden=16)
        _train(model, max_epochs=12, **off)
        assert (
            len(model.history["elbo_train"]) == 12 and model.train_args_["early_stopping"] is False
        )
    with pytest.raises(ValueError, match="early_stopping must be True, False or 'auto'"):
        model.train(max_epochs=2, early_stopping="yes", **TRAIN)
