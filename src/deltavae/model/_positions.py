"""Read-outs take ``indices`` right after ``adata``, as scvi-tools' read-outs do
(``get_latent_representation(adata, indices, ...)``, ``SCANVI.predict(adata, indices, soft,
batch_size)``); calls in an older order of arguments are still read as they were, with a
FutureWarning."""

from __future__ import annotations

import functools
import inspect
from numbers import Integral

import numpy as np

from .._checks import short_repr
from ._validation import warn_user


def _scalar(value) -> bool:
    """Whether ``value`` is a number or a truth value: never a selection of cells."""
    return isinstance(value, bool | np.bool_ | Integral)


def _old_order(rest: tuple, old: tuple[str, ...]) -> bool:
    """Whether the positional arguments ``rest`` (from ``indices``' place on) are the old
    order's: the first a number or True/False (``batch_size``, ``soft``), which no selection
    is, or ``None`` before a selection where the old order had ``indices`` (``None`` before a
    number is the new order: ``indices=None, batch_size=64``)."""
    if len(rest) > len(old):
        return False  # Python's own TypeError names the count
    if _scalar(rest[0]):
        return True
    if rest[0] is None and "indices" in old and len(rest) > old.index("indices"):
        selection = rest[old.index("indices")]
        return selection is not None and not _scalar(selection)
    return False


def indices_after_adata(*old: str):
    """Decorate a read-out whose arguments after ``adata`` were ``old`` (``"batch_size",
    "indices"``: the spot models' read-outs; ``"soft", "batch_size"``: predict_clusters)
    before ``indices`` came right after ``adata``. Positional arguments from ``indices``' place
    on that fit only the old order (see :func:`_old_order`) are read in it, with a
    FutureWarning naming what to pass by name.

    Examples
    --------
    >>> class Model:
    ...     @indices_after_adata("batch_size", "indices")
    ...     def read(self, adata=None, indices=None, batch_size=None):
    ...         return indices, batch_size
    >>> Model().read("spots", [0, 2], 8)
    ([0, 2], 8)
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     Model().read("spots", 8, [0, 2])
    ([0, 2], 8)
    >>> caught[0].category.__name__
    'FutureWarning'
    """

    def decorate(method):
        signature = inspect.signature(method)
        where = list(signature.parameters).index("indices") - 1  # after self

        def call(self, args, kwargs):
            try:  # Python named the mixin that defines it ("NMFResultsMixin.get_proportions()")
                signature.bind(self, *args, **kwargs)
            except TypeError as err:
                said = str(err) if str(err).startswith(("got", "missing")) else f"got {err}"
                raise TypeError(f"{type(self).__name__}.{method.__name__}() {said}") from None
            return method(self, *args, **kwargs)

        @functools.wraps(method)
        def read(self, *args, **kwargs):
            rest = args[where:]
            if not rest or not _old_order(rest, old):
                return call(self, args, kwargs)
            given = dict(zip(old, rest, strict=False))
            twice = sorted(set(given) & set(kwargs))
            if twice:
                raise TypeError(f"{method.__name__}() got multiple values for {twice[0]!r}.")
            by_name = ", ".join(f"{k}={short_repr(v)}" for k, v in given.items())
            warn_user(
                f"{type(self).__name__}.{method.__name__} takes indices right after adata, as "
                "scvi-tools' read-outs (get_latent_representation(adata, indices, ...)); these "
                f"positional arguments are read in the old order ({', '.join(old)}) until a "
                f"later release: pass {by_name} by name.",
                FutureWarning,
            )
            return call(self, args[:where], {**given, **kwargs})

        return read

    return decorate
