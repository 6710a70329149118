"""What to change after a run that did not converge: the sentences of its advice (more epochs,
a longer patience, a larger limit, a shorter warm-up, a lower learning rate)."""

from __future__ import annotations

import math

#: The optimiser's default learning rate (``DeltaTrainingPlan``), and how many times it a run's
#: rate may be before the advice on an unconverged run names the rate rather than the epochs.
DEFAULT_LR = 1e-3
HIGH_LR_FACTOR = 10
#: How many times below the model's default a fresh run's learning rate must be for a flat
#: ELBO to be read as parameters that barely moved rather than as convergence
#: (:func:`low_rate_warning`). At 100 times below (ZINBVAE lr=1e-5, 200 synthetic cells,
#: 150 epochs) the ELBO flattened at 213.7 against 177.9 at the default rate, at 1,000 times
#: below at 218 (its first epoch's 219); NMFDeconv per spot at 100 times below its default
#: 306.6 against 301.3; each judged converged, in silence.
LOW_LR_FACTOR = 100
#: How :func:`low_rate_warning`'s text begins (a model's ``convergence_`` holds it), and
#: :func:`high_rate_note`'s, which leads the verdict of a run too short or still falling at a
#: rate far above the default (``model/_verdicts.py``).
LOW_RATE = "This run's learning rate (lr="


def high_rate_note(lr: float | None, default: float = DEFAULT_LR) -> str:
    """A sentence added to an unconverged run's advice when its learning rate is far above
    the default: such a run's ELBO jumps about well above its optimum, and more epochs at
    that rate do not bring it down. A run too short or still falling is told it first, in
    place of the advice to train longer (``model/_verdicts.py`` ``rate_first``).

    Examples
    --------
    >>> high_rate_note(None), high_rate_note(2e-3)
    ('', '')
    >>> high_rate_note(1.0)[:53]
    " This run's learning rate (lr=1) is 1000 times the de"
    >>> high_rate_note(0.2, default=0.005)[:60]
    " This run's learning rate (lr=0.2) is 40 times the model's d"
    """
    if lr is None or lr <= HIGH_LR_FACTOR * default:
        return ""
    whose = "the default" if default == DEFAULT_LR else "the model's default"
    return (
        f" This run's learning rate (lr={lr:g}) is {lr / default:.0f} times {whose} "
        f"({default:g}): at such a rate the ELBO can stay far from its optimum however long "
        "it trains; train again with the default rate first."
    )


def slower_than_default(lr: float | None, default: float = DEFAULT_LR) -> float:
    """How many times below the model's ``default`` a run's rate ``lr`` was, where it was
    :data:`HIGH_LR_FACTOR` or more times below (else 1): the convergence rule asks a run
    that slow for a fall that many times smaller per 10 epochs before it is flat
    (``still_improving``'s ``slower``). NMFDeconv per spot at 30 times below its default
    (40 pseudo-spots, seeds 0-1, its default 1,000 epochs) ended with proportions 13-18%
    further from the truth (mean absolute error 0.051 against 0.043) and its ELBO falling
    about 0.02% per 10 epochs, under the rule's 0.1%: judged converged, in silence.

    Examples
    --------
    >>> slower_than_default(1e-4), slower_than_default(5e-4), slower_than_default(None)
    (10.0, 1.0, 1.0)
    """
    if lr is None or lr <= 0 or lr * HIGH_LR_FACTOR > default * (1 + 1e-9):
        return 1.0
    return default / lr


def slow_rate_note(lr: float | None, default: float = DEFAULT_LR) -> str:
    """A sentence added to the advice on a run still improving, or too short to judge, at a rate
    :data:`HIGH_LR_FACTOR` or more times below the model's ``default``: more epochs at that
    rate take as many times longer than the default rate would, and a small fall there is
    a large one at the default rate.

    Examples
    --------
    >>> slow_rate_note(5e-4)
    ''
    >>> slow_rate_note(1e-4)[:63]
    " This run's learning rate (lr=0.0001) is 10 times below the def"
    """
    slower = slower_than_default(lr, default)
    if slower == 1.0:
        return ""
    whose = "the default" if default == DEFAULT_LR else "the model's default"
    return (
        f" This run's learning rate (lr={lr:g}) is {slower:,.0f} times below {whose} "
        f"({default:g}): each step moves the parameters about as many times less, and the "
        "model needs about as many times the epochs (a fall that looks small at such a rate "
        "is not convergence); train again with the default rate first."
    )


