"""Checks of a query against the reference it is mapped onto (:mod:`deltavae.model._query`):
its obs (the keys the reference read, their categories, the labels) and its data."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import numpy as np
import pandas as pd
from anndata import AnnData

from .._lookalike_names import reference_lookalikes
from ..distributions import Likelihood
from ._label_setup import looks_unlabelled
from ._labels import refuse_other_type
from ._registered import category_mappings
from ._validation import check_data, warn_user

#: True while load_query_data builds the query model (before its ``query_mapping_`` is set):
#: checks of a new model's own fit (a mixture of n_clusters on its cells) do not apply.
_BUILDING_QUERY: ContextVar[bool] = ContextVar("building_query", default=False)


def building_query() -> bool:
    """Whether the model being built is a query model (inside :func:`query_being_built`)."""
    return _BUILDING_QUERY.get()


@contextlib.contextmanager
def query_being_built():
    """The block in which load_query_data builds the query model."""
    token = _BUILDING_QUERY.set(True)
    try:
        yield
    finally:
        _BUILDING_QUERY.reset(token)


#: The reference's setup arguments a query's obs must hold columns for.
_QUERY_KEY_ARGS = ("condition_key", "batch_key", "categorical_covariate_keys", "size_factor_key")


def check_query_obs(adata: AnnData, registry: dict, setup_args: dict, where: str) -> None:
    """The query's obs against the reference's setup: the keys it read, their categories' types,
    the labels (known or the unlabelled mark), at least 2 cells; ``where``: the reference, for
    the messages. ``adata`` is an AnnData (``load_query_data`` checks that first, as every
    method does: :func:`~deltavae._anndata_or_folder.check_anndata`)."""
    if adata.is_view:  # before any work: scvi-tools' setup refused it after the model began
        fix = (
            "query = query[mask].to_memory(), or query[mask].copy(filename='query.h5ad')"
            if adata.isbacked
            else "query = query[mask].copy()"
        )
        raise ValueError(
            "The query is a view (query[mask], sharing its parent's data): the query model "
            "writes its results into the query (write_to_adata), which would turn a view into "
            "a copy apart from its parent, leaving the parent without them (scvi-tools refuses "
            f"a view too). Pass a copy: {fix}."
        )
    if adata.n_obs < 2:
        raise ValueError(
            f"The query holds {adata.n_obs} cell(s); mapping trains the new categories' weights "
            "on the query's cells and needs at least 2. Cells of conditions the reference "
            "knows need no mapping: call the reference model on them."
        )
    for arg in _QUERY_KEY_ARGS:
        value = setup_args.get(arg)
        for key in [value] if isinstance(value, str) else list(value or []):
            if key not in adata.obs and arg == "size_factor_key":
                raise KeyError(
                    f"The query's obs lacks {key!r}, the reference's size_factor_key: add each "
                    "query cell's size factor, computed as the reference's were."
                )
            if key not in adata.obs:
                raise KeyError(
                    f"The query's obs lacks {key!r}, the reference's {arg}. It is not filled in "
                    f"(refused): add the column, e.g. query.obs[{key!r}] = 'query_batch', to map "
                    f"the query as a new {arg.replace('_key', '')} of {where}."
                )
    for key, known in category_mappings(registry).items():
        _refuse_missing_values(adata, key, known, where)
        given = pd.unique(np.asarray(adata.obs[key].dropna(), dtype=object))
        refuse_other_type(f"query.obs[{key!r}]", known, given, "its categories")
    labels_key = setup_args.get("labels_key")
    if labels_key is not None and labels_key in adata.obs:
        # The reference's mark (0 or "" too; -1 for integer labels all labelled).
        unlabeled = registry["field_registries"]["labels"]["state_registry"]["unlabeled_category"]
        reference = [v for v in setup_args.get("_reference_labels", []) if v != unlabeled]
        labels = adata.obs[labels_key]
        given = pd.unique(np.asarray(labels.dropna(), dtype=object))
        _refuse_float_labels_of_nan(labels, labels_key, reference, unlabeled)
        _refuse_word_marks(given, labels_key, reference, unlabeled)
        # Labels 0, 1 for a reference's "0", "1" passed the check below and failed in
        # scvi-tools ("Category 0 not found in source registry").
        refuse_other_type(
            f"query.obs[{labels_key!r}]", reference, given[given != unlabeled], "its labels"
        )
        known = set(np.asarray(reference, dtype=str)) | {str(unlabeled)}
        new = sorted({str(v) for v in labels.dropna()} - known)
        n_missing = int(labels.isna().sum())
        if new or n_missing:
            what = [f"labels the reference does not know: {new[:5]}"] if new else []
            what += [f"{n_missing} missing labels (NaN)"] if n_missing else []
            mark = f"to {unlabeled!r} (unlabelled) to have them predicted."
            if new and not {str(v) for v in labels.dropna()} & known - {str(unlabeled)}:
                # None of the reference's: the query's own annotation, kept by another name.
                mark = (
                    "To keep them as the query's own annotation and have every cell "
                    f"predicted, move them to another column: query.obs[{labels_key + '_query'!r}]"
                    f" = query.obs.pop({labels_key!r}); or set them {mark}"
                )
            else:
                mark = f"Set them {mark}"
            rename = _lookalike_labels_hint(given, known, [*reference, unlabeled], labels_key)
            if rename:
                mark = f"Otherwise, {mark[0].lower()}{mark[1:]}"
            raise ValueError(
                f"The query's obs[{labels_key!r}] holds {' and '.join(what)}. {rename}{mark}"
            )


def _lookalike_labels_hint(given, known: set, reference: list, key: str) -> str:
    """The sentence, ending in a space, that names the query's unknown labels (``given`` not
    in ``known``, read as text) that are one of the ``reference``'s labels (or its unlabelled
    mark) but for case, spaces or number format ('0 ' for '0', 'b cell' for 'B cell'), with the
    line that renames them; ``""`` where none is.

    Examples
    --------
    >>> _lookalike_labels_hint(["B ", "X"], {"B", "T"}, ["B", "T"], "ct")[:48]
    "1 of them differs from the reference's labels on"
    """
    unknown = sorted((v for v in given if str(v) not in known), key=str)
    pairs = reference_lookalikes(unknown, reference)
    if not pairs:
        return ""
    shown = ", ".join(f"{v!r} (the reference's {k!r})" for v, k in list(pairs.items())[:3])
    column = f"query.obs[{key!r}]"
    return (  # astype(object): a Categorical's replace is deprecated in pandas
        f"{len(pairs)} of them differ{'s' if len(pairs) == 1 else ''} from the reference's "
        f"labels only in case, spaces or number format: {shown}. If they are the "
        f"reference's, rename them: {column} = {column}.astype(object).replace({pairs!r}). "
    )


def check_query_data(adata: AnnData, attr_dict: dict, layer: str | None) -> None:
    """The query's data where the reference read its own, of the kind its likelihood needs;
    the advice says where to put them (a query takes no layer argument)."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"The reference read its data from layers[{layer!r}]; the query has no such layer "
            f"(layers: {list(adata.layers)}). Put the query's there: "
            f"query.layers[{layer!r}] = <its raw counts>."
        )
    params = attr_dict.get("init_params_") or {}
    likelihood = {**params.get("kwargs", {}), **params.get("non_kwargs", {})}.get("likelihood")
    kind = Likelihood(likelihood).data_kind if likelihood else "counts"
    check_data(adata, layer, kind=kind, warn_empty=False, name="query")


