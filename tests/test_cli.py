"""The ``deltavae`` console script: demo, fit, its report and plots, input errors, threads,
quiet logs, clean results files and the installed entry point."""

import argparse
import functools
import inspect
import io
import logging
import os
import re
import shlex
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from _shell_advice import run_advised
from scipy import sparse

matplotlib.use("Agg")

import deltavae as dv  # noqa: E402
from deltavae import _cli_commands  # noqa: E402
from deltavae._cli_args import CLASSIFIER_WEIGHT, LIKELIHOODS  # noqa: E402
from deltavae._cli_files import InputError, plots_folder  # noqa: E402
from deltavae._cli_models import build_model as build  # noqa: E402
from deltavae.cli import build_parser, main  # noqa: E402
from deltavae.train import TrainingDivergedError  # noqa: E402

#: Loggers whose records tell whether the noise filters work: where each message is created.
NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "scvi.data._download",
)


class _Records(logging.Handler):
    """Keeps the messages that reach the loggers it is attached to (after their filters)."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        for name in NOISY_LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc):
        for name in NOISY_LOGGERS:
            logging.getLogger(name).removeHandler(self)


def _scvi_fields(adata: ad.AnnData) -> list[str]:
    return [
        f"{slot}/{key}"
        for slot, keys in (("obs", adata.obs.columns), ("obsm", adata.obsm), ("uns", adata.uns))
        for key in keys
        if str(key).startswith("_scvi")
    ]


@pytest.fixture(scope="module")
def synthetic_h5ad(tmp_path_factory):
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=2, seed=0
    )
    path = tmp_path_factory.mktemp("synthetic") / "counts.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def cgmdvae_fit(synthetic_h5ad, tmp_path_factory):
    """One ``deltavae fit --model cgmdvae`` run: its status, output, printed text and logs."""
    out = tmp_path_factory.mktemp("cgmdvae") / "clustered.h5ad"
    argv = ["fit", str(synthetic_h5ad), "--model", "cgmdvae", "--layer", "counts"]
    argv += ["--condition-key", "condition", "--n-clusters", "3", "--epochs", "3"]
    argv += ["--threads", "1", "--out", str(out)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with _Records() as records, redirect_stdout(stdout), redirect_stderr(stderr):
        status = main(argv)
    return SimpleNamespace(
        status=status,
        out=out,
        stdout=stdout.getvalue(),
        stderr=stderr.getvalue(),
        messages=records.messages,
    )


@pytest.fixture(scope="module")
def counts_h5ad(tmp_path_factory):
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=40, n_clusters=3, n_conditions=2, seed=1
    )
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2 == 0, "d1", "d2")
    path = tmp_path_factory.mktemp("input") / "counts.h5ad"
    adata.write_h5ad(path)
    return path, adata


# 12-15 s: in the slow stage (python -m pytest -m slow), which CI also runs.
@pytest.mark.slow
def test_demo_writes_results_and_plots(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "2", "--n-cells", "300", "--n-top-genes", "200"]
    assert main(argv) == 0

    adata = ad.read_h5ad(out / "pbmc3k_zinbvae.h5ad")
    assert adata.shape == (300, 200)
    assert adata.obsm["X_zinbvae"].shape == (300, 10)
    assert adata.obsm["X_umap"].shape == (300, 2)
    assert "leiden" in adata.obs and "cell_type" in adata.obs
    scores = adata.uns["deltavae_demo"]
    for name in ("ari", "nmi"):
        assert -1.0 <= float(scores[name]) <= 1.0
    assert int(scores["epochs"]) == 2
    for name in ("umap_cell_type.png", "umap_leiden.png", "elbo_history.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "composition_leiden_by_cell_type.png").stat().st_size > 1000
    assert _scvi_fields(adata) == []
    # The demo's help names every file it writes, and the scores it prints (it said "an .h5ad
    # file and plots" and "(ARI, NMI)", of four scores and five files).
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    said = " ".join(sub.choices["demo"].format_help().split())
    assert [file.name for file in out.iterdir() if file.name not in said] == []
    assert "(ARI, NMI, accuracy, purity)" in said

    printed = capsys.readouterr()
    assert "ARI" in printed.out and "NMI" in printed.out and "elapsed" in printed.out
    # The epochs run and the ELBO, as fit's report gives them (the demo said neither, nor
    # where --early-stopping had ended the run).
    assert "ZINBVAE on 300 cells:\nepochs trained: 2\nfinal negative ELBO per cell" in printed.out
    assert str(out / "pbmc3k_zinbvae.h5ad") in printed.out
    # Two epochs cannot converge: said as a line of the report, not a Python warning.
    assert "warning: Training ran" in printed.out and "too few to converge" in printed.out
    assert "pass --epochs above this run's 2, with --early-stopping" in printed.out
    assert "NotConvergedWarning" not in printed.err

    # A run that fails while writing leaves the earlier demo's files as they were and no
    # half-written folder (it wrote its PNGs into --out, then failed on the .h5ad).
    before = {file.name: file.stat().st_mtime_ns for file in out.iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", fail)
    capsys.readouterr()
    assert main([*argv, "--epochs", "1"]) == 2  # one line, as fit's, not a traceback
    assert capsys.readouterr().err.startswith(f"deltavae: error: cannot write {str(out)!r}")
    assert {file.name: file.stat().st_mtime_ns for file in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_fit_writes_input_plus_latent(counts_h5ad, tmp_path, capsys):
    path, original = counts_h5ad
    out = tmp_path / "nested" / "fitted.h5ad"
    argv = ["fit", str(path), "--model", "zinbvae", "--layer", "counts", "--batch-key", "donor"]
    argv += ["--epochs", "2", "--n-latent", "3", "--no-plots", "--out", str(out)]
    assert main(argv) == 0

    fitted = ad.read_h5ad(out)
    assert fitted.obsm["X_zinbvae"].shape == (original.n_obs, 3)
    assert set(original.obs.columns) <= set(fitted.obs.columns)
    assert set(original.layers) <= set(fitted.layers)
    np.testing.assert_array_equal(
        fitted.layers["counts"].toarray(), original.layers["counts"].toarray()
    )
    assert _scvi_fields(fitted) == []  # --batch-key registered obs["_scvi_batch"]
    printed = capsys.readouterr().out
    assert "obsm/X_zinbvae" in printed
    assert re.search(r"epochs trained: 2\n", printed)
    assert re.search(r"training \d+\.\d\d, validation \d+\.\d\d", printed)
    assert "clusters" not in printed
    assert not plots_folder(out).exists()


def test_fit_cgmdvae_writes_clusters(cgmdvae_fit, counts_h5ad, tmp_path, capsys):
    assert cgmdvae_fit.status == 0, cgmdvae_fit.stderr
    fitted = ad.read_h5ad(cgmdvae_fit.out)
    assert fitted.obs["cgmdvae_cluster"].dtype == "category"
    assert fitted.obsm["cgmdvae_cluster_probs"].shape == (200, 3)
    assert "obs/cgmdvae_cluster" in cgmdvae_fit.stdout
    # An option the model does not take is refused by name.
    path, _ = counts_h5ad
    argv = ["fit", str(path), "--model", "cgmdvae", "--batch-key", "donor"]
    assert main(argv + ["--out", str(tmp_path / "x.h5ad")]) == 2
    assert "does not take --batch-key; it takes --condition-key" in capsys.readouterr().err
    argv = ["fit", str(path), "--model", "zinbvae", "--condition-key", "donor"]
    assert main(argv + ["--out", str(tmp_path / "x.h5ad")]) == 2
    assert "does not take --condition-key; it takes --batch-key" in capsys.readouterr().err


def test_one_column_as_labels_and_condition_is_refused(counts_h5ad, tmp_path, capsys):
    """Once trained (and its plots' AnnData held the column twice, which crashed scanpy);
    the model refuses the setup now: it would cluster by the condition it corrects for."""
    path, _ = counts_h5ad
    argv = ["fit", str(path), "--model", "cgmdvae", "--labels-key", "condition"]
    argv += ["--condition-key", "condition", "--epochs", "1", "--out", str(tmp_path / "o.h5ad")]
    assert main(argv) == 2
    assert "'condition' is both --labels-key and a --condition-key" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()


def test_fit_missing_batch_key_is_a_clean_error(counts_h5ad, tmp_path, capsys):
    path, _ = counts_h5ad
    out = tmp_path / "never.h5ad"
    argv = ["fit", str(path), "--model", "zinbvae", "--batch-key", "sample", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deltavae: error: ")
    assert "'sample'" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_fit_a_mistyped_key_or_layer_names_the_closest(counts_h5ad, tmp_path, capsys):
    """The file's columns and layers were listed without the hint the Python API gives
    (setup_anndata(batch_key='Donor'): "did you mean 'donor'?")."""
    path, _ = counts_h5ad
    out = tmp_path / "never.h5ad"
    for options, hint in (
        (["--batch-key", "Donor"], "(did you mean 'donor'?)."),
        (["--layer", "count"], "available layers: ['counts'] (did you mean 'counts'?)."),
    ):
        argv = ["fit", str(path), "--model", "zinbvae", *options, "--out", str(out)]
        assert main(argv) == 2
        assert capsys.readouterr().err.strip().endswith(hint)
    assert not out.exists()
    # A file without layers was told "available layers: []", and not what to do.
    bare = tmp_path / "bare.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(bare)
    assert (
        main(["fit", str(bare), "--model", "zinbvae", "--layer", "counts", "--out", str(out)]) == 2
    )
    assert capsys.readouterr().err == (
        "deltavae: error: --layer 'counts' is not in adata.layers: the file has no layers; "
        "drop --layer to read X.\n"
    )


def _fit_on_data_that_are_not_counts(tmp_path, capsys, model: str, counts_layer: bool) -> str:
    """``deltavae fit`` of X = counts + 0.5 (the counts in a layer too, or not): its stderr."""
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=2)
    if counts_layer:
        adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X.toarray() + 0.5
    path = tmp_path / "normalized.h5ad"
    adata.write_h5ad(path)
    argv = ["fit", str(path), "--model", model, "--out", str(tmp_path / "never.h5ad")]
    assert main(argv) == 2
    return capsys.readouterr().err


def test_fit_non_integer_data_is_a_clean_error(tmp_path, capsys):
    err = _fit_on_data_that_are_not_counts(tmp_path, capsys, "zinbvae", counts_layer=False)
    assert err.startswith("deltavae: error: ")
    assert "raw counts" in err
    assert "Traceback" not in err


def test_fit_cgmdvae_on_data_that_are_not_counts_names_the_layer_flag(tmp_path, capsys):
    """CGMDVAE's own check of the counts advises its setup's layer: the CLI's --layer."""
    err = _fit_on_data_that_are_not_counts(tmp_path, capsys, "cgmdvae", counts_layer=True)
    assert "e.g. --layer 'counts' (layers: ['counts'])" in err and "setup_anndata" not in err


def test_fit_missing_input_and_bad_usage(tmp_path, capsys):
    argv = ["fit", str(tmp_path / "absent.h5ad"), "--model", "zinbvae", "--out", "x.h5ad"]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", "in.h5ad", "--model", "nope", "--out", "x.h5ad"]) == 2
    err = capsys.readouterr().err
    # one line, as every other error of bad input (argparse printed its usage block first)
    assert "invalid choice" in err and len(err.strip().splitlines()) == 1
    assert err.startswith("deltavae fit: error: ") and "(see deltavae fit --help)" in err
    assert main(["fit", "--classifier-weight", "-1", "in.h5ad"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["demo", "--epochs", "0"]) == 2
    assert main(["demo", "--n-cells", "10", "--out", str(tmp_path)]) == 2
    assert "--n-cells must lie between" in capsys.readouterr().err
    # Abbreviations were taken for flags: "--early" as --early-stopping, "--epoch 3" as
    # --epochs after an --epochs 2.
    for abbreviated in (["--early"], ["--epochs", "2", "--epoch", "3"]):
        assert main(["fit", "in.h5ad", "--model", "zinbvae", "--out", "x.h5ad", *abbreviated]) == 2
        assert f"unrecognized arguments: {abbreviated[-2 if len(abbreviated) > 1 else 0]}" in (
            capsys.readouterr().err
        )


def test_fit_report_has_clusters_mixing_and_elbo(cgmdvae_fit):
    assert cgmdvae_fit.status == 0, cgmdvae_fit.stderr
    fitted = ad.read_h5ad(cgmdvae_fit.out)
    summary = fitted.uns["cgmdvae"]
    printed = cgmdvae_fit.stdout
    names, sizes = list(summary["cluster_names"]), list(summary["cluster_sizes"])
    n_filled = sum(size > 0 for size in sizes)
    assert f"clusters (obs['cgmdvae_cluster']): {n_filled} of 3 hold cells" in printed
    assert re.search(r"cluster +cells +ctrl +stim", printed)
    for name, size in zip(names, sizes, strict=True):
        in_cluster = fitted.obs["cgmdvae_cluster"] == name
        stim = (fitted.obs["condition"][in_cluster] == "stim").mean()
        row = rf"\n  {name} +{size} +\d\.\d\d +{stim:.2f}\n" if size else rf"\n  {name} +0 +- +-\n"
        assert re.search(row, printed), row
    empty = list(summary["empty_clusters"])
    assert ("empty clusters: none" in printed) == (not empty)
    mixing = re.search(
        r"condition mixing \(condition\): (\d\.\d\d) \(whole data set: 1\.00\)", printed
    )
    assert mixing and 0.0 <= float(mixing.group(1)) <= 1.0
    assert "epochs trained: 3" in printed
    assert re.search(
        r"final negative ELBO per cell .*: training \d+\.\d\d, validation \d+\.\d\d", printed
    )


def test_fit_writes_plots_next_to_the_output(cgmdvae_fit):
    folder = plots_folder(cgmdvae_fit.out)
    assert folder == cgmdvae_fit.out.parent / "clustered_plots"
    names = [
        "umap_cgmdvae_cluster.png",
        "umap_condition.png",
        "elbo_history.png",
        "composition_cgmdvae_cluster_by_condition.png",
    ]
    for name in names:
        assert (folder / name).stat().st_size > 1000, name
    assert f"plots in {folder}" in cgmdvae_fit.stdout


def test_fit_output_has_no_scvi_fields(cgmdvae_fit, synthetic_h5ad, tmp_path, capsys):
    assert _scvi_fields(ad.read_h5ad(cgmdvae_fit.out)) == []
    # Backed: the model writes obs into a copy of the file, with the fields scvi-tools added.
    out = tmp_path / "backed.h5ad"
    argv = ["fit", str(synthetic_h5ad), "--model", "cgmdvae", "--layer", "counts", "--backed"]
    argv += ["--condition-key", "condition", "--n-clusters", "3", "--epochs", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # printed as the shell prints it
        assert main([*argv, "--threads", "1", "--no-plots", "--out", str(out)]) == 0
    assert "warning: --backed keeps only X" in capsys.readouterr().err  # --layer counts
    fitted = ad.read_h5ad(out)
    assert "cgmdvae_cluster" in fitted.obs and "X_cgmdvae" in fitted.obsm
    assert _scvi_fields(fitted) == []


def test_fit_logs_no_noise(cgmdvae_fit, tmp_path):
    assert cgmdvae_fit.status == 0, cgmdvae_fit.stderr
    messages = "\n".join(cgmdvae_fit.messages)
    # Lightning's device line: the command says where it trains, in its own line on stdout.
    assert "GPU available" not in messages and "GPU available" not in cgmdvae_fit.stderr
    assert "Training CGMDVAE on 200 cells x 40 genes, on the CPU" in cgmdvae_fit.stdout
    assert "litlogger" not in messages
    assert "Seed set to" not in messages
    assert "TPU available" not in messages and "`max_epochs=" not in messages
    for text in (cgmdvae_fit.stdout, cgmdvae_fit.stderr):
        assert "litlogger" not in text and "Seed set to" not in text
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=0)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_hidden=8)
    with _Records() as records:  # from Python, a machine without a GPU says nothing of one
        model.train(max_epochs=1, enable_progress_bar=False)
    assert not [m for m in records.messages if "available: False" in m]
    keep = logging.getLogger("lightning.pytorch.utilities.rank_zero").filter  # a GPU's stays
    assert keep(logging.makeLogRecord({"msg": "GPU available: True (cuda), used: False"}))
    rank = logging.getLogger("lightning.pytorch.accelerators.cuda").filter
    assert not rank(logging.makeLogRecord({"msg": "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"}))
    model.save(tmp_path / "model")
    with _Records() as records:
        dv.model.ZINBVAE.load(tmp_path / "model", adata)
    assert not [m for m in records.messages if "already downloaded" in m]


def test_no_gpu_rank_line_during_a_command(monkeypatch):
    """On a GPU every fit logs 'LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]' on stderr, and on
    an Ampere or later GPU the advice to set torch's matmul precision, which no flag sets."""
    from lightning.fabric.utilities.rank_zero import rank_zero_info
    from lightning.pytorch.accelerators import CUDAAccelerator

    from deltavae._cli_commands import _no_device_banner

    cuda_logger = logging.getLogger("lightning.pytorch.accelerators.cuda")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # set_nvidia_flags sets it
    records = _Records()
    cuda_logger.addHandler(records)
    try:
        with _no_device_banner():
            CUDAAccelerator.set_nvidia_flags(0)
        assert records.messages == []
        # From Python too: _logging's filters drop it in notebooks (it names no choice).
        CUDAAccelerator.set_nvidia_flags(0)
        assert not [m for m in records.messages if m.startswith("LOCAL_RANK: 0")]
    finally:
        cuda_logger.removeHandler(records)
    advice = "You are using a CUDA device ('H200') that has Tensor Cores. To properly utilize"
    with _Records() as seen:
        with _no_device_banner():
            rank_zero_info(advice)
        assert seen.messages == []
        rank_zero_info(advice)
        assert seen.messages == [advice]


def test_help_shows_every_default():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {"demo", "fit"}
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = formatter._expand_help(action)
            if action.required:
                assert "(required)" in text, (name, action.dest)
            else:
                assert re.search(r"\[[^\]]+\]", text), (name, action.dest, text)
    fit_help = commands["fit"].format_help()
    # The demo trains a ZINBVAE: its --early-stopping spoke of CGMDVAE's loss terms.
    demo_help = " ".join(commands["demo"].format_help().split())
    assert "CGMDVAE" not in demo_help and "when the validation ELBO stops improving" in demo_help
    command_threads = dv._threads.command_threads
    assert "labels in --labels-key, or 10]" in " ".join(fit_help.split())
    threads = f"--threads THREADS CPU threads of torch, numba (UMAP) and BLAS [{command_threads()}:"
    assert threads in " ".join(fit_help.split())
    assert "_plots" in fit_help
    default = inspect.signature(dv.model.CGMDVAE).parameters["classifier_weight"].default
    assert CLASSIFIER_WEIGHT == default and f"[{default:g}]" in " ".join(fit_help.split())


def test_the_model_is_named_as_in_python_too(capsys):
    """``--model ZINBVAE`` (the class a Python user knows) was an invalid choice."""
    for given, model in (
        ("ZINBVAE", "zinbvae"),
        ("SpatialImputer", "imputer"),
        ("NMFDeconv", "nmfdeconv"),
    ):
        argv = ["fit", "x.h5ad", "--model", given, "--out", "y.h5ad"]
        assert build_parser().parse_args(argv).model == model
    assert main(["fit", "x.h5ad", "--model", "zinb", "--out", "y.h5ad"]) == 2
    assert "invalid choice: 'zinb'" in capsys.readouterr().err


def test_demo_resolution_must_be_positive(capsys):
    """-1 gave one cluster and nan one per cell, scored and exit 0."""
    for value in ("-1", "0", "nan"):
        assert main(["demo", "--resolution", value]) == 2
        assert "must be a positive number" in capsys.readouterr().err


def test_condition_mixing_ignores_categories_without_cells():
    """An unused category (left by subsetting) counted as a condition never mixed: 0.63."""
    from deltavae._cli_report import _cluster_report

    results = ad.AnnData(np.zeros((40, 1)))
    results.obs["cgmdvae_cluster"] = np.repeat(["0", "1"], 20)
    results.obs["condition"] = pd.Categorical(np.tile(["a", "b"], 20), ["a", "b", "other"])
    results.uns["cgmdvae"] = {
        "cluster_names": np.array(["0", "1"]),
        "cluster_sizes": np.array([20, 20]),
        "empty_clusters": np.array([], dtype=object),
    }
    lines = "\n".join(_cluster_report(results, "cgmdvae", "condition"))
    assert "condition mixing (condition): 1.00 (whole data set: 1.00)" in lines
    assert "other" not in lines and "/ log(2)" in lines


def test_fit_refuses_bad_out_paths_before_loading(synthetic_h5ad, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    store = synthetic_h5ad.with_suffix(".zarr")
    cases = {
        str(blocker / "out.h5ad"): "is a file",
        str(blocker / "deeper" / "out.h5ad"): "is a file",
        str(synthetic_h5ad): "is the input",
        str(tmp_path): "is a folder",
        str(tmp_path / "out.csv"): "give a path ending in .h5ad",
    }
    for out, message in cases.items():
        argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--out", out]
        assert main(argv) == 2
        printed = capsys.readouterr()
        assert printed.err.startswith("deltavae: error: "), out
        assert message in printed.err, (out, printed.err)
        assert "Training" not in printed.out
    # The suffix in capitals is an .h5ad file still.
    from deltavae._cli_files import _check_out

    _check_out(synthetic_h5ad, tmp_path / "OUT.H5AD", store_out=False, plots=None)
    # A zarr output replaces a store; anything else at that path is refused, not removed.
    ad.read_h5ad(synthetic_h5ad).write_zarr(store)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    argv = ["fit", str(store), "--model", "zinbvae", "--backed", "--out", str(keep)]
    assert main(argv) == 2
    assert "not a zarr store" in capsys.readouterr().err
    assert (keep / "precious.txt").exists()
    argv = ["fit", str(store), "--model", "zinbvae", "--backed", "--out", str(store)]
    assert main(argv) == 2
    assert "is the input" in capsys.readouterr().err
    # The plots folder beside --out must be a folder too.
    plots_folder(tmp_path / "x.h5ad").write_text("a file")
    argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--out", str(tmp_path / "x.h5ad")]
    assert main(argv) == 2
    assert "--no-plots" in capsys.readouterr().err


def test_model_errors_are_one_line_and_bugs_keep_their_traceback(
    synthetic_h5ad, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "never.h5ad"
    argv = ["fit", str(synthetic_h5ad), "--model", "cgmdvae", "--layer", "counts"]
    assert main([*argv, "--n-clusters", "500", "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert printed.err.startswith("deltavae: error: --n-clusters 500 is more than the 200 cells")
    assert "Traceback" not in printed.err and "Training" not in printed.out

    def refuse(self, **kwargs):
        raise ValueError("n_samples=180 should be >= n_clusters=190.")

    monkeypatch.setattr(dv.model.CGMDVAE, "train", refuse)
    assert main([*argv, "--n-clusters", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "deltavae: error: training: n_samples=180 should be >= --n-clusters 190.\n"
    assert not out.exists()

    def diverge(self, **kwargs):
        raise TrainingDivergedError("the ELBO became NaN at epoch 2; lower the lr", 2, 5, None)

    monkeypatch.setattr(dv.model.CGMDVAE, "train", diverge)
    assert main([*argv, "--n-clusters", "3", "--out", str(out)]) == 2
    assert "error: training: the ELBO became NaN at epoch 2" in capsys.readouterr().err

    def bug(self, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dv.model.CGMDVAE, "train", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main([*argv, "--n-clusters", "3", "--out", str(out)])


def _blas_threads(libraries=None) -> set[int]:
    """Threads of the BLAS and OpenMP pools loaded (of ``libraries``, file paths: all)."""
    from threadpoolctl import threadpool_info

    pools = threadpool_info()
    return {p["num_threads"] for p in pools if libraries is None or p["filepath"] in libraries}


def test_threads_reach_torch_and_are_restored(synthetic_h5ad, tmp_path, monkeypatch):
    """--threads held torch's pool only: BLAS's and OpenMP's (numpy, scikit-learn) and numba's
    (scanpy's neighbours and UMAP) kept every CPU of the machine."""
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []

    def record(self, **kwargs):
        seen.append((torch.get_num_threads(), _blas_threads(), numba.get_num_threads()))
        raise ValueError("stop here")

    monkeypatch.setattr(dv.model.ZINBVAE, "train", record)
    monkeypatch.setattr(dv._threads, "available_cpus", lambda: 4)  # 3 threads are not too many
    before = torch.get_num_threads()
    argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--out", str(tmp_path / "x.h5ad")]
    try:
        loaded = {pool["filepath"] for pool in threadpool_info()}
        with threadpool_limits(limits=2):  # the machine's pools, before the command
            assert main([*argv, "--threads", "3"]) == 2
            assert main(argv) == 2
            assert _blas_threads(loaded) == {2}  # put back
    finally:
        torch.set_num_threads(before)
    default = dv._threads.command_threads()
    numba_most = numba.config.NUMBA_NUM_THREADS
    assert seen == [(3, {3}, min(3, numba_most)), (default, {default}, min(default, numba_most))]
    assert torch.get_num_threads() == before
    assert build_parser().parse_args(["demo", "--threads", "2"]).threads == 2
    # A scheduler's OMP_NUM_THREADS is the command's default (it ran min(CPUs, 8) threads).
    monkeypatch.delenv("DELTAVAE_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert build_parser().parse_args(["demo"]).threads == 3
    monkeypatch.setenv("DELTAVAE_THREADS", "5")
    assert dv.default_threads() == 5 == build_parser().parse_args(["demo"]).threads
    monkeypatch.setenv("DELTAVAE_THREADS", "zero")
    assert dv.default_threads() == min(dv._threads.available_cpus(), 8)


def test_quieting_filters_leave_a_malformed_record_to_logging():
    # deltavae's filter on a dependency's logger formatted the record itself: a message whose
    # arguments do not fit raised into the dependency's code, where logging reports it instead.
    from deltavae._logging import QUIET_MESSAGES

    record = logging.makeLogRecord({"msg": "%d files", "args": ("two",)})
    for name in QUIET_MESSAGES:
        assert all(f.filter(record) for f in logging.getLogger(name).filters)


def test_a_transfers_quieting_filter_drops_its_messages_and_passes_malformed_ones():
    from deltavae.model._scvi_glue import _without_message

    bad = logging.makeLogRecord({"msg": "%d files", "args": ("two",)})
    quiet = logging.makeLogRecord({"msg": "Input AnnData not setup with scvi-tools. attempting"})
    with _without_message("deltavae.test_quiet", "Input AnnData not setup with scvi-tools"):
        (drop,) = logging.getLogger("deltavae.test_quiet").filters
        assert drop.filter(bad) and not drop.filter(quiet)
    assert not logging.getLogger("deltavae.test_quiet").filters


def test_set_threads_takes_numpy_integers_and_refuses_the_rest():
    before = torch.get_num_threads()
    try:
        assert dv.set_threads(np.int64(2)) == 2
        assert type(dv.set_threads(np.int32(1))) is int
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1, 2.0, "2", True, np.float64(2)):
        with pytest.raises(ValueError, match="positive integer"):
            dv.set_threads(bad)


def test_set_threads_warns_above_the_cpus_and_refuses_absurd_counts(monkeypatch):
    monkeypatch.setattr(dv._threads, "available_cpus", lambda: 2)
    before = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match=r"more than the 2 CPUs.*set_threads\(2\)"):
            assert dv.set_threads(3) == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="at most 2"):
        dv.set_threads(10**6)
    assert torch.get_num_threads() == before


def test_default_threads_follow_a_cgroup_v1_cpu_quota(tmp_path):
    # A container on cgroup v1 (older Docker, Kubernetes, HPC nodes) with --cpus=2: its quota
    # is in cpu/cpu.cfs_quota_us, not cgroup v2's cpu.max; it was ignored (8 threads on 2 CPUs).
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert dv._threads._cgroup_cpus(tmp_path) == 2
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert dv._threads._cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").write_text("300000 100000\n")  # cgroup v2 comes first
    assert dv._threads._cgroup_cpus(tmp_path) == 3


def _import_in_fresh_process(code: str, **env) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "DELTAVAE"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


# 4 s each: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
def test_import_sets_passive_wait_and_threads_unless_the_user_did():
    show = "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads(), dv.default_threads())"
    fresh = _import_in_fresh_process(f"import os; import deltavae as dv; import torch; {show}")
    assert fresh[0] == "PASSIVE"
    assert fresh[1] == fresh[2]
    user = _import_in_fresh_process(
        f"import os, torch; torch.set_num_threads(1); import deltavae as dv; {show}",
        OMP_WAIT_POLICY="ACTIVE",
    )
    assert user[:2] == ["ACTIVE", "1"]


def test_version_through_the_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "deltavae.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"deltavae {dv.__version__}"


# Fresh interpreters run the CLI (7-14 s): in the slow stage, which CI also runs.
@pytest.mark.slow
def test_help_and_usage_errors_do_not_load_the_models():
    """``deltavae --help`` and a bad argument answer without importing scvi-tools (about 6 s);
    ``import deltavae`` alone does not either, and the models load on first use."""
    code = (
        "import sys, deltavae as dv; from deltavae.cli import main; "
        "assert main(['fit', 'x.h5ad', '--model', 'nope', '--out', 'y.h5ad']) == 2; "
        "print('scvi' in sys.modules, 'scanpy' in sys.modules); dv.model.ZINBVAE; "
        "print('scvi' in sys.modules, sorted(dv.__all__) == sorted(set(dv.__all__) & set(dir(dv))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True", "True"]
    assert "invalid choice: 'nope'" in result.stderr


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "deltavae", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert dv.__version__ in result.stdout


def test_an_absurd_thread_count_is_a_usage_error(synthetic_h5ad, tmp_path, capsys):
    before = torch.get_num_threads()
    argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--out", str(tmp_path / "x.h5ad")]
    assert main([*argv, "--threads", "1000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deltavae: error: --threads 1000000 on the ") and "None" not in err
    assert "(or leave --threads out for the default)" in err
    # More threads than CPUs: the warning names the flag, not set_threads (the Python call).
    cpus = dv._threads.available_cpus()
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        assert main([*argv, "--threads", str(cpus + 1), "--n-clusters", "500"]) == 2
    err = capsys.readouterr().err
    assert f"deltavae: warning: --threads {cpus + 1} is more than the {cpus} CPUs" in err
    assert f"; --threads {cpus} uses them all." in err and "set_threads" not in err
    assert torch.get_num_threads() == before
    assert not (tmp_path / "x.h5ad").exists()


def test_fit_report_carries_the_models_warnings(tmp_path, capsys):
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    adata.write_h5ad(tmp_path / "c.h5ad")
    code = main(
        [
            "fit",
            str(tmp_path / "c.h5ad"),
            "--model",
            "zinbvae",
            "--epochs",
            "2",
            "--no-plots",
            "--out",
            str(tmp_path / "out.h5ad"),
        ]
    )
    out = capsys.readouterr()
    assert code == 0
    # Two epochs cannot converge: the report says so in its own words, not as a traceback line.
    assert "warning: Training ran" in out.out and "too few to converge" in out.out
    assert "pass --epochs above this run's 2" in out.out and "max_epochs" not in out.out
    assert "NotConvergedWarning" not in out.err
    # One epoch ends in the warm-up; the CLI has no warm-up argument to shorten.
    argv = ["fit", str(tmp_path / "c.h5ad"), "--model", "zinbvae", "--epochs", "1"]
    assert main([*argv, "--no-plots", "--out", str(tmp_path / "one.h5ad")]) == 0
    printed = capsys.readouterr().out
    assert "ended during the KL warm-up" in printed and "Train longer (--epochs)." in printed
    assert "(a quarter of --epochs, at least 1)" in printed
    assert "n_epochs_kl_warmup" not in printed


def test_a_warning_is_printed_once_per_run(counts_h5ad, tmp_path, capsys):
    """anndata warns of repeated cell names at every AnnData it reads or makes: the same line
    came two or three times in one run."""
    adata = counts_h5ad[1].copy()
    adata.obs_names = ["cell"] * 10 + list(adata.obs_names[10:])
    adata.write_h5ad(tmp_path / "repeated.h5ad")
    argv = ["fit", str(tmp_path / "repeated.h5ad"), "--model", "zinbvae", "--layer", "counts"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "o.h5ad")]) == 0
    err = capsys.readouterr().err
    assert err.count("Observation names are not unique") == 1, err
    # anndata's advice, a call on an object the shell has none of, as a command.
    (line,) = [line for line in err.splitlines() if "names are not unique" in line]
    assert "call `.obs_names_make_unique`" not in line
    run_advised(line)
    assert ad.read_h5ad(tmp_path / "repeated_fixed.h5ad").obs_names.is_unique
    # With a --reference, whose names anndata means is not said: no command on INPUT.
    from deltavae._cli_flags import _as_flags, advice_files

    said = "Observation names are not unique. To make them unique, call `.obs_names_make_unique`."
    with advice_files("spots.h5ad", "cells.h5ad"):
        assert _as_flags(said) == said


# 2.3 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_counts_in_a_csc_matrix_are_advised_as_a_shell_user_acts(counts_h5ad, tmp_path, capsys):
    """scvi-tools' "It is safe to cast before model initialization" named no file and no
    step a shell user can take."""
    adata = counts_h5ad[1].copy()
    adata.layers["counts"] = sparse.csc_matrix(adata.layers["counts"])
    adata.write_h5ad(tmp_path / "csc.h5ad")
    argv = ["fit", str(tmp_path / "csc.h5ad"), "--model", "zinbvae", "--layer", "counts"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main([*argv, "--epochs", "1", "--no-plots", "--out", str(tmp_path / "o.h5ad")]) == 0
    err = capsys.readouterr().err
    assert "safe to cast" not in err
    assert "a.layers['counts'] = a.layers['counts'].tocsr()" in err
    # The advice runs as it is in a shell: the file, read back, holds CSR counts.
    run_advised(err)
    assert sparse.isspmatrix_csr(ad.read_h5ad(tmp_path / "csc.h5ad").layers["counts"])


@pytest.mark.parametrize("stored", ["h5ad", "backed", "zarr"])
def test_counts_only_in_a_layer_name_the_flag(counts_h5ad, tmp_path, capsys, stored):
    """A file whose counts are in a layer, without X: "adata.X is empty (None); pass the layer
    that holds the data" named no flag; --backed failed with h5py's "Unable to synchronously
    open object (object 'X' doesn't exist)", and a zarr store was refused even with --layer
    ("has no X")."""
    adata = counts_h5ad[1].copy()
    adata.X = None
    path, out = tmp_path / "no_x.h5ad", tmp_path / "o.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr's notes on its own format
        if stored == "zarr":
            path, out = tmp_path / "no_x.zarr", tmp_path / "o.zarr"
            adata.write_zarr(path)
        else:
            adata.write_h5ad(path)
    argv = ["fit", str(path), "--model", "zinbvae", "--out", str(out), "--no-plots"]
    argv += [] if stored == "h5ad" else ["--backed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # --backed: the layers are in memory
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "adata.X is empty (None); pass --layer with the data: ['counts']" in err
        if stored == "zarr":
            assert main([*argv, "--layer", "counts", "--epochs", "1"]) == 0
            assert "X_zinbvae" in ad.read_zarr(out).obsm


def test_fit_names_the_unlabelled_category(tmp_path, capsys, monkeypatch):
    """Cells marked 'unknown' are unlabelled with --unlabeled-category unknown; without it
    they train as a fourth type, and the model's warning says so."""
    adata = dv.datasets.synthetic_counts(n_cells=120, n_genes=40, n_clusters=3, seed=1)
    labels = adata.obs["cluster"].astype(str).to_numpy().astype(object)
    labels[::2] = "unknown"
    adata.obs["partial"] = labels
    path = tmp_path / "partial.h5ad"
    adata.write_h5ad(path)
    argv = ["fit", str(path), "--model", "cgmdvae", "--labels-key", "partial", "--epochs", "2"]
    argv += ["--no-plots", "--threads", "1"]
    out = tmp_path / "semi.h5ad"
    # --classifier-weight (no flag set CGMDVAE's, which the model's own advice names) reaches it.
    built = []
    monkeypatch.setattr(
        _cli_commands, "build_model", lambda *a: built.append(build(*a)) or built[0]
    )
    given = ["--unlabeled-category", "unknown", "--classifier-weight", "5", "--out", str(out)]
    assert main([*argv, *given]) == 0
    assert built[0].module.classifier_weight == 5.0
    clusters = ad.read_h5ad(out).uns["cgmdvae"]["cluster_names"]
    assert sorted(clusters) == ["0", "1", "2"]
    assert "trained as a cell type of its own" not in capsys.readouterr().out
    monkeypatch.undo()
    assert main([*argv, "--out", str(tmp_path / "four.h5ad")]) == 0
    printed = capsys.readouterr().out
    assert "warning: The labels hold 'unknown', which is trained as a cell type" in printed
    assert "pass --unlabeled-category 'unknown'." in printed
    assert len(ad.read_h5ad(tmp_path / "four.h5ad").uns["cgmdvae"]["cluster_names"]) == 4


def test_an_unlabelled_mark_in_integer_labels_is_read_as_an_integer(tmp_path):
    """A flag is text: '-1' never matched a column of integers, and the advice asked for
    unlabeled_category=-1, which no flag can pass."""
    adata = dv.datasets.synthetic_counts(n_cells=120, n_genes=40, n_clusters=3, seed=1)
    labels = adata.obs["cluster"].astype(int).to_numpy()
    labels[::2] = -1
    adata.obs["partial"] = labels
    adata.write_h5ad(tmp_path / "ints.h5ad")
    argv = ["fit", str(tmp_path / "ints.h5ad"), "--model", "cgmdvae", "--labels-key", "partial"]
    argv += ["--unlabeled-category", "-1", "--epochs", "2", "--no-plots", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "semi.h5ad")]) == 0
    clusters = ad.read_h5ad(tmp_path / "semi.h5ad").uns["cgmdvae"]["cluster_names"]
    assert sorted(map(str, clusters)) == ["0", "1", "2"]


def test_fit_keeps_an_existing_output_unless_told_to_overwrite(synthetic_h5ad, tmp_path, capsys):
    out = tmp_path / "results.h5ad"
    out.write_text("yesterday's results")
    argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--epochs", "1", "--no-plots"]
    argv += ["--threads", "1", "--out", str(out)]
    assert main(argv) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "yesterday's results"
    assert main([*argv, "--overwrite"]) == 0
    assert "X_zinbvae" in ad.read_h5ad(out).obsm


def test_fit_refuses_an_unlabelled_category_without_labels(synthetic_h5ad, tmp_path, capsys):
    argv = ["fit", str(synthetic_h5ad), "--model", "cgmdvae", "--unlabeled-category", "Unknown"]
    assert main([*argv, "--out", str(tmp_path / "x.h5ad")]) == 2
    assert "pass --labels-key too" in capsys.readouterr().err
    argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--classifier-weight", "5"]
    assert main([*argv, "--out", str(tmp_path / "x.h5ad")]) == 2
    assert "zinbvae does not take --classifier-weight" in capsys.readouterr().err
    argv[3] = "cgmdvae"  # the model ignored it, with a warning, and trained
    assert main([*argv, "--out", str(tmp_path / "x.h5ad")]) == 2
    assert "weighs the labels of --labels-key; pass --labels-key too" in capsys.readouterr().err
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=0)
    with pytest.raises(ValueError, match="no labels_key was given"):
        dv.model.CGMDVAE.setup_anndata(adata, unlabeled_category="Unknown")


def test_fit_refuses_labels_in_the_column_its_clusters_go_to(synthetic_h5ad, tmp_path, capsys):
    """--labels-key cgmdvae_cluster (last run's clusters, curated): the output's column held
    the predictions instead of the labels, or, since write_to_adata refuses that, the run
    failed after training. Refused before the input is read."""
    argv = ["fit", str(synthetic_h5ad), "--model", "cgmdvae", "--labels-key", "cgmdvae_cluster"]
    assert main([*argv, "--out", str(tmp_path / "x.h5ad")]) == 2
    assert "copy the column under another name" in capsys.readouterr().err
    assert not (tmp_path / "x.h5ad").exists()


def test_missing_labels_error_names_the_flag(tmp_path, capsys):
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=0)
    adata.obs["ct"] = adata.obs["cluster"].astype(object).where(np.arange(50) % 2 == 0)
    adata.write_h5ad(tmp_path / "nan.h5ad")
    argv = ["fit", str(tmp_path / "nan.h5ad"), "--model", "cgmdvae", "--labels-key", "ct"]
    assert main([*argv, "--out", str(tmp_path / "x.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "missing values (NaN)" in err and "unless --unlabeled-category names" in err


def test_fit_saves_a_cgmdvae_for_python(synthetic_h5ad, tmp_path, capsys):
    """--model cgmdvae --save-model always ended in "saving the model: This CGMDVAE cannot
    read its AnnData: another model was set up on it since ... _scvi_manager_uuid": the
    model was saved after the output dropped scvi-tools' fields from its AnnData."""
    out, folder = tmp_path / "c.h5ad", tmp_path / "model"
    argv = ["fit", str(synthetic_h5ad), "--model", "cgmdvae", "--layer", "counts"]
    argv += ["--condition-key", "condition", "--n-clusters", "3", "--epochs", "2"]
    assert main([*argv, "--no-plots", "--out", str(out), "--save-model", str(folder)]) == 0
    assert f"Saved the model to {folder}" in capsys.readouterr().out
    result = ad.read_h5ad(out)
    assert not any(key.startswith("_scvi") for key in [*result.obs, *result.uns])
    loaded = dv.model.CGMDVAE.load(folder, result)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), result.obsm["X_cgmdvae"], rtol=1e-5, atol=1e-6
    )


def test_fit_saves_the_model_for_python(synthetic_h5ad, tmp_path, capsys):
    out, folder = tmp_path / "z.h5ad", tmp_path / "model"
    argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--layer", "counts"]
    argv += ["--epochs", "2", "--no-plots", "--out", str(out), "--save-model", str(folder)]
    assert main(argv) == 0  # the report's notes say it has not converged
    assert f"Saved the model to {folder}" in capsys.readouterr().out
    result = ad.read_h5ad(out)
    loaded = dv.model.ZINBVAE.load(folder, result)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), result.obsm["X_zinbvae"], rtol=1e-5, atol=1e-6
    )
    # An existing folder is kept unless --overwrite, and refused before anything trains.
    assert (
        main([*argv[:-4], "--out", str(tmp_path / "again.h5ad"), "--save-model", str(folder)]) == 2
    )
    assert "--save-model" in capsys.readouterr().err and not (tmp_path / "again.h5ad").exists()
    # Not inside --out, which the finished run replaces (the model was removed with it).
    inside = ["--out", str(tmp_path / "in.h5ad"), "--save-model", str(tmp_path / "in.h5ad" / "m")]
    assert main([*argv[:-4], *inside]) == 2
    assert "lies inside the input or --out" in capsys.readouterr().err


def test_a_saved_models_folder_given_for_a_file_names_its_anndata(synthetic_h5ad, tmp_path, capsys):
    """A folder model.save wrote, given as INPUT or --reference, was "a folder, not an .h5ad
    file", or as --reference "(a zarr store?)" with a command converting it by read_zarr,
    which fails on it; the AnnData saved in it is named instead."""
    adata = ad.read_h5ad(synthetic_h5ad)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    model.save(tmp_path / "with", save_anndata=True)
    model.save(tmp_path / "without")
    out = ["--out", str(tmp_path / "o.h5ad")]
    assert main(["fit", str(tmp_path / "with"), "--model", "zinbvae", *out]) == 2
    err = capsys.readouterr().err
    assert f"INPUT '{tmp_path / 'with'}' is a folder a model's save wrote" in err
    assert f"the AnnData saved with it: '{tmp_path / 'with' / 'adata.h5ad'}'" in err
    spots = ["fit", str(synthetic_h5ad), "--model", "nmfdeconv", "--reference"]
    assert main([*spots, str(tmp_path / "without"), *out]) == 2
    err = capsys.readouterr().err
    assert "a model's save wrote (it holds model.pt), not an AnnData: give an .h5ad" in err
    assert "zarr" not in err


def test_a_cgmdvae_saved_by_fit_maps_a_query_in_python(tmp_path, capsys):
    """--save-model of a cgmdvae failed after training ("saving the model: This CGMDVAE cannot
    read its AnnData: ... _scvi_manager_uuid"), and the run wrote nothing: the model was
    saved after its AnnData lost scvi-tools' setup fields, written out without them, and the
    save reads the cells (the typicality record of its fit)."""
    adata = dv.datasets.synthetic_counts(n_cells=150, n_genes=30, n_clusters=2, n_conditions=3)
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    new = (adata.obs["condition"] == "c2").to_numpy()
    adata[~new].copy().write_h5ad(tmp_path / "ref.h5ad")
    out, folder = tmp_path / "ref_out.h5ad", tmp_path / "model"
    argv = ["fit", str(tmp_path / "ref.h5ad"), "--model", "cgmdvae", "--n-clusters", "2"]
    argv += ["--condition-key", "condition", "--labels-key", "cell_type", "--epochs", "2"]
    argv += ["--no-plots", "--out", str(out), "--save-model", str(folder)]
    assert main(argv) == 0, capsys.readouterr().err
    result = ad.read_h5ad(out)
    assert not [c for c in result.obs if c.startswith("_scvi")]
    loaded = dv.model.CGMDVAE.load(folder, result)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), result.obsm["X_cgmdvae"], rtol=1e-5, atol=1e-6
    )
    query = adata[new].copy()
    del query.obs["cell_type"]
    q = dv.model.CGMDVAE.load_query_data(query, folder)
    assert q.query_mapping_["new_categories"] == {"condition": ["c2"]}
    assert q.typicality_record_ == loaded.typicality_record_ is not None