def low_rate_warning(lr: float | None, default: float, elbo) -> str | None:
    """The warning on a fresh run that the convergence rule found flat (or too short) while
    its learning rate ``lr`` was :data:`LOW_LR_FACTOR` or more times below the model's
    ``default``: its ELBO (``elbo``, the run's values per epoch) stayed flat because the
    parameters barely moved, which the rule, reading only how the ELBO ends, cannot tell from
    convergence. ``None`` where the rate is not that low.

    Examples
    --------
    >>> low_rate_warning(1e-4, 1e-3, [219.3, 219.0]) is None
    True
    >>> low_rate_warning(1e-7, 1e-3, [219.3, 218.0, 218.5])[:73]
    "This run's learning rate (lr=1e-07) is 10,000 times below the default (0."
    """
    if lr is None or lr <= 0 or lr * LOW_LR_FACTOR > default:
        return None
    finite = [float(v) for v in elbo if math.isfinite(float(v))]
    moved = ""
    if finite:
        fall = (finite[0] - min(finite)) / max(abs(min(finite)), 1e-12)
        moved = (
            f"its ELBO went from {finite[0]:.4g} in the first epoch to {min(finite):.4g} at "
            f"best ({fall:.2%}), "
        )
    whose = "the default" if default == DEFAULT_LR else "the model's default"
    return (
        f"{LOW_RATE}{lr:g}) is {default / lr:,.0f} times below {whose} "
        f"({default:g}): {moved}ending flat because each step barely moves the parameters, "
        "not because the model converged. Its results are close to an untrained model's: "
        "train again with the default rate first."
    )


def train_longer(max_epochs: int | None, validation: bool, early_stopping: bool = False) -> str:
    """What to change: more epochs than this run's, and early stopping where a validation ELBO
    is and the run did not use it already.

    Every note of a run too short says it in these words (the CLI rewrites them as its flags).

    Examples
    --------
    >>> train_longer(30, validation=False)
    "Train longer: pass a max_epochs above this run's 30."
    >>> train_longer(30, validation=True, early_stopping=True)
    "Train longer: pass a max_epochs above this run's 30."
    """
    more = f"a max_epochs above this run's {max_epochs}" if max_epochs else "a larger max_epochs"
    stop = ", with early_stopping=True to stop once the validation ELBO stops improving"
    return f"Train longer: pass {more}{stop if validation and not early_stopping else ''}."


_SHARES = {2: "half", 3: "a third", 4: "a quarter"}


def warm_up_advice(
    trainer,
    auto_share: int | None = None,
    stopped: int | None = None,
    patience: int | None = None,
    used: int | None = None,
) -> tuple[str | None, str]:
    """How long the KL warm-up of ``trainer``'s run lasts (with the argument that set it),
    and what to change when the run ended inside it: the plan's own ``n_epochs_kl_warmup``
    (which the epochs' count wins over) or ``n_steps_kl_warmup``, counted in epochs. When
    early stopping ended it (after epoch ``stopped``), more epochs would not have trained:
    the advice is about the early stopping (``patience``: the user's own EarlyStopping's,
    else ``early_stopping=True``'s, ``early_stopping_patience``).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> plan = NS(n_epochs_kl_warmup=1, n_steps_kl_warmup=None)
    >>> warm_up_advice(NS(lightning_module=plan), auto_share=4)[0]
    "1 epoch (n_epochs_kl_warmup='auto': a quarter of max_epochs, at least 1)"
    >>> warm_up_advice(None)[1]
    'Train for more epochs than the warm-up, or shorten it (n_epochs_kl_warmup).'
    >>> warm_up_advice(NS(lightning_module=NS(n_epochs_kl_warmup=10)), stopped=2)[1][:61]
    'Early stopping ended the run after epoch 2, inside the warm-u'
    """
    plan = getattr(trainer, "lightning_module", None)
    epochs = getattr(plan, "n_epochs_kl_warmup", None)
    steps = getattr(plan, "n_steps_kl_warmup", None)
    per_epoch = getattr(trainer, "num_training_batches", None)
    length = None
    fix = "Train for more epochs than the warm-up, or shorten it (n_epochs_kl_warmup)."
    by_steps = not epochs and steps and isinstance(per_epoch, int) and per_epoch > 0
    if epochs:
        length = f"{epochs} epoch{'s' if epochs != 1 else ''}"
        if auto_share:
            share = _SHARES.get(auto_share, f"1/{auto_share}")
            length += f" (n_epochs_kl_warmup='auto': {share} of max_epochs, at least 1)"
            fix = (
                "Train longer (a larger max_epochs), or pass n_epochs_kl_warmup=None to train "
                "on the full ELBO from the start."
            )
        else:
            length += f" (n_epochs_kl_warmup={epochs})"
            fix = (
                f"Pass a max_epochs above {epochs}, or a smaller n_epochs_kl_warmup (None: the "
                "full ELBO from the start)."
            )
    elif by_steps:
        epochs = math.ceil(steps / per_epoch)
        length = (
            f"{steps} steps (plan_kwargs['n_steps_kl_warmup']), {epochs} "
            f"epoch{'s' if epochs != 1 else ''} of {per_epoch} step{'s' if per_epoch != 1 else ''}"
        )
        fix = f"Pass a max_epochs above {epochs}, or a smaller plan_kwargs['n_steps_kl_warmup']."
    if stopped is not None:
        after = f"min_epochs above {epochs}" if epochs else "a min_epochs past the warm-up"
        arg = "plan_kwargs['n_steps_kl_warmup']" if by_steps else "n_epochs_kl_warmup"
        fix = (
            f"Early stopping ended the run after epoch {stopped}, inside the warm-up (a "
            f"larger max_epochs would not have helped): raise {_patience(patience, used)}, pass "
            f"{after} so that it cannot stop the run sooner, or shorten the warm-up ({arg})."
        )
    return length, fix


