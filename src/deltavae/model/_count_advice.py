"""What data that are not raw counts most likely are, and what to do: the advice of
:func:`~deltavae.model._validation.check_data`'s count errors, and the check that a model's
own AnnData still holds the counts it was set up with."""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._checks import missing_layer_text, not_count_repr, not_counts, x_or_none

#: Rows of a model's own AnnData read by :func:`check_still_counts` (a quick look, every call).
_LOOK_ROWS = 200
#: Set while a trained model checks an AnnData (new cells for a read-out, the AnnData a saved
#: model loads onto): its layer is fixed, so the advice for data that are not counts is where
#: to put them, not a layer to pass.
_LAYER_FIXED = contextvars.ContextVar("deltavae_layer_fixed", default=False)


@contextlib.contextmanager
def layer_fixed():
    """While a trained model checks data: new cells, or a saved model's setup and
    ``__init__`` on the AnnData it loads onto."""
    token = _LAYER_FIXED.set(True)
    try:
        yield
    finally:
        _LAYER_FIXED.reset(token)


#: The model whose ``__init__`` checks the AnnData set up for it: the layer is an argument of
#: its ``setup_anndata``, not of the model, so the advice names it there.
_BUILDING = contextvars.ContextVar("deltavae_building", default=None)


@contextlib.contextmanager
def building_model(name: str):
    """While model ``name`` is built on an AnnData set up for it."""
    token = _BUILDING.set(name)
    try:
        yield
    finally:
        _BUILDING.reset(token)


def _first_rows(X):
    """The first :data:`_LOOK_ROWS` rows of an in-memory matrix and their stored values (the
    non-zeros of a sparse one); ``None`` for a matrix on disk, which is not read here."""
    if not (isinstance(X, np.ndarray) or sparse.issparse(X)):
        return None
    block = X[:_LOOK_ROWS]
    return block, np.asarray(block.data if sparse.issparse(block) else block)


def why_not_whole(
    frac: np.ndarray,
    high: float,
    sums: np.ndarray,
    unit: str = "cells",
    where: str | None = None,
    is_sparse: bool = True,
) -> str:
    """What non-integer values in a count matrix most likely are, and the fix when they are
    counts after all (``high``: the largest value seen; ``sums``: the rows' totals; ``where``:
    the matrix, e.g. ``"adata.layers['counts']"``, sparse or not, for the rounding to run).

    Examples
    --------
    >>> frac = np.array([2.0000001])
    >>> why_not_whole(frac, 3.0, np.array([5.0]), where="adata.layers['c']").split("so, ")[1]
    "round them first: adata.layers['c'].data = np.rint(adata.layers['c'].data)."
    """
    if where is None:
        rounding = "round them first: X.data = np.rint(X.data) for a sparse X, np.rint(X) dense."
    elif is_sparse:  # the matrix the message is about, not adata.X (log-normalized, often)
        rounding = f"round them first: {where}.data = np.rint({where}.data)."
    else:
        rounding = f"round them first: {where} = np.rint({where})."
    sums = sums[sums > 0]
    if len(sums) > 1 and sums.max() - sums.min() <= 1e-3 * sums.max():
        # sc.pp.normalize_total: every row scaled to one total, which rounding would not undo.
        return f"every {unit[:-1]} sums to {sums[0]:.6g}, normalized data (sc.pp.normalize_total)?"
    if np.abs(frac - np.rint(frac)).max() < 1e-3:
        return f"all within 0.001 of whole numbers, float round-off of counts? If so, {rounding}"
    if high >= 50:
        return (
            "counts corrected for ambient RNA (e.g. SoupX) or other not-whole counts? If so, "
            f"{rounding} Normalized or log-transformed data are not counts."
        )
    return "normalized or log-transformed data?"


