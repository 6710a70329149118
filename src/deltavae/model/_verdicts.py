"""What a finished training run says about itself: not converged, unstable (its ELBO ended
far above its best), or, for a deconvolution at a rate far above the model's default, cell
types that ran off to no share in any spot."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from .._checks import short_repr
from .._rng import forked_generators
from ..train._advice import LOW_RATE, low_rate_warning, slow_rate_note, slower_than_default
from ..train._convergence import (
    DEFAULT_LR,
    NotConvergedWarning,
    high_rate_note,
    still_improving,
)
from ._summary import record_verdict
from ._training_checks import trains_batch_norm
from ._validation import warn_user

#: A type's largest share over the spots below which it is in none of them (the proportions'
#: floor is 1e-5; at the default rates every type of the test sets kept 0.8 or more in some
#: spot).
NO_SHARE = 1e-3
#: How many times its default a deconvolution's rate must be for its proportions to be
#: checked for types that ran off: NMFDeconv (amortised, 100 test spots) lost a type from
#: 8 times its default (lr=0.04; at lr=0.05, the imputer's default, as at 20 and 40 times),
#: kept every type at 6 times; a type found in no spot at the default rate is the data's.
RAN_OFF_FACTOR = 4
_EMPTY = pd.DataFrame()
#: Adam's ``weight_decay`` from which a run is said to end at the penalty's optimum rather
#: than the ELBO's (:func:`decay_outweighs`; 0.01 moved NMFDeconv's error 0.057 to
#: 0.061, 1 to 0.071-0.135).
HIGH_DECAY = 1.0
#: How :func:`decay_outweighs`'s warning begins.
DECAY = "This run's weight_decay="
#: Training cells read back in eval mode after a run without validation cells (one pass).
CHECKED_CELLS = 1024


def say_verdict(model, run: dict, max_epochs, early_stopping, plan_kwargs: dict, auto_share):
    """Warn (:class:`NotConvergedWarning`) when ``model``'s run, whose history rows are
    ``run``, has not converged or went unstable; the advice names the learning rate where it
    was more than ten times the model's default (the module's ``default_lr``: a spot model's
    own, 0.005 to 0.05, else the VAEs' 1e-3): a run too short or still falling there is told
    the rate first, not to train longer (:func:`rate_first`)."""
    model.convergence_ = None  # this run's, kept by record_verdict (print(model) says it)
    # Whether the run went unstable (CGMDVAE's note on empty clusters keeps quiet then), and
    # whether the verdict asks to train again, not longer (unstable, a rate far too low, a
    # weight_decay too high: NMFDeconv's note on factors that lead no spot keeps quiet).
    model.__dict__["_went_unstable"] = model.__dict__["_train_again"] = False
    rate = (model.train_args_ or {}).get("lr")  # as trained (lr, plan_kwargs ...)
    default = getattr(model.module, "default_lr", None) or DEFAULT_LR
    verdict = still_improving(
        run,
        max_epochs,
        early_stopping,
        getattr(model, "trainer", None),
        plan_kwargs.get("max_kl_weight", 1.0),
        sized=model._data_kind == "counts",
        auto_share=auto_share,
        kept_epoch=model.best_epoch_,
        lr=rate,
        earlier_epochs=earlier_full_epochs(model, run),
        # A query model's BatchNorm keeps the reference's statistics (model/_freeze.py).
        batch_norm=trains_batch_norm(model),
        # Unless it fine-tunes a trained model: a slow run is flat only when that much flatter.
        slower=1.0 if tunes_a_trained_model(model, run) else slower_than_default(rate, default),
        default_lr=default,
    )
    if verdict is not None and _KEPT in verdict:
        verdict = beyond_restore_best(model, run, verdict)
    if verdict is None or verdict.startswith(_FLAT_OR_SHORT):
        # Flat, too short or still falling at a rate far below the default: the rate is why
        # (the advice to train longer at lr=1e-7 would not help).
        verdict = rate_too_low(model, run, rate, default) or verdict
    decay = decay_outweighs(model)
    if verdict is None or verdict.startswith((*_FLAT_OR_SHORT, LOW_RATE)):
        verdict = decay or verdict  # more epochs would not help either
    # What else shows that the run went unstable: a deconvolution's types run off at a rate far
    # above its default, read-outs far off after a run without validation cells. One problem,
    # one warning: each was a warning of its own beside the rule's (ZINBVAE at lr=0.5, every
    # cell training: "ended far above its best", then "read-outs reconstruct far worse";
    # reference-free NMFDeconv at lr=5: those, then "types have no share", then "fit fewer
    # factors"), and beside "still improving ... Train longer" they contradicted it.
    signs = []
    if rate is not None and rate > RAN_OFF_FACTOR * default:
        signs.append(types_ran_off(model, rate, default))
    validated = run.get("elbo_validation")  # an earlier run's validation rows are not this run's
    if (validated is None or validated.empty) and hasattr(model, "get_reconstruction_error"):
        signs.append(read_outs_off(model, run, rate))
    signs = [sign for sign in signs if sign is not None]
    unstable = verdict is not None and "went unstable" in verdict  # it names the rate itself
    if signs and unstable:
        verdict = with_evidence(verdict, [sign.evidence for sign in signs])
    elif signs:  # more epochs at that rate would not help: the signs' advice, not the rule's
        record_verdict(model, signs[0].record)  # a decay is said after them (note below)
        verdict = with_evidence(signs[0].message, [sign.evidence for sign in signs[1:]])
        unstable = True
    if verdict is not None and not unstable and verdict.startswith(_FLAT_OR_SHORT):
        verdict = rate_first(verdict, rate, default)  # far above the default: not longer
    if verdict is not None:
        # They say what to change (a verdict led by its high rate begins as LOW_RATE does).
        own = verdict.startswith((LOW_RATE, DECAY))
        model.__dict__["_went_unstable"] = unstable
        model.__dict__["_train_again"] = unstable or own
        note = "" if unstable or own else high_rate_note(rate, default)
        if not (unstable or own) and verdict.startswith(_FLAT_OR_SHORT):
            # 10 to 100 times below the default, still falling or too short to judge
            note += slow_rate_note(rate, default)
        if unstable and decay:  # the decay, more likely than the rate (per spot at 1e6)
            note = " " + decay
        record_verdict(model, verdict)
        warn_user(verdict + note, NotConvergedWarning)
    record_verdict(model, None)


#: How the rule's verdicts of a run found flat on too few steps, too short (too few epochs, or
#: too few validation checks: "The validation ELBO was measured 2 times"), or still falling
#: begin: at a rate far below the default, :func:`rate_too_low`'s warning replaces them.
_FLAT_OR_SHORT = (
    "Training ran ",
    "The validation ELBO was measured ",
    "The validation ELBO was still",
    "The training ELBO was still",
)


#: Where the advice of the rule's verdicts on a run too short or still falling begins: to train
#: longer (``train_longer``), to raise a patience or a limit (``patience_advice``,
#: ``limit_advice``).
_LONGER = (" Train longer", " Early stopping ended the run", " Training stopped at its ")


def rate_first(verdict: str, rate, default: float) -> str:
    """``verdict``, a run found too short or still falling (:data:`_FLAT_OR_SHORT`), led by the
    rate where ``rate`` is more than ten times the model's ``default`` (``high_rate_note``), and
    without its advice to train longer: at such a rate more epochs are not the fix. Archetypes
    at lr=5 (1,000 times its default; 150 convex mixtures, seed 0, 30 epochs) was told "still
    improving (7714 to 4342) ... Train longer ... train again with the default rate first",
    its eval-mode validation ELBO 11 times its training ELBO (4,042 against 358; at the
    default rate 238 and 237), a gap the scale-divergence check (``blew_up``) does not see:
    its first validation epoch was already 77,257.

    Examples
    --------
    >>> rate_first("Training ran 2 epochs: too few. Train longer: pass more.", 1.0, 1e-3)[:45]
    "This run's learning rate (lr=1) is 1000 times"
    >>> rate_first("Training ran 2 epochs: too few. Train longer.", 1.0, 1e-3)[-31:]
    'Training ran 2 epochs: too few.'
    """
    high = high_rate_note(rate, default).strip()
    if not high:
        return verdict
    ends = [verdict.find(advice) for advice in _LONGER if advice in verdict]
    return f"{high} {verdict[: min(ends, default=len(verdict))]}"


#: How the rule's verdict on a run that ended far above its best names the epoch kept.
_KEPT = ", the one restore_best kept, against "


def beyond_restore_best(model, run: dict, verdict: str) -> str:
    """``verdict``, that the ELBO of the epoch restore_best kept is far above the run's best,
    saying so where that best is an epoch restore_best could not keep (before CGMDVAE's
    mixture start or in the KL warm-up), with the best of those it could. CGMDVAE at lr=1 (100
    synthetic cells, 12 epochs) was told "3.242e+04 at epoch 8, the one restore_best kept,
    against 2.058e+04 at epoch 1": an epoch in the warm-up, before the mixture start, as if
    restore_best had passed it over."""
    from ..train._checkpoint import RestoreBestValidation

    callbacks = getattr(getattr(model, "trainer", None), "callbacks", None) or []
    keeper = next((c for c in callbacks if isinstance(c, RestoreBestValidation)), None)
    name = "elbo_validation"
    frame, kl = run.get(name), run.get("kl_weight")
    if keeper is None or frame is None or frame.empty or kl is None or kl.empty:
        return verdict
    elbo = frame[[name]].join(kl[["kl_weight"]], how="inner").astype(float)
    elbo = elbo[np.isfinite(elbo[name].to_numpy())]
    start = int(run["elbo_train"].index[0]) if "elbo_train" in run else int(frame.index[0])
    kept = [keeper.eligible(e - start, k, v) for e, v, k in elbo.itertuples(name=None)]
    if elbo.empty or kept[list(elbo.index).index(elbo[name].idxmin())]:
        return verdict  # the run's best was one restore_best could keep: it says so already
    eligible = elbo.loc[kept, name]
    if eligible.empty:
        return verdict
    after = ", after the mixture start" if keeper.start_epoch else ""
    best = f"{eligible.min():.4g} at epoch {eligible.idxmin()}"
    if eligible.idxmin() == model.best_epoch_:
        best = "the one it kept"
    head, _, tail = verdict.partition(". Training went unstable")
    return (
        f"{head}, an epoch restore_best could not keep (it keeps only epochs on the full ELBO"
        f"{after}: here from epoch {eligible.index.min()} on; the best of those was {best})."
        f" Training went unstable{tail}"
    )


def tunes_a_trained_model(model, run: dict) -> bool:
    """Whether ``run`` trains further a model an earlier ``train`` call trained at a working
    rate (its verdict, kept by ``commit_train_args``, was not :func:`rate_too_low`'s): a
    further run at a low rate fine-tunes it, flat as it may be. A model only ever trained at
    such a rate is not tuned: its runs are told again."""
    this, weights = run.get("elbo_train"), (model.history or {}).get("elbo_train")
    if this is None or this.empty or weights is None or weights.empty:
        return False
    before = model.__dict__.get("_verdict_before")
    return weights.index[0] < this.index[0] and not str(before).startswith(LOW_RATE)


def rate_too_low(model, run: dict, rate, default: float) -> str | None:
    """The warning on a run that ended flat, too short to judge or still falling at a
    learning rate far below the model's default
    (:func:`~deltavae.train._advice.low_rate_warning`), unless it tunes a trained model:
    ZINBVAE, CGMDVAE, NMFDeconv, Archetypes and SpatialImputer at 1,000 to 100,000 times
    below kept their starting ELBO (within 0-5%) and said "No convergence warning."."""
    if tunes_a_trained_model(model, run):
        return None
    name = "elbo_validation" if not run.get("elbo_validation", _EMPTY).empty else "elbo_train"
    frame = run.get(name)
    elbo = [] if frame is None else frame[name].to_numpy(dtype=float)
    return low_rate_warning(rate, default, elbo)


def earlier_full_epochs(model, run: dict) -> int:
    """Epochs that the model's ``train`` calls before this ``run`` trained on the full ELBO
    (their KL weight at its last value), as its history holds them."""
    weights = (model.history or {}).get("kl_weight")
    this = run.get("kl_weight")
    if weights is None or weights.empty or this is None or this.empty:
        return 0
    before = weights["kl_weight"][weights.index < this.index[0]].astype(float)
    return int((before >= float(this["kl_weight"].iloc[-1]) - 1e-6).sum())


def read_outs_off(model, run: dict, rate) -> Sign | None:
    """A run without validation cells, whose read-outs (in eval mode: BatchNorm's running
    statistics, no dropout) reconstruct up to :data:`CHECKED_CELLS` of its training cells
    far worse than its last epoch's negative ELBO, trained in train mode, says (by more than
    the ELBO's size, or a tenth of the run's fall where it ended nearer 0) that training went
    unstable: this :class:`Sign`, or ``None``. CGMDVAE
    normal at lr=0.1 and 0.5 (80 cells, 12 epochs) ended with a training ELBO of 86 and 113
    and read-outs reconstructing at 1,512 and 2,879 (BatchNorm's running statistics ran off),
    in silence: nothing in eval mode was measured. Healthy runs read out at or below their
    training ELBO (405 against 423, 312 against 309; a reconstruction leaves the KL out).
    CGMDVAE at lr=0.1 (120 cells, 12 epochs) read out latent means that were not finite, and
    the check's read-out raised Pyro's "Expected parameter loc ... found invalid values" out of
    ``train``: it is said as a reconstruction error that is not finite."""
    frame = run.get("elbo_train")
    if frame is None or frame.empty:
        return None
    elbo = frame["elbo_train"].to_numpy(dtype=float)
    elbo = elbo[np.isfinite(elbo)]
    if not len(elbo):
        return None
    last, fall = float(elbo[-1]), float(elbo[0] - elbo.min())
    cells = model.train_indices
    cells = np.arange(model.adata.n_obs) if cells is None else np.sort(np.asarray(cells))
    with warnings.catch_warnings(), forked_generators(model.device):
        warnings.simplefilter("ignore")  # the read-out's own notes: the verdict is this one
        try:
            error = model.get_reconstruction_error(indices=cells[:CHECKED_CELLS])
        except ValueError as err:  # a distribution refusing read-outs that are not finite
            if "found invalid values" not in str(err):
                raise
            error = float("nan")
    value = float(next(iter(error.values())) if isinstance(error, dict) else error)
    if np.isfinite(value) and value - last <= max(abs(last), 0.1 * fall):
        return None
    used = f" than this run's lr={rate:g}" if rate else ""
    not_finite = " (values not finite)" if not np.isfinite(value) else ""
    error = (
        f"a reconstruction error of {value:.4g} per cell{not_finite} against a negative ELBO "
        f"of {last:.4g} in the last epoch"
    )
    return Sign(
        f"After training, the model's read-outs (in eval mode) reconstruct its training "
        f"cells far worse than training did: {error}. Training went unstable (BatchNorm's "
        "running statistics ran off), and every read-out of this model is off. Train again "
        f"with a lower learning rate{used}, on a model built anew, and hold cells out for "
        "validation (train_size=0.9) to see it in training.",
        f"Its read-outs (in eval mode) are off too: they reconstruct its training cells far "
        f"worse than training did, {error} (BatchNorm's running statistics ran off).",
        "Training went unstable: read-outs reconstruct far worse. ",
    )


def decay_outweighs(model) -> str | None:
    """The warning on a run whose Adam optimiser had a ``weight_decay`` of :data:`HIGH_DECAY`
    or more (``None`` otherwise): Adam adds it to the gradient (an L2 penalty), where it
    outweighs the ELBO's pull and drives the parameters to 0; the run ends flat at the
    penalised optimum, which the rule, reading the ELBO, took for convergence. NMFDeconv
    (150 test spots, 300 epochs) at weight_decay 0, 0.01, 1, 100: proportions' mean absolute
    error 0.057, 0.061, 0.071, 0.220 amortised and 0.042, 0.054, 0.135, 0.139 per spot, all
    but the last in silence. AdamW's decoupled decay (lr times it a step) is left alone."""
    optimizers = getattr(getattr(model, "trainer", None), "optimizers", None) or []
    decays = [
        float(group.get("weight_decay") or 0.0)
        for optimizer in optimizers
        if type(optimizer) is torch.optim.Adam
        for group in optimizer.param_groups
    ]
    if not decays or max(decays) < HIGH_DECAY:
        return None
    return (
        f"{DECAY}{max(decays):g} outweighs the ELBO: Adam adds it to the "
        "gradient, which pulls every parameter towards 0 harder than the data pull it to fit, "
        "and the run ends at the penalised optimum, not the ELBO's, however flat its ELBO "
        "(a deconvolution's proportions at weight_decay=1 had up to 3 times the error of "
        "none, at 100 four times). Train again without weight_decay, or with one of 0.01 "
        "or less, on a model built anew."
    )


def types_ran_off(model, rate: float, default: float) -> Sign | None:
    """A deconvolution trained at ``rate``, far above its ``default``, whose proportions give
    some type no share in any spot: NMFDeconv at 12 to 40 times its default (the test spots,
    every type in most of them) put two of three types at the floor in every spot, its ELBO
    flat 5-8% above the default rate's (188.4 against 178.1): the types' logits ran off and
    learnt no more, in silence. At 8 and 10 times it lost one of three types (mean absolute
    error of the proportions 0.21 against 0.06), also in silence before the check ran there.
    This :class:`Sign`, or ``None`` where every type has a share in some spot."""
    if not hasattr(model, "get_proportions") or getattr(model, "design_", None) == "latent":
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the read-out's own notes: the verdict is this one
        proportions = model.get_proportions()
    gone = proportions.columns[proportions.max(axis=0).to_numpy() < NO_SHARE]
    if len(gone) == 0:
        return None
    names = short_repr([str(name) for name in gone])
    share = np.round(proportions.drop(columns=gone).mean(axis=0), 2).to_dict()
    n = proportions.shape[1]
    none = f"{len(gone)} of {n} types have no share (under {NO_SHARE:g}) in any spot"
    return Sign(
        f"{none} after training: {names}; the rest share the spots as {share}. At this "
        f"run's learning rate (lr={rate:g}, {rate / default:.0f} times the model's default "
        f"{default:g}) their shares can run off to the floor and learn no more. Train again "
        f"with the default rate (lr={default:g}) on a model built anew; if the types stay "
        "absent, the spots hold none of them.",
        f"Its proportions show it: {none} ({names}; the rest share the spots as {share}), "
        f"their shares run off to the floor, where they learn no more.",
        f"{len(gone)} of {n} types ran off to no share. ",
    )


class Sign(NamedTuple):
    """A finding that shows a run went unstable: its ``message`` alone, its ``evidence`` (a
    sentence) where another verdict says so first, and its ``record`` (``convergence_``)."""

    message: str
    evidence: str
    record: str


#: Where a verdict that went unstable gives its advice: the evidence goes before it.
_ADVICE = " Train again with "


def with_evidence(verdict: str, evidence: list[str]) -> str:
    """``verdict`` with the sentences of ``evidence`` put before its advice (at its end where
    it gives none in :data:`_ADVICE`'s words).

    Examples
    --------
    >>> with_evidence("It went unstable. Train again with lr=0.1.", ["Its read-outs are off."])
    'It went unstable. Its read-outs are off. Train again with lr=0.1.'
    """
    if not evidence:
        return verdict
    head, found, advice = verdict.rpartition(_ADVICE)
    if not found:
        head, advice = verdict, ""
    return " ".join([head, *evidence]) + (found + advice if found else "")
