"""Genes matched by name: a model's own genes, and a query's against a reference's."""

from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from ._count_advice import check_model_counts, layer_fixed
from ._gene_advice import (
    _cut_to_subset,
    naming_hint,
    query_genes_advice,
    spaces_hint,
    version_hint,
)
from ._matrices import in_dask, on_disk, take_columns
from ._read_calls import read_call
from ._registered_columns import check_registered_columns
from ._shared_setup import take_back_setup
from ._training_checks import rows_unit
from ._validation import _matrix, _refuse_duplicates, refuse_numeric_names, warn_user

logger = logging.getLogger(__name__)


def _gene_difference(genes: pd.Index, names: pd.Index) -> str:
    """How ``names`` differ from the training ``genes``, naming a few of each."""
    missing, extra = genes.difference(names), names.difference(genes)
    parts = []
    if len(missing):
        parts.append(f"{len(missing)} of them missing (e.g. {missing[:5].tolist()})")
    if len(extra):
        parts.append(f"{len(extra)} genes it does not know (e.g. {extra[:5].tolist()})")
    if parts:
        return " and ".join(parts)
    if len(genes) != len(names):  # the training genes, some of them repeated
        return f"the same gene names, some repeated ({len(names)} for {len(genes)})"
    moved = np.flatnonzero(np.asarray(genes) != np.asarray(names))
    first = int(moved[0]) if len(moved) else 0
    return (
        f"the same genes in another order ({len(moved)} moved; e.g. position {first} holds "
        f"{names[first]!r}, the model's gene there is {genes[first]!r})"
    )


#: How every method that reads an AnnData (``load``, ``model.adata =``, each read-out) tells
#: that it reads the training genes by name from a copy (the user's AnnData is unchanged).
_READ_BY_NAME = (
    "(adata itself is unchanged: model.write_to_adata(adata) writes the results into it, and "
    "results by gene follow the training order)"
)
#: The one warning for the training genes in another order, in memory (:func:`match_genes`).
_REORDERED = "; the model reads a copy with them in the training order, by name "


def in_training_order(adata: AnnData, var_names) -> AnnData | None:
    """A copy of in-memory ``adata``, whose genes are a saved model's training genes
    (``var_names``) in another order or those and more (the whole a model trained on its
    highly variable genes came from), with the training genes in the training order by name,
    read by :func:`match_genes` as every read-out reads them (with its warning; for more
    genes, one naming how many are left out, as the model keeps the copy); ``None`` where
    genes are missing or on disk (a copy would read the whole file: the load refuses, saying
    how to order it).

    ``load`` refused such an AnnData, while ``model.adata = adata`` and every read-out match
    genes by name. The model keeps and reads the copy; its results are per cell or spot, or by
    gene name, and ``write_to_adata`` writes them into ``adata``.
    """
    genes = pd.Index(np.asarray(var_names).astype(str))
    names = pd.Index(adata.var_names.astype(str))
    if on_disk(adata) or names.equals(genes) or not names.is_unique or not genes.isin(names).all():
        return None
    if len(names) > len(genes):  # the whole a model of its highly variable genes came from
        warn_user(
            f"adata has {len(names) - len(genes)} genes more than the model's {len(genes)}; "
            f"the model reads a copy of its training genes, by name {_READ_BY_NAME}."
        )
    return match_genes(adata, genes, extra_genes=True)


