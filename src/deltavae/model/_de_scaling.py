"""The per-cell scaling behind differential expression's ``raw_normalized_mean1/2`` (counts per
10,000 of the model's counts), computed afresh at every call.

scvi-tools caches it in ``adata.obs["_scvi_raw_norm_scaling"]`` at the first call and reads
that column at every later one, from whatever AnnData carries it: a copy or subset of one
compared before, one whose counts have changed since, or one concatenated with cells compared
never (``anndata.concat(..., join="outer")`` gave those NaN). ``raw_normalized_mean1/2`` were
then stale (doubled counts: doubled "normalized" means) or NaN for every gene, silently; and a
cell without counts made numpy warn of a division by zero and, of dense counts, made its
groups' means NaN (of sparse ones: 0).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import scvi

#: obs column scvi-tools reads the scaling of each cell's counts to 10,000 from.
SCVI_NORM = "_scvi_raw_norm_scaling"
#: obs column scvi-tools writes the cells of ``idx1``/``idx2`` into for the call's length.
SCVI_TEMP = "_scvi_temp_de"


def count_scaling(counts) -> np.ndarray:
    """``10,000 / total`` for each cell (row) of ``counts``, as scvi-tools computes it (in the
    counts' float type); 0 for a cell without counts, whose normalized counts are zeros (as
    :func:`scanpy.pp.normalize_total` leaves them), not NaN."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scaling = np.zeros(totals.shape, np.result_type(totals.dtype, np.float32))
    np.divide(1, totals, out=scaling, where=totals != 0)
    scaling *= 1e4
    return scaling


@contextmanager
def scvi_obs_columns(model):
    """Within the block, every AnnData ``model`` registers for a read carries the scaling of
    its own counts (the registered layer) in :data:`SCVI_NORM`, computed once, whatever the
    column held before; afterwards the column is removed from them (scvi-tools left its cache
    in the user's obs, written with it, and read by every later call), as is scvi-tools'
    :data:`SCVI_TEMP` where the block put it there: scvi-tools removes it only when the call
    succeeds, so a call that failed or was interrupted left it in the user's obs."""
    touched: dict[int, tuple] = {}
    own = vars(model).get("_validate_anndata")  # a call within another's: its
    validate = model._validate_anndata

    def validate_fresh(*args, **kwargs):
        adata = validate(*args, **kwargs)
        if id(adata) not in touched and not adata.is_view:
            manager = model.get_anndata_manager(adata, required=True)
            counts = manager.get_from_registry(scvi.REGISTRY_KEYS.X_KEY)
            touched[id(adata)] = (adata, SCVI_TEMP in adata.obs)
            adata.obs[SCVI_NORM] = count_scaling(counts)
        return adata

    model._validate_anndata = validate_fresh
    try:
        yield
    finally:
        if own is None:
            del model._validate_anndata  # the class's again
        else:
            model._validate_anndata = own
        for adata, had_temp in touched.values():
            for column in (SCVI_NORM,) + (SCVI_TEMP,) * (not had_temp):
                if not adata.is_view and column in adata.obs:
                    del adata.obs[column]