def test_fit_real_values_with_the_normal_likelihood(tmp_path, capsys):
    """Cytometry-like values (negatives included) are refused as counts, with the flag that
    fits them named, and fit with --likelihood normal."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(3), 60)
    x = rng.normal(groups[:, None] * 3.0, 1.0, (180, 10)).astype(np.float32)
    adata = ad.AnnData(x)
    adata.obs["batch"] = np.tile(["a", "b"], 90)
    adata.write_h5ad(tmp_path / "cyto.h5ad")
    argv = ["fit", str(tmp_path / "cyto.h5ad"), "--model", "cgmdvae", "--n-clusters", "3"]
    argv += ["--condition-key", "batch", "--epochs", "20", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "a.h5ad")]) == 2
    assert "fit --model cgmdvae --likelihood normal" in capsys.readouterr().err
    assert main([*argv, "--likelihood", "normal", "--out", str(tmp_path / "b.h5ad")]) == 0
    clusters = ad.read_h5ad(tmp_path / "b.h5ad").obs["cgmdvae_cluster"].astype(int)
    assert dv.metrics.ari(groups, clusters) > 0.9
    spots = ["--model", "archetypes", "--likelihood", "normal"]
    assert (
        main(["fit", str(tmp_path / "cyto.h5ad"), *spots, "--out", str(tmp_path / "c.h5ad")]) == 2
    )
    assert "does not take --likelihood" in capsys.readouterr().err


def test_main_from_python_leaves_the_session_as_found(synthetic_h5ad, tmp_path, monkeypatch):
    """Called from a notebook, ``fit --seed 3`` left scvi.settings.seed at 3, the global
    generators reseeded, cuDNN's flags and PL_GLOBAL_SEED changed, and closed every figure
    the user had open."""
    import matplotlib.pyplot as plt
    import scvi

    monkeypatch.setattr(scvi.settings, "_seed", 42)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    users = plt.figure()
    open_before = set(plt.get_fignums())  # with any other test's left open
    np.random.seed(7)  # noqa: NPY002
    expected = np.random.rand(3)  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    out = tmp_path / "x.h5ad"
    argv = ["fit", str(synthetic_h5ad), "--model", "zinbvae", "--epochs", "2", "--seed", "3"]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main([*argv, "--threads", "1", "--out", str(out)]) == 0
    assert plots_folder(out).is_dir()  # plots were drawn
    assert plt.fignum_exists(users.number)
    assert set(plt.get_fignums()) == open_before  # the command's own are closed
    plt.close(users)
    assert scvi.settings.seed == 42 and torch.backends.cudnn.benchmark is True
    assert os.environ["PL_GLOBAL_SEED"] == "42"
    np.testing.assert_array_equal(np.random.rand(3), expected)  # noqa: NPY002


def test_the_report_names_the_epoch_whose_parameters_were_kept():
    """With restore_best the model keeps an earlier epoch's parameters; the report gave only
    the last epoch's ELBO as "final". It said "after the KL warm-up" of runs without one."""
    import pandas as pd

    from deltavae._cli_report import _elbo_report

    def frame(name, values):
        return pd.DataFrame({name: values}, index=pd.RangeIndex(len(values), name="epoch"))

    history = {
        "elbo_train": frame("elbo_train", [9.0, 7.0, 6.0, 5.5]),
        "elbo_validation": frame("elbo_validation", [9.5, 7.5, 6.5, 6.9]),
        "kl_weight": frame("kl_weight", [0.0, 1.0, 1.0, 1.0]),
    }
    lines = _elbo_report(SimpleNamespace(history=history, best_epoch_=2))
    assert lines[-1] == (
        "parameters kept: epoch 2's, the lowest validation loss after the KL warm-up "
        "(negative ELBO: training 6.00, validation 6.50)"
    )
    # NMFDeconv has no warm-up (its KL weight is 1 throughout): none to name.
    history["kl_weight"] = frame("kl_weight", [1.0] * 4)
    lines = _elbo_report(SimpleNamespace(history=history, best_epoch_=2))
    assert lines[-1] == (
        "parameters kept: epoch 2's, the lowest validation loss (negative ELBO: training "
        "6.00, validation 6.50)"
    )
    assert len(_elbo_report(SimpleNamespace(history=history, best_epoch_=3))) == 2
    assert len(_elbo_report(SimpleNamespace(history=history, best_epoch_=None))) == 2