def warn_cells_without_reference_genes(aligned: AnnData, layer: str | None) -> None:
    """Warn of the cells of a gene-aligned query (in memory: :func:`align_query_genes`'s copy,
    its rows the query's) without counts in the reference's genes: their counts all lie in
    genes the reference lacks, so the model reads them as empty cells. Said in the query's
    terms, for the setup's "all zeros in adata.X; sc.pp.filter_cells" would leave them in."""
    matrix = aligned.X if layer is None else aligned.layers[layer]
    empty = np.asarray(abs(matrix).sum(axis=1)).ravel() == 0
    n_empty = int(empty.sum())
    if not n_empty or n_empty == aligned.n_obs:  # none; or every one, refused by the setup
        return
    names = ", ".join(map(str, aligned.obs_names[empty][:5]))
    matrix = "X" if layer is None else f"layers[{layer!r}]"
    warn_user(
        f"{n_empty} of the query's {aligned.n_obs} cells (e.g. {names}) hold no counts in the "
        "reference's genes (any they hold lie in genes it lacks): the model reads them as empty "
        "cells, placed and labelled from no data (their typicality near 0). To leave them "
        f"out, map again without them: keep = np.asarray(q.adata.{matrix}.sum(axis=1))"
        ".ravel() > 0; q = <Model>.load_query_data(query[keep].copy(), reference)."
    )


