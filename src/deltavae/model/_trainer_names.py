"""The names ``train`` passes on to scvi-tools and Lightning."""

from __future__ import annotations

import inspect


def trainer_names() -> set[str]:
    """The names ``train(**trainer_kwargs)`` can pass on: scvi-tools' Pyro training mixin's,
    its Trainer's, Lightning's Trainer's, and the ``devices`` and ``strategy`` that ``train``
    itself reads."""
    import lightning.pytorch as pl
    from scvi.model.base import PyroSviTrainMixin
    from scvi.train import Trainer

    names = {"devices", "strategy"}
    for function in (PyroSviTrainMixin.train, Trainer.__init__, pl.Trainer.__init__):
        names |= {
            name
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is not inspect.Parameter.VAR_KEYWORD and name != "self"
        }
    return names
