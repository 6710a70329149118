"""What a run logs: per-cell values on one scale for training and validation, the history of
every run kept, and the verdict of the last run alone."""

import warnings

import numpy as np
import pyro
import pytest
from lightning.pytorch.callbacks import Callback

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _spots():
    cells = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spots and reference share only")
        return dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")


def test_elbo_train_is_per_cell_where_the_last_minibatch_is_smaller():
    """elbo_train was the mean of the minibatches' per-cell losses: 40 spots in minibatches of
    16, 16 and 8 gave the 8 spots as much weight as 16, and the logged terms (per spot) no
    longer added up to it (0.3% off); the validation ELBO is per cell too."""
    model = _spots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, batch_size=16, **TRAIN)
    h = model.history
    terms = h["reconstruction_loss_train"].iloc[:, 0] + h["kl_local_train"].iloc[:, 0]
    np.testing.assert_allclose(terms.to_numpy(), h["elbo_train"].iloc[:, 0].to_numpy(), rtol=1e-5)


def _cells(n_cells=40):
    adata = dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=20, n_clusters=2, n_conditions=1, seed=1
    )
    dv.model.ZINBVAE.setup_anndata(adata)
    return adata


def test_external_indexing_sizes_the_split_not_train_size():
    """datasplitter_kwargs['external_indexing'] chose the cells, but deltavae sized the split
    from train_size: 33 training cells in minibatches of 8 left one cell alone (BatchNorm's
    'Expected more than 1 value per channel' deep in torch: drop_last was set for the 36
    cells train_size=0.9 would give), and with train_size=1.0 the validation list given was
    never validated on (no elbo_validation) and early_stopping was refused for lack of it."""
    adata = _cells()
    split = {"external_indexing": [np.arange(33), np.arange(33, 40)]}
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=8, datasplitter_kwargs=split, **TRAIN)
        assert len(model.train_indices) == 33 and "elbo_validation" in model.history
        model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
        model.train(
            max_epochs=2, train_size=1.0, early_stopping=True, datasplitter_kwargs=split, **TRAIN
        )
    assert len(model.history["elbo_validation"]) == 2


def test_a_category_only_validation_cells_hold_counts_as_untrained():
    """Validation cells give no gradient, but a batch only they held (3 cells, the first 4
    validating with shuffle_set_split=False) counted as trained: new cells of it were read
    with the weights the model was built with, in silence, where a test split's were refused."""
    adata = dv.datasets.synthetic_counts(
        n_cells=40, n_genes=20, n_clusters=2, n_conditions=1, seed=1
    )
    adata.obs["batch"] = ["rare"] * 3 + ["a"] * 37
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="batch")
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, shuffle_set_split=False, **TRAIN)
    assert model.trained_categories_ == {"batch": ["a"]}
    with pytest.raises(ValueError, match=r"holds \['rare'\]: .*validation and test cells do not"):
        model.get_latent_representation(adata[:3].copy())
    assert model.get_latent_representation(adata[3:6].copy()).shape == (3, 2)


def test_three_epochs_on_a_last_minibatch_of_two_say_nothing_false():
    """36 training cells in minibatches of 17 (a last one of 2): scvi-tools warned of 'errors
    during model training' (two cells train), and 3 epochs whose 4 validation cells' ELBO went
    102.7, 103.2, 103.8 were told 'training went unstable... train again with a lower
    learning rate': a line through 3 epochs has one degree of freedom."""
    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=3, batch_size=17, n_epochs_kl_warmup=None, **TRAIN)
    notes = [str(w.message) for w in caught]
    assert not any("small size" in note or "unstable" in note for note in notes), notes


def test_ddp_refuses_a_share_of_one_cell_per_process_before_forking():
    """2 cells on 2 DDP processes: each process's one minibatch of one cell was dropped,
    Lightning ended with 'No training batches', and the model stayed untrained in silence."""
    adata = _cells(20)[:2].copy()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with pytest.raises(ValueError, match=r"With 2 training cells on 2 processes, each process "):
        model.train(max_epochs=1, train_size=1.0, strategy="ddp", devices=2, accelerator="cpu")


