"""``deltavae fit`` inside a pipeline (Snakemake, Nextflow, a batch scheduler): an output
appears under its name only when the run succeeded, SIGTERM is a failure, stale plots of a
replaced run go, bad seeds are usage errors, and logs carry no progress-bar frames."""

import os
import signal
import sys
from pathlib import Path

import anndata as ad
import h5py
import matplotlib
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

matplotlib.use("Agg")

import deltavae as dv  # noqa: E402
from deltavae import _cli_commands  # noqa: E402
from deltavae._cli_files import partial_path, plots_folder  # noqa: E402
from deltavae.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory):
    adata = dv.datasets.synthetic_counts(n_cells=150, n_genes=30, n_clusters=3, seed=0)
    adata.layers.clear()  # counts in X only, so that --backed reads them from disk
    path = tmp_path_factory.mktemp("pipeline") / "counts.h5ad"
    adata.write_h5ad(path)
    return path


def _fit(counts_file, out, *extra):
    argv = ["fit", str(counts_file), "--model", "zinbvae", "--epochs", "2", "--threads", "1"]
    return main([*argv, "--out", str(out), *extra])


def test_sigterm_during_training_is_a_failure_that_writes_nothing(
    counts_file, tmp_path, capsys, monkeypatch
):
    """Lightning ends a fit on SIGTERM with a SystemExit of status 0: a Slurm time limit read
    as success, with no output."""

    def terminated(self, **kwargs):
        raise SIGTERMException

    monkeypatch.setattr(dv.model.ZINBVAE, "train", terminated)
    out = tmp_path / "z.h5ad"
    assert _fit(counts_file, out, "--no-plots") == 143
    err = capsys.readouterr().err
    assert err.startswith("deltavae: error: training was stopped by SIGTERM")
    assert not out.exists() and not partial_path(out).exists()


def test_ctrl_c_during_training_is_one_line_and_writes_nothing(
    counts_file, tmp_path, capsys, monkeypatch
):
    """An interrupted fit reaches the CLI as the model's KeyboardInterrupt: one line and
    status 130, as shells report Ctrl-C, with no output written; the line says so, not the
    model's "keeps the parameters of its last step" (lost with the command)."""
    note = (
        "Training was interrupted after 1 of its 2 epochs. The model keeps the parameters of "
        "its last step and has not converged."
    )

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt(note)

    monkeypatch.setattr(dv.model.ZINBVAE, "train", interrupted)
    out, model = tmp_path / "z.h5ad", tmp_path / "model"
    assert _fit(counts_file, out, "--no-plots", "--save-model", str(model)) == 130
    err = capsys.readouterr().err
    assert err.strip() == (
        "deltavae: interrupted: Training was interrupted after 1 of its 2 epochs; no output was "
        "written and no model saved."
    )
    assert not out.exists() and not partial_path(out).exists() and not model.exists()


def test_the_output_takes_its_name_only_when_everything_succeeded(
    counts_file, tmp_path, monkeypatch
):
    """--out was written before the model and the plots: a failure there left a
    finished-looking output behind a non-zero exit."""

    def broken(*args, **kwargs):
        raise RuntimeError("the plots failed")

    monkeypatch.setattr(_cli_commands, "_fit_plots", broken)
    out = tmp_path / "z.h5ad"
    with pytest.raises(RuntimeError, match="the plots failed"):
        _fit(counts_file, out)
    assert not out.exists() and not partial_path(out).exists()


