"""Ground truth for deconvolution: pseudo-spots from labelled cells, convex mixtures.

``pseudo_spots`` sums real labelled cells into spots, so the true cell-type fractions are
known exactly; the cells it uses are removed from the reference it returns. ``convex_mixtures``
draws counts from known archetype profiles mixed with known weights.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter

from .._anndata_or_folder import check_anndata
from .._checks import check_bool, check_labels, layer_matrix, not_counts
from .._renamed import foreign_keywords
from .._slashes import renamed_column, warn_slashed
from ._synthetic import (
    _check_positive,
    _check_positive_int,
    _check_range,
    _check_seed,
    _is_number,
    _sample_nb,
)

logger = logging.getLogger(__name__)


def _counts_matrix(adata: ad.AnnData, layer: str | None) -> sp.csr_matrix:
    """The reference's raw counts; anything else (log-normalized data) is refused, as a spot's
    counts are the sum of its cells'."""
    counts = sp.csr_matrix(layer_matrix(adata, layer), dtype=np.float32)
    bad = not_counts(counts.data)
    if bad.size:
        where = "reference.X" if layer is None else f"reference.layers[{layer!r}]"
        raise ValueError(
            f"{where} must hold raw counts (a spot sums its cells' counts); found values such "
            f"as {bad[0]:.6g}. Pass the layer with the counts (layer='counts'), or the counts "
            "from before sc.pp.normalize_total / sc.pp.log1p."
        )
    return counts


