"""The ``deltavae`` console script.

``deltavae demo`` trains a ZINBVAE on the shipped PBMC 3k data, clusters its latent space and
scores the clusters against the known cell types. ``deltavae fit`` trains a model on any
``.h5ad`` file of raw counts, writes the results back into a copy of it (without scvi-tools'
``_scvi_*`` setup fields), prints a short report (final ELBO; cluster sizes, empty clusters and
condition mixing for clustering models) and writes PNGs into ``<OUTPUT stem>_plots/``.

Both take ``--threads`` (torch's CPU threads; see :func:`deltavae.set_threads`). Bad input,
and whatever the model refuses (``ValueError``, ``KeyError``), ends in one line on stderr,
``deltavae: error: <message>``, with exit status 2.

Examples
--------
Shell::

    deltavae demo --out pbmc_demo
    deltavae fit counts.h5ad --model zinbvae --batch-key sample --out counts_zinbvae.h5ad
    deltavae fit atlas.h5ad --model zinbvae --backed --out atlas_zinbvae.h5ad
    deltavae fit atlas.zarr --model zinbvae --backed --out atlas_zinbvae.zarr
    deltavae --version

Python:

>>> from deltavae.cli import main
>>> main(["--version"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch
from anndata.io import read_elem, write_elem
from lightning.fabric.utilities.warnings import PossibleUserWarning

import deltavae as dv
from deltavae._io import _is_zarr_store
from deltavae._threads import ENV_VAR as THREADS_ENV_VAR
from deltavae._threads import MAX_DEFAULT_THREADS
from deltavae.train import TrainingDivergedError

#: Models ``deltavae fit --model`` can train, by command-line name. A model plugs in by adding
#: its class here; options it does not take (see :func:`_options_for`) are refused clearly.
MODELS: dict[str, type] = {"zinbvae": dv.model.ZINBVAE, "cgmdvae": dv.model.CGMDVAE}

DEMO_EPOCHS = 100
DEMO_RESOLUTION = 0.8
DEMO_N_LATENT = 10
MIN_DEMO_CELLS = 50

#: For models that cluster: the obs column with their clusters and the uns entry with the
#: cluster names, sizes and empty clusters (what their ``write_to_adata`` writes).
CLUSTERS: dict[str, tuple[str, str]] = {"cgmdvae": ("cgmdvae_cluster", "cgmdvae")}
#: Fields scvi-tools' ``setup_anndata`` adds to an AnnData (obs columns, obsm and uns keys):
#: its internals, not results, so they are kept out of the files the CLI writes.
SCVI_PREFIX = "_scvi_"
#: ``deltavae fit --out results.h5ad`` puts its PNGs in ``results_plots/`` next to it.
PLOTS_SUFFIX = "_plots"


class InputError(Exception):
    """A problem with the user's input: reported in one line on stderr, exit status 2."""


def _message(err: BaseException) -> str:
    # str(KeyError) wraps the message in quotes; the first argument is the message itself.
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def _options_for(fn, what: str, **options) -> dict:
    """Keep the options that were given; refuse those ``fn`` names no parameter for.

    ``**kwargs`` does not count as accepting an option, so a model whose ``setup_anndata``
    lacks ``batch_key`` refuses ``--batch-key`` instead of failing somewhere deeper.
    """
    named = {
        name
        for name, param in inspect.signature(fn).parameters.items()
        if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
    }
    given = {name: value for name, value in options.items() if value is not None}
    refused = [name for name in given if name not in named]
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise InputError(f"{what} does not take {flags}.")
    return given


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


@contextlib.contextmanager
def _user_errors(step: str):
    """Report what the model refuses while doing ``step`` as an input error, in one line.

    The model raises ValueError/KeyError (and FileNotFoundError) for what is wrong with the
    data or the options, and TrainingDivergedError (with its advice) when the ELBO became
    NaN; any other exception is a bug and keeps its traceback.
    """
    try:
        yield
    except (ValueError, KeyError, FileNotFoundError, TrainingDivergedError) as err:
        raise InputError(f"{step}: {_message(err)}") from err