def query_to_load(adata: AnnData, var_names, attr_dict: dict) -> AnnData | None:
    """For a saved query model (``load_query_data``'s), ``adata`` with its genes aligned to
    the reference's on a copy, missing ones as zeros, as ``load_query_data`` aligned the query
    and every read-out of the model aligns one (:func:`align_query_genes`); ``None`` for
    another model. ``load`` refused the query as the user has it, advising a subset by the
    saved genes, which fails on the genes it lacks."""
    mapping = attr_dict.get("query_mapping_")
    if not isinstance(mapping, dict):
        return None
    genes = pd.Index(np.asarray(var_names).astype(str))
    n_missing = int((~genes.isin(adata.var_names.astype(str))).sum())
    as_mapped = n_missing == mapping.get("n_genes_missing")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*filled with zeros")
        aligned = align_query_genes(
            adata,
            genes,
            mapping.get("min_gene_overlap", 0.5),
            attr_dict["registry_"]["setup_args"].get("layer"),
        )
    lacks = f"lacks {n_missing} of the model's {len(genes)} genes" if n_missing else "has"
    warn_user(
        f"adata {lacks}{' (as when it was mapped)' if as_mapped else ''}"
        f"{'' if n_missing else ' the genes in another order or others besides'}: the model "
        "reads a copy with the reference's genes in its order"
        f"{', the missing ones as zeros' if n_missing else ''}, as load_query_data aligned "
        "the query (adata itself is unchanged, and model.write_to_adata() writes the results "
        "into it)."
    )
    return aligned


def _subset_genes_message(model, n_now: int, n_model: int, training: bool) -> str:
    """The refusal of a model's AnnData subset in place to ``n_now`` of its ``n_model`` genes:
    read-outs take an AnnData with the training genes; training does not, so a model not yet
    trained is built again on the subset, and a trained one cannot go on with fewer genes."""
    trained = bool(getattr(model, "is_trained_", False))
    name = type(model).__name__
    when = "trained on" if trained else "built for"
    what = (
        f"The model's AnnData holds {n_now} genes and the model was {when} {n_model}: it was "
        "subset in place since (e.g. sc.pp.filter_genes or "
        "sc.pp.highly_variable_genes(..., subset=True))."
    )
    if not trained:  # train() takes no AnnData: the model itself must change
        return (
            f"{what} Set up and build the model again on the subset: {name}.setup_anndata("
            f"adata, ...), then model = {name}(adata, ...); or subset a copy before setup "
            "(adata = adata[:, mask].copy())."
        )
    if training:
        return (
            f"{what} A trained model trains on its own genes only: set up and train a new "
            "model on the subset, or load this one onto an AnnData with its genes to train "
            f"it further: model.save(path); model = {name}.load(path, full) (full kept from "
            "before the subset)."
        )
    return (
        f"{what} Pass an AnnData with the training genes (model.write_to_adata(full), full "
        "kept from before the subset), or set up and train a model on the subset."
    )


def subset_since_setup(model) -> bool:
    """Whether the model's AnnData lost genes in place since setup (``sc.pp.filter_genes``,
    ``highly_variable_genes(subset=True)``): it holds other genes than the model's."""
    genes, adata = model._training_genes(), getattr(model, "_adata", None)
    return genes is not None and adata is not None and adata.n_vars != len(genes)


def check_own_adata(model, training: bool = False) -> None:
    """Before a model reads (or, ``training``, trains on) its own AnnData: it still holds the
    training genes, the obs columns it reads hold the values registered at setup (another
    model's codes there are taken back first), and a count model's counts are still counts
    (:func:`check_model_counts`).

    Genes subset in place after training (``sc.pp.filter_genes``,
    ``sc.pp.highly_variable_genes(..., subset=True)``) kept the object, so scvi-tools found its
    setup and the networks met fewer genes than they take: torch's "mat1 and mat2 shapes
    cannot be multiplied", or an index error.
    """
    adata, genes = getattr(model, "_adata", None), model._training_genes()
    if subset_since_setup(model):
        raise ValueError(_subset_genes_message(model, adata.n_vars, len(genes), training))
    if adata is not None and adata.n_obs == 0:  # scvi-tools: "zero-size array to reduction"
        unit = rows_unit(model)
        raise ValueError(
            f"The model's AnnData holds no {unit}s (0 observations): it was subset in place "
            "since (e.g. sc.pp.filter_cells with a threshold that kept none). Pass an AnnData "
            f"with {unit}s: model.write_to_adata(adata), {read_call(model)}."
        )
    registry = getattr(model, "registry_", None)
    if adata is not None and registry is not None:  # a column it reads changed since setup
        take_back_setup(model, trained=not training)  # another model's codes there: ours
        name = type(model).__name__
        check_registered_columns(adata, registry, name, trained=not training, of=model)
    check_model_counts(model)


