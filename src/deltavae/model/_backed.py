"""Results of ``write_to_adata`` written into the file of an AnnData opened ``backed="r+"``."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.io import write_elem

from .._io import result_slots

logger = logging.getLogger(__name__)

_ROWS_PER_WRITE = 10_000


def _write_into_file(adata: AnnData, keys: list[str]) -> None:
    """Write results from a backed AnnData's memory into its file (open ``"r+"``)."""
    h5 = adata.file["obs"].file
    for slot, name in result_slots(keys):
        if slot == "obsm" and isinstance(adata.obsm[name], pd.DataFrame):
            # Its column names are part of the result (cell types, archetypes): anndata's
            # dataframe encoding, one dataset per column.
            if name in h5["obsm"]:
                del h5["obsm"][name]
            write_elem(h5["obsm"], name, adata.obsm[name])
        elif slot == "obsm":
            values = np.asarray(adata.obsm[name])
            if name in h5["obsm"]:
                del h5["obsm"][name]
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
            # scvi-tools' registration columns (_scvi_batch, ...) are its internals, not results.
            internal = [c for c in adata.obs.columns if str(c).startswith("_scvi_")]
            write_elem(h5, "obs", adata.obs.drop(columns=internal))
        else:
            write_elem(h5[slot], name, getattr(adata, slot)[name])
    h5.flush()


def writes_backed(write_to_adata):
    """Decorate a model's ``write_to_adata`` so that a backed AnnData gets results in its file.

    The method returns the keys it wrote (``"slot/key"``); for an AnnData opened
    ``backed="r+"`` they are also written into its file, for one opened ``"r"`` a message says
    how to reopen it. Every model class applies it to its own ``write_to_adata``.
    """

    @functools.wraps(write_to_adata)
    def write(self, adata: AnnData | None = None, *args, **kwargs):
        keys = write_to_adata(self, adata, *args, **kwargs)
        adata = self._resolve_adata(adata)
        if adata.isbacked:
            if adata.file["obs"].file.mode == "r":
                logger.info(
                    "%s is open read-only: %s are in memory only. To write them into the file, "
                    "reopen it: adata.file.close(); adata.file.open(filemode='r+').",
                    adata.filename,
                    ", ".join(keys),
                )
            else:
                _write_into_file(adata, keys)
        return keys

    return write
