"""The ``deltavae`` console script.

``deltavae demo`` trains a ZINBVAE on the shipped PBMC 3k data, clusters its latent space and
scores the clusters against the known cell types. ``deltavae fit`` trains a model on any
``.h5ad`` file of raw counts and writes the results back into a copy of it.

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
import inspect
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
import scvi

import deltavae as dv

#: Models ``deltavae fit --model`` can train, by command-line name. A model plugs in by adding
#: its class here; options it does not take (see :func:`_options_for`) are refused clearly.
MODELS: dict[str, type] = {"zinbvae": dv.model.ZINBVAE, "cgmdvae": dv.model.CGMDVAE}

DEMO_EPOCHS = 100
DEMO_RESOLUTION = 0.8
DEMO_N_LATENT = 10
MIN_DEMO_CELLS = 50


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


def fit(args: argparse.Namespace) -> int:
    """Run ``deltavae fit``: train a model on an h5ad file and write the results.

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
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist.")
    zarr_store = path.is_dir()
    if zarr_store and not args.backed:
        raise InputError(
            f"{str(path)!r} is a directory (a zarr store?); deltavae fit reads zarr stores "
            "with --backed (minibatches streamed from the store), or convert it with "
            "anndata.read_zarr(path).write_h5ad('counts.h5ad')."
        )
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
    scvi.settings.seed = args.seed
    try:
        model_cls.setup_anndata(adata, **setup)
        model = model_cls(adata, **init)
    except (ValueError, KeyError) as err:
        raise InputError(_message(err)) from err
    print(f"Training {model_cls.__name__} on {adata.n_obs} cells x {adata.n_vars} genes ...")
    model.train(
        max_epochs=args.epochs, early_stopping=args.early_stopping, enable_progress_bar=True
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.backed and zarr_store:
        # Copy the store as it is, then write the results into the copy.
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(path, out)
        keys = model.write_to_adata(adata)
        dv.write_results_to_store(adata, keys, out)
    elif args.backed:
        # Copy the file as it is, then write the results into the copy.
        shutil.copyfile(path, out)
        keys = model.write_to_adata(ad.read_h5ad(out, backed="r+"))
    else:
        keys = model.write_to_adata(adata)
        adata.write_h5ad(out)
    print(f"Wrote {', '.join(keys)} to {out}")
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
    adata = _prepare_pbmc3k(args.n_cells, args.n_top_genes, args.seed)
    print(f"PBMC 3k: {adata.n_obs} cells x {adata.n_vars} highly variable genes (raw counts)")
    scvi.settings.seed = args.seed
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=DEMO_N_LATENT)
    model.train(
        max_epochs=args.epochs, early_stopping=args.early_stopping, enable_progress_bar=True
    )
    model.write_to_adata(adata)

    sc.pp.neighbors(adata, use_rep=model.latent_key, random_state=args.seed)
    sc.tl.umap(adata, random_state=args.seed)
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

    out.mkdir(parents=True, exist_ok=True)
    files = _demo_plots(adata, model, out)
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


def _demo_plots(adata: ad.AnnData, model, out: Path) -> list[Path]:
    files = [out / "umap_cell_type.png", out / "umap_leiden.png", out / "elbo_history.png"]
    dv.pl.embedding(
        adata, color="cell_type", title="ZINBVAE latent: cell type", save=files[0], show=False
    )
    dv.pl.embedding(
        adata,
        color="leiden",
        legend_loc="on data",
        title="ZINBVAE latent: leiden",
        save=files[1],
        show=False,
    )
    dv.pl.history(model, save=files[2], show=False)
    composition = out / "leiden_composition.png"
    dv.pl.cluster_composition(adata, "leiden", "cell_type", save=composition, show=False)
    plt.close("all")
    return [*files, composition]


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
    p_demo.add_argument("--out", default="deltavae_demo", help="output folder [%(default)s]")
    p_demo.add_argument(
        "--epochs", type=_positive_int, default=DEMO_EPOCHS, help="training epochs [%(default)s]"
    )
    p_demo.add_argument("--seed", type=int, default=0, help="random seed [%(default)s]")
    p_demo.add_argument(
        "--n-cells", type=_positive_int, default=None, help="subsample this many cells (quick runs)"
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
        "--early-stopping", action="store_true", help="stop when the validation ELBO plateaus"
    )
    p_demo.set_defaults(func=demo)

    p_fit = commands.add_parser(
        "fit",
        help="train a model on an .h5ad file of raw counts",
        description=(
            "Train a model on raw counts from an .h5ad file and write the input AnnData plus "
            "the model's results (latent space, ...) to OUTPUT."
        ),
    )
    p_fit.add_argument(
        "input", metavar="INPUT.h5ad", help="AnnData with raw counts (.h5ad, or zarr with --backed)"
    )
    p_fit.add_argument("--model", required=True, choices=sorted(MODELS), help="model to train")
    p_fit.add_argument("--out", required=True, metavar="OUTPUT.h5ad", help="file to write")
    p_fit.add_argument("--layer", default=None, help="layer with the raw counts [X]")
    p_fit.add_argument("--batch-key", default=None, help="obs column with the batch (zinbvae)")
    p_fit.add_argument(
        "--condition-key", default=None, help="obs column with the condition (cgmdvae)"
    )
    p_fit.add_argument(
        "--labels-key", default=None, help="obs column with known cell labels (cgmdvae)"
    )
    p_fit.add_argument(
        "--n-clusters", type=_positive_int, default=None, help="mixture components (cgmdvae)"
    )
    p_fit.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="training epochs [from the number of cells]",
    )
    p_fit.add_argument(
        "--n-latent", type=_positive_int, default=None, help="latent dimension [model's]"
    )
    p_fit.add_argument("--seed", type=int, default=0, help="random seed [%(default)s]")
    p_fit.add_argument(
        "--early-stopping", action="store_true", help="stop when the validation ELBO plateaus"
    )
    p_fit.add_argument(
        "--backed",
        action="store_true",
        help=(
            "read minibatches from the .h5ad file or sparse zarr store instead of loading it "
            "(larger-than-memory data); results go into a copy at --out"
        ),
    )
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
    try:
        with warnings.catch_warnings():
            # Dependencies' API deprecations are noise to a command-line user.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return args.func(args)
    except InputError as err:
        print(f"deltavae: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
