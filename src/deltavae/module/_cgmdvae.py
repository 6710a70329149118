"""c*GMΔVÆ: the conditional Gaussian-mixture Dirichlet VAE, as a Pyro program.

Generative model for a cell with data x and categorical conditions c (all optional):

    w ~ N(0, I)                                   continuous "style", n_latent_w dims
    d ~ Dir(alpha)                                cluster proportions, K dims
    y ~ Cat(d)                                    cluster
    z ~ N(mu_y(w[, c]), Sigma_y(w[, c]))          one network maps w (and c, optionally) to all K;
                                                  Sigma_y = D U_y U_y^T D, D = diag sigma_y(w, c)
    x ~ p(x | z, c)                               ZINB/NB with library size, Normal or Bernoulli

Inference: q(z | x, c) q(w | x, c) q(y | z, c) q(d | z, c), with q(d | z, c) a Dirichlet.

The negative ELBO per cell splits into five terms (plus a classifier term for labelled cells):

    reconstruction  -E_q[log p(x | z, c)]
    z-term          E_q[log q(z | x) - sum_y q(y | z) log p(z | w, y, c)]
    w-term          KL(q(w | x) || N(0, I))
    y-term          E_q(z)[sum_y q(y | z) (log q(y | z) - E_q(d|z)[log d_y])]
    d-term          KL(q(d | z) || Dir(alpha))

y is summed exactly over the K clusters, and E_q[log d_y] = psi(beta_y) - psi(sum beta) is used
exactly, so only w and z are sampled. For a labelled cell q(y | z) is replaced by its label.

In the Pyro program, w and z are sample sites with reparameterised guide sites; the discrete
(y, d) part, summed and integrated analytically given z and w, enters as one ``pyro.factor``.
Training computes the same objective in one torch pass (``negative_elbo``), without tracing.
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
from scvi.nn import DecoderSCVI
from torch.distributions import Dirichlet, Distribution, Normal, kl_divergence

from ..distributions import Likelihood
from ..nn import ClusterHead, CorrelatedNormal, GaussianHeads, MixturePrior, ObservationDecoder
from ._base import DeltaPyroModule
from ._cgmdvae_generation import CGMDVAEGeneration
from ._zinbvae import _posterior_draw, split_categoricals

_X = REGISTRY_KEYS.X_KEY
_CAT = REGISTRY_KEYS.CAT_COVS_KEY
_LABELS = REGISTRY_KEYS.LABELS_KEY


def _prior_scale(p: Distribution) -> torch.Tensor:
    """D_y(w, c) of a mixture prior, full (CorrelatedNormal) or diagonal (Independent Normal)."""
    return p.scale if isinstance(p, CorrelatedNormal) else p.base_dist.scale


class CGMDVAEModule(CGMDVAEGeneration, DeltaPyroModule):
    """Pyro module of :class:`deltavae.model.CGMDVAE`.

    Parameters
    ----------
    n_input
        Number of features (genes, pixels).
    n_clusters
        Number of mixture components K.
    n_cats_per_cov
        Number of categories of each condition covariate.
    n_latent, n_latent_w
        Dimensions of z and w.
    n_hidden, n_layers, dropout_rate
        Network sizes.
    likelihood
        ``"zinb"``, ``"nb"``, ``"normal"`` or ``"bernoulli"``.
    dirichlet_alpha
        Concentration of p(d) = Dir(alpha), a scalar or one value per cluster.
    classifier_weight
        Weight of the cross-entropy of q(y | z) on labelled cells.
    label_to_cluster
        Cluster index of every registered label code (-1 for the unlabelled code).
    condition_in_prior
        Condition the mixture components on c, p(z | w, y, c); otherwise p(z | w, y), shared by
        all conditions.
    prior_covariance
        ``"diag"``: diagonal components; ``"full"``: each component also learns a correlation
        between the z dimensions (see :class:`deltavae.nn.MixturePrior`).
    condition_alignment
        Weight of the penalty on the distance between the conditions' means of z within each
        cluster (:meth:`alignment_penalty`); 0 adds none.

    Examples
    --------
    >>> module = CGMDVAEModule(n_input=16, n_clusters=5)
    >>> module.n_clusters
    5
    """

    _pyro_name = "cgmdvae"

    def __init__(
        self,
        n_input: int,
        n_clusters: int,
        n_cats_per_cov: list[int] | None = None,
        n_latent: int = 10,
        n_latent_w: int = 5,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        likelihood: Literal["zinb", "nb", "normal", "bernoulli"] = "zinb",
        dirichlet_alpha: float | list[float] = 1.0,
        classifier_weight: float = 50.0,
        label_to_cluster: list[int] | None = None,
        condition_in_prior: bool = True,
        prior_covariance: Literal["full", "diag"] = "full",
        condition_alignment: float = 0.0,
    ):
        super().__init__()
        self.condition_alignment = condition_alignment
        self.observation = Likelihood(likelihood)
        self.n_input, self.n_clusters = n_input, n_clusters
        self.n_latent, self.n_latent_w = n_latent, n_latent_w
        self.likelihood = likelihood
        self.classifier_weight = classifier_weight
        cats = list(n_cats_per_cov or [])
        alpha = torch.as_tensor(dirichlet_alpha, dtype=torch.float32).expand(n_clusters).clone()
        self.register_buffer("alpha", alpha)
        self.register_buffer(
            "label_to_cluster", torch.as_tensor(label_to_cluster or [-1], dtype=torch.long)
        )
        # Known on the host: asking the buffer would wait for the GPU at every step.
        self._has_labels = any(c >= 0 for c in (label_to_cluster or []))
        self._n_cats = cats
        self.encoder = GaussianHeads(
            n_input, {"z": n_latent, "w": n_latent_w}, cats, n_hidden, n_layers, dropout_rate
        )
        self.cluster_head = ClusterHead(n_latent, n_clusters, n_hidden, n_cat_list=cats)
        self.condition_in_prior = condition_in_prior
        self.prior = MixturePrior(
            n_latent_w,
            n_latent,
            n_clusters,
            cats if condition_in_prior else [],
            n_hidden,
            covariance=prior_covariance,
        )
        if self.observation.is_count:
            self.decoder = DecoderSCVI(
                n_latent, n_input, n_cat_list=cats, n_layers=n_layers, n_hidden=n_hidden
            )
            self.px_r = torch.nn.Parameter(torch.randn(n_input))
        else:
            self.decoder = ObservationDecoder(
                n_latent, n_input, likelihood, cats, n_hidden, n_layers
            )

    # ----------------------------------------------------------------- building blocks
    @staticmethod
    def _get_fn_args_from_batch(tensor_dict):
        return (tensor_dict[_X], tensor_dict.get(_CAT), tensor_dict.get(_LABELS)), {}

    @property
    def list_obs_plate_vars(self) -> dict:
        """Per-cell sites, so posterior sampling treats them as local."""
        return {"name": "cells", "in": [0], "sites": {"z": self.n_latent, "w": self.n_latent_w}}

    def observed_clusters(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Cluster index of each cell's label, -1 where unlabelled; None without labels."""
        has_labels = self.__dict__.get("_has_labels")
        if has_labels is None:  # a module pickled before it was kept
            has_labels = bool((self.label_to_cluster >= 0).any())
        if labels is None or not has_labels:
            return None
        return self.label_to_cluster[labels.long().view(-1)]

    def encode(self, x, cat_covs=None) -> tuple[Normal, Normal]:
        """q(z | x, c) and q(w | x, c); ``cat_covs`` holds the codes c of the conditions."""
        x_ = torch.log1p(x) if self.observation.is_count else x
        q = self.encoder(x_, *split_categoricals(cat_covs))
        return q["z"], q["w"]

    def cluster_posterior(self, z, cat_covs=None):
        """Logits of q(y | z, c) and concentrations of q(d | z, c) (c: ``cat_covs``)."""
        return self.cluster_head(z, *split_categoricals(cat_covs))

    def decode(self, z, cat_covs=None, library=None, dropout: bool = True) -> dict:
        """Parameters of p(x | z, c) (c: ``cat_covs``) for ``observation`` (a
        :class:`~deltavae.distributions.Likelihood`): for counts
        the mean at ``library`` (log) and more. ``dropout=False``: for counts, no dropout
        logits (``zi_logits`` None; the decoder's head to every gene not run), for a reader of
        the NB's mean alone (typicality's deviance); the other values are the same numbers."""
        cats = split_categoricals(cat_covs)
        if self.observation.is_count and not dropout:
            px_scale = self.decoder.px_scale_decoder(self.decoder.px_decoder(z, *cats))
            return {
                "scale": px_scale,
                "mu": torch.exp(library) * px_scale,  # as DecoderSCVI computes px_rate
                "theta": torch.exp(self.px_r),
                "zi_logits": None,
            }
        if self.observation.is_count:
            px_scale, _, px_rate, px_dropout = self.decoder("gene", z, library, *cats)
            return {
                "scale": px_scale,
                "mu": px_rate,
                "theta": torch.exp(self.px_r),
                "zi_logits": px_dropout,
            }
        return {"out": self.decoder(z, *cats), "log_scale": self.decoder.bounded_log_scale()}

    def prior_distribution(self, w, cat_covs=None) -> Distribution:
        """p(z | w, y, c) for every y (c: ``cat_covs``): batch shape ``(cells, K)``, event
        shape ``(n_latent,)``."""
        cats = split_categoricals(cat_covs) if self.condition_in_prior else []
        return self.prior(w, *cats)

    def move_latent(self, z, w, cluster_probs, cat_covs, target_covs) -> torch.Tensor:
        """Move z from each cell's own conditions (``cat_covs``) to ``target_covs`` through
        the prior.

        Under component y, z is whitened by p(z | w, y, c) and recoloured by p(z | w, y, c'):
        mean_y(w, c') + L_y(w, c') L_y(w, c)^-1 (z - mean_y(w, c)), with L_y = D_y U_y the
        covariance factor. U_y is shared across conditions, so L_y(w, c') L_y(w, c)^-1 is the
        ratio of scales D_y(w, c') / D_y(w, c), for full and diagonal components alike. The
        moves are averaged over ``cluster_probs`` (q(y | z, c)). A cell whose conditions equal
        the target does not move.
        """
        own = self.prior_distribution(w, cat_covs)
        new = self.prior_distribution(w, target_covs)
        moved = new.mean + _prior_scale(new) / _prior_scale(own) * (z.unsqueeze(-2) - own.mean)
        return (cluster_probs.unsqueeze(-1) * moved).sum(-2)

    def mixture_terms(self, z, w, cat_covs=None, y_obs=None) -> dict[str, torch.Tensor]:
        """The per-cell ELBO terms of (y, d) given samples of z and w, exact in y and d (c:
        ``cat_covs``; ``y_obs``: each cell's label's component, -1 unlabelled).

        Returns ``log_pz`` (sum_y q(y) log p(z | w, y)), ``y_term``, ``d_term`` and
        ``classifier`` (cross-entropy of q(y | z) on labelled cells, 0 elsewhere), each of
        shape ``(n_cells,)``, and ``qy``, the ``(n_cells, K)`` weights of the clusters in
        these terms (q(y | z), one-hot for labelled cells), as :meth:`alignment_penalty` reads.
        """
        logits, beta = self.cluster_posterior(z, cat_covs)
        log_qy = F.log_softmax(logits, dim=-1)
        qy = log_qy.exp()
        classifier = torch.zeros_like(logits[:, 0])
        if y_obs is not None:
            labelled = y_obs >= 0
            one_hot = F.one_hot(y_obs.clamp(min=0), self.n_clusters).to(qy.dtype)
            mask = labelled.unsqueeze(-1)
            classifier = torch.where(
                labelled, -log_qy.gather(-1, y_obs.clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0
            )
            qy = torch.where(mask, one_hot, qy)
            # A label is certain: its q(y) log q(y) is 0.
            log_qy = torch.where(mask, torch.zeros_like(log_qy), log_qy)
        pz = self.prior_distribution(w, cat_covs)
        log_pz_y = pz.log_prob(z.unsqueeze(-2))  # (cells, K)
        e_log_d = torch.digamma(beta) - torch.digamma(beta.sum(-1, keepdim=True))
        return {
            "log_pz": (qy * log_pz_y).sum(-1),
            "y_term": (qy * (log_qy - e_log_d)).sum(-1),
            "d_term": kl_divergence(Dirichlet(beta), Dirichlet(self.alpha.expand_as(beta))),
            "classifier": classifier,
            "qy": qy,
        }

    def alignment_penalty(self, z, cat_covs, qy) -> torch.Tensor:
        """Squared distance between the conditions' means of z within each cluster, per cell
        (conditions' codes ``cat_covs``; ``qy``: q(y | z), held fixed).

        For every condition covariate and cluster y, the mean of z over each condition's cells
        of the minibatch, weighted by q(y | z) (held fixed), is compared with the cluster's
        mean over all conditions; the squared distances, weighted by the conditions' shares
        of the cluster, are summed over clusters and covariates. Zero when z carries no
        condition within a cluster, so the decoder must carry the condition's effect.
        """
        if cat_covs is None or self.condition_alignment == 0:
            return z.new_zeros(())
        qy = qy.detach()
        penalty = z.new_zeros(())
        mass_y = qy.sum(0) + 1e-6  # (K,)
        mean_y = (qy.T @ z) / mass_y.unsqueeze(-1)  # (K, D)
        for i, codes in enumerate(cat_covs.long().unbind(-1)):
            n_cats = self._n_cats[i] if "_n_cats" in self.__dict__ else int(codes.max()) + 1
            one_hot = F.one_hot(codes, n_cats).to(z.dtype)  # (n, C)
            weight = qy.unsqueeze(-1) * one_hot.unsqueeze(1)  # (n, K, C)
            mass = weight.sum(0)  # (K, C)
            means = torch.einsum("nkc,nd->kcd", weight, z) / (mass.unsqueeze(-1) + 1e-6)
            dist = ((means - mean_y.unsqueeze(1)) ** 2).sum(-1)  # (K, C)
            penalty = penalty + (mass * dist).sum() / z.shape[0]
        return penalty

    def log_importance_weights(self, tensors, n_samples: int, cell_draws=None) -> torch.Tensor:
        """log p(x, z, w) - log q(z, w | x) for ``n_samples`` guide draws: (samples, cells),
        for the minibatch ``tensors``; drawn by ``cell_draws`` (a ``CellDraws``: on the CPU,
        cell after cell) where given.

        The cluster y and proportions d are summed and integrated exactly: under
        d ~ Dir(alpha), p(y) = alpha_y / sum(alpha), so p(z | w, c) = sum_y p(y) p(z | w, y, c).
        """
        x, cats = tensors[_X], tensors.get(_CAT)
        qz, qw = self.encode(x, cats)
        n, cells = n_samples, x.shape[0]
        z, w = (_posterior_draw(q, n, True, cell_draws, k) for q, k in ((qz, "z"), (qw, "w")))
        if n == 1:  # a first axis of draws, as rsample((1,)) gives
            z, w = z.unsqueeze(0), w.unsqueeze(0)

        def flat(t):  # (samples, cells, ...) -> (samples * cells, ...)
            return t.reshape(n * cells, *t.shape[2:])

        def repeat(t):  # (cells, ...) -> (samples * cells, ...), matching flat
            return None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))

        library = self.observation.log_library(x)
        px = self.observation.torch(self.decode(flat(z), repeat(cats), repeat(library)))
        log_px = self.observation.scored(px, repeat(x)).sum(-1)
        log_py = torch.log(self.alpha / self.alpha.sum())
        log_pz_y = self.prior_distribution(flat(w), repeat(cats)).log_prob(flat(z).unsqueeze(-2))
        log_pz = torch.logsumexp(log_pz_y + log_py, dim=-1)
        log_pw = Normal(0.0, 1.0).log_prob(flat(w)).sum(-1)
        log_q = flat(qz.log_prob(z).sum(-1, keepdim=True)) + flat(
            qw.log_prob(w).sum(-1, keepdim=True)
        )
        return (log_px + log_pz + log_pw - log_q.squeeze(-1)).reshape(n, cells)

    # ----------------------------------------------------------------- Pyro program
    def model(self, x, cat_covs=None, labels=None, kl_weight: float = 1.0):
        """Generative model with the discrete (y, d) part summed out given z (a factor)."""
        pyro.module(self._pyro_name, self)
        n = x.shape[0]
        y_obs = self.observed_clusters(labels)
        with self._cell_plate(n):
            with poutine.scale(scale=kl_weight):
                w = pyro.sample(
                    "w",
                    pdist.Normal(
                        x.new_zeros(n, self.n_latent_w), x.new_ones(n, self.n_latent_w)
                    ).to_event(1),
                )
                # z's density under the mixture comes from the factor below; this site only
                # pairs z with its guide site.
                z = pyro.sample(
                    "z",
                    pdist.Normal(x.new_zeros(n, self.n_latent), x.new_ones(n, self.n_latent))
                    .mask(False)
                    .to_event(1),
                )
                terms = self.mixture_terms(z, w, cat_covs, y_obs)
                pyro.factor("mixture", terms["log_pz"] - terms["y_term"] - terms["d_term"])
            outside = x.new_zeros(())  # the objective's terms outside the ELBO, per cell
            if self.condition_alignment:
                penalty = self.alignment_penalty(z, cat_covs, terms["qy"])
                pyro.factor("alignment", -self.condition_alignment * penalty.expand(n))
                outside = outside + self.condition_alignment * penalty
            params = self.decode(z, cat_covs, self.observation.log_library(x))
            pyro.sample("obs", self.observation.pyro(params).to_event(1), obs=x)
            if y_obs is not None:
                pyro.factor("classifier", -self.classifier_weight * terms["classifier"])
                outside = outside + self.classifier_weight * terms["classifier"]
        # Read by the training plan right after the loss of this very draw, so that it logs
        # the ELBO (the loss less these terms) beside the objective.
        self.objective_penalty = outside.detach().mean()

    def guide(self, x, cat_covs=None, labels=None, kl_weight: float = 1.0):
        """q(w | x, c) q(z | x, c); q(y | z, c) and q(d | z, c) live in the model's factor."""
        pyro.module(self._pyro_name, self)
        with self._cell_plate(x.shape[0]), poutine.scale(scale=kl_weight):
            qz, qw = self.encode(x, cat_covs)
            pyro.sample("w", pdist.Normal(qw.loc, qw.scale).to_event(1))
            pyro.sample("z", pdist.Normal(qz.loc, qz.scale).to_event(1))

    # ----------------------------------------------------------------- torch side
    has_torch_elbo = True
    terms_beside_elbo = ("classifier", "alignment")

    def negative_elbo(
        self, x, cat_covs=None, labels=None, kl_weight: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective of :meth:`model` and :meth:`guide` per cell, in one torch pass (their
        arguments: data ``x``, conditions' codes ``cat_covs``, ``labels``, ``kl_weight``).

        The draws come in the guide's order (w, then z) and the networks run in the model's,
        so a seeded call gives what Pyro's ``Trace_ELBO`` would (value and gradients):
        ``-log p(x | z, c) + kl_weight * (log q(z, w | x) - log p(w) - [mixture factor])``
        plus the weighted alignment and classifier terms. Also returns the per-cell terms
        :meth:`loss` logs (``w_term`` analytic) and leaves the terms outside the ELBO in
        ``objective_penalty``, as :meth:`model` does.
        """
        qz, qw = self.encode(x, cat_covs)
        w, z = qw.rsample(), qz.rsample()
        kl, beside, outside = self._objective_terms(z, w, qz, qw, cat_covs, labels)
        params = self.decode(z, cat_covs, self.observation.log_library(x))
        reconstruction = -self.observation.log_prob(params, x)
        # Pyro's estimate of w's KL is the log ratio at the draw; the analytic one is logged.
        w_ratio = qw.log_prob(w).sum(-1) - Normal(0.0, 1.0).log_prob(w).sum(-1)
        kl_draw = kl["z_term"] + w_ratio + kl["y_term"] + kl["d_term"]
        self.objective_penalty = outside.detach().mean()
        terms = {"reconstruction_loss": reconstruction, **kl, **beside}
        return reconstruction + kl_weight * kl_draw + outside, terms

    def _objective_terms(self, z, w, qz, qw, cat_covs, labels):
        """At draws ``z``, ``w``: the ELBO's KL terms per cell (``w_term`` analytic), the
        terms logged beside it (``classifier``, ``alignment``) and the weighted sum of those
        that the objective adds, per cell."""
        terms = self.mixture_terms(z, w, cat_covs, self.observed_clusters(labels))
        kl = {
            "z_term": qz.log_prob(z).sum(-1) - terms["log_pz"],
            "w_term": kl_divergence(qw, Normal(torch.zeros_like(w), torch.ones_like(w))).sum(-1),
            "y_term": terms["y_term"],
            "d_term": terms["d_term"],
        }
        beside = {"classifier": terms["classifier"]}
        outside = self.classifier_weight * terms["classifier"]
        if self.condition_alignment:
            penalty = self.alignment_penalty(z, cat_covs, terms["qy"])
            outside = outside + self.condition_alignment * penalty
            beside["alignment"] = penalty.expand(z.shape[0])
        return kl, beside, outside

    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors[_X], "cat_covs": tensors.get(_CAT)}

    @auto_move_data
    def inference(self, x, cat_covs=None, n_samples: int = 1, draw: bool = True, cell_draws=None):
        """q(z), q(w) and samples (without ``draw``: their means, for read-outs that take
        them, drawing nothing; with ``cell_draws``, a ``CellDraws``: drawn on the CPU cell
        after cell); cluster probabilities at the posterior mean of z."""
        qz, qw = self.encode(x, cat_covs)
        logits, beta = self.cluster_posterior(qz.loc, cat_covs)
        return {
            "qz": qz,
            "qw": qw,
            "z": _posterior_draw(qz, n_samples, draw, cell_draws, "z"),
            "w": _posterior_draw(qw, n_samples, draw, cell_draws, "w"),
            "library": self.observation.log_library(x),
            "ql": None,  # the library size is observed (scvi-tools' key for a latent one)
            "cluster_logits": logits,
            "d_concentration": beta,
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "cat_covs": tensors.get(_CAT),
        }

    def generative(self, z, library=None, cat_covs=None, transform_batch=None):
        """p(x | z, c) as a torch distribution; ``transform_batch`` (a code of the first
        condition) decodes every cell under that condition instead of its own."""
        if transform_batch is not None and cat_covs is not None:
            cat_covs = cat_covs.clone()
            cat_covs[:, 0] = int(transform_batch)
        if library is not None and z.dim() == 3:
            library = library.expand(z.shape[0], *library.shape)
        return {"px": self.observation.torch(self.decode(z, cat_covs, library))}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """Negative ELBO per cell, split into its five terms (and the classifier term)."""
        x = tensors[_X]
        kl, beside, outside = self._objective_terms(
            inference_outputs["z"],
            inference_outputs["w"],
            inference_outputs["qz"],
            inference_outputs["qw"],
            tensors.get(_CAT),
            tensors.get(_LABELS),
        )
        reconstruction = -self.observation.scored(generative_outputs["px"], x).sum(-1)
        # The objective adds the weighted classifier and alignment terms to the ELBO.
        return LossOutput(
            loss=(reconstruction + kl_weight * sum(kl.values()) + outside).mean(),
            reconstruction_loss=reconstruction,
            kl_local=kl,
            extra_metrics={name: value.mean() for name, value in beside.items()},
        )
