"""The one reader for directories written by a deltavae model's ``save``."""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import warnings
import zipfile
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from anndata import AnnData
from scvi.data._download import _download
from scvi.model.base import BaseModelClass
from scvi.model.base._save_load import _load_saved_files

from .._anndata_or_folder import check_path
from .._docs import doc_params
from .._folder_swap import interrupted_swap
from .._rng import forked_generators
from ..train._record import cells_digest
from . import _save_checks as checks
from ._count_advice import layer_fixed
from ._device_args import check_device_args
from ._fit_cells import record_fit_cells
from ._genes import genes_to_load_advice, in_training_order, query_to_load, subset_since_setup
from ._label_colours import record_label_colours
from ._label_order import record_labels_ordered
from ._labels import check_known_categories, check_labels_to_load
from ._load_state import keep_read, kept_read, loading_state, reads_once
from ._matrices import check_still_on_disk, memory_copy
from ._query_source import keep_write_target
from ._read_calls import load_call
from ._saved_anndata import SavedAnnDataDigest, check_saved_anndata
from ._scvi_glue import obs_types_kept
from ._staged_save import staged_save
from ._typicality import settle_record
from ._validation import check_flags


def _package_version() -> str:
    try:
        return version("deltavae")
    except PackageNotFoundError:
        return "0.0.0"


def own_fitted_attributes(model) -> None:
    """Hold the class defaults of the fitted attributes (``best_epoch_``, ``diverged_``,
    ``reference_diverged_``, ``train_args_``, ...) as the model's own.

    scvi-tools' ``save`` keeps every attribute ending in ``_``, class defaults included, and
    ``load`` sets them all on the model: a loaded model held in ``vars(model)`` what the saved
    one read from its class (``reference_diverged_`` on every model, three more untrained), so
    comparing the fitted attributes of a model and its reload found keys on one side only.
    """
    for name in dir(type(model)):
        if name.endswith("_") and not name.startswith("_"):
            value = inspect.getattr_static(type(model), name)
            if not (inspect.isroutine(value) or isinstance(value, (property, classmethod))):
                vars(model).setdefault(name, value)


def weights_digest(state_dict: dict) -> dict[str, str]:
    """SHA-256 of each saved parameter and buffer (type, shape, bytes), by name.

    ``save`` stores it with the model and ``load`` recomputes it, so a weight changed on disk
    (a flipped byte, a file edited by hand) is refused by name rather than loaded silently:
    torch reads such a file without complaint.
    """
    digests, on_host = {}, _bytes_on_host(state_dict)
    for name, value in state_dict.items():
        digest = hashlib.sha256()
        if isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(on_host[name])
        else:
            digest.update(repr(value).encode())
        digests[name] = digest.hexdigest()[:32]
    return digests


def _bytes_on_host(state_dict: dict) -> dict[str, bytes]:
    """The bytes of each tensor of ``state_dict``, brought to the host in one copy: a copy
    per tensor made the host wait for a GPU once per parameter (49 times a CGMDVAE's
    ``sample``, which names its cells by this digest)."""
    names = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor)]
    flat = [state_dict[k].detach().contiguous().reshape(-1).view(torch.uint8) for k in names]
    joined = (
        torch.cat([f.to(flat[0].device) for f in flat]).cpu().numpy().tobytes() if flat else b""
    )
    ends = np.cumsum([0] + [len(f) for f in flat])
    return {k: joined[a:b] for k, a, b in zip(names, ends[:-1], ends[1:], strict=True)}


def _check_digest(path: str, saved: dict | None, state_dict: dict) -> None:
    if not isinstance(saved, dict):
        return  # saved before checksums were kept
    now = weights_digest(state_dict)
    problems = [f"{name!r} is missing" for name in saved if name not in now]
    problems += [f"{name!r} was added" for name in now if name not in saved]
    problems += [f"{name!r} differs" for name in saved if name in now and now[name] != saved[name]]
    if problems:
        raise ValueError(
            f"The parameters in {path!r} are not the ones saved ({', '.join(problems[:3])}"
            f"{', ...' if len(problems) > 3 else ''}): the file was damaged or changed after "
            "saving; save the model again."
        )


