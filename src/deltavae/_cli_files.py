"""Files for the ``deltavae`` command: checks of INPUT and ``--out`` before anything is loaded,
and the results written without scvi-tools' setup fields (see :mod:`deltavae.cli`)."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import warnings
from pathlib import Path

import anndata as ad
import h5py
from anndata.io import read_elem, write_elem

import deltavae as dv
from deltavae._cli_flags import python_command
from deltavae._io import _is_zarr_store
from deltavae.train import TrainingDivergedError

#: Fields scvi-tools' ``setup_anndata`` adds to an AnnData (obs columns, obsm and uns keys):
#: its internals, not results, so they are kept out of the files the CLI writes.
SCVI_PREFIX = "_scvi_"

#: ``deltavae fit --out results.h5ad`` puts its PNGs in ``results_plots/`` next to it.
PLOTS_SUFFIX = "_plots"


class InputError(Exception):
    """A problem with the user's input: reported in one line on stderr, exit status 2."""

    exit_code = 2


class Terminated(InputError):
    """The run was stopped by SIGTERM (a scheduler's time limit, preemption): exit status
    143, as a shell reports a process ended by that signal."""

    exit_code = 143

    @classmethod
    def during(cls, step: str) -> Terminated:
        """The error of a SIGTERM that stopped ``step`` (by the handler or Lightning's)."""
        return cls(
            f"{step} was stopped by SIGTERM (a time limit or preemption?); no output was written."
        )


def _message(err: BaseException) -> str:
    # str(KeyError) wraps the message in quotes; the first argument is the message itself.
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def plots_folder(out: str | os.PathLike) -> Path:
    """Where ``deltavae fit`` writes its PNGs: ``<OUTPUT without suffix>_plots`` beside it.

    Examples
    --------
    >>> plots_folder("results/clustered.h5ad").as_posix()
    'results/clustered_plots'
    """
    out = Path(out)
    return out.with_name(out.stem + PLOTS_SUFFIX)


def zarr_to_h5ad(store: Path, flag: str | None = None) -> str:
    """The command that writes the zarr ``store`` as an .h5ad file beside it, and how the
    next run takes it: as INPUT, or as ``flag``'s file.

    Examples
    --------
    >>> print("run:", zarr_to_h5ad(Path("data/cells.zarr"), "--reference"))
    run: ... -c "import anndata;
    anndata.read_zarr('data/cells.zarr').write_h5ad('data/cells.h5ad')",
    then pass --reference 'data/cells.h5ad'.
    """
    named = store if store.name else Path(os.path.abspath(store))  # '.' names no file
    h5ad = named.with_name(named.stem + ".h5ad")
    if h5ad.exists():  # another file of that name is kept
        h5ad = named.with_name(named.stem + "_from_zarr.h5ad")
    h5ad = str(h5ad)
    code = f"import anndata; anndata.read_zarr({str(store)!r}).write_h5ad({h5ad!r})"
    then = f"pass {flag} {h5ad!r}" if flag else f"run deltavae fit on {h5ad!r}"
    return f"{python_command(code)}, then {then}."


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


