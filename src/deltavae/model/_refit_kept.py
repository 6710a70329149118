"""CGMDVAE's refit of its mixture after training (``train``'s ``refit_mixture``), all or
nothing.

The refit moves the prior's output biases component by component, then fits the cluster
head for 200 Adam steps: a failure or an interrupt (Ctrl-C, a notebook's "interrupt kernel")
midway left a mixture moved for some components and not others, or a cluster head half fitted
to the new clusters, which no longer agreed with the prior, and the interrupt came through
bare, as if training had been cut short. Here the module is put back as training left it and
``train_args_["refit_mixture"]`` says no refit took place; an interrupt says that training
finished and how to refit.
"""

from __future__ import annotations

import contextlib

import torch

#: How to refit a model whose refit was interrupted (train has no max_epochs=0).
REDO = "model.train(max_epochs=1, refit_mixture=True)"


@contextlib.contextmanager
def refit_or_none(model):
    """Within it, a failure leaves ``model.module``'s parameters, buffers and train or eval
    modes as they were before (its trained mixture) and ``train_args_["refit_mixture"]``
    False; a KeyboardInterrupt is raised again with a note on what the model keeps and how
    to refit it (``REDO``), other errors with that note added."""
    module = model.module
    kept = {key: value.detach().clone() for key, value in module.state_dict().items()}
    modes = [(part, part.training) for part in module.modules()]
    try:
        yield
    except BaseException as err:
        with torch.no_grad():
            module.load_state_dict(kept)
        for part, training in modes:
            part.training = training
        record = getattr(model, "train_args_", None)
        if isinstance(record, dict) and "refit_mixture" in record:
            record["refit_mixture"] = False
        note = (
            "Training finished, but the refit of the mixture after it (refit_mixture) was "
            f"{'interrupted' if isinstance(err, KeyboardInterrupt) else 'stopped by this error'}"
            ": the model keeps its trained mixture as training left it (as refit_mixture=False "
            f"does; train_args_['refit_mixture'] is False). To refit it, run {REDO}."
        )
        if isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt(note) from None
        if isinstance(err, Exception):
            err.add_note(note)
        raise