def _version_refusal(path: str, saved: str | None) -> str:
    """Why a save of another major deltavae version is refused, and what to do: a newer one's
    was told to retrain with this older version, where upgrading reads it.

    Examples
    --------
    >>> _version_refusal("m", "99.0.0").split(": ")[-1]
    'upgrade deltavae (pip install -U deltavae) to load it.'
    """
    now = _package_version()
    if saved is None:
        return (
            f"{path!r} holds a model saved without its deltavae version (by a build before "
            f"versions were saved), which this version ({now}) cannot read; retrain it with "
            "this version."
        )
    try:
        newer = int(saved.split(".")[0]) > int(now.split(".")[0])
    except ValueError:  # not a number: said as an older one's
        newer = False
    if newer:
        return (
            f"{path!r} was saved by deltavae {saved}, newer than this version ({now}), which "
            "cannot read it: upgrade deltavae (pip install -U deltavae) to load it."
        )
    return (
        f"{path!r} was saved by deltavae {saved}, which this version ({now}) cannot read: "
        f"load it with that version (pip install 'deltavae=={saved}'), or retrain it with "
        "this one."
    )


def _unfit_reason(attr_dict: dict) -> str:
    """Why intact parameters do not fit their model: with checksums (which held), the file is
    as saved and this deltavae builds that model with other parameters (it was said to be
    damaged, and to be saved again, which a user holding only the folder cannot)."""
    if not isinstance(attr_dict.get("weights_digest_"), dict):
        return "the file is damaged or was changed after saving; save the model again."
    saved, now = attr_dict.get("deltavae_version_"), _package_version()
    install = f" (pip install 'deltavae=={saved}')" if saved != now else ""
    return (
        f"the file is as saved (its checksums hold); this deltavae ({now}) builds the model "
        f"with other parameters than the one that saved it ({saved}) did: load it with that "
        f"deltavae{install}, or retrain it with this one."
    )


class _NoSavedModel(FileNotFoundError, ValueError):
    """No saved model where one was named: a FileNotFoundError, and a ValueError as
    scvi-tools' own ("Failed to load model file"), which code written for SCVI catches."""


def read_saved(
    cls,
    dir_path,
    prefix: str | None = None,
    what: str = "model",
    use: str = "load",
    backup_url: str | None = None,
) -> tuple[dict, np.ndarray, dict]:
    """Read a directory written by ``save``: attributes, gene names and state dict.

    The one reader for saved models (:meth:`DeltaModelMixin.load`, query mapping). Refuses, by
    name, a missing directory or model file, a corrupted or truncated file, another model class
    and a model saved by an incompatible deltavae.

    Parameters
    ----------
    cls
        The class that will use the model.
    dir_path
        The directory.
    prefix
        The file-name prefix given to ``save``.
    what
        What to call the saved model in messages (``"model"``, ``"reference model"``).
    use
        The method the user called (``"load"``, ``"load_query_data"``), for the messages.
    backup_url
        Where to download the model file from when ``dir_path`` lacks it (scvi-tools'
        ``load(backup_url=...)``; the folder is made).
    """
    path = os.path.expanduser(os.fspath(dir_path))
    if backup_url is not None:  # scvi-tools downloads it only after our checks had refused
        _download(backup_url, path, f"{prefix or ''}model.pt")
    if os.path.isfile(path) and path.endswith("model.pt"):  # the file save wrote, not its folder
        raise _NoSavedModel(
            f"{path!r} is the model file; pass the directory save wrote, which holds it: "
            f"{os.path.dirname(path) or '.'!r}."
        )
    if not os.path.isdir(path):
        raise _NoSavedModel(
            f"No saved {what} at {path!r} (expected a directory)." + interrupted_swap(path)
        )
    model_file = os.path.join(path, f"{prefix or ''}model.pt")
    if not os.path.exists(model_file):
        others = sorted(f[: -len("model.pt")] for f in os.listdir(path) if f.endswith("model.pt"))
        mapping = use in ("load_query_data", "prepare_query_anndata")  # read no prefix
        method = "load" if use == "load" or mapping else use
        hint = (
            f"it holds models saved with prefix {others} (save(..., prefix=)): "
            f"{'load' if method == 'load' else 'read'} one with "
            f"{load_call(cls, path, others[0], method)}"
            + (", then pass the loaded model" if mapping else "")
            if others
            else "point to the directory written by model.save()"
        )
        raise _NoSavedModel(
            f"No saved {what} in {path!r} (no {os.path.basename(model_file)} in it); {hint}."
        )
    if (kept := kept_read(path, prefix)) is not None:  # read in this load already
        return _own_copy(kept)
    try:
        checks.check_records(model_file)  # torch reads a changed bit of them silently
        attr_dict, var_names, state_dict, _ = _load_saved_files(
            path, False, map_location="cpu", prefix=prefix
        )
        if not isinstance(attr_dict.get("registry_"), dict) or not isinstance(state_dict, dict):
            raise KeyError("no model registry and parameters in it")
    except (
        OSError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        KeyError,
        AttributeError,  # a torch file of something else: a list, a dict of other keys
        TypeError,
    ) as e:
        raise ValueError(
            f"The {what} file in {path!r} is corrupted or truncated and cannot be read "
            f"({type(e).__name__}: {e})."
        ) from e
    model_name = attr_dict["registry_"].get("model_name")
    if model_name is not None and model_name != cls.__name__:
        raise ValueError(checks.other_class_refusal(path, model_name, cls, use))
    saved = attr_dict.get("deltavae_version_")
    if saved is None or saved.split(".")[0] != _package_version().split(".")[0]:
        raise ValueError(_version_refusal(path, saved))
    state_dict.pop("pyro_param_store", None)
    _check_digest(path, attr_dict.get("weights_digest_"), state_dict)
    read = (attr_dict, np.asarray(var_names), state_dict)
    keep_read(path, prefix, read)  # once a load
    return _own_copy(read)


