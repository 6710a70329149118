"""The state dict a ``load`` is about to put into the model scvi-tools builds for it.

scvi-tools' ``load`` builds the model anew (``cls(adata, **init_params)``) and then replaces its
parameters with the saved ones. A model whose ``__init__`` computes a start from the data (the
NMF or non-negative least squares start of :class:`~deltavae.model.NMFDeconv`, the candidate
spots and anchor search of :class:`~deltavae.model.Archetypes`) read the data and fitted it at
every load, seconds on large data, only to discard the result. ``__init__`` asks
:func:`saved_state` and, inside a load, takes its shapes from the saved parameters instead.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_LOADING: ContextVar[tuple[type, dict] | None] = ContextVar("deltavae_loading", default=None)


@contextmanager
def loading_state(cls: type, state: dict):
    """Within the block, ``cls``'s ``__init__`` is building the model ``state`` will fill."""
    token = _LOADING.set((cls, state))
    try:
        yield
    finally:
        _LOADING.reset(token)


def saved_state(model) -> dict | None:
    """The saved parameters (CPU tensors, by name) that will replace ``model``'s when it is
    being built by a load, else ``None`` (a new model, which computes its start).

    Examples
    --------
    >>> class M:
    ...     pass
    >>> saved_state(M()) is None
    True
    >>> with loading_state(M, {"w": 1}):
    ...     saved_state(M())
    {'w': 1}
    """
    loading = _LOADING.get()
    return loading[1] if loading is not None and type(model) is loading[0] else None
