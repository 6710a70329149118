"""scvi-tools' ``get_marginal_ll`` loop with each minibatch's log p(x) kept on the module's
device and brought to the host once: the module's ``marginal_ll`` returns a CPU tensor (as
scvi-tools' modules do), whose ``.cpu()`` made the host wait for a GPU once a minibatch. The
guide's latents are drawn on the CPU, cell after cell, where the module's ``inference`` takes
``cell_draws`` (``model/_modes.latent_draws``)."""

from __future__ import annotations

import torch
from scvi.model.base._vaemixin import unsupported_if_adata_minified

from ._gathered import Gathered
from ._modes import latent_draws
from ._parameter_reads import _loader


@torch.inference_mode()
@unsupported_if_adata_minified
def marginal_ll_on_host(
    model,
    adata=None,
    indices=None,
    n_mc_samples: int = 1_000,
    batch_size: int | None = None,
    dataloader=None,
    data_loader_kwargs: dict | None = None,
    **kwargs,
) -> torch.Tensor:
    """log p(x) of each cell, on the CPU: scvi-tools 1.4's ``VAEMixin.get_marginal_ll`` with
    ``return_mean=False`` (the same arguments, loader and numbers; ``kwargs`` go to the
    module's ``log_marginal``, which takes ``marginal_ll``'s but ``return_mean``), but the
    importance draws of the guide's latents: made on the CPU, cell after cell, by one
    ``CellDraws`` for every minibatch (seeded from torch's CPU generator), where scvi-tools
    draws them on the module's device minibatch by minibatch (a GPU drew other values than
    the CPU under one seed, and ``batch_size`` changed them)."""
    if not hasattr(model.module, "log_marginal"):
        raise NotImplementedError(
            "The model's module must implement `marginal_ll` to compute the marginal "
            "log-likelihood."
        )
    loader = _loader(model, adata, indices, batch_size, dataloader, data_loader_kwargs or {})
    draws = latent_draws(model.module, True)[0]  # {} where inference draws on the device
    gathered = Gathered()
    for tensors in loader:
        log_px = model.module.log_marginal(tensors, n_mc_samples, **kwargs, **draws)
        gathered.add(log_px=log_px)
    return gathered.result()["log_px"]
