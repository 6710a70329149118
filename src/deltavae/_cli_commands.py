"""What ``deltavae demo`` and ``deltavae fit`` do once their arguments are parsed.

:mod:`deltavae.cli` parses the command line without importing the models (``deltavae --help``
answers at once) and calls :func:`demo` or :func:`fit` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import anndata as ad
import numpy as np
import scanpy as sc
import scvi

import deltavae as dv
from deltavae._anndata_or_folder import model_folder_advice
from deltavae._cli_files import (
    InputError,
    _check_out,
    _check_writable,
    _drop_scvi_fields,
    _message,
    _remove,
    _same_path,
    _user_errors,
    _write_results,
    check_model_dir,
    discard,
    partial_path,
    plots_folder,
    publish,
    publish_model,
    run_record,
    sigterm_stops,
    zarr_to_h5ad,
)
from deltavae._cli_genes import remember_read_genes
from deltavae._cli_models import (
    MODELS,
    _train_default,
    build_model,
    check_accelerator,
    check_input_keys,
    check_model_inputs,
    model_options,
    read_backed,
    read_reference,
    refuse_minified_file,
    renamed_for_writing,
    setup_warnings,
)
from deltavae._cli_outputs import check_plots_folder
from deltavae._cli_report import (
    SPATIAL_MODELS,
    _as_flags,
    _elbo_report,
    _fit_plots,
    _fit_report,
    _save_plots,
    _umap,
    no_tissue_note,
)
from deltavae._docs import doc_params
from deltavae._folder_swap import publish_folder
from deltavae._io import _is_zarr_store
from deltavae.cli import DEMO_N_LATENT, MIN_DEMO_CELLS

#: What models say about their results, reported as notes (see ``fit``).
_NOTES = (
    "clusters are empty after training",
    "labels are never predicted after training",
    "labels are barely predicted after training",
    "were merged into their most similar archetype",
    "point the same way (cosine similarity",  # archetypes merged as alike
    "was not fully applied: archetype",  # min_spots, where merging stopped at 2
    "which is trained as a cell type of its own",
)


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


#: Where Lightning logs the GPUs a fit sees, at every fit on a GPU.
CUDA_LOGGER = "lightning.pytorch.accelerators.cuda"


@contextlib.contextmanager
def _no_device_banner():
    """Lightning's "GPU available: ..." line on stderr, and on a GPU its "LOCAL_RANK: 0 -
    CUDA_VISIBLE_DEVICES: [0]" and its advice to set torch's matmul precision, which no flag
    does: the command's own line says where the model trains, and stderr keeps to one line
    for an error. Also Lightning's "Trainer was signaled to stop but the required
    `min_epochs=...` ... has not been met", which no flag can meet (the stopper itself skips
    the KL warm-up, train/_stopping.py). And scvi-tools' "Monitored metric ... did not
    improve in the last N records ... Signaling Trainer to stop." (printed, not logged): the
    report says where the run stopped."""
    from scvi.train._callbacks import LoudEarlyStopping

    from deltavae._logging import QUIET_MESSAGES, DropMessages

    banner = DropMessages(
        (
            "GPU available:",
            "LOCAL_RANK:",
            "that has Tensor Cores",
            "Trainer was signaled to stop but the required `min_epochs=",
        )
    )
    names = [name for name in QUIET_MESSAGES if "rank_zero" in name]
    loggers = [logging.getLogger(name) for name in [*names, CUDA_LOGGER]]
    for logger in loggers:
        logger.addFilter(banner)
    try:
        with mock.patch.object(LoudEarlyStopping, "teardown", _say_nothing):
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(banner)


def _say_nothing(*args, **kwargs) -> None:
    """A callback's teardown that prints nothing."""


