"""Archetypal analysis of spot counts, Y = W B X, as a Pyro program.

With X the normalised expression profiles (rows sum to 1) of a fixed set of candidate spots
(every spot of a small data set; a bounded k-means++ subset of a large one):

    A = softmax(B_logits) X              archetypes x genes: each archetype is a convex
                                         combination of candidate spots (rows of softmax(B)
                                         on the simplex)
    w_s ~ Dirichlet(prior_concentration)  each spot's weights over the archetypes
    x_sg ~ NB(mean = l_s * (w_s A)_g, inverse dispersion theta_g),  l_s = sum_g x_sg

With several samples (slides fitted together), the archetypes are shared and each sample j
scales each gene by a technical factor: the mean becomes l_s * normalise((w_s A)_g *
exp(gamma_jg)), with gamma centred over the samples (a gene's average level belongs to the
archetypes) and a Normal(0, technology_sd) prior; the encoder also reads the sample. The
candidate profiles enter A freed of their own sample's factors (normalise(x_c exp(-gamma_j(c)))).

Guide: an amortised logistic-normal q(w_s | x_s): scvi-tools' ``Encoder`` on log1p counts per
10,000 (as NMFDeconv's encoder reads them: the weights are of the spot's profile, not its
depth) gives a Normal in K - 1 dimensions, mapped onto the simplex by stick-breaking; new
spots are mapped by the same encoder. B is a point estimate (a parameter), started from
classical archetypal analysis (Cutler and Breiman's alternating constrained least squares,
:func:`deltavae.model._archetypal_analysis.convex_archetypes`).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import StickBreakingTransform
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import LossOutput, auto_move_data
from scvi.nn import Encoder

from ..distributions import CountDistribution, count_log_prob
from ._base import DeltaPyroModule
from ._spot_encoder import log_cp10k
from ._zinbvae import _undrawn

_X = REGISTRY_KEYS.X_KEY
_SAMPLE = REGISTRY_KEYS.BATCH_KEY


def _log_offsets(x: torch.Tensor) -> torch.Tensor:
    """log(n), ..., log(1) for ``x``'s last dimension n: the shifts of stick-breaking.

    torch builds them with a float ``cumsum``, for which CUDA has no deterministic kernel:
    under ``torch.use_deterministic_algorithms(True)`` (what README names for GPU training
    that repeats bit for bit) it raises. The same values from ``arange``.
    """
    n = x.shape[-1]
    return torch.arange(n, 0, -1, dtype=x.dtype, device=x.device).log()


def _running_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.cumsum(-1)``; under deterministic algorithms, where CUDA refuses a float cumsum, a
    sum column after column (a few columns: one per archetype)."""
    if not torch.are_deterministic_algorithms_enabled():
        return x.cumsum(-1)
    columns = list(x.unbind(-1))
    for j in range(1, len(columns)):
        columns[j] = columns[j - 1] + columns[j]
    return torch.stack(columns, -1)


class StickBreaking(StickBreakingTransform):
    """torch's ``StickBreakingTransform``; under deterministic algorithms, where CUDA refuses
    the float ``cumsum`` torch's map takes its shifts from, the same map and Jacobian from
    :func:`log_stick_breaking` (in log space, equal to torch's to rounding)."""

    def _call(self, x):
        if not torch.are_deterministic_algorithms_enabled():
            return super()._call(x)
        return log_stick_breaking(x)[0].exp()

    def log_abs_det_jacobian(self, x, y):
        if not torch.are_deterministic_algorithms_enabled():
            return super().log_abs_det_jacobian(x, y)
        return log_stick_breaking(x)[1]


