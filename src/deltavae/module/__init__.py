"""Pyro modules: the generative model and amortised guide of every deltavae model."""

from ._archetypes import ArchetypesModule
from ._cgmdvae import CGMDVAEModule
from ._imputer import ImputerDeconvolutionModule
from ._imputer_latent import ImputerLatentModule
from ._nmfdeconv import NMFDeconvModule
from ._zinbvae import ZINBVAEModule

__all__ = [
    "ArchetypesModule",
    "CGMDVAEModule",
    "ImputerDeconvolutionModule",
    "ImputerLatentModule",
    "NMFDeconvModule",
    "ZINBVAEModule",
]
