"""Plots of model outputs: cluster uncertainty on an embedding, predicted vs real expression."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._checks import check_bools, check_ncols, float_array, short_repr
from .._close_names import did_you_mean, suffixed_hint
from .._docs import doc_ax, doc_params, doc_show_save_apart
from .._renamed import foreign_keywords
from .._warn import warn_user
from ..metrics import mean_expression_r2
from ..metrics._missing import flat
from ..metrics._perturbation import gene_means
from ._basis import AXIS_NAMES, missing_basis
from ._spatial import _bound, _bounds
from ._tissue import DEFAULT, PLACING, doc_tissue, draw_tissue, placed, spot_drawer, tissue
from ._utils import (
    as_names,
    check_adata,
    closes_on_error,
    colour_bar_end,
    figure_size,
    frame,
    label_points,
    one_axes,
    own_axes,
    panel_axes,
    panel_titles,
    savefig_or_show,
)


def cluster_entropy(
    probs: np.ndarray | AnnData, normalize: bool = True, probs_key: str = "cgmdvae_cluster_probs"
) -> np.ndarray:
    """Entropy of each cell's cluster probabilities.

    Parameters
    ----------
    probs
        Cells x clusters, rows summing to 1, or an AnnData holding them in
        ``obsm[probs_key]`` (written by :meth:`deltavae.model.CGMDVAE.write_to_adata`). A
        row of NaN (a cell without results, as ``ad.concat(join="outer")`` leaves the cells
        of another data set) has a NaN entropy.
    normalize
        Divide by log K so that 0 is a certain assignment and 1 a uniform one.
    probs_key
        obsm entry read when ``probs`` is an AnnData.

    Returns
    -------
    One value per cell (NaN for a row of NaN).

    Examples
    --------
    >>> import numpy as np
    >>> cluster_entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(3).tolist()
    [0.0, 1.0]
    >>> adata.obs["entropy"] = cluster_entropy(adata)  # doctest: +SKIP
    """
    if not isinstance(probs, AnnData) and hasattr(probs, "predict_clusters"):
        raise TypeError(
            f"cluster_entropy takes probabilities or an AnnData, not {type(probs).__name__}: "
            "pass model.predict_clusters(soft=True), or the AnnData after "
            "model.write_to_adata(adata)."
        )
    if not isinstance(normalize, bool | np.bool_):
        # cluster_entropy(adata, "run2_cluster_probs"), as cluster_probabilities takes its
        # probs_key second: read as normalize=True, the default key's entropies came back.
        hint = ""
        if isinstance(probs, AnnData) and isinstance(normalize, str) and normalize in probs.obsm:
            hint = f" (the second argument): pass probs_key={normalize!r} by name"
        raise ValueError(f"normalize must be True or False, got {short_repr(normalize)}{hint}.")
    probs = _probabilities(probs, probs_key) if isinstance(probs, AnnData) else probs
    probs = float_array(probs, "probs", "cells x clusters, or an AnnData holding them")
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be cells x clusters (K >= 2); got shape {probs.shape}.")
    missing = np.isnan(probs).all(axis=1)  # cells without results
    known = probs[~missing]
    if (known < 0).any() or not np.allclose(known.sum(1), 1.0, atol=1e-3):
        raise ValueError(
            "probs must be non-negative with rows summing to 1 (or a row all NaN for a cell "
            "without results)."
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)
    entropy = 0.0 - terms.sum(1)  # 0.0, not -0.0, for a certain assignment
    entropy[missing] = np.nan
    return entropy / np.log(probs.shape[1]) if normalize else entropy


def _probabilities(adata: AnnData, probs_key: str) -> np.ndarray:
    if probs_key not in adata.obsm:
        # write_to_adata(key_added="run2") writes obsm["run2_cluster_probs"]: name it.
        written = [key for key in adata.obsm if str(key).endswith("_cluster_probs")]
        fix = (
            f"write_to_adata wrote {written} (obsm['<key_added>_cluster_probs']): pass "
            f"probs_key={written[0]!r}."
            if written
            else "Run model.write_to_adata(adata) first."
        )
        raise KeyError(
            f"probs_key={probs_key!r} is not in adata.obsm; available: {list(adata.obsm)}. {fix}"
        )
    return np.asarray(adata.obsm[probs_key], dtype=float)


def _coordinates(adata: AnnData, basis: str) -> tuple[np.ndarray, str]:
    name = basis.removeprefix("X_")
    for key in (basis, f"X_{name}"):
        if key in adata.obsm:
            coords = np.asarray(adata.obsm[key], dtype=float)
            if coords.ndim != 2 or coords.shape[1] < 2:
                raise ValueError(f"obsm[{key!r}] has shape {coords.shape}; expected (cells, 2+).")
            return coords[:, :2], AXIS_NAMES.get(name, name)
    raise missing_basis(
        adata,
        basis,
        "Compute it first, e.g. sc.pp.neighbors(adata, use_rep='X_cgmdvae'); sc.tl.umap(adata).",
    )


def _panel_scale(values: np.ndarray, low, high, top: float | None) -> tuple[float, float]:
    """Ends of a panel's colour scale: ``low`` and ``high`` (``vmin`` and ``vmax``) resolved
    on its ``values`` (NaN left out), else 0 and ``top`` (its maximum where ``None``)."""
    bottom = _bound(values, low, 0.0)
    top = _bound(values, high, top if top is not None else float(values.max(initial=bottom)))
    return (bottom, top) if top > bottom else (bottom, bottom + (abs(bottom) * 0.1 or 1.0))


def _cluster_names(adata: AnnData, probs_key: str, n: int) -> list[str]:
    stored = adata.obsm.get(probs_key)
    if isinstance(stored, pd.DataFrame):  # a table of probabilities names its clusters
        return [str(v) for v in stored.columns]
    prefix = probs_key.removesuffix("_cluster_probs")
    uns = adata.uns.get(prefix, {})
    names = uns.get("cluster_names") if isinstance(uns, dict) else None
    if names is not None and len(names) == n:
        return [str(v) for v in names]
    return _names_from_clusters(adata, probs_key, f"{prefix}_cluster", n)


def _names_from_clusters(adata: AnnData, probs_key: str, cluster_key: str, n: int) -> list[str]:
    """Cluster names without ``uns`` (``ad.concat`` drops it): each column's from the cells
    it is the largest of, in the cluster column written beside it; its number otherwise."""
    names = [str(k) for k in range(n)]
    clusters = adata.obs.get(cluster_key)
    if clusters is None:
        return names
    probs = _probabilities(adata, probs_key)
    scored = ~np.isnan(probs).all(axis=1)  # not the cells without results (NaN rows)
    top = probs[scored].argmax(axis=1)
    for k in np.unique(top):
        found = clusters[scored][top == k].dropna().astype(str).unique()
        if len(found) != 1:  # not the column's cluster: names cannot be told
            return [str(j) for j in range(n)]
        names[k] = found[0]
    return names if len(set(names)) == n else [str(k) for k in range(n)]


@doc_params(tissue=doc_tissue, **doc_show_save_apart("cluster_probabilities"))
@foreign_keywords(color="clusters")
@closes_on_error
def cluster_probabilities(
    adata: AnnData,
    probs_key: str = "cgmdvae_cluster_probs",
    basis: str = "X_umap",
    clusters: Sequence[str | int] | None = None,
    normalize: bool = True,
    size: float | None = None,
    cmap: str = "magma_r",
    ncols: int = 3,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    title: str | Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    return_fig: bool = False,
    img_key: str | None = DEFAULT,
    library_id: str | None = DEFAULT,
    scale_factor: float | None = None,
    spot_size: float | None = None,
    alpha_img: float = 1.0,
    bw: bool = False,
    crop_coord: tuple[float, float, float, float] | None = None,
    frameon: bool | None = None,
    vmin: float | str | Sequence | None = None,
    vmax: float | str | Sequence | None = None,
) -> Axes | list[Axes] | Figure | None:
    """How certain the cluster assignments are: entropy of q(y | z) on an embedding.

    The first panel colours every cell by the entropy of its cluster probabilities (0: one
    cluster for sure; 1, normalised: all clusters equally likely). Cells between clusters and
    clusters the model cannot separate stand out. Further panels, one per entry of
    ``clusters``, show the probability of that cluster. The probabilities rank cells by
    certainty; they are not chances of being right, and run high (on PBMC 3k unsupervised, a
    mean top probability of 0.96 at ARI 0.52 after 40 epochs; see
    :meth:`deltavae.model.CGMDVAE.predict_labels`).

    Parameters
    ----------
    adata
        AnnData with the probabilities in ``obsm[probs_key]`` (written by
        :meth:`deltavae.model.CGMDVAE.write_to_adata`) and a 2-D embedding. Cells whose
        probabilities are NaN (cells of another data set, after ``ad.concat(join="outer")``)
        are drawn in light grey.
    probs_key
        obsm entry, cells x clusters.
    basis
        obsm entry with the embedding (``"X_umap"`` or ``"umap"``).
    clusters
        Cluster name(s) (from ``uns["cgmdvae"]["cluster_names"]``; where ``ad.concat`` left
        ``uns`` behind, from the cells of ``obs["cgmdvae_cluster"]``) or indices to draw the
        probability of, one panel each; where the clusters are named by integers (integer
        labels), an integer is a name.
    normalize
        Divide the entropy by log K.
    size
        Marker size (points²; one, or one per cell); default from the number of cells. Spots
        of a known diameter are drawn to scale on ``basis="spatial"`` (see
        :func:`spatial_proportions`), and ``size`` scales their diameter.
    cmap
        Colour map of the entropy panel; the probabilities use ``rcParams["image.cmap"]``
        (viridis, or ``sc.set_figure_params(color_map=...)``), as scanpy's plots.
    ncols
        Panels per row.
    ax
        Axes to draw the entropy panel on (without ``clusters``), or a sequence of Axes, one
        per panel (``plt.subplots(1, 2)`` for the entropy and one cluster); a new figure when
        ``None``.
    {show_save}
    title
        Title of each panel (default ``"Cluster entropy"``, then ``"P(cluster <name>)"``),
        or one string: the title of a single panel, or of the figure of several.
    figsize
        Size of one panel (inches, its colour bar included); default
        ``rcParams["figure.figsize"]`` where set (``sc.set_figure_params``, as scanpy sizes
        each panel), else (4.8, 3.8).
    {return_fig}
    {tissue}
    frameon
        Draw a frame (and the axis labels) around each panel; default
        ``sc.set_figure_params(frameon=...)`` (``True`` unless set), as
        :func:`scanpy.pl.embedding`.
    vmin
        Lower end of the colour scales, as :func:`spatial_proportions` takes it: a number,
        ``"pN"`` (a panel's Nth percentile), a function of a panel's values, or a list of one
        per panel; default 0. Values beyond either end take its colour, and the colour bar an
        arrow-tipped end.
    vmax
        Upper end of the colour scales, taken as ``vmin`` is; default the maximum of what a
        panel draws: 1 for a probability and the normalised entropy, log K for the entropy in
        nats (``normalize=False``, K clusters), so that a panel of uncertain cells alone is
        not stretched to look sure, nor one of sure cells to look uncertain.

    Returns
    -------
    The Axes (a list of Axes when ``clusters`` is given), unless the figure is shown; the
    Figure with ``return_fig``.

    Examples
    --------
    >>> g.write_to_adata(adata)  # doctest: +SKIP
    >>> sc.pp.neighbors(adata, use_rep="X_cgmdvae"); sc.tl.umap(adata)  # doctest: +SKIP
    >>> ax = dv.pl.cluster_probabilities(adata, show=False)  # doctest: +SKIP
    >>> dv.pl.cluster_probabilities(adata, clusters=["0", "3"], save="_probs.png")  # doctest: +SKIP
    """
    check_adata(adata, "cluster_probabilities")
    check_bools(normalize=normalize, bw=bw, return_fig=return_fig, show=show, frameon=frameon)
    check_ncols(ncols)
    if adata.n_obs == 0:
        raise ValueError("adata holds no cells: nothing to draw.")
    probs = _probabilities(adata, probs_key)
    coords, axis_name = _coordinates(adata, basis)
    placing = dict(zip(PLACING, (img_key, library_id, scale_factor, spot_size), strict=False))
    placing.update(alpha_img=alpha_img, bw=bw, crop_coord=crop_coord)
    placing = placed(basis, axis_name == "spatial", **placing)
    on = tissue(adata, **placing) if axis_name == "spatial" else None
    coords = coords * (on.scale if on is not None else 1.0)
    entropy = cluster_entropy(probs, normalize=normalize)
    names = _cluster_names(adata, probs_key, probs.shape[1])
    columns = []
    # Where clusters are named by integers (integer labels; 0 to K-1 unsupervised), an integer
    # is a name: clusters=[1] drew label 2's probability (index 1) for labels 1, 2.
    numbered = any(name.lstrip("-").isdigit() for name in names)
    for cluster in as_names(clusters, "clusters") or []:
        integer = isinstance(cluster, int | np.integer) and not isinstance(cluster, bool)
        if (isinstance(cluster, str) or integer and numbered) and str(cluster) in names:
            columns.append(names.index(str(cluster)))
        elif integer and not numbered and 0 <= int(cluster) < probs.shape[1]:
            columns.append(int(cluster))
        else:
            hint = did_you_mean(cluster, names) if isinstance(cluster, str) else ""
            lost = names == [str(k) for k in range(len(names))]  # numbered: names not found
            if not hint and lost and isinstance(cluster, str) and not cluster.isdigit():
                uns = probs_key.removesuffix("_cluster_probs")
                hint = (
                    f"The clusters' names are not in adata.uns[{uns!r}] (anndata.concat drops "
                    "uns), nor to be told from the cluster column: run "
                    "model.write_to_adata(adata) again, or name the clusters by number."
                )
            raise KeyError(
                f"cluster {cluster!r} is not one of the clusters {names}. {hint}".strip()
            )
    n_panels = 1 + len(columns)
    fig, axes = panel_axes(ax, n_panels, ncols, figure_size(figsize, (4.8, 3.8)))
    draw = spot_drawer(on, size, adata.n_obs, max(1.0, 30000.0 / max(adata.n_obs, 1) ** 1.1))
    label = "normalised entropy" if normalize else "entropy (nats)"
    # The scale ends at the entropy's maximum, 1 normalised and log K in nats (the largest
    # entropy drawn stretched cells that were all 90% sure over the whole colour map).
    most = 1.0 if normalize else float(np.log(probs.shape[1]))
    panels = [(entropy, "Cluster entropy", cmap, label, most)]
    panels += [(probs[:, k], f"P(cluster {names[k]})", None, "probability", 1.0) for k in columns]
    titles, figure_title = panel_titles(title, [panel[1] for panel in panels])
    bounds = _bounds(vmin, vmax, titles)
    for ax, name, (values, _, colours, bar, top), (low, high) in zip(
        axes, titles, panels, bounds, strict=True
    ):
        # Cells without results (NaN) in light grey under the others, as scanpy's na_color.
        missing = np.isnan(values)
        if missing.any():
            draw(ax, coords[missing], missing, c="lightgray", linewidths=0, rasterized=True)
        # Draw the highest values last so that uncertain (or probable) cells are not hidden.
        order = np.flatnonzero(~missing)[np.argsort(values[~missing], kind="stable")]
        bottom, top = _panel_scale(values[~missing], low, high, top)
        points = draw(
            ax,
            coords[order],
            order,
            c=values[order],
            cmap=colours,
            vmin=bottom,
            vmax=top,
            linewidths=0,
            rasterized=True,
        )
        # An arrow-tipped end only where vmin or vmax clip values: the probabilities and the
        # entropy lie within their default scales.
        extend = colour_bar_end(values, bottom, top)
        fig.colorbar(points, ax=ax, label=bar, fraction=0.046, pad=0.02, extend=extend)
        ax.set_title(name)
        ax.grid(False)
        frame(ax, axis_name, frameon)
        if on is not None:  # spots to scale, rows down, over their image (sc.pl.spatial's)
            draw_tissue(ax, on)
    if figure_title is not None:
        fig.suptitle(figure_title)
    return savefig_or_show(
        axes[0] if n_panels == 1 else axes, "cluster_probabilities", show, save, return_fig
    )


@doc_params(
    ax=doc_ax,
    **doc_show_save_apart("perturbation_scatter"),
)
@closes_on_error
def perturbation_scatter(
    predicted,
    observed,
    highlight: Sequence[str] | None = None,
    n_labels: int = 10,
    ax: Axes | None = None,
    xlabel: str = "observed mean expression",
    ylabel: str = "predicted mean expression",
    title: str | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    figsize: tuple[float, float] | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Predicted against observed mean expression per gene, with R² (scGen's figure).

    Each point is a gene: its mean over the observed cells (x) and over the predicted cells
    (y). The diagonal is a perfect prediction. R² is
    :func:`deltavae.metrics.mean_expression_r2` over all genes and, when ``highlight`` is
    given (e.g. the genes that respond most to the perturbation), over those genes too.

    Parameters
    ----------
    predicted
        The predicted cells (their gene means on the y axis): cells x genes as AnnData
        (``X``), a DataFrame (genes as columns, as ``get_normalized_expression`` returns it)
        or an array.
    observed
        The observed cells (their gene means on the x axis), as ``predicted`` is given and on
        its scale (e.g. both normalised and log1p-transformed); the numbers of cells may
        differ, the genes must match.
    highlight
        Gene name(s) (needs AnnData or DataFrames) to colour, label and score separately
        (their R² from 3 genes on; undefined, and said so, where their means are all equal
        on one side). A name given twice counts once, with a warning.
    n_labels
        Label the ``n_labels`` highlighted genes with the highest observed mean.
    {ax}
    xlabel
        Label of the x axis (the observed means).
    ylabel
        Label of the y axis (the predicted means).
    title
        Title of the plot; default ``"R² = ... (all genes)"``, ``""`` for none.
    {show_save}
    figsize
        Size of the figure (inches) when it is made here (``ax=None``); default
        ``rcParams["figure.figsize"]`` where set (``plt.rcParams``, ``sc.set_figure_params``),
        as scanpy's plots follow it, else (4.5, 4.2).
    {return_fig}

    Returns
    -------
    The Axes, unless the figure is shown; the Figure with ``return_fig``. The R² values are
    in the legend and title.

    Examples
    --------
    >>> pred = g.predict_perturbation(ctrl, "stim")  # doctest: +SKIP
    >>> ax = dv.pl.perturbation_scatter(pred, stim, highlight=top, show=False)  # doctest: +SKIP
    """
    check_bools(return_fig=return_fig, show=show)
    pred, pred_genes = gene_means(predicted, "predicted")
    true, true_genes = gene_means(observed, "observed")
    r2_all = mean_expression_r2(predicted, observed)
    genes = pred_genes if pred_genes is not None else true_genes
    mask = np.zeros(pred.size, dtype=bool)
    r2_top = None
    if highlight is not None:
        if genes is None:
            raise ValueError(
                "highlight needs gene names: pass AnnData or DataFrames for predicted or observed."
            )
        highlight = [str(g) for g in as_names(highlight, "highlight")]
        if len(set(highlight)) < len(highlight):  # counted once: "highlighted (2)" for 3 names
            repeated = list(pd.Index(highlight)[pd.Index(highlight).duplicated()].unique())
            warn_user(
                f"highlight names {repeated[:5]} more than once: each gene is drawn and counted "
                f"once ({len(set(highlight))} genes); pass each once, list(dict.fromkeys(...))."
            )
        missing = sorted(set(highlight) - set(genes))
        if missing:
            known = genes.tolist()  # muscat's CD79A_ENSG00000105369 before difflib's CD9
            hints = "".join(
                f" {suffixed_hint([g], known)}."
                if suffixed_hint([g], known)
                else f" {g!r}: {did_you_mean(g, known)}"
                if did_you_mean(g, known)
                else ""
                for g in missing[:5]
            )
            raise KeyError(
                f"highlight genes not found: {missing[:5]} ({len(missing)} in all).{hints}"
            )
        mask = np.isin(genes, highlight)
        if mask.sum() >= 3:
            # Genes off on one side (a stimulated-only gene in control cells) have equal
            # means there: their R² is undefined, and the plot is drawn without it.
            constant = flat(pred[mask]) or flat(true[mask])  # up to rounding, as the R²'s
            top = (pred[mask][None, :], true[mask][None, :])
            r2_top = float("nan") if constant else mean_expression_r2(*top)
    ax = one_axes(ax, "perturbation_scatter")
    if ax is None:
        ax = own_axes(figure_size(figsize, (4.5, 4.2)))
    if not mask.all():  # every gene highlighted: no "other genes" in the legend
        ax.scatter(
            true[~mask],
            pred[~mask],
            s=6,
            color="0.55",
            linewidths=0,
            label="other genes" if mask.any() else f"all genes (R² = {r2_all:.2f})",
        )
    if mask.any():
        top_label = f"highlighted ({mask.sum()})"
        if r2_top is not None:
            top_label += (
                ", R² undefined (equal means)" if np.isnan(r2_top) else f", R² = {r2_top:.2f}"
            )
        ax.scatter(true[mask], pred[mask], s=14, color="tab:red", linewidths=0, label=top_label)
    low = float(min(true.min(), pred.min()))
    high = float(max(true.max(), pred.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--", zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else f"R² = {r2_all:.3f} (all genes)")
    ax.legend(loc="best", fontsize=8, edgecolor="0.6")
    if mask.any() and n_labels > 0:
        # labelled last: the placement that keeps labels apart needs the final axis limits
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-true[idx])][:n_labels]
        label_points(ax, true[idx], pred[idx], genes[idx], avoid=np.c_[true[mask], pred[mask]])
    return savefig_or_show(ax, "perturbation_scatter", show, save, return_fig)
