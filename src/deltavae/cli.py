"""The ``deltavae`` console script.

``deltavae demo`` trains a ZINBVAE on the shipped PBMC 3k data, clusters its latent space and
scores the clusters against the known cell types. ``deltavae fit`` trains a model on any
``.h5ad`` file of raw counts, writes the results back into a copy of it (without scvi-tools'
``_scvi_*`` setup fields), prints a short report (final ELBO; cluster sizes, empty clusters and
condition mixing for clustering models; proportions or archetypes for spatial models) and
writes PNGs into ``<OUTPUT stem>_plots/``. The models and their options are built in
:mod:`deltavae._cli_models`.

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
    deltavae fit spots.h5ad --model nmfdeconv --reference cells.h5ad --labels-key cell_type \
        --backed --out spots_proportions.h5ad
    deltavae fit spots.h5ad --model archetypes --n-archetypes auto --out spots_archetypes.h5ad
    deltavae fit merfish.h5ad --model imputer --reference cells.h5ad --out merfish_imputed.h5ad
    deltavae --version

Python:

>>> from deltavae.cli import main
>>> main(["--version"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scvi
import torch

import deltavae as dv
from deltavae._cli_files import (
    InputError,
    _check_out,
    _check_writable,
    _drop_scvi_fields,
    _message,
    _positive_int,
    _user_errors,
    _write_results,
    plots_folder,
)
from deltavae._cli_models import (
    MODELS,
    build_model,
    check_model_inputs,
    model_options,
    n_archetypes_arg,
    read_reference,
)
from deltavae._cli_report import _as_flags, _fit_plots, _fit_report, _save_plots, _umap
from deltavae._docs import doc_params
from deltavae._threads import ENV_VAR as THREADS_ENV_VAR
from deltavae._threads import MAX_DEFAULT_THREADS

DEMO_EPOCHS = 100
DEMO_RESOLUTION = 0.8
DEMO_N_LATENT = 10
MIN_DEMO_CELLS = 50


#: What models say about their results, reported as notes (see ``fit``).
_NOTES = ("clusters are empty after training", "were merged into their most similar archetype")


def _is_model_note(caught: warnings.WarningMessage) -> bool:
    """A warning the model gives about its own training run or results (see ``fit``)."""
    return issubclass(caught.category, dv.train.NotConvergedWarning) or any(
        note in str(caught.message) for note in _NOTES
    )


@contextlib.contextmanager
def _model_notes(notes: list[str]):
    """Collect the model's notes into ``notes``; let every other warning through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    notes += [_as_flags(str(w.message)) for w in caught if _is_model_note(w)]
    for other in (w for w in caught if not _is_model_note(w)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)


def _command_doc(command: str) -> str:
    """The Parameters and Returns sections of the function that runs ``deltavae <command>``."""
    return (
        "Parameters\n----------\nargs\n"
        f"    Parsed command-line arguments (see ``deltavae {command} --help``).\n\n"
        "Returns\n-------\nExit status 0."
    )


@doc_params(parameters=_command_doc("fit"))
def fit(args: argparse.Namespace) -> int:
    """Run ``deltavae fit``: train a model on an h5ad file, write the results, report, plot.

    {parameters}

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
    check_model_inputs(args)
    options = model_options(model_cls, args)
    reference = read_reference(args)
    try:
        # Backed: minibatches are read from the file; only obs and var are held in memory.
        adata = dv.read_lazy(path) if args.backed else ad.read_h5ad(path)
    except OSError as err:
        raise InputError(f"cannot read {str(path)!r} as an .h5ad file: {err}") from err
    except ValueError as err:
        raise InputError(_message(err)) from err
    if args.n_clusters is not None and args.n_clusters > adata.n_obs:
        raise InputError(
            f"--n-clusters {args.n_clusters} is more than the {adata.n_obs} cells in "
            f"{str(path)!r}; ask for fewer clusters."
        )
    scvi.settings.seed = args.seed
    with _user_errors("setting up the model"):
        model = build_model(model_cls, adata, reference, options)
    print(f"Training {model_cls.__name__} on {adata.n_obs} cells x {adata.n_vars} genes ...")
    # What the model says about its own run and results (not converged, empty clusters,
    # merged archetypes) goes in the report below, not as Python warnings with a file path.
    notes: list[str] = []
    with _user_errors("training"), _model_notes(notes):
        model.train(
            max_epochs=args.epochs, early_stopping=args.early_stopping, enable_progress_bar=True
        )
    with _user_errors("writing the results"), _model_notes(notes):
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


@doc_params(parameters=_command_doc("demo"))
def demo(args: argparse.Namespace) -> int:
    """Run ``deltavae demo``: ZINBVAE on PBMC 3k, leiden on its latent, scores and plots.

    {parameters}

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
    notes: list[str] = []  # printed after the scores, as fit's report does
    with _model_notes(notes):
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
    for note in notes:
        print(f"warning: {note}")
    print(f"elapsed: {summary['elapsed_s']:.1f} s")
    print("wrote:")
    for file in files:
        print(f"  {file}")
    return 0


def _add_early_stopping(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the validation ELBO plateaus [off: train all --epochs]",
    )


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
    _add_early_stopping(p_demo)
    _add_threads(p_demo)
    p_demo.set_defaults(func=demo)

    p_fit = commands.add_parser(
        "fit",
        help="train a model on an .h5ad file of raw counts",
        description=(
            "Train a model on raw counts from an .h5ad file, write the input AnnData plus the "
            "model's results (latent space, clusters, cell-type proportions, archetypes, "
            "imputed genes) to OUTPUT, print a report (final ELBO; for cgmdvae the cluster "
            "sizes, the empty clusters and, with --condition-key, the conditions in each "
            "cluster; for nmfdeconv the mean proportions; for archetypes the spots each one "
            "dominates) and write PNGs (UMAP of the latent space by cluster, condition, labels "
            "or batch; ELBO curves; cluster composition; proportions or archetype weights on "
            "obsm['spatial'] when the spots have coordinates) into the folder OUTPUT_plots next "
            "to OUTPUT (results.h5ad: results_plots/). Spatial models: nmfdeconv and imputer "
            "need --reference; archetypes takes --n-archetypes."
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
        help=(
            "obs column with known cell labels: of INPUT, semi-supervised (cgmdvae); of the "
            "--reference's cells (nmfdeconv, imputer) [none; nmfdeconv and imputer: cell_type]"
        ),
    )
    p_fit.add_argument(
        "--reference",
        default=None,
        metavar="REFERENCE.h5ad",
        help=(
            "labelled single cells with raw counts (nmfdeconv, imputer; required there): "
            "the cell types' signatures, the genes to impute [none]"
        ),
    )
    p_fit.add_argument(
        "--n-archetypes",
        type=n_archetypes_arg,
        default=None,
        help="archetypes, an integer >= 2 or 'auto' (archetypes) [model's default: auto]",
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
    _add_early_stopping(p_fit)
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
            # Dependencies' API deprecations are noise to a command-line user (Lightning's
            # logging-interval advice is silenced in every fit, train/_runner.py).
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
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
