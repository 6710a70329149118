"""Weight freezing for query mapping: only the new categories' weights learn.

scvi-tools' :class:`~scvi.model.base.ArchesMixin` freezes by key pattern and lets every
condition column of a first layer learn; here every reference weight is frozen, and gradient
masks let only the columns of the new categories (and, for a per-batch dispersion, the new
batches' dispersions) learn; a latent library's encoder learns whole, as in scVI. BatchNorm
in training mode normalises with minibatch statistics, which cancels exactly the constant
offset a query made of one new category gets from its new columns (their gradient is zero);
the query model's BatchNorm layers therefore always use the reference's running statistics
(:class:`ReferenceBatchNorm1d`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scvi.nn import FCLayers
from torch import nn

from ..train._checkpoint import PARTLY_TRAINABLE


class ReferenceBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that normalises with the reference's running statistics in training too.

    Built from a trained :class:`torch.nn.BatchNorm1d` by :meth:`from_batch_norm`, sharing its
    parameters and statistics, so the state dict keeps its keys and values.
    """

    @classmethod
    def from_batch_norm(cls, batch_norm: nn.BatchNorm1d) -> ReferenceBatchNorm1d:
        """A reference BatchNorm holding ``batch_norm``'s own parameters and buffers."""
        reference = cls(
            batch_norm.num_features,
            eps=batch_norm.eps,
            momentum=batch_norm.momentum,
            affine=batch_norm.affine,
            track_running_stats=batch_norm.track_running_stats,
            device="meta",
        )
        for name, param in batch_norm.named_parameters(recurse=False):
            reference.register_parameter(name, param)
        for name, buffer in batch_norm.named_buffers(recurse=False):
            reference.register_buffer(name, buffer)
        return reference.train(batch_norm.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def _use_reference_statistics(module: nn.Module) -> None:
    """Replace every plain BatchNorm1d under ``module`` by a :class:`ReferenceBatchNorm1d`."""
    replacements = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if type(child) is nn.BatchNorm1d
    ]
    for parent, name, child in replacements:
        setattr(parent, name, ReferenceBatchNorm1d.from_batch_norm(child))


def _column_masks(ref_sizes: list[int], new_sizes: list[int]):
    """For the one-hot block of an FCLayers: (source column in the reference or -1, trainable,
    the reference's columns of the same covariate as a slice)."""
    source, trainable, own, ref_start = [], [], [], 0
    for n_ref, n_new in zip(ref_sizes, new_sizes, strict=True):
        ref_cols = n_ref if n_ref > 1 else 0
        if n_new <= 1:
            ref_start += ref_cols
            continue
        for j in range(n_new):
            # A covariate with one reference category had no columns: its column stays 0.
            source.append(ref_start + j if ref_cols and j < n_ref else -1)
            trainable.append(j >= n_ref)
            own.append(slice(ref_start, ref_start + ref_cols))
        ref_start += ref_cols
    return np.array(source, dtype=int), np.array(trainable, dtype=bool), own


def _mask_hook(mask: torch.Tensor):
    # A hook is no buffer: moving the module (mapped on one device, trained on another) leaves
    # the mask where it was, so it follows the gradient.
    def hook(grad):
        return grad * mask.to(grad.device, grad.dtype)

    return hook


def _covariate_layers(module: nn.Module, n_covariates: int):
    """(parameter name, Linear, FCLayers, number of non-covariate inputs) of every layer that
    receives the one-hot covariates."""
    for name, fc in module.named_modules():
        if not isinstance(fc, FCLayers):
            continue
        n_cov = sum(fc.n_cat_list)
        if n_cov == 0 or len(fc.n_cat_list) != n_covariates:
            continue
        for i, layers in enumerate(fc.fc_layers):
            if fc.inject_into_layer(i):
                linear = layers[0]
                key = f"{name}.fc_layers.Layer {i}.0.weight"
                yield key, linear, fc, linear.weight.shape[1] - n_cov


