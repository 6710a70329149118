"""scvi-tools' ``get_likelihood_parameters``, ``get_latent_library_size`` and the denoised
draws of ``get_feature_correlation_matrix`` read without waiting for the device at each
minibatch.

scvi-tools 1.4 moves each minibatch's values to the CPU as it goes (the mean, dropout and
dispersion: 3 waits a minibatch on a GPU; the library and the gamma draws: 1). The same loops
here keep them on the device and bring them to the host together
(:class:`~deltavae.model._gathered.Gathered`), cells first, then put them back in scvi-tools'
layout (C-ordered arrays joined along the cells' axis), so that the numbers, and what numpy
computes from them after, are the same. The latents (z, a latent library) and the denoised
gammas are drawn on the CPU, cell after cell, where scvi-tools draws them on the model's
device: one seed gives the same values on a GPU as on the CPU, and for any ``batch_size``
(the gammas' parameters are brought to the host together, as the other values).
"""

from __future__ import annotations

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.data._utils import _validate_adata_dataloader_input
from scvi.model.base._vaemixin import unsupported_if_adata_minified

from .._checks import check_bool
from ..distributions._draws import CellDraws
from ._gathered import Gathered
from ._modes import latent_draws


def _loader(model, adata, indices, batch_size, dataloader, loader_kwargs: dict, trained=False):
    """scvi-tools' checks and data loader (``dataloader`` itself where given); ``trained``:
    its check that the model trained first, as its ``get_latent_library_size`` makes."""
    _validate_adata_dataloader_input(model, adata, dataloader)
    if dataloader is not None:
        return dataloader
    if trained:
        model._check_if_trained(warn=False)
    adata = model._validate_anndata(adata)
    return model._make_data_loader(
        adata=adata, indices=indices, batch_size=batch_size, **loader_kwargs
    )


def _joined(values: torch.Tensor, cells_axis: int) -> np.ndarray:
    """Values gathered cells first, as numpy's join along ``cells_axis`` of the minibatches'
    arrays gives them (a C-ordered array)."""
    return np.ascontiguousarray(values.movedim(0, cells_axis).numpy())


@torch.inference_mode()
def likelihood_parameters_on_host(
    model,
    adata=None,
    indices=None,
    n_samples: int | None = 1,
    give_mean: bool | None = False,
    batch_size: int | None = None,
    dataloader=None,
    **data_loader_kwargs,
) -> dict[str, np.ndarray]:
    """scvi-tools 1.4's ``RNASeqMixin.get_likelihood_parameters``: the same arguments and
    arrays (z drawn on the CPU)."""
    check_bool("give_mean", give_mean, none=True)  # "False" averaged the samples
    loader = _loader(model, adata, indices, batch_size, dataloader, data_loader_kwargs)
    likelihood = model.module.gene_likelihood
    gathered, gene_dispersion, cells = Gathered(), None, 0
    drawing = latent_draws(model.module, True)[0]  # z on the CPU, cell after cell
    for tensors in loader:
        _, generative_outputs = model.module.forward(
            tensors=tensors,
            inference_kwargs={"n_samples": n_samples, **drawing},
            compute_loss=False,
        )
        px = generative_outputs["px"]
        parts = {"mean": px.mu}
        if likelihood == "zinb":
            parts["dropout"] = px.zi_probs
        if likelihood != "poisson" and px.theta.dim() == 1:  # one per gene: repeated below
            gene_dispersion = px.theta
        elif likelihood != "poisson":
            parts["dispersions"] = px.theta
        cells += px.mu.size(0) if n_samples == 1 else px.mu.size(1)
        gathered.add(**{key: value.movedim(-2, 0) for key, value in parts.items()})
    got = {key: _joined(value, -2) for key, value in gathered.result().items()}
    if gene_dispersion is not None:
        got["dispersions"] = np.repeat(gene_dispersion.cpu().numpy()[np.newaxis, :], cells, 0)
    if give_mean and n_samples > 1:
        got = {key: value.mean(0) for key, value in got.items()}
    return {key: got[key] for key in ("mean", "dropout", "dispersions") if key in got}