def test_restore_best_under_a_max_kl_weight_below_one_names_the_epoch_it_kept():
    """plan_kwargs={'max_kl_weight': 0.7}: the history logs the KL weight in float32
    (0.69999999), so no epoch read from it was eligible: best_epoch_ was None and the user was
    told 'restore_best=True kept the last epoch's parameters', though an epoch was restored."""
    from deltavae.train._checkpoint import RestoreBestValidation

    model = dv.model.ZINBVAE(_cells(60), n_latent=2, n_hidden=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=4, restore_best=True, plan_kwargs={"max_kl_weight": 0.7}, **TRAIN)
    assert not any("restore_best=True kept the last" in str(w.message) for w in caught)
    kept = [cb for cb in model.trainer.callbacks if isinstance(cb, RestoreBestValidation)]
    assert model.best_epoch_ is not None and model.best_epoch_ == kept[0].best_epoch


def test_the_mixture_start_counts_the_training_cells_of_external_indexing():
    """CGMDVAE's mixture start counted its training cells from train_size, not from the lists
    of datasplitter_kwargs['external_indexing']: 4 training cells for 6 clusters reached
    scikit-learn's 'n_samples=4 should be >= n_clusters=6' at the start's epoch, and 36
    cells under train_size=0.1 were refused as 4."""
    adata = dv.datasets.synthetic_counts(
        n_cells=40, n_genes=20, n_clusters=2, n_conditions=1, seed=1
    )
    dv.model.CGMDVAE.setup_anndata(adata)
    few = {"external_indexing": [np.arange(4), np.arange(4, 40)]}
    model = dv.model.CGMDVAE(adata, n_clusters=6, n_latent=2, n_hidden=8)
    match = r"into 6 clusters, but only 4 cells train \(the first list of datasplitter_kwargs"
    with pytest.raises(ValueError, match=match + r".*\(a longer first list\)"):
        model.train(max_epochs=2, mixture_init_epoch=1, datasplitter_kwargs=few, **TRAIN)
    many = {"external_indexing": [np.arange(36), np.arange(36, 40)]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(
            max_epochs=2, train_size=0.1, mixture_init_epoch=1, datasplitter_kwargs=many, **TRAIN
        )
    assert len(model.train_indices) == 36


@pytest.mark.parametrize(
    "plan, match",
    [
        # scvi-tools' 'min_kl_weight=1e-06 is larger than max_kl_weight=1e-07' from inside the
        # first training step, naming a weight the user never passed.
        ({"max_kl_weight": 1e-7}, r"max_kl_weight'\]=1e-07 is below min_kl_weight=1e-06 \(its"),
        ({"max_kl_weight": 0.5, "min_kl_weight": 0.6}, r"=0.5 is below min_kl_weight=0.6, the"),
        # A rate of 0 in optim_kwargs trained nothing, in silence; -1 reached torch's Adam.
        ({"optim_kwargs": {"lr": 0}}, r"plan_kwargs\['optim_kwargs'\]\['lr'\] must be positive"),
        ({"optim_kwargs": {"weight_decay": -1}}, r"\['weight_decay'\] must be non-negative"),
        ({"optim_kwargs": {"eps": 0}}, r"\['eps'\] must be positive and finite; got 0"),
        ({"lr": 0}, r"lr must be a positive, finite number; got 0 \(plan_kwargs\['lr'\]\)"),
        # A string from a config file: TypeError "'>' not supported" in the first step.
        ({"min_kl_weight": "0.1"}, r"\['min_kl_weight'\] must be non-negative and finite; got"),
        ({"n_steps_kl_warmup": -3}, r"n_steps_kl_warmup'\] must be 0 or more steps"),
        # A config file's "False" turned the schedule on; torch's "Factor should be < 1.0."
        # from inside the fit named no argument; lr_patience=-1 cut the rate every epoch.
        ({"reduce_lr_on_plateau": "False"}, r"\['reduce_lr_on_plateau'\] must be True or F"),
        ({"reduce_lr_on_plateau": True, "lr_factor": 2}, r"\['lr_factor'\] must be a number "),
        ({"lr_patience": -1}, r"\['lr_patience'\] must be a whole number of 0 or more; got -1"),
        ({"lr_min": float("nan")}, r"\['lr_min'\] must be a finite number of 0 or more"),
        # Pyro's scale handler: "Expected scale > 0 but got 0.0" inside the first step.
        (
            {"min_kl_weight": 0, "loss_fn": pyro.infer.TraceMeanField_ELBO()},
            r"min_kl_weight'\]=0 with loss_fn=TraceMeanField_ELBO: .*e\.g\. 1e-6",
        ),
    ],
)
def test_plan_numbers_are_refused_before_training(plan, match):
    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    with pytest.raises(ValueError, match=match):
        model.train(max_epochs=2, plan_kwargs=plan, **TRAIN)
    assert not model.is_trained_


def test_history_names_are_scvi_tools_defaults_and_per_step_logging_is_refused_by_name():
    """scvi-tools 1.4's SCVI logs 'train_loss' (train_loss_epoch/_step only under
    plan_kwargs={'on_step': True}), as deltavae does; on_step (or a misspelled plan key) gave
    'LowLevelPyroTrainingPlan.__init__() got an unexpected keyword argument', a class the user
    never called."""
    import scvi

    adata = _cells()
    scvi.model.SCVI.setup_anndata(adata)
    reference = scvi.model.SCVI(adata, n_latent=2, n_hidden=8)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's logging interval, one epoch too few
        reference.train(max_epochs=1, **TRAIN)
        model.train(max_epochs=1, **TRAIN)
    assert {"train_loss", "elbo_train"} <= set(reference.history) & set(model.history)
    assert "train_loss_epoch" in dv.model.ZINBVAE.history.__doc__
    with pytest.raises(TypeError, match=r"plan_kwargs\['on_step'\]: deltavae logs every metric"):
        model.train(max_epochs=1, plan_kwargs={"on_step": True}, **TRAIN)
    with pytest.raises(TypeError, match=r"unexpected key 'max_kl_weigth': did you mean 'max_kl"):
        model.train(max_epochs=1, plan_kwargs={"max_kl_weigth": 0.5}, **TRAIN)


def test_optimiser_settings_and_plan_kwargs_that_are_no_dict_are_refused_before_training():
    """A misspelled optimiser setting reached torch inside the fit ("Adam.__init__() got an
    unexpected keyword argument 'weight_decy'"), after the call had replaced the trained
    model's train_args_ and split with its own; plan_kwargs as text failed with "dictionary
    update sequence element #0 has length 1; 2 is required" (a spot model's with "'str'
    object has no attribute 'get'")."""
    import torch

    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dv.train.NotConvergedWarning)
        model.train(max_epochs=2, **TRAIN)
    record, trained = dict(model.train_args_), model.train_indices.copy()
    refused = {
        r"\['optim_kwargs'\]\['weight_decy'\] is no setting of Adam.*'weight_decay'": {
            "optim_kwargs": {"weight_decy": 1e-4}
        },
        r"\['optim_kwargs'\]\['lrr'\] is no setting of AdamW.*did you mean 'lr'": {
            "optimizer": "AdamW", "optim_kwargs": {"lrr": 1e-3},
        },
        r"plan_kwargs\['eps'\] is no setting of SGD": {"optim": torch.optim.SGD, "eps": 0.1},
        r"plan_kwargs must be a dict .*got 'lr=1e-3' \(str\)": "lr=1e-3",
        r"\['optim_kwargs'\] must be a dict .*\(list\)": {"optim_kwargs": [("lr", 1e-3)]},
    }  # fmt: skip
    for match, plan in refused.items():
        with pytest.raises(TypeError, match=match):
            model.train(max_epochs=5, train_size=0.5, plan_kwargs=plan, **TRAIN)
    assert model.train_args_ == record and np.array_equal(model.train_indices, trained)
    with pytest.raises(TypeError, match=r"plan_kwargs must be a dict .*\(str\)"):
        _spots().train(max_epochs=1, plan_kwargs="lr=0.01", **TRAIN)


