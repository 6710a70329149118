"""Metrics: agreement of predicted clusters with known labels.

Examples
--------
>>> import deltavae as dv
>>> dv.metrics.cluster_scores(["B", "B", "T", "T"], [1, 1, 0, 0])["accuracy"]
1.0
"""

from ._clustering import ari, cluster_scores, clustering_accuracy, nmi, purity

__all__ = ["ari", "cluster_scores", "clustering_accuracy", "nmi", "purity"]