def _check_out(
    path: Path, out: Path, store_out: bool, plots: Path | None, overwrite: bool = False
) -> None:
    """Refuse an ``--out`` that cannot or must not be written, before anything is loaded; an
    existing one only with ``overwrite``."""
    if _same_path(path, out):
        raise InputError(
            f"--out {str(out)!r} is the input; write the results to a new file, the input is "
            "kept as it is."
        )
    if path.is_dir() and out.resolve().is_relative_to(path.resolve()):
        raise InputError(f"--out {str(out)!r} lies inside the input store {str(path)!r}.")
    if store_out:
        if out.suffix.lower() == ".h5ad":
            raise InputError(
                f"--out {str(out)!r}: a zarr input's results are written as a zarr store (a "
                f"folder), not an .h5ad file; give a store path, e.g. "
                f"{str(out.with_suffix('.zarr'))!r}."
            )
        if out.exists() and not _is_zarr_store(out):
            raise InputError(
                f"--out {str(out)!r} exists and is not a zarr store; it would be replaced by "
                "the results store. Choose a new path."
            )
    elif out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give the path of an .h5ad file.")
    elif out.suffix.lower() != ".h5ad":
        raise InputError(
            f"--out {str(out)!r} would hold an .h5ad file under another name; give a path "
            f"ending in .h5ad, e.g. {str(out.with_suffix('.h5ad'))!r}."
        )
    if out.exists() and not overwrite:
        raise InputError(
            f"--out {str(out)!r} exists; pass --overwrite to replace it, or choose a new path."
        )
    _check_writable(out, "--out")
    if plots is not None:
        if plots.exists() and not plots.is_dir():
            raise InputError(
                f"the plots folder {str(plots)!r} is a file; move it, or pass --no-plots."
            )
        _check_writable(plots, "the plots folder")


