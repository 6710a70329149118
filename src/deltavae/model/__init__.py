"""User-facing model classes."""

from ._cgmdvae import CGMDVAE
from ._zinbvae import ZINBVAE

__all__ = ["CGMDVAE", "ZINBVAE"]