def _keep_best(early_stopping: bool | None, model_cls: type) -> dict:
    """``train``'s arguments for --early-stopping (``True``), --no-early-stopping (``False``)
    or neither (``None``: the model's own default, {}; CGMDVAE's stops once it overfits).

    Under --early-stopping a run has trained a patience of epochs past its best validation
    loss, and the model keeps the parameters of the epoch with the lowest one after the KL
    warm-up (``restore_best=True``; for CGMDVAE the ELBO plus its classifier and alignment
    terms), not the last one's (the report says which). A model that stops by default
    (``early_stopping="auto"``) is given its own "auto", so the flag stops it as its default
    does (CGMDVAE's patience of 75, not scvi-tools' 45). --no-early-stopping trains every
    epoch, and leaves the epoch kept to the model (CGMDVAE's best, ZINBVAE's last).
    """
    if early_stopping is None:
        return {}
    if not early_stopping:
        return {"early_stopping": False}
    auto = _train_default(model_cls, "early_stopping") == "auto"
    return {"restore_best": True, "early_stopping": "auto" if auto else True}


def _where(accelerator: str) -> str:
    """Where ``train`` runs: "gpu" (refused before where torch sees none) is CUDA or Apple's
    GPU, as Lightning picks; scvi-tools' "auto" takes CUDA only, never MPS."""
    import torch

    gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    return "a GPU" if gpu else "the CPU"


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
    if zarr_store and (advice := model_folder_advice(path, "INPUT")):
        raise InputError(advice)
    if zarr_store and not _is_zarr_store(path):
        raise InputError(f"INPUT {str(path)!r} is a folder, not an .h5ad file or a zarr store.")
    if zarr_store and not args.backed:
        raise InputError(
            f"{str(path)!r} is a directory (a zarr store?); deltavae fit reads zarr stores "
            "with --backed (minibatches streamed from the store), or convert it once to an "
            f".h5ad file: {zarr_to_h5ad(path)}"
        )
    if not out.name:  # '.', '/': no file name to write, nor to name the plots folder by
        raise InputError(f"--out {str(out)!r} is a folder; give the path of an .h5ad file.")
    plots = None if args.no_plots else plots_folder(out)
    _check_out(path, out, args.backed and zarr_store, plots, overwrite=args.overwrite)
    # An earlier run's output (--overwrite): its plots go too; another run's are refused.
    replacing = check_plots_folder(out, plots, args.overwrite)
    if args.reference is not None and _same_path(Path(args.reference), out):
        raise InputError(f"--out {str(out)!r} is the --reference file; write to a new file.")
    if args.save_model is not None:
        check_model_dir(Path(args.save_model), path, out, args.overwrite)
    check_model_inputs(args)
    check_accelerator(args.accelerator)
    options = model_options(model_cls, args)
    check_input_keys(path, args)
    reference = read_reference(args)
    try:
        # Backed: minibatches are read from the file; only obs and var are held in memory.
        adata = read_backed(path, args.layer, args.out) if args.backed else ad.read_h5ad(path)
    except OSError as err:
        raise InputError(f"cannot read {str(path)!r} as an .h5ad file: {err}") from err
    except ValueError as err:
        raise InputError(_message(err)) from err
    except (TypeError, KeyError) as err:  # an HDF5 file that is not an AnnData (10x's .h5)
        raise InputError(f"{str(path)!r} is not an AnnData file: {_message(err)}") from err
    refuse_minified_file(adata, f"INPUT {str(path)!r}")
    if args.n_clusters is not None and args.n_clusters > adata.n_obs:
        raise InputError(
            f"--n-clusters {args.n_clusters} is more than the {adata.n_obs} cells in "
            f"{str(path)!r}; ask for fewer clusters."
        )
    scvi.settings.seed = args.seed
    notes: list[str] = renamed_for_writing(args, adata, reference)  # before training
    options = model_options(model_cls, args)  # with the columns as renamed
    with _user_errors("setting up the model"), _model_notes(notes), setup_warnings(args):
        model = build_model(model_cls, adata, reference, options)
    remember_read_genes(model, adata)  # its advice names them as INPUT's (_cli_genes.py)
    unit = "spots" if args.model in SPATIAL_MODELS else "cells"
    print(
        f"Training {model_cls.__name__} on {adata.n_obs} {unit} x {adata.n_vars} genes, on "
        f"{_where(args.accelerator)} ..."
    )
    # What the model says about its own run and results (not converged, empty clusters,
    # merged archetypes) goes in the report below, not as Python warnings with a file path.
    # Without --epochs, the model's own default (the Python one), not max_epochs=None.
    epochs = {} if args.epochs is None else {"max_epochs": args.epochs}
    given = {"batch_size": args.batch_size, "lr": args.lr, "train_size": args.train_size}
    epochs.update({name: value for name, value in given.items() if value is not None})
    # The progress bar redraws a line with carriage returns: for a terminal, not a log file.
    progress = sys.stdout.isatty()
    with _user_errors("training"), _model_notes(notes), _no_device_banner():
        model.train(
            **epochs,
            **_keep_best(args.early_stopping, model_cls),
            accelerator=args.accelerator,
            enable_progress_bar=progress,
        )
    # The output and its plots take their names only once everything below has succeeded
    # (publish); until then they are partial files, removed on any failure or SIGTERM.
    # The model too is saved beside its folder, and replaces an earlier one (--overwrite)
    # only once the output is in place: a failed run keeps the model it would have replaced.
    saved = None if args.save_model is None else Path(os.path.abspath(args.save_model))
    try:
        with sigterm_stops("writing the results"):
            if saved is not None:  # first: the results are written without the setup fields
                with _user_errors("saving the model"):  # that a save reads (CGMDVAE's cells)
                    _remove(partial_path(saved))  # a killed run's
                    model.save(partial_path(saved), overwrite=True)
            with _user_errors("writing the results"), _model_notes(notes):
                record = run_record(model, args)
                results, keys = _write_results(model, adata, path, out, args.backed, record)
            folder = None if plots is None else partial_path(plots)
            files = [] if plots is None else _fit_plots(results, model, keys, args, folder)
            with _user_errors("writing the results"):
                publish(out, plots_folder(out), files, replacing)
                if saved is not None:
                    publish_model(saved)
    except BaseException:
        discard(out, saved)
        raise
    print(f"Wrote {', '.join(keys)} to {out}")
    if args.save_model is not None:
        print(f"Saved the model to {args.save_model} ({model_cls.__name__}.load to reuse it)")
    for line in _fit_report(results, model, args):
        print(line)
    for note in dict.fromkeys(notes):  # a note given at two steps, once
        print(f"warning: {note}")
    if plots is not None:
        names = ", ".join(file.name for file in files)
        print(f"plots in {plots}: {names}{no_tissue_note(results, args.model)}")
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
    check_accelerator(args.accelerator)
    adata = _prepare_pbmc3k(args.n_cells, args.n_top_genes, args.seed)
    print(f"PBMC 3k: {adata.n_obs} cells x {adata.n_vars} highly variable genes (raw counts)")
    scvi.settings.seed = args.seed
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=DEMO_N_LATENT)
    notes: list[str] = []  # printed after the scores, as fit's report does
    print(f"Training ZINBVAE on {_where(args.accelerator)} ...")
    with _user_errors("training"), _model_notes(notes), _no_device_banner():
        model.train(
            max_epochs=args.epochs,
            **_keep_best(args.early_stopping, dv.model.ZINBVAE),
            accelerator=args.accelerator,
            enable_progress_bar=sys.stdout.isatty(),
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

    # Written beside --out and swapped in once all is written: a failed run leaves no half
    # folder, and an earlier demo's files there are replaced, all at once, only by a
    # finished run's.
    partial = partial_path(out)
    _remove(partial)
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
    try:
        with sigterm_stops("writing the results"), _user_errors("writing the results"):
            files = _save_plots(adata, model, partial, clusters=["leiden"], others=["cell_type"])
            _drop_scvi_fields(adata)
            adata.write_h5ad(partial / "pbmc3k_zinbvae.h5ad")
            files.insert(0, partial / "pbmc3k_zinbvae.h5ad")
            # In one rename (other files in --out carried over): moved in one at a time, a
            # failure part way left an earlier demo's files beside this one's.
            publish_folder(str(partial), str(out))
    except BaseException as err:
        _remove(partial)
        if isinstance(err, OSError) and not isinstance(err, BrokenPipeError):  # as fit's
            raise InputError(f"cannot write {str(out)!r}: {err}") from err
        raise
    files = [out / file.name for file in files]

    summary = adata.uns["deltavae_demo"]
    print(f"\nZINBVAE on {adata.n_obs} cells:")  # the epochs run, as fit's report says them
    for line in _elbo_report(model):
        print(line)
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