def test_a_failed_run_keeps_the_model_it_would_have_replaced(counts_file, tmp_path, monkeypatch):
    """--save-model with --overwrite replaced the saved model before the plots were drawn and
    the output published: a failure there lost the earlier model, with no new output."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"the earlier model")
    (folder / "notes.txt").write_text("the user's")

    def broken(*args, **kwargs):
        raise RuntimeError("the plots failed")

    monkeypatch.setattr(_cli_commands, "_fit_plots", broken)
    out, saving = tmp_path / "z.h5ad", ["--save-model", str(folder), "--overwrite"]
    with pytest.raises(RuntimeError, match="the plots failed"):
        _fit(counts_file, out, *saving)
    assert (folder / "model.pt").read_bytes() == b"the earlier model"
    assert not out.exists() and not partial_path(folder).exists()
    monkeypatch.undo()
    assert _fit(counts_file, out, *saving, "--no-plots") == 0
    loaded = dv.model.ZINBVAE.load(folder, ad.read_h5ad(out))
    assert loaded.is_trained and (folder / "notes.txt").read_text() == "the user's"
    assert not partial_path(folder).exists()


# 6-7 s: in the slow stage, so that the default run stays under 6 minutes
@pytest.mark.slow
def test_only_a_replaced_run_takes_its_plots_folder_with_it(counts_file, tmp_path, capsys):
    """A new output deleted every PNG of its plots folder it had not written (a user's
    figure); an output replaced with --overwrite takes the replaced run's plots with it, and
    their folder where nothing else is in it (an empty one was left beside the output)."""
    out = tmp_path / "z.h5ad"
    plots = plots_folder(out)
    plots.mkdir()
    mine = plots / "my_figure_for_a_paper.png"
    mine.write_bytes(b"the user's own figure")
    assert _fit(counts_file, out) == 0
    assert mine.exists() and (plots / "elbo_history.png").exists()
    assert not partial_path(plots).exists()
    assert _fit(counts_file, out, "--no-plots", "--overwrite") == 0
    assert not list(plots.glob("*.png")) and not plots.exists()
    assert "X_zinbvae" in ad.read_h5ad(out).obsm
    assert not partial_path(out).exists()
    printed = capsys.readouterr().out
    # Not a terminal: no progress bar's carriage-return frames in the log.
    assert "\r" not in printed and "Epoch 1/2" not in printed


class _ClosedPipe:
    """stdout whose reader has left, as ``deltavae fit ... | head -1`` leaves it."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_a_closed_stdout_ends_the_run_quietly(counts_file, tmp_path, capsys, monkeypatch):
    """`deltavae fit ... | head` printed a BrokenPipeError traceback (exit status 1)."""
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    out = tmp_path / "z.h5ad"
    assert _fit(counts_file, out, "--no-plots") == 141
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists() and not partial_path(out).exists()


def test_out_naming_the_reference_is_refused(counts_file, tmp_path, capsys):
    """--out over --reference with --overwrite replaced the reference by the results."""
    reference = tmp_path / "ref.h5ad"
    reference.write_bytes(counts_file.read_bytes())
    before = reference.read_bytes()
    argv = ["fit", str(counts_file), "--model", "nmfdeconv", "--reference", str(reference)]
    assert main([*argv, "--out", str(reference), "--overwrite"]) == 2
    assert "is the --reference file" in capsys.readouterr().err
    assert reference.read_bytes() == before


@pytest.mark.filterwarnings("ignore:Element '/data' was written without encoding metadata")
def test_an_hdf5_file_that_is_not_an_anndata_is_bad_input(tmp_path, capsys):
    """A 10x .h5 or any HDF5 file: a 30-line TypeError traceback and status 1."""
    plain = tmp_path / "plain.h5ad"
    with h5py.File(plain, "w") as f:
        f["data"] = np.arange(10)
    assert _fit(plain, tmp_path / "z.h5ad") == 2
    err = capsys.readouterr().err
    assert err.startswith("deltavae: error:") and "is not an AnnData file" in err
    assert len(err.strip().splitlines()) == 1


def test_sigterm_while_writing_results_removes_what_the_run_wrote(
    counts_file, tmp_path, capsys, monkeypatch
):
    """SIGTERM after training killed the process: a full-size hidden partial file stayed."""

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(_cli_commands, "_fit_plots", killed)
    out = tmp_path / "z.h5ad"
    assert _fit(counts_file, out) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert not out.exists() and not partial_path(out).exists()
    assert not partial_path(plots_folder(out)).exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler found, put back


def test_ctrl_c_without_a_message_still_says_what_happened(
    counts_file, tmp_path, capsys, monkeypatch
):
    def interrupted(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dv.model.ZINBVAE, "train", interrupted)
    assert _fit(counts_file, tmp_path / "z.h5ad", "--no-plots") == 130
    assert capsys.readouterr().err.strip() == "deltavae: interrupted: no output was written."


@pytest.mark.parametrize("seed", ["-1", str(2**32), "abc"])
def test_a_seed_numpy_cannot_take_is_a_usage_error(counts_file, tmp_path, capsys, seed):
    assert _fit(counts_file, tmp_path / "z.h5ad", "--seed", seed) == 2
    assert f"invalid seed {seed!r}" in capsys.readouterr().err


