"""What every deltavae Pyro module shares: scvi-tools' torch-side forward and a device."""

from __future__ import annotations

import inspect
import math

import pyro
import pyro.distributions as pdist
import torch
from scvi.module.base import PyroBaseModuleClass, auto_move_data

from ..distributions import Likelihood
from ..distributions._draws import CellDraws


def clear_own_params() -> None:
    """Take deltavae's modules' parameters out of Pyro's global parameter store, where a module
    of the same kind registered before shares their names (``"zinbvae$$$..."``), and leave
    the rest: a user's own ``pyro.param`` values in the session stay (``pyro.clear_param_store``
    took them too)."""
    own, kinds = set(), [DeltaPyroModule]
    while kinds:
        kind = kinds.pop()
        own.add(getattr(kind, "_pyro_name", None))
        kinds.extend(kind.__subclasses__())
    store = pyro.get_param_store()
    for name in [name for name in store.keys() if name.split("$$$")[0] in own]:
        del store[name]


def lay_out_contiguously(module: torch.nn.Module) -> None:
    """Every parameter and buffer of ``module`` held contiguous (row-major), in place.

    A tensor built from a numpy array or a DataFrame keeps its memory layout (a DataFrame's
    values are often column-major), and ``load_state_dict`` copies values into the layout the
    constructor made. A matrix product reads the two layouts in another order of its sums: an
    NMFDeconv, whose signatures ``load`` rebuilt column-major, trained on after ``save`` and
    ``load`` to other last digits than the model it was saved from (Archetypes built its
    start column-major, and loaded it row-major).
    """
    for tensor in (*module.parameters(), *module.buffers()):
        if not tensor.is_contiguous():
            tensor.data = tensor.data.contiguous()


