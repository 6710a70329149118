"""What ``deltavae fit`` and ``deltavae demo`` print and plot (see :mod:`deltavae.cli`): the
final ELBO, cluster sizes and condition mixing, the UMAP, ELBO and composition PNGs."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import deltavae as dv
from deltavae._cli_files import close_figures_since
from deltavae._cli_flags import _as_flags
from deltavae.pl._tissue import library_column

#: For models that cluster: the obs column with their clusters and the uns entry with the
#: cluster names, sizes and empty clusters (what their ``write_to_adata`` writes).
CLUSTERS: dict[str, tuple[str, str]] = {"cgmdvae": ("cgmdvae_cluster", "cgmdvae")}

#: For spatial models: the obsm entry with each spot's weights over cell types or archetypes,
#: reported (mean weight, spots each one dominates) and drawn on ``obsm["spatial"]``.
SPOT_WEIGHTS: dict[str, str] = {
    "nmfdeconv": "proportions",
    "archetypes": "archetype_weights",
}

#: Spatial models with no latent space to draw a UMAP of.
SPATIAL_MODELS = ("nmfdeconv", "archetypes", "imputer")

#: What a spot model's abundance is (its get_abundance): the spot's counts in reference cells'
#: counts, a number of cells only where spots and reference capture alike ("cells per spot"
#: read 12.5 of the MERFISH toy's single cells, which count ten times the reference's UMIs).
_ABUNDANCE = "reference cells' worth of counts per spot"


def warning_printer():
    """A ``warnings.showwarning`` for one command: each warning as one line on stderr,
    ``deltavae: warning: <note>``, naming the flags (:func:`_as_flags`); a line already
    printed is not printed again (anndata warns of repeated cell names at every read)."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        note = _as_flags(str(message))
        if note not in shown:
            shown.add(note)
            print(f"deltavae: warning: {note}", file=sys.stderr if file is None else file)

    return show


def _last(history: dict, key: str) -> float | None:
    frame = history.get(key)
    if frame is None or len(frame) == 0:
        return None
    return float(frame.iloc[-1, 0])


def _stopped_early(model, epochs: int) -> str:
    """Where early stopping ended the run, after the number of epochs trained (scvi-tools'
    own line, which counts records from the best epoch, is not shown); ``""`` where it did
    not.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> trainer = SimpleNamespace(callbacks=[], callback_metrics={}, max_epochs=400)
    >>> _stopped_early(SimpleNamespace(trainer=trainer), 400)
    ''
    """
    from deltavae.train._convergence import stopped_epoch

    trainer = getattr(model, "trainer", None)
    if trainer is None or stopped_epoch(trainer) is None:
        return ""
    most = getattr(trainer, "max_epochs", None)
    of = "" if most is None else f" of {most} (--epochs)"
    return f"{of}: early stopping ended the run, the validation loss having stopped improving"


def _elbo_report(model, unit: str = "cells") -> list[str]:
    history = model.history or {}
    train, validation = _last(history, "elbo_train"), _last(history, "elbo_validation")
    if train is None:
        return ["final ELBO: no training history recorded"]
    epochs = len(history["elbo_train"])
    valid = f"not computed (no validation {unit})" if validation is None else f"{validation:.2f}"
    lines = [
        f"epochs trained: {epochs}{_stopped_early(model, epochs)}",
        f"final negative ELBO per {unit[:-1]} (lower is better): training {train:.2f}, "
        f"validation {valid}",
    ]
    best = getattr(model, "best_epoch_", None)
    if best is not None and best != history["elbo_train"].index[-1]:
        # The model keeps the restored epoch's parameters, not the last epoch's.
        at = {k: history[k].iloc[:, 0].get(best) for k in ("elbo_train", "elbo_validation")}
        kl = history.get("kl_weight")  # said only of a run that had one (not NMFDeconv's)
        warmed = kl is not None and len(kl) and kl.iloc[:, 0].min() < kl.iloc[-1, 0] - 1e-6
        lines.append(
            f"parameters kept: epoch {best}'s, the lowest validation loss"
            f"{' after the KL warm-up' if warmed else ''} (negative ELBO: training "
            f"{at['elbo_train']:.2f}, validation {at['elbo_validation']:.2f})"
        )
    return lines


def _mixing(fractions: pd.DataFrame, weights: np.ndarray) -> float:
    """Weighted mean over the rows of the entropy of each row's fractions / log(columns).

    Examples
    --------
    >>> _mixing(pd.DataFrame([[0.5, 0.5], [1.0, 0.0]]), np.array([3, 1]))
    0.75
    """
    p = fractions.to_numpy(dtype=float)
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(np.average(-terms.sum(axis=1) / np.log(p.shape[1]), weights=weights))


