"""SpatialImputer: the genes a spot did not measure, from a single-cell reference, as Pyro programs.

Both designs read a spot's counts on the genes it shares with the reference (the *visible*
genes, ``v``) and predict every reference gene ``g``.

**Deconvolution** (the default). With reference profiles m_kg (expected counts of one cell of
reference state k: a cell type, a cluster or a single cell):

    gamma_v ~ LogNormal(0, technology_sd)            gene-wise platform factor (visible genes)
    p_s ~ Dirichlet(c * pi)                          the spot's share of each state
    a_s = exp(log_abundance_s)                       cells' worth of signal in the spot
    x_sv ~ NB(mean = a_s * gamma_v * sum_k p_sk m_kv, inverse dispersion theta_v)

The prior's mean composition pi and concentration c are fitted (empirical Bayes), so a spot
with few counts is drawn towards the tissue's usual composition. The guide is a Dirichlet
per spot, q(p_s) = Dirichlet(beta_s), and a point mass for gamma. The imputed expectation of
any gene is ``a_s * gamma_g * sum_k E_q[p_sk] m_kg``, with gamma_g the fitted factor for a
visible gene and the geometric mean of those with counts for the others (a gene's overall
scale on the spatial platform is not identifiable from the reference alone). The posterior
mean of the proportions, rather than their mode, imputed better on the benchmark's folds in a
prototype (benchmarks/README.md, "Gene imputation").

*Neighbour profiles* (optional, ``cells`` given). A cell type averages over substates its label
does not separate. Given the reference's single cells j (state k_j, normalised profile
r_jg / sum_v r_jv), a spot s is imputed with its own profile of each state,

    m_kg(s) = L_k * sum_{j in k} w_sj r_jg / sum_v r_jv,   w_sj = softmax_{j in k}(rho_sj / tau)

where rho_sj is the correlation of the log-normalised visible counts of spot s and cell j,
tau the temperature and L_k = sum_v m_kv (so m_k(s) has the state's visible total). Only the
readout changes: the proportions are those fitted with the state means.

**Latent** (a joint latent space, as gimVI). Reference cells c with counts r_c and library
l_c = sum_g r_cg, and spots s with visible counts x_s and visible total n_s:

    z ~ Normal(0, I)                                  for every cell and every spot
    rho(z) = softmax(f(z))                            a decoder over all reference genes
    r_cg ~ NB(l_c * rho_g(z_c), theta_g)              reference cells: every gene
    x_sv ~ NB(n_s * gamma_v rho_v(z_s) / sum_v' gamma_v' rho_v'(z_s), phi_v)   spots: visible

with q(z | x, source) amortised by one encoder on the visible genes' log-normalised counts.
The imputed expectation is ``n_s * gamma_g rho_g(z_s) / sum_v gamma_v rho_v(z_s)`` at the
posterior mean of z_s. Each training step adds a minibatch of reference cells (as many as
spots) to the spots' minibatch, drawn in the guide and read by the model.

In both designs, visible genes that no spot counts (a panel gene the platform never detects)
are no evidence of any spot: they are left out of the likelihood (and, in the latent design,
of n_s, of the sums over v and of the encoder's input, ``module/_imputer_latent.py``; in the
deconvolution's, of the neighbour correlations and of the abundances' start), and take the
unmeasured genes' factor. Read as zeros, they skewed the proportions towards the states that
do not express them (mean total variation to the truth 0.12 -> 0.16 with 10 such genes added
to 50 of pseudo-spots of 4 types).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro import poutine
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import LossOutput, auto_move_data
from torch import nn

from ..distributions import negative_binomial
from ._base import DeltaPyroModule
from ._spot_encoder import log_cp10k

_X = REGISTRY_KEYS.X_KEY
_IDX = REGISTRY_KEYS.INDICES_KEY


def unit_log(x: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of log-normalised counts (``log1p`` per 10,000), centred and scaled to norm 1: their
    dot products are correlations (of the ``columns`` of ``x`` only, when given)."""
    h = log_cp10k(x if columns is None else x[:, columns])
    h = h - h.mean(-1, keepdim=True)
    return h / (h.norm(dim=-1, keepdim=True) + 1e-12)


def _fn_args(tensor_dict):
    return (tensor_dict[_X], tensor_dict[_IDX].long().view(-1)), {}


