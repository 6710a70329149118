"""``lr`` and the numbers of ``plan_kwargs`` checked before training: each one that the
training plan or torch's optimiser would take wrongly (a rate of 0 in ``optim_kwargs``
trained nothing, in silence) or refuse only inside the first step (a ``max_kl_weight`` below
the warm-up's starting weight, from scvi-tools' KL weight) named with its fix."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping

import numpy as np
import pyro

from .._checks import is_number, short_repr
from .._close_names import did_you_mean

#: Optimiser and KL-weight settings that must be above 0, and those that may be 0.
_POSITIVE, _NON_NEGATIVE = ("lr", "eps", "max_kl_weight"), ("weight_decay", "min_kl_weight")


def _plan_default(name: str):
    from ..train._plan import DeltaTrainingPlan

    return inspect.signature(DeltaTrainingPlan.__init__).parameters[name].default


#: scvi-tools' TrainingPlan logging switches: deltavae's plan logs every metric once an epoch.
_PER_STEP = ("on_step", "on_epoch")


def check_plan_names(plan: dict) -> None:
    """Refuse a ``plan_kwargs`` key the training plan does not take, by name with the closest
    ones (Python's TypeError named scvi-tools' ``LowLevelPyroTrainingPlan``, a class the user
    never called), and scvi-tools' ``on_step``/``on_epoch`` with what the history logs.

    Examples
    --------
    >>> check_plan_names({"lr": 1e-3, "n_steps_kl_warmup": 100})
    >>> check_plan_names({"max_kl_weigth": 0.5})
    Traceback (most recent call last):
    ...
    TypeError: plan_kwargs got an unexpected key 'max_kl_weigth': did you mean 'max_kl_weight' ...
    """
    from scvi.train import LowLevelPyroTrainingPlan

    from ..train._plan import DeltaTrainingPlan

    known = set()
    for plan_class in (DeltaTrainingPlan, LowLevelPyroTrainingPlan):
        known |= set(inspect.signature(plan_class.__init__).parameters)
    known -= {"self", "pyro_module", "kwargs"}
    unknown = [name for name in plan if name not in known]
    if not unknown:
        return
    if unknown[0] in _PER_STEP:
        raise TypeError(
            f"plan_kwargs[{unknown[0]!r}]: deltavae logs every metric once an epoch, under "
            "the names scvi-tools 1.4 gives them by default (history['train_loss'], "
            "'elbo_train', 'elbo_validation' ...); per-step logging is not offered. Leave it "
            "out."
        )
    if unknown[0] == "classification_ratio":
        raise TypeError(
            "plan_kwargs['classification_ratio']: scvi-tools' SCANVI weight of the labelled "
            "cells' classification term is CGMDVAE's classifier_weight, set when the model is "
            "built: CGMDVAE(adata, classifier_weight=50) (its default, as SCANVI's)."
        )
    hint = did_you_mean(unknown[0], sorted(known), end=" ")
    raise TypeError(
        f"plan_kwargs got an unexpected key {unknown[0]!r}: {hint}The training plan takes "
        f"{', '.join(sorted(known))}."
    )


def _pyro_scales_kl(module) -> bool:
    """Whether ``module`` trains through Pyro's ``scale`` handler with a KL weight: it has no
    torch-side ELBO and its ``model`` takes ``kl_weight`` (scvi-tools' test of it)."""
    if module is None or getattr(module, "has_torch_elbo", False):
        return False
    model = getattr(module, "model", None)
    model = getattr(model, "forward", model)
    return callable(model) and "kl_weight" in inspect.signature(model).parameters


def check_plan_numbers(plan: dict, lr, module=None) -> None:
    """Refuse ``lr`` and ``plan`` (the given ``plan_kwargs``) numbers a run cannot train
    with: not real numbers, not finite, a rate, ``eps`` or ``max_kl_weight`` of 0 or less, a
    negative ``weight_decay`` or ``min_kl_weight`` (also in ``plan["optim_kwargs"]``), a
    ``max_kl_weight`` below ``min_kl_weight`` (its default included), a ``min_kl_weight`` of
    0 with a Pyro ``loss_fn`` or a ``module`` without a torch-side ELBO (``has_torch_elbo``
    false: Pyro's ``scale`` handler refuses a weight of 0 inside the first step; the default
    torch-side ELBO trains from 0), or an ``n_steps_kl_warmup`` that is no
    count of steps.

    Examples
    --------
    >>> check_plan_numbers({"max_kl_weight": 0.5, "optim_kwargs": {"weight_decay": 0}}, 1e-3)
    >>> check_plan_numbers({"optim_kwargs": {"lr": 0}}, None)
    Traceback (most recent call last):
    ...
    ValueError: plan_kwargs['optim_kwargs']['lr'] must be positive and finite; got 0.
    >>> check_plan_numbers({"max_kl_weight": 1e-7}, None)
    Traceback (most recent call last):
    ...
    ValueError: plan_kwargs['max_kl_weight']=1e-07 is below min_kl_weight=1e-06 (its default), ...
    """
    optim = plan.get("optim_kwargs") or {}
    given = {"lr": ("lr", lr)} if lr is not None and "lr" not in plan else {}
    for name in (*_POSITIVE, *_NON_NEGATIVE):
        for where, values in (("plan_kwargs", plan), ("plan_kwargs['optim_kwargs']", optim)):
            if values.get(name) is not None:
                given[f"{where}[{name!r}]"] = (name, values[name])
    for label, (name, value) in given.items():
        bad = not is_number(value) or not math.isfinite(value)
        if bad or (value <= 0 if name in _POSITIVE else value < 0):
            got = short_repr(value)
            if label in ("lr", "plan_kwargs['lr']"):  # the words of train's own lr check
                where = "" if label == "lr" else f" ({label})"
                raise ValueError(f"lr must be a positive, finite number; got {got}{where}.")
            what = "positive" if name in _POSITIVE else "non-negative"
            raise ValueError(f"{label} must be {what} and finite; got {got}.")
    top = plan.get("max_kl_weight")
    bottom = plan.get("min_kl_weight")
    if top is not None:
        floor = _plan_default("min_kl_weight") if bottom is None else bottom
        if floor > top:
            whose = " (its default)" if bottom is None else ""
            raise ValueError(
                f"plan_kwargs['max_kl_weight']={top:g} is below min_kl_weight={floor:g}{whose}, "
                "the KL weight the warm-up starts from: pass a min_kl_weight at most "
                f"max_kl_weight too, e.g. plan_kwargs={{'max_kl_weight': {top:g}, "
                f"'min_kl_weight': {top / 10:g}}}."
            )
    loss_fn = plan.get("loss_fn")
    if bottom == 0 and loss_fn is not None and type(loss_fn) is not pyro.infer.Trace_ELBO:
        raise ValueError(
            f"plan_kwargs['min_kl_weight']=0 with loss_fn={type(loss_fn).__name__}: that loss "
            "runs through Pyro's scale handler, which needs a positive KL weight. Pass a "
            "small positive min_kl_weight (e.g. 1e-6, the default), or leave loss_fn out."
        )
    if bottom == 0 and _pyro_scales_kl(module):
        raise ValueError(
            f"plan_kwargs['min_kl_weight']=0 with {type(module).__name__}, which has no "
            "torch-side ELBO (has_torch_elbo is False): its loss runs through Pyro's scale "
            "handler, which needs a positive KL weight. Pass a small positive min_kl_weight "
            "(e.g. 1e-6, the default)."
        )
    check_schedule(plan)
    steps = plan.get("n_steps_kl_warmup")
    integer = isinstance(steps, numbers.Integral) and not isinstance(steps, bool)
    if steps is not None and (not integer or steps < 0):
        raise ValueError(
            "plan_kwargs['n_steps_kl_warmup'] must be 0 or more steps (or None); got "
            f"{short_repr(steps)}."
        )


def checked_plan(plan_kwargs) -> dict:
    """``plan_kwargs`` (and its ``optim_kwargs``) as a dict, or refused when it is none:
    ``plan_kwargs="lr=1e-3"`` failed with "dictionary update sequence element #0 has length
    1; 2 is required", a list with "'list' object is not a mapping", a spot model's with
    "'str' object has no attribute 'get'".

    Examples
    --------
    >>> checked_plan(None), checked_plan({"lr": 0.01})
    ({}, {'lr': 0.01})
    >>> checked_plan("lr=1e-3")
    Traceback (most recent call last):
    ...
    TypeError: plan_kwargs must be a dict of the training plan's settings, ...
    """
    _check_dict("plan_kwargs", plan_kwargs, "{'weight_decay': 1e-6}")
    plan = dict(plan_kwargs or {})
    _check_dict("plan_kwargs['optim_kwargs']", plan.get("optim_kwargs"), "{'betas': (0.9, 0.99)}")
    return plan


def _check_dict(name: str, value, example: str) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a dict of the training plan's settings, e.g. {name}={example}; "
            f"got {short_repr(value)} ({type(value).__name__})."
        )


