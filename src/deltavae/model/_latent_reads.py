"""scvi-tools' ``get_latent_representation`` read without waiting for the device at each
minibatch, without drawing z where only its mean is read, and drawing it on the CPU where
it is drawn."""

from __future__ import annotations

import torch
from scvi.data._utils import _validate_adata_dataloader_input

from ._de_checks import check_draws
from ._modes import latent_draws
from ._validation import check_flags


@torch.inference_mode()
def latent_on_host(
    model,
    adata=None,
    indices=None,
    give_mean: bool = True,
    mc_samples: int = 5000,
    batch_size: int | None = None,
    return_dist: bool = False,
    dataloader=None,
    **data_loader_kwargs,
):
    """scvi-tools 1.4's ``VAEMixin.get_latent_representation`` (the same arguments and
    numbers; ``mc_samples`` is read for a logistic-normal latent only, which no deltavae
    model has), with each minibatch's values kept on the module's device and brought to the
    host once at the end: scvi-tools' ``.cpu()`` of each made the host wait for a GPU once a
    minibatch. Where only q(z | x)'s mean or variance is read (``give_mean``,
    ``return_dist``), the module's ``inference`` draws no z (``draw=False``, where it takes
    it): the values are the same, and the device's generator is left as it was. A draw
    (``give_mean=False``) is made on the CPU, cell after cell (``_modes.latent_draws``),
    where scvi-tools draws on the model's device: one seed, the same z on a GPU as on the
    CPU, and for any ``batch_size``."""
    # a Gaussian latent's mean needs no sampling, but a bad value is refused as every
    # count of draws is ("a" and 0 passed unnoticed)
    check_draws({"mc_samples": mc_samples}, ("mc_samples",))
    check_flags(give_mean=give_mean, return_dist=return_dist)  # "False" was True
    model._check_if_trained(warn=False)
    _validate_adata_dataloader_input(model, adata, dataloader)
    if dataloader is None:
        adata = model._validate_anndata(adata)
        dataloader = model._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size, **data_loader_kwargs
        )
    module = model.module
    drawing = latent_draws(module, not (give_mean or return_dist))[0]
    zs, means, variances = [], [], []
    for tensors in dataloader:
        outputs = module.inference(**module._get_inference_input(tensors), **drawing)
        qz = outputs["qz"]
        if return_dist:
            means.append(qz.loc)
            variances.append(qz.scale.square())
        else:
            zs.append(qz.loc if give_mean else outputs["z"])
    if return_dist:
        return torch.cat(means).cpu().numpy(), torch.cat(variances).cpu().numpy()
    return torch.cat(zs).cpu().numpy()
