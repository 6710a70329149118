"""Checks and array helpers that several subpackages share (``datasets``, ``model``): one home,
public names, so that no private name crosses a subpackage."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._close_names import did_you_mean


def dense(X, dtype=np.float64) -> np.ndarray:
    """``X`` (dense or sparse) as a dense array of ``dtype`` (float64)."""
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=dtype)


def missing_layer_text(adata: ad.AnnData, layer: str, name: str = "adata", given=None) -> str:
    """The refusal of a ``layer`` that ``adata`` (called ``name``) lacks, with the layers it
    holds and the closest of them; ``given``: how the call named it (``"layer='x'"``).

    >>> missing_layer_text(ad.AnnData(layers={"counts": np.ones((1, 1))}), "count")
    "layer 'count' is not in adata.layers; available layers: ['counts'] (did you mean 'counts'?)."
    """
    hint = did_you_mean(layer, adata.layers)
    text = f"{given or f'layer {layer!r}'} is not in {name}.layers; available layers: "
    return text + f"{list(adata.layers)}" + (f" ({hint})." if hint else ".")


def layer_matrix(adata: ad.AnnData, layer: str | None):
    """``adata.X`` for ``layer=None``, else ``adata.layers[layer]``; a clear KeyError if absent."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(missing_layer_text(adata, layer))
    return adata.layers[layer]


def x_or_none(adata: ad.AnnData):
    """``adata.X``, or ``None`` where it has none: also a backed file without X, for which
    ``adata.X`` raises anndata's KeyError ("Unable to synchronously open object")."""
    return adata.X if not adata.isbacked or "X" in adata.file else None


def not_counts(values: np.ndarray) -> np.ndarray:
    """The values that no raw count can be: negative or not whole (the one test of counts
    that the data checks, the reference's pseudo-spots and the count advice share).

    Examples
    --------
    >>> not_counts(np.array([0.0, 2.0, 1.5, -1.0]))
    array([ 1.5, -1. ])
    """
    values = np.asarray(values)
    if values.dtype.kind in "biu":
        return values[values < 0]
    # Not whole: NaN, infinite, or another number than its integer part (np.fmod(values, 1),
    # the same test, took 8x as long: 1.4 s of the 2.7 s setup of 200,000 cells).
    whole = np.trunc(values) == values  # False at NaN, True at +-inf
    return values[~whole | (values < 0) | np.isinf(values)]


def not_count_repr(value) -> str:
    """A value that is not a count, printed so that it reads as one: ``1.5``, ``31.000002``,
    and ``73.000000000073`` for float64 round-off that 8 significant digits print as ``73``.

    Examples
    --------
    >>> not_count_repr(np.float64(73) * (1 + 1e-12)), not_count_repr(np.float32(1.5))
    ('73.000000000073', '1.5')
    """
    text = f"{value:.8g}"
    if np.isfinite(value) and float(text) == np.rint(value):  # printed whole: show it all
        return repr(float(value))
    return text


