"""Where ``save`` writes: a folder beside ``dir_path``, swapped into place once every file of
the save is written (:mod:`deltavae._folder_swap`). ``save(overwrite=True)`` wrote into the
earlier save's folder, removing its AnnData first (or, on failure, the half-written new
one): a failure at any step (the AnnData, its checksum, model.pt, a disk full) left a model
without its data, or the earlier model beside the new AnnData. Now the earlier save stays
loadable, byte for byte, until the new one is whole."""

from __future__ import annotations

import contextlib
import os
import shutil

from .._folder_swap import publish_folder, staging_folder


def reads_file(model, path: str) -> bool:
    """Whether ``model`` reads (or writes into) the AnnData file at ``path``, opened backed:
    ``save(overwrite=True)`` removed an AnnData saved earlier in its folder, and with it the
    very file a model loaded onto it read (its data, lost once the session closed it)."""
    for adata in (getattr(model, "_adata", None), getattr(model, "_query_adata", None)):
        name = getattr(adata, "filename", None) if adata is not None and adata.isbacked else None
        if name is not None and os.path.exists(name) and os.path.samefile(name, path):
            return True
    return False


def replaced_names(model, dest: str, prefix: str, save_anndata: bool) -> set[str]:
    """The files of an earlier save in ``dest`` that this one replaces: its model, and its
    AnnData (``load`` would pair the new model with the old data) unless the model reads that
    very file and this save writes none (it is the model's data: kept)."""
    data = f"{prefix}adata.h5ad"
    kept = not save_anndata and reads_file(model, os.path.join(dest, data))
    return {f"{prefix}model.pt"} | (set() if kept else {data})


@contextlib.contextmanager
def staged_save(model, dir_path: str, prefix: str, save_anndata: bool):
    """Yield an empty folder beside ``dir_path`` to save into; once the block ends, swap it
    in place of ``dir_path`` (the earlier save's other files kept). On any failure the folder
    is removed and ``dir_path`` is as it was (not made, where it did not exist)."""
    dest = os.path.realpath(dir_path)  # a symbolic link stays one: the folder it names swaps
    stage = staging_folder(dest)
    try:
        yield stage
        publish_folder(stage, dest, replaced_names(model, dest, prefix, save_anndata))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