_ADVICE = (
    "Pass the training genes in the training order, e.g. adata[:, model.adata.var_names] (a "
    "missing gene cannot be made up; map a dataset with other genes with load_query_data)."
)


def match_genes(
    adata: AnnData, genes: pd.Index | None, advice: str = _ADVICE, extra_genes: bool = False
) -> AnnData:
    """``adata`` with the training ``genes`` in the training order, or a clear refusal.

    The same genes in another order are reordered by name, on a copy, with a warning (the
    user's AnnData is left as it is); missing genes are refused by name, with the model's
    ``advice``, and so are extra genes unless ``extra_genes``: then the training genes are
    read from a whole that holds them and others (the AnnData a model trained on its highly
    variable genes came from), by name, on a copy and without a warning, as
    ``write_to_adata(whole)`` reads them; results by gene are of the training genes.
    ``genes`` ``None`` (a model without recorded genes) leaves ``adata`` as it is. The copy
    of an AnnData whose data are on disk (backed .h5ad, :func:`~deltavae.read_lazy`) is read
    into memory a chunk of rows at a time, and for a reordering a warning says so and how to
    keep the cells on disk.
    """
    names = pd.Index(adata.var_names.astype(str))
    if genes is None or names.equals(genes):
        return adata
    _refuse_duplicates(names, "adata")
    if extra_genes and not len(genes.difference(names)) and len(names) > len(genes):
        logger.info("Reading the model's %d genes by name from adata's %d.", len(genes), len(names))
        if not on_disk(adata):
            refuse_numeric_names(adata, "adata")  # its subset: anndata's obscure TypeError
            return adata[:, genes.to_numpy()].copy()
        return _reordered(adata, names.get_indexer(genes), genes, same_genes=True)
    if len(genes.difference(names)) or len(names.difference(genes)):
        raise ValueError(
            f"adata's genes differ from the {len(genes)} genes the model was trained on: "
            f"{_gene_difference(genes, names)}. {advice}" + naming_hint(adata, genes)
        )
    if not on_disk(adata):  # the one warning, which in_training_order (load) gives too
        refuse_numeric_names(adata, "adata")  # its subset: anndata's obscure TypeError
        warn_user(f"adata has {_gene_difference(genes, names)}{_REORDERED}{_READ_BY_NAME}.")
        return adata[:, genes.to_numpy()].copy()
    copy = f"({adata.n_obs} cells x {len(genes)} genes; adata itself is unchanged)"
    if in_dask(adata):  # in memory perhaps: not "on disk", and reordered lazily
        warn_user(
            f"adata has {_gene_difference(genes, names)}, and its matrices are dask arrays: "
            f"a copy with the genes in the training order is computed into memory {copy}. To "
            "keep them lazy, reorder the genes first: adata = adata[:, "
            "model.adata.var_names].copy() (a dask array stays one)."
        )
        return _reordered(adata, names.get_indexer(genes), genes, same_genes=True)
    warn_user(
        f"adata has {_gene_difference(genes, names)}, and its data are on "
        f"disk: a copy with the genes in the training order is loaded into memory "
        f"{copy}. To read the "
        "cells from disk, write the file with the model's gene order first: "
        "adata[:, model.adata.var_names].write_h5ad(path) (or .write_zarr), then read_lazy it."
    )
    return _reordered(adata, names.get_indexer(genes), genes, same_genes=True)


def _reordered(adata: AnnData, source: np.ndarray, genes: pd.Index, same_genes: bool, layer=None):
    """An in-memory AnnData of ``adata``'s genes ``source`` (``-1``: zeros), named ``genes``.

    X and the layers (only ``layer`` unless ``same_genes``) are read a chunk of rows at a time
    when on disk; obs and obsm are kept. ``same_genes`` (a reordering) also keeps var, uns and
    every layer, and a dense matrix dense; otherwise the matrices are sparse (CSR).
    """
    var = adata.var.iloc[source].copy() if same_genes else pd.DataFrame(index=genes)
    layers = list(adata.layers.keys()) if same_genes else [] if layer is None else [layer]
    return AnnData(
        X=None if adata.X is None else take_columns(adata.X, source, same_genes),
        obs=adata.obs.copy(),
        var=var,
        uns=adata.uns.copy() if same_genes else None,
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        layers={k: take_columns(adata.layers[k], source, same_genes) for k in layers},
    )