class _ImputerBase(DeltaPyroModule):
    """What both designs share: the visible genes' positions and platform factor."""

    def __init__(self, n_spots: int, n_genes: int, visible: torch.Tensor, technology_sd: float):
        super().__init__()
        visible = torch.as_tensor(visible, dtype=torch.long)
        if visible.ndim != 1 or len(visible) == 0 or int(visible.max()) >= n_genes:
            raise ValueError(
                f"visible must index the {n_genes} reference genes; got {tuple(visible.shape)}"
            )
        self.n_spots, self.n_genes, self.n_visible = n_spots, n_genes, len(visible)
        self.technology_sd = technology_sd
        self.register_buffer("visible", visible)
        self.log_technology = nn.Parameter(torch.zeros(len(visible)))
        # Visible genes with counts in some spot: only they set the unmeasured genes' factor
        # (a panel gene the platform never counts fits a factor near 0, and lowered it).
        self.register_buffer("counted", torch.ones(len(visible), dtype=torch.bool))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A model saved before the mask existed took the mean over every visible gene.
        state_dict.setdefault(prefix + "counted", torch.ones_like(self.counted))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    _get_fn_args_from_batch = staticmethod(_fn_args)

    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors[_X], "idx": tensors[_IDX].long().view(-1)}

    #: Whether visible genes without counts in any spot are left out of the likelihood (and
    #: take the unmeasured genes' factor), as both designs do: no evidence of a spot.
    _uncounted_unobserved = False

    def observed(self) -> torch.Tensor:
        """Which visible genes the spots' likelihood reads (bool): all, or with
        ``_uncounted_unobserved`` those with counts in some spot (all if none has)."""
        if not self._uncounted_unobserved:
            return torch.ones_like(self.counted)
        return self.counted | ~self.counted.any()  # no host wait: every gene if none counted

    def technology(self) -> torch.Tensor:
        """Platform factor of every reference gene: fitted for the visible genes, their
        geometric mean (over those with counts in some spot) for the rest."""
        weight = (self.counted | ~self.counted.any()).to(self.log_technology.dtype)
        mean = (self.log_technology * weight).sum() / weight.sum()  # masks: no host wait
        log_tech = mean.expand(self.n_genes).clone()
        log_tech[self.visible] = torch.where(self.observed(), self.log_technology, mean)
        return torch.exp(log_tech)

    def _tech_prior(self, x, kl_weight):
        with poutine.scale(scale=kl_weight):
            return pyro.sample(
                "technology",
                self.log_normal_prior(x.new_empty(self.n_visible), self.technology_sd).to_event(1),
            )

    def _observe_visible(self, mean, x):
        theta = torch.exp(self.log_theta)
        counts = negative_binomial(mean, theta).mask(self.observed())
        pyro.sample("obs", counts.to_event(1), obs=x)

    def _tech_guide(self):
        pyro.sample("technology", pdist.Delta(torch.exp(self.log_technology), event_dim=1))

    # A torch-side ELBO per spot (see DeltaPyroModule.negative_elbo): from one seed, Pyro's
    # Trace_ELBO of model and guide. Global terms (the platform factor's log prior, a
    # reference minibatch standing for all reference cells) are shared out over the n_obs
    # spots the cell plate stands for. The guides' log densities are not under the KL
    # weight, the priors' are: the objective is nll + log q - kl_weight * log p, and the
    # logged kl_local is log q - log p.
    has_torch_elbo = True

    def _objective(self, x, kl_weight, nll, log_q, log_p, ref=(0.0, 0.0, 0.0)):
        """The per-spot objective and terms, with the global ones (``ref``: a reference
        minibatch's nll, log q and log p, summed over all reference cells) shared out."""
        tech = torch.exp(self.log_technology)
        log_p_tech = self.log_normal_prior(tech, self.technology_sd).log_prob(tech).sum()
        share = self.per_cell_share
        nll, log_q = nll + share(ref[0], x), log_q + share(ref[1], x)
        log_p = log_p + share(ref[2] + log_p_tech, x)
        terms = {"reconstruction_loss": nll, "kl_local": log_q - log_p}
        return nll + log_q - kl_weight * log_p, terms

    def _visible_nll(self, mean, x):
        log_prob = negative_binomial(mean, torch.exp(self.log_theta)).log_prob(x)
        return -(log_prob * self.observed()).sum(-1)

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {"mean": inference_outputs["visible_mean"]}

    def generative(self, mean):
        """p(x | latents) on the visible genes, as scvi-tools' negative binomial."""
        return {"px": NegativeBinomial(mu=mean, theta=torch.exp(self.log_theta))}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """Negative log-likelihood per spot of its visible genes (reconstruction only)."""
        log_prob = generative_outputs["px"].log_prob(tensors[_X])
        reconstruction = -(log_prob * self.observed()).sum(-1)
        return LossOutput(loss=reconstruction.mean(), reconstruction_loss=reconstruction)