def plots_folder(out: str | os.PathLike) -> Path:
    """Where ``deltavae fit`` writes its PNGs: ``<OUTPUT without suffix>_plots`` beside it.

    Examples
    --------
    >>> plots_folder("results/clustered.h5ad").as_posix()
    'results/clustered_plots'
    """
    out = Path(out)
    return out.with_name(out.stem + PLOTS_SUFFIX)


def _same_path(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_writable(target: Path, what: str) -> None:
    """Refuse ``target`` when the nearest existing folder above it is a file or read-only."""
    for ancestor in Path(os.path.abspath(target)).parents:
        if not ancestor.exists():
            continue
        if not ancestor.is_dir():
            raise InputError(f"cannot write {what} {str(target)!r}: {str(ancestor)!r} is a file.")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise InputError(
                f"cannot write {what} {str(target)!r}: no permission to write in {str(ancestor)!r}."
            )
        return


def _check_out(path: Path, out: Path, store_out: bool, plots: Path | None) -> None:
    """Refuse an ``--out`` that cannot or must not be written, before anything is loaded."""
    if _same_path(path, out):
        raise InputError(
            f"--out {str(out)!r} is the input; write the results to a new file, the input is "
            "kept as it is."
        )
    if path.is_dir() and out.resolve().is_relative_to(path.resolve()):
        raise InputError(f"--out {str(out)!r} lies inside the input store {str(path)!r}.")
    if store_out:
        if out.exists() and not _is_zarr_store(out):
            raise InputError(
                f"--out {str(out)!r} exists and is not a zarr store; it would be replaced by "
                "the results store. Choose a new path."
            )
    elif out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give the path of an .h5ad file.")
    _check_writable(out, "--out")
    if plots is not None:
        if plots.exists() and not plots.is_dir():
            raise InputError(
                f"the plots folder {str(plots)!r} is a file; move it, or pass --no-plots."
            )
        _check_writable(plots, "the plots folder")


def _drop_scvi_fields(adata: ad.AnnData) -> None:
    """Remove scvi-tools' setup fields (``_scvi_*``) from an in-memory AnnData."""
    internal = [c for c in adata.obs.columns if str(c).startswith(SCVI_PREFIX)]
    adata.obs.drop(columns=internal, inplace=True)
    for slot in (adata.obsm, adata.uns):
        for name in [n for n in slot.keys() if n.startswith(SCVI_PREFIX)]:
            del slot[name]


def _drop_scvi_fields_in_group(group) -> bool:
    obs = read_elem(group["obs"])
    internal = [c for c in obs.columns if str(c).startswith(SCVI_PREFIX)]
    if internal:
        write_elem(group, "obs", obs.drop(columns=internal))
    changed = bool(internal)
    for slot in ("obsm", "uns"):
        if slot in group:
            for name in [n for n in group[slot] if n.startswith(SCVI_PREFIX)]:
                del group[slot][name]
                changed = True
    return changed


def _drop_scvi_fields_on_disk(path: Path) -> None:
    """Remove scvi-tools' setup fields (``_scvi_*``) from a written .h5ad file or zarr store."""
    if not path.is_dir():
        with h5py.File(path, "r+") as file:
            _drop_scvi_fields_in_group(file)
        return
    import zarr

    consolidated = zarr.open_group(path, mode="r").metadata.consolidated_metadata is not None
    changed = _drop_scvi_fields_in_group(zarr.open_group(path, mode="r+", use_consolidated=False))
    if changed and consolidated:
        zarr.consolidate_metadata(path)


def _write_results(
    model, adata: ad.AnnData, path: Path, out: Path, backed: bool
) -> tuple[ad.AnnData, list[str]]:
    """Write the input plus the model's results to ``out``, without scvi-tools' internals.

    Returns the AnnData holding the results in memory (for the report and plots) and the
    keys ``write_to_adata`` wrote.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    if backed and path.is_dir():
        # Copy the store as it is, then write the results into the copy.
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(path, out)
        keys = model.write_to_adata(adata)
        _drop_scvi_fields(adata)
        dv.write_results_to_store(adata, keys, out)
        _drop_scvi_fields_on_disk(out)  # those the input store held
        return adata, keys
    if backed:
        # Copy the file as it is; write_to_adata writes into a file opened "r+".
        shutil.copyfile(path, out)
        results = ad.read_h5ad(out, backed="r+")
        keys = model.write_to_adata(results)
        results.file.close()  # obs, obsm and uns stay readable in memory
        _drop_scvi_fields_on_disk(out)
        return results, keys
    keys = model.write_to_adata(adata)
    _drop_scvi_fields(adata)
    adata.write_h5ad(out)
    return adata, keys


def _last(history: dict, key: str) -> float | None:
    frame = history.get(key)
    if frame is None or len(frame) == 0:
        return None
    return float(frame.iloc[-1, 0])


def _elbo_report(model) -> list[str]:
    history = model.history or {}
    train, validation = _last(history, "elbo_train"), _last(history, "elbo_validation")
    if train is None:
        return ["final ELBO: no training history recorded"]
    epochs = len(history["elbo_train"])
    valid = "not computed (no validation cells)" if validation is None else f"{validation:.2f}"
    return [
        f"epochs trained: {epochs}",
        f"final negative ELBO per cell (lower is better): training {train:.2f}, validation {valid}",
    ]


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


def _cluster_report(results: ad.AnnData, model_name: str, condition_key: str | None) -> list[str]:
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
        conditions = results.obs[condition_key].astype("category")
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
    if empty:
        lines.append(
            f"empty clusters: {len(empty)} of {len(names)} ({', '.join(empty)}): train longer "
            "(--epochs) or ask for fewer clusters (--n-clusters)"
        )
    else:
        lines.append("empty clusters: none")
    if fractions is not None and len(columns) > 1:
        filled = [n for n in fractions.index if n not in empty]
        weights = sizes[[names.index(n) for n in filled]]
        overall = results.obs[condition_key].value_counts(normalize=True).to_frame().T
        lines += [
            f"condition mixing ({condition_key}): {_mixing(fractions.loc[filled], weights):.2f} "
            f"(whole data set: {_mixing(overall, np.ones(1)):.2f})",
            f"  = entropy of the {condition_key} fractions in a cluster / log({len(columns)}), "
            "averaged over cells; 1: every condition equally in every cluster, 0: one "
            "condition per cluster",
        ]
    return lines


def _is_model_note(caught: warnings.WarningMessage) -> bool:
    """A warning the model gives about its own training run (see ``fit``)."""
    return issubclass(caught.category, dv.train.NotConvergedWarning) or (
        "clusters are empty after training" in str(caught.message)
    )


def _fit_report(results: ad.AnnData, model, args: argparse.Namespace) -> list[str]:
    lines = ["", f"{type(model).__name__} on {results.n_obs} cells:"]
    lines += _elbo_report(model)
    if args.model in CLUSTERS:
        lines += _cluster_report(results, args.model, args.condition_key)
    return lines


def _umap(adata: ad.AnnData, rep: str, seed: int) -> None:
    sc.pp.neighbors(adata, use_rep=rep, random_state=seed)
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
    plt.close("all")
    return files


def _fit_plots(
    results: ad.AnnData, model, keys: list[str], args: argparse.Namespace, folder: Path
) -> list[Path]:
    # The UMAP is computed on a small AnnData of the latent and the columns to colour by: the
    # results file keeps the input plus the model's results only, and backed data stay on disk.
    rep = next(key.split("/", 1)[1] for key in keys if key.startswith("obsm/"))
    clusters = [CLUSTERS[args.model][0]] if args.model in CLUSTERS else []
    others = [k for k in (args.labels_key, args.condition_key, args.batch_key) if k is not None]
    view = ad.AnnData(obs=results.obs[[*clusters, *others]].copy())
    view.obsm[rep] = np.asarray(results.obsm[rep])
    for key in others:
        view.obs[key] = view.obs[key].astype("category")
    print(f"plots: neighbors and UMAP of obsm[{rep!r}] on {view.n_obs} cells ...")
    _umap(view, rep, args.seed)
    return _save_plots(view, model, folder, clusters, others)


def fit(args: argparse.Namespace) -> int:
    """Run ``deltavae fit``: train a model on an h5ad file, write the results, report, plot.

    Parameters
    ----------
    args
        Parsed command-line arguments (see ``deltavae fit --help``).

    Returns
    -------
    Exit status 0.

    Examples
    --------
    >>> main(["fit", "counts.h5ad", "--model", "zinbvae", "--out", "out.h5ad"])  # doctest: +SKIP
    0
    """
    model_cls = MODELS[args.model]
    path = Path(args.input)
    out = Path(args.out)
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist.")
    zarr_store = path.is_dir()
    if zarr_store and not args.backed:
        raise InputError(
            f"{str(path)!r} is a directory (a zarr store?); deltavae fit reads zarr stores "
            "with --backed (minibatches streamed from the store), or convert it with "
            "anndata.read_zarr(path).write_h5ad('counts.h5ad')."
        )
    plots = None if args.no_plots else plots_folder(out)
    _check_out(path, out, store_out=args.backed and zarr_store, plots=plots)
    try:
        # Backed: minibatches are read from the file; only obs and var are held in memory.
        adata = dv.read_lazy(path) if args.backed else ad.read_h5ad(path)
    except OSError as err:
        raise InputError(f"cannot read {str(path)!r} as an .h5ad file: {err}") from err
    except ValueError as err:
        raise InputError(_message(err)) from err
    setup = _options_for(
        model_cls.setup_anndata,
        f"{args.model} setup",
        layer=args.layer,
        batch_key=args.batch_key,
        condition_key=args.condition_key,
        labels_key=args.labels_key,
    )
    init = _options_for(model_cls, args.model, n_latent=args.n_latent, n_clusters=args.n_clusters)
    if args.n_clusters is not None and args.n_clusters > adata.n_obs:
        raise InputError(
            f"--n-clusters {args.n_clusters} is more than the {adata.n_obs} cells in "
            f"{str(path)!r}; ask for fewer clusters."
        )
    scvi.settings.seed = args.seed
    with _user_errors("setting up the model"):
        model_cls.setup_anndata(adata, **setup)
        model = model_cls(adata, **init)
    print(f"Training {model_cls.__name__} on {adata.n_obs} cells x {adata.n_vars} genes ...")
    with _user_errors("training"), warnings.catch_warnings(record=True) as caught:
        # What the model says about its own run (not converged, empty clusters) goes in the
        # report below, not as Python warnings with a file path.
        warnings.simplefilter("always", UserWarning)
        model.train(
            max_epochs=args.epochs, early_stopping=args.early_stopping, enable_progress_bar=True
        )
    notes = [str(w.message) for w in caught if _is_model_note(w)]
    for other in (w for w in caught if not _is_model_note(w)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    with _user_errors("writing the results"):
        results, keys = _write_results(model, adata, path, out, args.backed)
    print(f"Wrote {', '.join(keys)} to {out}")
    for line in _fit_report(results, model, args):
        print(line)
    for note in notes:
        print(f"warning: {note}")
    if plots is not None:
        files = _fit_plots(results, model, keys, args, plots)
        print(f"plots in {plots}: {', '.join(file.name for file in files)}")
    return 0


def _prepare_pbmc3k(n_cells: int | None, n_top_genes: int, seed: int) -> ad.AnnData:
    adata = dv.datasets.pbmc3k()
    if n_cells is not None:
        if not MIN_DEMO_CELLS <= n_cells <= adata.n_obs:
            raise InputError(
                f"--n-cells must lie between {MIN_DEMO_CELLS} and {adata.n_obs}; got {n_cells}."
            )
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    # Seurat's gene filter; rarer genes (many in a subsample) also break the seurat_v3 loess.
    sc.pp.filter_genes(adata, min_cells=3)
    n_top_genes = min(n_top_genes, adata.n_vars)
    try:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top_genes)
    except ValueError:
        # The loess of variance on mean can be singular for a few hundred cells; a wider
        # span smooths more and fits.
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top_genes, span=1.0)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    # sc.tl.umap below writes X_umap; keep the published Seurat layout next to ours.
    if "X_umap" in adata.obsm:
        adata.obsm["X_umap_seurat"] = adata.obsm.pop("X_umap")
    return adata


def demo(args: argparse.Namespace) -> int:
    """Run ``deltavae demo``: ZINBVAE on PBMC 3k, leiden on its latent, scores and plots.

    Parameters
    ----------
    args
        Parsed command-line arguments (see ``deltavae demo --help``).

    Returns
    -------
    Exit status 0.

    Examples
    --------
    >>> main(["demo", "--out", "pbmc_demo", "--epochs", "20"])  # doctest: +SKIP
    0
    """
    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; the demo writes a folder.")
    _check_writable(out, "--out")
    adata = _prepare_pbmc3k(args.n_cells, args.n_top_genes, args.seed)
    print(f"PBMC 3k: {adata.n_obs} cells x {adata.n_vars} highly variable genes (raw counts)")
    scvi.settings.seed = args.seed
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=DEMO_N_LATENT)
    model.train(
        max_epochs=args.epochs, early_stopping=args.early_stopping, enable_progress_bar=True
    )
    model.write_to_adata(adata)

    _umap(adata, model.latent_key, args.seed)
    sc.tl.leiden(
        adata,
        resolution=args.resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=args.seed,
        key_added="leiden",
    )
    scores = dv.metrics.cluster_scores(adata.obs["cell_type"], adata.obs["leiden"])

    files = _save_plots(adata, model, out, clusters=["leiden"], others=["cell_type"])
    adata.uns["deltavae_demo"] = {
        **scores,
        "n_leiden_clusters": int(adata.obs["leiden"].nunique()),
        "resolution": float(args.resolution),
        "epochs": int(len(model.history["elbo_train"])),
        "seed": int(args.seed),
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "elapsed_s": float(time.perf_counter() - start),
    }
    h5ad = out / "pbmc3k_zinbvae.h5ad"
    _drop_scvi_fields(adata)
    adata.write_h5ad(h5ad)
    files.insert(0, h5ad)

    summary = adata.uns["deltavae_demo"]
    print(
        f"\nleiden ({summary['n_leiden_clusters']} clusters, resolution {args.resolution}) "
        "vs cell_type:"
    )
    for name in ("ari", "nmi", "accuracy", "purity"):
        print(f"  {name.upper():<9}{scores[name]:.3f}")
    print(f"elapsed: {summary['elapsed_s']:.1f} s")
    print("wrote:")
    for file in files:
        print(f"  {file}")
    return 0


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=dv.default_threads(),
        help=(
            "torch CPU threads [%(default)s: the CPUs this process may use, at most "
            f"{MAX_DEFAULT_THREADS}, or ${THREADS_ENV_VAR}]; idle threads sleep instead of "
            "spinning on a busy machine (OMP_WAIT_POLICY=PASSIVE, unless set)"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``deltavae`` console script.

    Examples
    --------
    >>> build_parser().parse_args(["demo", "--epochs", "5"]).epochs
    5
    """
    parser = argparse.ArgumentParser(
        prog="deltavae",
        description="Pyro VAEs for single-cell data on scvi-tools.",
    )
    parser.add_argument("--version", action="version", version=f"deltavae {dv.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_demo = commands.add_parser(
        "demo",
        help="train a ZINBVAE on PBMC 3k, cluster it and score the clusters",
        description=(
            "Train a ZINBVAE on the shipped PBMC 3k counts (highly variable genes), run "
            "neighbors, UMAP and leiden on its latent space, score leiden against the "
            "annotated cell types (ARI, NMI) and write an .h5ad file and plots."
        ),
    )
    p_demo.add_argument(
        "--out", default="deltavae_demo", help="output folder, .h5ad and PNGs [%(default)s]"
    )
    p_demo.add_argument(
        "--epochs", type=_positive_int, default=DEMO_EPOCHS, help="training epochs [%(default)s]"
    )
    p_demo.add_argument("--seed", type=int, default=0, help="random seed [%(default)s]")
    p_demo.add_argument(
        "--n-cells",
        type=_positive_int,
        default=None,
        help="subsample this many cells, for quick runs [all 2,638]",
    )
    p_demo.add_argument(
        "--n-top-genes",
        type=_positive_int,
        default=2000,
        help="highly variable genes (seurat_v3 on counts) [%(default)s]",
    )
    p_demo.add_argument(
        "--resolution",
        type=float,
        default=DEMO_RESOLUTION,
        help="leiden resolution [%(default)s]",
    )
    p_demo.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the validation ELBO plateaus [off: train all --epochs]",
    )
    _add_threads(p_demo)
    p_demo.set_defaults(func=demo)

    p_fit = commands.add_parser(
        "fit",
        help="train a model on an .h5ad file of raw counts",
        description=(
            "Train a model on raw counts from an .h5ad file, write the input AnnData plus the "
            "model's results (latent space, clusters, ...) to OUTPUT, print a report (final "
            "ELBO; for cgmdvae the cluster sizes, the empty clusters and, with "
            "--condition-key, the conditions in each cluster) and write PNGs (UMAP of the "
            "latent space by cluster, condition, labels or batch; ELBO curves; cluster "
            "composition) into the folder OUTPUT_plots next to OUTPUT (results.h5ad: "
            "results_plots/)."
        ),
    )
    p_fit.add_argument(
        "input", metavar="INPUT.h5ad", help="AnnData with raw counts (.h5ad, or zarr with --backed)"
    )
    p_fit.add_argument(
        "--model", required=True, choices=sorted(MODELS), help="model to train (required)"
    )
    p_fit.add_argument(
        "--out",
        required=True,
        metavar="OUTPUT.h5ad",
        help="file to write, not the input (a zarr store for a zarr input) (required)",
    )
    p_fit.add_argument("--layer", default=None, help="layer with the raw counts [X]")
    p_fit.add_argument(
        "--batch-key", default=None, help="obs column with the batch (zinbvae) [none]"
    )
    p_fit.add_argument(
        "--condition-key", default=None, help="obs column with the condition (cgmdvae) [none]"
    )
    p_fit.add_argument(
        "--labels-key",
        default=None,
        help="obs column with known cell labels, semi-supervised (cgmdvae) [none]",
    )
    p_fit.add_argument(
        "--n-clusters",
        type=_positive_int,
        default=None,
        help=(
            "mixture components (cgmdvae) [model's default: the number of labels in "
            "--labels-key, or 10]"
        ),
    )
    p_fit.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="training epochs [model's default for the number of cells]",
    )
    p_fit.add_argument(
        "--n-latent",
        type=_positive_int,
        default=None,
        help=(
            "latent dimension [model's default: zinbvae 10; cgmdvae 'auto', the larger of 10 "
            "and the number of clusters]"
        ),
    )
    p_fit.add_argument("--seed", type=int, default=0, help="random seed [%(default)s]")
    p_fit.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the validation ELBO plateaus [off: train all --epochs]",
    )
    p_fit.add_argument(
        "--backed",
        action="store_true",
        help=(
            "read minibatches from the .h5ad file or sparse zarr store instead of loading it "
            "(larger-than-memory data); results go into a copy at --out [off: load it]"
        ),
    )
    p_fit.add_argument(
        "--no-plots",
        action="store_true",
        help="skip the UMAP and the PNGs [off: plots in OUTPUT_plots/]",
    )
    _add_threads(p_fit)
    p_fit.set_defaults(func=fit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deltavae`` console script.

    Parameters
    ----------
    argv
        Command-line arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    Exit status: 0 on success, 2 for a usage error or bad input (reported on stderr as
    ``deltavae: error: <message>``).

    Examples
    --------
    >>> main(["demo", "--epochs", "20", "--out", "pbmc_demo"])  # doctest: +SKIP
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return 0 if exit_.code is None else int(exit_.code)
    # main() may be called from Python (tests, notebooks): leave torch's thread count as found.
    threads = torch.get_num_threads()
    try:
        dv.set_threads(args.threads)
        with warnings.catch_warnings():
            # Dependencies' API deprecations are noise to a command-line user, and so is
            # Lightning's advice on logging intervals for a few minibatches per epoch.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PossibleUserWarning)
            # zarr's notes on its own future defaults, at every write into a store.
            warnings.filterwarnings("ignore", message="zarr v3 autosharding")
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not")
            return args.func(args)
    except InputError as err:
        print(f"deltavae: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    raise SystemExit(main())
