"""What every deltavae Pyro module shares: scvi-tools' torch-side forward and a device."""

from __future__ import annotations

import pyro
import torch
from scvi.module.base import PyroBaseModuleClass, auto_move_data


class DeltaPyroModule(PyroBaseModuleClass):
    """A Pyro module that also speaks scvi-tools' torch-side protocol.

    Subclasses write ``model``/``guide`` (the training objective) and ``_get_inference_input``,
    ``inference``, ``_get_generative_input``, ``generative`` and ``loss`` (deterministic
    evaluation). ``forward`` then runs the torch side, so scvi-tools' ``VAEMixin`` and
    ``RNASeqMixin`` (latents, normalized expression, differential expression, ELBO and
    reconstruction error) work unchanged.
    """

    def __init__(self):
        super().__init__()
        # Size of the cell plate; the training plan sets it to the number of training cells.
        self.n_obs: int | None = None

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        return next(self.parameters()).device

    def on_load(self, model, **kwargs):
        """Loading needs no warm-up step: every parameter lives in the ``state_dict``."""
        pyro.clear_param_store()

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