def _split_cells(
    labels: pd.Categorical, reference_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of reference cells: a stratified share of every type, at least one each."""
    in_reference = np.zeros(len(labels), dtype=bool)
    for code in range(len(labels.categories)):
        cells = rng.permutation(np.flatnonzero(labels.codes == code))
        if len(cells) < 2:
            raise ValueError(
                f"cell type {labels.categories[code]!r} has {len(cells)} cell; at least 2 are "
                "needed so that both the reference and the spots get one"
            )
        n_ref = min(max(1, round(reference_fraction * len(cells))), len(cells) - 1)
        in_reference[cells[:n_ref]] = True
    return in_reference


def _smooth_fields(
    rng: np.random.Generator, n_types: int, shape: tuple[int, int], smoothness: float
) -> np.ndarray:
    """Positive spatially smooth abundance fields, spots x types (Gaussian-filtered noise)."""
    noise = rng.normal(size=(n_types, *shape))
    fields = np.stack([gaussian_filter(f, sigma=smoothness, mode="reflect") for f in noise])
    spread = fields.std(axis=(1, 2), keepdims=True)  # 0 on a grid of one spot: no pattern
    fields = (fields - fields.mean(axis=(1, 2), keepdims=True)) / np.where(spread > 0, spread, 1)
    # exp(2 z) gives each type regions where it dominates and regions where it is rare.
    return np.exp(2.0 * fields).reshape(n_types, -1).T


def _draw_spot_types(
    rng: np.random.Generator,
    n_cells: int,
    type_weights: np.ndarray,
    max_types: int,
    capacity: np.ndarray,
) -> np.ndarray:
    """Number of cells of each type in one spot: a few types present, at least one cell each.

    No type gets more cells than the pool holds (``capacity``); the excess goes to the
    present types with room left, so rare types stay possible without repeating a cell, then
    to another type while fewer than ``max_types`` are present; beyond that the spot holds
    fewer cells.
    """
    n_present = rng.integers(1, min(max_types, n_cells, len(type_weights)) + 1)
    present = rng.choice(len(type_weights), n_present, replace=False, p=type_weights)
    counts = np.zeros(len(type_weights), dtype=int)
    counts[present] = 1
    rest = n_cells - n_present
    if rest:
        share = rng.dirichlet(np.ones(n_present)) * type_weights[present]
        counts[present] += rng.multinomial(rest, share / share.sum())
    excess = int(np.maximum(counts - capacity, 0).sum())
    counts = np.minimum(counts, capacity)
    while excess:
        room = np.flatnonzero((counts > 0) & (counts < capacity))
        if not len(room):
            if (counts > 0).sum() >= max_types:
                break  # the present types' pools are used up: not another type
            room = np.flatnonzero(counts < capacity)
        t = rng.choice(room)
        counts[t] += 1
        excess -= 1
    return counts


@foreign_keywords(random_state="seed")
def pseudo_spots(
    reference: ad.AnnData,
    labels_key: str = "cell_type",
    n_spots: int = 500,
    cells_per_spot: tuple[int, int] = (2, 10),
    seed: int = 0,
    *,
    layer: str | None = None,
    reference_fraction: float = 0.5,
    max_types_per_spot: int = 4,
    depth: int | None = None,
    grid: bool = False,
    smoothness: float = 2.0,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Spots summed from labelled single cells, with their exact cell-type fractions.

    The cells are first split, per type, into a reference part (returned) and a pool from
    which spots are built, so that no cell is both in the reference and in a spot. Each spot
    draws a number of cells uniformly from ``cells_per_spot``, a few cell types (up to
    ``max_types_per_spot``, chosen in proportion to their abundance in the pool, or to the
    spatial abundance fields when ``grid=True``), and sums the counts of distinct pool cells
    of those types. A cell is used by at most one spot while the pool lasts; then cells are
    reused across spots (never within a spot).

    Parameters
    ----------
    reference
        Labelled single cells with raw counts.
    labels_key
        obs column with the cell type of each cell.
    n_spots
        Number of spots.
    cells_per_spot
        Inclusive range of the number of cells in a spot (one number: that many in every
        spot). A spot whose types' pools hold fewer cells keeps fewer (``obs["n_cells"]``)
        rather than take more than ``max_types_per_spot`` types.
    seed
        Seed of :func:`numpy.random.default_rng` (and of the down-sampling).
    layer
        Layer with the raw counts; ``None`` for ``reference.X``.
    reference_fraction
        Share of each type's cells kept for the returned reference.
    max_types_per_spot
        Most cell types present in one spot.
    depth
        Down-sample every spot to at most this many counts (binomial thinning,
        :func:`scanpy.pp.downsample_counts`), as a spot captures fewer molecules than the sum of
        its cells. ``None`` keeps the summed counts.
    grid
        Lay the spots on a square grid (``obsm["spatial"]``) and draw each spot's cell types
        from smooth random abundance fields, so that proportions vary smoothly in space.
    smoothness
        Width, in spots, of the Gaussian filter that smooths the abundance fields.

    Returns
    -------
    spots
        AnnData (spots x genes): ``X`` the summed (and down-sampled) counts;
        ``obsm["proportions_true"]`` the cell fractions (DataFrame, rows sum to 1);
        ``obsm["cell_counts"]`` cells per type (both with a column per cell type, named as
        the labels: a "/" in them, which anndata >= 0.13 cannot write to .h5ad as a column
        name, is kept and warned); ``obs["n_cells"]``;
        ``uns["pseudo_spots"]``: ``membership`` (spots x pool cells, sparse; a spot's counts
        before down-sampling are ``membership @ pool counts``), ``pool_cells`` (the pool's
        obs names), and the settings.
    reference
        The held-out reference cells (a copy), disjoint from every cell used in a spot.

    Examples
    --------
    >>> import deltavae as dv
    >>> cells = dv.datasets.pbmc3k()
    >>> spots, ref = dv.datasets.pseudo_spots(cells, "cell_type", n_spots=100, seed=0)
    >>> spots.obsm["proportions_true"].sum(axis=1).round(6).unique().tolist()
    [1.0]
    >>> set(ref.obs_names).isdisjoint(spots.uns["pseudo_spots"]["pool_cells"])
    True
    """
    n_spots = _check_positive_int("n_spots", n_spots)
    low, high = _check_range("cells_per_spot", cells_per_spot, integer=True)
    check_bool("grid", grid)  # "no" laid the spots on a grid
    seed = _check_seed(seed)
    call = "pseudo_spots(reference, labels_key)"
    check_anndata(reference, "reference", call, optional=False, genes="the gene names")
    names = reference.obs_names
    if not names.is_unique:  # uns["pseudo_spots"]["pool_cells"] names the pool
        repeated = names[names.duplicated()].unique()[:3].tolist()
        raise ValueError(
            f"reference repeats cell names (e.g. {repeated}); the spots' pool is recorded by "
            "name: make them unique first (reference.obs_names_make_unique())."
        )
    if not _is_number(reference_fraction) or not 0 < reference_fraction < 1:
        raise ValueError(f"reference_fraction={reference_fraction!r} must lie in (0, 1)")
    max_types_per_spot = _check_positive_int("max_types_per_spot", max_types_per_spot)
    if depth is not None:
        depth = _check_positive_int("depth", depth)
    if not _is_number(smoothness) or not 0 <= smoothness < np.inf:
        raise ValueError(f"smoothness={smoothness!r} must be a finite number >= 0")
    labels = check_labels(reference, labels_key)
    counts = _counts_matrix(reference, layer)
    rng = np.random.default_rng(seed)

    in_reference = _split_cells(labels, reference_fraction, rng)
    pool = np.flatnonzero(~in_reference)
    pool_codes = labels.codes[pool]
    # Named as the models name cell types (NMFDeconv's columns), and as h5ad can write them;
    # check_labels refused types named alike (1 and '1'), which would name two columns alike.
    types = [str(t) for t in labels.categories]
    fix = renamed_column("reference", labels_key)
    where = "obsm['proportions_true'] and obsm['cell_counts']"
    warn_slashed(types, "cell types", where, fix, before="calling pseudo_spots")
    n_types = len(types)
    available = [list(rng.permutation(np.flatnonzero(pool_codes == t))) for t in range(n_types)]
    capacity = np.bincount(pool_codes, minlength=n_types)
    if high > capacity.sum():
        raise ValueError(
            f"cells_per_spot allows {high} cells but the spot pool has only {capacity.sum()}"
        )
    type_weights = capacity / len(pool)

    side = int(np.ceil(np.sqrt(n_spots)))
    fields = _smooth_fields(rng, n_types, (side, side), smoothness)[:n_spots] if grid else None
    cell_counts = np.zeros((n_spots, n_types), dtype=int)
    rows, cols = [], []
    for s in range(n_spots):
        # Fields modulate the pool's composition, so rare types stay rare on average.
        weights = type_weights if fields is None else fields[s] * type_weights
        weights = weights / weights.sum()
        n_cells = int(rng.integers(low, high + 1))
        cell_counts[s] = _draw_spot_types(rng, n_cells, weights, max_types_per_spot, capacity)
        for t in np.flatnonzero(cell_counts[s]):
            n_t = cell_counts[s, t]
            if len(available[t]) < n_t:
                available[t] = list(rng.permutation(np.flatnonzero(pool_codes == t)))
            chosen = [available[t].pop() for _ in range(n_t)]
            rows.extend([s] * n_t)
            cols.extend(chosen)
    membership = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_spots, len(pool))
    )
    X = (membership @ counts[pool]).tocsr()
    spot_names = [f"spot_{s}" for s in range(n_spots)]
    fractions = cell_counts / cell_counts.sum(axis=1, keepdims=True)
    spots = ad.AnnData(
        X=X,
        obs=pd.DataFrame({"n_cells": cell_counts.sum(axis=1)}, index=spot_names),
        var=reference.var[[]].copy(),
    )
    spots.obsm["proportions_true"] = pd.DataFrame(fractions, index=spot_names, columns=types)
    spots.obsm["cell_counts"] = pd.DataFrame(cell_counts, index=spot_names, columns=types)
    if grid:
        spots.obsm["spatial"] = np.stack(np.divmod(np.arange(n_spots), side), axis=1)[
            :, ::-1
        ].astype(np.float32)
    if depth is not None:
        sc.pp.downsample_counts(spots, counts_per_cell=depth, random_state=seed)
        spots.X = sp.csr_matrix(spots.X, dtype=np.float32)
    spots.uns["pseudo_spots"] = {
        "membership": membership,
        "pool_cells": np.asarray(reference.obs_names[pool], dtype=str),
        "labels_key": labels_key,
        "seed": int(seed),
        "cells_per_spot": np.array([low, high]),
        "depth": -1 if depth is None else depth,
    }
    ref = reference[in_reference].copy()
    logger.info(
        "pseudo_spots: %d spots from %d pool cells; %d reference cells held out",
        n_spots,
        len(pool),
        ref.n_obs,
    )
    return spots, ref


