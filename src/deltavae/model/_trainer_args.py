"""Lightning's own objects passed to ``train`` (``callbacks``, ``logger``, ``max_time``,
``precision`` and precision ``plugins``),
checked before anything trains: a callback given as a string, ``None`` or a class, a logger
named by a string, or ``max_time`` as a number of seconds failed inside Lightning with an
``AttributeError`` ("'str' object has no attribute 'on_exception'", "'int' object has no
attribute 'total_seconds'") that named neither the argument nor the fix."""

from __future__ import annotations

import datetime

from .._checks import short_repr
from ._validation import warn_user


def callback_list(callbacks) -> list:
    """``train(callbacks=...)`` as a list of this call's own: Lightning takes one callback or
    a list of them (scvi-tools' training and CGMDVAE's add theirs to the list). Anything
    else, or an item that is no callback object, is refused.

    Examples
    --------
    >>> from lightning.pytorch.callbacks import Callback
    >>> len(callback_list(Callback())), callback_list(None)
    (1, [])
    """
    from lightning.pytorch.callbacks import Callback

    if isinstance(callbacks, Callback):
        return [callbacks]
    if callbacks is None:
        return []
    items = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    wrong = [c for c in items if not isinstance(c, Callback)]
    if wrong:
        shown = wrong[0]
        fix = (
            f"an instance, {shown.__name__}(...)"
            if isinstance(shown, type) and issubclass(shown, Callback)
            else "Lightning Callback objects (e.g. LearningRateMonitor())"
        )
        raise ValueError(
            f"callbacks takes one Lightning callback or a list of them; got "
            f"{short_repr(shown)}: pass {fix}."
        )
    return items


def check_trainer_objects(trainer_kwargs: dict, max_epochs: int | None = None) -> None:
    """Refuse a ``logger`` or ``max_time`` Lightning fails on late, a ``max_steps`` of no step
    (0: the model stayed untrained, said only in Lightning's log line) and a ``min_epochs``
    above ``max_epochs`` (Lightning stopped at ``max_epochs`` without a word); warn of a
    logger that keeps no history."""
    steps = trainer_kwargs.get("max_steps")
    if steps is not None and (isinstance(steps, bool) or steps != -1 and not steps >= 1):
        raise ValueError(
            f"max_steps={short_repr(steps)} trains no step: pass a positive number of steps, "
            "or leave max_steps out (-1) to stop at max_epochs."
        )
    least = trainer_kwargs.get("min_epochs")
    if least is not None and max_epochs is not None and least > max_epochs:
        raise ValueError(
            f"min_epochs={short_repr(least)} is more than max_epochs={max_epochs}, at which "
            "training stops all the same: raise max_epochs or lower min_epochs."
        )
    logger = trainer_kwargs.get("logger")
    if isinstance(logger, str):
        raise ValueError(
            f"logger={logger!r}: Lightning takes a logger object (e.g. "
            "lightning.pytorch.loggers.CSVLogger('logs')), True or False, not its name; "
            "leave logger out to keep the model's training history."
        )
    if logger is not None and type(logger).__name__ != "SimpleLogger":  # scvi-tools' own
        # Lightning's loggers (logger=True, CSVLogger ...) replace scvi-tools' in-memory one.
        name = repr(logger) if isinstance(logger, bool) else type(logger).__name__
        warn_user(
            f"logger={name} keeps no training history: model.history, best_epoch_ and the "
            "check that training converged (NotConvergedWarning) are lost. The default "
            "history is kept in memory and writes no files; leave logger out to keep them."
        )
    max_time = trainer_kwargs.get("max_time")
    if max_time is not None and not isinstance(max_time, str | dict | datetime.timedelta):
        raise ValueError(
            f"max_time={short_repr(max_time)} is no duration Lightning reads: pass "
            "'DD:HH:MM:SS' (e.g. '00:01:30:00'), datetime.timedelta(hours=1, minutes=30) or "
            "{'hours': 1, 'minutes': 30}."
        )


#: Lightning's precisions that hold the module's parameters in another type than float32
#: (its names and the older spellings it still reads).
_CAST_PRECISIONS = {
    "64": "float64", "64-true": "float64", "double": "float64",
    "16-true": "float16", "half": "float16", "transformer-engine-float16": "float16",
    "bf16-true": "bfloat16", "transformer-engine": "bfloat16",
}  # fmt: skip
_CAST_PLUGINS = ("DoublePrecision", "HalfPrecision", "TransformerEnginePrecision")


def check_precision(trainer_kwargs: dict) -> None:
    """Refuse a Lightning ``precision`` (or precision plugin) that casts the module's
    parameters out of float32. Lightning cast them before the first step, which then failed
    on the data loaders' float32 minibatches ("mat1 and mat2 must have the same dtype",
    ``precision="bf16-true"``), and left a trained model's weights rounded to 16 bits, its
    next ``train`` refused. Parameters held in bfloat16 (8 bits of mantissa) would round
    away Adam's updates at the default rates. The mixed precisions (autocast; parameters kept
    in float32) train.

    Examples
    --------
    >>> check_precision({"precision": "bf16-mixed"})
    >>> check_precision({"precision": "bf16-true"})
    Traceback (most recent call last):
    ...
    ValueError: precision='bf16-true' casts the model's parameters to bfloat16, ...
    """
    precision = trainer_kwargs.get("precision")
    plugins = trainer_kwargs.get("plugins")
    plugins = plugins if isinstance(plugins, list | tuple) else [plugins]
    cast = [p for p in plugins if type(p).__name__ in _CAST_PLUGINS]
    if str(precision) not in _CAST_PRECISIONS and not cast:
        return
    if cast:
        given = f"plugins={type(cast[0]).__name__}(...)"
        dtype = "another type than float32"
    else:
        given, dtype = f"precision={precision!r}", _CAST_PRECISIONS[str(precision)]
    raise ValueError(
        f"{given} casts the model's parameters to {dtype}, but deltavae's models train "
        "them in float32 on float32 data (the first step fails on the mismatch, and "
        "parameters in 16 bits would round away the optimiser's small updates). For 16-bit "
        "speed pass precision='bf16-mixed' (autocast: parameters stay float32); otherwise "
        "leave precision out."
    )