def _refuse_missing_values(adata: AnnData, key: str, known: list, where: str) -> None:
    """Refuse missing values (NaN) in the query's condition column ``key``, saying how to
    map those cells as a category of their own, typed as the reference's ``known`` ones."""
    n_missing = int(adata.obs[key].isna().sum())
    if not n_missing:
        return
    column = f"query.obs[{key!r}]"
    plain = [v.item() if isinstance(v, np.generic) else v for v in known]
    if all(isinstance(v, str) for v in plain):
        fill = f"{column} = {column}.astype(object).fillna('query_unknown')"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in plain):
        new = -1 if -1 not in plain else max(plain) + 1
        fill = f"{column} = {column}.fillna({new}).astype(int)"
    elif all(isinstance(v, float) for v in plain):
        new = -1.0 if -1.0 not in plain else max(plain) + 1.0
        fill = f"{column} = {column}.fillna({new})"
    else:  # booleans: a third value is no category of theirs
        fill = None
    named = (
        f"give them a value of their own, mapped as a new category of {where} (its "
        f"weights learn from those cells), e.g. {fill}; or drop them"
        if fill
        else "drop them"
    )
    raise ValueError(
        f"{column} has {n_missing} missing values (NaN), where {where} read each cell's "
        f"value: {named}: query = query[{column}.notna()].copy()."
    )


def refuse_backed(adata: AnnData, genes, inplace: bool) -> None:
    """prepare_query_anndata of a backed query against the reference's ``genes``: a file opened
    backed cannot be copied into memory here (``inplace=False``) nor have its genes padded or
    reordered in place (``inplace=True``; scvi-tools failed inside anndata: 'scipy.sparse does
    not support dtype object', or 'To copy an AnnData object in backed mode, pass a
    filename'). Each case is told what runs; nothing is refused where nothing is to do."""
    genes = pd.Index(np.asarray(genes).astype(str))
    names = pd.Index(adata.var_names.astype(str))
    n_missing = int((~genes.isin(names)).sum())
    as_it_is = "load_query_data(adata, reference) takes it as it is"
    if names.equals(genes):
        if inplace:
            return
        raise ValueError(
            "adata is backed and its genes are already the reference's, in its order: nothing "
            f"to prepare, and a copy in memory would read the whole file; {as_it_is}."
        )
    if n_missing:
        raise ValueError(
            f"adata is backed and it lacks {n_missing} of the reference's {len(genes)} genes: "
            "a file opened backed cannot be copied into memory here, nor padded in place. "
            f"{as_it_is} (it fills them with zeros in an aligned copy); or adata = "
            "adata.to_memory(), then prepare it."
        )
    backed_copy = (
        "genes = <Model>.prepare_query_anndata(adata, reference, return_reference_var_names="
        "True); adata = adata[:, genes].copy(filename='in_reference_order.h5ad')"
    )
    if not inplace:
        raise ValueError(
            "adata is backed: it cannot be copied into memory here. Make a backed copy in the "
            f"reference's order: {backed_copy}; or {as_it_is}."
        )
    raise ValueError(
        "adata is backed and its genes are in another order than the reference's: a file "
        f"opened backed cannot have its genes reordered in place. {as_it_is} (it aligns the "
        f"genes by name); or make a backed copy in the reference's order: {backed_copy}."
    )


