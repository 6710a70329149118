"""What a run's end says: a run inside its KL warm-up names the warm-up's length and the
argument that set it; a loss not finite on the validation cells points at them when the
parameters kept give it too, and at the learning rate when they do not."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scvi
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


def _normal_model():
    import scanpy as sc

    adata = dv.datasets.synthetic_counts(
        n_cells=80, n_genes=30, n_clusters=3, n_conditions=1, seed=1
    )
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    dv.model.CGMDVAE.setup_anndata(adata)
    return dv.model.CGMDVAE(adata, n_clusters=3, n_latent=2, n_hidden=8, likelihood="normal")


def test_a_normal_likelihoods_exploding_validation_elbo_is_not_silent():
    """CGMDVAE(likelihood="normal") at lr=0.1 on log-normalised cells: the validation ELBO
    fell to 110, then rose to 13,472 (BatchNorm's running statistics blown), and restore_best
    kept an epoch at 347: no warning, as it neither fell nor stayed flat."""
    note = (
        # Numbers of one run (one torch thread: 347.3 at epoch 6 against 110 at epoch 3; two
        # threads: 110.1), so only their form is matched.
        r"The validation ELBO ended far above its best: [\d.,]+ at epoch \d+, the one "
        r"restore_best kept, against [\d.,]+ at epoch \d+(, an epoch restore_best could not keep "
        r"\(it keeps only epochs on the full ELBO, after the mixture start: here from epoch \d+ "
        r"on; .*\))?\. Training went unstable .* Train again "
        r"with a lower learning rate than this run's lr=0\.1, on a model built anew\.$"
    )
    with pytest.warns(NotConvergedWarning, match=note):
        _normal_model().train(max_epochs=12, lr=0.1, **TRAIN)


def _history(values, name="elbo_validation"):
    import pandas as pd

    index = pd.RangeIndex(len(values), name="epoch")
    return {name: pd.DataFrame({name: np.asarray(values, dtype=float)}, index=index)}


def test_the_rise_rule_spares_overfitting_and_names_a_training_elbos_rise():
    from deltavae.train._convergence import still_improving

    # A healthy run that overfits: its validation ELBO ends 7% above its best (CGMDVAE
    # normal, 100 cells, 300 epochs, restore_best off: the most measured).
    overfit = np.r_[np.linspace(600, 120, 100), np.linspace(120, 128.6, 200)]
    assert still_improving(_history(overfit), 300) is None
    # NMFDeconv at lr=5: its training ELBO (the objective minimised) left 195 at its first
    # epoch for 2,000 and was falling back at 760 when it ended: 'still improving' at best.
    rose = np.r_[195.4, np.linspace(1655, 2023, 30), np.geomspace(2023, 757, 169)]
    note = still_improving(_history(rose, "elbo_train"), 200, lr=5.0, sized=True)
    assert note.startswith("The training ELBO ended far above its best: ")
    assert "against 195.4 at epoch 0" in note and "than this run's lr=5," in note
    assert "restore_best" not in note  # the training ELBO: no validation cells


def test_a_validation_elbo_blown_up_in_eval_mode_while_training_fell_says_train_longer():
    """ZINBVAE on 200 mESC cells (2 steps an epoch, default lr): the training ELBO fell from
    5,077 to 3,660 in 30 epochs while the eval-mode validation ELBO rose to 9.6e6 and ended at
    3.9e4 (BatchNorm's running statistics trailing the weights; 70 epochs more brought it to
    3,900). It was told 'a learning rate too high ... train again with a lower learning rate',
    which hardly trains in as many epochs, instead of training longer."""
    import pandas as pd

    from deltavae.train._convergence import still_improving

    validation = np.r_[5377, 5569, 6802, 1.4e4, 7.8e5, 4.2e6, 9.6e6, 1.8e6, 1.3e5, 7.5e4, 3.9e4]
    training = np.linspace(5077, 3660, len(validation))
    history = {**_history(validation), **_history(training, "elbo_train")}
    history["kl_weight"] = pd.DataFrame(
        {"kl_weight": np.ones(len(validation))}, index=history["elbo_train"].index
    )
    note = still_improving(history, 30, lr=1e-3, sized=True, batch_norm=True)
    assert note.startswith("The validation ELBO ended far above its best: ")
    assert "The training ELBO fell to its best meanwhile (5077 to 3660)" in note
    assert "lower learning rate" not in note and "went unstable" not in note
    assert "a max_epochs above this run's 30, or call train again" in note
    # CGMDVAE on the same cells (restore_best kept its last epoch, 7,099 against 4,429).
    kept = still_improving(history, 30, lr=1e-3, sized=True, kept_epoch=10, batch_norm=True)
    assert "the one restore_best kept" in kept and "fell to its best meanwhile" in kept
    # At ten times the default rate and more, or with a training ELBO that rose too, the
    # rate is still what is named.
    assert "lower learning rate than this run's lr=0.1" in still_improving(
        history, 30, lr=0.1, sized=True, batch_norm=True
    )
    # A model without BatchNorm (the spot models) has no running statistics to lag.
    assert "lower learning rate" in still_improving(history, 30, lr=1e-3, sized=True)
    history.update(_history(training[::-1], "elbo_train"))
    rose = still_improving(history, 30, lr=1e-3, sized=True, batch_norm=True)
    assert "lower learning rate" in rose


def test_under_ddp_a_validation_loss_not_finite_from_the_data_points_at_the_cells(monkeypatch):
    """Under DDP the check with the starting parameters was skipped: a count that overflows
    in a held-out cell was blamed on the learning rate. Each process now checks its own
    validation cells and all agree (here one process, posing as one of two: the all-reduce
    of the agreement is the identity)."""
    import lightning.pytorch as pl
    import torch.distributed as dist

    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda self: 2))
    reduced = []
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None: reduced.append(op))
    model = _model(huge=3e38)
    with pytest.raises(TrainingDivergedError) as info:
        model.train(max_epochs=2, shuffle_set_split=False, **TRAIN)
    message = str(info.value)
    assert "validation loss became nan after epoch 0's training steps" in message
    assert "No learning rate can help: the parameters the run started from give it" in message
    assert "lower learning rate" not in message
    assert reduced.count(dist.ReduceOp.MAX) == 2  # the losses' read, then the agreement
    # The calling process keeps the parameters it had before the run (the workers' do not
    # come back): said also where the message points at the data, not the rate.
    from torch.multiprocessing import ProcessRaisedException

    from deltavae.train._distributed import _worker_divergence

    worker = message.replace("its parameters from before this training run", "the last "
                             "parameters that gave a finite loss (epoch 1, step 3)")  # fmt: skip
    text = f"Traceback ...\ndeltavae.train._divergence.TrainingDivergedError: {worker}"
    found = str(_worker_divergence(ProcessRaisedException(text, 0, 1)))
    assert "(epoch 1, step 3)" not in found
    assert "keeps its parameters from before this training run (DDP's worker" in found


def test_read_outs_far_off_after_a_run_without_validation_cells_are_not_silent():
    """CGMDVAE(likelihood="normal") at lr=0.5, every cell training: a training ELBO of 113,
    read-outs (eval mode: BatchNorm's running statistics ran off) reconstructing at 2,879 and
    a latent space 110 wide, in silence: nothing measured the model in eval mode. (Its
    training ELBO rose at the end too: the read-outs are that verdict's evidence, in its one
    warning; alone, the read-outs' own, as read_outs_off's message says them below.)"""
    model = _normal_model()
    note = (
        r"training went unstable, .* Its read-outs \(in eval mode\) are off too: they "
        r"reconstruct its training cells far worse than training did, a reconstruction error "
        r"of [\d.e+]+ per cell against a negative ELBO of [\d.e+]+ in the last epoch \(BatchNorm's "
        r"running statistics ran off\)\. Train again with a lower learning rate than this run's "
        r"lr=0\.5, on a model built anew\.$"
    )
    with pytest.warns(NotConvergedWarning, match=note):
        model.train(max_epochs=12, lr=0.5, train_size=1.0, **TRAIN)
    # The check draws nothing from torch's global random state.
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    from deltavae.model._verdicts import read_outs_off

    alone = r"^After training, the model's read-outs .* hold cells out for validation"
    assert re.search(alone, read_outs_off(model, model.history, 0.5).message)
    assert torch.equal(torch.rand(1), before)


def test_a_training_elbo_rising_at_the_end_is_not_silent():
    """NMFDeconv at lr=5: its training ELBO fell to 194, then rose from 237 to 258 over its
    last 5 epochs (under the 'far above' rule's 25% of its best), and the run passed: a line
    rising is not 'still improving'."""
    from deltavae.train._convergence import still_improving

    rising = np.r_[np.linspace(198.5, 194.2, 140), np.linspace(200.0, 240.0, 60)]
    note = still_improving(_history(rising, "elbo_train"), 200, lr=5.0, sized=True)
    assert note.startswith("The training ELBO was rising when training stopped (")
    assert "over the last 66 epochs, from 194.4 to 240): training went unstable" in note
    assert note.endswith("Train again with a lower learning rate than this run's lr=5, on a "
                         "model built anew.")  # fmt: skip
    # Where restore_best kept the best epoch, a validation ELBO that rose after it is that
    # callback's business: nothing is said.
    assert still_improving(_history(rising), 200, kept_epoch=139) is None


def test_under_ddp_a_run_early_stopping_ended_gets_the_patience_advice():
    """Under DDP the callbacks run in the worker processes: the caller's EarlyStopping never
    fires, and a run it stopped after 5 of 30 epochs was told 'pass a max_epochs above this
    run's 30, with early_stopping=True'. What stopped the run now comes back in the callback
    metrics (which Lightning hands back from the workers); here one process, its callback
    reset as the caller's copy is."""
    from lightning.pytorch.callbacks import EarlyStopping

    from deltavae.train._convergence import still_improving

    stop = EarlyStopping("elbo_validation", min_delta=50.0, patience=3)
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        model.train(max_epochs=30, callbacks=[stop], n_epochs_kl_warmup=None, **TRAIN)
    fired = stop.stopped_epoch
    assert 0 < fired < 29
    stop.stopped_epoch = 0  # the caller's copy under DDP
    falling = {"elbo_validation": model.history["elbo_validation"] * 0}
    falling["elbo_validation"]["elbo_validation"] = 100.0 - 10 * np.arange(fired + 1)
    note = still_improving(falling, 30, trainer=model.trainer)
    assert f"Early stopping ended the run after epoch {fired}, before the ELBO" in note
    assert "pass a max_epochs above" not in note


def test_verdicts_count_validation_checks_where_validation_skips_epochs():
    """With check_val_every_n_epoch=5 the notes said 'over the last 10 epochs' of 10 checks
    (50 epochs), and a rate 'per 10 epochs' that was per 10 checks: five times too fast."""
    from deltavae.train._convergence import still_improving

    def every_5(values):
        epochs = pd.Index(np.arange(len(values)) * 5 + 4, name="epoch")
        return {"elbo_validation": pd.DataFrame({"elbo_validation": values}, index=epochs)}

    note = still_improving(every_5(1000 - 5 * np.arange(30.0)), 150)
    assert "(1.17% per 10 epochs over the last 10 validation checks, one every 5 epochs)" in note
    rose = np.r_[np.linspace(1000, 500, 20), np.linspace(500, 800, 10)]
    note = still_improving(every_5(rose), 150)
    assert "766.7 (the median of its last 3 validation checks, one every 5 epochs)" in note
    # Every epoch validated: the words and the rate as before.
    falling = {"elbo_validation": every_5(1000 - 5 * np.arange(30.0))["elbo_validation"]}
    falling["elbo_validation"].index = pd.RangeIndex(30, name="epoch")
    assert "(5.85% per 10 epochs over the last 10 epochs)" in still_improving(falling, 30)


def test_early_stopping_inside_the_warm_up_gets_advice_on_the_stopping():
    """A run of max_epochs=40 that the user's EarlyStopping ended after epoch 2 of a 10-epoch
    warm-up was told 'Train longer (a larger max_epochs)': more epochs would not have
    trained. The note names the stop and its fixes (patience, min_epochs, the warm-up)."""
    from lightning.pytorch.callbacks import EarlyStopping

    stop = EarlyStopping("elbo_validation", min_delta=1e6, patience=2)
    notes = _notes(_model(), max_epochs=40, callbacks=[stop])
    assert len(notes) == 1, notes
    assert "this run trained 3 epochs. Early stopping ended the run after epoch 2, inside the " \
        "warm-up" in notes[0]  # fmt: skip
    assert "pass min_epochs above 10 so that it cannot stop the run sooner" in notes[0]
    assert "Train longer" not in notes[0] and "max_epochs above" not in notes[0]


def test_ddp_early_stopping_prints_its_reason_in_the_first_process_only(capsys):
    """Under DDP each process's LoudEarlyStopping printed 'Monitored metric ... Signaling
    Trainer to stop.' at teardown: the line came once per process."""
    from types import SimpleNamespace

    from deltavae.train._stopping import early_stopping_callback

    stop = early_stopping_callback({})
    stop.early_stopping_reason = "Monitored metric elbo_validation did not improve."
    stop.teardown(SimpleNamespace(is_global_zero=False), None, "fit")
    assert capsys.readouterr().out == ""
    stop.teardown(SimpleNamespace(is_global_zero=True), None, "fit")
    assert capsys.readouterr().out == "Monitored metric elbo_validation did not improve.\n"


def test_few_validation_checks_are_counted_as_checks_not_epochs():
    """A run of 3 epochs validating every 2nd was told 'Training ran 1 epoch on the full
    ELBO'; and one whose last validation (epoch 4 of 7) fell inside a warm-up that training
    then finished was told it 'ended during the KL warm-up (KL weight 0.67 of 1)'."""
    from deltavae.train._convergence import still_improving

    def run(epochs, kl, validated):
        frame = pd.DataFrame({"elbo_train": 100.0 - np.arange(epochs)})
        frame.index.name = "epoch"
        weights = pd.DataFrame({"kl_weight": kl}, index=frame.index)
        checks = pd.DataFrame({"elbo_validation": 100.0 - np.asarray(validated)}, index=validated)
        return {"elbo_train": frame, "kl_weight": weights, "elbo_validation": checks}

    note = still_improving(run(3, [1.0] * 3, [1]), 3)
    assert note.startswith("The validation ELBO was measured 1 time on the full ELBO: too few")
    assert note.endswith("Or validate more often (a smaller check_val_every_n_epoch).")
    note = still_improving(run(7, np.minimum(np.arange(7) / 6, 1), [4]), 7)
    assert "during the KL warm-up" not in note
    assert note.startswith("The validation ELBO was measured 0 times on the full ELBO (after")


def test_read_outs_far_off_are_checked_after_a_second_run_without_validation_cells():
    """The check ran only where the history had no elbo_validation at all: a second run on
    every cell, after one that validated, kept the first run's key and was never checked."""
    scvi.settings.seed = 1  # lr=0.5: the read-outs of 6 starts of 8 (seeds 0-7) this far off
    model = _normal_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    with pytest.warns(NotConvergedWarning, match=r"read-outs \(in eval mode\) are off too"):
        model.train(max_epochs=12, lr=0.5, train_size=1.0, **TRAIN)


def test_early_stopping_names_the_epoch_as_the_history_numbers_it_in_a_further_run():
    """A second train() whose early stopping fired after its own epoch 2 (history epoch 7,
    after 5 earlier epochs) was told 'after epoch 2': Lightning counts each run from 0."""
    from types import SimpleNamespace

    from deltavae.train._convergence import still_improving

    index = pd.RangeIndex(5, 8, name="epoch")
    run = {"elbo_train": pd.DataFrame({"elbo_train": [300.0, 200.0, 100.0]}, index=index)}
    trainer = SimpleNamespace(callback_metrics={"deltavae_early_stopped_epoch": torch.tensor(2)})
    note = still_improving(run, 40, early_stopping=True, trainer=trainer)
    assert "Early stopping ended the run after epoch 7, before the ELBO had settled" in note


def test_a_flat_run_of_few_steps_is_too_short_to_judge_not_converged():
    """3 epochs of one step each (40 cells, batch_size=128) were judged converged without a
    word: the rule counted epochs, and 3 noisy epochs of 3 optimiser steps looked flat. ZINBVAE
    on 40 cells passed the rule at 3 to 94 steps while its ELBO had 8-12% left to fall."""
    from types import SimpleNamespace

    from deltavae.train._convergence import MIN_STEPS, still_improving

    flat = _history([100.0, 100.2, 99.9, 100.1, 100.0])
    one_step = SimpleNamespace(num_training_batches=1, callbacks=[])
    note = still_improving(flat, 5, trainer=one_step)
    assert note.startswith("Training ran 5 epochs of 1 step (5 optimiser steps) on the full ELBO:")
    assert "too few to converge or to judge (a run is judged from 100 steps on)" in note
    assert "pass a max_epochs above this run's 5" in note
    # Enough steps, or steps not known (a history alone): flat is converged, as before.
    long = _history(np.r_[np.linspace(200, 100, 20), np.full(40, 100.0)])
    steps = SimpleNamespace(num_training_batches=-(-MIN_STEPS // 40), callbacks=[])
    assert still_improving(long, 60, trainer=steps) is None
    assert still_improving(flat, 5) is None
    adata = dv.datasets.synthetic_counts(
        n_cells=40, n_genes=20, n_clusters=2, n_conditions=1, seed=1
    )
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    notes = _notes(model, max_epochs=3, train_size=1.0, n_epochs_kl_warmup=None)
    assert len(notes) == 1 and ("(3 optimiser steps)" in notes[0] or "still" in notes[0]), notes


def test_a_users_early_stopping_is_advised_on_its_own_patience():
    """The user's EarlyStopping(patience=2) ended the run and the advice was to raise
    early_stopping_patience, an argument of train() the run never used."""
    from lightning.pytorch.callbacks import EarlyStopping

    stop = EarlyStopping("elbo_validation", min_delta=1e6, patience=2)
    (note,) = _notes(_model(), max_epochs=40, callbacks=[stop], n_epochs_kl_warmup=None)
    assert "Early stopping ended the run after epoch 2, before the ELBO had settled: raise " \
        "the patience of the EarlyStopping callback passed (patience=2) or train without " \
        "it." in note  # fmt: skip
    assert "early_stopping_patience" not in note
    stop = EarlyStopping("elbo_validation", min_delta=1e6, patience=2)
    (note,) = _notes(_model(), max_epochs=40, callbacks=[stop])  # inside the warm-up
    assert "raise the patience of the EarlyStopping callback passed (patience=2), pass " in note
    assert "early_stopping_patience" not in note
    # train(early_stopping=True): its own argument is named, as the CLI rewrites it.
    (note,) = _notes(
        _model(), max_epochs=40, early_stopping=True, early_stopping_patience=2,
        early_stopping_min_delta=1e6, n_epochs_kl_warmup=None,
    )  # fmt: skip
    assert "raise early_stopping_patience (this run's: 2) or train without " \
        "early stopping." in note  # fmt: skip
    assert "45" not in note  # scvi-tools' default, not this run's patience


def test_a_flat_run_continuing_a_trained_model_counts_its_earlier_epochs():
    """A ZINBVAE trained 400 epochs on 200 mESC cells (2 steps each), saved, loaded and
    trained 20 epochs more, its ELBO flat at 3,330, was told 'Training ran 20 epochs of 2
    steps (40 optimiser steps) on the full ELBO: too few to converge or to judge': its 800
    earlier steps were not counted."""
    from types import SimpleNamespace

    import pandas as pd

    from deltavae.model._verdicts import earlier_full_epochs
    from deltavae.train._convergence import still_improving

    rng = np.random.default_rng(0)
    elbo = 3330 + rng.normal(0, 3, 20)
    index = pd.RangeIndex(400, 420, name="epoch")
    run = {
        "elbo_train": pd.DataFrame({"elbo_train": elbo}, index=index),
        "kl_weight": pd.DataFrame({"kl_weight": np.ones(20)}, index=index),
    }
    trainer = SimpleNamespace(num_training_batches=2, callback_metrics={})
    note = still_improving(run, 20, trainer=trainer, sized=True)
    assert note.startswith("Training ran 20 epochs of 2 steps (40 optimiser steps)")
    assert still_improving(run, 20, trainer=trainer, sized=True, earlier_epochs=300) is None
    # The earlier epochs on the full ELBO, from the model's history: 100 warm-up epochs left.
    weights = np.r_[np.linspace(0, 1, 100, endpoint=False), np.ones(320)]
    history = {"kl_weight": pd.DataFrame({"kl_weight": weights}, index=pd.RangeIndex(420))}
    assert earlier_full_epochs(SimpleNamespace(history=history), run) == 300


def test_a_run_at_a_rate_far_below_the_default_is_not_called_converged(tmp_path):
    """ZINBVAE at lr=1e-7 (10,000 times below its default) kept its first epoch's ELBO and
    said 'No convergence warning.' (and at 100 times below flattened 20% above the default
    rate's ELBO); NMFDeconv per spot at 200,000 times below its own default too. A flat ELBO
    at such a rate is parameters that barely moved: the run says so, and the model keeps it
    through save and load, and trained on at that rate was told nothing. A further run at a
    low rate fine-tunes a model trained at a working rate: not so."""
    from deltavae._cli_flags import _as_flags

    model = _model()
    fit = {"max_epochs": 15, "train_size": 1.0, "batch_size": 8, "n_epochs_kl_warmup": None}
    (note,) = _notes(model, lr=1e-7, **fit)  # 8 steps an epoch: 120 steps
    assert note.startswith(
        "This run's learning rate (lr=1e-07) is 10,000 times below the default (0.001): its "
        "ELBO went from "
    ), note
    assert "not because the model converged" in note and "default rate first." in note
    assert "train again without --lr first." in _as_flags(note)  # deltavae fit's words
    assert model.convergence_.startswith("This run's learning rate (lr=1e-07) is 10,000 times")
    assert "10,000 times below the default" in str(model)
    model.save(tmp_path / "slow")
    loaded = dv.model.ZINBVAE.load(tmp_path / "slow", adata=model.adata)
    assert loaded.convergence_ == model.convergence_
    # Trained on at that rate, the loaded model is no more trained: told again; as is a run
    # too short to judge, whose advice to train longer would not help at that rate.
    (note,) = _notes(loaded, lr=1e-7, **fit)
    assert note.startswith("This run's learning rate (lr=1e-07) is 10,000 times below"), note
    (note,) = _notes(_model(), lr=1e-7, **{**fit, "max_epochs": 4})
    assert note.startswith("This run's learning rate (lr=1e-07) is 10,000 times below"), note
    # Trained at its default first, then fine-tuned: no word of the rate.
    tuned = _model()
    _notes(tuned, max_epochs=15, train_size=1.0, n_epochs_kl_warmup=None)
    assert not [n for n in _notes(tuned, lr=1e-7, **fit) if "times below" in n]
    cells = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=3, n_conditions=1, seed=1
    )
    spots, reference = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=3)
    nmf = dv.model.NMFDeconv.from_reference(spots, reference, "cluster", inference="per_spot")
    (note,) = _notes(nmf, max_epochs=120, lr=1e-7)
    assert "200,000 times below the model's default (0.02)" in note, note


def test_a_weight_decay_that_outweighs_the_elbo_is_not_called_converged():
    """NMFDeconv trained with weight_decay=100 (Adam adds it to the gradient) ended with
    uniform proportions, four times the error of a run without it, and said 'No convergence
    warning.': the run ended flat at the penalty's optimum. It says so now; a small decay,
    and AdamW's decoupled decay, say nothing of it."""
    cells = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=3, n_conditions=1, seed=1
    )
    spots, reference = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=3)
    nmf = dv.model.NMFDeconv.from_reference(spots, reference, "cluster")
    notes = _notes(nmf, max_epochs=20, plan_kwargs={"weight_decay": 100.0})
    (note,) = [n for n in notes if "weight_decay" in n]
    assert note.startswith("This run's weight_decay=100 outweighs the ELBO: Adam adds it")
    assert "Train again without weight_decay, or with one of 0.01 or less" in note
    assert nmf.convergence_.startswith("This run's weight_decay=100 outweighs the ELBO")
    # Per spot, the ELBO rose far above its best: unstable, and the decay is named too.
    nmf = dv.model.NMFDeconv.from_reference(spots, reference, "cluster", inference="per_spot")
    notes = _notes(nmf, max_epochs=150, plan_kwargs={"weight_decay": 1e6})
    assert any("went unstable" in n and "weight_decay=1e+06 outweighs" in n for n in notes)
    for plan in ({"weight_decay": 0.01}, {"optimizer": "AdamW", "weight_decay": 100.0}):
        model = dv.model.NMFDeconv.from_reference(spots, reference, "cluster")
        assert not [n for n in _notes(model, max_epochs=20, plan_kwargs=plan) if "weight_d" in n]


def test_a_slow_fall_at_a_rate_ten_to_a_hundred_times_below_the_default_is_not_converged():
    """NMFDeconv per spot at 30 times below its default rate (40 pseudo-spots, its default
    1,000 epochs) ended 13-18% further from the true proportions, its ELBO falling about 0.02%
    per 10 epochs, under the rule's 0.1%: 'No convergence warning.'. Between 10 and 100 times
    below the default (at 100 the run is told of its rate) a fall that many times smaller is
    still improving. The same curve at the default rate, or fine-tuning a trained model at
    the slow rate, is converged."""
    from deltavae.model._verdicts import say_verdict

    cells = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=3, n_conditions=1, seed=1
    )
    spots, reference = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=3)
    nmf = dv.model.NMFDeconv.from_reference(spots, reference, "cluster", inference="per_spot")
    _notes(nmf, max_epochs=2, lr=0.02 / 30)
    # A curve of the 1,000 epochs of such a run: 0.006% per 10 epochs over its last third.
    epochs = np.arange(1000)
    noise = np.random.default_rng(0).normal(0, 0.005, 1000)
    elbo = 176.6 + 3 * np.exp(-epochs / 400) + noise
    run = {"elbo_train": pd.DataFrame({"elbo_train": elbo}, index=pd.RangeIndex(1000))}

    def said(rate):
        nmf.train_args_ = {**nmf.train_args_, "lr": rate}
        nmf.convergence_ = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            say_verdict(nmf, run, 1000, False, {}, None)
        return [str(w.message) for w in caught if issubclass(w.category, NotConvergedWarning)]

    (note,) = said(0.02 / 30)
    assert note.startswith("The training ELBO was still improving when training stopped (0.01%")
    assert "lr=0.000666667) is 30 times below the model's default (0.02)" in note, note
    assert note.endswith("train again with the default rate first.")
    assert said(0.02) == [] and said(0.02 / 5) == []
    # A model trained before, fine-tuned at the slow rate: flat enough.
    tuned = {k: v.set_axis(v.index + 2) for k, v in run.items()}
    nmf.history_ = {k: pd.concat([nmf.history[k].iloc[:2], tuned[k]]) for k in tuned}
    run = tuned
    assert said(0.02 / 30) == []