def drop_empty(
    name: str,
    layer: str | None,
    rows: bool,
    counts: bool = True,
    nonnegative: bool = False,
    genes: str | None = None,
) -> str:
    """The statement that drops the rows (``rows``) or the columns of the AnnData ``name``
    that are all zeros in ``layer`` (``None``: X): scanpy's filter for counts in X, which
    reads X only and sums the values, or for other ``nonnegative`` values in X by the number
    of positive entries (a negative value is not counted there, nor is a sum of negative ones
    empty), else a mask of ``layer``'s nonzero rows or columns (by their absolute values: no
    ``!``, which a shell's double quotes would read). ``genes``: an expression of the genes
    the rows are judged on (the mask then reads those alone).

    Examples
    --------
    >>> drop_empty("adata", None, rows=True)
    'sc.pp.filter_cells(adata, min_counts=1)'
    >>> drop_empty("adata", None, rows=True, counts=False, nonnegative=True)
    'sc.pp.filter_cells(adata, min_genes=1)'
    >>> drop_empty("adata", "counts", rows=False)
    "adata = adata[:, np.asarray(abs(adata.layers['counts']).sum(0)).ravel() > 0].copy()"
    """
    if layer is None and genes is None and (counts or nonnegative):
        step = "filter_cells" if rows else "filter_genes"
        least = ("min_counts" if counts else "min_genes") if rows else "min_cells"
        return f"sc.pp.{step}({name}, {least}=1)"
    read = name if genes is None else f"{name}[:, {genes}]"
    where = f"{read}.X" if layer is None else f"{read}.layers[{layer!r}]"
    keep = f"np.asarray(abs({where}).sum({1 if rows else 0})).ravel() > 0"
    return f"{name} = {name}[{keep if rows else ':, ' + keep}].copy()"


def counts_hint(adata: AnnData, layer: str | None, name: str = "adata", unit="cells") -> str:
    """Where the raw counts may be instead: the layers, or ``adata.raw``; named by the argument
    that takes the layer (``layer``, or ``reference_layer`` for ``name="reference"``). Under
    :func:`layer_fixed` (a trained model, which takes no layer) where to put them."""
    arg = "layer" if name == "adata" else f"{name}_layer"
    fixed = _LAYER_FIXED.get()
    model = _BUILDING.get() if name == "adata" else None
    then = f" to {model}.setup_anndata, then build the {model} again" if model else ""
    layers = [key for key in adata.layers.keys() if key != layer]
    found = _counts_layer(adata, layer)  # the layer that holds counts, named first
    layers = [found, *(key for key in layers if key != found)] if found else layers
    if _same_as_x(adata, layer):  # adata.layers["counts"] = adata.X, then normalize_total
        raw = adata.raw is not None and not _raw_not_counts(adata)
        fix = (
            f"{name}.raw holds raw counts, it seems: {name}.layers[{layer!r}] = "
            f"{name}.raw[:, {name}.var_names].X.copy()"
            if raw
            else "read them again from their file and keep a copy before normalizing: "
            f"{name}.layers[{layer!r}] = {name}.X.copy()"
        )
        return (
            f" {name}.layers[{layer!r}] holds the same values as {name}.X: most likely it was "
            f"stored without a copy ({name}.layers[{layer!r}] = {name}.X), so scanpy's "
            "in-place steps on X (sc.pp.normalize_total, sc.pp.log1p, sc.pp.scale) changed it "
            f"too, and it no longer holds the raw counts; {fix}."
        )
    if "prediction" in adata.uns and "counts" in layers:  # a count model's prediction
        return (
            " This AnnData is a prediction (uns['prediction']): its X holds expected counts, "
            "its whole counts are in layers['counts']; to read them as cells, "
            "pred.X = pred.layers['counts'].copy()."
        )
    if name == "query" or fixed:  # the data go where the reference (the model) read them
        target = f"{name}.X" if layer is None else f"{name}.layers[{layer!r}]"
        source = f"{name}.layers[{layers[0]!r}]" if layers else None
        if source is None and adata.raw is not None and not _raw_not_counts(adata):
            source = f"{name}.raw[:, {name}.var_names].X"
        fix = f", e.g. {target} = {source}.copy()" if source else ""
        where = target.removeprefix(f"{name}.")
        who = "The model reads" if fixed else "The reference read"
        if layer is None and source is not None:  # not over the user's (log-normalized) X
            return (
                f" {who} raw counts from X; to keep {name}.X as it is, pass the counts in an "
                f"AnnData of their own: {counts_copy(name, source)} (results written into it "
                "can be copied over by key). A model set up with layer='counts' reads them "
                "beside a log-normalized X."
            )
        if fixed:
            return f" The model reads raw counts from {where}: put them there{fix}."
        return f" The reference read raw counts from {where}: put the query's there{fix}."
    # A cytometry or CLR-protein user has no raw counts to pass: say what fits real values
    # (cells only: the spatial models read counts alone).
    real = (
        " Data that are not counts (arcsinh cytometry, CLR protein, scaled values) fit "
        "CGMDVAE(..., likelihood='normal')."
        if name == "adata" and unit == "cells"
        else ""
    )
    if layers:
        return (
            f" Pass the layer with the raw counts, e.g. {arg}={layers[0]!r}{then} (layers: "
            f"{layers})." + real
        )
    if layer is None and adata.raw is not None:
        looked = _first_rows(adata.raw.X)
        values = looked[1] if looked is not None else np.zeros(0)
        frac = not_counts(values)
        if frac.size:  # scanpy's habit: adata.raw = adata after sc.pp.log1p, no counts at all
            return (
                f" {name}.raw holds no raw counts either (values such as "
                f"{not_count_repr(frac.flat[0])}: normalized, as after {name}.raw = {name} "
                f"following sc.pp.log1p). Read the counts again from their file, keep them in "
                f"a layer before normalizing ({name}.layers['counts'] = {name}.X.copy()), and "
                f"pass {arg}='counts'{then}." + real
            )
        counts = values.size > 0
        held = "holds raw counts, it seems" if counts else "holds other data"
        return (
            f" {name}.raw {held}: {'' if counts else 'if they are the raw counts, '}copy them "
            f"into a layer and pass it: {name}.layers['counts'] = "
            f"{name}.raw[:, {name}.var_names].X; {arg}='counts'{then}." + real
        )
    return f" Pass the raw counts, in X or in a layer ({arg}='counts'{then})." + real


