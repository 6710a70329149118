"""scvi-tools' ``get_elbo``, ``get_reconstruction_error`` and ``get_marginal_ll`` as a user
reads them: results on the CPU, the marginal likelihood's mean over the cells, keywords
that scvi-tools hands to the module checked by name, and no argument that ``dataloader=``
makes scvi-tools drop (``indices``, ``batch_size``)."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import torch
from scvi.model.base import VAEMixin

from ._de_checks import check_dataloader_alone, check_draws
from ._latent_reads import latent_on_host
from ._loader_keywords import check_module_keywords
from ._marginal_reads import marginal_ll_on_host
from ._modes import latent_draws
from ._readout_docs import (
    ABUNDANCE_WRITTEN,
    AGGREGATED_ON_DEVICE,
    ELBO_DRAWS,
    IMPORTANCE_DRAWS,
    LATENT_DRAWS,
    MARGINAL_MEAN,
    ON_THE_CPU,
    RECONSTRUCTION_SIGN,
    with_latent_draws,
    with_note,
)
from ._validation import check_flags

__all__ = ["HostResultsMixin"]


def _on_host(value):
    """scvi-tools' results as a user reads them: tensors on the CPU, a 0-d one as a float
    (``np.float64``, a ``float`` with scvi-tools' ``.item()``)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return np.float64(value) if value.ndim == 0 else value
    if isinstance(value, dict):
        return {key: _on_host(item) for key, item in value.items()}
    return value


def _drawing_on_the_cpu(module, kwargs: dict) -> dict:
    """``kwargs`` of ``get_elbo`` or ``get_reconstruction_error`` with the module's
    ``inference`` given one ``CellDraws`` for every minibatch (``model/_modes.latent_draws``;
    a user's own ``inference_kwargs`` kept), where it takes one: the guide's latents drawn on
    the CPU, cell after cell, where scvi-tools' loop draws them on the module's device
    minibatch by minibatch (a GPU drew other values than the CPU under one seed, and
    ``batch_size`` changed them)."""
    draws = latent_draws(module, True)[0]
    if not draws:
        return kwargs
    return {**kwargs, "inference_kwargs": {**draws, **(kwargs.get("inference_kwargs") or {})}}


def _check_return_mean(call) -> None:
    """A ``return_mean`` that is not True or False refused by name: scvi-tools read
    ``"False"`` as a truth value and averaged over the cells."""
    if "return_mean" in call.arguments:
        check_flags(return_mean=call.arguments["return_mean"])


class HostResultsMixin:
    """scvi-tools' ``get_elbo`` and ``get_reconstruction_error`` with their results on the CPU,
    and ``get_marginal_ll``'s mean over the cells.

    scvi-tools returns them on the module's device: on a GPU, ``np.asarray(model.get_elbo(
    return_mean=False))`` or writing them to ``adata.obs`` failed where the CPU worked.
    """

    @functools.wraps(VAEMixin.get_elbo)
    def get_elbo(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        call = check_module_keywords(self, "get_elbo", VAEMixin.get_elbo, args, kwargs, "forward")
        check_dataloader_alone(call.arguments, "get_elbo")
        _check_return_mean(call)
        return _on_host(super().get_elbo(*args, **_drawing_on_the_cpu(self.module, kwargs)))

    @functools.wraps(VAEMixin.get_reconstruction_error)
    def get_reconstruction_error(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        method = VAEMixin.get_reconstruction_error
        name = "get_reconstruction_error"
        call = check_module_keywords(self, name, method, args, kwargs, "forward")
        check_dataloader_alone(call.arguments, name)
        _check_return_mean(call)
        kwargs = _drawing_on_the_cpu(self.module, kwargs)
        return _on_host(super().get_reconstruction_error(*args, **kwargs))

    @functools.wraps(VAEMixin.get_marginal_ll)
    def get_marginal_ll(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        # scvi-tools' return_mean averages the minibatches' means: a short last minibatch
        # weighed as much as a full one, and the result moved with batch_size.
        method = VAEMixin.get_marginal_ll
        call = check_module_keywords(self, "get_marginal_ll", method, args, kwargs, "marginal_ll")
        check_dataloader_alone(call.arguments, "get_marginal_ll")
        check_draws(call.arguments, ("n_mc_samples",))  # "3": '<' between str and int
        _check_return_mean(call)
        return_mean = call.arguments.pop("return_mean", True)
        # scvi-tools' loop, with the minibatches' values brought to the host together (a
        # .cpu() each made a GPU wait): the same arguments and numbers.
        per_cell = marginal_ll_on_host(*call.args, **call.kwargs)
        if not return_mean:  # per cell: on the CPU as get_elbo's (Gathered's already are)
            return _on_host(per_cell)
        # np.float64 as scvi-tools': a float that has .item() too.
        return np.float64(per_cell.double().mean())

    get_elbo.__doc__ = with_note(VAEMixin.get_elbo.__doc__, f"{ON_THE_CPU} {ELBO_DRAWS}")
    get_reconstruction_error.__doc__ = with_note(
        VAEMixin.get_reconstruction_error.__doc__, f"{RECONSTRUCTION_SIGN} {ELBO_DRAWS}"
    )
    get_marginal_ll.__doc__ = with_note(
        VAEMixin.get_marginal_ll.__doc__, f"{MARGINAL_MEAN} {IMPORTANCE_DRAWS}"
    )

    @functools.wraps(VAEMixin.get_latent_representation)
    def get_latent_representation(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        call = inspect.signature(VAEMixin.get_latent_representation).bind(self, *args, **kwargs)
        check_dataloader_alone(call.arguments, "get_latent_representation")
        return latent_on_host(self, *args, **kwargs)

    get_latent_representation.__doc__ = with_note(
        with_latent_draws(VAEMixin.get_latent_representation.__doc__), LATENT_DRAWS
    )

    @functools.wraps(VAEMixin.get_aggregated_posterior)
    def get_aggregated_posterior(self, adata=None, indices=None, batch_size=None, dof=3.0):  # noqa: D102
        from ._abundance import aggregated_posterior  # q(z)'s scale, not its variance

        return aggregated_posterior(self, adata, indices, batch_size, dof)

    get_aggregated_posterior.__doc__ = with_note(
        VAEMixin.get_aggregated_posterior.__doc__, AGGREGATED_ON_DEVICE
    )

    @functools.wraps(VAEMixin.differential_abundance)
    def differential_abundance(  # noqa: D102 - scvi-tools' docstring
        self, adata=None, sample_key=None, batch_size=128, num_cells_posterior=None, dof=None
    ):
        # The samples read from, and the result written into, adata as given (a query
        # model's: its query), not the copy the model reads.
        from ._abundance import differential_abundance

        return differential_abundance(self, adata, sample_key, batch_size, num_cells_posterior, dof)

    differential_abundance.__doc__ = with_note(
        VAEMixin.differential_abundance.__doc__, ABUNDANCE_WRITTEN
    )
