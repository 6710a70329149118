"""The cells (or spots) an ``indices=`` selects, checked and read as every read-out reads
it: positions (negative ones from the end), a boolean mask of one entry per cell, or a boolean
Series indexed by cell name; a mask of another AnnData, a mask stored as integers, names,
slices, positions out of range and an empty selection refused with the fix (scvi-tools read a
mask as positions and crashed on the rest)."""

from __future__ import annotations

from collections.abc import Iterator, Set

import numpy as np
import pandas as pd

from .._checks import short_repr


def mask_by_name(adata, idx, arg: str):
    """A boolean Series indexed by cell names (a mask built on ``obs`` in another order) as a
    mask in ``adata``'s order: numpy, and scvi-tools, read its values by position, so the
    cells compared were other cells, silently. A mask of pandas' nullable ``"boolean"``
    dtype is read as one of bools; one with missing values (``pd.NA``) is refused (its
    values were read as cell names: "names 200 cells not in adata.obs_names, e.g. 'False'")."""
    if (  # its to_numpy(): objects, True/False and pd.NA
        isinstance(idx, np.ndarray)
        and idx.dtype == object
        and pd.api.types.infer_dtype(idx, skipna=True) == "boolean"
    ):
        idx = pd.array(idx, dtype="boolean")
    if isinstance(idx, pd.Series | pd.Index | pd.arrays.BooleanArray) and isinstance(
        idx.dtype, pd.BooleanDtype
    ):
        if idx.isna().any():
            raise ValueError(
                f"{arg} is a boolean mask with {int(idx.isna().sum())} missing values (NA): "
                f"say whether those cells are in, e.g. {arg}=mask.fillna(False)."
            )
        idx = idx.astype(bool)
    if (
        not isinstance(idx, pd.Series)
        or idx.dtype != bool
        or idx.index.equals(adata.obs_names)
        or idx.index.inferred_type != "string"
        or not adata.obs_names.is_unique
    ):
        return idx
    if idx.index.is_unique and len(idx) == adata.n_obs and idx.index.isin(adata.obs_names).all():
        return idx.reindex(adata.obs_names).to_numpy()
    other = idx.index.difference(adata.obs_names)
    detail = (
        f"it names cells not in adata.obs_names, e.g. {other[0]!r}"
        if len(other)
        else f"its {len(idx)} entries are not the {adata.n_obs} cells"
    )
    raise ValueError(
        f"{arg} is a boolean Series indexed by other cells than the AnnData's ({detail}): "
        "build the mask on the AnnData read (adata.obs[...] == ...)."
    )


def check_indices(indices, n_obs: int, name: str = "indices", unit: str = "cell") -> None:
    """Refuse, naming the fix, an ``indices=`` (or the argument ``name``, e.g. DE's ``idx1``)
    that scvi-tools would misread or crash on.

    scvi-tools reads a boolean mask as the positions of its True entries, so a mask of another
    AnnData (another length) selected other cells without a word; cell names, slices, the
    tuple ``np.where`` returns and float positions ended in numpy or scipy errors.

    Examples
    --------
    >>> check_indices(np.array([True, False, True]), 3)
    >>> check_indices(np.array([True, False]), 3)
    Traceback (most recent call last):
    ...
    ValueError: indices is a boolean mask of 2 entries, but the AnnData has 3 cells: ...
    """
    if indices is None:
        return
    every = " (or None for all)" * (name == "indices")  # DE's idx1=None is groupby's cells
    fix = f"pass integer positions or a boolean mask of one entry per {unit}{every}"
    # A generator or a set was read as one position ("pass [<generator ...>] for that cell").
    if isinstance(indices, slice | tuple | str | dict | Set | Iterator):
        hint = {
            tuple: " (np.where returns a tuple: pass np.where(mask)[0], or the mask)",
            slice: f" (a slice: np.arange({n_obs})[...])",
        }.get(type(indices), "")
        if isinstance(indices, Set):
            hint = f", which has no order (pass sorted({name}) for the cells in order)"
        elif isinstance(indices, Iterator):
            hint = f", read once and of no length (pass list({name}))"
        raise TypeError(f"{name} got a {type(indices).__name__}{hint}; {fix}.")
    values = np.asarray(indices)
    if values.ndim == 0:  # "one-dimensional; got shape ()" named no fix for one position
        raise ValueError(
            f"{name} must be one-dimensional; got shape () (one position, "
            f"{short_repr(indices)}): pass [{short_repr(indices)}] for that {unit} alone; {fix}."
        )
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {values.shape}: {fix}.")
    refuse_integer_mask(values, n_obs, name)
    if values.dtype == bool:
        if len(values) != n_obs:
            raise ValueError(
                f"{name} is a boolean mask of {len(values)} entries, but the AnnData has "
                f"{n_obs} {unit}s: a mask of another AnnData (or of a subset) selects other "
                f"{unit}s. Build the mask on the AnnData read (e.g. adata.obs[...] == ...)."
            )
        values = np.flatnonzero(values)
    elif values.size and values.dtype.kind in "OUS":
        raise TypeError(
            f"{name} holds names such as {str(values[0])!r}; {fix} (the positions of {unit} "
            "names: adata.obs_names.get_indexer(names))."
        )
    elif values.size and values.dtype.kind not in "iu":
        raise TypeError(f"{name} holds {values.dtype} values such as {values[0]}; {fix}.")
    if len(values) == 0:
        raise ValueError(f"{name} selects no {unit}; pass at least one{every}.")
    if values.max() >= n_obs or values.min() < -n_obs:
        raise ValueError(
            f"{name} reach {unit} {int(values.max() if values.max() >= n_obs else values.min())}"
            f", but the AnnData has {n_obs} {unit}s: pass positions within it{every}."
        )


def refuse_integer_mask(indices, n_obs: int, name: str) -> None:
    """Refuse integers that are a boolean mask: a 0 or 1 for every cell (a mask stored as
    int, e.g. ``(adata.obs[...] == ...).astype(int)``), which scvi-tools reads as positions,
    cells 0 and 1 over and over, without a word."""
    values = np.asarray(indices)
    if (
        values.ndim == 1
        and n_obs > 2
        and len(values) == n_obs
        and values.dtype.kind in "iu"
        and np.isin(values, (0, 1)).all()
    ):
        raise ValueError(
            f"{name} holds a 0 or 1 for each of the {n_obs} cells: a mask stored as integers? "
            f"Integers are read as positions (cells 0 and 1 over and over); pass the mask as "
            f"booleans, {name}=mask.astype(bool)."
        )


def selected_rows(adata, indices, unit: str = "cell") -> np.ndarray | None:
    """Positions of the cells (or spots, ``unit``) ``indices`` selects in ``adata`` (``None``:
    every one), as every read-out reads ``indices``: positions (negative ones from the end), a
    boolean mask of one entry per cell, or a boolean Series indexed by cell name; names, a
    mask of another AnnData, positions out of range and an empty selection are refused
    (:func:`check_indices`).

    Examples
    --------
    >>> from anndata import AnnData
    >>> spots = AnnData(np.zeros((3, 1)))
    >>> selected_rows(spots, [2, -3]), selected_rows(spots, np.array([True, False, True]))
    (array([2, 0]), array([0, 2]))
    """
    if indices is None:
        return None
    indices = mask_by_name(adata, indices, "indices")  # a mask by name, in adata's order
    check_indices(indices, adata.n_obs, unit=unit)
    rows = np.asarray(indices)
    return np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64) % adata.n_obs
