"""Read-outs in eval mode, the module's own modes kept, their minibatches in the module's
floating dtype, torch's distributions unchecked inside them."""

from __future__ import annotations

import contextlib
import functools
import inspect

import torch

from ..distributions._draws import CellDraws


@contextlib.contextmanager
def evaluating(module: torch.nn.Module):
    """``module`` in eval mode inside (no dropout, BatchNorm's running statistics used and
    left as they are), and each of its submodules in its own mode again afterwards.

    Inside, torch's distributions are made unchecked too (:func:`unchecked_distributions`):
    every minibatch of a read-out made the host wait for the device once per distribution
    built from the module's outputs (a Normal of the encoder's, a mixture prior, the
    likelihood's). The user's data those score was checked on the host when it was set up
    or passed (``check_data``: finite, whole non-negative counts, [0, 1] for a Bernoulli);
    a user's own ``dataloader=``, iterated outside this, is checked as before.

    Every read-out runs so: a read-out of a model in training mode (a user's Lightning
    callback reading latents while the model trains on, or ``model.module.train()``) gave
    latents with dropout and moved BatchNorm's statistics, and those that switched to eval
    mode left it so, and the rest of the training ran without dropout."""
    modes = [(sub, sub.training) for sub in module.modules()]
    if any(mode for _, mode in modes):  # else in eval mode already (after train, nested)
        module.eval()
    try:
        with unchecked_distributions():  # the module's own outputs: see its note
            yield module
    finally:
        for sub, mode in modes:
            if sub.training != mode:  # torch's __setattr__ is slow: only those changed
                sub.training = mode


def in_eval_mode(method):
    """``method`` (a model's read-out that calls its module directly) run under
    :func:`evaluating` of the model's module."""

    @functools.wraps(method)
    def read(self, *args, **kwargs):
        with evaluating(self.module):
            return method(self, *args, **kwargs)

    return read


def in_module_dtype(tensors: dict, module: torch.nn.Module) -> dict:
    """A minibatch (``{key: tensor}``) with its floating tensors in ``module``'s floating
    dtype: the loaders yield float32, so a module made double (``model.module.double()``)
    failed in its first layer ("mat1 and mat2 must have the same dtype"). Tensors already
    in it are returned as they are."""
    dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
    return {
        key: value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value
        for key, value in tensors.items()
    }


def latent_draws(module: torch.nn.Module, draw: bool, n_parts: int = 1) -> list[dict]:
    """Keywords of ``module.inference`` for a read-out's ``n_parts`` passes over its cells
    (one per ``transform_batch``), made once per read-out: where it draws (``draw``), from
    :class:`~deltavae.distributions._draws.CellDraws` on the CPU, cell after cell (each
    part's generators its own, seeded from torch's CPU generator: ``scvi.settings.seed``),
    where its ``inference`` takes ``cell_draws``; else ``draw=False`` where it takes that
    (the means: nothing drawn). Drawn on the model's device, minibatch by minibatch, a GPU
    drew other latents than the CPU under one seed, and ``batch_size`` changed them.

    Examples
    --------
    >>> from deltavae.module import ZINBVAEModule
    >>> module = ZINBVAEModule(5)
    >>> latent_draws(module, False)
    [{'draw': False}]
    >>> first, second = latent_draws(module, True, 2)
    >>> first["cell_draws"].seed != second["cell_draws"].seed
    True
    """
    takes = inspect.signature(module.inference).parameters
    if not draw:
        return [{"draw": False} if "draw" in takes else {} for _ in range(n_parts)]
    if "cell_draws" not in takes:
        return [{} for _ in range(n_parts)]
    root = CellDraws()
    return [{"cell_draws": root.part(i)} for i in range(n_parts)]


#: [how many unchecked_distributions contexts are open, the default they found]
_UNCHECKED = [0, None]


@contextlib.contextmanager
def unchecked_distributions():
    """torch's distributions made without their argument checks inside (as training makes
    them: ``train(validate_distributions=False)``), the default put back once the last one
    open closes. Each check (a Normal's scale positive, a value in the support) reads a
    tensor on the host: on a GPU a wait for the device per distribution made, 7 per
    minibatch of ``CGMDVAE.predict_labels``. The checks never change a value.

    Counted, not saved and restored each: the loaders' iterators (:func:`evaluating`) may
    close out of order (two read side by side), and the last to close put back the first's
    False."""
    from torch.distributions import Distribution

    if _UNCHECKED[0] == 0:
        _UNCHECKED[1] = Distribution._validate_args
        Distribution.set_default_validate_args(False)
    _UNCHECKED[0] += 1
    try:
        yield
    finally:
        _UNCHECKED[0] -= 1
        if _UNCHECKED[0] == 0:
            Distribution.set_default_validate_args(_UNCHECKED[1])
