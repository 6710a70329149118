"""The number of cells a model's own AnnData held at its last fit, and an in-place subset of it
since (``sc.pp.filter_cells``, ``adata._inplace_subset_obs``): the AnnData stays the model's,
so scvi-tools reads it without a word, but what the fit recorded by cell position (its split,
the cells ``predict_labels``' typicality is scored against) names other cells, and what reads
the training cells (``translate``'s observed responses, ``nearest_response``, ``latent_shift``'s
condition means) reads only the cells left. One record, read by every such call."""

from __future__ import annotations

from .._warn import warn_user


def record_fit_cells(model) -> None:
    """After a fit's split: the model's AnnData (its id) and its number of cells."""
    model._fit_cells = (model.adata_manager.adata_uuid, model.adata.n_obs)


def subset_since_fit(model) -> tuple[int, int] | None:
    """``(cells now, cells at the last fit)`` where the model's own AnnData (the one it last
    trained on, not another set with ``model.adata = ...`` or given to ``load``) holds another
    number of cells than then; None otherwise, or where no fit is recorded."""
    record = getattr(model, "__dict__", {}).get("_fit_cells")
    adata = getattr(model, "_adata", None)
    if record is None or adata is None or model.adata_manager is None:
        return None
    uuid, n_obs = record
    if model.adata_manager.adata_uuid != uuid or adata.n_obs == n_obs:
        return None
    return adata.n_obs, n_obs


def subset_note(now: int, then: int) -> str:
    """The first sentence of every warning of :func:`subset_since_fit`."""
    return (
        f"The model's AnnData holds {now} cells, {then} when it was trained: it was subset in "
        "place since (e.g. sc.pp.filter_cells)"
    )


def warn_if_subset_since_fit(model, what: str, advice: str) -> bool:
    """Warn, where the model's AnnData was subset in place since its fit, that ``what`` (the
    call's reading of the training cells) reads the cells left, with ``advice``; whether it
    was."""
    subset = subset_since_fit(model)
    if subset is None:
        return False
    now, then = subset
    warn_user(
        f"{subset_note(now, then)}, so {what} the {now} cells left, not from the cells it "
        f"trained on (the positions of its training split name other cells now). {advice}, or "
        "set the training cells back (model.adata = adata_before_the_subset)."
    )
    return True
