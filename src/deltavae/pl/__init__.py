"""Plots: training curves, embeddings, cluster composition and uncertainty, spatial proportions,
the archetype elbow and predicted-versus-observed expression.

Every function takes ``ax``, ``show`` and ``save`` (a PNG path, written at dpi 150) as scanpy's
plotting functions do, and returns the Axes when the figure is not shown.

Examples
--------
>>> import deltavae as dv
>>> dv.pl.history(vae, save="elbo.png")  # doctest: +SKIP
>>> dv.pl.embedding(adata, color="cell_type", show=False)  # doctest: +SKIP
>>> dv.pl.cluster_composition(adata, "leiden", "cell_type", show=False)  # doctest: +SKIP
>>> dv.pl.cluster_probabilities(adata, show=False)  # doctest: +SKIP
>>> dv.pl.perturbation_scatter(predicted, observed, show=False)  # doctest: +SKIP
"""

from ._analysis import cluster_entropy, cluster_probabilities, perturbation_scatter
from ._plots import cluster_composition, embedding, history
from ._spatial import archetype_elbow, spatial_proportions

__all__ = [
    "archetype_elbow",
    "cluster_composition",
    "cluster_entropy",
    "cluster_probabilities",
    "embedding",
    "history",
    "perturbation_scatter",
    "spatial_proportions",
]
