"""User-facing model classes."""

from ._archetypes import Archetypes
from ._cgmdvae import CGMDVAE
from ._imputer import SpatialImputer
from ._nmfdeconv import NMFDeconv
from ._zinbvae import ZINBVAE

__all__ = ["Archetypes", "CGMDVAE", "NMFDeconv", "SpatialImputer", "ZINBVAE"]
