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


def load_call(
    cls, path, prefix: str | None = None, method: str = "load", saved_data: bool = False
) -> str:
    """``cls.<method>`` on the folder ``path``, as a user would type it: ``load`` with the
    AnnData (``spots`` for a spot model) by keyword, unless ``saved_data`` (the folder holds
    the AnnData saved with the model, which ``load`` reads), the others (``load_registry``,
    ``view_setup_args``) with the folder alone; ``prefix`` where one was saved.

    Examples
    --------
    >>> class NMFDeconv:
    ...     _rows_are_spots = True
    >>> load_call(NMFDeconv, "saved", "p_")
    "NMFDeconv.load('saved', adata=spots, prefix='p_')"
    """
    import os

    data = "spots" if getattr(cls, "_rows_are_spots", False) else "adata"
    given = [repr(os.fspath(path))] + [f"adata={data}"] * (method == "load" and not saved_data)
    given += [f"prefix={prefix!r}"] if prefix else []
    return f"{cls.__name__}.{method}({', '.join(given)})"