def test_errors_name_the_flags_not_the_python_arguments(counts_file, tmp_path, capsys):
    assert _fit(counts_file, tmp_path / "z.h5ad", "--batch-key", "nope") == 2
    err = capsys.readouterr().err
    assert "--batch-key 'nope'" in err and "batch_key=" not in err


def test_accelerator_batch_size_and_lr_reach_training(counts_file, tmp_path, capsys, monkeypatch):
    """The device was always "auto" (a job could not be kept off a node's GPU), and a
    pipeline could not set the minibatch size or the learning rate."""
    seen = {}
    train = dv.model.ZINBVAE.train

    def recording(self, **kwargs):
        seen.update(kwargs)
        return train(self, **kwargs)

    monkeypatch.setattr(dv.model.ZINBVAE, "train", recording)
    argv = ["--no-plots", "--accelerator", "cpu", "--batch-size", "64", "--lr", "0.002"]
    assert _fit(counts_file, tmp_path / "z.h5ad", *argv, "--train-size", "0.8") == 0
    assert seen["accelerator"] == "cpu" and seen["batch_size"] == 64 and seen["lr"] == 0.002
    assert seen["train_size"] == 0.8
    seen.clear()  # without the flags: left to the model's defaults
    assert _fit(counts_file, tmp_path / "v.h5ad", "--no-plots") == 0
    assert "batch_size" not in seen and "lr" not in seen and "train_size" not in seen
    bad = [("--batch-size", "0"), ("--batch-size", "64.5"), ("--lr", "-1"), ("--lr", "nan")]
    for flag, value in bad:
        assert _fit(counts_file, tmp_path / "u.h5ad", flag, value) == 2
        assert "must be a positive" in capsys.readouterr().err
    for value in ("0", "1.5", "most"):
        assert _fit(counts_file, tmp_path / "u.h5ad", "--train-size", value) == 2
        assert "must be a fraction in (0, 1]" in capsys.readouterr().err
    both = ["--train-size", "1", "--early-stopping", "--no-plots"]
    assert _fit(counts_file, tmp_path / "w.h5ad", *both) == 2
    err = capsys.readouterr().err
    assert "--train-size" in err and "train_size=" not in err
    assert _fit(counts_file, tmp_path / "y.h5ad", "--accelerator", "tpu") == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_a_run_that_cannot_train_is_refused_before_reading(
    counts_file, tmp_path, capsys, monkeypatch
):
    """--accelerator gpu without a GPU, --early-stopping with no cell held out, and a key the
    input lacks were refused by the model only once the data were read and set up (for the
    first two, past a "Training ZINBVAE ... on the CPU" line)."""

    def unread(*args, **kwargs):
        raise AssertionError("the input was read")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # on a Mac: its GPU
    monkeypatch.setattr(_cli_commands.ad, "read_h5ad", unread)
    assert _fit(counts_file, tmp_path / "g.h5ad", "--accelerator", "gpu") == 2
    printed = capsys.readouterr()
    assert "--accelerator gpu asks for a GPU" in printed.err and printed.out == ""
    assert main(["demo", "--accelerator", "gpu", "--out", str(tmp_path / "demo")]) == 2
    assert "--accelerator gpu asks for a GPU" in capsys.readouterr().err
    assert _fit(counts_file, tmp_path / "e.h5ad", "--early-stopping", "--train-size", "1") == 2
    printed = capsys.readouterr()
    assert "no cell is held out for it (--train-size 1.0)" in printed.err and printed.out == ""
    # A mistyped obs column or layer, from the file's metadata (the model read it all first).
    for flag in ("--batch-key", "--layer"):
        assert _fit(counts_file, tmp_path / "k.h5ad", flag, "nope") == 2
        assert f"{flag} 'nope' is not in" in capsys.readouterr().err.replace("a column of", "in")


