"""Count likelihoods shaped for Pyro plates (a batch shape per cell, genes as the event)."""

from ._counts import count_distribution, negative_binomial, zero_inflated_negative_binomial

__all__ = ["count_distribution", "negative_binomial", "zero_inflated_negative_binomial"]