def check_optimizer_settings(plan: dict) -> None:
    """Refuse an optimiser setting (a key of ``plan["optim_kwargs"]``, or ``plan``'s own
    ``eps`` and ``weight_decay``) that the run's optimiser does not take (``plan["optim"]``,
    else ``plan["optimizer"]``'s, Adam by default), by name with the closest ones: torch's
    TypeError ("Adam.__init__() got an unexpected keyword argument 'lrr'") came from inside
    the fit, after the call had replaced the model's ``train_args_`` and training split.

    Examples
    --------
    >>> check_optimizer_settings({"optim_kwargs": {"betas": (0.9, 0.99)}})
    >>> check_optimizer_settings({"optim_kwargs": {"weight_decy": 1e-4}})
    Traceback (most recent call last):
    ...
    TypeError: plan_kwargs['optim_kwargs']['weight_decy'] is no setting of Adam, the run's ...
    """
    from ..train._plan import _OPTIMIZERS

    optim = plan.get("optim")
    if optim is None:
        optim = _OPTIMIZERS.get(plan.get("optimizer", "Adam"))  # "Custom": the creator's own
    try:
        takes = inspect.signature(optim).parameters if optim is not None else {}
    except (TypeError, ValueError):  # no signature to read: the optimiser says
        return
    if not takes or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
        return
    known = sorted(set(takes) - {"self", "params"})
    given = {f"plan_kwargs['optim_kwargs'][{k!r}]": k for k in plan.get("optim_kwargs") or {}}
    for key in ("eps", "weight_decay"):  # the plan puts them into optim_kwargs
        if plan.get(key) is not None:
            given[f"plan_kwargs[{key!r}]"] = key
    for where, key in given.items():
        if key not in takes:
            raise TypeError(
                f"{where} is no setting of {getattr(optim, '__name__', optim)}, the run's "
                f"optimiser: {did_you_mean(key, known, end=' ')}It takes {', '.join(known)}."
            )