def _same_as_x(adata: AnnData, layer: str | None) -> bool:
    """Whether the first rows of ``adata.layers[layer]`` equal those of ``adata.X``: the layer
    is X itself, or was (a copy of the AnnData made since), both in memory."""
    if layer is None or layer not in adata.layers or adata.isbacked:
        return False
    ours, x = _first_rows(adata.layers[layer]), _first_rows(adata.X)
    if ours is None or x is None or ours[0].shape != x[0].shape or ours[1].dtype.kind != "f":
        return False  # floats: what normalize_total and log1p leave (not booleans)
    if sparse.issparse(ours[0]) != sparse.issparse(x[0]):
        return False
    if sparse.issparse(ours[0]):
        return (ours[0] != x[0]).nnz == 0
    return bool(np.array_equal(ours[0], x[0]))


def _raw_not_counts(adata: AnnData) -> bool:
    """Whether the first rows of ``adata.raw`` hold values that are not whole counts."""
    looked = _first_rows(adata.raw.X)
    return looked is not None and bool(not_counts(looked[1]).size)


def counts_copy(name: str, source: str) -> str:
    """The code for an AnnData holding the counts at ``source`` in X, with ``name``'s cells
    and genes, ``name``'s own X (log-normalized, often) left as it is.

    Examples
    --------
    >>> counts_copy("adata", "adata.layers['counts']")[:52]
    "counts = anndata.AnnData(adata.layers['counts'], obs"
    """
    return f"counts = anndata.AnnData({source}, obs={name}.obs.copy(), var={name}.var.copy())"


def _counts_layer(adata: AnnData, layer: str | None) -> str | None:
    """A layer of ``adata`` other than ``layer`` whose first rows hold raw counts."""
    for key in adata.layers.keys():
        looked = _first_rows(adata.layers[key]) if key != layer else None
        if looked is not None and looked[1].size and not not_counts(looked[1]).size:
            return key
    return None


def empty_x_hint(adata: AnnData, name: str = "adata") -> str:
    """What to do with an AnnData without X: pass the layer with the data (to setup), or, where
    no layer can be passed (under :func:`layer_fixed`: new cells for a trained model, a load;
    a query), put them in X.

    Examples
    --------
    >>> a = AnnData(np.ones((2, 1)), layers={"counts": np.ones((2, 1))})
    >>> with layer_fixed():
    ...     empty_x_hint(a)
    ". The model reads its data from X: put them there, e.g. adata.X = adata.layers['counts']..."
    """
    layers = list(adata.layers)
    if name == "reference" and layers:  # from_reference takes the spots' layer too
        return f"; pass the layer with the data, e.g. reference_layer={layers[0]!r} ({layers})."
    if not (_LAYER_FIXED.get() or name == "query"):
        return f"; pass the layer with the data: {layers}."
    who = "The reference read" if name == "query" else "The model reads"
    fix = f", e.g. {name}.X = {name}.layers[{layers[0]!r}].copy()" if layers else ""
    return f". {who} its data from X: put them there{fix}."


class MissingLayerError(KeyError, ValueError):
    """A model's ``layer`` that its AnnData lacks: a KeyError (scanpy's word for it), and a
    ValueError as scvi-tools' setup raises, which code written for SCVI catches."""


