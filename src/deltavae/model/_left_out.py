"""``write_to_adata`` into spots of which a model fitted per spot knows only some: the spots left
out of the fit (empty spots filtered before training, as advised) get missing values (NaN),
as scanpy-style tools leave rows they did not compute, with a warning naming them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._matrices import memory_copy
from ._validation import warn_user

#: Where each model's results of spots it was not fitted on come from.
_OTHER_SPOTS = {
    "NMFDeconv": "An inference='amortized' model maps other spots",
    "SpatialImputer": "Fit a model on every spot you want imputations for",
    "SpatialImputer/latent": "Save the model and load it onto other spots to impute them",
    "Archetypes": "get_archetype_weights(other_spots) maps other spots through the encoder",
}


def fitted_mask(model, adata: AnnData | None) -> np.ndarray | None:
    """Which of ``adata``'s spots ``model`` has results for, where its results are of its own
    spots only (``_results_of_fitted_spots``: per-spot parameters) and ``adata`` holds some of
    them and others besides; ``None`` otherwise (the usual write, or its refusal)."""
    if adata is None or adata.is_view or not getattr(model, "_results_of_fitted_spots", False):
        return None
    names = pd.Index(adata.obs_names.astype(str))
    if not names.is_unique:
        return None  # the usual checks name the repeated spots
    fitted = names.isin(pd.Index(model.adata.obs_names.astype(str)))
    return fitted if 0 < fitted.sum() < len(fitted) else None


def _spread(value, rows: np.ndarray, n_obs: int, index: pd.Index):
    """``value`` (rows of the fitted spots) on all ``n_obs`` spots, missing on the others."""
    if isinstance(value, pd.Series | pd.DataFrame):  # keeps a categorical's categories
        taken = value.reset_index(drop=True).reindex(rows)
        return taken.set_axis(index, axis=0)
    value = np.asarray(value)
    out = np.full((n_obs, *value.shape[1:]), np.nan)
    out[rows >= 0] = value
    return out


def write_fitted_spots(model, write, adata: AnnData, fitted: np.ndarray, *args, **kwargs):
    """Write ``model``'s results (``write``: its decorated ``write_to_adata``) of the spots it
    was fitted on into ``adata``, with missing values for the others; the keys written."""
    sub = memory_copy(adata[fitted])
    keys = write(model, sub, *args, **kwargs)
    rows = np.full(adata.n_obs, -1)
    rows[fitted] = np.arange(int(fitted.sum()))
    for key in keys:
        slot, name = key.split("/", 1)
        value = getattr(sub, slot)[name]
        if slot in ("obs", "obsm"):
            value = _spread(value, rows, adata.n_obs, adata.obs_names)
            value = value.values if slot == "obs" else value
        getattr(adata, slot)[name] = value
    left = adata.obs_names[~fitted]
    rows_of = [key for key in keys if key.split("/", 1)[0] in ("obs", "obsm")]
    name = type(model).__name__
    other = _OTHER_SPOTS.get(f"{name}/{getattr(model, 'design_', '')}", _OTHER_SPOTS.get(name))
    warn_user(
        f"{len(left)} of the {adata.n_obs} spots of adata are not among the "
        f"{model.adata.n_obs} spots {name} was fitted on (e.g. "
        f"{left[:3].tolist()}): their rows of {', '.join(rows_of)} are missing (NaN), as "
        f"this model's results are of the spots it was fitted on. {other} (spots "
        "without counts have none to give)."
    )
    return keys
