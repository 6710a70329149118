"""User-facing model classes."""

from ._zinbvae import ZINBVAE

__all__ = ["ZINBVAE"]
