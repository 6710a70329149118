"""Datasets: embedded real data, loaders for the shared data folder, synthetic generators.

``pbmc3k`` and ``kang_ifnb`` ship inside the package. The other real loaders read the shared data
folder (``data_dir``, ``$DELTAVAE_DATA`` or ``shared/data`` above the working directory). The
synthetic generators record their true parameters in ``adata.uns["synthetic"]``.

Examples
--------
>>> import deltavae as dv
>>> adata = dv.datasets.pbmc3k()
>>> toy = dv.datasets.synthetic_counts(n_cells=200, n_genes=50, n_clusters=2, seed=0)
"""

from ._deconvolution import convex_mixtures, pseudo_spots
from ._real import (
    kang_harmony,
    kang_ifnb,
    kang_ifnb_8donors,
    kang_scgen,
    mesc,
    mnist,
    mob_spatial,
    pbmc3k,
    spatial_reference_pair,
)
from ._synthetic import synthetic_blobs, synthetic_counts

__all__ = [
    "convex_mixtures",
    "pseudo_spots",
    "kang_harmony",
    "kang_ifnb",
    "kang_ifnb_8donors",
    "kang_scgen",
    "mesc",
    "mnist",
    "mob_spatial",
    "pbmc3k",
    "spatial_reference_pair",
    "synthetic_blobs",
    "synthetic_counts",
]
