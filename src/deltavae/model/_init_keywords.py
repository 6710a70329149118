"""A model built with a keyword its constructor does not take (``CGMDVAE(adata,
n_cluster=5)``): the error names the closest of its keywords, as ``setup_anndata`` and
``train`` do, in place of Python's bare "unexpected keyword argument"."""

from __future__ import annotations

import functools
import inspect

from .._close_names import did_you_mean
from .._renamed import foreign_hint, foreign_keywords
from ._setup_instead import SEEDED_BY_SCVI, SETUP_FOREIGN

#: scanpy's and scikit-learn's keywords no model's constructor takes (``foreign_hint``'s
#: sentences: what to do instead).
SEEDED = f"a model's constructor takes no seed: {SEEDED_BY_SCVI}"
_FOREIGN = {"random_state": SEEDED, "seed": SEEDED}


def keyword_hints(init=None, **foreign: str):
    """``init`` (a model's ``__init__``) refusing a keyword it does not take with the
    closest of those it does, and the list of them; scanpy's and scvi-tools' keywords for
    what it names otherwise (``random_state``, and ``foreign``'s keys, e.g.
    ``keyword_hints(n_comps="n_pcs")``) with ``_renamed.foreign_hint``'s hint (kept, with
    them, as its ``foreign_keywords``)."""
    if init is None:
        return functools.partial(keyword_hints, **foreign)
    table = {**_FOREIGN, **foreign}
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
            model = type(self).__name__
            if unknown[0] in table:
                hint = foreign_hint(model, unknown[0], kwargs[unknown[0]], table[unknown[0]])
                raise TypeError(
                    f"{model}() got an unexpected keyword argument {unknown[0]!r}: {hint}."
                )
            hint = did_you_mean(unknown[0], named, end=" ")
            raise TypeError(
                f"{model}() got an unexpected keyword argument {unknown[0]!r}: "
                f"{hint}It takes {named[1:]} after the AnnData."
            )
        return init(self, *args, **kwargs)

    checked.foreign_keywords = table
    return checked


def setup_hints(model: str):
    """Decorate ``model``'s ``setup_anndata`` (inside its ``classmethod``) to refuse scanpy's
    and other tools' keywords for what it names otherwise (``SETUP_FOREIGN``: ``groupby``,
    ``key``, ``batch``, ``random_state``), naming ours, where they said "see its docstring";
    scvi-tools' own setup keywords the model lacks are ``SETUP_INSTEAD``'s
    (``check_setup_target``)."""
    return foreign_keywords(**SETUP_FOREIGN[model])


def _keywords(function, skip: int = 0) -> list[str]:
    """The names ``function`` takes by keyword, after its first ``skip``."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_passed_on(cls, call, model_kwargs: dict, *through) -> None:
    """The keywords ``call`` (a classmethod building ``cls``: ``from_reference``,
    ``cross_validate``) passes on to the model's constructor (and to ``through``, the methods
    between them) checked before it reads anything: a misspelling of one of its own
    (``labels_kay``, ``n_marker``, ``trainkwargs``) reached the constructor once the reference
    was read, which said "SpatialImputer() got an unexpected keyword argument" with the
    constructor's closest names only (``n_marker``: 'n_layers'), or its default was used
    meanwhile and refused instead (``labels_key='cell_type' is not a column``)."""
    passed = _keywords(cls.__init__, skip=2) + [k for f in through for k in _keywords(f)]
    unknown = [key for key in model_kwargs if key not in passed]
    if not unknown:
        return
    own = _keywords(call)
    passed_on = [k for k in dict.fromkeys(passed) if k not in own]
    hint = did_you_mean(unknown[0], [*own, *passed_on], end=" ")
    raise TypeError(
        f"{cls.__name__}.{call.__name__}() got an unexpected keyword argument {unknown[0]!r}: "
        f"{hint}It takes {own} and, passed on, {passed_on}."
    )
