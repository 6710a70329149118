"""Network blocks shared by deltavae modules, built on scvi-tools' ``FCLayers``."""

from ._blocks import ClusterHead, GaussianHeads, MixturePrior, ObservationDecoder

__all__ = ["ClusterHead", "GaussianHeads", "MixturePrior", "ObservationDecoder"]
