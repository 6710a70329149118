"""The AnnData a user gave a model that reads it through an AnnData of its own (a query's,
sharing its matrices or gene-aligned; one loaded or set with genes in another order): the
matrix the model's copy was made from, so that a read of the user's AnnData after its data
were replaced (``adata.X = other``) reads them as they are now, not the copy's old ones."""

from __future__ import annotations

import weakref

from anndata import AnnData

from ._matrices import on_disk


def _read_matrix(adata: AnnData, layer: str | None):
    return adata.X if layer is None else adata.layers.get(layer)


def keep_write_target(model, given: AnnData | None) -> None:
    """``given`` as the AnnData the model writes into and reads through its own (see
    :func:`same_source`), with the matrix it reads held by a weak reference. A view or an
    AnnData on disk hands out a new matrix object at each access: nothing is held, and such
    an AnnData is taken as unchanged, as before."""
    model._query_adata = given
    source = None
    if given is not None and not given.is_view and not on_disk(given):
        layer = (getattr(model, "registry_", None) or {}).get("setup_args", {}).get("layer")
        matrix = _read_matrix(given, layer)
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
    return source() is _read_matrix(adata, layer)
