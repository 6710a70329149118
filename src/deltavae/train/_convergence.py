"""Did a training run converge? A rule on the ELBO history, measured, not guessed.

The rule: over the last third of the epochs trained on the full ELBO (at least 10, or all of
them when fewer; fewer than 3 epochs, or fewer than :data:`MIN_STEPS` optimiser steps where the
line finds nothing, are too few to converge or to judge), fit a line to the validation ELBO
(the training ELBO without validation cells). The run is still improving when the line falls by
more than 0.1% of the ELBO (of a tenth of the run's whole fall when the ELBO ended nearer 0:
:func:`_scale`) per 10 epochs and the fall is clear of the epoch-to-epoch noise: the slope is
below -3 standard errors, the median of the last third of the window is clearly below that of
its first (:func:`_thirds_fell`: a curve or a spike widens a line's errors) or, over fewer than
10 epochs, the ELBO fell at every one of them or by more than 1% from the first to the best (8
epochs of Kang, 4 after the warm-up, fell 6% and ended on an uptick that hid the trend from
both other tests). A run at a rate k >= 10 times below the model's default is still improving
from a fall k times smaller (``slower``: each step moves the parameters k times less).
(A short run's curve bends: a line leaves large residuals that are not noise, and with two
or three degrees of freedom the slope's error is wide; 5 epochs of a model that needs 400
passed the line's test alone. Noise alone puts n epochs in falling order with
probability 1/n!.)

The measurement behind the thresholds: benchmarks/README.md, Numbers behind the defaults, D5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ._advice import (  # noqa: F401 (imported from here)
    DEFAULT_LR,
    eval_mode_lag,
    high_rate_note,
    limit_advice,
    patience_advice,
    train_longer,
    warm_up_advice,
)
from ._blowup import blew_up

MIN_WINDOW = 10
#: Relative fall of the ELBO per 10 epochs above which a run has not converged.
REL_FALL_PER_10 = 1e-3
T_STAT = 3.0
#: Relative fall, first to best epoch, that marks a run of fewer than MIN_WINDOW epochs as
#: still improving whatever its last epochs did.
SHORT_FALL = 1e-2
#: Standard errors by which the last third's median must be below the first third's
#: (:func:`_thirds_fell`; 3 flagged up to 2.6% of flat noisy runs, 4 up to 1.8%).
THIRDS_T = 4.0

#: Optimiser steps on the full ELBO below which a run the rule finds flat is said to be too
#: short to judge rather than converged: ZINBVAE on 40 cells, one step an epoch (lr=1e-3),
#: passed the rule at 3 to 94 steps in 6 runs of 200 and fell 8-12% further after them; past
#: 100 steps none passed while still falling. (NMFDeconv's own default is 1000 steps.)
MIN_STEPS = 100

#: Share of the run's whole fall below which the ELBO's size is too small a scale (it ended
#: near 0): see :func:`_scale`. Above it, which holds for the count models, the rule is D5's.
FALL_SHARE = 0.1

#: How far above the run's best ELBO the parameters it ends with may be, as a share of the
#: ELBO's size (of a tenth of the run's whole fall where the ELBO ended nearer 0: :func:`_scale`),
#: before the run is said to have gone unstable (:func:`_risen`). Healthy runs that overfit
#: (200 and 100 cells, 300 epochs, ZINBVAE and CGMDVAE normal, restore_best off) ended at most
#: 0.07 above their best; CGMDVAE normal at lr=0.1 ended 10 to 80 times above its best
#: validation ELBO (433 to 4,820-37,402), and spot models at lr=5 0.33-0.38 above their first
#: epoch's ELBO, both in silence.
RISE_SHARE = 0.25


class NotConvergedWarning(UserWarning):
    """A model finished training before its ELBO stopped improving, or its training went
    unstable: the ELBO ended far above its best or was rising at the end, its read-outs (in
    eval mode) reconstruct the training cells far worse than training did, or a deconvolution
    at a rate far above its default left a type no share in any spot, or a first run at a rate
    far below the default or an Adam weight_decay of 1 or more ended flat (``model/_verdicts.py``).
    A diverged model's read-outs warn with it too."""


