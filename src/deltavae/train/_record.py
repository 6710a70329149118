"""What a model keeps of how it was trained: the arguments of its last ``train`` call and the
seed it ran under (``train_args_``, saved with the model)."""

from __future__ import annotations

import functools
import hashlib
import inspect

import numpy as np
import scvi

from ._configs import expand_configs


def _plain(value):
    """``value`` as plain Python (numbers, strings, lists, dicts) for ``train_args_``; other
    objects (callbacks, loggers) by their ``repr``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        # external_indexing's lists of cells: their repr, cut to "..." past 1,000 cells
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


#: Models (by id) inside a ``train`` call: calls of ``train`` they make (a model's own train
#: calling its base class's) are not outermost. Kept here, not on the model, so that a copy
#: pickled during training records its own later calls.
_RECORDING: set[int] = set()


def records_train_args(train):
    """Prepare the record of the outermost ``train`` call: its arguments (defaults filled in,
    ``**kwargs`` spread out) and ``scvi.settings.seed``. The training runner commits it to the
    model's ``train_args_`` (saved with the model) when the fit starts (see
    :func:`commit_train_args`), so that a call refused for its arguments, or a query model's
    call with nothing to learn, leaves the last record, and a fit interrupted by an error
    keeps the record of the call that changed the parameters (one that failed before its
    first step changed none: the runner puts the record before it back). scvi-tools 1.4's
    ``plan_config`` and ``trainer_config`` are read into the arguments they hold first
    (:func:`~deltavae.train._configs.expand_configs`), and recorded as those."""
    signature = inspect.signature(train)

    def arguments(args, kwargs, spread: bool = True) -> dict:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        record = {}
        for name, value in list(bound.arguments.items())[1:]:
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                record.update({key: _plain(v) for key, v in value.items() if spread})
            elif signature.parameters[name].kind is not inspect.Parameter.VAR_POSITIONAL:
                record[name] = _plain(value)
        return record

    @functools.wraps(train)
    def wrapper(self, *args, **kwargs):
        # scvi-tools 1.4's plan_config and trainer_config, read as the arguments they hold
        (self, *args), kwargs = expand_configs(signature, (self, *args), kwargs)
        if id(self) in _RECORDING:
            # A subclass's train calling its base's: the base's defaults the subclass left
            # to it (train_size, batch_size...) join the record, the outer call's values kept
            # (not its **kwargs: callbacks the subclass adds are not the user's).
            record = self.__dict__.get("_train_record")
            if record is not None:
                for key, value in arguments((self, *args), kwargs, spread=False).items():
                    record.setdefault(key, value)
            return train(self, *args, **kwargs)
        self._train_record = {**arguments((self, *args), kwargs), "seed": scvi.settings.seed}
        # The names the user wrote (defaults fill the record): train_size given beside
        # external_indexing is warned as unread (model/_split_checks.py).
        self._train_given = frozenset(signature.bind(self, *args, **kwargs).arguments) | set(kwargs)
        _RECORDING.add(id(self))
        try:
            return train(self, *args, **kwargs)
        finally:
            _RECORDING.discard(id(self))
            self.__dict__.pop("_train_record", None)
            self.__dict__.pop("_train_given", None)

    return wrapper


def commit_train_args(model, resolved: dict, automatic: dict | None = None, held_out=None) -> None:
    """The fit starts: the pending record of the ``train`` call becomes ``train_args_``, its
    arguments left to a default (``None``) replaced by the ``resolved`` values the fit runs
    with, and those left to ``"auto"`` by the ``automatic`` values they came to; the last
    run's ``convergence_`` is cleared."""
    from ..model._label_order import record_labels_ordered
    from ..model._label_record import record_trained_labels
    from ..model._labels import record_trained_categories

    record = model.__dict__.pop("_train_record", None)
    if record is not None:
        record.update({k: v for k, v in resolved.items() if record.get(k) is None})
        record.update({k: v for k, v in (automatic or {}).items() if record.get(k) == "auto"})
        model.train_args_ = record
    # The verdict print(model) shows is this run's: one interrupted or failed before its
    # verdict says none rather than the run's before it (model/_summary.py). The run's before
    # tells a fine-tuning run at a low rate from one more run of a model never trained at a
    # working rate (model/_verdicts.py, tunes_a_trained_model).
    model.__dict__["_verdict_before"] = getattr(model, "convergence_", None)
    model.convergence_ = None
    # Not the validation or test split's cells (``held_out``): they never train.
    record_trained_categories(model, held_out)
    record_trained_labels(model, held_out)
    record_labels_ordered(model)  # passed on to query models, whose query seldom has labels


def cells_digest(names) -> str:
    """A fingerprint of cell names in their order: the cells whose positions a model's
    training split (``train_indices``) holds, checked when it is loaded onto cells.

    Examples
    --------
    >>> cells_digest(["a", "b"]) == cells_digest(["b", "a"])
    False
    """
    return hashlib.sha1("\x00".join(map(str, names)).encode()).hexdigest()[:16]