def _cluster_report(
    results: ad.AnnData, model_name: str, condition_key: str | None, labels_key: str | None = None
) -> list[str]:
    cluster_key, summary_key = CLUSTERS[model_name]
    summary = results.uns[summary_key]
    names = [str(name) for name in summary["cluster_names"]]
    sizes = np.asarray(summary["cluster_sizes"], dtype=int)
    empty = [str(name) for name in summary["empty_clusters"]]
    lines = [
        f"clusters (obs[{cluster_key!r}]): {len(names) - len(empty)} of {len(names)} hold cells"
    ]
    fractions = None
    if condition_key is not None:
        clusters = results.obs[cluster_key].astype(str)
        # Categories without cells (left by subsetting) would count as conditions never mixed.
        conditions = results.obs[condition_key].astype("category").cat.remove_unused_categories()
        fractions = pd.crosstab(clusters, conditions, normalize="index", dropna=False)
    columns = [] if fractions is None else [str(c) for c in fractions.columns]
    width = max([len("cluster"), *(len(name) for name in names)])
    widths = [max(5, len(c)) for c in columns]
    header = f"  {'cluster':<{width}}  {'cells':>7}"
    header += "".join(f"  {c:>{w}}" for c, w in zip(columns, widths, strict=True))
    lines.append(header)
    for name, size in zip(names, sizes, strict=True):
        row = f"  {name:<{width}}  {size:>7d}"
        if fractions is not None:
            values = fractions.loc[name] if name in fractions.index else None
            for column, w in zip(fractions.columns, widths, strict=True):
                cell = "-" if values is None or size == 0 else f"{values[column]:.2f}"
                row += f"  {cell:>{w}}"
        lines.append(row)
    # A label no cell carries (a category left by subsetting) has its cluster, empty: neither
    # more epochs nor fewer clusters (refused below the labels' number) change that.
    gone = [name for name in empty if name in _unused_labels(results, labels_key)]
    if empty and not gone:
        lines.append(
            f"empty clusters: {len(empty)} of {len(names)} ({', '.join(empty)}): train longer "
            "(--epochs) or ask for fewer clusters (--n-clusters)"
        )
    elif empty:
        idle = [name for name in empty if name not in gone]
        lines.append(
            f"empty clusters: {len(empty)} of {len(names)} ({', '.join(gone)}: labels no cell "
            f"carries in --labels-key {labels_key!r}: drop those categories, as its warning "
            f"says{'; ' + ', '.join(idle) + ': train longer (--epochs)' if idle else ''})"
        )
    else:
        lines.append("empty clusters: none")
    if fractions is not None and len(columns) > 1:
        filled = [n for n in fractions.index if n not in empty]
        weights = sizes[[names.index(n) for n in filled]]
        overall = conditions.value_counts(normalize=True).to_frame().T
        lines += [
            f"condition mixing ({condition_key}): {_mixing(fractions.loc[filled], weights):.2f} "
            f"(whole data set: {_mixing(overall, np.ones(1)):.2f})",
            f"  = entropy of the {condition_key} fractions in a cluster / log({len(columns)}), "
            "averaged over cells; 1: every condition equally in every cluster, 0: one "
            "condition per cluster",
        ]
    return lines


def _unused_labels(results: ad.AnnData, labels_key: str | None) -> set[str]:
    """The categories of ``results.obs[labels_key]`` that no cell carries (none without it).

    Examples
    --------
    >>> obs = pd.DataFrame({"t": pd.Categorical(["a"], categories=["a", "b"])}, index=["c"])
    >>> _unused_labels(ad.AnnData(obs=obs), "t")
    {'b'}
    """
    column = None if labels_key is None else results.obs.get(labels_key)
    if column is None or not isinstance(column.dtype, pd.CategoricalDtype):
        return set()
    return set(map(str, column.cat.categories)) - set(map(str, column.dropna().unique()))


def _weights_report(weights: pd.DataFrame, what: str, key: str) -> list[str]:
    """Mean weight of each column over the spots and the spots where it is the largest.

    Examples
    --------
    >>> w = pd.DataFrame({"B": [0.9, 0.2], "T": [0.1, 0.8]})
    >>> for line in _weights_report(w, "cell type", "proportions"):
    ...     print(line)
    cell types (obsm['proportions']), over 2 spots:
      cell type  mean weight  largest in
      B                 0.55           1
      T                 0.45           1
    """
    weights = pd.DataFrame(weights)
    n_missing = int(weights.isna().any(axis=1).sum())  # spots without counts: NaN rows
    weights = weights.dropna()
    dominant = np.bincount(weights.to_numpy().argmax(axis=1), minlength=weights.shape[1])
    width = max(len(what), *(len(str(c)) for c in weights.columns))
    missing = f" ({n_missing} spots without values left out)" if n_missing else ""
    lines = [
        f"{what}s (obsm[{key!r}]), over {len(weights)} spots{missing}:",
        f"  {what:<{width}}  mean weight  largest in",
    ]
    for name, mean, count in zip(weights.columns, weights.mean(), dominant, strict=True):
        lines.append(f"  {str(name):<{width}}  {mean:>11.2f}  {count:>10d}")
    return lines


