"""Writing test AnnData to disk as the tests of backed files and lazy stores read them."""

from __future__ import annotations

import anndata as ad


def write_store(adata: ad.AnnData, path):
    """``adata`` written to ``path``: a zarr store (format 3) for a ``.zarr`` path, else an
    .h5ad file; returns ``path``."""
    if str(path).endswith(".zarr"):
        with ad.settings.override(zarr_write_format=3):
            adata.write_zarr(path)
    else:
        adata.write_h5ad(path)
    return path


def read_store(path) -> ad.AnnData:
    """What :func:`write_store` wrote, left on disk: an .h5ad file opened ``backed="r"``, a
    zarr store through ``deltavae.read_lazy``."""
    import deltavae as dv

    return ad.read_h5ad(path, backed="r") if str(path).endswith(".h5ad") else dv.read_lazy(path)
