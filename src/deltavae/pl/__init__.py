"""Plots: training curves, embeddings coloured by labels, cluster-versus-label composition.

Every function takes ``ax``, ``show`` and ``save`` (a PNG path, written at dpi 150) as scanpy's
plotting functions do, and returns the Axes when the figure is not shown.

Examples
--------
>>> import deltavae as dv
>>> dv.pl.history(vae, save="elbo.png")  # doctest: +SKIP
>>> dv.pl.embedding(adata, color="cell_type", show=False)  # doctest: +SKIP
>>> dv.pl.cluster_composition(adata, "leiden", "cell_type", show=False)  # doctest: +SKIP
"""

from ._plots import cluster_composition, embedding, history
from ._spatial import archetype_elbow, spatial_proportions

__all__ = [
    "archetype_elbow",
    "cluster_composition",
    "embedding",
    "history",
    "spatial_proportions",
]
