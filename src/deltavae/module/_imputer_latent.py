"""SpatialImputer's latent design (as gimVI) as a Pyro program; see :mod:`._imputer`.

Spot genes that no spot counts (a panel gene the platform never detects) are no evidence of
a spot's state or size: the encoder reads neither the spots' nor the reference cells' values
of them, and a spot's visible total is shared out over the genes with counts only.
"""

from __future__ import annotations

import pyro
import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro import poutine
from scvi.module.base import auto_move_data
from scvi.nn import FCLayers
from torch import nn
from torch.distributions import Normal

from ..distributions import negative_binomial
from ..nn import GaussianHeads
from ._imputer import _ImputerBase
from ._spot_encoder import log_cp10k


class ImputerLatentModule(_ImputerBase):
    """Pyro module of :class:`deltavae.model.SpatialImputer`, ``design="latent"``.

    Parameters
    ----------
    n_spots
        Number of spots.
    reference_counts
        Reference cells x all reference genes, raw counts (kept as a buffer; not in the
        state dict: the model's ``init_params_`` hold them, and ``load`` rebuilds it).
    visible
        Positions, among the reference genes, of the spots' genes (in the spots' order).
    n_latent, n_hidden, n_layers, dropout_rate
        Sizes of the shared encoder and of the decoder.
    technology_sd
        Prior standard deviation of the log platform factor.

    Examples
    --------
    >>> import torch
    >>> m = ImputerLatentModule(4, torch.ones(6, 5), torch.tensor([0, 2]))
    >>> m.expected(torch.ones(4, 2)).shape
    torch.Size([4, 5])
    """

    _pyro_name = "imputer_latent"

    def __init__(
        self,
        n_spots: int,
        reference_counts: torch.Tensor,
        visible: torch.Tensor,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        technology_sd: float = 0.5,
    ):
        reference_counts = torch.as_tensor(reference_counts, dtype=torch.float32)
        super().__init__(n_spots, reference_counts.shape[1], visible, technology_sd)
        self.n_latent = n_latent
        # Not persistent: saved as the model's init_params_ already (twice the file before).
        self.register_buffer("reference_counts", reference_counts, persistent=False)
        self.encoder = GaussianHeads(
            self.n_visible, {"z": n_latent}, [2], n_hidden, n_layers, dropout_rate
        )
        self.decoder = nn.Sequential(
            FCLayers(n_latent, n_hidden, n_layers=n_layers, n_hidden=n_hidden, dropout_rate=0),
            nn.Linear(n_hidden, self.n_genes),
        )
        self.log_theta_reference = nn.Parameter(torch.full((self.n_genes,), 2.0))
        self.log_theta = nn.Parameter(torch.full((self.n_visible,), 2.0))
        self._reference_batch: torch.Tensor | None = None

    def load_state_dict(self, state_dict, *args, **kwargs):
        """torch's ``load_state_dict`` (``args`` and ``kwargs`` passed on), leaving out the
        ``reference_counts`` of models saved when the reference was in the state dict (the
        model's ``init_params_`` hold them, and ``load`` builds the module with them)."""
        state_dict = {k: v for k, v in state_dict.items() if k != "reference_counts"}
        return super().load_state_dict(state_dict, *args, **kwargs)

    _uncounted_unobserved = True

    def _evidence(self, x_visible: torch.Tensor) -> torch.Tensor:
        """``x_visible`` (spots' or reference cells') on the observed visible genes, 0 on
        the others."""
        return x_visible * self.observed().to(x_visible.dtype)

    def _encode(self, x_visible: torch.Tensor, source: int):
        h = log_cp10k(self._evidence(x_visible))
        cat = torch.full((x_visible.shape[0], 1), source, dtype=torch.long, device=h.device)
        return self.encoder(h, cat)["z"]

    def _share(self, x_visible, rho, rho_visible) -> torch.Tensor:
        """n_s * rho / sum_v rho_v: the spots' visible total shared out as ``rho`` (platform
        factor included), total and sum over the visible genes with counts."""
        total = self._evidence(x_visible).sum(-1, keepdim=True)
        return total * rho / self._evidence(rho_visible).sum(-1, keepdim=True)

    def _spot_mean(self, x, z, technology):
        rho = F.softmax(self.decoder(z), dim=-1)[..., self.visible] * technology
        return self._share(x, rho, rho)

    @torch.no_grad()
    def expected(self, x: torch.Tensor) -> torch.Tensor:
        """Expected counts of every reference gene in spots with visible counts ``x``."""
        rho = F.softmax(self.decoder(self._encode(x, 0).loc), dim=-1) * self.technology()
        return self._share(x, rho, rho[:, self.visible])

    def model(self, x, idx, kl_weight: float = 1.0):
        """Generative model of the spots' visible genes and of a reference minibatch."""
        pyro.module(self._pyro_name, self)
        technology = self._tech_prior(x, kl_weight)
        with self._cell_plate(x.shape[0]):
            with poutine.scale(scale=kl_weight):
                z = pyro.sample(
                    "z",
                    pdist.Normal(x.new_zeros(self.n_latent), x.new_ones(self.n_latent)).to_event(1),
                )
            mean = self._spot_mean(x, z, technology)
            self._observe_visible(mean, x)
        batch = self._reference_batch
        r = self.reference_counts[batch]
        with pyro.plate("reference", size=len(self.reference_counts), subsample=batch):
            with poutine.scale(scale=kl_weight):
                zr = pyro.sample(
                    "z_ref",
                    pdist.Normal(x.new_zeros(self.n_latent), x.new_ones(self.n_latent)).to_event(1),
                )
            mean = r.sum(-1, keepdim=True) * F.softmax(self.decoder(zr), dim=-1)
            theta = torch.exp(self.log_theta_reference)
            pyro.sample("obs_ref", negative_binomial(mean, theta).to_event(1), obs=r)

    def guide(self, x, idx, kl_weight: float = 1.0):
        """q(z | visible counts, source) for the spots and for a reference minibatch."""
        pyro.module(self._pyro_name, self)
        self._tech_guide()
        with self._cell_plate(x.shape[0]):
            pyro.sample("z", pdist.Normal(*self._loc_scale(x, 0)).to_event(1))
        n_ref = len(self.reference_counts)
        batch = self._draw_reference_batch(x)
        self._reference_batch = batch  # the model, run after the guide, reads this minibatch
        r = self.reference_counts[batch][:, self.visible]
        with pyro.plate("reference", size=n_ref, subsample=batch):
            pyro.sample("z_ref", pdist.Normal(*self._loc_scale(r, 1)).to_event(1))

    def negative_elbo(self, x, idx, kl_weight: float = 1.0):
        """Per-spot ELBO of :meth:`model` and :meth:`guide` (``x``, ``idx``, ``kl_weight``) in
        one torch pass, a reference minibatch of as many cells drawn as the guide draws it."""
        qz = Normal(*self._loc_scale(x, 0))
        z = qz.rsample()
        n_ref = len(self.reference_counts)
        r = self.reference_counts[self._draw_reference_batch(x)]
        q_ref = Normal(*self._loc_scale(r[:, self.visible], 1))
        z_ref = q_ref.rsample()
        prior = Normal(0.0, 1.0)
        nll = self._visible_nll(self._spot_mean(x, z, torch.exp(self.log_technology)), x)
        mean_ref = r.sum(-1, keepdim=True) * F.softmax(self.decoder(z_ref), dim=-1)
        theta_ref = torch.exp(self.log_theta_reference)
        ref_nll = -negative_binomial(mean_ref, theta_ref).log_prob(r).sum(-1)
        ref = [ref_nll, q_ref.log_prob(z_ref).sum(-1), prior.log_prob(z_ref).sum(-1)]
        ref = [n_ref * term.mean() for term in ref]
        log_q, log_p = qz.log_prob(z).sum(-1), prior.log_prob(z).sum(-1)
        return self._objective(x, kl_weight, nll, log_q, log_p, ref)

    def _draw_reference_batch(self, x) -> torch.Tensor:
        """Rows of a reference minibatch as large as the spots' ``x`` (at most every cell),
        drawn as the guide and :meth:`negative_elbo` both draw it."""
        n_ref = len(self.reference_counts)
        return torch.randint(n_ref, (min(x.shape[0], n_ref),), device=x.device)

    def _loc_scale(self, x, source):
        q = self._encode(x, source)
        return q.loc, q.scale

    @auto_move_data
    def inference(self, x, idx, n_samples: int = 1, draw: bool = False, cell_draws=None):
        """The spots' latent posterior mean and expected visible counts; with ``draw``, z
        drawn from q(z | x) instead (``n_samples`` of them on a first axis when more than 1),
        as a posterior-predictive ``sample`` reads them (by ``cell_draws``, a ``CellDraws``,
        on the CPU spot after spot, when given)."""
        qz = self._encode(x, 0)
        shape = (n_samples,) if n_samples > 1 else ()
        if draw and cell_draws is not None:
            z = qz.loc + qz.scale * cell_draws.standard_normal(qz.loc, n_samples, "z")
        else:
            z = qz.sample(shape) if draw else qz.loc.expand(*shape, *qz.loc.shape)
        return {"z": z, "visible_mean": self._spot_mean(x, z, torch.exp(self.log_technology))}
