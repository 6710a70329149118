"""Encoder heads, cluster posterior, mixture prior and non-count decoders.

Every block conditions on categorical covariates through scvi-tools' ``FCLayers`` and its
``n_cat_list``, so scArches-style query mapping can extend and freeze them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.nn import FCLayers
from torch import nn
from torch.distributions import Normal

_VAR_EPS = 1e-4


def _fc(n_in: int, n_hidden: int, n_cat_list, n_layers: int, dropout_rate: float) -> FCLayers:
    return FCLayers(
        n_in=n_in,
        n_out=n_hidden,
        n_cat_list=n_cat_list,
        n_layers=n_layers,
        n_hidden=n_hidden,
        dropout_rate=dropout_rate,
    )


class GaussianHeads(nn.Module):
    """One trunk over the input, one diagonal-Gaussian head per named latent.

    Examples
    --------
    >>> enc = GaussianHeads(20, {"z": 4, "w": 2}, n_cat_list=[3])
    >>> q = enc(torch.rand(5, 20), torch.zeros(5, 1, dtype=torch.long))
    >>> q["z"].loc.shape, q["w"].loc.shape
    (torch.Size([5, 4]), torch.Size([5, 2]))
    """

    def __init__(
        self,
        n_input: int,
        latent_dims: dict[str, int],
        n_cat_list=None,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
    ):
        super().__init__()
        self.trunk = _fc(n_input, n_hidden, n_cat_list, n_layers, dropout_rate)
        self.mean = nn.ModuleDict({k: nn.Linear(n_hidden, d) for k, d in latent_dims.items()})
        self.log_var = nn.ModuleDict({k: nn.Linear(n_hidden, d) for k, d in latent_dims.items()})

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> dict[str, Normal]:
        h = self.trunk(x, *cat_list)
        return {
            k: Normal(self.mean[k](h), torch.sqrt(torch.exp(self.log_var[k](h)) + _VAR_EPS))
            for k in self.mean
        }


class ClusterHead(nn.Module):
    """q(y | z, c) as logits and q(d | z, c) as Dirichlet concentrations over K clusters.

    Examples
    --------
    >>> head = ClusterHead(4, 3)
    >>> logits, conc = head(torch.randn(5, 4))
    >>> logits.shape, bool((conc > 0).all())
    (torch.Size([5, 3]), True)
    """

    def __init__(
        self,
        n_latent: int,
        n_clusters: int,
        n_cat_list=None,
        n_hidden: int = 128,
        dropout_rate: float = 0.0,
    ):
        super().__init__()
        self.trunk = _fc(n_latent, n_hidden, n_cat_list, 1, dropout_rate)
        self.logits = nn.Linear(n_hidden, n_clusters)
        self.concentration = nn.Linear(n_hidden, n_clusters)

    def forward(self, z: torch.Tensor, *cat_list: torch.Tensor):
        h = self.trunk(z, *cat_list)
        return self.logits(h), F.softplus(self.concentration(h)) + 1e-3


class MixturePrior(nn.Module):
    """p(z | w, y, c): one network maps (w, c) to the means and scales of all K components.

    Examples
    --------
    >>> prior = MixturePrior(2, 4, 3)
    >>> p = prior(torch.randn(5, 2))
    >>> p.loc.shape
    torch.Size([5, 3, 4])
    """

    def __init__(
        self,
        n_latent_w: int,
        n_latent: int,
        n_clusters: int,
        n_cat_list=None,
        n_hidden: int = 128,
    ):
        super().__init__()
        self.n_latent, self.n_clusters = n_latent, n_clusters
        self.trunk = _fc(n_latent_w, n_hidden, n_cat_list, 1, 0.0)
        self.mean = nn.Linear(n_hidden, n_clusters * n_latent)
        self.log_var = nn.Linear(n_hidden, n_clusters * n_latent)

    def forward(self, w: torch.Tensor, *cat_list: torch.Tensor) -> Normal:
        h = self.trunk(w, *cat_list)
        shape = (*w.shape[:-1], self.n_clusters, self.n_latent)
        mean = self.mean(h).view(shape)
        var = torch.exp(self.log_var(h).view(shape).clamp(-8.0, 8.0)) + _VAR_EPS
        return Normal(mean, var.sqrt())


class ObservationDecoder(nn.Module):
    """p(x | z, c) for non-count data: Normal means (and a per-feature scale) or Bernoulli logits.

    Examples
    --------
    >>> dec = ObservationDecoder(4, 10, likelihood="bernoulli")
    >>> dec(torch.randn(5, 4)).shape
    torch.Size([5, 10])
    """

    def __init__(
        self,
        n_latent: int,
        n_output: int,
        likelihood: str,
        n_cat_list=None,
        n_hidden: int = 128,
        n_layers: int = 1,
    ):
        super().__init__()
        self.likelihood = likelihood
        self.trunk = _fc(n_latent, n_hidden, n_cat_list, n_layers, 0.0)
        self.out = nn.Linear(n_hidden, n_output)
        self.log_scale = nn.Parameter(torch.zeros(n_output))

    def forward(self, z: torch.Tensor, *cat_list: torch.Tensor) -> torch.Tensor:
        """Means (Normal) or logits (Bernoulli)."""
        return self.out(self.trunk(z, *cat_list))
