"""A model built with a keyword its constructor does not take (``CGMDVAE(adata,
n_cluster=5)``): the error names the closest of its keywords, as ``setup_anndata`` and
``train`` do, in place of Python's bare "unexpected keyword argument"."""

from __future__ import annotations

import functools
import inspect

from .._close_names import did_you_mean


def keyword_hints(init):
    """``init`` (a model's ``__init__``) refusing a keyword it does not take with the
    closest of those it does, and the list of them."""
    parameters = inspect.signature(init).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    named = [
        name
        for name, p in list(parameters.items())[1:]  # not self
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        unknown = [key for key in kwargs if key not in named]
        if unknown and not takes_any:
            hint = did_you_mean(unknown[0], named, end=" ")
            raise TypeError(
                f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}: "
                f"{hint}It takes {named[1:]} after the AnnData."
            )
        return init(self, *args, **kwargs)

    return checked
