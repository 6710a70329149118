"""Mean/dispersion parameterised NB and ZINB as Pyro distributions.

scvi-tools' own ZINB has no batch shape and cannot sit inside a ``pyro.plate``; Pyro's
distributions can, and give the same log-probability. These helpers translate scVI's
(mean ``mu``, inverse dispersion ``theta``, dropout logits) parameters into them.

:func:`count_log_prob` is scvi-tools' NB / ZINB log-density (``log_nb_positive``,
``log_zinb_positive``) with the same numbers, computed faster: one autograd node with a
hand-written backward pass, and the log-gamma terms (and their digamma gradients) evaluated
only where a count is not zero, where they are not identically 0 (on the CPU; a GPU evaluates
them everywhere, which needs no host synchronisation). :class:`CountDistribution` puts it in a
Pyro distribution, the observation site of the VAEs.
"""

from __future__ import annotations

import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.distributions import constraints

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


class _ZeroInflatedNegativeBinomial(pdist.ZeroInflatedNegativeBinomial):
    """Pyro's ZINB without its check that ``probs = sigmoid(logits)`` is below 1: a float32
    rounds it to 1 once ``mu / theta`` passes ~2e7 (``mu`` 1e4 at ``theta`` 1e-4), and every
    draw, mean or variance of a valid NB raised. The logits are checked (real) instead."""

    arg_constraints = {
        k: c for k, c in pdist.ZeroInflatedNegativeBinomial.arg_constraints.items() if k != "probs"
    }


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
    return _ZeroInflatedNegativeBinomial(
        total_count=theta, logits=_nb_logits(mu, theta), gate_logits=zi_logits
    )


def count_distribution(
    likelihood: str, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor | None = None
):
    """Build the Pyro count distribution named by ``likelihood`` (``"zinb"`` or ``"nb"``).

    Parameters
    ----------
    likelihood
        ``"zinb"`` or ``"nb"``.
    mu
        Means, cells x genes.
    theta
        Inverse dispersions, broadcast against ``mu``.
    zi_logits
        Logits of the zero inflation (``"zinb"`` only; ignored for ``"nb"``).

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


# ----------------------------------------------------------------------------- fused log-density
def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to the shape of the input it came from."""
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    dims = [*range(lead), *(lead + i for i, n in enumerate(shape) if n == 1)]
    return grad.sum(dims, keepdim=True).reshape(shape)


def _add_gamma_terms(res, x, theta_full, nonzero, sparse: bool):
    """``res + lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` where ``nonzero`` (``res``
    elsewhere, where these terms are 0), added in scvi-tools' order; and what the backward pass
    needs to add ``digamma(x + theta) - digamma(theta)`` there."""
    if not sparse:
        full = res + torch.lgamma(x + theta_full) - torch.lgamma(theta_full) - torch.lgamma(x + 1)
        return torch.where(nonzero, full, res), None
    idx = nonzero.nonzero(as_tuple=True)
    x_nz, theta_nz = x[idx], theta_full[idx]
    full = res[idx] + torch.lgamma(x_nz + theta_nz) - torch.lgamma(theta_nz)
    return res.index_put_(idx, full - torch.lgamma(x_nz + 1)), (idx, x_nz, theta_nz)