def _marker_profiles(
    rng: np.random.Generator, n_archetypes: int, n_genes: int, n_markers: int, fold: float
) -> np.ndarray:
    base = rng.lognormal(mean=0.0, sigma=1.0, size=n_genes)
    profiles = np.tile(base, (n_archetypes, 1))
    genes = rng.permutation(n_genes)[: n_archetypes * n_markers].reshape(n_archetypes, n_markers)
    for k in range(n_archetypes):
        profiles[k, genes[k]] *= fold
    return profiles / profiles.sum(axis=1, keepdims=True)


@foreign_keywords(random_state="seed")
def convex_mixtures(
    n_spots: int = 500,
    n_genes: int = 200,
    n_archetypes: int = 4,
    seed: int = 0,
    *,
    concentration: float = 0.3,
    n_markers: int = 15,
    marker_fold: float = 8.0,
    library_size: tuple[float, float] = (2000.0, 8000.0),
    dispersion: float = 20.0,
) -> ad.AnnData:
    """Counts from known archetype profiles mixed with known convex weights.

    Each spot's weights over the archetypes are Dirichlet(``concentration``); a small
    concentration puts many spots near a pure archetype. Archetype profiles share a
    log-normal baseline and each up-regulates its own ``n_markers`` genes ``marker_fold``-fold.
    Counts are negative binomial with mean ``library * weights @ profiles``.

    Parameters
    ----------
    n_spots, n_genes
        Size of the count matrix.
    n_archetypes
        Number of true archetypes.
    seed
        Seed of :func:`numpy.random.default_rng`.
    concentration
        Dirichlet concentration of the mixture weights.
    n_markers
        Marker genes per archetype.
    marker_fold
        Fold change of the marker genes over the baseline.
    library_size
        Range of the per-spot library sizes (drawn log-uniformly; one number: that size).
    dispersion
        NB inverse dispersion.

    Returns
    -------
    anndata.AnnData
        ``X`` CSR float32 counts; ``obsm["weights_true"]`` (spots x archetypes);
        ``varm["profiles_true"]`` (genes x archetypes, each column sums to 1);
        ``obs["archetype_true"]`` (the largest weight); ``uns["synthetic"]`` the settings.

    Examples
    --------
    >>> import deltavae as dv
    >>> mix = dv.datasets.convex_mixtures(n_spots=100, n_genes=50, n_archetypes=3, n_markers=5)
    >>> mix.obsm["weights_true"].shape, mix.varm["profiles_true"].shape
    ((100, 3), (50, 3))
    """
    n_spots = _check_positive_int("n_spots", n_spots)
    n_genes = _check_positive_int("n_genes", n_genes)
    n_archetypes = _check_positive_int("n_archetypes", n_archetypes)
    n_markers = _check_positive_int("n_markers", n_markers)
    _check_positive("concentration", concentration)
    _check_positive("dispersion", dispersion)
    if n_archetypes * n_markers > n_genes:
        raise ValueError(
            f"n_archetypes * n_markers = {n_archetypes * n_markers} exceeds n_genes={n_genes}"
        )
    _check_positive("marker_fold", marker_fold)
    low, high = _check_range("library_size", library_size)
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    profiles = _marker_profiles(rng, n_archetypes, n_genes, n_markers, marker_fold)
    weights = rng.dirichlet(np.full(n_archetypes, concentration), size=n_spots)
    library = np.exp(rng.uniform(np.log(low), np.log(high), size=n_spots))
    mean = library[:, None] * weights @ profiles
    X = sp.csr_matrix(_sample_nb(rng, mean, np.full_like(mean, dispersion)).astype(np.float32))
    names = [f"archetype_{k}" for k in range(n_archetypes)]
    obs = pd.DataFrame(
        {"archetype_true": pd.Categorical.from_codes(weights.argmax(axis=1), categories=names)},
        index=[f"spot_{s}" for s in range(n_spots)],
    )
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"gene_{g}" for g in range(n_genes)]))
    adata.obsm["weights_true"] = weights.astype(np.float32)
    adata.varm["profiles_true"] = profiles.T.astype(np.float32)
    adata.uns["synthetic"] = {
        "generator": "convex_mixtures",
        "seed": int(seed),
        "n_archetypes": n_archetypes,
        "concentration": float(concentration),
        "dispersion": float(dispersion),
    }
    return adata
