"""An AnnData, or a model's folder, where the other was passed: one wording of what was
passed and what to pass instead (the reader of a file's format, the order of the arguments),
for every method that takes either."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad

from ._checks import refuse_minified, short_repr
from ._io import _is_zarr_store


def _listing(path: str) -> list[str]:
    """The names in folder ``path`` (none for a file, a missing or an unreadable folder)."""
    try:
        return os.listdir(path) if os.path.isdir(path) else []
    except OSError:
        return []


def _reader(path: str) -> str:
    """How to read the AnnData at ``path``: an anndata or scanpy call, with deltavae's
    read_lazy for the formats it opens (an .h5ad file, a zarr store)."""
    names = _listing(path)
    lazy = " (or deltavae.read_lazy(path), which leaves the counts on disk)"
    if path.rstrip("/\\").endswith(".zarr") or _is_zarr_store(Path(path)):
        return "anndata.read_zarr(path)" + lazy
    if {"matrix.mtx", "matrix.mtx.gz"} & set(names):  # Cell Ranger's folder
        return "scanpy.read_10x_mtx(path)"
    if path.endswith(".h5") and not path.endswith(".h5ad"):  # Cell Ranger's HDF5 file
        return "scanpy.read_10x_h5(path)"
    return "anndata.read_h5ad(path)" + lazy


def model_folder_advice(path, flag: str) -> str | None:
    """The command line's message for a folder ``save`` wrote, given where an AnnData file
    goes (INPUT, ``--reference``): it was "a folder, not an .h5ad file", or advice to convert
    it as a zarr store; ``None`` for any other path.

    Examples
    --------
    >>> model_folder_advice("counts.h5ad", "--reference") is None
    True
    """
    names = _listing(os.fspath(path))
    saved = sorted(n for n in names if n.endswith("model.pt"))
    if not saved:
        return None
    data = [n for n in names if n == f"{saved[0][: -len('model.pt')]}adata.h5ad"]
    file = os.path.join(os.fspath(path), data[0]) if data else None
    then = (
        f"the AnnData saved with it: {flag + ' ' if flag.startswith('--') else ''}{file!r}"
        if data
        else "an .h5ad file (this model was saved without its AnnData)"
    )
    return (
        f"{flag} {os.fspath(path)!r} is a folder a model's save wrote (it holds {saved[0]}), "
        f"not an AnnData: give {then}. A saved model is read from Python: "
        "Model.load(folder, adata)."
    )


def argument_advice(
    value, name: str, wants: str, call: str | None = None, genes: str = "the model's genes"
) -> str | None:
    """Why ``value`` cannot be the argument ``name`` and what to pass instead, or ``None``
    where it fits: the one wording of an AnnData where a model's folder goes, a path (a file,
    a zarr store, a saved model's folder) or a table where an AnnData goes, whatever the order
    the arguments came in (``Model.load(adata, path)``, ``Model.load(path, "cells.h5ad")``,
    ``prepare_query_anndata(path, adata)``, ``model.save(adata)``).

    Parameters
    ----------
    value
        What was passed.
    name
        The argument's name (``"adata"``, ``"dir_path"``).
    wants
        ``"anndata"``, ``"anndata or None"`` or ``"folder"`` (a model's folder: a str or
        path).
    call
        How the method is called, by its parameters (``"ZINBVAE.load(dir_path, adata)"``).
    genes
        The names a wrapped table's columns should carry, for the advice to wrap one: a
        model's genes by default; ``"the gene names"`` for functions outside a model.

    Examples
    --------
    >>> import numpy as np
    >>> argument_advice("cells.h5ad", "adata", "anndata", "ZINBVAE.load(dir_path, adata)")[:59]
    "adata must be an AnnData (cells x genes); got the path 'cel"
    >>> print(argument_advice(ad.AnnData(np.ones((1, 1))), "dir_path", "folder", "m.f(dir_path)"))
    m.f takes the model's folder as dir_path: m.f(dir_path); got an AnnData as dir_path.
    """
    method = call.split("(")[0] if call else None
    if wants == "folder":
        if isinstance(value, str | os.PathLike):
            return None
        where = f"{method} takes the model's folder as {name}" if call else f"{name} is a folder"
        then = ", then the AnnData" if call and f"{name}, adata" in call else ""
        got = "an AnnData" if isinstance(value, ad.AnnData) else short_repr(value)
        return f"{where}{then}{f': {call}' if call else ''}; got {got} as {name}."
    if isinstance(value, ad.AnnData) or (value is None and wants == "anndata or None"):
        return None
    rows = "spots" if name == "spots" else "cells"
    head = f"{name} must be an AnnData ({rows} x genes); got"
    then = f", then {call}" if call else ""
    if value is None:
        return f"{head} None. Pass one{f': {call}' if call else ''}."
    if isinstance(value, str | os.PathLike):
        path = os.path.expanduser(os.fspath(value))
        if any(name.endswith("model.pt") for name in _listing(path)):  # a saved model's
            how = f"as {name}: {call}" if call else "itself; its class's load(dir_path) reads"
            given = short_repr(os.fspath(value))
            return (
                f"{head} the folder {given}, which holds a saved model. Pass the AnnData {how}"
                + ("." if call else " that folder.")
            )
        return (
            f"{head} the path {short_repr(os.fspath(value))}. Read it first: {name} = "
            f"{_reader(path)}{then}."
        )
    shape = getattr(value, "shape", None)
    got = type(value).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")
    return (
        f"{head} {got}. Wrap a table or a matrix with anndata.AnnData(X), with {genes} as "
        f"var_names, or pick the modality of a MuData (mdata['rna']){then}."
    )


def check_anndata(
    adata,
    name: str = "adata",
    call: str | None = None,
    optional: bool = True,
    genes: str = "the model's genes",
):
    """``adata`` when it is an AnnData (or None, where ``optional``); else a TypeError naming
    what was passed and what to pass (:func:`argument_advice`): a DataFrame or a matrix failed with
    AttributeError (no attribute 'obs' or 'is_view'), a file's name with "'str' object has no
    attribute 'var_names'". ``call``: how the method is called, for the message; ``genes``:
    the names a wrapped table's columns should carry (``"the gene names"`` outside a model).

    Examples
    --------
    >>> import numpy as np
    >>> check_anndata(np.ones((2, 2)))
    Traceback (most recent call last):
    ...
    TypeError: adata must be an AnnData (cells x genes); got ndarray of shape (2, 2). ...
    """
    wants = "anndata or None" if optional else "anndata"
    advice = argument_advice(adata, name, wants, call, genes)
    if advice is not None:
        raise TypeError(advice)
    refuse_minified(adata, name)
    return adata


#: Where scvi-tools' ``minify_adata`` marks an AnnData whose counts it dropped.
def check_path(dir_path, call: str) -> str:
    """``dir_path`` (a model's folder) as a string with ``~`` expanded; a TypeError where an
    AnnData came instead, as in ``Model.load(adata, path)`` (os.fspath's "expected str,
    bytes or os.PathLike object, not AnnData" named neither argument), worded by
    :func:`argument_advice`. ``call``: how the method is called, by its parameters
    (``"ZINBVAE.load(dir_path, adata)"``).

    Examples
    --------
    >>> import numpy as np
    >>> check_path(ad.AnnData(np.ones((2, 2))), "ZINBVAE.load(dir_path, adata)")
    Traceback (most recent call last):
    ...
    TypeError: ZINBVAE.load takes the model's folder as dir_path, then the AnnData: ...
    """
    advice = argument_advice(dir_path, "dir_path", "folder", call)
    if advice is not None:
        raise TypeError(advice)
    return os.path.expanduser(os.fspath(dir_path))