def test_a_minified_input_or_reference_is_refused_naming_the_file(counts_h5ad, tmp_path, capsys):
    """An AnnData scvi-tools' minify_adata emptied: the model's refusal told a shell user to
    'read its file again' (the file is the minified one), and a minified --reference was not
    refused at all (told that it shares no gene, or to check its layer)."""
    from deltavae._checks import MINIFY_KEY

    minified = counts_h5ad[1][:40, :20].copy()
    minified.X = sparse.csr_matrix(minified.shape, dtype=np.float32)
    minified.uns[MINIFY_KEY] = "latent_posterior_parameters"
    minified.write_h5ad(tmp_path / "mini.h5ad")
    out = str(tmp_path / "o.h5ad")
    assert main(["fit", str(tmp_path / "mini.h5ad"), "--model", "zinbvae", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"INPUT {str(tmp_path / 'mini.h5ad')!r} was minified by scvi-tools" in err
    assert "Pass the file written before minify_adata." in err and "read its file" not in err
    spots = counts_h5ad[1][:10, :20].copy()
    spots.write_h5ad(tmp_path / "spots.h5ad")
    for model in ("nmfdeconv", "imputer"):
        argv = ["fit", str(tmp_path / "spots.h5ad"), "--model", model, "--out", out]
        argv += ["--reference", str(tmp_path / "mini.h5ad"), "--labels-key", "cluster"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--reference " in err
        assert "was minified by scvi-tools" in err, err
    assert not (tmp_path / "o.h5ad").exists()


def test_model_refusals_name_the_flags_that_fix_them(counts_h5ad, tmp_path, capsys):
    """CGMDVAE's mixture start advised 'mixture_init_epoch=None', which no flag sets, and
    ZINBVAE's likelihood refusal named the Python argument."""
    path = counts_h5ad[0]
    out = str(tmp_path / "o.h5ad")
    argv = ["fit", str(path), "--model", "cgmdvae", "--n-clusters", "10", "--train-size", "0.05"]
    assert main([*argv, "--epochs", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "Use fewer clusters (--n-clusters) or train on more cells (--train-size 1.0)." in err
    assert "mixture_init_epoch" not in err and "Traceback" not in err
    # Refused only after reading the data, and with no word of the model that takes it.
    argv = ["fit", str(path), "--model", "zinbvae", "--likelihood", "normal", "--out", out]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_cli_commands.ad, "read_h5ad", None)  # not read: refused before
        assert main(argv) == 2
    assert capsys.readouterr().err == (
        "deltavae: error: --model zinbvae fits counts (--likelihood zinb or nb); --likelihood "
        "normal (real values, or values in [0, 1]) fits --model cgmdvae.\n"
    )
    assert not (tmp_path / "o.h5ad").exists()


@pytest.mark.parametrize("basis", ["spatial", "X_spatial"])
def test_a_zarr_stores_spots_are_drawn_on_their_coordinates(tmp_path, capsys, basis):
    """read_lazy reads no obsm of a zarr store: the --backed run of a store with
    obsm['spatial'] drew no spatial plot, while the same .h5ad's run did; and of a store
    with obsm['X_spatial'] (which dv.pl.spatial_proportions reads) still none."""
    cells = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=2, n_conditions=1, seed=0
    )
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=20, grid=True, seed=1)
    del spots.uns["pseudo_spots"]
    spots.obsm[basis] = spots.obsm.pop("spatial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr's note on its v2 format
        spots.write_zarr(tmp_path / "spots.zarr")
    out = tmp_path / "w.zarr"
    argv = ["fit", str(tmp_path / "spots.zarr"), "--model", "archetypes", "--n-archetypes", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the models' notes on a short run
        assert main([*argv, "--epochs", "2", "--backed", "--out", str(out)]) == 0
    assert (plots_folder(out) / "spatial_archetype_weights.png").stat().st_size > 1000
    assert "spatial_archetype_weights.png" in capsys.readouterr().out
    np.testing.assert_array_equal(ad.read_zarr(out).obsm[basis], spots.obsm[basis])


def test_lightnings_min_epochs_line_is_not_shown_under_early_stopping():
    """--early-stopping printed Lightning's "Trainer was signaled to stop but the required
    `min_epochs=145` ... has not been met" on stderr: a floor the model sets itself (no stop
    inside the warm-up), which no flag names."""
    from lightning.pytorch.utilities.rank_zero import WarningCache

    from deltavae._cli_commands import _no_device_banner

    line = (
        "Trainer was signaled to stop but the required `min_epochs=145` or `min_steps=None` "
        "has not been met. Training will continue..."
    )
    with _Records() as seen:
        with _no_device_banner():
            WarningCache().info(line)
        assert seen.messages == []
        WarningCache().info(line)  # from Python it stays
        assert seen.messages == [line]


def test_a_diverged_run_is_not_told_about_a_model_it_keeps(counts_h5ad, tmp_path, capsys):
    """The divergence advice said 'The model keeps its parameters from before this training
    run ... on a model built anew if this one diverges again': a failed command keeps no
    model, and every command builds its model anew."""
    out = tmp_path / "o.h5ad"
    argv = ["fit", str(counts_h5ad[0]), "--model", "zinbvae", "--layer", "counts"]
    assert main([*argv, "--lr", "1000", "--epochs", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: training: Training diverged: the " in err, err
    assert "e.g. --lr 0.001 (this run used --lr 1000)." in err
    assert "keeps" not in err and "built anew" not in err and err.count("\n") == 1
    assert not out.exists()


def test_the_imputers_gene_refusal_names_the_spots_not_its_argument(counts_h5ad, tmp_path, capsys):
    """'spatial (8 genes, ...) and reference ... share 8 genes; at least 10 are needed
    (min_shared_genes)': the imputer's argument names, of which no flag sets either."""
    adata = counts_h5ad[1]
    adata[:20, :8].copy().write_h5ad(tmp_path / "spots.h5ad")
    adata.write_h5ad(tmp_path / "ref.h5ad")
    argv = ["fit", str(tmp_path / "spots.h5ad"), "--model", "imputer", "--layer", "counts"]
    argv += ["--reference", str(tmp_path / "ref.h5ad"), "--labels-key", "cluster"]
    assert main([*argv, "--reference-layer", "counts", "--out", str(tmp_path / "o.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "error: setting up the model: the spots (8 genes, e.g. ['gene_0'," in err, err
    assert "at least 10 are needed." in err and "min_shared_genes" not in err


def test_the_umap_of_a_few_cells_logs_no_scanpy_warning(capfd, monkeypatch):
    """Fewer than 15 cells: scanpy logged 'WARNING: n_obs too small: adjusting to
    `n_neighbors = 4`' on stderr, outside the command's 'deltavae: warning:' lines."""
    import scanpy as sc

    from deltavae._cli_report import _umap

    # The neighbours graph is what warned; the layout itself is not checked (slow to compile).
    monkeypatch.setattr(
        sc.tl, "umap", lambda adata, **kw: adata.obsm.update(X_umap=np.zeros((adata.n_obs, 2)))
    )

    view = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(6)]))
    view.obsm["X_latent"] = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    _umap(view, "X_latent", 0)
    assert view.obsm["X_umap"].shape == (6, 2)
    assert view.uns["neighbors"]["params"]["n_neighbors"] == 4
    assert "n_obs too small" not in capfd.readouterr().err


def test_backed_notes_layers_in_memory_only_for_a_layer(counts_h5ad):
    """--backed on an .h5ad file with layers warned "read_lazy keeps only X ..." with Python
    advice (adata.write_zarr) even for a model trained on X, which streams from disk."""
    from deltavae._cli_models import read_backed

    path = counts_h5ad[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adata = read_backed(path, None)  # X streams from disk: nothing to say
    assert adata.isbacked
    adata.file.close()
    with pytest.warns(UserWarning, match=r"^--backed keeps only X .*--layer counts is in memory"):
        adata = read_backed(path, "counts")
    adata.file.close()


# 3.4 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_backed_layer_advice_converts_a_dense_layer(tmp_path, monkeypatch, capsys):
    """--backed --layer advised write_zarr as is, but a dense layer in a zarr store is refused
    at setup: the advice's one-liner now stores the layer as CSR. It wrote 'counts.zarr' in
    the working folder, replacing a store of that name there, and said "run deltavae fit
    counts.zarr --backed", whose --out of an .h5ad file is refused for a store: now a store
    beside the input, and the run on it with a store as --out."""
    adata = dv.datasets.synthetic_counts(n_cells=40, n_genes=15, n_clusters=2, seed=0)
    adata.layers["raw"] = adata.layers.pop("counts").toarray()
    adata.write_h5ad(tmp_path / "d.h5ad")
    work = tmp_path / "work"
    (work / "counts.zarr").mkdir(parents=True)  # someone else's, in the working folder
    monkeypatch.chdir(work)
    argv = ["fit", str(tmp_path / "d.h5ad"), "--model", "zinbvae", "--layer", "raw", "--backed"]
    argv += ["--epochs", "1", "--no-plots", "--out", str(tmp_path / "o.h5ad")]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main(argv) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "--backed keeps" in line]
    store, out = tmp_path / "d.zarr", tmp_path / "o.zarr"
    assert line.endswith(
        f", then run deltavae fit on {str(store)!r} with --backed and a store as --out "
        f"({str(out)!r})."
    )
    run_advised(line)  # the advice, as a user would run it
    assert not any((work / "counts.zarr").iterdir())
    layer = ad.read_zarr(store).layers["raw"]
    assert sparse.issparse(layer) and layer.format == "csr"
    np.testing.assert_array_equal(layer.toarray(), adata.layers["raw"])
    argv[1], argv[-1] = str(store), str(out)
    assert main(argv) == 0 and "--backed keeps" not in capsys.readouterr().err


def test_early_stopping_keeps_the_best_epoch(counts_h5ad, tmp_path, monkeypatch):
    """--early-stopping kept the last epoch's parameters (ZINBVAE's restore_best=False), a
    patience of epochs past the best validation ELBO it stopped on: it now restores the best."""
    calls = []
    train = dv.model.ZINBVAE.train

    def recorded(self, **kwargs):
        calls.append(kwargs)
        return train(self, **kwargs)

    monkeypatch.setattr(dv.model.ZINBVAE, "train", recorded)
    argv = ["fit", str(counts_h5ad[0]), "--model", "zinbvae", "--layer", "counts", "--no-plots"]
    for flags in (["--early-stopping"], []):
        out = str(tmp_path / f"o{len(flags)}.h5ad")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a 1-epoch run's notes
            assert main([*argv, "--epochs", "1", *flags, "--out", out]) == 0
    assert calls[0]["restore_best"] is True and calls[0]["early_stopping"] is True
    assert "restore_best" not in calls[1]  # the model's own default


def test_cgmdvaes_early_stopping_is_turned_off_and_on_as_its_default(counts_h5ad, tmp_path):
    """CGMDVAE stops early by default (train(early_stopping="auto"), a patience of 75), and
    no flag turned it off; --early-stopping, which the help called its default, shortened
    its patience to scvi-tools' 45. --no-early-stopping trains every epoch, recorded as given."""
    trained = []
    train = dv.model.CGMDVAE.train

    @functools.wraps(train)  # its signature, where the command reads train's defaults
    def recorded(self, **kwargs):
        out = train(self, **kwargs)
        trained.append(self.train_args_)
        return out

    argv = ["fit", str(counts_h5ad[0]), "--model", "cgmdvae", "--n-clusters", "3", "--no-plots"]
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(dv.model.CGMDVAE, "train", recorded)
        warnings.simplefilter("ignore", UserWarning)  # a 2-epoch run's notes
        for i, flags in enumerate(([], ["--early-stopping"], ["--no-early-stopping"])):
            out = tmp_path / f"o{i}.h5ad"
            assert main([*argv, "--epochs", "2", *flags, "--out", str(out)]) == 0
    patience = dv.train._stopping.AUTO_PATIENCE
    for args in trained[:2]:
        assert args["early_stopping"] is True and args["early_stopping_patience"] == patience
    assert trained[2]["early_stopping"] is False and "early_stopping_patience" not in trained[2]
    record = ad.read_h5ad(tmp_path / "o2.h5ad").uns["deltavae_fit"]["options"]
    assert record["early_stopping"] == "False"
    assert "early_stopping" not in ad.read_h5ad(tmp_path / "o0.h5ad").uns["deltavae_fit"]["options"]


def test_the_patience_advice_names_the_flag_that_turns_early_stopping_off():
    """A run early stopping ended too soon was told 'run without --early-stopping', which a
    CGMDVAE run (stopping early by default, the flag not given) could not follow."""
    from deltavae._cli_report import _as_flags
    from deltavae.train._advice import patience_advice

    for used in (None, 75):
        said = _as_flags(patience_advice(24, used=used))
        assert said.endswith(
            "settled: train every epoch (--no-early-stopping; cgmdvae stops early unless given it)."
        )
    argv = ["fit", "in.h5ad", "--model", "cgmdvae", "--out", "o.h5ad", "--no-early-stopping"]
    assert build_parser().parse_args(argv).early_stopping is False


def test_early_stopping_is_reported_not_scvi_tools_line(capsys):
    """--early-stopping printed scvi-tools' "Monitored metric elbo_validation did not improve
    in the last 93 records ... Signaling Trainer to stop." (its count is not the patience of
    45) and the report never said that early stopping had ended the run."""
    from scvi.train._callbacks import LoudEarlyStopping

    from deltavae._cli_commands import _no_device_banner
    from deltavae._cli_report import _elbo_report

    stopper = LoudEarlyStopping(monitor="elbo_validation", warmup_epochs=0)
    stopper.early_stopping_reason = "Monitored metric elbo_validation did not improve"
    with _no_device_banner():
        stopper.teardown(None, None)
    assert capsys.readouterr().out == ""
    stopper.teardown(None, None)  # from Python it stays
    assert "Monitored metric" in capsys.readouterr().out

    frame = pd.DataFrame({"elbo": np.linspace(90.0, 80.0, 172)})
    history = {"elbo_train": frame, "elbo_validation": frame + 1}
    stopped = {"deltavae_early_stopped_epoch": torch.tensor(171)}
    trainer = SimpleNamespace(callbacks=[], callback_metrics=stopped, max_epochs=400)
    model = SimpleNamespace(history=history, trainer=trainer, best_epoch_=None)
    assert _elbo_report(model)[0] == (
        "epochs trained: 172 of 400 (--epochs): early stopping ended the run, the validation "
        "loss having stopped improving"
    )
    trainer.callback_metrics = {"deltavae_early_stopped_epoch": torch.tensor(-1)}
    assert _elbo_report(model)[0] == "epochs trained: 172"


def test_the_eval_mode_lag_advice_names_the_flag_not_a_python_call():
    """`deltavae fit` on 100 mESC cells (--epochs 20) advised '--epochs above this run's 20, or
    call train again to continue this model': no shell run continues a model."""
    from deltavae._cli_report import _as_flags
    from deltavae.train._advice import eval_mode_lag

    note = _as_flags(eval_mode_lag([5085.0, 4500.0, 4200.0, 4073.0], 1e-3, 20))
    assert note.endswith("Train longer for them to catch up (--epochs above this run's 20).")


def test_condition_alignment_has_a_flag_and_the_imputers_gene_advice_names_a_file(capsys):
    """CGMDVAE's condition_alignment had no flag (and its refusal named the Python argument);
    the imputer's note on genes no spot counts told a shell user to pass genes= to impute()
    and to call sc.pp.filter_genes on an object the shell has none of."""
    from deltavae._cli_models import model_options, setup_warnings

    argv = ["fit", "in.h5ad", "--out", "o.h5ad", "--model", "cgmdvae", "--condition-alignment"]
    args = build_parser().parse_args([*argv, "0"])
    assert model_options(dv.model.CGMDVAE, args)["init"] == {"condition_alignment": 0.0}
    assert build_parser().parse_args([*argv, "auto"]).condition_alignment == "auto"
    assert main([*argv, "-1"]) == 2
    assert "must be 'auto' or a number of 0 or more, got -1" in capsys.readouterr().err
    args.model = "zinbvae"
    with pytest.raises(InputError, match="zinbvae does not take --condition-alignment"):
        model_options(dv.model.ZINBVAE, args)
    args = build_parser().parse_args([*argv[:4], "--model", "imputer", "--layer", "counts"])
    args.input = "s.h5ad"
    from deltavae.model._imputer_reference import warn_uncounted_panel as note

    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        with setup_warnings(args):
            note(["g0"], 9)
    said = str(told[0].message)
    assert "genes=" not in said and "filter_genes" not in said and "obsm['imputed'] leaves" in said
    assert "read_h5ad('s.h5ad'); c = a.layers['counts']" in said and "'s_counted.h5ad'" in said


def test_a_condition_of_one_value_is_told_without_python_only_steps(tmp_path, capsys):
    """CGMDVAE's warning named translate and load_query_data, which no flag runs, and said to
    "set up the cells of all of them together"."""
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=0)
    adata.obs["site"] = "a"
    adata.write_h5ad(tmp_path / "one_site.h5ad")
    argv = ["fit", str(tmp_path / "one_site.h5ad"), "--model", "cgmdvae", "--condition-key"]
    argv += ["site", "--epochs", "1", "--no-plots", "--out", str(tmp_path / "o.h5ad")]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main(argv) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "one value" in line]
    assert line == (
        "deltavae: warning: --condition-key 'site' holds one value: the model learns no "
        "condition effect. To compare conditions, fit the cells of all of them in one file."
    )


def test_a_misspelt_key_is_never_pointed_at_scvi_tools_bookkeeping(tmp_path, capsys):
    """A file saved after setup_anndata in Python holds obs['_scvi_batch']: --batch-key batch
    was answered "did you mean '_scvi_batch'?", scvi-tools' integer codes, not the user's."""
    adata = dv.datasets.synthetic_counts(n_cells=40, n_genes=20, n_clusters=2, seed=0)
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2 == 0, "d1", "d2")
    dv.model.ZINBVAE.setup_anndata(adata, layer="counts", batch_key="donor")
    adata.write_h5ad(tmp_path / "set_up.h5ad")
    argv = ["fit", str(tmp_path / "set_up.h5ad"), "--model", "zinbvae", "--batch-key", "batch"]
    assert main([*argv, "--out", str(tmp_path / "o.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "_scvi" not in err
    assert err.strip().endswith(
        "available columns: ['cluster', 'condition', 'library_size', 'donor']."
    )


def test_counts_under_the_normal_likelihood_are_told_in_flags(counts_h5ad, tmp_path, capsys):
    """The warning said "which likelihood='normal' reads as real values" and advised scanpy
    calls on adata: the flag, and a command that log-normalizes a copy of INPUT."""
    path = counts_h5ad[0]
    argv = ["fit", str(path), "--model", "cgmdvae", "--likelihood", "normal", "--epochs", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main([*argv, "--no-plots", "--out", str(tmp_path / "o.h5ad")]) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "looks like" in line]
    assert "which --likelihood normal reads as real values" in line
    assert "likelihood=" not in line and f"{shlex.quote(sys.executable)} -c " in line


def test_an_option_the_model_does_not_take_names_the_models_that_do(counts_h5ad, tmp_path, capsys):
    """It said "zinbvae setup does not take --labels-key.": 'setup' is Python's step, and a
    new user learnt nothing of where the flag belongs. Refused before the input is read."""
    path = str(counts_h5ad[0])
    for model, option, said in (
        (
            "zinbvae",
            "--labels-key",
            "--model zinbvae does not take --labels-key (cgmdvae, nmfdeconv, imputer do).",
        ),
        ("zinbvae", "--profiles", "--model zinbvae does not take --profiles (imputer does)."),
    ):
        value = "type" if option == "--profiles" else "cluster"
        argv = ["fit", path, "--model", model, option, value, "--out", str(tmp_path / "o.h5ad")]
        assert main(argv) == 2
        assert capsys.readouterr().err == f"deltavae: error: {said}\n"


def test_a_misspelt_flag_names_the_closest_and_the_commands_help(counts_h5ad, capsys):
    """'--epoch 3' and '--label-key' were "deltavae: error: unrecognized arguments: --epoch 3
    (see deltavae --help)": no hint, and the top-level help, which lists no fit option."""
    argv = ["fit", str(counts_h5ad[0]), "--model", "cgmdvae", "--epoch", "3", "--out", "o.h5ad"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "deltavae fit: error: unrecognized arguments: --epoch 3 (did you mean '--epochs'?) "
        "(see deltavae fit --help)\n"
    )
    assert main(["demo", "--n-cell", "60", "stray"]) == 2
    assert capsys.readouterr().err == (
        "deltavae demo: error: unrecognized arguments: --n-cell 60 stray (did you mean "
        "'--n-cells'?) (see deltavae demo --help)\n"
    )


def test_a_misspelt_choice_names_the_closest(capsys):
    """'--model zinvae' got argparse's list of choices, no hint, where a misspelt flag got
    one; so did every flag of choices (--accelerator, --profiles, --design) and the command.
    --likelihood took any text ('zinbb', 'Normal'), refused only once the data were read."""
    assert main(["fit", "x.h5ad", "--model", "zinvae", "--out", "o.h5ad"]) == 2
    assert capsys.readouterr().err == (
        "deltavae fit: error: argument --model: invalid choice: 'zinvae'; did you mean "
        "'zinbvae'? (choose from 'archetypes', 'cgmdvae', 'imputer', 'nmfdeconv', 'zinbvae') "
        "(see deltavae fit --help)\n"
    )
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert main(["fti"]) == 2
    assert "invalid choice: 'fti'; did you mean 'fit'? (choose" in capsys.readouterr().err
    checked = set()
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if not action.choices or not action.option_strings:
                continue
            choice = max(action.choices, key=len)
            wrong = choice[:-2] + choice[-1]  # a letter left out: 'neighbous', 'latnt'
            argv = [name, *(["x.h5ad", "--out", "o.h5ad"] if name == "fit" else [])]
            if action.dest != "model" and name == "fit":
                argv += ["--model", "zinbvae"]
            assert main([*argv, action.option_strings[0], wrong.upper()]) == 2
            err = capsys.readouterr().err
            said = f"invalid choice: {wrong.upper()!r}; did you mean {choice!r}?"
            assert said.lower() in err.lower(), err
            checked.add(action.option_strings[0])
    assert checked == {"--model", "--accelerator", "--profiles", "--design", "--likelihood"}
    assert LIKELIHOODS == dv.distributions.LIKELIHOODS


def test_empty_paths_folders_and_a_zarr_input_without_backed(counts_h5ad, tmp_path, capsys):
    """--out "$OUT" with OUT unset (''), or --out ., ended in a traceback ("PosixPath('.')
    has an empty name"); an empty or a plain folder as INPUT was taken for a zarr store;
    a zarr store without --backed was told "anndata.read_zarr(path).write_h5ad(...)"."""
    path = str(counts_h5ad[0])
    for out in ("", "."):
        assert main(["fit", path, "--model", "zinbvae", "--out", out]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "deltavae fit: error: argument --out: must be a path, got an empty string (see "
        "deltavae fit --help)",
        "deltavae: error: --out '.' is a folder; give the path of an .h5ad file.",
    ]
    (tmp_path / "plain").mkdir()
    assert main(["fit", str(tmp_path / "plain"), "--model", "zinbvae", "--out", "o.h5ad"]) == 2
    assert "is a folder, not an .h5ad file or a zarr store." in capsys.readouterr().err
    counts_h5ad[1].write_zarr(tmp_path / "cells.zarr")
    argv = ["fit", str(tmp_path / "cells.zarr"), "--model", "zinbvae", "--out", "o.h5ad"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    h5ad = tmp_path / "cells.h5ad"
    assert err.strip().endswith(f", then run deltavae fit on {str(h5ad)!r}.")
    run_advised(err)
    assert ad.read_h5ad(h5ad).n_obs == counts_h5ad[1].n_obs