@pytest.mark.parametrize("backed", [False, True])
def test_the_output_records_how_it_was_made(counts_file, tmp_path, backed):
    """Without --save-model nothing said which model, seed or epochs made an output."""
    out = tmp_path / "z.h5ad"
    extra = ["--no-plots", "--seed", "3", *(["--backed"] if backed else [])]
    assert _fit(counts_file, out, *extra) == 0
    record = ad.read_h5ad(out).uns["deltavae_fit"]
    assert record["model"] == "ZINBVAE" and record["seed"] == 3
    assert record["epochs_trained"] == 2 and record["deltavae_version"] == dv.__version__
    assert record["options"]["model"] == "zinbvae" and record["options"]["epochs"] == "2"
    assert ("backed" in record["options"]) == backed
    # Options given, and those with a default though not given (--accelerator): the README
    # said "the options given" and named none of the defaults it records.
    given = {"input", "out", "model", "epochs", "threads", "no_plots", "seed"}
    defaults = set(record["options"]) - given - {"backed"}
    assert record["options"]["accelerator"] == "auto" and "batch_size" not in record["options"]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    said = " ".join(readme.split('`uns["deltavae_fit"]` records', 1)[1].split(".\n", 1)[0].split())
    assert "given" in said
    for name in defaults | {"seed", "threads"}:  # the defaults every run records
        assert f"`--{name.replace('_', '-')}`" in said, name


# 9 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_another_runs_plots_are_not_replaced_in_silence(counts_file, tmp_path, capsys):
    """As cli.py's examples run, `--out atlas_zinbvae.h5ad` then `--out atlas_zinbvae.zarr`
    (of the same data as a store): the second run wrote its PNGs over the first's in their
    shared atlas_zinbvae_plots/, without --overwrite and without a word."""
    store = tmp_path / "counts.zarr"
    ad.read_h5ad(counts_file).write_zarr(store)
    first, second = tmp_path / "r.h5ad", tmp_path / "r.zarr"
    assert _fit(counts_file, first) == 0
    plots = plots_folder(first)
    assert plots == plots_folder(second)
    before = {png.name: png.read_bytes() for png in plots.glob("*.png")}
    argv = ["fit", str(store), "--model", "zinbvae", "--epochs", "3", "--backed"]
    capsys.readouterr()
    assert main([*argv, "--out", str(second)]) == 2
    err = capsys.readouterr().err
    assert f"the plots folder {str(plots)!r} holds another run's plots" in err, err
    assert "pass --overwrite to replace them, --no-plots, or choose another --out" in err
    assert {png.name: png.read_bytes() for png in plots.glob("*.png")} == before
    assert not second.exists()
    assert main([*argv, "--out", str(second), "--overwrite"]) == 0
    assert (plots / "elbo_history.png").read_bytes() != before["elbo_history.png"]


@pytest.mark.parametrize("kind", ["file", "store"])
def test_an_output_replaced_is_kept_until_the_new_one_holds_its_name(tmp_path, kind, monkeypatch):
    """publish removed the earlier output (--overwrite) before renaming the new one into
    place: an interrupt while a large store was being removed, or a failing rename, left the
    earlier output half removed or gone, and the run's clean-up then discarded the new one."""
    import shutil

    from deltavae import _cli_files

    out = tmp_path / ("out.h5ad" if kind == "file" else "out.zarr")
    partial = partial_path(out)
    if kind == "file":
        out.write_text("earlier")
        partial.write_text("new")
    else:
        for folder, text in ((out, "earlier"), (partial, "new")):
            (folder / "obs").mkdir(parents=True)
            for name in ("zarr.json", "obs/zarr.json"):
                (folder / name).write_text(text)
    real_rmtree, real_replace, real_rename = shutil.rmtree, os.replace, os.rename

    def interrupted_rmtree(path, *args, **kwargs):  # one file removed, then Ctrl-C
        next(p for p in sorted(Path(path).rglob("*")) if p.is_file()).unlink()
        raise KeyboardInterrupt

    def failing(real):
        def rename(src, dst):
            if str(src) == str(partial):
                raise OSError("rename failed (injected)")
            return real(src, dst)

        return rename

    def contents(path):
        if path.is_file():
            return path.read_text()
        return {str(p.relative_to(path)): p.read_text() for p in path.rglob("*") if p.is_file()}

    earlier = contents(out)
    monkeypatch.setattr(os, "replace", failing(real_replace))
    monkeypatch.setattr(os, "rename", failing(real_rename))
    with pytest.raises(OSError, match="injected"):
        _cli_files.publish(out, tmp_path / "plots", [], replacing=True)
    assert contents(out) == earlier  # kept: the new output was not put in place
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(os, "rename", real_rename)
    if kind == "store":
        monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
        new = contents(partial)
        with pytest.raises(KeyboardInterrupt):
            _cli_files.publish(out, tmp_path / "plots", [], replacing=True)
        assert contents(out) == new  # the new store whole under its name, not half of either
        monkeypatch.setattr(shutil, "rmtree", real_rmtree)