def _patience(users: int | None, used: int | None = None) -> str:
    """The patience to raise: the user's own EarlyStopping callback's, or ``train``'s
    (``used``: the run's, where known; CGMDVAE's ``early_stopping="auto"`` waits 75
    validations, scvi-tools' ``early_stopping=True`` 45)."""
    if users is None:
        return "early_stopping_patience" + (f" (this run's: {used})" if used else "")
    return f"the patience of the EarlyStopping callback passed (patience={users})"


def patience_advice(
    stopped_epoch: int, patience: int | None = None, used: int | None = None
) -> str:
    """What to change when early stopping ended a run whose ELBO was still falling:
    ``early_stopping_patience``, or the ``patience`` of the user's own EarlyStopping callback
    where it ended the run.

    Examples
    --------
    >>> patience_advice(24)[:44]
    'Early stopping ended the run after epoch 24,'
    >>> patience_advice(24, patience=3)[74:]
    'raise the patience of the EarlyStopping callback passed (patience=3) or train without it.'
    """
    without = "early stopping" if patience is None else "it"
    return (
        f"Early stopping ended the run after epoch {stopped_epoch}, before the ELBO had "
        f"settled: raise {_patience(patience, used)} or train without {without}."
    )


def limit_advice(limit: str, epochs_run: int, max_epochs: int | None) -> str:
    """What to change when Lightning's ``max_time`` or ``max_steps`` ended a run before its
    epochs: more of that limit, not more epochs.

    Examples
    --------
    >>> limit_advice("max_time", 27, 400)[:60]
    'Training stopped at its max_time after 27 of its 400 epochs:'
    """
    of = f" of its {max_epochs}" if max_epochs else ""
    return (
        f"Training stopped at its {limit} after {epochs_run}{of} epochs: raise {limit} (or leave "
        "it out) to train longer."
    )


def eval_mode_lag(train_elbo, lr: float | None, max_epochs: int | None) -> str | None:
    """What to say, after a validation ELBO that ended far above its best, when the training
    ELBO (``train_elbo``, the run's values) ended at its best and the rate was not high: the
    parameters did not go unstable, the eval-mode read of the validation cells lags them.

    ZINBVAE on the 200 mESC cells (SMART-seq reads, 500 genes, 2 steps an epoch, lr=1e-3):
    the training ELBO fell from 5,077 to 3,660 over 30 epochs while the validation ELBO rose
    from 5,377 to 9.6e6 and was back at 3.9e4 at the end; 70 epochs more brought it to 3,900
    (scvi-tools' SCVI did the same: 4,589 to 72,863, 9,434 at epoch 30). BatchNorm's running
    statistics (momentum 0.01) trail weights that move fast in the first steps; a lower rate
    was no fix (lr=1e-4 hardly trained in those epochs).

    Examples
    --------
    >>> eval_mode_lag([5077.0, 4500.0, 3900.0, 3700.0, 3660.0], 1e-3, 30)[:41]
    'The training ELBO fell to its best meanwh'
    >>> eval_mode_lag([5077.0, 3000.0, 3900.0, 4700.0, 4660.0], 1e-3, 30) is None
    True
    >>> eval_mode_lag([5077.0, 4500.0, 3900.0, 3700.0, 3660.0], 0.1, 30) is None
    True
    """
    values = [float(v) for v in train_elbo if math.isfinite(float(v))]
    if len(values) < 3 or (lr is not None and lr > HIGH_LR_FACTOR * DEFAULT_LR):
        return None
    best, last = min(values), values[-1]
    if min(values[-3:]) - best > 0.01 * max(abs(best), 1e-12) or values[0] <= best:
        return None
    more = f"a max_epochs above this run's {max_epochs}" if max_epochs else "more epochs"
    return (
        f"The training ELBO fell to its best meanwhile ({values[0]:.4g} to {last:.4g}): the "
        "parameters did not go unstable, but the validation cells are read in eval mode, with "
        "BatchNorm's running statistics, which trail weights that changed fast in a run of "
        "few optimiser steps; every read-out (latent, expression) uses them too. Train longer "
        f"for them to catch up ({more}, or call train again to continue this model)."
    )