def _spatial_report(results: ad.AnnData, model, model_name: str) -> list[str]:
    if model_name == "imputer":
        imputed = results.obsm[model.imputed_key]
        lines = [
            # their scale: expected counts (as impute()), not log-normalised expression
            f"imputed genes (obsm[{model.imputed_key!r}], expected counts, not normalised): "
            f"{imputed.shape[1]}",
            f"genes shared with the reference: {model.adata.n_vars} of the spots' "
            f"{results.n_vars}"
            + (" (the others are not used)" if model.adata.n_vars < results.n_vars else ""),
        ]
        if model.proportions_key in results.obsm:  # the deconvolution design writes them too
            lines += _weights_report(
                results.obsm[model.proportions_key], "cell type", model.proportions_key
            )
            abundance = results.obs[model.abundance_key]
            lines.append(
                f"{_ABUNDANCE} (obs[{model.abundance_key!r}]): median {abundance.median():.1f}"
            )
        return lines
    key = SPOT_WEIGHTS[model_name]
    if model_name == "nmfdeconv":
        abundance = results.obs[model.abundance_key]
        return [
            *_weights_report(results.obsm[key], "cell type", key),
            f"{_ABUNDANCE} (obs[{model.abundance_key!r}]): median {abundance.median():.1f}",
        ]
    lines = _weights_report(results.obsm[key], "archetype", key)
    summary = results.uns[model.uns_key]
    raw, kept = int(summary["n_archetypes_raw"]), len(summary["names"])
    chosen = " (chosen by the elbow)" if "elbow" in summary else ""
    merging = f"--merge-threshold {model.merge_threshold:g}, --min-spots {model.min_spots}"
    return [*lines, f"archetypes fitted: {raw}{chosen}; after merging ({merging}): {kept}"]


def _fit_report(results: ad.AnnData, model, args: argparse.Namespace) -> list[str]:
    unit = "spots" if args.model in SPATIAL_MODELS else "cells"
    lines = ["", f"{type(model).__name__} on {results.n_obs} {unit}:"]
    lines += _elbo_report(model, unit)
    if args.model in CLUSTERS:
        keys = (args.condition_key, getattr(args, "labels_key", None))
        lines += _cluster_report(results, args.model, *keys)
    if args.model in SPATIAL_MODELS:
        lines += _spatial_report(results, model, args.model)
    return lines


def _umap(adata: ad.AnnData, rep: str, seed: int) -> None:
    # scanpy's default 15 neighbours, or the number it falls back to for fewer cells, given:
    # scanpy logged "WARNING: n_obs too small: adjusting to `n_neighbors = 4`" on stderr.
    n_neighbors = 15 if adata.n_obs > 15 else 1 + adata.n_obs // 2
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=rep, random_state=seed)
    sc.tl.umap(adata, random_state=seed)


def _file_part(key: str) -> str:
    return re.sub(r"[^\w.-]+", "_", key)


def _save_plots(
    adata: ad.AnnData,
    model,
    folder: Path,
    clusters: Sequence[str] = (),
    others: Sequence[str] = (),
) -> list[Path]:
    """PNGs in ``folder``: the UMAP coloured by each obs column, the ELBO curves, and the
    composition of each cluster column by each other column.

    ``adata`` holds ``obsm["X_umap"]`` and the columns; ``clusters`` get their legend on the
    plot. Without any column the UMAP is drawn uncoloured.
    """
    opened = set(plt.get_fignums())
    folder.mkdir(parents=True, exist_ok=True)
    name = type(model).__name__
    files = []
    for key in [*others, *clusters] or [None]:
        file = folder / (f"umap_{_file_part(key)}.png" if key else "umap.png")
        extra = {"legend_loc": "on data"} if key in clusters else {}
        title = f"{name} latent: {key}" if key else f"{name} latent"
        dv.pl.embedding(adata, color=key, title=title, save=file, show=False, **extra)
        files.append(file)
    files.append(folder / "elbo_history.png")
    dv.pl.history(model, save=files[-1], show=False)
    for cluster in clusters:
        for other in others:
            file = folder / f"composition_{_file_part(cluster)}_by_{_file_part(other)}.png"
            dv.pl.cluster_composition(adata, cluster, other, save=file, show=False)
            files.append(file)
    close_figures_since(opened)
    return files


