"""Results of ``write_to_adata`` written into the file of an AnnData opened ``backed="r+"``."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.io import read_elem, write_elem

from .._anndata_or_folder import check_anndata
from .._file_unchanged_on_failure import file_unchanged_on_failure, remove_entry
from .._io import made_unique_in_memory, result_slots, write_obs_columns
from .._unchanged_on_failure import unchanged_on_failure
from ._left_out import fitted_mask, write_fitted_spots
from ._matrices import check_still_on_disk, memory_copy, on_disk
from ._result_writers import note_writer, writers_unchanged_on_failure
from ._scanpy_keys import (
    columns_with_scanpy_keys,
    forget_scanpy_keys,
    sync_scanpy_keys,
    update_scanpy_keys,
)
from ._stale_labels import remove_obs_columns
from ._validation import warn_user

_ROWS_PER_WRITE = 10_000


def _write_into_file(adata: AnnData, keys: list[str], h5=None) -> None:
    """Write results from an AnnData's memory into an .h5ad file: ``h5``, an h5py file open
    for writing, or by default the file of a backed AnnData (open ``"r+"``)."""
    h5 = adata.file["obs"].file if h5 is None else h5
    for slot in {slot for slot, _ in result_slots(keys)} - {"obs"} - set(h5):
        write_elem(h5, slot, {})  # a file written without it (anndata reads it as empty)
    for slot, name in result_slots(keys):
        if slot == "obsm" and isinstance(adata.obsm[name], pd.DataFrame):
            # Its column names are part of the result (cell types, archetypes): anndata's
            # dataframe encoding, one dataset per column.
            if name in h5["obsm"]:
                remove_entry(h5["obsm"], name)
            write_elem(h5["obsm"], name, adata.obsm[name])
        elif slot == "obsm":
            values = np.asarray(adata.obsm[name])
            if name in h5["obsm"]:
                remove_entry(h5["obsm"], name)
            # An empty array sets anndata's encoding; the rows follow in blocks.
            write_elem(
                h5["obsm"],
                name,
                values[:0],
                dataset_kwargs={"maxshape": (None, *values.shape[1:]), "chunks": True},
            )
            dataset = h5["obsm"][name]
            dataset.resize(values.shape)
            for start in range(0, len(values), _ROWS_PER_WRITE):
                dataset[start : start + _ROWS_PER_WRITE] = values[start : start + _ROWS_PER_WRITE]
        elif slot == "obs":
            write_obs_columns(h5, adata.obs, keys)
            sync_scanpy_keys(h5, adata, keys)
        else:
            if name in h5[slot]:
                remove_entry(h5[slot], name)
            write_elem(h5[slot], name, getattr(adata, slot)[name])
    h5.flush()


def _check_file_cells(adata: AnnData) -> None:
    """Results go into a backed AnnData's file row by row, tables indexed by its obs names:
    refuse a file that holds other names or another order than ``adata`` (rewritten at the
    same path since it was opened, or obs_names changed in memory only). Results were written
    onto the rows of other spots, and a table (proportions) left the file unreadable."""
    if not adata.isbacked or not adata.file.is_open:
        return
    obs = adata.file["obs"]
    if "_index" not in obs.attrs:  # a file of an older layout: not checked
        return
    stored = pd.Index(np.asarray(read_elem(obs[obs.attrs["_index"]])).astype(str))
    names = pd.Index(adata.obs_names.astype(str))
    if stored.equals(names):
        return
    made_unique = made_unique_in_memory(stored, names, adata.filename)
    if made_unique:  # as the spot models' setup asks: a dead end before
        raise ValueError(made_unique)
    same = len(stored) == len(names) and set(stored) == set(names)
    raise ValueError(
        f"adata's backing file {str(adata.filename)!r} holds {len(stored)} spots or cells"
        + (" in another order" if same else f" (e.g. {stored[:3].tolist()})")
        + f" where adata holds {len(names)} (e.g. {names[:3].tolist()}): it was rewritten "
        "since it was opened, or adata.obs_names were changed in memory only. Results are "
        "written row by row, so they would land on other rows; nothing was written. Open the "
        "file as it is now (anndata.read_h5ad(path, backed='r+')) and pass it, or write into "
        "a copy in memory: sub = adata.to_memory(); model.write_to_adata(sub)."
    )


def _in_zarr_store(adata: AnnData) -> bool:
    """Whether X or a layer of ``adata`` is read from a zarr store (:func:`read_lazy`'s): a
    dask array (``AnnData(X=dask_array)``) was told its results stay out of "their zarr
    store", which it had none of."""
    matrices = [adata.X, *adata.layers.values()]
    return on_disk(adata) and any(
        type(getattr(m, "group", m)).__module__.startswith("zarr") for m in matrices
    )


def _store_of(adata: AnnData) -> str:
    """The folder of the zarr store :func:`read_lazy` opened ``adata`` from (the root of the
    store of its first matrix there); the advice named ``'<the store>.zarr'``."""
    for matrix in [adata.X, *adata.layers.values()]:
        node = getattr(matrix, "group", matrix)
        root = getattr(getattr(node, "store", None), "root", None)
        if type(node).__module__.startswith("zarr") and root is not None:
            return str(root)
    return "<the store>.zarr"  # not on local disk


def _has_more_genes(model, adata: AnnData | None) -> bool:
    """Whether ``adata`` holds every gene of the model and others besides, and the model
    writes per-cell results only."""
    if adata is None or adata.is_view:
        return False
    if getattr(model, "_writes_own_genes", False) or not adata.var_names.is_unique:
        return False
    genes = _model_genes(model)
    return adata.n_vars > len(genes) and genes.isin(adata.var_names).all()


def _model_genes(model):
    """The genes the model was trained on (its AnnData's may have been subset in place)."""
    genes = model._training_genes()
    return model.adata.var_names if genes is None else genes


def writes_backed(write_to_adata):
    """Decorate a model's ``write_to_adata`` so that a backed AnnData gets results in its file.

    The method returns the keys it wrote (``"slot/key"``); for an AnnData opened
    ``backed="r+"`` they are also written into its file, for one opened ``"r"`` a warning says
    how to reopen it. A failure midway leaves the AnnData, and its file, as they were
    (:func:`~deltavae._file_unchanged_on_failure.file_unchanged_on_failure`). Every model
    class applies it to its own ``write_to_adata``.
    """

    @functools.wraps(write_to_adata)
    def write(self, adata: AnnData | None = None, *args, **kwargs):
        adata = check_anndata(adata)
        given = getattr(self, "_query_adata", None)
        mine = adata if adata is not None else given if given is not None else self.adata
        # A step failing midway (a colour, a marker table, a warning made an error) leaves
        # the AnnData as it was, not with some of the results (another model's replaced).
        with unchanged_on_failure(adata, mine), writers_unchanged_on_failure(adata, mine):
            return _write(self, write, write_to_adata, adata, *args, **kwargs)

    write.writes_backed = True  # tested for by every model class
    return write


def _write(self, write, write_to_adata, adata, *args, **kwargs) -> list[str]:
    """The body of :func:`writes_backed`' ``write``: ``write_to_adata`` of ``self`` into
    ``adata`` (``write``: the decorated method, for the spots left out of a fit)."""
    given = getattr(self, "_query_adata", None)
    if adata is None:  # the AnnData given to load or from_reference: moved or deleted
        check_still_on_disk(given)  # since, h5py's error named neither it nor a fix
    target = None if adata is None and given is None else self._write_target(adata)
    if target is not None and not target.is_view:  # a view is refused below
        _check_file_cells(target)
    # scanpy's colours and dendrograms of the columns the results may replace (of the
    # model's own AnnData where none is given)
    derived = columns_with_scanpy_keys(self.adata if target is None else target)
    # obs columns before the write: those it removes (an earlier model's stale labels)
    had = list((self.adata if target is None else target).obs.columns)
    if adata is None and given is not None and given.is_view:
        # load(dir, spots[mask]) or model.adata = spots[mask]: the model reads a copy.
        raise ValueError(
            "The AnnData the model was given (to load, or as model.adata) is a view "
            "(adata[mask]): anndata would write the results into a copy of it, and the "
            "AnnData it views would get nothing. Pass the AnnData to write into, a copy "
            "you keep: sub = adata[mask].copy(); model.write_to_adata(sub)."
        )
    fitted = fitted_mask(self, target)
    if fitted is not None:  # spots left out of a per-spot fit: missing values there
        keys = write_fitted_spots(self, write, target, fitted, *args, **kwargs)
    elif _has_more_genes(self, adata):
        # The whole object of a model trained on some of its genes (highly variable ones,
        # those shared with a reference): the results are per cell, so compute them on
        # the model's genes (read into memory from a backed or read_lazy whole) and write
        # them into the whole.
        sub = memory_copy(adata[:, _model_genes(self)])
        keys = write_to_adata(self, sub, *args, **kwargs)
        adata.obs.drop(columns=[c for c in had if c not in sub.obs], inplace=True)
        for key in keys:
            slot, name = key.split("/", 1)
            value = getattr(sub, slot)[name]
            # By position (the same cells), keeping the dtype (categorical clusters).
            getattr(adata, slot)[name] = value.values if slot == "obs" else value
    elif adata is not None and adata.is_view and adata.n_vars < adata._adata_ref.n_vars:
        # The advice of the genes check (adata[:, model.adata.var_names]) for the whole
        # object of a gene subset: anndata would write into a copy of the view.
        raise ValueError(
            "adata is a view of some genes of an AnnData (adata[:, genes]): anndata would "
            "write the results into a copy of it, and the AnnData it views would get "
            "nothing. Pass the whole AnnData: model.write_to_adata(adata) computes the "
            "results on the model's genes and writes them into it."
        )
    elif adata is not None and adata.is_view:
        raise ValueError(
            "adata is a view (adata[mask]): anndata would write the results into a copy "
            "of it, and the AnnData it views would get nothing. Write into the whole "
            "AnnData (model.write_to_adata(adata)), or into a copy you keep: "
            "sub = adata[mask].copy(); model.write_to_adata(sub)."
        )
    else:
        keys = write_to_adata(self, adata, *args, **kwargs)
    adata = self._write_target(adata)
    removed = [c for c in had if c not in adata.obs]
    forget_scanpy_keys(adata, removed)
    update_scanpy_keys(adata, keys, derived)
    note_writer(self, adata, keys)  # another model's results replaced: said
    if adata.isbacked and not adata.file.is_open:
        adata.file.open()  # closed by anndata's to_memory of it or a view (from_reference)
    if adata.isbacked:
        if adata.file["obs"].file.mode == "r":
            warn_user(
                f"{adata.filename} is open read-only: {', '.join(keys)} are in memory only "
                "and leave with the session. To keep them in the file, reopen it for writing "
                "and write again: adata.file.close(); adata.file.open(filemode='r+'); "
                "model.write_to_adata(adata); or write them in as they are: "
                "dv.write_results_to_store(adata, keys, adata.filename)."
            )
        else:
            h5 = adata.file["obs"].file
            with file_unchanged_on_failure(h5):  # a failure midway: the file as it was
                _write_into_file(adata, keys)
                remove_obs_columns(h5, removed)
    elif _in_zarr_store(adata):  # read_lazy's: nothing writes into it by itself
        warn_user(
            f"{', '.join(keys)} are in memory only: adata's data stay in their zarr store, "
            "which write_to_adata does not change. To keep them there: "
            f"dv.write_results_to_store(adata, keys, {_store_of(adata)!r})."
        )
    return keys