def check_model_dir(folder: Path, path: Path, out: Path, overwrite: bool) -> None:
    """Refuse a ``--save-model`` folder that is a file, the input or output, or exists (unless
    ``overwrite``), before anything is loaded."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--save-model {str(folder)!r} is a file; give a folder path.")
    if _same_path(folder, path) or _same_path(folder, out):
        raise InputError(f"--save-model {str(folder)!r} is the input or --out; give a new folder.")
    # Inside a zarr store: the input would change, and --out is replaced when the run ends.
    if any(folder.resolve().is_relative_to(p.resolve()) for p in (path, out)):
        raise InputError(
            f"--save-model {str(folder)!r} lies inside the input or --out; give a folder "
            "outside them."
        )
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise InputError(
            f"--save-model {str(folder)!r} exists; pass --overwrite to replace it, or choose a "
            "new folder."
        )
    _check_writable(folder, "--save-model")


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


#: Where ``deltavae fit`` records how its output was made.
RUN_KEY = "deltavae_fit"


def run_record(model, args) -> dict:
    """``uns[RUN_KEY]``: the package version, the model, the seed, the epochs trained and, as
    text, the options given and the defaults not None (--accelerator, --seed, --threads)."""
    options = {
        name: str(value)
        for name, value in sorted(vars(args).items())
        # --no-early-stopping's False is given (None is neither flag): CGMDVAE's default is on
        if value is not None
        and name != "command"
        and (value is not False or name == "early_stopping")
    }
    return {
        "deltavae_version": dv.__version__,
        "model": type(model).__name__,
        "seed": int(args.seed),
        "epochs_trained": int(len(model.history.get("elbo_train", ()))),
        "options": options,
    }


def _write_results(
    model, adata: ad.AnnData, path: Path, out: Path, backed: bool, record: dict
) -> tuple[ad.AnnData, list[str]]:
    """Write the input plus the model's results to ``out``, without scvi-tools' internals,
    and ``record`` (:func:`run_record`) in ``uns[RUN_KEY]``.

    Returns the AnnData holding the results in memory (for the report and plots) and the
    keys ``write_to_adata`` wrote.
    """
    from deltavae.model._backed import _write_into_file

    run = [f"uns/{RUN_KEY}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out)
    _remove(partial)
    try:
        if backed and path.is_dir():
            # Copy the store as it is, then write the results into the copy.
            shutil.copytree(path, partial)
            with warnings.catch_warnings():  # the store write below is the one it advises
                warnings.filterwarnings("ignore", message=r".* are in memory only: adata's data")
                keys = model.write_to_adata(adata)
            _drop_scvi_fields(adata)
            adata.uns[RUN_KEY] = record
            dv.write_results_to_store(adata, keys + run, partial)
            _drop_scvi_fields_on_disk(partial)  # those the input store held
            _read_spatial(adata, partial)
            return adata, keys
        if backed:
            # Copy the file as it is; write_to_adata writes into a file opened "r+".
            shutil.copyfile(path, partial)
            results = ad.read_h5ad(partial, backed="r+")
            keys = model.write_to_adata(results)
            results.uns[RUN_KEY] = record
            _write_into_file(results, run)
            results.file.close()  # obs, obsm and uns stay readable in memory
            _drop_scvi_fields_on_disk(partial)
            return results, keys
        keys = model.write_to_adata(adata)
        _drop_scvi_fields(adata)
        adata.uns[RUN_KEY] = record
        adata.write_h5ad(partial)
        return adata, keys
    except OSError as err:
        _remove(partial)
        raise InputError(f"cannot write {str(out)!r}: {err}") from err
    except BaseException:
        _remove(partial)
        raise


def _read_spatial(adata: ad.AnnData, store: Path) -> None:
    """The spots' coordinates (``obsm["spatial"]`` or ``obsm["X_spatial"]``) of a zarr store into
    ``adata``, for the plots of the weights on them: ``read_lazy`` reads no obsm of a store."""
    import zarr

    group = zarr.open_group(store, mode="r")
    for key in ("spatial", "X_spatial"):
        if key not in adata.obsm and "obsm" in group and key in group["obsm"]:
            adata.obsm[key] = read_elem(group["obsm"][key])


def partial_path(out: Path) -> Path:
    """Where ``deltavae fit`` writes its output until the run has succeeded (then renamed to
    ``out``, so that a pipeline never finds a half-written output under its name)."""
    return out.with_name(f".{out.name}.partial")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def publish(out: Path, plots: Path, written: list[Path], replacing: bool) -> None:
    """Put a finished run's output in place: the partial file replaces ``out``, the PNGs
    ``written`` (into :func:`partial_path` of ``plots``) move into ``plots``, and, when the run
    replaces an earlier one (``replacing``), PNGs of ``plots`` it did not write are removed,
    and the folder with them where nothing else is left in it."""
    from ._cli_outputs import replace_output

    replace_output(partial_path(out), out)
    if replacing and plots.is_dir():
        for png in set(plots.glob("*.png")) - {plots / png.name for png in written}:
            png.unlink()
        if not written and not any(plots.iterdir()):  # --no-plots: no empty folder beside out
            plots.rmdir()
    if written:
        plots.mkdir(parents=True, exist_ok=True)
        for png in written:
            os.replace(png, plots / png.name)
    _remove(partial_path(plots))


def publish_model(folder: Path) -> None:
    """Put the model saved into :func:`partial_path` of ``folder`` in place, once the output
    is: its files replace an earlier model's (and an AnnData saved with that one, which
    ``load`` would pair with the new model, as ``save(overwrite=True)`` does); other files in
    ``folder`` stay. Until then an earlier model there is kept whole, and it is replaced in
    one rename (its AnnData was removed, and the files moved in, one at a time)."""
    from ._folder_swap import publish_folder

    publish_folder(str(partial_path(folder)), str(folder), skip={"adata.h5ad"})


def discard(out: Path, model_folder: Path | None = None) -> None:
    """Remove the partial output, plots and saved model of a run that failed after writing
    them."""
    _remove(partial_path(out))
    _remove(partial_path(plots_folder(out)))
    if model_folder is not None:
        _remove(partial_path(model_folder))


@contextlib.contextmanager
def sigterm_stops(step: str):
    """SIGTERM during ``step`` (outside training, whose Lightning loop has its own handler)
    raises :class:`Terminated`, so that what the run wrote is removed; the handler found is
    put back after. Only in the main thread, where Python takes signal handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated.during(step)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _options_for(fn, what: str, takers=None, **options) -> dict:
    """Keep the options that were given; refuse those ``fn`` names no parameter for, with the
    option another model takes instead (:data:`_INSTEAD`) or else, for one option, the models
    ``takers(name)`` says take it.

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
        flags = ", ".join(_flag(name) for name in refused)
        instead = [other for name in refused for other in _INSTEAD.get(name, ()) if other in named]
        hint = f"; it takes {', '.join(_flag(name) for name in instead)}" if instead else ""
        others = takers(refused[0]) if takers is not None and len(refused) == 1 else []
        if others and not instead:
            hint = f" ({', '.join(others)} {'does' if len(others) == 1 else 'do'})"
        raise InputError(f"{what} does not take {flags}{hint}.")
    return given


#: The options a model takes for what another model calls otherwise: a condition is the batch
#: of ZINBVAE, a batch the condition of CGMDVAE, and a slide the sample of Archetypes.
_INSTEAD = {
    "condition_key": ("batch_key", "sample_key"),
    "batch_key": ("condition_key", "sample_key"),
    "sample_key": ("batch_key", "condition_key"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@contextlib.contextmanager
def _user_errors(step: str):
    """Report what the model refuses while doing ``step`` as an input error, in one line.

    The model raises ValueError/KeyError (and FileNotFoundError) for what is wrong with the
    data or the options, and TrainingDivergedError (with its advice) when the ELBO became
    NaN; a full disk or a forbidden path (``_cli_outputs.disk_error``) too; any other
    exception is a bug and keeps its traceback.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        yield
    except (ValueError, KeyError, FileNotFoundError, TrainingDivergedError) as err:
        from deltavae._cli_report import _as_flags

        raise InputError(f"{step}: {_as_flags(_message(err))}") from err
    except OSError as err:  # a full disk, a read-only or forbidden path: said in one line
        from deltavae._cli_outputs import disk_error

        if (said := disk_error(err)) is None:
            raise
        raise InputError(f"{step}: {said}") from err
    except SIGTERMException as err:
        # Lightning ends a fit on SIGTERM by raising this SystemExit (status 0).
        raise Terminated.during(step) from err