def warn_missing_genes(n_missing: int, n_genes: int, adata=None, genes=None) -> None:
    """Tell how many of the reference's genes a query lacks and gets as zeros (none: quiet);
    for a query ``adata`` cut to a gene subset of its own (highly variable genes), that the
    genes were there before the cut; of the reference's ``genes``, those the query holds
    under another version of their Ensembl ID or with spaces around their names."""
    if n_missing:
        versions = (
            ""
            if adata is None or genes is None
            else version_hint(genes, adata.var_names) + spaces_hint(genes, adata.var_names)
        )
        cut = adata is not None and _cut_to_subset(adata)
        warn_user(
            f"{n_missing} of the reference's {n_genes} genes are missing from the query; "
            "they are filled with zeros."
            + (
                " The query holds a subset of its genes (highly variable genes selected on it, "
                "or adata.raw with more): take the reference's genes from the query before "
                "that cut instead, e.g. query = full_query[:, "
                "full_query.var_names.isin(reference.var_names)].copy(), so that none is "
                "filled with zeros."
                if cut
                else ""
            )
            + versions
        )


def align_query_genes(
    adata: AnnData, reference_genes, min_gene_overlap: float = 0.5, layer: str | None = None
) -> AnnData:
    """The query's genes in the reference's order, missing genes as zeros.

    Parameters
    ----------
    adata
        Query cells.
    reference_genes
        The reference model's gene names, in its order.
    min_gene_overlap
        Smallest fraction of the reference's genes the query must have.
    layer
        The layer holding the data (it is aligned too); ``None`` for ``X``.

    Returns
    -------
    ``adata`` itself when its genes already match, else a new AnnData (X, the layer, obs and
    obsm kept; extra genes dropped).

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> q = ad.AnnData(np.ones((2, 2)))
    >>> q.var_names = ["b", "a"]
    >>> list(align_query_genes(q, ["a", "b"]).var_names)
    ['a', 'b']
    """
    if isinstance(min_gene_overlap, bool | np.bool_):  # scvi-tools' third argument is a bool
        raise TypeError(
            f"min_gene_overlap is a fraction of the reference's genes; got {min_gene_overlap!r} "
            "(scvi-tools' inplace_subset_query_vars, its third argument, is not taken here: the "
            "query's genes are aligned on a copy). Pass min_gene_overlap=<fraction> by name."
        )
    if not 0 <= min_gene_overlap <= 1:
        raise ValueError(
            f"min_gene_overlap is a fraction of the reference's genes, in [0, 1]; got "
            f"{min_gene_overlap!r}."
        )
    genes = pd.Index(np.asarray(reference_genes).astype(str))
    query = pd.Index(adata.var_names.astype(str))
    if query.equals(genes):
        return adata
    with layer_fixed():  # the layer the model reads is there, before any gene is moved
        _matrix(adata, layer)
    _refuse_duplicates(query, "the query")
    shared = genes.isin(query)
    fraction = float(shared.mean())
    if fraction < min_gene_overlap:
        raise ValueError(
            f"The query shares {int(shared.sum())} of the reference's {len(genes)} genes "
            f"({fraction:.0%}); at least {min_gene_overlap:.0%} are needed (min_gene_overlap). "
            + query_genes_advice(adata, genes)
        )
    n_missing = int((~shared).sum())
    warn_missing_genes(n_missing, len(genes), adata, genes)
    if not n_missing:
        logger.info("Reordering the query's genes to the reference's order.")
    source = query.get_indexer(genes)
    if on_disk(adata):
        keep = (
            "to keep it lazy, give its dask arrays the reference's genes first (missing ones "
            "as zeros)"
            if in_dask(adata)
            else "to keep it on disk write it with the reference's genes first (missing ones "
            "as zeros), then read_lazy it"
        )
        warn_user(
            "the query's genes differ from the reference's, so its aligned counts are held in "
            f"memory ({adata.n_obs} cells x {len(genes)} genes, sparse); {keep}."
        )
    return _reordered(adata, source, genes, same_genes=False, layer=layer)


