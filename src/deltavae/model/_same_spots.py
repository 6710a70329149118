"""Spots found by name that hold other data: a model whose results are of its own spots
(NMFDeconv with ``inference="per_spot"``, SpatialImputer) finds the spots it is asked about by
name. Spot barcodes repeat across slides (every Visium slide names its spots from the same
list), so another slide's spots passed by mistake were matched to the fitted slide's and got
its results, silently. A few of the spots asked about are compared with the spots of those
names the model holds: the order of their genes' values, which normalising or log-transforming
a copy keeps, and another slide's spot does not. A model loaded (or given ``model.adata``) finds
its spots by name as well: the total counts of a few of its spots, kept when it is built and
saved with it, are compared with those of the spots of those names it is loaded onto."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import dense
from ._matrices import row_sums
from ._validation import computed

#: Spots compared at most: evenly spaced over those asked about (a few rows read).
N_COMPARED = 50


def _matrix(adata: AnnData, layer: str | None):
    if layer is None:
        return adata.X
    return adata.layers[layer] if layer in adata.layers else None


def _rows(matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The ranks of ``columns``' values within each of ``rows`` (any order; read sorted),
    ties ranked alike: what scaling a spot's counts and a log transform keep."""
    order = np.argsort(rows)
    block = dense(computed(matrix[rows[order]]))[:, columns]
    ranks = np.array([np.unique(row, return_inverse=True)[1] for row in block])
    out = np.empty_like(ranks)
    out[order] = ranks.reshape(len(rows), -1)
    return out


def check_same_spots(model, adata: AnnData | None, positions: np.ndarray, other: str) -> None:
    """Refuse ``adata`` when spots it names as the model's hold other data than them.

    ``positions``: for each spot of ``adata``, its row among the model's spots (-1: none);
    ``other``: what to do for other spots. Nothing is read when ``adata`` is the model's own
    AnnData, when the two share no gene, or when ``adata`` lacks the model's layer."""
    if adata is None or adata is model.adata or adata.n_obs == 0:
        return
    layer = model.registry_["setup_args"].get("layer")
    mine, theirs = _matrix(model.adata, layer), _matrix(adata, layer)
    if mine is None or theirs is None:
        return
    names = adata.var_names
    unique = names[~names.duplicated(keep=False)]
    shared = model.adata.var_names.intersection(unique)
    if not len(shared):
        return
    positions = np.asarray(positions)
    asked = np.flatnonzero(positions >= 0)
    if not len(asked):
        return
    asked = asked[np.unique(np.linspace(0, len(asked) - 1, N_COMPARED).astype(int))]
    held = _rows(mine, positions[asked], model.adata.var_names.get_indexer(shared))
    given = _rows(theirs, asked, names.get_indexer(shared))
    differ = (held != given).any(axis=1)
    if not differ.any():
        return
    first = asked[np.flatnonzero(differ)[0]]
    name = type(model).__name__
    if adata is getattr(model, "_query_adata", None):  # the spots given to it, changed since
        again = "model.train()" if name == "NMFDeconv" else f"{name}.from_reference(spots, ...)"
        raise ValueError(
            f"The spots given to this {name} hold other counts than it read: "
            f"{int(differ.sum())} of the {len(asked)} compared (e.g. "
            f"{str(adata.obs_names[first])!r}) differ, as after spots.X = other since. Its "
            f"results are of the counts it read, not of these. Fit these ({again}), or put the "
            "counts it read back (spots normalised or log-transformed in place still read)."
        )
    raise ValueError(
        f"adata's spots have the names of the model's spots but other data: "
        f"{int(differ.sum())} of the {len(asked)} compared (e.g. "
        f"{str(adata.obs_names[first])!r}) hold other counts than the spot of that name the "
        f"model was fitted on. {type(model).__name__}'s results are of its own "
        "spots, found by name, so these spots would get another slide's results (spot "
        "barcodes repeat across slides). Pass the model's spots (e.g. model.adata); for "
        f"other spots, {other}. Name each slide's spots apart, e.g. adata.obs_names = "
        '"slide2_" + adata.obs_names.'
    )


def spot_rows(model, adata: AnnData) -> np.ndarray:
    """Each of ``adata``'s spots' row among the model's spots, by name (-1: none)."""
    held = pd.Index(model.adata.obs_names.astype(str))
    return held.get_indexer(pd.Index(adata.obs_names.astype(str)))


def spot_totals(adata: AnnData, layer: str | None) -> pd.Series | None:
    """Total counts of up to ``N_COMPARED`` spots of ``adata``, evenly spaced, by name."""
    matrix = _matrix(adata, layer)
    if matrix is None or adata.n_obs == 0:
        return None
    rows = np.unique(np.linspace(0, adata.n_obs - 1, N_COMPARED).astype(int))
    totals = row_sums(computed(matrix[rows]))
    return pd.Series(totals, index=pd.Index(adata.obs_names[rows].astype(str)))