class _CountLogProb(torch.autograd.Function):
    """scvi-tools' ``log_nb_positive`` / ``log_zinb_positive`` as one autograd node.

    A ZINB count is "zero" where ``x < 1e-8`` and "non-zero" elsewhere (scvi-tools gives 0
    to counts of exactly 1e-8, which no count is).
    """

    @staticmethod
    def forward(ctx, x, mu, theta, zi_logits, sparse: bool):
        # In-place steps on fresh temporaries: fewer allocations, the same operations in
        # scvi-tools' order (so the same bits).
        theta_full = theta.expand_as(mu)
        log_theta_mu = (theta_full + mu).add_(_EPS).log_()
        log_ratio = torch.log(theta + _EPS) - log_theta_mu
        nb_zero = theta * log_ratio  # log NB(0 | mu, theta)
        x_term = (mu + _EPS).log_().sub_(log_theta_mu).mul_(x)
        del log_theta_mu
        if zi_logits is None:
            nonzero = x != 0
            res, nz = _add_gamma_terms(nb_zero.add_(x_term), x, theta_full, nonzero, sparse)
            ctx.save_for_backward(x, mu, theta, log_ratio)
        else:
            zero = x < _EPS
            softplus_pi = F.softplus(-zi_logits)
            pi_theta_log = nb_zero.sub_(zi_logits)
            case_zero = F.softplus(pi_theta_log).sub_(softplus_pi)
            case_non_zero = (pi_theta_log - softplus_pi).add_(x_term)
            case_non_zero, nz = _add_gamma_terms(case_non_zero, x, theta_full, ~zero, sparse)
            res = torch.where(zero, case_zero, case_non_zero)
            ctx.save_for_backward(x, mu, theta, log_ratio, zi_logits, pi_theta_log, zero)
        ctx.nz = nz
        return res

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, mu, theta, log_ratio, *zi = ctx.saved_tensors
        theta_full = theta.expand_as(mu)
        inv_tm = (theta_full + mu).add_(_EPS).reciprocal_()
        theta_inv_tm = theta_full * inv_tm
        # log NB(0) = theta log(theta / (theta + mu)): its derivatives in theta and in mu
        d_zero_theta = (log_ratio + theta / (theta + _EPS)).sub_(theta_inv_tm)
        # the x log(mu / (theta + mu)) term's (x is 0 where it is absent)
        d_mu = (mu + _EPS).reciprocal_().sub_(inv_tm).mul_(x)
        d_theta = inv_tm.mul_(x)
        if zi:
            zi_logits, pi_theta_log, zero = zi
            # weight of log NB(0) in the log-density: sigmoid(pi_theta_log) at a zero, else 1
            w = torch.sigmoid(pi_theta_log).masked_fill_(~zero, 1.0)
            grad_pi = torch.sigmoid(-zi_logits).sub_(w).mul_(grad)
            d_mu = d_mu.sub_(theta_inv_tm.mul_(w))
            d_theta = d_zero_theta.mul_(w).sub_(d_theta)
            nonzero = None if ctx.nz is not None else ~zero
        else:
            grad_pi = None
            d_mu = d_mu.sub_(theta_inv_tm)
            d_theta = d_zero_theta.sub_(d_theta)
            nonzero = None if ctx.nz is not None else x != 0
        grad_mu, grad_theta = d_mu.mul_(grad), d_theta.mul_(grad)
        if ctx.nz is None:
            digammas = torch.digamma(x + theta_full) - torch.digamma(theta_full)
            grad_theta = grad_theta + grad * torch.where(nonzero, digammas, 0.0)
        else:
            idx, x_v, theta_v = ctx.nz
            digammas = torch.digamma(x_v + theta_v) - torch.digamma(theta_v)
            grad_theta = grad_theta.index_put_(idx, grad[idx] * digammas, accumulate=True)
        ctx.nz = None
        return None, grad_mu, _sum_to(grad_theta, theta.shape), grad_pi, None


def sparse_by_default(device: torch.device) -> bool:
    """Whether :func:`count_log_prob` evaluates the log-gamma terms at the non-zero counts
    alone on ``device``: on the CPU. On a GPU the dense terms cost less than finding the
    non-zeros, which makes the host wait for the device (``nonzero``)."""
    return device.type == "cpu"


def count_log_prob(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    zi_logits: torch.Tensor | None = None,
    sparse: bool | None = None,
) -> torch.Tensor:
    """Log-density of counts under NB(``mu``, ``theta``), or ZINB with ``zi_logits``.

    The same numbers as scvi-tools' ``NegativeBinomial`` and ``ZeroInflatedNegativeBinomial``
    ``log_prob`` (``eps=1e-8`` where they put it), with a faster gradient.

    Parameters
    ----------
    x
        Counts, shape ``(..., n_genes)``.
    mu, theta, zi_logits
        Mean, inverse dispersion (broadcastable to ``mu``, e.g. ``(n_genes,)``) and dropout
        logits (``None`` for the NB).
    sparse
        Evaluate the log-gamma terms only at non-zero counts (default: on the CPU).

    Returns
    -------
    The log-density of each count, shape ``mu.shape``.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0, 3.0]])
    >>> count_log_prob(x, torch.ones(1, 2), torch.ones(2)).round(decimals=4)
    tensor([[-0.6931, -2.7726]])
    """
    if sparse is None:
        sparse = sparse_by_default(mu.device)
    # At least float32: under mixed precision (autocast) the dropout logits come out of a
    # linear layer in bfloat16 or float16, too coarse for log-gamma terms and counts.
    dtype = torch.promote_types(mu.dtype, torch.float32)
    mu, theta, x = mu.to(dtype), theta.to(dtype), x.to(dtype)
    if zi_logits is not None:
        x, mu, zi_logits = torch.broadcast_tensors(x, mu, zi_logits.to(dtype))
    else:
        x, mu = torch.broadcast_tensors(x, mu)
    return _CountLogProb.apply(x, mu, theta, zi_logits, sparse)


