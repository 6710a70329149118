"""The ``deltavae`` console script.

``deltavae demo`` trains a ZINBVAE on the shipped PBMC 3k data, clusters its latent space and
scores the clusters against the known cell types. ``deltavae fit`` trains a model on any
``.h5ad`` file of raw counts, writes the results back into a copy of it (without scvi-tools'
``_scvi_*`` setup fields), prints a short report (final ELBO; cluster sizes, empty clusters and
condition mixing for clustering models; proportions or archetypes for spatial models) and
writes PNGs into ``<OUTPUT stem>_plots/``. This module only parses: it imports no model, so
``deltavae --help`` and a mistyped option answer at once; the commands run in
:mod:`deltavae._cli_commands`, and the models and their options are built in
:mod:`deltavae._cli_models`.

Both take ``--threads`` (torch's CPU threads, see :func:`deltavae.set_threads`, and those of
numba and the BLAS libraries, for the UMAP and the rest). Bad input, and whatever the model
refuses (``ValueError``, ``KeyError``), ends in one line on stderr,
``deltavae: error: <message>``, with exit status 2. The models' advice there and in warnings
names the flags (:mod:`deltavae._cli_flags`), and a change it advises to the data (missing
labels marked, names made unique) is a ``-c`` command of the Python running deltavae (not
the ``python`` on PATH, which may lack anndata) that writes a fixed copy of INPUT or of
``--reference`` to run on: the input files are never changed. Each such command of a run
also makes the changes advised before it, so the last one's copy holds them all.

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
import re
import sys
import warnings
from collections.abc import Sequence

from deltavae import __version__
from deltavae._cli_args import (
    CLASSIFIER_WEIGHT,
    EARLY_STOPPING_DEFAULTS,
    LIKELIHOODS,
    OneLineParser,
    add_early_stopping,
    add_spatial_options,
    condition_alignment_arg,
    fraction,
    non_negative_float,
    path_arg,
    positive_float,
    positive_int,
    seed_arg,
)
from deltavae._threads import (
    MAX_DEFAULT_THREADS,
    command_threads,
    command_threads_limited,
    set_threads,
)

DEMO_EPOCHS = 100
DEMO_RESOLUTION = 0.8
DEMO_N_LATENT = 10
MIN_DEMO_CELLS = 50

#: ``--model`` names and the classes of :mod:`deltavae.model` they train (looked up by name
#: only when a command runs, so that parsing imports no model).
MODEL_CLASSES: dict[str, str] = {
    "zinbvae": "ZINBVAE",
    "cgmdvae": "CGMDVAE",
    "nmfdeconv": "NMFDeconv",
    "archetypes": "Archetypes",
    "imputer": "SpatialImputer",
}


def model_name(text: str) -> str:
    """``--model``: a name of :data:`MODEL_CLASSES` in any case, or the class's name (the
    Python API's, as a user of it types it); anything else is left to argparse's choices.

    Examples
    --------
    >>> model_name("ZINBVAE"), model_name("SpatialImputer"), model_name("nmf")
    ('zinbvae', 'imputer', 'nmf')
    """
    by_class = {cls.lower(): name for name, cls in MODEL_CLASSES.items()}
    return by_class.get(text.lower(), text.lower() if text.lower() in MODEL_CLASSES else text)


def _add_optimisation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="cells (spots) per minibatch [the model's default: 128 for zinbvae, cgmdvae and "
        "archetypes; nmfdeconv every spot, at most 1,024; imputer every spot, at most 2,048, "
        "or 128 with --design latent]",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate [the model's default: 1e-3 for zinbvae and cgmdvae; 5e-3 for "
        "nmfdeconv and archetypes; imputer 0.05, or 5e-3 with --design latent]",
    )
    parser.add_argument(
        "--train-size",
        type=fraction,
        default=None,
        help="fraction of the cells that train, the rest validate [the model's default: 0.9; "
        "1.0 for nmfdeconv]; 1 trains on every cell (imputer always does: it takes neither "
        "this nor --early-stopping)",
    )


def _add_accelerator(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="where to train [%(default)s: a GPU when torch sees one]; cpu keeps a job off a "
        "node's GPU",
    )


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=command_threads(),
        help=(
            "CPU threads of torch, numba (UMAP) and BLAS [%(default)s: $DELTAVAE_THREADS, "
            f"$OMP_NUM_THREADS, or the CPUs this process may use, at most {MAX_DEFAULT_THREADS}]"
            "; idle threads sleep instead of spinning on a busy machine (OMP_WAIT_POLICY=PASSIVE,"
            " unless set)"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``deltavae`` console script.

    Examples
    --------
    >>> build_parser().parse_args(["demo", "--epochs", "5"]).epochs
    5
    """
    parser = OneLineParser(
        prog="deltavae",
        description="Pyro VAEs for single-cell data on scvi-tools.",
    )
    parser.add_argument("--version", action="version", version=f"deltavae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_demo = commands.add_parser(
        "demo",
        help="train a ZINBVAE on PBMC 3k, cluster it and score the clusters",
        description=(
            "Train a ZINBVAE on the shipped PBMC 3k counts (highly variable genes), run "
            "neighbors, UMAP and leiden on its latent space, score leiden against the "
            "annotated cell types (ARI, NMI, accuracy, purity) and write into --out "
            "pbmc3k_zinbvae.h5ad (the scores in uns['deltavae_demo']) and the PNGs "
            "umap_leiden.png, umap_cell_type.png, elbo_history.png and "
            "composition_leiden_by_cell_type.png."
        ),
    )
    p_demo.add_argument(
        "--out",
        type=path_arg,
        default="deltavae_demo",
        help="output folder, .h5ad and PNGs; files of an earlier demo there are replaced "
        "[%(default)s]",
    )
    p_demo.add_argument(
        "--epochs", type=positive_int, default=DEMO_EPOCHS, help="training epochs [%(default)s]"
    )
    p_demo.add_argument("--seed", type=seed_arg, default=0, help="random seed [%(default)s]")
    p_demo.add_argument(
        "--n-cells",
        type=positive_int,
        default=None,
        help=f"subsample this many cells (at least {MIN_DEMO_CELLS}), for quick runs [all 2,638]",
    )
    p_demo.add_argument(
        "--n-top-genes",
        type=positive_int,
        default=2000,
        help="highly variable genes (seurat_v3 on counts) [%(default)s]",
    )
    p_demo.add_argument(
        "--resolution",
        type=positive_float,
        default=DEMO_RESOLUTION,
        help="leiden resolution [%(default)s]",
    )
    add_early_stopping(p_demo, loss="ELBO", default="[off]")  # a ZINBVAE
    _add_accelerator(p_demo)
    _add_threads(p_demo)

    p_fit = commands.add_parser(
        "fit",
        help="train a model on an .h5ad file (or zarr store) of raw counts",
        description=(
            "Train a model on raw counts from an .h5ad file, write the input AnnData plus the "
            "model's results (latent space, clusters, cell-type proportions, archetypes, "
            "imputed genes) to OUTPUT, print a report (final ELBO; for cgmdvae the cluster "
            "sizes, the empty clusters and, with --condition-key, the conditions in each "
            "cluster; for nmfdeconv the mean proportions; for archetypes the spots each one "
            "dominates; for imputer the genes imputed and those shared with the reference) "
            "and write PNGs (UMAP of the latent space by cluster, condition, labels "
            "or batch; ELBO curves; cluster composition; proportions or archetype weights on "
            "the spots' coordinates when they have them (obsm['spatial'], or "
            "obsm['X_spatial'] as scanpy names them), one PNG per slide of "
            "--sample-key or of an obs column of uns['spatial']'s library names, over its "
            "image) into the folder OUTPUT_plots next "
            "to OUTPUT (results.h5ad: results_plots/). Spatial models: nmfdeconv and imputer "
            "need --reference; archetypes takes --n-archetypes."
        ),
    )
    p_fit.add_argument(
        "input",
        type=path_arg,
        metavar="INPUT.h5ad",
        help="AnnData with raw counts (.h5ad, or zarr with --backed)",
    )
    p_fit.add_argument(
        "--model",
        required=True,
        type=model_name,
        choices=sorted(MODEL_CLASSES),
        help="model to train, also by its class name, e.g. ZINBVAE (required)",
    )
    p_fit.add_argument(
        "--out",
        type=path_arg,
        required=True,
        metavar="OUTPUT.h5ad",
        help="file to write, not the input (a zarr store for a zarr input), in a folder made if "
        "missing; it appears under this name only when the whole run succeeded (required)",
    )
    p_fit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT (and its plots) when it exists, and another run's plots in "
        "OUTPUT_plots/ [off: an existing OUTPUT, or plots of another run, are refused]",
    )
    p_fit.add_argument(
        "--save-model",
        type=path_arg,
        default=None,
        metavar="DIR",
        help=(
            "also save the trained model to this folder, for Model.load(DIR, adata) or "
            "load_query_data in Python [not saved]"
        ),
    )
    p_fit.add_argument("--layer", default=None, help="layer with the raw counts [X]")
    p_fit.add_argument(
        "--likelihood",
        type=str.lower,
        choices=LIKELIHOODS,
        default=None,
        help=(
            "the data's likelihood: zinb or nb for counts (zinbvae, cgmdvae), normal for real "
            "values such as arcsinh cytometry or CLR protein, bernoulli for values in [0, 1] "
            "(cgmdvae) [model's default: zinb]"
        ),
    )
    p_fit.add_argument(
        "--batch-key", default=None, help="obs column with the batch (zinbvae) [none]"
    )
    p_fit.add_argument(
        "--condition-key", default=None, help="obs column with the condition (cgmdvae) [none]"
    )
    p_fit.add_argument(
        "--sample-key",
        default=None,
        help="obs column with each spot's slide or sample, for slides fitted together: they "
        "share the archetypes, each with its own gene factors (archetypes) [none]",
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
        "--unlabeled-category",
        default=None,
        help="the --labels-key value of unlabelled cells (cgmdvae) [Unknown]",
    )
    p_fit.add_argument(
        "--reference-layer",
        default=None,
        help="layer of the --reference with its raw counts (nmfdeconv, imputer) [X]",
    )
    p_fit.add_argument(
        "--reference",
        type=path_arg,
        default=None,
        metavar="REFERENCE.h5ad",
        help=(
            "labelled single cells with raw counts (nmfdeconv, imputer; required there): "
            "the cell types' signatures, the genes to impute [none]"
        ),
    )
    add_spatial_options(p_fit)
    p_fit.add_argument(
        "--n-clusters",
        type=positive_int,
        default=None,
        help=(
            "mixture components (cgmdvae) [model's default: the number of labels in "
            "--labels-key, or 10]"
        ),
    )
    p_fit.add_argument(
        "--classifier-weight",
        type=non_negative_float,
        default=None,
        help=(
            "cgmdvae with --labels-key: weight of the label classifier's loss; larger keeps "
            f"the clusters closer to the labels, 0 leaves them to the data [{CLASSIFIER_WEIGHT:g}]"
        ),
    )
    p_fit.add_argument(
        "--condition-alignment",
        type=condition_alignment_arg,
        default=None,
        help=(
            "cgmdvae: weight of the penalty that aligns the conditions' means of the latent "
            "space within each cluster (translate needs it), 'auto' or a number of 0 or more; "
            "0 turns it off [auto: 10 without --labels-key, 100 with it for counts, 0 for the "
            "normal and Bernoulli likelihoods]"
        ),
    )
    p_fit.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=(
            "training epochs [the model's default: zinbvae and cgmdvae from the number of "
            "cells, as scvi-tools; nmfdeconv about 1,000 steps; archetypes 300; imputer 400, "
            "or 200 with --design latent]"
        ),
    )
    p_fit.add_argument(
        "--n-latent",
        type=positive_int,
        default=None,
        help=(
            "latent dimension [model's default: zinbvae 10; cgmdvae 'auto': 16 for counts "
            "without --condition-key, else 10, or the number of clusters if larger (at most "
            "64); imputer 10, read with --design latent only]"
        ),
    )
    p_fit.add_argument("--seed", type=seed_arg, default=0, help="random seed [%(default)s]")
    add_early_stopping(  # nmfdeconv trains without a KL warm-up (n_epochs_kl_warmup=None)
        p_fit,
        " (nmfdeconv, which has none: from the first epoch, with --train-size below 1; not "
        "imputer)",
        warmup=" after the KL warm-up of zinbvae, cgmdvae and archetypes",
        default=EARLY_STOPPING_DEFAULTS,
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
    _add_optimisation(p_fit)
    _add_accelerator(p_fit)
    _add_threads(p_fit)
    for sub in (parser, *commands.choices.values()):
        sub.allow_abbrev = False  # "--early" or "--epoch" named no flag, and were taken as one
    return parser


def _interrupted(err: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """What Ctrl-C left: where training stopped (the model's note, without its words on the
    parameters the model keeps, which a Python session keeps and the command does not) and
    what the command wrote: nothing, since its output and model take their names only once
    all is written (an earlier run's, under --overwrite, are left as they were)."""
    stopped = re.match(r"Training was interrupted after \d+ of its \d+ epochs", str(err))
    saved = " and no model saved" if getattr(args, "save_model", None) else ""
    return f"{stopped[0] + '; ' if stopped else ''}no output was written{saved}."


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
    try:  # The models load only now, once the arguments are known to be good.
        import torch

        from deltavae import _cli_commands
        from deltavae._cli_files import InputError, session_kept, stdout_closed
        from deltavae._cli_flags import advice_files
        from deltavae._cli_genes import read_genes_kept
        from deltavae._cli_report import _as_flags, warning_printer
    except KeyboardInterrupt:
        print("deltavae: interrupted: no output was written.", file=sys.stderr)
        return 130

    # main() may be called from Python (tests, notebooks): leave torch's thread count, the
    # seed and generators, and the user's figures as found.
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings(), session_kept():
            # Dependencies' API deprecations are noise to a command-line user (Lightning's
            # logging-interval advice is silenced in every fit, train/_runner.py).
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # zarr's notes on its own future defaults, at every write into a store.
            warnings.filterwarnings("ignore", message="zarr v3 autosharding")
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not")
            # Warnings read as the report's lines do, without Python's file path and source,
            # each once (anndata warns of repeated cell names at every AnnData it makes).
            warnings.showwarning = warning_printer()
            try:
                set_threads(args.threads)
            except ValueError as err:
                raise InputError(_as_flags(str(err))) from None
            # A change the models advise to the data is a command on the files given.
            files = advice_files(
                *(getattr(args, key, None) for key in ("input", "reference", "reference_layer"))
            )
            # numba's and BLAS's pools too; the spot model's genes for its advice (_cli_genes).
            with command_threads_limited(args.threads), files, read_genes_kept():
                return getattr(_cli_commands, args.command)(args)
    except InputError as err:
        print(f"deltavae: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # Ctrl-C: a line, not a traceback; 130 as shells use
        print(f"deltavae: interrupted: {_interrupted(err, args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout's reader left (| head): quietly, as SIGPIPE ends a program
        stdout_closed()
        return 141
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    raise SystemExit(main())