def check_schedule(plan: dict) -> None:
    """Refuse scvi-tools' learning-rate schedule settings a run would take wrongly:
    ``reduce_lr_on_plateau`` that is not True or False (``"False"`` from a config file
    turned the schedule on), an ``lr_factor`` outside (0, 1) (torch's "Factor should be
    < 1.0." from inside the fit; a negative one made the rate negative), an ``lr_patience``
    that is no whole number of 0 or more (-1 cut the rate every epoch), and a negative or
    non-finite ``lr_threshold`` or ``lr_min``.

    Examples
    --------
    >>> check_schedule({"reduce_lr_on_plateau": True, "lr_factor": 0.5, "lr_patience": 10})
    >>> check_schedule({"reduce_lr_on_plateau": "False"})
    Traceback (most recent call last):
    ...
    ValueError: plan_kwargs['reduce_lr_on_plateau'] must be True or False; got 'False'.
    """
    switch = plan.get("reduce_lr_on_plateau", False)
    if not isinstance(switch, bool | np.bool_):
        raise ValueError(
            f"plan_kwargs['reduce_lr_on_plateau'] must be True or False; got {short_repr(switch)}."
        )
    rules = {
        "lr_factor": ("a number between 0 and 1 (exclusive)", lambda v: 0 < v < 1),
        "lr_patience": ("a whole number of 0 or more", lambda v: float(v).is_integer() and v >= 0),
        "lr_threshold": ("a finite number of 0 or more", lambda v: v >= 0),
        "lr_min": ("a finite number of 0 or more", lambda v: v >= 0),
    }
    for name, (what, fits) in rules.items():
        if name in plan:
            value = plan[name]
            if not is_number(value) or not math.isfinite(value) or not fits(value):
                raise ValueError(f"plan_kwargs[{name!r}] must be {what}; got {short_repr(value)}.")
