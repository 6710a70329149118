"""Plots of deltavae results, following scanpy's conventions (``ax``, ``show``, ``save``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from natsort import natsorted

from .._checks import check_bools, missing_layer_text, no_column
from .._close_names import did_you_mean
from .._docs import doc_params, doc_show_save, doc_show_save_apart
from .._renamed import foreign_keywords, renamed_keywords
from ._basis import missing_basis
from ._colours import axes_per_colour, each_colour, fill_palette
from ._legends import colorbar_as_tall, room_for_legends
from ._tissue import PLACING, Tissue, draw_tissue, tissue
from ._utils import (
    as_names,
    check_adata,
    closes_on_error,
    figure_size,
    for_scanpy,
    keep_colours,
    one_axes,
    own_axes,
    own_figure,
    savefig_or_show,
)


@doc_params(show_save=doc_show_save("umap", return_fig=False))
def embedding(
    adata: AnnData,
    basis: str = "X_umap",
    color: str | Sequence[str] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    **kwargs,
) -> Axes | list[Axes] | Figure | None:
    """Scatter plot of a 2-D embedding (UMAP, t-SNE, ...) coloured by obs columns or genes.

    A thin wrapper over :func:`scanpy.pl.embedding` that returns the Axes. As in scanpy, a
    saved figure is named after the basis (``umap`` for ``"X_umap"``), and the colours of a
    categorical (or string) column are kept in ``adata.uns[f"{color}_colors"]``, so that later
    plots colour its groups alike. Nothing else of ``adata`` changes (scanpy made its string
    columns categorical), and a view (``adata[mask]``) keeps no colours, so that it stays a
    view.

    Parameters
    ----------
    adata
        AnnData with the embedding in ``obsm``.
    basis
        Key of the embedding in ``adata.obsm`` (``"X_umap"`` or ``"umap"``). ``"spatial"``
        is drawn to scale with the y axis pointing down, as :func:`scanpy.pl.spatial` and
        :func:`spatial_proportions` draw tissue (:func:`scanpy.pl.embedding` drew it upside
        down): over the library's image in ``uns["spatial"]`` where there is one, the
        coordinates times its scale factor and the spots to scale, as
        :func:`scanpy.pl.spatial` places them; ``img_key``, ``library_id``, ``scale_factor``
        and ``spot_size`` as there (``img_key=None``: no image), ``size`` a factor on the
        spots' diameter.
    color
        obs column(s) or gene(s) to colour by, e.g. ``"cell_type"`` or ``["leiden", "CD3E"]``.
    ax
        Axes to draw on: one, or with several colours a sequence of Axes, one per colour
        (``plt.subplots(1, 2)``'s array; scanpy takes none), where ``title``, ``vmin``,
        ``vmax``, ``vcenter``, ``norm`` and ``marker`` take one value per colour as over
        scanpy's grid; a new figure when ``None``.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``title``, ``legend_loc``, ``size``,
        ``palette`` ...); with several colours and no ``wspace``, scanpy's gaps (on
        ``basis="spatial"`` :func:`scanpy.pl.spatial`'s), each widened only where a legend of
        long cell type names would run under the next panel. ``figsize`` sets
        ``rcParams["figure.figsize"]`` for this plot (per panel, as scanpy sizes them), which
        it follows otherwise.

    Returns
    -------
    The Axes (a list of Axes for several colours), unless the figure is shown; the Figure,
    not shown, with ``return_fig=True`` (as scanpy).

    Examples
    --------
    >>> sc.tl.umap(adata)  # doctest: +SKIP
    >>> ax = dv.pl.embedding(adata, color="cell_type", show=False)  # doctest: +SKIP
    >>> dv.pl.embedding(adata, color=["cell_type", "leiden"], save="_types.png")  # doctest: +SKIP
    """
    check_adata(adata, "embedding")
    if adata.n_obs == 0:  # scanpy's marker size divided by zero
        raise ValueError("adata holds no cells: nothing to draw (check the selection).")
    several = not isinstance(color, str) and color is not None and len(color) > 1
    if not several:  # an array of Axes (plt.subplots(1, 2)) was an AttributeError in scanpy
        ax = one_axes(ax, "embedding")
    # one Axes of the user's per colour (scanpy refused ax with several colours)
    given = axes_per_colour(ax, list(color)) if several and ax is not None else None
    name = basis.removeprefix("X_")
    if basis not in adata.obsm and f"X_{name}" not in adata.obsm:
        raise missing_basis(adata, basis, "Compute it first, e.g. sc.tl.umap(adata).")
    # scanpy labels the axes "UMAP1", "UMAP2" for basis "umap" but "X_umap1" for "X_umap".
    key = name if f"X_{name}" in adata.obsm else basis
    stored = f"X_{name}" if key == name and f"X_{name}" in adata.obsm else basis
    _check_drawable(adata, stored, kwargs.get("layer"), kwargs.get("components"))
    gap_given = "wspace" in kwargs
    fill_palette(adata, as_names(color, "color") or [], kwargs)
    figsize = kwargs.pop("figsize", None)
    # not scanpy's: with an ax given it failed (UnboundLocalError: 'fig'); the Figure below
    return_fig = kwargs.pop("return_fig", False)
    check_bools(return_fig=return_fig, show=show)
    sizes = {} if figsize is None else {"figure.figsize": figure_size(figsize, (0, 0))}
    on = _tissue_of(adata, name, kwargs)
    opened = set(plt.get_fignums())
    try:
        # save=False: scanpy's own autosave must not write a second file under its own name.
        drawn = for_scanpy(adata, stored, kwargs)
        if on is not None and on.scale != 1.0:  # full-resolution pixels to the image's
            drawn.obsm[stored] = np.asarray(adata.obsm[stored], dtype=float) * on.scale
        with plt.rc_context(sizes):
            if given is not None:
                axes = each_colour(drawn, key, list(color), given, kwargs)
            else:
                axes = sc.pl.embedding(
                    drawn, basis=key, color=color, ax=ax, show=False, save=False, **kwargs
                )
    except Exception as err:
        # scanpy had opened the figure: an empty one was left behind (shown in a notebook).
        for number in set(plt.get_fignums()) - opened:
            plt.close(number)
        if not isinstance(err, KeyError):
            raise
        message = err.args[0] if err.args else "color not found"
        raise KeyError(_colour_message(adata, color, kwargs, message)) from err
    keep_colours(adata, drawn)
    panels = np.atleast_1d(axes)
    if on is not None:  # tissue as dv.pl.spatial_proportions and sc.pl.spatial draw it
        for panel in [p for p in panels if not hasattr(p, "_colorbar")]:
            draw_tissue(panel, on)
    if ax is None:
        # scanpy's gap holds short legends; a longer one ran under the next panel. A wspace of
        # 0.5 for every figure made three panels of short legends 30% wider than scanpy's.
        # The last column's legend ran past the figure's edge.
        room_for_legends(list(panels), gaps=several and not gap_given)
    if ax is None:
        own_figure((axes[0] if isinstance(axes, list) else axes).figure)
    # return_fig=True: the Figure (of the Axes given too), not shown, as scanpy's
    return savefig_or_show(axes, name, show, save, return_fig)


def _tissue_of(adata: AnnData, name: str, kwargs: dict) -> Tissue | None:
    """Where the spots of ``basis="spatial"`` land on their image (``img_key``, ``library_id``,
    ``scale_factor``, ``spot_size``, ``alpha_img``, ``bw``, ``crop_coord`` taken out of
    ``kwargs``, as :func:`scanpy.pl.spatial` reads them); spots of a known diameter are drawn
    to scale as scanpy's circles, and ``size`` scales that diameter. ``None`` for any other
    basis (whose ``scale_factor`` is scanpy's)."""
    placing = {k: kwargs.pop(k) for k in PLACING if k in kwargs and k != "scale_factor"}
    if name != "spatial":
        if placing:
            raise ValueError(
                f"{sorted(placing)} place spots on a tissue image: basis {name!r} is no tissue "
                "(pass basis='spatial', or leave them out)."
            )
        return None
    on = tissue(adata, scale_factor=kwargs.pop("scale_factor", None), **placing)
    if on.diameter is not None:  # scanpy's circles: their radius in the drawn coordinates
        size = kwargs.get("size")
        size = 1.0 if size is None else np.asarray(size, dtype=float)
        kwargs["size"] = size * on.diameter * 0.5
        kwargs["scale_factor"] = 1.0  # the coordinates handed to scanpy are scaled already
    return on


def _check_drawable(adata: AnnData, stored: str, layer, components) -> None:
    """A basis of fewer than two columns, ``components`` beyond its columns, or a layer
    ``adata`` lacks, named as such: scanpy raised ``IndexError: index 1 is out of bounds``
    and ``KeyError: 'cnts'``."""
    shape = np.shape(adata.obsm[stored])
    if len(shape) != 2 or shape[1] < 2:
        raise ValueError(f"obsm[{stored!r}] has shape {shape}; a 2-D embedding needs 2 columns.")
    for pair in as_names(components, "components") or []:  # scanpy's "1,2" (from 1), or "all"
        numbers = str(pair).replace(" ", "").split(",")
        top = max(map(int, numbers)) if all(n.isdigit() for n in numbers) else 0
        if top > shape[1]:
            raise ValueError(
                f"components={pair!r} asks for column {top} (scanpy counts from 1), and "
                f"obsm[{stored!r}] has {shape[1]}."
            )
    if layer is not None and layer not in adata.layers:
        raise KeyError(missing_layer_text(adata, layer, given=f"layer={layer!r}"))


def _colour_message(adata: AnnData, color, kwargs: dict, message: str) -> str:
    """The colours found nowhere, all of them (scanpy names the first), with close names.

    scanpy looks a colour up in ``obs``, in ``var_names`` (``raw.var_names`` where ``raw`` is
    drawn) or in ``var[gene_symbols]``; where all were found the KeyError was another's.
    """
    known = [str(c) for c in adata.obs.columns]
    use_raw = kwargs.get("use_raw")
    genes = adata.var
    if adata.raw is not None and (use_raw or use_raw is None and kwargs.get("layer") is None):
        genes = adata.raw.var
    symbols = kwargs.get("gene_symbols")
    known += [str(g) for g in (genes[symbols] if symbols in genes else genes.index)]
    missing = [c for c in as_names(color, "color") or [] if str(c) not in set(known)]
    if not missing:
        return message
    where = "adata.raw.var_names" if genes is not adata.var else "adata.var_names"
    where = f"adata.var[{symbols!r}]" if symbols in genes else where
    hints = {c: did_you_mean(c, known) for c in missing}
    hints = "".join(f" {c!r}: {hint}" for c, hint in hints.items() if hint)
    in_raw = [c for c in missing if adata.raw is not None and c in adata.raw.var_names]
    if in_raw and genes is adata.var:
        hints += f" {in_raw} are in adata.raw: pass use_raw=True (and no layer)."
    return f"color {missing} not found in adata.obs columns or {where}.{hints}"


def _cell_text(value: float, counts: bool) -> str:
    if counts:
        return f"{value:.0f}"
    # A few cells out of hundreds would round to a misleading "0.00".
    return "<.01" if value < 0.005 else f"{value:.2f}"


def _tick_names(
    categories, codes: np.ndarray, known: np.ndarray, other: str, show_sizes: bool
) -> list[str]:
    """Tick labels with each category's number of cells (``codes``), and how many of them
    the table leaves out (not ``known``) for lack of the ``other`` column's value."""
    if not show_sizes:
        return [str(c) for c in categories]
    sizes = np.bincount(codes[codes >= 0], minlength=len(categories))
    left_out = np.bincount(codes[(codes >= 0) & ~known], minlength=len(categories))
    return [
        f"{c} (n={int(n)}" + (f", {int(k)} without {other})" if k else ")")
        for c, n, k in zip(categories, sizes, left_out, strict=True)
    ]


#: A numeric column with more distinct values than this is no grouping.
_MAX_NUMERIC_GROUPS = 50


def _check_categories(values: pd.Series, arg: str, key: str) -> None:
    """A numeric obs column of many values (counts, fractions) is not groups of cells."""
    if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values):
        return
    n_values = values.nunique()
    if n_values > _MAX_NUMERIC_GROUPS and not pd.api.types.is_bool_dtype(values):
        raise ValueError(
            f"{arg}={key!r} is a numeric column with {n_values} distinct values, not groups; "
            f"bin it first, e.g. adata.obs['{key}_bin'] = pd.cut(adata.obs[{key!r}], 5), or "
            "pass a categorical column."
        )


