"""Keywords renamed for one spelling across the package (``labels_key`` as the models'
``setup_anndata`` spells it): the former name is still read, with a FutureWarning. And the
keywords scanpy and scvi-tools use for what is named otherwise here (``random_state`` for
``seed``): refused with the name to pass."""

from __future__ import annotations

import functools
import inspect

from ._checks import short_repr


def renamed_keywords(**renamed: str):
    """Decorate a function whose keywords ``old`` (the keys of ``renamed``) are now named
    ``new`` (their values): ``old=value`` is read as ``new=value``, with a FutureWarning that
    names the new spelling; both given is a TypeError. The signature shown (``help``, the
    docs) is the function's own, with the new names only.

    Examples
    --------
    >>> @renamed_keywords(label_key="labels_key")
    ... def plot(adata, labels_key):
    ...     return labels_key
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     plot("adata", label_key="cell_type")
    'cell_type'
    >>> caught[0].category.__name__
    'FutureWarning'
    """

    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def call(*args, **kwargs):
            for old, new in renamed.items():
                if old not in kwargs:
                    continue
                value = kwargs.pop(old)
                if new in kwargs or new in signature.bind_partial(*args).arguments:
                    raise TypeError(
                        f"{func.__name__}() got {old}= and {new}=: {old} is the former name "
                        f"of {new}; pass {new} only."
                    )
                from .model._validation import warn_user

                warn_user(
                    f"{func.__name__}'s {old} is now named {new}, as the models' "
                    f"setup_anndata({new}=...); {old}= is read as {new}= until a later "
                    f"release: pass {new}={short_repr(value)}.",
                    FutureWarning,
                )
                kwargs[new] = value
            return func(*args, **kwargs)

        return call

    return decorate


#: Whose keywords the names refused by :func:`foreign_keywords` are, for its messages.
_WHOSE = {
    "random_state": "scanpy's and scikit-learn's",
    "n_samples": "scvi-tools'",
    "n_observations": "scanpy's datasets.blobs",
    "n_variables": "scanpy's datasets.blobs",
    "n_centers": "scanpy's datasets.blobs",
    "key": "scanpy's pp.combat",
    "batch": "",  # many tools', none's in particular
    "covariates": "",
    "learning_rate": "",
    "patience": "Lightning's EarlyStopping",
}


def foreign_hint(call: str, name: str, value, ours: str) -> str:
    """What ``call(name=value)`` means here. ``ours`` is the keyword taking ``name``'s place,
    with an optional note after ``": "`` (``"group1: the groups to test"``), or a sentence said
    as it is where none does.

    Examples
    --------
    >>> foreign_hint("draw", "random_state", 0, "seed")
    "scanpy's and scikit-learn's random_state= is seed= here: draw(..., seed=0)"
    >>> foreign_hint("plot", "groupby", "leiden", "cluster_key: one column")
    "scanpy's groupby= is cluster_key= here (one column): plot(..., cluster_key='leiden')"
    """
    keyword, _, note = ours.partition(": ")
    if not keyword.isidentifier():
        return ours
    note = f" ({note})" if note else ""
    whose = _WHOSE.get(name, "scanpy's")
    whose = f"{whose} " if whose else ""
    return f"{whose}{name}= is {keyword}= here{note}: {call}(..., {keyword}={short_repr(value)})"


def _called(func, first) -> str:
    """How the user called ``func``, given its first argument: ``"Model"`` for a class's
    ``__init__``, ``"Model.method"`` for a method or classmethod of ``Model`` (a class's own
    name, not the mixin's that defines it), else the function's name."""
    owner = first if isinstance(first, type) else type(first)
    if func.__name__ == "__init__" and first is not None:
        return owner.__name__
    member = inspect.getattr_static(owner, func.__name__, None)
    member = getattr(member, "__func__", member)  # a classmethod's, a staticmethod's
    if member is not None and inspect.unwrap(member) is inspect.unwrap(func):
        return f"{owner.__name__}.{func.__name__}"
    return func.__name__


def foreign_keywords(**table: str):
    """Decorate a function that names otherwise what scanpy or scvi-tools call ``name`` (the
    keys of ``table``): ``name=value`` is refused before the call, with a TypeError naming
    the keyword to pass (:func:`foreign_hint`), where Python's bare "unexpected keyword
    argument" named neither it nor what to do. Not read as an alias: two names for one thing
    would make saved options and the command line ambiguous. The signature shown (``help``,
    ``inspect``, the docs) is the function's own; ``table`` is kept as its
    ``foreign_keywords``.

    Examples
    --------
    >>> @foreign_keywords(random_state="seed")
    ... def draw(n_cells=10, seed=None):
    ...     return seed
    >>> draw(random_state=1)
    Traceback (most recent call last):
    ...
    TypeError: draw() got an unexpected keyword argument 'random_state': scanpy's and \
scikit-learn's random_state= is seed= here: draw(..., seed=1).
    >>> import inspect
    >>> str(inspect.signature(draw))
    '(n_cells=10, seed=None)'
    """

    def decorate(func):
        @functools.wraps(func)
        def call(*args, **kwargs):
            foreign = [name for name in kwargs if name in table]
            if foreign:
                name = foreign[0]
                called = _called(func, args[0] if args else None)
                hint = foreign_hint(called, name, kwargs[name], table[name])
                raise TypeError(f"{called}() got an unexpected keyword argument {name!r}: {hint}.")
            return func(*args, **kwargs)

        call.foreign_keywords = table
        return call

    return decorate