class _RaiseAtStart(Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("a callback of the user's")


def test_a_fit_that_fails_before_its_first_step_keeps_the_record_of_the_run_that_trained():
    """A fit that failed before any step (a callback raising at the start, an
    optimizer_creator returning no optimiser, torch refusing lr_factor=2) left a trained
    model with the failed call's train_args_ (max_epochs=7), its split (20 of 40 cells as
    the training cells read-outs and save use, none of which trained) and no verdict."""
    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dv.train.NotConvergedWarning)
        model.train(max_epochs=2, **TRAIN)
    kept = (dict(model.train_args_), model.train_indices.copy(), model.convergence_)
    assert kept[2] is not None
    with pytest.raises(RuntimeError, match="a callback of the user's"):
        model.train(max_epochs=7, train_size=0.5, callbacks=[_RaiseAtStart()], **TRAIN)
    creator = {"optimizer": "Custom", "optimizer_creator": lambda params: None}
    with pytest.raises(TypeError, match="optimizer_creator returned NoneType"):
        model.train(max_epochs=7, train_size=0.5, plan_kwargs=creator, **TRAIN)
    assert model.train_args_ == kept[0] and model.convergence_ == kept[2]
    np.testing.assert_array_equal(model.train_indices, kept[1])
    assert model.is_trained_ and len(model.history["elbo_train"]) == 2
    fresh = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    with pytest.raises(RuntimeError, match="a callback of the user's"):
        fresh.train(max_epochs=7, callbacks=[_RaiseAtStart()], **TRAIN)
    assert fresh.train_args_ is None and not fresh.is_trained_