class _NotFiniteInEvalMode(Callback):
    """At the end of training, the encoder's first BatchNorm's running mean set to NaN: the
    training losses stayed finite, read-outs in eval mode are not."""

    def on_train_end(self, trainer, pl_module):
        norm = next(m for m in pl_module.module.modules() if isinstance(m, torch.nn.BatchNorm1d))
        norm.running_mean.fill_(float("nan"))


def test_read_outs_not_finite_after_a_run_without_validation_cells_are_said_not_raised():
    """CGMDVAE at lr=0.1, every cell training (120 cells, 12 epochs): its training losses
    stayed finite, but in eval mode its latent means were not, and train() ended in Pyro's
    'Expected parameter loc ... of distribution CorrelatedNormal ... found invalid values',
    raised by the check of its read-outs. The check says read-outs that are not finite. That
    run's path to NaN is chaotic (a float's rounding away from finite read-outs): the test
    makes them NaN at the end of an ordinary run, which also stopped the mixture's refit with
    scikit-learn's "Input X contains NaN" before the verdict could speak."""
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=3)
    notes = _notes(
        model, max_epochs=4, train_size=1.0, n_epochs_kl_warmup=None,
        callbacks=[_NotFiniteInEvalMode()],
    )  # fmt: skip
    (note,) = [n for n in notes if n.startswith("After training, the model's read-outs")]
    assert "a reconstruction error of nan per cell (values not finite)" in note, note


