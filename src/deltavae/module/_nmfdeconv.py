"""NMFDeconv: spots as non-negative mixtures of cell-type signatures, as a Pyro program.

For spot s, gene g and cell types t with signatures m_tg (expected counts of one cell of
type t in the reference):

    gamma_g ~ LogNormal(0, technology_sd)            gene-wise technology factor
    p_s ~ Dirichlet(prior_concentration * 1)         cell-type proportions (the simplex)
    a_s = exp(log_abundance_s)                       cells' worth of signal in the spot
    x_sg ~ NB(mean = a_s * gamma_g * sum_t p_st m_tg, inverse dispersion theta_g)

Because m_t is counts per *cell*, p_s are cell fractions, not RNA fractions. Reference-free,
the signatures are parameters too. The guide is a point mass (MAP) for every site, with
per-spot parameters indexed by the spot's position in the AnnData.
"""

from __future__ import annotations

import pyro
import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro import poutine
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import LossOutput, auto_move_data

from ..distributions import negative_binomial
from ._base import DeltaPyroModule

_X = REGISTRY_KEYS.X_KEY
_IDX = REGISTRY_KEYS.INDICES_KEY


class NMFDeconvModule(DeltaPyroModule):
    """Pyro module of :class:`deltavae.model.NMFDeconv`.

    Parameters
    ----------
    n_spots, n_genes
        Size of the spot count matrix.
    signatures
        Cell types x genes, expected counts per cell (initial values when ``learn_signatures``).
    init_proportions
        Spots x types starting proportions (rows on the simplex).
    init_abundance
        Starting abundance per spot.
    learn_signatures
        Fit the signatures too (reference-free mode).
    prior_concentration
        Symmetric Dirichlet concentration of the proportions (1: flat; below 1: sparse).
    technology_sd
        Standard deviation of the log technology factor.

    Examples
    --------
    >>> import torch
    >>> m = NMFDeconvModule(4, 3, torch.ones(2, 3), torch.full((4, 2), 0.5), torch.ones(4))
    >>> m.proportions().shape
    torch.Size([4, 2])
    """

    _pyro_name = "nmfdeconv"

    def __init__(
        self,
        n_spots: int,
        n_genes: int,
        signatures: torch.Tensor,
        init_proportions: torch.Tensor,
        init_abundance: torch.Tensor,
        learn_signatures: bool = False,
        prior_concentration: float = 1.0,
        technology_sd: float = 0.5,
    ):
        super().__init__()
        signatures = torch.as_tensor(signatures, dtype=torch.float32)
        n_types = signatures.shape[0]
        if signatures.shape != (n_types, n_genes):
            raise ValueError(
                f"signatures have shape {tuple(signatures.shape)}; expected (types, {n_genes})"
            )
        self.n_spots, self.n_genes, self.n_types = n_spots, n_genes, n_types
        self.prior_concentration = prior_concentration
        self.technology_sd = technology_sd
        log_signatures = torch.log(signatures.clamp_min(1e-8))
        if learn_signatures:
            self.log_signatures = torch.nn.Parameter(log_signatures)
        else:
            self.register_buffer("log_signatures", log_signatures)
        init = torch.as_tensor(init_proportions, dtype=torch.float32)
        self.proportion_logits = torch.nn.Parameter(torch.log(init.clamp_min(1e-4)))
        abundance = torch.as_tensor(init_abundance, dtype=torch.float32).clamp_min(1e-3)
        self.log_abundance = torch.nn.Parameter(torch.log(abundance))
        self.log_technology = torch.nn.Parameter(torch.zeros(n_genes))
        self.log_theta = torch.nn.Parameter(torch.full((n_genes,), 2.0))

    # ----------------------------------------------------------------- shared pieces
    @staticmethod
    def _get_fn_args_from_batch(tensor_dict):
        return (tensor_dict[_X], tensor_dict[_IDX].long().view(-1)), {}

    @property
    def list_obs_plate_vars(self) -> dict:
        """Per-spot sites, so posterior sampling treats them as local."""
        return {"name": "cells", "in": [0], "sites": {"proportions": self.n_types}}

    def signatures(self) -> torch.Tensor:
        """Cell types x genes, expected counts per cell."""
        return torch.exp(self.log_signatures)

    def proportions(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Proportions of the spots ``idx`` (all spots when ``None``)."""
        logits = self.proportion_logits if idx is None else self.proportion_logits[idx]
        return F.softmax(logits, dim=-1)

    def _mean(self, idx, proportions, technology):
        abundance = torch.exp(self.log_abundance[idx]).unsqueeze(-1)
        return abundance * (proportions @ self.signatures()) * technology

    # ----------------------------------------------------------------- Pyro program
    def model(self, x, idx, kl_weight: float = 1.0):
        """Generative model; ``kl_weight`` scales the prior terms."""
        pyro.module(self._pyro_name, self)
        with poutine.scale(scale=kl_weight):
            technology = pyro.sample(
                "technology",
                pdist.LogNormal(x.new_zeros(self.n_genes), self.technology_sd).to_event(1),
            )
        with self._cell_plate(x.shape[0]):
            with poutine.scale(scale=kl_weight):
                concentration = x.new_full((x.shape[0], self.n_types), self.prior_concentration)
                proportions = pyro.sample("proportions", pdist.Dirichlet(concentration))
            mean = self._mean(idx, proportions, technology)
            theta = torch.exp(self.log_theta)
            pyro.sample("obs", negative_binomial(mean, theta).to_event(1), obs=x)

    def guide(self, x, idx, kl_weight: float = 1.0):
        """Point masses at the current parameters (MAP)."""
        pyro.module(self._pyro_name, self)
        pyro.sample("technology", pdist.Delta(torch.exp(self.log_technology), event_dim=1))
        with self._cell_plate(x.shape[0]):
            pyro.sample("proportions", pdist.Delta(self.proportions(idx), event_dim=1))

    # ----------------------------------------------------------------- torch side
    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors[_X], "idx": tensors[_IDX].long().view(-1)}

    @auto_move_data
    def inference(self, x, idx):
        """The spots' proportions and the technology factor (point estimates)."""
        return {
            "proportions": self.proportions(idx),
            "technology": torch.exp(self.log_technology),
            "idx": idx,
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {k: inference_outputs[k] for k in ("proportions", "technology", "idx")}

    def generative(self, proportions, technology, idx):
        """p(x | proportions) as scvi-tools' negative binomial."""
        mean = self._mean(idx, proportions, technology)
        return {"px": NegativeBinomial(mu=mean, theta=torch.exp(self.log_theta))}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """Negative log-likelihood per spot (the point-mass guide has no KL term)."""
        reconstruction = -generative_outputs["px"].log_prob(tensors[_X]).sum(-1)
        return LossOutput(loss=reconstruction.mean(), reconstruction_loss=reconstruction)
