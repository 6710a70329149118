"""Keywords a read-out hands on to its data loader or module, checked by name.

scvi-tools' read-outs (``get_latent_representation``, ``get_elbo``, ...) pass every keyword
they do not name on to the data loader, so a misspelt or foreign argument
(``give_meen=True``, ``condition="ctrl"``) failed deep in torch with
"DataLoader.__init__() got an unexpected keyword argument", naming neither the read-out nor
what it takes."""

from __future__ import annotations

import inspect
import sys
from functools import cache
from pathlib import Path

__all__ = ["check_loader_keywords", "check_module_keywords"]

_PACKAGES = tuple(
    str(Path(__import__(name).__file__).parent) for name in ("deltavae", "scvi", "torch")
)


@cache
def _accepted() -> frozenset:
    from scvi.dataloaders import AnnDataLoader
    from torch.utils.data import DataLoader

    names = set()
    for init in (AnnDataLoader.__init__, DataLoader.__init__):
        names |= set(inspect.signature(init).parameters)
    return frozenset(names - {"self", "kwargs", "dataset", "adata_manager"})


def _public_caller() -> str:
    """The outermost public method of deltavae or scvi-tools on the stack: the user's call."""
    name, frame = "the read-out", sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGES):
        path = frame.f_code.co_filename  # not torch's decorators, not the file opener
        named = path.startswith(_PACKAGES[:2]) and not path.endswith("_backing.py")
        if named and not frame.f_code.co_name.startswith("_"):
            name = f"{frame.f_code.co_name}()"
        frame = frame.f_back
    return name


def check_loader_keywords(kwargs: dict, named: tuple) -> None:
    """Refuse keywords of ``_make_data_loader`` that neither it (``named``), scvi-tools'
    ``AnnDataLoader`` nor torch's ``DataLoader`` takes (a custom ``data_loader_class`` may
    take its own: then nothing is checked).

    Examples
    --------
    >>> check_loader_keywords({"batch_size": 8, "num_workers": 0}, ("batch_size",))
    >>> check_loader_keywords({"give_meen": True}, ())
    Traceback (most recent call last):
    ...
    TypeError: the read-out got an unexpected keyword argument 'give_meen' ...
    """
    if kwargs.get("data_loader_class") is not None:
        return
    if kwargs.get("load_sparse_tensor"):  # torch's sparse CSR minibatches: the networks refuse
        raise TypeError(
            f"{_public_caller()} got load_sparse_tensor=True: sparse counts are read into dense "
            "minibatches here, one at a time; there is nothing to switch on, leave it out."
        )
    unknown = [key for key in kwargs if key not in named and key not in _accepted()]
    if unknown:
        raise TypeError(
            f"{_public_caller()} got an unexpected keyword argument {unknown[0]!r} (keywords "
            "a read-out does not name go to its data loader, which takes none of that name: "
            "check the spelling against the method's documentation)."
        )


def check_module_keywords(
    model, method: str, scvi_method, args: tuple, kwargs: dict, to: str
) -> inspect.BoundArguments:
    """Refuse keywords scvi-tools' ``method`` hands to the module's ``to`` (``forward``,
    ``marginal_ll``) that it does not take: ``get_elbo(n_samples=3)`` failed with
    "DeltaPyroModule.forward() got an unexpected keyword argument". Returns the call bound to
    ``scvi_method``'s signature (``model`` first)."""
    call = inspect.signature(scvi_method).bind(model, *args, **kwargs)
    extra = call.arguments.get("kwargs") or {}
    takes = inspect.signature(getattr(model.module, to)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
        return call
    unknown = [key for key in extra if key not in takes]
    if unknown:
        raise TypeError(
            f"{method}() got an unexpected keyword argument {unknown[0]!r} (keywords it does "
            f"not name go to the module's {to}(), which takes none of that name: check the "
            "spelling against the method's documentation)."
        )
    return call
