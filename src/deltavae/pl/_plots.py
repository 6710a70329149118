"""Plots of deltavae results, following scanpy's conventions (``ax``, ``show``, ``save``)."""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)
from natsort import natsorted

from .._checks import no_column
from .._docs import doc_ax, doc_params, doc_show_save
from ._utils import (
    as_names,
    check_adata,
    for_scanpy,
    keep_colours,
    own_axes,
    own_figure,
    savefig_or_show,
)

logger = logging.getLogger(__name__)

_HISTORY_LABELS = {
    "elbo_train": "training",
    "elbo_validation": "validation",
    "kl_weight": "KL weight",
}


def _history_frames(model) -> Mapping[str, pd.DataFrame]:
    if isinstance(model, AnnData):  # "has no training history; train it first" misled
        raise TypeError(
            "dv.pl.history takes the trained model (or model.history), not an AnnData: the "
            "training history is kept by the model, not written into the AnnData."
        )
    history = model if isinstance(model, Mapping) else getattr(model, "history", None)
    if history is None:
        raise ValueError(
            "The model has no training history; train it first (model.train(...)) or pass "
            "model.history."
        )
    return history


def _history_unit(model, keys: Sequence[str]) -> str:
    """The y label of a history plot: what the curves are, per cell or per spot."""
    from ..model._spots import SpotModelMixin

    unit = "spot" if isinstance(model, SpotModelMixin) else "cell"
    if all(key == "kl_weight" for key in keys):
        return "KL weight"
    if all(key.startswith(("elbo_", "train_loss", "validation_loss")) for key in keys):
        return f"negative ELBO per {unit}"
    unitless = " (nats; the KL weight has none)" if "kl_weight" in keys else " (nats)"
    return f"per {unit}{unitless}"


def _plain_number(value: float, _pos=None) -> str:
    """``20,000`` and ``0.05``, not ``2e+04`` and ``5e-02``."""
    if value >= 1:
        return f"{value:,.0f}" if value == round(value) else f"{value:,.1f}"
    return f"{value:.3g}"


#: Round mantissas of the ticks of a log axis spanning less than a decade.
_NICE = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def _log_ticks(low: float, high: float, n: int = 5) -> list[float]:
    """Up to ``n`` round values between ``low`` and ``high``, evenly spaced in log, the first
    as near ``low`` as a round value allows.

    Examples
    --------
    >>> _log_ticks(1066, 10066)
    [1200.0, 2000.0, 3000.0, 6000.0, 10000.0]
    """
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    nice = np.array([m * 10.0**d for d in decades for m in _NICE])
    nice = nice[(nice >= low) & (nice <= high)]
    if nice.size < 2:
        return list(nice)
    targets = np.log10(np.geomspace(low, high, n))
    picked = {float(nice[np.argmin(np.abs(np.log10(nice) - t))]) for t in targets}
    return sorted(picked)


def _log_values(frames: Sequence[pd.DataFrame]) -> np.ndarray:
    """The finite values of the curves, refused unless all positive (a log axis)."""
    values = np.concatenate([frame.to_numpy(dtype=float).ravel() for frame in frames])
    values = values[np.isfinite(values)]
    if values.size and values.min() <= 0:
        raise ValueError(
            f"log=True needs positive values, but the history goes down to {values.min():.4g} "
            "(a normal likelihood's negative ELBO can be negative); draw it with log=False."
        )
    return values


def _log_y_axis(ax: Axes, frames: Sequence[pd.DataFrame]) -> None:
    """Log-scale y axis labelled with plain numbers over whatever range the curves span.

    Over more than three decades the ticks sit at powers of ten; from one to three at 1, 2
    and 5 times powers of ten; over less (an
    ELBO's usual last stretch) at round values spaced as on a linear axis, so that every
    curve has labelled ticks beside it, at its lowest values too.
    """
    values = _log_values(frames)
    ax.set_yscale("log")
    decades = np.log10(values.max() / values.min()) if values.size else 0.0
    if decades > 3:
        # 1, 2 and 5 in each of many decades (an ELBO with the KL weight) overlapped.
        ax.yaxis.set_major_locator(LogLocator())
    elif decades >= 1:
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    elif decades >= 0.3:
        # Evenly spaced on the log axis: linear steps (2,500, 5,000, 7,500) leave the lowest
        # stretch, where an ELBO ends, without a label.
        ax.yaxis.set_major_locator(FixedLocator(_log_ticks(values.min(), values.max())))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.yaxis.set_minor_formatter(NullFormatter())


