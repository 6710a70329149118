"""CGMDVAE's mixture start, built for a ``train`` call once enough cells train for its
clusters: the cells are counted as the call splits them (``train_size``, or the lists of
``datasplitter_kwargs["external_indexing"]``)."""

from __future__ import annotations

import contextlib
import math
import numbers

from ..train._data import split_sizes


def training_cells(n_cells: int, train_kwargs: dict) -> tuple[int | None, str]:
    """The cells a ``train(**train_kwargs)`` call trains on, and how it chose them, for a
    message; ``None`` where ``train_size`` is no fraction (its own check refuses it).

    Examples
    --------
    >>> import numpy as np
    >>> training_cells(40, {})
    (36, 'train_size=0.9 of 40 cells')
    >>> training_cells(40, {"train_size": 0.1, "datasplitter_kwargs": {
    ...     "external_indexing": [np.arange(36), np.arange(36, 40)]}})[0]
    36
    """
    split = train_kwargs.get("datasplitter_kwargs") or {}
    train_size = train_kwargs.get("train_size", 0.9)
    if split.get("external_indexing") is not None:
        how = f"the first list of datasplitter_kwargs['external_indexing'], of {n_cells} cells"
        return split_sizes(n_cells, 1.0, None, split)[0], how
    fraction = isinstance(train_size, numbers.Real) and not isinstance(train_size, bool)
    if not fraction or not (math.isfinite(train_size) and 0 < train_size <= 1):
        return None, ""
    validation = train_kwargs.get("validation_size")
    n_train = split_sizes(n_cells, train_size, validation, split)[0]
    return n_train, f"train_size={train_size} of {n_cells} cells"


def mixture_start(model, epoch: int, method: str, train_kwargs: dict):
    """The mixture-start callback of ``model``'s ``train(**train_kwargs)``, after checking
    that at least as many cells train as the start makes clusters."""
    from .._rng import start_seed
    from ..train._mixture_init import MixtureInitialization

    n_train, how = training_cells(model.adata.n_obs, train_kwargs)
    k = model.module.n_clusters
    more = "a longer first list" if how.startswith("the first") else "train_size=1.0"
    if n_train is not None and 0 < n_train < k:
        raise ValueError(
            f"The mixture start clusters the training cells into {k} clusters, but only "
            f"{n_train} cells train ({how}). Use fewer clusters, train on more cells "
            f"({more}), or skip the start with mixture_init_epoch=None."
        )
    return MixtureInitialization(epoch, seed=start_seed(), method=method)


def _epochs_in_history(model) -> int:
    history = getattr(model, "history_", None) or {}
    return len(history["elbo_train"]) if "elbo_train" in history else 0


@contextlib.contextmanager
def start_kept_pending(model, epoch: int | None):
    """A ``train`` call planning the mixture start at ``epoch`` (of the call; None: none
    planned) that ends before it, its run too short (``max_epochs=1``: "auto" placed it at
    epoch 1) or cut short (an interrupt, ``max_time``, a divergence), leaves
    ``model.mixture_pending_`` True: the next ``mixture_init_epoch="auto"`` starts it, where a
    model trained before otherwise keeps its mixture. A run that trained through the start
    clears it; a call that trained no epoch (refused, interrupted at once) changes nothing."""
    before = _epochs_in_history(model)
    try:
        yield
    finally:
        done = _epochs_in_history(model) - before
        if epoch is not None and done > 0:
            model.mixture_pending_ = done <= epoch