class DeltaPyroModule(PyroBaseModuleClass):
    """A Pyro module that also speaks scvi-tools' torch-side protocol.

    Subclasses write ``model``/``guide`` (the training objective) and ``_get_inference_input``,
    ``inference``, ``_get_generative_input``, ``generative`` and ``loss`` (deterministic
    evaluation). ``forward`` then runs the torch side, so scvi-tools' ``VAEMixin`` and
    ``RNASeqMixin`` (latents, normalized expression, differential expression, ELBO and
    reconstruction error) work unchanged.
    """

    clear_own_params = staticmethod(clear_own_params)

    #: Whether :meth:`negative_elbo` computes Pyro's ``Trace_ELBO`` of ``model`` and ``guide``
    #: in one torch pass (the training plan then uses it instead of tracing them).
    has_torch_elbo: bool = False
    #: Names among :meth:`negative_elbo`'s terms that are logged beside the ELBO, not in it.
    terms_beside_elbo: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        # Size of the cell plate; the training plan sets it to the number of training cells.
        self.n_obs: int | None = None

    def negative_elbo(self, *args, **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-cell negative ELBO of ``model`` and ``guide`` (with their arguments), one draw of
        the guide's latents, and its per-cell terms to log: ``reconstruction_loss`` and each
        local KL term (analytic where it has one).

        What Pyro's ``Trace_ELBO`` computes, per cell and without the cell plate's scaling,
        from the same random draws (value and gradients), for modules whose guide is
        reparameterised; set :attr:`has_torch_elbo` when a module has it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no torch-side ELBO.")

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        return next(self.parameters()).device

    def per_cell_share(self, term: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A global term of :meth:`negative_elbo` (a global prior, a term summed over all
        reference cells) as each cell of the minibatch ``x`` carries it: divided by the
        ``n_obs`` cells the cell plate stands for, so that the plan's mean over the minibatch
        gives it the ``1 / n_obs`` scale Pyro's ``Trace_ELBO`` gives a site outside the
        plate."""
        return term / (self.n_obs or x.shape[0])

    @staticmethod
    def log_normal_prior(like: torch.Tensor, sd: float) -> pdist.LogNormal:
        """LogNormal(0, ``sd``) of ``like``'s shape on its device (a technology factor's prior),
        ``sd`` filled there: as a number, torch would copy it to the device at every call, a
        wait for the device."""
        return pdist.LogNormal(torch.zeros_like(like), torch.full_like(like, sd))

    def on_load(self, model, **kwargs):
        """Loading needs no warm-up step: every parameter lives in the ``state_dict``."""
        clear_own_params()

    def _cell_plate(self, n_batch: int) -> pyro.plate:
        # An explicit subsample gives the n_obs / batch scaling without drawing random indices.
        size = self.n_obs or n_batch
        return pyro.plate("cells", size=size, subsample=torch.arange(n_batch, device=self.device))

    @auto_move_data
    def forward(
        self,
        tensors,
        get_inference_input_kwargs: dict | None = None,
        get_generative_input_kwargs: dict | None = None,
        inference_kwargs: dict | None = None,
        generative_kwargs: dict | None = None,
        loss_kwargs: dict | None = None,
        compute_loss: bool = True,
    ):
        """Torch-side pass with scvi-tools' ``BaseModuleClass.forward`` signature.

        As scvi-tools' own, it moves the minibatch to the module's device first (the models'
        data loaders do too, see ``DeltaModelMixin._make_data_loader``).
        """
        inference_inputs = self._get_inference_input(tensors, **(get_inference_input_kwargs or {}))
        inference_outputs = self.inference(**inference_inputs, **(inference_kwargs or {}))
        generative_inputs = self._get_generative_input(
            tensors, inference_outputs, **(get_generative_input_kwargs or {})
        )
        generative_outputs = self.generative(**generative_inputs, **(generative_kwargs or {}))
        if not compute_loss:
            return inference_outputs, generative_outputs
        losses = self.loss(tensors, inference_outputs, generative_outputs, **(loss_kwargs or {}))
        return inference_outputs, generative_outputs, losses

    @property
    def gene_likelihood(self) -> str:
        """The observation likelihood, under scvi-tools' name for it."""
        return self.likelihood

    @torch.inference_mode()
    def sample(
        self, tensors, n_samples: int = 1, generative_kwargs: dict | None = None
    ) -> torch.Tensor:
        """Draws from the posterior predictive p(x | z) with z ~ q(z | x), on the CPU.

        Shape ``(cells, features)``, or ``(cells, features, n_samples)`` when
        ``n_samples > 1``, as scvi-tools' modules return it. The features are those the
        module's likelihood reads: the spot models' genes they fit (an NMFDeconv's
        ``gene_index``, a SpatialImputer's panel), each spot's latents drawn from the guide
        (NMFDeconv's is a point mass: its draws differ by the counts' noise only).
        """
        return self.predictive_draws(tensors, n_samples, generative_kwargs).cpu()

    @torch.inference_mode()
    def predictive_draws(
        self,
        tensors,
        n_samples: int = 1,
        generative_kwargs: dict | None = None,
        cell_draws: CellDraws | None = None,
    ) -> torch.Tensor:
        """:meth:`sample`'s draws on the module's device: a read-out of many minibatches
        brings them to the host together (a ``.cpu()`` each made a GPU wait).

        Parameters
        ----------
        tensors
            A minibatch, as scvi-tools' data loaders give it.
        n_samples
            Draws of z per cell (a last axis of draws when more than 1).
        generative_kwargs
            Keywords of the module's ``generative`` (``transform_batch``).
        cell_draws
            Draw every random number from these CPU generators, cell after cell (the
            latents, where the module's ``inference`` takes ``cell_draws``, then the counts
            or values: :meth:`predictive_parameters` and ``drawn_from``), the draws then on
            the CPU: one seed, the same draws on a GPU as on the CPU and for any minibatches.
        """
        if cell_draws is not None:
            params = self.predictive_parameters(tensors, n_samples, generative_kwargs, cell_draws)
            return drawn_from(params, n_samples, cell_draws)
        px = self._predictive_px(tensors, n_samples, generative_kwargs, None)
        draws = px.sample()
        if n_samples > 1:
            draws = draws.permute(1, 2, 0)
        return draws

    @torch.inference_mode()
    def predictive_parameters(
        self,
        tensors,
        n_samples: int = 1,
        generative_kwargs: dict | None = None,
        cell_draws: CellDraws | None = None,
    ) -> dict[str, torch.Tensor]:
        """The parameters of p(x | z) that ``drawn_from`` draws the posterior predictive
        from (a negative binomial's ``mu``, ``theta`` and ``zi_logits``; a normal's ``loc``
        and ``scale``; a Bernoulli's ``logits``), cells first (a second axis of ``n_samples``
        draws when more than 1), on the module's device: a read-out gathers them there and
        draws on the host a part of many minibatches at a time.

        Parameters
        ----------
        tensors
            A minibatch, as scvi-tools' data loaders give it.
        n_samples
            Draws of z per cell.
        generative_kwargs
            Keywords of the module's ``generative`` (``transform_batch``).
        cell_draws
            The CPU generators z (and the modules' other latents) are drawn from, cell after
            cell, where the module's ``inference`` takes them (``None``: on the device).
        """
        px = self._predictive_px(tensors, n_samples, generative_kwargs, cell_draws)
        if isinstance(px, torch.distributions.Normal):
            params = {"loc": px.loc, "scale": px.scale.expand_as(px.loc)}
        elif isinstance(px, torch.distributions.Bernoulli):
            params = {"logits": px.logits}
        else:  # scvi-tools' negative binomial, zero-inflated or not
            params = {"mu": px.mu, "theta": px.theta.expand_as(px.mu)}
            if getattr(px, "zi_logits", None) is not None:
                params["zi_logits"] = px.zi_logits.expand_as(px.mu)
        # cells first: each cell's draws together, whatever the minibatches
        return {k: v.transpose(0, 1) if n_samples > 1 else v for k, v in params.items()}

    def _predictive_px(self, tensors, n_samples, generative_kwargs, cell_draws):
        """p(x | z) of z drawn from q (by ``cell_draws`` where ``inference`` takes it)."""
        # Every module's inference takes n_samples; those whose inference gives the
        # posterior mean by default (the spot imputers') are told to draw.
        inference_kwargs = {"n_samples": n_samples}
        takes = inspect.signature(self.inference).parameters
        if "draw" in takes:
            inference_kwargs["draw"] = True
        if cell_draws is not None and "cell_draws" in takes:
            inference_kwargs["cell_draws"] = cell_draws
        _, generative_outputs = self.forward(
            tensors,
            inference_kwargs=inference_kwargs,
            generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        return generative_outputs["px"]

    def log_importance_weights(
        self, tensors, n_samples: int, cell_draws: CellDraws | None = None
    ) -> torch.Tensor:
        """log p(x, latents) - log q(latents | x) for ``n_samples`` draws of the guide's
        latents, shape ``(n_samples, cells)``: the importance weights of :meth:`marginal_ll`.
        ``tensors`` is a minibatch as scvi-tools' data loaders give it; ``cell_draws`` (a
        ``CellDraws``): the latents drawn on the CPU cell after cell (``None``: on the
        module's device)."""
        raise NotImplementedError(f"{type(self).__name__} has no importance weights.")

    @torch.inference_mode()
    @auto_move_data
    def marginal_ll(
        self,
        tensors,
        n_mc_samples: int,
        return_mean: bool = False,
        n_mc_samples_per_pass: int = 1,
    ):
        """log p(x) of each cell of the minibatch ``tensors`` by importance sampling with the
        guide as proposal.

        log p(x) ~ logsumexp_k [log p(x, h_k) - log q(h_k | x)] - log K with K = ``n_mc_samples``
        draws h_k ~ q(h | x), taken ``n_mc_samples_per_pass`` at a time. Returns a CPU tensor
        ``(cells,)``, or its mean as a float with ``return_mean``, as scvi-tools' modules do
        (:meth:`log_marginal` keeps it on the module's device).
        """
        log_px = self.log_marginal(tensors, n_mc_samples, n_mc_samples_per_pass)
        return float(log_px.mean()) if return_mean else log_px.cpu()

    @torch.inference_mode()
    @auto_move_data
    def log_marginal(
        self,
        tensors,
        n_mc_samples: int,
        n_mc_samples_per_pass: int = 1,
        cell_draws: CellDraws | None = None,
    ) -> torch.Tensor:
        """:meth:`marginal_ll`'s per-cell values on the module's device: a read-out of many
        minibatches brings them to the host together (a ``.cpu()`` each made a GPU wait).

        Parameters
        ----------
        tensors
            A minibatch, as scvi-tools' data loaders give it.
        n_mc_samples
            Draws of the guide's latents per cell.
        n_mc_samples_per_pass
            Of those, drawn in one pass.
        cell_draws
            The CPU generators the guide's latents are drawn from, cell after cell (each
            pass its own: ``CellDraws.part``), one for every minibatch of a read-out: the
            same draws on a GPU as on the CPU and for any minibatches (``None``: drawn on
            the module's device, as scvi-tools draws them).
        """
        if n_mc_samples < 1 or n_mc_samples_per_pass < 1:
            raise ValueError(
                f"n_mc_samples and n_mc_samples_per_pass must be >= 1; got {n_mc_samples}, "
                f"{n_mc_samples_per_pass}."
            )
        weights, left = [], n_mc_samples
        while left > 0:
            k = min(left, n_mc_samples_per_pass)
            part = None if cell_draws is None else cell_draws.part(len(weights))
            weights.append(self.log_importance_weights(tensors, k, part))
            left -= k
        return torch.logsumexp(torch.cat(weights), dim=0) - math.log(n_mc_samples)


def drawn_from(params: dict, n_samples: int, cell_draws: CellDraws) -> torch.Tensor:
    """Draws of p(x | z) of :meth:`DeltaPyroModule.predictive_parameters`' ``params`` (of
    cells in any parts, in cell order) made on the CPU by ``cell_draws`` cell after cell,
    laid out as :meth:`DeltaPyroModule.predictive_draws`: cells x features (x draws). Counts
    are :meth:`CellDraws.sample`'s; a normal's noise is the quantile of uniforms
    (:meth:`CellDraws.elementwise_normal`), which parts of any size read alike (``randn``
    fills 16 values at a time)."""
    cpu = {key: value.detach().cpu().contiguous() for key, value in params.items()}
    if "loc" in cpu:
        loc = cpu["loc"]
        draws = loc + cpu["scale"] * cell_draws.elementwise_normal(loc.shape, "x").to(loc.dtype)
    elif "logits" in cpu:
        draws = cell_draws.sample(Likelihood("bernoulli"), {"out": cpu["logits"]})
    else:
        likelihood = Likelihood("zinb" if "zi_logits" in cpu else "nb")
        draws = cell_draws.sample(likelihood, cpu)
    return draws.permute(0, 2, 1) if n_samples > 1 else draws