def test_an_elbo_blown_up_by_orders_of_magnitude_went_unstable_not_still_improving():
    """CGMDVAE at lr=1 (100 synthetic cells, a few epochs) was told its ELBO was 'still
    improving from 2.0e18 to 1.5e14' and to train longer: an ELBO risen 1e15 times above its
    first epoch's on counts is a run that diverged in scale. Runs that start far off and fall,
    or fall through a warm-up, keep their verdicts."""
    from deltavae.model._verdicts import say_verdict

    adata = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=2, n_hidden=8)
    _notes(model, max_epochs=1, mixture_init_epoch=None)

    def said(train, valid, lr=1.0):
        index = pd.RangeIndex(len(train), name="epoch")
        run = {
            "elbo_train": pd.DataFrame({"elbo_train": train}, index=index),
            "elbo_validation": pd.DataFrame({"elbo_validation": valid}, index=index),
            "kl_weight": pd.DataFrame({"kl_weight": [0.01, 0.5] + [1.0] * (len(train) - 2)}, index),
        }
        model.train_args_ = {**model.train_args_, "lr": lr}
        model.best_epoch_ = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            say_verdict(model, run, len(train), False, {}, None)
        return [str(w.message) for w in caught if issubclass(w.category, NotConvergedWarning)]

    train = [595.0, 2.1e5, 1.8e11, 4.1e19, 3.0e17, 2.2e15]
    (note,) = said(train, [1.8e7, 2.4e13, 2.0e18, 6.1e16, 8.8e15, 1.5e14])
    assert "still improving" not in note and "more epochs at this rate will not help" in note
    assert note.startswith("The validation ELBO diverged in scale: the training ELBO rose from 595")
    assert "to 4.1e+19 at epoch 3, and the validation ELBO ends at 1.5e+14" in note, note
    assert "lower learning rate than this run's lr=1, e.g. the model's default lr=0.001" in note
    assert model._went_unstable
    # Started far off (ZINBVAE at lr=1: 2.2e7 in its first epoch) and falling: still improving.
    far = 1000 + 2.2e7 * np.exp(-np.arange(30) / 4)
    (note,) = said(far, far * 0.98)
    assert "still improving" in note and "diverged" not in note
    # A warm-up whose full-KL ELBO is large early (Kang, 8 epochs), at the default rate.
    kang = [1585.0, 1361.0, 1288.0, 1340.0, 1288.0, 1233.0, 1208.0, 1219.0]
    (note,) = said(kang, kang, lr=1e-3)
    assert "still improving" in note and "diverged" not in note
    # ZINBVAE on mESC cells at the default rate: its eval-mode validation ELBO rose to 9.6e6
    # while training fell (BatchNorm's statistics trailing), here ending 12 times the start.
    from deltavae.train._convergence import still_improving

    validation = np.r_[5377, 5569, 6802, 1.4e4, 7.8e5, 4.2e6, 9.6e6, 1.8e6, 3e5, 1e5, 6e4]
    history = {**_history(validation), **_history(np.linspace(5077, 3660, 11), "elbo_train")}
    note = still_improving(history, 30, lr=1e-3, sized=True, batch_norm=True)
    assert "diverged" not in note and "a max_epochs above this run's 30" in note, note
    # ZINBVAE at lr=1 (100 synthetic cells, seed 0, 5 epochs): training rose 75 times, its
    # validation ELBO ended 4,000 times the start, "still improving from 5.1e6 to 2.4e6".
    history = {
        **_history([2.7e7, 5.1e6, 1.2e7, 3.4e6, 2.4e6]),
        **_history([596.0, 44420.0, 13407.0, 12453.0, 11196.0], "elbo_train"),
    }
    note = still_improving(history, 5, lr=1.0, sized=True)
    assert "diverged in scale" in note and "still improving" not in note, note
    # A spot model's own default rate is advised, not the VAEs' 1e-3 (NMFDeconv: 5e-3).
    note = still_improving(history, 5, lr=1.0, sized=True, default_lr=5e-3)
    assert "e.g. the model's default lr=0.005," in note, note