def test_one_listed_training_cell_is_told_to_lengthen_the_list_not_train_size():
    """One training cell chosen by datasplitter_kwargs['external_indexing'] was told 'a larger
    train_size (now 0.9)', which the lists override."""
    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    split = {"external_indexing": [np.arange(1), np.arange(1, 40)]}
    with pytest.raises(ValueError, match=r"and 1 training cells\. .*a longer first list of "):
        model.train(max_epochs=1, datasplitter_kwargs=split, **TRAIN)


def test_no_listed_validation_cells_are_told_to_list_them_not_train_size():
    """restore_best=True or early_stopping=True with external_indexing's lists holding no
    validation cells were told 'pass train_size < 1', which the lists override."""
    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    split = {"external_indexing": [np.arange(40)]}
    for asked in ({"restore_best": True}, {"early_stopping": True}):
        with pytest.raises(ValueError, match=r"has no second list of cells\): list the valid"):
            model.train(max_epochs=1, datasplitter_kwargs=split, **asked, **TRAIN)


def test_min_kl_weight_0_refused_for_a_module_without_torch_side_elbo():
    """A custom module without a torch-side ELBO trains through Pyro's scale handler: it met
    Pyro's raw "Expected scale > 0 but got 0.0" in the first step."""
    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    model.module.has_torch_elbo = False
    with pytest.raises(ValueError, match=r"min_kl_weight'\]=0 with ZINBVAEModule, which has no"):
        model.train(max_epochs=1, plan_kwargs={"min_kl_weight": 0}, **TRAIN)


def test_min_kl_weight_0_trains_on_the_torch_side_elbo():
    """The plan's docstring said Pyro needs min_kl_weight positive; the default torch-side
    ELBO trains from a KL weight of 0."""
    model = dv.model.ZINBVAE(_cells(), n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, n_epochs_kl_warmup=2, plan_kwargs={"min_kl_weight": 0}, **TRAIN)
    assert model.history["kl_weight"].iloc[:, 0].tolist() == [0.0, 0.5]


def test_external_indexing_refuses_split_options_it_leaves_unread_and_reads_plain_lists():
    """With datasplitter_kwargs['external_indexing'], scvi-tools dropped shuffle_set_split and
    validation_size in silence; refused lists of ints ('not a np.array') and boolean masks
    ('duplicate indexing'); raised a bare Warning for cells in no list; and lengthened the
    user's list to three items in place; and train_args_ kept a repr of each array."""
    adata = _cells()
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    halves = [np.arange(30), np.arange(30, 40)]
    for unread in ({"shuffle_set_split": False}, {"validation_size": 0.1}):
        with pytest.raises(ValueError, match=rf"{next(iter(unread))}=.* cannot apply: .*lists"):
            model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": halves}, **unread)
    # train_size beside the lists was read by nothing, in silence (plan_kwargs stops the call)
    with pytest.warns(UserWarning, match=r"train_size=0.5 is not read: .*wins \(30 training, 10"):
        with pytest.raises(TypeError, match="plan_kwargs"):
            split = {"external_indexing": halves}
            model.train(1, train_size=0.5, plan_kwargs={"bogus": 1}, datasplitter_kwargs=split)
    # scvi-tools: "got multiple values for keyword argument 'batch_size'"; torch: "Default
    # process group has not been initialized".
    for key, instead in (("batch_size", "train\\(batch_size="), ("distributed_sampler", "ddp")):
        with pytest.raises(ValueError, match=rf"datasplitter_kwargs\['{key}'\] .*{instead}"):
            model.train(max_epochs=1, datasplitter_kwargs={key: 16})
    with pytest.raises(ValueError, match=r"leaves 10 of the 40 cells in no list.* third"):
        model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": halves[:1]})
    with pytest.raises(ValueError, match=r"validation cell positions outside the 40 cells"):
        model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": [halves[0], [41]]})
    mask = np.arange(40) < 30
    split = [list(range(30)), ~mask]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": split}, **TRAIN)
    assert len(split) == 2 and sorted(model.validation_indices) == list(range(30, 40))
    # train_args_ kept the mask's repr, cut to "..." past 1,000 cells
    assert model.train_args_["datasplitter_kwargs"]["external_indexing"][1] == (~mask).tolist()