@doc_params(ax=doc_ax, show_save=doc_show_save("history"))
def history(
    model,
    keys: Sequence[str] = ("elbo_train", "elbo_validation"),
    ax: Axes | None = None,
    log: bool = False,
    shade_warmup: bool = True,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
) -> Axes | None:
    """Training and validation negative ELBO per epoch.

    Parameters
    ----------
    model
        A trained deltavae model (anything with a ``history`` dict of DataFrames indexed by
        epoch, as scvi-tools keeps it), or that dict itself.
    keys
        History entries to draw, one line each (one name or a list). Entries the history
        lacks are skipped, with a warning for any but ``"elbo_validation"`` (absent when the
        model trained without validation cells); if it has none of them, a ValueError lists
        those it has.
    {ax}
    log
        Logarithmic y axis.
    shade_warmup
        Shade the epochs in which the KL weight was still below 1 (the model then trained on
        a loss with its KL terms down-weighted; ``elbo_train`` is the full ELBO throughout).
    {show_save}

    Returns
    -------
    The Axes, unless the figure is shown.

    Examples
    --------
    >>> vae.train(max_epochs=50)  # doctest: +SKIP
    >>> ax = dv.pl.history(vae, show=False)  # doctest: +SKIP
    >>> dv.pl.history(vae, log=True, save="_log.png")  # doctest: +SKIP
    """
    frames = _history_frames(model)
    keys = as_names(keys, "keys")
    present = [key for key in keys if key in frames]
    if not present:
        raise ValueError(
            f"None of the history keys {list(keys)} were recorded; available keys: "
            f"{sorted(frames)}."
        )
    skipped = [key for key in keys if key not in frames]
    if [key for key in skipped if key != "elbo_validation"]:
        warnings.warn(
            f"The history has no {skipped}; not drawn. Its keys: {sorted(frames)}.",
            UserWarning,
            stacklevel=2,
        )
    elif skipped:
        logger.info("history has no %s; not drawn", skipped)
    if log:  # refused before a figure is made, not after the curves were drawn
        _log_values([frames[key] for key in present])
    if ax is None:
        ax = own_axes((5, 3.5))
    drawn = []
    for key in present:
        frame = frames[key]
        series = frame[key] if key in frame.columns else frame.iloc[:, 0]
        epochs = np.asarray(series.index, dtype=float)
        values = series.to_numpy(dtype=float)
        # One epoch is one point, and a line through one point draws nothing.
        point = {"marker": "o"} if np.isfinite(values).sum() == 1 else {}
        ax.plot(epochs, values, label=_HISTORY_LABELS.get(key, key), **point)
        drawn.append(epochs)
    if shade_warmup and "kl_weight" in frames:
        kl = frames["kl_weight"].iloc[:, 0]
        annealed = kl.index[kl.to_numpy(dtype=float) < 1.0]
        if len(annealed):
            ax.axvspan(
                float(annealed.min()),
                float(annealed.max()) + 1,
                color="0.9",
                zorder=0,
                label="KL warm-up",
            )
    if log:
        _log_y_axis(ax, [frames[key] for key in present])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs_drawn = np.unique(np.concatenate(drawn))
    if epochs_drawn.size == 1:  # else ticks at -0.04, -0.02, ... 0.04
        ax.set_xticks(epochs_drawn)
    ax.set_xlabel("epoch")
    ax.set_ylabel(_history_unit(model, present))
    ax.set_title("Training history")
    # A framed legend stays readable when it sits on the shaded warm-up.
    ax.legend(edgecolor="0.6")
    return savefig_or_show(ax, "history", show, save)