def _refuse_float_labels_of_nan(labels: pd.Series, key: str, reference: list, unlabeled) -> None:
    """Integer labels with missing values (NaN), which made the column floats: the type check's
    advice, ``.astype(int)``, fails on the NaN ('Cannot convert non-finite values'); say both
    steps in one line that runs."""
    n_missing = int(labels.isna().sum())
    plain = [v.item() if isinstance(v, np.generic) else v for v in reference]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in plain)
    if not n_missing or not plain or not ints or labels.dtype.kind != "f":
        return
    column = f"query.obs[{key!r}]"
    raise ValueError(
        f"The query's obs[{key!r}] holds {n_missing} missing labels (NaN), which make its "
        f"integer labels floats. Mark those cells unlabelled ({unlabeled!r}) to have them "
        f"predicted and keep the labels integers: {column} = {column}.fillna({unlabeled!r})"
        ".astype(int)."
    )


def _refuse_word_marks(given, key: str, reference: list, unlabeled) -> None:
    """A query marking its unlabelled cells with a word (``'Unknown'``) where the reference's
    labels are integers, marked unlabelled by an integer (-1): the type check's advice,
    ``.astype(int)``, failed on the word ('invalid literal for int()'); say the reference's
    mark and one line that runs."""
    plain = [v.item() if isinstance(v, np.generic) else v for v in reference]
    if not plain or not all(isinstance(v, int) and not isinstance(v, bool) for v in plain):
        return
    words = [v for v in given if isinstance(v, str)]
    if not words or not all(looks_unlabelled(v) for v in words):
        return  # other names: the type check's advice
    column = f"query.obs[{key!r}]"
    shown = words[0] if len(words) == 1 else words
    raise ValueError(  # astype(object): a Categorical takes no new category in mask
        f"The query's obs[{key!r}] marks unlabelled cells {shown!r}, but the reference's labels "
        f"are integers ({plain[:5]}) and it marks unlabelled cells {unlabeled!r}: "
        f"{column} = {column}.astype(object).mask({column}.isin({words!r}), {unlabeled!r})"
        ".astype(int)."
    )


def warn_lookalike_categories(new: dict, reference: dict) -> None:
    """Warn of the query's new categories (``{obs key: values}``) that are one of the
    reference's (``{obs key: categories}``) but for case, spaces or the number format: each
    is learned as a category of its own ('1015 ', 'Ctrl', '1015.0' mapped apart from the
    reference's '1015', 'ctrl', 1015), most likely not what the user meant."""
    for key, values in new.items():
        pairs = reference_lookalikes(values, reference.get(key, []))
        if pairs:
            shown = ", ".join(f"{v!r} (the reference's {k!r})" for v, k in list(pairs.items())[:3])
            warn_user(
                f"The query's obs[{key!r}] holds {len(pairs)} "
                f"{'category' if len(pairs) == 1 else 'categories'} new to the reference "
                f"that {'differs' if len(pairs) == 1 else 'differ'} from one of its own only "
                f"in case, spaces or number format: {shown}. Each is learned as "
                "a new category, its cells mapped apart from the reference's. If they are the "
                "reference's, rename them before mapping: "
                f"query.obs[{key!r}] = query.obs[{key!r}].replace({pairs!r})."
            )
