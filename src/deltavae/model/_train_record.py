"""What a model keeps of how it was trained: the arguments of its last ``train`` call and the
seed it ran under (``train_args_``, saved with the model)."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import scvi

from ..train import TrainingDivergedError


def _plain(value):
    """``value`` as plain Python (numbers, strings, lists, dicts) for ``train_args_``; other
    objects (callbacks, loggers) by their ``repr``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def records_train_args(train):
    """Keep the arguments of the outermost ``train`` call (defaults filled in, ``**kwargs``
    spread out) and ``scvi.settings.seed`` in the model's ``train_args_``, which ``save``
    stores with the model: how a saved model was trained stays with it."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def wrapper(self, *args, **kwargs):
        if self.__dict__.get("_recording_train"):
            return train(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        record = {}
        for name, value in list(bound.arguments.items())[1:]:
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                record.update({key: _plain(v) for key, v in value.items()})
            elif signature.parameters[name].kind is not inspect.Parameter.VAR_POSITIONAL:
                record[name] = _plain(value)
        self._train_record = {**record, "seed": scvi.settings.seed}
        self._recording_train = True
        try:
            out = train(self, *args, **kwargs)
        except TrainingDivergedError:
            self.train_args_ = self._train_record  # it trained, up to the divergence
            raise
        finally:
            self._recording_train = False
        # Kept once the call has run: a call refused for its arguments leaves the last record.
        self.train_args_ = self._train_record
        return out

    return wrapper