def log_stick_breaking(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logarithms of the weights torch's ``StickBreakingTransform`` maps ``u`` to (one
    more than ``u``'s last dimension, on the simplex) and the log absolute determinant of the
    map's Jacobian at ``u``, both computed in log space from ``u``.

    Pyro's log density of a draw inverts the map from the weights, through ``1 - cumsum``,
    which cancels once the first weights sum to nearly 1 (a spot close to one archetype): the
    point recovered then lies far from the draw, and at a small posterior scale the loss
    becomes huge or NaN. On an H200 that stopped gpu_check's Archetypes at epoch 64.

    Examples
    --------
    >>> u = torch.tensor([[0.3, -1.0, 2.0]])
    >>> log_w, _ = log_stick_breaking(u)
    >>> bool(torch.allclose(log_w.exp(), StickBreakingTransform()(u)))
    True
    """
    z = u - _log_offsets(u)
    left = F.logsigmoid(-z)  # log of the share of the stick each break leaves
    before = _running_sum(left)
    log_w = torch.cat([F.logsigmoid(z) + F.pad(before[..., :-1], (1, 0)), before[..., -1:]], -1)
    return log_w, (left + log_w[..., :-1]).sum(-1)


class ArchetypesModule(DeltaPyroModule):
    """Pyro module of :class:`deltavae.model.Archetypes`.

    Parameters
    ----------
    candidate_profiles
        Candidate spots x genes normalised profiles (rows sum to 1); archetypes combine them.
        Saved with the module (a bounded number of spots).
    init_B
        Archetypes x candidates starting weights (rows on the simplex).
    mean_profile
        The mean normalised profile of the spots (default: of the candidates).
    n_hidden, n_layers, dropout_rate
        Encoder sizes, as in scVI.
    prior_concentration
        Symmetric Dirichlet concentration of the weights.
    n_samples
        Number of samples (slides) sharing the archetypes; 1 fits no technical factor.
    technology_sd
        Prior standard deviation of a sample's log technical factor of a gene.
    candidate_samples
        Sample (0 to ``n_samples - 1``) of each candidate spot, whose technical factors are
        taken out of its profile; default all of sample 0.
    cp10k_input
        The encoder reads log1p counts per 10,000, so that a spot's weights follow its
        profile and not its depth (``False``: log1p counts, as models saved before read them;
        their encoder gave the olfactory-bulb spots thinned to a fifth of their depth another
        dominant archetype in 14 to 19% of them, against 8 to 10% on counts per 10,000).

    Examples
    --------
    >>> import torch
    >>> profiles = torch.softmax(torch.randn(20, 8), dim=-1)
    >>> module = ArchetypesModule(profiles, torch.softmax(torch.randn(3, 20), dim=-1))
    >>> module.archetype_profiles().shape
    torch.Size([3, 8])
    """

    _pyro_name = "archetypes"

    def __init__(
        self,
        candidate_profiles: torch.Tensor,
        init_B: torch.Tensor,
        mean_profile: torch.Tensor | None = None,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        prior_concentration: float = 1.0,
        n_samples: int = 1,
        technology_sd: float = 0.5,
        candidate_samples: torch.Tensor | None = None,
        cp10k_input: bool = True,
    ):
        super().__init__()
        candidate_profiles = torch.as_tensor(candidate_profiles, dtype=torch.float32)
        init_B = torch.as_tensor(init_B, dtype=torch.float32)
        self.n_spots, self.n_genes = candidate_profiles.shape
        self.n_archetypes = init_B.shape[0]
        if init_B.shape != (self.n_archetypes, self.n_spots) or self.n_archetypes < 2:
            raise ValueError(
                f"init_B has shape {tuple(init_B.shape)}; expected (>= 2 archetypes, "
                f"{self.n_spots} candidate spots)"
            )
        self.prior_concentration = prior_concentration
        self.register_buffer("candidate_profiles", candidate_profiles)
        if mean_profile is None:
            mean_profile = candidate_profiles.mean(dim=0)
        self.register_buffer("mean_profile", torch.as_tensor(mean_profile, dtype=torch.float32))
        # A small floor keeps every spot reachable without diluting the start.
        floor = 1e-2 / self.n_spots
        self.B_logits = torch.nn.Parameter(torch.log(init_B + floor))
        self.log_theta = torch.nn.Parameter(torch.full((self.n_genes,), 2.0))
        self.n_samples, self.technology_sd = int(n_samples), float(technology_sd)
        self.log_technology = (
            torch.nn.Parameter(torch.zeros(self.n_samples, self.n_genes))
            if self.n_samples > 1
            else None
        )
        # Each candidate's sample: its profile carries that sample's factors, taken out before
        # it enters an archetype shared by every sample (recomputed by the model at a load).
        if candidate_samples is None:
            candidate_samples = torch.zeros(self.n_spots, dtype=torch.long)
        samples = torch.as_tensor(candidate_samples, dtype=torch.long).reshape(-1)
        self.register_buffer("candidate_samples", samples, persistent=False)
        # Saved with the parameters: a model saved without it loads reading log1p counts.
        self.cp10k_input = bool(cp10k_input)
        if self.cp10k_input:
            self.register_buffer("reads_cp10k", torch.ones(()))
        self.encoder = Encoder(
            self.n_genes,
            self.n_archetypes - 1,
            n_cat_list=[self.n_samples] if self.n_samples > 1 else None,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            return_dist=True,
        )

    @staticmethod
    def _get_fn_args_from_batch(tensor_dict):
        return (tensor_dict[_X], tensor_dict.get(_SAMPLE)), {}

    @property
    def list_obs_plate_vars(self) -> dict:
        """Per-spot sites, so posterior sampling treats them as local."""
        return {"name": "cells", "in": [0], "sites": {"weights": self.n_archetypes}}

    def B(self) -> torch.Tensor:
        """Archetypes x candidate spots convex weights."""
        return F.softmax(self.B_logits, dim=-1)

    def archetype_profiles(self) -> torch.Tensor:
        """Archetypes x genes normalised profiles (rows sum to 1), of candidates freed of their
        sample's technical factors (several samples)."""
        candidates, gamma = self.candidate_profiles, self.technology()
        if gamma is not None:
            candidates = candidates * torch.exp(-gamma[self.candidate_samples])
            candidates = candidates / candidates.sum(dim=-1, keepdim=True)
        return self.B() @ candidates

    def technology(self) -> torch.Tensor | None:
        """Samples x genes log technical factors, centred over the samples (None for one)."""
        if self.log_technology is None:
            return None
        return self.log_technology - self.log_technology.mean(dim=0, keepdim=True)

    def _q_base(self, x, sample=None, undrawn: bool = False) -> pdist.Independent:
        """q's Normal in K - 1 dimensions, before the stick-breaking map; ``undrawn``:
        without the draw scvi-tools' ``Encoder`` makes and drops (on the module's device:
        seeded draws on the CPU make none there)."""
        covariates = () if self.log_technology is None else (sample,)
        logged = log_cp10k(x) if self.cp10k_input else torch.log1p(x)
        if undrawn:
            qz = _undrawn(self.encoder, logged, *covariates)
        else:
            qz, _ = self.encoder(logged, *covariates)
        return pdist.Normal(qz.loc, qz.scale).to_event(1)

    def _q_weights(self, x, sample=None, undrawn: bool = False) -> pdist.TransformedDistribution:
        # cache_size=1: the log density of a draw reads the draw's point in R^(K-1) back from
        # the cache instead of inverting the map (see log_stick_breaking).
        base = self._q_base(x, sample, undrawn)
        return pdist.TransformedDistribution(base, [StickBreaking(cache_size=1)])

    def _log_prior(self, log_weights: torch.Tensor) -> torch.Tensor:
        """log Dirichlet(prior_concentration) at the weights, from their logarithms."""
        alpha, k = self.prior_concentration, self.n_archetypes
        norm = math.lgamma(k * alpha) - k * math.lgamma(alpha)
        return (alpha - 1.0) * log_weights.sum(-1) + norm

    def _prior(self, x) -> pdist.Dirichlet:
        return pdist.Dirichlet(
            x.new_full((x.shape[0], self.n_archetypes), self.prior_concentration)
        )

    def _mean(self, x, weights, sample=None):
        profile = weights @ self.archetype_profiles()
        gamma = self.technology()
        if gamma is not None:
            profile = profile * torch.exp(gamma[sample.reshape(-1).long()])
            profile = profile / profile.sum(dim=-1, keepdim=True)
        return x.sum(dim=-1, keepdim=True) * profile

    # ----------------------------------------------------------------- Pyro program
    def model(self, x, sample=None, kl_weight: float = 1.0):
        """Generative model; ``kl_weight`` scales the weights' prior for KL warm-up."""
        pyro.module(self._pyro_name, self)
        if self.log_technology is not None:
            # The factors are a point estimate: their log prior enters once, outside the cell
            # plate, which scales the minibatch's likelihood to all spots.
            prior = pdist.Normal(0.0, self.technology_sd).log_prob(self.technology()).sum()
            pyro.factor("technology_prior", prior)
        with self._cell_plate(x.shape[0]):
            with pyro.poutine.scale(scale=kl_weight):
                weights = pyro.sample("weights", self._prior(x))
            theta = torch.exp(self.log_theta)
            mean = self._mean(x, weights, sample)
            pyro.sample("obs", CountDistribution(mean, theta).to_event(1), obs=x)

    def guide(self, x, sample=None, kl_weight: float = 1.0):
        """Amortised logistic-normal q(w | x, sample)."""
        pyro.module(self._pyro_name, self)
        with self._cell_plate(x.shape[0]), pyro.poutine.scale(scale=kl_weight):
            pyro.sample("weights", self._q_weights(x, sample))

    # ----------------------------------------------------------------- torch side
    has_torch_elbo = True

    def negative_elbo(self, x, sample=None, kl_weight: float = 1.0):
        """The objective of :meth:`model` and :meth:`guide` per spot (counts ``x``, slide codes
        ``sample``), in one torch pass:
        from one seed Pyro's ``Trace_ELBO`` value and gradients (one draw of the weights; the
        technology factors' log prior, a global term, shared out over the ``n_obs`` spots).
        Logs ``reconstruction_loss`` and ``kl_weights``, as :meth:`loss`."""
        base = self._q_base(x, sample)
        u = base.rsample()
        log_weights, log_det = log_stick_breaking(u)
        kl = base.log_prob(u) - log_det - self._log_prior(log_weights)
        mean = self._mean(x, log_weights.exp(), sample)
        reconstruction = -count_log_prob(x, mean, torch.exp(self.log_theta)).sum(-1)
        objective = reconstruction + kl_weight * kl
        if self.log_technology is not None:
            prior = pdist.Normal(0.0, self.technology_sd).log_prob(self.technology()).sum()
            objective = objective - self.per_cell_share(prior, x)
        return objective, {"reconstruction_loss": reconstruction, "kl_weights": kl}

    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors[_X], "sample": tensors.get(_SAMPLE)}

    @auto_move_data
    def inference(self, x, sample=None, n_samples: int = 1, cell_draws=None, draw: bool = True):
        """q(w | x), a sample ``weights`` and the point estimate ``weights_map`` (its median);
        the sample drawn by ``cell_draws`` (a ``CellDraws``: on the CPU, spot after spot)
        when given. ``draw=False`` draws nothing (``weights`` is the median): the read-outs
        of ``weights_map`` drew a sample on the device and dropped it."""
        qw = self._q_weights(x, sample, undrawn=cell_draws is not None or not draw)
        shape = (n_samples,) if n_samples > 1 else ()
        base = qw.base_dist.base_dist
        median = StickBreaking()(base.loc)
        if not draw:
            weights = median
        elif cell_draws is None:
            weights = qw.rsample(shape)
        else:
            noise = cell_draws.standard_normal(base.loc, n_samples, "weights")
            weights = StickBreaking()(base.loc + base.scale * noise)
        return {"qw": qw, "weights": weights, "weights_map": median, "x": x}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {
            "x": tensors[_X],
            "weights": inference_outputs["weights"],
            "sample": tensors.get(_SAMPLE),
        }

    def generative(self, x, weights, sample=None):
        """p(x | w, sample) as scvi-tools' negative binomial."""
        mean = self._mean(x, weights, sample)
        return {"px": NegativeBinomial(mu=mean, theta=torch.exp(self.log_theta))}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """Negative ELBO per spot: reconstruction plus a one-sample KL estimate."""
        x = tensors[_X]
        px = generative_outputs["px"]
        reconstruction = -count_log_prob(x, px.mu, px.theta).sum(-1)
        weights = inference_outputs["weights"]
        kl = inference_outputs["qw"].log_prob(weights) - self._prior(x).log_prob(weights)
        return LossOutput(
            loss=torch.mean(reconstruction + kl_weight * kl),
            reconstruction_loss=reconstruction,
            kl_local={"kl_weights": kl},
        )
