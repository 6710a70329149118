"""ZINBVAE: scVI's generative model as a Pyro program.

Generative model, for a cell with counts x, batch b and categorical covariates c:

    z ~ Normal(0, I)                                  latent state, n_latent dims
    l = log(sum_g x_g)        (observed library)  or  l ~ Normal(mu_b, sigma_b^2)
    rho = softmax(f(z, b, c))                         normalized expression over genes
    x_g ~ ZINB(mean = exp(l) * rho_g, inverse dispersion theta_g, dropout logit pi_g(z, b, c))

Guide: q(z | x, b, c) = Normal(mu(x, b, c), sigma(x, b, c)) (and q(l | x, b, c) for a latent
library), amortised by scvi-tools' ``Encoder`` on log1p counts.
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro import poutine
from scvi import REGISTRY_KEYS
from scvi.module.base import LossOutput, auto_move_data
from scvi.nn import DecoderSCVI, Encoder
from torch.distributions import Normal, kl_divergence

from ..distributions import COUNT_LIKELIHOODS, Likelihood
from ._base import DeltaPyroModule

_X = REGISTRY_KEYS.X_KEY
_BATCH = REGISTRY_KEYS.BATCH_KEY
_CAT = REGISTRY_KEYS.CAT_COVS_KEY
_SF = REGISTRY_KEYS.SIZE_FACTOR_KEY


def split_categoricals(cat_covs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Columns of the joint categorical covariate tensor, as scvi-tools' networks take them."""
    if cat_covs is None:
        return ()
    return torch.split(cat_covs, 1, dim=1)


def _undrawn(encoder: Encoder, x: torch.Tensor, *cat_list) -> Normal:
    """scvi-tools' ``Encoder(return_dist=True)``'s distribution of ``x``, the same numbers,
    without the draw its ``forward`` makes and drops."""
    q = encoder.encoder(x, *cat_list)
    var = encoder.var_activation(encoder.var_encoder(q)) + encoder.var_eps
    return Normal(encoder.mean_encoder(q), var.sqrt())


def _posterior_draw(q: Normal, n_samples: int, draw: bool, cell_draws, kind: str):
    """A draw of ``q`` (``n_samples`` on a first axis when more than 1): its mean without
    ``draw``; by ``cell_draws`` (a ``CellDraws``: on the CPU, cell after cell, under ``kind``)
    where given, else on ``q``'s device."""
    shape = (n_samples,) if n_samples > 1 else ()
    if not draw:
        return q.loc.expand(*shape, *q.loc.shape)
    if cell_draws is None:
        return q.rsample(shape)
    return q.loc + q.scale * cell_draws.standard_normal(q.loc, n_samples, kind)


