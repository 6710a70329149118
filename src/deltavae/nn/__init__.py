"""Network blocks shared by deltavae modules, built on scvi-tools' ``FCLayers``."""

from ._blocks import (
    ClusterHead,
    CorrelatedNormal,
    GaussianHeads,
    MixturePrior,
    ObservationDecoder,
)

__all__ = [
    "ClusterHead",
    "CorrelatedNormal",
    "GaussianHeads",
    "MixturePrior",
    "ObservationDecoder",
]