def missing_layer_message(
    adata: AnnData, layer: str, name: str = "adata", counts: bool = False
) -> str:
    """The error for a ``layer`` that ``adata`` lacks, and, where the model's layer is fixed
    (under :func:`layer_fixed`: new cells, a load), where to put the data; for a layer of
    raw ``counts`` passed at setup, where the counts are (:func:`_where_counts_are`).

    Examples
    --------
    >>> with layer_fixed():
    ...     missing_layer_message(AnnData(np.ones((2, 1))), "counts")[61:]
    "The model reads its data there: put them in adata.layers['counts']."
    >>> missing_layer_message(AnnData(np.ones((2, 1))), "counts", counts=True)[61:]
    'adata.X holds raw counts, it seems: pass layer=None to read them from X.'
    """
    text = missing_layer_text(adata, layer, name)
    if _LAYER_FIXED.get():
        text += f" The model reads its data there: put them in {name}.layers[{layer!r}]."
    elif counts and name == "adata" and "did you mean" not in text:  # setup's own layer=
        text += _where_counts_are(adata, layer, name)
    return text


def _where_counts_are(adata: AnnData, layer: str, name: str) -> str:
    """Where the raw counts of ``adata`` are, when the counts ``layer`` given to setup is not
    there: another layer, X or ``adata.raw`` (their first rows hold whole numbers), or nowhere
    (scanpy's normalize_total and log1p ran on X before a copy was kept)."""
    found = _counts_layer(adata, layer)
    if found is not None:
        return f" {name}.layers[{found!r}] holds raw counts, it seems: pass layer={found!r}."
    looked = _first_rows(x_or_none(adata))
    values = looked[1] if looked is not None else np.zeros(0)
    if values.size and not not_counts(values).size:
        return f" {name}.X holds raw counts, it seems: pass layer=None to read them from X."
    if adata.raw is not None and not _raw_not_counts(adata):
        return (
            f" {name}.raw holds raw counts, it seems: {name}.layers[{layer!r}] = "
            f"{name}.raw[:, {name}.var_names].X.copy(), then set up again."
        )
    bad = not_counts(values)
    seen = f" (values such as {not_count_repr(bad.flat[0])}: normalized?)" if bad.size else ""
    return (
        f" {name} holds no raw counts: not in X{seen}, its layers or {name}.raw. Read them "
        f"again from their file and copy them over by name, {name}.layers[{layer!r}] = "
        f"counts[{name}.obs_names, {name}.var_names].X (counts: the AnnData read), or keep a "
        f"copy before normalizing ({name}.layers[{layer!r}] = {name}.X.copy() before "
        "sc.pp.normalize_total)."
    )


def missing_layer_error(
    adata: AnnData, layer: str, name: str = "adata", counts: bool = False
) -> MissingLayerError:
    """The error (:class:`MissingLayerError`) of :func:`missing_layer_message`."""
    return MissingLayerError(missing_layer_message(adata, layer, name, counts))


def check_still_counts(adata: AnnData, layer: str | None, model: str) -> None:
    """Refuse a model's own AnnData whose counts were changed in place after setup.

    ``setup_anndata`` checks the whole matrix once; scanpy's ``normalize_total`` or ``log1p``
    run on the same object afterwards went unnoticed, and every result was computed from the
    changed values (a copy of the same object is checked, and refused). The first
    :data:`_LOOK_ROWS` rows are read: an in-place transform changes every row. Backed and lazy
    matrices are not read here.

    Examples
    --------
    >>> import anndata as ad
    >>> check_still_counts(ad.AnnData(np.array([[1.0, 0.0], [0.0, 2.0]])), None, "ZINBVAE")
    >>> check_still_counts(ad.AnnData(np.array([[0.5, 0.0], [0.0, 1.0]])), None, "ZINBVAE")
    Traceback (most recent call last):
    ...
    ValueError: The model's AnnData no longer holds raw counts: adata.X has values such as 0.5 ...
    """
    looked = _first_rows(adata.X if layer is None else adata.layers.get(layer))
    if looked is None:
        return
    bad = not_counts(looked[1])
    if not bad.size:
        return
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    kept = _counts_layer(adata, layer) if layer is None else None
    fix = (  # not over the log-normalized X the user kept on purpose
        f"To keep adata.X as it is, give the {model} its counts in an AnnData of their own: "
        f"{counts_copy('adata', f'adata.layers[{kept!r}]')}; model.adata = counts (results "
        "of write_to_adata() go there; copy them over by key); or set up with "
        f"layer={kept!r} and build the {model} again."
        if kept is not None
        else f"Put the counts back (the {model} reads them as before), or keep them in a "
        "layer before normalizing (adata.layers['counts'] = adata.X.copy()), set up with "
        f"layer='counts' and build the {model} again."
    )
    raise ValueError(
        f"The model's AnnData no longer holds raw counts: {where} has values such as "
        f"{not_count_repr(bad.flat[0])} now, so it was changed in place after setup_anndata (e.g. "
        "sc.pp.normalize_total or sc.pp.log1p on the same object), and results would come from "
        f"the changed values. {fix}"
    )


