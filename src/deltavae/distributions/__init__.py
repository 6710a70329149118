"""Observation likelihoods: one :class:`Likelihood` for every module, and count likelihoods
shaped for Pyro plates (a batch shape per cell, genes as the event)."""

from ._counts import (
    CountDistribution,
    count_distribution,
    count_log_prob,
    negative_binomial,
    round_counts,
    zero_inflated_negative_binomial,
)
from ._likelihood import COUNT_LIKELIHOODS, LIKELIHOODS, Likelihood

__all__ = [
    "COUNT_LIKELIHOODS",
    "CountDistribution",
    "LIKELIHOODS",
    "Likelihood",
    "count_distribution",
    "count_log_prob",
    "negative_binomial",
    "round_counts",
    "zero_inflated_negative_binomial",
]
