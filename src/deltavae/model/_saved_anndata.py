"""The AnnData ``save(..., save_anndata=True)`` writes beside a model, kept with the SHA-256 of
its file and checked by ``load`` before HDF5 opens it: a damaged ``adata.h5ad`` crashed Python
inside HDF5 (a segmentation fault), failed in h5py's words or loaded other counts silently."""

from __future__ import annotations

import contextlib
import hashlib
import os

from ._read_calls import load_call


def file_digest(path: str) -> str:
    """SHA-256 of the file at ``path`` (about 0.8 s per GB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class SavedAnnDataDigest:
    """Keeps ``saved_anndata_digest_``, the SHA-256 of the AnnData file the model's last
    ``save`` wrote (``None`` where it wrote none), saved in ``model.pt`` with the model.

    scvi-tools' ``save`` writes the AnnData first and then reads the model's attributes
    (``_get_user_attributes``) to save them: the file's digest is taken there, once written.
    """

    #: SHA-256 of the AnnData file the last ``save`` wrote beside the model, which ``load``
    #: checks before reading it; None where that save wrote none.
    saved_anndata_digest_: str | None = None

    @contextlib.contextmanager
    def _digest_written(self, path: str | None):
        """Within the block (scvi-tools' ``save``), take the digest of ``path`` once written
        (``None``: no AnnData saved)."""
        self.saved_anndata_digest_ = None
        self.__dict__["_anndata_written"] = path
        try:
            yield
        finally:  # a save that failed before reading the attributes leaves nothing pending
            self.__dict__.pop("_anndata_written", None)

    def _get_user_attributes(self):
        path = self.__dict__.pop("_anndata_written", None)
        if path is not None and os.path.isfile(path):
            self.saved_anndata_digest_ = file_digest(path)
        return super()._get_user_attributes()


def check_saved_anndata(cls, dir_path: str, prefix: str | None, attr_dict: dict, adata) -> None:
    """Where ``load`` reads the AnnData saved in ``dir_path`` (``adata`` is None), refuse it
    when its file's SHA-256 is not the one saved with the model (saves before the digest was
    kept: not checked). An AnnData passed is the user's to vouch for."""
    saved = attr_dict.get("saved_anndata_digest_")
    path = os.path.join(dir_path, f"{prefix or ''}adata.h5ad")
    if adata is not None or not isinstance(saved, str) or not os.path.isfile(path):
        return
    if file_digest(path) == saved:
        return
    raise ValueError(
        f"The AnnData saved with the model in {dir_path!r} is not the file saved "
        f"({os.path.basename(path)}'s SHA-256 is not the one model.pt keeps): it was damaged, "
        "or replaced, since, and is not read (HDF5 can crash Python on a damaged file); pass "
        f"the AnnData instead, read from a copy you trust: {load_call(cls, dir_path, prefix)}."
    )