def _freeze_for_query(module: nn.Module, ref_state: dict, ref_sizes, new_sizes) -> list[str]:
    """Load the reference's condition columns, freeze all else; names of learning parameters."""
    source, trainable, own = _column_masks(ref_sizes, new_sizes)
    for key, linear, _, n_in in _covariate_layers(module, len(new_sizes)):
        w_ref = ref_state[key].to(linear.weight.device)
        covariates = w_ref[:, n_in:]
        with torch.no_grad():
            linear.weight[:, :n_in] = w_ref[:, :n_in]
            for c, src in enumerate(source):
                if src >= 0:
                    linear.weight[:, n_in + c] = covariates[:, src]
                elif trainable[c] and own[c].stop > own[c].start:
                    # A new category starts as the average reference category of its own
                    # covariate (one reference category had no column: 0).
                    linear.weight[:, n_in + c] = covariates[:, own[c]].mean(1)
                else:
                    linear.weight[:, n_in + c] = 0.0
    return _restrict_learning(module, ref_sizes, new_sizes)


def _restrict_learning(module: nn.Module, ref_sizes, new_sizes) -> list[str]:
    """Freeze every parameter except the new categories' columns (gradient masks) and keep
    BatchNorm on the reference's statistics; the names of the parameters that still learn.
    Applied when a query model is built and again when a saved one is loaded."""
    for p in module.parameters():
        p.requires_grad_(False)
    for fc in module.modules():
        if isinstance(fc, FCLayers):
            for h in getattr(fc, "hooks", []):
                h.remove()
            fc.hooks = []
    _, trainable, _ = _column_masks(ref_sizes, new_sizes)
    learning, partly = [], []
    layers = _covariate_layers(module, len(new_sizes)) if trainable.any() else []
    library = getattr(module, "l_encoder", None) if trainable.any() else None
    for key, linear, fc, n_in in layers:
        if library is not None and key.startswith("l_encoder."):
            continue  # learns whole (below)
        mask = torch.zeros_like(linear.weight)
        mask[:, n_in:][:, torch.as_tensor(trainable)] = 1.0
        linear.weight.requires_grad_(True)
        fc.hooks.append(linear.weight.register_hook(_mask_hook(mask)))
        partly.append((linear.weight, mask.bool()))
        learning.append(f"{key}[new categories]")
    old_hook = module.__dict__.pop("_px_r_hook", None)
    if old_hook is not None:
        old_hook.remove()
    px_r = getattr(module, "px_r", None)
    if px_r is not None and px_r.dim() == 2 and new_sizes and px_r.shape[1] == new_sizes[0]:
        # Per-batch dispersion ("gene-batch"): the new batches' columns learn.
        new_cols = torch.arange(px_r.shape[1], device=px_r.device) >= ref_sizes[0]
        if new_cols.any():
            px_r.requires_grad_(True)
            handle = px_r.register_hook(_mask_hook(new_cols.to(px_r.dtype).expand_as(px_r)))
            module._px_r_hook = handle
            partly.append((px_r, new_cols.expand_as(px_r).clone()))
            learning.append("px_r[new batches]")
    if library is not None:
        # A latent library's encoder learns whole, as in scVI's query mapping (its l_encoder):
        # the new columns alone left a query of other depth its reference-scale libraries
        # (3x deeper counts: e^14 for e^8 observed, posterior predictive totals 1000x).
        for name, p in library.named_parameters():
            p.requires_grad_(True)
            learning.append(f"l_encoder.{name}")
    # The gradient masks stop the loss from moving the reference's entries, not the optimiser:
    # weight decay (Adam's, AdamW's) shrinks whole tensors. The training plan puts the entries
    # outside each mask back after every step (PARTLY_TRAINABLE).
    module.__dict__[PARTLY_TRAINABLE] = partly
    _use_reference_statistics(module)
    return learning