def _own_copy(read: tuple) -> tuple:
    """A read's containers copied for one caller: its pop or assignment stays its own, not
    the next caller's in the same load (the tensors and values are shared, as one read's)."""
    attr_dict, var_names, state_dict = read
    return dict(attr_dict), var_names.copy(), dict(state_dict)


# The parameters of the class methods that read a save without loading it.
_doc_saved = """\
Parameters
----------
dir_path
    Directory written by :meth:`save` (``~`` is the home folder).
prefix
    The file-name prefix given to :meth:`save`."""


class Saving(SavedAnnDataDigest):
    """``save`` and ``load`` as every deltavae model does them (mixed into
    ``DeltaModelMixin``)."""

    def save(self, dir_path: str, overwrite: bool = False, save_anndata: bool = False, **kwargs):
        """Save the model (parameters, setup, training history) to ``dir_path``.

        Parameters
        ----------
        dir_path
            Directory to write (``~`` is the home folder). It must not exist unless
            ``overwrite=True``. A checksum of every parameter is saved with them, and
            ``load`` refuses a file whose parameters (or other records) changed since.
        overwrite
            Replace the model saved in an existing directory (under the same ``prefix``): an
            AnnData saved with it is removed too when this save writes none, so that ``load``
            never pairs the new model with the old data; unless the model reads that file
            (loaded onto it opened backed): it is the model's data, and stays. Other files
            there are kept. The new save is written beside the directory and swapped in once
            whole (the earlier one is removed only then): a save that fails at any step
            leaves the earlier one as it was, loadable. Both are on disk until the swap.
        save_anndata
            Also write the AnnData the model was set up with (``load`` checks it is as saved).
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save` (``prefix``, ...) and to
            ``AnnData.write_h5ad`` (``compression``, ...); others are refused by name.

        Examples
        --------
        >>> vae.save("pbmc_vae/", overwrite=True)  # doctest: +SKIP
        """
        checks.check_save_keywords(kwargs)  # overwrite="False" replaced an earlier save:
        check_flags(overwrite=overwrite, save_anndata=save_anndata)
        dir_path = check_path(dir_path, "model.save(dir_path)")
        if os.path.isfile(dir_path):
            raise ValueError(
                f"Save path {dir_path!r} is a file; save writes a directory: pick another path."
            )
        if os.path.exists(dir_path) and not overwrite:
            raise ValueError(
                f"Save path {dir_path!r} already exists; pass overwrite=True to replace it."
            )
        if save_anndata:  # a zarr store moved away would be saved as zeros
            check_still_on_disk(self.adata)
            if subset_since_setup(self):  # load would pair the model with fewer genes
                raise ValueError(
                    f"The model's AnnData was subset in place to {self.adata.n_vars} of its "
                    f"{len(self._training_genes())} genes since setup: save the model alone "
                    "(save_anndata=False) and load it onto an AnnData with its genes."
                )
        checks.check_fit_to_save(self)
        settle_record(self)  # CGMDVAE's typicality record of its last fit, saved with it
        self.weights_digest_ = weights_digest(self.module.state_dict())  # checked by load
        record_label_colours(self)  # for query models built from the saved directory
        record_labels_ordered(self)  # as the colours
        prefix = kwargs.get("prefix") or ""
        # Written beside dir_path and swapped in whole: a failure at any step (an AnnData
        # h5py cannot write, a disk full) leaves an earlier save there as it was.
        with staged_save(self, dir_path, prefix, save_anndata) as folder:
            written = os.path.join(folder, f"{prefix}adata.h5ad") if save_anndata else None
            with obs_types_kept(self, save_anndata), self._digest_written(written):
                super().save(folder, overwrite=True, save_anndata=save_anndata, **kwargs)

    def get_var_names(self, legacy_mudata_format: bool = False):
        """The genes ``save`` records, which ``load`` matches: the training genes where the
        model's AnnData was subset in place since setup (scvi-tools read that AnnData's: the
        model saved could not be loaded onto its genes, "Expected: 60 Received: 40").

        Parameters
        ----------
        legacy_mudata_format
            scvi-tools' (MuData's older layout), otherwise.
        """
        if subset_since_setup(self):
            return self._training_genes().to_numpy()
        return super().get_var_names(legacy_mudata_format=legacy_mudata_format)

    @classmethod
    @doc_params(parameters=_doc_saved)
    def view_setup_args(cls, dir_path: str, prefix: str | None = None) -> None:
        """Print the setup arguments of the model saved in ``dir_path`` (scvi-tools' method;
        a folder it cannot read is named as :meth:`load` names it).

        {parameters}
        """
        dir_path = check_path(dir_path, f"{cls.__name__}.view_setup_args(dir_path)")
        read_saved(cls, dir_path, prefix, use="view_setup_args")
        BaseModelClass.view_setup_args(dir_path, prefix)

    @classmethod
    def convert_legacy_save(
        cls, dir_path: str, output_dir_path: str, overwrite: bool = False, prefix=None, **kwargs
    ) -> None:
        """scvi-tools' converter of saves older than scvi-tools 0.15, which no deltavae model
        wrote: a deltavae save is in the current format and loads as it is (scvi-tools' own
        failed with "No such file or directory: ... model_params.pt", after making
        ``output_dir_path``). Refused, naming :meth:`load`.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        output_dir_path, overwrite, **kwargs
            scvi-tools' arguments; nothing is written.
        prefix
            The file-name prefix given to :meth:`save`.
        """
        read_saved(cls, dir_path, prefix)  # a folder holding no deltavae save is named so
        data = os.path.join(os.path.expanduser(os.fspath(dir_path)), f"{prefix or ''}adata.h5ad")
        call = load_call(cls, dir_path, prefix, saved_data=os.path.isfile(data))
        raise ValueError(
            f"{os.fspath(dir_path)!r} is a deltavae save, already in the current format "
            f"(convert_legacy_save converts saves of scvi-tools before 0.15): nothing to "
            f"convert; load it with {call}."
        )

    @classmethod
    @doc_params(parameters=_doc_saved)
    def load_registry(cls, dir_path: str, prefix: str | None = None) -> dict:
        """The registry (setup) of the model saved in ``dir_path`` (scvi-tools' method; a
        folder it cannot read is named as :meth:`load` names it).

        {parameters}
        """
        return read_saved(cls, dir_path, prefix, use="load_registry")[0]["registry_"]

    @classmethod
    @reads_once  # the model file read from disk once
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs):
        """Load a saved model, checking the file and the genes first.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save` (not the ``model.pt`` file in it; ``~`` is the
            home folder).
        adata
            AnnData with the training genes. In memory, in another order or with more genes,
            the training genes are read by name on a copy (with a warning; ``adata`` is
            unchanged and gets the results of ``write_to_adata``); on disk, they must be in
            that order. A query model (:meth:`load_query_data`'s) takes its query as mapped,
            genes aligned on a copy as there (missing ones as zeros). A view
            (``adata[mask]``) is copied into memory, the view and its parent unchanged
            (scvi-tools' load refuses one; its read-outs copy one): the model reads the copy,
            and ``write_to_adata`` asks for the AnnData to write into. ``None`` uses the
            AnnData saved with the model. Read a file first: a path is refused, as is
            ``False`` (scvi-tools' load without data: these models read their AnnData).
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``,
            ``device``, ``prefix``, ``backup_url``: where to download a missing model file).

        Examples
        --------
        >>> vae = dv.model.ZINBVAE.load("pbmc_vae/", adata)  # the class saved  # doctest: +SKIP
        """
        dir_path, adata = checks.check_load_arguments(cls, dir_path, adata, kwargs)
        prefix = kwargs.get("prefix")
        check_device_args(kwargs.get("accelerator", "auto"), kwargs.get("device", "auto"))
        attr_dict, var_names, state = read_saved(
            cls, dir_path, prefix, backup_url=kwargs.get("backup_url")
        )
        if adata is None and not os.path.exists(
            os.path.join(dir_path, f"{prefix or ''}adata.h5ad")
        ):
            what = "spots" if getattr(cls, "_rows_are_spots", False) else "AnnData"
            raise ValueError(
                f"{dir_path!r} was saved without its AnnData: pass the training {what}, "
                f"{load_call(cls, dir_path, prefix)}, or save with save_anndata=True."
            )
        check_saved_anndata(cls, dir_path, prefix, attr_dict, adata)  # before HDF5 reads it
        given, copied = adata, False
        if adata is not None and not np.array_equal(np.asarray(adata.var_names), var_names):
            adata = in_training_order(given, var_names)  # a copy, as model.adata = given reads
            if adata is None:  # a query model reads its query as load_query_data aligned it
                adata = query_to_load(given, var_names, attr_dict)
            if adata is None:
                advice = genes_to_load_advice(cls, dir_path, attr_dict, var_names, given, prefix)
                raise ValueError(advice)
        if adata is not None and adata.is_view:  # adata[mask]: setup cannot write into it
            adata = memory_copy(adata)  # read as read-outs read one; write_to_adata is told
        if adata is not None:
            check_known_categories(adata, attr_dict["registry_"])
            adata = check_labels_to_load(adata, attr_dict["registry_"])
            adata = cls._spots_to_load(adata, attr_dict, state)
            copied = adata is not given  # the model reads a copy: a labels column, spot order
        with warnings.catch_warnings():
            # Setup's advice to filter out silent genes is for training: a trained model reads
            # the genes it was trained on (NMFDeconv's from_reference had said so too).
            warnings.filterwarnings("ignore", message=r".* genes in .* are zero in every")
            try:
                # the module's fresh weights (replaced by the saved ones) are drawn from a
                # fork of torch's generator: loading left the user's seeded stream elsewhere
                with layer_fixed(), loading_state(cls, state), forked_generators("cpu"):
                    model = super().load(dir_path, adata=adata, **kwargs)
            except RuntimeError as err:  # torch's "Error(s) in loading state_dict ..."
                if "state_dict" not in str(err):
                    raise
                raise ValueError(
                    f"The parameters saved in {os.fspath(dir_path)!r} do not fit the "
                    f"{cls.__name__} they describe ({str(err).splitlines()[-1].strip()}): "
                    + _unfit_reason(attr_dict)
                ) from err
            except OSError as err:  # the AnnData saved with the model
                if adata is not None:
                    raise
                raise ValueError(
                    f"The AnnData saved with the model in {os.fspath(dir_path)!r} cannot be read "
                    f"({err}); pass the AnnData instead: {load_call(cls, dir_path, prefix)}."
                ) from err
        saved_cells = attr_dict["registry_"]["field_registries"]["X"]["summary_stats"]["n_cells"]
        digest = attr_dict.get("split_cells_")  # None: saved before it was kept
        if model.adata is not None and (
            model.adata.n_obs != saved_cells
            or (digest is not None and digest != cells_digest(model.adata.obs_names))
        ):
            # The split's positions were of the training cells, not of these (forgotten
            # before the hooks: CGMDVAE's counts read the split of the cells it is loaded on).
            model.train_indices_ = model.validation_indices_ = model.test_indices_ = None
        elif model.adata is not None and getattr(model, "train_indices_", None) is not None:
            record_fit_cells(model)  # the fit's cells: an in-place subset since is told
        model._after_load()
        if copied:  # results go into the user's AnnData, as into load_query_data's query
            keep_write_target(model, given)
        return model
