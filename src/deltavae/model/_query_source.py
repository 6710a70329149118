"""The AnnData a user gave a model that reads it through an AnnData of its own (a query's,
sharing its matrices or gene-aligned; one loaded or set with genes in another order): the
matrix the model's copy was made from, so that a read of the user's AnnData after its data
were replaced (``adata.X = other``) reads them as they are now, not the copy's old ones; and a
query model's own copy made again from the query once its cells or data changed in place."""

from __future__ import annotations

import logging
import weakref

import pandas as pd
from anndata import AnnData

from .._warn import warn_user
from ._matrices import on_disk

logger = logging.getLogger(__name__)


def registration_twin(adata: AnnData) -> AnnData:
    """An AnnData sharing the query's matrices (nothing copied) with obs, var, obsm and uns
    of its own: registering it (scvi-tools adds its ``_scvi_*`` columns and fills a missing
    labels column with the unlabelled category) leaves the user's query as it was, as a
    gene-aligned copy always did."""
    return AnnData(
        X=adata.X,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        layers=dict(adata.layers),
        obsm=dict(adata.obsm),
        uns=dict(adata.uns),
    )


def read_matrix(adata: AnnData, layer: str | None):
    """The matrix of ``adata`` a model registered (``layer``, else X), ``None`` if absent."""
    return adata.X if layer is None else adata.layers.get(layer)


def keep_write_target(model, given: AnnData | None) -> None:
    """``given`` as the AnnData the model writes into and reads through its own (see
    :func:`same_source`), with the matrix it reads held by a weak reference. A view or an
    AnnData on disk hands out a new matrix object at each access: nothing is held, and such
    an AnnData is taken as unchanged, as before."""
    model._query_adata = given
    # its spots (cells) as given, by name and in order: what a spot model's read-outs follow
    model.__dict__["_query_names"] = None if given is None else given.obs_names
    source = None
    if given is not None and not given.is_view and not on_disk(given):
        layer = (getattr(model, "registry_", None) or {}).get("setup_args", {}).get("layer")
        matrix = read_matrix(given, layer)
        if matrix is not None:
            try:
                source = weakref.ref(matrix)
            except TypeError:  # a matrix type without weak references: taken as unchanged
                source = None
    model.__dict__["_query_source"] = source


def same_source(model, adata: AnnData) -> bool:
    """Whether ``adata`` (the model's write target) still holds the matrix its copy was made
    from: ``False`` once it was replaced (``adata.X = other``; ``adata.layers[layer] =``)."""
    source = model.__dict__.get("_query_source")
    if source is None:
        return True
    layer = (getattr(model, "registry_", None) or {}).get("setup_args", {}).get("layer")
    return source() is read_matrix(adata, layer)


def query_as_mapped(model) -> bool:
    """Whether the user's query (the model's write target) holds what the model's own copy
    of it holds: the same matrix, cells in the same order and the same values in the obs
    columns both have. True where the model keeps no write target."""
    query, own = getattr(model, "_query_adata", None), model._adata
    if query is None or query is own:
        return True
    shared = [c for c in query.obs if c in own.obs and not str(c).startswith("_scvi")]
    return (
        same_source(model, query)  # its data not replaced since (adata.X = other)
        and query.obs_names.equals(own.obs_names)
        and all(own.obs[c].equals(query.obs[c]) for c in shared)
    )


def follow_query(model) -> None:
    """A query model's own copy of the query made again from the query as it is now, where
    the user changed it in place since it was mapped (``sc.pp.filter_cells``, cells
    reordered, ``adata.X = other``): calls without an AnnData, ``train`` too, read the cells
    the query holds, as ``write_to_adata()`` writes them, and as a model whose AnnData is the
    user's own reads it (scvi-tools' query model holds the query itself). The copy is
    registered, not the query, which keeps its obs and uns as they are."""
    query = getattr(model, "_query_adata", None)
    if query_as_mapped(model):
        return
    genes = model._training_genes()
    same_genes = genes is None or pd.Index(query.var_names.astype(str)).equals(genes)
    # Genes in another order: aligned on a copy as every read aligns them; the same genes:
    # the twin, so that scvi-tools registers the twin rather than the user's query.
    model.adata = registration_twin(query) if same_genes else model._match_genes(query)
    keep_write_target(model, query)
    logger.info("The query changed since it was mapped: the model reads it as it is now.")


def spots_now(model) -> AnnData | None:
    """The user's spots (``SpatialImputer.from_reference``'s or ``load``'s, the model's write
    target) where they no longer hold what the model's own copy of them holds: spots subset
    or reordered in place since (``sc.pp.filter_cells``, ``adata._inplace_subset_obs``) or
    their data replaced (``adata.X = other``). A read-out without an AnnData reads these,
    found by name as an AnnData passed is (its rows follow ``spots.obs_names`` as
    ``write_to_adata()`` writes them), rather than the copy's spots in the copy's order;
    ``None`` where they are as given (:func:`keep_write_target`), or where the model keeps
    no write target."""
    query, names = getattr(model, "_query_adata", None), model.__dict__.get("_query_names")
    if query is None or query is model.adata:
        return None
    moved = names is not None and not query.obs_names.equals(names)
    return query if moved or not same_source(model, query) else None


def warn_training_other_spots(model) -> None:
    """Before a SpatialImputer fits: warn where the spots given to it were subset in place
    since it was built (``sc.pp.filter_cells``): it fits its own copy of every spot given,
    those left out too (their data shape its shared parameters). Data replaced in place are
    refused by the read-outs (another slide's under the same names), not here: a sparse or
    normalised copy of the same counts is fitted alike."""
    spots = spots_now(model)
    own = model.adata.obs_names
    if spots is None or spots.obs_names.sort_values().equals(own.sort_values()):
        return  # unchanged, or only reordered: the same spots, fitted alike
    left = int(spots.obs_names.isin(own).sum())
    warn_user(
        f"The spots given to {type(model).__name__}.from_reference were subset in place since "
        f"(e.g. sc.pp.filter_cells): they hold {left} of its {len(own)} spots, but train fits "
        f"the model's own copy of all {len(own)}, those left out too. To fit only the spots "
        "left, build the model again from them (from_reference(spots, ...)); the read-outs "
        "without an AnnData give the spots left either way."
    )