def _categorical(values: pd.Series) -> pd.Categorical:
    categorical = pd.Categorical(values)
    if not isinstance(values.dtype, pd.CategoricalDtype):
        # In natural order ("2" before "10"), as anndata makes categories of strings and so
        # scanpy's plots list them; a categorical column keeps its own order.
        categorical = categorical.reorder_categories(natsorted(categorical.categories))
    return categorical.remove_unused_categories()


@doc_params(**doc_show_save_apart("cluster_composition"))
@renamed_keywords(label_key="labels_key")
@foreign_keywords(groupby="cluster_key")
@closes_on_error
def cluster_composition(
    adata: AnnData,
    cluster_key: str,
    labels_key: str,
    normalize: Literal["cluster", "label"] | None = "cluster",
    ax: Axes | None = None,
    annotate: bool = True,
    cmap: str = "Blues",
    show_sizes: bool = True,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Heatmap of how clusters and known labels overlap (the contingency table).

    Rows are clusters, columns are labels. Use it to read, for instance, which cell types make
    up each leiden or CGMDVAE cluster. Categories without cells (an empty cluster) are left
    out; CGMDVAE's ``uns`` summary lists its empty clusters.

    Parameters
    ----------
    adata
        AnnData with both columns in ``obs``.
    cluster_key
        obs column with the clusters (rows).
    labels_key
        obs column with the labels, e.g. cell types (columns); the models'
        ``setup_anndata`` spell it so. Its former name, ``label_key=``, is still read, with
        a FutureWarning.
    normalize
        ``"cluster"``: fraction of each cluster's cells per label (rows sum to 1);
        ``"label"``: fraction of each label's cells per cluster (columns sum to 1);
        ``None``: cell counts.
    ax
        Axes to draw on; a new figure sized to the table when ``None``.
    annotate
        Write each non-zero entry in its cell.
    cmap
        Matplotlib colour map.
    show_sizes
        Add each cluster's and label's number of cells to its tick label (``"A0 (n=63)"``):
        a normalised table hides that a row is one cell, or a thousand. Cells without a
        label (or without a cluster) are counted, and the tick says how many of them the
        table leaves out (``"A0 (n=63, 5 without cell_type)"``): the table and its
        fractions hold only cells with both.
    {show_save}
    title
        Title of the plot; default none (the axes name the two columns).
    figsize
        Size of the figure (inches) when it is made here (``ax=None``); default sized to the
        table and its tick labels, as scanpy sizes its matrix plots (``sc.pl.matrixplot``),
        not ``rcParams["figure.figsize"]``: a fixed size crowded or collapsed large tables.
    {return_fig}

    Returns
    -------
    The Axes, unless the figure is shown; the Figure with ``return_fig``. The table is the
    image's array (``ax.images[0].get_array()``).

    Examples
    --------
    >>> sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False)  # doctest: +SKIP
    >>> ax = dv.pl.cluster_composition(adata, "leiden", "cell_type", show=False)  # doctest: +SKIP
    """
    check_adata(adata, "cluster_composition")
    check_bools(annotate=annotate, show_sizes=show_sizes, return_fig=return_fig, show=show)
    for arg, key in {"cluster_key": cluster_key, "labels_key": labels_key}.items():
        if key not in adata.obs:
            raise KeyError(no_column(arg, key, adata.obs))
        _check_categories(adata.obs[key], arg, key)
    if normalize not in ("cluster", "label", None):
        raise ValueError(f"normalize must be 'cluster', 'label' or None; got {normalize!r}.")
    clusters = _categorical(adata.obs[cluster_key])
    labels = _categorical(adata.obs[labels_key])
    known = (clusters.codes >= 0) & (labels.codes >= 0)
    if not known.any():
        raise ValueError(
            f"No cell has both a {cluster_key!r} and a {labels_key!r} value "
            f"({adata.n_obs} cells): nothing to tabulate."
        )
    table = np.zeros((len(clusters.categories), len(labels.categories)))
    np.add.at(table, (clusters.codes[known], labels.codes[known]), 1)
    row_names = _tick_names(clusters.categories, clusters.codes, known, labels_key, show_sizes)
    col_names = _tick_names(labels.categories, labels.codes, known, cluster_key, show_sizes)
    if normalize == "cluster":
        table = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
        bar_label = "fraction of the row"  # of cells or spots
    elif normalize == "label":
        table = table / np.maximum(table.sum(axis=0, keepdims=True), 1)
        bar_label = "fraction of the column"
    else:
        bar_label = "count"
    n_rows, n_cols = table.shape
    ax = one_axes(ax, "cluster_composition")
    if ax is None:
        # Room for the tick labels too (the columns' at 45 degrees): constrained layout
        # collapses the axes of a figure too small for them.
        longest_row = max(map(len, row_names), default=0)
        longest_col = max(map(len, col_names), default=0)
        fitted = (
            2.7 + 0.6 * n_cols + 0.075 * longest_row,
            1.2 + 0.4 * n_rows + 0.055 * longest_col,
        )
        ax = own_axes(fitted if figsize is None else figure_size(figsize, fitted))
    top = 1.0 if normalize else None  # fractions on their whole scale
    image = ax.imshow(table, cmap=cmap, aspect="auto", vmin=0, vmax=top)
    ax.grid(False)  # a style's grid (scanpy's set_figure_params) would cut through the cells
    ax.set_xticks(np.arange(n_cols), col_names, rotation=45, ha="right")
    ax.set_yticks(np.arange(n_rows), row_names)
    ax.set_xlabel(labels_key)
    ax.set_ylabel(cluster_key)
    if title is not None:
        ax.set_title(title)
    colorbar_as_tall(ax, image, bar_label)  # after the labels: the layout makes room for them
    if annotate:
        dark = 0.6 * (top or table.max())
        for (row, col), value in np.ndenumerate(table):
            if value:
                ax.text(
                    col,
                    row,
                    _cell_text(value, normalize is None),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > dark else "black",
                )
    return savefig_or_show(ax, "cluster_composition", show, save, return_fig)
