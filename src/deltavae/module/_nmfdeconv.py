"""NMFDeconv: spots as non-negative mixtures of cell-type signatures, as a Pyro program.

For spot s, gene g and cell types t with signatures m_tg (expected counts of one cell of
type t in the reference):

    gamma_g ~ LogNormal(0, technology_sd)            gene-wise technology factor
    p_s ~ Dirichlet(prior_concentration * 1)         cell-type proportions (the simplex)
    a_s                                              cells' worth of signal in the spot
    x_sg ~ NB(mean = a_s * gamma_g * sum_t p_st m_tg, inverse dispersion theta_g)

Because m_t is counts per *cell*, p_s are cell fractions, not RNA fractions. Reference-free,
the signatures are parameters too. The guide is a point mass (MAP) for every site. Per-spot
quantities come one of two ways (``inference``):

* ``"amortized"``: an encoder (:class:`~deltavae.module._spot_encoder.SpotEncoder`) maps a
  spot's counts to its proportion logits, and a_s is the Poisson maximum-likelihood abundance
  given them, sum_g x_sg / sum_g gamma_g (p_s m)_g. Memory does not grow with the spots, and
  new spots map without refitting.
* ``"per_spot"``: proportions and log abundance are parameters of each spot, looked up by the
  spot's row in the AnnData (``indices``).

The module reads the registered genes it is given in ``gene_index`` (all by default): a
model built from a reference registers every gene of the spots and uses the markers.
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro import poutine
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import LossOutput, auto_move_data

from ..distributions import CountDistribution, count_log_prob
from ._base import DeltaPyroModule
from ._spot_encoder import SpotEncoder

_X = REGISTRY_KEYS.X_KEY
_IDX = REGISTRY_KEYS.INDICES_KEY
INFERENCE = ("amortized", "per_spot")
#: Smallest proportion of a type in a spot. A Dirichlet prior below 1 (per spot's default,
#: 0.5) has an unbounded density at the simplex's faces, so its MAP has no maximum: the
#: logits of absent types ran off until the softmax gave an exact 0 and the loss -inf (a
#: long per-spot fit diverged). Above the floor the objective is bounded and its gradient
#: fades once a type is gone. 1e-5 rather than 1e-6: a per-spot fit of the MERFISH toy then
#: settles within its default 1,000 epochs (benchmarks/README.md, Numbers behind the
#: defaults, D18).
PROPORTION_FLOOR = 1e-5


class NMFDeconvModule(DeltaPyroModule):
    """Pyro module of :class:`deltavae.model.NMFDeconv`.

    Parameters
    ----------
    n_spots, n_genes
        Spots (used by ``"per_spot"`` only) and genes the model uses.
    signatures
        Cell types x genes, expected counts per cell (initial values when ``learn_signatures``).
    init_proportions, init_abundance
        ``"per_spot"``: spots x types starting proportions (rows on the simplex) and each
        spot's starting abundance; ignored (may be ``None``) when amortised.
    learn_signatures
        Fit the signatures too (reference-free mode).
    prior_concentration
        Symmetric Dirichlet concentration of the proportions (1: flat; below 1: sparse).
    technology_sd
        Standard deviation of the log technology factor.
    inference
        ``"amortized"`` or ``"per_spot"`` (see the module docstring).
    gene_index
        Columns of the registered counts the model uses, in signature order; ``None``: all.
    n_hidden, n_layers
        Encoder sizes (``"amortized"``).

    Examples
    --------
    >>> import torch
    >>> m = NMFDeconvModule(4, 3, torch.ones(2, 3), torch.full((4, 2), 0.5), torch.ones(4),
    ...                     inference="per_spot")
    >>> m.proportions(idx=torch.arange(4)).shape
    torch.Size([4, 2])
    >>> a = NMFDeconvModule(4, 3, torch.ones(2, 3), None, None)
    >>> a.proportions(torch.ones(5, 3)).sum(-1).detach()  # an encoder reads the counts
    tensor([1., 1., 1., 1., 1.])
    """

    _pyro_name = "nmfdeconv"

    def __init__(
        self,
        n_spots: int,
        n_genes: int,
        signatures: torch.Tensor,
        init_proportions: torch.Tensor | None,
        init_abundance: torch.Tensor | None,
        learn_signatures: bool = False,
        prior_concentration: float = 1.0,
        technology_sd: float = 0.5,
        inference: Literal["amortized", "per_spot"] = "amortized",
        gene_index: torch.Tensor | None = None,
        n_hidden: int = 128,
        n_layers: int = 1,
    ):
        super().__init__()
        if inference not in INFERENCE:
            raise ValueError(f"inference must be one of {INFERENCE}; got {inference!r}.")
        signatures = torch.as_tensor(signatures, dtype=torch.float32)
        n_types = signatures.shape[0]
        if signatures.shape != (n_types, n_genes):
            raise ValueError(
                f"signatures have shape {tuple(signatures.shape)}; expected (types, {n_genes})"
            )
        self.n_spots, self.n_genes, self.n_types = n_spots, n_genes, n_types
        self.inference_mode = inference
        self.prior_concentration = prior_concentration
        self.technology_sd = technology_sd
        log_signatures = torch.log(signatures.clamp_min(1e-8))
        if learn_signatures:
            self.log_signatures = torch.nn.Parameter(log_signatures)
        else:
            self.register_buffer("log_signatures", log_signatures)
        if gene_index is not None:
            gene_index = torch.as_tensor(gene_index).long()
        self.register_buffer("gene_index", gene_index)
        if inference == "per_spot":
            init = torch.as_tensor(init_proportions, dtype=torch.float32)
            self.proportion_logits = torch.nn.Parameter(torch.log(init.clamp_min(1e-4)))
            abundance = torch.as_tensor(init_abundance, dtype=torch.float32).clamp_min(1e-3)
            self.log_abundance = torch.nn.Parameter(torch.log(abundance))
        else:
            self.encoder = SpotEncoder(n_genes, n_types, n_hidden=n_hidden, n_layers=n_layers)
        self.log_technology = torch.nn.Parameter(torch.zeros(n_genes))
        self.log_theta = torch.nn.Parameter(torch.full((n_genes,), 2.0))

    # ----------------------------------------------------------------- shared pieces
    @property
    def amortized(self) -> bool:
        """Whether per-spot quantities come from the encoder."""
        return self.inference_mode == "amortized"

    @staticmethod
    def _get_fn_args_from_batch(tensor_dict):
        idx = tensor_dict.get(_IDX)
        return (tensor_dict[_X], None if idx is None else idx.long().view(-1)), {}

    @property
    def list_obs_plate_vars(self) -> dict:
        """Per-spot sites, so posterior sampling treats them as local."""
        return {"name": "cells", "in": [0], "sites": {"proportions": self.n_types}}

    def genes(self, x: torch.Tensor) -> torch.Tensor:
        """The columns of registered counts ``x`` the model uses."""
        return x if self.gene_index is None else x.index_select(-1, self.gene_index)

    def signatures(self) -> torch.Tensor:
        """Cell types x genes, expected counts per cell."""
        return torch.exp(self.log_signatures)

    def proportions(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None):
        """Proportions of spots: from their used-gene counts ``x`` (amortised) or their rows
        ``idx`` (per spot; every spot when ``idx`` is ``None``); each at least
        ``PROPORTION_FLOOR``, rows summing to 1."""
        if self.amortized:
            logits = self.encoder(x)
        else:
            logits = self.proportion_logits if idx is None else self.proportion_logits[idx]
        scale = 1.0 - self.n_types * PROPORTION_FLOOR
        return PROPORTION_FLOOR + scale * F.softmax(logits, dim=-1)

    def abundance(self, x, idx, proportions, technology) -> torch.Tensor:
        """Cells' worth of signal per spot (see the module docstring): per spot, its fitted
        value at ``idx``; amortised, read from counts ``x``, their ``proportions`` and the
        ``technology`` factor."""
        if not self.amortized:
            return torch.exp(self.log_abundance[idx])
        expected = ((proportions @ self.signatures()) * technology).sum(-1)
        return x.sum(-1) / expected.clamp_min(1e-8)

    def _mean(self, x, idx, proportions, technology):
        abundance = self.abundance(x, idx, proportions, technology).unsqueeze(-1)
        return abundance * (proportions @ self.signatures()) * technology

    # ----------------------------------------------------------------- Pyro program
    def model(self, x, idx, kl_weight: float = 1.0):
        """Generative model; ``kl_weight`` scales the prior terms."""
        pyro.module(self._pyro_name, self)
        x = self.genes(x)
        with poutine.scale(scale=kl_weight):
            technology = pyro.sample(
                "technology",
                self.log_normal_prior(x.new_empty(self.n_genes), self.technology_sd).to_event(1),
            )
        with self._cell_plate(x.shape[0]):
            with poutine.scale(scale=kl_weight):
                concentration = x.new_full((x.shape[0], self.n_types), self.prior_concentration)
                proportions = pyro.sample("proportions", pdist.Dirichlet(concentration))
            mean = self._mean(x, idx, proportions, technology)
            theta = torch.exp(self.log_theta)
            # The fused NB log-density: log-gamma terms at non-zero counts only.
            pyro.sample("obs", CountDistribution(mean, theta).to_event(1), obs=x)

    def guide(self, x, idx, kl_weight: float = 1.0):
        """Point masses at the current parameters (MAP)."""
        pyro.module(self._pyro_name, self)
        x = self.genes(x)
        pyro.sample("technology", pdist.Delta(torch.exp(self.log_technology), event_dim=1))
        with self._cell_plate(x.shape[0]):
            pyro.sample("proportions", pdist.Delta(self.proportions(x, idx), event_dim=1))

    # ----------------------------------------------------------------- torch side
    has_torch_elbo = True

    def negative_elbo(self, x, idx, kl_weight: float = 1.0):
        """The MAP objective of :meth:`model` and :meth:`guide` per spot (counts ``x``, spot
        indices ``idx``, ``kl_weight``), in one torch pass:
        Pyro's ``Trace_ELBO`` value and gradients (the point-mass guide adds nothing). The
        technology factor's log prior, a global term, is shared out over the ``n_obs`` spots
        the cell plate stands for. Logs ``reconstruction_loss`` and, as ``kl_local``, the
        negative log prior (a point mass's KL to the prior, less its constant entropy), so
        that the two add up to the objective as in the other models."""
        x = self.genes(x)
        proportions = self.proportions(x, idx)
        technology = torch.exp(self.log_technology)
        mean = self._mean(x, idx, proportions, technology)
        reconstruction = -count_log_prob(x, mean, torch.exp(self.log_theta)).sum(-1)
        concentration = torch.full_like(proportions, self.prior_concentration)
        log_prior = pdist.Dirichlet(concentration).log_prob(proportions)
        prior_tech = self.log_normal_prior(technology, self.technology_sd)
        log_prior_tech = prior_tech.log_prob(technology).sum()
        log_prior = log_prior + self.per_cell_share(log_prior_tech, x)
        terms = {"reconstruction_loss": reconstruction, "kl_local": -log_prior}
        return reconstruction - kl_weight * log_prior, terms

    def _get_inference_input(self, tensors, **kwargs):
        idx = tensors.get(_IDX)
        return {"x": tensors[_X], "idx": None if idx is None else idx.long().view(-1)}

    @auto_move_data
    def inference(self, x, idx=None, n_samples: int = 1):
        """The spots' proportions and abundance and the technology factor (point estimates).
        The guide is a point mass: ``n_samples > 1`` gives the same estimates on a first axis
        of draws (as the other modules give draws of their latents), so that a
        posterior-predictive ``sample`` draws counts ``n_samples`` times around them."""
        x = self.genes(x)
        proportions = self.proportions(x, idx)
        technology = torch.exp(self.log_technology)
        abundance = self.abundance(x, idx, proportions, technology)
        if n_samples > 1:
            proportions = proportions.expand(n_samples, *proportions.shape)
            abundance = abundance.expand(n_samples, *abundance.shape)
        return {
            "proportions": proportions,
            "abundance": abundance,
            "technology": technology,
            "idx": idx,
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        out = {k: inference_outputs[k] for k in ("proportions", "abundance", "technology")}
        return out

    def generative(self, proportions, abundance, technology):
        """p(x | proportions) as scvi-tools' negative binomial."""
        mean = abundance.unsqueeze(-1) * (proportions @ self.signatures()) * technology
        return {"px": NegativeBinomial(mu=mean, theta=torch.exp(self.log_theta))}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """Negative log-likelihood per spot (the point-mass guide has no KL term)."""
        x = self.genes(tensors[_X])
        px = generative_outputs["px"]
        reconstruction = -count_log_prob(x, px.mu, px.theta).sum(-1)
        return LossOutput(loss=reconstruction.mean(), reconstruction_loss=reconstruction)
