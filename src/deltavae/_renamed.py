"""Keywords renamed for one spelling across the package (``labels_key`` as the models'
``setup_anndata`` spells it): the former name is still read, with a FutureWarning."""

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