def test_a_run_far_above_the_default_rate_leads_with_the_rate_not_with_training_longer():
    """Archetypes at lr=5 (1,000 times its default; 150 spots, 30 epochs) was told "still
    improving (7714 to 4342) ... Train longer ... train again with the default rate first":
    two contradicting pieces of advice, the eval-mode validation ELBO 11 times the training
    ELBO (4,042 against 358). More epochs at such a rate are not the fix: the verdict leads
    with the rate."""
    mix = dv.datasets.convex_mixtures(n_spots=150, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3)
    lead = (
        r"^This run's learning rate \(lr=5\) is 1000 times the model's default \(0\.005\): at "
        r"such a rate the ELBO can stay far from its optimum however long it trains; train "
        r"again with the default rate first\. The validation ELBO was still improving when "
        r"training stopped \(.*\): the model has not converged and its results may change "
        r"with more training\.$"
    )
    with pytest.warns(NotConvergedWarning, match=lead) as said:
        model.train(max_epochs=30, lr=5.0, **TRAIN)
    assert len(said) == 1, [str(w.message) for w in said]
    assert model.convergence_.startswith("This run's learning rate (lr=5) is 1000 times")
    assert model._train_again
    # Fine-tuned or too short at the default rate: the advice to train longer stays.
    (note,) = _notes(_model(), max_epochs=4)
    assert note.startswith("Training ran") and "Train longer" in note, note


