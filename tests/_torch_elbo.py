"""One check for every module with a torch-side ELBO: its ``negative_elbo`` against Pyro's
``Trace_ELBO`` of its ``model`` and ``guide``, from the same seed."""

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO


def assert_torch_elbo_is_pyros(module, args, kl_weight):
    """Pyro's Trace_ELBO of ``module.model`` and ``module.guide`` (scaled by ``1 / n_obs``, as
    the training plan scales them) and ``module.negative_elbo`` averaged over the minibatch,
    both drawn from seed 1: equal values and gradients.

    Returns the per-cell objective, the logged terms and, for each of the two passes, what it
    left in ``objective_penalty`` (``None`` when nothing).
    """
    params = list(module.parameters())
    scaled = [poutine.scale(fn, 1 / module.n_obs) for fn in (module.model, module.guide)]
    torch.manual_seed(1)
    pyro_loss = Trace_ELBO().differentiable_loss(*scaled, *args, kl_weight=kl_weight)
    pyro_grads = torch.autograd.grad(pyro_loss, params, allow_unused=True)
    pyro_penalty = module.__dict__.pop("objective_penalty", None)
    torch.manual_seed(1)
    per_cell, terms = module.negative_elbo(*args, kl_weight=kl_weight)
    torch_grads = torch.autograd.grad(per_cell.mean(), params, allow_unused=True)
    torch_penalty = module.__dict__.pop("objective_penalty", None)
    torch.testing.assert_close(per_cell.mean(), pyro_loss, rtol=1e-6, atol=1e-5)
    assert sum(g is not None for g in torch_grads) > len(params) // 2
    for ours, theirs in zip(torch_grads, pyro_grads, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert module.has_torch_elbo
    return per_cell, terms, (pyro_penalty, torch_penalty)