@torch.inference_mode()
@unsupported_if_adata_minified
def library_sizes_on_host(
    model,
    adata=None,
    indices=None,
    give_mean: bool = True,
    batch_size: int | None = None,
    dataloader=None,
    **data_loader_kwargs,
) -> np.ndarray:
    """scvi-tools 1.4's ``RNASeqMixin.get_latent_library_size``: the same arguments and
    numbers (a latent library drawn on the CPU; for the mean, nothing drawn)."""
    check_bool("give_mean", give_mean)  # "False" gave the mean, not a draw
    loader = _loader(model, adata, indices, batch_size, dataloader, data_loader_kwargs, True)
    gathered = Gathered()
    # a drawn library on the CPU, cell after cell; for the mean, nothing drawn
    drawing = latent_draws(model.module, not give_mean)[0]
    for tensors in loader:
        outputs = model.module.inference(**model.module._get_inference_input(tensors), **drawing)
        if not give_mean:
            library = torch.exp(outputs["library"])
        elif outputs["ql"] is None:
            raise RuntimeError(
                "The module for this model does not compute the posterior distribution "
                "for the library size. Set `give_mean` to False to use the observed "
                "library size instead."
            )
        else:
            ql = outputs["ql"]
            library = torch.distributions.LogNormal(ql.loc, ql.scale).mean
        gathered.add(library=library)
    return gathered.result()["library"].numpy()


@torch.inference_mode()
def denoised_samples_on_host(
    model,
    adata=None,
    indices=None,
    n_samples: int = 25,
    batch_size: int = 64,
    rna_size_factor: int = 1000,
    transform_batch=None,
    dataloader=None,
    **data_loader_kwargs,
) -> np.ndarray:
    """scvi-tools 1.4's ``RNASeqMixin._get_denoised_samples`` (the gamma draws of
    ``get_feature_correlation_matrix``): the same arguments, layout and distribution, every
    number drawn on the CPU cell after cell (z and a latent library by
    ``_modes.latent_draws``, the gammas by the same ``CellDraws``' generator) where
    scvi-tools draws them on the model's device minibatch by minibatch: one seed, the same
    draws on a GPU as on the CPU, and for any ``batch_size``. Each call (each
    ``transform_batch`` of the matrix) seeds its own generators from torch's CPU generator."""
    loader = _loader(model, adata, indices, batch_size, dataloader, data_loader_kwargs)
    if dataloader is not None:
        transform_batch = None
    drawing = latent_draws(model.module, True)[0]
    draws = drawing["cell_draws"] if "cell_draws" in drawing else CellDraws()

    def drawn(part: dict) -> dict:  # on the host, cells first: each cell's gammas in turn
        rate = part.pop("rate")
        shape = part.pop("shape").contiguous()
        # torch's Gamma(shape, rate).sample(): a standard gamma over the rate, at least tiny
        value = draws.gamma(shape, "denoised").to(shape.dtype)
        value = (value / rate).clamp_(min=torch.finfo(shape.dtype).tiny)
        return {"drawn": value.permute(0, 2, 1) if n_samples > 1 else value}

    gathered = Gathered(drawn)
    for tensors in loader:
        x = tensors[REGISTRY_KEYS.X_KEY]
        _, generative_outputs = model.module.forward(
            tensors=tensors,
            inference_kwargs={"n_samples": n_samples, **drawing},
            generative_kwargs=model._get_transform_batch_gen_kwargs(transform_batch),
            compute_loss=False,
        )
        if "px" in generative_outputs:
            px_scale, px_r = generative_outputs["px"].scale, generative_outputs["px"].theta
        else:
            px_scale, px_r = generative_outputs["px_scale"], generative_outputs["px_r"]
        rate = rna_size_factor * px_scale
        dispersion = px_r if px_r.dim() == 2 else torch.ones_like(x).to(px_r.device) * px_r
        p = rate / (rate + dispersion)
        beta = (1 - p) / p
        shape = dispersion.expand_as(beta)
        # kept on the device, cells first, brought to the host together and drawn there
        if n_samples > 1:
            shape, beta = shape.transpose(0, 1), beta.transpose(0, 1)
        gathered.add(shape=shape, rate=beta)
    return gathered.result()["drawn"].numpy()
