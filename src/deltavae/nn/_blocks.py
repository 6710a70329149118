"""Encoder heads, cluster posterior, mixture prior and non-count decoders.

Every block conditions on categorical covariates through scvi-tools' ``FCLayers`` and its
``n_cat_list``, so scArches-style query mapping can extend and freeze them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from scvi.nn import FCLayers
from torch import nn
from torch.distributions import Distribution, Independent, Normal, constraints

_VAR_EPS = 1e-4
#: Smallest standard deviation of a Normal likelihood's feature (added to exp(log_scale)). A
#: feature equal in every cell (a gene zero everywhere, or left at 0 by sc.pp.scale) has a
#: density without bound as its scale shrinks: its log_scale ran off (-2 after 400 epochs on
#: blobs with four zero columns, and still falling), the ELBO with it, and
#: NotConvergedWarning asked for more epochs, which only ran it further.
MIN_SCALE = 1e-3


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

    Called with the input and one tensor of codes per categorical covariate, it returns a
    dict of :class:`~torch.distributions.Normal`, one per name of ``latent_dims``.

    Parameters
    ----------
    n_input
        Features of the input.
    latent_dims
        Name to dimensions of each latent, e.g. ``{"z": 10, "w": 5}``.
    n_cat_list
        Categories of each categorical covariate (scvi-tools' ``FCLayers``), or None.
    n_hidden
        Units per hidden layer of the trunk.
    n_layers
        Hidden layers of the trunk.
    dropout_rate
        Dropout rate of the trunk's hidden layers.

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
        n_cat_list: Sequence[int] | None = None,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
    ):
        super().__init__()
        self.trunk = _fc(n_input, n_hidden, n_cat_list, n_layers, dropout_rate)
        self.mean = nn.ModuleDict({k: nn.Linear(n_hidden, d) for k, d in latent_dims.items()})
        self.log_var = nn.ModuleDict({k: nn.Linear(n_hidden, d) for k, d in latent_dims.items()})

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> dict[str, Normal]:
        """q of every latent given ``x`` (cells x ``n_input``) and one tensor of codes per
        categorical covariate (``cat_list``): a dict of diagonal Normals, cells x dimensions."""
        h = self.trunk(x, *cat_list)
        return {
            k: Normal(self.mean[k](h), torch.sqrt(torch.exp(self.log_var[k](h)) + _VAR_EPS))
            for k in self.mean
        }


class ClusterHead(nn.Module):
    """q(y | z, c) as logits and q(d | z, c) as Dirichlet concentrations over K clusters.

    Called with z and one tensor of codes per categorical covariate, it returns
    ``(logits, concentrations)``, each cells x ``n_clusters``.

    Parameters
    ----------
    n_latent
        Dimensions of z, the input.
    n_clusters
        Number of clusters K.
    n_hidden
        Units of the one hidden layer.
    n_cat_list
        Categories of each categorical covariate (scvi-tools' ``FCLayers``), or None.
    dropout_rate
        Dropout rate of the hidden layer.

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
        n_hidden: int = 128,
        n_cat_list: Sequence[int] | None = None,
        dropout_rate: float = 0.0,
    ):
        super().__init__()
        self.trunk = _fc(n_latent, n_hidden, n_cat_list, 1, dropout_rate)
        self.logits = nn.Linear(n_hidden, n_clusters)
        self.concentration = nn.Linear(n_hidden, n_clusters)

    def forward(self, z: torch.Tensor, *cat_list: torch.Tensor):
        """``(logits, concentrations)`` of q(y | z, c) and q(d | z, c), each cells x
        ``n_clusters``, for z and one tensor of codes per categorical covariate (``cat_list``);
        the concentrations are over 1e-3."""
        h = self.trunk(z, *cat_list)
        return self.logits(h), F.softplus(self.concentration(h)) + 1e-3


