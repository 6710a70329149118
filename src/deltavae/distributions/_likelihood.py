"""The observation likelihood p(x | z) of every module, chosen by name in one place.

A decoder returns a dict of parameters; :class:`Likelihood` turns it into the Pyro distribution
of the ELBO (a batch shape per cell, for ``pyro.plate``), scvi-tools' torch distribution (with
``scale``, the normalized expression, for scvi-tools' expression API) and the expectation.
Count likelihoods read ``mu``, ``theta``, ``zi_logits`` and ``scale``; ``"normal"`` reads
``out`` (the mean) and ``log_scale``; ``"bernoulli"`` reads ``out`` (the logits).
"""

from __future__ import annotations

import pyro.distributions as pdist
import torch
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.distributions._negative_binomial import log_zinb_positive, torch_lgamma_mps
from torch.distributions import Bernoulli, Distribution, Normal

from ._counts import CountDistribution, count_log_prob

COUNT_LIKELIHOODS = ("zinb", "nb")
LIKELIHOODS = (*COUNT_LIKELIHOODS, "normal", "bernoulli")


class Likelihood:
    """p(x | z) named ``"zinb"``, ``"nb"``, ``"normal"`` or ``"bernoulli"``.

    Parameters
    ----------
    name
        One of ``deltavae.distributions.LIKELIHOODS``.
    allowed
        The names the caller supports (default all).

    Examples
    --------
    >>> import torch
    >>> lik = Likelihood("nb")
    >>> lik.is_count
    True
    >>> params = {"mu": torch.ones(2, 3), "theta": torch.ones(3), "zi_logits": None}
    >>> lik.pyro(params).batch_shape
    torch.Size([2, 3])
    """

    def __init__(self, name: str, allowed: tuple[str, ...] = LIKELIHOODS):
        if name not in allowed:
            raise ValueError(f"likelihood must be one of {allowed}, got {name!r}.")
        self.name = name

    def __repr__(self) -> str:
        return f"Likelihood({self.name!r})"

    @property
    def is_count(self) -> bool:
        """Counts with a library size (``"zinb"``, ``"nb"``)."""
        return self.name in COUNT_LIKELIHOODS

    @property
    def data_kind(self) -> str:
        """The kind of data it fits, ``"counts"``, ``"binary"`` or ``"real"``."""
        if self.is_count:
            return "counts"
        return "binary" if self.name == "bernoulli" else "real"

    def log_library(self, x: torch.Tensor) -> torch.Tensor | None:
        """Observed log library size of each cell of ``x`` (counts only; None otherwise)."""
        if not self.is_count:
            return None
        return torch.log(x.sum(-1, keepdim=True).clamp(min=1.0))

    def _zi_logits(self, params) -> torch.Tensor | None:
        return params["zi_logits"] if self.name == "zinb" else None

    def pyro(self, params: dict[str, torch.Tensor]) -> pdist.TorchDistribution:
        """Pyro distribution of the decoder's ``params``, with batch shape ``(cells, features)``:
        ``.to_event(1)`` in a plate.

        For counts, :class:`~deltavae.distributions.CountDistribution`: scvi-tools' log-density.
        """
        if self.is_count:
            return CountDistribution(params["mu"], params["theta"], self._zi_logits(params))
        if self.name == "normal":
            return pdist.Normal(params["out"], torch.exp(params["log_scale"]))
        # Grey values in [0, 1] (MNIST's pixels) are scored x log p + (1 - x) log(1 - p);
        # Pyro's support check (train(validate_distributions=True)) would refuse them.
        return pdist.Bernoulli(logits=params["out"], validate_args=False)

    def log_prob(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) of each cell, summed over features: the ``.pyro(params)`` site's
        log-density (for counts :func:`~deltavae.distributions.count_log_prob`, the numbers of
        scvi-tools' distributions with a faster gradient)."""
        if self.is_count:
            return count_log_prob(x, params["mu"], params["theta"], self._zi_logits(params)).sum(-1)
        return self.pyro(params).log_prob(x).sum(-1)

    def torch(self, params: dict[str, torch.Tensor]) -> Distribution:
        """scvi-tools' distribution of the decoder's ``params`` for counts (it carries
        ``scale``), torch's otherwise."""
        if self.name == "zinb":
            return ZeroInflatedNegativeBinomial(
                mu=params["mu"],
                theta=params["theta"],
                zi_logits=params["zi_logits"],
                scale=params["scale"],
            )
        if self.name == "nb":
            return NegativeBinomial(mu=params["mu"], theta=params["theta"], scale=params["scale"])
        if self.name == "normal":
            return Normal(params["out"], torch.exp(params["log_scale"]))
        # Grey values in [0, 1], scored as Pyro trains on them (see pyro above).
        return Bernoulli(logits=params["out"], validate_args=False)

    @staticmethod
    def scored(px: Distribution, x: torch.Tensor) -> torch.Tensor:
        """``px.log_prob(x)`` of :meth:`torch`'s distribution ``px``, with the same numbers.
        scvi-tools' ``ZeroInflatedNegativeBinomial`` checks ``x`` against its support at
        every call (``validate_args`` or not): on a GPU a wait for the device per minibatch
        of a read-out. Skipped where torch's checks are off (a read-out's loader, see
        ``model._modes.evaluating``: its data were checked on the host, whole non-negative
        counts, when set up or passed); kept elsewhere (a user's own ``dataloader=``)."""
        lgamma = torch_lgamma_mps if getattr(px, "on_mps", False) else torch.lgamma
        if isinstance(px, ZeroInflatedNegativeBinomial) and not Distribution._validate_args:
            return log_zinb_positive(x, px.mu, px.theta, px.zi_logits, eps=1e-08, lgamma_fn=lgamma)
        return px.log_prob(x)

    def expected(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """E[x | z] from the decoder's ``params``: the decoded mean (counts at the decoded
        library size)."""
        if self.name == "zinb":
            return params["mu"] * (1 - torch.sigmoid(params["zi_logits"]))
        if self.name == "nb":
            # An NB model never trains the decoder's dropout head: its mean is mu.
            return params["mu"]
        if self.name == "bernoulli":
            return torch.sigmoid(params["out"])
        return params["out"]
