"""What the plots say when the coordinates they draw (``obsm[basis]``) are missing: for the
spots' coordinates (``basis="spatial"``), where they go and, when ``obs`` holds them as
columns (a Slide-seq or RCTD table read as ``x`` and ``y``), the line that puts them there;
for an embedding, how to compute it."""

from __future__ import annotations

import pandas as pd
from anndata import AnnData

from .._close_names import did_you_mean

#: Axis names of the usual embeddings, as scanpy labels them (PC1, not PCA1).
AXIS_NAMES = {"umap": "UMAP", "tsne": "tSNE", "pca": "PC"}

#: obs columns (x, y) that hold spot coordinates as readers and tables name them.
_COORDINATE_COLUMNS = (
    ("x", "y"),
    ("X", "Y"),
    ("x_coord", "y_coord"),
    ("xcoord", "ycoord"),
    ("pxl_col_in_fullres", "pxl_row_in_fullres"),
    ("imagecol", "imagerow"),
    ("array_col", "array_row"),
)


def coordinate_columns(obs: pd.DataFrame) -> list[str]:
    """The first pair of ``obs`` columns that name spot coordinates, as [x, y]; [] if none.

    Examples
    --------
    >>> coordinate_columns(pd.DataFrame(columns=["cell_type", "x", "y"]))
    ['x', 'y']
    """
    for pair in _COORDINATE_COLUMNS:
        if all(c in obs.columns for c in pair):
            return list(pair)
    return []


def missing_basis(adata: AnnData, basis: str, compute: str) -> KeyError:
    """The error of a ``basis`` not in ``adata.obsm``; ``compute``: how to make an embedding.
    Missing spot coordinates were told "Compute it first, e.g. sc.tl.umap(adata)"."""
    text = (
        f"basis={basis!r} is not in adata.obsm; {did_you_mean(basis, adata.obsm, end=' ')}"
        f"available: {list(adata.obsm)}."
    )
    if basis.removeprefix("X_") != "spatial":
        return KeyError(f"{text} {compute}" if compute else text)
    columns = coordinate_columns(adata.obs)
    found = (
        f"adata.obs holds them as {columns}: adata.obsm['spatial'] = "
        f"adata.obs[{columns!r}].to_numpy()"
        if columns
        else "copy them from the AnnData read with them, e.g. adata.obsm['spatial'] = "
        "spots[adata.obs_names].obsm['spatial'] (a model's copy, model.adata, keeps them)"
    )
    return KeyError(
        f"{text} The spots' coordinates go in adata.obsm['spatial'] (spots x 2), where scanpy "
        f"and squidpy put them; {found}."
    )
