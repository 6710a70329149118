"""scvi-tools' ``get_normalized_expression`` read without waiting for the device at each
minibatch.

scvi-tools 1.4 moves each minibatch's expression (one per ``transform_batch``) and z to the
CPU as it goes: on a GPU each ``.cpu()`` made the host wait for the device before it queued
the next minibatch (20 waits over 10 minibatches). Here the same loop keeps them on the
device and brings them to the host together (:class:`~deltavae.model._gathered.Gathered`);
the mean over ``transform_batch`` is then taken on the host a minibatch at a time, as
scvi-tools takes it. z (and a latent library) is drawn on the CPU, cell after cell, where
scvi-tools draws it on the model's device minibatch by minibatch: one seed gives the same
values on a GPU as on the CPU, and for any ``batch_size``. No library offers the loop apart
from the copies.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from scvi import settings
from scvi.data._utils import _validate_adata_dataloader_input
from scvi.model._utils import _get_batch_code_from_category
from scvi.utils import track

from .._checks import check_bool
from ._gathered import Gathered
from ._modes import latent_draws


@torch.inference_mode()
def normalized_on_host(
    model,
    adata=None,
    indices=None,
    transform_batch=None,
    gene_list=None,
    library_size=1,
    n_samples: int = 1,
    n_samples_overall: int | None = None,
    weights=None,
    batch_size: int | None = None,
    return_mean: bool = True,
    return_numpy: bool | None = None,
    silent: bool = True,
    dataloader=None,
    data_loader_kwargs: dict | None = None,
    **importance_weighting_kwargs,
):
    """scvi-tools 1.4's ``RNASeqMixin.get_normalized_expression`` (the same arguments and
    results), each minibatch's values brought to the host together rather than one at a
    time, and z drawn on the CPU cell after cell (``_modes.latent_draws``)
    where scvi-tools draws it on the model's device. With importance weights
    (``weights="importance"`` and ``n_samples_overall``) the posteriors, z and the count
    distributions of the same loop are kept for scvi-tools' ``get_importance_weights``, as its
    own loop keeps them: the weights are of the z drawn on the CPU."""
    for name, flag in {"return_mean": return_mean, "silent": silent}.items():
        check_bool(name, flag)  # return_mean="False" averaged the samples
    check_bool("return_numpy", return_numpy, none=True)  # "False": an array, not a DataFrame
    _validate_adata_dataloader_input(model, adata, dataloader)
    if dataloader is None:
        adata = model._validate_anndata(adata)
        if indices is None:
            indices = np.arange(adata.n_obs)
        if n_samples_overall is not None:
            assert n_samples == 1  # default value, as scvi-tools asserts
            n_samples = n_samples_overall // len(indices) + 1
        loader = model._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size, **(data_loader_kwargs or {})
        )
        transform_batch = _get_batch_code_from_category(
            model.get_anndata_manager(adata, required=True), transform_batch
        )
        gene_mask = slice(None) if gene_list is None else adata.var_names.isin(gene_list)
    else:
        loader, gene_mask, transform_batch = dataloader, slice(None), [None]
    if n_samples > 1 and return_mean is False:
        if return_numpy is False:
            warnings.warn(
                "`return_numpy` must be `True` if `n_samples > 1` and `return_mean` "
                "is`False`, returning an `np.ndarray`.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )
        return_numpy = True
    key, scaling = ("mu", 1) if library_size == "latent" else ("scale", library_size)
    cell_axis = 1 if n_samples > 1 else 0
    importance = weights == "importance" and n_samples_overall is not None
    if importance and dataloader is not None:  # scvi-tools failed on len(None)
        raise ValueError(
            "get_normalized_expression(weights='importance') weighs the cells by their marginal "
            "likelihoods, read from adata and indices, which dataloader= does not give. Pass "
            "adata= and indices= instead of dataloader=, or weights='uniform'."
        )
    if importance and len(transform_batch) > 1:  # scvi-tools' refusal
        raise NotImplementedError(
            "Importance weights cannot be computed when expression levels are averaged across "
            "batches."
        )
    kept = Gathered()  # for importance weights: each minibatch's qz, z and px, cells first
    # z (and a latent library) drawn on the CPU, cell after cell, each transform_batch by
    # generators of its own: the same values on a GPU as on the CPU, for any batch_size.
    drawing = latent_draws(model.module, True, len(transform_batch))
    gathered, sizes = Gathered(), []
    for tensors in loader:
        exprs = {}
        for i, batch in enumerate(track(transform_batch, disable=silent)):
            inference_outputs, generative_outputs = model.module.forward(
                tensors=tensors,
                inference_kwargs={"n_samples": n_samples, **drawing[i]},
                generative_kwargs=model._get_transform_batch_gen_kwargs(batch),
                compute_loss=False,
            )
            px = generative_outputs["px"]
            expr = px if isinstance(px, torch.Tensor) else px.get_normalized(key)
            expr = expr[..., gene_mask]
            # px's scale itself where scaled in place: importance weights read it after
            expr = expr * scaling if importance else expr.mul_(scaling)
            exprs[f"expr{i}"] = expr.transpose(0, 1) if cell_axis else expr  # cells first
            if importance:
                kept.add(**_distributions(inference_outputs, px, cell_axis))
                px_type = type(px)
        sizes.append(len(exprs["expr0"]))
        gathered.add(**exprs)
    exprs = _batch_means(gathered.parts(), sizes, cell_axis)
    if n_samples_overall is not None:  # draws of cells
        exprs = exprs.reshape(-1, exprs.shape[-1])
        p = None  # scvi-tools' uniform weights
        if importance:
            p = model.get_importance_weights(
                adata, indices, **_joined_distributions(kept.result(), cell_axis, px_type),
                **importance_weighting_kwargs,
            )  # fmt: skip
        # numpy's global generator, as scvi-tools draws them (scvi.settings.seed seeds it)
        drawn = np.random.choice(exprs.shape[0], n_samples_overall, p=p, replace=True)  # noqa: NPY002
        exprs = exprs[drawn]
    elif n_samples > 1 and return_mean:
        exprs = exprs.mean(0)
    if (return_numpy is None or return_numpy is False) and dataloader is None:
        return pd.DataFrame(
            exprs, columns=adata.var_names[gene_mask], index=adata.obs_names[indices]
        )
    return exprs


def _distributions(inference_outputs: dict, px, cell_axis: int) -> dict:
    """A minibatch's posterior of z (``qz``'s parameters), its z and the parameters of its
    count distribution ``px``, each cells first, by name, for :class:`Gathered`."""

    def cells_first(value):
        return value.transpose(0, 1) if cell_axis else value

    qz = inference_outputs["qz"]
    return {
        "qz_loc": qz.loc, "qz_scale": qz.scale, "z": cells_first(inference_outputs["z"]),
        **{f"px_{name}": cells_first(getattr(px, name)) for name in px.arg_constraints},
    }  # fmt: skip


def _joined_distributions(kept: dict, cell_axis: int, px_type) -> dict:
    """scvi-tools' ``get_importance_weights`` arguments ``qz``, ``px`` (of the class
    ``px_type``) and ``zs``, cells on ``cell_axis`` as its own loop joins them, from the
    values :func:`_distributions` kept of every minibatch."""

    def back(value):
        return value.transpose(0, 1) if cell_axis else value

    params = {key[3:]: back(value) for key, value in kept.items() if key.startswith("px_")}
    return {
        "qz": torch.distributions.Normal(kept["qz_loc"], kept["qz_scale"]),
        "px": px_type(**params),
        "zs": back(kept["z"]),
    }


def minibatch_means(every: list[torch.Tensor], sizes, cell_axis: int = 0):
    """The mean over ``transform_batch`` of each minibatch ``every`` holds (one part per
    batch, of the same whole minibatches of cells along ``cell_axis``; ``sizes``: an iterator
    of the minibatches' sizes, read as the parts come), in order, taken a minibatch at a time
    as scvi-tools takes it (one batch: its values as they are)."""
    within, n_cells = 0, every[0].shape[cell_axis]
    while within < n_cells:
        size = next(sizes)
        cells = slice(within, within + size)
        at = (slice(None), cells) if cell_axis else (cells,)
        drawn = [values[at] for values in every]
        yield drawn[0] if len(drawn) == 1 else torch.stack(drawn, dim=0).mean(0)
        within += size


def _batch_means(got: dict, sizes: list[int], cell_axis: int) -> np.ndarray:
    """The mean over ``transform_batch`` of each minibatch's expressions (``got``: each
    batch's parts, cells first, as :meth:`Gathered.parts` gives them; :func:`minibatch_means`),
    written into one array (cells on ``cell_axis``): scvi-tools' list of every minibatch's
    means, joined at the end, held the expressions a second time beside the gathered ones; the
    parts, each let go once read, are not joined."""
    per_batch = list(got.values())
    got.clear()
    exprs, start, minibatches = None, 0, iter(sizes)
    while per_batch and per_batch[0]:
        every = [parts.pop(0) for parts in per_batch]  # a part of each batch: the same cells
        every = [part.transpose(0, 1) if cell_axis else part for part in every]
        for mean in minibatch_means(every, minibatches, cell_axis):
            mean = mean.numpy()
            if exprs is None:
                shape = list(mean.shape)
                shape[cell_axis] = sum(sizes)
                exprs = np.empty(shape, dtype=mean.dtype)
            size = mean.shape[cell_axis]
            out = slice(start, start + size)
            exprs[(slice(None), out) if cell_axis else (out,)] = mean
            start += size
        del every
    if exprs is None:  # no minibatch: scvi-tools' error
        return np.concatenate([], axis=cell_axis)
    return exprs