def check_fitted_totals(adata: AnnData, attr_dict: dict, model: str, advice: str) -> None:
    """Refuse spots named as a per-spot model's fitted spots whose counts differ from those
    ``attr_dict`` (the saved model's ``spot_totals_``) kept; nothing for older saves."""
    saved, registry = attr_dict.get("spot_totals_"), attr_dict.get("registry_")
    if saved is None or registry is None:
        return
    matrix = _matrix(adata, registry.get("setup_args", {}).get("layer"))
    at = pd.Index(adata.obs_names.astype(str)).get_indexer(saved.index)
    if matrix is None or not len(at) or (at < 0).any():
        return  # other spots are named by the checks of the names
    order = np.argsort(at)
    totals = np.empty(len(at))
    totals[order] = row_sums(computed(matrix[at[order]]))
    differ = ~np.isclose(totals, saved.to_numpy(), rtol=1e-6)
    if not differ.any():
        return
    first = int(np.flatnonzero(differ)[0])
    raise ValueError(
        f"adata's spots have the names of the spots this {model} was fitted on but other "
        f"counts: {int(differ.sum())} of the {len(at)} compared differ (e.g. "
        f"{saved.index[first]!r}: {totals[first]:g} counts, {saved.iloc[first]:g} when "
        "fitted). Its parameters are of those spots, found by name, so these spots would get "
        "another slide's results (spot barcodes repeat across slides). Pass the spots the "
        f"model was fitted on; for other spots {advice}."
    )


def given_order(model) -> pd.Index | None:
    """The names of the spots given to ``load`` (or ``model.adata = spots``) when they are the
    model's spots in another order: a model fitted per spot reads a copy of them put in its
    fitted order, and its read-outs without ``adata`` give their rows in the order of the
    spots given, as the amortised models' do (``spots.obsm["p"] = d.get_proportions()
    .to_numpy()`` was misaligned). ``None`` otherwise: the model's own order."""
    given = getattr(model, "_query_adata", None)
    if given is None or model.adata is None or given.n_obs != model.adata.n_obs:
        return None
    names = pd.Index(given.obs_names.astype(str))
    held = pd.Index(model.adata.obs_names.astype(str))
    if names.equals(held) or not names.is_unique or not names.isin(held).all():
        return None
    return given.obs_names


def _prints(ranks: np.ndarray) -> np.ndarray:
    return np.array([zlib.crc32(np.ascontiguousarray(r, np.int64).tobytes()) for r in ranks])


def rank_prints(adata: AnnData, layer: str | None, columns=None) -> pd.Series | None:
    """A checksum of the order of each of up to ``N_COMPARED`` spots' values (evenly spaced;
    in ``columns``, default every gene), by name: what normalising or log-transforming the
    spots in place keeps, and other counts under the same names do not."""
    matrix = _matrix(adata, layer)
    if matrix is None or adata.n_obs == 0:
        return None
    rows = np.unique(np.linspace(0, adata.n_obs - 1, N_COMPARED).astype(int))
    columns = np.arange(adata.n_vars) if columns is None else np.asarray(columns)
    prints = _prints(_rows(matrix, rows, columns))
    return pd.Series(prints, index=pd.Index(adata.obs_names[rows].astype(str)), dtype=np.int64)


def check_fitted_ranks(model, columns=None) -> None:
    """Refuse the read-outs of a model fitted per spot whose own AnnData's spots hold other
    counts than they held when it was fitted (``spots.X = other`` since ``train``): its
    parameters are of the counts fitted, and were returned for the new ones without a word.
    Compared with the ``spot_ranks_`` kept at the end of ``train`` (:func:`rank_prints`; none
    for models saved before they were kept); spots left out since are not compared."""
    kept = getattr(model, "spot_ranks_", None)
    layer = model.registry_["setup_args"].get("layer")
    matrix = None if kept is None else _matrix(model.adata, layer)
    if matrix is None:
        return
    at = pd.Index(model.adata.obs_names.astype(str)).get_indexer(kept.index)
    compared = np.flatnonzero(at >= 0)
    if not len(compared):
        return
    columns = np.arange(model.adata.n_vars) if columns is None else np.asarray(columns)
    differ = _prints(_rows(matrix, at[compared], columns)) != kept.to_numpy()[compared]
    if not differ.any():
        return
    first = kept.index[compared[np.flatnonzero(differ)[0]]]
    raise ValueError(
        f"The spots this {type(model).__name__} was fitted on (model.adata) hold other counts "
        f"than when it was trained: {int(differ.sum())} of the {len(compared)} compared (e.g. "
        f"{first!r}) differ, as after spots.X = other. Its per-spot results are of the counts "
        "it was trained on, not of these. Train again (model.train()) to fit the counts they "
        "hold now, or put the trained counts back (spots normalised or log-transformed in "
        "place read as the same counts)."
    )