class CountDistribution(pdist.TorchDistribution):
    """NB (or ZINB with ``zi_logits``) whose ``log_prob`` is
    :func:`~deltavae.distributions.count_log_prob`.

    Batch shape ``mu.shape``: call ``.to_event(1)`` inside a cell plate. Draws are Pyro's
    (:func:`negative_binomial`, :func:`zero_inflated_negative_binomial`); mean and variance
    scvi-tools' formulas in ``mu``, ``theta`` and ``zi_logits``.
    ``validate_args=True`` checks the parameters (``mu >= 0``, ``theta > 0``) and that scored
    values are whole counts of 0 and above; without it nothing is checked, whatever Pyro's
    validation setting.

    Examples
    --------
    >>> import torch
    >>> d = CountDistribution(torch.ones(2, 3), torch.ones(3), torch.zeros(2, 3))
    >>> d.batch_shape, d.log_prob(torch.zeros(2, 3)).shape
    (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    arg_constraints = {"mu": constraints.nonnegative, "theta": constraints.positive}
    support = constraints.nonnegative_integer

    def __init__(self, mu, theta, zi_logits=None, validate_args=None):
        self.mu, self.theta, self.zi_logits = mu, theta, zi_logits
        # Checked only on request (validate_args=True), not by Pyro's default: the models
        # check their data once, up front, and on a GPU each check waits for the device.
        super().__init__(mu.shape, torch.Size(), validate_args=bool(validate_args))

    def _pyro_dist(self):
        if self.zi_logits is None:
            return negative_binomial(self.mu, self.theta)
        return zero_inflated_negative_binomial(self.mu, self.theta, self.zi_logits)

    def expand(self, batch_shape, _instance=None):
        """The same distribution with its parameters broadcast to ``batch_shape``."""
        shape = torch.Size(batch_shape)
        zi = None if self.zi_logits is None else self.zi_logits.expand(shape)
        return CountDistribution(self.mu.expand(shape), self.theta, zi, self._validate_args)

    def log_prob(self, value):
        """scvi-tools' NB / ZINB log-density of ``value`` (see :func:`count_log_prob`)."""
        if self._validate_args:  # a negative count scored as a ZINB zero, a fraction as a count
            self._validate_sample(value)
        return count_log_prob(value, self.mu, self.theta, self.zi_logits)

    def sample(self, sample_shape=()):
        """Draws from Pyro's NB / ZINB with these parameters."""
        return self._pyro_dist().sample(sample_shape)

    @property
    def mean(self):
        """Expected count as in scvi-tools, ``mu`` times ``1 - sigmoid(zi_logits)`` for the ZINB."""
        if self.zi_logits is None:
            return self.mu
        return self.mu * torch.sigmoid(-self.zi_logits)

    @property
    def variance(self):
        """Variance of a count, as in scvi-tools, ``mu + mu^2 / theta`` for the NB, and
        ``(1 - pi) (mu + mu^2 / theta + pi mu^2)`` with ``pi = sigmoid(zi_logits)`` for the
        ZINB (Pyro's ``E[x^2] - E[x]^2`` lost digits to cancellation in float32)."""
        mu = self.mu
        nb = mu + mu * mu / self.theta
        if self.zi_logits is None:
            return nb
        return torch.sigmoid(-self.zi_logits) * (nb + torch.sigmoid(self.zi_logits) * mu * mu)


def round_counts(mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Whole counts with expectation ``mean``: each value rounded down or up at random, up with
    probability its fractional part (stochastic rounding). Negative means give 0. The draws
    come from ``generator`` (on ``mean``'s device) where given, else from torch's.

    The residual translations (:meth:`deltavae.module.CGMDVAEModule.translate`,
    :meth:`deltavae.model.CGMDVAE.translate`) predict a cell's counts as its observed counts
    plus a change; rounded this way, the counts keep every observed count that the change
    does not move, and add the least noise any whole counts with the right expectation can
    (a variance of at most 1/4 per gene). The Poisson additions and binomial thinning used
    before (up to 2026-12-01) added a variance as large as the change itself, and scored the
    change from control lower on Kang's held-out cell types (benchmarks/README.md, Numbers
    behind the defaults, D13).

    Examples
    --------
    >>> round_counts(torch.tensor([[0.0, 4.0, 2.0, -1.0]])).tolist()
    [[0.0, 4.0, 2.0, 0.0]]
    >>> draws = round_counts(torch.full((10000,), 2.3))
    >>> sorted(set(draws.tolist())), round(float(draws.mean()), 1)
    ([2.0, 3.0], 2.3)
    """
    mean = mean.clamp(min=0.0)
    low = mean.floor()
    return low + torch.bernoulli(mean - low, generator=generator)
