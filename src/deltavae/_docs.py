"""Docstring fragments shared by several functions, written once (scanpy's ``_doc_params``),
and the classes of the building blocks' API reference (:func:`building_block_classes`).

A docstring names a fragment as ``{name}`` on a line of its own, indented like the text around
it; :func:`doc_params` fills it in when the module is imported, so help(), IPython's ``?`` and
the API reference all show the whole text. A fragment is one or more parameters (``doc_ax``)
or, for functions whose parameters start alike, the whole ``Parameters`` section header
included (``doc_labels``), the function's own parameters following it.

Examples
--------
>>> doc_counts = "Parameters\\n----------\\ncounts\\n    Counts, cells x genes."
>>> @doc_params(parameters=doc_counts)
... def score(counts, weight=1.0):
...     '''A score.
...
...     {parameters}
...     weight
...         Weight of each cell.
...     '''
>>> print(score.__doc__)
A score.
<BLANKLINE>
    Parameters
    ----------
    counts
        Counts, cells x genes.
    weight
        Weight of each cell.
<BLANKLINE>
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from textwrap import indent
from typing import TypeVar

_F = TypeVar("_F", bound=Callable)

_INDENT = re.compile(r"^( *)\S", re.MULTILINE)


def doc_params(**fragments: str) -> Callable[[_F], _F]:
    """Fill the ``{name}`` placeholders of a docstring with the given fragments.

    Each fragment is indented to the docstring's own indentation. Only the named placeholders
    are replaced, so other braces (dicts in examples) need no escaping; a fragment the
    docstring does not name is an error, so that a typo cannot drop a parameter.

    Parameters
    ----------
    **fragments
        Placeholder name to text, unindented (see the ``doc_*`` strings of this module).

    Returns
    -------
    A decorator that rewrites ``__doc__`` and returns the function itself.
    """

    def decorate(obj: _F) -> _F:
        doc = obj.__doc__
        if doc is None:  # python -OO strips docstrings
            return obj
        # The first line follows the quotes; the indentation is that of the lines after it.
        body = doc[doc.find("\n") + 1 :]
        width = min((len(m.group(1)) for m in _INDENT.finditer(body)), default=0)
        for name, text in fragments.items():
            placeholder = "{" + name + "}"
            if placeholder not in doc:
                raise ValueError(f"{obj.__qualname__}'s docstring has no {placeholder}.")
            # The placeholder stands indented already: indent the fragment's later lines only.
            doc = doc.replace(placeholder, indent(text, " " * width)[width:])
        obj.__doc__ = doc
        return obj

    return decorate


# ------------------------------------------------------------------------- the API reference
_BUILDING_BLOCKS = ("train", "module", "nn", "distributions")


def building_block_classes() -> Iterator[tuple[str, type]]:
    """The public classes of deltavae's building blocks (``train``, ``module``, ``nn`` and
    ``distributions``, each in its ``__all__`` order) as ``("<subpackage>.<name>", class)``:
    those whose pages list the members deltavae's base classes give them (docs/conf.py) and
    whose overrides of torch's, Lightning's and Pyro's methods tests/test_doc_drift.py checks.

    Examples
    --------
    >>> dict(building_block_classes())["nn.GaussianHeads"].__name__
    'GaussianHeads'
    """
    import deltavae

    for sub in _BUILDING_BLOCKS:
        module = getattr(deltavae, sub)
        for name in module.__all__:
            cls = getattr(module, name)
            if inspect.isclass(cls):
                yield f"{sub}.{name}", cls


# ----------------------------------------------------------------------------------- plots
doc_ax = """\
ax
    Axes to draw on; a new figure when ``None``."""


def doc_title_figsize(title: str, default: tuple[float, float]) -> str:
    """``title`` and ``figsize`` of a plot of one panel: its own ``title`` and size."""
    return f"""\
title
    Title of the plot (default {title}; ``""`` for none), as scanpy's ``title``.
figsize
    Size of the figure (inches) when it is made here (``ax=None``); default
    ``rcParams["figure.figsize"]`` where set (``plt.rcParams``, ``sc.set_figure_params``), as
    scanpy's plots follow it, else {default}."""