def measurement_note(column: pd.Series, fractions: bool = False) -> str | None:
    """What makes a numeric obs column look like a measurement (nUMI, a score) rather than
    categories: more distinct numbers than max(50, half the rows), or (unless ``fractions``:
    doses such as 0.1, 1 and 10 are conditions) any non-integer number. ``None`` for
    categories, strings, booleans and integer ids."""
    if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column):
        return None
    values = column.dropna().to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    n_values = len(np.unique(values))
    whole = bool(np.all(np.mod(values, 1) == 0))
    if (whole or fractions) and n_values <= max(50, len(column) // 2):
        return None
    kind = "whole" if whole else "non-integer"
    return f"{n_values} distinct {kind} numbers over {len(column)} cells"


def key_list(value):
    """Obs column names as a list: one name, or a tuple, list, pandas Index or numpy array of
    names (an empty one is ``None``: no column); anything else as it is, for
    :func:`check_key_type` to refuse.

    Examples
    --------
    >>> key_list("donor"), key_list(pd.Index(["donor", "plate"])), key_list(())
    (['donor'], ['donor', 'plate'], None)
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple | list | pd.Index | pd.Series | np.ndarray):
        return list(value.tolist() if hasattr(value, "tolist") else value) or None
    return value


def plain_keys(value):
    """A pandas Index, Series or numpy array of obs column names as a list of them (as the
    setup arguments a model saves); anything else as it is.

    Examples
    --------
    >>> plain_keys(np.array(["donor"])), plain_keys("donor")
    (['donor'], 'donor')
    """
    return value.tolist() if isinstance(value, pd.Index | pd.Series | np.ndarray) else value


MINIFY_KEY = "_scvi_adata_minify_type"


def refuse_minified(adata, name: str = "adata") -> None:
    """Refuse an AnnData scvi-tools' ``minify_adata`` emptied: its X holds zeros in place of
    the counts, which deltavae's models read (they have no minified mode), so its cells were
    read as empty, silently. One from ``anndata.experimental.read_lazy`` first
    (:func:`refuse_lazy_tables`): every entry point of a model calls this.

    Examples
    --------
    >>> a = ad.AnnData(np.zeros((2, 2)), uns={MINIFY_KEY: "latent_posterior_parameters"})
    >>> refuse_minified(a)
    Traceback (most recent call last):
    ...
    ValueError: adata was minified by scvi-tools (minify_adata; ...
    """
    refuse_lazy_tables(adata, name)
    kind = None if adata is None else adata.uns.get(MINIFY_KEY)
    if kind is not None:
        raise ValueError(
            f"{name} was minified by scvi-tools (minify_adata; uns[{MINIFY_KEY!r}] = "
            f"{str(kind)!r}): its counts were dropped, and deltavae's models read the counts "
            "(they have no minified mode). Pass the AnnData from before minify_adata, e.g. "
            "read its file again."
        )


def refuse_lazy_tables(adata, name: str = "adata") -> None:
    """Refuse an AnnData from ``anndata.experimental.read_lazy``: its obs and var are xarray
    tables (``Dataset2D``), not DataFrames, and scvi-tools' registration failed on them deep
    in xarray ("data type 'category' not understood"), the data checks on its dask X ("must be
    numeric; got dtype object").

    Examples
    --------
    >>> refuse_lazy_tables(ad.AnnData(np.zeros((2, 2))))
    """
    if adata is None or isinstance(adata.obs, pd.DataFrame):
        return
    raise TypeError(
        f"{name} was opened with anndata.experimental.read_lazy: its obs and var are "
        f"{type(adata.obs).__name__} tables, not DataFrames, which scvi-tools cannot register "
        "or read. To keep the counts on disk, open the file with anndata.read_h5ad(path, "
        "backed='r') (an .h5ad) or dv.read_lazy(path) (an .h5ad or a zarr store); if it fits "
        f"in memory, read it in: {name} = {name}.to_memory()."
    )


def _any_nonzero(X) -> bool:
    """Whether ``X`` (in memory, or on disk or in a dask array: a chunk of rows at a time,
    where np.any read an h5py array whole and failed on anndata's sparse datasets) holds a
    value other than 0."""
    if sp.issparse(X):
        return X.count_nonzero() > 0
    if isinstance(X, np.ndarray):
        return bool(np.any(X))
    from .model._validation import _chunks

    return any(
        block.count_nonzero() > 0 if sp.issparse(block) else bool(np.any(block))
        for block in _chunks(X)
    )


def refuse_countless_reference(reference: ad.AnnData, layer: str | None) -> None:
    """Refuse a single-cell reference minified by scvi-tools or without a count in its
    matrix (``layer``; ``None``: X): its cell types' signatures would all be zero, which
    surfaced later as "share no gene" or as scanpy's raw-count warning.

    Examples
    --------
    >>> refuse_countless_reference(ad.AnnData(np.zeros((2, 2))), None)
    Traceback (most recent call last):
    ...
    ValueError: reference.X holds no counts (every value is 0); ...
    """
    refuse_minified(reference, "reference")
    X = layer_matrix(reference, layer)
    if reference.n_obs and reference.n_vars and not _any_nonzero(X):
        where = "reference.X" if layer is None else f"reference.layers[{layer!r}]"
        raise ValueError(
            f"{where} holds no counts (every value is 0); the cell types' expression is "
            "read from the reference's raw counts. Pass the reference with its counts (the "
            "layer that holds them: reference_layer=...)."
        )


def short_repr(value, n: int = 5, unit: str = "items") -> str:
    """``repr(value)``, a list, tuple, array, Series or Index of more than ``n`` items cut to
    its first ``n`` (an obs column's values passed as its name made messages of megabytes),
    numpy's values as Python's; an object of a long or many-line repr (an AnnData, a DataFrame)
    as its type and shape.

    Examples
    --------
    >>> short_repr(["a", "b"]), short_repr(np.array(["a"] * 8), n=2), short_repr(np.int64(3))
    ("['a', 'b']", "['a', 'a', ...] (8 items)", '3')
    """
    if isinstance(value, np.ndarray | pd.Series | pd.Index) and np.ndim(value) == 1:
        value = value.tolist()
    value = value.item() if isinstance(value, np.generic) else value  # not np.int64(3)
    if isinstance(value, list | tuple) and any(isinstance(v, np.generic) for v in value):
        items = [v.item() if isinstance(v, np.generic) else v for v in value]
        value = tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, list | tuple) and len(value) > n:
        return f"[{', '.join(map(repr, value[:n]))}, ...] ({len(value)} {unit})"
    text = repr(value)
    # A list or tuple is cut to n items above: long only by its names, which are the message
    # (17 cell types' names read "are not columns of obsm['proportions']: list.").
    long = len(text) > 200 and not isinstance(value, list | tuple)
    if not isinstance(value, str) and ("\n" in text or long):
        # An AnnData or a DataFrame where a number or a name was expected: its type and
        # shape, not a repr of many lines.
        shape = getattr(value, "shape", None)
        return type(value).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")
    return text


def float_array(values, name: str, wants: str, copy: bool = False) -> np.ndarray:
    """``values`` as a float64 array (a copy of its own with ``copy``), or a TypeError
    naming the argument ``name``, what was passed and what it takes (``wants``, e.g. "cells x
    genes"): numpy's own "float() argument must be a string or a real number, not 'dict'"
    or "could not convert string to float: 'spots.h5ad'" named neither.

    Examples
    --------
    >>> float_array([[1, 2]], "pred", "spots x cell types").tolist()
    [[1.0, 2.0]]
    >>> float_array("spots.h5ad", "pred", "spots x cell types")
    Traceback (most recent call last):
    ...
    TypeError: pred must be numbers (spots x cell types); got the path 'spots.h5ad': read ...
    """
    try:
        return np.array(values, dtype=np.float64) if copy else np.asarray(values, np.float64)
    except (TypeError, ValueError) as error:
        got = f"{type(values).__name__} {short_repr(values)}"
        if isinstance(values, str | os.PathLike):
            got = f"the path {short_repr(str(values))}: read the file first"
        raise TypeError(f"{name} must be numbers ({wants}); got {got} ({error}).") from None


def is_number(value) -> bool:
    """A real number, numpy's too (``np.float32(0.1)``): not a bool (numpy's either), a
    string or None."""
    number = isinstance(value, int | float | np.integer | np.floating)
    return number and not isinstance(value, bool | np.bool_)


def check_bool(name: str, value, none: bool = False) -> None:
    """Refuse ``value`` by ``name`` unless it is True or False (or, with ``none``, None): read
    as a truth value, any string (``"no"``, ``"False"``) or a non-empty list was True."""
    if isinstance(value, bool | np.bool_) or (none and value is None):
        return
    wants = "True, False or None" if none else "True or False"
    raise ValueError(f"{name} must be {wants}, got {short_repr(value)}.")


def check_bools(none: tuple[str, ...] = ("show", "frameon"), **values) -> None:
    """:func:`check_bool` for each keyword; those named in ``none`` may be None too."""
    for name, value in values.items():
        check_bool(name, value, none=name in none)


def check_ncols(ncols) -> None:
    """Refuse a number of panels per row that is not a whole number of at least 1 (0 or -2 was
    read as 1 without a word, 2.5 failed inside matplotlib)."""
    if isinstance(ncols, bool) or not isinstance(ncols, int | np.integer) or ncols < 1:
        raise ValueError(f"ncols must be a whole number of at least 1, got {short_repr(ncols)}.")


def user_columns(obs: pd.DataFrame) -> list:
    """The columns of ``obs`` the user made: not scvi-tools' bookkeeping (``_scvi_batch``,
    ``_scvi_labels``, ...), which setting up an AnnData adds to it."""
    return [c for c in obs.columns if not str(c).startswith("_scvi_")]


def no_column(arg: str, key, obs: pd.DataFrame, where: str = "adata.obs") -> str:
    """The message for ``arg=key`` naming no column of ``obs``: its columns (the user's, see
    :func:`user_columns`) and the closest to ``key``.

    Examples
    --------
    >>> obs = pd.DataFrame(columns=["cell_type", "_scvi_labels"])
    >>> print(no_column("groupby", "celltype", obs))  # doctest: +NORMALIZE_WHITESPACE
    groupby='celltype' is not a column of adata.obs; available columns: ['cell_type'] (did
    you mean 'cell_type'?).
    """
    columns = user_columns(obs)
    hint = did_you_mean(key, columns)
    return (
        f"{arg}={short_repr(key)} is not a column of {where}; available columns: "
        f"{short_repr(columns, 30, 'columns')}" + (f" ({hint})." if hint else ".")
    )


#: Setup arguments that take several obs columns; the others name one.
_SEVERAL_COLUMNS = ("categorical_covariate_keys", "condition_key")


def check_key_type(arg: str, value) -> None:
    """``value`` must name obs column(s): a string or, for the arguments that take several
    (``categorical_covariate_keys``, CGMDVAE's ``condition_key``), a list of strings. A list
    given for one column (``batch_key=["donor"]``) failed inside scvi-tools: "unhashable
    type: 'list'"."""
    several = isinstance(value, list | tuple) and all(isinstance(k, str) for k in value)
    if isinstance(value, str) or (several and arg in _SEVERAL_COLUMNS):
        return
    if several:
        join = (
            f" For several, join them into one column first: adata.obs['group'] = adata.obs["
            f"{value[0]!r}].astype(str) + '_' + adata.obs[...].astype(str), and pass {arg}="
            "'group'."
        )
        raise TypeError(
            f"{arg} names one obs column (a string); got {short_repr(value)}."
            + (join if arg != "size_factor_key" else "")
        )
    raise TypeError(
        f"{arg} must name obs column(s) (a string or a list of strings); got {short_repr(value)}."
    )


def refuse_mixed_kinds(column: pd.Series, arg: str, key: str) -> None:
    """Refuse an obs column of categories that mixes strings with other values (numbers,
    booleans): scvi-tools sorts them, which failed with numpy's "'<' not supported between
    instances of 'str' and 'int'"."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = column.cat.categories
    elif column.dtype == object:
        values = column.dropna().unique()
    else:
        return
    text = [v for v in values if isinstance(v, str)]
    other = [v for v in values if not isinstance(v, str)]
    if text and other:
        raise ValueError(
            f"{arg}={key!r}: adata.obs[{key!r}] mixes strings with other values (e.g. "
            f"{text[0]!r} and {other[0]!r}), which cannot be sorted into categories; make "
            f"them strings: adata.obs[{key!r}] = adata.obs[{key!r}].astype(str)."
        )


def check_labels(reference: ad.AnnData, labels_key: str) -> pd.Categorical:
    """The cell types of ``reference.obs[labels_key]``: present, no missing values, at least 2."""
    if labels_key not in reference.obs:
        raise KeyError(no_column("labels_key", labels_key, reference.obs, "reference.obs"))
    column = reference.obs[labels_key]
    labels = pd.Categorical(column).remove_unused_categories()
    n_types = len(labels.categories)
    note = measurement_note(column)  # a measurement passed by mistake: one "type" per value
    if note is not None:
        raise ValueError(
            f"reference.obs[{labels_key!r}] looks like a measurement, not cell types: {note}. "
            "Pass the column of cell-type labels as labels_key; integer cluster ids are fine."
        )
    if (labels.codes < 0).any():
        raise ValueError(
            f"reference.obs[{labels_key!r}] has {int((labels.codes < 0).sum())} missing labels "
            "(NaN); drop those cells first: reference = "
            f"reference[reference.obs[{labels_key!r}].notna()].copy()."
        )
    if pd.api.types.is_float_dtype(labels.categories.dtype):  # whole: fractions refused above
        col = f"reference.obs[{labels_key!r}]"  # named '0.0', '1.0': as CGMDVAE refuses them
        raise ValueError(
            f"{col} holds {labels.categories.dtype} values, read as cell-type names such as "
            f"{str(labels.categories[0])!r}: make them integers, {col} = {col}.astype(int)."
        )
    if n_types < 2:
        raise ValueError(
            f"reference.obs[{labels_key!r}] has {n_types} cell type(s), and the model needs at "
            "least 2: pass as labels_key a column of two or more cell types."
        )
    names = pd.Index([str(c) for c in labels.categories])
    if names.has_duplicates:  # the spot models name types (and match cells to them) by text
        same = [c for c in labels.categories if str(c) == names[names.duplicated()][0]]
        raise ValueError(
            f"reference.obs[{labels_key!r}] holds different labels with the same text (e.g. "
            f"{same[0]!r} and {same[1]!r}); give each cell type one name: "
            f"reference.obs[{labels_key!r}] = reference.obs[{labels_key!r}].astype(str)."
        )
    return labels


#: The largest seed numpy's RandomState, scikit-learn and scvi.settings.seed take.
MAX_SEED = 2**32 - 1


def check_seed(seed, name: str = "seed", largest: int = MAX_SEED) -> None:
    """Refuse a seed that is not an integer in [0, ``largest``] or None, by ``name``: a string
    or a fraction failed in numpy or scikit-learn ("'0' cannot be used to seed a
    numpy.random.RandomState instance", "The 'random_state' parameter of KMeans ..."),
    naming neither the argument nor the model's call, and so did 2**32 or more (numpy's
    RandomState and scikit-learn take seeds up to 2**32 - 1, as ``scvi.settings.seed`` and
    the command line's --seed do). Read-outs seeding torch alone take up to 2**64 - 1
    (``largest=2**64 - 1``). A negative seed is refused, as the datasets' generators do.

    Examples
    --------
    >>> check_seed(np.int64(3)), check_seed(2**32 - 1), check_seed(None)
    (None, None, None)
    >>> check_seed("0")
    Traceback (most recent call last):
    ...
    ValueError: seed must be an integer in [0, 2**32 - 1] or None, got '0'.
    """
    if seed is None:
        return
    integer = isinstance(seed, int | np.integer) and not isinstance(seed, bool | np.bool_)
    if not integer or not 0 <= seed <= largest:
        bound = {MAX_SEED: "2**32 - 1", 2**64 - 1: "2**64 - 1"}.get(largest, largest)
        raise ValueError(f"{name} must be an integer in [0, {bound}] or None, got {seed!r}.")