def check_model_counts(model) -> None:
    """:func:`check_still_counts` on a count model's own AnnData, if it holds one; for a
    model of real values (``likelihood="normal"``), that data never negative when it was
    built (log-normalized) have not turned negative since (``sc.pp.scale`` in place)."""
    adata, registry = getattr(model, "_adata", None), getattr(model, "registry_", None)
    if adata is None or registry is None:
        return
    layer = registry["setup_args"].get("layer")
    if model._data_kind == "counts":
        check_still_counts(adata, layer, type(model).__name__)
    elif getattr(model, "_non_negative_data", None) is adata:
        looked = _first_rows(adata.X if layer is None else adata.layers.get(layer))
        if looked is not None and (looked[1] < 0).any():
            where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
            raise ValueError(
                f"The model's AnnData changed in place since the model was built: {where} "
                f"had no negative values and has some now (e.g. {looked[1].min():.4g}), as "
                "after sc.pp.scale or sc.pp.regress_out on the same object, and results would "
                "come from the changed values. Put the data back, or transform a copy "
                "(scaled = sc.pp.scale(adata, copy=True))."
            )


def note_non_negative(model) -> None:
    """At the end of a model's ``__init__``: remember its own AnnData when the real values it
    reads (``likelihood="normal"``) are never negative in their first rows, for
    :func:`check_model_counts` to notice a change in place."""
    adata, registry = getattr(model, "_adata", None), getattr(model, "registry_", None)
    model._non_negative_data = None
    if adata is None or registry is None or model._data_kind != "real":
        return
    layer = registry["setup_args"].get("layer")
    looked = _first_rows(adata.X if layer is None else adata.layers.get(layer))
    if looked is not None and not (looked[1] < 0).any():
        model._non_negative_data = adata


def warn_if_counts(adata: AnnData, layer: str | None, query: bool = False, looked=None) -> None:
    """Warn when data given to a real-valued likelihood look like raw counts: whole numbers
    of 0 and above, reaching at least 10, with rows of different totals (the first
    :data:`_LOOK_ROWS` rows are read, or ``looked``: :func:`_first_rows` of them, read by the
    caller). A normal likelihood on counts lets a few highly expressed genes dominate z, where
    a count likelihood or log-normalized data would not. A ``query`` (mapped onto a reference
    of real values) cannot choose its likelihood: it is told to transform its counts as the
    reference's data were.
    """
    from ._validation import warn_user

    if looked is None:
        looked = _first_rows(adata.X if layer is None else adata.layers.get(layer))
    if looked is None:
        return
    block, values = looked
    if not values.size or values.max() < 10 or not_counts(values).size:
        return
    totals = np.asarray(block.sum(axis=1)).ravel()
    if np.ptp(totals) <= 1e-3 * max(float(totals.max()), 1.0):
        return  # every row one total: scaled data, not counts
    name = "query" if query else "adata"
    where = f"{name}.X" if layer is None else f"{name}.layers[{layer!r}]"
    if query:
        warn_user(
            f"{where} looks like raw counts (whole numbers up to {values.max():.6g}), and the "
            "reference (likelihood='normal') read real values: mapped as they are, highly "
            "expressed genes would dominate the query's latent space. Transform the query as "
            "the reference's data were, e.g. sc.pp.normalize_total(query); "
            "sc.pp.log1p(query)."
        )
        return
    warn_user(
        f"{where} looks like raw counts (whole numbers up to {values.max():.6g}), which "
        "likelihood='normal' reads as real values: highly expressed genes would dominate the "
        "latent space. Use a count likelihood (the default, 'zinb'), or log-normalize first "
        "(sc.pp.normalize_total(adata); sc.pp.log1p(adata))."
    )
