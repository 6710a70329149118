"""What a run's end says: a run inside its KL warm-up names the warm-up's length and the
argument that set it; a loss not finite on the validation cells points at them when the
parameters kept give it too, and at the learning rate when they do not."""

import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import deltavae as dv
from deltavae.train import NotConvergedWarning, TrainingDivergedError

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _model(huge: float | None = None):
    adata = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=30, n_clusters=3, n_conditions=1, seed=1
    )
    if huge is not None:
        counts = adata.X.toarray().astype(np.float32)
        counts[0, 0] = huge  # cell 0 validates with shuffle_set_split=False
        adata.X = counts
    dv.model.ZINBVAE.setup_anndata(adata)
    return dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)


def _notes(model, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(**kwargs, **TRAIN)
    return [str(w.message) for w in caught if issubclass(w.category, NotConvergedWarning)]


def test_a_run_inside_the_auto_warm_up_names_its_length_and_argument():
    """train(max_epochs=1) was told to 'Train longer than n_epochs_kl_warmup', an argument
    never set: the warm-up 'auto' chose (1 epoch, a quarter of max_epochs) is named."""
    note = (
        r"The warm-up lasts 1 epoch \(n_epochs_kl_warmup='auto': a quarter of max_epochs, at "
        r"least 1\); this run trained 1 epoch\. Train longer \(a larger max_epochs\), or pass "
        r"n_epochs_kl_warmup=None to train on the full ELBO from the start\.$"
    )
    with pytest.warns(NotConvergedWarning, match=note):
        _model().train(max_epochs=1, **TRAIN)


def test_a_run_inside_a_given_warm_up_names_it():
    note = (
        r"warm-up lasts 5 epochs \(n_epochs_kl_warmup=5\); this run trained 2 epochs\. Pass "
        r"a max_epochs above 5, or a smaller n_epochs_kl_warmup"
    )
    with pytest.warns(NotConvergedWarning, match=note):
        _model().train(max_epochs=2, n_epochs_kl_warmup=5, **TRAIN)
    steps = r"lasts 40 steps \(plan_kwargs\['n_steps_kl_warmup'\]\), 40 epochs of 1 step;"
    with pytest.warns(NotConvergedWarning, match=steps):  # 54 cells: one step an epoch
        _model().train(max_epochs=2, plan_kwargs={"n_steps_kl_warmup": 40}, **TRAIN)


def test_a_run_past_its_warm_up_says_nothing_of_it():
    notes = _notes(_model(), max_epochs=5)  # 1 epoch of warm-up, 4 on the full ELBO
    assert not any("warm-up" in note for note in notes)


@pytest.mark.parametrize("batch_size", [128, 8])
def test_a_validation_loss_not_finite_from_the_data_points_at_the_cells(batch_size):
    """A count that overflows in a validation cell made the validation loss NaN after the
    first epoch: the error blamed the learning rate ('the first updates already diverged'),
    though the run's starting parameters give it too. With 7 steps an epoch the parameters
    kept are those of a later step, put back after the check."""
    model, plans = _model(huge=3e38), []

    class Plan(Callback):
        def on_train_start(self, trainer, plan):
            plans.append(plan)

    with pytest.raises(TrainingDivergedError) as info:
        model.train(
            max_epochs=2, batch_size=batch_size, shuffle_set_split=False, callbacks=Plan(), **TRAIN
        )
    message = str(info.value)
    assert 0 in model.validation_indices
    kept = "from before this training run" if batch_size == 128 else "(epoch 0, step 6)"
    assert f"{kept}. No learning rate can help: the parameters the run started" in message
    assert "Check those cells for values the likelihood cannot take" in message
    assert "first updates already diverged" not in message and "lower learning" not in message
    # The parameters kept are back after the check with the starting ones.
    now, kept_state = dict(model.module.named_parameters()), plans[0]._finite_state
    assert all(torch.equal(now[k].detach(), kept_state[k]) for k in now)
    start = plans[0]._start_state
    assert any(not torch.equal(now[k].detach(), start[k]) for k in now) == (batch_size == 8)


def test_a_validation_loss_not_finite_from_a_huge_rate_blames_the_rate():
    with pytest.raises(TrainingDivergedError) as info:
        _model().train(max_epochs=2, lr=100.0, **TRAIN)
    message = str(info.value)
    assert "validation loss became nan" in message
    assert "the first updates already diverged). Train again with a lower learning" in message
    assert "validation cells" not in message
