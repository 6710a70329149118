"""scvi-tools' custom optimiser, ``plan_kwargs={"optimizer": "Custom", "optimizer_creator":
fn}``: ``fn`` makes the torch optimiser from the learning parameters. Its rate and settings
are the creator's, so those given beside it (which scvi-tools drops without a word) are
refused, and a creator without ``optimizer="Custom"`` (which scvi-tools ignores) too."""

from __future__ import annotations

from collections.abc import Callable

import torch

_CREATOR = (
    "optimizer_creator, a function of the parameters that returns a torch optimiser, e.g. "
    "plan_kwargs={'optimizer': 'Custom', 'optimizer_creator': lambda params: "
    "torch.optim.SGD(params, lr=0.01)}"
)


def check_custom_optimizer(optimizer: str, creator: Callable | None, settings: dict) -> None:
    """Refuse ``optimizer="Custom"`` without a callable ``creator``, a ``creator`` without
    it, and optimiser ``settings`` (``lr``, ``eps``, ``weight_decay``, ``optim``,
    ``optim_kwargs``: ``None`` where not given) beside a creator.

    Examples
    --------
    >>> check_custom_optimizer("Custom", lambda params: None, {"lr": None})
    >>> check_custom_optimizer("Custom", lambda params: None, {"lr": 0.1})
    Traceback (most recent call last):
    ...
    ValueError: plan_kwargs['lr'] is set by optimizer='Custom''s optimizer_creator, which ...
    """
    if optimizer != "Custom":
        if creator is not None:
            raise ValueError(
                f"optimizer_creator is read with optimizer='Custom' only (got optimizer="
                f"{optimizer!r}): pass plan_kwargs={{'optimizer': 'Custom', "
                "'optimizer_creator': ...}, or leave optimizer_creator out."
            )
        return
    if not callable(creator):
        raise ValueError(f"optimizer='Custom' needs {_CREATOR}; got {creator!r}.")
    given = [name for name, value in settings.items() if value is not None]
    if given:
        rate = given[0] == "optim_kwargs" and set(settings["optim_kwargs"]) == {"lr"}
        named = "lr" if rate else f"plan_kwargs[{given[0]!r}]"  # train(lr=) arrives so
        raise ValueError(
            f"{named} is set by optimizer='Custom''s optimizer_creator, "
            "which makes the optimiser with its own settings: set it there (e.g. "
            "lambda params: torch.optim.SGD(params, lr=0.01)), or leave optimizer_creator out."
        )


def created_optimizer(creator: Callable, params: list) -> torch.optim.Optimizer:
    """The optimiser ``creator`` makes from ``params``, checked to be a torch optimiser."""
    optimizer = creator(params)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer_creator returned {type(optimizer).__name__}, not a torch optimiser: "
            "it must return one built on the parameters it is given, e.g. "
            "torch.optim.SGD(params, lr=0.01)."
        )
    return optimizer