def _spatial_plots(
    results: ad.AnnData, model, model_name: str, folder: Path, sample_key: str | None = None
) -> list[Path]:
    """ELBO curves; the weights on the spots' coordinates (``obsm["spatial"]``, or
    ``obsm["X_spatial"]``) when they have them, one PNG per slide (``sample_key``, or the obs
    column of ``uns["spatial"]``'s library names) over its own image: slides concatenated
    share coordinates, and drawn in one panel they lay over each other; the
    explained-variance elbow when archetypes chose their number."""
    opened = set(plt.get_fignums())
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "elbo_history.png"]
    dv.pl.history(model, save=files[-1], show=False)
    key = SPOT_WEIGHTS.get(model_name, "proportions")  # imputer: its deconvolution design's
    if key in results.obsm and has_coordinates(results):
        libraries = results.uns.get("spatial")
        libraries = libraries if isinstance(libraries, Mapping) else {}
        column = sample_key or library_column(results, libraries)[0]
        values = [] if column is None else list(pd.unique(results.obs[column].dropna()))
        for value in values if len(values) > 1 else [None]:
            spots = results if value is None else results[(results.obs[column] == value).to_numpy()]
            name = "" if value is None else "_" + re.sub(r"[^\w.-]+", "_", str(value))
            files.append(folder / f"spatial_{key}{name}.png")
            # over its image, as sc.pl.spatial; spots of several libraries (one image each)
            # have no single image to lie on: their coordinates as they are
            if value is not None and str(value) in map(str, libraries):
                tissue = {"library_id": next(k for k in libraries if str(k) == str(value))}
            else:
                tissue = {"img_key": None} if len(libraries) > 1 else {}
            title = None if value is None else f"{column} {value}"
            every = list(spots.obsm[key].columns)  # each state, past pl's default 100 too
            dv.pl.spatial_proportions(
                spots, key, every, save=files[-1], show=False, title=title, **tissue
            )
    if model_name == "archetypes" and "elbow" in results.uns[model.uns_key]:
        files.append(folder / "archetype_elbow.png")
        dv.pl.archetype_elbow(results, save=files[-1], show=False)
    close_figures_since(opened)
    return files


def has_coordinates(results: ad.AnnData) -> bool:
    """Whether the spots have coordinates where :func:`deltavae.pl.spatial_proportions` finds
    them: ``obsm["spatial"]``, or ``obsm["X_spatial"]`` as scanpy's embedding plots name them."""
    return "spatial" in results.obsm or "X_spatial" in results.obsm


def no_tissue_note(results: ad.AnnData, model_name: str) -> str:
    """Why a spatial model's weights were not drawn on the tissue: the spots have no
    coordinates (``obsm["spatial"]`` or ``obsm["X_spatial"]``); ``""`` where they were, or the
    model has none.

    Examples
    --------
    >>> spots = ad.AnnData(obsm={"proportions": np.ones((2, 2))})
    >>> no_tissue_note(spots, "nmfdeconv").endswith("obsm['spatial'] or obsm['X_spatial'])")
    True
    """
    key = SPOT_WEIGHTS.get(model_name, "proportions")  # imputer: its deconvolution design's
    if model_name not in SPATIAL_MODELS or key not in results.obsm or has_coordinates(results):
        return ""
    return (
        f" (no spatial_{key}.png: the spots have no coordinates, obsm['spatial'] or "
        "obsm['X_spatial'])"
    )


def _fit_plots(
    results: ad.AnnData, model, keys: list[str], args: argparse.Namespace, folder: Path
) -> list[Path]:
    if args.model in SPATIAL_MODELS:
        return _spatial_plots(results, model, args.model, folder, getattr(args, "sample_key", None))
    # The UMAP is computed on a small AnnData of the latent and the columns to colour by: the
    # results file keeps the input plus the model's results only, and backed data stay on disk.
    rep = next(key.split("/", 1)[1] for key in keys if key.startswith("obsm/"))
    clusters = [CLUSTERS[args.model][0]] if args.model in CLUSTERS else []
    # One column can be given twice (--labels-key and --condition-key): drawn once.
    given = (args.labels_key, args.condition_key, args.batch_key)
    others = list(dict.fromkeys(k for k in given if k is not None))
    view = ad.AnnData(obs=results.obs[[*clusters, *others]].copy())
    view.obsm[rep] = np.asarray(results.obsm[rep])
    for key in others:
        view.obs[key] = view.obs[key].astype("category")
    print(f"plots: neighbors and UMAP of obsm[{rep!r}] on {view.n_obs} cells ...")
    _umap(view, rep, args.seed)
    return _save_plots(view, model, folder, clusters, others)
