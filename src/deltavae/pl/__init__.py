"""Plots: training curves, embeddings, cluster composition and uncertainty, spatial proportions,
the archetype elbow and predicted-versus-observed expression.

Every plot takes ``show`` and ``save`` as scanpy's plotting functions do (``save=True`` or
``save="_name.png"`` writes into ``scanpy.settings.figdir``; a :class:`pathlib.Path` is the file
itself), every plot takes ``ax`` (those of several panels when they draw one), ``title`` and
``figsize`` (default ``rcParams["figure.figsize"]`` where set, as ``sc.set_figure_params`` sets
it), and all return the Axes when the figure is not shown, or the Figure with
``return_fig=True``. :func:`cluster_entropy` draws nothing: it returns the
per-cell values :func:`cluster_probabilities` colours by.

Examples
--------
>>> import deltavae as dv
>>> dv.pl.history(vae, save="_pbmc.png")  # doctest: +SKIP
>>> dv.pl.embedding(adata, color="cell_type", show=False)  # doctest: +SKIP
>>> dv.pl.cluster_composition(adata, "leiden", "cell_type", show=False)  # doctest: +SKIP
>>> dv.pl.cluster_probabilities(adata, show=False)  # doctest: +SKIP
>>> dv.pl.perturbation_scatter(predicted, observed, show=False)  # doctest: +SKIP
"""

from ._analysis import cluster_entropy, cluster_probabilities, perturbation_scatter
from ._history import history
from ._plots import cluster_composition, embedding
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
