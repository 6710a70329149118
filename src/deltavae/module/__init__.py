"""Pyro modules: the generative model and amortised guide of every deltavae model."""

from ._cgmdvae import CGMDVAEModule
from ._zinbvae import ZINBVAEModule

__all__ = ["CGMDVAEModule", "ZINBVAEModule"]