def test_a_run_too_short_to_judge_at_a_rate_far_below_the_default_says_the_rate():
    """ZINBVAE at lr=3e-5 (33 times below its default; 100 cells, 30 epochs of 1 step) was
    told "too few to converge or to judge ... Train longer" without the note that such a rate
    needs about 33 times the epochs, which a run still improving there gets."""
    adata = dv.datasets.synthetic_counts(
        n_cells=100, n_genes=30, n_clusters=3, n_conditions=1, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    short = (
        r"^Training ran \d+ epochs of 1 step \(\d+ optimiser steps\) on the full ELBO: too few "
        r"to converge or to judge .* Train longer: .* This run's learning rate \(lr=3e-05\) is "
        r"33 times below the default \(0\.001\): each step moves the parameters about as many "
        r"times less, .* train again with the default rate first\.$"
    )
    with pytest.warns(NotConvergedWarning, match=short) as said:
        model.train(max_epochs=30, lr=3e-5, **TRAIN)
    assert len(said) == 1, [str(w.message) for w in said]


def test_an_epoch_restore_best_could_not_keep_is_said_to_be_one():
    """CGMDVAE at lr=1 (100 synthetic cells, 12 epochs) was told "3.242e+04 at epoch 8, the one
    restore_best kept, against 2.058e+04 at epoch 1": an epoch in the KL warm-up, before the
    mixture start, which restore_best cannot keep, as if it had passed it over."""
    from types import SimpleNamespace

    from deltavae.model._verdicts import say_verdict
    from deltavae.train._checkpoint import RestoreBestValidation

    adata = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=2, n_hidden=8)
    _notes(model, max_epochs=1, mixture_init_epoch=None)
    train = [153.9, 3787.5, 146.7, 422.9, 666.6, 299.9, 213.4, 394.9, 176.0, 181.0, 183.8, 186.8]
    valid = [3.8e9, 20584.3, 21387.0, 1.3e8, 6.2e19, 6.1e33, 1.4e22, 2.3e10, 32424.0, 53071.0]
    valid += [77627.0, 2.4e8]
    kl = [0.0, 0.2, 0.3, 0.5, 0.7, 0.8] + [1.0] * 6
    index = pd.RangeIndex(len(train), name="epoch")
    run = {
        name: pd.DataFrame({name: values}, index=index)
        for name, values in [("elbo_train", train), ("elbo_validation", valid), ("kl_weight", kl)]
    }
    model.train_args_ = {**model.train_args_, "lr": 1.0}

    def said(start_epoch, kept=8):
        model.trainer = SimpleNamespace(callbacks=[RestoreBestValidation(start_epoch, 1.0)])
        model.best_epoch_ = kept
        with pytest.warns(NotConvergedWarning) as caught:
            say_verdict(model, run, len(train), False, {}, None)
        assert len(caught) == 1, [str(w.message) for w in caught]
        return str(caught[0].message)

    note = said(start_epoch=5)  # the mixture started at epoch 4
    assert note.startswith(
        "The validation ELBO ended far above its best: 3.242e+04 at epoch 8, the one "
        "restore_best kept, against 2.058e+04 at epoch 1, an epoch restore_best could not "
        "keep (it keeps only epochs on the full ELBO, after the mixture start: here from epoch "
        "6 on; the best of those was the one it kept). Training went unstable"
    ), note
    # Without a mixture start, and keeping an epoch other than the best it could.
    note = said(start_epoch=0, kept=9)
    assert (
        "(it keeps only epochs on the full ELBO: here from epoch 6 on; the best of those was "
        "3.242e+04 at epoch 8). Training went unstable"
    ) in note, note
    # A best epoch restore_best could keep is compared with as before.
    run["elbo_validation"].loc[7, "elbo_validation"] = 20000.0
    note = said(start_epoch=5)
    assert "against 2e+04 at epoch 7. Training went unstable" in note, note
