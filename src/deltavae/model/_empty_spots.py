"""What drops the spots a spot model finds without counts: the spots empty in the genes the
model reads and in the layer it was set up with. scanpy's ``filter_cells(spots,
min_counts=1)`` reads X and every gene, so it kept spots that are empty only in the model's
genes (those shared with the reference, or its marker genes) and judged X where the model
reads a layer."""

from __future__ import annotations

from ._count_advice import drop_empty

#: How the advice names the genes a spot model reads that are not all of the spots': the
#: model's own list (the CLI writes it out, :mod:`deltavae._cli_genes`).
USED_GENES = "model.used_genes()"
SHARED_GENES = "model.adata.var_names"


def read_genes(model) -> tuple[int, str | None]:
    """The number of genes ``model`` reads and how the advice names them (``None``: every
    gene of its spots). NMFDeconv reads the genes of its ``gene_index`` (markers shared with
    the reference, :meth:`~deltavae.model.NMFDeconv.used_genes`); a SpatialImputer built by
    ``from_reference`` holds a copy of the spots' genes shared with the reference; Archetypes
    read every gene."""
    index = getattr(getattr(model, "module", None), "gene_index", None)  # none while built
    if index is not None:
        return len(index), USED_GENES
    if getattr(model, "reference_genes_", None) is not None:
        return model.adata.n_vars, SHARED_GENES
    return model.adata.n_vars, None


def drop_empty_spots(model) -> str:
    """The statement that drops the spots without counts in the genes ``model`` reads, in the
    layer it reads them from: scanpy's filter where those are X and every gene.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> spots = NS(n_vars=9)
    >>> archetypes = NS(module=NS(), adata=spots, registry_={"setup_args": {"layer": None}})
    >>> drop_empty_spots(archetypes)
    'sc.pp.filter_cells(spots, min_counts=1)'
    >>> imputer = NS(module=NS(), adata=spots, reference_genes_=[], registry_=
    ...              {"setup_args": {"layer": "counts"}})
    >>> print(drop_empty_spots(imputer))
    spots = spots[np.asarray(abs(spots[:, model.adata.var_names].layers['counts']).sum(1)).ravel()
    > 0].copy()
    """
    _, genes = read_genes(model)
    return drop_empty("spots", model.registry_["setup_args"].get("layer"), True, genes=genes)