class ImputerDeconvolutionModule(_ImputerBase):
    """Pyro module of :class:`deltavae.model.SpatialImputer`, ``design="deconvolution"``.

    Parameters
    ----------
    n_spots
        Number of spots (each has its own proportions and abundance).
    profiles
        Reference states x all reference genes, expected counts of one cell.
    visible
        Positions, among the profiles' genes, of the spots' genes (in the spots' order).
    technology_sd
        Prior standard deviation of the log platform factor.

    cells
        Reference single cells x all reference genes, raw counts, for neighbour profiles
        (``None``: the state profiles read out every spot). Kept in memory, not saved.
    cell_states
        State (row of ``profiles``) of every cell of ``cells``.
    temperature
        Temperature tau of the neighbour weights (on correlations).

    Examples
    --------
    >>> import torch
    >>> m = ImputerDeconvolutionModule(4, torch.ones(2, 5), torch.tensor([0, 2]))
    >>> m.expected(torch.arange(4)).shape
    torch.Size([4, 5])
    """

    _pyro_name = "imputer_deconvolution"
    _uncounted_unobserved = True

    def __init__(
        self,
        n_spots: int,
        profiles: torch.Tensor,
        visible: torch.Tensor,
        technology_sd: float = 0.5,
        cells: torch.Tensor | None = None,
        cell_states: torch.Tensor | None = None,
        temperature: float = 0.1,
    ):
        profiles = torch.as_tensor(profiles, dtype=torch.float32)
        super().__init__(n_spots, profiles.shape[1], visible, technology_sd)
        self.n_states = n_states = profiles.shape[0]
        self.register_buffer("log_profiles", torch.log(profiles.clamp_min(1e-8)))
        self.neighbours = cells is not None
        if self.neighbours:
            self._set_cells(cells, cell_states, temperature)
        self.log_concentration = nn.Parameter(torch.zeros(n_spots, n_states))
        self.prior_logits = nn.Parameter(torch.zeros(n_states))
        self.prior_log_total = nn.Parameter(torch.tensor(math.log(n_states)))
        self.log_abundance = nn.Parameter(torch.zeros(n_spots))
        self.log_theta = nn.Parameter(torch.full((self.n_visible,), 2.0))

    def start_abundance(self, spot_totals: torch.Tensor) -> None:
        """Each spot's starting abundance: ``spot_totals`` (visible) over a mean profile's
        (of the visible genes the likelihood reads: set ``counted`` first)."""
        profiles = torch.exp(self.log_profiles[:, self.visible])
        per_cell = torch.where(self.observed(), profiles, 0.0).sum(1).mean()
        start = torch.as_tensor(spot_totals, dtype=torch.float32) / per_cell
        with torch.no_grad():
            self.log_abundance.copy_(torch.log(start.clamp_min(1e-3)))

    def _set_cells(self, cells, cell_states, temperature: float) -> None:
        """Buffers (not saved) of the cells with counts on the visible genes."""
        cells = torch.as_tensor(cells, dtype=torch.float32)
        states = torch.as_tensor(cell_states, dtype=torch.long)
        if cells.shape[1] != self.n_genes or states.shape != (len(cells),):
            raise ValueError(
                f"cells must be cells x {self.n_genes} genes with one state each; got "
                f"{tuple(cells.shape)} and {tuple(states.shape)} states."
            )
        if len(states) and (int(states.min()) < 0 or int(states.max()) >= self.n_states):
            raise ValueError(f"cell_states must index the {self.n_states} states.")
        totals = cells[:, self.visible].sum(1)
        keep = totals > 0
        cells, states, totals = cells[keep], states[keep], totals[keep]
        self.temperature = float(temperature)
        self.register_buffer("cell_profiles", cells / totals[:, None], persistent=False)
        self.register_buffer("cell_states", states, persistent=False)
        self.register_buffer("cell_units", unit_log(cells[:, self.visible]), persistent=False)
        self.register_buffer("cell_visible", cells[:, self.visible], persistent=False)
        self._units_of = None  # the observed genes observed_cells were last made of
        has = torch.zeros(self.n_states, dtype=torch.bool)
        has[states] = True
        self.register_buffer("states_with_cells", has, persistent=False)

    def _best_of_states(self, logits: torch.Tensor) -> torch.Tensor:
        """Each state's largest of ``logits`` (spots x cells), -inf for a state without cells.
        Under deterministic algorithms, state by state: CUDA has no deterministic
        ``scatter_reduce`` and raises there."""
        if torch.are_deterministic_algorithms_enabled():
            others = [self.cell_states != k for k in range(self.n_states)]
            return torch.stack([logits.masked_fill(o, -torch.inf).amax(1) for o in others], 1)
        top = logits.new_full((len(logits), self.n_states), -torch.inf)
        index = self.cell_states.expand_as(logits)
        return top.scatter_reduce(1, index, logits, "amax", include_self=True)

    def neighbour_mixture(
        self, x: torch.Tensor, proportions: torch.Tensor, cells: tuple | None = None
    ) -> torch.Tensor:
        """sum_k p_sk m_k(s): the spots' mixtures of their own neighbour profiles.

        Parameters
        ----------
        x
            Visible counts of the spots (spots x visible genes).
        proportions
            Their shares of the states (spots x states).
        cells
            :meth:`observed_cells`, made once for a read-out's chunks (each making reads
            the observed genes' mask on the host: a GPU wait a chunk); made here if ``None``.
        """
        units, columns, scale, with_cells = self.observed_cells() if cells is None else cells
        logits = unit_log(x, columns) @ units.T / self.temperature  # spots x cells
        index = self.cell_states.expand_as(logits)
        weights = torch.exp(logits - self._best_of_states(logits)[:, self.cell_states])
        if scale is not None:  # cells without counts of the counted genes weigh nothing
            weights = weights * (scale > 0)
        sums = logits.new_zeros(len(x), self.n_states).scatter_add_(1, index, weights)
        profiles = torch.exp(self.log_profiles[:, self.visible])
        totals = torch.where(self.observed(), profiles, 0.0).sum(1)
        share = torch.where(with_cells, proportions * totals, 0.0)
        weights = weights * (share / sums.clamp_min(1e-30))[:, self.cell_states]
        if scale is not None:
            weights = weights * scale
        # States without usable cells keep their mean profile.
        rest = torch.where(with_cells, 0.0, proportions)
        return weights @ self.cell_profiles + rest @ torch.exp(self.log_profiles)

    def observed_cells(self):
        """The cells' unit log rows for the neighbour correlations, the visible columns they
        are of, each cell's scale to its total of them (0: none) and the states with cells
        of such counts (``None``, ``None``: every visible gene). A panel gene no spot counts
        says nothing of a spot: read as a 0 in every spot, it made the cells that express it
        look unlike every spot. So the correlations, and the totals a cell's and a state's
        profile are scaled to, are of the visible genes some spot counts (read-outs only:
        the host reads the mask)."""
        observed = self.observed()
        if bool(observed.all()):
            return self.cell_units, None, None, self.states_with_cells
        made = self._units_of  # remade for another mask, device or dtype (module.double())
        stale = made is None or made.device != observed.device
        stale = stale or self._observed[0].dtype != self.cell_visible.dtype
        if stale or not torch.equal(made, observed):
            columns = observed.nonzero().view(-1)
            counts = self.cell_visible[:, columns]
            totals = counts.sum(1)
            scale = self.cell_visible.sum(1) / torch.where(totals > 0, totals, 1.0)
            scale = torch.where(totals > 0, scale, 0.0)
            with_cells = torch.zeros_like(self.states_with_cells)
            with_cells[self.cell_states[totals > 0]] = True
            self._observed = unit_log(counts), columns, scale, with_cells
            self._units_of = observed.clone()
        return self._observed

    def concentration(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Dirichlet concentrations of q(p) of the spots ``idx`` (all spots when ``None``)."""
        log_beta = self.log_concentration if idx is None else self.log_concentration[idx]
        return torch.exp(log_beta).clamp_min(1e-3)

    def proportions(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean shares of the reference states in the spots ``idx``."""
        beta = self.concentration(idx)
        return beta / beta.sum(-1, keepdim=True)

    def prior_concentration(self) -> torch.Tensor:
        """c * pi: the fitted Dirichlet prior of the proportions."""
        return torch.exp(self.prior_log_total) * F.softmax(self.prior_logits, dim=-1)

    def _visible_mean(self, idx, proportions, technology):
        abundance = torch.exp(self.log_abundance[idx]).unsqueeze(-1)
        profiles = torch.exp(self.log_profiles[:, self.visible])
        return abundance * (proportions @ profiles) * technology

    @torch.no_grad()
    def expected(
        self, idx: torch.Tensor, x: torch.Tensor | None = None, cells: tuple | None = None
    ) -> torch.Tensor:
        """Expected counts of every reference gene in the spots ``idx``; with neighbour
        profiles, ``x`` holds their visible counts (and ``cells`` may hold
        :meth:`observed_cells`, see :meth:`neighbour_mixture`)."""
        abundance = torch.exp(self.log_abundance[idx]).unsqueeze(-1)
        if self.neighbours:
            if x is None:
                raise ValueError("neighbour profiles need the spots' visible counts x.")
            mixed = self.neighbour_mixture(x, self.proportions(idx), cells)
        else:
            mixed = self.proportions(idx) @ torch.exp(self.log_profiles)
        return abundance * mixed * self.technology()

    def model(self, x, idx, kl_weight: float = 1.0):
        """Generative model; ``kl_weight`` scales the prior terms."""
        pyro.module(self._pyro_name, self)
        technology = self._tech_prior(x, kl_weight)
        with self._cell_plate(x.shape[0]):
            with poutine.scale(scale=kl_weight):
                alpha = self.prior_concentration().expand(x.shape[0], self.n_states)
                proportions = pyro.sample("proportions", pdist.Dirichlet(alpha))
            mean = self._visible_mean(idx, proportions, technology)
            self._observe_visible(mean, x)

    def guide(self, x, idx, kl_weight: float = 1.0):
        """q(p_s) = Dirichlet(beta_s) per spot; a point mass for the platform factor."""
        pyro.module(self._pyro_name, self)
        self._tech_guide()
        with self._cell_plate(x.shape[0]):
            pyro.sample("proportions", pdist.Dirichlet(self.concentration(idx)))

    def negative_elbo(self, x, idx, kl_weight: float = 1.0):
        """Per-spot ELBO of :meth:`model` and :meth:`guide` (``x``, ``idx``, ``kl_weight``)."""
        q = pdist.Dirichlet(self.concentration(idx))
        proportions = q.rsample()
        alpha = self.prior_concentration().expand(x.shape[0], self.n_states)
        log_p = pdist.Dirichlet(alpha).log_prob(proportions)
        mean = self._visible_mean(idx, proportions, torch.exp(self.log_technology))
        nll = self._visible_nll(mean, x)
        return self._objective(x, kl_weight, nll, q.log_prob(proportions), log_p)

    @auto_move_data
    def inference(self, x, idx, n_samples: int = 1, draw: bool = False, cell_draws=None):
        """The spots' posterior mean proportions and their expected visible counts; with
        ``draw``, proportions drawn from q(p_s) instead (``n_samples`` of them on a first
        axis when more than 1), as a posterior-predictive ``sample`` reads them (by
        ``cell_draws``, a ``CellDraws``, on the CPU spot after spot, when given)."""
        if draw and cell_draws is not None:
            proportions = cell_draws.dirichlet(self.concentration(idx), n_samples, "proportions")
        elif draw:
            shape = (n_samples,) if n_samples > 1 else ()
            proportions = pdist.Dirichlet(self.concentration(idx)).sample(shape)
        else:
            proportions = self.proportions(idx)
            if n_samples > 1:
                proportions = proportions.expand(n_samples, *proportions.shape)
        technology = torch.exp(self.log_technology)
        return {
            "proportions": proportions,
            "visible_mean": self._visible_mean(idx, proportions, technology),
        }