#: Environment variables that seeding (Lightning's ``seed_everything``, scvi-tools' seed for
#: JAX) sets for the whole process.
_SEED_ENVIRONMENT = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "XLA_FLAGS")


@contextlib.contextmanager
def session_kept():
    """The Python session as the command found it, for :func:`deltavae.cli.main` called from
    Python (a notebook, a test): its ``--seed`` sets ``scvi.settings.seed``, which reseeds
    Python's, numpy's and torch's global generators, sets cuDNN's flags and environment
    variables; its plots open figures. All are put back: the generators' states, the seed,
    the flags, the variables; figures the command opened are closed, the user's stay open."""
    import random

    import matplotlib.pyplot as plt
    import numpy as np
    import scvi
    import torch

    from ._rng import accelerator_states, put_back_states

    seed, cudnn = scvi.settings._seed, torch.backends.cudnn
    flags = (cudnn.deterministic, cudnn.benchmark)
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())  # noqa: NPY002
    # The accelerator's (CUDA's, MPS's, ...), CUDA's only when already in use: reading its
    # generators would start it on every GPU (memory on each; DDP refuses to start after it).
    accelerator = accelerator_states()
    environment = {name: os.environ.get(name) for name in _SEED_ENVIRONMENT}
    figures = set(plt.get_fignums())
    try:
        yield
    finally:
        scvi.settings._seed = seed
        cudnn.deterministic, cudnn.benchmark = flags
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.set_rng_state(states[2])
        put_back_states(accelerator)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        close_figures_since(figures)


def stdout_closed() -> None:
    """Point stdout at /dev/null once its reader has left (``deltavae fit ... | head``), so
    that Python's flush at exit raises no BrokenPipeError of its own (Python's advice, in the
    notes on SIGPIPE of :mod:`signal`); the command's status is then 141, as a shell reports a
    program ended by SIGPIPE."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # not a file: nothing to do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def close_figures_since(opened: set) -> None:
    """Close the figures opened since ``opened`` (the figure numbers then): the user's stay."""
    import matplotlib.pyplot as plt

    for number in set(plt.get_fignums()) - opened:
        plt.close(number)
