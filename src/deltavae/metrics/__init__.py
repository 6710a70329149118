"""Metrics: cluster agreement with known labels, deconvolution and imputation accuracy,
perturbation R².

Examples
--------
>>> import deltavae as dv
>>> dv.metrics.cluster_scores(["B", "B", "T", "T"], [1, 1, 0, 0])["accuracy"]
1.0
"""

from ._clustering import ari, cluster_scores, clustering_accuracy, nmi, purity
from ._deconvolution import (
    deconvolution_scores,
    jsd,
    matched_profile_correlation,
    per_type_pcc,
    presence_aupr,
    rmse,
    ssim,
)
from ._imputation import imputation_scores
from ._perturbation import log_normalize, mean_expression_r2

__all__ = [
    "ari",
    "cluster_scores",
    "clustering_accuracy",
    "deconvolution_scores",
    "imputation_scores",
    "jsd",
    "log_normalize",
    "matched_profile_correlation",
    "mean_expression_r2",
    "nmi",
    "per_type_pcc",
    "presence_aupr",
    "purity",
    "rmse",
    "ssim",
]
