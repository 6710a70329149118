"""Mean/dispersion parameterised NB and ZINB as Pyro distributions.

scvi-tools' own ZINB has no batch shape and cannot sit inside a ``pyro.plate``; Pyro's
distributions can, and give the same log-probability. These helpers translate scVI's
(mean ``mu``, inverse dispersion ``theta``, dropout logits) parameters into them.
"""

from __future__ import annotations

import pyro.distributions as pdist
import torch

_EPS = 1e-8


def _nb_logits(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    # torch's NegativeBinomial has mean total_count * exp(logits); with total_count = theta
    # the mean is mu when logits = log(mu) - log(theta).
    return torch.log(mu + _EPS) - torch.log(theta + _EPS)


def negative_binomial(mu: torch.Tensor, theta: torch.Tensor) -> pdist.NegativeBinomial:
    """Negative binomial with mean ``mu`` and inverse dispersion ``theta``.

    Parameters
    ----------
    mu
        Mean, shape ``(..., n_genes)``.
    theta
        Inverse dispersion, broadcastable to ``mu``.

    Returns
    -------
    A Pyro distribution with batch shape ``mu.shape`` (call ``.to_event(1)`` inside a cell plate).

    Examples
    --------
    >>> import torch
    >>> d = negative_binomial(torch.full((3, 5), 2.0), torch.ones(5))
    >>> d.mean.shape
    torch.Size([3, 5])
    """
    theta = theta.expand_as(mu)
    return pdist.NegativeBinomial(total_count=theta, logits=_nb_logits(mu, theta))


def zero_inflated_negative_binomial(
    mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor
) -> pdist.ZeroInflatedNegativeBinomial:
    """Zero-inflated negative binomial in scVI's parameterisation.

    Parameters
    ----------
    mu
        Mean of the NB component, shape ``(..., n_genes)``.
    theta
        Inverse dispersion, broadcastable to ``mu``.
    zi_logits
        Logits of the probability that a count is a structural zero.

    Returns
    -------
    A Pyro distribution with batch shape ``mu.shape``.

    Examples
    --------
    >>> import torch
    >>> d = zero_inflated_negative_binomial(torch.ones(2, 4), torch.ones(4), torch.zeros(2, 4))
    >>> d.log_prob(torch.zeros(2, 4)).shape
    torch.Size([2, 4])
    """
    theta = theta.expand_as(mu)
    return pdist.ZeroInflatedNegativeBinomial(
        total_count=theta, logits=_nb_logits(mu, theta), gate_logits=zi_logits
    )


def count_distribution(
    likelihood: str, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor | None = None
):
    """Build the Pyro count distribution named by ``likelihood`` (``"zinb"`` or ``"nb"``).

    Examples
    --------
    >>> import torch
    >>> count_distribution("nb", torch.ones(2, 3), torch.ones(3)).batch_shape
    torch.Size([2, 3])
    """
    if likelihood == "zinb":
        return zero_inflated_negative_binomial(mu, theta, zi_logits)
    if likelihood == "nb":
        return negative_binomial(mu, theta)
    raise ValueError(f"likelihood must be 'zinb' or 'nb', got {likelihood!r}.")