def doc_show_save(writekey: str, return_fig: bool = True) -> str:
    """``show``, ``save`` (and ``return_fig``) as in scanpy's plotting functions; ``writekey``
    names the file."""
    text = f"""\
show
    Show the figure (and return ``None``). Default: :attr:`scanpy.settings.autoshow`, unless
    the figure is saved.
save
    Save the figure, as scanpy's ``save``: ``True`` writes
    ``{{figdir}}/{writekey}{{plot_suffix}}.{{file_format_figs}}`` (:attr:`scanpy.settings`); a
    string is appended to that name and an extension ``.pdf``, ``.png`` or ``.svg`` at its end
    chooses the format (``save="_pbmc.png"`` writes ``figures/{writekey}_pbmc.png``);
    ``None`` saves when :attr:`scanpy.settings.autosave` is set. A :class:`pathlib.Path`, or
    an absolute path as a string, is the file itself (format from its suffix). The resolution
    is matplotlib's ``savefig.dpi`` (scanpy's ``dpi_save``), at least 150 dpi."""
    return text + "\n" + doc_return_fig if return_fig else text


#: ``return_fig``, for plots whose signature puts it after other parameters than ``save``.
doc_return_fig = """\
return_fig
    Return the Figure, not shown (saved where ``save`` says), as scanpy's ``return_fig``."""


def doc_show_save_apart(writekey: str) -> dict[str, str]:
    """``{show_save}`` without ``return_fig`` and ``{return_fig}``, to place each where the
    signature has it (napoleon lists the parameters in the docstring's order)."""
    return {"show_save": doc_show_save(writekey, return_fig=False), "return_fig": doc_return_fig}


# ---------------------------------------------------------------------------------- models
doc_write = """\
Parameters
----------
adata
    AnnData to write to (set up like the training data); default the training AnnData.
    It may hold genes besides the model's (the whole object of a model trained on its highly
    variable genes): the results are computed on the model's genes and written into it.
batch_size
    Cells per minibatch during inference.

Returns
-------
The keys written, as ``"slot/key"`` strings. A write that fails midway leaves ``adata`` as
it was: none of its results, no key of the user's or of another model replaced."""

doc_write_keyed = doc_write.replace(
    "during inference.\n",
    "during inference.\n"
    "key_added\n"
    "    Stands for the model's name (its default) in every key written, listed above\n"
    '    (``obsm["X_<key_added>"]``, ...), so that results of several models (seeds,\n'
    "    settings) can sit side by side in one AnnData. It replaces the name rather than\n"
    '    prefixing it: ``key_added="seed1"`` writes ``obsm["X_seed1"]``, not\n'
    "    ``X_<model>_seed1`` (the spot models' ``key_added`` is a prefix to their keys,\n"
    "    which hold no model name). Keys that exist are overwritten, as\n"
    "    scanpy's ``key_added`` does; the colours scanpy keeps for a column written again\n"
    '    (``uns["<column>_colors"]``) follow its categories by name, or are removed where\n'
    "    a category has none (scanpy picks new ones), and its dendrogram\n"
    '    (``uns["dendrogram_<column>"]``) is removed where the column changed.\n',
)


# --------------------------------------------------------------------------------- metrics
doc_labels = """\
Parameters
----------
labels_true
    True class of each cell.
labels_pred
    Predicted cluster of each cell. The label values need not match ``labels_true``. Two
    pandas Series indexed by the same cell names in another order are paired by name;
    anything else by position (Series of other cell names with a warning; not a Series made
    from an array, indexed 0, 1, ..., which names no cells). Missing labels
    (NaN, None) are refused, naming how many: leave those cells out of both first; their
    text ('nan', 'None', '<NA>': a column with NaN passed through ``.astype(str)``) is scored
    as a label, with a warning."""

doc_proportions = """\
Parameters
----------
true, pred
    Proportions, spots x types (DataFrames are aligned by column name; arrays by position).
    Every type of ``true`` must be in ``pred``; types of ``pred`` that ``true`` lacks are
    left out of the scores, with a warning naming them.
    A table whose rows sum to other totals spot by spot (cell counts, abundances) is warned
    about: the scores compare proportions. Spots whose row of ``pred`` is all NaN (the spot
    models' spots without counts) are left out, with a warning counting them."""

# -------------------------------------------------------------------------------- datasets
doc_data_dir = """\
Parameters
----------
data_dir
    The ``.h5ad`` file, its folder, or the data root. ``None``: the file is looked up in
    ``$DELTAVAE_DATA`` (the data root or the file's folder) and then in ``shared/data`` in
    the working directory and its parents."""