def still_improving(
    history: dict,
    max_epochs: int | None = None,
    early_stopping: bool = False,
    trainer=None,
    full_kl_weight: float = 1.0,
    sized: bool = False,
    auto_share: int | None = None,
    kept_epoch: int | None = None,
    lr: float | None = None,
    batch_norm: bool = False,
    earlier_epochs: int = 0,
    slower: float = 1.0,
    default_lr: float = DEFAULT_LR,
) -> str | None:
    """What a user should know when the run stopped while its ELBO was still falling.

    Parameters
    ----------
    history
        A trained model's ``history`` (``elbo_validation``, ``elbo_train``, ``kl_weight``).
    max_epochs
        The epochs of the run judged, named in the advice (``None``: not named).
    early_stopping
        Whether the run stopped early on its validation ELBO (the advice then does not
        suggest it).
    trainer
        The run's Lightning trainer, if any: when early stopping ended the run the advice is
        about its patience, when ``max_time`` or ``max_steps`` did about that limit, not about
        ``max_epochs``.
    full_kl_weight
        The KL weight the warm-up rises to (``plan_kwargs["max_kl_weight"]``, 1 unless a
        weighted ELBO was asked for).
    sized
        Whether the ELBO's size is the scale of its falls whatever it did before: a count
        likelihood's negative ELBO is at least 0 and its size is D5's scale. Otherwise a
        tenth of the run's whole fall is used where the ELBO ended nearer 0 (:func:`_scale`).
    auto_share
        Where ``n_epochs_kl_warmup="auto"`` set the warm-up: the model's share of the epochs
        it takes (4: a quarter), named in the advice of a run that ended inside it.
    kept_epoch
        The epoch whose parameters the model kept (``restore_best``), as numbered in
        ``history``; ``None``: the run's last epochs.
    lr
        The run's learning rate, named in the advice of a run that went unstable.
    batch_norm
        Whether the model has BatchNorm layers, whose running statistics its eval-mode
        validation reads (:func:`~deltavae.train._advice.eval_mode_lag`).
    earlier_epochs
        Epochs earlier ``train`` calls of the model trained on the full ELBO: a flat run
        continuing them is judged on their steps too (:data:`MIN_STEPS`).
    slower
        How many times below the model's default the run's rate was (1: not below;
        :func:`~deltavae.train._advice.slower_than_default`): each step moves the parameters
        that many times less, and a fall that many times smaller per 10 epochs is still
        improving.
    default_lr
        The model's default rate, advised to a run that diverged in scale.

    Returns
    -------
    A sentence for a warning, or ``None`` when the run converged.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = lambda name, v: pd.DataFrame({name: v}, index=pd.RangeIndex(len(v), name="epoch"))
    >>> flat = {"elbo_train": frame("elbo_train", [100.0] * 30)}
    >>> still_improving(flat) is None
    True
    >>> falling = {"elbo_train": frame("elbo_train", [100.0 - e for e in range(30)])}
    >>> still_improving(falling)[:37]
    'The training ELBO was still improving'
    >>> still_improving({"elbo_train": frame("elbo_train", [3.0, 2.0])})[:48]
    'Training ran 2 epochs on the full ELBO: too few '
    """
    name = "elbo_validation"
    if name not in history or history[name].empty:
        name = "elbo_train"
    stopped, limit = stopped_epoch(trainer), limit_reached(trainer)
    first = history.get("elbo_train")
    if stopped is not None and first is not None and not first.empty:
        stopped += int(first.index[0])  # Lightning counts a further run's epochs from 0
    if name not in history or history[name].empty:
        if limit is None:
            return None
        # max_time can end a run inside its first epoch: nothing was learnt, say so.
        return "Training completed no epoch. " + limit_advice(limit, 0, max_epochs)
    elbo = history[name][name].astype(float)
    # A count model's run that started far off (a huge learning rate: 2.2e7 in its first
    # epoch) had its falls, 53% over its last 25 epochs at 6 times a good run's ELBO, measured
    # against a tenth of that first fall: it passed as converged.
    scale = 0.0 if sized else _scale(elbo.to_numpy())
    epochs_run = len(history["elbo_train"]) if "elbo_train" in history else len(elbo)
    blown = blew_up(history, name, kept_epoch, lr, default_lr) if sized else None
    if blown is not None:  # risen far above its start, whatever its last epochs did
        return blown
    warm_up, full_epochs = False, epochs_run
    if "kl_weight" in history and not history["kl_weight"].empty:
        # Of every epoch trained: the last validation (check_val_every_n_epoch > 1) may come
        # before the warm-up's end, which training passed.
        kl_all = history["kl_weight"]["kl_weight"].astype(float)
        kl = kl_all.reindex(elbo.index)
        if kl_all.iloc[-1] < kl_all.max() - 1e-6:
            return None
        full = full_kl_weight - 1e-6
        full_epochs = int((kl_all >= kl_all.iloc[-1] - 1e-6).sum())
        if kl_all.iloc[-1] < full and kl_all.max() < full:
            length, fix = warm_up_advice(
                trainer, auto_share, stopped, users_patience(trainer), train_patience(trainer)
            )
            if limit is not None and stopped is None:
                fix = limit_advice(limit, epochs_run, max_epochs).removesuffix(".")
                fix += ", or shorten the warm-up."
            s = "s" if epochs_run != 1 else ""
            lasts = f"The warm-up lasts {length}; this run trained {epochs_run} epoch{s}. "
            return (
                f"Training ended during the KL warm-up (KL weight {kl_all.iloc[-1]:.2f} of "
                f"{full_kl_weight:g}): the model was never trained on its full ELBO. "
                f"{lasts if length else ''}{fix}"
            )
        elbo = elbo[(kl >= kl_all.iloc[-1] - 1e-6).to_numpy()]
        warm_up = bool(kl_all.min() < kl_all.iloc[-1] - 1e-6)
    elbo = elbo[np.isfinite(elbo.to_numpy())]
    n = len(elbo)
    if stopped is not None:
        advice = patience_advice(stopped, users_patience(trainer), train_patience(trainer))
    elif limit is not None:
        advice = limit_advice(limit, epochs_run, max_epochs)
    else:
        advice = train_longer(max_epochs, name == "elbo_validation", early_stopping)
    if n < 3:
        after = " (after the KL warm-up)" if warm_up else ""
        gaps = bool((np.diff(np.asarray(elbo.index)) > 1).any())
        if name == "elbo_validation" and (n < full_epochs or gaps):  # check_val_every_n > 1
            what = f"The validation ELBO was measured {n} time{'s' if n != 1 else ''}"
            advice += " Or validate more often (a smaller check_val_every_n_epoch)."
        else:
            what = f"Training ran {n} epoch{'s' if n != 1 else ''}"
        return f"{what} on the full ELBO{after}: too few to converge or to judge. " + advice
    window = min(n, max(MIN_WINDOW, n // 3))
    y = elbo.to_numpy()[-window:]
    # Epochs, not validation checks (check_val_every_n_epoch > 1): the rate is per 10 epochs.
    x = np.asarray(elbo.index[-window:], dtype=float)
    x -= x[0]
    every = int(np.median(np.diff(x))) if window > 1 else 1
    unit = "epochs" if every <= 1 else f"validation checks, one every {every} epochs"
    risen = _risen(history[name][name].astype(float), y, kept_epoch, scale, name, unit)
    if risen is not None:
        trained = history.get("elbo_train")
        lag = None
        if batch_norm and name == "elbo_validation" and trained is not None:
            lag = eval_mode_lag(trained["elbo_train"].to_numpy(), lr, max_epochs)
        if lag is not None:
            return f"{risen.partition(' Training went unstable')[0]} {lag}"
        used = f" than this run's lr={lr:g}" if lr else ""
        return f"{risen} Train again with a lower learning rate{used}, on a model built anew."
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    spread = residual.std(ddof=2) / np.sqrt(((x - x.mean()) ** 2).sum())
    fall_per_10 = -slope * 10 / max(scale, abs(y[-1]), 1e-12)
    clear = slope < -T_STAT * spread if spread > 0 else slope < 0
    clear = clear or _thirds_fell(y, scale)
    if window < MIN_WINDOW:
        # Fewer than 10 epochs: falling at every one of them, or by more than SHORT_FALL from
        # the first to the best (ten times the rule's rate, far above a converged run's noise).
        fell = (y[0] - y.min()) / max(scale, abs(y.min()), 1e-12)
        clear = clear or bool((np.diff(y) < 0).all()) or fell > SHORT_FALL
    what = "validation" if name == "elbo_validation" else "training"
    # Rising clearly at ten times the rule's rate, where no best epoch was kept: the run
    # went unstable (NMFDeconv at lr=5: its training ELBO 237 -> 258 over its last 5 epochs,
    # 24% above its best, in silence). Healthy runs that overfit rose 0.35% per 10 epochs.
    rose = slope > T_STAT * spread if spread > 0 else slope > 0
    rose = rose or _thirds_fell(-y, scale) or bool((np.diff(y) > 0).all())
    # Not over fewer than 5 epochs, whose line has one or two degrees of freedom: 3 epochs of
    # 4 validation cells, 102.7 to 103.8, read as unstable (a far rise is _risen's to say).
    rose = rose and window >= 5
    if kept_epoch is None and -fall_per_10 > SHORT_FALL and rose:
        used = f" than this run's lr={lr:g}" if lr else ""
        return (
            f"The {what} ELBO was rising when training stopped ({-fall_per_10:.2%} per 10 "
            f"epochs over the last {window} {unit}, from {y[0]:.4g} to {y[-1]:.4g}): training "
            "went unstable, and the model ends worse than it was a few epochs before. Train "
            f"again with a lower learning rate{used}, on a model built anew."
        )
    if fall_per_10 * max(slower, 1.0) <= REL_FALL_PER_10 or not clear:
        return _too_few_steps(full_epochs, steps_per_epoch(trainer), advice, earlier_epochs)
    rate = f"{fall_per_10:.2%} per 10 epochs over the last {window} {unit}"
    if fall_per_10 > 0.5 and window < 3 * 3:  # thirds of 3 epochs would overlap
        rate = f"from {y[0]:.4g} to {y[-1]:.4g} over its last {window} {unit}"
    elif fall_per_10 > 0.5:  # a line's rate means little on a curve falling this fast
        first, last = _thirds_medians(y)
        rate = (
            f"from {first:.4g} to {last:.4g} over its last {window} {unit}, medians of their "
            "first and last thirds"
        )
    return (
        f"The {what} ELBO was still improving when training stopped ({rate}): the model has "
        "not converged and its results may change with more training. " + advice
    )


def _too_few_steps(epochs: int, per_epoch: int | None, advice: str, earlier: int = 0) -> str | None:
    """The note on a run the rule found flat but that took fewer than :data:`MIN_STEPS`
    optimiser steps on the full ELBO (``epochs`` of ``per_epoch`` steps; ``None``: unknown,
    nothing said), counting the ``earlier`` epochs of the model's earlier runs (a loaded or
    trained model trained further: 400 epochs, then 20 more of 2 steps each were "too few
    to converge or to judge"): too few to have converged, whatever its few epochs' noise
    showed.

    Examples
    --------
    >>> _too_few_steps(3, 1, "Train longer.")[:72]
    'Training ran 3 epochs of 1 step (3 optimiser steps) on the full ELBO: to'
    >>> _too_few_steps(50, 2, "Train longer.") is None
    True
    """
    if per_epoch is None or (epochs + earlier) * per_epoch >= MIN_STEPS:
        return None
    each = f"{per_epoch} step{'s' if per_epoch != 1 else ''}"
    return (
        f"Training ran {epochs} epoch{'s' if epochs != 1 else ''} of {each} ({epochs * per_epoch} "
        f"optimiser steps) on the full ELBO: too few to converge or to judge (a run is judged "
        f"from {MIN_STEPS} steps on). {advice}"
    )


def _scale(elbo: np.ndarray) -> float:
    """What the run's falls are measured against when the ELBO's own size is smaller:
    :data:`FALL_SHARE` of how far the ELBO fell over the whole run (first epoch to best). A
    count model's ELBO is far from 0, and its size is the scale the thresholds were measured
    on (D5); a Normal likelihood's or a MAP objective's can end near 0 or cross it (on
    log-normalised PBMC from 958 to -393), where any fall is a large share of it and a
    converged run read as still improving.

    Examples
    --------
    >>> round(_scale(np.array([1000.0, 10.0, 2.0, np.nan])), 6)
    99.8
    """
    finite = elbo[np.isfinite(elbo)]
    return FALL_SHARE * float(finite[0] - finite.min()) if len(finite) else 0.0


def _risen(
    whole: pd.Series,
    y: np.ndarray,
    kept_epoch: int | None,
    scale: float,
    name: str,
    unit: str = "epochs",
) -> str | None:
    """What to say when the parameters a run ends with give an ELBO far above the run's best
    (by more than :data:`RISE_SHARE` of its size or ``scale``): the run went unstable, which
    neither a falling ELBO nor a flat one shows. ``whole`` is the run's ELBO (every epoch:
    the ELBO is at full KL weight also in the warm-up), ``y`` the window judged: its last
    third's median is what the run ends with, against the best before it, unless
    ``kept_epoch`` (restore_best's) is, against the run's best.

    Examples
    --------
    >>> import pandas as pd
    >>> whole = pd.Series([433.0, 300.0, 6653.0, 11653.0, 39345.0, 47209.0, 37402.0, 4820.0])
    >>> _risen(whole, whole.to_numpy()[2:], None, 0.0, "elbo_validation")[:58]
    'The validation ELBO ended far above its best: 3.74e+04 (th'
    >>> _risen(whole, whole.to_numpy()[2:], 1, 0.0, "elbo_validation") is None
    True
    """
    finite = whole[np.isfinite(whole.to_numpy())]
    if kept_epoch is not None and kept_epoch in finite.index:
        kept = float(finite.loc[kept_epoch])
        what = f"{kept:.4g} at epoch {kept_epoch}, the one restore_best kept"
    else:
        # The best before the last epochs: a run still falling ends below their median.
        kept, finite = float(np.median(y[-_third(y) :])), finite.iloc[: -_third(y)]
        what = f"{kept:.4g} (the median of its last {min(len(y), _third(y))} {unit})"
    if finite.empty:
        return None
    best_epoch, best = finite.idxmin(), float(finite.min())
    if kept - best <= RISE_SHARE * max(scale, abs(best), 1e-12):
        return None
    which = "validation" if name == "elbo_validation" else "training"
    return (
        f"The {which} ELBO ended far above its best: {what}, against {best:.4g} at epoch "
        f"{best_epoch}. Training went unstable (a learning rate too high for this model and "
        "data), and the model ends worse than it was earlier in the run."
    )


def _third(y: np.ndarray) -> int:
    return max(3, len(y) // 3)


def _thirds_medians(y: np.ndarray) -> tuple[float, float]:
    """The median ELBO of the window's first third and of its last."""
    third = _third(y)
    return float(np.median(y[:third])), float(np.median(y[-third:]))


def _thirds_fell(y: np.ndarray, scale: float = 0.0) -> bool:
    """Whether the median ELBO of the window's last third is clearly below that of its first
    third: by more than SHORT_FALL of it and by THIRDS_T standard errors of the difference, the
    noise taken from the epoch-to-epoch changes (their median absolute deviation, around
    their median, so that a trend is not counted as noise). A curve that decays like an
    exponential, or one spike, widens the line's residuals until its slope looks like noise:
    a run at lr=1 whose ELBO fell 69% over its last 10 epochs (and 25 times a good run's)
    passed as converged."""
    first, last = _thirds_medians(y)
    drop = first - last
    steps = np.diff(y)
    noise = 1.4826 * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2)
    se = 1.2533 * noise * np.sqrt(2 / _third(y))  # of a difference of two medians
    return bool(drop > THIRDS_T * se and drop > SHORT_FALL * max(scale, abs(last), 1e-12))


#: trainer.callback_metrics keys in which the plan records, at the run's end, what stopped it
#: and how many steps an epoch took (:func:`record_stop`): under DDP the callbacks run in the
#: worker processes, the caller's copies never fire, and only the callback metrics come back.
_STOPPED, _LIMIT = "deltavae_early_stopped_epoch", "deltavae_limit_reached"
_PATIENCE, _STEPS = "deltavae_stopper_patience", "deltavae_steps_per_epoch"
_LIMITS = ("max_time", "max_steps")


def record_stop(trainer) -> None:
    """Record in ``trainer.callback_metrics`` the epoch early stopping ended the run after,
    the patience of the user's own EarlyStopping that did, the limit that ended it and the
    steps an epoch took (-1: none), for :func:`stopped_epoch`, :func:`users_patience`,
    :func:`limit_reached` and :func:`steps_per_epoch`."""
    epoch, limit = stopped_epoch(trainer), limit_reached(trainer)
    patience, steps = users_patience(trainer), steps_per_epoch(trainer)
    metrics = trainer.callback_metrics
    metrics[_STOPPED] = torch.tensor(-1 if epoch is None else epoch)
    metrics[_LIMIT] = torch.tensor(-1 if limit is None else _LIMITS.index(limit))
    metrics[_PATIENCE] = torch.tensor(-1 if patience is None else patience)
    metrics[_STEPS] = torch.tensor(-1 if steps is None else steps)


def _recorded(trainer, key: str) -> int | None:
    """What :func:`record_stop` recorded under ``key``: -1 for nothing; ``None`` if no record."""
    value = (getattr(trainer, "callback_metrics", None) or {}).get(key)
    return None if value is None else int(value)


def limit_reached(trainer) -> str | None:
    """``"max_time"`` or ``"max_steps"`` when that limit of ``trainer`` ended its run (before
    its epochs), else ``None``."""
    from lightning.pytorch.callbacks import Timer

    if trainer is None:
        return None
    recorded = _recorded(trainer, _LIMIT)
    if recorded is not None:
        return None if recorded < 0 else _LIMITS[recorded]
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, Timer):
            left = callback.time_remaining()
            if left is not None and left <= 0:
                return "max_time"
    max_steps = getattr(trainer, "max_steps", -1)
    if max_steps not in (None, -1) and trainer.global_step >= max_steps:
        return "max_steps"
    return None


def _stopper(trainer):
    """The Lightning ``EarlyStopping`` callback of ``trainer`` that ended its run, or None."""
    from lightning.pytorch.callbacks import EarlyStopping

    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return callback
    return None


def stopped_epoch(trainer) -> int | None:
    """The epoch after which a Lightning ``EarlyStopping`` callback of ``trainer`` ended the
    run, or ``None`` (no trainer, no such callback, or it never fired)."""
    recorded = _recorded(trainer, _STOPPED)
    if recorded is not None:
        return None if recorded < 0 else recorded
    stopper = _stopper(trainer)
    return None if stopper is None else int(stopper.stopped_epoch)


def users_patience(trainer) -> int | None:
    """The ``patience`` of the user's own EarlyStopping callback where it ended ``trainer``'s
    run; ``None`` where none did, or scvi-tools' (``early_stopping=True``, whose patience is
    ``early_stopping_patience``) did."""
    from scvi.train._callbacks import LoudEarlyStopping

    recorded = _recorded(trainer, _PATIENCE)
    if recorded is not None:
        return None if recorded < 0 else recorded
    stopper = _stopper(trainer)
    if stopper is None or isinstance(stopper, LoudEarlyStopping):
        return None
    return int(stopper.patience)


def train_patience(trainer) -> int | None:
    """The patience of ``train``'s own early stopping (``early_stopping_patience``; 75 for
    CGMDVAE's ``"auto"``) where it ended ``trainer``'s run, else ``None``."""
    from scvi.train._callbacks import LoudEarlyStopping

    stopper = _stopper(trainer)
    return int(stopper.patience) if isinstance(stopper, LoudEarlyStopping) else None


def steps_per_epoch(trainer) -> int | None:
    """The optimiser steps each epoch of ``trainer``'s run took (on each process), or None
    where unknown."""
    recorded = _recorded(trainer, _STEPS)
    if recorded is not None:
        return None if recorded < 0 else recorded
    steps = getattr(trainer, "num_training_batches", None)
    return steps if isinstance(steps, int) and steps > 0 else None