class ZINBVAEModule(DeltaPyroModule):
    """Pyro module of :class:`deltavae.model.ZINBVAE`.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches (1 when there is no batch key).
    n_cats_per_cov
        Number of categories of each extra categorical covariate.
    n_hidden, n_latent, n_layers, dropout_rate
        Network sizes, as in scVI.
    dispersion
        ``"gene"`` (one inverse dispersion per gene) or ``"gene-batch"``.
    likelihood
        ``"zinb"`` or ``"nb"``.
    use_observed_lib_size
        Use each cell's observed log library size (or its size factor) instead of a latent one.
    use_size_factor_key
        The library is a registered size factor: as in scVI, the decoder's expression is a
        softplus, free to scale, not a softmax summing to 1 (size factors of mean 1 would
        predict about one count per cell).
    library_log_means, library_log_vars
        Per-batch prior of the latent log library, shape ``(1, n_batch)``.
    encode_covariates
        Feed batch and covariates to the encoder as well as the decoder.

    Examples
    --------
    >>> module = ZINBVAEModule(n_input=100, n_batch=2)
    >>> module.n_latent
    10
    """

    _pyro_name = "zinbvae"
    has_torch_elbo = True
    #: Logged terms not weighted by the KL warm-up (the plan's ``elbo_train`` adds back only
    #: the others): the latent library's, as in scVI.
    unannealed_terms = ("kl_divergence_l",)

    def __init__(
        self,
        n_input: int,
        n_batch: int = 1,
        n_cats_per_cov: list[int] | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch"] = "gene",
        likelihood: Literal["zinb", "nb"] = "zinb",
        use_observed_lib_size: bool = True,
        use_size_factor_key: bool = False,
        library_log_means=None,
        library_log_vars=None,
        encode_covariates: bool = True,
    ):
        super().__init__()
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.dispersion = dispersion
        self.likelihood = likelihood
        self.observation = Likelihood(likelihood, allowed=COUNT_LIKELIHOODS)
        self.use_observed_lib_size = use_observed_lib_size

        cat_list = [n_batch, *(n_cats_per_cov or [])]
        encoder_cats = cat_list if encode_covariates else None
        common = {"n_layers": n_layers, "n_hidden": n_hidden, "dropout_rate": dropout_rate}
        self.z_encoder = Encoder(
            n_input, n_latent, n_cat_list=encoder_cats, return_dist=True, **common
        )
        self.l_encoder = None
        if not use_observed_lib_size:
            if library_log_means is None or library_log_vars is None:
                raise ValueError("A latent library size needs library_log_means and _vars.")
            self.register_buffer("library_log_means", torch.as_tensor(library_log_means).float())
            self.register_buffer("library_log_vars", torch.as_tensor(library_log_vars).float())
            self.l_encoder = Encoder(
                n_input,
                1,
                n_cat_list=encoder_cats,
                return_dist=True,
                n_layers=1,
                n_hidden=n_hidden,
                dropout_rate=dropout_rate,
            )
        self.decoder = DecoderSCVI(
            n_latent,
            n_input,
            n_cat_list=cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            scale_activation="softplus" if use_size_factor_key else "softmax",
        )
        if dispersion == "gene":
            self.px_r = torch.nn.Parameter(torch.randn(n_input))
        elif dispersion == "gene-batch":
            self.px_r = torch.nn.Parameter(torch.randn(n_input, n_batch))
        else:
            raise ValueError(f"dispersion must be 'gene' or 'gene-batch', got {dispersion!r}.")

    # ----------------------------------------------------------------- shared pieces
    @staticmethod
    def _get_fn_args_from_batch(tensor_dict: dict[str, torch.Tensor]):
        args = (
            tensor_dict[_X],
            tensor_dict[_BATCH],
            tensor_dict.get(_CAT),
            tensor_dict.get(_SF),
        )
        return args, {}

    @property
    def list_obs_plate_vars(self) -> dict:
        """Per-cell sites, so posterior sampling treats them as local."""
        sites = {"latent": self.n_latent}
        if not self.use_observed_lib_size:
            sites["library"] = 1
        return {"name": "cells", "in": [0], "sites": sites}

    def _encode(self, x, batch_index, cat_covs, draw: bool = True):
        """q(z | x) and q(l | x) (None for an observed library). scvi-tools' ``Encoder``
        draws from each and drops it (training's seeded draws follow those); without
        ``draw``, the same distributions with nothing drawn."""
        x_ = torch.log1p(x)
        cats = split_categoricals(cat_covs)

        def encode(encoder):
            if draw:
                return encoder(x_, batch_index, *cats)[0]
            return _undrawn(encoder, x_, batch_index, *cats)

        qz = encode(self.z_encoder)
        ql = None if self.l_encoder is None else encode(self.l_encoder)
        return qz, ql

    @staticmethod
    def _observed_library(x, size_factor):
        if size_factor is not None:
            return torch.log(size_factor)
        return torch.log(x.sum(dim=-1, keepdim=True))

    def _library_prior(self, batch_index) -> Normal:
        idx = batch_index.long().view(-1)
        mean = self.library_log_means[0, idx].unsqueeze(-1)
        var = self.library_log_vars[0, idx].unsqueeze(-1)
        return Normal(mean, var.sqrt())

    def _theta(self, batch_index) -> torch.Tensor:
        if self.dispersion == "gene":
            return torch.exp(self.px_r)
        one_hot = F.one_hot(batch_index.long().view(-1), self.n_batch).float()
        return torch.exp(F.linear(one_hot, self.px_r))

    def _decode(self, z, library, batch_index, cat_covs) -> dict[str, torch.Tensor]:
        """Parameters of p(x | z, l, b, c) for :attr:`observation`: normalized expression
        ``scale``, mean ``mu``, inverse dispersion ``theta`` and dropout ``zi_logits``."""
        px_scale, _, px_rate, px_dropout = self.decoder(
            "gene", z, library, batch_index, *split_categoricals(cat_covs)
        )
        return {
            "scale": px_scale,
            "mu": px_rate,
            "theta": self._theta(batch_index),
            "zi_logits": px_dropout,
        }

    # ----------------------------------------------------------------- Pyro program
    def model(self, x, batch_index, cat_covs=None, size_factor=None, kl_weight: float = 1.0):
        """Generative model; ``kl_weight`` scales the latent sites for KL warm-up."""
        pyro.module(self._pyro_name, self)
        n = x.shape[0]
        with self._cell_plate(n):
            with poutine.scale(scale=kl_weight):
                z = pyro.sample(
                    "latent",
                    pdist.Normal(
                        x.new_zeros(n, self.n_latent), x.new_ones(n, self.n_latent)
                    ).to_event(1),
                )
            # The library's KL is not warmed up, as in scVI: free of its prior early on, the
            # latent library drifted away from the observed one (0.25x after 30 epochs).
            if self.use_observed_lib_size:
                library = self._observed_library(x, size_factor)
            else:
                prior = self._library_prior(batch_index)
                library = pyro.sample("library", pdist.Normal(prior.loc, prior.scale).to_event(1))
            params = self._decode(z, library, batch_index, cat_covs)
            pyro.sample("obs", self.observation.pyro(params).to_event(1), obs=x)

    def guide(self, x, batch_index, cat_covs=None, size_factor=None, kl_weight: float = 1.0):
        """Amortised mean-field guide q(z | x) (and q(l | x))."""
        pyro.module(self._pyro_name, self)
        n = x.shape[0]
        with self._cell_plate(n):
            qz, ql = self._encode(x, batch_index, cat_covs)
            with poutine.scale(scale=kl_weight):
                pyro.sample("latent", pdist.Normal(qz.loc, qz.scale).to_event(1))
            if ql is not None:  # not warmed up (see model)
                pyro.sample("library", pdist.Normal(ql.loc, ql.scale).to_event(1))

    def negative_elbo(
        self, x, batch_index, cat_covs=None, size_factor=None, kl_weight: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pyro's ``Trace_ELBO`` of :meth:`model` and :meth:`guide` per cell, in one torch pass
        (their arguments: counts ``x``, ``batch_index``, ``cat_covs``, ``size_factor``).

        The guide's draws come in the guide's order (z, then l), so a seeded call gives the
        ELBO (value and gradients) that Pyro would: ``-log p(x | z, l) + kl_weight *
        (log q(z | x) - log p(z)) + log q(l | x) - log p(l)`` at the drawn z (and l): as in
        scVI, the library's term is not warmed up. Also returns the per-cell terms to log:
        ``reconstruction_loss`` and the analytic KL terms ``kl_divergence_z``,
        ``kl_divergence_l`` (as :meth:`loss`).
        """
        qz, ql = self._encode(x, batch_index, cat_covs)
        z = qz.rsample()
        # Tensors, not 1.0: torch would copy a number to the device, a wait each step.
        prior_z = Normal(torch.zeros_like(z), torch.ones_like(z))
        log_ratio = kl_weight * (qz.log_prob(z).sum(-1) - prior_z.log_prob(z).sum(-1))
        kl_z = kl_divergence(qz, prior_z).sum(-1)
        kl_l = torch.zeros_like(kl_z)
        if ql is None:
            library = self._observed_library(x, size_factor)
        else:  # the library's term is not warmed up (see model)
            library = ql.rsample()
            prior_l = self._library_prior(batch_index)
            log_ratio = log_ratio + (ql.log_prob(library) - prior_l.log_prob(library)).sum(-1)
            kl_l = kl_divergence(ql, prior_l).sum(-1)
        params = self._decode(z, library, batch_index, cat_covs)
        reconstruction = -self.observation.log_prob(params, x)
        terms = {
            "reconstruction_loss": reconstruction,
            "kl_divergence_z": kl_z,
            "kl_divergence_l": kl_l,
        }
        return reconstruction + log_ratio, terms

    # ----------------------------------------------------------------- torch side
    def _get_inference_input(self, tensors, **kwargs):
        return {
            "x": tensors[_X],
            "batch_index": tensors[_BATCH],
            "cat_covs": tensors.get(_CAT),
            "size_factor": tensors.get(_SF),
        }

    @auto_move_data
    def inference(
        self,
        x,
        batch_index,
        cat_covs=None,
        size_factor=None,
        n_samples: int = 1,
        draw: bool = True,
        cell_draws=None,
    ):
        """Posterior of z (and l); ``z`` is a sample, ``qz`` the distribution. Without
        ``draw``, ``z`` (and a latent ``library``) are the posterior means, for read-outs
        that take them: nothing drawn (as CGMDVAE's). With ``cell_draws`` (a ``CellDraws``),
        the sample's noise is drawn on the CPU cell after cell, none on the device."""
        qz, ql = self._encode(x, batch_index, cat_covs, draw and cell_draws is None)
        z = _posterior_draw(qz, n_samples, draw, cell_draws, "z")
        if ql is None:
            library = self._observed_library(x, size_factor)
            if n_samples > 1:
                library = library.expand(n_samples, *library.shape)
        else:
            library = _posterior_draw(ql, n_samples, draw, cell_draws, "library")
        return {"z": z, "qz": qz, "ql": ql, "library": library}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "batch_index": tensors[_BATCH],
            "cat_covs": tensors.get(_CAT),
        }

    def generative(self, z, library, batch_index, cat_covs=None, transform_batch=None):
        """p(x | z, l) as scvi-tools' distribution (with ``scale`` for normalized expression)."""
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        px = self.observation.torch(self._decode(z, library, batch_index, cat_covs))
        return {"px": px, "pz": Normal(torch.zeros_like(z), torch.ones_like(z))}

    def _log_px(self, px, x) -> torch.Tensor:
        """log p(x | z) per cell of scvi-tools' ``px``, by the observation's faster route."""
        params = {"mu": px.mu, "theta": px.theta, "zi_logits": getattr(px, "zi_logits", None)}
        return self.observation.log_prob(params, x)

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """Negative ELBO per cell, split into reconstruction and KL terms."""
        x = tensors[_X]
        reconstruction = -self._log_px(generative_outputs["px"], x)
        kl_z = kl_divergence(inference_outputs["qz"], generative_outputs["pz"]).sum(-1)
        kl_l = torch.zeros_like(kl_z)
        if inference_outputs["ql"] is not None:
            prior = self._library_prior(tensors[_BATCH])
            kl_l = kl_divergence(inference_outputs["ql"], prior).sum(-1)
        loss = torch.mean(reconstruction + kl_weight * kl_z + kl_l)  # scVI's: l not warmed up
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            kl_local={"kl_divergence_z": kl_z, "kl_divergence_l": kl_l},
        )

    def log_importance_weights(self, tensors, n_samples: int, cell_draws=None) -> torch.Tensor:
        """log p(x, z[, l]) - log q(z[, l] | x) for ``n_samples`` guide draws: (samples, cells),
        for the minibatch ``tensors``; drawn by ``cell_draws`` (a ``CellDraws``: on the CPU,
        cell after cell) where given."""
        inputs = self._get_inference_input(tensors)
        inference = self.inference(**inputs, n_samples=n_samples, cell_draws=cell_draws)
        z, library = inference["z"], inference["library"]
        if n_samples == 1:
            z, library = z.unsqueeze(0), library.unsqueeze(0)
        px = self.generative(z, library, tensors[_BATCH], tensors.get(_CAT))["px"]
        log_w = (
            self._log_px(px, tensors[_X])
            + Normal(0.0, 1.0).log_prob(z).sum(-1)
            - inference["qz"].log_prob(z).sum(-1)
        )
        if inference["ql"] is not None:
            prior = self._library_prior(tensors[_BATCH])
            log_w = log_w + (prior.log_prob(library) - inference["ql"].log_prob(library)).sum(-1)
        return log_w