def genes_to_load_advice(cls, dir_path, attr_dict: dict, var_names, adata, prefix=None) -> str:
    """Why ``adata`` cannot be the AnnData a saved model loads with (other genes, or the
    training genes in another order in an AnnData on disk, which :func:`in_training_order`
    does not copy) and what to pass instead, in one line that runs (scvi-tools'
    ``prepare_query_anndata`` reads ``model.pt``, never a ``prefix``'s file). A query model's
    query is aligned by :func:`query_to_load` instead."""
    genes, names = pd.Index(np.asarray(var_names).astype(str)), adata.var_names
    problem = _gene_difference(genes, pd.Index(names.astype(str)))
    saved = f"torch.load('{os.fspath(dir_path)}/{prefix or ''}model.pt', weights_only=False)"
    saved += "['var_names']"
    reorder = (
        # A backed file cannot be copied into memory by prepare_query_anndata: a backed copy
        # in the saved order stays on disk.
        f"adata = adata[:, {saved}].copy(filename='in_training_order.h5ad')"
        if adata.isbacked
        else f"adata = {cls.__name__}.prepare_query_anndata(adata, "
        f"{os.fspath(dir_path)!r}, inplace=False)"
        if hasattr(cls, "prepare_query_anndata") and not prefix
        else f"adata = adata[:, {saved}].copy()"
    )
    same = len(genes) == len(names) and genes.isin(names.astype(str)).all()
    kind = "of dask arrays" if in_dask(adata) else "on disk"
    if same:  # on disk: a copy in memory would read the whole file
        return (
            f"The AnnData's genes differ from the {len(var_names)} genes the model was "
            f"trained on: {problem}. An AnnData {kind} is read as it is, so it must hold "
            f"them in the training order: {reorder}."
        )
    other = (
        f" (a dataset with other genes is mapped with {cls.__name__}.load_query_data)"
        if hasattr(cls, "load_query_data")
        else ""
    )
    return (
        f"The AnnData's genes differ from the {len(var_names)} genes the model was "
        f"trained on: {problem}. The model keeps the AnnData it is loaded with (and writes "
        f"its results there): pass the training genes{other}."
    ) + naming_hint(adata, genes, saved)


def match_read_genes(adata: AnnData, genes: pd.Index | None, used, layer: str | None) -> AnnData:
    """``adata`` with a spot model's training ``genes`` in order, for a model that reads only
    the genes at positions ``used`` (``None``: all) and returns nothing by gene (NMFDeconv):
    those genes are needed, by name and in any order; the others, which it never reads, may
    be missing (filled with zeros) and genes the model does not know are left out."""
    names = pd.Index(adata.var_names.astype(str))
    if genes is None or names.equals(genes):
        return match_genes(adata, genes)
    read = genes if used is None else genes[used]
    missing = read.difference(names)
    if len(missing):
        raise ValueError(
            f"adata lacks {len(missing)} of the {len(read)} genes the model reads (e.g. "
            f"{missing[:5].tolist()}; model.used_genes() lists them all). New spots need "
            "those genes, by name, in any order; the model's other genes may be missing."
            + naming_hint(adata, read)
        )
    with warnings.catch_warnings():
        if names.sort_values().equals(genes.sort_values()):
            # The same genes reordered, as in every model, without the note that results
            # follow the training order (none is by gene); a copy read from disk is still told.
            warnings.filterwarnings("ignore", message=f".*{re.escape(_REORDERED)}")
            return match_genes(adata, genes)
        warnings.filterwarnings("ignore", message=r".*filled with zeros")
        return align_query_genes(adata, genes, 0.0, layer)