class CorrelatedNormal(Distribution):
    """A Gaussian with covariance D U U^T D: D = diag(scale), U unit lower-triangular.

    ``unmix`` holds U^-1 (also unit lower-triangular), so the density needs one matrix product,
    no solve: ``log N(z) = -|U^-1 ((z - loc) / scale)|^2 / 2 - sum(log scale) - d log(2 pi) / 2``.
    ``scale`` may vary per cell while ``unmix`` is shared by broadcasting; with U = I this is
    the diagonal Normal. Event shape ``(d,)``.

    Parameters
    ----------
    loc
        Means, ``(..., d)``.
    scale
        D's diagonal, positive, broadcast against ``loc``.
    unmix
        U^-1, unit lower-triangular, ``(d, d)`` or one per component ``(K, d, d)``.
    validate_args
        As for every torch :class:`~torch.distributions.Distribution`.

    Examples
    --------
    >>> p = CorrelatedNormal(torch.zeros(2), torch.ones(2), torch.tensor([[1.0, 0.0], [-0.5, 1.0]]))
    >>> p.log_prob(torch.zeros(2)).item() == Normal(0.0, 1.0).log_prob(torch.zeros(2)).sum().item()
    True
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, scale, unmix, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.unmix = unmix
        batch_shape = self.loc.shape[:-1]
        super().__init__(batch_shape, self.loc.shape[-1:], validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """The diagonal of the covariance, scale^2 times the row sums of U^2."""
        eye = torch.eye(self.unmix.shape[-1], dtype=self.unmix.dtype, device=self.unmix.device)
        mix = torch.linalg.solve_triangular(self.unmix, eye, upper=False, unitriangular=True)
        return self.scale.pow(2) * mix.pow(2).sum(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r = (value - self.loc) / self.scale
        if self.unmix.dim() == 3:  # one matrix per component: K batched (cells x d) products
            u = torch.einsum("...kj,kij->...ki", r, self.unmix)
        else:
            u = torch.matmul(self.unmix, r.unsqueeze(-1)).squeeze(-1)
        d = self.loc.shape[-1]
        return -0.5 * u.pow(2).sum(-1) - self.scale.log().sum(-1) - 0.5 * d * math.log(2 * math.pi)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return self.from_noise(torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device))

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """The draw made of standard normal noise ``eps`` (broadcast against the batch)."""
        shape = torch.broadcast_shapes(eps.shape, self.loc.shape)
        unmix = self.unmix.expand(*shape[:-1], *self.unmix.shape[-2:])
        eps = eps.expand(shape).unsqueeze(-1)
        v = torch.linalg.solve_triangular(unmix, eps, upper=False, unitriangular=True)
        return self.loc + self.scale * v.squeeze(-1)


class MixturePrior(nn.Module):
    """p(z | w, y, c): one network maps (w, c) to the means and scales of all K components.

    ``covariance="full"`` (the default) gives each component a learned correlation, shared
    across w and c: covariance D_y(w, c) U_y U_y^T D_y(w, c) with U_y unit
    lower-triangular (see :class:`CorrelatedNormal`), which lets a component lie along any
    direction of z; ``"diag"`` gives axis-aligned components. Both return a distribution with
    event shape ``(n_latent,)``.

    Parameters
    ----------
    n_latent_w
        Dimensions of w, the input.
    n_latent
        Dimensions of z.
    n_clusters
        Number of components K.
    n_cat_list
        Categories of each categorical covariate (scvi-tools' ``FCLayers``), or None.
    n_hidden
        Units of the one hidden layer.
    covariance
        ``"full"`` or ``"diag"``.

    Examples
    --------
    >>> prior = MixturePrior(2, 4, 3)
    >>> p = prior(torch.randn(5, 2))
    >>> p.mean.shape, p.log_prob(torch.zeros(5, 1, 4)).shape
    (torch.Size([5, 3, 4]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        n_latent_w: int,
        n_latent: int,
        n_clusters: int,
        n_cat_list: Sequence[int] | None = None,
        n_hidden: int = 128,
        covariance: str = "full",
    ):
        super().__init__()
        if covariance not in ("diag", "full"):
            raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}.")
        self.n_latent, self.n_clusters = n_latent, n_clusters
        self.covariance = covariance
        self.trunk = _fc(n_latent_w, n_hidden, n_cat_list, 1, 0.0)
        self.mean = nn.Linear(n_hidden, n_clusters * n_latent)
        self.log_var = nn.Linear(n_hidden, n_clusters * n_latent)
        if covariance == "full":
            # Strictly lower part of U_y^-1; zero means uncorrelated components.
            self.unmix_lower = nn.Parameter(torch.zeros(n_clusters, n_latent, n_latent))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A diagonal model (or one saved before correlations existed) is the full model with
        # uncorrelated components: load it with U = I.
        key = prefix + "unmix_lower"
        if self.covariance == "full" and key not in state_dict:
            state_dict[key] = torch.zeros_like(self.unmix_lower)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def unmix(self) -> torch.Tensor:
        """U_y^-1 of every component, ``(K, n_latent, n_latent)``."""
        lower = self.unmix_lower
        eye = torch.eye(self.n_latent, dtype=lower.dtype, device=lower.device)
        return torch.tril(lower, diagonal=-1) + eye

    def forward(self, w: torch.Tensor, *cat_list: torch.Tensor) -> Distribution:
        """p(z | w, y, c) for every component y: batch shape cells x ``n_clusters``, event
        ``n_latent`` (a :class:`CorrelatedNormal` for ``covariance="full"``, independent Normals
        for ``"diag"``), given w and one tensor of codes per categorical covariate."""
        h = self.trunk(w, *cat_list)
        shape = (*w.shape[:-1], self.n_clusters, self.n_latent)
        mean = self.mean(h).view(shape)
        scale = torch.sqrt(torch.exp(self.log_var(h).view(shape).clamp(-8.0, 8.0)) + _VAR_EPS)
        if self.covariance == "full":
            return CorrelatedNormal(mean, scale, self.unmix())
        return Independent(Normal(mean, scale), 1)


class ObservationDecoder(nn.Module):
    """p(x | z, c) for non-count data: Normal means (and a per-feature scale) or Bernoulli logits.

    Parameters
    ----------
    n_latent
        Dimensions of z, the input.
    n_output
        Features of the data.
    likelihood
        ``"normal"`` (means, with a learned scale per feature) or ``"bernoulli"`` (logits).
    n_cat_list
        Categories of each categorical covariate (scvi-tools' ``FCLayers``), or None.
    n_hidden
        Units per hidden layer.
    n_layers
        Hidden layers.

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
        likelihood: Literal["normal", "bernoulli"],
        n_cat_list: Sequence[int] | None = None,
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

    def bounded_log_scale(self) -> torch.Tensor:
        """log(exp(log_scale) + ``MIN_SCALE``): the Normal's log standard deviations,
        each at least log(MIN_SCALE), so the likelihood is bounded.

        Examples
        --------
        >>> dec = ObservationDecoder(2, 3, likelihood="normal")
        >>> with torch.no_grad():
        ...     _ = dec.log_scale.fill_(-50.0)
        >>> bool(torch.allclose(dec.bounded_log_scale().exp(), torch.full((3,), MIN_SCALE)))
        True
        """
        # Filled on the device: new_tensor(MIN_SCALE) would copy from the host each step.
        return torch.logaddexp(self.log_scale, torch.full_like(self.log_scale, math.log(MIN_SCALE)))