@doc_params(show_save=doc_show_save("umap"))
def embedding(
    adata: AnnData,
    basis: str = "X_umap",
    color: str | Sequence[str] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    **kwargs,
) -> Axes | list[Axes] | None:
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
        Key of the embedding in ``adata.obsm`` (``"X_umap"`` or ``"umap"``).
    color
        obs column(s) or gene(s) to colour by, e.g. ``"cell_type"`` or ``["leiden", "CD3E"]``.
    ax
        Axes to draw on (one colour only); a new figure when ``None``.
    {show_save}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``title``, ``legend_loc``, ``size`` ...);
        with several colours ``wspace`` defaults to 0.5, room for a legend of cell type names.

    Returns
    -------
    The Axes (a list of Axes for several colours), unless the figure is shown.

    Examples
    --------
    >>> sc.tl.umap(adata)  # doctest: +SKIP
    >>> ax = dv.pl.embedding(adata, color="cell_type", show=False)  # doctest: +SKIP
    >>> dv.pl.embedding(adata, color=["cell_type", "leiden"], save="_types.png")  # doctest: +SKIP
    """
    check_adata(adata, "embedding")
    if adata.n_obs == 0:  # scanpy's marker size divided by zero
        raise ValueError("adata holds no cells: nothing to draw (check the selection).")
    name = basis.removeprefix("X_")
    if basis not in adata.obsm and f"X_{name}" not in adata.obsm:
        raise KeyError(
            f"basis={basis!r} is not in adata.obsm; available: {list(adata.obsm)}. "
            "Compute it first, e.g. sc.tl.umap(adata)."
        )
    # scanpy labels the axes "UMAP1", "UMAP2" for basis "umap" but "X_umap1" for "X_umap".
    key = name if f"X_{name}" in adata.obsm else basis
    stored = f"X_{name}" if key == name and f"X_{name}" in adata.obsm else basis
    if not isinstance(color, str) and color is not None and len(color) > 1:
        # scanpy's default gap fits short legends only: cell type names ran into the next panel.
        kwargs.setdefault("wspace", 0.5)
    opened = set(plt.get_fignums())
    try:
        # save=False: scanpy's own autosave must not write a second file under its own name.
        drawn = for_scanpy(adata, stored, kwargs)
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
        raise KeyError(f"{message}{_close_matches(adata, color)}") from err
    keep_colours(adata, drawn)
    if ax is None:
        own_figure((axes[0] if isinstance(axes, list) else axes).figure)
    return savefig_or_show(axes, name, show, save)


def _close_matches(adata: AnnData, color) -> str:
    """Names close to the colours in neither ``obs`` nor ``var_names``, for a KeyError."""
    known = [str(c) for c in adata.obs.columns] + [str(g) for g in adata.var_names]
    missing = [c for c in as_names(color, "color") or [] if c not in set(known)]
    close = {c: difflib.get_close_matches(str(c), known, n=3) for c in missing}
    hints = [f"{c!r}: did you mean {found}?" for c, found in close.items() if found]
    return (" " + " ".join(hints)) if hints else ""


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


@doc_params(show_save=doc_show_save("cluster_composition"))
def cluster_composition(
    adata: AnnData,
    cluster_key: str,
    label_key: str,
    normalize: Literal["cluster", "label"] | None = "cluster",
    ax: Axes | None = None,
    annotate: bool = True,
    cmap: str = "Blues",
    show_sizes: bool = True,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
) -> Axes | None:
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
    label_key
        obs column with the labels, e.g. cell types (columns).
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

    Returns
    -------
    The Axes, unless the figure is shown. The table is the image's array
    (``ax.images[0].get_array()``).

    Examples
    --------
    >>> sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False)  # doctest: +SKIP
    >>> ax = dv.pl.cluster_composition(adata, "leiden", "cell_type", show=False)  # doctest: +SKIP
    """
    check_adata(adata, "cluster_composition")
    for arg, key in {"cluster_key": cluster_key, "label_key": label_key}.items():
        if key not in adata.obs:
            raise KeyError(no_column(arg, key, adata.obs))
        _check_categories(adata.obs[key], arg, key)
    if normalize not in ("cluster", "label", None):
        raise ValueError(f"normalize must be 'cluster', 'label' or None; got {normalize!r}.")
    clusters = _categorical(adata.obs[cluster_key])
    labels = _categorical(adata.obs[label_key])
    known = (clusters.codes >= 0) & (labels.codes >= 0)
    if not known.any():
        raise ValueError(
            f"No cell has both a {cluster_key!r} and a {label_key!r} value "
            f"({adata.n_obs} cells): nothing to tabulate."
        )
    table = np.zeros((len(clusters.categories), len(labels.categories)))
    np.add.at(table, (clusters.codes[known], labels.codes[known]), 1)
    row_names = _tick_names(clusters.categories, clusters.codes, known, label_key, show_sizes)
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
    if ax is None:
        # Room for the tick labels too (the columns' at 45 degrees): constrained layout
        # collapses the axes of a figure too small for them.
        longest_row = max(map(len, row_names), default=0)
        longest_col = max(map(len, col_names), default=0)
        ax = own_axes(
            (2.7 + 0.6 * n_cols + 0.075 * longest_row, 1.2 + 0.4 * n_rows + 0.055 * longest_col)
        )
    top = 1.0 if normalize else None  # fractions on their whole scale
    image = ax.imshow(table, cmap=cmap, aspect="auto", vmin=0, vmax=top)
    ax.grid(False)  # a style's grid (scanpy's set_figure_params) would cut through the cells
    ax.figure.colorbar(image, ax=ax, label=bar_label, fraction=0.05, pad=0.02)
    ax.set_xticks(np.arange(n_cols), col_names, rotation=45, ha="right")
    ax.set_yticks(np.arange(n_rows), row_names)
    ax.set_xlabel(label_key)
    ax.set_ylabel(cluster_key)
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
    return savefig_or_show(ax, "cluster_composition", show, save)
