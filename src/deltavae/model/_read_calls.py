"""The call that reads a model's results of given rows, for the advice of its messages."""

from __future__ import annotations

#: Each spot model's read-out of given spots, for advice (a VAE's is its latent).
_READ_CALLS = {
    "NMFDeconv": "get_proportions({})",
    "Archetypes": "get_archetype_weights({})",
    "SpatialImputer": "impute(adata={})",
}


def read_call(model, adata: str = "adata") -> str:
    """The call that reads ``model``'s results of the rows of ``adata``, for advice.

    Examples
    --------
    >>> read_call(None, "adata.copy()")
    'model.get_latent_representation(adata.copy())'
    """
    call = _READ_CALLS.get(type(model).__name__, "get_latent_representation({})")
    return "model." + call.format(adata)
