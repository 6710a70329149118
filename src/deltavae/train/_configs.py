"""scvi-tools 1.4's ``train(plan_config=..., trainer_config=...)`` read into the arguments
deltavae's ``train`` takes: the plan's into ``plan_kwargs``, the trainer's into ``train``'s
own arguments (``max_epochs``, ``early_stopping`` ...) or its trainer keywords."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping

#: The two config arguments, and where their keys go.
CONFIGS = ("plan_config", "trainer_config")


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # arrays, objects without a plain comparison
        return False


def config_kwargs(value, name: str) -> dict:
    """The keywords a config stands for: a mapping as it is; a config object of scvi-tools
    (``scvi.train.TrainingPlanConfig``, ``TrainerConfig``, any object with ``to_kwargs()``)
    with only the settings it was given, those left at the class's defaults dropped, so that
    they leave deltavae's defaults (the KL warm-up's epochs, the validation schedule) rather
    than impose scvi-tools' on every call.

    Examples
    --------
    >>> config_kwargs({"lr": 1e-3}, "plan_config")
    {'lr': 0.001}
    >>> from scvi.train import TrainerConfig
    >>> config_kwargs(TrainerConfig(early_stopping_patience=5), "trainer_config")
    {'early_stopping_patience': 5}
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    to_kwargs = getattr(value, "to_kwargs", None)
    if not callable(to_kwargs):
        raise TypeError(
            f"{name} must be a mapping (a dict of keywords) or a config with to_kwargs(), such "
            f"as scvi.train.{'TrainerConfig' if name == 'trainer_config' else 'TrainingPlanConfig'}"
            f"(); got {type(value).__name__}."
        )
    given = to_kwargs()
    if not isinstance(given, dict):
        raise TypeError(f"{name}.to_kwargs() must return a dict, got {type(given).__name__}.")
    if not dataclasses.is_dataclass(value):
        return dict(given)
    try:
        defaults = type(value)().to_kwargs()
    except Exception:  # a config without defaults: every setting counts as given
        return dict(given)
    return {k: v for k, v in given.items() if k not in defaults or not _same(v, defaults[k])}


def expand_configs(signature: inspect.Signature, args: tuple, kwargs: dict) -> tuple:
    """``args`` and ``kwargs`` of a call of ``train`` (``signature``, ``self`` first) with
    ``plan_config`` and ``trainer_config`` read into the arguments train takes. As in
    scvi-tools, ``plan_kwargs`` overrides ``plan_config`` key by key and a trainer keyword
    overrides ``trainer_config``'s; a setting of ``trainer_config`` that is one of train's
    own arguments (``max_epochs``, ``early_stopping``, ``batch_size`` ...) is taken where the
    call left that argument out (scvi-tools dropped it even then), the call's value where it
    gave one. A ``plan_kwargs`` that is no dict is refused as train refuses it."""
    if not any(name in kwargs for name in CONFIGS) or any(
        name in signature.parameters for name in CONFIGS
    ):
        return args, kwargs
    kwargs = dict(kwargs)
    plan = config_kwargs(kwargs.pop("plan_config", None), "plan_config")
    trainer = config_kwargs(kwargs.pop("trainer_config", None), "trainer_config")
    bound = signature.bind_partial(*args, **kwargs)
    var_kw = next(
        (n for n, p in signature.parameters.items() if p.kind is inspect.Parameter.VAR_KEYWORD),
        None,
    )
    extra = dict(bound.arguments.get(var_kw, {})) if var_kw else {}
    named = {
        n
        for n, p in signature.parameters.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    } - {"self"}

    def get(name):
        return bound.arguments.get(name) if name in named else extra.get(name)

    def put(name, value):
        if name in named:
            bound.arguments[name] = value
        else:
            extra[name] = value

    if plan:
        from ..model._plan_checks import checked_plan

        # A plan_kwargs of no dict ("lr=1e-3") is refused as without plan_config, not with
        # "'str' object is not a mapping" from the merge.
        put("plan_kwargs", {**plan, **checked_plan(get("plan_kwargs"))})
    for key, value in trainer.items():  # the call's own argument wins, as in scvi-tools
        if key in named:
            bound.arguments.setdefault(key, value)
        else:
            extra.setdefault(key, value)
    if var_kw:
        bound.arguments[var_kw] = extra
    elif extra:
        raise TypeError(
            f"train() got unexpected keyword arguments {sorted(extra)} (from plan_config or "
            "trainer_config)."
        )
    return bound.args, bound.kwargs
